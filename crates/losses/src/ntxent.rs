use candle_core::Tensor;

use crate::{run, validate, ContrastiveOutput, Implementation, LossError};

/// Configuration of [`NTXentLoss`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NTXentConfig {
    /// Temperature τ dividing the cosine similarities. lightly's default is
    /// 0.5, the SimCLR paper's CIFAR-10 setting; ImageNet runs use 0.1.
    pub temperature: f64,
    /// Which code path computes the loss (the choice never changes the result).
    pub implementation: Implementation,
}

impl Default for NTXentConfig {
    fn default() -> Self {
        Self {
            temperature: 0.5,
            implementation: Implementation::Auto,
        }
    }
}

/// SimCLR's normalised temperature-scaled cross-entropy (Chen et al., "A
/// Simple Framework for Contrastive Learning of Visual Representations",
/// 2020), lightly's `NTXentLoss` without a memory bank.
///
/// For two views `z0`, `z1` (`[N, D]`, raw projection-head outputs), the 2N
/// L2-normalised embeddings are compared with each other: anchor `i`'s
/// positive is the other view of the same image, the remaining 2N − 2 are its
/// negatives, and the loss is the mean over the 2N anchors of the
/// cross-entropy of `sim / τ` (self-similarity excluded).
#[derive(Clone, Debug)]
pub struct NTXentLoss {
    config: NTXentConfig,
}

impl NTXentLoss {
    /// Errors with [`LossError::InvalidTemperature`] unless τ is finite and > 0.
    pub fn new(config: NTXentConfig) -> Result<Self, LossError> {
        validate::temperature(config.temperature)?;
        Ok(Self { config })
    }

    pub fn config(&self) -> &NTXentConfig {
        &self.config
    }

    /// The loss of the two views `z0`, `z1` (`[N, D]`, f32/f16/bf16 computed
    /// in f32; f64 computed in f64) and the fraction of anchors whose positive
    /// has the largest logit. Gradients flow to both views through the
    /// normalisation.
    pub fn forward(&self, z0: &Tensor, z1: &Tensor) -> Result<ContrastiveOutput, LossError> {
        validate::batch("z0", z0)?;
        validate::like("z1", z1, "z0", z0)?;
        let inputs = run::prepare(self.config.implementation, &[("z0", z0), ("z1", z1)])?;
        run::dense(
            crate::fused::DenseKind::NtXent,
            &inputs,
            self.config.temperature,
        )
    }
}
