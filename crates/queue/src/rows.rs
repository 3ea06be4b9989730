//! Checks and normalisation of incoming rows (keys, embeddings).

use candle_core::{DType, Device, Tensor};

use crate::QueueError;

/// `x` as a contiguous, detached f32 `[N, dim]` matrix of unit rows
/// (`x / max(‖x‖, 1e-12)`, the loss's normalisation) on `device`.
pub(crate) fn unit_rows(
    name: &'static str,
    x: &Tensor,
    dim: usize,
    device: &Device,
) -> Result<Tensor, QueueError> {
    let &[n, d] = x.dims() else {
        return Err(QueueError::NotAMatrix {
            name,
            shape: x.dims().to_vec(),
        });
    };
    if !x.dtype().is_float() {
        return Err(QueueError::UnsupportedDType {
            name,
            dtype: x.dtype(),
        });
    }
    if d != dim {
        return Err(QueueError::DimMismatch {
            name,
            expected: dim,
            got: d,
        });
    }
    if n == 0 {
        return Err(QueueError::EmptyBatch { name });
    }
    same_device(name, x, device)?;
    let x = x.detach().to_dtype(DType::F32)?;
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?.contiguous()?)
}

pub(crate) fn same_device(name: &str, x: &Tensor, device: &Device) -> Result<(), QueueError> {
    if x.device().same_device(device) {
        Ok(())
    } else {
        Err(QueueError::DeviceMismatch {
            name: name.to_string(),
            got: x.device().location(),
            expected: device.location(),
        })
    }
}

/// A contiguous tensor with its own storage (the queue and bank write in
/// place, so they must not share storage with the caller's tensor).
pub(crate) fn owned(x: &Tensor) -> Result<Tensor, QueueError> {
    Ok(if x.is_contiguous() {
        x.copy()?
    } else {
        x.contiguous()?
    })
}
