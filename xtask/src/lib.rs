//! Library behind `cargo xtask`: the command line. Each command's clap definition lives in
//! its own module and becomes a request of the library that does the work ([`mocca_runs`]:
//! train, eval, export, sweep, aug-preview; [`mocca_plot`]: plot), dispatched by [`run`].
//! The tool commands (bench, cuda-build, gpu-selftest) live here whole.
//! The binary (`src/main.rs`) only forwards its arguments here.

use anyhow::Result;
use clap::CommandFactory;

mod aug_preview;
mod bench;
mod cli;
mod cuda;
mod eval;
mod export;
mod gpu_selftest;
mod plot;
mod sweep;
mod train;

/// Runs one command line (without the program name).
pub fn run(args: Vec<String>) -> Result<()> {
    let Some(cli) = cli::parse(args)? else {
        return Ok(());
    };
    use cli::Command;
    match cli.command {
        None => {
            print!("{}", cli::Cli::command().render_help());
            Ok(())
        }
        Some(Command::Train(a)) => train::run(a),
        Some(Command::Eval(a)) => eval::run(a),
        Some(Command::Plot(a)) => plot::run(a),
        Some(Command::Export(a)) => export::run(a),
        Some(Command::AugPreview(a)) => aug_preview::run(a),
        Some(Command::Bench(a)) => bench::run(a),
        Some(Command::CudaBuild(a)) => cuda::run(a),
        Some(Command::GpuSelftest(a)) => gpu_selftest::run(a),
        Some(Command::Sweep(a)) => sweep::run(a),
    }
}

/// `main` for the binary: prints the error chain and maps it to exit code 1.
/// glibc serves each allocation above a dynamic threshold with a fresh `mmap` and unmaps it on
/// `free`, so every activation buffer of a training step arrives as untouched pages: a page
/// fault per 4 KiB and a TLB shootdown when it goes. With the threshold fixed at its maximum
/// (32 MiB) and the heap never trimmed, the buffers of one step are reused by the next
/// (ResNet-18 width 0.25 SimCLR step: 334k → 122k page faults over 9 steps, ~6 % faster; see
/// docs/benchmarks.md). Programs using the libraries directly can do the same with
/// `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824`.
fn keep_buffers_on_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any thread is spawned.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

pub fn cli_main(args: Vec<String>) -> std::process::ExitCode {
    keep_buffers_on_the_heap();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The trainer has said where its checkpoint is; 130 is the shell's code for SIGINT.
        Err(e) if e.downcast_ref::<mocca_runs::Interrupted>().is_some() => {
            std::process::ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<gpu_selftest::NoGpu>().is_some() {
                return std::process::ExitCode::from(gpu_selftest::NO_GPU_EXIT_CODE);
            }
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn help_of_every_command_returns_instead_of_exiting() {
        for cmd in [
            "--help",
            "help",
            "train --help",
            "eval knn --help",
            "plot --help",
            "export --help",
            "aug-preview --help",
            "bench aug --help",
            "bench losses --help",
            "bench step --help",
            "bench pipeline --help",
            "cuda-build --help",
            "gpu-selftest --help",
            "sweep --help",
        ] {
            assert!(super::run(args(cmd)).is_ok(), "`cargo xtask {cmd}` failed");
        }
    }

    #[test]
    fn long_help_of_each_command_carries_its_own_description() {
        use clap::CommandFactory;
        let mut cli = super::cli::Cli::command();
        for (cmd, text) in [
            ("train", "Settings come from an embedded preset"),
            ("eval", "the test images are not augmented"),
            ("plot", "one colour per run"),
            ("export", "The projection head and the classifier"),
            ("cuda-build", "Installs the CUDA 13.0 compiler toolchain"),
            ("gpu-selftest", "Exit codes: 0 all checks passed"),
            ("sweep", "OUT/<point>/seed<S>/"),
        ] {
            let help = cli
                .find_subcommand_mut(cmd)
                .unwrap()
                .render_long_help()
                .to_string();
            assert!(
                help.contains(text),
                "`{cmd} --help` lacks {text:?}:\n{help}"
            );
        }
    }

    #[test]
    fn a_command_group_without_a_command_is_an_error() {
        for cmd in ["bench", "eval"] {
            let e = super::run(args(cmd)).unwrap_err().to_string();
            assert_eq!(e, "name one of the commands listed above", "`{cmd}`");
        }
    }
}
