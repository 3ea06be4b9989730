//! `cargo xtask sweep SWEEP.toml`: a grid of config values × seeds, each an ordinary run
//! folder `OUT/<point>/seed<S>/` trained by this same binary's `train` in a child process
//! (one core each, `--jobs` at a time), resumable as a whole; then one table
//! (`OUT/results.md`, `OUT/results.csv`) and one plot (`OUT/results.png`, `OUT/results.svg`).
//!
//! - [`spec`]: the sweep file, its expansion into points, each point's config validated
//!   before anything runs.
//! - [`runner`]: the child processes: start, resume, skip, Ctrl-C, one line per run.
//! - [`report`] and [`chart`]: the table and the plot, from the runs' `metrics.jsonl`.

mod chart;
mod report;
mod runner;
mod spec;

use crate::runs::{config::TrainConfig, fetch};
use anyhow::{anyhow, bail, Context, Result};
use spec::Spec;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The sweep's own spec in its folder: what a rerun must match.
pub const SPEC_FILE: &str = "sweep.toml";

/// The sweep files shipped with the binary (`xtask/src/runs/sweeps/`), by name.
pub(crate) const SHIPPED: &[(&str, &str)] = &[
    ("moco-fig3-k", include_str!("runs/sweeps/moco-fig3-k.toml")),
    (
        "moco-momentum",
        include_str!("runs/sweeps/moco-momentum.toml"),
    ),
    (
        "mocov2-vs-simclr",
        include_str!("runs/sweeps/mocov2-vs-simclr.toml"),
    ),
];

#[derive(clap::Args, Debug, Default)]
#[command(
    about = "Run a grid of configs x seeds as resumable runs; one table and one plot",
    long_about = "Runs every point of a sweep (config values x seeds) as an ordinary run folder \
OUT/<point>/seed<S>/, each trained by this binary's `train` in a child process with \
RAYON_NUM_THREADS=1 (one core each), --jobs at a time; a run's output goes to its train.log, \
the sweep prints one line per run. Rerunning the same command skips finished runs, resumes \
interrupted ones from their checkpoint and starts the rest; OUT/sweep.toml keeps the sweep, and \
a rerun that would change it is refused. Every point's config is built and checked as `train` \
builds it before any run starts. At the end (and with --report OUT alone) it writes \
OUT/results.md and OUT/results.csv (per point: the final kNN top-1, mean ± std over the seeds \
and each seed's, the mean loss of the last epoch, the wall time) and OUT/results.png (accuracy against \
the swept value, one line per series, error bars over the seeds).",
    after_help = "The sweep file (TOML; shipped ones: moco-fig3-k, moco-momentum, \
mocov2-vs-simclr in xtask/src/runs/sweeps/):
  title = \"...\"                       the table's and plot's title
  method = \"moco\"                     moco | mocov2 | simclr; recipe = \"cifar\" (default)
  seeds = [0, 1, 2]                   every point runs once per seed (--seed S)
  set = [\"model.width=0.125\", ...]    train's --set, for every point
  [[axis]]                            a key and its values; several axes: their product
  key = \"moco.momentum\"               or keys = [\"batch_size\", \"moco.bn_splits\"] (zipped:
  values = [0.0, 0.9, 0.99]           each value then an array, one per key)
  name = \"m\"                          in folder names [default: the key's last part]
  x = [...]  labels = [...]           plotted value / label of each value (optional)
  [[grid]]                            a series of points: name, method, recipe, set and its
  name = \"queue\"                      own [[grid.axis]]; the sweep is the union of its grids
  [report]                            x_label = \"K\"; scale = \"linear\" | \"log2\" | \"category\";
                                      layer = \"backbone\" | \"head\" (which kNN record)
The last axis is the plot's x; the grid and the other axes make the series.
Ctrl-C asks every running child to checkpoint and stop, then exits (rerun to continue)."
)]
pub struct Args {
    /// The sweep file, or a shipped sweep's name (moco-fig3-k, moco-momentum,
    /// mocov2-vs-simclr) [default: the sweep saved in --out]
    #[arg(value_name = "SWEEP.toml")]
    file: Option<String>,
    /// The sweep's folder [default: runs/sweeps/<sweep file name>]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Only write OUT's table and plot from the runs there (starts nothing)
    #[arg(long, value_name = "OUT", conflicts_with_all = ["file", "out", "dry_run"])]
    report: Option<PathBuf>,
    /// Print every run, what a rerun does with it and its command, then exit
    #[arg(long)]
    dry_run: bool,
    /// The method of every point [default: the file's]
    #[arg(long, value_name = "moco|mocov2|simclr")]
    method: Option<String>,
    /// The recipe of every point [default: the file's, else cifar]
    #[arg(long, value_name = "cifar|cifar100|stl10|paper")]
    recipe: Option<String>,
    /// A config override of every point, after the file's `set` (as train's --set)
    /// [default: none]
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// An axis, after the file's: KEY=V1,V2,... (several: their product) [default: none]
    #[arg(long = "axis", value_name = "KEY=V1,V2,...")]
    axes: Vec<String>,
    /// The seeds [default: the file's]
    #[arg(long, value_name = "S1,S2,...", value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Runs at a time
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = crate::cli::count)]
    jobs: usize,
    /// Threads of each run (its RAYON_NUM_THREADS)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = crate::cli::count)]
    threads: usize,
    /// Dataset folder, as train's --data [default: train's search: $MOCCA_DATA, ./data, the
    /// cache; a download happens once, here, before any run starts]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Never use the network (also MOCCA_NO_DOWNLOAD=1)
    #[arg(long)]
    no_download: bool,
}

impl Args {
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
fn resolve(a: &Args) -> Result<(Spec, PathBuf, Option<Spec>)> {
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

pub fn run(a: Args) -> Result<()> {
    if let Some(out) = &a.report {
        let spec = read_saved(out)?.ok_or_else(|| {
            anyhow!(
                "{} is not a sweep folder: it has no {SPEC_FILE}",
                out.display()
            )
        })?;
        let points = spec.points()?;
        return report::write(out, &spec, &points).map(drop);
    }
    let (spec, out, saved) = resolve(&a)?;
    // Every point's config, checked before anything starts.
    let points = spec.points()?;
    if let Some(saved) = &saved {
        if *saved != spec {
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
    if saved.is_none() {
        let text = format!(
            "# The sweep run in this folder (written by `cargo xtask sweep`); a rerun must match it.\n{}",
            spec.to_toml()
        );
        crate::runs::files::write_atomic(&out.join(SPEC_FILE), text.as_bytes())?;
    }
    let data = locate_data(&a, &points, &spec)?;
    let outcome = runner::run_all(
        &jobs,
        &points,
        &runner::Options {
            jobs: a.jobs,
            threads: a.threads,
            data,
            out: out.clone(),
            layer: spec.report.layer.clone(),
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
fn locate_data(a: &Args, points: &[spec::Point], spec: &Spec) -> Result<Vec<PathBuf>> {
    let allow = fetch::downloads_allowed(a.no_download);
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
