//! Crop + bilinear resize as torch computes it (`interpolate(mode="bilinear",
//! align_corners=False, antialias=...)`): per-axis taps and weights in float32,
//! then two separable passes, width first.

use crate::image::{ImageU8, U8_TO_F32};
use crate::simd::multiversion;

/// The source taps of every output index along one axis.
#[derive(Debug, Default, Clone)]
pub(crate) struct AxisTaps {
    stride: usize,
    len: Vec<u32>,
    idx: Vec<u32>,
    w: Vec<f32>,
}

impl AxisTaps {
    #[inline(always)]
    fn reset(&mut self, n_out: usize, stride: usize) {
        self.stride = stride;
        self.len.clear();
        self.len.resize(n_out, 0);
        self.idx.clear();
        self.idx.resize(n_out * stride, 0);
        self.w.clear();
        self.w.resize(n_out * stride, 0.0);
    }

    /// Classic bilinear (`antialias=False`): ATen's `area_pixel_compute_source_index`
    /// with the coordinate `scale * (i + 0.5) - 0.5` as one fused multiply-add,
    /// as torch's AVX2/AVX-512 build evaluates it.
    #[inline(always)]
    pub(crate) fn bilinear(&mut self, n_in: usize, n_out: usize) {
        self.reset(n_out, 2);
        let scale = n_in as f32 / n_out as f32;
        for i in 0..n_out {
            let src = scale.mul_add(i as f32 + 0.5, -0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n_in - 1);
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < n_in - 1 { i0 + 1 } else { i0 };
            self.len[i] = 2;
            self.idx[2 * i] = i0 as u32;
            self.idx[2 * i + 1] = i1 as u32;
            self.w[2 * i] = 1.0 - l1;
            self.w[2 * i + 1] = l1;
        }
    }

    /// Antialiased bilinear (`antialias=True`): ATen's `_compute_weights_aa`, a
    /// triangle filter stretched by the scale when downsampling, with its float32
    /// and double roundings reproduced step by step.
    #[inline(always)]
    pub(crate) fn antialias(&mut self, n_in: usize, n_out: usize) {
        let scale = n_in as f32 / n_out as f32;
        let support: f32 = if scale >= 1.0 { scale } else { 1.0 };
        let invscale: f32 = if scale >= 1.0 {
            (1.0 / scale as f64) as f32
        } else {
            1.0
        };
        let max_taps = support.ceil() as usize * 2 + 1;
        self.reset(n_out, max_taps);
        for i in 0..n_out {
            let center = (scale as f64 * (i as f64 + 0.5)) as f32;
            let xmin = (((center - support) as f64 + 0.5) as i64).max(0);
            let xmax = (((center + support) as f64 + 0.5) as i64).min(n_in as i64);
            let xsize = (xmax - xmin).clamp(0, max_taps as i64) as usize;
            let ws = &mut self.w[i * max_taps..i * max_taps + xsize];
            let mut total = 0.0f32;
            for (j, w) in ws.iter_mut().enumerate() {
                let t = (((j as i64 + xmin) as f32 - center) as f64 + 0.5) * invscale as f64;
                let t = (t as f32).abs();
                *w = if t < 1.0 { 1.0 - t } else { 0.0 };
                total += *w;
            }
            if total != 0.0 {
                for w in ws.iter_mut() {
                    *w /= total;
                }
            }
            self.len[i] = xsize as u32;
            for j in 0..xsize {
                self.idx[i * max_taps + j] = (xmin as usize + j) as u32;
            }
        }
    }

    fn compute(&mut self, n_in: usize, n_out: usize, antialias: bool) {
        compute_taps(self, n_in, n_out, antialias);
    }

    /// Drops zero weights at either end of every output's taps, then gives all
    /// outputs the same tap count (the largest) by appending zero-weight taps on
    /// an in-range index, so the passes can run a fixed-length loop. Both leave
    /// the sums unchanged: torch accumulates `0 * x` terms of finite pixels,
    /// which add exactly nothing.
    #[inline(always)]
    fn pack(&mut self) {
        let n_out = self.len.len();
        let s = self.stride;
        let mut taps = 1;
        for i in 0..n_out {
            if self.len[i] == 0 {
                // No tap at all (cannot happen for valid sizes): one zero weight.
                self.len[i] = 1;
                self.w[i * s] = 0.0;
                self.idx[i * s] = 0;
            }
            let n = self.len[i] as usize;
            let w = &self.w[i * s..i * s + n];
            let lead = w
                .iter()
                .take_while(|&&x| x == 0.0)
                .count()
                .min(n.saturating_sub(1));
            let trail = w[lead..].iter().rev().take_while(|&&x| x == 0.0).count();
            let keep = (n - lead - trail).max(1);
            for j in 0..keep {
                self.w[i * s + j] = self.w[i * s + lead + j];
                self.idx[i * s + j] = self.idx[i * s + lead + j];
            }
            self.len[i] = keep as u32;
            taps = taps.max(keep);
        }
        // Move every output to the new, smaller stride in place: writes never
        // pass the reads still to come.
        for i in 0..n_out {
            let n = self.len[i] as usize;
            let last = self.idx[i * s + n - 1];
            for j in 0..taps {
                let (w, k) = if j < n {
                    (self.w[i * s + j], self.idx[i * s + j])
                } else {
                    (0.0, last)
                };
                self.w[i * taps + j] = w;
                self.idx[i * taps + j] = k;
            }
        }
        self.w.truncate(n_out * taps);
        self.idx.truncate(n_out * taps);
        self.stride = taps;
    }

    /// Smallest and one past the largest source index any output reads.
    fn source_range(&self) -> (usize, usize) {
        let lo = self.idx.iter().min().map_or(0, |&v| v as usize);
        let hi = self.idx.iter().max().map_or(0, |&v| v as usize + 1);
        (lo, hi)
    }
}

multiversion! {
    /// Taps of one axis (`floor`, `trunc` and `mul_add` become single
    /// instructions in the AVX2 + FMA build).
    pub(crate) fn compute_taps(t: &mut AxisTaps, n_in: usize, n_out: usize, antialias: bool) {
        if antialias {
            t.antialias(n_in, n_out)
        } else {
            t.bilinear(n_in, n_out)
        }
        t.pack();
    }
}

/// Where the crop's pixels come from.
#[derive(Clone, Copy)]
pub(crate) enum CropSource<'a> {
    /// 8-bit HWC (converted with `k / 255` as rows are read).
    U8(ImageU8<'a>),
    /// Float CHW planes with 3 channels.
    F32 {
        data: &'a [f32],
        height: usize,
        width: usize,
    },
}

/// A crop box inside the source (RandomResizedCrop never leaves the image).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

#[derive(Debug, Default)]
pub(crate) struct ResizeScratch {
    tx: AxisTaps,
    ty: AxisTaps,
    line: Vec<f32>,
    rows: Vec<f32>,
}

/// Grows `v` to at least `n` elements (keeping its allocation) and returns the
/// first `n`; stale contents are left for the caller to overwrite.
pub(crate) fn take(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

multiversion! {
    /// Row `y` of the window as 3 planes of `win.width` floats.
    pub(crate) fn read_row(src: &CropSource<'_>, win: Window, y: usize, line: &mut [f32]) {
        let w = win.width;
        let (r, rest) = line.split_at_mut(w);
        let (g, b) = rest.split_at_mut(w);
        match *src {
            CropSource::U8(img) => {
                let c = img.channels();
                let start = ((win.top + y) * img.width() + win.left) * c;
                let px = &img.pixels()[start..start + w * c];
                if c == 3 {
                    for (x, p) in px.chunks_exact(3).enumerate() {
                        r[x] = U8_TO_F32[p[0] as usize];
                        g[x] = U8_TO_F32[p[1] as usize];
                        b[x] = U8_TO_F32[p[2] as usize];
                    }
                } else {
                    for (x, &p) in px.iter().enumerate() {
                        let v = U8_TO_F32[p as usize];
                        r[x] = v;
                        g[x] = v;
                        b[x] = v;
                    }
                }
            }
            CropSource::F32 { data, height, width } => {
                let plane = height * width;
                let off = (win.top + y) * width + win.left;
                r.copy_from_slice(&data[off..off + w]);
                g.copy_from_slice(&data[plane + off..plane + off + w]);
                b.copy_from_slice(&data[2 * plane + off..2 * plane + off + w]);
            }
        }
    }
}

/// `dst[i] = sum_j w[i][j] * src[idx[i][j]]` with `T` taps per output,
/// accumulated from the first product in tap order, as ATen's
/// `interpolate_aa_single_dim` and its nested bilinear kernel do.
#[inline(always)]
fn resample_fixed<const T: usize>(src: &[f32], idx: &[u32], w: &[f32], dst: &mut [f32]) {
    for ((d, idx), w) in dst
        .iter_mut()
        .zip(idx.chunks_exact(T))
        .zip(w.chunks_exact(T))
    {
        let mut acc = src[idx[0] as usize] * w[0];
        for j in 1..T {
            acc += src[idx[j] as usize] * w[j];
        }
        *d = acc;
    }
}

multiversion! {
    /// One line of the width pass.
    pub(crate) fn resample_line(src: &[f32], taps: &AxisTaps, dst: &mut [f32]) {
        let (idx, w) = (&taps.idx[..], &taps.w[..]);
        match taps.stride {
            1 => resample_fixed::<1>(src, idx, w, dst),
            2 => resample_fixed::<2>(src, idx, w, dst),
            3 => resample_fixed::<3>(src, idx, w, dst),
            4 => resample_fixed::<4>(src, idx, w, dst),
            5 => resample_fixed::<5>(src, idx, w, dst),
            6 => resample_fixed::<6>(src, idx, w, dst),
            _ => {
                let t = taps.stride;
                for ((d, idx), w) in dst.iter_mut().zip(idx.chunks_exact(t)).zip(w.chunks_exact(t)) {
                    let mut acc = src[idx[0] as usize] * w[0];
                    for j in 1..t {
                        acc += src[idx[j] as usize] * w[j];
                    }
                    *d = acc;
                }
            }
        }
    }
}

multiversion! {
    /// The height pass for all three planes: every output row is a weighted
    /// sum of whole rows of the width-pass result (`rows`, rows `row0..`).
    pub(crate) fn resample_rows(rows: &[f32], width: usize, row0: usize, taps: &AxisTaps, out: &mut [f32]) {
        let t = taps.stride;
        let n_out = taps.len.len();
        let rows_plane = rows.len() / 3;
        for (c, out_c) in out.chunks_exact_mut(n_out * width).enumerate() {
            let rc = &rows[c * rows_plane..(c + 1) * rows_plane];
            for (i, dst) in out_c.chunks_exact_mut(width).enumerate() {
                let idx = &taps.idx[i * t..(i + 1) * t];
                let w = &taps.w[i * t..(i + 1) * t];
                let o = (idx[0] as usize - row0) * width;
                let (r0, w0) = (&rc[o..o + width], w[0]);
                for (d, &x) in dst.iter_mut().zip(r0) {
                    *d = x * w0;
                }
                for j in 1..t {
                    let o = (idx[j] as usize - row0) * width;
                    let wj = w[j];
                    for (d, &x) in dst.iter_mut().zip(&rc[o..o + width]) {
                        *d += x * wj;
                    }
                }
            }
        }
    }
}

/// Crops `win` out of `src` and resizes it to `out_h x out_w`, writing 3 CHW
/// planes into `out`. An axis whose length does not change is copied, as torch
/// skips it; the width pass runs first.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resized_crop(
    src: &CropSource<'_>,
    win: Window,
    out_h: usize,
    out_w: usize,
    antialias: bool,
    out: &mut [f32],
    s: &mut ResizeScratch,
) {
    let plane = out_h * out_w;
    let resize_w = win.width != out_w;
    let resize_h = win.height != out_h;
    if resize_w {
        s.tx.compute(win.width, out_w, antialias);
    }
    // Rows of the window the height pass reads (all of them when the height is kept).
    let (row_lo, row_hi) = if resize_h {
        s.ty.compute(win.height, out_h, antialias);
        s.ty.source_range()
    } else {
        (0, win.height)
    };
    let n_rows = row_hi - row_lo;
    let line = take(&mut s.line, 3 * win.width);
    // The width pass writes straight into `out` when no height pass follows.
    let rows: &mut [f32] = if resize_h {
        take(&mut s.rows, 3 * n_rows * out_w)
    } else {
        &mut *out
    };
    let rows_plane = n_rows * out_w;
    for y in row_lo..row_hi {
        read_row(src, win, y, line);
        for c in 0..3 {
            let l = &line[c * win.width..(c + 1) * win.width];
            let d = &mut rows[c * rows_plane + (y - row_lo) * out_w..][..out_w];
            if resize_w {
                resample_line(l, &s.tx, d);
            } else {
                d.copy_from_slice(l);
            }
        }
    }
    if resize_h {
        let rows = &s.rows[..3 * rows_plane];
        resample_rows(rows, out_w, row_lo, &s.ty, &mut out[..3 * plane]);
    }
}
