//! `cargo xtask bench <what>`: throughput figures for docs/benchmarks.md.

use anyhow::{bail, Result};

mod aug;
mod losses;
mod pipeline;
mod step;

/// The 1, 5 and 15 minute load averages, printed with every figure (a busy machine's figures
/// are not comparable).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Still parsed by hand, below.
pub type Args = crate::cli::Raw;

pub fn run(args: Args) -> Result<()> {
    let args = &args.args[..];
    let Some((what, rest)) = args.split_first() else {
        bail!("usage: cargo xtask bench aug|losses|pipeline|step [options]");
    };
    match what.as_str() {
        "aug" => aug::run(rest),
        "losses" => losses::run(rest),
        "pipeline" => pipeline::run(rest),
        "step" => step::run(rest),
        other => bail!("unknown benchmark `{other}`: expected aug, losses, pipeline or step"),
    }
}
