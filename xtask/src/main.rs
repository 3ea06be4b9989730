//! `cargo xtask <command>`: the project's one entry point (train, eval, plot,
//! export, sweep, aug-preview, bench, cuda-build, gpu-selftest). The binary is
//! thin: it forwards its arguments to the `mocca-xtask` library.

fn main() -> std::process::ExitCode {
    // `cargo xtask plot ... | head -1`: a closed pipe ends the process quietly, as in any
    // Unix tool, instead of panicking in println!.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    mocca_xtask::cli_main(std::env::args().skip(1).collect())
}
