//! `cargo xtask sweep SWEEP.toml`: the command line of [`mocca_runs::sweep`].

use anyhow::Result;
use mocca_runs::SweepRequest;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Default)]
#[command(
    about = "Run a grid of configs x seeds as resumable runs; one table and one plot",
    long_about = "Runs every point of a sweep (config values x seeds) as an ordinary run folder \
OUT/<point>/seed<S>/, each trained by this binary's `train` in a child process with \
RAYON_NUM_THREADS=1 (one core each), --jobs at a time; a run's output goes to its train.log, \
the sweep prints one line per run. Rerunning the same command skips finished runs, resumes \
interrupted ones from their checkpoint and starts the rest; OUT/sweep.toml keeps the sweep, and \
a rerun that would change it is refused, except one that only adds seeds (e.g. --seeds 0,1,2 \
over a sweep run with 0,1: the new seeds' runs start, the finished ones are kept). Every point's config is built and checked as `train` \
builds it before any run starts. At the end (and with --report OUT alone) it writes \
OUT/results.md and OUT/results.csv (per point: the final kNN top-1, mean ± std over the seeds \
and each seed's, the mean loss of the last epoch, the wall time) and OUT/results.png (accuracy against \
the swept value, one line per series, error bars over the seeds).",
    after_help = "The sweep file (TOML; shipped ones: moco-fig3-k, moco-momentum, \
moco-e2e-ablation, moco-queue-staleness, mocov2-vs-simclr, mocov2-vs-simclr-lr in \
crates/runs/src/sweeps/):
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
    /// moco-e2e-ablation, moco-queue-staleness, mocov2-vs-simclr, mocov2-vs-simclr-lr)
    /// [default: the sweep saved in --out]
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
    #[arg(long, value_name = "METHOD")]
    method: Option<String>,
    /// The recipe of every point [default: the file's, else cifar]
    #[arg(long, value_name = "cifar|cifar100|stl10|paper|paper-vit|imagenet100")]
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

pub fn run(a: Args) -> Result<()> {
    if let Some(out) = &a.report {
        return mocca_runs::sweep::write_report(out);
    }
    mocca_runs::sweep::run(&SweepRequest {
        file: a.file,
        out: a.out,
        dry_run: a.dry_run,
        method: a.method,
        recipe: a.recipe,
        sets: a.sets,
        axes: a.axes,
        seeds: a.seeds,
        jobs: a.jobs,
        threads: a.threads,
        data: a.data,
        allow_download: mocca_runs::fetch::downloads_allowed(a.no_download),
        trainer: None,
    })
}
