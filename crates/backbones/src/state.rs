//! Parameters and buffers under torchvision's names; state dicts in safetensors.
//!
//! Every model of this crate records, while it is built, one entry per tensor of its PyTorch
//! counterpart's `state_dict()`, in the same order: trainable parameters (held as [`Var`]s, shared
//! with the `VarMap` behind the `VarBuilder` when there is one) and BatchNorm buffers
//! (`running_mean`, `running_var`, `num_batches_tracked`), which live in a store owned by the
//! model and never enter the `VarMap`. An optimizer or an EMA built from
//! [`StateDict::named_parameters`] (or from the `VarMap`) therefore never touches running
//! statistics, as in MoCo's momentum update.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Tensor, Var};
use mocca_core::fs::WriteError;

use crate::error::{Error, Result};

/// Running statistics of one BatchNorm layer (buffers, not parameters).
#[derive(Debug)]
pub(crate) struct RunningStats {
    pub mean: Tensor,
    pub var: Tensor,
    /// Kept as an integer, exported as an I64 scalar like torch's buffer.
    pub num_batches_tracked: i64,
}

pub(crate) type SharedStats = Arc<Mutex<RunningStats>>;

pub(crate) fn lock(stats: &SharedStats) -> MutexGuard<'_, RunningStats> {
    // A panic while holding the lock cannot leave the tensors half-written (they are replaced
    // whole), so a poisoned lock is still safe to use.
    stats.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Clone)]
enum Slot {
    Parameter(Var),
    /// A parameter held fixed (`requires_grad = False` in PyTorch): in the state dict, never
    /// in [`ModelState::named_parameters`], so no optimizer or EMA moves it.
    Frozen(Var),
    RunningMean(SharedStats),
    RunningVar(SharedStats),
    NumBatchesTracked(SharedStats),
}

/// The ordered parameters and buffers of one model.
#[derive(Debug, Clone, Default)]
pub struct ModelState {
    entries: Vec<(String, Slot)>,
}

impl ModelState {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Registers a trainable parameter. A tensor that is not already a variable (weights read
    /// from a file) becomes one, so every model can be trained and reloaded in place.
    pub(crate) fn parameter(&mut self, name: impl Into<String>, t: Tensor) -> Result<Tensor> {
        let var = Var::from_tensor(&t)?;
        let t = var.as_tensor().clone();
        self.entries.push((name.into(), Slot::Parameter(var)));
        Ok(t)
    }

    /// Registers a parameter that training never changes (MoCo v3's fixed sin-cos position
    /// embedding, its frozen patch embedding); returns it detached, for the forward pass.
    pub(crate) fn frozen(&mut self, name: impl Into<String>, t: Tensor) -> Result<Tensor> {
        let var = Var::from_tensor(&t)?;
        let t = var.as_detached_tensor();
        self.entries.push((name.into(), Slot::Frozen(var)));
        Ok(t)
    }

    /// Registers the three buffers of a BatchNorm layer whose state-dict prefix is `prefix`.
    pub(crate) fn batch_norm_buffers(&mut self, prefix: &str, stats: &SharedStats) {
        let name = |leaf: &str| {
            if prefix.is_empty() {
                leaf.to_string()
            } else {
                format!("{prefix}.{leaf}")
            }
        };
        self.entries
            .push((name("running_mean"), Slot::RunningMean(stats.clone())));
        self.entries
            .push((name("running_var"), Slot::RunningVar(stats.clone())));
        self.entries.push((
            name("num_batches_tracked"),
            Slot::NumBatchesTracked(stats.clone()),
        ));
    }

    /// Appends another model's entries under `prefix` (`"backbone"` gives `backbone.conv1.weight`).
    pub fn extend_prefixed(&mut self, prefix: &str, other: &ModelState) {
        for (name, slot) in &other.entries {
            self.entries
                .push((format!("{prefix}.{name}"), slot.clone()));
        }
    }

    /// Trainable parameters, in state-dict order.
    pub fn named_parameters(&self) -> Vec<(String, Var)> {
        self.entries
            .iter()
            .filter_map(|(n, s)| match s {
                Slot::Parameter(v) => Some((n.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }

    /// Buffers (running statistics and `num_batches_tracked`), in state-dict order. The tensors
    /// are snapshots: later training steps do not change them.
    pub fn named_buffers(&self) -> Result<Vec<(String, Tensor)>> {
        self.entries
            .iter()
            .filter(|(_, s)| !matches!(s, Slot::Parameter(_) | Slot::Frozen(_)))
            .map(|(n, s)| Ok((n.clone(), slot_tensor(s)?)))
            .collect()
    }

    /// Every entry, in torchvision's `state_dict()` order. Parameters are detached views of
    /// the variables (later optimizer steps show through, as with torch's `state_dict()`);
    /// buffers are snapshots.
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        self.entries
            .iter()
            .map(|(n, s)| Ok((n.clone(), slot_tensor(s)?)))
            .collect()
    }

    /// Names and shapes of every entry, in state-dict order.
    pub fn keys(&self) -> Vec<(String, Vec<usize>)> {
        self.entries
            .iter()
            .map(|(n, s)| {
                let shape = match s {
                    Slot::Parameter(v) | Slot::Frozen(v) => v.dims().to_vec(),
                    Slot::RunningMean(st) => lock(st).mean.dims().to_vec(),
                    Slot::RunningVar(st) => lock(st).var.dims().to_vec(),
                    Slot::NumBatchesTracked(_) => vec![],
                };
                (n.clone(), shape)
            })
            .collect()
    }

    /// Sets every entry from `tensors` (converted to the model's device and dtype) and returns
    /// the names in `tensors` the model does not have (e.g. torchvision's `fc.weight`,
    /// `fc.bias`), sorted. Checks everything before changing anything: on error the model is
    /// unchanged.
    pub fn load_state_dict(&self, tensors: &HashMap<String, Tensor>) -> Result<Vec<String>> {
        let mut staged = Vec::with_capacity(self.entries.len());
        for (name, slot) in &self.entries {
            let t = tensors
                .get(name)
                .ok_or_else(|| Error::MissingEntry(name.clone()))?;
            let (expected, device, dtype) = match slot {
                Slot::Parameter(v) | Slot::Frozen(v) => {
                    (v.dims().to_vec(), v.device().clone(), v.dtype())
                }
                Slot::RunningMean(st) => {
                    let st = lock(st);
                    (
                        st.mean.dims().to_vec(),
                        st.mean.device().clone(),
                        st.mean.dtype(),
                    )
                }
                Slot::RunningVar(st) => {
                    let st = lock(st);
                    (
                        st.var.dims().to_vec(),
                        st.var.device().clone(),
                        st.var.dtype(),
                    )
                }
                Slot::NumBatchesTracked(_) => (vec![], Device::Cpu, DType::I64),
            };
            if t.dims() != expected.as_slice() {
                return Err(Error::ShapeMismatch {
                    name: name.clone(),
                    expected,
                    got: t.dims().to_vec(),
                });
            }
            staged.push(t.to_device(&device)?.to_dtype(dtype)?);
        }
        for ((_, slot), t) in self.entries.iter().zip(staged) {
            match slot {
                Slot::Parameter(v) | Slot::Frozen(v) => v.set(&t)?,
                Slot::RunningMean(st) => lock(st).mean = t,
                Slot::RunningVar(st) => lock(st).var = t,
                Slot::NumBatchesTracked(st) => {
                    lock(st).num_batches_tracked = t.to_scalar::<i64>()?
                }
            }
        }
        let known: HashSet<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
        let mut unused: Vec<String> = tensors
            .keys()
            .filter(|k| !known.contains(k.as_str()))
            .cloned()
            .collect();
        unused.sort();
        Ok(unused)
    }

    /// Writes the state dict as safetensors (atomically, [`mocca_core::fs::write_atomic_with`]), with
    /// `num_batches_tracked` as I64 so that `torch` / `torchvision` load it unchanged.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let tensors: HashMap<String, Tensor> = self.state_dict()?.into_iter().collect();
        let write = |tmp: &Path| {
            candle_core::safetensors::save(&tensors, tmp).map_err(|e| match e {
                candle_core::Error::Io(source) => Error::Io {
                    path: tmp.to_path_buf(),
                    source,
                },
                other => Error::WeightsFile {
                    path: path.to_path_buf(),
                    message: other.to_string(),
                },
            })
        };
        mocca_core::fs::write_atomic_with(path, write).map_err(|e| match e {
            WriteError::Write(e) => e,
            WriteError::Io(source) => Error::Io {
                path: path.to_path_buf(),
                source,
            },
        })
    }

    /// Loads a safetensors state dict (ours or a converted torchvision checkpoint); returns the
    /// file's names the model does not have, as [`ModelState::load_state_dict`].
    pub fn load_safetensors(&self, path: impl AsRef<Path>) -> Result<Vec<String>> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
            Error::WeightsFile {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?;
        self.load_state_dict(&tensors)
    }
}

fn slot_tensor(slot: &Slot) -> Result<Tensor> {
    Ok(match slot {
        Slot::Parameter(v) | Slot::Frozen(v) => v.as_detached_tensor(),
        Slot::RunningMean(st) => lock(st).mean.clone(),
        Slot::RunningVar(st) => lock(st).var.clone(),
        Slot::NumBatchesTracked(st) => {
            let st = lock(st);
            Tensor::new(st.num_batches_tracked, st.mean.device())?
        }
    })
}

/// Access to a model's parameters and buffers under PyTorch's names.
///
/// Implemented by [`crate::ResNet`] and [`crate::ProjectionHead`]; the names are relative to the
/// model (torchvision's `conv1.weight`, lightly's `layers.0.weight`), whatever prefix the
/// `VarBuilder` had.
pub trait StateDict {
    /// The model's registry of entries.
    fn model_state(&self) -> &ModelState;

    /// Trainable parameters in state-dict order (for optimizers and the momentum-encoder EMA).
    fn named_parameters(&self) -> Vec<(String, Var)> {
        self.model_state().named_parameters()
    }

    /// BatchNorm buffers in state-dict order (snapshots).
    fn named_buffers(&self) -> Result<Vec<(String, Tensor)>> {
        self.model_state().named_buffers()
    }

    /// Every entry in state-dict order.
    fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        self.model_state().state_dict()
    }

    /// See [`ModelState::load_state_dict`].
    fn load_state_dict(&self, tensors: &HashMap<String, Tensor>) -> Result<Vec<String>> {
        self.model_state().load_state_dict(tensors)
    }

    /// See [`ModelState::save_safetensors`].
    fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        self.model_state().save_safetensors(path)
    }

    /// See [`ModelState::load_safetensors`].
    fn load_safetensors(&self, path: impl AsRef<Path>) -> Result<Vec<String>> {
        self.model_state().load_safetensors(path)
    }
}
