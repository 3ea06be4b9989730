//! Run folders: the application layer under `cargo xtask`. One job: take a
//! recipe to a finished, evaluated run folder — train it (resume it, extend
//! it) with a progress line and clean Ctrl-C, find or download its data,
//! evaluate and export its checkpoint, and sweep a grid of configs × seeds
//! as run folders with one table and one plot. `cargo xtask` only parses
//! command lines into the requests of this crate.
//!
//! It reports to a person (progress on stderr, results on stdout) and its
//! errors are [`anyhow`] chains with the context of each step: it is the edge
//! of the workspace. The pieces beneath it each do one thing with their own
//! error types: the recipes ([`mocca_recipes`]), the trainer
//! ([`mocca_train`]), the figures ([`mocca_plot`]).
//!
//! # Map
//!
//! | item | what |
//! |---|---|
//! | [`train`] | [`TrainRequest`] → [`train::plan`] (resolve, check, resume or extend) → [`train::execute`] |
//! | [`eval`] | kNN, linear probe and MoCo's `main_lincls.py` on a checkpoint |
//! | [`export`] | the backbone with torchvision's key names |
//! | [`sweep`] | [`SweepRequest`]: configs × seeds as child `train` processes, resumable; `results.{md,csv,png,svg}` |
//! | [`fetch`] | finding a recipe's dataset, or downloading it (MD5-checked, resumable) |
//! | [`folder`] | what a run folder holds and how it is read back: checkpoints with their config, the device |
//! | [`preview`] | a PNG grid of an augmentation pipeline's views |
//!
//! # Example
//!
//! What `cargo xtask train moco --width 0.125 --set moco.momentum=0.9 --print-config`
//! resolves, without training:
//!
//! ```
//! use mocca_runs::{train, TrainRequest};
//! use mocca_recipes::MethodName;
//!
//! let plan = train::plan(&TrainRequest {
//!     method: Some(MethodName::Moco),
//!     sets: vec!["model.width=0.125".into(), "moco.momentum=0.9".into()],
//!     ..TrainRequest::default()
//! })?;
//! let cfg = plan.config();
//! assert_eq!((cfg.model.width, cfg.moco.as_ref().unwrap().momentum), (0.125, 0.9));
//! assert_eq!(plan.out(), std::path::Path::new("runs/moco-cifar"));
//! // A key that no config has is refused, naming it.
//! let err = train::plan(&TrainRequest {
//!     method: Some(MethodName::Moco),
//!     sets: vec!["moco.momentun=0.9".into()],
//!     ..TrainRequest::default()
//! })
//! .unwrap_err();
//! assert!(format!("{err:#}").contains("momentun"), "{err:#}");
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod eval;
pub mod export;
pub mod fetch;
pub mod folder;
pub mod preview;
pub mod sweep;
pub mod train;

pub use sweep::SweepRequest;
pub use train::{Interrupted, TrainRequest};
