//! Contrastive losses for self-supervised learning on candle, exact to the
//! references (lightly, the MoCo and SimCLR papers' PyTorch code):
//!
//! - [`NTXentLoss`]: SimCLR's NT-Xent over the 2N views of a batch;
//! - [`InfoNCELoss`]: MoCo's InfoNCE with explicit negatives (a queue, or a
//!   memory bank with a shared or a per-query draw), its symmetric form (summed
//!   as the MoCo colab, or averaged as lightly: [`SymmetricReduction`]), and the
//!   end-to-end form with in-batch keys;
//! - [`NonParametricSoftmaxLoss`] and [`NCELoss`]: InstDisc's losses over a
//!   memory bank (Wu et al. 2018; lemniscate's `LinearAverage` and
//!   `NCEAverage` + `NCECriterion`, the normaliser `Z` fixed from the first batch);
//! - [`NegativeCosineSimilarity`]: BYOL's and SimSiam's loss, without negatives.
//!
//! Inputs are raw embeddings (`[N, D]`, f32, f16 or bf16; accumulation is
//! always in f32), L2-normalised inside (`x / max(‖x‖, 1e-12)`) with the
//! gradient flowing through the normalisation. Each `forward` returns a
//! [`ContrastiveOutput`]: the scalar loss, ready for `.backward()`, and the
//! top-1 accuracy of the positive. On the CPU an f32 loss runs as one fused
//! op (GEMMs plus a streamed, numerically stable log-sum-exp, gradients
//! computed alongside); on other devices, or with
//! [`Implementation::Composed`], it is a composition of candle ops. Bad input
//! returns a [`LossError`] naming the problem.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use mocca_losses::{InfoNCEConfig, InfoNCELoss};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::Cpu;
//! let q = Var::randn(0f32, 1.0, (8, 16), &dev)?; // queries (trainable)
//! let k = Tensor::randn(0f32, 1.0, (8, 16), &dev)?; // keys (momentum encoder)
//! let queue = Tensor::randn(0f32, 1.0, (64, 16), &dev)?;
//! let queue = queue.broadcast_div(&queue.sqr()?.sum_keepdim(1)?.sqrt()?)?; // unit rows
//!
//! let loss = InfoNCELoss::new(InfoNCEConfig { temperature: 0.2, ..Default::default() })?;
//! let out = loss.forward(&q, &k, &queue)?;
//! let grads = out.loss.backward()?;
//! assert_eq!(grads.get(&q).unwrap().dims(), &[8, 16]);
//! assert!(out.loss.to_scalar::<f32>()? > 0.0);
//! # Ok(())
//! # }
//! ```

mod composed;
mod error;
mod fused;
mod infonce;
mod instdisc;
mod negative_cosine;
mod ntxent;
pub mod rules;
mod run;
mod validate;

use candle_core::Tensor;

pub use error::LossError;
pub use infonce::{InfoNCEConfig, InfoNCELoss, SymmetricReduction};
pub use instdisc::{NCELoss, NonParametricSoftmaxLoss};
pub use negative_cosine::NegativeCosineSimilarity;
pub use ntxent::{NTXentConfig, NTXentLoss};

/// Which code path computes a loss. Both give the same values (to f32
/// rounding); the choice only changes speed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Implementation {
    /// The fused op for f32 on the CPU, composed candle ops everywhere else.
    #[default]
    Auto,
    /// Always composed candle ops (what CUDA/Metal run; slower on the CPU,
    /// where it makes several passes over the `[N, K]` logits).
    Composed,
}

/// What a loss's `forward` returns.
#[derive(Clone, Debug)]
pub struct ContrastiveOutput {
    /// The scalar loss (f32; f64 for f64 inputs), differentiable w.r.t. the
    /// inputs that track gradients.
    pub loss: Tensor,
    /// Fraction of anchors/queries whose positive has the largest logit
    /// (ties count as correct), an f32 scalar without gradient. It stays on
    /// the device: reading it is the caller's choice of sync point.
    pub accuracy: Tensor,
}
