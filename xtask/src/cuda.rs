//! `cargo xtask cuda-build`: the CUDA trainer, built on a machine without a
//! GPU or a CUDA toolkit, gzipped for the trip to the GPU machine.
//!
//! Candle's `cuda` feature needs nvcc at build time (candle-kernels compiles
//! its PTX, cudarc reads the CUDA version) and links the CUDA libraries
//! dynamically. `scripts/cuda/install-cuda-toolchain.sh` installs nvcc 13.0
//! from NVIDIA's PyPI wheels plus link-time stub libraries; this command
//! builds with it in a target folder of its own and checks what it built.
//! docs/gpu.md says how to carry and run the result.

use anyhow::{anyhow, bail, Context, Result};
use mocca_train::files::write_atomic;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// `cargo xtask cuda-build`: which variants, with which toolchain, built where.
#[derive(clap::Args, Debug)]
#[command(
    about = "Build the CUDA trainer binary",
    long_about = "Builds the trainer (this `xtask` binary) with Candle's CUDA backend for the \
GPU machine (compute capability 9.0 = H100/H200, driver >= 580 = CUDA 13.0) and leaves it \
gzipped in dist/ (see docs/gpu.md): dist/xtask-cuda.gz (--features cuda, the default) and \
dist/xtask-cudnn.gz (--features cudnn, cuDNN convolutions).

Installs the CUDA 13.0 compiler toolchain from NVIDIA's PyPI wheels if it is missing \
(scripts/cuda/install-cuda-toolchain.sh, idempotent), builds in release in target/cuda, checks \
that the binary holds real PTX (none from the fake nvcc) and that it starts against the stub \
libraries, then gzips it. Needs python3 with pip, gcc/g++ and about 15 minutes of 2 cores from \
clean."
)]
pub struct Args {
    /// The cuDNN variant only
    #[arg(long, conflicts_with = "both")]
    cudnn: bool,
    /// Both variants (cuda, then cudnn; the kernels are shared)
    #[arg(long)]
    both: bool,
    /// Toolchain folder [default: $CUDA13_PREFIX, else ~/.cache/cuda13]
    #[arg(long, value_name = "DIR")]
    toolchain: Option<PathBuf>,
    /// Link against the real cuBLAS/cuRAND/cuDNN (about 1 GB of wheels) instead of stubs, so
    /// the linker checks them
    #[arg(long)]
    real_libs: bool,
    /// Cargo target folder [default: target/cuda; never one that was used with
    /// scripts/cuda/fake-nvcc-bin]
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
    /// Folder for the .gz files [default: dist]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

impl Args {
    fn variants(&self) -> Vec<Variant> {
        match (self.cudnn, self.both) {
            (_, true) => vec![Variant::Cuda, Variant::Cudnn],
            (true, false) => vec![Variant::Cudnn],
            (false, false) => vec![Variant::Cuda],
        }
    }
}

/// Marker the fake nvcc writes into every PTX file (scripts/cuda/fake-nvcc-bin),
/// reversed: this binary must not carry the text it searches the CUDA build for.
const FAKE_PTX_REVERSED: &str = "ccvn ekaf yb nettirw XTP redlohecalP";
/// Header line of every PTX file the real nvcc writes, reversed likewise.
const REAL_PTX_REVERSED: &str = "relipmoC MVVN AIDIVN yb detareneG";

fn unreversed(s: &str) -> Vec<u8> {
    s.bytes().rev().collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Cuda,
    Cudnn,
}

impl Variant {
    fn feature(self) -> &'static str {
        match self {
            Variant::Cuda => "cuda",
            Variant::Cudnn => "cudnn",
        }
    }

    fn artifact(self) -> String {
        format!("xtask-{}", self.feature())
    }
}

pub fn run(o: Args) -> Result<()> {
    let root = repo_root()?;
    let in_root = |p: &Option<PathBuf>, default: &str| match p {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or(p.clone()),
        None => root.join(default),
    };
    let target_dir = in_root(&o.target_dir, "target/cuda");
    let out_dir = in_root(&o.out, "dist");
    let toolchain = match &o.toolchain {
        Some(p) => in_root(&Some(p.clone()), ""),
        None => default_toolchain()?,
    };

    let env_sh = install_toolchain(&root, &toolchain, o.real_libs)?;
    let cuda_root = toolchain.join("nvidia/cu13");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut summary = Vec::new();
    for v in &o.variants() {
        let started = Instant::now();
        build(&root, &env_sh, &target_dir, *v)?;
        let secs = started.elapsed().as_secs_f64();
        let built = target_dir.join("release/xtask");
        // The next variant's build replaces release/xtask: keep this one.
        let bin = target_dir.join("release").join(v.artifact());
        strip_debug_info(&built, &bin)?;
        let bytes =
            std::fs::read(&bin).with_context(|| format!("cannot read {}", bin.display()))?;
        let ptx_files = check_kernels(&bytes)
            .with_context(|| format!("{} is not fit for a GPU", bin.display()))?;
        smoke_test(&bin, &toolchain, &cuda_root)?;
        let gz = out_dir.join(format!("{}.gz", v.artifact()));
        let gz_len = gzip_atomic(&bytes, &v.artifact(), &gz)?;
        let line = format!(
            "{}: built in {secs:.0} s; {} {:.1} MB (binary {:.1} MB without debug info, \
             {ptx_files} PTX modules)",
            v.feature(),
            gz.display(),
            mb(gz_len),
            mb(bytes.len() as u64)
        );
        eprintln!("cuda-build: {line}");
        summary.push(line);
    }
    for line in summary {
        println!("{line}");
    }
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// The checkout holding scripts/cuda: found from the working directory (as
/// `cargo xtask` runs from anywhere inside it), else where this was compiled.
fn repo_root() -> Result<PathBuf> {
    let marker = "scripts/cuda/install-cuda-toolchain.sh";
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    cwd.ancestors()
        .find(|d| d.join(marker).is_file() && d.join("Cargo.toml").is_file())
        .map(Path::to_path_buf)
        .or_else(|| compiled.join(marker).is_file().then_some(compiled))
        .ok_or_else(|| {
            anyhow!("cannot find the mocca checkout ({marker}): run this inside the repository")
        })
}

fn default_toolchain() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CUDA13_PREFIX").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("neither $CUDA13_PREFIX nor $HOME is set: give --toolchain DIR"))?;
    Ok(PathBuf::from(home).join(".cache/cuda13"))
}

/// Runs the (idempotent) install script; returns the env.sh it writes.
fn install_toolchain(root: &Path, prefix: &Path, real_libs: bool) -> Result<PathBuf> {
    let script = root.join("scripts/cuda/install-cuda-toolchain.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script);
    if real_libs {
        cmd.arg("--real-libs");
    }
    cmd.arg(prefix);
    // Its stdout repeats env.sh, which is read from the file instead.
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): it needs python3 with pip, a C compiler and access to PyPI",
            script.display(),
            out.status
        );
    }
    let env_sh = prefix.join("env.sh");
    if !env_sh.is_file() {
        bail!("{} did not write {}", script.display(), env_sh.display());
    }
    Ok(env_sh)
}

/// `cargo build --release -p mocca-xtask --bin xtask --features <variant>` in
/// the toolchain's environment.
fn build(root: &Path, env_sh: &Path, target_dir: &Path, v: Variant) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "cuda-build: cargo build --release --features {} (target folder {})",
        v.feature(),
        target_dir.display()
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"source "$1" && shift && exec "$@""#)
        .arg("cuda-build")
        .arg(env_sh)
        .arg(cargo)
        .args(["build", "--release", "-p", "mocca-xtask", "--bin", "xtask"])
        .args(["--features", v.feature()])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir);
    // cudarc searches only the roots these name when any is set, and
    // candle-kernels takes $NVCC before PATH: a stale one from the user's
    // shell would mix in another toolkit (or the fake nvcc).
    for var in [
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDA_TOOLKIT_ROOT_DIR",
        "CUDNN_LIB",
        "NVCC",
        "CUDARC_CUDA_VERSION",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().context("cannot run bash")?;
    if !status.success() {
        bail!("the CUDA build failed ({status}); see cargo's messages above");
    }
    Ok(())
}

/// Copies `src` to `dest` without its DWARF line tables (the release profile
/// keeps them for backtraces; they would double the download): `strip
/// --strip-debug`, from binutils, which nvcc's host compiler comes with.
/// Symbols stay, so a panic's backtrace still names the functions.
fn strip_debug_info(src: &Path, dest: &Path) -> Result<()> {
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(dest)
        .arg(src)
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => bail!("strip --strip-debug {} failed ({s})", src.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("cuda-build: no `strip` (binutils) here: the binary keeps its debug info");
            std::fs::copy(src, dest)
                .map(drop)
                .with_context(|| format!("cannot copy {} to {}", src.display(), dest.display()))
        }
        Err(e) => Err(e).context("cannot run strip"),
    }
}

/// Counts the binary's real PTX modules; fails when it holds a placeholder
/// from the fake nvcc (which launches nothing on a GPU) or no PTX at all.
fn check_kernels(bin: &[u8]) -> Result<usize> {
    let fake = count(bin, &unreversed(FAKE_PTX_REVERSED));
    if fake > 0 {
        bail!(
            "it holds {fake} placeholder PTX module(s) from the fake nvcc: its target folder was \
             used with scripts/cuda/fake-nvcc-bin. Use another --target-dir, or run \
             `cargo clean -p candle-kernels --release --target-dir DIR` and build again"
        );
    }
    let real = count(bin, &unreversed(REAL_PTX_REVERSED));
    if real == 0 {
        bail!("it holds no PTX from nvcc: was it built with the `cuda` feature?");
    }
    Ok(real)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Runs `xtask help` with the toolchain's stub libraries on the library path:
/// the binary is linked `-z now`, so this resolves every CUDA symbol it uses.
fn smoke_test(bin: &Path, toolchain: &Path, cuda_root: &Path) -> Result<()> {
    let mut dirs = vec![
        cuda_root.join("lib"),
        cuda_root.join("lib/stubs"),
        toolchain.join("nvidia/cudnn/lib"),
    ];
    dirs.retain(|d| d.is_dir());
    let path = std::env::join_paths(&dirs)?;
    let out = Command::new(bin)
        .arg("help")
        .env("LD_LIBRARY_PATH", path)
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("cuda-build") {
        bail!(
            "{} does not start against the stub libraries ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// gzip -9 of `bytes` (the original name `name` in the header, for
/// `gunzip -N`), written atomically to `dest`; returns its size.
fn gzip_atomic(bytes: &[u8], name: &str, dest: &Path) -> Result<u64> {
    let mut enc = flate2::GzBuilder::new()
        .filename(name)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)?;
    let gz = enc.finish()?;
    write_atomic(dest, &gz).with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(gz.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn parse(line: &str) -> Result<Args> {
        match crate::cli::parse_line(&format!("cuda-build {line}"))? {
            crate::cli::Command::CudaBuild(a) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn default_builds_the_cuda_variant_into_target_cuda_and_dist() {
        let o = parse("").unwrap();
        assert_eq!(o.variants(), vec![Variant::Cuda]);
        assert_eq!((o.real_libs, o.target_dir, o.out), (false, None, None));
        assert_eq!(Variant::Cuda.artifact(), "xtask-cuda");
    }

    #[test]
    fn both_builds_cuda_then_cudnn() {
        let o = parse("--both --real-libs --out carry").unwrap();
        assert_eq!(o.variants(), vec![Variant::Cuda, Variant::Cudnn]);
        assert!(o.real_libs);
        assert_eq!(o.out, Some(PathBuf::from("carry")));
        let o = parse("--cudnn").unwrap();
        assert_eq!(o.variants(), vec![Variant::Cudnn]);
        assert_eq!(o.variants()[0].feature(), "cudnn");
    }

    #[test]
    fn unknown_options_and_missing_values_are_named() {
        let e = parse("--cuda12").unwrap_err().to_string();
        assert!(e.starts_with("unexpected argument '--cuda12'"), "{e}");
        let e = parse("--out").unwrap_err().to_string();
        assert!(
            e.contains("'--out <DIR>'") && e.contains("value is required"),
            "{e}"
        );
        let e = parse("--cudnn --both").unwrap_err().to_string();
        assert!(e.contains("cannot be used with"), "{e}");
    }

    #[test]
    fn misspelt_options_get_a_suggestion() {
        let e = parse("--real-lib").unwrap_err().to_string();
        assert!(
            e.contains("a similar argument exists: '--real-libs'"),
            "{e}"
        );
    }

    #[test]
    fn placeholder_ptx_from_the_fake_nvcc_is_refused() {
        let mut bin = b"\x7fELF...// Generated by NVIDIA NVVM Compiler\n...".to_vec();
        bin.extend_from_slice(b"// Placeholder PTX written by fake nvcc (no CUDA toolkit");
        let e = format!("{:#}", check_kernels(&bin).unwrap_err());
        assert!(e.contains("1 placeholder PTX module(s)"), "{e}");
        assert!(e.contains("--target-dir"), "{e}");
    }

    #[test]
    fn the_searched_marker_is_the_one_the_vendored_fake_nvcc_writes() {
        assert_eq!(
            unreversed(FAKE_PTX_REVERSED),
            b"Placeholder PTX written by fake nvcc"
        );
        assert_eq!(
            unreversed(REAL_PTX_REVERSED),
            b"Generated by NVIDIA NVVM Compiler"
        );
        let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cuda/fake-nvcc-bin/nvcc");
        let script = std::fs::read(&fake).unwrap();
        assert_eq!(count(&script, &unreversed(FAKE_PTX_REVERSED)), 1);
    }

    #[test]
    fn a_binary_without_ptx_is_refused_and_real_modules_are_counted() {
        let e = check_kernels(b"\x7fELF cpu only").unwrap_err().to_string();
        assert!(e.contains("no PTX"), "{e}");
        let two = b"x// Generated by NVIDIA NVVM Compiler\ny// Generated by NVIDIA NVVM Compiler\n";
        assert_eq!(check_kernels(two).unwrap(), 2);
    }

    #[test]
    fn gzip_round_trips_and_keeps_the_name() {
        let dir = std::env::temp_dir().join(format!("mocca-cuda-gz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("xtask-cuda.gz");
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let len = gzip_atomic(&payload, "xtask-cuda", &dest).unwrap();
        assert_eq!(len, std::fs::metadata(&dest).unwrap().len());
        assert!(len < payload.len() as u64 / 10);
        let mut d = flate2::read::GzDecoder::new(std::fs::File::open(&dest).unwrap());
        let mut back = Vec::new();
        d.read_to_end(&mut back).unwrap();
        assert_eq!(back, payload);
        assert_eq!(d.header().unwrap().filename(), Some(&b"xtask-cuda"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
