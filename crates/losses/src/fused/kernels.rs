//! Row kernels shared by the fused CPU losses: L2 normalisation and its
//! backward, vectorised max / exp-sum over logit rows, and a safe wrapper of
//! mocca-kernels' GEMM.
//!
//! The exp and max loops are written so LLVM vectorises them; each public
//! kernel is compiled twice (baseline x86-64 and AVX2+FMA) and picks one at
//! run time, because the workspace is built for baseline x86-64 and a scalar
//! `expf` over a `[256, 65536]` logit matrix would cost more than the GEMMs.

use mocca_core::multiversion;
use mocca_kernels::gemm::{sgemm_scaled, MatRef};

/// `max(‖x‖, EPS)` is the norm the loss divides by (torch's `F.normalize`).
pub(crate) const NORM_EPS: f32 = 1e-12;

/// Lanes of the hand-split reductions: two AVX2 registers, enough to break
/// the add/max dependency chains without spilling the exp's temporaries.
const LANES: usize = 16;

/// `exp` arguments are clamped to this floor: `exp(-86) ≈ 4e-38` is still a
/// normal f32, which keeps the exponent-bit construction below valid. The
/// kernels only exponentiate `logit - row max <= 0`, so values this small
/// are negligible next to the row's sum (at least 1).
const EXP_FLOOR: f32 = -86.0;

/// `a * b + c`, fused only where the caller was compiled with FMA (a software
/// `fmaf` would be far slower than the two roundings).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `exp(x)` for `x` in `[EXP_FLOOR, 0]` (clamped into `[EXP_FLOOR, 88]`),
/// Cephes' `expf` polynomial: about 1 ulp. Branch-free so it vectorises.
#[inline(always)]
fn exp_approx<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n * LN2_HI` is exact for the |n| < 2^15 we see.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer and leaves it in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = if x < EXP_FLOOR { EXP_FLOOR } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = madd::<FMA>(x, LOG2E, MAGIC);
    let n = t - MAGIC;
    let n_bits = t.to_bits().wrapping_sub(MAGIC.to_bits());
    let r = madd::<FMA>(n, -LN2_LO, madd::<FMA>(n, -LN2_HI, x));
    let mut p = 1.987_569_1e-4;
    p = madd::<FMA>(p, r, 1.398_199_9e-3);
    p = madd::<FMA>(p, r, 8.333_452e-3);
    p = madd::<FMA>(p, r, 4.166_579_6e-2);
    p = madd::<FMA>(p, r, 1.666_666_5e-1);
    p = madd::<FMA>(p, r, 0.5);
    let y = madd::<FMA>(p, r * r, r) + 1.0;
    f32::from_bits(y.to_bits().wrapping_add(n_bits << 23))
}

#[inline(always)]
fn row_max_generic<const FMA: bool>(x: &[f32]) -> (f32, bool) {
    let mut max = [f32::NEG_INFINITY; LANES];
    // `v * 0` is NaN exactly when `v` is NaN or infinite.
    let mut poison = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            max[l] = if c[l] > max[l] { c[l] } else { max[l] };
            poison[l] += c[l] * 0.0;
        }
    }
    for (l, &v) in tail.iter().enumerate() {
        max[l] = if v > max[l] { v } else { max[l] };
        poison[l] += v * 0.0;
    }
    let m = max
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    let finite = poison.iter().sum::<f32>() == 0.0;
    (m, finite)
}

multiversion! {
    /// Maximum of a row, and whether every value in it is finite.
    pub(crate) fn row_max(x: &[f32]) -> (f32, bool) = row_max_generic
}

#[inline(always)]
fn exp_sum_generic<const FMA: bool>(x: &mut [f32], shift: f32, scale: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            let e = exp_approx::<FMA>((c[l] - shift) * scale);
            c[l] = e;
            acc[l] += e;
        }
    }
    for (l, v) in chunks.into_remainder().iter_mut().enumerate() {
        let e = exp_approx::<FMA>((*v - shift) * scale);
        *v = e;
        acc[l] += e;
    }
    acc.iter().sum()
}

multiversion! {
    /// Replaces each `v` by `exp((v - shift) * scale)` and returns their sum.
    /// Subtracting before scaling keeps the argument exact near the row max
    /// even at τ = 0.01, where `v * scale` alone would carry an error of
    /// ~1e-5 into every term.
    pub(crate) fn exp_sum(x: &mut [f32], shift: f32, scale: f32) -> f32 = exp_sum_generic
}

#[inline(always)]
fn exp_sum_readonly_generic<const FMA: bool>(x: &[f32], shift: f32, scale: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += exp_approx::<FMA>((c[l] - shift) * scale);
        }
    }
    for (l, &v) in tail.iter().enumerate() {
        acc[l] += exp_approx::<FMA>((v - shift) * scale);
    }
    acc.iter().sum()
}

multiversion! {
    /// `Σ exp((v - shift) * scale)` without writing.
    pub(crate) fn exp_sum_readonly(x: &[f32], shift: f32, scale: f32) -> f32 = exp_sum_readonly_generic
}

#[inline(always)]
fn symmetric_softmax_generic<const FMA: bool>(
    row: &mut [f32],
    shift: f32,
    log_sum: f32,
    col_shift: &[f32],
    col_log_sum: &[f32],
    scale: f32,
    weight: f32,
) {
    for ((v, &cm), &cl) in row.iter_mut().zip(col_shift).zip(col_log_sum) {
        let own = exp_approx::<FMA>((*v - shift) * scale - log_sum);
        let other = exp_approx::<FMA>((*v - cm) * scale - cl);
        *v = weight * (own + other);
    }
}

multiversion! {
    /// Row i of `w · (P + Pᵀ)` for a symmetric similarity matrix `s`, where
    /// `P_ij = exp((s_ij − m_i)·scale − ln Σ_i)`: `P_ji` only needs row j's
    /// statistics because `s_ji = s_ij`, so no transpose is ever read.
    pub(crate) fn symmetric_softmax(
        row: &mut [f32],
        shift: f32,
        log_sum: f32,
        col_shift: &[f32],
        col_log_sum: &[f32],
        scale: f32,
        weight: f32,
    ) -> () = symmetric_softmax_generic
}

#[inline(always)]
fn scale_generic<const FMA: bool>(x: &mut [f32], s: f32) {
    for v in x.iter_mut() {
        *v *= s;
    }
}

multiversion! {
    /// `x *= s`.
    pub(crate) fn scale(x: &mut [f32], s: f32) -> () = scale_generic
}

/// Dot product in f32 with eight independent accumulators (vectorises; for the gathered
/// similarities, where the matmul's blocking does not apply).
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(&x, &y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Dot product accumulated in f64 (rows are short; this is for the few
/// per-row scalars whose rounding would show at τ = 0.01).
pub(crate) fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Normalises each `d`-wide row of `x` into `out` and returns, per row, the
/// factor it was multiplied by: `1 / max(‖x‖, 1e-12)`, negative when the
/// clamp was active (the backward then skips the projection, as the clamp's
/// gradient is zero).
pub(crate) fn normalize_rows(x: &[f32], d: usize, out: &mut [f32]) -> Vec<f32> {
    x.chunks_exact(d)
        .zip(out.chunks_exact_mut(d))
        .map(|(row, o)| {
            let norm = dot_f64(row, row).sqrt();
            let (inv, clamped) = if norm < NORM_EPS as f64 {
                (1.0 / NORM_EPS as f64, true)
            } else {
                (1.0 / norm, false)
            };
            for (o, &v) in o.iter_mut().zip(row) {
                *o = (v as f64 * inv) as f32;
            }
            if clamped {
                -(inv as f32)
            } else {
                inv as f32
            }
        })
        .collect()
}

/// Backward of [`normalize_rows`], in place: `g` holds dL/dx̂ and becomes
/// dL/dx = (g − x̂ (x̂·g)) / ‖x‖ (or g / eps for clamped rows).
pub(crate) fn normalize_backward(xhat: &[f32], inv: &[f32], d: usize, g: &mut [f32]) {
    for ((row, gr), &inv) in xhat.chunks_exact(d).zip(g.chunks_exact_mut(d)).zip(inv) {
        if inv < 0.0 {
            for v in gr.iter_mut() {
                *v *= -inv;
            }
            continue;
        }
        let proj = dot_f64(row, gr);
        for (v, &h) in gr.iter_mut().zip(row) {
            *v = ((*v as f64 - h as f64 * proj) * inv as f64) as f32;
        }
    }
}

/// A strided f32 matrix operand: element `(r, c)` is `data[r·row_stride + c·col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Operand<'a> {
    /// Row-major with `ld` elements between rows.
    pub(crate) fn rows(data: &'a [f32], ld: usize) -> Self {
        Self {
            data,
            row_stride: ld,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix with `ld` elements between rows.
    pub(crate) fn transposed(data: &'a [f32], ld: usize) -> Self {
        Self {
            data,
            row_stride: 1,
            col_stride: ld,
        }
    }

    /// Whether a `rows × cols` view stays inside `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst[m×n] = (accumulate ? dst : 0) + alpha · lhs[m×k] · rhs[k×n]`, with
/// `dst` row-major, `dst_ld` elements between its rows. Panics on operands
/// too short for the shapes (a bug, not input).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_ld: usize,
    accumulate: bool,
    lhs: Operand<'_>,
    rhs: Operand<'_>,
    alpha: f32,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst_ld >= n && (m - 1) * dst_ld + n <= dst.len(),
        "matmul: dst too small"
    );
    assert!(
        k == 0 || (lhs.fits(m, k) && rhs.fits(k, n)),
        "matmul: operand too small"
    );
    let threads = rayon::current_num_threads();
    let threads = if parallel && threads > 1 && m * n * k >= 1 << 18 {
        threads
    } else {
        1
    };
    let view = |o: Operand<'_>| MatRef {
        ptr: o.data.as_ptr(),
        rs: o.row_stride as isize,
        cs: o.col_stride as isize,
    };
    // SAFETY: the asserts above bound every index gemm computes from these
    // shapes and strides (no operand is read when k = 0); `dst` rows do not
    // overlap (dst_ld >= n) and do not alias the inputs (&mut vs &).
    unsafe {
        sgemm_scaled(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_ld as isize,
            1,
            accumulate,
            view(lhs),
            view(rhs),
            alpha,
            threads,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_is_within_two_ulp_of_std_exp_over_the_used_range() {
        let mut worst = 0.0f64;
        // Down to the clamp at -86, below which values are floored on purpose.
        for i in 0..=86_000 {
            let x = -(i as f32) * 1e-3;
            if x < EXP_FLOOR {
                break;
            }
            let want = (x as f64).exp();
            for got in [exp_approx::<false>(x), exp_approx::<true>(x)] {
                worst = worst.max(((got as f64 - want) / want).abs());
            }
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
    }

    #[test]
    fn exp_sum_matches_scalar_loop_and_rewrites_in_place() {
        let mut x: Vec<f32> = (0..101).map(|i| (i as f32 * 0.37).sin()).collect();
        // The argument is rounded to f32 as the kernel rounds it.
        let want: Vec<f64> = x
            .iter()
            .map(|&v| (((v - 0.5) * 3.0) as f64).exp())
            .collect();
        let s = exp_sum(&mut x, 0.5, 3.0);
        for (g, w) in x.iter().zip(&want) {
            assert!(((*g as f64 - w) / w).abs() < 3e-7);
        }
        let total = want.iter().sum::<f64>();
        assert!(((s as f64 - total) / total).abs() < 1e-6, "{s} vs {total}");
    }

    #[test]
    fn row_max_reports_non_finite_values() {
        let mut x: Vec<f32> = (0..70).map(|i| i as f32 - 30.0).collect();
        assert_eq!(row_max(&x), (39.0, true));
        x[65] = f32::NEG_INFINITY;
        assert!(!row_max(&x).1);
        x[65] = f32::NAN;
        assert!(!row_max(&x).1);
    }

    #[test]
    fn matmul_writes_only_the_first_n_of_each_padded_dst_row() {
        let a = [1.0, 2.0, 3.0, 4.0]; // [2x2]
        let mut d = [9.0; 6]; // [2x2] with rows 3 apart
        matmul(
            2,
            2,
            2,
            &mut d,
            3,
            false,
            Operand::rows(&a, 2),
            Operand::rows(&a, 2),
            1.0,
            false,
        );
        assert_eq!(d, [7.0, 10.0, 9.0, 15.0, 22.0, 9.0]);
        matmul(
            2,
            2,
            2,
            &mut d,
            3,
            true,
            Operand::rows(&a, 2),
            Operand::rows(&a, 2),
            -1.0,
            false,
        );
        assert_eq!(d, [0.0, 0.0, 9.0, 0.0, 0.0, 9.0]);
    }

    #[test]
    fn matmul_handles_transposed_operands() {
        // lhs [2x3], rhs given as its transpose [2x3] -> dst [2x2].
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        let mut d = [0.0; 4];
        matmul(
            2,
            2,
            3,
            &mut d,
            2,
            false,
            Operand::rows(&a, 3),
            Operand::transposed(&b, 3),
            1.0,
            false,
        );
        assert_eq!(d, [4.0, 2.0, 10.0, 5.0]);
        // aᵀ a via a transposed lhs: [3x3]
        let mut d = [0.0; 9];
        matmul(
            3,
            3,
            2,
            &mut d,
            3,
            false,
            Operand::transposed(&a, 3),
            Operand::rows(&a, 3),
            0.5,
            false,
        );
        assert_eq!(d, [8.5, 11.0, 13.5, 11.0, 14.5, 18.0, 13.5, 18.0, 22.5]);
    }
}
