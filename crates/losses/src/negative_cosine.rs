use candle_core::{DType, Tensor};

use crate::{validate, LossError};

/// The negative cosine similarity of BYOL (Grill et al., "Bootstrap Your Own Latent", 2020)
/// and SimSiam (Chen & He, "Exploring Simple Siamese Representation Learning", 2021), as
/// lightly's `NegativeCosineSimilarity`:
/// `loss = −mean_i (a_i·b_i) / (max(‖a_i‖, ε)·max(‖b_i‖, ε))`, ε = 1e-8.
///
/// Between −1 (every pair aligned) and 1. No negatives: what keeps BYOL and SimSiam from
/// collapsing is the predictor and the stop-gradient (or the momentum target), which the
/// method supplies by detaching one argument.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use mocca_losses::NegativeCosineSimilarity;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let p = Var::new(&[[1f32, 0.0], [0.0, 2.0]], &Device::Cpu)?; // predictions
/// let z = Tensor::new(&[[3f32, 0.0], [1.0, 1.0]], &Device::Cpu)?; // targets (detached)
/// let loss = NegativeCosineSimilarity::default().forward(&p, &z)?;
/// // cos = 1 and 1/√2: the loss is −(1 + 0.7071)/2.
/// assert!((loss.to_scalar::<f32>()? + 0.853_553).abs() < 1e-6);
/// let grads = loss.backward()?;
/// assert!(grads.get(&p).is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NegativeCosineSimilarity {
    /// The smallest norm a row is divided by (PyTorch's `cosine_similarity` eps).
    pub eps: f64,
}

impl Default for NegativeCosineSimilarity {
    fn default() -> Self {
        Self { eps: 1e-8 }
    }
}

impl NegativeCosineSimilarity {
    /// The loss of the row pairs of `a` and `b` (`[N, D]` each; f32, f16 or bf16 computed in
    /// f32, f64 in f64), differentiable with respect to both.
    pub fn forward(&self, a: &Tensor, b: &Tensor) -> Result<Tensor, LossError> {
        validate::batch("a", a)?;
        validate::like("b", b, "a", a)?;
        let dtype = if a.dtype() == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let (a, b) = (a.to_dtype(dtype)?, b.to_dtype(dtype)?);
        let norm = |x: &Tensor| -> candle_core::Result<Tensor> {
            x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(self.eps)
        };
        let cos = (&a * &b)?.sum_keepdim(1)?.div(&(norm(&a)? * norm(&b)?)?)?;
        Ok(cos.mean_all()?.neg()?)
    }
}
