//! Input checks shared by the losses: each returns the [`LossError`] that
//! names the offending input.

use candle_core::{DType, Storage, Tensor};

use crate::LossError;

pub(crate) fn temperature(t: f64) -> Result<f64, LossError> {
    crate::rules::temperature(t)
        .map(|()| t)
        .map_err(|_| LossError::InvalidTemperature(t))
}

/// A floating-point `[rows, dim]` matrix with `dim > 0`; returns its dims.
/// Empty row counts are left to the caller (they mean different things for
/// a batch and for the negatives).
pub(crate) fn matrix(name: &'static str, x: &Tensor) -> Result<(usize, usize), LossError> {
    let &[rows, dim] = x.dims() else {
        return Err(LossError::NotAMatrix {
            name,
            shape: x.dims().to_vec(),
        });
    };
    if !matches!(
        x.dtype(),
        DType::F32 | DType::F16 | DType::BF16 | DType::F64
    ) {
        return Err(LossError::UnsupportedDType {
            name,
            dtype: x.dtype(),
        });
    }
    if dim == 0 {
        return Err(LossError::EmptyEmbedding { name });
    }
    Ok((rows, dim))
}

/// A batch of embeddings: a matrix with at least one row.
pub(crate) fn batch(name: &'static str, x: &Tensor) -> Result<(usize, usize), LossError> {
    let (n, d) = matrix(name, x)?;
    if n == 0 {
        return Err(LossError::EmptyBatch { name });
    }
    Ok((n, d))
}

/// `x` has the shape `[n, d]` of `reference`, on the same device.
pub(crate) fn like(
    name: &'static str,
    x: &Tensor,
    reference_name: &'static str,
    reference: &Tensor,
) -> Result<(), LossError> {
    matrix(name, x)?;
    if x.dims() != reference.dims() {
        return Err(LossError::ShapeMismatch {
            name,
            got: x.dims().to_vec(),
            expected: format!("{:?} (the shape of `{reference_name}`)", reference.dims()),
        });
    }
    same_device(name, x, reference_name, reference)
}

pub(crate) fn same_device(
    name: &'static str,
    x: &Tensor,
    other: &'static str,
    reference: &Tensor,
) -> Result<(), LossError> {
    if x.device().same_device(reference.device()) {
        Ok(())
    } else {
        Err(LossError::DeviceMismatch {
            name,
            other,
            got: x.device().location(),
            expected: reference.device().location(),
        })
    }
}

/// The dtype the loss computes in: f64 for f64 inputs (exact reference
/// checks), f32 for everything else (half precision accumulates in f32).
pub(crate) fn compute_dtype(inputs: &[&Tensor]) -> DType {
    if inputs.iter().any(|t| t.dtype() == DType::F64) {
        DType::F64
    } else {
        DType::F32
    }
}

/// Errors with [`LossError::NonFinite`] if `x` holds a NaN or an infinity.
pub(crate) fn finite(name: &'static str, x: &Tensor) -> Result<(), LossError> {
    let ok = match cpu_f32_all_finite(x) {
        Some(ok) => ok,
        // `v * 0` is NaN exactly for NaN and infinite `v`; one reduction and
        // one device-to-host copy of a scalar.
        None => x
            .affine(0.0, 0.0)?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?
            .is_finite(),
    };
    if ok {
        Ok(())
    } else {
        Err(LossError::NonFinite { name })
    }
}

fn cpu_f32_all_finite(x: &Tensor) -> Option<bool> {
    let (storage, layout) = x.storage_and_layout();
    let Storage::Cpu(candle_core::CpuStorage::F32(v)) = &*storage else {
        return None;
    };
    let (start, end) = layout.contiguous_offsets()?;
    Some(crate::fused::kernels::row_max(&v[start..end]).1)
}
