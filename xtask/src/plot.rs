//! `cargo xtask plot RUN... [--out F.png|F.svg]`: the command line of [`mocca_plot::curves`].

use anyhow::{bail, Result};
use std::path::PathBuf;

/// `cargo xtask plot`: which runs, and where the picture goes.
#[derive(clap::Args, Debug)]
#[command(
    about = "PNG or SVG curves of loss, lr, kNN accuracy and the collapse monitor",
    long_about = "Draws loss, learning rate and kNN accuracy against epochs from each run's \
metrics.jsonl, one colour per run; when the runs recorded the collapse monitor, also the std of \
the normalised embeddings x sqrt(d), RankMe, alignment and uniformity, with a dashed line where \
each run was first said to be collapsing."
)]
pub struct Args {
    /// Run folders (several overlay, for comparisons)
    #[arg(value_name = "RUN_DIR", required = true)]
    runs: Vec<PathBuf>,
    /// The picture to write, PNG or SVG by its extension [default: RUN_DIR/curves.png when
    /// one run is given]
    #[arg(long, short, value_name = "FILE.png|FILE.svg")]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let Args { runs, out } = args;
    let out = match out {
        Some(o) => o,
        None if runs.len() == 1 => runs[0].join("curves.png"),
        None => bail!("several runs: say where the plot goes with --out FILE.png (or .svg)"),
    };
    let series = mocca_plot::curves::plot_runs(&runs, &out)?;
    println!("wrote {}", out.display());
    for s in &series {
        println!("  {}", s.summary());
    }
    Ok(())
}
