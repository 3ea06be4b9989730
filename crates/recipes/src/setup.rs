//! From a [`TrainConfig`] to the objects that train and evaluate: encoders,
//! the method, augmentation pipelines, and feature extraction for kNN / linear
//! evaluation. Shared by `train`, `eval` and `export` so the three agree on
//! what a config means.

use crate::config::{
    Arch, BankSampling, EncoderChoice, Grouping, HeadKind, InstDiscObjectiveName, LayerChoice,
    MethodName, Negatives, OptimizerName, Reduction, ScheduleKind, SchedulePer, Stem, TrainConfig,
    TrainSplit,
};
use crate::error::{bail, invalid, RecipeError, Result};
use candle_core::{Device, Tensor};
use mocca_aug::{Compose, MultiView, Normalize, Preset, RandomResizedCrop, Transform};
use mocca_backbones::{
    BYOLPredictionHead, BYOLProjectionHead, MoCoProjectionHead, MoCoV3Mlp, ProjectionHeadConfig,
    ResNetConfig, SimCLRProjectionHead, SimSiamPredictionHead, SimSiamProjectionHead,
    Stem as BackboneStem, ViTConfig,
};
use mocca_data::image_folder::ListOptions;
use mocca_data::{Images, OpenOptions, Split};
use mocca_methods::optim::{OptimizerConfig, OptimizerKind};
use mocca_methods::schedule::{LrSchedule, MomentumSchedule};
use mocca_methods::{
    BYOLConfig, BackboneEncoder, EncoderRole, FeatureLayer, FeatureSource, InstDisc,
    InstDiscConfig, InstDiscObjective, Method, MoCo, MoCoConfig, MoCoV3, MoCoV3Config,
    NegativeSource, Predictor, SimCLR, SimCLRConfig, SimSiam, SimSiamConfig, BYOL,
};
use mocca_train::KnnMonitor;
pub use mocca_train::{embed, embed_sources, labels_of, spread_subset};
use std::path::Path;
use std::sync::Arc;

/// The ResNet of `cfg` (for a ViT arch, the ResNet-18 its other settings would give: use
/// [`vit_config`] or [`feature_dim`] for those).
pub fn resnet_config(cfg: &TrainConfig) -> ResNetConfig {
    let base = match cfg.model.arch {
        Arch::Resnet34 => ResNetConfig::resnet34(),
        Arch::Resnet50 => ResNetConfig::resnet50(),
        _ => ResNetConfig::resnet18(),
    };
    ResNetConfig {
        stem: match cfg.model.stem {
            Stem::Cifar => BackboneStem::Cifar,
            Stem::Imagenet => BackboneStem::ImageNet,
        },
        width: cfg.model.width,
        zero_init_residual: cfg.model.zero_init_residual,
        bn_splits: cfg.moco.as_ref().map_or(1, |m| m.bn_splits),
        bn_grouping: match cfg.moco.as_ref().map(|m| m.bn_grouping) {
            Some(Grouping::Contiguous) => mocca_backbones::SplitGrouping::Contiguous,
            _ => mocca_backbones::SplitGrouping::Strided,
        },
        conv_init: cfg.model.conv_init.to_backbones(),
        stem_init: cfg.model.stem_init.to_backbones(),
        stem_relu: cfg.model.stem_relu,
        ..base
    }
}

pub fn head_config(cfg: &TrainConfig, feature_dim: usize) -> ProjectionHeadConfig {
    let out = cfg.model.out_dim;
    match cfg.model.head {
        HeadKind::Linear => MoCoProjectionHead {
            output_dim: out,
            ..MoCoProjectionHead::v1(feature_dim)
        }
        .into(),
        HeadKind::Mlp => MoCoProjectionHead {
            hidden_dim: cfg.model.hidden_dim.unwrap_or(feature_dim),
            output_dim: out,
            num_layers: cfg.model.head_layers.unwrap_or(2),
            ..MoCoProjectionHead::v2(feature_dim)
        }
        .into(),
        HeadKind::Simclr => SimCLRProjectionHead {
            hidden_dim: cfg.model.hidden_dim.unwrap_or(feature_dim),
            output_dim: out,
            num_layers: cfg.model.head_layers.unwrap_or(2),
            ..SimCLRProjectionHead::new(feature_dim)
        }
        .into(),
        // validate() requires hidden_dim with the three heads below.
        HeadKind::Byol => BYOLProjectionHead {
            input_dim: feature_dim,
            hidden_dim: cfg.model.hidden_dim.unwrap_or(feature_dim),
            output_dim: out,
        }
        .into(),
        HeadKind::Simsiam => SimSiamProjectionHead {
            input_dim: feature_dim,
            hidden_dim: cfg.model.hidden_dim.unwrap_or(feature_dim),
            output_dim: out,
        }
        .into(),
        HeadKind::Mocov3 => MoCoV3Mlp {
            num_layers: cfg.model.head_layers.unwrap_or(2),
            input_dim: feature_dim,
            mlp_dim: cfg.model.hidden_dim.unwrap_or(feature_dim),
            output_dim: out,
            last_bn: true,
        }
        .into(),
    }
}

/// The predictor of BYOL, SimSiam or MoCo v3 (`None` for the other methods): lightly's
/// `BYOLPredictionHead` / `SimSiamPredictionHead` (`Linear → BN → ReLU → Linear`) or
/// moco-v3's `_build_mlp(2, dim, mlp_dim, dim, last_bn=False)`, weights from the init seed.
pub fn predictor(cfg: &TrainConfig, device: &Device) -> Result<Option<Predictor>> {
    let (Some(p), out) = (&cfg.predictor, cfg.model.out_dim) else {
        return Ok(None);
    };
    let head: ProjectionHeadConfig = match cfg.method {
        MethodName::Byol => BYOLPredictionHead {
            input_dim: out,
            hidden_dim: p.hidden_dim,
            output_dim: out,
        }
        .into(),
        MethodName::Simsiam => SimSiamPredictionHead {
            input_dim: out,
            hidden_dim: p.hidden_dim,
            output_dim: out,
        }
        .into(),
        MethodName::Mocov3 => MoCoV3Mlp {
            num_layers: 2,
            input_dim: out,
            mlp_dim: p.hidden_dim,
            output_dim: out,
            last_bn: p.last_bn,
        }
        .into(),
        other => bail!("{} has no predictor", other.as_str()),
    };
    Ok(Some(Predictor::new(head, cfg.init_seed(), device)?))
}

/// The momentum schedule of `[momentum_encoder]` over the run's steps.
fn momentum_schedule(cfg: &TrainConfig, total_steps: u64) -> Result<MomentumSchedule> {
    let Some(e) = &cfg.momentum_encoder else {
        bail!(
            "method {} needs a [momentum_encoder] section",
            cfg.method.as_str()
        );
    };
    Ok(match e.schedule {
        crate::config::MomentumSchedule::Constant => MomentumSchedule::Constant(e.momentum),
        crate::config::MomentumSchedule::Cosine => MomentumSchedule::Cosine {
            base: e.momentum,
            end: 1.0,
            total_steps,
        },
    })
}

/// The ViT of `cfg` (`None` for a ResNet arch).
pub fn vit_config(cfg: &TrainConfig) -> Option<ViTConfig> {
    let (s, p) = (
        cfg.data.image_size,
        cfg.model.vit_patch_size(cfg.data.image_size),
    );
    match cfg.model.arch {
        Arch::VitTiny => Some(ViTConfig::tiny(s, p)),
        Arch::VitSmall => Some(ViTConfig::small(s, p)),
        _ => None,
    }
    .map(|v| ViTConfig {
        num_heads: cfg.model.num_heads.unwrap_or(v.num_heads),
        style: match cfg.model.vit_style {
            Some(crate::config::VitStyleName::Mocov3) => mocca_backbones::ViTStyle::MoCoV3,
            _ => mocca_backbones::ViTStyle::Timm,
        },
        freeze_patch_embed: cfg.model.freeze_patch_embed,
        ..v
    })
}

/// Width of the backbone's features.
pub fn feature_dim(cfg: &TrainConfig) -> usize {
    vit_config(cfg).map_or_else(|| resnet_config(cfg).feature_dim(), |v| v.feature_dim())
}

/// A freshly initialised encoder (weights drawn from the init seed).
pub fn build_encoder(cfg: &TrainConfig, device: &Device) -> Result<BackboneEncoder> {
    let head = head_config(cfg, feature_dim(cfg));
    let encoder = match vit_config(cfg) {
        Some(v) => BackboneEncoder::vit(&v, head, cfg.init_seed(), device)?,
        None => BackboneEncoder::new(&resnet_config(cfg), head, cfg.init_seed(), device)?,
    };
    Ok(encoder.with_precision(cfg.model.precision.to_method()))
}

/// The learning-rate schedule of `cfg` over steps of `steps_per_epoch` updates per epoch.
pub fn lr_schedule(cfg: &TrainConfig, steps_per_epoch: u64) -> Result<LrSchedule> {
    match cfg.schedule.per {
        SchedulePer::Step => schedule_in_steps(cfg, steps_per_epoch),
        // The same schedule counted in epochs, held for each epoch's steps.
        SchedulePer::Epoch => Ok(LrSchedule::per_epoch(
            schedule_in_steps(cfg, 1)?,
            steps_per_epoch,
            cfg.schedule.first_epoch,
        )),
    }
}

/// The schedule of `cfg` over steps of `steps_per_epoch` per epoch.
fn schedule_in_steps(cfg: &TrainConfig, steps_per_epoch: u64) -> Result<LrSchedule> {
    let lr = cfg.effective_lr();
    let total = steps_per_epoch * cfg.epochs as u64;
    let warmup = (cfg.schedule.warmup_epochs * steps_per_epoch as f64).round() as u64;
    Ok(match cfg.schedule.kind {
        ScheduleKind::Constant if warmup == 0 => LrSchedule::Constant { lr },
        ScheduleKind::Constant | ScheduleKind::Step if warmup > 0 => {
            bail!("schedule.warmup_epochs is supported with schedule.kind = \"cosine\" only")
        }
        ScheduleKind::Cosine => LrSchedule::WarmupCosine {
            base_lr: lr,
            warmup_steps: warmup,
            total_steps: total,
            warmup_start_lr: cfg.schedule.warmup_start_lr,
            warmup: cfg.schedule.warmup.warmup(),
            final_lr: 0.0,
        },
        _ => LrSchedule::MultiStep {
            base_lr: lr,
            milestones: cfg
                .schedule
                .milestones
                .iter()
                .map(|&e| e as u64 * steps_per_epoch)
                .collect(),
            gamma: cfg.schedule.gamma,
        },
    })
}

pub fn optimizer_config(cfg: &TrainConfig) -> OptimizerConfig {
    let o = &cfg.optimizer;
    OptimizerConfig {
        kind: match o.name {
            OptimizerName::Sgd => OptimizerKind::Sgd,
            OptimizerName::Lars => OptimizerKind::Lars {
                trust_coefficient: o.trust_coefficient.unwrap_or(1e-3),
                eps: 1e-8,
                clip_lr: o.clip_lr,
            },
            OptimizerName::Adamw => {
                return mocca_methods::optim::OptimizerConfig {
                    exclude_bias_and_norm: o.exclude_bn_bias,
                    ..mocca_methods::optim::OptimizerConfig::adamw(
                        cfg.effective_lr(),
                        o.weight_decay,
                    )
                }
            }
            OptimizerName::LarsMocov3 => OptimizerKind::LarsMoCoV3 {
                trust_coefficient: o.trust_coefficient.unwrap_or(1e-3),
            },
        },
        lr: cfg.effective_lr(),
        momentum: o.momentum,
        dampening: 0.0,
        weight_decay: o.weight_decay,
        nesterov: o.nesterov,
        exclude_bias_and_norm: o.exclude_bn_bias,
    }
}

/// The MoCo hyper-parameters of `cfg` (`None` unless it has a `[moco]` section): what
/// [`build_method`] gives `MoCo::new`. `num_samples` sizes a memory bank.
pub fn moco_config(
    cfg: &TrainConfig,
    steps_per_epoch: u64,
    num_samples: usize,
) -> Result<Option<MoCoConfig>> {
    let Some(m) = &cfg.moco else {
        return Ok(None);
    };
    let negatives = match m.negatives {
        Negatives::Queue => NegativeSource::queue(m.queue_size),
        Negatives::Bank => {
            if m.queue_size > num_samples {
                bail!(
                    "moco.queue_size ({}) negatives per step cannot be drawn from a memory bank of \
                     {num_samples} images",
                    m.queue_size
                );
            }
            NegativeSource::MemoryBank {
                num_samples,
                num_negatives: m.queue_size,
                momentum: m.bank_momentum,
                sampling: match m.bank_sampling {
                    BankSampling::PerQuery => mocca_methods::BankSampling::PerQuery,
                    BankSampling::Shared => mocca_methods::BankSampling::Shared,
                },
            }
        }
        Negatives::EndToEnd => NegativeSource::EndToEnd,
    };
    Ok(Some(MoCoConfig {
        negatives,
        temperature: cfg.loss.temperature,
        symmetric: m.symmetric,
        symmetric_reduction: match m.symmetric_reduction {
            Reduction::Sum => mocca_methods::SymmetricReduction::Sum,
            Reduction::Mean => mocca_methods::SymmetricReduction::Mean,
        },
        per_view_queues: m.per_view_queues,
        momentum: m.momentum,
        cosine_momentum: m.momentum_schedule == crate::config::MomentumSchedule::Cosine,
        momentum_end: m.momentum_end.unwrap_or(1.0),
        end_to_end_detach_keys: m.end_to_end_detach_keys,
        shuffle_bn: m.bn_splits > 1,
        optimizer: optimizer_config(cfg),
        lr_schedule: lr_schedule(cfg, steps_per_epoch)?,
        total_steps: steps_per_epoch * cfg.epochs as u64,
        seed: cfg.init_seed(),
    }))
}

/// The training method of `cfg`, freshly initialised. `num_samples` sizes the
/// memory bank (one row per training image).
pub fn build_method(
    cfg: &TrainConfig,
    steps_per_epoch: u64,
    num_samples: usize,
    device: &Device,
) -> Result<Box<dyn Method>> {
    let optimizer = optimizer_config(cfg);
    let lr_schedule = lr_schedule(cfg, steps_per_epoch)?;
    if let Some(i) = &cfg.instdisc {
        let objective = match i.objective {
            InstDiscObjectiveName::Softmax => InstDiscObjective::Softmax,
            InstDiscObjectiveName::Nce => InstDiscObjective::Nce {
                noise_samples: i.nce_k,
            },
        };
        let ic = InstDiscConfig {
            num_samples,
            temperature: cfg.loss.temperature,
            memory_momentum: i.memory_momentum,
            objective,
            bank_init: i.bank_init.to_queue(),
            optimizer,
            lr_schedule,
            seed: cfg.init_seed(),
        };
        return Ok(Box::new(InstDisc::new(
            ic,
            build_encoder(cfg, device)?,
            device,
        )?));
    }
    let total_steps = steps_per_epoch * cfg.epochs as u64;
    let predictor_or_err = || -> Result<Predictor> {
        predictor(cfg, device)?
            .ok_or_else(|| invalid!("method {} needs a [predictor] section", cfg.method.as_str()))
    };
    let fixed_predictor_lr = cfg.predictor.as_ref().is_some_and(|p| p.fixed_lr);
    match cfg.method {
        MethodName::Byol => {
            let c = BYOLConfig {
                momentum: momentum_schedule(cfg, total_steps)?,
                optimizer,
                lr_schedule,
            };
            let build = || build_encoder(cfg, device).map_err(to_method_err);
            let m = BYOL::new(c, build, predictor_or_err()?, device)?;
            return Ok(if fixed_predictor_lr {
                Box::new(m.with_fixed_predictor_lr())
            } else {
                Box::new(m)
            });
        }
        MethodName::Mocov3 => {
            let c = MoCoV3Config {
                temperature: cfg.loss.temperature,
                momentum: momentum_schedule(cfg, total_steps)?,
                optimizer,
                lr_schedule,
            };
            let build = || build_encoder(cfg, device).map_err(to_method_err);
            let m = MoCoV3::new(c, build, predictor_or_err()?, device)?;
            return Ok(if fixed_predictor_lr {
                Box::new(m.with_fixed_predictor_lr())
            } else {
                Box::new(m)
            });
        }
        MethodName::Simsiam => {
            let c = SimSiamConfig {
                optimizer,
                lr_schedule,
                stop_gradient: cfg.simsiam.as_ref().is_none_or(|s| s.stop_gradient),
            };
            let m = SimSiam::new(c, build_encoder(cfg, device)?, predictor_or_err()?, device)?;
            return Ok(if fixed_predictor_lr {
                Box::new(m.with_fixed_predictor_lr())
            } else {
                Box::new(m)
            });
        }
        _ => {}
    }
    match &cfg.moco {
        Some(_) => {
            let mc = moco_config(cfg, steps_per_epoch, num_samples)?.expect("cfg.moco is set");
            let build = || build_encoder(cfg, device).map_err(to_method_err);
            Ok(Box::new(MoCo::new(mc, build, device)?))
        }
        None => {
            let sc = SimCLRConfig {
                temperature: cfg.loss.temperature,
                optimizer,
                lr_schedule,
            };
            Ok(Box::new(SimCLR::new(
                sc,
                build_encoder(cfg, device)?,
                device,
            )?))
        }
    }
}

fn to_method_err(e: RecipeError) -> mocca_methods::MethodError {
    match e {
        RecipeError::Method(m) => *m,
        e => mocca_methods::MethodError::InvalidConfig(e.to_string()),
    }
}

/// Which encoder and layer `choice` means for this method.
pub fn feature_source(
    cfg: &TrainConfig,
    encoder: EncoderChoice,
    layer: LayerChoice,
) -> Result<FeatureSource> {
    let role = match (cfg.method.has_momentum_encoder(), encoder) {
        (false, EncoderChoice::Query) => EncoderRole::Shared,
        (false, EncoderChoice::Key) => {
            bail!(
                "{} has one encoder; there is no key encoder to evaluate",
                cfg.method.as_str()
            )
        }
        (true, EncoderChoice::Query) => EncoderRole::Query,
        (true, EncoderChoice::Key) => match cfg.moco.as_ref().map(|m| m.negatives) {
            Some(Negatives::EndToEnd) => {
                bail!("end-to-end MoCo has no key encoder (its keys come from the query encoder)")
            }
            Some(Negatives::Bank) => bail!(
                "MoCo with a memory bank has no key encoder (the bank holds the query encoder's \
                 features)"
            ),
            _ => EncoderRole::Key,
        },
    };
    let layer = match layer {
        LayerChoice::Backbone => FeatureLayer::Backbone,
        LayerChoice::Head => FeatureLayer::Head,
    };
    Ok(FeatureSource::new(role, layer))
}

/// Checkpoint prefix of an encoder's state (see `mocca_methods::Method::state`).
pub fn state_prefix(role: EncoderRole) -> &'static str {
    match role {
        EncoderRole::Query => "encoder_q",
        EncoderRole::Key => "encoder_k",
        EncoderRole::Shared => "encoder",
    }
}

pub fn aug_preset(cfg: &TrainConfig) -> Result<Preset> {
    cfg.augmentation
        .preset
        .parse::<Preset>()
        .map_err(|e| invalid!("augmentation.preset: {e}"))
}

/// The normalisation of `cfg`: the augmentation section's, else the preset's.
fn normalization(cfg: &TrainConfig) -> Result<Option<Normalize>> {
    Ok(match (cfg.augmentation.mean, cfg.augmentation.std) {
        (Some(mean), Some(std)) => Some(Normalize::new(mean, std)?),
        _ => None,
    })
}

/// The training recipe's pipeline for one view.
fn train_pipeline(cfg: &TrainConfig) -> Result<Compose> {
    let preset = aug_preset(cfg)?;
    let size = cfg.data.image_size;
    Ok(match normalization(cfg)? {
        Some(n) => preset.compose_with_normalize(size, n)?,
        None => preset.compose(size)?,
    })
}

/// The training views: one per image for InstDisc and MoCo's memory bank (the bank holds
/// the other side of each pair), two otherwise (query / key, SimCLR's pair, or BYOL's two
/// different views).
pub fn train_views(cfg: &TrainConfig) -> Result<MultiView> {
    let preset = aug_preset(cfg)?;
    let normalize = normalization(cfg)?.unwrap_or_else(|| preset.normalize());
    Ok(preset.views(cfg.data.image_size, normalize, views_per_image(cfg))?)
}

/// Augmented views per training image.
pub fn views_per_image(cfg: &TrainConfig) -> usize {
    let bank = cfg
        .moco
        .as_ref()
        .is_some_and(|m| m.negatives == Negatives::Bank);
    if cfg.method == MethodName::Instdisc || bank {
        1
    } else {
        2
    }
}

/// Evaluation preprocessing: the training recipe's normalisation, after `eval.resize`'s
/// resize and centre crop, or else a centre square crop resized to `image_size` when the
/// images are not already that size (a `RandomResizedCrop` with scale and ratio fixed at 1
/// always takes torchvision's central-crop fallback, so it is deterministic).
pub fn eval_pipeline(cfg: &TrainConfig, data: &Images) -> Result<Compose> {
    let s = cfg.data.image_size;
    let recipe = train_pipeline(cfg)?;
    let normalize = recipe
        .transforms()
        .iter()
        .rev()
        .find(|t| matches!(t, Transform::Normalize(_)))
        .cloned();
    let mut steps = Vec::new();
    let exact = data
        .uniform_shape()
        .is_some_and(|sh| sh.height == s && sh.width == s);
    if let Some(r) = cfg.eval.resize {
        steps.push(mocca_aug::ResizeCenterCrop::new(r, s, true)?.into());
    } else if !exact {
        steps.push(RandomResizedCrop::new([s, s], (1.0, 1.0), (1.0, 1.0), true)?.into());
    }
    steps.extend(normalize);
    Ok(Compose::new(steps)?)
}

/// `main_lincls.py`'s training views: RandomResizedCrop to `image_size`
/// (scale (0.08, 1), torchvision's ratio), horizontal flip, the recipe's
/// normalisation.
pub fn lincls_pipeline(cfg: &TrainConfig, data: &Images) -> Result<Compose> {
    let s = cfg.data.image_size;
    let normalize = eval_pipeline(cfg, data)?
        .transforms()
        .last()
        .cloned()
        .ok_or_else(|| invalid!("the evaluation pipeline has no normalisation"))?;
    Ok(Compose::new(vec![
        RandomResizedCrop::new([s, s], (0.08, 1.0), mocca_aug::DEFAULT_RATIO, true)?.into(),
        mocca_aug::RandomHorizontalFlip::new(0.5)?.into(),
        normalize,
    ])?)
}

/// The kNN monitor of `cfg`'s `eval` and `run` sections over `sources` (one encoder).
pub fn knn_monitor(
    cfg: &TrainConfig,
    sources: Vec<FeatureSource>,
    train: Arc<Images>,
    test: Arc<Images>,
) -> Result<KnnMonitor> {
    Ok(KnnMonitor {
        train_pipeline: eval_pipeline(cfg, &train)?,
        test_pipeline: eval_pipeline(cfg, &test)?,
        train,
        test,
        sources,
        k: cfg.eval.knn_k,
        temperature: cfg.eval.knn_t,
        batch_size: cfg.run.eval_batch_size,
        train_limit: cfg.run.knn_train_limit,
        test_limit: cfg.run.knn_test_limit,
    })
}

/// The kNN monitor's feature sources: `eval.layer` first, then `eval.also_layers`.
pub fn monitor_sources(cfg: &TrainConfig) -> Result<Vec<FeatureSource>> {
    let mut layers = vec![cfg.eval.layer];
    for &l in &cfg.eval.also_layers {
        if !layers.contains(&l) {
            layers.push(l);
        }
    }
    layers
        .into_iter()
        .map(|l| feature_source(cfg, cfg.eval.encoder, l))
        .collect()
}

/// How `cfg` opens its dataset ([`mocca_data::open_images`]): streaming or in memory
/// (`run.streaming`, `run.memory_budget_gb`), the class subset (`data.classes`), the labels of
/// a flat `val/` (`data.val_labels`), the listing cache (`run.cache_listings`) and `progress`
/// for long listings.
pub fn open_options(
    cfg: &TrainConfig,
    progress: Option<Arc<dyn Fn(usize) + Send + Sync>>,
) -> Result<OpenOptions> {
    let classes = match &cfg.data.classes {
        Some(spec) => Some(
            mocca_data::image_folder::class_list(spec).map_err(|source| RecipeError::DataAt {
                context: format!("data.classes = \"{spec}\""),
                source: Box::new(source),
            })?,
        ),
        None => None,
    };
    if !(cfg.run.memory_budget_gb >= 0.0 && cfg.run.memory_budget_gb.is_finite()) {
        return Err(invalid!(
            "run.memory_budget_gb must be a finite number of GiB ≥ 0, got {}",
            cfg.run.memory_budget_gb
        ));
    }
    Ok(OpenOptions {
        on_bad_file: if cfg.run.skip_bad_files {
            mocca_data::OnBadFile::Skip
        } else {
            mocca_data::OnBadFile::Fail
        },
        streaming: cfg.run.streaming.streaming(),
        memory_budget: (cfg.run.memory_budget_gb * (1u64 << 30) as f64) as u64,
        list: ListOptions {
            classes,
            labels_file: cfg.data.val_labels.as_ref().map(std::path::PathBuf::from),
            progress,
            cache_dir: cfg
                .run
                .cache_listings
                .then(|| mocca_data::download::default_root().map(|r| r.join("listings")))
                .flatten(),
        },
    })
}

/// The training split, and the test split when the dataset has one.
pub fn open_splits(dir: &Path, options: &OpenOptions) -> Result<(Images, Option<Images>)> {
    let train = mocca_data::open_images(dir, Split::Train, options)?;
    let test = match mocca_data::open_images(dir, Split::Test, options) {
        Ok(t) => Some(t),
        Err(mocca_data::DataError::NoSuchSplit { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    Ok((train, test))
}

/// The split a run trains on: the train split itself (shared), or another split of the same
/// folder (STL-10's unlabeled images), which must be there.
pub fn open_train_split(
    dir: &Path,
    split: TrainSplit,
    train: &Arc<Images>,
    options: &OpenOptions,
) -> Result<Arc<Images>> {
    if split == TrainSplit::Train {
        return Ok(Arc::clone(train));
    }
    let s = split.split();
    let ssl = mocca_data::open_images(dir, s, options).map_err(|source| RecipeError::DataAt {
        context: format!(
            "data.train_split = \"{s}\" cannot be read from {}",
            dir.display()
        ),
        source: Box::new(source),
    })?;
    Ok(Arc::new(ssl))
}

/// Loads an encoder's part of a checkpoint into a fresh encoder.
pub fn encoder_from_state(
    cfg: &TrainConfig,
    role: EncoderRole,
    state: &std::collections::HashMap<String, Tensor>,
    device: &Device,
) -> Result<BackboneEncoder> {
    use mocca_methods::Encoder;
    let enc = build_encoder(cfg, device)?;
    let prefix = format!("{}.", state_prefix(role));
    let sub: std::collections::HashMap<String, Tensor> = state
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|s| (s.to_string(), v.clone())))
        .collect();
    if sub.is_empty() {
        bail!("the checkpoint holds no `{}` encoder", state_prefix(role));
    }
    enc.load_state_dict(&sub)?;
    Ok(enc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MethodName;

    /// Per-parameter statistics of a model over the reference's ten seeds: (name, mean of
    /// the per-seed means, mean of the per-seed sample standard deviations).
    fn init_stats(cfg: &TrainConfig, seeds: &[u64]) -> Vec<(String, Vec<usize>, f64, f64)> {
        use mocca_methods::Encoder;
        let mut acc: Vec<(String, Vec<usize>, f64, f64)> = Vec::new();
        for (i, &seed) in seeds.iter().enumerate() {
            let mut cfg = cfg.clone();
            cfg.seed = seed;
            let enc = build_encoder(&cfg, &Device::Cpu).unwrap();
            for (j, (name, var)) in enc.named_parameters().into_iter().enumerate() {
                let v: Vec<f64> = var
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_dtype(candle_core::DType::F64)
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let n = v.len() as f64;
                let mean = v.iter().sum::<f64>() / n;
                let std = if v.len() > 1 {
                    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
                } else {
                    0.0
                };
                if i == 0 {
                    acc.push((name, var.dims().to_vec(), 0.0, 0.0));
                }
                acc[j].2 += mean / seeds.len() as f64;
                acc[j].3 += std / seeds.len() as f64;
            }
        }
        acc
    }

    /// `tests/golden/methods/init_stats.json.gz`: PyTorch's initial weights of the colab's
    /// `ModelBase` and lightly's `SimCLRModel` at width 0.125 over seeds 0-9
    /// (`scripts/reference_curves.py init-stats`).
    fn reference_init_stats(model: &str) -> Vec<serde_json::Value> {
        use std::io::Read;
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/golden/methods/init_stats.json.gz");
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["width"].as_f64(), Some(0.125));
        doc["models"][model]["params"].as_array().unwrap().clone()
    }

    /// Every reference parameter has ours of the same shape, no parameter of ours is extra,
    /// each standard deviation is within 5 % of PyTorch's (the ten-seed average of a 216-value
    /// tensor's std is good to about 1.5 %) and each mean within three seed-to-seed standard
    /// deviations of PyTorch's mean.
    fn assert_initialises_as(recipe: MethodName, model: &str, rename: impl Fn(&str) -> String) {
        use crate::config::{ConfigBuilder, Recipe};
        let mut b = ConfigBuilder::from_preset(recipe, Recipe::Cifar).unwrap();
        b.set("model.width=0.125").unwrap();
        let ours = init_stats(&b.build().unwrap(), &(0..10).collect::<Vec<_>>());
        let reference = reference_init_stats(model);
        assert_eq!(ours.len(), reference.len(), "{model}: parameter count");
        for r in &reference {
            let name = rename(r["name"].as_str().unwrap());
            let (_, shape, mean, std) = ours
                .iter()
                .find(|(n, ..)| *n == name)
                .unwrap_or_else(|| panic!("{model}: no parameter {name}"));
            let shape_ref: Vec<usize> = r["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(*shape, shape_ref, "{name}: shape");
            let (mean_ref, std_ref) = (r["mean"].as_f64().unwrap(), r["std"].as_f64().unwrap());
            let spread = r["std_of_mean_over_seeds"].as_f64().unwrap();
            if std_ref == 0.0 {
                // Summing ten seeds' means rounds; the values themselves are exact.
                assert!(
                    *std == 0.0 && (mean - mean_ref).abs() < 1e-12,
                    "{name}: constant {mean_ref} at init, ours mean {mean} std {std}"
                );
                continue;
            }
            assert!(
                (std / std_ref - 1.0).abs() < 0.05,
                "{name}: std {std:.5} against PyTorch's {std_ref:.5}"
            );
            assert!(
                (mean - mean_ref).abs() <= 3.0 * spread,
                "{name}: mean {mean:.5} against PyTorch's {mean_ref:.5} (spread {spread:.5})"
            );
        }
    }

    /// torchvision's ResNet under `prefix.<index>` of an `nn.Sequential` (conv1, bn1, relu /
    /// maxpool slots, layer1..4) → our `backbone.` keys.
    fn sequential_resnet_key(rest: &str, first_layer: usize) -> String {
        let (index, tail) = rest.split_once('.').unwrap();
        let index: usize = index.parse().unwrap();
        let module = match index {
            0 => "conv1".to_string(),
            1 => "bn1".to_string(),
            i => format!("layer{}", i - first_layer + 1),
        };
        format!(
            "backbone.{module}.{}",
            tail.replace("shortcut.", "downsample.")
        )
    }

    #[test]
    fn moco_cifar_initialises_as_the_colab() {
        // The colab's ModelBase: net = [conv1, bn1, relu, layer1..4, avgpool, flatten, fc].
        assert_initialises_as(MethodName::Moco, "colab_ModelBase", |k| {
            let rest = k.strip_prefix("net.").unwrap();
            match rest.strip_prefix("9.") {
                Some(p) => format!("head.layers.0.{p}"),
                None => sequential_resnet_key(rest, 3),
            }
        });
    }

    #[test]
    fn simclr_cifar_initialises_as_lightly() {
        // lightly's benchmark backbone: [conv1, bn1, layer1..4, pool]; its head's layers are ours.
        assert_initialises_as(MethodName::Simclr, "lightly_SimCLRModel", |k| {
            match k.strip_prefix("backbone.") {
                Some(rest) => sequential_resnet_key(rest, 2),
                None => k.replace("projection_head.", "head."),
            }
        });
    }
}

#[cfg(test)]
mod siamese_tests {
    use super::*;
    use crate::config::{ConfigBuilder, Recipe};

    fn small(method: MethodName) -> TrainConfig {
        let mut b = ConfigBuilder::from_preset(method, Recipe::Cifar).unwrap();
        for s in [
            "model.width=0.125",
            "batch_size=8",
            "model.hidden_dim=32",
            "predictor.hidden_dim=16",
            "model.out_dim=16",
        ] {
            b.set(s).unwrap();
        }
        b.build().unwrap()
    }

    #[test]
    fn byol_simsiam_and_mocov3_recipes_build_and_train_a_step() {
        for method in [MethodName::Byol, MethodName::Simsiam, MethodName::Mocov3] {
            let cfg = small(method);
            let mut m = build_method(&cfg, 4, 32, &Device::Cpu).unwrap();
            assert_eq!(m.name(), method.as_str());
            let views = train_views(&cfg).unwrap();
            assert_eq!(views.views().len(), 2, "{}", method.as_str());
            let x = Tensor::rand(0f32, 1.0, (8, 3, 32, 32), &Device::Cpu).unwrap();
            let s = m.step(&[x.clone(), x], &[]).unwrap();
            assert!(s.loss.is_finite(), "{}: {}", method.as_str(), s.loss);
            // The momentum encoder is the "key" encoder to `eval --encoder key`.
            let key = feature_source(&cfg, EncoderChoice::Key, LayerChoice::Backbone);
            assert_eq!(
                key.is_ok(),
                method != MethodName::Simsiam,
                "{}",
                method.as_str()
            );
        }
    }

    #[test]
    fn mocov3s_vit_recipe_is_moco_vit_with_adamw() {
        let cfg = ConfigBuilder::from_preset(MethodName::Mocov3, Recipe::PaperVit)
            .unwrap()
            .build()
            .unwrap();
        let v = vit_config(&cfg).unwrap();
        assert_eq!(
            (v.embed_dim, v.num_heads, v.patch_size, v.depth),
            (384, 12, 16, 12)
        );
        assert!(matches!(
            optimizer_config(&cfg).kind,
            mocca_methods::optim::OptimizerKind::AdamW { .. }
        ));
        let p = predictor(&cfg, &Device::Cpu).unwrap().unwrap();
        let last = *p.head().config().blocks.last().unwrap();
        assert_eq!(last.norm, mocca_backbones::HeadNorm::BatchNormNoAffine);
        assert!(!last.bias);
        let projector = head_config(&cfg, 384);
        assert_eq!(projector.blocks.len(), 3);
    }

    #[test]
    fn the_mlp_head_takes_its_hidden_width_and_depth_from_the_model_section() {
        let mut b = ConfigBuilder::from_preset(MethodName::Mocov2, Recipe::Cifar).unwrap();
        b.set("model.hidden_dim=96").unwrap();
        b.set("model.head_layers=3").unwrap();
        let head = head_config(&b.build().unwrap(), 64);
        let dims: Vec<_> = head.blocks.iter().map(|b| (b.in_dim, b.out_dim)).collect();
        assert_eq!(dims, [(64, 96), (96, 96), (96, 128)]);
        // The preset alone: MoCo v2's Linear(d, d) → ReLU → Linear(d, 128).
        let preset = ConfigBuilder::from_preset(MethodName::Mocov2, Recipe::Cifar).unwrap();
        let head = head_config(&preset.build().unwrap(), 64);
        let dims: Vec<_> = head.blocks.iter().map(|b| (b.in_dim, b.out_dim)).collect();
        assert_eq!(dims, [(64, 64), (64, 128)]);
    }

    #[test]
    fn byols_recipe_gives_its_two_different_views() {
        let views = train_views(&small(MethodName::Byol)).unwrap();
        assert_ne!(views.views()[0], views.views()[1]);
        let views = train_views(&small(MethodName::Simsiam)).unwrap();
        assert_eq!(views.views()[0], views.views()[1]);
    }

    #[test]
    fn simsiams_switch_turns_the_stop_gradient_off() {
        let mut b = ConfigBuilder::from_preset(MethodName::Simsiam, Recipe::Cifar).unwrap();
        b.set("simsiam.stop_gradient=false").unwrap();
        let cfg = b.build().unwrap();
        assert_eq!(cfg.simsiam.as_ref().map(|s| s.stop_gradient), Some(false));
    }
}
