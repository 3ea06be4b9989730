//! Training a run folder, as `cargo xtask train` does: [`plan`] resolves a
//! [`TrainRequest`] (preset → config file → `key=value` sets, or a run to
//! resume or extend) and checks it; [`execute`] runs it over
//! [`mocca_train::Trainer`] (the epoch loop, kNN cadence, checkpoints, exact
//! resume, metrics). What this module adds: finding or downloading the data,
//! the run folder (`config.toml`, `metrics.jsonl`, checkpoints, the lock),
//! Ctrl-C / SIGTERM (checkpoint at the next step boundary, then
//! [`Interrupted`]), the progress line and the messages on stderr.

mod cpu_advice;
mod progress;

use crate::fetch;
use crate::folder::{self, CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use mocca_data::Images;
use mocca_methods::schedule::ScheduleWarning;
use mocca_methods::FeatureSource;
use mocca_recipes::config::{
    ConfigBuilder, InstDiscObjectiveName, MethodName, MomentumSchedule, Negatives, Precision,
    Recipe, ScheduleKind, SchedulePer, TrainConfig,
};
use mocca_recipes::setup;
use mocca_recipes::{build_trainer, RunData};
use mocca_train::files;
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

/// What to train: a fresh run of a method and recipe changed by a config file and `key=value`
/// sets, or (`resume`) the run in a folder continued, with only run settings changed or its
/// epochs extended.
#[derive(Clone, Debug, Default)]
pub struct TrainRequest {
    /// One of [`MethodName::ALL`] [default: the config file's `method`].
    pub method: Option<MethodName>,
    /// [default: the config file's `recipe`, else cifar].
    pub recipe: Option<Recipe>,
    /// Overrides, any subset of the config's keys.
    pub config_file: Option<PathBuf>,
    /// `key=value` assignments applied in order after the file (`--set` and the flags).
    pub sets: Vec<String>,
    /// The run folder (default `runs/<method>-<recipe>`); with `resume: Some(None)`, the folder
    /// to continue.
    pub out: Option<PathBuf>,
    /// Continue a run: `Some(Some(dir))` that folder, `Some(None)` the one in `out`.
    pub resume: Option<Option<PathBuf>>,
    /// Whether a missing dataset may be downloaded ([`fetch::downloads_allowed`]).
    pub allow_download: bool,
}

/// A checked request: the config to train and where.
#[derive(Clone, Debug)]
pub struct Plan {
    cfg: TrainConfig,
    out: PathBuf,
    /// The checkpoint to continue and the config it was saved with.
    resume_from: Option<(PathBuf, TrainConfig)>,
    allow_download: bool,
}

impl Plan {
    /// The config the run trains with (what `--print-config` shows).
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The run folder.
    pub fn out(&self) -> &Path {
        &self.out
    }
}

/// Resolves and checks `r`: the config it names and, for a resume, the newest checkpoint that
/// passes its checks and whether the change is allowed. Nothing is written.
pub fn plan(r: &TrainRequest) -> Result<Plan> {
    if let Some(resume) = &r.resume {
        let dir = match (resume, &r.out) {
            (Some(d), _) => d.clone(),
            (None, Some(o)) => o.clone(),
            (None, None) => {
                bail!("--resume needs the run folder (e.g. --resume runs/mocov2-cifar)")
            }
        };
        return plan_resume(r, &dir);
    }
    let cfg = resolve_fresh(r)?;
    let out = r.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "runs/{}-{}",
            cfg.method.as_str(),
            cfg.recipe.as_str()
        ))
    });
    Ok(Plan {
        cfg,
        out,
        resume_from: None,
        allow_download: r.allow_download,
    })
}

/// Trains `plan` to its end (or its `run.stop_after_steps`, or Ctrl-C: [`Interrupted`]).
pub fn execute(plan: Plan) -> Result<()> {
    let Plan {
        cfg,
        out,
        resume_from,
        allow_download,
    } = plan;
    if resume_from.is_none()
        && (out.join(CHECKPOINT_FILE).exists() || out.join(METRICS_FILE).exists())
    {
        bail!(
            "{} already holds a run; continue it with `cargo xtask train --resume {}` or choose another --out",
            out.display(),
            out.display()
        );
    }
    start(cfg, &out, resume_from, allow_download)
}

/// Fresh run: preset → file → overrides.
fn resolve_fresh(a: &TrainRequest) -> Result<TrainConfig> {
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
                "which method? give {} (see `cargo xtask train --help`)",
                MethodName::NAMES
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
    for s in &a.sets {
        b.set(s)?;
    }
    Ok(b.build()?)
}

fn plan_resume(a: &TrainRequest, dir: &Path) -> Result<Plan> {
    if a.method.is_some() || a.recipe.is_some() {
        bail!("--resume continues the run's own method and recipe; drop the method / --recipe");
    }
    let (ckpt, meta) = folder::newest_checkpoint_meta(dir)
        .with_context(|| format!("cannot resume {}", dir.display()))?;
    let saved = meta.config.clone();
    let mut b = ConfigBuilder::from_text(&saved.to_toml(), "checkpoint config")?;
    if let Some(p) = &a.config_file {
        b.merge_file(p)?;
    }
    for s in &a.sets {
        b.set(s)?;
    }
    let cfg = b.build()?;
    let mut changed = mocca_recipes::config::trajectory_diff(&saved, &cfg);
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
    Ok(Plan {
        cfg,
        out: dir.to_path_buf(),
        resume_from: Some((ckpt, saved)),
        allow_download: a.allow_download,
    })
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
    let device = folder::select_device(cfg.run.device)?;
    let sources = setup::monitor_sources(&cfg)?;
    let data_dir = fetch::locate_data(&cfg, allow_download)?;
    let data = open_data(&cfg, &data_dir)?;
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
    train: Arc<Images>,
    test: Option<Arc<Images>>,
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
            Event::SkippedFile {
                step,
                file,
                first: true,
            } => {
                progress.break_line();
                eprintln!(
                    "warning: step {step}: skipped {} ({}); image {} took its place. Each time a \
                     batch meets it, it is counted in metrics.jsonl (kind \"skipped_file\"); \
                     --strict stops instead",
                    file.path.display(),
                    file.message,
                    file.stand_in
                );
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
    let negatives = match (&c.moco, &c.instdisc) {
        (Some(m), _) => match m.negatives {
            Negatives::Queue => format!(
                ", {} K={} m={}{}",
                if m.per_view_queues {
                    "a queue per view"
                } else {
                    "queue"
                },
                m.queue_size,
                m.momentum,
                match m.momentum_schedule {
                    MomentumSchedule::Constant => String::new(),
                    MomentumSchedule::Cosine =>
                        format!(", cosine to {}", m.momentum_end.unwrap_or(1.0)),
                }
            ),
            Negatives::Bank => format!(
                ", memory bank ({} negatives, rows m={}), one view, no key encoder",
                m.queue_size, m.bank_momentum
            ),
            Negatives::EndToEnd if m.end_to_end_detach_keys => {
                ", end-to-end (in-batch keys, detached: the gradient through the queries only)"
                    .into()
            }
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
        (None, None) => {
            let momentum = c.momentum_encoder.as_ref().map(|e| {
                let schedule = match e.schedule {
                    MomentumSchedule::Constant => "",
                    MomentumSchedule::Cosine => ", cosine to 1",
                };
                format!(", momentum encoder m={}{schedule}", e.momentum)
            });
            let predictor = c
                .predictor
                .as_ref()
                .map(|p| format!(", predictor hidden {}", p.hidden_dim));
            let stop = match &c.simsiam {
                Some(s) if !s.stop_gradient => {
                    ", NO stop-gradient (the collapse ablation: expect collapse)"
                }
                _ => "",
            };
            format!(
                "{}{}{stop}",
                momentum.unwrap_or_default(),
                predictor.unwrap_or_default()
            )
        }
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
    let backbone = match setup::vit_config(c) {
        Some(v) => format!(
            "{:?} patch {} ({} heads{})",
            c.model.arch,
            v.patch_size,
            v.num_heads,
            match v.style {
                mocca_backbones::ViTStyle::MoCoV3 => ", moco-v3's sin-cos position embedding",
                mocca_backbones::ViTStyle::Timm => "",
            }
        ),
        None => format!(
            "{:?} {:?}-stem width {}",
            c.model.arch, c.model.stem, c.model.width
        ),
    };
    eprintln!(
        "{} ({} recipe): {backbone} {:?} head, batch {}, lr {lr} {:?} {per}, tau {}{negatives}",
        c.method.as_str(),
        c.recipe.as_str(),
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
        folder::device_label(device),
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

/// [`RunData::open`] with a progress line while a large image folder is listed.
fn open_data(cfg: &TrainConfig, dir: &Path) -> Result<RunData> {
    let started = Instant::now();
    let shown = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (name, on_line) = (dir.display().to_string(), Arc::clone(&shown));
    let progress: Arc<dyn Fn(usize) + Send + Sync> = Arc::new(move |n| {
        if n >= mocca_data::image_folder::PROGRESS_EVERY {
            on_line.store(true, std::sync::atomic::Ordering::Relaxed);
            eprint!(
                "\rlisting {name}: {n} files ({:.1}s)",
                started.elapsed().as_secs_f64()
            );
        }
    });
    let options = setup::open_options(cfg, Some(progress))?;
    let data = RunData::open_with(dir, cfg, &options);
    if shown.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!();
    }
    Ok(data?)
}

fn describe_data(dir: &Path, cfg: &TrainConfig, data: &RunData) {
    let ssl = &data.ssl;
    let shape = match ssl.uniform_shape() {
        Some(s) => format!("{}x{}x{}", s.height, s.width, s.channels),
        None if ssl.is_streamed() => "files decoded per batch".into(),
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
