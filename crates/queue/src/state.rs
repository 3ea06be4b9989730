//! safetensors state files: written atomically, read back with clear errors.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use mocca_core::fs::WriteError;

use crate::QueueError;

pub(crate) type StateDict = HashMap<String, Tensor>;

/// Writes `tensors` to `path` atomically ([`mocca_core::fs::write_atomic_with`]), so a crash
/// never leaves a half-written state.
pub(crate) fn save(tensors: &StateDict, path: &Path) -> Result<(), QueueError> {
    let write = |tmp: &Path| candle_core::safetensors::save(tensors, tmp);
    mocca_core::fs::write_atomic_with(path, write).map_err(|e| match e {
        WriteError::Write(e) => e.into(),
        WriteError::Io(source) => QueueError::Io {
            path: path.to_path_buf(),
            source,
        },
    })
}

pub(crate) fn load(path: &Path, device: &Device) -> Result<StateDict, QueueError> {
    let bytes = std::fs::read(path).map_err(|source| QueueError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(candle_core::safetensors::load_buffer(&bytes, device)?)
}

pub(crate) fn get<'a>(state: &'a StateDict, name: &str) -> Result<&'a Tensor, QueueError> {
    state
        .get(name)
        .ok_or_else(|| QueueError::MissingStateTensor {
            name: name.to_string(),
        })
}

/// A `u64` stored bit-for-bit as an I64 scalar (safetensors has no u64 in candle): the steps,
/// pointers and generator states of the queue's, the bank's and mocca-methods' checkpoints.
pub fn u64_tensor(v: u64) -> Result<Tensor, QueueError> {
    Ok(Tensor::new(v as i64, &Device::Cpu)?)
}

pub(crate) fn read_u64(state: &StateDict, name: &str) -> Result<u64, QueueError> {
    let t = get(state, name)?;
    if t.dtype() != DType::I64 || t.elem_count() != 1 {
        return Err(QueueError::InvalidState(format!(
            "`{name}` must be one i64, got {:?} of shape {:?}",
            t.dtype(),
            t.dims()
        )));
    }
    Ok(t.flatten_all()?.to_vec1::<i64>()?[0] as u64)
}

pub(crate) fn f64_tensor(v: f64) -> Result<Tensor, QueueError> {
    Ok(Tensor::new(v, &Device::Cpu)?)
}

pub(crate) fn read_f64(state: &StateDict, name: &str) -> Result<f64, QueueError> {
    let t = get(state, name)?;
    if t.dtype() != DType::F64 || t.elem_count() != 1 {
        return Err(QueueError::InvalidState(format!(
            "`{name}` must be one f64, got {:?} of shape {:?}",
            t.dtype(),
            t.dims()
        )));
    }
    Ok(t.flatten_all()?.to_vec1::<f64>()?[0])
}

/// A `[rows, dim]` f32 matrix; returns its dims.
pub(crate) fn read_matrix<'a>(
    state: &'a StateDict,
    name: &str,
) -> Result<(&'a Tensor, usize, usize), QueueError> {
    let t = get(state, name)?;
    match (t.dtype(), t.dims()) {
        (DType::F32, &[rows, dim]) if rows > 0 && dim > 0 => Ok((t, rows, dim)),
        (dtype, dims) => Err(QueueError::InvalidState(format!(
            "`{name}` must be a non-empty f32 matrix, got {dtype:?} of shape {dims:?}"
        ))),
    }
}
