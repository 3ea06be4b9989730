//! `cargo xtask bench <what>`: throughput figures for docs/benchmarks.md.

use anyhow::{bail, Result};

mod aug;
mod losses;
mod step;

pub fn run(args: &[String]) -> Result<()> {
    let Some((what, rest)) = args.split_first() else {
        bail!("usage: cargo xtask bench aug|losses|step [options]");
    };
    match what.as_str() {
        "aug" => aug::run(rest),
        "losses" => losses::run(rest),
        "step" => step::run(rest),
        other => bail!("unknown benchmark `{other}`: expected aug, losses or step"),
    }
}
