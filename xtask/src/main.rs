//! `cargo xtask <command>`: the project's one entry point (train, eval, bench,
//! plot, export, aug-preview, cuda-build). The binary is thin: each command
//! lives in its own module of the `mocca-xtask` library.

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
