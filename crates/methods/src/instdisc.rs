//! InstDisc (Wu et al. 2018, "Unsupervised Feature Learning via
//! Non-Parametric Instance Discrimination"): one encoder, one augmented view
//! per image, and a memory bank with one row per training image that serves
//! as that image's class weight. This is the MoCo paper's mechanism (b) as
//! its authors' code trains it (zhirongw/lemniscate.pytorch, `cifar.py`).
//!
//! # One step (lemniscate's `cifar.py` loop)
//!
//! 1. `f = normalize(fc(backbone(x)))` in training mode (the encoder's head is
//!    lemniscate's `linear` to `low_dim`, its `Normalize` is the loss's).
//! 2. The loss against the bank ([`InstDiscObjective`]): the full
//!    non-parametric softmax over all rows (`LinearAverage`, `--nce-k 0`, what
//!    lemniscate's README runs on CIFAR) or NCE against `K` uniformly drawn
//!    rows with the normaliser `Z` fixed on the first step (`NCEAverage` +
//!    `NCECriterion`); see `mocca-losses`' [`NonParametricSoftmaxLoss`] and [`NCELoss`].
//! 3. Backward (the gradient uses the rows from before this step's update),
//!    SGD update of the encoder.
//! 4. The bank rows of the batch: `v ← normalize(m·v + (1−m)·f)` (lemniscate
//!    does this inside its backward; the result is the same).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mocca_backbones::{MoCoProjectionHead, ResNetConfig, Stem};
//! use mocca_methods::{InstDisc, InstDiscConfig, InstDiscObjective, Method, BackboneEncoder};
//!
//! let dev = Device::Cpu;
//! let backbone = ResNetConfig { stem: Stem::Cifar, width: 0.0625, ..ResNetConfig::resnet18() };
//! // lemniscate's `linear` to 128 dimensions is MoCo v1's one-layer head.
//! let encoder = BackboneEncoder::new(&backbone, MoCoProjectionHead::v1(backbone.feature_dim()).into(), 0, &dev)?;
//! let mut config = InstDiscConfig::cifar10_lemniscate(16, 4, 1); // a bank of 16 images
//! config.objective = InstDiscObjective::Nce { noise_samples: 8 };
//! let mut instdisc = InstDisc::new(config, encoder, &dev)?;
//!
//! let view = Tensor::rand(0f32, 1., (4, 3, 16, 16), &dev)?; // one view of images 0..4
//! let stats = instdisc.step(&[view], &[0, 1, 2, 3])?;
//! assert_eq!((stats.step, stats.lr), (1, 0.03));
//! assert!(instdisc.normaliser().is_some()); // Z, fixed from this first batch
//! # Ok::<(), mocca_methods::MethodError>(())
//! ```
//!
//! [`NonParametricSoftmaxLoss`]: mocca_losses::NonParametricSoftmaxLoss
//! [`NCELoss`]: mocca_losses::NCELoss

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use mocca_losses::{NCELoss, NonParametricSoftmaxLoss};
use mocca_queue::{BankInit, MemoryBank, MemoryBankConfig};

use crate::checkpoint::{self, u64_tensor};
use crate::collapse::StepEmbeddings;
use crate::encoder::Encoder;
use crate::error::{config_err, input_err, MethodError, Result};
use crate::eval::{EncoderRole, FeatureLayer, FeatureSource};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::schedule::LrSchedule;
use crate::step::{check_views, finite_loss, loss_result};
use crate::{Method, StepStats};

/// InstDisc's objective over the memory bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstDiscObjective {
    /// The full softmax over every row (lemniscate's `LinearAverage`, `--nce-k 0`).
    Softmax,
    /// NCE with `noise_samples` rows drawn uniformly with replacement per
    /// sample (lemniscate's `NCEAverage`, `--nce-k K`, 4096 by default), the
    /// normaliser `Z` fixed from the first batch.
    Nce { noise_samples: usize },
}

/// InstDisc's hyper-parameters. The encoder (ResNet with a linear head to
/// `low_dim`, 128 in lemniscate) and the augmentations are built elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub struct InstDiscConfig {
    /// Rows of the memory bank: the number of training images.
    pub num_samples: usize,
    /// τ of `exp(f·v/τ)` (lemniscate `--nce-t`: 0.1 in its CIFAR command, 0.07 for ImageNet).
    pub temperature: f64,
    /// Momentum of the bank rows (lemniscate `--nce-m`, 0.5).
    pub memory_momentum: f64,
    pub objective: InstDiscObjective,
    /// The bank's initial rows (lemniscate: uniform, [`BankInit::Uniform`]).
    pub bank_init: BankInit,
    pub optimizer: OptimizerConfig,
    pub lr_schedule: LrSchedule,
    /// Seed of the bank's initial rows and of the NCE noise draws.
    pub seed: u64,
}

impl InstDiscConfig {
    /// lemniscate's `cifar.py` with its README's CIFAR command
    /// (`python cifar.py --nce-k 0 --nce-t 0.1 --lr 0.03`): full softmax,
    /// τ = 0.1, m = 0.5, SGD lr 0.03 (batch 128, not scaled), momentum 0.9,
    /// weight decay 5e-4 on every parameter, `adjust_learning_rate`'s
    /// `lr·0.1^⌊(epoch − 80)/40⌋` from epoch 80 on, i.e. ×0.1 at epochs 120,
    /// 160, 200, … (set per epoch, epochs counted from 0), and lemniscate's
    /// uniform bank initialisation.
    pub fn cifar10_lemniscate(num_samples: usize, steps_per_epoch: u64, epochs: u64) -> Self {
        let lr = 0.03;
        Self {
            num_samples,
            temperature: 0.1,
            memory_momentum: 0.5,
            objective: InstDiscObjective::Softmax,
            bank_init: BankInit::Uniform,
            optimizer: OptimizerConfig::sgd(lr, 0.9, 5e-4),
            lr_schedule: LrSchedule::per_epoch(lemniscate_steps(lr, epochs), steps_per_epoch, 0),
            seed: 0,
        }
    }

    fn validate(&self) -> Result<()> {
        let field = |name: &str, rule: std::result::Result<(), mocca_core::check::Invalid>| {
            rule.map_err(|e| config_err(format!("{name} {e}")))
        };
        self.lr_schedule.validate()?;
        field(
            "memory-bank rows",
            mocca_queue::rules::size(self.num_samples),
        )?;
        field(
            "memory-bank momentum",
            mocca_queue::rules::momentum(self.memory_momentum),
        )?;
        if let InstDiscObjective::Nce { noise_samples } = self.objective {
            field("NCE noise samples", mocca_queue::rules::size(noise_samples))?;
        }
        Ok(())
    }
}

/// lemniscate's `adjust_learning_rate` over `epochs`: ×0.1 at 120, 160, 200, …
fn lemniscate_steps(lr: f64, epochs: u64) -> LrSchedule {
    LrSchedule::MultiStep {
        base_lr: lr,
        milestones: (120..epochs.max(120)).step_by(40).collect(),
        gamma: 0.1,
    }
}

enum Loss {
    Softmax(NonParametricSoftmaxLoss),
    Nce(NCELoss, usize),
}

/// InstDisc over an encoder of type `E`.
pub struct InstDisc<E: Encoder> {
    encoder: E,
    bank: MemoryBank,
    loss: Loss,
    /// NCE's normaliser, set on the first step.
    z: Option<f64>,
    optimizer: Optimizer,
    config: InstDiscConfig,
    step: u64,
    device: Device,
    /// The last step's features and their bank rows (before the update), detached, for
    /// [`Method::last_embeddings`].
    last_embeddings: Option<StepEmbeddings>,
}

impl<E: Encoder> InstDisc<E> {
    /// Wraps `encoder` (weights as built) with a bank of `config.num_samples`
    /// rows of the encoder's output width.
    pub fn new(config: InstDiscConfig, encoder: E, device: &Device) -> Result<Self> {
        config.validate()?;
        let bank = MemoryBank::new(
            MemoryBankConfig {
                num_samples: config.num_samples,
                dim: encoder.output_dim(),
                momentum: config.memory_momentum,
                seed: config.seed,
                init: config.bank_init,
            },
            device,
        )?;
        let loss = match config.objective {
            InstDiscObjective::Softmax => {
                Loss::Softmax(NonParametricSoftmaxLoss::new(config.temperature)?)
            }
            InstDiscObjective::Nce { noise_samples } => {
                Loss::Nce(NCELoss::new(config.temperature)?, noise_samples)
            }
        };
        let optimizer = Optimizer::new(encoder.named_parameters(), config.optimizer.clone())?;
        Ok(Self {
            encoder,
            bank,
            loss,
            z: None,
            optimizer,
            config,
            step: 0,
            device: device.clone(),
            last_embeddings: None,
        })
    }

    pub fn config(&self) -> &InstDiscConfig {
        &self.config
    }

    /// The one encoder ([`EncoderRole::Shared`]).
    pub fn shared_encoder(&self) -> &E {
        &self.encoder
    }

    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// The memory bank, `[num_samples, D]`.
    pub fn memory(&self) -> &Tensor {
        self.bank.bank()
    }

    /// NCE's normaliser `Z` once the first step has set it.
    pub fn normaliser(&self) -> Option<f64> {
        self.z
    }

    /// Replaces the bank's rows (`[num_samples, D]`, used as given), e.g. with
    /// a reference run's initial memory.
    pub fn replace_memory(&mut self, rows: &Tensor) -> Result<()> {
        Ok(self.bank.replace_rows(rows)?)
    }

    /// [`Method::step`] with the NCE rows given instead of drawn:
    /// `rows[b] = [indices[b], n_1, …, n_K]`, as lemniscate's `idx` (column 0
    /// the sample's own row). NCE only.
    pub fn step_with_noise(
        &mut self,
        views: &[Tensor],
        indices: &[usize],
        rows: &[Vec<usize>],
    ) -> Result<StepStats> {
        let Loss::Nce(_, k) = self.loss else {
            return Err(input_err(
                "noise rows apply to the NCE objective only; the softmax uses every row",
            ));
        };
        let ok = rows.len() == indices.len()
            && rows
                .iter()
                .zip(indices)
                .all(|(r, &y)| r.len() == k + 1 && r[0] == y);
        if !ok {
            return Err(input_err(format!(
                "noise rows: one row of K + 1 = {} bank indices per sample, the sample's own index first",
                k + 1
            )));
        }
        let flat: Vec<u32> = rows.iter().flatten().map(|&i| i as u32).collect();
        let idx = Tensor::from_vec(flat, (rows.len(), k + 1), &self.device)?;
        self.step_inner(views, indices, Some(idx))
    }

    fn step_inner(
        &mut self,
        views: &[Tensor],
        indices: &[usize],
        given: Option<Tensor>,
    ) -> Result<StepStats> {
        let n = check_views(views, 1).map_err(|_| {
            input_err(format!(
                "InstDisc trains on one augmented view per image, got {} view(s)",
                views.len()
            ))
        })?;
        check_indices(indices, n, self.bank.num_samples())?;
        let step = self.step;
        let lr = self.config.lr_schedule.lr_at(step);
        let noise = match (&self.loss, given) {
            (Loss::Nce(_, k), None) => Some(self.noise_rows(indices, *k)?),
            (_, given) => given,
        };
        let f = self.encoder.forward(&views[0], true)?;
        self.last_embeddings = Some(StepEmbeddings {
            view0: f.detach(),
            view1: Some(self.bank.rows(indices)?),
        });
        let (out, z) = match &self.loss {
            Loss::Softmax(loss) => (
                loss_result(loss.forward(&f, self.bank.bank(), indices), step)?,
                None,
            ),
            Loss::Nce(loss, _) => {
                let idx = noise.expect("NCE rows were drawn or given above");
                let z = match self.z {
                    Some(z) => z,
                    None => loss_result(loss.normaliser(&f, self.bank.bank(), &idx), step)?,
                };
                (
                    loss_result(loss.forward(&f, self.bank.bank(), &idx, z), step)?,
                    Some(z),
                )
            }
        };
        let loss = finite_loss(&out.loss, step)?;
        let accuracy = out.accuracy.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let grads = out.loss.backward()?;
        self.optimizer.set_lr(lr);
        self.optimizer.step(&grads)?;
        drop(grads);
        self.bank.update(indices, &f.detach())?;
        if z.is_some() {
            self.z = z;
        }
        self.step += 1;
        Ok(StepStats {
            step: self.step,
            loss,
            accuracy,
            lr,
            momentum: None,
            batch_size: n,
        })
    }

    /// `[B, K + 1]`: each sample's own row, then `K` rows drawn uniformly with
    /// replacement from the bank's generator.
    fn noise_rows(&mut self, indices: &[usize], k: usize) -> Result<Tensor> {
        let drawn = self.bank.sample_negative_indices(indices.len(), k)?;
        let own: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
        let own = Tensor::from_vec(own, (indices.len(), 1), &self.device)?;
        Ok(Tensor::cat(&[&own, &drawn], 1)?)
    }

    fn restore(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let step = checkpoint::get_u64(state, "step")?;
        let bank =
            MemoryBank::from_state_dict(&checkpoint::sub_state(state, "memory"), &self.device)?;
        let want = (self.config.num_samples, self.encoder.output_dim());
        if (bank.num_samples(), bank.dim()) != want
            || bank.momentum() != self.config.memory_momentum
        {
            return Err(MethodError::StateMismatch(format!(
                "the checkpoint's memory bank (rows, width, momentum) is ({}, {}, {}), the configuration's ({}, {}, {})",
                bank.num_samples(),
                bank.dim(),
                bank.momentum(),
                want.0,
                want.1,
                self.config.memory_momentum
            )));
        }
        let z = match state.get("nce_z") {
            Some(t) => Some(t.to_dtype(DType::F64)?.to_scalar::<f64>()?),
            None => None,
        };
        self.encoder
            .load_state_dict(&checkpoint::sub_state(state, "encoder"))?;
        self.optimizer
            .load_state_tensors(&checkpoint::sub_state(state, "optimizer"))?;
        self.bank = bank;
        self.z = z;
        self.step = step;
        Ok(())
    }
}

/// One distinct in-range bank index per sample.
fn check_indices(indices: &[usize], n: usize, rows: usize) -> Result<()> {
    if indices.len() != n {
        return Err(input_err(format!(
            "the memory bank needs the dataset index of each of the {n} samples, got {}",
            indices.len()
        )));
    }
    if let Some(&bad) = indices.iter().find(|&&i| i >= rows) {
        return Err(input_err(format!(
            "sample index {bad} is out of range for a memory bank of {rows} rows"
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(n);
    if let Some(&dup) = indices.iter().find(|&&i| !seen.insert(i)) {
        return Err(input_err(format!(
            "sample index {dup} appears twice in one batch: the memory bank needs distinct samples"
        )));
    }
    Ok(())
}

impl<E: Encoder> Method for InstDisc<E> {
    fn name(&self) -> &'static str {
        "instdisc"
    }

    fn step(&mut self, views: &[Tensor], indices: &[usize]) -> Result<StepStats> {
        self.step_inner(views, indices, None)
    }

    fn steps_done(&self) -> u64 {
        self.step
    }

    /// The features of the step's one view, with their own bank rows (the positives, as they
    /// were before the step's update) as the second view.
    fn last_embeddings(&self) -> Option<StepEmbeddings> {
        self.last_embeddings.clone()
    }

    fn memory_bank(&self) -> Option<&Tensor> {
        Some(self.bank.bank())
    }

    fn encoder(&self, role: EncoderRole) -> Result<&dyn Encoder> {
        match role {
            EncoderRole::Shared => Ok(&self.encoder),
            other => Err(input_err(format!(
                "InstDisc has one encoder (EncoderRole::Shared), no {other}"
            ))),
        }
    }

    fn default_eval_source(&self) -> FeatureSource {
        FeatureSource::new(EncoderRole::Shared, FeatureLayer::Backbone)
    }

    fn state(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        checkpoint::put_prefixed(&mut out, "encoder", self.encoder.state_dict()?)?;
        checkpoint::put_prefixed(&mut out, "optimizer", self.optimizer.state_tensors()?)?;
        checkpoint::put_prefixed(&mut out, "memory", self.bank.state_dict()?)?;
        if let Some(z) = self.z {
            out.insert("nce_z".into(), Tensor::new(z, &Device::Cpu)?);
        }
        out.insert("step".into(), u64_tensor(self.step)?);
        Ok(out)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        checkpoint::load_all_or_nothing(self, state, Self::restore)
    }

    fn device(&self) -> &Device {
        &self.device
    }
}
