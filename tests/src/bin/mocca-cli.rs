//! `cargo xtask` as a test-profile binary: forwards to `mocca_xtask::cli_main`.

fn main() -> std::process::ExitCode {
    mocca_xtask::cli_main(std::env::args().skip(1).collect())
}
