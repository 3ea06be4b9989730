//! `cargo xtask <command>`: the project's one entry point (train, eval, bench,
//! plot, export, aug-preview, cuda-build). The binary is thin: each command
//! lives in its own module of the `mocca-xtask` library.

fn main() -> std::process::ExitCode {
    mocca_xtask::cli_main(std::env::args().skip(1).collect())
}
