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
pub fn select_device(kind: DeviceKind) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => {
            if !candle_core::utils::cuda_is_available() {
                bail!(
                    "--device cuda: this build has no CUDA support (Candle was compiled without its \
                     `cuda` feature). Build the CUDA trainer with `cargo xtask cuda-build` (see docs/gpu.md) \
                     or use --device cpu"
                );
            }
            Device::new_cuda(0).map_err(|e| anyhow!("--device cuda: cannot open GPU 0: {e}"))
        }
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
