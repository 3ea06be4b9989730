//! The sweep's runs as child processes of this binary's `train`: which runs are finished,
//! interrupted or new; `--jobs` at a time with one core each; each child's output in its run
//! folder's `train.log`; Ctrl-C passed on so every child checkpoints before the sweep exits.

use super::spec::Point;
use crate::folder::{self, CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE};
use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Each run's output, in its folder.
pub const LOG_FILE: &str = "train.log";
/// Left in a run's folder when it failed (why, in one line), removed when it starts again.
pub const FAILED_FILE: &str = "sweep-failed.txt";

/// What a run folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Its checkpoint says it reached its last step.
    Finished,
    /// A checkpoint of an unfinished run: `train --resume`.
    Interrupted { step: u64 },
    /// Nothing yet, or only what a run killed before its first checkpoint left
    /// (metrics, config), which a fresh start replaces.
    New,
}

/// One point × seed.
#[derive(Clone, Debug)]
pub struct Job {
    pub point: usize,
    pub seed: u64,
    pub dir: PathBuf,
    pub state: State,
}

impl Job {
    pub fn label(&self, points: &[Point]) -> String {
        format!("{}/seed{}", points[self.point].name, self.seed)
    }
}

/// The run folder of `point` with `seed`.
pub fn run_dir(out: &Path, point: &Point, seed: u64) -> PathBuf {
    out.join(&point.name).join(format!("seed{seed}"))
}

pub fn state(dir: &Path) -> Result<State> {
    let ckpt = dir.join(CHECKPOINT_FILE);
    if ckpt.exists() {
        let meta = folder::read_checkpoint_meta(&ckpt)
            .with_context(|| format!("cannot read {}", ckpt.display()))?;
        return Ok(if meta.meta.finished {
            State::Finished
        } else {
            State::Interrupted {
                step: meta.meta.global_step,
            }
        });
    }
    Ok(State::New)
}

/// Every run of the sweep, points in order, seeds within.
pub fn jobs(out: &Path, spec: &super::Spec, points: &[Point]) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for (i, p) in points.iter().enumerate() {
        for &seed in &spec.seeds {
            let dir = run_dir(out, p, seed);
            jobs.push(Job {
                point: i,
                seed,
                state: state(&dir)?,
                dir,
            });
        }
    }
    Ok(jobs)
}

/// `train`'s arguments for a job.
fn train_args(job: &Job, p: &Point, data: &Path) -> Vec<String> {
    let mut args = vec!["train".to_string()];
    match job.state {
        State::Interrupted { .. } => {
            args.push("--resume".into());
            args.push(job.dir.display().to_string());
        }
        _ => {
            args.extend([
                p.method.as_str().to_string(),
                "--recipe".into(),
                p.recipe.as_str().to_string(),
            ]);
            for s in &p.sets {
                args.push("--set".into());
                args.push(s.clone());
            }
            args.extend([
                "--seed".into(),
                job.seed.to_string(),
                "--out".into(),
                job.dir.display().to_string(),
            ]);
        }
    }
    args.extend([
        "--data".into(),
        data.display().to_string(),
        "--no-download".into(),
    ]);
    args
}

/// A command line as a shell would take it back.
fn shell_line(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe(state: State) -> String {
    match state {
        State::Finished => "finished".into(),
        State::Interrupted { step } => format!("resume from step {step}"),
        State::New => "start".into(),
    }
}

pub fn print_plan(jobs: &[Job], points: &[Point], threads: usize) -> Result<()> {
    // A closed pipe (`| head`) ends the listing quietly.
    let mut out = std::io::stdout().lock();
    for j in jobs {
        let cmd = match j.state {
            State::Finished => String::new(),
            _ => format!(
                ": RAYON_NUM_THREADS={threads} cargo xtask {}",
                shell_line(&train_args(j, &points[j.point], Path::new("DATA")))
            ),
        };
        if writeln!(out, "{} [{}]{cmd}", j.label(points), describe(j.state)).is_err() {
            return Ok(());
        }
    }
    let left = jobs.iter().filter(|j| j.state != State::Finished).count();
    let _ = writeln!(out, "{} runs, {left} to run", jobs.len());
    Ok(())
}

pub struct Options {
    pub jobs: usize,
    pub threads: usize,
    /// Each point's dataset folder.
    pub data: Vec<PathBuf>,
    pub out: PathBuf,
    /// The kNN record the "done" lines quote (`report.layer`).
    pub layer: Option<String>,
    /// The program run as `PROGRAM train …` [default: this program].
    pub trainer: Option<PathBuf>,
}

pub enum Outcome {
    Done,
    Interrupted,
    /// The labels of the runs that failed.
    Failed(Vec<String>),
}

/// Ctrl-C / SIGTERM count, set by the handler.
fn signals() -> Arc<AtomicUsize> {
    static COUNT: std::sync::OnceLock<Arc<AtomicUsize>> = std::sync::OnceLock::new();
    Arc::clone(COUNT.get_or_init(|| {
        let n = Arc::new(AtomicUsize::new(0));
        let set = Arc::clone(&n);
        let _ = ctrlc::set_handler(move || {
            set.fetch_add(1, Ordering::SeqCst);
        });
        n
    }))
}

/// An exclusive lock on the sweep folder for as long as the returned file lives (released
/// by the kernel when the process dies, however it dies).
pub fn lock(out: &Path) -> Result<std::fs::File> {
    let path = out.join(".sweep.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!(
                "another `cargo xtask sweep` is running in {}: wait for it, or stop it (Ctrl-C)",
                out.display()
            );
        }
    }
    Ok(file)
}

/// The child in a process group of its own, so a terminal's Ctrl-C reaches the sweep only,
/// which passes it on once (a second SIGINT would make `train` exit without its
/// checkpoint); and killed with the sweep if the sweep dies without passing anything on.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tie_to_sweep(c: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    c.process_group(0);
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, _exit).
    unsafe {
        c.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The sweep died before prctl: no signal will come.
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tie_to_sweep(_: &mut Command) {}

/// Asks a child to checkpoint and stop (its Ctrl-C).
fn interrupt(child: &mut Child) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = child.kill();
}

struct Running {
    job: Job,
    index: usize,
    child: Child,
    started: Instant,
}

fn fmt_secs(s: f64) -> String {
    let s = s.round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

fn start(job: &Job, points: &[Point], o: &Options, exe: &Path) -> Result<Child> {
    let p = &points[job.point];
    std::fs::create_dir_all(&job.dir)
        .with_context(|| format!("cannot create {}", job.dir.display()))?;
    let _ = std::fs::remove_file(job.dir.join(FAILED_FILE));
    if job.state == State::New {
        // What a run killed before its first checkpoint left: `train` refuses a folder that
        // holds a run, and there is nothing to resume.
        for f in [METRICS_FILE, CONFIG_FILE] {
            let _ = std::fs::remove_file(job.dir.join(f));
        }
    }
    let args = train_args(job, p, &o.data[job.point]);
    let log_path = job.dir.join(LOG_FILE);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    writeln!(
        log,
        "$ RAYON_NUM_THREADS={} cargo xtask {}",
        o.threads,
        shell_line(&args)
    )?;
    let mut c = Command::new(exe);
    c.args(&args)
        .env("RAYON_NUM_THREADS", o.threads.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    tie_to_sweep(&mut c);
    c.spawn()
        .with_context(|| format!("cannot start {}", exe.display()))
}

/// The last non-empty line of a run's log, for a failure's one line.
fn last_log_line(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default();
    text.lines()
        .rev()
        .map(|l| l.rsplit('\r').next().unwrap_or(l).trim())
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// Runs every unfinished job, `o.jobs` at a time, printing a line per start and end.
pub fn run_all(jobs: &[Job], points: &[Point], o: &Options) -> Result<Outcome> {
    let exe = match &o.trainer {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("cannot find this program's own path")?,
    };
    let total = jobs.len();
    let finished = jobs.iter().filter(|j| j.state == State::Finished).count();
    let resumed = jobs
        .iter()
        .filter(|j| matches!(j.state, State::Interrupted { .. }))
        .count();
    println!(
        "sweep {}: {} points x {} seeds = {total} runs; {finished} finished already, {resumed} \
         to resume, {} to start; {} at a time, {} thread(s) each",
        o.out.display(),
        points.len(),
        total / points.len().max(1),
        total - finished - resumed,
        o.jobs,
        o.threads
    );
    let mut pending: VecDeque<(usize, Job)> = jobs
        .iter()
        .cloned()
        .enumerate()
        .filter(|(_, j)| j.state != State::Finished)
        .collect();
    let signals = signals();
    let mut passed_on = 0;
    let mut running: Vec<Running> = Vec::new();
    let mut failed = Vec::new();
    loop {
        let seen = signals.load(Ordering::SeqCst);
        if seen > passed_on {
            if passed_on == 0 {
                println!(
                    "stopping: asking {} running run(s) to checkpoint (Ctrl-C again: stop at once)",
                    running.len()
                );
            }
            for r in &mut running {
                interrupt(&mut r.child);
            }
            passed_on = seen;
        }
        let stopping = passed_on > 0;
        while !stopping && running.len() < o.jobs {
            let Some((index, job)) = pending.pop_front() else {
                break;
            };
            let child = match start(&job, points, o, &exe) {
                Ok(c) => c,
                Err(e) => {
                    for r in &mut running {
                        interrupt(&mut r.child);
                    }
                    for r in &mut running {
                        let _ = r.child.wait();
                    }
                    return Err(e);
                }
            };
            println!(
                "[{}/{total}] {} {}",
                index + 1,
                match job.state {
                    State::Interrupted { step } => format!("resume from step {step}:"),
                    _ => "start:".to_string(),
                },
                job.label(points)
            );
            running.push(Running {
                job,
                index,
                child,
                started: Instant::now(),
            });
        }
        if running.is_empty() {
            break;
        }
        let mut i = 0;
        while i < running.len() {
            let Some(status) = running[i].child.try_wait()? else {
                i += 1;
                continue;
            };
            let r = running.remove(i);
            let label = r.job.label(points);
            let took = fmt_secs(r.started.elapsed().as_secs_f64());
            let head = format!("[{}/{total}]", r.index + 1);
            match (status.success(), state(&r.job.dir)) {
                (true, Ok(State::Finished)) => {
                    let result = super::report::read_run(&r.job.dir, o.layer.as_deref());
                    let knn = result
                        .knn
                        .map(|k| format!(", kNN top-1 {k:.2} %"))
                        .unwrap_or_default();
                    let loss = result
                        .loss
                        .map(|l| format!(", loss {l:.3}"))
                        .unwrap_or_default();
                    println!("{head} done: {label} in {took}{knn}{loss}");
                }
                (_, st) if stopping => {
                    let kept = match st {
                        Ok(State::Interrupted { step }) => format!("checkpoint at step {step}"),
                        _ => "no checkpoint yet: it starts over".to_string(),
                    };
                    println!("{head} stopped: {label} after {took} ({kept})");
                }
                (_, st) => {
                    let why = match (status.code(), st) {
                        (Some(0), Ok(s)) => format!("exited but the run is not finished ({s:?})"),
                        (Some(c), _) => format!("exit code {c}"),
                        (None, _) => format!("{status}"),
                    };
                    let line = format!("{why}: {}", last_log_line(&r.job.dir));
                    let _ = std::fs::write(r.job.dir.join(FAILED_FILE), format!("{line}\n"));
                    println!(
                        "{head} FAILED: {label} ({line}); log {}",
                        r.job.dir.join(LOG_FILE).display()
                    );
                    failed.push(label);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if passed_on > 0 {
        return Ok(Outcome::Interrupted);
    }
    if failed.is_empty() {
        Ok(Outcome::Done)
    } else {
        Ok(Outcome::Failed(failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_lines_quote_only_what_needs_it() {
        let args: Vec<String> = ["train", "--set", "moco.negatives=\"bank\"", "--out", "a b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            shell_line(&args),
            "train --set 'moco.negatives=\"bank\"' --out 'a b'"
        );
    }

    #[test]
    fn durations_read_as_hours_minutes_seconds() {
        assert_eq!(fmt_secs(4.4), "4s");
        assert_eq!(fmt_secs(125.0), "2m05s");
        assert_eq!(fmt_secs(3725.0), "1h02m05s");
    }

    #[test]
    fn an_empty_folder_is_new() {
        let dir = std::env::temp_dir().join(format!("mocca-sweep-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(METRICS_FILE), "").unwrap();
        assert_eq!(state(&dir).unwrap(), State::New);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
