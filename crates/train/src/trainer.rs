//! The epoch loop: batches → views → [`Method::step`], with kNN monitoring,
//! checkpoints, stop requests and exact resume.

use crate::checkpoint::{
    load_checkpoint, load_newest_checkpoint, save_checkpoint_keeping, CheckpointMeta,
    SkippedCheckpoint,
};
use crate::error::{Result, TrainError};
use crate::knn::{image_u8, KnnMonitor, KnnReport};
use crate::metrics::{Collapse, MetricsSink, Record};
use candle_core::{Device, Tensor};
use mocca_aug::{MultiView, ViewBatch};
use mocca_data::{BadFile, BatchSampler, Images, Loader, OnBadFile, Order};
use mocca_methods::staleness::{bank_cosines, queue_cosines, BankCosines, QueueCosines};
use mocca_methods::{CollapseMetrics, Method, MethodError, StepStats};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How long a run is and how it is seeded and logged.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerConfig {
    pub epochs: usize,
    /// Source images per step (each gives one view per pipeline of the [`MultiView`]).
    pub batch_size: usize,
    /// Seeds the data order: epoch `e` visits the images in
    /// `mocca_data::shuffled_indices(len, data_seed, e)`, the last partial batch dropped.
    pub data_seed: u64,
    /// Seeds the augmentations: view `v` of image `i` in epoch `e` is drawn from
    /// `(aug_seed, e, i, v)`.
    pub aug_seed: u64,
    /// A [`Record::Step`] every `log_every` steps (and at the last step of the call).
    pub log_every: u64,
    /// The collapse monitor ([`mocca_methods::collapse`]) on the step's own
    /// embeddings every this many steps (0: off): written into that step's
    /// [`Record::Step`] (one is written at those steps too) and reported as
    /// [`Event::Collapse`]. About 5 ms each time at batch 256 (2 % of a width-0.125 CPU step).
    /// Methods with a memory bank ([`Method::memory_bank`]) also get the
    /// bank's staleness ([`mocca_methods::staleness`], [`Event::BankStaleness`],
    /// `"bank"` in the record), about 10 ms more at 50,000 rows; methods with a
    /// momentum queue ([`Method::key_queue`]) the queue's ([`Event::QueueStaleness`],
    /// `"queue"` in the record), about 1 ms more at K 4096 (0.4 % of a step; the
    /// ignored test `collapse_cost` measures both).
    pub collapse_every: u64,
    /// Stop (with a checkpoint) after this step; `run` can be called again later.
    pub stop_after_steps: Option<u64>,
    /// Batches the loader thread prepares ahead of the step running.
    pub prefetch: usize,
    /// What a batch does with a file that does not decode (streamed image folders): skip it
    /// (reported as [`Event::SkippedFile`] and [`Record::SkippedFile`]) or stop the run with
    /// a checkpoint of the last finished step.
    pub on_bad_file: OnBadFile,
    pub checkpoint: CheckpointPolicy,
}

impl TrainerConfig {
    /// `epochs` of `batch_size`, seeds 0, a step record and the collapse
    /// monitor every 10 steps, two batches prefetched, no checkpoints.
    pub fn new(epochs: usize, batch_size: usize) -> Self {
        Self {
            epochs,
            batch_size,
            data_seed: 0,
            aug_seed: 0,
            log_every: 10,
            collapse_every: 10,
            stop_after_steps: None,
            prefetch: 2,
            on_bad_file: OnBadFile::Skip,
            checkpoint: CheckpointPolicy::default(),
        }
    }
}

/// When and where checkpoints are written. Each one replaces the previous
/// one atomically (temporary file, fsync, rename): the previous checkpoint
/// stays whole until the new one is complete. A checkpoint is always taken
/// at the end of the run, on a stop request and at `stop_after_steps`.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointPolicy {
    /// The checkpoint file; `None`: never write one.
    pub path: Option<PathBuf>,
    /// Also every N epochs (0: only at the end and when stopping).
    pub every_epochs: usize,
    /// Also every N steps inside epochs (0: off).
    pub every_steps: u64,
    /// Saved verbatim in each checkpoint ([`CheckpointMeta::run_config`]):
    /// what the caller needs to rebuild the run (the CLI saves its TOML config).
    pub run_config: String,
    /// Checkpoints kept, the newest included (at least 1): the older ones
    /// beside it as `checkpoint.1.safetensors`, … ([`save_checkpoint_keeping`]),
    /// for [`Trainer::resume_newest`] to fall back on. Default 2.
    pub keep: usize,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            path: None,
            every_epochs: 0,
            every_steps: 0,
            run_config: String::new(),
            keep: 2,
        }
    }
}

/// What the trainer reports to the progress callback as it goes.
#[non_exhaustive]
pub enum Event<'a> {
    /// Before the first step of this call; `end` is where it will stop.
    Started { step: u64, end: u64, total: u64 },
    /// A step finished.
    Step(&'a StepStats),
    /// The collapse monitor read step `step`'s embeddings (sent just before
    /// that step's [`Event::Step`]).
    Collapse {
        step: u64,
        metrics: &'a CollapseMetrics,
    },
    /// With the collapse monitor, for a method with a memory bank: how its
    /// queries relate to their own rows and to the rows written earlier in
    /// the epoch or not yet ([`BankCosines`]).
    BankStaleness { step: u64, cosines: &'a BankCosines },
    /// The momentum queue's staleness at `step` (with [`Event::Collapse`], for
    /// methods with a queue): the queries' cosine to the keys by age
    /// ([`QueueCosines`]).
    QueueStaleness {
        step: u64,
        cosines: &'a QueueCosines,
    },
    /// The step that ends epoch `epoch` (1-based) finished.
    EpochEnd {
        epoch: usize,
        step: u64,
        loss_mean: f64,
        seconds: f64,
    },
    /// A kNN evaluation is about to run (it may take a while).
    KnnStarting { step: u64, method: &'a dyn Method },
    /// A kNN evaluation finished.
    Knn {
        step: u64,
        report: &'a KnnReport,
        seconds: f64,
    },
    /// A checkpoint of step `step` is complete at `path`.
    Checkpoint { step: u64, path: &'a Path },
    /// A file that did not decode was skipped in step `step`; `first` is true the first
    /// time this call of [`Trainer::run`] meets it.
    SkippedFile {
        step: u64,
        file: &'a BadFile,
        first: bool,
    },
}

/// What [`Trainer::resume_newest`] resumed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    pub meta: CheckpointMeta,
    /// The checkpoint used.
    pub path: PathBuf,
    /// The newer checkpoints passed over, newest first, each with why.
    pub skipped: Vec<SkippedCheckpoint>,
}

/// How a call to [`Trainer::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// All epochs are done.
    Finished { step: u64 },
    /// The stop flag was set; the run stopped (checkpointed) after `step`.
    StopRequested { step: u64 },
    /// `stop_after_steps` was reached (checkpointed).
    StepLimit { step: u64 },
    /// The method was already at the end (or past `stop_after_steps`).
    NothingToDo { step: u64 },
}

struct KnnSchedule {
    monitor: KnnMonitor,
    every_epochs: usize,
    at_start: bool,
}

type ProgressFn = Box<dyn FnMut(&Event<'_>)>;

/// Trains any [`Method`] on [`Images`] (in memory or streamed) through a [`MultiView`]
/// augmentation: the loop `cargo xtask train` runs.
///
/// Exact resume: the data order is a function of `(data_seed, epoch)`, each
/// view of `(aug_seed, epoch, image, view)`, and everything else random (queue
/// or bank initialisation and sampling, shuffle-BN) travels in the method's
/// state with the weights, optimiser buffers, queue and step. A run resumed
/// from a checkpoint ([`Trainer::resume`]) therefore repeats the same steps and
/// ends with the same weights, bit for bit, as one that was never stopped.
pub struct Trainer {
    method: Box<dyn Method>,
    data: Arc<Images>,
    views: MultiView,
    cfg: TrainerConfig,
    device: Device,
    steps_per_epoch: u64,
    knn: Option<KnnSchedule>,
    sinks: Vec<Box<dyn MetricsSink>>,
    progress: Option<ProgressFn>,
    stop: Option<Arc<AtomicBool>>,
    elapsed_before: f64,
    last_saved: Option<u64>,
}

impl Trainer {
    /// A trainer of `method` on `data` (the images the method learns from;
    /// labels unused) with `views` drawn per image, on `device`.
    pub fn new(
        method: Box<dyn Method>,
        data: Arc<Images>,
        views: MultiView,
        cfg: TrainerConfig,
        device: &Device,
    ) -> Result<Self> {
        if cfg.epochs == 0 {
            return Err(TrainError::InvalidConfig(
                "epochs must be at least 1".into(),
            ));
        }
        if cfg.log_every == 0 || cfg.prefetch == 0 {
            return Err(TrainError::InvalidConfig(
                "log_every and prefetch must be at least 1".into(),
            ));
        }
        let steps_per_epoch = sampler(&data, &cfg)?.batches_per_epoch() as u64;
        Ok(Self {
            method,
            data,
            views,
            cfg,
            device: device.clone(),
            steps_per_epoch,
            knn: None,
            sinks: Vec::new(),
            progress: None,
            stop: None,
            elapsed_before: 0.0,
            last_saved: None,
        })
    }

    /// kNN accuracy every `every_epochs` epochs (0: only at the end), and
    /// before the first step when `at_start`.
    pub fn with_knn(mut self, monitor: KnnMonitor, every_epochs: usize, at_start: bool) -> Self {
        self.knn = Some(KnnSchedule {
            monitor,
            every_epochs,
            at_start,
        });
        self
    }

    /// Adds a sink for the run's [`Record`]s (a [`JsonlMetrics`](crate::JsonlMetrics) file,
    /// or a closure `|r: &Record| ...`).
    pub fn with_metrics(mut self, sink: impl MetricsSink + 'static) -> Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// Calls `f` with each [`Event`] (progress bars, logs).
    pub fn with_progress(mut self, f: impl FnMut(&Event<'_>) + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// When `flag` becomes true (a Ctrl-C handler, another thread), the run
    /// checkpoints at the next step boundary and returns [`Outcome::StopRequested`].
    pub fn with_stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Wall time of earlier processes of this run, so `elapsed_s` continues
    /// ([`JsonlMetrics::elapsed_s`](crate::JsonlMetrics::elapsed_s) of a resumed file).
    pub fn with_elapsed_before(mut self, seconds: f64) -> Self {
        self.elapsed_before = seconds;
        self
    }

    pub fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    pub fn total_steps(&self) -> u64 {
        self.steps_per_epoch * self.cfg.epochs as u64
    }

    pub fn method(&self) -> &dyn Method {
        self.method.as_ref()
    }

    /// Hands the trained method back.
    pub fn into_method(self) -> Box<dyn Method> {
        self.method
    }

    /// Continues from the checkpoint at `path`: checks that it was taken on a
    /// dataset of this size and fits the method, and loads it (nothing is
    /// changed on error). Returns its metadata.
    pub fn resume(&mut self, path: &Path) -> Result<CheckpointMeta> {
        let (state, meta) = load_checkpoint(path, &self.device)?;
        self.resume_from(path, state, meta)
    }

    /// [`Trainer::resume`] from the newest of `path` and its previous
    /// checkpoints that passes its checksums
    /// ([`crate::checkpoint::load_newest_checkpoint`]: damaged ones are
    /// moved aside as `*.damaged`). The checkpoints passed over, and why,
    /// come back in [`Resumed::skipped`] for the caller to report. A
    /// checkpoint that loads but cannot continue this run (another dataset or
    /// configuration) is an error, not a reason to fall back.
    pub fn resume_newest(&mut self, path: &Path) -> Result<Resumed> {
        let loaded = load_newest_checkpoint(path, &self.device)?;
        let meta = self.resume_from(&loaded.path, loaded.tensors, loaded.meta)?;
        Ok(Resumed {
            meta,
            path: loaded.path,
            skipped: loaded.skipped,
        })
    }

    fn resume_from(
        &mut self,
        path: &Path,
        state: std::collections::HashMap<String, Tensor>,
        meta: CheckpointMeta,
    ) -> Result<CheckpointMeta> {
        let p = path.display();
        let spe = self.steps_per_epoch;
        if (meta.train_images, meta.steps_per_epoch) != (self.data.len(), spe) {
            return Err(TrainError::Resume(format!(
                "{p} was taken on {} training images ({} steps per epoch); the data given has {} \
                 ({spe} steps per epoch): resume on the same dataset",
                meta.train_images,
                meta.steps_per_epoch,
                self.data.len()
            )));
        }
        if meta.global_step > self.total_steps() {
            return Err(TrainError::Resume(format!(
                "{p}: checkpoint step {} is past the run's {} steps",
                meta.global_step,
                self.total_steps()
            )));
        }
        self.method
            .load_state(&state)
            .map_err(|e| TrainError::Resume(format!("{p} does not fit this configuration: {e}")))?;
        if self.method.steps_done() != meta.global_step {
            return Err(TrainError::Resume(format!(
                "{p}: the method state is at step {} but the metadata says {}",
                self.method.steps_done(),
                meta.global_step
            )));
        }
        self.last_saved = Some(meta.global_step);
        Ok(meta)
    }

    fn emit(&mut self, event: Event<'_>) {
        if let Some(f) = &mut self.progress {
            f(&event);
        }
    }

    fn record(&mut self, r: Record) -> Result<()> {
        for s in &mut self.sinks {
            s.record(&r)?;
        }
        Ok(())
    }

    fn save(&mut self, step: u64) -> Result<()> {
        let Some(path) = self.cfg.checkpoint.path.clone() else {
            return Ok(());
        };
        let state: Vec<(String, Tensor)> = self.method.state()?.into_iter().collect();
        let spe = self.steps_per_epoch;
        let meta = CheckpointMeta {
            run_config: self.cfg.checkpoint.run_config.clone(),
            global_step: step,
            epoch: (step / spe) as usize,
            step_in_epoch: (step % spe) as usize,
            finished: step == self.total_steps(),
            train_images: self.data.len(),
            steps_per_epoch: spe,
        };
        save_checkpoint_keeping(&path, &state, &meta, self.cfg.checkpoint.keep.max(1))?;
        self.last_saved = Some(step);
        self.emit(Event::Checkpoint { step, path: &path });
        Ok(())
    }

    fn knn(&mut self, step: u64) -> Result<()> {
        let Some(k) = &self.knn else {
            return Ok(());
        };
        if let Some(f) = &mut self.progress {
            f(&Event::KnnStarting {
                step,
                method: self.method.as_ref(),
            });
        }
        let t0 = Instant::now();
        let report = k.monitor.evaluate(self.method.as_ref(), &self.device)?;
        let seconds = t0.elapsed().as_secs_f64();
        let epoch = step as f64 / self.steps_per_epoch as f64;
        self.emit(Event::Knn {
            step,
            report: &report,
            seconds,
        });
        for r in &report.results {
            self.record(Record::Knn {
                step,
                epoch,
                top1: 100.0 * r.top1,
                k: r.k,
                t: r.temperature,
                encoder: r.source.encoder.to_string(),
                layer: r.source.layer.to_string(),
                n_train: report.n_train,
                n_test: r.total,
            })?;
        }
        Ok(())
    }

    /// Whether the collapse monitor (and the bank's staleness with it) reads step `step`.
    fn monitor_due(&self, step: u64) -> bool {
        let every = self.cfg.collapse_every;
        every > 0 && step.is_multiple_of(every)
    }

    /// The collapse monitor's reading of step `step`'s embeddings, when it is
    /// due and the method keeps them.
    fn collapse_metrics(&self, step: u64) -> Result<Option<CollapseMetrics>> {
        if !self.monitor_due(step) {
            return Ok(None);
        }
        match self.method.last_embeddings() {
            Some(e) if e.view0.dims().first().is_some_and(|&n| n >= 2) => Ok(Some(e.metrics()?)),
            _ => Ok(None),
        }
    }

    /// The memory bank's staleness at step `step` (due with the collapse
    /// monitor), `written` the rows of this epoch's earlier batches.
    fn bank_staleness(
        &self,
        step: u64,
        batch: &[usize],
        written: &[usize],
    ) -> Result<Option<BankCosines>> {
        if !self.monitor_due(step) {
            return Ok(None);
        }
        let (Some(bank), Some(e)) = (self.method.memory_bank(), self.method.last_embeddings())
        else {
            return Ok(None);
        };
        let Some(own) = &e.view1 else {
            return Ok(None);
        };
        Ok(Some(bank_cosines(&e.view0, own, bank, batch, written)?))
    }

    /// The momentum queue's staleness at step `step` (due with the collapse
    /// monitor).
    fn queue_staleness(&self, step: u64) -> Result<Option<QueueCosines>> {
        if !self.monitor_due(step) {
            return Ok(None);
        }
        let (Some(queue), Some(e)) = (self.method.key_queue(), self.method.last_embeddings())
        else {
            return Ok(None);
        };
        if e.view0.dims().first().is_none_or(|&n| n < 2) {
            return Ok(None);
        }
        Ok(Some(queue_cosines(&e.view0, queue)?))
    }

    /// A batch could not be made (a file that does not decode under [`OnBadFile::Fail`], an
    /// unreadable file): the steps done so far are checkpointed (when there is somewhere to
    /// write) so that the run resumes there once the file is fixed or removed.
    fn stop_on_data_error(&mut self, e: TrainError) -> TrainError {
        let step = self.method.steps_done();
        let saved =
            if step > 0 && self.cfg.checkpoint.path.is_some() && self.last_saved != Some(step) {
                self.save(step).map(|()| Some(step))
            } else {
                Ok(self.last_saved)
            };
        match saved {
            Ok(last_checkpoint) => TrainError::DataStopped {
                step,
                last_checkpoint,
                cause: Box::new(e),
            },
            Err(save_error) => save_error,
        }
    }

    /// Trains from the method's current step to the end of the run (or to
    /// `stop_after_steps`, or a stop request). A NaN / infinite loss ends the
    /// run with [`TrainError::Diverged`], the update not applied.
    pub fn run(&mut self) -> Result<Outcome> {
        let spe = self.steps_per_epoch;
        let total = self.total_steps();
        let start = self.method.steps_done();
        let end = self.cfg.stop_after_steps.map_or(total, |s| s.min(total));
        if start >= end {
            return Ok(Outcome::NothingToDo { step: start });
        }
        let started = Instant::now();
        self.emit(Event::Started {
            step: start,
            end,
            total,
        });
        if start == 0 && self.knn.as_ref().is_some_and(|k| k.at_start) {
            self.knn(0)?;
        }

        let data = Arc::clone(&self.data);
        let views = self.views.clone();
        let seed = self.cfg.aug_seed;
        let batches = sampler(&self.data, &self.cfg)?
            .iter_from(0, start as usize)
            .take((end - start) as usize);
        // The rows this epoch's earlier batches wrote, for the bank's
        // staleness (rebuilt from the data order when resuming mid-epoch).
        let track_written = self.cfg.collapse_every > 0 && self.method.memory_bank().is_some();
        let mut written: Vec<usize> = Vec::new();
        if track_written {
            let epoch_start = start - start % spe;
            for b in sampler(&self.data, &self.cfg)?
                .iter_from(0, epoch_start as usize)
                .take((start - epoch_start) as usize)
            {
                written.extend_from_slice(&b.indices);
            }
        }
        let on_bad = self.cfg.on_bad_file;
        let loader = Loader::new(
            batches,
            self.cfg.prefetch,
            move |batch: &mocca_data::Batch| {
                batch_views(&data, &batch.indices, &views, seed, batch.epoch, on_bad)
            },
        )?;
        let mut warned = std::collections::HashSet::new();

        let mut epoch_loss = (0.0f64, 0u64);
        let mut epoch_started = Instant::now();
        let mut window = (start, Instant::now());
        for item in loader {
            let loaded = match item {
                Ok(l) => l,
                Err(e) => return Err(self.stop_on_data_error(e)),
            };
            let (views, skipped) = loaded.data;
            let x: Vec<Tensor> = views
                .into_iter()
                .map(|v| v.into_tensor(&self.device))
                .collect::<candle_core::Result<_>>()?;
            let stats = match self.method.step(&x, &loaded.batch.indices) {
                Ok(s) => s,
                Err(MethodError::NonFiniteLoss { step, loss }) => {
                    return Err(TrainError::Diverged {
                        step: step + 1,
                        epoch: step / spe + 1,
                        loss,
                        last_checkpoint: self.last_saved,
                    });
                }
                Err(e) => return Err(e.into()),
            };
            let step = stats.step;
            for file in &skipped {
                let first = warned.insert(file.index);
                self.emit(Event::SkippedFile { step, file, first });
                self.record(Record::SkippedFile {
                    step,
                    epoch: step as f64 / spe as f64,
                    index: file.index,
                    path: file.path.display().to_string(),
                    error: file.message.clone(),
                    stand_in: file.stand_in,
                })?;
            }
            epoch_loss.0 += stats.loss;
            epoch_loss.1 += 1;
            let collapse = self.collapse_metrics(step)?;
            if let Some(metrics) = &collapse {
                self.emit(Event::Collapse { step, metrics });
            }
            let staleness = if track_written {
                let batch = &loaded.batch.indices;
                let cosines = self.bank_staleness(step, batch, &written)?;
                written.extend_from_slice(batch);
                if step % spe == 0 {
                    written.clear();
                }
                cosines
            } else {
                None
            };
            if let Some(cosines) = &staleness {
                self.emit(Event::BankStaleness { step, cosines });
            }
            let queue_staleness = self.queue_staleness(step)?;
            if let Some(cosines) = &queue_staleness {
                self.emit(Event::QueueStaleness { step, cosines });
            }
            self.emit(Event::Step(&stats));
            if step % self.cfg.log_every == 0 || step == end || collapse.is_some() {
                let dt = window.1.elapsed().as_secs_f64();
                let ips = if dt > 0.0 {
                    (step - window.0) as f64 * self.cfg.batch_size as f64 / dt
                } else {
                    0.0
                };
                window = (step, Instant::now());
                let elapsed_s = self.elapsed_before + started.elapsed().as_secs_f64();
                self.record(Record::Step {
                    step,
                    epoch: step as f64 / spe as f64,
                    loss: stats.loss,
                    lr: stats.lr,
                    momentum: stats.momentum,
                    pos_acc: stats.accuracy.is_finite().then_some(stats.accuracy),
                    images_per_s: ips,
                    elapsed_s,
                    collapse: collapse.as_ref().map(|m| {
                        Collapse::from(m)
                            .with_bank(staleness.as_ref())
                            .with_queue(queue_staleness.as_ref())
                    }),
                })?;
            }
            let mut saved_now = false;
            if step % spe == 0 {
                let epoch = (step / spe) as usize;
                let loss_mean = epoch_loss.0 / epoch_loss.1.max(1) as f64;
                let seconds = epoch_started.elapsed().as_secs_f64();
                self.emit(Event::EpochEnd {
                    epoch,
                    step,
                    loss_mean,
                    seconds,
                });
                self.record(Record::Epoch {
                    step,
                    epoch: epoch as f64,
                    loss_mean,
                    seconds,
                })?;
                epoch_loss = (0.0, 0);
                let last = step == total;
                let every = self.knn.as_ref().map_or(0, |k| k.every_epochs);
                // kNN before the checkpoint: a run killed during kNN redoes
                // the epoch and its kNN, so the metrics never lack one.
                if last || (every > 0 && epoch.is_multiple_of(every)) {
                    self.knn(step)?;
                }
                let ckpt_every = self.cfg.checkpoint.every_epochs;
                if last || (ckpt_every > 0 && epoch.is_multiple_of(ckpt_every)) {
                    self.save(step)?;
                    saved_now = true;
                }
                epoch_started = Instant::now();
                window = (step, Instant::now());
            } else if self.cfg.checkpoint.every_steps > 0
                && step % self.cfg.checkpoint.every_steps == 0
            {
                self.save(step)?;
                saved_now = true;
            }
            if self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
                if !saved_now {
                    self.save(step)?;
                }
                return Ok(Outcome::StopRequested { step });
            }
            if step == end && end < total {
                if !saved_now {
                    self.save(step)?;
                }
                return Ok(Outcome::StepLimit { step });
            }
        }
        Ok(Outcome::Finished { step: total })
    }
}

/// The views of one batch as the trainer's loader thread makes them: the images `indices` of
/// `data` (decoded in parallel when streamed, a bad file handled as `on_bad` says), each view
/// drawn from `(seed, epoch, index, view)`; with the files skipped.
pub fn batch_views(
    data: &Images,
    indices: &[usize],
    views: &MultiView,
    seed: u64,
    epoch: u64,
    on_bad: OnBadFile,
) -> Result<(Vec<ViewBatch>, Vec<BadFile>)> {
    // Decoded pixels (streamed sets) live only while their views are drawn.
    let loaded = data.load(indices, on_bad)?;
    let images = loaded
        .views()
        .iter()
        .zip(indices)
        .map(|(v, &i)| image_u8(v, i))
        .collect::<Result<Vec<_>>>()?;
    let ids: Vec<u64> = indices.iter().map(|&i| i as u64).collect();
    let views = views.apply_batch(&images, &ids, seed, epoch)?;
    Ok((views, loaded.bad))
}

fn sampler(data: &Images, cfg: &TrainerConfig) -> Result<BatchSampler> {
    BatchSampler::new(
        data.len(),
        cfg.batch_size,
        Order::Shuffled {
            seed: cfg.data_seed,
        },
        true,
    )
    .map_err(|e| TrainError::InvalidConfig(format!("batch_size {}: {e}", cfg.batch_size)))
}
