//! What the trainer leaves in a run folder, and how the other commands read it.
//!
//! ```text
//! runs/<name>/
//!   config.toml              the resolved configuration (reproduces the run)
//!   metrics.jsonl            step / epoch / kNN records, one JSON object a line
//!   checkpoint.safetensors   the latest checkpoint (atomically replaced)
//!   curves.png               written by `cargo xtask plot`
//! ```
//!
//! A checkpoint is one safetensors file: the method's whole state as tensors
//! (both encoders with BN buffers, optimiser state, queue or bank, RNG
//! states) and, in the header metadata, the config, the step counters and a
//! format tag. One file means one atomic rename: a reader sees the previous
//! checkpoint or the new one, never a mix.

use anyhow::{anyhow, bail, Result};
use candle_core::{Device, Tensor};
use mocca_recipes::config::{ConfigBuilder, DeviceKind, TrainConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The resolved config's name in a run folder.
pub const CONFIG_FILE: &str = "config.toml";
pub use mocca_train::{CHECKPOINT_FILE, METRICS_FILE};

/// A run's checkpoint metadata ([`mocca_train::CheckpointMeta`]) with the run
/// config it carries parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct RunCheckpoint {
    pub config: TrainConfig,
    pub meta: mocca_train::CheckpointMeta,
}

/// The tensors of a run's checkpoint and its metadata.
pub fn load_checkpoint(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, RunCheckpoint)> {
    let (tensors, meta) = mocca_train::load_checkpoint(path, device)?;
    Ok((tensors, with_config(path, meta)?))
}

/// The checkpoint's counters and config, without loading its tensors.
pub fn read_checkpoint_meta(path: &Path) -> Result<RunCheckpoint> {
    with_config(path, mocca_train::read_checkpoint_meta(path)?)
}

fn with_config(path: &Path, meta: mocca_train::CheckpointMeta) -> Result<RunCheckpoint> {
    let config = ConfigBuilder::from_text(
        &meta.run_config,
        &format!("{} (embedded config)", path.display()),
    )?
    .build()?;
    Ok(RunCheckpoint { config, meta })
}

/// The newest checkpoint of a run (a folder, or its checkpoint file) whose
/// header reads, with its config: what `--resume` rebuilds the run from. The
/// tensors are checked later, when the trainer loads them
/// ([`mocca_train::Trainer::resume_newest`]).
pub fn newest_checkpoint_meta(run_or_file: &Path) -> Result<(PathBuf, RunCheckpoint)> {
    let newest = if run_or_file.is_dir() {
        run_or_file.join(CHECKPOINT_FILE)
    } else {
        run_or_file.to_path_buf()
    };
    let mut failures = Vec::new();
    for p in mocca_train::checkpoint::checkpoint_candidates(&newest) {
        if !p.exists() {
            failures.push(format!("{}: missing", p.display()));
            continue;
        }
        match read_checkpoint_meta(&p) {
            Ok(m) => return Ok((newest, m)),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    if run_or_file.is_dir() && failures.len() == 1 && !newest.exists() {
        bail!(
            "{} has no {CHECKPOINT_FILE}: the run has not finished an epoch yet, or this is not a run folder",
            run_or_file.display()
        );
    }
    bail!("no readable checkpoint: {}", failures.join("; "))
}

/// Accepts a run folder or a checkpoint file; returns the checkpoint path.
pub fn checkpoint_path(run_or_file: &Path) -> Result<PathBuf> {
    if run_or_file.is_dir() {
        let p = run_or_file.join(CHECKPOINT_FILE);
        let previous = mocca_train::checkpoint::previous_checkpoint_path(&p, 1);
        if !p.exists() && previous.exists() {
            bail!(
                "{} has no {CHECKPOINT_FILE} but has the previous one, {}: `cargo xtask train \
                 --resume` falls back to it; pass the file itself to use it here",
                run_or_file.display(),
                previous.display()
            );
        }
        if !p.exists() {
            bail!(
                "{} has no {CHECKPOINT_FILE}: the run has not finished an epoch yet, or this is not a run folder",
                run_or_file.display()
            );
        }
        Ok(p)
    } else if run_or_file.is_file() {
        Ok(run_or_file.to_path_buf())
    } else {
        bail!(
            "{} does not exist (expected a run folder or a checkpoint file)",
            run_or_file.display()
        )
    }
}

/// The Candle device for `kind`, or an error that says what to do instead.
/// `auto` takes CUDA GPU 0 when this build has CUDA and the GPU opens, else
/// the CPU; either way it says on stderr, in one line, what it chose and why.
pub fn select_device(kind: DeviceKind) -> Result<Device> {
    let (device, note) = choose_device(kind, candle_core::utils::cuda_is_available(), || {
        Device::new_cuda(0)
    })?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    Ok(device)
}

/// `cpu` or `cuda:N`, for progress lines.
pub fn device_label(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// [`select_device`]'s decision, given whether Candle was built with CUDA and
/// what opening GPU 0 gives. `open_gpu` is only called when a GPU may be used.
/// In a CUDA build `Device::cuda_if_available` returns the error instead of
/// falling back, so the fallback is made here.
fn choose_device(
    kind: DeviceKind,
    cuda_built: bool,
    open_gpu: impl FnOnce() -> candle_core::Result<Device>,
) -> Result<(Device, Option<String>)> {
    const NO_CUDA_BUILD: &str = "this build has no CUDA support (Candle was compiled without its \
                                 `cuda` feature; `cargo xtask cuda-build` makes a CUDA trainer, see docs/gpu.md)";
    match (kind, cuda_built) {
        (DeviceKind::Cpu, _) => Ok((Device::Cpu, None)),
        (DeviceKind::Auto, false) => Ok((
            Device::Cpu,
            Some(format!("device auto: running on the CPU: {NO_CUDA_BUILD}")),
        )),
        (DeviceKind::Cuda, false) => bail!("--device cuda: {NO_CUDA_BUILD}; or use --device cpu"),
        (DeviceKind::Auto, true) => match open_gpu() {
            Ok(d) => Ok((d, Some("device auto: running on CUDA GPU 0".into()))),
            Err(e) => Ok((
                Device::Cpu,
                Some(format!(
                    "device auto: running on the CPU: no usable CUDA GPU ({}){}",
                    one_line(&e),
                    stub_hint(&e)
                )),
            )),
        },
        (DeviceKind::Cuda, true) => open_gpu().map(|d| (d, None)).map_err(|e| {
            anyhow!(
                "--device cuda: no usable CUDA GPU: cannot open GPU 0: {}{}. Run on a machine with an \
                 NVIDIA GPU and its driver (docs/gpu.md), or use --device auto or cpu",
                one_line(&e),
                stub_hint(&e)
            )
        }),
    }
}

/// The driver's error in one line: without the backtrace Candle attaches
/// when RUST_BACKTRACE is set (the frames say nothing the message does not).
fn one_line(e: &candle_core::Error) -> String {
    let mut e = e;
    while let candle_core::Error::WithBacktrace { inner, .. } = e {
        e = inner;
    }
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The link-time stub libraries (scripts/cuda/make-cuda-stubs.sh) answer every
/// call with CUDA_ERROR_STUB_LIBRARY: on a GPU machine that means the stubs
/// shadow the driver's real libcuda.so.1.
fn stub_hint(e: &candle_core::Error) -> &'static str {
    if e.to_string().contains("STUB_LIBRARY") {
        "; the CUDA libraries loaded are link-time stubs (on a GPU machine, run with \
         scripts/cuda/run-with-cuda-libs.sh)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mocca_recipes::config::{MethodName, Recipe};

    #[test]
    fn a_checkpoint_carries_its_run_config() {
        let dir = std::env::temp_dir().join(format!("mocca-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(CHECKPOINT_FILE);
        let config = ConfigBuilder::from_preset(MethodName::Mocov2, Recipe::Cifar)
            .unwrap()
            .build()
            .unwrap();
        let meta = mocca_train::CheckpointMeta {
            run_config: config.to_toml(),
            global_step: 97,
            epoch: 3,
            step_in_epoch: 1,
            finished: false,
            train_images: 1000,
            steps_per_epoch: 31,
        };
        let w = Tensor::new(&[[0.25f32, -1.0]], &Device::Cpu).unwrap();
        mocca_train::save_checkpoint(&path, &[("encoder_q.conv1.weight".into(), w)], &meta)
            .unwrap();
        let (_, run) = load_checkpoint(&path, &Device::Cpu).unwrap();
        assert_eq!(run, RunCheckpoint { config, meta });
        assert_eq!(read_checkpoint_meta(&path).unwrap(), run);
        assert_eq!(checkpoint_path(&dir).unwrap(), path);
    }

    fn no_gpu() -> candle_core::Result<Device> {
        Err(candle_core::Error::Msg(
            "DriverError(CUDA_ERROR_NO_DEVICE, \"no CUDA-capable device is detected\")".into(),
        ))
    }

    fn must_not_open() -> candle_core::Result<Device> {
        panic!("the GPU must not be probed here")
    }

    #[test]
    fn cpu_never_probes_the_gpu_and_says_nothing() {
        let (d, note) = choose_device(DeviceKind::Cpu, true, must_not_open).unwrap();
        assert!(d.is_cpu());
        assert_eq!(note, None);
    }

    #[test]
    fn auto_on_a_build_without_cuda_runs_on_the_cpu_and_says_why() {
        let (d, note) = choose_device(DeviceKind::Auto, false, must_not_open).unwrap();
        assert!(d.is_cpu());
        let note = note.unwrap();
        assert!(
            note.starts_with("device auto: running on the CPU"),
            "{note}"
        );
        assert!(
            note.contains("no CUDA support") && note.contains("cuda-build"),
            "{note}"
        );
        assert!(!note.contains('\n'), "{note}");
    }

    #[test]
    fn auto_without_a_usable_gpu_falls_back_to_the_cpu_naming_the_driver_error() {
        let (d, note) = choose_device(DeviceKind::Auto, true, no_gpu).unwrap();
        assert!(d.is_cpu());
        let note = note.unwrap();
        assert!(
            note.contains("running on the CPU: no usable CUDA GPU"),
            "{note}"
        );
        assert!(note.contains("CUDA_ERROR_NO_DEVICE"), "{note}");
        assert!(!note.contains("stub"), "{note}");
    }

    #[test]
    fn cuda_without_a_usable_gpu_is_an_error_naming_the_driver_error() {
        let err = choose_device(DeviceKind::Cuda, true, no_gpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--device cuda: no usable CUDA GPU"),
            "{err}"
        );
        assert!(err.contains("CUDA_ERROR_NO_DEVICE"), "{err}");
        assert!(err.contains("--device auto or cpu"), "{err}");
    }

    #[test]
    fn the_fallback_note_is_one_line_without_candles_backtrace() {
        let with_bt = || -> candle_core::Result<Device> {
            Err(candle_core::Error::WithBacktrace {
                inner: Box::new(candle_core::Error::Msg("CUDA_ERROR_NO_DEVICE".into())),
                backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
            })
        };
        let (_, note) = choose_device(DeviceKind::Auto, true, with_bt).unwrap();
        assert_eq!(
            note.unwrap(),
            "device auto: running on the CPU: no usable CUDA GPU (CUDA_ERROR_NO_DEVICE)"
        );
    }

    #[test]
    fn stub_libraries_are_named_as_the_reason() {
        let stub = || -> candle_core::Result<Device> {
            Err(candle_core::Error::Msg(
                "DriverError(CUDA_ERROR_STUB_LIBRARY, \"<Failure when calling cuGetErrorString()>\")"
                    .into(),
            ))
        };
        let err = choose_device(DeviceKind::Cuda, true, stub)
            .unwrap_err()
            .to_string();
        assert!(err.contains("link-time stubs"), "{err}");
        let (_, note) = choose_device(DeviceKind::Auto, true, stub).unwrap();
        assert!(note.unwrap().contains("link-time stubs"));
    }

    #[test]
    fn cuda_on_a_build_without_cuda_is_an_error_before_any_probe() {
        let err = choose_device(DeviceKind::Cuda, false, must_not_open)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no CUDA support") && err.contains("--device cpu"),
            "{err}"
        );
    }

    #[test]
    fn device_labels_name_the_backend() {
        assert_eq!(device_label(&Device::Cpu), "cpu");
    }

    #[test]
    fn cuda_on_a_cpu_build_is_a_clear_error() {
        if candle_core::utils::cuda_is_available() {
            return;
        }
        let err = select_device(DeviceKind::Cuda).unwrap_err().to_string();
        assert!(
            err.contains("no CUDA support") && err.contains("--device cpu"),
            "{err}"
        );
    }
}
