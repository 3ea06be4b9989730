//! The command line of `cargo xtask`: one clap definition per command, each
//! command's arguments in its own module.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "The project's one entry point: training, evaluation, plots, export, benchmarks, CUDA",
    disable_version_flag = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train an encoder: moco|mocov2|simclr (see `cargo xtask train --help`)
    Train(crate::train::Args),
    /// Evaluate a run's encoder: knn|linear|lincls
    Eval(crate::eval::Args),
    /// PNG curves of loss, lr and kNN accuracy
    Plot(crate::plot::Args),
    /// Backbone weights with torchvision key names
    Export(crate::export::Args),
    /// PNG grid of augmented views
    AugPreview(crate::aug_preview::Args),
    /// Throughput benchmarks: aug|losses|step|pipeline
    Bench(crate::bench::Args),
    /// Build the CUDA trainer binary
    CudaBuild(crate::cuda::Args),
    /// Custom ops, losses, queue on the GPU vs the CPU
    GpuSelftest(crate::gpu_selftest::Args),
}

/// Arguments a command still parses itself, handed over as given.
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Raw {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<String>,
}

/// Parses a command line (without the program name). `Ok(None)`: help was asked
/// for and printed.
pub fn parse(args: Vec<String>) -> anyhow::Result<Option<Cli>> {
    let argv = std::iter::once("cargo xtask".to_string()).chain(args);
    match Cli::try_parse_from(argv) {
        Ok(cli) => Ok(Some(cli)),
        Err(e) => match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                print!("{}", e.render());
                Ok(None)
            }
            // `cli_main` puts its own "error: " in front.
            _ => {
                let text = e.render().to_string();
                let text = text.strip_prefix("error: ").unwrap_or(&text);
                Err(anyhow::anyhow!("{}", text.trim_end()))
            }
        },
    }
}
