use std::path::Path;

use candle_core::{Device, Tensor};

use crate::state::{self, StateDict};
use crate::{rows, QueueError};
use mocca_core::SplitMix64;

/// Configuration of [`MemoryBank`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryBankConfig {
    /// Rows: one per training sample.
    pub num_samples: usize,
    /// Embedding width D.
    pub dim: usize,
    /// Momentum m of the row update `v ← m·v + (1−m)·ẑ` (0.5 in InstDisc and MoCo's comparison).
    pub momentum: f64,
    /// Seed of the initial rows and of the negative draws.
    pub seed: u64,
    /// How the rows start.
    pub init: BankInit,
}

/// The initial rows of a [`MemoryBank`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BankInit {
    /// Random unit vectors (normalised Gaussian rows, as MoCo's queue starts).
    #[default]
    UnitGaussian,
    /// lemniscate's InstDisc: every entry uniform in `±1/√(D/3)`, rows not
    /// normalised until first updated (their expected squared norm is 1).
    Uniform,
}

impl Default for MemoryBankConfig {
    fn default() -> Self {
        Self {
            num_samples: 50_000,
            dim: 128,
            momentum: 0.5,
            seed: 0,
            init: BankInit::UnitGaussian,
        }
    }
}

/// A memory bank of per-sample representations (Wu et al., "Unsupervised
/// Feature Learning via Non-Parametric Instance Discrimination", 2018), the
/// MoCo paper's mechanism (b): `[num_samples, D]` unit rows on the model's
/// device, each updated by index with a momentum and re-normalised, and K
/// negatives drawn per step from a seeded generator.
///
/// Rows start as random unit vectors. Negatives are drawn uniformly with
/// replacement (InstDisc's uniform noise distribution) and may include the
/// batch's own samples, as in InstDisc: K of them for each query
/// ([`sample_negative_indices`](Self::sample_negative_indices), what
/// lemniscate's `NCEAverage` draws), or one set of K for the whole batch
/// ([`sample_negatives`](Self::sample_negatives), cheaper).
#[derive(Debug)]
pub struct MemoryBank {
    bank: Tensor,
    momentum: f64,
    step: u64,
    rng: SplitMix64,
}

impl MemoryBank {
    pub fn new(config: MemoryBankConfig, device: &Device) -> Result<Self, QueueError> {
        if config.num_samples == 0 {
            return Err(QueueError::ZeroSize {
                what: "memory bank rows (num_samples)",
            });
        }
        if config.dim == 0 {
            return Err(QueueError::ZeroSize {
                what: "embedding width D",
            });
        }
        check_momentum(config.momentum)?;
        let mut rng = SplitMix64::new(config.seed);
        let init = match config.init {
            BankInit::UnitGaussian => {
                crate::rng::unit_rows(&mut rng, config.num_samples, config.dim)
            }
            BankInit::Uniform => crate::rng::uniform_rows(&mut rng, config.num_samples, config.dim),
        };
        let bank = Tensor::from_vec(init, (config.num_samples, config.dim), device)?;
        Ok(Self {
            bank,
            momentum: config.momentum,
            step: 0,
            rng,
        })
    }

    /// The whole bank, `[num_samples, D]` (no copy).
    pub fn bank(&self) -> &Tensor {
        &self.bank
    }

    pub fn num_samples(&self) -> usize {
        self.bank.dims()[0]
    }

    pub fn dim(&self) -> usize {
        self.bank.dims()[1]
    }

    pub fn momentum(&self) -> f64 {
        self.momentum
    }

    /// Number of [`update`](Self::update) calls so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Replaces every row with `rows` (`[num_samples, D]`, used as given, not
    /// normalised): to start from another implementation's bank, e.g. a
    /// reference run's initial memory. The step count and the generator are kept.
    pub fn replace_rows(&mut self, rows: &Tensor) -> Result<(), QueueError> {
        let want = [self.num_samples(), self.dim()];
        if rows.dims() != want {
            return Err(QueueError::InvalidState(format!(
                "replace_rows: the bank holds {want:?} rows, got {:?}",
                rows.dims()
            )));
        }
        let rows = rows
            .to_dtype(candle_core::DType::F32)?
            .to_device(self.bank.device())?;
        self.bank = crate::rows::owned(&rows)?;
        Ok(())
    }

    /// Copies of the rows `indices` (e.g. the batch's own memories, the
    /// positives in InstDisc), `[indices.len(), D]`.
    pub fn rows(&self, indices: &[usize]) -> Result<Tensor, QueueError> {
        let idx = self.index_tensor(indices)?;
        Ok(self.bank.index_select(&idx, 0)?)
    }

    /// Draws `k` sample indices uniformly with replacement and advances the
    /// generator.
    pub fn sample_indices(&mut self, k: usize) -> Vec<usize> {
        let n = self.num_samples() as u64;
        (0..k).map(|_| self.rng.below(n) as usize).collect()
    }

    /// `k` rows for each of `n` queries, drawn uniformly with replacement, as a
    /// `[n, k]` u32 tensor on the bank's device (row-major: query 0's draws
    /// first), for `InfoNCELoss::forward_indexed` of `mocca-losses`.
    pub fn sample_negative_indices(&mut self, n: usize, k: usize) -> Result<Tensor, QueueError> {
        if k == 0 {
            return Err(QueueError::ZeroSize {
                what: "number of negatives K",
            });
        }
        let rows = self.num_samples() as u64;
        let idx: Vec<u32> = (0..n * k).map(|_| self.rng.below(rows) as u32).collect();
        Ok(Tensor::from_vec(idx, (n, k), self.bank.device())?)
    }

    /// The step's `k` negatives: rows drawn by [`sample_indices`](Self::sample_indices),
    /// `[k, D]` (a gather, since the rows differ every step).
    pub fn sample_negatives(&mut self, k: usize) -> Result<Tensor, QueueError> {
        if k == 0 {
            return Err(QueueError::ZeroSize {
                what: "number of negatives K",
            });
        }
        let indices = self.sample_indices(k);
        self.rows(&indices)
    }

    /// Updates the rows `indices` with the batch's embeddings `z` (`[N, D]`,
    /// row r for sample `indices[r]`): `v ← m·v + (1−m)·ẑ`, then `v ← v/‖v‖`,
    /// where `ẑ` is `z` L2-normalised (InstDisc blends normalised features).
    /// Indices must be distinct and in range.
    pub fn update(&mut self, indices: &[usize], z: &Tensor) -> Result<(), QueueError> {
        let z = rows::unit_rows("z", z, self.dim(), self.bank.device())?;
        let n = z.dim(0)?;
        if indices.len() != n {
            return Err(QueueError::IndexCountMismatch {
                name: "z",
                indices: indices.len(),
                rows: n,
            });
        }
        let mut sorted = indices.to_vec();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(QueueError::DuplicateIndex { index: w[0] });
        }
        let idx = self.index_tensor(indices)?;
        let old = self.bank.index_select(&idx, 0)?;
        let blended = ((old * self.momentum)? + (z * (1.0 - self.momentum))?)?;
        let norm = blended.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
        let updated = blended.broadcast_div(&norm)?.contiguous()?;
        let scatter_idx = idx
            .unsqueeze(1)?
            .broadcast_as((n, self.dim()))?
            .contiguous()?;
        self.bank.scatter_set(&scatter_idx, &updated, 0)?;
        self.step += 1;
        Ok(())
    }

    fn index_tensor(&self, indices: &[usize]) -> Result<Tensor, QueueError> {
        let len = self.num_samples();
        if let Some(&index) = indices.iter().find(|&&i| i >= len) {
            return Err(QueueError::IndexOutOfRange { index, len });
        }
        let idx: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
        Ok(Tensor::from_vec(idx, indices.len(), self.bank.device())?)
    }

    /// The whole state as named tensors (`memory_bank.bank`,
    /// `memory_bank.momentum`, `memory_bank.step`, `memory_bank.rng_state`).
    /// The bank entry is a copy.
    pub fn state_dict(&self) -> Result<StateDict, QueueError> {
        Ok(StateDict::from([
            ("memory_bank.bank".to_string(), self.bank.copy()?),
            (
                "memory_bank.momentum".to_string(),
                state::f64_tensor(self.momentum)?,
            ),
            (
                "memory_bank.step".to_string(),
                state::u64_tensor(self.step)?,
            ),
            (
                "memory_bank.rng_state".to_string(),
                state::u64_tensor(self.rng.state())?,
            ),
        ]))
    }

    /// Rebuilds a bank from [`state_dict`](Self::state_dict)'s tensors, on `device`.
    pub fn from_state_dict(state: &StateDict, device: &Device) -> Result<Self, QueueError> {
        let (bank, _, _) = state::read_matrix(state, "memory_bank.bank")?;
        let momentum = state::read_f64(state, "memory_bank.momentum")?;
        check_momentum(momentum).map_err(|e| QueueError::InvalidState(e.to_string()))?;
        Ok(Self {
            bank: rows::owned(&bank.to_device(device)?)?,
            momentum,
            step: state::read_u64(state, "memory_bank.step")?,
            rng: SplitMix64::new(state::read_u64(state, "memory_bank.rng_state")?),
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

pub(crate) fn check_momentum(m: f64) -> Result<(), QueueError> {
    crate::rules::momentum(m).map_err(|_| QueueError::InvalidMomentum(m))
}
