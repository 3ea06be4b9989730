use candle_core::Tensor;

use candle_core::DType;

use crate::{run, validate, ContrastiveOutput, Implementation, LossError};

/// Configuration of [`InfoNCELoss`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InfoNCEConfig {
    /// Temperature τ dividing the cosine similarities: 0.07 in MoCo v1, 0.2
    /// in MoCo v2.
    pub temperature: f64,
    /// How [`InfoNCELoss::forward_symmetric`] combines its two directions.
    pub symmetric_reduction: SymmetricReduction,
    /// Which code path computes the loss (the choice never changes the result).
    pub implementation: Implementation,
}

impl Default for InfoNCEConfig {
    fn default() -> Self {
        Self {
            temperature: 0.07,
            symmetric_reduction: SymmetricReduction::default(),
            implementation: Implementation::Auto,
        }
    }
}

/// How the symmetric MoCo loss combines `InfoNCE(q1, k2)` and `InfoNCE(q2, k1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SymmetricReduction {
    /// Their sum: the MoCo CIFAR-10 colab's `loss = loss_12 + loss_21` (behind its published
    /// symmetric results) and MoCo v3's `ctr(q1, k2) + ctr(q2, k1)` (which also scales each
    /// term by 2τ).
    Sum,
    /// Their mean, half the sum (and half its gradient): lightly's CIFAR-10 benchmark,
    /// `0.5 * (loss_1 + loss_2)`.
    #[default]
    Mean,
}

/// MoCo's InfoNCE loss (He et al., "Momentum Contrast for Unsupervised
/// Visual Representation Learning", 2020; van den Oord et al.,
/// "Representation Learning with Contrastive Predictive Coding", 2018).
///
/// Each query `q_i` is classified among its positive key `k_i` and a set of
/// negatives: the logits are `[q̂·k̂₊, q̂·n₁, …, q̂·n_K] / τ` with label 0, and
/// the loss is the mean cross-entropy over the queries. Queries and keys are
/// raw embeddings, L2-normalised inside with the gradient flowing through
/// the normalisation; the negatives (MoCo's queue, or rows drawn from a
/// memory bank) are used as given (unit rows) and get no gradient. MoCo
/// detaches the keys (they come from the momentum encoder); a key that
/// tracks gradients receives the gradient through the positive logit.
///
/// Four forms share the loss: [`forward`](Self::forward) with one set of
/// negatives for the batch (MoCo's queue), [`forward_indexed`](Self::forward_indexed)
/// with each query's own negatives (InstDisc's memory bank draws),
/// [`forward_symmetric`](Self::forward_symmetric) (both views as queries, the
/// MoCo colab's and lightly's symmetric loss, summed or averaged by
/// [`SymmetricReduction`]) and [`forward_end_to_end`](Self::forward_end_to_end)
/// (the batch's own keys as the dictionary, the MoCo paper's mechanism (a)).
#[derive(Clone, Debug)]
pub struct InfoNCELoss {
    config: InfoNCEConfig,
}

impl InfoNCELoss {
    /// Errors with [`LossError::InvalidTemperature`] unless τ is finite and > 0.
    pub fn new(config: InfoNCEConfig) -> Result<Self, LossError> {
        validate::temperature(config.temperature)?;
        Ok(Self { config })
    }

    pub fn config(&self) -> &InfoNCEConfig {
        &self.config
    }

    /// InfoNCE of queries `q` and positive keys `k` (`[N, D]`) against
    /// `negatives` (`[K, D]`, e.g. `MomentumQueue::negatives()` of
    /// `mocca-queue`, passed without a copy). Accuracy: the fraction of
    /// queries whose positive has the largest logit (MoCo's top-1).
    ///
    /// With the fused CPU path the backward does not read `negatives`; with
    /// the composed path (other devices) it does, so a queue must not be
    /// updated in place between this call and the backward pass.
    pub fn forward(
        &self,
        q: &Tensor,
        k: &Tensor,
        negatives: &Tensor,
    ) -> Result<ContrastiveOutput, LossError> {
        let (_, d) = validate::batch("q", q)?;
        validate::like("k", k, "q", q)?;
        check_negatives(negatives, d, q)?;
        let inputs = run::prepare(self.config.implementation, &[("q", q), ("k", k)])?;
        run::infonce(&inputs, negatives, self.config.temperature)
    }

    /// The symmetric MoCo loss `InfoNCE(q1, k2) + InfoNCE(q2, k1)`, or half of
    /// it ([`InfoNCEConfig::symmetric_reduction`]): each view's query against
    /// the other view's key, both against the same negatives. Computed as one
    /// InfoNCE over the 2N queries (the mean over 2N rows is the mean of the
    /// two halves' means), doubled for the sum.
    pub fn forward_symmetric(
        &self,
        q1: &Tensor,
        q2: &Tensor,
        k1: &Tensor,
        k2: &Tensor,
        negatives: &Tensor,
    ) -> Result<ContrastiveOutput, LossError> {
        let (_, d) = validate::batch("q1", q1)?;
        validate::like("q2", q2, "q1", q1)?;
        validate::like("k1", k1, "q1", q1)?;
        validate::like("k2", k2, "q1", q1)?;
        check_negatives(negatives, d, q1)?;
        let inputs = run::prepare(
            self.config.implementation,
            &[("q1", q1), ("q2", q2), ("k2", k2), ("k1", k1)],
        )?;
        let q = Tensor::cat(&[&inputs.tensors[0], &inputs.tensors[1]], 0)?;
        let k = Tensor::cat(&[&inputs.tensors[2], &inputs.tensors[3]], 0)?;
        let out = run::infonce(&inputs.with(vec![q, k]), negatives, self.config.temperature)?;
        Ok(match self.config.symmetric_reduction {
            SymmetricReduction::Mean => out,
            SymmetricReduction::Sum => ContrastiveOutput {
                loss: out.loss.affine(2.0, 0.0)?,
                accuracy: out.accuracy,
            },
        })
    }

    /// The symmetric MoCo loss with a queue per view, as solo-learn's MoCo V2+ computes it
    /// (`solo/methods/mocov2plus.py`: `(L(q1, k2, queue[1]) + L(q2, k1, queue[0])) / 2`):
    /// `InfoNCE(q1, k2)` against `queue2`, the past keys of view 2, and `InfoNCE(q2, k1)`
    /// against `queue1`, the past keys of view 1; summed or averaged as
    /// [`forward_symmetric`](Self::forward_symmetric) (solo-learn averages). Each query is
    /// contrasted with negatives of the same view as its positive.
    pub fn forward_symmetric_per_view(
        &self,
        q1: &Tensor,
        q2: &Tensor,
        k1: &Tensor,
        k2: &Tensor,
        queue1: &Tensor,
        queue2: &Tensor,
    ) -> Result<ContrastiveOutput, LossError> {
        validate::batch("q1", q1)?;
        validate::like("q2", q2, "q1", q1)?;
        let a = self.forward(q1, k2, queue2)?;
        let b = self.forward(q2, k1, queue1)?;
        let scale = match self.config.symmetric_reduction {
            SymmetricReduction::Mean => 0.5,
            SymmetricReduction::Sum => 1.0,
        };
        Ok(ContrastiveOutput {
            loss: ((a.loss + b.loss)? * scale)?,
            accuracy: ((a.accuracy + b.accuracy)? * 0.5)?,
        })
    }

    /// InfoNCE where each query has negatives of its own: query `i`'s are the
    /// rows `indices[i, :]` of `bank` (`[rows, D]`, unit rows, no gradient),
    /// `indices` a `[N, K]` u32 or i64 tensor. This is the memory bank of
    /// InstDisc (Wu et al. 2018; lemniscate's `NCEAverage` draws K rows per
    /// query), which the MoCo paper compares as mechanism (b); [`forward`]
    /// with one shared set of rows is the cheaper variant. On the CPU the
    /// `[N, K]` similarities are gathered dot products; no `[N, K, D]` copy of
    /// the rows is made.
    ///
    /// [`forward`]: Self::forward
    pub fn forward_indexed(
        &self,
        q: &Tensor,
        k: &Tensor,
        bank: &Tensor,
        indices: &Tensor,
    ) -> Result<ContrastiveOutput, LossError> {
        let (n, d) = validate::batch("q", q)?;
        validate::like("k", k, "q", q)?;
        check_negatives(bank, d, q)?;
        let indices = check_indices(indices, n, bank.dim(0)?, q)?;
        let inputs = run::prepare(self.config.implementation, &[("q", q), ("k", k)])?;
        run::infonce_indexed(&inputs, bank, &indices, self.config.temperature)
    }

    /// The MoCo paper's end-to-end mechanism (a): the batch's own keys are
    /// the dictionary. Logits `q̂ k̂ᵀ / τ` (`[N, N]`), query i's positive is
    /// key i, the other N − 1 keys are its negatives; gradients flow into both
    /// `q` and `k` (one encoder produces both in this mechanism).
    pub fn forward_end_to_end(
        &self,
        q: &Tensor,
        k: &Tensor,
    ) -> Result<ContrastiveOutput, LossError> {
        validate::batch("q", q)?;
        validate::like("k", k, "q", q)?;
        let inputs = run::prepare(self.config.implementation, &[("q", q), ("k", k)])?;
        run::dense(
            crate::fused::DenseKind::EndToEnd,
            &inputs,
            self.config.temperature,
        )
    }
}

fn check_negatives(negatives: &Tensor, d: usize, q: &Tensor) -> Result<(), LossError> {
    let (kneg, dn) = validate::matrix("negatives", negatives)?;
    if dn != d {
        return Err(LossError::ShapeMismatch {
            name: "negatives",
            got: negatives.dims().to_vec(),
            expected: format!("[K, {d}] (the embedding width of the queries)"),
        });
    }
    if kneg == 0 {
        return Err(LossError::NoNegatives { name: "negatives" });
    }
    validate::same_device("negatives", negatives, "q", q)
}

/// `[n, K]` integer row indices below `rows`, as u32.
fn check_indices(indices: &Tensor, n: usize, rows: usize, q: &Tensor) -> Result<Tensor, LossError> {
    let bad = |reason: String| LossError::InvalidIndices {
        name: "indices",
        reason,
    };
    let &[ni, k] = indices.dims() else {
        return Err(bad(format!(
            "expected a [{n}, K] matrix of bank rows, got shape {:?}",
            indices.dims()
        )));
    };
    if ni != n {
        return Err(bad(format!(
            "has {ni} rows but there are {n} queries (one row of negatives per query)"
        )));
    }
    if k == 0 {
        return Err(LossError::NoNegatives { name: "indices" });
    }
    validate::same_device("indices", indices, "q", q)?;
    let max = match indices.dtype() {
        DType::U32 => indices.max_all()?.to_scalar::<u32>()? as i64,
        DType::I64 => {
            let min = indices.min_all()?.to_scalar::<i64>()?;
            if min < 0 {
                return Err(bad(format!("holds the negative row {min}")));
            }
            indices.max_all()?.to_scalar::<i64>()?
        }
        other => {
            return Err(bad(format!(
                "has dtype {other:?}; expected u32 or i64 row indices"
            )))
        }
    };
    if max as usize >= rows {
        return Err(bad(format!("holds row {max} but the bank has {rows} rows")));
    }
    Ok(indices.to_dtype(DType::U32)?)
}
