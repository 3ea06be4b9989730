//! The three passes of a convolution on the CPU (forward, input gradient, weight gradient), by
//! the direct kernels or as GEMMs on im2col tiles cut to fit the L2 cache.

use rayon::prelude::*;

use super::im2col::{col2im_add, im2col};
use super::pack::{pack_flipped_transposed, pack_forward};
use super::{direct, ConvGeom, Kernel, Pass};
use crate::cpu::{output_buffer, sum_partials, threads, with_scratch};
use crate::gemm::{sgemm, MatRef};

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
