//! A collapse monitor: is the encoder still spreading the images out, or is
//! it mapping them all to one point (complete collapse) or onto a few
//! directions (dimensional collapse)?
//!
//! [`collapse_metrics`] takes one step's embeddings, `[N, d]` of one view and
//! optionally the `[N, d]` of the other view of the same images, and returns
//! [`CollapseMetrics`]:
//!
//! | field | what | spread | collapsed |
//! |---|---|---|---|
//! | [`embedding_std`](CollapseMetrics::embedding_std) | std over the batch of each dimension of the ℓ2-normalised embeddings, averaged over dimensions (SimSiam, Chen & He 2021, section 4.1; lightly's `std_of_l2_normalized`) | ≈ 1/√d | 0 |
//! | [`rank_me`](CollapseMetrics::rank_me) | effective rank, RankMe (Garrido et al. 2023, "RankMe: Assessing the downstream performance of pretrained self-supervised representations by their rank"): `exp(−Σ p_k log p_k)`, `p_k = σ_k / ‖σ‖₁ + ε`, ε = 1e-7, σ the singular values | up to min(N, d) | 1 |
//! | [`alignment`](CollapseMetrics::alignment) | Wang & Isola 2020 ("Understanding Contrastive Representation Learning through Alignment and Uniformity on the Hypersphere"): `mean ‖u_i − v_i‖²` over the positive pairs (α = 2); two views only | small | 0 |
//! | [`uniformity`](CollapseMetrics::uniformity) | Wang & Isola 2020: `log mean exp(−2 ‖u_i − u_j‖²)` over the distinct pairs of view 0 (t = 2) | towards −4 | 0 |
//!
//! All four are computed on the ℓ2-normalised rows, the geometry the
//! contrastive losses see (RankMe's paper uses unnormalised representations;
//! normalising the rows does not change whether a batch has collapsed, and
//! keeps the per-sample norms, which the losses ignore, out of the measure).
//! [`CollapseMetrics::collapsing`] turns them into a verdict.
//!
//! Cost: O(N·d·min(N, d)) for two Gram matrices plus a symmetric eigenvalue
//! problem of size min(N, d) (Householder tridiagonalisation and implicit QL
//! in f64); at N = 256, d = 128 with two views 4.8 ms on one core, about 2 %
//! of a MoCo v2 training step at width 0.125 and batch 256 on two CPU cores
//! (0.2 % of the training time when read every 10 steps; `docs/collapse/`).
//! [`Method::last_embeddings`] hands out the step's own (detached)
//! embeddings, so no extra forward pass is needed.
//!
//! [`Method::last_embeddings`]: crate::Method::last_embeddings
//!
//! # Example
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mocca_methods::collapse::collapse_metrics;
//!
//! let dev = Device::Cpu;
//! // Eight orthonormal embeddings: perfectly spread.
//! let spread = Tensor::eye(8, candle_core::DType::F32, &dev)?;
//! let m = collapse_metrics(&spread, None)?;
//! assert!((m.normalized_std() - 1.0).abs() < 1e-9); // std = 1/√d exactly
//! assert!((m.rank_me - 8.0).abs() < 1e-3);
//! assert!((m.uniformity + 4.0).abs() < 1e-9);        // every pair at distance √2
//! assert!(!m.collapsing());
//!
//! // Every image mapped to the same point: collapsed.
//! let same = Tensor::ones((8, 8), candle_core::DType::F32, &dev)?;
//! let m = collapse_metrics(&same, Some(&same))?;
//! assert_eq!((m.embedding_std, m.alignment, m.uniformity), (0.0, Some(0.0), 0.0));
//! assert!((m.rank_me - 1.0).abs() < 1e-3);
//! assert!(m.collapsing());
//! println!("{m}"); // std*sqrt(d) 0.000  rank 1.0/8  align 0.000  unif 0.000  (collapsing)
//! # Ok::<(), mocca_methods::MethodError>(())
//! ```

use std::fmt;

use candle_core::{DType, Device, Tensor};

use crate::error::{input_err, Result};

/// RankMe's ε (Garrido et al. 2023, eq. 1; 1e-7 in their code).
pub const RANK_ME_EPSILON: f64 = 1e-7;

/// [`CollapseMetrics::collapsing`] says "collapsing" when `std·√d` falls
/// below this fraction of its spread value (1).
///
/// Calibrated on CIFAR-10 ResNet-18 runs (`docs/collapse/`): randomly
/// initialised encoders start at 0.2–0.4 with MoCo's heads (width 0.0625 to
/// 1; their embeddings share a large common direction) and near 1 with
/// SimCLR's (BatchNorm in the head); MoCo v2 learning at width 0.0625 dipped
/// to 0.13 (RankMe 3.1) and rose again. Runs that collapse to a point (MoCo
/// with m = 0, or lr 5) fall to 0.002–0.05 within 10 to 20 steps, with
/// RankMe 1.0–1.9.
pub const COLLAPSING_STD: f64 = 0.05;

/// [`CollapseMetrics::collapsing`] says "collapsing" when RankMe falls below
/// this (or below half of min(N, d) for tiny batches or widths): the batch
/// spans about one direction (a point, or two antipodal clusters, which keep
/// `std·√d` up but not the rank). Healthy runs seen: 3 and above.
pub const COLLAPSING_RANK: f64 = 2.0;

/// The embeddings of one training step, detached from the graph: what
/// [`Method::last_embeddings`](crate::Method::last_embeddings) returns.
#[derive(Debug, Clone)]
pub struct StepEmbeddings {
    /// `[N, d]`: the embeddings of the first view (MoCo's queries, SimCLR's `z0`).
    pub view0: Tensor,
    /// `[N, d]`: what each row of `view0` was contrasted with as its positive
    /// (MoCo's keys of the other view, SimCLR's `z1`, a memory bank's own
    /// row of each sample as scored), row for row; `None`
    /// when the method does not keep them.
    pub view1: Option<Tensor>,
}

impl StepEmbeddings {
    /// [`collapse_metrics`] of these embeddings.
    pub fn metrics(&self) -> Result<CollapseMetrics> {
        collapse_metrics(&self.view0, self.view1.as_ref())
    }
}

/// How spread out one batch of embeddings is (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CollapseMetrics {
    /// Rows in the batch (N).
    pub batch: usize,
    /// Embedding width (d).
    pub dim: usize,
    /// Mean over dimensions of the per-dimension standard deviation (over
    /// the batch, with N − 1) of the ℓ2-normalised embeddings: ≈ 1/√d when
    /// they are spread over the sphere, 0 when they all coincide.
    pub embedding_std: f64,
    /// RankMe: the effective rank of the batch's ℓ2-normalised embeddings,
    /// between 1 and min(N, d).
    pub rank_me: f64,
    /// Mean squared distance between the ℓ2-normalised positive pairs (0 to
    /// 4); `None` with one view.
    pub alignment: Option<f64>,
    /// Log of the mean Gaussian potential `exp(−2‖u − v‖²)` over the distinct
    /// pairs of view 0: 0 when collapsed, −4 when the rows are orthogonal
    /// (about the value of a large batch spread uniformly over a
    /// high-dimensional sphere); a small batch can go below (−8 at most, for
    /// antipodal rows).
    pub uniformity: f64,
}

impl CollapseMetrics {
    /// `embedding_std · √d`: 1 for spread embeddings, 0 for collapsed ones,
    /// comparable across widths.
    pub fn normalized_std(&self) -> f64 {
        self.embedding_std * (self.dim as f64).sqrt()
    }

    /// The largest RankMe this batch could have, min(N, d).
    pub fn max_rank(&self) -> usize {
        self.batch.min(self.dim)
    }

    /// The verdict: `std·√d` below [`COLLAPSING_STD`] (the embeddings are
    /// converging to one point) or RankMe below [`COLLAPSING_RANK`] (or half
    /// of min(N, d), whichever is smaller: they span about one direction). A
    /// healthy encoder, randomly initialised or trained, stays clear of both;
    /// one batch decides, so a reading near the thresholds can flicker.
    /// Dimensional collapse to a few directions (RankMe 3, 5, ...) is not
    /// called collapsing: watch RankMe's trend for that.
    pub fn collapsing(&self) -> bool {
        let rank_floor = COLLAPSING_RANK.min(self.max_rank() as f64 / 2.0);
        self.normalized_std() < COLLAPSING_STD || self.rank_me < rank_floor
    }
}

impl fmt::Display for CollapseMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "std*sqrt(d) {:.3}  rank {:.1}/{}",
            self.normalized_std(),
            self.rank_me,
            self.max_rank()
        )?;
        if let Some(a) = self.alignment {
            write!(f, "  align {a:.3}")?;
        }
        write!(f, "  unif {:.3}", self.uniformity)?;
        if self.collapsing() {
            write!(f, "  (collapsing)")?;
        }
        Ok(())
    }
}

/// The collapse metrics of `view0` (`[N, d]`, N ≥ 2), with the alignment to
/// `view1` (`[N, d]`, row `i` the positive of row `i`) when given. Any float
/// dtype and device; computed on the CPU in f64. Non-finite embeddings give
/// NaN metrics (and no verdict).
pub fn collapse_metrics(view0: &Tensor, view1: Option<&Tensor>) -> Result<CollapseMetrics> {
    let (n, d) = view0.dims2().map_err(|_| {
        input_err(format!(
            "collapse metrics need [N, d] embeddings, got {:?}",
            view0.dims()
        ))
    })?;
    if n < 2 || d == 0 {
        return Err(input_err(format!(
            "collapse metrics need at least 2 embeddings of width ≥ 1, got [{n}, {d}]"
        )));
    }
    if let Some(v) = view1 {
        if v.dims() != view0.dims() {
            return Err(input_err(format!(
                "the two views' embeddings differ in shape: {:?} vs {:?}",
                view0.dims(),
                v.dims()
            )));
        }
    }
    let u = normalized_rows(view0)?;
    let v = view1.map(normalized_rows).transpose()?;
    Ok(metrics_of_unit_rows(&u, v.as_deref(), n, d))
}

/// Row-major f64 copy of `t` with each row scaled to unit ℓ2 norm (a zero row
/// stays zero, as `F.normalize`).
fn normalized_rows(t: &Tensor) -> Result<Vec<f64>> {
    let (_, d) = t.dims2()?;
    let mut x: Vec<f64> = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1()?;
    for row in x.chunks_mut(d) {
        let norm = row.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
        row.iter_mut().for_each(|a| *a /= norm);
    }
    Ok(x)
}

fn metrics_of_unit_rows(u: &[f64], v: Option<&[f64]>, n: usize, d: usize) -> CollapseMetrics {
    let mut m = CollapseMetrics {
        batch: n,
        dim: d,
        embedding_std: f64::NAN,
        rank_me: f64::NAN,
        alignment: v.map(|_| f64::NAN),
        uniformity: f64::NAN,
    };
    if !u.iter().chain(v.unwrap_or(&[])).all(|a| a.is_finite()) {
        return m;
    }
    m.embedding_std = mean_std(u, n, d);
    m.alignment =
        v.map(|v| u.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / n as f64);
    let rows = gram_rows(u, n, d);
    m.uniformity = uniformity(&rows, n);
    let gram = if d <= n { gram_cols(u, n, d) } else { rows };
    m.rank_me = rank_me_from_gram(gram, n.min(d));
    m
}

/// Mean over the d columns of their standard deviation over the n rows (n − 1).
fn mean_std(x: &[f64], n: usize, d: usize) -> f64 {
    let mut mean = vec![0.0; d];
    for row in x.chunks(d) {
        mean.iter_mut().zip(row).for_each(|(m, a)| *m += a);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0.0; d];
    for row in x.chunks(d) {
        for ((s, a), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (a - m) * (a - m);
        }
    }
    var.iter().map(|s| (s / (n - 1) as f64).sqrt()).sum::<f64>() / d as f64
}

/// `X Xᵀ` (`[n, n]`) of the row-major `[n, d]` matrix `x`.
fn gram_rows(x: &[f64], n: usize, d: usize) -> Vec<f64> {
    let mut g = vec![0.0; n * n];
    for i in 0..n {
        let a = &x[i * d..(i + 1) * d];
        for j in i..n {
            let b = &x[j * d..(j + 1) * d];
            let s: f64 = a.iter().zip(b).map(|(p, q)| p * q).sum();
            g[i * n + j] = s;
            g[j * n + i] = s;
        }
    }
    g
}

/// `Xᵀ X` (`[d, d]`) of the row-major `[n, d]` matrix `x`.
fn gram_cols(x: &[f64], n: usize, d: usize) -> Vec<f64> {
    let mut g = vec![0.0; d * d];
    for row in x.chunks(d).take(n) {
        for (i, &a) in row.iter().enumerate() {
            if a == 0.0 {
                continue;
            }
            let gi = &mut g[i * d..(i + 1) * d];
            gi.iter_mut().zip(row).for_each(|(s, b)| *s += a * b);
        }
    }
    g
}

/// Wang & Isola's uniformity from the rows' Gram matrix: squared distances
/// `‖u_i‖² + ‖u_j‖² − 2 u_i·u_j` over i < j (`torch.pdist(x).pow(2)`).
fn uniformity(g: &[f64], n: usize) -> f64 {
    let mut sum = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            let d2 = (g[i * n + i] + g[j * n + j] - 2.0 * g[i * n + j]).max(0.0);
            sum += (-2.0 * d2).exp();
        }
    }
    (sum / (n * (n - 1) / 2) as f64).ln()
}

/// RankMe from a Gram matrix (`XᵀX` or `XXᵀ`, size `k` = min(N, d)): its
/// eigenvalues are the squared singular values of X.
fn rank_me_from_gram(mut g: Vec<f64>, k: usize) -> f64 {
    let sigma: Vec<f64> = symmetric_eigenvalues(&mut g, k)
        .into_iter()
        .map(|l| l.max(0.0).sqrt())
        .collect();
    rank_me(&sigma)
}

/// RankMe of singular values `sigma`: `exp(−Σ p log p)`, `p = σ/‖σ‖₁ + ε`.
pub fn rank_me(sigma: &[f64]) -> f64 {
    let total: f64 = sigma.iter().sum();
    if total <= 0.0 {
        return 1.0;
    }
    let entropy: f64 = sigma
        .iter()
        .map(|s| {
            let p = s / total + RANK_ME_EPSILON;
            -p * p.ln()
        })
        .sum();
    entropy.exp()
}

/// Eigenvalues of the symmetric row-major `[k, k]` matrix `a` (destroyed):
/// Householder reduction to tridiagonal form, then the implicit QL algorithm
/// with Wilkinson shifts (EISPACK's `tred1` / `tql1`).
fn symmetric_eigenvalues(a: &mut [f64], k: usize) -> Vec<f64> {
    let (mut diag, mut off) = tridiagonalize(a, k);
    tql1(&mut diag, &mut off);
    diag
}

/// Householder reduction (`tred1`): returns the diagonal and the
/// sub-diagonal (`off[i]` couples `i − 1` and `i`, `off[0] = 0`).
fn tridiagonalize(a: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    let mut p = vec![0.0; n];
    for i in (1..n).rev() {
        let l = i; // columns 0..l of row i are reduced
        let row = i * n;
        let scale: f64 = a[row..row + l].iter().map(|x| x.abs()).sum();
        if scale == 0.0 {
            e[i] = 0.0; // row i is already reduced
            continue;
        }
        a[row..row + l].iter_mut().for_each(|x| *x /= scale);
        let mut h: f64 = a[row..row + l].iter().map(|x| x * x).sum();
        let f = a[row + l - 1];
        let g = if f >= 0.0 { -h.sqrt() } else { h.sqrt() };
        e[i] = scale * g;
        h -= f * g;
        a[row + l - 1] = f - g;
        // p = A u / h over the leading l × l block (u = row i's first l entries).
        for j in 0..l {
            let mut s = 0.0;
            for kk in 0..l {
                let ajk = if kk <= j {
                    a[j * n + kk]
                } else {
                    a[kk * n + j]
                };
                s += ajk * a[row + kk];
            }
            p[j] = s / h;
        }
        let kf: f64 = (0..l).map(|j| p[j] * a[row + j]).sum::<f64>() / (h + h);
        for j in 0..l {
            p[j] -= kf * a[row + j];
        }
        // A ← A − u qᵀ − q uᵀ on the lower triangle.
        for j in 0..l {
            let (fj, gj) = (a[row + j], p[j]);
            for kk in 0..=j {
                a[j * n + kk] -= fj * p[kk] + gj * a[row + kk];
            }
        }
    }
    // Iteration i only changes rows above i: the diagonal is final now.
    for (i, di) in d.iter_mut().enumerate() {
        *di = a[i * n + i];
    }
    (d, e)
}

/// Eigenvalues of the symmetric tridiagonal matrix with diagonal `d` and
/// sub-diagonal `e` (`e[i]` between `i − 1` and `i`) by the implicit QL
/// method (`tqli` without vectors); `d` receives them, unsorted.
fn tql1(d: &mut [f64], e: &mut [f64]) {
    let n = d.len();
    if n < 2 {
        return;
    }
    // Shift so e[i] couples i and i + 1.
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    for l in 0..n {
        let mut iter = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iter += 1;
            if iter > 60 {
                break;
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + if g >= 0.0 { r } else { -r });
            let (mut s, mut c, mut p) = (1.0, 1.0, 0.0);
            let mut i = m;
            let mut underflow = false;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    underflow = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
            }
            if underflow {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: &[Vec<f32>]) -> Tensor {
        let d = rows[0].len();
        let flat: Vec<f32> = rows.concat();
        Tensor::from_vec(flat, (rows.len(), d), &Device::Cpu).unwrap()
    }

    /// A reproducible "random" matrix (SplitMix64 normals).
    fn randn(n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut g = mocca_core::SplitMix64::new(seed);
        (0..n)
            .map(|_| (0..d).map(|_| g.normal() as f32).collect())
            .collect()
    }

    #[test]
    fn orthonormal_rows_are_perfectly_spread() {
        for d in [2usize, 5, 16, 128] {
            let eye = Tensor::eye(d, DType::F32, &Device::Cpu).unwrap();
            let m = collapse_metrics(&eye, None).unwrap();
            // Each column holds one 1 and d − 1 zeros: unbiased variance exactly 1/d.
            assert!(
                (m.embedding_std - 1.0 / (d as f64).sqrt()).abs() < 1e-12,
                "{m:?}"
            );
            assert!((m.normalized_std() - 1.0).abs() < 1e-12);
            // p_k = 1/d + ε for all k: exp(−d (1/d + ε) ln(1/d + ε)).
            let p = 1.0 / d as f64 + RANK_ME_EPSILON;
            let want = (-(d as f64) * p * p.ln()).exp();
            assert!((m.rank_me - want).abs() < 1e-9, "{} vs {want}", m.rank_me);
            assert!((m.rank_me - d as f64).abs() < 1e-3 * d as f64);
            assert!((m.uniformity + 4.0).abs() < 1e-12);
            assert_eq!(m.alignment, None);
            assert!(!m.collapsing());
        }
    }

    #[test]
    fn identical_rows_are_collapsed() {
        let row: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = t(&vec![row; 64]);
        let m = collapse_metrics(&x, Some(&x)).unwrap();
        assert!(m.embedding_std.abs() < 1e-12, "{m:?}");
        // σ = (s, 0, ...): p = (1 + ε, ε, ...).
        let p1 = 1.0 + RANK_ME_EPSILON;
        let want = (-(p1 * p1.ln()) - 31.0 * RANK_ME_EPSILON * RANK_ME_EPSILON.ln()).exp();
        // The Gram matrix's zero eigenvalues come out at ~1e-16 of the largest
        // (singular values ~1e-8, against ε = 1e-7): RankMe within 1e-5.
        assert!((m.rank_me - want).abs() < 1e-5, "{} vs {want}", m.rank_me);
        assert!(m.uniformity.abs() < 1e-12);
        assert_eq!(m.alignment, Some(0.0));
        assert!(m.collapsing());
        assert!(m.to_string().ends_with("(collapsing)"), "{m}");
    }

    #[test]
    fn alignment_is_the_mean_squared_distance_of_positive_pairs() {
        let x = t(&[vec![1.0, 0.0], vec![0.0, 2.0], vec![3.0, 0.0]]);
        let opposite = (x.clone() * -1.0).unwrap();
        let m = collapse_metrics(&x, Some(&opposite)).unwrap();
        assert!((m.alignment.unwrap() - 4.0).abs() < 1e-12);
        // Rows 0 and 2 coincide after normalisation, 1 is orthogonal to both:
        // pairs (0,1), (0,2), (1,2) at squared distances 2, 0, 2.
        let want = (((-4.0f64).exp() * 2.0 + 1.0) / 3.0).ln();
        assert!((m.uniformity - want).abs() < 1e-12, "{}", m.uniformity);
        // Rows (1,0), (0,1), (1,0): σ = (√2, 1).
        let s = [2f64.sqrt(), 1.0];
        assert!((m.rank_me - rank_me(&s)).abs() < 1e-9, "{}", m.rank_me);
    }

    #[test]
    fn matches_lightly_and_torch() {
        // x[i, j] = sin(0.37 i + 1.3 j) + 0.5 cos(0.11 i j + 0.2), y[i, j] = sin(0.37 i + 1.3 j + 0.3),
        // 40 × 12 in f64. Expected: lightly.utils.debug.std_of_l2_normalized(x),
        // RankMe with torch.linalg.svdvals of F.normalize(x), Wang & Isola's
        // align_loss(F.normalize(x), F.normalize(y), alpha=2) and
        // uniform_loss(F.normalize(x), t=2) (torch.pdist); then the same for xᵀ (12 × 40).
        let (n, d) = (40usize, 12usize);
        let f = |i: usize, j: usize| {
            let (i, j) = (i as f64, j as f64);
            (0.37 * i + 1.3 * j).sin() + 0.5 * (0.11 * i * j + 0.2).cos()
        };
        let x: Vec<f64> = (0..n).flat_map(|i| (0..d).map(move |j| f(i, j))).collect();
        let y: Vec<f64> = (0..n)
            .flat_map(|i| (0..d).map(move |j| (0.37 * i as f64 + 1.3 * j as f64 + 0.3).sin()))
            .collect();
        let xt = Tensor::from_vec(x, (n, d), &Device::Cpu).unwrap();
        let yt = Tensor::from_vec(y, (n, d), &Device::Cpu).unwrap();
        let m = collapse_metrics(&xt, Some(&yt)).unwrap();
        let close =
            |a: f64, b: f64| assert!((a - b).abs() < 1e-10 * b.abs().max(1.0), "{a} vs {b}");
        close(m.embedding_std, 0.2835920846625379);
        close(m.rank_me, 8.648712411283762);
        close(m.alignment.unwrap(), 0.323339287653749);
        close(m.uniformity, -2.0474612388714064);
        let wide = collapse_metrics(&xt.t().unwrap().contiguous().unwrap(), None).unwrap();
        close(wide.embedding_std, 0.16165045340712683);
        close(wide.rank_me, 8.675957237168628);
        close(wide.uniformity, -2.5150368746958423);
    }

    #[test]
    fn rank_me_sees_dimensional_collapse() {
        // 200 rows in a 3-dimensional subspace of R^64.
        let basis = randn(3, 64, 7);
        let coef = randn(200, 3, 8);
        let rows: Vec<Vec<f32>> = coef
            .iter()
            .map(|c| {
                (0..64)
                    .map(|j| (0..3).map(|k| c[k] * basis[k][j]).sum())
                    .collect()
            })
            .collect();
        let m = collapse_metrics(&t(&rows), None).unwrap();
        assert!(m.rank_me > 2.0 && m.rank_me < 3.0 + 1e-3, "{m:?}");
        assert!(!m.collapsing(), "three directions are not one: {m:?}");
        // Two antipodal clusters along a spread-out direction: std·√d stays
        // high, the rank says one direction.
        let v: Vec<f32> = (0..64)
            .map(|j| if j % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let minus: Vec<f32> = v.iter().map(|a| -a).collect();
        let rows: Vec<Vec<f32>> = (0..100)
            .map(|i| if i % 2 == 0 { v.clone() } else { minus.clone() })
            .collect();
        let m = collapse_metrics(&t(&rows), None).unwrap();
        assert!(m.normalized_std() > 0.9 && m.rank_me < 1.01, "{m:?}");
        assert!(m.collapsing());
        let full = collapse_metrics(&t(&randn(200, 64, 9)), None).unwrap();
        assert!(full.rank_me > 50.0, "{full:?}");
        assert!((full.normalized_std() - 1.0).abs() < 0.05, "{full:?}");
    }

    #[test]
    fn the_eigen_solver_matches_a_direct_computation() {
        // Against the characteristic values of a known matrix, and trace /
        // Frobenius invariants of random Gram matrices of both shapes.
        let mut a = vec![
            4.0, 1.0, -2.0, 2.0, 1.0, 2.0, 0.0, 1.0, -2.0, 0.0, 3.0, -2.0, 2.0, 1.0, -2.0, -1.0,
        ];
        let mut ev = symmetric_eigenvalues(&mut a, 4);
        ev.sort_by(f64::total_cmp);
        // numpy.linalg.eigvalsh of the same matrix.
        let want = [
            -2.197516977439427,
            1.0843644637732177,
            2.2685314064312423,
            6.844621107234966,
        ];
        for (g, w) in ev.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{ev:?}");
        }
        for (n, d) in [(50, 20), (20, 50), (1, 1), (2, 3)] {
            let x: Vec<f64> = randn(n, d, 3).concat().into_iter().map(f64::from).collect();
            let g = gram_rows(&x, n, d);
            let tr: f64 = (0..n).map(|i| g[i * n + i]).sum();
            let fro: f64 = g.iter().map(|v| v * v).sum();
            let ev = symmetric_eigenvalues(&mut g.clone(), n);
            assert!((ev.iter().sum::<f64>() - tr).abs() < 1e-9 * tr.max(1.0));
            assert!((ev.iter().map(|v| v * v).sum::<f64>() - fro).abs() < 1e-9 * fro.max(1.0));
            assert!(ev.iter().all(|&v| v > -1e-9));
            let gc = gram_cols(&x, n, d);
            let ec = symmetric_eigenvalues(&mut gc.clone(), d);
            // XᵀX and XXᵀ share their non-zero eigenvalues.
            let big = |mut v: Vec<f64>| {
                v.sort_by(|a, b| b.total_cmp(a));
                v.truncate(n.min(d));
                v
            };
            for (p, q) in big(ev).iter().zip(big(ec)) {
                assert!((p - q).abs() < 1e-9 * tr.max(1.0), "{p} vs {q}");
            }
        }
    }

    #[test]
    fn every_method_hands_out_its_step_embeddings() {
        use crate::{
            BackboneEncoder, Method, MoCo, MoCoConfig, NegativeSource, SimCLR, SimCLRConfig,
        };
        use mocca_backbones::{MoCoProjectionHead, ResNetConfig, SimCLRProjectionHead, Stem};
        let dev = Device::Cpu;
        let backbone = ResNetConfig {
            stem: Stem::Cifar,
            width: 0.0625,
            ..ResNetConfig::resnet18()
        };
        let views = [
            Tensor::rand(0f32, 1., (4, 3, 8, 8), &dev).unwrap(),
            Tensor::rand(0f32, 1., (4, 3, 8, 8), &dev).unwrap(),
        ];
        let check = |m: &mut dyn Method, two_views: bool| {
            assert!(m.last_embeddings().is_none(), "{}", m.name());
            m.step(&views, &[0, 1, 2, 3]).unwrap();
            let e = m.last_embeddings().unwrap();
            assert_eq!(e.view0.dims(), &[4, 128]);
            assert_eq!(e.view1.is_some(), two_views, "{}", m.name());
            let metrics = e.metrics().unwrap();
            assert!(
                metrics.embedding_std > 0.0 && metrics.rank_me >= 1.0,
                "{metrics:?}"
            );
            assert_eq!(metrics.alignment.is_some(), two_views);
        };
        let head = SimCLRProjectionHead::new(backbone.feature_dim());
        let enc = BackboneEncoder::new(&backbone, head.into(), 0, &dev).unwrap();
        check(
            &mut SimCLR::new(SimCLRConfig::cifar10(4, 1, 1), enc, &dev).unwrap(),
            true,
        );
        let bank = NegativeSource::MemoryBank {
            num_samples: 8,
            num_negatives: 4,
            momentum: 0.5,
            sampling: Default::default(),
        };
        for (negatives, symmetric, two_views) in [
            (NegativeSource::queue(16), false, true),
            (NegativeSource::queue(16), true, true),
            (NegativeSource::EndToEnd, false, true),
            // The bank's positives are the queries' own rows.
            (bank, false, true),
        ] {
            let mut config = MoCoConfig::v2(4, 1, 1);
            config.negatives = negatives;
            config.symmetric = symmetric;
            let build = || {
                let head = MoCoProjectionHead::v2(backbone.feature_dim());
                BackboneEncoder::new(&backbone, head.into(), 0, &dev)
            };
            check(&mut MoCo::new(config, build, &dev).unwrap(), two_views);
        }
    }

    #[test]
    fn bad_shapes_and_non_finite_values() {
        let one = Tensor::ones((1, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(collapse_metrics(&one, None).is_err());
        let x = Tensor::ones((3, 4), DType::F32, &Device::Cpu).unwrap();
        let y = Tensor::ones((3, 5), DType::F32, &Device::Cpu).unwrap();
        assert!(collapse_metrics(&x, Some(&y)).is_err());
        let nan = t(&[vec![f32::NAN, 1.0], vec![1.0, 0.0]]);
        let m = collapse_metrics(&nan, None).unwrap();
        assert!(m.embedding_std.is_nan() && m.rank_me.is_nan() && !m.collapsing());
    }
}
