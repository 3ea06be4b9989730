//! The trainer's checkpoint: one safetensors file holding the method's whole
//! state ([`Method::state`](mocca_methods::Method::state): both encoders with
//! their BatchNorm buffers, optimiser state, queue or bank, generator states,
//! step) and, in the header metadata, where the run is and the caller's run
//! configuration. One file means one atomic rename: a reader sees the previous
//! checkpoint or the new one, never a mix.

use crate::error::{Result, TrainError};
use crate::files;
use candle_core::{Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The metadata tag that tells a checkpoint from any other safetensors file.
pub const FORMAT: &str = "mocca-checkpoint-1";

/// Where a training run is, and what it ended at.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    /// The caller's description of the run (`cargo xtask train` stores its
    /// resolved TOML config), kept verbatim so the run can be rebuilt.
    pub run_config: String,
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

/// Writes `tensors` and `meta` to `path` atomically.
pub fn save_checkpoint(
    path: &Path,
    tensors: &[(String, Tensor)],
    meta: &CheckpointMeta,
) -> Result<()> {
    let md = BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("config".to_string(), meta.run_config.clone()),
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
}

/// The tensors of a checkpoint (on `device`) and its metadata.
pub fn load_checkpoint(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, CheckpointMeta)> {
    let (tensors, md) = files::read_safetensors(path, device)?;
    Ok((tensors, parse_meta(path, &md)?))
}

/// The checkpoint's counters and run config, without loading its tensors.
pub fn read_checkpoint_meta(path: &Path) -> Result<CheckpointMeta> {
    parse_meta(path, &files::read_safetensors_metadata(path)?)
}

fn parse_meta(path: &Path, md: &BTreeMap<String, String>) -> Result<CheckpointMeta> {
    let p = path.display();
    if md.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(TrainError::BadFile(format!(
            "{p} is not a mocca checkpoint (no `format = {FORMAT}` in its metadata)"
        )));
    }
    let field = |k: &str| -> Result<&String> {
        md.get(k)
            .ok_or_else(|| TrainError::BadFile(format!("{p}: checkpoint metadata lacks `{k}`")))
    };
    let num = |k: &str| -> Result<u64> {
        field(k)?.parse().map_err(|_| {
            TrainError::BadFile(format!("{p}: checkpoint metadata `{k}` is not a number"))
        })
    };
    Ok(CheckpointMeta {
        run_config: field("config")?.clone(),
        global_step: num("global_step")?,
        epoch: num("epoch")? as usize,
        step_in_epoch: num("step_in_epoch")? as usize,
        finished: field("finished")? == "true",
        train_images: num("train_images")? as usize,
        steps_per_epoch: num("steps_per_epoch")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mocca-train-ckpt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn checkpoint_round_trips_tensors_counters_and_run_config() {
        let path = tmpdir("rt").join("checkpoint.safetensors");
        let meta = CheckpointMeta {
            run_config: "epochs = 4\nbatch_size = 32\n".into(),
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
    }

    #[test]
    fn a_plain_safetensors_file_is_not_taken_for_a_checkpoint() {
        let path = tmpdir("plain").join("weights.safetensors");
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
}
