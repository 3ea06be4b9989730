//! `cargo xtask train moco|mocov2|simclr`: the CLI over [`mocca_train::Trainer`]
//! (the epoch loop, kNN cadence, checkpoints, exact resume, metrics). What is
//! left here: config resolution, finding or downloading the data, the run
//! folder (`config.toml`, `metrics.jsonl`, `checkpoint.safetensors`), Ctrl-C,
//! the progress line and the messages.

mod cpu_advice;
mod progress;

use crate::runs::config::{
    ConfigBuilder, DeviceKind, MethodName, Negatives, Precision, Recipe, SchedulePer, TrainConfig,
};
use crate::runs::{self, fetch, files, setup, CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;
use mocca_data::{BatchSampler, ImageDataset, Order};
use mocca_methods::FeatureSource;
use mocca_train::{
    CheckpointPolicy, Event, JsonlMetrics, Outcome, TrainError, Trainer, TrainerConfig,
};
use progress::{Progress, StepView};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
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

/// The trainer's stop flag, set by the Ctrl-C / SIGTERM handler: the run
/// checkpoints at the next step boundary and stops.
fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    static SIGNALS: AtomicUsize = AtomicUsize::new(0);
    Arc::clone(FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let set = Arc::clone(&flag);
        let _ = ctrlc::set_handler(move || {
            if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
                eprintln!("\ninterrupted again: exiting without a new checkpoint");
                std::process::exit(130);
            }
            set.store(true, Ordering::SeqCst);
        });
        flag
    }))
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
    start(cfg, &out, None, fetch::downloads_allowed(a.no_download))
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
    start(
        cfg,
        dir,
        Some(ckpt),
        fetch::downloads_allowed(a.no_download),
    )
}

/// Ctrl-C stopped training after a checkpoint: `cli_main` exits with 130
/// (the shell's code for SIGINT) without an error line, the message is out.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// The training images, and the labeled splits for kNN monitoring.
struct Data {
    /// What the encoder trains on: `data.train_split` (the train split unless the recipe
    /// says otherwise, e.g. STL-10's train+unlabeled).
    ssl: Arc<ImageDataset>,
    /// The kNN monitor's labeled memory set: the train split.
    train: Arc<ImageDataset>,
    test: Option<Arc<ImageDataset>>,
}

/// Builds the run of `cfg` in `out` (resumed from `resume_from`) and hands it to
/// [`mocca_train::Trainer`]; what is left here is the CLI's: the data's location,
/// the run folder, messages and the progress line.
fn start(
    mut cfg: TrainConfig,
    out: &Path,
    resume_from: Option<PathBuf>,
    allow_download: bool,
) -> Result<()> {
    let stop = interrupt_flag();
    let device = runs::select_device(cfg.run.device)?;
    let sources = setup::monitor_sources(&cfg)?;
    let data_dir = fetch::locate_data(&cfg, allow_download)?;
    let (train, test) = setup::open_splits(&data_dir)?;
    let train = Arc::new(train);
    let ssl = setup::open_train_split(&data_dir, cfg.data.train_split, &train)?;
    let data = Data {
        ssl,
        train,
        test: test.map(Arc::new),
    };
    // The saved config names the data actually read, so `eval` and
    // `--resume` find it from any working directory.
    let abs = std::fs::canonicalize(&data_dir).unwrap_or_else(|_| data_dir.clone());
    cfg.data.path = Some(abs.display().to_string());
    let stop_after = cfg.run.stop_after_steps.take();
    describe_data(&data_dir, &cfg, &data);
    let tcfg = TrainerConfig {
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        data_seed: cfg.data_seed(),
        aug_seed: cfg.aug_seed(),
        log_every: cfg.run.log_every.max(1),
        stop_after_steps: stop_after,
        prefetch: 2,
        checkpoint: CheckpointPolicy {
            path: Some(out.join(CHECKPOINT_FILE)),
            every_epochs: cfg.run.checkpoint_every.max(1),
            every_steps: cfg.run.checkpoint_every_steps,
            run_config: cfg.to_toml(),
        },
    };
    let steps_per_epoch = BatchSampler::new(
        data.ssl.len(),
        cfg.batch_size,
        Order::Shuffled {
            seed: cfg.data_seed(),
        },
        true,
    )
    .map_err(|e| anyhow!("batch_size {}: {e}", cfg.batch_size))?
    .batches_per_epoch() as u64;
    let method = setup::build_method(&cfg, steps_per_epoch, data.ssl.len(), &device)?;
    // Views are checked once here, not deep inside the loader thread.
    let views = setup::train_views(&cfg)?;
    let mut trainer =
        Trainer::new(method, Arc::clone(&data.ssl), views, tcfg, &device)?.with_stop_flag(stop);
    if let Some(test) = &data.test {
        let monitor = setup::knn_monitor(
            &cfg,
            sources.clone(),
            Arc::clone(&data.train),
            Arc::clone(test),
        )?;
        trainer = trainer.with_knn(monitor, cfg.eval.knn_every, cfg.eval.knn_at_start);
    }
    let total = trainer.total_steps();

    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create run folder {}", out.display()))?;
    files::remove_stale_temp_files(out, &[CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE]);
    let metrics_path = out.join(METRICS_FILE);
    let metrics = match &resume_from {
        Some(ckpt) => {
            let meta = trainer
                .resume(ckpt)
                .with_context(|| format!("resuming with the data at {}", data_dir.display()))?;
            eprintln!(
                "resuming {} from step {} (epoch {}, step {} of {steps_per_epoch})",
                out.display(),
                meta.global_step,
                meta.epoch + 1,
                meta.step_in_epoch
            );
            JsonlMetrics::resume(&metrics_path, meta.global_step)?
        }
        None => JsonlMetrics::open(&metrics_path)?,
    };
    files::write_atomic(&out.join(CONFIG_FILE), cfg.to_toml().as_bytes())?;
    let elapsed_before = metrics.elapsed_s();
    let started = Instant::now();
    describe_run(&cfg, steps_per_epoch, total, &device, out);

    let start_step = trainer.method().steps_done();
    let progress = Rc::new(RefCell::new(Progress::new(
        cfg.epochs,
        steps_per_epoch,
        cfg.batch_size,
        start_step,
        cfg.run.log_every,
    )));
    let mut reporter = Reporter {
        progress: Rc::clone(&progress),
        // GPU-sized runs on a CPU: timed from the end of their first step to the estimate.
        estimate: device.is_cpu() && cpu_advice::gpu_sized(&cfg),
        timed_from: None,
        start_step,
        total,
        spe: steps_per_epoch,
        cfg: cfg.clone(),
        sources,
        train: Arc::clone(&data.train),
        test: data.test.clone(),
        device: device.clone(),
    };
    let outcome = trainer
        .with_metrics(metrics)
        .with_elapsed_before(elapsed_before)
        .with_progress(move |e| reporter.report(e))
        .run();
    progress.borrow_mut().break_line();
    let resume_hint = format!(
        "continue with `cargo xtask train --resume {}`",
        out.display()
    );
    match outcome {
        Ok(Outcome::NothingToDo { step }) => {
            eprintln!("nothing to do: the run is at step {step} of {total}");
        }
        Ok(Outcome::StopRequested { step }) => {
            eprintln!("interrupted: checkpoint saved at step {step}; {resume_hint}");
            return Err(Interrupted.into());
        }
        Ok(Outcome::StepLimit { step }) => {
            eprintln!("stopped after step {step} of {total} (--stop-after-steps); {resume_hint}");
        }
        Ok(Outcome::Finished { .. }) => eprintln!(
            "done: {total} steps in {}; checkpoint {}\n  next: cargo xtask plot {} | cargo xtask eval knn --run {} | \
             cargo xtask export {} --out backbone.safetensors",
            progress::fmt_duration(elapsed_before + started.elapsed().as_secs_f64()),
            out.join(CHECKPOINT_FILE).display(),
            out.display(),
            out.display(),
            out.display()
        ),
        Err(TrainError::Diverged {
            step,
            epoch,
            loss,
            last_checkpoint,
        }) => {
            let ckpt = match last_checkpoint {
                Some(s) => format!("the last checkpoint (step {s}) is intact"),
                None => "no checkpoint was written".to_string(),
            };
            bail!(
                "the loss became {loss} at step {step} (epoch {epoch}): training diverged and was stopped \
                 before that update; {ckpt}. Try a lower learning rate (optimizer.lr) or a higher \
                 temperature (loss.temperature)."
            );
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The trainer's events on stderr: the progress line, kNN results, the CPU advice.
struct Reporter {
    progress: Rc<RefCell<Progress>>,
    estimate: bool,
    timed_from: Option<Instant>,
    start_step: u64,
    total: u64,
    spe: u64,
    cfg: TrainConfig,
    sources: Vec<FeatureSource>,
    train: Arc<ImageDataset>,
    test: Option<Arc<ImageDataset>>,
    device: Device,
}

impl Reporter {
    fn report(&mut self, event: &Event<'_>) {
        let mut progress = self.progress.borrow_mut();
        match event {
            Event::Started { .. } if self.test.is_none() => {
                eprintln!("the dataset has no test split: kNN monitoring is off");
            }
            Event::Step(stats) => {
                let step = stats.step;
                progress.update(&StepView {
                    step,
                    loss: stats.loss,
                    lr: stats.lr,
                });
                if !self.estimate {
                    return;
                }
                if step == self.start_step + 1 {
                    self.timed_from = Some(Instant::now());
                } else if step == self.start_step + 1 + cpu_advice::ESTIMATE_AFTER_STEPS {
                    if let Some(t) = self.timed_from {
                        let per_step =
                            t.elapsed().as_secs_f64() / cpu_advice::ESTIMATE_AFTER_STEPS as f64;
                        progress.break_line();
                        eprintln!("{}", cpu_advice::estimate_note(per_step, self.total - step));
                    }
                }
            }
            Event::EpochEnd { .. } => progress.break_line(),
            Event::KnnStarting { step: 0, method } if self.device.is_cpu() => {
                let (Some(test), Ok(encoder)) =
                    (&self.test, method.encoder(self.sources[0].encoder))
                else {
                    return;
                };
                // A failure here fails the kNN pass that follows, which says why.
                if let Ok(note) = cpu_advice::first_knn_note(
                    &self.cfg,
                    encoder,
                    &self.sources,
                    &self.train,
                    test,
                    &self.device,
                ) {
                    eprintln!("{note}");
                }
            }
            Event::Knn {
                step,
                report,
                seconds,
            } => {
                progress.break_line();
                let epoch = *step as f64 / self.spe as f64;
                let listed: Vec<String> = report.results.iter().map(|r| r.to_string()).collect();
                eprintln!(
                    "epoch {epoch:.2}: {} [{} train / {} test images, {seconds:.1}s]",
                    listed.join("; "),
                    report.n_train,
                    report.results[0].total,
                );
            }
            _ => {}
        }
    }
}

fn describe_run(
    c: &TrainConfig,
    steps_per_epoch: u64,
    total_steps: u64,
    device: &Device,
    out: &Path,
) {
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
        "{} epochs x {steps_per_epoch} steps on {}{precision}; run folder {}",
        c.epochs,
        runs::device_label(device),
        out.display()
    );
    if device.is_cpu() && cpu_advice::gpu_sized(c) {
        eprintln!("{}", cpu_advice::gpu_recipe_note(c, total_steps));
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

fn describe_data(dir: &Path, cfg: &TrainConfig, data: &Data) {
    let ssl = &data.ssl;
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
            data.train.len()
        )
    };
    eprintln!(
        "data: {} — {trained_on}, {} test images, {} classes",
        dir.display(),
        data.test
            .as_ref()
            .map_or("no".to_string(), |t| t.len().to_string()),
        data.train.class_names().len()
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
