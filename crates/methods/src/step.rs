//! What a training step of every method does the same way: check the views it is given, read
//! the loss, and treat a diverged model as one error.

use candle_core::Tensor;

use crate::error::{MethodError, Result};

/// Checks that `views` holds `want` non-empty `[N, C, H, W]` batches of one shape; returns `N`.
pub(crate) fn check_views(views: &[Tensor], want: usize) -> Result<usize> {
    if views.len() != want {
        return Err(MethodError::BadInput(format!(
            "expected {want} views per batch, got {}",
            views.len()
        )));
    }
    let dims = views[0].dims();
    if dims.len() != 4 || dims[0] == 0 {
        return Err(MethodError::BadInput(format!(
            "views must be non-empty [N, C, H, W] batches, got {dims:?}"
        )));
    }
    if let Some(v) = views.iter().find(|v| v.dims() != dims) {
        return Err(MethodError::BadInput(format!(
            "all views must have the same shape: {dims:?} vs {:?}",
            v.dims()
        )));
    }
    Ok(dims[0])
}

/// Reads a scalar loss and rejects NaN / infinity.
pub(crate) fn finite_loss(loss: &Tensor, step: u64) -> Result<f64> {
    let v = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(MethodError::NonFiniteLoss { step, loss: v })
    }
}

/// Maps a loss's rejection of non-finite embeddings to the same error as a
/// non-finite loss value: both mean the model has diverged.
pub(crate) fn loss_result<T>(
    r: std::result::Result<T, mocca_losses::LossError>,
    step: u64,
) -> Result<T> {
    r.map_err(|e| match e {
        mocca_losses::LossError::NonFinite { .. } => MethodError::NonFiniteLoss {
            step,
            loss: f64::NAN,
        },
        other => other.into(),
    })
}
