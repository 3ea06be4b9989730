//! The losses as compositions of candle ops: runs on every device (CUDA,
//! Metal) and in f64, and is the reference the fused CPU path is tested
//! against. Inputs are already in the compute dtype (f32 or f64).

use candle_core::{DType, Result, Tensor, D};

use crate::fused::kernels::NORM_EPS;

/// `x / max(‖x‖, eps)` per row, written as `x / sqrt(max(‖x‖², eps²))`:
/// the same values, but a zero row gets the clamp's zero gradient instead of
/// the `0 · ∞` of differentiating `sqrt` at 0.
pub(crate) fn normalize(x: &Tensor) -> Result<Tensor> {
    let eps = NORM_EPS as f64;
    let norm = x.sqr()?.sum_keepdim(1)?.maximum(eps * eps)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// Mean cross-entropy of `logits` rows against the logit `positive` (`[rows,
/// 1]`, a column of `logits`), and the fraction of rows where the positive is
/// the largest logit.
pub(crate) fn cross_entropy(logits: &Tensor, positive: &Tensor) -> Result<(Tensor, Tensor)> {
    let max = logits.max_keepdim(1)?.detach();
    let lse = logits
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(1)?
        .log()?
        .add(&max)?;
    let loss = lse.sub(positive)?.mean_all()?;
    let accuracy = positive.ge(&max)?.to_dtype(DType::F32)?.mean_all()?;
    Ok((loss, accuracy))
}

/// Column index per row, as a `[rows, 1]` u32 tensor for `gather`.
fn column(index: impl Iterator<Item = usize>, logits: &Tensor) -> Result<Tensor> {
    let idx: Vec<u32> = index.map(|i| i as u32).collect();
    let rows = idx.len();
    Tensor::from_vec(idx, (rows, 1), logits.device())
}

/// SimCLR NT-Xent of `z0`, `z1` (`[n, d]`).
pub(crate) fn ntxent(z0: &Tensor, z1: &Tensor, tau: f64) -> Result<(Tensor, Tensor)> {
    let n = z0.dim(0)?;
    let m = 2 * n;
    let z = Tensor::cat(&[normalize(z0)?, normalize(z1)?], 0)?;
    let sim = z.matmul(&z.t()?)?.affine(1.0 / tau, 0.0)?;
    let diagonal = Tensor::eye(m, DType::U8, z.device())?;
    let minus_inf = Tensor::full(f32::NEG_INFINITY, (m, m), z.device())?.to_dtype(sim.dtype())?;
    let logits = diagonal.where_cond(&minus_inf, &sim)?;
    let positive = logits.gather(&column((0..m).map(|i| (i + n) % m), &logits)?, D::Minus1)?;
    cross_entropy(&logits, &positive)
}

/// MoCo InfoNCE: logits `[q̂·k̂, q̂ negativesᵀ] / τ`, label 0. The negatives
/// are used as given and get no gradient.
pub(crate) fn infonce(
    q: &Tensor,
    k: &Tensor,
    negatives: &Tensor,
    tau: f64,
) -> Result<(Tensor, Tensor)> {
    let (q, k) = (normalize(q)?, normalize(k)?);
    let positive = q.mul(&k)?.sum_keepdim(1)?;
    let negative = q.matmul(&negatives.detach().t()?)?;
    let logits = Tensor::cat(&[&positive, &negative], 1)?.affine(1.0 / tau, 0.0)?;
    let positive = logits.narrow(1, 0, 1)?;
    cross_entropy(&logits, &positive)
}

/// InfoNCE with per-query negatives: query i's negatives are the rows `indices[i, :]` of
/// `bank` (`indices` `[n, K]` u32), used as given, without gradient.
pub(crate) fn infonce_indexed(
    q: &Tensor,
    k: &Tensor,
    bank: &Tensor,
    indices: &Tensor,
    tau: f64,
) -> Result<(Tensor, Tensor)> {
    let (n, kneg) = indices.dims2()?;
    let d = q.dim(1)?;
    let (q, k) = (normalize(q)?, normalize(k)?);
    let positive = q.mul(&k)?.sum_keepdim(1)?;
    let negatives = bank
        .detach()
        .index_select(&indices.flatten_all()?, 0)?
        .reshape((n, kneg, d))?;
    let negative = q
        .unsqueeze(1)?
        .matmul(&negatives.transpose(1, 2)?.contiguous()?)?
        .squeeze(1)?;
    let logits = Tensor::cat(&[&positive, &negative], 1)?.affine(1.0 / tau, 0.0)?;
    let positive = logits.narrow(1, 0, 1)?;
    cross_entropy(&logits, &positive)
}

/// MoCo end-to-end (mechanism (a)): logits `q̂ k̂ᵀ / τ`, query i's positive is key i.
pub(crate) fn end_to_end(q: &Tensor, k: &Tensor, tau: f64) -> Result<(Tensor, Tensor)> {
    let n = q.dim(0)?;
    let logits = normalize(q)?
        .matmul(&normalize(k)?.t()?)?
        .affine(1.0 / tau, 0.0)?;
    let positive = logits.gather(&column(0..n, &logits)?, D::Minus1)?;
    cross_entropy(&logits, &positive)
}
