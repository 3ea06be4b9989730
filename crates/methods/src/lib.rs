//! Training drivers for contrastive self-supervised learning: MoCo v1/v2/v3
//! (He et al. 2020; Chen et al. 2020; Chen et al. 2021) with the MoCo paper's three sources of
//! negatives, SimCLR (Chen et al. 2020), InstDisc (Wu et al. 2018), the
//! methods without negatives BYOL (Grill et al. 2020) and SimSiam (Chen & He
//! 2021), the optimisers and schedules they use, and kNN / linear-probe evaluation of
//! what they learned. One job:
//! turn batches of augmented views into updated encoders, and tell how good
//! the encoders are. File formats and augmentation live elsewhere
//! (`mocca-data`, `mocca-aug`).
//!
//! # Map
//!
//! | item | what |
//! |---|---|
//! | [`Method`] | the trainer's interface: `step`, `embed`, `save` / `load` (object safe: `Box<dyn Method>`) |
//! | [`MoCo`], [`MoCoConfig`], [`NegativeSource`] | MoCo v1/v2 with a queue (one, or one per view as solo-learn's MoCo V2+), a memory bank or end-to-end negatives ([`moco`] documents the step) |
//! | [`SimCLR`], [`SimCLRConfig`] | SimCLR with NT-Xent |
//! | [`MoCoV3`], [`MoCoV3Config`] | MoCo v3 (ResNet variant): base encoder + [`Predictor`], momentum encoder, symmetric in-batch contrastive loss × 2τ, moco-v3's LARS ([`optim::OptimizerConfig::lars_mocov3`]) |
//! | [`BYOL`], [`BYOLConfig`] | BYOL: online encoder + [`Predictor`], momentum target ([`MomentumSchedule`]), negative cosine similarity, as lightly's example |
//! | [`SimSiam`], [`SimSiamConfig`] | SimSiam: one encoder + [`Predictor`], stop-gradient (switchable, to show the collapse without it) |
//! | [`InstDisc`], [`InstDiscConfig`] | InstDisc (Wu et al. 2018): one view, a memory bank, the full softmax or NCE, as lemniscate's code |
//! | [`Encoder`], [`BackboneEncoder`] | what a method needs from a network; the ResNet + projection head of `mocca-backbones` |
//! | [`Precision`] | f32, or bf16 mixed precision with f32 master weights ([`BackboneEncoder::with_precision`]) |
//! | [`optim::Optimizer`] | PyTorch-exact momentum SGD (Nesterov, dampening, weight decay) and LARS, bias/BN excluded from decay on request, state save/load |
//! | [`schedule::LrSchedule`] | warmup + cosine, step, multistep; evaluated per step |
//! | [`collapse`] | the collapse monitor: [`collapse::collapse_metrics`] of a step's embeddings ([`Method::last_embeddings`]): std of the ℓ2-normalised embeddings (SimSiam), RankMe, alignment and uniformity, and a [`CollapseMetrics::collapsing`] verdict |
//! | [`eval`] | [`eval::knn_evaluate`] (k = 200, t = 0.1) and [`eval::linear_probe`] on [`Features`] tagged with their [`FeatureSource`] |
//! | [`init::seeded_var_builder`] | seeded weights (Candle's CPU generator cannot be seeded) |
//! | [`checkpoint`] | atomic safetensors files of named tensors |
//!
//! # For a trainer
//!
//! `mocca-train`'s `Trainer` runs the loop below with kNN monitoring,
//! checkpoints, stop requests and exact resume; by hand it is: build an
//! encoder factory, a config (start from a preset and change fields), the
//! method; then call `step` per batch:
//!
//! ```text
//! let backbone = ResNetConfig { stem: Stem::Cifar, bn_splits: 8, ..ResNetConfig::resnet18() };
//! let mut head: ProjectionHeadConfig = MoCoProjectionHead::v2(backbone.feature_dim()).into();
//! head.bn_splits = 8;
//! let build = || BackboneEncoder::new(&backbone, head.clone(), seed, &device);
//! let mut config = MoCoConfig::cifar10_colab(batch_size, steps_per_epoch, epochs);
//! config.seed = seed;                                // queue init, shuffle-BN permutations
//! config.negatives = NegativeSource::queue(4096);   // or MemoryBank { .. } or EndToEnd
//! let mut method: Box<dyn Method> = Box::new(MoCo::new(config, build, &device)?);
//!
//! if resume { method.load(&ckpt)?; }                 // continues bit-identically
//! for (views, indices) in loader {                   // views: [x_q, x_k], each [N, 3, H, W]
//!     let s = method.step(&views, &indices)?;        // StepStats { step, loss, accuracy, lr, momentum, .. }
//! }
//! method.save(&ckpt)?;                               // temp file + rename
//!
//! let src = method.default_eval_source();            // query encoder, backbone features
//! let train = Features::concat(&batches.map(|x| method.embed(&x, src)).collect::<Result<Vec<_>>>()?)?;
//! let r = eval::knn_evaluate(&train, &train_labels, &test, &test_labels, &KnnConfig::new(10))?;
//! println!("{r}");  // kNN (k=200, t=0.1) on query encoder, backbone features: top-1 ..%
//! ```
//!
//! * `step` runs forward, loss, backward, the optimizer update, the key
//!   encoder's momentum update and the enqueue, in that order, and takes the
//!   learning rate of the schedule at [`Method::steps_done`]. The memory bank
//!   needs the dataset index of every sample in `indices`; the other modes
//!   accept `&[]`.
//! * A NaN / infinite loss returns [`MethodError::NonFiniteLoss`] `{ step, .. }`
//!   with parameters, optimizer state, queue / bank and step counter
//!   untouched: stop, or reload the last checkpoint.
//! * [`Method::state`] / [`Method::save`] hold both encoders with their
//!   BatchNorm buffers, the optimizer's momentum buffers, the queue or bank
//!   (with its generator), the step counter and the shuffle-BN generator.
//!   Data-order and augmentation generators belong to the trainer's checkpoint.
//!   Loading checks the file against the method's configuration (queue size,
//!   bank rows, parameter names and shapes) and changes nothing on error.
//! * Evaluation goes through [`Method::embed`] (eval-mode BatchNorm), whose
//!   [`Features`] carry their [`FeatureSource`]; results repeat it and mixing
//!   sources is an error. MoCo can also be asked for its key encoder or the
//!   head's output; SimCLR's single encoder is [`EncoderRole::Shared`].
//! * Exporting the backbone with torchvision names:
//!   `moco.query_encoder().backbone().save_safetensors(path)` (`mocca_backbones::StateDict`).
//!
//! Presets ([`MoCoConfig::v1`], [`MoCoConfig::v2`], [`MoCoConfig::cifar10_colab`],
//! [`SimCLRConfig::paper`], [`SimCLRConfig::cifar10`]) take the batch size
//! (linear lr scaling), steps per epoch and epochs, and say their sources.
//!
//! # Example
//!
//! One MoCo v2 step on a width-0.125 ResNet-18 and a kNN evaluation of its
//! query encoder:
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mocca_backbones::{MoCoProjectionHead, ResNetConfig, Stem};
//! use mocca_methods::eval::{knn_evaluate, KnnConfig};
//! use mocca_methods::{Method, MoCo, MoCoConfig, NegativeSource, BackboneEncoder};
//!
//! let dev = Device::Cpu;
//! let backbone = ResNetConfig { stem: Stem::Cifar, width: 0.125, ..ResNetConfig::resnet18() };
//! let head = MoCoProjectionHead::v2(backbone.feature_dim());
//! let build = || BackboneEncoder::new(&backbone, head.into(), 0, &dev);
//! let mut config = MoCoConfig::v2(4, 10, 1);
//! config.negatives = NegativeSource::queue(16);
//! let mut moco = MoCo::new(config, build, &dev)?;
//!
//! let views = [Tensor::rand(0f32, 1., (4, 3, 16, 16), &dev)?, Tensor::rand(0f32, 1., (4, 3, 16, 16), &dev)?];
//! let stats = moco.step(&views, &[])?;
//! assert_eq!((stats.step, stats.momentum), (1, Some(0.999)));
//! assert_eq!(moco.queue_ptr(), Some(4));
//!
//! let src = moco.default_eval_source();
//! let feats = moco.embed(&views[0], src)?;
//! let result = knn_evaluate(&feats, &[0, 1, 0, 1], &feats, &[0, 1, 0, 1], &KnnConfig::new(2))?;
//! assert!(result.to_string().contains("query encoder, backbone features"));
//! # Ok::<(), mocca_methods::MethodError>(())
//! ```

mod backbone_encoder;
pub mod byol;
pub mod checkpoint;
pub mod collapse;
mod encoder;
mod error;
pub mod eval;
pub mod init;
pub mod instdisc;
pub mod moco;
pub mod mocov3;
pub mod optim;
mod precision;
mod predictor;
pub mod schedule;
mod siamese;
pub mod simclr;
pub mod simsiam;
pub mod staleness;
mod step;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};

pub use backbone_encoder::BackboneEncoder;
pub use byol::{BYOLConfig, BYOL};
pub use collapse::{CollapseMetrics, StepEmbeddings};
pub use encoder::{copy_state, Encoder};
pub use error::{MethodError, Result};
pub use eval::{EncoderRole, FeatureLayer, FeatureSource, Features};
pub use instdisc::{InstDisc, InstDiscConfig, InstDiscObjective};
pub use mocca_core::SplitMix64;
pub use mocca_losses::SymmetricReduction;
pub use moco::{batch_shuffle, batch_unshuffle, BankSampling, MoCo, MoCoConfig, NegativeSource};
pub use mocov3::{MoCoV3, MoCoV3Config};
pub use precision::Precision;
pub use predictor::Predictor;
pub use schedule::MomentumSchedule;
pub use simclr::{SimCLR, SimCLRConfig};
pub use simsiam::{SimSiam, SimSiamConfig};

/// What one training step reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// Number of updates applied so far, this one included (1 after the first).
    pub step: u64,
    /// The loss of this step's batch (before the update).
    pub loss: f64,
    /// Positive-pair accuracy: the fraction of anchors whose positive has the
    /// largest logit among the positive and all negatives; NaN for the methods
    /// without negatives (BYOL, SimSiam), which rank nothing.
    pub accuracy: f64,
    /// Learning rate used by this update.
    pub lr: f64,
    /// Momentum of the key-encoder update applied this step (`None` where
    /// there is no momentum encoder: SimCLR, end-to-end MoCo).
    pub momentum: Option<f64>,
    /// Source images in the batch (views count once).
    pub batch_size: usize,
}

/// A self-supervised training method.
pub trait Method {
    /// Short name, e.g. `"moco"`, `"simclr"`.
    fn name(&self) -> &'static str;

    /// One training step. `views` holds the augmented views of one batch of
    /// source images (two for SimCLR and for MoCo with a queue or end-to-end
    /// keys; one for InstDisc and MoCo's memory bank), each `[N, C, H, W]` with the
    /// same `N`; `indices` are the dataset indices of the N source images
    /// (required by the memory bank, otherwise may be empty). Runs forward,
    /// loss, backward, optimizer update, then the momentum update and the
    /// enqueue of keys. On a non-finite loss returns
    /// [`MethodError::NonFiniteLoss`] and applies nothing.
    fn step(&mut self, views: &[Tensor], indices: &[usize]) -> Result<StepStats>;

    /// Updates applied so far.
    fn steps_done(&self) -> u64;

    /// The embeddings the last [`Method::step`] computed, detached (no extra
    /// forward pass; holding them changes nothing in training): the first
    /// view's, and what each was contrasted with as its positive. For the
    /// collapse monitor ([`StepEmbeddings::metrics`]). `None` before the
    /// first step and for methods that do not keep them (the default). After
    /// a step that failed with [`MethodError::NonFiniteLoss`] they may be
    /// that step's.
    fn last_embeddings(&self) -> Option<StepEmbeddings> {
        None
    }

    /// The memory bank's rows, `[num_samples, d]`, for methods that keep one
    /// (InstDisc, MoCo with bank negatives); `None` otherwise (the default).
    /// With [`Method::last_embeddings`] (whose `view1` is then each query's
    /// own row as scored) this is what [`staleness::bank_cosines`] reads.
    fn memory_bank(&self) -> Option<&Tensor> {
        None
    }

    /// The momentum queue as the last step left it, for methods whose queue
    /// takes one key per query each step (MoCo with queue negatives and the
    /// asymmetric loss); `None` otherwise (the default). With
    /// [`Method::last_embeddings`]' `view0` this is what
    /// [`staleness::queue_cosines`] reads.
    fn key_queue(&self) -> Option<staleness::KeyQueue<'_>> {
        None
    }

    /// The encoder in `role`, or an error if the method has none there.
    fn encoder(&self, role: EncoderRole) -> Result<&dyn Encoder>;

    /// The encoder and layer the papers evaluate for this method (the query
    /// encoder's / the shared encoder's backbone features).
    fn default_eval_source(&self) -> FeatureSource;

    /// Features of `images` from `source`, computed in evaluation mode (BN
    /// running statistics, nothing updated) and tagged with `source`.
    fn embed(&self, images: &Tensor, source: FeatureSource) -> Result<Features> {
        let encoder = self.encoder(source.encoder)?;
        let t = encoder.embed(images, source.layer, false)?.detach();
        Features::new(t, source)
    }

    /// The whole training state as named tensors: encoders with their
    /// buffers, optimizer state, queue or bank, step counter, random state.
    fn state(&self) -> Result<BTreeMap<String, Tensor>>;

    /// Restores [`Method::state`]; the method then continues exactly as the
    /// saved one would have.
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()>;

    /// Device of the method's tensors (where `load` puts restored tensors).
    fn device(&self) -> &Device;

    /// Writes [`Method::state`] to `path` atomically (temporary file + rename).
    fn save(&self, path: &Path) -> Result<()> {
        checkpoint::save_tensors(&self.state()?, path)
    }

    /// Reads a file written by [`Method::save`] and restores it.
    fn load(&mut self, path: &Path) -> Result<()> {
        let state = checkpoint::load_tensors(path, self.device())?;
        self.load_state(&state)
    }
}
