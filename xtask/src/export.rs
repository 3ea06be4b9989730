//! `cargo xtask export RUN --out backbone.safetensors`: the command line of
//! [`mocca_runs::export`].

use anyhow::Result;
use mocca_recipes::config::EncoderChoice;
use std::path::PathBuf;

/// `cargo xtask export`: which run, which encoder, where the weights go.
#[derive(clap::Args, Debug)]
#[command(
    about = "Backbone weights with torchvision key names",
    long_about = "Writes the backbone of the run's query encoder (or MoCo's momentum \
encoder) with torchvision's key names. The projection head and the classifier (`fc`) are not \
included."
)]
pub struct Args {
    #[command(flatten)]
    run: crate::cli::RunArg,
    /// The safetensors file to write
    #[arg(long, short, value_name = "FILE.safetensors")]
    out: PathBuf,
    /// MoCo's query or momentum encoder
    #[arg(long, value_name = "query|key", value_parser = crate::eval::parse_encoder, default_value = "query")]
    encoder: EncoderChoice,
}

pub fn run(args: Args) -> Result<()> {
    let Args { run, out, encoder } = args;
    mocca_runs::export::export(&run.path()?, &out, encoder)
}
