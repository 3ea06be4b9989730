//! The arithmetic of a training step: plain f32, or bf16 mixed precision.

use std::fmt;
use std::str::FromStr;

use candle_core::DType;

use crate::error::{config_err, MethodError};

/// How an encoder computes its forward and backward passes.
///
/// `Bf16` is mixed precision as PyTorch's autocast does it (Micikevicius et
/// al., "Mixed Precision Training", ICLR 2018; bf16 needs no loss scaling):
/// parameters, gradients and optimiser state stay f32 ("master weights"),
/// the images are cast to bf16 on entry, every convolution and linear layer
/// runs on bf16 copies of its weights, BatchNorm computes its statistics in
/// f32, and the encoder's outputs come back as f32, so the losses, the queue
/// and the evaluation see f32 embeddings. On CUDA the bf16 convolutions and
/// GEMMs use the tensor cores; on the CPU bf16 is slow (for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bf16 activations and layer arithmetic over f32 master weights.
    Bf16,
}

impl Precision {
    /// The dtype activations are computed in.
    pub fn compute_dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }

    /// `"f32"` or `"bf16"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = MethodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(config_err(format!(
                "unknown precision `{other}`: expected f32 or bf16"
            ))),
        }
    }
}
