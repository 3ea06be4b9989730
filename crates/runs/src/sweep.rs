//! Sweeps (`cargo xtask sweep SWEEP.toml`): a grid of config values × seeds, each an ordinary
//! run folder `OUT/<point>/seed<S>/` trained by `cargo xtask train` in a child process
//! (one core each, `--jobs` at a time), resumable as a whole; then one table
//! (`OUT/results.md`, `OUT/results.csv`) and one plot (`OUT/results.png`, `OUT/results.svg`).
//!
//! - [`spec`]: the sweep file, its expansion into points, each point's config validated
//!   before anything runs.
//! - [`runner`]: the child processes: start, resume, skip, Ctrl-C, one line per run.
//! - [`report`]: the table and the plot ([`mocca_plot::chart`]), from the runs' `metrics.jsonl`.

pub mod report;
pub mod runner;
pub mod spec;

use crate::fetch;
use anyhow::{anyhow, bail, Context, Result};
use mocca_recipes::config::TrainConfig;
use spec::Spec;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The sweep's own spec in its folder: what a rerun must match.
pub const SPEC_FILE: &str = "sweep.toml";

/// The shipped sweep files (`crates/runs/src/sweeps/`), by name: the MoCo paper's comparisons
/// at CPU scale.
pub const SHIPPED: &[(&str, &str)] = &[
    ("moco-fig3-k", include_str!("sweeps/moco-fig3-k.toml")),
    ("moco-momentum", include_str!("sweeps/moco-momentum.toml")),
    (
        "moco-e2e-ablation",
        include_str!("sweeps/moco-e2e-ablation.toml"),
    ),
    (
        "moco-queue-staleness",
        include_str!("sweeps/moco-queue-staleness.toml"),
    ),
    (
        "mocov2-vs-simclr",
        include_str!("sweeps/mocov2-vs-simclr.toml"),
    ),
    (
        "mocov2-vs-simclr-lr",
        include_str!("sweeps/mocov2-vs-simclr-lr.toml"),
    ),
];

/// A sweep to run, as `cargo xtask sweep` takes it: a sweep file (or the one saved in `out`),
/// then the other fields.
#[derive(Clone, Debug)]
pub struct SweepRequest {
    /// The sweep file, or a shipped sweep's name ([`SHIPPED`]) [default: the sweep saved in
    /// `out`].
    pub file: Option<String>,
    /// The sweep's folder (default `runs/sweeps/<sweep file name>`).
    pub out: Option<PathBuf>,
    /// Print every run, what a rerun does with it and its command, then return.
    pub dry_run: bool,
    /// The method of every point [default: the file's].
    pub method: Option<String>,
    /// The recipe of every point [default: the file's, else cifar].
    pub recipe: Option<String>,
    /// Config overrides of every point, after the file's `set`.
    pub sets: Vec<String>,
    /// Axes after the file's, each `KEY=V1,V2,...` (several: their product).
    pub axes: Vec<String>,
    /// The seeds [default: the file's].
    pub seeds: Vec<u64>,
    /// Runs at a time (at least 1).
    pub jobs: usize,
    /// Threads of each run, its RAYON_NUM_THREADS (at least 1).
    pub threads: usize,
    /// Dataset folder [default: the search of `train`; a download happens once, before any run
    /// starts, if `allow_download`].
    pub data: Option<PathBuf>,
    pub allow_download: bool,
    /// The program that trains each run as `PROGRAM train …` takes it (`cargo xtask`'s binary)
    /// [default: this program].
    pub trainer: Option<PathBuf>,
}

impl Default for SweepRequest {
    fn default() -> Self {
        Self {
            file: None,
            out: None,
            dry_run: false,
            method: None,
            recipe: None,
            sets: Vec::new(),
            axes: Vec::new(),
            seeds: Vec::new(),
            jobs: 2,
            threads: 1,
            data: None,
            allow_download: true,
            trainer: None,
        }
    }
}

impl SweepRequest {
    fn has_spec_flags(&self) -> bool {
        self.method.is_some()
            || self.recipe.is_some()
            || !self.sets.is_empty()
            || !self.axes.is_empty()
            || !self.seeds.is_empty()
    }
}

/// A shipped sweep's text by name (with or without `.toml`).
fn shipped(name: &str) -> Option<&'static str> {
    let name = name.strip_suffix(".toml").unwrap_or(name);
    SHIPPED.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// `--axis KEY=V1,V2,...` as an axis; each value is TOML or a bare word, as `--set` takes it.
fn parse_axis(arg: &str) -> Result<spec::Axis> {
    let (key, values) = arg
        .split_once('=')
        .ok_or_else(|| anyhow!("--axis expects KEY=V1,V2,..., got `{arg}`"))?;
    let values = values
        .split(',')
        .map(|v| {
            let v = v.trim();
            match toml::from_str::<toml::Table>(&format!("v = {v}")) {
                Ok(mut t) => t.remove("v").expect("just parsed"),
                Err(_) => toml::Value::String(v.to_string()),
            }
        })
        .collect();
    Ok(spec::Axis {
        key: Some(key.trim().to_string()),
        values,
        ..Default::default()
    })
}

fn read_saved(out: &Path) -> Result<Option<Spec>> {
    let path = out.join(SPEC_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Spec::parse(&text, &path.display().to_string()).map(Some)
}

/// The sweep to run: the file (or the one saved in OUT), then the flags.
fn resolve(a: &SweepRequest) -> Result<(Spec, PathBuf, Option<Spec>)> {
    let stem = a.file.as_ref().map(|f| {
        let p = Path::new(f);
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| f.clone())
    });
    let out = match (&a.out, &stem) {
        (Some(o), _) => o.clone(),
        (None, Some(s)) => PathBuf::from("runs/sweeps").join(s),
        (None, None) => bail!(
            "which sweep? give a sweep file (e.g. `cargo xtask sweep moco-momentum`), or --out \
             DIR of a sweep to continue"
        ),
    };
    let saved = read_saved(&out)?;
    let mut spec = match &a.file {
        Some(f) if Path::new(f).exists() => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read sweep file {f}"))?;
            Spec::parse(&text, f)?
        }
        Some(f) => match shipped(f) {
            Some(text) => Spec::parse(text, f)?,
            None => bail!(
                "sweep file {f} not found (the shipped sweeps: {})",
                SHIPPED
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        None if a.has_spec_flags() => Spec::default(),
        None => saved.clone().ok_or_else(|| {
            anyhow!(
                "{} holds no sweep ({SPEC_FILE}): give a sweep file or --method, --axis, --seeds",
                out.display()
            )
        })?,
    };
    if let Some(m) = &a.method {
        spec.method = Some(m.clone());
    }
    if let Some(r) = &a.recipe {
        spec.recipe = Some(r.clone());
    }
    spec.set.extend(a.sets.iter().cloned());
    for axis in &a.axes {
        spec.axis.push(parse_axis(axis)?);
    }
    if !a.seeds.is_empty() {
        spec.seeds = a.seeds.clone();
    }
    Ok((spec, out, saved))
}

/// Writes `out`'s table and plot from the runs there (starts nothing).
pub fn write_report(out: &Path) -> Result<()> {
    let spec = read_saved(out)?.ok_or_else(|| {
        anyhow!(
            "{} is not a sweep folder: it has no {SPEC_FILE}",
            out.display()
        )
    })?;
    let points = spec.points()?;
    report::write(out, &spec, &points)
}

/// Runs every unfinished run of the sweep (resuming interrupted ones), then writes the table and
/// the plot. Ctrl-C: every child checkpoints and stops, then [`crate::train::Interrupted`].
pub fn run(a: &SweepRequest) -> Result<()> {
    if a.jobs == 0 || a.threads == 0 {
        bail!("a sweep needs at least one run at a time and one thread a run");
    }
    let (spec, out, saved) = resolve(a)?;
    // Every point's config, checked before anything starts.
    let points = spec.points()?;
    let mut grown = false;
    if let Some(saved) = &saved {
        if spec.adds_seeds_to(saved) {
            grown = true;
            println!(
                "{}: adding seeds to the saved sweep ({:?} → {:?}); its finished runs are kept",
                out.display(),
                saved.seeds,
                spec.seeds
            );
        } else if *saved != spec {
            bail!(
                "{} holds another sweep: {}. Rerun it as it was (`cargo xtask sweep --out {}` \
                 continues the saved one) or give another --out",
                out.display(),
                spec.differences(saved).join("; "),
                out.display()
            );
        }
    }
    let jobs = runner::jobs(&out, &spec, &points)?;
    if a.dry_run {
        return runner::print_plan(&jobs, &points, a.threads);
    }
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the sweep folder {}", out.display()))?;
    let _lock = runner::lock(&out)?;
    if saved.is_none() || grown {
        let text = format!(
            "# The sweep run in this folder (written by `cargo xtask sweep`); a rerun must match it.\n{}",
            spec.to_toml()
        );
        mocca_train::files::write_atomic(&out.join(SPEC_FILE), text.as_bytes())?;
    }
    let data = locate_data(a, &points, &spec)?;
    let outcome = runner::run_all(
        &jobs,
        &points,
        &runner::Options {
            jobs: a.jobs,
            threads: a.threads,
            data,
            out: out.clone(),
            layer: spec.report.layer.clone(),
            trainer: a.trainer.clone(),
        },
    )?;
    report::write(&out, &spec, &points)?;
    match outcome {
        runner::Outcome::Done => Ok(()),
        runner::Outcome::Interrupted => {
            eprintln!(
                "interrupted: the stopped runs checkpointed; rerun the same command (or `cargo \
                 xtask sweep --out {}`) to continue",
                out.display()
            );
            Err(crate::train::Interrupted.into())
        }
        runner::Outcome::Failed(failed) => bail!(
            "{} run(s) failed: {}; see each run's train.log, fix, and rerun (finished runs are kept)",
            failed.len(),
            failed.join(", ")
        ),
    }
}

/// The dataset folder of each point (by index): found, or downloaded, once here, so the
/// children never download (and never two at once).
fn locate_data(a: &SweepRequest, points: &[spec::Point], spec: &Spec) -> Result<Vec<PathBuf>> {
    let allow = a.allow_download;
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut out = Vec::new();
    for p in points {
        let mut cfg: TrainConfig = p.config(spec.seeds[0])?;
        cfg.data.path = a.data.as_ref().map(|d| d.display().to_string());
        let key = format!("{:?}", cfg.data.dataset());
        let dir = match found.get(&key) {
            Some(d) => d.clone(),
            None => {
                let d = fetch::locate_data(&cfg, allow)?;
                let d = std::fs::canonicalize(&d).unwrap_or(d);
                found.insert(key, d.clone());
                d
            }
        };
        out.push(dir);
    }
    Ok(out)
}
