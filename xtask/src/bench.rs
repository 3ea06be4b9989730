//! `cargo xtask bench <what>`: throughput figures for docs/benchmarks.md.

use anyhow::Result;

mod aug;
mod losses;
mod pipeline;
mod step;
mod stream;

/// The 1, 5 and 15 minute load averages, printed with every figure (a busy machine's figures
/// are not comparable).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// `cargo xtask bench`: which benchmark, then its options.
#[derive(clap::Args, Debug)]
#[command(
    about = "Throughput benchmarks: aug|losses|step|pipeline|stream",
    subcommand_required = true
)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum What {
    /// Source images per second of the augmentation presets, two views per image
    Aug(aug::Options),
    /// Each loss's time against its matmul FLOP bound, beside this machine's f32 GEMM rate
    Losses(losses::Options),
    /// Read + decode + augment of an image folder at 224 px, each stage alone and together
    Pipeline(pipeline::Options),
    /// Images/s of a ResNet-18 SimCLR (or the trainer's own) training step
    Step(step::Options),
    /// The trainer's streaming input path on an image folder: images/s and peak memory
    Stream(stream::Options),
}

pub fn run(args: Args) -> Result<()> {
    match args.what {
        What::Aug(o) => aug::run(o),
        What::Losses(o) => losses::run(o),
        What::Pipeline(o) => pipeline::run(o),
        What::Step(o) => step::run(o),
        What::Stream(o) => stream::run(o),
    }
}

/// `cargo xtask bench LINE`, parsed as the binary parses it (for tests).
#[cfg(test)]
pub(crate) fn parse_line(line: &str) -> Result<What> {
    match crate::cli::parse_line(&format!("bench {line}"))? {
        crate::cli::Command::Bench(a) => Ok(a.what),
        other => panic!("parsed as {other:?}"),
    }
}
