//! Fused CPU cross-entropy over a dense similarity matrix: NT-Xent (the 2N
//! views against each other) and MoCo's end-to-end form (queries against the
//! batch's keys). One GEMM for the logits and one pass per row for the
//! log-sum-exp; when gradients are needed, one more pass turns the logits
//! into dL/dS in place and GEMMs take it back to the embeddings (one for
//! NT-Xent, whose similarity matrix is symmetric; two for end-to-end).

use rayon::prelude::*;

use super::kernels::{
    exp_sum, exp_sum_readonly, matmul, normalize_backward, normalize_rows, row_max, scale,
    symmetric_softmax, Operand,
};
use super::FusedResult;

/// Which loss the dense matrix encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DenseKind {
    /// `z = [ẑ0; ẑ1]`, logits `z zᵀ / τ` without the diagonal, row i's positive is i ± N.
    NtXent,
    /// logits `q̂ k̂ᵀ / τ`, row i's positive is column i.
    EndToEnd,
}

/// Loss, accuracy and (if asked) gradients w.r.t. the raw `a` and `b`
/// (`[n, d]` each, row-major).
pub(crate) fn dense_loss(
    kind: DenseKind,
    a: &[f32],
    b: &[f32],
    n: usize,
    d: usize,
    inv_tau: f32,
    need_grad: bool,
) -> FusedResult {
    match kind {
        DenseKind::NtXent => ntxent(a, b, n, d, inv_tau, need_grad),
        DenseKind::EndToEnd => end_to_end(a, b, n, d, inv_tau, need_grad),
    }
}

fn ntxent(a: &[f32], b: &[f32], n: usize, d: usize, inv_tau: f32, need_grad: bool) -> FusedResult {
    let m = 2 * n;
    let mut z = vec![0.0f32; m * d];
    let (za, zb) = z.split_at_mut(n * d);
    let mut inv = normalize_rows(a, d, za);
    inv.extend(normalize_rows(b, d, zb));

    // Rows padded by a cache line: with m a multiple of 1024, columns of an
    // unpadded matrix would all map to the same cache sets.
    let ld = m + 16;
    let mut s = vec![0.0f32; m * ld];
    gram(&z, m, d, &mut s, ld);
    let positive = |i: usize| (i + n) % m;

    // Pass 1: each anchor's max and log-sum-exp, self-similarity excluded.
    // (The masked entry still adds exp(-86) ≈ 4e-38 to a sum of at least 1:
    // below f32 resolution.)
    let stats: Vec<(f32, f32, f64, bool)> = s
        .par_chunks_mut(ld)
        .enumerate()
        .map(|(i, row)| {
            let row = &mut row[..m];
            row[i] = f32::NEG_INFINITY;
            let (max, _) = row_max(row);
            let pos = row[positive(i)];
            let sum = exp_sum_readonly(row, max, inv_tau) as f64;
            let loss = (max as f64 - pos as f64) * inv_tau as f64 + sum.ln();
            (max, sum.ln() as f32, loss, pos >= max)
        })
        .collect();
    let loss: f64 = stats.iter().map(|s| s.2).sum();
    let correct = stats.iter().filter(|s| s.3).count();
    let mut result = FusedResult::new(loss, correct, m);
    if need_grad {
        // dL/dz = (G + Gᵀ) z with G = dL/dS: G + Gᵀ is built row by row from
        // the row statistics (S is symmetric, so no transpose is read), then
        // a single GEMM.
        let maxes: Vec<f32> = stats.iter().map(|s| s.0).collect();
        let log_sums: Vec<f32> = stats.iter().map(|s| s.1).collect();
        let weight = inv_tau / m as f32;
        s.par_chunks_mut(ld).enumerate().for_each(|(i, row)| {
            let row = &mut row[..m];
            symmetric_softmax(
                row,
                maxes[i],
                log_sums[i],
                &maxes,
                &log_sums,
                inv_tau,
                weight,
            );
            row[i] = 0.0;
            row[positive(i)] -= 2.0 * weight;
        });
        let mut g = vec![0.0f32; m * d];
        let (lhs, rhs) = (Operand::rows(&s, ld), Operand::rows(&z, d));
        matmul(m, d, m, &mut g, d, false, lhs, rhs, 1.0, true);
        drop(s);
        normalize_backward(&z, &inv, d, &mut g);
        let gb = g.split_off(n * d);
        result.grads = Some((g, gb));
    }
    result
}

/// `s = z zᵀ` (`m × m`, `ld` elements between rows) for row-major `z`
/// (`m × d`). Only the blocks on and above the diagonal are multiplied; the
/// others are mirrored, which costs a copy instead of a GEMM block.
fn gram(z: &[f32], m: usize, d: usize, s: &mut [f32], ld: usize) {
    let block = if m >= 256 {
        m.div_ceil(4).next_multiple_of(16)
    } else {
        m
    };
    for i0 in (0..m).step_by(block) {
        for j0 in (i0..m).step_by(block) {
            let (h, w) = (block.min(m - i0), block.min(m - j0));
            let (lhs, rhs) = (
                Operand::rows(&z[i0 * d..], d),
                Operand::transposed(&z[j0 * d..], d),
            );
            matmul(
                h,
                w,
                d,
                &mut s[i0 * ld + j0..],
                ld,
                false,
                lhs,
                rhs,
                1.0,
                true,
            );
        }
    }
    // Mirror the blocks above the diagonal in small tiles, so the column
    // walk of each tile stays in L1.
    const TILE: usize = 16;
    for i0 in (0..m).step_by(block) {
        let i_end = (i0 + block).min(m);
        for ti in (i0..i_end).step_by(TILE) {
            for tj in (i_end..m).step_by(TILE) {
                for i in ti..(ti + TILE).min(i_end) {
                    for j in tj..(tj + TILE).min(m) {
                        s[j * ld + i] = s[i * ld + j];
                    }
                }
            }
        }
    }
}

fn end_to_end(
    q: &[f32],
    k: &[f32],
    n: usize,
    d: usize,
    inv_tau: f32,
    need_grad: bool,
) -> FusedResult {
    let mut qh = vec![0.0f32; n * d];
    let mut kh = vec![0.0f32; n * d];
    let q_inv = normalize_rows(q, d, &mut qh);
    let k_inv = normalize_rows(k, d, &mut kh);

    let mut s = vec![0.0f32; n * n];
    let (lhs, rhs) = (Operand::rows(&qh, d), Operand::transposed(&kh, d));
    matmul(n, n, d, &mut s, n, false, lhs, rhs, 1.0, true);
    let (loss, correct) = softmax_rows(&mut s, n, inv_tau, need_grad);
    let mut result = FusedResult::new(loss, correct, n);
    if need_grad {
        // dL/dq̂ = G k̂, dL/dk̂ = Gᵀ q̂ with G = dL/dS.
        let mut gq = vec![0.0f32; n * d];
        let mut gk = vec![0.0f32; n * d];
        matmul(
            n,
            d,
            n,
            &mut gq,
            d,
            false,
            Operand::rows(&s, n),
            Operand::rows(&kh, d),
            1.0,
            true,
        );
        matmul(
            n,
            d,
            n,
            &mut gk,
            d,
            false,
            Operand::transposed(&s, n),
            Operand::rows(&qh, d),
            1.0,
            true,
        );
        normalize_backward(&qh, &q_inv, d, &mut gq);
        normalize_backward(&kh, &k_inv, d, &mut gk);
        result.grads = Some((gq, gk));
    }
    result
}

/// Cross-entropy of each row of the square similarity matrix `s` (logits
/// `s / τ`) against its diagonal entry (query i's positive is key i).
/// Returns the summed loss and the number of rows whose positive is the
/// largest logit. With `need_grad`, `s` is overwritten by dL/ds of the mean
/// loss (the 1/τ of the logits included).
fn softmax_rows(s: &mut [f32], n: usize, inv_tau: f32, need_grad: bool) -> (f64, usize) {
    let grad_scale = inv_tau / n as f32;
    s.par_chunks_mut(n)
        .enumerate()
        .map(|(i, row)| {
            let (max, _) = row_max(row);
            let pos = row[i];
            let sum = exp_sum(row, max, inv_tau);
            let loss = (max as f64 - pos as f64) * inv_tau as f64 + (sum as f64).ln();
            if need_grad {
                scale(row, grad_scale / sum);
                row[i] -= grad_scale;
            }
            (loss, usize::from(pos >= max))
        })
        .reduce(|| (0.0, 0), |x, y| (x.0 + y.0, x.1 + y.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gram_equals_the_plain_product_including_mirrored_blocks() {
        for m in [5usize, 255, 256, 300] {
            let d = 7;
            let z: Vec<f32> = (0..m * d).map(|x| (x as f32 * 0.37).sin()).collect();
            let ld = m + 16;
            let mut s = vec![f32::NAN; m * ld];
            gram(&z, m, d, &mut s, ld);
            for i in 0..m {
                for j in 0..m {
                    let want: f64 = (0..d)
                        .map(|c| z[i * d + c] as f64 * z[j * d + c] as f64)
                        .sum();
                    let got = s[i * ld + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "m={m} ({i},{j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
