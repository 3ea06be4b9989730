//! A whole run from a config: the data it reads and the [`Trainer`] that
//! `cargo xtask train` runs, built by the same code for the CLI and for Rust
//! callers (`examples/moco_cifar10.rs`).

use crate::config::TrainConfig;
use crate::error::{invalid, Result};
use crate::setup;
use candle_core::Device;
use mocca_data::{BatchSampler, Images, OnBadFile, Order};
use mocca_train::{CheckpointPolicy, Trainer, TrainerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The images a run reads.
#[derive(Clone)]
pub struct RunData {
    /// What the encoder trains on: `data.train_split` (the train split unless
    /// the recipe says otherwise, e.g. STL-10's train+unlabeled).
    pub ssl: Arc<Images>,
    /// The kNN monitor's labeled memory set: the train split.
    pub train: Arc<Images>,
    /// The test split, when the dataset has one (no kNN monitor without it).
    pub test: Option<Arc<Images>>,
}

impl RunData {
    /// Opens the splits `cfg` trains and monitors on from dataset folder `dir`
    /// (CIFAR-10/100 binaries, STL-10, or an image folder, streamed when large:
    /// [`setup::open_options`]).
    pub fn open(cfg: &TrainConfig, dir: &Path) -> Result<Self> {
        Self::open_with(dir, cfg, &setup::open_options(cfg, None)?)
    }

    /// [`RunData::open`] with the options given (a progress callback for long listings).
    pub fn open_with(
        dir: &Path,
        cfg: &TrainConfig,
        options: &mocca_data::OpenOptions,
    ) -> Result<Self> {
        let (train, test) = setup::open_splits(dir, options)?;
        let train = Arc::new(train);
        let ssl = setup::open_train_split(dir, cfg.data.train_split, &train, options)?;
        Ok(Self {
            ssl,
            train,
            test: test.map(Arc::new),
        })
    }
}

/// Optimizer steps in one epoch of `cfg` over `data` (the last partial batch dropped).
pub fn steps_per_epoch(cfg: &TrainConfig, data: &RunData) -> Result<u64> {
    let sampler = BatchSampler::new(
        data.ssl.len(),
        cfg.batch_size,
        Order::Shuffled {
            seed: cfg.data_seed(),
        },
        true,
    )
    .map_err(|e| invalid!("batch_size {}: {e}", cfg.batch_size))?;
    Ok(sampler.batches_per_epoch() as u64)
}

/// The trainer of `cfg`: its method (encoders, initialisation, optimiser,
/// schedules, negatives), views, data order, kNN monitor (when `data` has a
/// test split), collapse monitor and checkpoint policy (`checkpoint`, every
/// `run.checkpoint_every` epochs, `run.keep_checkpoints` kept, the config
/// saved in each). `run.stop_after_steps` applies to this trainer and is left
/// out of the saved config, as the CLI does. Nothing is read or written
/// until [`Trainer::run`] / [`Trainer::resume_newest`].
pub fn build_trainer(
    cfg: &TrainConfig,
    data: &RunData,
    checkpoint: Option<PathBuf>,
    device: &Device,
) -> Result<Trainer> {
    let mut saved = cfg.clone();
    let stop_after_steps = saved.run.stop_after_steps.take();
    let steps_per_epoch = steps_per_epoch(cfg, data)?;
    let tcfg = TrainerConfig {
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        data_seed: cfg.data_seed(),
        aug_seed: cfg.aug_seed(),
        log_every: cfg.run.log_every.max(1),
        collapse_every: cfg.run.collapse_every,
        stop_after_steps,
        prefetch: 2,
        on_bad_file: if cfg.run.skip_bad_files {
            OnBadFile::Skip
        } else {
            OnBadFile::Fail
        },
        checkpoint: CheckpointPolicy {
            path: checkpoint,
            every_epochs: cfg.run.checkpoint_every.max(1),
            every_steps: cfg.run.checkpoint_every_steps,
            run_config: saved.to_toml(),
            keep: cfg.run.keep_checkpoints.max(1),
        },
    };
    let method = setup::build_method(cfg, steps_per_epoch, data.ssl.len(), device)?;
    // Views are checked once here, not deep inside the loader thread.
    let views = setup::train_views(cfg)?;
    let mut trainer = Trainer::new(method, Arc::clone(&data.ssl), views, tcfg, device)?;
    if let Some(test) = &data.test {
        let monitor = setup::knn_monitor(
            cfg,
            setup::monitor_sources(cfg)?,
            Arc::clone(&data.train),
            Arc::clone(test),
        )?;
        trainer = trainer.with_knn(monitor, cfg.eval.knn_every, cfg.eval.knn_at_start);
    }
    Ok(trainer)
}
