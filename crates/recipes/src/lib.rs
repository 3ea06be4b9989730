//! The training recipes as a library. One job: turn a named recipe (and any
//! changes to its keys) into exactly the run `cargo xtask train` builds — the
//! method with its encoders, optimiser and schedules, the augmentation views,
//! the data splits and the kNN monitor.
//!
//! # Map
//!
//! | item | what |
//! |---|---|
//! | [`config`] | [`TrainConfig`] (one TOML document), [`ConfigBuilder`] (preset → file → `key=value` layers), validation, the embedded presets (`src/presets/*.toml`, each setting's source cited) |
//! | [`setup`] | building from a config: [`setup::build_method`], [`setup::train_views`], [`setup::open_splits`], [`setup::knn_monitor`], [`setup::lr_schedule`], … |
//! | [`RunData`], [`build_trainer`] | the whole run: the splits a config reads and the [`mocca_train::Trainer`] `cargo xtask train` runs (`examples/moco_cifar10.rs`) |
//! | [`RecipeError`] | why a config cannot be built, naming the key |
//!
//! Presets by method and recipe ([`MethodName::recipes`]): MoCo v1/v2 and
//! SimCLR on CIFAR-10 / CIFAR-100 / STL-10 (the MoCo colab, lightly's
//! benchmarks) and ImageNet (`paper`: the papers' settings), InstDisc on
//! CIFAR (lemniscate's `cifar.py`), BYOL and SimSiam on CIFAR-10 (lightly's
//! benchmark) and ImageNet, MoCo v3 on CIFAR-10 and ImageNet (moco-v3's
//! `main_moco.py`, with a ResNet; `paper-vit`: its ViT-S/16 command).
//!
//! # Example
//!
//! The MoCo colab's recipe at width 0.125 and batch 16, built as the CLI
//! builds it (`cargo xtask train moco --width 0.125 --batch-size 16`):
//!
//! ```
//! use candle_core::Device;
//! use mocca_recipes::{setup, ConfigBuilder, MethodName, Recipe};
//!
//! let mut b = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Cifar)?;
//! b.set("model.width=0.125")?;
//! b.set("batch_size=16")?;
//! let cfg = b.build()?;
//! assert_eq!((cfg.moco.as_ref().unwrap().queue_size, cfg.loss.temperature), (4096, 0.1));
//!
//! // 160 training images at batch 16: 10 steps an epoch.
//! let method = setup::build_method(&cfg, 10, 160, &Device::Cpu)?;
//! assert_eq!(method.steps_done(), 0);
//! let views = setup::train_views(&cfg)?; // the query and key views
//! assert_eq!(views.views().len(), 2);
//! // A misspelt key is an error naming it.
//! assert!(b.set("model.widht=0.5").is_ok()); // accepted into the document …
//! let err = b.build().unwrap_err().to_string();
//! assert!(err.contains("widht"), "{err}"); // … and refused when built
//! # Ok::<(), mocca_recipes::RecipeError>(())
//! ```

pub mod config;
mod error;
mod run;
pub mod setup;

pub use config::{ConfigBuilder, MethodName, Recipe, TrainConfig};
pub use error::{RecipeError, Result};
pub use run::{build_trainer, steps_per_epoch, RunData};
