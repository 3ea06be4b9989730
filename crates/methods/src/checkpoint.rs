//! Whole-state files: named tensors in safetensors, written atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use mocca_core::fs::WriteError;

use crate::error::{MethodError, Result};

/// Writes `tensors` to `path` atomically ([`mocca_core::fs::write_atomic_with`]), so a crash
/// never leaves a half-written file under `path`.
pub fn save_tensors(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    // safetensors wants contiguous host data; candle's `save` handles device
    // and layout, but the map type must be a HashMap.
    let map: HashMap<&str, Tensor> = tensors
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let io = |source| MethodError::Io {
        path: path.to_path_buf(),
        source,
    };
    let write = |tmp: &Path| match candle_core::safetensors::save(&map, tmp) {
        Ok(()) => Ok(()),
        Err(candle_core::Error::Io(source)) => Err(io(source)),
        Err(other) => Err(MethodError::Candle(other)),
    };
    mocca_core::fs::write_atomic_with(path, write).map_err(|e| match e {
        WriteError::Write(e) => e,
        WriteError::Io(source) => io(source),
    })
}

/// Reads a file written by [`save_tensors`] onto `device`.
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|source| MethodError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
        MethodError::StateMismatch(format!("{}: not a valid state file: {e}", path.display()))
    })
}

pub(crate) use mocca_queue::u64_tensor;

pub(crate) fn get_u64(state: &HashMap<String, Tensor>, key: &str) -> Result<u64> {
    let t = get(state, key)?;
    Ok(t.to_device(&Device::Cpu)?.to_scalar::<i64>()? as u64)
}

pub(crate) fn get<'a>(state: &'a HashMap<String, Tensor>, key: &str) -> Result<&'a Tensor> {
    state
        .get(key)
        .ok_or_else(|| MethodError::StateMismatch(format!("state has no `{key}`")))
}

/// The entries of `state` under `prefix.`, with the prefix removed.
pub(crate) fn sub_state(state: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    let p = format!("{prefix}.");
    state
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&p).map(|s| (s.to_string(), v.clone())))
        .collect()
}

/// Adds copies of `entries` to `out` under `prefix.` (copies, because
/// parameters and buffers are updated in place by later steps).
pub(crate) fn put_prefixed(
    out: &mut BTreeMap<String, Tensor>,
    prefix: &str,
    entries: impl IntoIterator<Item = (String, Tensor)>,
) -> Result<()> {
    for (k, v) in entries {
        out.insert(format!("{prefix}.{k}"), v.copy()?);
    }
    Ok(())
}

/// [`crate::Method::load_state`] for a method whose `restore` replaces its parts one by one:
/// when `restore` fails part-way, the state from before is put back, so a failed load changes
/// nothing.
pub(crate) fn load_all_or_nothing<M: crate::Method>(
    method: &mut M,
    state: &HashMap<String, Tensor>,
    restore: fn(&mut M, &HashMap<String, Tensor>) -> Result<()>,
) -> Result<()> {
    let backup: HashMap<String, Tensor> = method.state()?.into_iter().collect();
    restore(method, state).inspect_err(|_| {
        let _ = restore(method, &backup);
    })
}
