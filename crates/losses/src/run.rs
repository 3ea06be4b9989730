//! Dispatch between the fused CPU path and the composed candle ops.

use candle_core::{DType, Tensor};

use crate::fused::{self, DenseKind};
use crate::{composed, validate, ContrastiveOutput, Implementation, LossError};

/// Inputs cast to the compute dtype, checked finite, and the path chosen.
pub(crate) struct Prepared {
    fused: bool,
    dtype: DType,
    pub(crate) tensors: Vec<Tensor>,
}

impl Prepared {
    /// The same path and dtype for derived tensors.
    pub(crate) fn with(&self, tensors: Vec<Tensor>) -> Self {
        Self {
            fused: self.fused,
            dtype: self.dtype,
            tensors,
        }
    }
}

pub(crate) fn prepare(
    implementation: Implementation,
    inputs: &[(&'static str, &Tensor)],
) -> Result<Prepared, LossError> {
    let all: Vec<&Tensor> = inputs.iter().map(|(_, t)| *t).collect();
    let dtype = validate::compute_dtype(&all);
    let fused =
        implementation == Implementation::Auto && all[0].device().is_cpu() && dtype == DType::F32;
    let mut tensors = Vec::with_capacity(inputs.len());
    for &(name, x) in inputs {
        let t = x.to_dtype(dtype)?;
        let t = if fused { t.contiguous()? } else { t };
        validate::finite(name, &t)?;
        tensors.push(t);
    }
    Ok(Prepared {
        fused,
        dtype,
        tensors,
    })
}

fn output(loss: Tensor, accuracy: Tensor) -> ContrastiveOutput {
    ContrastiveOutput { loss, accuracy }
}

pub(crate) fn dense(
    kind: DenseKind,
    p: &Prepared,
    tau: f64,
) -> Result<ContrastiveOutput, LossError> {
    let (a, b) = (&p.tensors[0], &p.tensors[1]);
    if p.fused {
        let f = fused::dense(kind, a, b, (1.0 / tau) as f32)?;
        let accuracy = Tensor::new(f.accuracy, a.device())?;
        return Ok(output(f.loss, accuracy));
    }
    let (loss, accuracy) = match kind {
        DenseKind::NtXent => composed::ntxent(a, b, tau)?,
        DenseKind::EndToEnd => composed::end_to_end(a, b, tau)?,
    };
    Ok(output(loss, accuracy))
}

pub(crate) fn infonce(
    p: &Prepared,
    negatives: &Tensor,
    tau: f64,
) -> Result<ContrastiveOutput, LossError> {
    let (q, k) = (&p.tensors[0], &p.tensors[1]);
    if p.fused {
        // A no-op for an f32 queue: no copy of the negatives.
        let negatives = negatives.to_dtype(DType::F32)?.contiguous()?;
        let f = fused::infonce(q, k, &negatives, (1.0 / tau) as f32)?;
        if !f.finite {
            return Err(LossError::NonFinite { name: "negatives" });
        }
        let accuracy = Tensor::new(f.accuracy, q.device())?;
        return Ok(output(f.loss, accuracy));
    }
    let negatives = negatives.to_dtype(p.dtype)?;
    validate::finite("negatives", &negatives)?;
    let (loss, accuracy) = composed::infonce(q, k, &negatives, tau)?;
    Ok(output(loss, accuracy))
}

/// InfoNCE with per-query negatives, `indices` `[n, K]` u32 rows of `bank` (checked by the
/// caller).
pub(crate) fn infonce_indexed(
    p: &Prepared,
    bank: &Tensor,
    indices: &Tensor,
    tau: f64,
) -> Result<ContrastiveOutput, LossError> {
    let (q, k) = (&p.tensors[0], &p.tensors[1]);
    if p.fused {
        let bank = bank.to_dtype(DType::F32)?.contiguous()?;
        let idx: Vec<u32> = indices.flatten_all()?.to_vec1()?;
        let f = fused::infonce_indexed(q, k, &bank, idx, (1.0 / tau) as f32)?;
        if !f.finite {
            return Err(LossError::NonFinite { name: "bank" });
        }
        let accuracy = Tensor::new(f.accuracy, q.device())?;
        return Ok(output(f.loss, accuracy));
    }
    let bank = bank.to_dtype(p.dtype)?;
    validate::finite("bank", &bank)?;
    let (loss, accuracy) = composed::infonce_indexed(q, k, &bank, indices, tau)?;
    Ok(output(loss, accuracy))
}
