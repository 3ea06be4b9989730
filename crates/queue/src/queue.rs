use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::state::{self, StateDict};
use crate::{rows, QueueError};
use mocca_core::SplitMix64;

/// What happens when an enqueue runs past the end of the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueMode {
    /// A true ring buffer: every key is stored, row `(ptr + r) mod K`, and
    /// `ptr = (ptr + N) mod K`. With K a multiple of N (MoCo asserts this)
    /// it is exactly MoCo's queue; otherwise no key is ever dropped.
    #[default]
    Ring,
    /// lightly's `MemoryBankModule`: when `ptr + N >= K` only the `K − ptr`
    /// keys that fit before the end are written, the rest of the batch is
    /// dropped, and `ptr = 0`. Offered to reproduce lightly's runs exactly.
    DropRemainder,
}

/// Configuration of [`MomentumQueue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MomentumQueueConfig {
    /// Number of keys K (65536 in MoCo).
    pub size: usize,
    /// Key width D (128 in MoCo).
    pub dim: usize,
    /// Seed of the random unit vectors the queue starts with.
    pub seed: u64,
    pub mode: QueueMode,
}

impl Default for MomentumQueueConfig {
    fn default() -> Self {
        Self {
            size: 65536,
            dim: 128,
            seed: 0,
            mode: QueueMode::Ring,
        }
    }
}

/// MoCo's dictionary as a queue (He et al., "Momentum Contrast for
/// Unsupervised Visual Representation Learning", 2020): the last K keys of
/// the momentum encoder, a `[K, D]` f32 ring buffer of unit rows on the
/// model's device, plus the write pointer.
///
/// [`negatives`](Self::negatives) hands out the buffer itself (no copy), and
/// [`enqueue`](Self::enqueue) overwrites N of its rows in place. The
/// negatives tensor a loss holds is therefore a live view:
///
/// **Ordering contract: enqueue after the backward pass.** MoCo's own code
/// (`main_moco.py`, the CIFAR-10 colab) updates the key encoder first, then
/// computes the keys and the loss and enqueues the keys inside the forward,
/// before the backward; that is safe there because its logits hold a copy of
/// the queue (`self.queue.clone().detach()`). Here the loss reads the queue
/// without a copy, so a loss whose backward reads the negatives (the composed
/// candle-op path, which CUDA uses) would see the new keys if they were
/// enqueued first: enqueue once the backward has run. `mocca-losses`' fused
/// CPU path computes its gradients in the forward and never reads the
/// negatives again, so on the CPU the order does not change the result.
#[derive(Debug)]
pub struct MomentumQueue {
    buffer: Tensor,
    ptr: usize,
    step: u64,
    mode: QueueMode,
    rng: SplitMix64,
}

impl MomentumQueue {
    /// A queue of random unit vectors drawn from `config.seed`.
    pub fn new(config: MomentumQueueConfig, device: &Device) -> Result<Self, QueueError> {
        if crate::rules::size(config.size).is_err() {
            return Err(QueueError::ZeroSize {
                what: "queue size K",
            });
        }
        if config.dim == 0 {
            return Err(QueueError::ZeroSize {
                what: "key width D",
            });
        }
        let mut rng = SplitMix64::new(config.seed);
        let init = crate::rng::unit_rows(&mut rng, config.size, config.dim);
        let buffer = Tensor::from_vec(init, (config.size, config.dim), device)?;
        Ok(Self {
            buffer,
            ptr: 0,
            step: 0,
            mode: config.mode,
            rng,
        })
    }

    /// A queue starting from the given keys (`[K, D]`, used as given: pass
    /// unit rows), e.g. a queue exported from PyTorch. Pointer and step at 0.
    pub fn from_buffer(buffer: &Tensor, mode: QueueMode) -> Result<Self, QueueError> {
        let &[size, dim] = buffer.dims() else {
            return Err(QueueError::NotAMatrix {
                name: "buffer",
                shape: buffer.dims().to_vec(),
            });
        };
        if size == 0 || dim == 0 {
            return Err(QueueError::ZeroSize {
                what: "queue size K and key width D",
            });
        }
        if !buffer.dtype().is_float() {
            return Err(QueueError::UnsupportedDType {
                name: "buffer",
                dtype: buffer.dtype(),
            });
        }
        // A fresh allocation: the queue must own its buffer, as it writes in place.
        let buffer = rows::owned(&buffer.detach().to_dtype(DType::F32)?)?;
        Ok(Self {
            buffer,
            ptr: 0,
            step: 0,
            mode,
            rng: SplitMix64::new(0),
        })
    }

    /// The negatives: the whole `[K, D]` buffer, without a copy. See the
    /// ordering contract above.
    pub fn negatives(&self) -> &Tensor {
        &self.buffer
    }

    /// Stores the keys `[N, D]` (N ≤ K; any float dtype, detached and
    /// L2-normalised on the way in) at the pointer and advances it, wrapping
    /// as [`QueueMode`] says. Writes N rows in place: no copy of the buffer.
    pub fn enqueue(&mut self, keys: &Tensor) -> Result<(), QueueError> {
        let (size, dim) = (self.size(), self.dim());
        if let &[n, _] = keys.dims() {
            if n > size {
                return Err(QueueError::BatchLargerThanQueue { batch: n, size });
            }
        }
        let keys = rows::unit_rows("keys", keys, dim, self.buffer.device())?;
        let n = keys.dim(0)?;
        let first = n.min(size - self.ptr);
        self.buffer
            .slice_set(&keys.narrow(0, 0, first)?, 0, self.ptr)?;
        match self.mode {
            QueueMode::Ring => {
                if first < n {
                    self.buffer
                        .slice_set(&keys.narrow(0, first, n - first)?, 0, 0)?;
                }
                self.ptr = (self.ptr + n) % size;
            }
            QueueMode::DropRemainder => {
                self.ptr = if self.ptr + n >= size {
                    0
                } else {
                    self.ptr + n
                };
            }
        }
        self.step += 1;
        Ok(())
    }

    /// Row the next enqueue writes first.
    pub fn ptr(&self) -> usize {
        self.ptr
    }

    /// Number of enqueues so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// K, the number of keys held.
    pub fn size(&self) -> usize {
        self.buffer.dims()[0]
    }

    /// D, the key width.
    pub fn dim(&self) -> usize {
        self.buffer.dims()[1]
    }

    pub fn mode(&self) -> QueueMode {
        self.mode
    }

    /// The whole state as named tensors (`queue.buffer`, `queue.ptr`,
    /// `queue.step`, `queue.rng_state`, `queue.mode`), e.g. to put into a
    /// larger checkpoint. The buffer entry is a copy.
    pub fn state_dict(&self) -> Result<StateDict, QueueError> {
        let mode = match self.mode {
            QueueMode::Ring => 0u8,
            QueueMode::DropRemainder => 1u8,
        };
        Ok(StateDict::from([
            ("queue.buffer".to_string(), self.buffer.copy()?),
            ("queue.ptr".to_string(), state::u64_tensor(self.ptr as u64)?),
            ("queue.step".to_string(), state::u64_tensor(self.step)?),
            (
                "queue.rng_state".to_string(),
                state::u64_tensor(self.rng.state())?,
            ),
            ("queue.mode".to_string(), Tensor::new(mode, &Device::Cpu)?),
        ]))
    }

    /// Rebuilds a queue from [`state_dict`](Self::state_dict)'s tensors, on `device`.
    pub fn from_state_dict(state: &StateDict, device: &Device) -> Result<Self, QueueError> {
        let (buffer, size, _) = state::read_matrix(state, "queue.buffer")?;
        let ptr = state::read_u64(state, "queue.ptr")?;
        if ptr >= size as u64 {
            return Err(QueueError::InvalidState(format!(
                "queue.ptr = {ptr} is past the end of a queue of {size}"
            )));
        }
        let mode_t = state::get(state, "queue.mode")?;
        let mode = match (
            mode_t.dtype(),
            mode_t.flatten_all()?.to_vec1::<u8>().ok().as_deref(),
        ) {
            (DType::U8, Some([0])) => QueueMode::Ring,
            (DType::U8, Some([1])) => QueueMode::DropRemainder,
            _ => {
                return Err(QueueError::InvalidState(
                    "queue.mode must be one u8, 0 (ring) or 1 (drop remainder)".into(),
                ))
            }
        };
        Ok(Self {
            buffer: rows::owned(&buffer.to_device(device)?)?,
            ptr: ptr as usize,
            step: state::read_u64(state, "queue.step")?,
            mode,
            rng: SplitMix64::new(state::read_u64(state, "queue.rng_state")?),
        })
    }

    /// Saves the whole state to a safetensors file (atomically).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), QueueError> {
        state::save(&self.state_dict()?, path.as_ref())
    }

    /// Loads a state written by [`save`](Self::save) onto `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self, QueueError> {
        Self::from_state_dict(&state::load(path.as_ref(), device)?, device)
    }
}
