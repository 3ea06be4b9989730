//! MoCo (He et al. 2020, "Momentum Contrast for Unsupervised Visual
//! Representation Learning"; Chen et al. 2020, "Improved Baselines with
//! Momentum Contrastive Learning") with the paper's three sources of
//! negatives.
//!
//! # One step
//!
//! With views `x_q = views[0]`, `x_k = views[1]`:
//!
//! 1. `q = g_q(f_q(x_q))` in training mode.
//! 2. Keys, by [`NegativeSource`]:
//!    - `Queue`: `k = g_k(f_k(x_k))` from the key encoder in training mode,
//!      with shuffle-BN when enabled ([`batch_shuffle`] before the key
//!      encoder, [`batch_unshuffle`] after, so the split-BN groups of the key
//!      encoder see other samples than the query encoder's: the single-device
//!      form of MoCo's shuffle-BN, as in the MoCo CIFAR-10 colab); detached;
//!      negatives are the queue. The permutations come from the method's
//!      generator, or are given ([`MoCo::step_with_key_permutations`]).
//!    - `MemoryBank`: the positive is the bank's row of each sample (InstDisc),
//!      negatives are `num_negatives` rows drawn from the bank for each query
//!      (InstDisc's draw) or once for the batch ([`BankSampling`]), scored with
//!      MoCo's InfoNCE as the MoCo paper compares it. One view per image
//!      (`x_k`, if given, is not used) and no key encoder. InstDisc's own
//!      objectives (the full softmax, NCE) are [`crate::InstDisc`].
//!    - `EndToEnd`: `k = g_q(f_q(x_k))` from the query encoder with gradients
//!      (detached with [`MoCoConfig::end_to_end_detach_keys`], an ablation);
//!      negatives are the other keys of the batch.
//! 3. InfoNCE (or its symmetric form: both views as queries, the two terms
//!    summed as the MoCo colab does or averaged as lightly does, both views'
//!    keys enqueued) with `mocca-losses`. The symmetric form runs the passes
//!    in the colab's order: queries of view 0, keys of view 1, queries of
//!    view 1, keys of view 0 (BatchNorm running statistics depend on it).
//!    With a queue per view ([`MoCoConfig::per_view_queues`], solo-learn's
//!    MoCo V2+) each query is scored against the past keys of its positive's
//!    view, and the passes run in solo-learn's order (both query views, then
//!    both key views).
//! 4. A non-finite loss stops here with [`MethodError::NonFiniteLoss`]:
//!    parameters, optimizer state, queue / bank contents and the step counter
//!    are untouched. Not rolled back: the BatchNorm running statistics of
//!    this step's forward passes, the shuffle-BN generator and the bank's
//!    negative-sampling generator (a run that hits this stops or reloads its
//!    last checkpoint).
//! 5. Backward, optimizer update of the query encoder.
//! 6. Momentum update of the key encoder, `θ_k ← m·θ_k + (1−m)·θ_q`, over
//!    parameters only: BatchNorm running statistics of the key encoder are its
//!    own, from its forward passes, as in MoCo's code (`mocca-queue`'s EMA).
//! 7. Enqueue the keys / update the bank rows with the queries (after the
//!    backward pass: the loss may still read the negatives until then).
//!
//! MoCo's code applies the momentum update at the start of a step, before the
//! keys are computed; doing it at the end of the previous step, as here,
//! gives the same key encoder for every key computation (it uses the same
//! query weights), and keeps a failed step free of side effects. The key
//! encoder starts as a copy of the query encoder.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use mocca_losses::{InfoNCEConfig, InfoNCELoss, SymmetricReduction};
use mocca_queue::{
    MemoryBank, MemoryBankConfig, MomentumQueue, MomentumQueueConfig, MomentumUpdate, QueueMode,
};

use crate::checkpoint::{self, u64_tensor};
use crate::encoder::{copy_state, Encoder};
use mocca_core::check::Invalid;
use mocca_queue::rules;

use crate::error::{config_err, input_err, MethodError, Result};
use crate::eval::{l2_normalize, EncoderRole, FeatureLayer, FeatureSource};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::schedule::{LrSchedule, MomentumSchedule};
use crate::step::{check_views, finite_loss, loss_result};
use crate::{Method, StepStats};
use mocca_core::SplitMix64;

/// Where the negatives come from: the MoCo paper's Figure 2.
#[derive(Debug, Clone, PartialEq)]
pub enum NegativeSource {
    /// (c) MoCo: a FIFO queue of the last `size` keys of the momentum encoder.
    Queue {
        size: usize,
        /// Ring buffer (MoCo) or lightly's drop-the-remainder wrap.
        mode: QueueMode,
    },
    /// (b) Memory bank (Wu et al. 2018): one row per training sample, updated
    /// with momentum by sample index; `num_negatives` rows drawn per query or
    /// per step ([`BankSampling`]). Needs the dataset indices of each batch.
    MemoryBank {
        num_samples: usize,
        num_negatives: usize,
        /// Row-update momentum (0.5 in InstDisc and the MoCo paper).
        momentum: f64,
        sampling: BankSampling,
    },
    /// (a) End-to-end: keys from the query encoder, the batch's other keys as
    /// negatives, gradients through both.
    EndToEnd,
}

/// How the memory bank's negatives are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BankSampling {
    /// `num_negatives` rows for each query, as InstDisc (lemniscate's
    /// `NCEAverage` draws `batch × (K + 1)` indices).
    #[default]
    PerQuery,
    /// One set of `num_negatives` rows for the whole batch: one gather and a
    /// GEMM instead of a gather per query, and the batch's queries share
    /// their negatives.
    Shared,
}

impl NegativeSource {
    /// A ring-buffer queue of `size` keys.
    pub fn queue(size: usize) -> Self {
        Self::Queue {
            size,
            mode: QueueMode::Ring,
        }
    }
}

/// MoCo's hyper-parameters. Architecture choices (linear head for v1, MLP
/// head for v2, split-BN groups) belong to the encoder; augmentations to the
/// data pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct MoCoConfig {
    pub negatives: NegativeSource,
    /// InfoNCE temperature τ.
    pub temperature: f64,
    /// Symmetric loss (both views as queries) instead of MoCo's asymmetric one.
    pub symmetric: bool,
    /// Sum (the MoCo colab) or mean (lightly) of the symmetric loss's two terms.
    pub symmetric_reduction: SymmetricReduction,
    /// With the symmetric loss and a queue: a queue per view (solo-learn's MoCo V2+, whose
    /// `queue[v]` holds past keys of view `v`), each query contrasted with the queue of its
    /// positive's view, instead of one queue that both views' keys enter.
    pub per_view_queues: bool,
    /// Key-encoder momentum `m` (the start value `m0` with a cosine schedule).
    pub momentum: f64,
    /// Raise the momentum from `m0` to [`momentum_end`](Self::momentum_end) along a half
    /// cosine over `total_steps` (BYOL's schedule) instead of keeping it constant.
    pub cosine_momentum: bool,
    /// Where the cosine momentum schedule ends: 1 (BYOL), solo-learn's `final_tau` (0.999 in
    /// its MoCo V2+ recipes). Unused with a constant momentum.
    pub momentum_end: f64,
    /// End-to-end only: detach the keys, so that the gradient reaches the encoder through the
    /// queries alone (an ablation; the MoCo paper's end-to-end mechanism back-propagates
    /// through both).
    pub end_to_end_detach_keys: bool,
    /// Permute the key batch before the key encoder (shuffle-BN).
    pub shuffle_bn: bool,
    pub optimizer: OptimizerConfig,
    pub lr_schedule: LrSchedule,
    /// Length of the run in steps (for the momentum schedule).
    pub total_steps: u64,
    /// Seed of the queue / bank initialisation and of the shuffle-BN permutations.
    pub seed: u64,
}

impl MoCoConfig {
    /// MoCo v1 (ImageNet, `main_moco.py`): K = 65536, τ = 0.07, m = 0.999,
    /// SGD lr 0.03 × batch / 256, momentum 0.9, weight decay 1e-4, lr × 0.1
    /// from 60 % and 80 % of the epochs on (epochs 120 and 160 of 200), set per
    /// epoch, shuffle-BN.
    pub fn v1(batch_size: usize, steps_per_epoch: u64, epochs: u64) -> Self {
        let total = steps_per_epoch * epochs;
        let lr = 0.03 * batch_size as f64 / 256.0;
        let milestones = LrSchedule::MultiStep {
            base_lr: lr,
            milestones: vec![epochs * 3 / 5, epochs * 4 / 5],
            gamma: 0.1,
        };
        Self {
            negatives: NegativeSource::queue(65536),
            temperature: 0.07,
            symmetric: false,
            symmetric_reduction: SymmetricReduction::Sum,
            per_view_queues: false,
            momentum: 0.999,
            cosine_momentum: false,
            momentum_end: 1.0,
            end_to_end_detach_keys: false,
            shuffle_bn: true,
            optimizer: OptimizerConfig::sgd(lr, 0.9, 1e-4),
            lr_schedule: LrSchedule::per_epoch(milestones, steps_per_epoch, 0),
            total_steps: total,
            seed: 0,
        }
    }

    /// MoCo v2: v1 with τ = 0.2 and `main_moco.py --cos`, a cosine learning
    /// rate set per epoch (the MLP head and the stronger augmentation are the
    /// encoder's and data's part).
    pub fn v2(batch_size: usize, steps_per_epoch: u64, epochs: u64) -> Self {
        let mut c = Self::v1(batch_size, steps_per_epoch, epochs);
        c.temperature = 0.2;
        c.lr_schedule = LrSchedule::per_epoch(
            LrSchedule::cosine(c.optimizer.lr, epochs),
            steps_per_epoch,
            0,
        );
        c
    }

    /// The MoCo CIFAR-10 colab: K = 4096, m = 0.99, τ = 0.1, SGD lr 0.06 at
    /// batch 512 (its comment: "0.03 for batch 256", so × batch / 512),
    /// momentum 0.9, weight decay 5e-4, cosine set per epoch with epochs
    /// counted from 1, shuffle-BN (with 8 split-BN groups in the encoder),
    /// asymmetric loss (its symmetric option sums the two terms).
    pub fn cifar10_colab(batch_size: usize, steps_per_epoch: u64, epochs: u64) -> Self {
        let total = steps_per_epoch * epochs;
        let lr = 0.06 * batch_size as f64 / 512.0;
        Self {
            negatives: NegativeSource::queue(4096),
            temperature: 0.1,
            symmetric: false,
            symmetric_reduction: SymmetricReduction::Sum,
            per_view_queues: false,
            momentum: 0.99,
            cosine_momentum: false,
            momentum_end: 1.0,
            end_to_end_detach_keys: false,
            shuffle_bn: true,
            optimizer: OptimizerConfig::sgd(lr, 0.9, 5e-4),
            lr_schedule: LrSchedule::per_epoch(LrSchedule::cosine(lr, epochs), steps_per_epoch, 1),
            total_steps: total,
            seed: 0,
        }
    }

    fn validate(&self) -> Result<()> {
        let field = |name: &str, rule: std::result::Result<(), Invalid>| {
            rule.map_err(|e| config_err(format!("{name} {e}")))
        };
        self.lr_schedule.validate()?;
        field("key-encoder momentum", rules::momentum(self.momentum))?;
        if self.cosine_momentum {
            field(
                "key-encoder momentum at the end of the cosine schedule",
                rules::momentum(self.momentum_end),
            )?;
        }
        if self.end_to_end_detach_keys && self.negatives != NegativeSource::EndToEnd {
            return Err(config_err(
                "detached end-to-end keys apply to end-to-end negatives only (the queue's keys \
                 are detached anyway, the memory bank has none)",
            ));
        }
        if self.per_view_queues
            && !(self.symmetric && matches!(self.negatives, NegativeSource::Queue { .. }))
        {
            return Err(config_err(
                "a queue per view needs the symmetric loss and queue negatives (each view's \
                 queries are contrasted with the other view's past keys)",
            ));
        }
        if self.cosine_momentum && self.total_steps == 0 {
            return Err(config_err(
                "the cosine momentum schedule needs total_steps > 0",
            ));
        }
        match &self.negatives {
            NegativeSource::Queue { size, .. } => field("queue size", rules::size(*size)),
            NegativeSource::MemoryBank {
                num_samples,
                num_negatives,
                momentum,
                ..
            } => {
                field("memory-bank num_samples", rules::size(*num_samples))?;
                field("memory-bank num_negatives", rules::size(*num_negatives))?;
                field("memory-bank momentum", rules::momentum(*momentum))?;
                if self.symmetric {
                    return Err(config_err(
                        "the symmetric loss is not defined for the memory bank (one query view per sample)",
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The checkpoint prefix of view 1's queue with a queue per view (view 0's is under
/// `dictionary`, where the one queue is otherwise).
const VIEW1_QUEUE: &str = "dictionary_view1";

#[derive(Clone, Copy)]
enum Mode {
    Queue,
    Bank(usize, BankSampling),
    EndToEnd,
}

enum Dictionary {
    /// One queue, or one per view ([`MoCoConfig::per_view_queues`]; `[v]` holds keys of view
    /// `v`).
    Queue(Vec<MomentumQueue>),
    Bank {
        bank: MemoryBank,
        num_negatives: usize,
        sampling: BankSampling,
    },
    EndToEnd,
}

/// MoCo over encoders of type `E`.
pub struct MoCo<E: Encoder> {
    encoder_q: E,
    /// `None` in end-to-end mode, which has no key encoder.
    encoder_k: Option<E>,
    momentum_update: Option<MomentumUpdate>,
    dictionary: Dictionary,
    loss: InfoNCELoss,
    optimizer: Optimizer,
    config: MoCoConfig,
    rng: SplitMix64,
    /// The last step's queries of view 0 and their positives, detached
    /// ([`Method::last_embeddings`], the collapse monitor).
    last_embeddings: Option<crate::collapse::StepEmbeddings>,
    step: u64,
    device: Device,
}

impl<E: Encoder> MoCo<E> {
    /// Builds the query encoder with `build`, and (except end-to-end) the key
    /// encoder with a second call, then copies the query encoder's state into
    /// it. `device` is where the encoders live.
    pub fn new(config: MoCoConfig, build: impl Fn() -> Result<E>, device: &Device) -> Result<Self> {
        config.validate()?;
        let encoder_q = build()?;
        let dim = encoder_q.output_dim();
        // Only the queue's keys come from a momentum encoder: the memory bank
        // (InstDisc) stores the query encoder's own features, end-to-end uses
        // the query encoder for its keys.
        let (encoder_k, momentum_update) = match config.negatives {
            NegativeSource::MemoryBank { .. } | NegativeSource::EndToEnd => (None, None),
            NegativeSource::Queue { .. } => {
                let k = build()?;
                copy_state(&encoder_q, &k)?;
                let update =
                    MomentumUpdate::new(&k.named_parameters(), &encoder_q.named_parameters())?;
                (Some(k), Some(update))
            }
        };
        let dictionary = match &config.negatives {
            NegativeSource::Queue { size, mode } => {
                let views = if config.per_view_queues { 2 } else { 1 };
                // View 0's queue (or the only one) is seeded with `seed` itself.
                let seeds = [config.seed, config.seed ^ 0x5649_4557_3151_5545];
                let queues = seeds[..views]
                    .iter()
                    .map(|&seed| {
                        MomentumQueue::new(
                            MomentumQueueConfig {
                                size: *size,
                                dim,
                                seed,
                                mode: *mode,
                            },
                            device,
                        )
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Dictionary::Queue(queues)
            }
            NegativeSource::MemoryBank {
                num_samples,
                num_negatives,
                momentum,
                sampling,
            } => Dictionary::Bank {
                bank: MemoryBank::new(
                    MemoryBankConfig {
                        num_samples: *num_samples,
                        dim,
                        momentum: *momentum,
                        seed: config.seed,
                        ..Default::default()
                    },
                    device,
                )?,
                num_negatives: *num_negatives,
                sampling: *sampling,
            },
            NegativeSource::EndToEnd => Dictionary::EndToEnd,
        };
        let loss = InfoNCELoss::new(InfoNCEConfig {
            temperature: config.temperature,
            symmetric_reduction: config.symmetric_reduction,
            ..Default::default()
        })?;
        let optimizer = Optimizer::new(encoder_q.named_parameters(), config.optimizer.clone())?;
        // A stream apart from the queue's, which is seeded with `seed` itself.
        let rng = SplitMix64::new(config.seed ^ 0x5348_5546_464C_4542);
        Ok(Self {
            encoder_q,
            encoder_k,
            momentum_update,
            dictionary,
            loss,
            optimizer,
            config,
            rng,
            last_embeddings: None,
            step: 0,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &MoCoConfig {
        &self.config
    }

    pub fn query_encoder(&self) -> &E {
        &self.encoder_q
    }

    /// The momentum encoder (`None` with the memory bank or end-to-end).
    pub fn key_encoder(&self) -> Option<&E> {
        self.encoder_k.as_ref()
    }

    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// The queue's `[K, D]` keys (view 0's with a queue per view), the bank's
    /// `[num_samples, D]` rows, or `None` in end-to-end mode.
    pub fn dictionary(&self) -> Option<&Tensor> {
        match &self.dictionary {
            Dictionary::Queue(q) => Some(q[0].negatives()),
            Dictionary::Bank { bank, .. } => Some(bank.bank()),
            Dictionary::EndToEnd => None,
        }
    }

    /// The `[K, D]` queue that holds past keys of `view` (0 or 1): with a queue per view its
    /// own, else the one queue; `None` without a queue.
    pub fn queue_of_view(&self, view: usize) -> Option<&Tensor> {
        match &self.dictionary {
            Dictionary::Queue(q) if view < 2 => Some(q[view.min(q.len() - 1)].negatives()),
            _ => None,
        }
    }

    /// The queue's write pointer (`None` without a queue; the queues of the views move
    /// together).
    pub fn queue_ptr(&self) -> Option<usize> {
        match &self.dictionary {
            Dictionary::Queue(q) => Some(q[0].ptr()),
            _ => None,
        }
    }

    /// Key-encoder momentum of update `step` (0-based).
    pub fn momentum_at(&self, step: u64) -> f64 {
        let schedule = if self.config.cosine_momentum {
            MomentumSchedule::Cosine {
                base: self.config.momentum,
                end: self.config.momentum_end,
                total_steps: self.config.total_steps,
            }
        } else {
            MomentumSchedule::Constant(self.config.momentum)
        };
        schedule.at(step)
    }

    /// The negatives of the keys of `view`: [`Self::queue_of_view`] in queue mode.
    fn queue_negatives(&self, view: usize) -> &Tensor {
        self.queue_of_view(view).expect("only called in queue mode")
    }

    /// Replaces the queue's keys with `keys` (`[K, D]`, the configured size and
    /// the encoder's output width; used as given, so pass unit rows), the
    /// write pointer back at 0: to continue from a queue saved by another
    /// implementation, or to start from a given one (MoCo draws its own from a
    /// normal distribution). Queue mode with one queue only
    /// ([`replace_queues`](Self::replace_queues) gives one per view).
    pub fn replace_queue(&mut self, keys: &Tensor) -> Result<()> {
        self.replace_queues(std::slice::from_ref(keys))
    }

    /// [`replace_queue`](Self::replace_queue) for every queue: one `[K, D]` tensor per queue,
    /// view 0's first with a queue per view.
    pub fn replace_queues(&mut self, keys: &[Tensor]) -> Result<()> {
        let Dictionary::Queue(queues) = &self.dictionary else {
            return Err(input_err("replace_queue: this MoCo has no queue"));
        };
        if keys.len() != queues.len() {
            return Err(input_err(format!(
                "replace_queue: this MoCo has {} queue(s), got keys for {}",
                queues.len(),
                keys.len()
            )));
        }
        let mut replaced = Vec::with_capacity(keys.len());
        for (queue, keys) in queues.iter().zip(keys) {
            let want = [queue.size(), queue.dim()];
            if keys.dims() != want {
                return Err(input_err(format!(
                    "replace_queue: the queue holds {want:?} keys, got {:?}",
                    keys.dims()
                )));
            }
            let keys = keys
                .to_dtype(candle_core::DType::F32)?
                .to_device(&self.device)?;
            replaced.push(MomentumQueue::from_buffer(&keys, queue.mode())?);
        }
        self.dictionary = Dictionary::Queue(replaced);
        Ok(())
    }

    /// Unit-norm keys of `x` from the key encoder; with a permutation, the
    /// batch is shuffled before the key encoder and the keys unshuffled after
    /// (shuffle-BN).
    fn keys(&self, x: &Tensor, perm: Option<&[u32]>) -> Result<Tensor> {
        let encoder_k = self.encoder_k.as_ref().ok_or_else(|| {
            input_err("keys from the key encoder are only computed in queue mode")
        })?;
        let k = match perm {
            Some(perm) => {
                let (shuffled, unshuffle) = batch_shuffle(x, perm)?;
                let k = encoder_k.forward(&shuffled, true)?.detach();
                batch_unshuffle(&k, &unshuffle)?
            }
            None => encoder_k.forward(x, true)?.detach(),
        };
        l2_normalize(&k)
    }

    /// [`Method::step`] with the shuffle-BN permutations of the key batches
    /// given instead of drawn from the method's generator, e.g. to reproduce
    /// a run of another implementation. `key_permutations[t]` reorders the key
    /// batch of loss term `t` before the key encoder, `x[perm]` as the MoCo
    /// colab's `_batch_shuffle_single_gpu`: term 0 scores the queries of
    /// `views[0]` against the keys of `views[1]`; the symmetric loss's term 1
    /// the queries of `views[1]` against the keys of `views[0]`. Queue mode
    /// only (the memory bank and end-to-end MoCo have no key encoder pass);
    /// one permutation of `0..N` per term.
    pub fn step_with_key_permutations(
        &mut self,
        views: &[Tensor],
        indices: &[usize],
        key_permutations: &[Vec<usize>],
    ) -> Result<StepStats> {
        let n = check_views(views, 2)?;
        if !matches!(self.dictionary, Dictionary::Queue(..)) {
            return Err(input_err(
                "key permutations apply to queue mode only: the memory bank and end-to-end MoCo \
                 have no key-encoder pass",
            ));
        }
        let terms = if self.config.symmetric { 2 } else { 1 };
        if key_permutations.len() != terms {
            return Err(input_err(format!(
                "{terms} key permutation(s) needed (one per loss term), got {}",
                key_permutations.len()
            )));
        }
        let mut perms = Vec::with_capacity(terms);
        for (t, p) in key_permutations.iter().enumerate() {
            let mut seen = vec![false; n];
            let valid = p.len() == n
                && p.iter()
                    .all(|&i| i < n && !std::mem::replace(&mut seen[i], true));
            if !valid {
                return Err(input_err(format!(
                    "key permutation {t} is not a permutation of 0..{n}"
                )));
            }
            perms.push(p.iter().map(|&i| i as u32).collect::<Vec<u32>>());
        }
        self.step_inner(views, indices, Some(perms))
    }
}

/// The single-device batch shuffle of MoCo's shuffle-BN ("Shuffling BN", He et
/// al. 2020, section 3.3; ShuffleBN, shuffle BN; lightly's `batch_shuffle`, the
/// MoCo colab's `_batch_shuffle_single_gpu`, `main_moco.py`'s multi-GPU
/// `_batch_shuffle_ddp`): `x[perm]` along the batch, and the index that undoes
/// it for [`batch_unshuffle`]. The key encoder sees the shuffled batch, so its
/// BatchNorm groups (one per GPU there, [`SplitBatchNorm`] groups here) mix
/// samples the query encoder's groups keep apart.
///
/// [`SplitBatchNorm`]: mocca_backbones::SplitBatchNorm
#[doc(alias = "shuffle-BN", alias = "ShuffleBN", alias = "shuffle_bn")]
#[doc(alias = "batch_shuffle_single_gpu", alias = "batch_shuffle_ddp")]
pub fn batch_shuffle(x: &Tensor, perm: &[u32]) -> Result<(Tensor, Tensor)> {
    let mut inverse = vec![0u32; perm.len()];
    for (pos, &i) in perm.iter().enumerate() {
        inverse[i as usize] = pos as u32;
    }
    let perm = Tensor::new(perm, x.device())?;
    let inverse = Tensor::new(inverse.as_slice(), x.device())?;
    Ok((x.index_select(&perm, 0)?, inverse))
}

/// Undoes [`batch_shuffle`] (the other half of shuffle-BN; the colab's
/// `_batch_unshuffle_single_gpu`): `x[unshuffle]` along the batch.
#[doc(alias = "batch_unshuffle_single_gpu", alias = "batch_unshuffle_ddp")]
pub fn batch_unshuffle(x: &Tensor, unshuffle: &Tensor) -> Result<Tensor> {
    Ok(x.index_select(unshuffle, 0)?)
}

impl<E: Encoder> MoCo<E> {
    fn restore(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        // Read everything fallible first, then commit.
        let step = checkpoint::get_u64(state, "step")?;
        let rng = checkpoint::get_u64(state, "rng_state")?;
        let dict = checkpoint::sub_state(state, "dictionary");
        let dim = self.encoder_q.output_dim();
        let mismatch = |what: &str, saved: String, configured: String| {
            MethodError::StateMismatch(format!(
                "the checkpoint's {what} is {saved}, the configuration's {configured}"
            ))
        };
        let dictionary = match (&self.dictionary, &self.config.negatives) {
            (Dictionary::Queue(current), NegativeSource::Queue { size, mode }) => {
                let view1 = checkpoint::sub_state(state, VIEW1_QUEUE);
                if view1.is_empty() == (current.len() == 2) {
                    return Err(mismatch(
                        "number of queues",
                        if view1.is_empty() {
                            "1"
                        } else {
                            "2 (one per view)"
                        }
                        .into(),
                        if current.len() == 2 {
                            "2 (one per view)"
                        } else {
                            "1"
                        }
                        .into(),
                    ));
                }
                let mut queues = Vec::with_capacity(current.len());
                for dict in [dict, view1].into_iter().take(current.len()) {
                    let queue = MomentumQueue::from_state_dict(&dict, &self.device)?;
                    if (queue.size(), queue.dim(), queue.mode()) != (*size, dim, *mode) {
                        return Err(mismatch(
                            "queue (size, width, mode)",
                            format!("{:?}", (queue.size(), queue.dim(), queue.mode())),
                            format!("{:?}", (size, dim, mode)),
                        ));
                    }
                    queues.push(queue);
                }
                Dictionary::Queue(queues)
            }
            (
                Dictionary::Bank {
                    num_negatives,
                    sampling,
                    ..
                },
                NegativeSource::MemoryBank {
                    num_samples,
                    momentum,
                    ..
                },
            ) => {
                let bank = MemoryBank::from_state_dict(&dict, &self.device)?;
                if (bank.num_samples(), bank.dim()) != (*num_samples, dim)
                    || bank.momentum() != *momentum
                {
                    return Err(mismatch(
                        "memory bank (rows, width, momentum)",
                        format!(
                            "({}, {}, {})",
                            bank.num_samples(),
                            bank.dim(),
                            bank.momentum()
                        ),
                        format!("({num_samples}, {dim}, {momentum})"),
                    ));
                }
                Dictionary::Bank {
                    bank,
                    num_negatives: *num_negatives,
                    sampling: *sampling,
                }
            }
            (Dictionary::EndToEnd, _) => {
                if !dict.is_empty() {
                    return Err(MethodError::StateMismatch(
                        "the checkpoint has a queue or memory bank, the configuration is end-to-end".into(),
                    ));
                }
                Dictionary::EndToEnd
            }
            _ => unreachable!("the dictionary is built from the configuration"),
        };
        self.encoder_q
            .load_state_dict(&checkpoint::sub_state(state, "encoder_q"))?;
        if let Some(k) = &self.encoder_k {
            k.load_state_dict(&checkpoint::sub_state(state, "encoder_k"))?;
        }
        self.optimizer
            .load_state_tensors(&checkpoint::sub_state(state, "optimizer"))?;
        self.dictionary = dictionary;
        self.step = step;
        self.rng = SplitMix64::new(rng);
        Ok(())
    }
}

impl<E: Encoder> MoCo<E> {
    /// One step; `perms` are the key batches' shuffle-BN permutations (drawn when `None`).
    fn step_inner(
        &mut self,
        views: &[Tensor],
        indices: &[usize],
        perms: Option<Vec<Vec<u32>>>,
    ) -> Result<StepStats> {
        // The memory bank contrasts one view with the bank (a second view, if
        // given, is not used); the queue and end-to-end modes need two.
        let bank = matches!(self.dictionary, Dictionary::Bank { .. });
        let n = match views.len() {
            1 | 2 if bank => check_views(views, views.len())?,
            _ => check_views(views, 2)?,
        };
        // Everything that could fail after the update is checked here, so a
        // step either completes or changes nothing.

        if let Dictionary::Queue(queues) = &self.dictionary {
            let queue = &queues[0];
            let keys = if self.config.symmetric && queues.len() == 1 {
                2 * n
            } else {
                n
            };
            if keys > queue.size() {
                return Err(input_err(format!(
                    "a step enqueues {keys} keys but the queue holds only {}: use a queue of at least {keys}",
                    queue.size()
                )));
            }
        }
        if let Dictionary::Bank { bank, .. } = &self.dictionary {
            if indices.len() != n {
                return Err(input_err(format!(
                    "the memory bank needs the dataset index of each of the {n} samples, got {}",
                    indices.len()
                )));
            }
            if let Some(&bad) = indices.iter().find(|&&i| i >= bank.num_samples()) {
                return Err(input_err(format!(
                    "sample index {bad} is out of range for a memory bank of {} rows",
                    bank.num_samples()
                )));
            }
            let mut seen = std::collections::HashSet::with_capacity(n);
            if let Some(&dup) = indices.iter().find(|&&i| !seen.insert(i)) {
                return Err(input_err(format!(
                    "sample index {dup} appears twice in one batch: the memory bank needs distinct samples"
                )));
            }
        }
        let step = self.step;
        let lr = self.config.lr_schedule.lr_at(step);
        let (x_q, x_k) = (&views[0], views.get(1).unwrap_or(&views[0]));
        let symmetric = self.config.symmetric;

        // Forward and loss. `pending` keys go into the queues (one tensor each) and `queries`
        // into the bank after the update.
        let mode = match &self.dictionary {
            Dictionary::Queue(_) => Mode::Queue,
            Dictionary::Bank {
                num_negatives,
                sampling,
                ..
            } => Mode::Bank(*num_negatives, *sampling),
            Dictionary::EndToEnd => Mode::EndToEnd,
        };
        let (out, pending, queries) = match mode {
            Mode::Queue => {
                // One permutation per loss term, term 0's first (the colab's order).
                let terms = if symmetric { 2 } else { 1 };
                let perms: Vec<Option<Vec<u32>>> = match perms {
                    Some(given) => given.into_iter().map(Some).collect(),
                    None if self.config.shuffle_bn => {
                        (0..terms).map(|_| Some(self.rng.permutation(n))).collect()
                    }
                    None => vec![None; terms],
                };
                if self.config.per_view_queues {
                    // solo-learn's order: both views through the query encoder, then both
                    // through the key encoder, view 0 first (BatchNorm running statistics
                    // depend on it).
                    let q1 = self.encoder_q.forward(x_q, true)?;
                    let q2 = self.encoder_q.forward(x_k, true)?;
                    let k1 = self.keys(x_q, perms[1].as_deref())?;
                    let k2 = self.keys(x_k, perms[0].as_deref())?;
                    self.last_embeddings = Some(crate::collapse::StepEmbeddings {
                        view0: q1.detach(),
                        view1: Some(k2.clone()),
                    });
                    let out = self.loss.forward_symmetric_per_view(
                        &q1,
                        &q2,
                        &k1,
                        &k2,
                        self.queue_negatives(0),
                        self.queue_negatives(1),
                    );
                    (loss_result(out, step)?, vec![k1, k2], None)
                } else if symmetric {
                    // The key encoder sees term 0's keys (view 1) before term 1's: its
                    // BatchNorm running statistics depend on that order.
                    let q1 = self.encoder_q.forward(x_q, true)?;
                    let k2 = self.keys(x_k, perms[0].as_deref())?;
                    let q2 = self.encoder_q.forward(x_k, true)?;
                    let k1 = self.keys(x_q, perms[1].as_deref())?;
                    self.last_embeddings = Some(crate::collapse::StepEmbeddings {
                        view0: q1.detach(),
                        view1: Some(k2.clone()),
                    });
                    let out =
                        self.loss
                            .forward_symmetric(&q1, &q2, &k1, &k2, self.queue_negatives(0));
                    (
                        loss_result(out, step)?,
                        vec![Tensor::cat(&[&k1, &k2], 0)?],
                        None,
                    )
                } else {
                    let q = self.encoder_q.forward(x_q, true)?;
                    let k = self.keys(x_k, perms[0].as_deref())?;
                    self.last_embeddings = Some(crate::collapse::StepEmbeddings {
                        view0: q.detach(),
                        view1: Some(k.clone()),
                    });
                    let out = self.loss.forward(&q, &k, self.queue_negatives(1));
                    (loss_result(out, step)?, vec![k], None)
                }
            }
            Mode::Bank(num_negatives, sampling) => {
                let q = self.encoder_q.forward(x_q, true)?;
                let Dictionary::Bank { bank, .. } = &mut self.dictionary else {
                    unreachable!("mode follows the dictionary")
                };
                let positives = bank.rows(indices)?;
                let out = match sampling {
                    BankSampling::PerQuery => {
                        let drawn = bank.sample_negative_indices(n, num_negatives)?;
                        self.loss
                            .forward_indexed(&q, &positives, bank.bank(), &drawn)
                    }
                    BankSampling::Shared => {
                        let negatives = bank.sample_negatives(num_negatives)?;
                        self.loss.forward(&q, &positives, &negatives)
                    }
                };
                (
                    loss_result(out, step)?,
                    vec![],
                    Some((q.detach(), positives)),
                )
            }
            Mode::EndToEnd => {
                let q = self.encoder_q.forward(x_q, true)?;
                let k = self.encoder_q.forward(x_k, true)?;
                let k = if self.config.end_to_end_detach_keys {
                    k.detach()
                } else {
                    k
                };
                self.last_embeddings = Some(crate::collapse::StepEmbeddings {
                    view0: q.detach(),
                    view1: Some(k.detach()),
                });
                let out = if symmetric {
                    let a = loss_result(self.loss.forward_end_to_end(&q, &k), step)?;
                    let b = loss_result(self.loss.forward_end_to_end(&k, &q), step)?;
                    let scale = match self.config.symmetric_reduction {
                        SymmetricReduction::Sum => 1.0,
                        SymmetricReduction::Mean => 0.5,
                    };
                    mocca_losses::ContrastiveOutput {
                        loss: ((a.loss + b.loss)? * scale)?,
                        accuracy: ((a.accuracy + b.accuracy)? * 0.5)?,
                    }
                } else {
                    loss_result(self.loss.forward_end_to_end(&q, &k), step)?
                };
                (out, vec![], None)
            }
        };
        let loss = finite_loss(&out.loss, step)?;
        let accuracy = out
            .accuracy
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;

        let grads = out.loss.backward()?;
        self.optimizer.set_lr(lr);
        self.optimizer.step(&grads)?;
        drop(grads);

        let momentum = match &self.momentum_update {
            Some(update) => {
                let m = self.momentum_at(step);
                update.update(m)?;
                Some(m)
            }
            None => None,
        };
        match &mut self.dictionary {
            Dictionary::Queue(queues) => {
                for (queue, keys) in queues.iter_mut().zip(&pending) {
                    queue.enqueue(keys)?;
                }
            }
            Dictionary::Bank { bank, .. } => {
                bank.update(indices, &queries.as_ref().expect("bank mode has queries").0)?;
            }
            Dictionary::EndToEnd => {}
        }
        if let Some((q, positives)) = queries {
            // Memory bank: the queries and their own rows as the loss scored
            // them (the bank has just moved on).
            self.last_embeddings = Some(crate::collapse::StepEmbeddings {
                view0: q,
                view1: Some(positives),
            });
        }
        self.step += 1;
        Ok(StepStats {
            step: self.step,
            loss,
            accuracy,
            lr,
            momentum,
            batch_size: n,
        })
    }
}

impl<E: Encoder> Method for MoCo<E> {
    fn name(&self) -> &'static str {
        "moco"
    }

    fn step(&mut self, views: &[Tensor], indices: &[usize]) -> Result<StepStats> {
        self.step_inner(views, indices, None)
    }

    fn steps_done(&self) -> u64 {
        self.step
    }

    fn last_embeddings(&self) -> Option<crate::collapse::StepEmbeddings> {
        self.last_embeddings.clone()
    }

    fn memory_bank(&self) -> Option<&Tensor> {
        match &self.dictionary {
            Dictionary::Bank { bank, .. } => Some(bank.bank()),
            _ => None,
        }
    }

    fn key_queue(&self) -> Option<crate::staleness::KeyQueue<'_>> {
        // The symmetric loss enqueues both views' keys (or each into its own
        // queue): no longer one key per query of view 0. lightly's wrap drops
        // keys, so rows no longer age step by step back from the pointer.
        match &self.dictionary {
            Dictionary::Queue(q)
                if !self.config.symmetric && q.len() == 1 && q[0].mode() == QueueMode::Ring =>
            {
                let q = &q[0];
                let keys_per_step = self
                    .last_embeddings
                    .as_ref()?
                    .view0
                    .dims()
                    .first()
                    .copied()?;
                Some(crate::staleness::KeyQueue {
                    keys: q.negatives(),
                    ptr: q.ptr(),
                    steps: q.step(),
                    keys_per_step,
                })
            }
            _ => None,
        }
    }

    fn encoder(&self, role: EncoderRole) -> Result<&dyn Encoder> {
        match (role, &self.encoder_k) {
            (EncoderRole::Query, _) => Ok(&self.encoder_q),
            (EncoderRole::Key, Some(k)) => Ok(k),
            (EncoderRole::Key, None) => Err(input_err(
                "this MoCo has no key encoder: only the queue's keys come from one (end-to-end \
                 keys come from the query encoder, the memory bank holds its features)",
            )),
            (EncoderRole::Shared, _) => Err(input_err(
                "MoCo has a query and a key encoder; ask for EncoderRole::Query or EncoderRole::Key",
            )),
        }
    }

    fn default_eval_source(&self) -> FeatureSource {
        FeatureSource::new(EncoderRole::Query, FeatureLayer::Backbone)
    }

    fn state(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        checkpoint::put_prefixed(&mut out, "encoder_q", self.encoder_q.state_dict()?)?;
        if let Some(k) = &self.encoder_k {
            checkpoint::put_prefixed(&mut out, "encoder_k", k.state_dict()?)?;
        }
        checkpoint::put_prefixed(&mut out, "optimizer", self.optimizer.state_tensors()?)?;
        if let Dictionary::Queue(q) = &self.dictionary {
            if let Some(view1) = q.get(1) {
                checkpoint::put_prefixed(&mut out, VIEW1_QUEUE, view1.state_dict()?)?;
            }
        }
        let dict = match &self.dictionary {
            Dictionary::Queue(q) => q[0].state_dict()?,
            Dictionary::Bank { bank, .. } => bank.state_dict()?,
            Dictionary::EndToEnd => HashMap::new(),
        };
        checkpoint::put_prefixed(&mut out, "dictionary", dict)?;
        out.insert("step".into(), u64_tensor(self.step)?);
        out.insert("rng_state".into(), u64_tensor(self.rng.state())?);
        Ok(out)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        checkpoint::load_all_or_nothing(self, state, Self::restore)
    }

    fn device(&self) -> &Device {
        &self.device
    }
}
