//! Direct (im2col-free) NHWC convolution with AVX2 + FMA register tiles.
//!
//! Narrow layers (16–128 channels: a ResNet at width 0.25) turn the im2col GEMM into a tall,
//! thin product `[N·H·W, 9·C_in] × [9·C_in, C_out]` whose im2col and packing passes cost as much
//! memory traffic as its arithmetic. Here the micro-kernel reads a zero-padded copy of a few
//! images in place instead: a tile of up to 6 output pixels × 16 output channels lives in 12 ymm
//! registers, and each step broadcasts one input value per pixel against two vectors of weights
//! (the 6x16 shape of BLIS's AVX2 kernels, without their packing). With channels last, the
//! inputs one output pixel needs along a kernel row are one contiguous run of `kw · C_in` floats,
//! so the loop over `(b, c_in)` is a plain stride-1 walk.
//!
//! * forward: `y[p, co] = Σ_k x_pad[base(p) + off(k)] · w[k, co]`, tiles of pixels × channels;
//! * weight gradient: `dw[k, co] = Σ_p x_pad[base(p) + off(k)] · dy[p, co]`, tiles of
//!   `k` × channels summed over the pixels of each image group, one private accumulator per
//!   thread;
//! * the stride-1 input gradient is a forward convolution (see `drivers.rs`) and so runs here too.
//!
//! Output channels that do not fill a vector are handled with masked loads and stores; the
//! packed weights and the weight-gradient accumulators are zero-padded to whole 16-blocks.

use rayon::prelude::*;

use super::ConvGeom;
use crate::cpu::{output_buffer, sum_partials, threads, with_scratch};

/// Channels per register tile column block (two ymm vectors).
const BLOCK: usize = 16;
/// Output pixels (forward) or `k` rows (weight gradient) per register tile.
const TILE: usize = 6;
/// Floats of zero-padded input per image group: about an eighth of the 1 MiB L2 per core, so
/// the group, the weights and the outputs being written stay cache-resident.
const GROUP_FLOATS: usize = 32 * 1024;

/// Whether this CPU runs the AVX2 + FMA kernels.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Geometry of the zero-padded copy of a group of `[h, w, c]` images.
#[derive(Clone, Copy)]
struct Padded {
    h: usize,
    w: usize,
    c: usize,
    /// Zero rows above and columns left of each image.
    top: usize,
    left: usize,
    /// Padded width.
    wp: usize,
    /// Floats per padded image.
    img: usize,
    /// Images per group.
    group: usize,
}

impl Padded {
    /// `[h, w, c]` images inside a `[hp, wp, c]` zero frame, `top` rows down and `left` columns
    /// in; groups of as many images as fit `GROUP_FLOATS`, at most `n`.
    #[allow(clippy::too_many_arguments)]
    fn framed(
        h: usize,
        w: usize,
        c: usize,
        top: usize,
        left: usize,
        hp: usize,
        wp: usize,
        n: usize,
    ) -> Self {
        let img = hp * wp * c;
        Self {
            h,
            w,
            c,
            top,
            left,
            wp,
            img,
            group: (GROUP_FLOATS / img.max(1)).clamp(1, n.max(1)),
        }
    }

    /// The input of convolution `g`, padded as it says.
    fn new(g: &ConvGeom) -> Self {
        let (hp, wp) = (g.h + 2 * g.pad_h, g.w + 2 * g.pad_w);
        Self::framed(g.h, g.w, g.cin, g.pad_h, g.pad_w, hp, wp, g.n)
    }

    /// Offset of kernel row element `k = (a, b, ci)` from its output pixel's base.
    fn tap_offset(&self, g: &ConvGeom, k: usize) -> usize {
        let run = g.kw * g.cin;
        let (a, rest) = (k / run, k % run);
        a * self.wp * g.cin + rest
    }

    /// Base offsets (into a padded group of `images` images) of every output pixel, in NHWC order.
    fn pixel_bases(&self, g: &ConvGeom, images: usize) -> Vec<usize> {
        let mut bases = Vec::with_capacity(images * g.ho * g.wo);
        for n in 0..images {
            for oh in 0..g.ho {
                for ow in 0..g.wo {
                    bases.push(n * self.img + (oh * g.stride * self.wp + ow * g.stride) * g.cin);
                }
            }
        }
        bases
    }

    /// Writes images `first..first + count` of `x` `[n, h, w, c]`, zero-framed, into `out`.
    fn fill(&self, x: &[f32], first: usize, count: usize, out: &mut [f32]) {
        let row_in = self.w * self.c;
        let row_out = self.wp * self.c;
        let (left, right) = (self.left * self.c, self.left * self.c + row_in);
        for i in 0..count {
            let src = &x[(first + i) * self.h * row_in..(first + i + 1) * self.h * row_in];
            let dst = &mut out[i * self.img..(i + 1) * self.img];
            let (top, rest) = dst.split_at_mut(self.top * row_out);
            top.fill(0.0);
            let (body, bottom) = rest.split_at_mut(self.h * row_out);
            bottom.fill(0.0);
            for (d, s) in body.chunks_exact_mut(row_out).zip(src.chunks_exact(row_in)) {
                d[..left].fill(0.0);
                d[left..right].copy_from_slice(s);
                d[right..].fill(0.0);
            }
        }
    }
}

/// The shape of one register-tile pass over a padded group: `kh` kernel rows, each a
/// contiguous run of `run` floats, `row` floats apart in the padded input.
#[derive(Clone, Copy)]
struct Taps {
    kh: usize,
    run: usize,
    row: usize,
}

/// `[k, cout]` weights (the GEMM layout of `pack.rs`) to 16-channel blocks `[block][k][16]`,
/// zero-padded past `cout`.
fn pack_blocks(wk: &[f32], k: usize, cout: usize) -> Vec<f32> {
    let blocks = cout.div_ceil(BLOCK);
    let mut out = vec![0.0f32; blocks * k * BLOCK];
    for (t, block) in out.chunks_exact_mut(k * BLOCK).enumerate() {
        let co0 = t * BLOCK;
        let width = BLOCK.min(cout - co0);
        for (kk, dst) in block.chunks_exact_mut(BLOCK).enumerate() {
            dst[..width].copy_from_slice(&wk[kk * cout + co0..kk * cout + co0 + width]);
        }
    }
    out
}

/// Forward convolution `y[rows, cout] = conv(x, w)` with `wk` the `[k, cout]` weight matrix
/// (rows in `(a, b, ci)` order). Needs [`available`].
pub(crate) fn forward(x: &[f32], wk: &[f32], g: &ConvGeom, y: &mut [f32]) {
    let k = g.k();
    let wb = pack_blocks(wk, k, g.cout);
    let pad = Padded::new(g);
    let per_image = g.ho * g.wo;
    let full_bases = pad.pixel_bases(g, pad.group);
    let outs: Vec<usize> = (0..full_bases.len()).map(|q| q * g.cout).collect();
    let taps = Taps {
        kh: g.kh,
        run: g.kw * g.cin,
        row: pad.wp * g.cin,
    };
    let y_group = pad.group * per_image * g.cout;
    y.par_chunks_mut(y_group)
        .enumerate()
        .for_each(|(i, y_chunk)| {
            let first = i * pad.group;
            let images = y_chunk.len() / (per_image * g.cout);
            let short;
            let bases = if images == pad.group {
                &full_bases
            } else {
                short = pad.pixel_bases(g, images);
                &short
            };
            with_scratch(images * pad.img, |xp| {
                pad.fill(x, first, images, xp);
                // SAFETY: `available()` was checked by the caller; every pixel base plus every
                // tap offset lies inside the padded group, `wb` holds `blocks · k · 16` floats and
                // `y_chunk` is `[bases.len(), cout]`, so `outs[q] + cout` is in bounds.
                unsafe {
                    x86::forward_group(xp, bases, &wb, taps, &outs, g.cout, y_chunk.as_mut_ptr())
                };
            });
        });
}

/// Input gradient of a strided convolution (`stride` > 1), by sub-pixel decomposition: the
/// input pixels whose coordinates have residues `(rh, rw)` modulo the stride receive gradient
/// only through the kernel taps `a ≡ rh + pad`, `b ≡ rw + pad`, so each residue class is a
/// stride-1 convolution of the (zero-framed) output gradient with those taps, flipped and
/// transposed. `w` is `[cout, cin, kh, kw]`. Needs [`available`].
pub(crate) fn dgrad_strided(dy: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let s = g.stride;
    let mut dx = output_buffer(g.n * g.h * g.w * g.cin);
    // Residue classes along one axis: (taps, first q, number of q) with input index
    // i = q·s + r - pad and output index o = q - j for tap a = r' + j·s.
    let classes =
        |k: usize, pad: usize, len: usize| -> Vec<(Vec<usize>, usize, usize, Vec<usize>)> {
            (0..s)
                .map(|r| {
                    // r is the residue of (i + pad); the taps a ≡ r (mod s).
                    let taps: Vec<usize> = (r..k).step_by(s).collect();
                    let inputs: Vec<usize> = (0..len).filter(|i| (i + pad) % s == r).collect();
                    let q0 = inputs.first().map_or(0, |i| (i + pad - r) / s);
                    (taps, q0, inputs.len(), inputs)
                })
                .collect()
        };
    let rows = classes(g.kh, g.pad_h, g.h);
    let cols = classes(g.kw, g.pad_w, g.w);
    for (taps_h, qh0, nh, ih_list) in &rows {
        for (taps_w, qw0, nw, iw_list) in &cols {
            if *nh == 0 || *nw == 0 {
                continue;
            }
            let (jh, jw) = (taps_h.len(), taps_w.len());
            if jh == 0 || jw == 0 {
                // No tap reaches these pixels: their gradient is zero.
                dx.par_chunks_mut(g.h * g.w * g.cin).for_each(|img| {
                    for &ih in ih_list {
                        for &iw in iw_list {
                            img[(ih * g.w + iw) * g.cin..(ih * g.w + iw + 1) * g.cin].fill(0.0);
                        }
                    }
                });
                continue;
            }
            // Weights [(t, tb, co), ci] = w[co, ci, taps_h[jh-1-t], taps_w[jw-1-tb]].
            let k = jh * jw * g.cout;
            let mut wk = vec![0.0f32; k * g.cin];
            for t in 0..jh {
                for tb in 0..jw {
                    let (a, b) = (taps_h[jh - 1 - t], taps_w[jw - 1 - tb]);
                    for co in 0..g.cout {
                        let row = ((t * jw + tb) * g.cout + co) * g.cin;
                        for ci in 0..g.cin {
                            wk[row + ci] = w[((co * g.cin + ci) * g.kh + a) * g.kw + b];
                        }
                    }
                }
            }
            let wb = pack_blocks(&wk, k, g.cin);
            // dy framed so that output q reads dy rows q - (jh - 1) + t at padded row q + t
            // (minus q0), for t in 0..jh.
            let top = jh - 1;
            let left = jw - 1;
            let hp = (qh0 + nh + jh - 1).max(top + g.ho) - qh0;
            let wp = (qw0 + nw + jw - 1).max(left + g.wo) - qw0;
            // The frame starts at q0: shift dy up/left by q0 (rows before it are never read).
            let pad = Padded::framed(g.ho, g.wo, g.cout, top, left, hp + qh0, wp + qw0, g.n);
            let taps = Taps {
                kh: jh,
                run: jw * g.cout,
                row: pad.wp * g.cout,
            };
            let bases_for = |images: usize| -> Vec<usize> {
                let mut v = Vec::with_capacity(images * nh * nw);
                for n in 0..images {
                    for qh in *qh0..qh0 + nh {
                        for qw in *qw0..qw0 + nw {
                            v.push(n * pad.img + (qh * pad.wp + qw) * g.cout);
                        }
                    }
                }
                v
            };
            let outs_for = |images: usize| -> Vec<usize> {
                let mut v = Vec::with_capacity(images * nh * nw);
                for n in 0..images {
                    for &ih in ih_list {
                        for &iw in iw_list {
                            v.push(((n * g.h + ih) * g.w + iw) * g.cin);
                        }
                    }
                }
                v
            };
            let (full_bases, full_outs) = (bases_for(pad.group), outs_for(pad.group));
            let dx_ptr = SendPtr(dx.as_mut_ptr());
            let groups = g.n.div_ceil(pad.group);
            (0..groups).into_par_iter().for_each(|grp| {
                let first = grp * pad.group;
                let images = pad.group.min(g.n - first);
                let (short_b, short_o);
                let (bases, outs) = if images == pad.group {
                    (&full_bases, &full_outs)
                } else {
                    short_b = bases_for(images);
                    short_o = outs_for(images);
                    (&short_b, &short_o)
                };
                let dst = dx_ptr;
                with_scratch(images * pad.img, |xp| {
                    pad.fill(dy, first, images, xp);
                    // SAFETY: `available()` was checked by the caller. Bases: padded rows
                    // q + t ≤ q0 + nh - 1 + jh - 1 < hp + q0, likewise columns, so every read is
                    // inside the group. Outputs: pixel (first + n, ih, iw) of dx, distinct
                    // across groups and classes, so no two threads write the same floats.
                    unsafe {
                        let y = dst.0.add(first * g.h * g.w * g.cin);
                        x86::forward_group(xp, bases, &wb, taps, outs, g.cin, y)
                    };
                });
            });
        }
    }
    dx
}

/// A raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used for writes to disjoint elements (see `dgrad_strided`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Weight gradient as a `[k, cout]` matrix (rows in `(a, b, ci)` order). Needs [`available`].
pub(crate) fn wgrad(x: &[f32], dy: &[f32], g: &ConvGeom) -> Vec<f32> {
    let k = g.k();
    let ld = g.cout.div_ceil(BLOCK) * BLOCK;
    let pad = Padded::new(g);
    let per_image = g.ho * g.wo;
    let groups = g.n.div_ceil(pad.group);
    let parts = threads().min(groups).max(1);
    let full_bases = pad.pixel_bases(g, pad.group);
    let offsets: Vec<usize> = (0..k).map(|kk| pad.tap_offset(g, kk)).collect();
    let partial = |p: usize| -> Vec<f32> {
        let mut acc = vec![0.0f32; k * ld];
        for grp in p * groups / parts..(p + 1) * groups / parts {
            let first = grp * pad.group;
            let images = pad.group.min(g.n - first);
            let short;
            let bases = if images == pad.group {
                &full_bases
            } else {
                short = pad.pixel_bases(g, images);
                &short
            };
            let dy_group = &dy[first * per_image * g.cout..(first + images) * per_image * g.cout];
            with_scratch(images * pad.img, |xp| {
                pad.fill(x, first, images, xp);
                // SAFETY: as in `forward`; `acc` is `[k, ld]` with `ld` a multiple of 16 ≥ cout,
                // `dy_group` is `[bases.len(), cout]`.
                unsafe { x86::wgrad_group(xp, bases, &offsets, dy_group, g.cout, &mut acc, ld) };
            });
        }
        acc
    };
    let acc = sum_partials(parts, k * ld, partial);
    let mut out = vec![0.0f32; k * g.cout];
    for (dst, src) in out.chunks_exact_mut(g.cout).zip(acc.chunks_exact(ld)) {
        dst.copy_from_slice(&src[..g.cout]);
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Taps, BLOCK, TILE};

    /// Lane mask for the first `n` (1..=8) lanes.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn lane_mask(n: usize) -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
    }

    /// One forward tile: `P` output pixels × `NB` vectors of output channels.
    ///
    /// `px[i]` points at pixel `i`'s receptive field in the padded input, `w` at the block's
    /// `[k][16]` weights, `y` at pixel 0's first channel of the block; `width` of the block's
    /// channels are stored (a partial last vector is masked).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn forward_tile<const P: usize, const NB: usize>(
        px: [*const f32; P],
        w: *const f32,
        kh: usize,
        run: usize,
        row: usize,
        py: [*mut f32; P],
        width: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); NB]; P];
        for a in 0..kh {
            let wr = w.add(a * run * BLOCK);
            let xr = a * row;
            for j in 0..run {
                let mut wv = [_mm256_setzero_ps(); NB];
                for (v, wvv) in wv.iter_mut().enumerate() {
                    *wvv = _mm256_loadu_ps(wr.add(j * BLOCK + v * 8));
                }
                for i in 0..P {
                    let xv = _mm256_broadcast_ss(&*px[i].add(xr + j));
                    for v in 0..NB {
                        acc[i][v] = _mm256_fmadd_ps(xv, wv[v], acc[i][v]);
                    }
                }
            }
        }
        for (i, acc_i) in acc.iter().enumerate() {
            for (v, acc_iv) in acc_i.iter().enumerate() {
                let dst = py[i].add(v * 8);
                let left = width - v * 8;
                if left >= 8 {
                    _mm256_storeu_ps(dst, *acc_iv);
                } else {
                    _mm256_maskstore_ps(dst, lane_mask(left), *acc_iv);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn forward_block<const NB: usize>(
        xp: &[f32],
        bases: &[usize],
        w: *const f32,
        taps: Taps,
        outs: &[usize],
        y: *mut f32,
        width: usize,
    ) {
        let x = xp.as_ptr();
        let mut q = 0;
        while q + TILE <= bases.len() {
            let px = std::array::from_fn(|i| x.add(bases[q + i]));
            let py = std::array::from_fn(|i| y.add(outs[q + i]));
            forward_tile::<TILE, NB>(px, w, taps.kh, taps.run, taps.row, py, width);
            q += TILE;
        }
        macro_rules! rest {
            ($($p:literal)*) => {
                match bases.len() - q {
                    $($p => {
                        let px = std::array::from_fn(|i| x.add(bases[q + i]));
                        let py = std::array::from_fn(|i| y.add(outs[q + i]));
                        forward_tile::<$p, NB>(px, w, taps.kh, taps.run, taps.row, py, width);
                    })*
                    _ => {}
                }
            };
        }
        rest!(1 2 3 4 5);
    }

    /// The forward convolution of one padded image group: pixel `q` (receptive field at
    /// `bases[q]`) gets its `cout` outputs at `y + outs[q]`; `wb` holds the `[k][16]` weight
    /// blocks, `k = taps.kh · taps.run`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward_group(
        xp: &[f32],
        bases: &[usize],
        wb: &[f32],
        taps: Taps,
        outs: &[usize],
        cout: usize,
        y: *mut f32,
    ) {
        let k = taps.kh * taps.run;
        for co0 in (0..cout).step_by(BLOCK) {
            let width = BLOCK.min(cout - co0);
            let w = wb.as_ptr().add(co0 * k);
            let yb = y.add(co0);
            if width > 8 {
                forward_block::<2>(xp, bases, w, taps, outs, yb, width);
            } else {
                forward_block::<1>(xp, bases, w, taps, outs, yb, width);
            }
        }
    }

    /// One weight-gradient tile: `P` rows of `k` × `NB` vectors of output channels, summed over
    /// every pixel of the group and added into `acc` (row stride `ld`).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn wgrad_tile<const P: usize, const NB: usize>(
        x: *const f32,
        offs: [usize; P],
        bases: &[usize],
        dy: *const f32,
        cout: usize,
        width: usize,
        acc: *mut f32,
        ld: usize,
    ) {
        let mut sum = [[_mm256_setzero_ps(); NB]; P];
        let last_mask = lane_mask((width - (NB - 1) * 8).min(8));
        let partial = width < NB * 8;
        for (p, &base) in bases.iter().enumerate() {
            let d = dy.add(p * cout);
            let mut dv = [_mm256_setzero_ps(); NB];
            for (v, dvv) in dv.iter_mut().enumerate() {
                *dvv = if partial && v == NB - 1 {
                    _mm256_maskload_ps(d.add(v * 8), last_mask)
                } else {
                    _mm256_loadu_ps(d.add(v * 8))
                };
            }
            let xb = x.add(base);
            for i in 0..P {
                let xv = _mm256_broadcast_ss(&*xb.add(offs[i]));
                for v in 0..NB {
                    sum[i][v] = _mm256_fmadd_ps(xv, dv[v], sum[i][v]);
                }
            }
        }
        for (i, sum_i) in sum.iter().enumerate() {
            for (v, sum_iv) in sum_i.iter().enumerate() {
                let dst = acc.add(i * ld + v * 8);
                _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_loadu_ps(dst), *sum_iv));
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn wgrad_block<const NB: usize>(
        xp: &[f32],
        bases: &[usize],
        offsets: &[usize],
        dy: *const f32,
        cout: usize,
        width: usize,
        acc: *mut f32,
        ld: usize,
    ) {
        let x = xp.as_ptr();
        let k = offsets.len();
        let mut r = 0;
        while r + TILE <= k {
            let offs = std::array::from_fn(|i| offsets[r + i]);
            wgrad_tile::<TILE, NB>(x, offs, bases, dy, cout, width, acc.add(r * ld), ld);
            r += TILE;
        }
        macro_rules! rest {
            ($($p:literal)*) => {
                match k - r {
                    $($p => {
                        let offs = std::array::from_fn(|i| offsets[r + i]);
                        wgrad_tile::<$p, NB>(x, offs, bases, dy, cout, width, acc.add(r * ld), ld);
                    })*
                    _ => {}
                }
            };
        }
        rest!(1 2 3 4 5);
    }

    /// Adds one padded image group's weight gradient into `acc` `[k, ld]`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn wgrad_group(
        xp: &[f32],
        bases: &[usize],
        offsets: &[usize],
        dy: &[f32],
        cout: usize,
        acc: &mut [f32],
        ld: usize,
    ) {
        for co0 in (0..cout).step_by(BLOCK) {
            let width = BLOCK.min(cout - co0);
            let d = dy.as_ptr().add(co0);
            let a = acc.as_mut_ptr().add(co0);
            if width > 8 {
                wgrad_block::<2>(xp, bases, offsets, d, cout, width, a, ld);
            } else {
                wgrad_block::<1>(xp, bases, offsets, d, cout, width, a, ld);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    use super::Taps;

    pub(super) unsafe fn forward_group(
        _: &[f32],
        _: &[usize],
        _: &[f32],
        _: Taps,
        _: &[usize],
        _: usize,
        _: *mut f32,
    ) {
        unreachable!("direct convolution kernels need x86-64 AVX2 + FMA (checked by `available`)")
    }

    pub(super) unsafe fn wgrad_group(
        _: &[f32],
        _: &[usize],
        _: &[usize],
        _: &[f32],
        _: usize,
        _: &mut [f32],
        _: usize,
    ) {
        unreachable!("direct convolution kernels need x86-64 AVX2 + FMA (checked by `available`)")
    }
}

#[cfg(test)]
mod tests {
    use super::super::{conv_dgrad, conv_forward, conv_wgrad, ConvGeom, Kernel};
    use super::available;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        // A small LCG: deterministic, no dev-dependency.
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 2e-5 * scale,
                "{what}: element {i}: direct {g} vs gemm {w}"
            );
        }
    }

    /// (x NHWC, C_out, (kh, kw), stride, padding): channel counts that leave partial 8- and
    /// 16-lane blocks, pixel counts that leave partial 6-pixel tiles, several image groups with
    /// a short last one, stride 2 and 1x1 downsamples.
    /// (x dims, C_out, (kh, kw), stride, padding)
    type Case = ([usize; 4], usize, (usize, usize), usize, usize);

    const CASES: &[Case] = &[
        ([3, 7, 5, 3], 16, (3, 3), 1, 1),
        ([2, 9, 9, 16], 16, (3, 3), 1, 1),
        ([5, 6, 6, 5], 8, (3, 3), 1, 1),
        ([2, 5, 7, 4], 3, (3, 3), 1, 1),
        ([2, 8, 8, 16], 24, (3, 3), 2, 1),
        ([4, 8, 8, 13], 37, (1, 1), 2, 0),
        ([1, 11, 10, 3], 10, (7, 7), 2, 3),
        ([2, 5, 6, 2], 9, (2, 3), 1, 0),
        ([40, 4, 4, 32], 32, (3, 3), 1, 1),
        ([3, 12, 12, 64], 20, (3, 3), 1, 1),
    ];

    #[test]
    fn direct_kernels_match_the_gemm_kernels() {
        if !available() {
            return;
        }
        for (i, &(xd, cout, (kh, kw), s, p)) in CASES.iter().enumerate() {
            let g = ConvGeom::new(&xd, &[cout, xd[3], kh, kw], s, p).unwrap();
            let seed = 10 * i as u64;
            let x = values(xd.iter().product(), seed);
            let w = values(cout * xd[3] * kh * kw, seed + 1);
            let dy = values(g.rows() * cout, seed + 2);
            let what = format!("{xd:?} -> {cout}, {kh}x{kw} s{s} p{p}");
            assert_close(
                &conv_forward(&x, &w, &g, Kernel::Direct),
                &conv_forward(&x, &w, &g, Kernel::Gemm),
                &format!("forward {what}"),
            );
            assert_close(
                &conv_dgrad(&dy, &w, &g, Kernel::Direct),
                &conv_dgrad(&dy, &w, &g, Kernel::Gemm),
                &format!("input gradient {what}"),
            );
            assert_close(
                &conv_wgrad(&x, &dy, &g, Kernel::Direct),
                &conv_wgrad(&x, &dy, &g, Kernel::Gemm),
                &format!("weight gradient {what}"),
            );
        }
    }
}
