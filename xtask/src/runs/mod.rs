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

pub mod config;
pub mod fetch;
pub mod files;
pub mod metrics;
pub mod setup;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use config::{ConfigBuilder, DeviceKind, TrainConfig};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "config.toml";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
const FORMAT: &str = "mocca-checkpoint-1";

/// Where a training run is, and what it ended at.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    pub config: TrainConfig,
    /// Optimizer steps done.
    pub global_step: u64,
    /// The epoch the next step belongs to, and its position in it.
    pub epoch: usize,
    pub step_in_epoch: usize,
    /// The run reached its last epoch.
    pub finished: bool,
    /// Training images and steps per epoch when the checkpoint was taken: a
    /// resumed run must see the same dataset to repeat the same batches.
    pub train_images: usize,
    pub steps_per_epoch: u64,
}

pub fn save_checkpoint(
    path: &Path,
    tensors: &[(String, Tensor)],
    meta: &CheckpointMeta,
) -> Result<()> {
    let md = BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("config".to_string(), meta.config.to_toml()),
        ("global_step".to_string(), meta.global_step.to_string()),
        ("epoch".to_string(), meta.epoch.to_string()),
        ("step_in_epoch".to_string(), meta.step_in_epoch.to_string()),
        ("finished".to_string(), meta.finished.to_string()),
        ("train_images".to_string(), meta.train_images.to_string()),
        (
            "steps_per_epoch".to_string(),
            meta.steps_per_epoch.to_string(),
        ),
    ]);
    let bytes = files::encode_safetensors(tensors, &md)?;
    files::write_atomic(path, &bytes)
        .with_context(|| format!("cannot write checkpoint {}", path.display()))
}

pub fn load_checkpoint(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, CheckpointMeta)> {
    let (tensors, md) = files::read_safetensors(path, device)?;
    Ok((tensors, parse_meta(path, &md)?))
}

/// The checkpoint's counters and config, without loading its tensors.
pub fn read_checkpoint_meta(path: &Path) -> Result<CheckpointMeta> {
    parse_meta(path, &files::read_safetensors_metadata(path)?)
}

fn parse_meta(path: &Path, md: &BTreeMap<String, String>) -> Result<CheckpointMeta> {
    let p = path.display();
    if md.get("format").map(String::as_str) != Some(FORMAT) {
        bail!("{p} is not a mocca checkpoint (no `format = {FORMAT}` in its metadata)");
    }
    let field = |k: &str| -> Result<&String> {
        md.get(k)
            .ok_or_else(|| anyhow!("{p}: checkpoint metadata lacks `{k}`"))
    };
    let num = |k: &str| -> Result<u64> {
        field(k)?
            .parse()
            .map_err(|_| anyhow!("{p}: checkpoint metadata `{k}` is not a number"))
    };
    let config =
        ConfigBuilder::from_text(field("config")?, &format!("{p} (embedded config)"))?.build()?;
    let meta = CheckpointMeta {
        config,
        global_step: num("global_step")?,
        epoch: num("epoch")? as usize,
        step_in_epoch: num("step_in_epoch")? as usize,
        finished: field("finished")? == "true",
        train_images: num("train_images")? as usize,
        steps_per_epoch: num("steps_per_epoch")?,
    };
    Ok(meta)
}

/// Accepts a run folder or a checkpoint file; returns the checkpoint path.
pub fn checkpoint_path(run_or_file: &Path) -> Result<PathBuf> {
    if run_or_file.is_dir() {
        let p = run_or_file.join(CHECKPOINT_FILE);
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
    use config::{MethodName, Recipe};

    #[test]
    fn checkpoint_round_trips_tensors_and_counters() {
        let dir = std::env::temp_dir().join(format!("mocca-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(CHECKPOINT_FILE);
        let config = ConfigBuilder::from_preset(MethodName::Mocov2, Recipe::Cifar)
            .build()
            .unwrap();
        let meta = CheckpointMeta {
            config,
            global_step: 97,
            epoch: 3,
            step_in_epoch: 1,
            finished: false,
            train_images: 1000,
            steps_per_epoch: 31,
        };
        let w = Tensor::new(&[[0.25f32, -1.0]], &Device::Cpu).unwrap();
        save_checkpoint(&path, &[("encoder_q.conv1.weight".into(), w)], &meta).unwrap();
        let (t, m) = load_checkpoint(&path, &Device::Cpu).unwrap();
        assert_eq!(m, meta);
        assert_eq!(read_checkpoint_meta(&path).unwrap(), meta);
        assert_eq!(
            t["encoder_q.conv1.weight"].to_vec2::<f32>().unwrap(),
            vec![vec![0.25, -1.0]]
        );
        assert_eq!(checkpoint_path(&dir).unwrap(), path);
    }

    #[test]
    fn a_plain_safetensors_file_is_not_taken_for_a_checkpoint() {
        let dir = std::env::temp_dir().join(format!("mocca-notckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("weights.safetensors");
        let w = Tensor::new(&[1f32], &Device::Cpu).unwrap();
        files::write_atomic(
            &path,
            &files::encode_safetensors(&[("w".into(), w)], &BTreeMap::new()).unwrap(),
        )
        .unwrap();
        let err = load_checkpoint(&path, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a mocca checkpoint"), "{err}");
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
