//! `cargo xtask train moco|mocov2|simclr`: self-supervised training with a
//! progress line, metrics, kNN monitoring, checkpoints and exact resume.
//!
//! Exact resume: every source of randomness is a function of the step, or is
//! saved in the checkpoint. The data order is `f(seed, epoch)` (mocca-data),
//! each augmented view `f(seed, epoch, sample index, view)` (mocca-aug), and
//! the method's own generators (queue / bank initialisation and sampling,
//! shuffle-BN) travel in its state with the weights, optimiser buffers, queue
//! and step. A run restarted from its last checkpoint therefore repeats the
//! same steps and ends with the same weights, bit for bit, as one that was
//! never stopped.

mod cpu_advice;
mod progress;

use crate::runs::config::{
    ConfigBuilder, DeviceKind, MethodName, Negatives, Precision, Recipe, SchedulePer, TrainConfig,
};
use crate::runs::metrics::{read_records, truncate_after, MetricsWriter, Record};
use crate::runs::{
    self, fetch, files, load_checkpoint, save_checkpoint, setup, CheckpointMeta, CHECKPOINT_FILE,
    CONFIG_FILE, METRICS_FILE,
};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use mocca_data::{BatchSampler, ImageDataset, Loader, Order};
use mocca_methods::{FeatureSource, Method, MethodError};
use progress::{Progress, StepView};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const USAGE: &str = "usage: cargo xtask train [moco|mocov2|simclr] [options]

Trains an encoder without labels. Settings come from an embedded preset
(method x recipe), then --config, then --set and the flags below; the
resolved config is saved as RUN/config.toml.

  --recipe cifar|cifar100|stl10|paper
                             preset family (default cifar: the MoCo CIFAR-10
                             colab, lightly's CIFAR-10 SimCLR; cifar100: the
                             same on CIFAR-100; stl10: 96 px on STL-10's
                             train+unlabeled images; paper: ImageNet)
  --config FILE.toml         overrides, any subset of the config's keys
  --set KEY=VALUE            one override, e.g. --set moco.queue_size=8192
  --print-config             print the resolved config and exit
  --data DIR                 dataset folder: CIFAR-10, CIFAR-100 or STL-10
                             binary, MNIST, image folder (default: $MOCCA_DATA,
                             else the first of ./data and the per-user cache
                             $XDG_CACHE_HOME/mocca or ~/.cache/mocca that holds
                             the recipe's dataset; if none does, it is
                             downloaded into the cache from its official URL,
                             MD5-checked, resumable)
  --no-download              never use the network (also MOCCA_NO_DOWNLOAD=1);
                             the error says what to fetch by hand, and where.
                             MOCCA_DOWNLOAD_MIRROR=URL downloads from URL/<file>
  --device auto|cpu|cuda     default auto: CUDA GPU 0 if this build has CUDA
                             and the GPU opens, else the CPU (said on stderr)
  --out DIR                  run folder (default runs/<method>-<recipe>)
  --epochs N  --batch-size N  --width X  --temperature X
  --lr X                     the learning rate used, whatever the batch size
  --base-lr X                a rate for the preset's reference batch
                             (optimizer.lr_scale_batch), scaled linearly with
                             --batch-size (the preset's own rule, if it has one)
  --seed N                   seeds everything; --init-seed N, --data-seed N,
                             --aug-seed N seed the weights (and queue, shuffle-BN
                             and bank draws), the data order and the
                             augmentations separately
  --precision f32|bf16       bf16: mixed precision (f32 master weights and
                             optimiser state, bf16 activations; for CUDA)
  --negatives queue|bank|end-to-end   --queue-size K   (MoCo)
  --knn-every N              kNN accuracy every N epochs (0: only at the end)
  --knn-train-limit N  --knn-test-limit N   kNN monitoring on N images
  --checkpoint-every-steps N also checkpoint every N steps
  --stop-after-steps N       checkpoint and stop after step N (resume later)
  --resume [DIR]             continue the run in DIR (default: --out) from its
                             checkpoint; only run settings may change

Ctrl-C checkpoints at the next step boundary and exits (a second Ctrl-C quits
at once; the last checkpoint stays intact).";

/// Set by the Ctrl-C / SIGTERM handler; the loop checkpoints and exits.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

fn install_interrupt_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
                eprintln!("\ninterrupted again: exiting without a new checkpoint");
                std::process::exit(130);
            }
            INTERRUPTED.store(true, Ordering::SeqCst);
        });
    });
}

#[derive(Default)]
struct Args {
    method: Option<MethodName>,
    recipe: Option<Recipe>,
    config_file: Option<PathBuf>,
    /// `key=value` assignments, in command-line order.
    sets: Vec<String>,
    out: Option<PathBuf>,
    resume: Option<Option<PathBuf>>,
    print_config: bool,
    /// `--no-download`: the data must be found; the network is never used.
    no_download: bool,
}

/// Config keys the dedicated flags set.
const FLAG_KEYS: &[(&str, &str)] = &[
    ("--data", "data.path"),
    ("--device", "run.device"),
    ("--epochs", "epochs"),
    ("--batch-size", "batch_size"),
    ("--seed", "seed"),
    ("--lr", "optimizer.lr"),
    ("--base-lr", "optimizer.base_lr"),
    ("--init-seed", "seeds.init"),
    ("--data-seed", "seeds.data"),
    ("--aug-seed", "seeds.augmentation"),
    ("--width", "model.width"),
    ("--precision", "model.precision"),
    ("--temperature", "loss.temperature"),
    ("--negatives", "moco.negatives"),
    ("--queue-size", "moco.queue_size"),
    ("--knn-every", "eval.knn_every"),
    ("--knn-train-limit", "run.knn_train_limit"),
    ("--knn-test-limit", "run.knn_test_limit"),
    ("--checkpoint-every-steps", "run.checkpoint_every_steps"),
    ("--stop-after-steps", "run.stop_after_steps"),
];

fn parse_args(args: &[String]) -> Result<Option<Args>> {
    let mut a = Args::default();
    let mut i = 0;
    let value = |i: &mut usize, flag: &str| -> Result<String> {
        *i += 1;
        args.get(*i)
            .cloned()
            .ok_or_else(|| anyhow!("{flag} needs a value\n\n{USAGE}"))
    };
    while i < args.len() {
        let arg = args[i].as_str();
        match arg {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "--recipe" => a.recipe = Some(Recipe::parse(&value(&mut i, arg)?)?),
            "--config" => a.config_file = Some(PathBuf::from(value(&mut i, arg)?)),
            "--set" => a.sets.push(value(&mut i, arg)?),
            "--out" => a.out = Some(PathBuf::from(value(&mut i, arg)?)),
            "--print-config" => a.print_config = true,
            "--no-download" => a.no_download = true,
            "--resume" => {
                let dir = args.get(i + 1).filter(|n| !n.starts_with('-'));
                if let Some(d) = dir {
                    i += 1;
                    a.resume = Some(Some(PathBuf::from(d)));
                } else {
                    a.resume = Some(None);
                }
            }
            _ if FLAG_KEYS.iter().any(|(f, _)| *f == arg) => {
                let key = FLAG_KEYS
                    .iter()
                    .find(|(f, _)| *f == arg)
                    .expect("checked")
                    .1;
                let v = value(&mut i, arg)?;
                // Strings are checked here, where the flag name is known.
                match arg {
                    "--device" => drop(DeviceKind::parse(&v)?),
                    "--negatives" => drop(Negatives::parse(&v)?),
                    "--precision" => drop(Precision::parse(&v)?),
                    _ => {}
                }
                let quoted = if matches!(arg, "--data" | "--device" | "--negatives" | "--precision")
                {
                    toml::Value::String(v).to_string()
                } else {
                    v
                };
                a.sets.push(format!("{key}={quoted}"));
            }
            s if s.starts_with('-') => bail!("unknown option `{s}`\n\n{USAGE}"),
            s => {
                if a.method.is_some() {
                    bail!("unexpected argument `{s}`\n\n{USAGE}");
                }
                a.method = Some(MethodName::parse(s)?);
            }
        }
        i += 1;
    }
    Ok(Some(a))
}

/// Fresh run: preset → file → overrides.
fn resolve_fresh(a: &Args) -> Result<TrainConfig> {
    let file_text = match &a.config_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config file {}", p.display()))?,
        ),
        None => None,
    };
    let file_doc = match (&file_text, &a.config_file) {
        (Some(t), Some(p)) => Some(ConfigBuilder::from_text(t, &p.display().to_string())?),
        _ => None,
    };
    let file_method = file_doc
        .as_ref()
        .and_then(|d| d.method().map(str::to_string));
    let method = match (a.method, file_method) {
        (Some(m), Some(f)) if m.as_str() != f => {
            bail!(
                "the command line says `{}` but the config file says method = \"{f}\"",
                m.as_str()
            )
        }
        (Some(m), _) => m,
        (None, Some(f)) => MethodName::parse(&f)?,
        (None, None) => bail!("which method? give moco, mocov2 or simclr\n\n{USAGE}"),
    };
    let recipe = match a.recipe {
        Some(r) => r,
        None => match file_doc.as_ref().and_then(|d| d.get_str("recipe")) {
            Some(r) => Recipe::parse(&r)?,
            None => Recipe::Cifar,
        },
    };
    let mut b = ConfigBuilder::from_preset(method, recipe);
    if let (Some(t), Some(p)) = (&file_text, &a.config_file) {
        b.merge_text(t, &p.display().to_string())?;
    }
    for s in &a.sets {
        b.set(s)?;
    }
    b.build()
}

pub fn run(args: &[String]) -> Result<()> {
    let Some(a) = parse_args(args)? else {
        return Ok(());
    };
    if let Some(resume) = &a.resume {
        let dir = match (resume, &a.out) {
            (Some(d), _) => d.clone(),
            (None, Some(o)) => o.clone(),
            (None, None) => {
                bail!("--resume needs the run folder (e.g. --resume runs/mocov2-cifar)")
            }
        };
        return resume_run(&a, &dir);
    }
    let cfg = resolve_fresh(&a)?;
    if a.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "runs/{}-{}",
            cfg.method.as_str(),
            cfg.recipe.as_str()
        ))
    });
    if out.join(CHECKPOINT_FILE).exists() || out.join(METRICS_FILE).exists() {
        bail!(
            "{} already holds a run; continue it with `cargo xtask train --resume {}` or choose another --out",
            out.display(),
            out.display()
        );
    }
    Trainer::start(cfg, &out, None, fetch::downloads_allowed(a.no_download))
}

fn resume_run(a: &Args, dir: &Path) -> Result<()> {
    if a.method.is_some() || a.recipe.is_some() {
        bail!("--resume continues the run's own method and recipe; drop the method / --recipe");
    }
    let ckpt = runs::checkpoint_path(dir)?;
    let meta = runs::read_checkpoint_meta(&ckpt)
        .with_context(|| format!("cannot resume from {}", ckpt.display()))?;
    let saved = meta.config.clone();
    let mut b = ConfigBuilder::from_text(&saved.to_toml(), "checkpoint config")?;
    if let Some(p) = &a.config_file {
        b.merge_file(p)?;
    }
    for s in &a.sets {
        b.set(s)?;
    }
    let cfg = b.build()?;
    let changed = crate::runs::config::trajectory_diff(&saved, &cfg);
    if !changed.is_empty() {
        bail!(
            "--resume keeps the run's training settings, but {} would change; only [run], [eval] \
             and data.path may change (the run's config is {}/{CONFIG_FILE})",
            changed.join(", "),
            dir.display()
        );
    }
    if a.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    Trainer::start(
        cfg,
        dir,
        Some(ckpt),
        fetch::downloads_allowed(a.no_download),
    )
}

/// The training images, and the test images for kNN monitoring.
struct Data {
    /// What the encoder trains on: `data.train_split` (the train split unless the recipe
    /// says otherwise, e.g. STL-10's train+unlabeled).
    ssl: Arc<ImageDataset>,
    /// The kNN monitor's labeled memory set: the train split.
    train: Arc<ImageDataset>,
    test: Option<ImageDataset>,
}

struct Trainer {
    cfg: TrainConfig,
    out: PathBuf,
    device: Device,
    data: Data,
    method: Box<dyn Method>,
    metrics: MetricsWriter,
    steps_per_epoch: u64,
    total_steps: u64,
    /// kNN monitor sources, the headline one first.
    sources: Vec<FeatureSource>,
    /// Wall time of earlier processes of this run (from metrics.jsonl).
    elapsed_before: f64,
    started: Instant,
    /// `--stop-after-steps` of this invocation (not saved with the run, so a
    /// later `--resume` continues to the end unless told otherwise).
    stop_after: Option<u64>,
}

impl Trainer {
    fn start(
        mut cfg: TrainConfig,
        out: &Path,
        resume_from: Option<PathBuf>,
        allow_download: bool,
    ) -> Result<()> {
        install_interrupt_handler();
        let device = runs::select_device(cfg.run.device)?;
        let sources = setup::monitor_sources(&cfg)?;
        let data_dir = fetch::locate_data(&cfg, allow_download)?;
        let (train, test) = setup::open_splits(&data_dir)?;
        let train = Arc::new(train);
        let ssl = setup::open_train_split(&data_dir, cfg.data.train_split, &train)?;
        // The saved config names the data actually read, so `eval` and
        // `--resume` find it from any working directory.
        let abs = std::fs::canonicalize(&data_dir).unwrap_or_else(|_| data_dir.clone());
        cfg.data.path = Some(abs.display().to_string());
        let stop_after = cfg.run.stop_after_steps.take();
        describe_data(&data_dir, &cfg, &ssl, &train, test.as_ref());
        let sampler = BatchSampler::new(
            ssl.len(),
            cfg.batch_size,
            Order::Shuffled {
                seed: cfg.data_seed(),
            },
            true,
        )
        .map_err(|e| anyhow!("batch_size {}: {e}", cfg.batch_size))?;
        let steps_per_epoch = sampler.batches_per_epoch() as u64;
        let total_steps = steps_per_epoch * cfg.epochs as u64;
        let mut method = setup::build_method(&cfg, steps_per_epoch, ssl.len(), &device)?;
        // Views are checked once here, not deep inside the loader thread.
        let views = setup::train_views(&cfg)?;

        std::fs::create_dir_all(out)
            .with_context(|| format!("cannot create run folder {}", out.display()))?;
        files::remove_stale_temp_files(out, &[CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE]);
        let metrics_path = out.join(METRICS_FILE);
        let mut elapsed_before = 0.0;
        if let Some(ckpt) = &resume_from {
            let (state, meta) = load_checkpoint(ckpt, &device)?;
            if (meta.train_images, meta.steps_per_epoch) != (ssl.len(), steps_per_epoch) {
                bail!(
                    "{} was taken on {} training images ({} steps per epoch); the data at {} has {} \
                     ({steps_per_epoch} steps per epoch): resume on the same dataset",
                    ckpt.display(),
                    meta.train_images,
                    meta.steps_per_epoch,
                    data_dir.display(),
                    ssl.len()
                );
            }
            method
                .load_state(&state)
                .with_context(|| format!("{} does not fit this configuration", ckpt.display()))?;
            if method.steps_done() != meta.global_step {
                bail!(
                    "{}: the method state is at step {} but the metadata says {}",
                    ckpt.display(),
                    method.steps_done(),
                    meta.global_step
                );
            }
            if meta.global_step > total_steps {
                bail!(
                    "{}: checkpoint step {} is past the run's {total_steps} steps",
                    ckpt.display(),
                    meta.global_step
                );
            }
            truncate_after(&metrics_path, meta.global_step)?;
            if metrics_path.exists() {
                elapsed_before = read_records(&metrics_path)?
                    .iter()
                    .rev()
                    .find_map(|r| match r {
                        Record::Step { elapsed_s, .. } => Some(*elapsed_s),
                        _ => None,
                    })
                    .unwrap_or(0.0);
            }
            eprintln!(
                "resuming {} from step {} (epoch {}, step {} of {steps_per_epoch})",
                out.display(),
                meta.global_step,
                meta.epoch + 1,
                meta.step_in_epoch
            );
        }
        files::write_atomic(&out.join(CONFIG_FILE), cfg.to_toml().as_bytes())?;
        let metrics = MetricsWriter::open(&metrics_path)?;
        let mut t = Trainer {
            cfg,
            out: out.to_path_buf(),
            device,
            data: Data { ssl, train, test },
            method,
            metrics,
            steps_per_epoch,
            total_steps,
            sources,
            elapsed_before,
            started: Instant::now(),
            stop_after,
        };
        t.describe_run();
        t.train(views)
    }

    fn describe_run(&self) {
        let c = &self.cfg;
        let negatives = match &c.moco {
            Some(m) => match m.negatives {
                Negatives::Queue => format!(", queue K={} m={}", m.queue_size, m.momentum),
                Negatives::Bank => format!(
                    ", memory bank ({} negatives) m={}",
                    m.queue_size, m.momentum
                ),
                Negatives::EndToEnd => ", end-to-end (in-batch keys)".into(),
            },
            None => String::new(),
        };
        let lr = match (c.optimizer.lr, c.optimizer.base_lr) {
            (None, Some(base)) => format!(
                "{} (base {} x batch {} / {})",
                fmt_num(c.effective_lr()),
                fmt_num(base),
                c.batch_size,
                c.optimizer.lr_scale_batch
            ),
            _ => fmt_num(c.effective_lr()),
        };
        let per = match c.schedule.per {
            SchedulePer::Step => "per step".to_string(),
            SchedulePer::Epoch => format!("per epoch from epoch {}", c.schedule.first_epoch),
        };
        eprintln!(
            "{} ({} recipe): {:?} {:?}-stem width {} {:?} head, batch {}, lr {lr} {:?} {per}, tau {}{negatives}",
            c.method.as_str(),
            c.recipe.as_str(),
            c.model.arch,
            c.model.stem,
            c.model.width,
            c.model.head,
            c.batch_size,
            c.schedule.kind,
            c.loss.temperature,
        );
        let precision = match c.model.precision {
            Precision::F32 => "",
            Precision::Bf16 => " in bf16 mixed precision",
        };
        eprintln!(
            "{} epochs x {} steps on {}{precision}; run folder {}",
            c.epochs,
            self.steps_per_epoch,
            runs::device_label(&self.device),
            self.out.display()
        );
        if self.device.is_cpu() && cpu_advice::gpu_sized(c) {
            eprintln!("{}", cpu_advice::gpu_recipe_note(c, self.total_steps));
        }
    }

    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    fn save(&self, step: u64) -> Result<()> {
        let state: Vec<(String, Tensor)> = self.method.state()?.into_iter().collect();
        let meta = CheckpointMeta {
            config: self.cfg.clone(),
            global_step: step,
            epoch: (step / self.steps_per_epoch) as usize,
            step_in_epoch: (step % self.steps_per_epoch) as usize,
            finished: step == self.total_steps,
            train_images: self.data.ssl.len(),
            steps_per_epoch: self.steps_per_epoch,
        };
        save_checkpoint(&self.out.join(CHECKPOINT_FILE), &state, &meta)
    }

    fn knn(&mut self, step: u64) -> Result<()> {
        let Some(test) = &self.data.test else {
            return Ok(());
        };
        let encoder = self.method.encoder(self.sources[0].encoder)?;
        if step == 0 && self.device.is_cpu() {
            let note = cpu_advice::first_knn_note(
                &self.cfg,
                encoder,
                &self.sources,
                &self.data.train,
                test,
                &self.device,
            )?;
            eprintln!("{note}");
        }
        let t0 = Instant::now();
        let results = setup::knn(
            &self.cfg,
            encoder,
            &self.sources,
            &self.data.train,
            test,
            self.cfg.run.knn_train_limit,
            self.cfg.run.knn_test_limit,
            &self.device,
        )?;
        let n_train =
            setup::spread_subset(self.data.train.len(), self.cfg.run.knn_train_limit).len();
        let epoch = step as f64 / self.steps_per_epoch as f64;
        let listed: Vec<String> = results.iter().map(|r| r.to_string()).collect();
        eprintln!(
            "epoch {epoch:.2}: {} [{n_train} train / {} test images, {:.1}s]",
            listed.join("; "),
            results[0].total,
            t0.elapsed().as_secs_f64()
        );
        for (r, source) in results.iter().zip(&self.sources) {
            self.metrics.write(&Record::Knn {
                step,
                epoch,
                top1: 100.0 * r.top1,
                k: r.k,
                t: r.temperature,
                encoder: source.encoder.to_string(),
                layer: source.layer.to_string(),
                n_train,
                n_test: r.total,
            })?;
        }
        Ok(())
    }

    fn train(&mut self, views: mocca_aug::MultiView) -> Result<()> {
        let spe = self.steps_per_epoch;
        let total = self.total_steps;
        let start = self.method.steps_done();
        let end = self.stop_after.map_or(total, |s| s.min(total));
        if start >= end {
            eprintln!("nothing to do: the run is at step {start} of {total}");
            return Ok(());
        }
        if self.data.test.is_none() {
            eprintln!("the dataset has no test split: kNN monitoring is off");
        }
        if start == 0 && self.cfg.eval.knn_at_start {
            self.knn(0)?;
        }

        let sampler = BatchSampler::new(
            self.data.ssl.len(),
            self.cfg.batch_size,
            Order::Shuffled {
                seed: self.cfg.data_seed(),
            },
            true,
        )?;
        let data = Arc::clone(&self.data.ssl);
        let seed = self.cfg.aug_seed();
        let batches = sampler
            .iter_from(0, start as usize)
            .take((end - start) as usize);
        let loader = Loader::new(
            batches,
            2,
            move |batch: &mocca_data::Batch| -> Result<Vec<mocca_aug::ViewBatch>> {
                let images = batch
                    .indices
                    .iter()
                    .map(|&i| setup::image_u8(&data, i))
                    .collect::<Result<Vec<_>>>()?;
                let ids: Vec<u64> = batch.indices.iter().map(|&i| i as u64).collect();
                Ok(views.apply_batch(&images, &ids, seed, batch.epoch)?)
            },
        )?;

        let mut progress = Progress::new(
            self.cfg.epochs,
            spe,
            self.cfg.batch_size,
            start,
            self.cfg.run.log_every,
        );
        let mut epoch_loss = (0.0f64, 0u64);
        let mut epoch_started = Instant::now();
        let mut window = (start, Instant::now());
        let mut last_saved = start;
        // GPU-sized runs on a CPU: timed from the end of their first step to the estimate.
        let estimate = self.device.is_cpu() && cpu_advice::gpu_sized(&self.cfg);
        let mut timed_from: Option<Instant> = None;
        for item in loader {
            let loaded = item?;
            let x: Vec<Tensor> = loaded
                .data
                .into_iter()
                .map(|v| v.into_tensor(&self.device))
                .collect::<candle_core::Result<_>>()?;
            let stats = match self.method.step(&x, &loaded.batch.indices) {
                Ok(s) => s,
                Err(MethodError::NonFiniteLoss { step, loss }) => {
                    progress.break_line();
                    let ckpt = if last_saved > 0 {
                        format!("the last checkpoint (step {last_saved}) is intact")
                    } else {
                        "no checkpoint was written".to_string()
                    };
                    bail!(
                        "the loss became {loss} at step {} (epoch {}): training diverged and was stopped \
                         before that update; {ckpt}. Try a lower learning rate (optimizer.lr) or a higher \
                         temperature (loss.temperature).",
                        step + 1,
                        step / spe + 1,
                    );
                }
                Err(e) => return Err(e.into()),
            };
            let step = stats.step;
            epoch_loss.0 += stats.loss;
            epoch_loss.1 += 1;
            progress.update(&StepView {
                step,
                loss: stats.loss,
                lr: stats.lr,
            });
            if estimate {
                if step == start + 1 {
                    timed_from = Some(Instant::now());
                } else if step == start + 1 + cpu_advice::ESTIMATE_AFTER_STEPS {
                    if let Some(t) = timed_from {
                        let per_step =
                            t.elapsed().as_secs_f64() / cpu_advice::ESTIMATE_AFTER_STEPS as f64;
                        progress.break_line();
                        eprintln!("{}", cpu_advice::estimate_note(per_step, total - step));
                    }
                }
            }
            if step % self.cfg.run.log_every == 0 || step == end {
                let dt = window.1.elapsed().as_secs_f64();
                let ips = if dt > 0.0 {
                    (step - window.0) as f64 * self.cfg.batch_size as f64 / dt
                } else {
                    0.0
                };
                window = (step, Instant::now());
                self.metrics.write(&Record::Step {
                    step,
                    epoch: step as f64 / spe as f64,
                    loss: stats.loss,
                    lr: stats.lr,
                    momentum: stats.momentum,
                    pos_acc: Some(stats.accuracy),
                    images_per_s: ips,
                    elapsed_s: self.elapsed(),
                })?;
            }
            let mut saved_now = false;
            if step % spe == 0 {
                let epoch = (step / spe) as usize;
                progress.break_line();
                self.metrics.write(&Record::Epoch {
                    step,
                    epoch: epoch as f64,
                    loss_mean: epoch_loss.0 / epoch_loss.1.max(1) as f64,
                    seconds: epoch_started.elapsed().as_secs_f64(),
                })?;
                epoch_loss = (0.0, 0);
                let last = step == total;
                let every = self.cfg.eval.knn_every;
                // kNN before the checkpoint: a run killed during kNN redoes
                // the epoch and its kNN, so metrics.jsonl never lacks one.
                if last || (every > 0 && epoch % every == 0) {
                    self.knn(step)?;
                }
                if last || epoch % self.cfg.run.checkpoint_every.max(1) == 0 {
                    self.save(step)?;
                    saved_now = true;
                }
                epoch_started = Instant::now();
                window = (step, Instant::now());
            } else if self.cfg.run.checkpoint_every_steps > 0
                && step % self.cfg.run.checkpoint_every_steps == 0
            {
                self.save(step)?;
                saved_now = true;
            }
            if saved_now {
                last_saved = step;
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                progress.break_line();
                if !saved_now {
                    self.save(step)?;
                }
                eprintln!(
                    "interrupted: checkpoint saved at step {step}; continue with `cargo xtask train --resume {}`",
                    self.out.display()
                );
                std::process::exit(130);
            }
            if step == end && end < total {
                progress.break_line();
                if !saved_now {
                    self.save(step)?;
                }
                eprintln!(
                    "stopped after step {step} of {total} (--stop-after-steps); continue with \
                     `cargo xtask train --resume {}`",
                    self.out.display()
                );
                return Ok(());
            }
        }
        progress.break_line();
        eprintln!(
            "done: {total} steps in {}; checkpoint {}\n  next: cargo xtask plot {} | cargo xtask eval knn --run {} | \
             cargo xtask export {} --out backbone.safetensors",
            progress::fmt_duration(self.elapsed()),
            self.out.join(CHECKPOINT_FILE).display(),
            self.out.display(),
            self.out.display(),
            self.out.display()
        );
        Ok(())
    }
}

/// Plain decimals for ordinary values, scientific notation for extreme ones.
fn fmt_num(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        format!("{}", (v * 1e6).round() / 1e6)
    }
}

fn describe_data(
    dir: &Path,
    cfg: &TrainConfig,
    ssl: &ImageDataset,
    train: &ImageDataset,
    test: Option<&ImageDataset>,
) {
    let shape = match ssl.uniform_shape() {
        Some(s) => format!("{}x{}x{}", s.height, s.width, s.channels),
        None => "mixed sizes".into(),
    };
    let split = cfg.data.train_split.split();
    let trained_on = if split == mocca_data::Split::Train {
        format!("{} training images ({shape})", ssl.len())
    } else {
        format!(
            "trains on {} {split} images ({shape}), kNN memory {} training images",
            ssl.len(),
            train.len()
        )
    };
    eprintln!(
        "data: {} — {trained_on}, {} test images, {} classes",
        dir.display(),
        test.map_or("no".to_string(), |t| t.len().to_string()),
        train.class_names().len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_become_config_overrides() {
        let a = parse_args(&args(
            "mocov2 --epochs 3 --batch-size 64 --data /tmp/d --negatives bank --out runs/x",
        ))
        .unwrap()
        .unwrap();
        let cfg = resolve_fresh(&a).unwrap();
        assert_eq!((cfg.epochs, cfg.batch_size), (3, 64));
        assert_eq!(cfg.data.path.as_deref(), Some("/tmp/d"));
        assert_eq!(cfg.moco.unwrap().negatives, Negatives::Bank);
        assert_eq!(a.out, Some(PathBuf::from("runs/x")));
    }

    #[test]
    fn no_download_is_a_flag_of_this_invocation_not_a_config_key() {
        let a = parse_args(&args("moco --no-download --epochs 2"))
            .unwrap()
            .unwrap();
        assert!(a.no_download);
        assert!(!fetch::downloads_allowed(a.no_download));
        // It holds for this invocation only: nothing of it is saved with the run.
        assert!(!resolve_fresh(&a).unwrap().to_toml().contains("download"));
        assert!(!parse_args(&args("moco")).unwrap().unwrap().no_download);
    }

    #[test]
    fn recipe_flag_selects_the_paper_preset() {
        let a = parse_args(&args("moco --recipe paper")).unwrap().unwrap();
        let cfg = resolve_fresh(&a).unwrap();
        assert_eq!(cfg.moco.unwrap().queue_size, 65536);
        assert_eq!(cfg.loss.temperature, 0.07);
    }

    #[test]
    fn bad_flag_values_are_errors_naming_the_flag() {
        let err = parse_args(&args("moco --device tpu"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("device `tpu`"), "{err}");
        let err = parse_args(&args("moco --frobnicate"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--frobnicate"), "{err}");
        let a = parse_args(&args("moco --epochs many")).unwrap().unwrap();
        let err = resolve_fresh(&a).unwrap_err().to_string();
        assert!(err.contains("epochs"), "{err}");
    }

    #[test]
    fn method_is_required_without_a_config_file() {
        let a = parse_args(&args("--epochs 3")).unwrap().unwrap();
        assert!(resolve_fresh(&a)
            .unwrap_err()
            .to_string()
            .contains("which method"));
    }

    #[test]
    fn resume_takes_an_optional_folder() {
        let a = parse_args(&args("--resume runs/a --knn-every 2"))
            .unwrap()
            .unwrap();
        assert_eq!(a.resume, Some(Some(PathBuf::from("runs/a"))));
        let a = parse_args(&args("--resume --out runs/b")).unwrap().unwrap();
        assert_eq!(a.resume, Some(None));
    }
}
