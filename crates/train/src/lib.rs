//! The training loop as a library. One job: run epochs of any
//! [`mocca_methods::Method`] over a dataset, and everything that makes a run a
//! run: kNN monitoring on a cadence, a collapse monitor, checkpoints (every N epochs / steps,
//! atomic, every tensor checksummed, the previous ones kept and fallen back on), stop
//! requests, exact resume, metrics sinks and a progress callback. It is the
//! loop `cargo xtask train` runs; the CLI adds config files, presets, the
//! download, the progress bar and Ctrl-C.
//!
//! # Map
//!
//! | item | what |
//! |---|---|
//! | [`Trainer`], [`TrainerConfig`], [`CheckpointPolicy`] | the loop; [`Trainer::run`] returns an [`Outcome`], [`Trainer::resume`] continues a checkpoint, [`Trainer::resume_newest`] the newest good one |
//! | [`KnnMonitor`] | weighted kNN accuracy (k = 200, t = 0.1) of one encoder's features, several layers from one pass |
//! | [`Record`], [`MetricsSink`], [`JsonlMetrics`] | what a run reports; a JSON-lines file or any closure `FnMut(&Record)` |
//! | [`Collapse`] | the collapse monitor's reading in a step record, every [`TrainerConfig::collapse_every`] steps ([`mocca_methods::collapse`]) |
//! | [`Event`] | what the progress callback sees: steps, collapse-monitor readings, epoch ends, kNN, checkpoints |
//! | [`checkpoint`] | the checkpoint file: the method's state and [`CheckpointMeta`] in one safetensors file, a CRC-32 per tensor; previous ones kept ([`save_checkpoint_keeping`], [`load_newest_checkpoint`]) |
//! | [`files`] | atomic writes, safetensors with metadata |
//! | [`RunLock`] | one writer per run folder: a second trainer fails at once naming the holder (pid, host, start) |
//!
//! Data flow: [`mocca_data::Images`] (in memory, or files decoded per batch) → [`mocca_data::BatchSampler`] (seeded
//! order) → [`mocca_aug::MultiView`] on a loader thread → [`mocca_methods::Method::step`]
//! → records, kNN, checkpoints.
//!
//! # Example
//!
//! Two epochs of SimCLR on a small synthetic set, with kNN monitoring, a
//! checkpoint, metrics in memory; then a second trainer resumes the
//! checkpoint of epoch 1 and ends with the same weights. A full MoCo run on
//! CIFAR-10 with the colab's recipe, built from a config as `cargo xtask
//! train` builds it, is `mocca-recipes`' example
//! (`cargo run --release -p mocca-recipes --example moco_cifar10`).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use candle_core::Device;
//! use mocca_aug::{MultiView, Preset};
//! use mocca_backbones::{ResNetConfig, SimCLRProjectionHead, Stem};
//! use mocca_data::{synthetic, Images, Split};
//! use mocca_methods::{Method, BackboneEncoder, SimCLR, SimCLRConfig};
//! use mocca_train::{KnnMonitor, Outcome, Record, Trainer, TrainerConfig};
//!
//! let dev = Device::Cpu;
//! let set = |split| synthetic::generate(&synthetic::SyntheticConfig {
//!     images_per_class: 4, height: 16, width: 16, ..Default::default() }, split);
//! let (train, test) = (Arc::new(Images::from(set(Split::Train)?)), Arc::new(Images::from(set(Split::Test)?)));
//! let method = || -> mocca_methods::Result<Box<dyn Method>> {
//!     let backbone = ResNetConfig { stem: Stem::Cifar, width: 0.125, ..ResNetConfig::resnet18() };
//!     let head = SimCLRProjectionHead::new(backbone.feature_dim());
//!     let encoder = BackboneEncoder::new(&backbone, head.into(), 0, &dev)?;
//!     Ok(Box::new(SimCLR::new(SimCLRConfig::cifar10(8, 5, 2), encoder, &dev)?))
//! };
//! let views = Preset::SimClrCifar.two_views(16)?;
//! let dir = std::env::temp_dir().join(format!("mocca-train-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let mut cfg = TrainerConfig::new(2, 8);
//! cfg.checkpoint.path = Some(dir.join("checkpoint.safetensors"));
//! cfg.checkpoint.every_epochs = 1;
//!
//! let knn_top1 = Arc::new(Mutex::new(Vec::new()));
//! let seen = Arc::clone(&knn_top1);
//! let monitor = KnnMonitor::new(Arc::clone(&train), test, method()?.default_eval_source(),
//!                               mocca_aug::Compose::new(vec![Preset::SimClrCifar.normalize().into()])?);
//! let mut trainer = Trainer::new(method()?, Arc::clone(&train), views.clone(), cfg.clone(), &dev)?
//!     .with_knn(monitor, 1, false)
//!     .with_metrics(move |r: &Record| if let Record::Knn { top1, .. } = r { seen.lock().unwrap().push(*top1) });
//! assert_eq!(trainer.steps_per_epoch(), 5); // 40 images, batches of 8
//! assert_eq!(trainer.run()?, Outcome::Finished { step: 10 });
//! assert_eq!(knn_top1.lock().unwrap().len(), 2); // after epochs 1 and 2
//!
//! // Stop after step 5 (epoch 1), then resume from that checkpoint in a fresh trainer.
//! let mut first = cfg.clone();
//! first.stop_after_steps = Some(5);
//! first.checkpoint.path = Some(dir.join("half.safetensors"));
//! let mut a = Trainer::new(method()?, Arc::clone(&train), views.clone(), first.clone(), &dev)?;
//! assert_eq!(a.run()?, Outcome::StepLimit { step: 5 });
//! first.stop_after_steps = None;
//! let mut b = Trainer::new(method()?, train, views, first, &dev)?;
//! assert_eq!(b.resume(&dir.join("half.safetensors"))?.global_step, 5);
//! b.run()?;
//! let (w1, w2) = (trainer.method().state()?, b.method().state()?);
//! let key = "encoder.backbone.conv1.weight";
//! assert_eq!(w1[key].flatten_all()?.to_vec1::<f32>()?, w2[key].flatten_all()?.to_vec1::<f32>()?);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod checkpoint;
mod error;
pub mod files;
mod knn;
mod lock;
mod metrics;
mod trainer;

pub use checkpoint::{
    load_checkpoint, load_newest_checkpoint, read_checkpoint_meta, save_checkpoint,
    save_checkpoint_keeping, CheckpointMeta, LoadedCheckpoint, SkippedCheckpoint, CHECKPOINT_FILE,
};
pub use error::{Result, TrainError};
pub use knn::{
    embed, embed_sources, image_u8, labels_of, spread_subset, with_images, KnnMonitor, KnnReport,
};
pub use lock::{LockHolder, RunLock, LOCK_FILE};
pub use metrics::{
    read_records, truncate_after, BankStaleness, Collapse, JsonlMetrics, MetricsSink,
    QueueStaleness, Record, METRICS_FILE,
};
pub use trainer::{batch_views, CheckpointPolicy, Event, Outcome, Resumed, Trainer, TrainerConfig};
