//! Fused CPU InfoNCE with an explicit set of negatives (MoCo's queue).
//!
//! The `[N, K]` logit matrix is never materialised: the negatives are
//! streamed in column blocks that stay in cache, with an online (running-max)
//! log-sum-exp per query, the way flash attention streams keys. When
//! gradients are needed the same pass accumulates `Σ_j exp(l_ij − m_i) Q_j`,
//! so the backward costs one more GEMM of the forward's size and no second
//! read of the logits, and the queue is not read again after the forward.

use rayon::prelude::*;

use super::kernels::{
    dot_f32, dot_f64, exp_sum, matmul, normalize_backward, normalize_rows, row_max, Operand,
};
use super::FusedResult;

/// Bytes of the per-task logit block (`N × block` f32): about an L2 cache.
const BLOCK_BYTES: usize = 512 * 1024;

/// Running softmax statistics of every query over the negatives seen so far.
struct Partial {
    /// Running max of the raw similarities `q̂·Q_j` (not divided by τ).
    max: Vec<f32>,
    /// `Σ_j exp((s_ij − max_i) / τ)`.
    sum: Vec<f64>,
    /// `Σ_j exp((s_ij − max_i) / τ) Q_j`, `[N, D]`, only when gradients are needed.
    weighted: Vec<f32>,
    /// No NaN or infinity in any similarity seen.
    finite: bool,
    /// Scratch for one block of similarities.
    block: Vec<f32>,
    inv_tau: f64,
}

impl Partial {
    fn new(n: usize, d: usize, block: usize, inv_tau: f32, need_grad: bool) -> Self {
        Self {
            inv_tau: inv_tau as f64,
            max: vec![f32::NEG_INFINITY; n],
            sum: vec![0.0; n],
            weighted: if need_grad {
                vec![0.0; n * d]
            } else {
                Vec::new()
            },
            finite: true,
            block: vec![0.0; n * block],
        }
    }

    /// Folds the negatives `negs` (`[kb, D]`) into the statistics of the
    /// normalised queries `qh` (`[n, D]`).
    fn absorb(&mut self, qh: &[f32], negs: &[f32], n: usize, d: usize) {
        let need_grad = !self.weighted.is_empty();
        let inv_tau = self.inv_tau as f32;
        let kb = negs.len() / d;
        let s = &mut self.block[..n * kb];
        matmul(
            n,
            kb,
            d,
            s,
            kb,
            false,
            Operand::rows(qh, d),
            Operand::transposed(negs, d),
            1.0,
            false,
        );
        for (i, row) in s.chunks_exact_mut(kb).enumerate() {
            let (block_max, finite) = row_max(row);
            self.finite &= finite;
            let new_max = if block_max > self.max[i] {
                block_max
            } else {
                self.max[i]
            };
            let rescale = ((self.max[i] - new_max) as f64 * inv_tau as f64).exp();
            let block_sum = exp_sum(row, new_max, inv_tau);
            self.sum[i] = self.sum[i] * rescale + block_sum as f64;
            if need_grad && rescale != 1.0 {
                for v in &mut self.weighted[i * d..(i + 1) * d] {
                    *v *= rescale as f32;
                }
            }
            self.max[i] = new_max;
        }
        if need_grad {
            let s = &self.block[..n * kb];
            let (lhs, rhs) = (Operand::rows(s, kb), Operand::rows(negs, d));
            matmul(n, d, kb, &mut self.weighted, d, true, lhs, rhs, 1.0, false);
        }
    }

    /// Combines two disjoint sets of negatives.
    fn merge(mut self, other: Self, d: usize) -> Self {
        self.finite &= other.finite;
        let need_grad = !self.weighted.is_empty();
        for i in 0..self.max.len() {
            let (ma, mb) = (self.max[i], other.max[i]);
            if mb == f32::NEG_INFINITY {
                continue;
            }
            let m = ma.max(mb);
            let (ra, rb) = (self.scale_of(ma, m), self.scale_of(mb, m));
            self.sum[i] = self.sum[i] * ra + other.sum[i] * rb;
            if need_grad {
                let wa = &mut self.weighted[i * d..(i + 1) * d];
                let wb = &other.weighted[i * d..(i + 1) * d];
                for (a, &b) in wa.iter_mut().zip(wb) {
                    *a = (*a as f64 * ra + b as f64 * rb) as f32;
                }
            }
            self.max[i] = m;
        }
        self
    }

    fn scale_of(&self, from: f32, to: f32) -> f64 {
        if from == f32::NEG_INFINITY {
            0.0
        } else {
            ((from - to) as f64 * self.inv_tau).exp()
        }
    }
}

/// InfoNCE of raw queries `q` and positive keys `k` (`[n, d]`) against the
/// negatives `negatives` (`[kneg, d]`, used as given), mean over the queries.
pub(crate) fn infonce_loss(
    q: &[f32],
    k: &[f32],
    negatives: &[f32],
    n: usize,
    d: usize,
    inv_tau: f32,
    need_grad: bool,
) -> FusedResult {
    let kneg = negatives.len() / d;
    let x = Normalised::new(q, k, n, d);

    // Blocks of at least 64 negatives keep the GEMMs efficient; more blocks
    // than threads lets rayon balance them.
    let block = (BLOCK_BYTES / 4 / n.max(1))
        .clamp(64, 4096)
        .min(kneg.max(1));
    let stats = negatives
        .par_chunks(block * d)
        .fold(
            || Partial::new(n, d, block, inv_tau, need_grad),
            |mut acc, negs| {
                acc.absorb(&x.qh, negs, n, d);
                acc
            },
        )
        .reduce_with(|a, b| a.merge(b, d))
        .unwrap_or_else(|| Partial::new(n, d, 0, inv_tau, need_grad));

    finish(
        &x,
        &stats.max,
        &stats.sum,
        &stats.weighted,
        stats.finite,
        d,
        inv_tau,
        need_grad,
    )
}

/// Normalised queries and keys, their normalisation factors and the positive similarities.
struct Normalised {
    qh: Vec<f32>,
    kh: Vec<f32>,
    q_inv: Vec<f32>,
    k_inv: Vec<f32>,
    pos: Vec<f32>,
}

impl Normalised {
    fn new(q: &[f32], k: &[f32], n: usize, d: usize) -> Self {
        let mut qh = vec![0.0f32; n * d];
        let mut kh = vec![0.0f32; n * d];
        let q_inv = normalize_rows(q, d, &mut qh);
        let k_inv = normalize_rows(k, d, &mut kh);
        let pos = qh
            .chunks_exact(d)
            .zip(kh.chunks_exact(d))
            .map(|(a, b)| dot_f64(a, b) as f32)
            .collect();
        Self {
            qh,
            kh,
            q_inv,
            k_inv,
            pos,
        }
    }
}

/// Loss, accuracy and gradients from the per-query softmax statistics over the negatives:
/// running max `neg_max` of the raw similarities, `neg_sum = Σ_j exp((s_ij − max_i)/τ)` and
/// (with gradients) `weighted = Σ_j exp((s_ij − max_i)/τ) n_ij`.
#[allow(clippy::too_many_arguments)]
fn finish(
    x: &Normalised,
    neg_max: &[f32],
    neg_sum: &[f64],
    weighted: &[f32],
    finite: bool,
    d: usize,
    inv_tau: f32,
    need_grad: bool,
) -> FusedResult {
    let n = x.pos.len();
    let (qh, kh) = (&x.qh, &x.kh);
    let inv_tau64 = inv_tau as f64;
    let mut loss = 0.0f64;
    let mut correct = 0usize;
    // Per query: weight of the positive (p⁺ − 1) and of the streamed sum.
    let mut coef = Vec::with_capacity(n);
    for ((&p, &neg_max), &neg_sum) in x.pos.iter().zip(neg_max).zip(neg_sum) {
        let m = if neg_max > p { neg_max } else { p };
        let e_pos = ((p - m) as f64 * inv_tau64).exp();
        let e_neg = if neg_max == f32::NEG_INFINITY {
            0.0
        } else {
            ((neg_max - m) as f64 * inv_tau64).exp()
        };
        let total = e_pos + neg_sum * e_neg;
        loss += (m - p) as f64 * inv_tau64 + total.ln();
        correct += usize::from(p >= neg_max);
        coef.push((e_pos / total - 1.0, e_neg / total));
    }
    let mut result = FusedResult::new(loss, correct, n);
    result.finite = finite;
    if need_grad {
        let g = inv_tau64 / n as f64;
        let mut gq = vec![0.0f32; n * d];
        let mut gk = vec![0.0f32; n * d];
        for (i, &(c_pos, c_neg)) in coef.iter().enumerate() {
            let r = i * d..(i + 1) * d;
            for (((dq, dk), (&qv, &kv)), &w) in gq[r.clone()]
                .iter_mut()
                .zip(&mut gk[r.clone()])
                .zip(qh[r.clone()].iter().zip(&kh[r.clone()]))
                .zip(&weighted[r])
            {
                *dq = ((c_pos * kv as f64 + c_neg * w as f64) * g) as f32;
                *dk = (c_pos * qv as f64 * g) as f32;
            }
        }
        normalize_backward(qh, &x.q_inv, d, &mut gq);
        normalize_backward(kh, &x.k_inv, d, &mut gk);
        result.grads = Some((gq, gk));
    }
    result
}

/// How many times a gathered dot product costs a GEMM's per-row share (measured:
/// docs/benchmarks.md, "Memory bank: dense or gathered"). Rows drawn at random from a bank of
/// tens of MB are read from memory, not cache, and one query's K draws cannot share them.
const GATHER_COST: usize = 20;

/// The most `n × rows` similarities the dense path holds at once (256 MB of f32).
const DENSE_MAX: usize = 1 << 26;

/// InfoNCE where query `i` has its own negatives: rows `indices[i·K .. (i+1)·K]` of `bank`
/// (`[rows, d]`), as InstDisc's `NCEAverage` draws K memory-bank rows per query. Nothing of
/// size `n × K × d` is materialised. When the draws cover a large share of the bank (K ≥
/// rows / [`GATHER_COST`]: K ≥ 2,500 of CIFAR-10's 50,000 rows) every similarity
/// `q̂·bankᵀ` is one GEMM and the drawn ones are looked up in it, and the gradient's
/// `Σ_k w_k bank[r_k]` is a second GEMM with the weights scattered into that matrix; otherwise
/// the `[n, K]` similarities are gathered dot products, one query at a time.
#[allow(clippy::too_many_arguments)]
pub(crate) fn infonce_indexed_loss(
    q: &[f32],
    k: &[f32],
    bank: &[f32],
    indices: &[u32],
    n: usize,
    d: usize,
    inv_tau: f32,
    need_grad: bool,
) -> FusedResult {
    let kneg = indices.len() / n.max(1);
    let rows = bank.len() / d.max(1);
    let x = Normalised::new(q, k, n, d);
    // A non-finite value in a row nobody drew must not reach the dense GEMMs (0 · NaN is NaN):
    // such a bank takes the gathered path, which reads drawn rows only.
    let (stats, weighted) = if dense_pays(n, kneg, rows) && bank.iter().all(|v| v.is_finite()) {
        indexed_dense(&x.qh, bank, indices, d, inv_tau, need_grad)
    } else {
        indexed_gathered(&x.qh, bank, indices, d, inv_tau, need_grad)
    };
    let max: Vec<f32> = stats.iter().map(|p| p.max).collect();
    let sum: Vec<f64> = stats.iter().map(|p| p.sum).collect();
    let finite = stats.iter().all(|p| p.finite);
    finish(&x, &max, &sum, &weighted, finite, d, inv_tau, need_grad)
}

/// Whether the dense path is the faster one for `n` queries drawing `kneg` of `rows` rows each.
fn dense_pays(n: usize, kneg: usize, rows: usize) -> bool {
    kneg > 0 && kneg * GATHER_COST >= rows && n * rows <= DENSE_MAX
}

/// One query's softmax statistics over its drawn rows (as [`Partial`]'s, per query).
struct QueryStats {
    max: f32,
    sum: f64,
    finite: bool,
}

/// Per query of the normalised queries `qh`: its [`QueryStats`] and, with `need_grad`,
/// `Σ_k exp((s_k − max) / τ) bank[r_k]` (`[n, d]` in all), by gathered dot products one query
/// at a time.
fn indexed_gathered(
    qh: &[f32],
    bank: &[f32],
    indices: &[u32],
    d: usize,
    inv_tau: f32,
    need_grad: bool,
) -> (Vec<QueryStats>, Vec<f32>) {
    let n = qh.len() / d.max(1);
    let kneg = indices.len() / n.max(1);
    let per_query: Vec<(QueryStats, Vec<f32>)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let qi = &qh[i * d..(i + 1) * d];
            let drawn = &indices[i * kneg..(i + 1) * kneg];
            let bank_row = |r: u32| &bank[r as usize * d..(r as usize + 1) * d];
            let mut s: Vec<f32> = drawn.iter().map(|&r| dot_f32(qi, bank_row(r))).collect();
            let (max, finite) = row_max(&s);
            let sum = exp_sum(&mut s, max, inv_tau) as f64;
            let mut weighted = Vec::new();
            if need_grad {
                weighted = vec![0.0f32; d];
                for (&w, &r) in s.iter().zip(drawn) {
                    for (acc, &v) in weighted.iter_mut().zip(bank_row(r)) {
                        *acc += w * v;
                    }
                }
            }
            (QueryStats { max, sum, finite }, weighted)
        })
        .collect();
    let (stats, weighted): (Vec<QueryStats>, Vec<Vec<f32>>) = per_query.into_iter().unzip();
    (stats, weighted.concat())
}

/// [`indexed_gathered`]'s results through the dense `[n, rows]` similarity matrix: `q̂·bankᵀ`
/// by one GEMM, the drawn entries looked up in it, the softmax weights scattered back into it
/// and `Σ_k w_k bank[r_k]` by a second GEMM.
fn indexed_dense(
    qh: &[f32],
    bank: &[f32],
    indices: &[u32],
    d: usize,
    inv_tau: f32,
    need_grad: bool,
) -> (Vec<QueryStats>, Vec<f32>) {
    let (n, rows) = (qh.len() / d, bank.len() / d);
    let kneg = indices.len() / n;
    let mut s = vec![0.0f32; n * rows];
    matmul(
        n,
        rows,
        d,
        &mut s,
        rows,
        false,
        Operand::rows(qh, d),
        Operand::transposed(bank, d),
        1.0,
        true,
    );
    let stats: Vec<QueryStats> = s
        .par_chunks_mut(rows)
        .zip(indices.par_chunks(kneg))
        .map(|(row, drawn)| {
            let mut e: Vec<f32> = drawn.iter().map(|&r| row[r as usize]).collect();
            let (max, finite) = row_max(&e);
            let sum = exp_sum(&mut e, max, inv_tau) as f64;
            if need_grad {
                // The row becomes this query's weight of every bank row: a row drawn twice
                // counts twice, as in the gathered sum.
                row.fill(0.0);
                for (&w, &r) in e.iter().zip(drawn) {
                    row[r as usize] += w;
                }
            }
            QueryStats { max, sum, finite }
        })
        .collect();
    let mut weighted = Vec::new();
    if need_grad {
        weighted = vec![0.0f32; n * d];
        matmul(
            n,
            d,
            rows,
            &mut weighted,
            d,
            false,
            Operand::rows(&s, rows),
            Operand::rows(bank, d),
            1.0,
            true,
        );
    }
    (stats, weighted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn dense_and_gathered_paths_give_the_same_loss_and_gradients_with_repeated_draws() {
        let (n, d, rows, kneg) = (19, 24, 300, 150);
        let (q, k) = (pseudo_random(n * d, 1), pseudo_random(n * d, 2));
        let mut bank = vec![0.0f32; rows * d];
        normalize_rows(&pseudo_random(rows * d, 3), d, &mut bank);
        let mut indices: Vec<u32> = pseudo_random(n * kneg, 4)
            .iter()
            .map(|v| ((v + 1.0) * 1000.0) as u32 % rows as u32)
            .collect();
        indices[1] = indices[0]; // query 0 draws one row twice
        let x = Normalised::new(&q, &k, n, d);
        let path = |(stats, weighted): (Vec<QueryStats>, Vec<f32>)| {
            let max: Vec<f32> = stats.iter().map(|p| p.max).collect();
            let sum: Vec<f64> = stats.iter().map(|p| p.sum).collect();
            let r = finish(&x, &max, &sum, &weighted, true, d, 1.0 / 0.07, true);
            let (gq, gk) = r.grads.clone().unwrap();
            (r.loss_sum, r.correct, gq, gk, weighted)
        };
        let a = path(indexed_dense(&x.qh, &bank, &indices, d, 1.0 / 0.07, true));
        let b = path(indexed_gathered(
            &x.qh,
            &bank,
            &indices,
            d,
            1.0 / 0.07,
            true,
        ));
        assert!((a.0 - b.0).abs() < 1e-5 * b.0.abs(), "{} vs {}", a.0, b.0);
        assert_eq!(a.1, b.1, "correct");
        for (x, y) in [(&a.2, &b.2), (&a.3, &b.3), (&a.4, &b.4)] {
            let scale = y.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            let worst = x
                .iter()
                .zip(y)
                .map(|(u, v)| (u - v).abs())
                .fold(0.0, f32::max);
            assert!(
                worst <= 1e-5 * scale,
                "gradient differs by {worst:e} (scale {scale:e})"
            );
        }
    }

    #[test]
    fn the_dense_path_is_taken_where_draws_cover_a_twentieth_of_the_bank() {
        assert!(dense_pays(256, 4096, 50_000));
        assert!(!dense_pays(256, 1024, 50_000));
        assert!(!dense_pays(256, 4096, 1_281_167), "ImageNet's bank gathers");
        assert!(!dense_pays(256, 0, 10));
    }

    #[test]
    fn a_non_finite_row_nobody_drew_leaves_the_loss_and_gradients_finite() {
        let (n, d, rows) = (3, 4, 6);
        let (q, k) = (pseudo_random(n * d, 5), pseudo_random(n * d, 6));
        let mut bank = vec![0.5f32; rows * d];
        bank[5 * d] = f32::NAN; // row 5, never drawn
        let indices = [0u32, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4];
        let r = infonce_indexed_loss(&q, &k, &bank, &indices, n, d, 10.0, true);
        assert!(r.finite && r.loss_sum.is_finite());
        let (gq, gk) = r.grads.unwrap();
        assert!(gq.iter().chain(&gk).all(|v| v.is_finite()));
    }
}
