//! Convolution in NHWC on the CPU: forward, input gradient and weight gradient, by the direct
//! kernels of `direct.rs` or as GEMMs ([`Kernel::choose`] picks per pass and shape).
//!
//! With channels last, the im2col row of an output pixel is `kh` contiguous runs of `kw·C_in`
//! floats, and the forward pass is `[rows, kh·kw·C_in] × [kh·kw·C_in, C_out]` written straight
//! into the NHWC output. The rows are cut into chunks whose im2col tile fits in a core's L2
//! cache; each Rayon task fills its tile and multiplies it on its own thread.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{f32_operand, output_buffer, sum_partials, threads, with_scratch};
use super::direct;
use super::gemm::{sgemm, MatRef};
use super::OpError;

/// Bytes of im2col tile per task: about a third of this machine's 1 MiB L2, leaving room for
/// gemm's packed panels.
const TILE_BYTES: usize = 384 * 1024;

/// Output rows per forward / input-gradient GEMM for an im2col row of `k` floats: a tile that
/// fits the L2 cache, but at least 256 rows, since gemm repacks the whole `[k, C_out]` weight on
/// every call (deep layers, k = 4608, would otherwise spend more time packing than multiplying).
fn chunk_rows(k: usize) -> usize {
    let rows = TILE_BYTES / 4 / k.max(1);
    (rows.clamp(256, 4096) / 16) * 16
}

/// Rows per weight-gradient GEMM: each call also reads and writes the `[C_out, k]` accumulator,
/// so the calls are made longer (at least 512 rows).
fn wgrad_rows(k: usize) -> usize {
    let rows = TILE_BYTES / 4 / k.max(1);
    (rows.clamp(512, 8192) / 16) * 16
}

/// Shapes of one convolution: input `[n, h, w, cin]`, weight `[cout, cin, kh, kw]`,
/// output `[n, ho, wo, cout]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeom {
    /// Checks the operands of `conv2d_nhwc` and derives the output size.
    pub(crate) fn new(
        x_dims: &[usize],
        w_dims: &[usize],
        stride: usize,
        padding: usize,
    ) -> std::result::Result<Self, OpError> {
        const OP: &str = "conv2d_nhwc";
        let &[n, h, w, cin] = x_dims else {
            return Err(OpError::Shape {
                op: OP,
                msg: format!("x must be [N, H, W, C_in] (NHWC), got shape {x_dims:?}"),
            });
        };
        let &[cout, wcin, kh, kw] = w_dims else {
            return Err(OpError::Shape {
                op: OP,
                msg: format!("weight must be [C_out, C_in, kh, kw], got shape {w_dims:?}"),
            });
        };
        if wcin != cin {
            return Err(OpError::Shape {
                op: OP,
                msg: format!(
                    "x has {cin} channels (last dim of {x_dims:?}) but the weight {w_dims:?} expects {wcin}"
                ),
            });
        }
        if stride == 0 {
            return Err(OpError::Argument {
                op: OP,
                msg: "stride must be at least 1".into(),
            });
        }
        if x_dims.contains(&0) || w_dims.contains(&0) {
            return Err(OpError::Shape {
                op: OP,
                msg: format!("empty operand: x {x_dims:?}, weight {w_dims:?}"),
            });
        }
        if h + 2 * padding < kh || w + 2 * padding < kw {
            return Err(OpError::Shape {
                op: OP,
                msg: format!(
                    "input {h}x{w} with padding {padding} is smaller than the {kh}x{kw} kernel"
                ),
            });
        }
        Ok(Self {
            n,
            h,
            w,
            cin,
            cout,
            kh,
            kw,
            stride,
            pad_h: padding,
            pad_w: padding,
            ho: (h + 2 * padding - kh) / stride + 1,
            wo: (w + 2 * padding - kw) / stride + 1,
        })
    }

    /// Length of one im2col row.
    pub(crate) fn k(&self) -> usize {
        self.kh * self.kw * self.cin
    }

    /// Number of output pixels, the GEMM's M.
    pub(crate) fn rows(&self) -> usize {
        self.n * self.ho * self.wo
    }

    /// A 1x1 stride-1 unpadded convolution is a plain matrix product over the NHWC rows.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad_h == 0 && self.pad_w == 0
    }

    /// For stride 1, the input gradient is a forward convolution of the output gradient with the
    /// spatially flipped, in/out-transposed kernel and padding `k - 1 - p`; `None` when that
    /// padding would be negative or the stride is not 1.
    fn dgrad_as_forward(&self) -> Option<ConvGeom> {
        if self.stride != 1 || self.pad_h >= self.kh || self.pad_w >= self.kw {
            return None;
        }
        Some(ConvGeom {
            n: self.n,
            h: self.ho,
            w: self.wo,
            cin: self.cout,
            cout: self.cin,
            kh: self.kh,
            kw: self.kw,
            stride: 1,
            pad_h: self.kh - 1 - self.pad_h,
            pad_w: self.kw - 1 - self.pad_w,
            ho: self.h,
            wo: self.w,
        })
    }

    /// Columns `[b_lo, b_hi)` of the kernel that land inside the input for output column `ow`,
    /// and the input column of kernel column 0 (possibly negative).
    #[inline]
    fn col_range(&self, ow: usize) -> (isize, usize, usize) {
        let iw0 = (ow * self.stride) as isize - self.pad_w as isize;
        let b_lo = ((-iw0).max(0) as usize).min(self.kw);
        let b_hi = ((self.w as isize - iw0).max(0) as usize).min(self.kw);
        (iw0, b_lo, b_hi.max(b_lo))
    }
}

/// Weight `[cout, cin, kh, kw]` to the forward GEMM's right operand `[(a, b, ci), co]`.
fn pack_forward(w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let mut wp = vec![0.0f32; g.k() * g.cout];
    for co in 0..g.cout {
        for ci in 0..g.cin {
            for a in 0..g.kh {
                for b in 0..g.kw {
                    let src = ((co * g.cin + ci) * g.kh + a) * g.kw + b;
                    wp[((a * g.kw + b) * g.cin + ci) * g.cout + co] = w[src];
                }
            }
        }
    }
    wp
}

/// Weight `[cout, cin, kh, kw]` to the right operand of the stride-1 input-gradient convolution:
/// `[(a, b, co), ci]` holding `w[co, ci, kh-1-a, kw-1-b]`.
fn pack_flipped_transposed(w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let mut wp = vec![0.0f32; g.k() * g.cout];
    for co in 0..g.cout {
        for ci in 0..g.cin {
            for a in 0..g.kh {
                for b in 0..g.kw {
                    let src = ((co * g.cin + ci) * g.kh + (g.kh - 1 - a)) * g.kw + (g.kw - 1 - b);
                    wp[((a * g.kw + b) * g.cout + co) * g.cin + ci] = w[src];
                }
            }
        }
    }
    wp
}

/// Fills `col[rows, k]` with the im2col rows of output pixels `r0..r0+rows` (zeros for padding).
fn im2col(x: &[f32], g: &ConvGeom, r0: usize, rows: usize, col: &mut [f32]) {
    let k = g.k();
    let run = g.kw * g.cin;
    let per_image = g.ho * g.wo;
    for r in 0..rows {
        let idx = r0 + r;
        let n = idx / per_image;
        let rem = idx - n * per_image;
        let oh = rem / g.wo;
        let ow = rem - oh * g.wo;
        let (iw0, b_lo, b_hi) = g.col_range(ow);
        let dst = &mut col[r * k..(r + 1) * k];
        for a in 0..g.kh {
            let ih = (oh * g.stride + a) as isize - g.pad_h as isize;
            let seg = &mut dst[a * run..(a + 1) * run];
            if ih < 0 || ih >= g.h as isize || b_lo == b_hi {
                seg.fill(0.0);
                continue;
            }
            seg[..b_lo * g.cin].fill(0.0);
            seg[b_hi * g.cin..].fill(0.0);
            let src = ((n * g.h + ih as usize) * g.w + (iw0 + b_lo as isize) as usize) * g.cin;
            seg[b_lo * g.cin..b_hi * g.cin].copy_from_slice(&x[src..src + (b_hi - b_lo) * g.cin]);
        }
    }
}

/// Adds the im2col-shaped gradient `dcol[rows, k]` of output pixels `r0..r0+rows` of image
/// `n` back onto that image's input gradient `dx_img` `[h, w, cin]`.
fn col2im_add(dcol: &[f32], g: &ConvGeom, r0: usize, rows: usize, dx_img: &mut [f32]) {
    let k = g.k();
    let run = g.kw * g.cin;
    for r in 0..rows {
        let rem = r0 + r;
        let oh = rem / g.wo;
        let ow = rem - oh * g.wo;
        let (iw0, b_lo, b_hi) = g.col_range(ow);
        if b_lo == b_hi {
            continue;
        }
        let src_row = &dcol[r * k..(r + 1) * k];
        for a in 0..g.kh {
            let ih = (oh * g.stride + a) as isize - g.pad_h as isize;
            if ih < 0 || ih >= g.h as isize {
                continue;
            }
            let src = &src_row[a * run + b_lo * g.cin..a * run + b_hi * g.cin];
            let start = (ih as usize * g.w + (iw0 + b_lo as isize) as usize) * g.cin;
            let dst = &mut dx_img[start..start + src.len()];
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
    }
}

/// Which CPU kernel computes a convolution's products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// im2col tiles (none for 1x1 stride 1) multiplied by the `gemm` crate.
    Gemm,
    /// The AVX2 + FMA register-tile kernels of `direct.rs`, reading padded inputs in place.
    Direct,
}

/// Which product of a convolution a kernel is chosen for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pass {
    Forward,
    InputGrad,
    WeightGrad,
}

impl Kernel {
    /// The faster kernel for this pass of this geometry on this CPU (timed layer by layer on
    /// ResNet-18 at widths 0.25 and 1, batch 128, on a 2-core AVX2 machine): the direct kernels
    /// win wherever the channel counts are small; at 512 channels (K = 4608) gemm's packed
    /// panels win, and the weight gradient of a 3x3 convolution prefers gemm from 64 input
    /// channels on. A 1x1 stride-1 convolution is already a plain GEMM over the NHWC rows.
    /// `MOCCA_CONV_KERNEL=gemm` forces the GEMM kernels (for side-by-side benchmarks).
    pub(crate) fn choose(g: &ConvGeom, pass: Pass) -> Kernel {
        static FORCE_GEMM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let force_gemm = *FORCE_GEMM.get_or_init(|| {
            std::env::var("MOCCA_CONV_KERNEL").is_ok_and(|v| v.eq_ignore_ascii_case("gemm"))
        });
        if force_gemm || g.is_pointwise() || !direct::available() {
            return Kernel::Gemm;
        }
        let direct = match pass {
            Pass::Forward => g.cin <= 256 && g.cout <= 256,
            // The stride-1 input gradient is a forward convolution; a strided one is `stride²`
            // short ones (`direct::dgrad_strided`), which beat GEMM + col2im at every width.
            Pass::InputGrad => match g.dgrad_as_forward() {
                Some(gd) => Kernel::choose(&gd, Pass::Forward) == Kernel::Direct,
                None => true,
            },
            Pass::WeightGrad => g.cin <= 32 || (g.kh == 1 && g.kw == 1),
        };
        if direct {
            Kernel::Direct
        } else {
            Kernel::Gemm
        }
    }
}

/// `y[rows, cout] = conv(x) · wp`, with `wp` `[k, cout]` already packed.
fn conv_forward_with(x: &[f32], wp: &[f32], g: &ConvGeom, y: &mut [f32], kernel: Kernel) {
    match kernel {
        Kernel::Direct => direct::forward(x, wp, g, y),
        Kernel::Gemm => conv_gemm_forward(x, wp, g, y),
    }
}

/// `y[rows, cout] = im2col(x) · wp`, with `wp` `[k, cout]` already packed.
fn conv_gemm_forward(x: &[f32], wp: &[f32], g: &ConvGeom, y: &mut [f32]) {
    let (k, cout) = (g.k(), g.cout);
    let rhs = MatRef {
        ptr: wp.as_ptr(),
        rs: cout as isize,
        cs: 1,
    };
    if g.is_pointwise() {
        let lhs = MatRef {
            ptr: x.as_ptr(),
            rs: k as isize,
            cs: 1,
        };
        // SAFETY: x is [rows, cin], wp [cin, cout], y [rows, cout], all in bounds, y distinct.
        unsafe {
            sgemm(
                g.rows(),
                cout,
                k,
                y.as_mut_ptr(),
                cout as isize,
                1,
                false,
                lhs,
                rhs,
                threads(),
            )
        };
        return;
    }
    let chunk = chunk_rows(k);
    y.par_chunks_mut(chunk * cout)
        .enumerate()
        .for_each(|(i, y_chunk)| {
            let rows = y_chunk.len() / cout;
            with_scratch(rows * k, |col| {
                im2col(x, g, i * chunk, rows, col);
                let lhs = MatRef {
                    ptr: col.as_ptr(),
                    rs: k as isize,
                    cs: 1,
                };
                // SAFETY: col is [rows, k], wp [k, cout], y_chunk [rows, cout].
                unsafe {
                    sgemm(
                        rows,
                        cout,
                        k,
                        y_chunk.as_mut_ptr(),
                        cout as isize,
                        1,
                        false,
                        lhs,
                        rhs,
                        1,
                    )
                };
            });
        });
}

/// Forward convolution: `x` `[n, h, w, cin]`, `w` `[cout, cin, kh, kw]` → `[n, ho, wo, cout]`.
pub(crate) fn conv_forward(x: &[f32], w: &[f32], g: &ConvGeom, kernel: Kernel) -> Vec<f32> {
    let wp = pack_forward(w, g);
    let mut y = output_buffer(g.rows() * g.cout);
    conv_forward_with(x, &wp, g, &mut y, kernel);
    y
}

/// Input gradient: `dy` `[n, ho, wo, cout]` → `dx` `[n, h, w, cin]`.
pub(crate) fn conv_dgrad(dy: &[f32], w: &[f32], g: &ConvGeom, kernel: Kernel) -> Vec<f32> {
    let dx_len = g.n * g.h * g.w * g.cin;
    if let Some(gd) = g.dgrad_as_forward() {
        let mut dx = output_buffer(dx_len);
        let wp = pack_flipped_transposed(w, g);
        conv_forward_with(dy, &wp, &gd, &mut dx, kernel);
        return dx;
    }
    if kernel == Kernel::Direct {
        return direct::dgrad_strided(dy, w, g);
    }
    // Strided (or over-padded) convolutions: GEMM to im2col-shaped gradients, then scatter-add
    // them (col2im). Images are independent, so threads take whole images.
    let mut dx = vec![0.0f32; dx_len];
    let wp = pack_forward(w, g);
    let (k, cout) = (g.k(), g.cout);
    let per_image = g.ho * g.wo;
    let chunk = chunk_rows(k);
    let one_image = |n: usize, dx_img: &mut [f32], gemm_threads: usize| {
        let mut r0 = 0;
        while r0 < per_image {
            let rows = chunk.min(per_image - r0);
            with_scratch(rows * k, |dcol| {
                let lhs = MatRef {
                    ptr: dy[(n * per_image + r0) * cout..].as_ptr(),
                    rs: cout as isize,
                    cs: 1,
                };
                let rhs = MatRef {
                    ptr: wp.as_ptr(),
                    rs: 1,
                    cs: cout as isize,
                };
                // SAFETY: lhs is `rows` rows of dy, rhs wpᵀ [cout, k], dcol [rows, k].
                unsafe {
                    sgemm(
                        rows,
                        k,
                        cout,
                        dcol.as_mut_ptr(),
                        k as isize,
                        1,
                        false,
                        lhs,
                        rhs,
                        gemm_threads,
                    )
                };
                col2im_add(dcol, g, r0, rows, dx_img);
            });
            r0 += rows;
        }
    };
    let image_len = g.h * g.w * g.cin;
    if g.n >= threads() {
        dx.par_chunks_mut(image_len)
            .enumerate()
            .for_each(|(n, dx_img)| one_image(n, dx_img, 1));
    } else {
        for (n, dx_img) in dx.chunks_mut(image_len).enumerate() {
            one_image(n, dx_img, threads());
        }
    }
    dx
}

/// `dx += ` the input gradient of `dy`. A 1x1 unpadded convolution (a ResNet downsample, stride
/// 2) is one pointwise GEMM whose rows are added onto every `stride`-th pixel, without the
/// zero-filled, 4x larger gradient and the col2im pass of [`conv_dgrad`].
pub(crate) fn conv_dgrad_add(dy: &[f32], w: &[f32], g: &ConvGeom, dx: &mut [f32]) {
    if !(g.kh == 1 && g.kw == 1 && g.pad_h == 0 && g.pad_w == 0) {
        let d = conv_dgrad(dy, w, g, Kernel::choose(g, Pass::InputGrad));
        dx.par_chunks_mut(1 << 14)
            .zip(d.par_chunks(1 << 14))
            .for_each(|(a, d)| a.iter_mut().zip(d).for_each(|(a, d)| *a += d));
        return;
    }
    let (rows, cin, cout) = (g.rows(), g.cin, g.cout);
    let mut tmp = output_buffer(rows * cin);
    let lhs = MatRef {
        ptr: dy.as_ptr(),
        rs: cout as isize,
        cs: 1,
    };
    // w [cout, cin, 1, 1] is the row-major [cout, cin] matrix.
    let rhs = MatRef {
        ptr: w.as_ptr(),
        rs: cin as isize,
        cs: 1,
    };
    // SAFETY: dy is [rows, cout], w [cout, cin], tmp [rows, cin], distinct.
    unsafe {
        sgemm(
            rows,
            cin,
            cout,
            tmp.as_mut_ptr(),
            cin as isize,
            1,
            false,
            lhs,
            rhs,
            threads(),
        )
    };
    let per_image = g.ho * g.wo * cin;
    dx.par_chunks_mut(g.h * g.w * cin)
        .zip(tmp.par_chunks(per_image))
        .for_each(|(img, t)| {
            for oh in 0..g.ho {
                for ow in 0..g.wo {
                    let at = (oh * g.stride * g.w + ow * g.stride) * cin;
                    let src = &t[(oh * g.wo + ow) * cin..(oh * g.wo + ow + 1) * cin];
                    img[at..at + cin]
                        .iter_mut()
                        .zip(src)
                        .for_each(|(a, s)| *a += s);
                }
            }
        });
}

/// Weight gradient: `x` `[n, h, w, cin]`, `dy` `[n, ho, wo, cout]` → `[cout, cin, kh, kw]`.
pub(crate) fn conv_wgrad(x: &[f32], dy: &[f32], g: &ConvGeom, kernel: Kernel) -> Vec<f32> {
    if kernel == Kernel::Direct {
        // [(a, b, ci), co] → torchvision's [co, ci, a, b].
        let acc = direct::wgrad(x, dy, g);
        let mut dw = vec![0.0f32; acc.len()];
        for co in 0..g.cout {
            for a in 0..g.kh {
                for b in 0..g.kw {
                    for ci in 0..g.cin {
                        dw[((co * g.cin + ci) * g.kh + a) * g.kw + b] =
                            acc[((a * g.kw + b) * g.cin + ci) * g.cout + co];
                    }
                }
            }
        }
        return dw;
    }
    let (k, cout, rows) = (g.k(), g.cout, g.rows());
    let chunk = wgrad_rows(k);
    let n_chunks = rows.div_ceil(chunk);
    let parts = threads().min(n_chunks).max(1);
    // Each thread sums its share of the rows into a private [cout, k] accumulator.
    let partial = |p: usize| -> Vec<f32> {
        let mut acc = vec![0.0f32; cout * k];
        let first = p * n_chunks / parts * chunk;
        let last = ((p + 1) * n_chunks / parts * chunk).min(rows);
        let lhs_at = |r0: usize| MatRef {
            ptr: dy[r0 * cout..].as_ptr(),
            rs: 1,
            cs: cout as isize,
        };
        if g.is_pointwise() {
            let rhs = MatRef {
                ptr: x[first * k..].as_ptr(),
                rs: k as isize,
                cs: 1,
            };
            // SAFETY: dyᵀ rows first..last is [cout, last-first], x rows [last-first, k].
            unsafe {
                sgemm(
                    cout,
                    k,
                    last - first,
                    acc.as_mut_ptr(),
                    k as isize,
                    1,
                    true,
                    lhs_at(first),
                    rhs,
                    1,
                )
            };
            return acc;
        }
        let mut r0 = first;
        while r0 < last {
            let n_rows = chunk.min(last - r0);
            with_scratch(n_rows * k, |col| {
                im2col(x, g, r0, n_rows, col);
                let rhs = MatRef {
                    ptr: col.as_ptr(),
                    rs: k as isize,
                    cs: 1,
                };
                // SAFETY: dyᵀ chunk [cout, n_rows], col [n_rows, k], acc [cout, k].
                unsafe {
                    sgemm(
                        cout,
                        k,
                        n_rows,
                        acc.as_mut_ptr(),
                        k as isize,
                        1,
                        true,
                        lhs_at(r0),
                        rhs,
                        1,
                    )
                };
            });
            r0 += n_rows;
        }
        acc
    };
    let acc = sum_partials(parts, cout * k, partial);
    // [co, (a, b, ci)] → torchvision's [co, ci, a, b].
    let mut dw = vec![0.0f32; cout * k];
    for co in 0..cout {
        for a in 0..g.kh {
            for b in 0..g.kw {
                for ci in 0..g.cin {
                    dw[((co * g.cin + ci) * g.kh + a) * g.kw + b] =
                        acc[co * k + (a * g.kw + b) * g.cin + ci];
                }
            }
        }
    }
    dw
}

const NAME: &str = "conv2d_nhwc";

fn check_dims(l: &Layout, expected: &[usize], what: &str) -> Result<()> {
    if l.dims() != expected {
        return Err(OpError::Shape {
            op: NAME,
            msg: format!("{what} has shape {:?}, expected {expected:?}", l.dims()),
        }
        .into());
    }
    Ok(())
}

/// The differentiable CPU convolution: arguments `(x, w)`.
pub(crate) struct Conv2dNhwc {
    pub stride: usize,
    pub padding: usize,
}

impl CustomOp2 for Conv2dNhwc {
    fn name(&self) -> &'static str {
        "mocca-conv2d-nhwc"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (f32_operand(s1, l1, NAME)?, f32_operand(s2, l2, NAME)?);
        let g = ConvGeom::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        let y = conv_forward(a, b, &g, Kernel::choose(&g, Pass::Forward));
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.ho, g.wo, g.cout))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = ConvGeom::new(x.dims(), w.dims(), self.stride, self.padding)?;
        let dy = dy.contiguous()?;
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(w, &ConvInputGrad(g))?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&dy, &ConvWeightGrad(g))?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// `(dy, w) → dx` for a convolution of geometry `.0`.
struct ConvInputGrad(ConvGeom);

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "mocca-conv2d-nhwc-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let (a, b) = (f32_operand(s1, l1, NAME)?, f32_operand(s2, l2, NAME)?);
        check_dims(l1, &[g.n, g.ho, g.wo, g.cout], "output gradient")?;
        check_dims(l2, &[g.cout, g.cin, g.kh, g.kw], "weight")?;
        let dx = conv_dgrad(a, b, g, Kernel::choose(g, Pass::InputGrad));
        Ok((CpuStorage::F32(dx), Shape::from((g.n, g.h, g.w, g.cin))))
    }
}

/// `(x, dy) → dw` for a convolution of geometry `.0`.
struct ConvWeightGrad(ConvGeom);

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "mocca-conv2d-nhwc-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let (a, b) = (f32_operand(s1, l1, NAME)?, f32_operand(s2, l2, NAME)?);
        check_dims(l1, &[g.n, g.h, g.w, g.cin], "input")?;
        check_dims(l2, &[g.n, g.ho, g.wo, g.cout], "output gradient")?;
        let dw = conv_wgrad(a, b, g, Kernel::choose(g, Pass::WeightGrad));
        Ok((
            CpuStorage::F32(dw),
            Shape::from((g.cout, g.cin, g.kh, g.kw)),
        ))
    }
}
