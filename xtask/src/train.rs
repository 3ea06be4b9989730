//! `cargo xtask train moco|mocov2|simclr`: the CLI over [`mocca_train::Trainer`]
//! (the epoch loop, kNN cadence, checkpoints, exact resume, metrics). What is
//! left here: config resolution, finding or downloading the data, the run
//! folder (`config.toml`, `metrics.jsonl`, `checkpoint.safetensors`), Ctrl-C,
//! the progress line and the messages.

mod cpu_advice;
mod progress;

use crate::runs::config::{
    ConfigBuilder, DeviceKind, InstDiscObjectiveName, MethodName, Negatives, Precision, Recipe,
    ScheduleKind, SchedulePer, TrainConfig,
};
use crate::runs::{self, fetch, files, setup, CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use mocca_data::ImageDataset;
use mocca_methods::schedule::ScheduleWarning;
use mocca_methods::FeatureSource;
use mocca_recipes::{build_trainer, RunData};
use mocca_train::{Event, JsonlMetrics, Outcome, RunLock, TrainError};
use progress::{Progress, StepView};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

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

/// `cargo xtask train`: everything but the config-override flags, which come from
/// [`OVERRIDES`] through [`Overrides`].
#[derive(clap::Args, Debug, Default)]
#[command(
    about = "Train an encoder without labels: moco|mocov2|simclr",
    long_about = "Trains an encoder without labels. Settings come from an embedded preset \
(method x recipe), then --config, then --set and the flags below (in command-line order, later \
wins); the resolved config is saved as RUN/config.toml.",
    after_help = "Ctrl-C checkpoints at the next step boundary and exits (a second Ctrl-C quits \
at once; the last checkpoint stays intact)."
)]
pub struct Args {
    /// The method: moco, mocov2, simclr or instdisc [default: the config file's `method`]
    #[arg(value_name = "METHOD", value_parser = |s: &str| MethodName::parse(s).map_err(|e| e.to_string()))]
    method: Option<MethodName>,
    /// Preset family: cifar (the MoCo CIFAR-10 colab, lightly's CIFAR-10 SimCLR), cifar100 (the
    /// same on CIFAR-100), stl10 (96 px on STL-10's train+unlabeled images), paper (ImageNet)
    /// [default: the config file's `recipe`, else cifar]
    #[arg(long, value_name = "cifar|cifar100|stl10|paper",
          value_parser = |s: &str| Recipe::parse(s).map_err(|e| e.to_string()))]
    recipe: Option<Recipe>,
    /// Overrides, any subset of the config's keys [default: none, the preset alone]
    #[arg(long = "config", value_name = "FILE.toml")]
    config_file: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    /// Print the resolved config and exit
    #[arg(long)]
    print_config: bool,
    /// Never use the network (also MOCCA_NO_DOWNLOAD=1); the error says what to fetch by hand,
    /// and where. MOCCA_DOWNLOAD_MIRROR=URL downloads from URL/<file>
    #[arg(long)]
    no_download: bool,
    /// Run folder [default: runs/<method>-<recipe>]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue the run in DIR from its checkpoint; only run settings may change
    /// [default DIR: --out]
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    resume: Option<Option<PathBuf>>,
}

/// How a flag's value becomes the TOML of its `--set`.
#[derive(Clone, Copy)]
enum Value {
    /// Written as given: numbers, checked when the config is built.
    Toml,
    /// Quoted as a TOML string; the check runs at parse time, where the flag name is known.
    Str(Option<fn(&str) -> Result<()>>),
}

/// A flag that is shorthand for `--set KEY=VALUE`.
struct Override {
    flag: &'static str,
    key: &'static str,
    value_name: &'static str,
    help: &'static str,
    value: Value,
}

/// A flag whose value is TOML as written (numbers, booleans).
const fn flag(
    flag: &'static str,
    key: &'static str,
    value_name: &'static str,
    help: &'static str,
) -> Override {
    Override {
        flag,
        key,
        value_name,
        help,
        value: Value::Toml,
    }
}

/// A flag whose value is a string (quoted in the assignment), checked by `check` if given.
const fn text(
    name: &'static str,
    key: &'static str,
    value_name: &'static str,
    help: &'static str,
    check: Option<fn(&str) -> Result<()>>,
) -> Override {
    Override {
        value: Value::Str(check),
        ..flag(name, key, value_name, help)
    }
}

/// The config-override flags: the one place a flag, its config key and its help are written.
const OVERRIDES: &[Override] = &[
    text(
        "data",
        "data.path",
        "DIR",
        "Dataset folder: CIFAR-10, CIFAR-100 or STL-10 binary, MNIST, image folder [default: \
         $MOCCA_DATA, else the first of ./data and the per-user cache $XDG_CACHE_HOME/mocca or \
         ~/.cache/mocca that holds the recipe's dataset; if none does, it is downloaded into the \
         cache from its official URL, MD5-checked, resumable]",
        None,
    ),
    text(
        "device",
        "run.device",
        "auto|cpu|cuda",
        "auto: CUDA GPU 0 if this build has CUDA and the GPU opens, else the CPU (said on \
         stderr) [default: the preset's, auto]",
        Some(|v| DeviceKind::parse(v).map(drop).map_err(Into::into)),
    ),
    flag("epochs", "epochs", "N", "Training epochs"),
    flag("batch-size", "batch_size", "N", "Images per step"),
    flag("width", "model.width", "X", "Backbone width multiplier"),
    flag("temperature", "loss.temperature", "X", "Loss temperature"),
    flag(
        "lr",
        "optimizer.lr",
        "X",
        "The learning rate used, whatever the batch size",
    ),
    flag(
        "base-lr",
        "optimizer.base_lr",
        "X",
        "A rate for the preset's reference batch (optimizer.lr_scale_batch), scaled linearly \
         with --batch-size (the preset's own rule, if it has one)",
    ),
    flag(
        "seed",
        "seed",
        "N",
        "Seeds everything (--init-seed, --data-seed, --aug-seed seed parts separately)",
    ),
    flag(
        "init-seed",
        "seeds.init",
        "N",
        "Seeds the weights (and queue, shuffle-BN and bank draws) [default: from --seed]",
    ),
    flag(
        "data-seed",
        "seeds.data",
        "N",
        "Seeds the data order [default: from --seed]",
    ),
    flag(
        "aug-seed",
        "seeds.augmentation",
        "N",
        "Seeds the augmentations [default: from --seed]",
    ),
    text(
        "precision",
        "model.precision",
        "f32|bf16",
        "bf16: mixed precision (f32 master weights and optimiser state, bf16 activations; for \
         CUDA)",
        Some(|v| Precision::parse(v).map(drop).map_err(Into::into)),
    ),
    text(
        "negatives",
        "moco.negatives",
        "queue|bank|end-to-end",
        "MoCo's negatives",
        Some(|v| Negatives::parse(v).map(drop).map_err(Into::into)),
    ),
    flag(
        "queue-size",
        "moco.queue_size",
        "K",
        "MoCo's queue (or bank) size",
    ),
    flag(
        "knn-every",
        "eval.knn_every",
        "N",
        "kNN accuracy every N epochs (0: only at the end)",
    ),
    flag(
        "knn-train-limit",
        "run.knn_train_limit",
        "N",
        "kNN monitoring on N training images",
    ),
    flag(
        "knn-test-limit",
        "run.knn_test_limit",
        "N",
        "kNN monitoring on N test images",
    ),
    flag(
        "collapse-every",
        "run.collapse_every",
        "N",
        "Collapse monitor (embedding std, RankMe, alignment, uniformity) every N steps (0: off) \
         [default: 10]",
    ),
    flag(
        "checkpoint-every-steps",
        "run.checkpoint_every_steps",
        "N",
        "Also checkpoint every N steps",
    ),
    flag(
        "keep-checkpoints",
        "run.keep_checkpoints",
        "N",
        "Checkpoints kept, the newest included; --resume falls back on the older ones when the \
         newest is damaged [default: 2]",
    ),
    flag(
        "stop-after-steps",
        "run.stop_after_steps",
        "N",
        "Checkpoint and stop after step N (resume later)",
    ),
];

const SET: &str = "set";

impl Override {
    fn arg(&self) -> clap::Arg {
        // A default the help does not already name is the preset's (or the resumed run's).
        let help = if self.help.contains("[default") {
            format!("{} (config key {})", self.help, self.key)
        } else {
            format!(
                "{} (config key {}) [default: the preset's]",
                self.help, self.key
            )
        };
        let arg = clap::Arg::new(self.flag)
            .long(self.flag)
            .value_name(self.value_name)
            .help(help)
            .action(clap::ArgAction::Append)
            .allow_negative_numbers(true);
        match self.value {
            Value::Str(Some(check)) => arg.value_parser(move |v: &str| {
                check(v).map(|()| v.to_string()).map_err(|e| e.to_string())
            }),
            _ => arg,
        }
    }

    fn assignment(&self, v: &str) -> String {
        match self.value {
            Value::Toml => format!("{}={v}", self.key),
            Value::Str(_) => format!("{}={}", self.key, toml::Value::String(v.to_string())),
        }
    }
}

/// `--set` and the [`OVERRIDES`] flags as `key=value` assignments in command-line order.
#[derive(Debug, Default)]
struct Overrides {
    sets: Vec<String>,
}

impl clap::FromArgMatches for Overrides {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut sets: Vec<(usize, String)> = Vec::new();
        let mut collect = |id: &str, to_assignment: &dyn Fn(&str) -> String| {
            if let (Some(values), Some(indices)) = (m.get_many::<String>(id), m.indices_of(id)) {
                sets.extend(indices.zip(values.map(|v| to_assignment(v))));
            }
        };
        collect(SET, &|v| v.to_string());
        for o in OVERRIDES {
            collect(o.flag, &|v| o.assignment(v));
        }
        sets.sort_by_key(|(i, _)| *i);
        Ok(Self {
            sets: sets.into_iter().map(|(_, s)| s).collect(),
        })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for Overrides {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let set = clap::Arg::new(SET)
            .long(SET)
            .value_name("KEY=VALUE")
            .help("One override, e.g. --set moco.queue_size=8192; repeatable [default: none]")
            .action(clap::ArgAction::Append);
        OVERRIDES
            .iter()
            .fold(cmd.arg(set), |cmd, o| cmd.arg(o.arg()))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
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
        (None, None) => {
            bail!(
                "which method? give moco, mocov2, simclr or instdisc (see `cargo xtask train --help`)"
            )
        }
    };
    let recipe = match a.recipe {
        Some(r) => r,
        None => match file_doc.as_ref().and_then(|d| d.get_str("recipe")) {
            Some(r) => Recipe::parse(&r)?,
            None => Recipe::Cifar,
        },
    };
    let mut b = ConfigBuilder::from_preset(method, recipe)?;
    if let (Some(t), Some(p)) = (&file_text, &a.config_file) {
        b.merge_text(t, &p.display().to_string())?;
    }
    for s in &a.overrides.sets {
        b.set(s)?;
    }
    Ok(b.build()?)
}

pub fn run(a: Args) -> Result<()> {
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
    let (ckpt, meta) = runs::newest_checkpoint_meta(dir)
        .with_context(|| format!("cannot resume {}", dir.display()))?;
    let saved = meta.config.clone();
    let mut b = ConfigBuilder::from_text(&saved.to_toml(), "checkpoint config")?;
    if let Some(p) = &a.config_file {
        b.merge_file(p)?;
    }
    for s in &a.overrides.sets {
        b.set(s)?;
    }
    let cfg = b.build()?;
    let mut changed = crate::runs::config::trajectory_diff(&saved, &cfg);
    if cfg.epochs != saved.epochs {
        if cfg.epochs < saved.epochs {
            bail!(
                "--resume --epochs {} would shorten the run from {} epochs, which is refused: the \
                 schedule of the steps already trained would change and the checkpoint may lie past \
                 the new end. To stop early, resume with --stop-after-steps N (the run stays \
                 resumable); to use the weights as they are, `cargo xtask eval` / `export` the run",
                cfg.epochs,
                saved.epochs
            );
        }
        // Extending is allowed: the schedules are rebuilt over the new length (start() says
        // what that does to the learning rate).
        changed.retain(|k| k != "epochs");
    }
    if !changed.is_empty() {
        bail!(
            "--resume keeps the run's training settings, but {} would change; only --epochs (to \
             extend the run), [run], [eval] and data.path may change (the run's config is \
             {}/{CONFIG_FILE})",
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
        Some((ckpt, saved)),
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

/// Builds the run of `cfg` in `out` (resumed from `resume_from`) and hands it to
/// [`mocca_train::Trainer`]; what is left here is the CLI's: the data's location,
/// the run folder, messages and the progress line.
/// `resume_from`: the checkpoint to continue and the config it was saved with.
fn start(
    mut cfg: TrainConfig,
    out: &Path,
    resume_from: Option<(PathBuf, TrainConfig)>,
    allow_download: bool,
) -> Result<()> {
    let stop = interrupt_flag();
    let device = runs::select_device(cfg.run.device)?;
    let sources = setup::monitor_sources(&cfg)?;
    let data_dir = fetch::locate_data(&cfg, allow_download)?;
    let data = RunData::open(&cfg, &data_dir)?;
    // The saved config names the data actually read, so `eval` and
    // `--resume` find it from any working directory.
    let abs = std::fs::canonicalize(&data_dir).unwrap_or_else(|_| data_dir.clone());
    cfg.data.path = Some(abs.display().to_string());
    describe_data(&data_dir, &cfg, &data);
    let mut trainer =
        build_trainer(&cfg, &data, Some(out.join(CHECKPOINT_FILE)), &device)?.with_stop_flag(stop);
    let steps_per_epoch = trainer.steps_per_epoch();
    // Applies to this invocation only (build_trainer leaves it out of the saved config).
    cfg.run.stop_after_steps = None;
    let total = trainer.total_steps();

    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create run folder {}", out.display()))?;
    // One writer per run folder, for the whole run (released on return).
    let lock = RunLock::acquire(out)?;
    if let Some(old) = &lock.taken_over {
        eprintln!(
            "note: taking over the run lock left by {old}, which no longer holds it (killed or \
             crashed)"
        );
    }
    files::remove_stale_temp_files(out, &[CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE]);
    let metrics_path = out.join(METRICS_FILE);
    let metrics = match &resume_from {
        Some((ckpt, saved)) => {
            let resumed = trainer
                .resume_newest(ckpt)
                .with_context(|| format!("resuming with the data at {}", data_dir.display()))?;
            for s in &resumed.skipped {
                let moved = s
                    .moved_to
                    .as_ref()
                    .map(|m| format!(" (kept as {})", m.display()))
                    .unwrap_or_default();
                eprintln!(
                    "warning: not resuming from {}: {}{moved}",
                    s.path.display(),
                    s.reason
                );
            }
            if !resumed.skipped.is_empty() {
                eprintln!(
                    "resuming from the previous checkpoint {} instead",
                    resumed.path.display()
                );
            }
            let meta = resumed.meta;
            if saved.epochs != cfg.epochs {
                extension_note(saved, &cfg, steps_per_epoch, meta.global_step)?;
            }
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
    warn_schedule(&cfg, steps_per_epoch, total)?;

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
            Event::Collapse { step, metrics } => progress.collapse(*step, metrics),
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
    let negatives = match (&c.moco, &c.instdisc) {
        (Some(m), _) => match m.negatives {
            Negatives::Queue => format!(", queue K={} m={}", m.queue_size, m.momentum),
            Negatives::Bank => format!(
                ", memory bank ({} negatives, rows m={}), one view, no key encoder",
                m.queue_size, m.bank_momentum
            ),
            Negatives::EndToEnd => ", end-to-end (in-batch keys)".into(),
        },
        (None, Some(i)) => match i.objective {
            InstDiscObjectiveName::Softmax => format!(
                ", memory bank rows m={}, full softmax over every row",
                i.memory_momentum
            ),
            InstDiscObjectiveName::Nce => format!(
                ", memory bank rows m={}, NCE with {} noise rows",
                i.memory_momentum, i.nce_k
            ),
        },
        (None, None) => String::new(),
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

/// One line on stderr for each way the schedule cannot train as meant, with its fix, before
/// the first step; the run goes on as asked.
fn warn_schedule(cfg: &TrainConfig, steps_per_epoch: u64, total_steps: u64) -> Result<()> {
    let schedule = setup::lr_schedule(cfg, steps_per_epoch)?;
    for w in schedule.warnings(total_steps) {
        eprintln!("warning: {w}; {}", schedule_fix(cfg, &w));
    }
    Ok(())
}

/// What extending a run from `saved.epochs` to `cfg.epochs` does, on stderr.
fn extension_note(
    saved: &TrainConfig,
    cfg: &TrainConfig,
    steps_per_epoch: u64,
    step: u64,
) -> Result<()> {
    let old = setup::lr_schedule(saved, steps_per_epoch)?;
    let new = setup::lr_schedule(cfg, steps_per_epoch)?;
    let old_total = saved.epochs as u64 * steps_per_epoch;
    let old_lr = old.lr_at(step.min(old_total.max(1) - 1));
    eprintln!(
        "extending the run from {} to {} epochs: the learning-rate schedule is rebuilt over {} \
         epochs, so step {} trains at lr {:.4e} (the {}-epoch schedule was at {:.4e} there{}). \
         Lightning and solo-learn restore the scheduler's own state instead, so their cosine \
         keeps its old length and rises again past it; a run extended here is not the run a \
         {}-epoch start would have been.",
        saved.epochs,
        cfg.epochs,
        cfg.epochs,
        step + 1,
        new.lr_at(step),
        saved.epochs,
        old_lr,
        if step >= old_total { ", its end" } else { "" },
        cfg.epochs
    );
    Ok(())
}

/// What to change in `cfg` against warning `w`, in the CLI's flags and keys.
fn schedule_fix(cfg: &TrainConfig, w: &ScheduleWarning) -> String {
    let s = &cfg.schedule;
    match w {
        ScheduleWarning::NoStepTrains { .. } if cfg.effective_lr() == 0.0 => {
            "set a learning rate above 0 (--lr, or --base-lr for one scaled with the batch)".into()
        }
        ScheduleWarning::NoStepTrains { .. }
            if s.per == SchedulePer::Epoch
                && s.kind == ScheduleKind::Cosine
                && s.first_epoch as usize >= cfg.epochs =>
        {
            format!(
                "the per-epoch cosine counts epochs from {} (the MoCo colab's loop), so a {}-epoch \
                 run sits at its end, lr 0, from the first step: train for more epochs \
                 (--epochs {}), or count from 0 (--set schedule.first_epoch=0), or set the rate \
                 per step (--set schedule.per=step)",
                s.first_epoch,
                cfg.epochs,
                s.first_epoch as usize + 1
            )
        }
        ScheduleWarning::NoStepTrains { .. }
            if s.kind == ScheduleKind::Step && s.gamma == 0.0 && s.milestones.first() == Some(&0) =>
        {
            "a milestone at epoch 0 with schedule.gamma = 0 sets the rate to 0 from the start: \
             drop that milestone or raise schedule.gamma"
                .into()
        }
        ScheduleWarning::NoStepTrains { .. } => {
            "check the [schedule] and [optimizer] sections (--print-config shows them)".into()
        }
        ScheduleWarning::MuchOfRunAtZero { .. }
            if s.per == SchedulePer::Epoch && s.kind == ScheduleKind::Cosine && s.first_epoch >= 1 =>
        {
            format!(
                "the per-epoch cosine counts epochs from {} (the MoCo colab's loop), so the last \
                 of the {} epochs is at lr 0 and the ones before it near it: train for more \
                 epochs, or count from 0 (--set schedule.first_epoch=0), or set the rate per step \
                 (--set schedule.per=step)",
                s.first_epoch, cfg.epochs
            )
        }
        ScheduleWarning::MuchOfRunAtZero { .. } => {
            "check the [schedule] section (--print-config shows it)".into()
        }
        ScheduleWarning::WarmupCoversRun { .. } => format!(
            "shorten schedule.warmup_epochs ({}) below the run's length ({} epoch(s)), or train longer",
            s.warmup_epochs, cfg.epochs
        ),
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

fn describe_data(dir: &Path, cfg: &TrainConfig, data: &RunData) {
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
    use clap::{CommandFactory, Parser};

    /// `train`'s arguments alone, as `cargo xtask train` parses them.
    #[derive(Parser)]
    struct Train {
        #[command(flatten)]
        args: Args,
    }

    fn parse_args(s: &str) -> Result<Args> {
        let argv = std::iter::once("train").chain(s.split_whitespace());
        Ok(Train::try_parse_from(argv)?.args)
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_become_config_overrides() {
        let a = parse_args(
            "mocov2 --epochs 3 --batch-size 64 --data /tmp/d --negatives bank --out runs/x",
        )
        .unwrap();
        let cfg = resolve_fresh(&a).unwrap();
        assert_eq!((cfg.epochs, cfg.batch_size), (3, 64));
        assert_eq!(cfg.data.path.as_deref(), Some("/tmp/d"));
        assert_eq!(cfg.moco.unwrap().negatives, Negatives::Bank);
        assert_eq!(a.out, Some(PathBuf::from("runs/x")));
    }

    #[test]
    fn flags_and_sets_apply_in_command_line_order() {
        let a = parse_args(
            "moco --epochs 3 --set epochs=4 --lr 0.5 --set optimizer.lr=0.25 --epochs 5",
        )
        .unwrap();
        assert_eq!(
            a.overrides.sets,
            [
                "epochs=3",
                "epochs=4",
                "optimizer.lr=0.5",
                "optimizer.lr=0.25",
                "epochs=5"
            ]
        );
        let cfg = resolve_fresh(&a).unwrap();
        assert_eq!(cfg.epochs, 5);
        assert_eq!(cfg.optimizer.lr, Some(0.25));
        let a = parse_args("moco --device cpu --precision bf16 --data /tmp/d").unwrap();
        assert_eq!(
            a.overrides.sets,
            [
                r#"run.device="cpu""#,
                r#"model.precision="bf16""#,
                r#"data.path="/tmp/d""#
            ]
        );
    }

    #[test]
    fn every_override_flag_sets_a_config_key() {
        for o in OVERRIDES {
            // A value of the kind the flag's value name says.
            let v = match o.value_name {
                "N" | "K" => "4096".to_string(),
                "X" => "0.5".to_string(),
                choices => choices.split('|').next().unwrap().to_string(),
            };
            let a = parse_args(&format!("mocov2 --{} {v}", o.flag)).unwrap();
            assert_eq!(a.overrides.sets, [o.assignment(&v)], "--{}", o.flag);
            let mut b = ConfigBuilder::from_preset(MethodName::Mocov2, Recipe::Cifar).unwrap();
            b.set(&a.overrides.sets[0]).unwrap();
            let cfg = b
                .build()
                .unwrap_or_else(|e| panic!("--{} {v}: {e:#}", o.flag));
            assert_eq!(cfg.method, MethodName::Mocov2);
        }
    }

    #[test]
    fn a_misspelt_flag_suggests_the_right_one() {
        let err = crate::run(args("train moco --epoch 3"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--epoch"), "{err}");
        assert!(err.contains("similar argument exists: '--epochs'"), "{err}");
        assert!(
            !err.starts_with("error:"),
            "cli_main adds the prefix: {err}"
        );
    }

    #[test]
    fn help_lists_every_option_with_its_default_and_returns() {
        assert!(crate::run(args("train --help")).is_ok());
        assert!(crate::run(args("train -h")).is_ok());
        assert!(crate::run(args("help train")).is_ok());
        let mut cli = crate::cli::Cli::command();
        let train = cli.find_subcommand_mut("train").unwrap();
        let help = train.render_help().to_string();
        for arg in train.get_arguments() {
            let Some(long) = arg.get_long() else {
                continue;
            };
            assert!(
                help.contains(&format!("--{long}")),
                "--{long} missing:\n{help}"
            );
            let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
            if takes_value && long != "help" {
                let text = arg.get_help().map(ToString::to_string).unwrap_or_default();
                assert!(
                    text.contains("[default") || !arg.get_default_values().is_empty(),
                    "--{long} does not say its default: {text}"
                );
            }
        }
        for env in ["MOCCA_DATA", "MOCCA_NO_DOWNLOAD", "MOCCA_DOWNLOAD_MIRROR"] {
            assert!(help.contains(env), "{env} missing:\n{help}");
        }
    }

    #[test]
    fn no_download_is_a_flag_of_this_invocation_not_a_config_key() {
        let a = parse_args("moco --no-download --epochs 2").unwrap();
        assert!(a.no_download);
        assert!(!fetch::downloads_allowed(a.no_download));
        // It holds for this invocation only: nothing of it is saved with the run.
        assert!(!resolve_fresh(&a).unwrap().to_toml().contains("download"));
        assert!(!parse_args("moco").unwrap().no_download);
    }

    #[test]
    fn recipe_flag_selects_the_paper_preset() {
        let a = parse_args("moco --recipe paper").unwrap();
        let cfg = resolve_fresh(&a).unwrap();
        assert_eq!(cfg.moco.unwrap().queue_size, 65536);
        assert_eq!(cfg.loss.temperature, 0.07);
    }

    #[test]
    fn bad_flag_values_are_errors_naming_the_flag() {
        let err = parse_args("moco --device tpu").err().unwrap().to_string();
        assert!(err.contains("device `tpu`"), "{err}");
        assert!(err.contains("--device"), "{err}");
        let err = parse_args("moco --frobnicate").err().unwrap().to_string();
        assert!(err.contains("--frobnicate"), "{err}");
        let a = parse_args("moco --epochs many").unwrap();
        let err = resolve_fresh(&a).unwrap_err().to_string();
        assert!(err.contains("epochs"), "{err}");
    }

    #[test]
    fn method_is_required_without_a_config_file() {
        let a = parse_args("--epochs 3").unwrap();
        assert!(resolve_fresh(&a)
            .unwrap_err()
            .to_string()
            .contains("which method"));
    }

    #[test]
    fn resume_takes_an_optional_folder() {
        let a = parse_args("--resume runs/a --knn-every 2").unwrap();
        assert_eq!(a.resume, Some(Some(PathBuf::from("runs/a"))));
        let a = parse_args("--resume --out runs/b").unwrap();
        assert_eq!(a.resume, Some(None));
        let a = parse_args("--out runs/b --resume").unwrap();
        assert_eq!(a.resume, Some(None));
    }
}
