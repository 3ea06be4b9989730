//! The training configuration: one TOML document, resolved in layers.
//!
//! Layers, later ones winning: an embedded preset (`presets/*.toml`, chosen by
//! method and recipe) → a user file (`--config file.toml`, any subset of the
//! keys) → `--set section.key=value` and the dedicated flags (`--epochs`, ...).
//! The result is validated once, before anything is loaded, and written to the
//! run folder as `config.toml` so a run can be reproduced or resumed from it.
//!
//! Every struct denies unknown fields: a misspelt key is an error that names
//! it, never a silently ignored setting.

use crate::error::{bail, invalid, RecipeError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which training method: the MoCo variants share the driver and differ in
/// head and augmentation defaults.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MethodName {
    Moco,
    Mocov2,
    Simclr,
    /// InstDisc (Wu et al. 2018): one view, a memory bank, lemniscate's losses.
    Instdisc,
    /// BYOL (Grill et al. 2020): online encoder and predictor, momentum target, no negatives.
    Byol,
    /// SimSiam (Chen & He 2021): one encoder, a predictor and a stop-gradient.
    Simsiam,
    /// MoCo v3 (Chen, Xie & He 2021): a predictor, a momentum encoder, in-batch keys.
    Mocov3,
}

impl MethodName {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "moco" => Ok(Self::Moco),
            "mocov2" => Ok(Self::Mocov2),
            "simclr" => Ok(Self::Simclr),
            "instdisc" => Ok(Self::Instdisc),
            "byol" => Ok(Self::Byol),
            "simsiam" => Ok(Self::Simsiam),
            "mocov3" => Ok(Self::Mocov3),
            other => bail!("unknown method `{other}`: expected {}", Self::NAMES),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Moco => "moco",
            Self::Mocov2 => "mocov2",
            Self::Simclr => "simclr",
            Self::Instdisc => "instdisc",
            Self::Byol => "byol",
            Self::Simsiam => "simsiam",
            Self::Mocov3 => "mocov3",
        }
    }
    pub const ALL: [MethodName; 7] = [
        Self::Moco,
        Self::Mocov2,
        Self::Mocov3,
        Self::Simclr,
        Self::Instdisc,
        Self::Byol,
        Self::Simsiam,
    ];
    /// Every method's name, for messages.
    pub const NAMES: &'static str = "moco, mocov2, mocov3, simclr, instdisc, byol or simsiam";
    /// Whether the method has a momentum (key) encoder besides the trained one: MoCo
    /// v1/v2 (with a queue), MoCo v3 and BYOL.
    pub fn has_momentum_encoder(self) -> bool {
        matches!(self, Self::Moco | Self::Mocov2 | Self::Mocov3 | Self::Byol)
    }
    /// Whether the method trains a predictor on top of the projection head.
    pub fn has_predictor(self) -> bool {
        matches!(self, Self::Byol | Self::Simsiam | Self::Mocov3)
    }
    pub fn is_moco(self) -> bool {
        matches!(self, Self::Moco | Self::Mocov2)
    }
    /// The recipes this method has a preset for.
    pub fn recipes(self) -> &'static [Recipe] {
        match self {
            Self::Instdisc => &[Recipe::Cifar, Recipe::Cifar100],
            Self::Byol | Self::Simsiam => &[Recipe::Cifar, Recipe::Paper, Recipe::Imagenet100],
            Self::Mocov3 => &[
                Recipe::Cifar,
                Recipe::Paper,
                Recipe::PaperVit,
                Recipe::Imagenet100,
            ],
            Self::Simclr | Self::Mocov2 => &[
                Recipe::Cifar,
                Recipe::Cifar100,
                Recipe::Stl10,
                Recipe::Paper,
                Recipe::Imagenet100,
            ],
            _ => &[
                Recipe::Cifar,
                Recipe::Cifar100,
                Recipe::Stl10,
                Recipe::Paper,
            ],
        }
    }
}

/// Which embedded preset a method starts from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    /// 32 px CIFAR-10 recipes (MoCo colab, lightly's CIFAR SimCLR).
    Cifar,
    /// The CIFAR-10 recipes on CIFAR-100 (solo-learn's CIFAR-100 statistics).
    Cifar100,
    /// 96 px STL-10: the CIFAR recipes' method settings on solo-learn's STL-10 data settings
    /// (train+unlabeled, ImageNet stem).
    Stl10,
    /// The papers' ImageNet settings.
    Paper,
    /// MoCo v3's ImageNet ViT setting (ViT-S/16, AdamW).
    PaperVit,
    /// solo-learn's ImageNet-100 settings (ResNet-18, 400 epochs, batch 256), on an ImageNet
    /// folder read through the ImageNet-100 class list.
    Imagenet100,
}

impl Recipe {
    pub const ALL: [Recipe; 6] = [
        Self::Cifar,
        Self::Cifar100,
        Self::Stl10,
        Self::Paper,
        Self::PaperVit,
        Self::Imagenet100,
    ];

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                invalid!(
                    "unknown recipe `{s}`: expected cifar, cifar100, stl10, paper, paper-vit or \
                     imagenet100"
                )
            })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cifar => "cifar",
            Self::Cifar100 => "cifar100",
            Self::Stl10 => "stl10",
            Self::Paper => "paper",
            Self::PaperVit => "paper-vit",
            Self::Imagenet100 => "imagenet100",
        }
    }
}

/// A dataset the trainer finds by name in the usual places, or downloads.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DatasetName {
    Cifar10,
    Cifar100,
    Stl10,
}

impl DatasetName {
    pub fn dataset(self) -> mocca_data::download::Dataset {
        use mocca_data::download::Dataset;
        match self {
            Self::Cifar10 => Dataset::Cifar10,
            Self::Cifar100 => Dataset::Cifar100,
            Self::Stl10 => Dataset::Stl10,
        }
    }
}

/// The split the encoder trains on, without its labels (torchvision's names); the kNN monitor
/// and the evaluations always use `train` and `test`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TrainSplit {
    #[default]
    #[serde(rename = "train")]
    Train,
    /// STL-10's 100,000 unlabeled images.
    #[serde(rename = "unlabeled")]
    Unlabeled,
    /// STL-10's 5,000 training images and its 100,000 unlabeled ones (solo-learn's choice).
    #[serde(rename = "train+unlabeled")]
    TrainUnlabeled,
}

impl TrainSplit {
    pub fn split(self) -> mocca_data::Split {
        match self {
            Self::Train => mocca_data::Split::Train,
            Self::Unlabeled => mocca_data::Split::Unlabeled,
            Self::TrainUnlabeled => mocca_data::Split::TrainUnlabeled,
        }
    }

    fn is_train(&self) -> bool {
        *self == Self::Train
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub method: MethodName,
    pub recipe: Recipe,
    /// Seeds every source of randomness unless `[seeds]` names its own.
    pub seed: u64,
    /// Separate seeds for the weights, the data order and the augmentations.
    #[serde(default, skip_serializing_if = "Seeds::is_empty")]
    pub seeds: Seeds,
    pub epochs: usize,
    pub batch_size: usize,
    pub data: DataConfig,
    pub model: ModelConfig,
    /// MoCo only: negatives, key encoder, shuffle-BN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moco: Option<MocoConfig>,
    /// InstDisc only: the memory bank and its objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instdisc: Option<InstDiscSection>,
    /// BYOL, SimSiam and MoCo v3: the prediction head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictor: Option<PredictorSection>,
    /// BYOL and MoCo v3: the momentum encoder's EMA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum_encoder: Option<MomentumEncoderSection>,
    /// SimSiam only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simsiam: Option<SimSiamSection>,
    pub loss: LossConfig,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub augmentation: AugmentationConfig,
    pub eval: EvalConfig,
    pub run: RunConfig,
}

/// Seeds of the three independent sources of randomness of a run; each one
/// absent is `seed`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Seeds {
    /// Initial weights, and the method's own draws: the queue's or bank's
    /// initial rows, shuffle-BN permutations, memory-bank negatives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<u64>,
    /// The order of the training images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<u64>,
    /// The random augmentations of every view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augmentation: Option<u64>,
}

impl Seeds {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Dataset folder; absent = discover (`$MOCCA_DATA`, `./data`, the per-user cache), else
    /// download CIFAR-10 into the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The dataset to find in the usual places (or download) when `path` and `$MOCCA_DATA`
    /// are not given; absent: CIFAR-10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetName>,
    /// The split trained on (labels unused).
    #[serde(default, skip_serializing_if = "TrainSplit::is_train")]
    pub train_split: TrainSplit,
    /// Side of the square crops the encoder sees.
    pub image_size: usize,
    /// Train and evaluate on these classes of an image folder only: a class-list file (class
    /// names separated by white space, e.g. solo-learn's `imagenet100_classes.txt`), or
    /// `"imagenet100"` for that list as solo-learn ships it (100 WordNet ids, CMC's subset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<String>,
    /// Labels for a test split whose images lie flat in `val/` (ImageNet as unpacked): a file
    /// of `name label` lines or Kaggle's `LOC_val_solution.csv`. Absent: found in the dataset
    /// folder when there (`LOC_val_solution.csv`, or the devkit's ground truth with its
    /// `meta.mat` or `map_clsloc.txt`, or the devkit archive `ILSVRC2012_devkit_t12.tar.gz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_labels: Option<String>,
}

impl DataConfig {
    /// The dataset looked for (and downloaded) when no folder is given.
    pub fn dataset(&self) -> mocca_data::download::Dataset {
        self.dataset
            .map_or(mocca_data::download::Dataset::Cifar10, DatasetName::dataset)
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Resnet18,
    Resnet34,
    Resnet50,
    /// timm's ViT-Tiny (D 192, 12 blocks, 3 heads), patch `model.patch_size`.
    VitTiny,
    /// timm's ViT-Small (D 384, 12 blocks, 6 heads), patch `model.patch_size`.
    VitSmall,
}

impl Arch {
    pub fn is_vit(self) -> bool {
        matches!(self, Self::VitTiny | Self::VitSmall)
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Stem {
    /// 3x3 stride-1 conv, no max-pool (32 px inputs).
    Cifar,
    /// 7x7 stride-2 conv + 3x3 stride-2 max-pool.
    Imagenet,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HeadKind {
    /// MoCo v1: one linear layer.
    Linear,
    /// MoCo v2: Linear → ReLU → Linear, hidden = `model.hidden_dim` [default: the feature
    /// width] (`model.head_layers` Linear layers, ReLU between, as lightly's
    /// `MoCoProjectionHead`).
    Mlp,
    /// SimCLR (lightly's SimCLRProjectionHead): Linear → BN → ReLU → Linear.
    Simclr,
    /// BYOL (lightly's BYOLProjectionHead): Linear → BN → ReLU → Linear (with bias).
    Byol,
    /// SimSiam (lightly's SimSiamProjectionHead): three Linear layers each followed by BN,
    /// the last without affine parameters.
    Simsiam,
    /// MoCo v3 (moco-v3's `_build_mlp`): `model.head_layers` Linear layers without bias,
    /// BN + ReLU between, BN without affine parameters after the last.
    Mocov3,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub arch: Arch,
    pub stem: Stem,
    /// Channel-width multiplier (1.0 = the standard ResNet).
    pub width: f64,
    pub head: HeadKind,
    /// The head's hidden width [default: the feature width for mlp and simclr heads; required
    /// for byol, simsiam and mocov3; the linear head has none].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_dim: Option<usize>,
    /// Linear layers of an mlp, simclr or mocov3 head [default: 2].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_layers: Option<usize>,
    /// ViT only: the side of the square patches [default: 4 for images up to 64 px, else 16].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_size: Option<usize>,
    /// ViT only: attention heads [default: timm's, vit-tiny 3, vit-small 6; moco-v3's
    /// ViT-S has 12].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_heads: Option<usize>,
    /// ViT only: timm's (learned position embedding, its initialisation) or mocov3's
    /// (`vits.py`: fixed 2-D sin-cos position embedding, Xavier initialisation) [default: timm].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vit_style: Option<VitStyleName>,
    /// ViT only: hold the patch embedding at its initial values (moco-v3's
    /// `--stop-grad-conv1`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub freeze_patch_embed: bool,
    pub out_dim: usize,
    pub zero_init_residual: bool,
    /// Initialisation of the convolutions after the stem.
    #[serde(default)]
    pub conv_init: ConvInit,
    /// Initialisation of the stem convolution.
    #[serde(default)]
    pub stem_init: ConvInit,
    /// ReLU after the stem's BatchNorm (lightly's CIFAR-10 benchmark backbone has none).
    #[serde(default = "yes")]
    pub stem_relu: bool,
    /// `f32`, or `bf16` mixed precision (f32 master weights, bf16 activations;
    /// see `mocca_methods::Precision`). Changes the trained weights' rounding,
    /// so a resumed run keeps it.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum VitStyleName {
    Timm,
    Mocov3,
}

impl ModelConfig {
    /// A ViT's patch side for `image_size` px images: `patch_size`, else 4 up to 64 px (the
    /// CIFAR ViTs) and 16 above (ImageNet's).
    pub fn vit_patch_size(&self, image_size: usize) -> usize {
        self.patch_size
            .unwrap_or(if image_size <= 64 { 4 } else { 16 })
    }
}

fn yes() -> bool {
    true
}

/// How a convolution's weights are drawn (`mocca_backbones::ConvInit`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ConvInit {
    /// torchvision's ResNet init: Kaiming-normal, fan-out, ReLU gain.
    #[default]
    KaimingNormalFanOut,
    /// PyTorch's `nn.Conv2d` default: uniform in ±1/√fan_in.
    TorchDefault,
}

impl ConvInit {
    pub fn to_backbones(self) -> mocca_backbones::ConvInit {
        match self {
            Self::KaimingNormalFanOut => mocca_backbones::ConvInit::KaimingNormalFanOut,
            Self::TorchDefault => mocca_backbones::ConvInit::TorchDefault,
        }
    }
}

/// The arithmetic of training (`model.precision`, `--precision`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            other => bail!("unknown precision `{other}`: expected f32 or bf16"),
        }
    }

    pub fn is_f32(&self) -> bool {
        *self == Self::F32
    }

    pub fn to_method(self) -> mocca_methods::Precision {
        match self {
            Self::F32 => mocca_methods::Precision::F32,
            Self::Bf16 => mocca_methods::Precision::Bf16,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Negatives {
    /// MoCo paper mechanism (c): a FIFO queue of momentum-encoder keys.
    Queue,
    /// Mechanism (b): a memory bank with one row per training sample (InstDisc).
    Bank,
    /// Mechanism (a): in-batch keys from the query encoder, gradients through both.
    EndToEnd,
}

impl Negatives {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "queue" => Ok(Self::Queue),
            "bank" => Ok(Self::Bank),
            "end-to-end" => Ok(Self::EndToEnd),
            other => bail!("unknown negatives `{other}`: expected queue, bank or end-to-end"),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MomentumSchedule {
    Constant,
    /// BYOL's m = 1 − (1 − m0)(cos(πk/K) + 1)/2.
    Cosine,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MocoConfig {
    pub negatives: Negatives,
    /// K: queue length, or negatives drawn from the bank per step.
    pub queue_size: usize,
    /// Key-encoder EMA momentum m.
    pub momentum: f64,
    pub momentum_schedule: MomentumSchedule,
    /// Where the cosine momentum schedule ends (solo-learn's `final_tau`; absent: 1, BYOL's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum_end: Option<f64>,
    /// SplitBatchNorm (the MoCo colab's single-device shuffle-BN): training-mode BatchNorm
    /// statistics over this many groups of the batch (1 = plain BN). The same name as the
    /// backbones' `ResNetConfig::bn_splits`; runs saved before it was renamed say
    /// `split_bn`, which is still read ([`LEGACY_KEYS`]).
    pub bn_splits: usize,
    /// Which samples share a SplitBatchNorm group: strided (the colab's and
    /// lightly's `SplitBatchNorm`) or contiguous (`ResNetConfig::bn_grouping`).
    #[serde(default)]
    pub bn_grouping: Grouping,
    /// Both views as queries.
    pub symmetric: bool,
    /// Sum (the MoCo colab, MoCo v3) or mean (lightly) of the symmetric loss's two terms.
    #[serde(default)]
    pub symmetric_reduction: Reduction,
    /// With `symmetric` and a queue: a queue per view, each query contrasted with the past keys
    /// of its positive's view (solo-learn's MoCo V2+), instead of one queue for both.
    #[serde(default, skip_serializing_if = "is_false")]
    pub per_view_queues: bool,
    /// With `negatives = "end-to-end"`: detach the keys, so that only the queries carry the
    /// gradient (an ablation of the MoCo paper's mechanism (a), which back-propagates through
    /// both).
    #[serde(default, skip_serializing_if = "is_false")]
    pub end_to_end_detach_keys: bool,
    /// Memory-bank row update momentum (InstDisc uses 0.5).
    pub bank_momentum: f64,
    /// Memory-bank negatives drawn for each query (InstDisc) or once per batch.
    #[serde(default)]
    pub bank_sampling: BankSampling,
}

/// The predictor `q` of BYOL, SimSiam and MoCo v3: Linear → BN → ReLU → Linear, from and to
/// `model.out_dim` (MoCo v3's last Linear has no bias, as moco-v3 builds it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PredictorSection {
    pub hidden_dim: usize,
    /// MoCo v3 only: BatchNorm without affine parameters after the last Linear (MoCo_ViT's
    /// predictor has it, MoCo_ResNet's not).
    #[serde(default, skip_serializing_if = "is_false")]
    pub last_bn: bool,
    /// Keep the predictor at the initial learning rate while the schedule moves the rest (the
    /// SimSiam paper's `--fix-pred-lr`, solo-learn's `static_lr`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub fixed_lr: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The momentum encoder of BYOL and MoCo v3: `θ_m ← m·θ_m + (1 − m)·θ` every step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MomentumEncoderSection {
    /// m, or the cosine schedule's starting value.
    pub momentum: f64,
    /// Constant, or BYOL's cosine increase from `momentum` to 1 over the run.
    pub schedule: MomentumSchedule,
}

/// SimSiam's switch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SimSiamSection {
    /// The stop-gradient on the target branch. `false` is the paper's collapse ablation
    /// (Fig. 2): kept to show the collapse monitor at work, never for training.
    pub stop_gradient: bool,
}

/// InstDisc's memory bank and objective (lemniscate's `--nce-k`, `--nce-m`; its `--nce-t` is
/// `loss.temperature`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InstDiscSection {
    /// The full softmax over every bank row (`--nce-k 0`) or NCE.
    pub objective: InstDiscObjectiveName,
    /// NCE's noise rows per sample (`--nce-k`; unused by the softmax).
    pub nce_k: usize,
    /// Momentum of the bank rows (`--nce-m`).
    pub memory_momentum: f64,
    /// The bank's initial rows.
    pub bank_init: BankInitName,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InstDiscObjectiveName {
    Softmax,
    Nce,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BankInitName {
    /// lemniscate's: uniform in ±1/√(D/3), not normalised.
    Uniform,
    /// Random unit vectors.
    UnitGaussian,
}

impl BankInitName {
    pub fn to_queue(self) -> mocca_queue::BankInit {
        match self {
            Self::Uniform => mocca_queue::BankInit::Uniform,
            Self::UnitGaussian => mocca_queue::BankInit::UnitGaussian,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Grouping {
    #[default]
    Strided,
    Contiguous,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Reduction {
    #[default]
    Sum,
    Mean,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BankSampling {
    #[default]
    PerQuery,
    Shared,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    pub temperature: f64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerName {
    Sgd,
    /// `torch.optim.AdamW` with its default betas and eps (MoCo v3's ViT optimizer).
    Adamw,
    /// LARS as lightly and solo-learn write it.
    Lars,
    /// LARS as MoCo v3's `moco/optimizer.py` writes it (trust ratio of the decayed gradient).
    LarsMocov3,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    pub name: OptimizerName,
    /// The learning rate used. Exactly one of `lr` and `base_lr` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// A learning rate for a batch of `lr_scale_batch` images, scaled linearly
    /// with the batch size (Goyal et al. 2017): the rate used is
    /// `base_lr * batch_size / lr_scale_batch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_lr: Option<f64>,
    /// The batch size `base_lr` is given for (unused with `lr`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lr_scale_batch: usize,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    /// Exclude BN parameters and biases from weight decay (and LARS adaptation).
    pub exclude_bn_bias: bool,
    /// LARS trust coefficient η (You et al. 2017).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_coefficient: Option<f64>,
    /// LARS (`name = "lars"`) only: solo-learn's `clip_lr`, the layer's rate capped at the
    /// learning rate (`η_l ← min(η_l / lr, 1)`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub clip_lr: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    Constant,
    Cosine,
    Step,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    /// Set the rate every step, or once per epoch (MoCo's code, lightly's benchmarks).
    #[serde(default)]
    pub per: SchedulePer,
    /// With `per = "epoch"`: the number of the first epoch, 0 (`main_moco.py`,
    /// lightly) or 1 (the MoCo colab, whose last epoch then trains at lr 0);
    /// not used with `per = "step"`.
    #[serde(default)]
    pub first_epoch: u64,
    /// Linear warmup from `warmup_start_lr`, in epochs (fractions allowed).
    pub warmup_epochs: f64,
    /// How the warmup counts its steps: `"lightly"` (`(s + 1)/W`, lightly's), `"from-zero"`
    /// (`s/W`: moco-v3's `adjust_learning_rate`, the SimCLR and BYOL papers' code, the first
    /// step at `warmup_start_lr`) or `"lightning"` (`s/(W − 1)`: Lightning Bolts'
    /// `LinearWarmupCosineAnnealingLR`, solo-learn's). Files that say
    /// `warmup_from_zero = true` mean `"from-zero"`.
    #[serde(default, skip_serializing_if = "WarmupStyle::is_lightly")]
    pub warmup: WarmupStyle,
    /// Where the warmup starts (solo-learn: 3e-5; everyone else: 0).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub warmup_start_lr: f64,
    /// `step` only: epochs at which the lr is multiplied by `gamma`.
    pub milestones: Vec<usize>,
    pub gamma: f64,
}

/// [`ScheduleConfig::warmup`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WarmupStyle {
    #[default]
    Lightly,
    FromZero,
    Lightning,
}

impl WarmupStyle {
    fn is_lightly(&self) -> bool {
        *self == Self::Lightly
    }

    pub fn warmup(self) -> mocca_methods::schedule::Warmup {
        match self {
            Self::Lightly => mocca_methods::schedule::Warmup::Lightly,
            Self::FromZero => mocca_methods::schedule::Warmup::FromZero,
            Self::Lightning => mocca_methods::schedule::Warmup::Lightning,
        }
    }
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulePer {
    #[default]
    Step,
    Epoch,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AugmentationConfig {
    /// A mocca-aug preset: mocov1, mocov2, simclr, mocov1-cifar, mocov2-cifar, simclr-cifar,
    /// instdisc-cifar.
    pub preset: String,
    /// Per-channel mean and std of the final `Normalize` (both or neither),
    /// replacing the preset's; training views and evaluation use them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<[f64; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<[f64; 3]>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EncoderChoice {
    /// The trained encoder (SimCLR's only one; MoCo's encoder_q).
    Query,
    /// MoCo's momentum encoder (encoder_k).
    Key,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LayerChoice {
    /// Pooled backbone features (the representation the papers evaluate).
    Backbone,
    /// Projection-head output.
    Head,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// kNN accuracy on the test split every this many epochs (0 = only at the end).
    pub knn_every: usize,
    /// Also evaluate the random initialisation before the first step.
    pub knn_at_start: bool,
    pub knn_k: usize,
    pub knn_t: f64,
    pub encoder: EncoderChoice,
    /// The features the kNN monitor reports first, and `eval knn` scores.
    pub layer: LayerChoice,
    /// More layers the kNN monitor scores each time (same encoder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_layers: Vec<LayerChoice>,
    /// Evaluation images (kNN, `eval`, lincls' test set) resized so that their shorter side
    /// is this many pixels, then centre-cropped to `data.image_size`: torchvision's
    /// `Resize(256)` + `CenterCrop(224)` of `main_lincls.py` and solo-learn. Absent: the
    /// largest centred square, resized to `data.image_size` (and nothing at all for images
    /// already of that size, such as CIFAR's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<usize>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// CUDA GPU 0 when this build has CUDA and a GPU is usable, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

impl DeviceKind {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            other => bail!("unknown device `{other}`: expected auto, cpu or cuda"),
        }
    }
}

/// How the run is executed; nothing here changes the trained weights, so these
/// may differ between a run and its resumption.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub device: DeviceKind,
    /// Write a `step` record to metrics.jsonl every this many steps.
    pub log_every: u64,
    /// The collapse monitor (std of the normalised embeddings, RankMe,
    /// alignment, uniformity of the step's own embeddings) every this many
    /// steps, in metrics.jsonl and the progress line (0 = off).
    #[serde(default = "default_collapse_every")]
    pub collapse_every: u64,
    /// Checkpoint every this many epochs (and always at the end and on Ctrl-C).
    pub checkpoint_every: usize,
    /// Also checkpoint every this many steps (0 = off).
    #[serde(default)]
    pub checkpoint_every_steps: u64,
    /// Checkpoints kept, the newest included: the older ones as
    /// `checkpoint.1.safetensors`, …, which `--resume` falls back on when
    /// the newest is damaged or missing (1 keeps only the newest).
    #[serde(default = "default_keep_checkpoints")]
    pub keep_checkpoints: usize,
    /// Stop (with a checkpoint) after this global step; the schedule still
    /// spans `epochs`, so a later `--resume` continues the same run. Applies
    /// to one invocation: it is not written to the run's saved config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_after_steps: Option<u64>,
    /// Examples per forward pass when extracting features for kNN / linear eval.
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
    /// kNN monitoring during training on an evenly spaced subset of this
    /// many training images (the neighbours) and test images (0 = all), to
    /// keep it cheap; `cargo xtask eval knn` always uses everything.
    #[serde(default)]
    pub knn_train_limit: usize,
    #[serde(default)]
    pub knn_test_limit: usize,
    /// Image folders: `"auto"` decodes them into memory when their pixels fit in
    /// `memory_budget_gb`, else file by file as batches need them; `"always"` / `"never"`
    /// force either. The trained weights are the same both ways. CIFAR, STL-10 and MNIST
    /// files are always read into memory.
    #[serde(default, skip_serializing_if = "StreamingMode::is_auto")]
    pub streaming: StreamingMode,
    /// Decoded pixels an image folder may take in memory (`streaming = "auto"`), in GiB.
    #[serde(
        default = "default_memory_budget_gb",
        skip_serializing_if = "is_default_memory_budget"
    )]
    pub memory_budget_gb: f64,
    /// A streamed file that does not decode (truncated, corrupt) is skipped with a warning
    /// naming it and a `skipped_file` record in metrics.jsonl, its place in the batch taken by
    /// the next image of the batch; `false` (`--strict`) stops the run instead, with a
    /// checkpoint of the steps done.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub skip_bad_files: bool,
    /// Keep the listings of large image folders in the per-user cache (`…/mocca/listings`)
    /// so that the next run starts without walking the tree.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub cache_listings: bool,
}

/// [`RunConfig::streaming`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StreamingMode {
    #[default]
    Auto,
    Always,
    Never,
}

impl StreamingMode {
    fn is_auto(&self) -> bool {
        *self == Self::Auto
    }

    pub fn streaming(self) -> mocca_data::Streaming {
        match self {
            Self::Auto => mocca_data::Streaming::Auto,
            Self::Always => mocca_data::Streaming::Always,
            Self::Never => mocca_data::Streaming::Never,
        }
    }
}

fn default_memory_budget_gb() -> f64 {
    4.0
}

fn is_default_memory_budget(v: &f64) -> bool {
    *v == default_memory_budget_gb()
}

fn is_true(v: &bool) -> bool {
    *v
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

fn default_eval_batch() -> usize {
    256
}

fn default_collapse_every() -> u64 {
    10
}

fn default_keep_checkpoints() -> usize {
    2
}

const PRESETS: &[(&str, &str)] = &[
    ("moco-cifar", include_str!("presets/moco-cifar.toml")),
    ("moco-paper", include_str!("presets/moco-paper.toml")),
    ("moco-cifar100", include_str!("presets/moco-cifar100.toml")),
    (
        "mocov2-cifar100",
        include_str!("presets/mocov2-cifar100.toml"),
    ),
    (
        "simclr-cifar100",
        include_str!("presets/simclr-cifar100.toml"),
    ),
    ("moco-stl10", include_str!("presets/moco-stl10.toml")),
    ("mocov2-stl10", include_str!("presets/mocov2-stl10.toml")),
    ("simclr-stl10", include_str!("presets/simclr-stl10.toml")),
    ("mocov2-cifar", include_str!("presets/mocov2-cifar.toml")),
    ("mocov2-paper", include_str!("presets/mocov2-paper.toml")),
    ("simclr-cifar", include_str!("presets/simclr-cifar.toml")),
    ("simclr-paper", include_str!("presets/simclr-paper.toml")),
    ("byol-cifar", include_str!("presets/byol-cifar.toml")),
    ("byol-paper", include_str!("presets/byol-paper.toml")),
    ("simsiam-cifar", include_str!("presets/simsiam-cifar.toml")),
    ("simsiam-paper", include_str!("presets/simsiam-paper.toml")),
    ("mocov3-cifar", include_str!("presets/mocov3-cifar.toml")),
    ("mocov3-paper", include_str!("presets/mocov3-paper.toml")),
    (
        "mocov3-paper-vit",
        include_str!("presets/mocov3-paper-vit.toml"),
    ),
    (
        "simclr-imagenet100",
        include_str!("presets/simclr-imagenet100.toml"),
    ),
    (
        "byol-imagenet100",
        include_str!("presets/byol-imagenet100.toml"),
    ),
    (
        "simsiam-imagenet100",
        include_str!("presets/simsiam-imagenet100.toml"),
    ),
    (
        "mocov3-imagenet100",
        include_str!("presets/mocov3-imagenet100.toml"),
    ),
    (
        "mocov2-imagenet100",
        include_str!("presets/mocov2-imagenet100.toml"),
    ),
    (
        "instdisc-cifar",
        include_str!("presets/instdisc-cifar.toml"),
    ),
    (
        "instdisc-cifar100",
        include_str!("presets/instdisc-cifar100.toml"),
    ),
];

fn preset_doc(name: &str) -> toml::Table {
    let text = PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .expect("every method x recipe has a preset");
    let mut doc: toml::Table = toml::from_str(text).expect("embedded presets parse");
    match doc.remove("base") {
        Some(toml::Value::String(base)) => {
            let mut full = preset_doc(&base);
            merge(&mut full, doc);
            full
        }
        Some(_) => panic!("preset {name}: base is the name of another preset"),
        None => doc,
    }
}

/// Keys renamed since runs were first saved: (section, old, new). Saved runs (their
/// `config.toml` and the config inside each checkpoint) and users' files keep working.
pub const LEGACY_KEYS: &[(&str, &str, &str)] = &[
    ("moco", "split_bn", "bn_splits"),
    ("moco", "split_bn_grouping", "bn_grouping"),
];

/// Rewrites `LEGACY_KEYS` in a (partial) document to their current names, and
/// `schedule.warmup_from_zero` (a flag until `schedule.warmup` had three values) to its value.
fn rename_legacy_keys(doc: &mut toml::Table) {
    if let Some(toml::Value::Table(t)) = doc.get_mut("schedule") {
        match t.remove("warmup_from_zero") {
            Some(toml::Value::Boolean(true)) => {
                t.insert("warmup".into(), toml::Value::String("from-zero".into()));
            }
            Some(toml::Value::Boolean(false)) | None => {}
            Some(other) => {
                // Not a flag: left for the deserialiser to name as an unknown key.
                t.insert("warmup_from_zero".into(), other);
            }
        }
    }
    for (section, old, new) in LEGACY_KEYS {
        if let Some(toml::Value::Table(t)) = doc.get_mut(*section) {
            if let Some(v) = t.remove(*old) {
                t.insert(new.to_string(), v);
            }
        }
    }
}

/// The current name of a dotted key that may use an old name.
fn current_key(key: &str) -> String {
    for (section, old, new) in LEGACY_KEYS {
        if key == format!("{section}.{old}") {
            return format!("{section}.{new}");
        }
    }
    key.to_string()
}

/// Builds configs from the layers described in the module docs.
pub struct ConfigBuilder {
    doc: toml::Table,
}

impl ConfigBuilder {
    /// The embedded preset of `method` x `recipe`. A preset may start from another one
    /// (`base = "mocov2-cifar"`) and give only what differs. A method without that recipe
    /// ([`MethodName::recipes`]) is an error naming the ones it has.
    pub fn from_preset(method: MethodName, recipe: Recipe) -> Result<Self> {
        if !method.recipes().contains(&recipe) {
            let have: Vec<&str> = method.recipes().iter().map(|r| r.as_str()).collect();
            bail!(
                "{} has no `{}` recipe; its recipes: {}",
                method.as_str(),
                recipe.as_str(),
                have.join(", ")
            );
        }
        Ok(Self {
            doc: preset_doc(&format!("{}-{}", method.as_str(), recipe.as_str())),
        })
    }

    /// Starts from a complete document (e.g. a run's saved `config.toml`).
    pub fn from_text(text: &str, origin: &str) -> Result<Self> {
        let mut doc: toml::Table =
            toml::from_str(text).map_err(|e| invalid!("{origin}: {}", e.to_string().trim_end()))?;
        rename_legacy_keys(&mut doc);
        Ok(Self { doc })
    }

    /// Merges a (partial) TOML document over the current one.
    pub fn merge_text(&mut self, text: &str, origin: &str) -> Result<()> {
        let mut overlay: toml::Table =
            toml::from_str(text).map_err(|e| invalid!("{origin}: {}", e.to_string().trim_end()))?;
        rename_legacy_keys(&mut overlay);
        merge(&mut self.doc, overlay);
        Ok(())
    }

    pub fn merge_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
            what: "cannot read config file",
            path: path.to_path_buf(),
            source,
        })?;
        self.merge_text(&text, &path.display().to_string())
    }

    /// `key.path=value`; the value is TOML (`0.1`, `true`, `"queue"`), and a
    /// bare word that is not valid TOML is taken as a string (`negatives=bank`).
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| invalid!("--set expects key=value, got `{assignment}`"))?;
        let key = key.trim();
        let value = value.trim();
        let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut t) => t.remove("v").expect("just parsed"),
            Err(_) => toml::Value::String(value.to_string()),
        };
        self.set_value(key, parsed)
    }

    pub fn set_value(&mut self, key: &str, value: toml::Value) -> Result<()> {
        let key = current_key(key);
        let key = key.as_str();
        let parts: Vec<&str> = key.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            bail!("bad config key `{key}`");
        }
        let mut table = &mut self.doc;
        for part in &parts[..parts.len() - 1] {
            let entry = table
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry
                .as_table_mut()
                .ok_or_else(|| invalid!("config key `{key}`: `{part}` is not a section"))?;
        }
        let last = parts[parts.len() - 1];
        if parts.len() == 2 {
            drop_excluded(parts[0], table, last);
        }
        table.insert(last.to_string(), value);
        Ok(())
    }

    /// The method named in the document so far (after merging a user file).
    pub fn method(&self) -> Option<&str> {
        self.doc.get("method").and_then(|v| v.as_str())
    }

    /// A top-level string value of the document, if present.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.doc
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    pub fn build(&self) -> Result<TrainConfig> {
        let mut doc = self.doc.clone();
        rename_legacy_keys(&mut doc);
        let text = toml::to_string(&doc).expect("a toml table serialises");
        let cfg: TrainConfig = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|s| key_path_at(&text, s.start))
                .unwrap_or_default();
            let msg = e.message().trim_end();
            if at.is_empty() {
                invalid!("invalid configuration: {msg}")
            } else {
                invalid!("invalid configuration at `{at}`: {msg}")
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The dotted key at byte `pos` of a serialised document: toml's own message
/// points at a line of the merged document, which the user never wrote.
fn key_path_at(text: &str, pos: usize) -> String {
    let before = &text[..pos.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let section = before[..line_start]
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')))
        .map(|s| s.trim().to_string());
    let trimmed = line.trim();
    if trimmed.starts_with('[') {
        return trimmed.trim_matches(|c| c == '[' || c == ']').to_string();
    }
    let key = trimmed.split('=').next().unwrap_or("").trim().to_string();
    match section {
        Some(s) if !key.is_empty() => format!("{s}.{key}"),
        Some(s) => s,
        None => key,
    }
}

/// Keys of one section of which a layer sets at most one: setting one drops
/// the other from the layers below.
const EXCLUSIVE: &[(&str, &str, &str)] = &[("optimizer", "lr", "base_lr")];

fn drop_excluded(section: &str, base: &mut toml::Table, set: &str) {
    for (s, a, b) in EXCLUSIVE {
        if *s == section {
            if set == *a {
                base.remove(*b);
            } else if set == *b {
                base.remove(*a);
            }
        }
    }
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    merge_section("", base, overlay)
}

fn merge_section(section: &str, base: &mut toml::Table, overlay: toml::Table) {
    for (k, v) in overlay {
        drop_excluded(section, base, &k);
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_section(&k, b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl TrainConfig {
    /// The lr actually used: `optimizer.lr`, or `base_lr` scaled to the batch.
    pub fn effective_lr(&self) -> f64 {
        match (self.optimizer.lr, self.optimizer.base_lr) {
            (Some(lr), _) => lr,
            (None, Some(base)) => {
                base * self.batch_size as f64 / self.optimizer.lr_scale_batch.max(1) as f64
            }
            (None, None) => 0.0,
        }
    }

    /// The seed of the initial weights and the method's draws.
    pub fn init_seed(&self) -> u64 {
        self.seeds.init.unwrap_or(self.seed)
    }

    /// The seed of the data order.
    pub fn data_seed(&self) -> u64 {
        self.seeds.data.unwrap_or(self.seed)
    }

    /// The seed of the augmentations.
    pub fn aug_seed(&self) -> u64 {
        self.seeds.augmentation.unwrap_or(self.seed)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }

    /// Checks the settings that need no data; dataset-dependent checks
    /// (batch larger than the dataset, bank size) happen when data is loaded.
    ///
    /// The settings the libraries check themselves are checked here by the libraries' own rules
    /// (`mocca_methods::optim::rules`, ...), reported under this file's keys; only what exists
    /// in the file alone (epochs, sections, the batch size's relation to other settings) is
    /// checked by rules of its own.
    pub fn validate(&self) -> Result<()> {
        use mocca_methods::eval::knn_rules;
        use mocca_methods::optim::rules as optim;
        use mocca_methods::schedule::rules as schedule;
        let pos = |name: &str, v: f64| -> Result<()> {
            if !(v.is_finite() && v > 0.0) {
                bail!("{name} must be a positive number, got {v}");
            }
            Ok(())
        };
        let lib = |key: &str, rule: std::result::Result<(), mocca_core::check::Invalid>| {
            rule.map_err(|e| invalid!("{key} {e}"))
        };
        if self.epochs == 0 {
            bail!("epochs must be at least 1");
        }
        if self.batch_size < 2 {
            bail!(
                "batch_size must be at least 2 (contrastive losses need negatives), got {}",
                self.batch_size
            );
        }
        if self.data.image_size < 8 {
            bail!(
                "data.image_size must be at least 8, got {}",
                self.data.image_size
            );
        }
        pos("model.width", self.model.width)?;
        if self.model.out_dim == 0 {
            bail!("model.out_dim must be at least 1");
        }
        lib(
            "loss.temperature",
            mocca_losses::rules::temperature(self.loss.temperature),
        )?;
        match (self.optimizer.lr, self.optimizer.base_lr) {
            (Some(_), Some(_)) => bail!(
                "optimizer.lr and optimizer.base_lr are both set: give the rate used (lr) or \
                 one scaled with the batch (base_lr with lr_scale_batch), not both"
            ),
            (None, None) => bail!("optimizer.lr (or optimizer.base_lr) is missing"),
            (Some(lr), None) => lib("optimizer.lr", optim::lr(lr))?,
            (None, Some(base_lr)) => {
                lib("optimizer.base_lr", optim::lr(base_lr))?;
                if self.optimizer.lr_scale_batch == 0 {
                    bail!(
                        "optimizer.base_lr needs optimizer.lr_scale_batch, the batch size it is \
                         given for"
                    );
                }
            }
        }
        match (&self.augmentation.mean, &self.augmentation.std) {
            (Some(_), None) | (None, Some(_)) => {
                bail!("augmentation.mean and augmentation.std go together: give both or neither")
            }
            (Some(m), Some(s)) => {
                if let Err(e) = mocca_aug::Normalize::new(*m, *s) {
                    bail!("augmentation.mean / std: {e}");
                }
            }
            _ => {}
        }
        let o = &self.optimizer;
        lib("optimizer.momentum", optim::momentum(o.momentum))?;
        lib(
            "optimizer.weight_decay",
            optim::weight_decay(o.weight_decay),
        )?;
        // The file has no dampening: the trainer's SGD runs with torch's default, 0.
        lib(
            "optimizer.nesterov",
            optim::nesterov(o.nesterov, o.momentum, 0.0),
        )?;
        match (o.name, o.trust_coefficient) {
            (OptimizerName::Lars | OptimizerName::LarsMocov3, Some(t)) => {
                lib("optimizer.trust_coefficient", optim::trust_coefficient(t))?
            }
            (OptimizerName::Sgd | OptimizerName::Adamw, Some(_)) => {
                bail!(
                    "optimizer.trust_coefficient applies to LARS only (optimizer.name = \"lars\")"
                )
            }
            _ => {}
        }
        if let Some(r) = self.eval.resize {
            if r < self.data.image_size {
                bail!(
                    "eval.resize = {r} is smaller than data.image_size = {}: the centre crop \
                     must fit the resized image",
                    self.data.image_size
                );
            }
        }
        if o.clip_lr && o.name != OptimizerName::Lars {
            bail!("optimizer.clip_lr applies to LARS only (optimizer.name = \"lars\")");
        }
        if !(self.schedule.warmup_epochs.is_finite() && self.schedule.warmup_epochs >= 0.0) {
            bail!("schedule.warmup_epochs must be >= 0");
        }
        lib(
            "schedule.warmup_start_lr",
            optim::lr(self.schedule.warmup_start_lr),
        )?;
        if self.schedule.kind == ScheduleKind::Step {
            lib(
                "schedule.milestones",
                schedule::milestones(&self.schedule.milestones),
            )?;
            lib("schedule.gamma", schedule::gamma(self.schedule.gamma))?;
        }
        if self.schedule.kind != ScheduleKind::Cosine && self.schedule.warmup_epochs > 0.0 {
            bail!("schedule.warmup_epochs is supported with schedule.kind = \"cosine\" only");
        }
        if let Err(e) = self.augmentation.preset.parse::<mocca_aug::Preset>() {
            bail!("augmentation.preset: {e}");
        }
        lib("eval.knn_k", knn_rules::k(self.eval.knn_k))?;
        lib("eval.knn_t", knn_rules::temperature(self.eval.knn_t))?;
        if self.run.log_every == 0 {
            bail!("run.log_every must be at least 1");
        }
        if self.run.eval_batch_size == 0 {
            bail!("run.eval_batch_size must be at least 1");
        }
        let instdisc = self.method == MethodName::Instdisc;
        match (instdisc, &self.instdisc) {
            (true, None) => bail!("method instdisc needs an [instdisc] section"),
            (false, Some(_)) => bail!(
                "the [instdisc] section applies to instdisc only, not {}",
                self.method.as_str()
            ),
            (true, Some(i)) => {
                lib(
                    "instdisc.memory_momentum",
                    mocca_queue::rules::momentum(i.memory_momentum),
                )?;
                if i.objective == InstDiscObjectiveName::Nce {
                    lib("instdisc.nce_k", mocca_queue::rules::size(i.nce_k))?;
                }
            }
            (false, None) => {}
        }
        let m = self.method;
        if self.predictor.as_ref().is_some_and(|p| p.last_bn) && m != MethodName::Mocov3 {
            bail!("predictor.last_bn applies to mocov3 only (MoCo_ViT's predictor)");
        }
        match (m.has_predictor(), &self.predictor) {
            (true, None) => bail!("method {} needs a [predictor] section", m.as_str()),
            (false, Some(_)) => bail!(
                "the [predictor] section applies to byol, simsiam and mocov3 only, not {}",
                m.as_str()
            ),
            (true, Some(p)) if p.hidden_dim == 0 => {
                bail!("predictor.hidden_dim must be at least 1")
            }
            _ => {}
        }
        let ema = matches!(m, MethodName::Byol | MethodName::Mocov3);
        match (ema, &self.momentum_encoder) {
            (true, None) => bail!("method {} needs a [momentum_encoder] section", m.as_str()),
            (false, Some(_)) => bail!(
                "the [momentum_encoder] section applies to byol and mocov3 only, not {} (MoCo                  v1/v2 keep theirs in [moco])",
                m.as_str()
            ),
            (true, Some(e)) => lib(
                "momentum_encoder.momentum",
                mocca_queue::rules::momentum(e.momentum),
            )?,
            _ => {}
        }
        if self.simsiam.is_some() && m != MethodName::Simsiam {
            bail!(
                "the [simsiam] section applies to simsiam only, not {}",
                m.as_str()
            );
        }
        let head_ok = match self.model.head {
            HeadKind::Byol => m == MethodName::Byol,
            HeadKind::Simsiam => m == MethodName::Simsiam,
            HeadKind::Mocov3 => m == MethodName::Mocov3,
            _ => true,
        };
        if !head_ok {
            bail!(
                "model.head = \"{}\" is {}'s projector, not {}'s",
                serde_plain_head(self.model.head),
                serde_plain_head(self.model.head),
                m.as_str()
            );
        }
        if matches!(
            self.model.head,
            HeadKind::Byol | HeadKind::Simsiam | HeadKind::Mocov3
        ) && self.model.hidden_dim.is_none()
        {
            bail!(
                "model.hidden_dim is required with model.head = \"{}\"",
                serde_plain_head(self.model.head)
            );
        }
        if self.model.arch.is_vit() {
            if self.model.width != 1.0 {
                bail!(
                    "model.width = {} scales ResNet channels; a ViT's width is its arch \
                     (vit-tiny 192, vit-small 384): set model.width = 1.0",
                    self.model.width
                );
            }
            let p = self.model.vit_patch_size(self.data.image_size);
            if p == 0 || !self.data.image_size.is_multiple_of(p) {
                bail!(
                    "model.patch_size ({p}) must divide data.image_size ({})",
                    self.data.image_size
                );
            }
            if let Some(h) = self.model.num_heads {
                let d: usize = if self.model.arch == Arch::VitTiny {
                    192
                } else {
                    384
                };
                if h == 0 || !d.is_multiple_of(h) {
                    bail!("model.num_heads ({h}) must divide the ViT's width {d}");
                }
            }
        } else if self.model.patch_size.is_some()
            || self.model.num_heads.is_some()
            || self.model.vit_style.is_some()
            || self.model.freeze_patch_embed
        {
            bail!(
                "model.patch_size, num_heads, vit_style and freeze_patch_embed apply to ViTs only \
                 (model.arch = \"vit-tiny\" or \"vit-small\")"
            );
        }
        if self.model.hidden_dim == Some(0) || self.model.head_layers == Some(0) {
            bail!("model.hidden_dim and model.head_layers must be at least 1");
        }
        // A size the head has no use for is an error, not a silent no-op.
        let head = serde_plain_head(self.model.head);
        if self.model.head == HeadKind::Linear && self.model.hidden_dim.is_some() {
            bail!(
                "model.hidden_dim has no effect on the linear head (MoCo v1's single Linear): \
                 remove it, or use model.head = \"mlp\""
            );
        }
        if self.model.head_layers.is_some()
            && matches!(
                self.model.head,
                HeadKind::Linear | HeadKind::Byol | HeadKind::Simsiam
            )
        {
            bail!(
                "model.head_layers has no effect on the {head} head, whose depth is fixed; it \
                 sets the mlp, simclr and mocov3 heads' number of Linear layers"
            );
        }
        match (self.method.is_moco(), &self.moco) {
            (true, None) => bail!("method {} needs a [moco] section", self.method.as_str()),
            (false, Some(_)) => bail!(
                "the [moco] section applies to moco and mocov2 only, not {}",
                self.method.as_str()
            ),
            (false, None) => {
                if self.eval.encoder == EncoderChoice::Key && !m.has_momentum_encoder() {
                    bail!(
                        "eval.encoder = \"key\": {} has no key encoder",
                        self.method.as_str()
                    );
                }
            }
            (true, Some(m)) => {
                lib("moco.momentum", mocca_queue::rules::momentum(m.momentum))?;
                lib(
                    "moco.bank_momentum",
                    mocca_queue::rules::momentum(m.bank_momentum),
                )?;
                if m.bn_splits == 0 || !self.batch_size.is_multiple_of(m.bn_splits) {
                    bail!(
                        "moco.bn_splits ({}) must divide batch_size ({}): each BN group needs the same size",
                        m.bn_splits,
                        self.batch_size
                    );
                }
                if m.bn_splits > 1 && self.batch_size / m.bn_splits < 2 {
                    bail!(
                        "moco.bn_splits ({}) leaves {} sample(s) per BN group; BatchNorm needs at least 2",
                        m.bn_splits,
                        self.batch_size / m.bn_splits
                    );
                }
                if m.negatives == Negatives::Queue && m.queue_size < self.batch_size {
                    bail!(
                        "moco.queue_size ({}) is smaller than batch_size ({}): one step would overwrite \
                         its own keys; use a queue of at least one batch",
                        m.queue_size,
                        self.batch_size
                    );
                }
                if m.negatives != Negatives::EndToEnd {
                    lib("moco.queue_size", mocca_queue::rules::size(m.queue_size))?;
                }
                if let Some(end) = m.momentum_end {
                    lib("moco.momentum_end", mocca_queue::rules::momentum(end))?;
                    if m.momentum_schedule != MomentumSchedule::Cosine {
                        bail!(
                            "moco.momentum_end ({end}) is where the cosine momentum schedule \
                             ends; set moco.momentum_schedule = \"cosine\" or remove it"
                        );
                    }
                }
                if m.end_to_end_detach_keys && m.negatives != Negatives::EndToEnd {
                    bail!(
                        "moco.end_to_end_detach_keys applies to moco.negatives = \"end-to-end\" \
                         only"
                    );
                }
                if m.per_view_queues && !(m.symmetric && m.negatives == Negatives::Queue) {
                    bail!(
                        "moco.per_view_queues needs moco.symmetric = true and moco.negatives = \
                         \"queue\": each view's queries are scored against the other view's \
                         past keys"
                    );
                }
            }
        }
        Ok(())
    }
}

/// A head kind's name as the config file writes it.
fn serde_plain_head(h: HeadKind) -> &'static str {
    match h {
        HeadKind::Linear => "linear",
        HeadKind::Mlp => "mlp",
        HeadKind::Simclr => "simclr",
        HeadKind::Byol => "byol",
        HeadKind::Simsiam => "simsiam",
        HeadKind::Mocov3 => "mocov3",
    }
}

/// The settings that decide the trained weights (everything but `[run]`,
/// `[eval]`, `data.path` and `data.val_labels`) on which `a` and `b` differ, as dotted keys. A
/// resumed run must agree with its checkpoint on all of them.
pub fn trajectory_diff(a: &TrainConfig, b: &TrainConfig) -> Vec<String> {
    let table = |c: &TrainConfig| {
        let mut t: toml::Table = toml::from_str(&c.to_toml()).expect("config round-trips");
        t.remove("run");
        t.remove("eval");
        if let Some(toml::Value::Table(d)) = t.get_mut("data") {
            d.remove("path");
            d.remove("val_labels");
        }
        t
    };
    let mut out = Vec::new();
    diff_tables("", &table(a), &table(b), &mut out);
    out
}

fn diff_tables(prefix: &str, a: &toml::Table, b: &toml::Table, out: &mut Vec<String>) {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (a.get(k), b.get(k)) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                diff_tables(&path, x, y, out)
            }
            (x, y) if x != y => out.push(path),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_validates() {
        for method in MethodName::ALL {
            assert_eq!(MethodName::parse(method.as_str()).unwrap(), method);
            for &recipe in method.recipes() {
                let cfg = ConfigBuilder::from_preset(method, recipe)
                    .unwrap()
                    .build()
                    .unwrap();
                assert_eq!(cfg.method, method);
                assert_eq!(cfg.recipe, recipe);
            }
        }
    }

    const METHODS: [MethodName; 3] = [MethodName::Moco, MethodName::Mocov2, MethodName::Simclr];

    /// The CIFAR preset of `method` with `sets` applied, built.
    fn build_with(method: MethodName, sets: &[&str]) -> Result<TrainConfig> {
        let mut b = ConfigBuilder::from_preset(method, Recipe::Cifar).unwrap();
        for s in sets {
            b.set(s).unwrap();
        }
        b.build()
    }

    fn build_err(method: MethodName, sets: &[&str]) -> String {
        build_with(method, sets).unwrap_err().to_string()
    }

    #[test]
    fn head_sizes_a_head_does_not_use_are_errors() {
        let err = build_err(MethodName::Moco, &["model.hidden_dim=256"]);
        assert!(err.contains("linear head"), "{err}");
        let err = build_err(MethodName::Byol, &["model.head_layers=3"]);
        assert!(err.contains("byol head"), "{err}");
        // The mlp head takes both (lightly's MoCoProjectionHead).
        let cfg = build_with(
            MethodName::Mocov2,
            &["model.hidden_dim=96", "model.head_layers=3"],
        )
        .unwrap();
        assert_eq!(
            (cfg.model.hidden_dim, cfg.model.head_layers),
            (Some(96), Some(3))
        );
    }

    #[test]
    fn moco_options_of_another_mode_are_errors_naming_what_they_need() {
        let err = build_err(MethodName::Moco, &["moco.per_view_queues=true"]);
        assert!(err.contains("moco.symmetric"), "{err}");
        let err = build_err(MethodName::Moco, &["moco.momentum_end=0.999"]);
        assert!(err.contains("cosine"), "{err}");
        let err = build_err(MethodName::Moco, &["moco.end_to_end_detach_keys=true"]);
        assert!(err.contains("end-to-end"), "{err}");
        let cfg = build_with(
            MethodName::Moco,
            &[
                "moco.negatives=\"end-to-end\"",
                "moco.end_to_end_detach_keys=true",
            ],
        )
        .unwrap();
        assert!(cfg.moco.unwrap().end_to_end_detach_keys);
    }

    #[test]
    fn byol_and_mocov3_need_a_momentum_encoder_section_simsiam_refuses_one() {
        let mut b = ConfigBuilder::from_preset(MethodName::Simsiam, Recipe::Cifar).unwrap();
        b.set("momentum_encoder.momentum=0.99").unwrap();
        b.set("momentum_encoder.schedule=\"constant\"").unwrap();
        let err = b.build().unwrap_err().to_string();
        assert!(err.contains("applies to byol and mocov3 only"), "{err}");
        let err = build_err(MethodName::Byol, &["momentum_encoder.momentum=1.5"]);
        assert!(err.contains("momentum_encoder.momentum"), "{err}");
    }

    #[test]
    fn a_projector_of_another_method_is_refused_naming_both() {
        let err = build_err(MethodName::Simsiam, &["model.head=\"byol\""]);
        assert!(err.contains("byol") && err.contains("simsiam"), "{err}");
        let err = build_err(MethodName::Moco, &["predictor.hidden_dim=64"]);
        assert!(err.contains("[predictor] section applies to"), "{err}");
    }

    #[test]
    fn the_siamese_recipes_name_their_references_settings() {
        let byol = preset(MethodName::Byol, Recipe::Cifar);
        assert_eq!(
            (
                byol.model.hidden_dim,
                byol.model.out_dim,
                byol.predictor.clone().unwrap().hidden_dim
            ),
            (Some(1024), 256, 1024)
        );
        assert_eq!(byol.augmentation.preset, "byol-cifar");
        let simsiam = preset(MethodName::Simsiam, Recipe::Cifar);
        assert_eq!(
            (simsiam.model.head, simsiam.model.out_dim),
            (HeadKind::Simclr, 2048)
        );
        assert_eq!(simsiam.optimizer.lr, Some(0.06));
        let v3 = preset(MethodName::Mocov3, Recipe::Cifar);
        assert_eq!(v3.optimizer.name, OptimizerName::LarsMocov3);
        assert_eq!(
            v3.momentum_encoder.clone().unwrap().schedule,
            MomentumSchedule::Cosine
        );
        for m in [MethodName::Byol, MethodName::Simsiam, MethodName::Mocov3] {
            let err = ConfigBuilder::from_preset(m, Recipe::Stl10)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("cifar, paper"), "{err}");
        }
    }

    #[test]
    fn a_method_without_a_recipe_is_an_error_naming_the_ones_it_has() {
        let err = ConfigBuilder::from_preset(MethodName::Instdisc, Recipe::Stl10)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "instdisc has no `stl10` recipe; its recipes: cifar, cifar100"
        );
    }

    #[test]
    fn the_instdisc_recipe_is_lemniscates_cifar_command() {
        let cfg = preset(MethodName::Instdisc, Recipe::Cifar);
        let i = cfg.instdisc.as_ref().unwrap();
        assert_eq!(i.objective, InstDiscObjectiveName::Softmax);
        assert_eq!((i.memory_momentum, cfg.loss.temperature), (0.5, 0.1));
        assert_eq!(
            (cfg.batch_size, cfg.epochs, cfg.effective_lr()),
            (128, 200, 0.03)
        );
        assert_eq!(cfg.schedule.milestones, vec![120, 160]);
        assert_eq!(cfg.augmentation.preset, "instdisc-cifar");
        assert!(cfg.moco.is_none());
    }

    #[test]
    fn an_instdisc_section_belongs_to_instdisc_only() {
        let mut b = ConfigBuilder::from_preset(MethodName::Simclr, Recipe::Cifar).unwrap();
        b.set("instdisc.objective=\"nce\"").unwrap();
        b.set("instdisc.nce_k=16").unwrap();
        b.set("instdisc.memory_momentum=0.5").unwrap();
        b.set("instdisc.bank_init=\"uniform\"").unwrap();
        let err = b.build().unwrap_err().to_string();
        assert!(err.contains("applies to instdisc only"), "{err}");
    }

    fn preset(method: MethodName, recipe: Recipe) -> TrainConfig {
        ConfigBuilder::from_preset(method, recipe)
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    fn the_cifar100_recipes_are_the_cifar_ones_on_cifar100() {
        for method in METHODS {
            let (c10, c100) = (
                preset(method, Recipe::Cifar),
                preset(method, Recipe::Cifar100),
            );
            assert_eq!(c100.data.dataset, Some(DatasetName::Cifar100));
            assert_eq!(c100.data.dataset(), mocca_data::download::Dataset::Cifar100);
            assert_eq!(c10.data.dataset(), mocca_data::download::Dataset::Cifar10);
            let mean = c100.augmentation.mean.unwrap();
            if method == MethodName::Simclr {
                assert_eq!(mean, [0.485, 0.456, 0.406], "lightly's ImageNet statistics");
            } else {
                assert_eq!(
                    mean,
                    [0.5071, 0.4865, 0.4409],
                    "solo-learn's CIFAR-100 mean"
                );
            }
            let same = TrainConfig {
                recipe: Recipe::Cifar,
                data: c10.data.clone(),
                augmentation: c10.augmentation.clone(),
                ..c100.clone()
            };
            assert_eq!(same, c10, "{}: only the data differs", method.as_str());
        }
    }

    #[test]
    fn the_stl10_recipes_keep_the_cifar_methods_on_solo_learns_stl10_data() {
        for method in METHODS {
            let (cifar, stl) = (preset(method, Recipe::Cifar), preset(method, Recipe::Stl10));
            assert_eq!(stl.data.dataset, Some(DatasetName::Stl10));
            assert_eq!(stl.data.train_split, TrainSplit::TrainUnlabeled);
            assert_eq!(stl.data.image_size, 96);
            assert_eq!(stl.model.stem, Stem::Imagenet);
            assert!(stl.model.stem_relu);
            assert_eq!(stl.augmentation.mean, Some([0.4914, 0.4823, 0.4466]));
            assert_eq!(stl.augmentation.std, Some([0.247, 0.243, 0.261]));
            let aug = match method {
                MethodName::Moco => "mocov1",
                MethodName::Mocov2 => "mocov2",
                MethodName::Simclr => "simclr",
                other => unreachable!("{} has no stl10 recipe", other.as_str()),
            };
            assert_eq!(stl.augmentation.preset, aug);
            // The method's own settings are the CIFAR recipe's.
            assert_eq!(
                (stl.epochs, stl.batch_size, stl.model.head, stl.model.width),
                (
                    cifar.epochs,
                    cifar.batch_size,
                    cifar.model.head,
                    cifar.model.width
                )
            );
            assert_eq!(stl.moco, cifar.moco);
            assert_eq!(stl.loss, cifar.loss);
            assert_eq!(stl.optimizer, cifar.optimizer);
            assert_eq!(stl.schedule, cifar.schedule);
            assert_eq!(stl.eval, cifar.eval);
        }
    }

    #[test]
    fn a_cifar_run_saves_no_dataset_keys() {
        let text = preset(MethodName::Moco, Recipe::Cifar).to_toml();
        assert!(!text.contains("dataset"), "{text}");
        assert!(!text.contains("train_split"), "{text}");
    }

    #[test]
    fn moco_cifar_preset_is_the_colab_recipe() {
        let cfg = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Cifar)
            .unwrap()
            .build()
            .unwrap();
        let m = cfg.moco.as_ref().unwrap();
        assert_eq!(
            (cfg.model.arch, cfg.model.stem),
            (Arch::Resnet18, Stem::Cifar)
        );
        assert_eq!(cfg.batch_size, 512);
        assert_eq!((m.queue_size, m.momentum, m.bn_splits), (4096, 0.99, 8));
        assert_eq!(cfg.loss.temperature, 0.1);
        assert_eq!(cfg.effective_lr(), 0.06);
        assert_eq!(cfg.optimizer.weight_decay, 5e-4);
        assert_eq!(cfg.optimizer.momentum, 0.9);
        assert_eq!(cfg.schedule.kind, ScheduleKind::Cosine);
    }

    #[test]
    fn lr_is_the_rate_used_whatever_the_batch() {
        // MoCo's README: `--lr 0.015 --batch-size 128` trains at 0.015.
        let mut b = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Paper).unwrap();
        b.set("optimizer.lr=0.015").unwrap();
        b.set("batch_size=128").unwrap();
        let cfg = b.build().unwrap();
        assert_eq!(cfg.effective_lr(), 0.015);
        assert_eq!(
            cfg.optimizer.base_lr, None,
            "lr replaces the preset's base_lr"
        );
    }

    #[test]
    fn base_lr_scales_with_the_batch() {
        let mut b = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Cifar).unwrap();
        b.set("batch_size=256").unwrap();
        assert_eq!(
            b.build().unwrap().effective_lr(),
            0.03,
            "the colab's 0.03 at 256"
        );
        b.set("optimizer.lr=0.05").unwrap();
        b.set("optimizer.base_lr=0.12").unwrap();
        let cfg = b.build().unwrap();
        assert_eq!((cfg.optimizer.lr, cfg.effective_lr()), (None, 0.06));
    }

    #[test]
    fn a_file_giving_lr_replaces_the_presets_base_lr() {
        let mut b = ConfigBuilder::from_preset(MethodName::Simclr, Recipe::Cifar).unwrap();
        b.merge_text("batch_size = 256\n[optimizer]\nlr = 0.2\n", "f")
            .unwrap();
        assert_eq!(b.build().unwrap().effective_lr(), 0.2);
    }

    #[test]
    fn lr_and_base_lr_together_are_an_error() {
        let text = ConfigBuilder::from_preset(MethodName::Simclr, Recipe::Cifar)
            .unwrap()
            .build()
            .unwrap()
            .to_toml()
            .replace("base_lr = 0.06", "base_lr = 0.06\nlr = 0.1");
        let err = ConfigBuilder::from_text(&text, "saved")
            .unwrap()
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("both set"), "{err}");
    }

    #[test]
    fn separate_seeds_default_to_the_run_seed() {
        let mut b = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Cifar).unwrap();
        b.set("seed=3").unwrap();
        b.set("seeds.data=9").unwrap();
        let cfg = b.build().unwrap();
        assert_eq!(
            (cfg.init_seed(), cfg.data_seed(), cfg.aug_seed()),
            (3, 9, 3)
        );
        let again = ConfigBuilder::from_text(&cfg.to_toml(), "saved")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn recipes_follow_their_references() {
        let colab = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Cifar)
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            (colab.schedule.per, colab.schedule.first_epoch),
            (SchedulePer::Epoch, 1)
        );
        assert_eq!(colab.augmentation.std, Some([0.2023, 0.1994, 0.2010]));
        assert_eq!(colab.model.stem_init, ConvInit::TorchDefault);
        assert_eq!(colab.model.conv_init, ConvInit::KaimingNormalFanOut);
        let m = colab.moco.as_ref().unwrap();
        assert_eq!(
            (m.bn_grouping, m.symmetric_reduction),
            (Grouping::Strided, Reduction::Sum)
        );
        assert_eq!(
            (colab.eval.layer, colab.eval.also_layers.clone()),
            (LayerChoice::Head, vec![LayerChoice::Backbone])
        );
        let lightly = ConfigBuilder::from_preset(MethodName::Simclr, Recipe::Cifar)
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            (lightly.schedule.per, lightly.schedule.first_epoch),
            (SchedulePer::Epoch, 0)
        );
        assert_eq!(lightly.augmentation.std, Some([0.229, 0.224, 0.225]));
        assert_eq!(lightly.model.conv_init, ConvInit::TorchDefault);
        assert!(!lightly.model.stem_relu);
        assert_eq!(lightly.effective_lr(), 0.06);
    }

    #[test]
    fn simclr_paper_lr_follows_the_linear_scaling_rule() {
        let cfg = ConfigBuilder::from_preset(MethodName::Simclr, Recipe::Paper)
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(cfg.effective_lr(), 0.3 * 4096.0 / 256.0);
        assert_eq!(cfg.optimizer.name, OptimizerName::Lars);
    }

    #[test]
    fn unknown_key_in_a_file_is_an_error_naming_it() {
        let mut b = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Cifar).unwrap();
        b.merge_text("[optimizer]\nlearning_rate = 0.1\n", "my.toml")
            .unwrap();
        let err = b.build().unwrap_err().to_string();
        assert!(err.contains("learning_rate"), "{err}");
    }

    #[test]
    fn unknown_top_level_key_is_an_error_naming_it() {
        let mut b = ConfigBuilder::from_preset(MethodName::Simclr, Recipe::Cifar).unwrap();
        b.merge_text("epochz = 3\n", "my.toml").unwrap();
        let err = b.build().unwrap_err().to_string();
        assert!(err.contains("epochz"), "{err}");
    }

    #[test]
    fn file_and_set_override_the_preset_in_order() {
        let mut b = ConfigBuilder::from_preset(MethodName::Mocov2, Recipe::Cifar).unwrap();
        b.merge_text("epochs = 7\n[moco]\nqueue_size = 1024\n", "f")
            .unwrap();
        b.set("epochs=9").unwrap();
        b.set("moco.negatives=bank").unwrap();
        let cfg = b.build().unwrap();
        assert_eq!(cfg.epochs, 9);
        let m = cfg.moco.unwrap();
        assert_eq!(m.queue_size, 1024);
        assert_eq!(m.negatives, Negatives::Bank);
        assert_eq!(m.momentum, 0.99, "untouched keys keep the preset's value");
    }

    #[test]
    fn resolved_config_round_trips_through_toml() {
        let cfg = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Paper)
            .unwrap()
            .build()
            .unwrap();
        let again = ConfigBuilder::from_text(&cfg.to_toml(), "saved")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(cfg, again);
    }

    #[test]
    fn bn_splits_must_divide_the_batch() {
        let mut b = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Cifar).unwrap();
        b.set("batch_size=100").unwrap();
        let err = b.build().unwrap_err().to_string();
        assert!(err.contains("bn_splits") && err.contains("100"), "{err}");
    }

    #[test]
    fn queue_smaller_than_a_batch_is_rejected() {
        let mut b = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Cifar).unwrap();
        b.set("moco.queue_size=256").unwrap();
        let err = b.build().unwrap_err().to_string();
        assert!(
            err.contains("queue_size (256)") && err.contains("batch_size (512)"),
            "{err}"
        );
    }

    #[test]
    fn moco_section_on_simclr_is_rejected() {
        let mut b = ConfigBuilder::from_preset(MethodName::Simclr, Recipe::Cifar).unwrap();
        b.set("moco.queue_size=256").unwrap();
        assert!(b.build().is_err());
    }

    #[test]
    fn wrong_value_type_names_the_key() {
        let mut b = ConfigBuilder::from_preset(MethodName::Simclr, Recipe::Cifar).unwrap();
        b.set("loss.temperature=\"hot\"").unwrap();
        let err = b.build().unwrap_err().to_string();
        assert!(err.contains("temperature"), "{err}");
    }

    #[test]
    fn run_settings_do_not_change_the_trajectory() {
        let a = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Cifar)
            .unwrap()
            .build()
            .unwrap();
        let mut b = a.clone();
        b.run.device = DeviceKind::Cuda;
        b.eval.knn_every = 1;
        b.data.path = Some("elsewhere".into());
        assert!(trajectory_diff(&a, &b).is_empty());
        b.seed = 1;
        b.moco.as_mut().unwrap().queue_size = 8192;
        assert_eq!(trajectory_diff(&a, &b), vec!["moco.queue_size", "seed"]);
    }

    #[test]
    fn bf16_precision_is_saved_and_is_part_of_the_trajectory() {
        let a = ConfigBuilder::from_preset(MethodName::Mocov2, Recipe::Cifar)
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(a.model.precision, Precision::F32);
        assert!(!a.to_toml().contains("precision"), "f32 is left out");
        let mut builder = ConfigBuilder::from_preset(MethodName::Mocov2, Recipe::Cifar).unwrap();
        builder.set("model.precision=\"bf16\"").unwrap();
        let b = builder.build().unwrap();
        assert_eq!(b.model.precision, Precision::Bf16);
        assert!(b.to_toml().contains("precision = \"bf16\""));
        assert_eq!(trajectory_diff(&a, &b), vec!["model.precision"]);
        let mut bad = ConfigBuilder::from_preset(MethodName::Mocov2, Recipe::Cifar).unwrap();
        assert!(bad.set("model.precision=\"fp16\"").is_err() || bad.build().is_err());
    }

    #[test]
    fn the_old_split_bn_keys_still_read_as_bn_splits() {
        let mut saved = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Cifar)
            .unwrap()
            .build()
            .unwrap()
            .to_toml()
            .replace("bn_splits = 8", "split_bn = 4")
            .replace(
                "bn_grouping = \"strided\"",
                "split_bn_grouping = \"contiguous\"",
            );
        assert!(saved.contains("split_bn = 4"), "{saved}");
        let m = ConfigBuilder::from_text(&saved, "old run")
            .unwrap()
            .build()
            .unwrap()
            .moco
            .unwrap();
        assert_eq!((m.bn_splits, m.bn_grouping), (4, Grouping::Contiguous));

        saved = "[moco]\nsplit_bn = 2\n".into();
        let mut b = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Cifar).unwrap();
        b.merge_text(&saved, "user file").unwrap();
        assert_eq!(b.build().unwrap().moco.unwrap().bn_splits, 2);
        b.set("moco.split_bn=16").unwrap();
        assert_eq!(b.build().unwrap().moco.unwrap().bn_splits, 16);
        assert!(!b.build().unwrap().to_toml().contains("split_bn"));
    }

    #[test]
    fn the_old_warmup_from_zero_flag_still_reads_as_the_from_zero_warmup() {
        let saved = ConfigBuilder::from_preset(MethodName::Mocov3, Recipe::Cifar)
            .unwrap()
            .build()
            .unwrap()
            .to_toml();
        assert!(saved.contains("warmup = \"from-zero\""), "{saved}");
        let old = saved.replace("warmup = \"from-zero\"", "warmup_from_zero = true");
        let cfg = ConfigBuilder::from_text(&old, "old run")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(cfg.schedule.warmup, WarmupStyle::FromZero);
        let mut b = ConfigBuilder::from_preset(MethodName::Simclr, Recipe::Cifar).unwrap();
        b.set("schedule.warmup_from_zero=true").unwrap();
        assert_eq!(b.build().unwrap().schedule.warmup, WarmupStyle::FromZero);
        b.set("schedule.warmup_from_zero=false").unwrap();
        assert_eq!(b.build().unwrap().schedule.warmup, WarmupStyle::Lightly);
        b.set("schedule.warmup=\"lightning\"").unwrap();
        assert_eq!(b.build().unwrap().schedule.warmup, WarmupStyle::Lightning);
    }

    #[test]
    fn clip_lr_is_a_lars_option_only() {
        let mut b = ConfigBuilder::from_preset(MethodName::Mocov2, Recipe::Cifar).unwrap();
        b.set("optimizer.clip_lr=true").unwrap();
        let err = b.build().unwrap_err().to_string();
        assert!(
            err.contains("optimizer.clip_lr applies to LARS only"),
            "{err}"
        );
    }

    #[test]
    fn optimizer_momentum_follows_torch_sgd_through_the_library_rule() {
        let build = |m: &str| {
            let mut b = ConfigBuilder::from_preset(MethodName::Mocov2, Recipe::Cifar).unwrap();
            b.set(&format!("optimizer.momentum={m}")).unwrap();
            b.build()
        };
        assert_eq!(build("1.0").unwrap().optimizer.momentum, 1.0);
        let err = build("-0.5").unwrap_err().to_string();
        assert_eq!(err, "optimizer.momentum must be finite and >= 0, got -0.5");
    }

    #[test]
    fn repeated_milestones_apply_gamma_twice_as_in_multisteplr() {
        let mut b = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Paper).unwrap();
        b.set("schedule.milestones=[120, 120]").unwrap();
        assert_eq!(b.build().unwrap().schedule.milestones, [120, 120]);
        b.set("schedule.milestones=[160, 120]").unwrap();
        let err = b.build().unwrap_err().to_string();
        assert!(
            err.starts_with("schedule.milestones must not decrease"),
            "{err}"
        );
    }
}
