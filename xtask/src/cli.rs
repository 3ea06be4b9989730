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
/// Each command's `about` and `long_about` are set on its arguments' struct, in its own
/// module: a doc comment here would replace them.
pub enum Command {
    Train(crate::train::Args),
    Eval(crate::eval::Args),
    Plot(crate::plot::Args),
    Export(crate::export::Args),
    AugPreview(crate::aug_preview::Args),
    Bench(crate::bench::Args),
    CudaBuild(crate::cuda::Args),
    GpuSelftest(crate::gpu_selftest::Args),
    Sweep(crate::sweep::Args),
}

/// The run a command reads: a run folder or a checkpoint file, positional or `--run`.
#[derive(clap::Args, Debug)]
pub struct RunArg {
    /// Run folder or checkpoint file
    #[arg(value_name = "RUN", required_unless_present = "run")]
    run_positional: Option<std::path::PathBuf>,
    /// Run folder or checkpoint file (also positional)
    #[arg(
        long,
        visible_alias = "checkpoint",
        value_name = "PATH",
        conflicts_with = "run_positional"
    )]
    run: Option<std::path::PathBuf>,
}

impl RunArg {
    pub fn path(self) -> anyhow::Result<std::path::PathBuf> {
        self.run
            .or(self.run_positional)
            .ok_or_else(|| anyhow::anyhow!("which run? give --run RUN_DIR or a checkpoint file"))
    }
}

/// A value parser for counts that must be at least 1.
pub fn count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a count")),
    }
}

/// A value parser for a dataset split, by torchvision's names.
pub fn split(s: &str) -> Result<mocca_data::Split, String> {
    match s {
        "train" => Ok(mocca_data::Split::Train),
        "test" => Ok(mocca_data::Split::Test),
        _ => Err(format!("expected train or test, got `{s}`")),
    }
}

/// A value parser for `--device cpu|cuda` where `auto` makes no sense (benchmarks, checks).
pub fn cpu_or_cuda(s: &str) -> Result<mocca_recipes::config::DeviceKind, String> {
    use mocca_recipes::config::DeviceKind;
    match s {
        "cuda" => Ok(DeviceKind::Cuda),
        "cpu" => Ok(DeviceKind::Cpu),
        other => Err(format!("`{other}`: expected cpu or cuda")),
    }
}

/// One command line, split at spaces, parsed as the binary parses it (for tests).
#[cfg(test)]
pub fn parse_line(line: &str) -> anyhow::Result<Command> {
    let args = line.split_whitespace().map(String::from).collect();
    parse(args)?
        .and_then(|cli| cli.command)
        .ok_or_else(|| anyhow::anyhow!("`{line}` printed help or named no command"))
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
            // `cargo xtask bench` alone: the list of benchmarks, then a short error.
            clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                eprint!("{}", e.render());
                Err(anyhow::anyhow!("name one of the commands listed above"))
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
