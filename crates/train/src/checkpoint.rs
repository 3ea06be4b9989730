//! The trainer's checkpoint: one safetensors file holding the method's whole
//! state ([`Method::state`](mocca_methods::Method::state): both encoders with
//! their BatchNorm buffers, optimiser state, queue or bank, generator states,
//! step) and, in the header metadata, where the run is and the caller's run
//! configuration. One file means one atomic rename: a reader sees the previous
//! checkpoint or the new one, never a mix.
//!
//! Every tensor's bytes carry a CRC-32 in the metadata
//! ([`files::encode_safetensors_checked`]), checked on every load: a damaged
//! checkpoint is an error naming the tensor, never weights trained on.
//! [`save_checkpoint_keeping`] keeps the previous checkpoints beside the
//! newest (`checkpoint.1.safetensors`, `.2`, … for `checkpoint.safetensors`)
//! and [`load_newest_checkpoint`] falls back to the newest one that passes,
//! moving the damaged ones aside (`*.damaged`), never deleting them.

use crate::error::{Result, TrainError};
use crate::files;
use candle_core::{Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

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

/// The newest checkpoint's name in a run folder (older ones: `checkpoint.1.safetensors`, …).
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// Writes `tensors` and `meta` to `path` atomically, with a checksum of
/// every tensor; keeps no previous checkpoint ([`save_checkpoint_keeping`]).
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
    let bytes = files::encode_safetensors_checked(tensors, &md)?;
    files::write_atomic(path, &bytes)
}

/// [`save_checkpoint`], keeping the `keep - 1` previous checkpoints: the one
/// at `path` becomes [`previous_checkpoint_path`]`(path, 1)`, that one `2`, …
/// The previous newest stays whole under its old name until the new one has
/// replaced it (a hard link, or a copy where links are not supported), so a
/// crash at any instant leaves at least one complete checkpoint.
pub fn save_checkpoint_keeping(
    path: &Path,
    tensors: &[(String, Tensor)],
    meta: &CheckpointMeta,
    keep: usize,
) -> Result<()> {
    if keep > 1 && path.exists() {
        let io = |what: &'static str, p: &Path| crate::error::io_err(what, p);
        for k in (2..keep).rev() {
            let from = previous_checkpoint_path(path, k - 1);
            if from.exists() {
                let to = previous_checkpoint_path(path, k);
                std::fs::rename(&from, &to).map_err(io("cannot rotate checkpoint", &from))?;
            }
        }
        let first = previous_checkpoint_path(path, 1);
        if first.exists() {
            std::fs::remove_file(&first).map_err(io("cannot rotate checkpoint", &first))?;
        }
        if std::fs::hard_link(path, &first).is_err() {
            std::fs::copy(path, &first).map_err(io("cannot keep checkpoint", path))?;
        }
    }
    save_checkpoint(path, tensors, meta)
}

/// Where [`save_checkpoint_keeping`] keeps the `k`-th previous checkpoint of
/// `path`: `run/checkpoint.safetensors` → `run/checkpoint.k.safetensors`.
pub fn previous_checkpoint_path(path: &Path, k: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{k}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{k}"),
    };
    path.with_file_name(name)
}

/// `path` and its previous checkpoints that exist, newest first (`path`
/// itself is listed even when missing, so that its absence is reported).
pub fn checkpoint_candidates(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    for k in 1.. {
        let p = previous_checkpoint_path(path, k);
        if !p.exists() {
            break;
        }
        out.push(p);
    }
    out
}

/// A checkpoint loaded by [`load_newest_checkpoint`].
#[derive(Debug)]
pub struct LoadedCheckpoint {
    pub tensors: HashMap<String, Tensor>,
    pub meta: CheckpointMeta,
    /// The file the tensors came from.
    pub path: PathBuf,
    /// The newer files that were passed over, each with why (missing,
    /// truncated, a tensor that fails its checksum, ...), newest first, and
    /// where a damaged one was moved (`None`: missing, or left in place).
    pub skipped: Vec<SkippedCheckpoint>,
}

/// A checkpoint [`load_newest_checkpoint`] could not use.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedCheckpoint {
    pub path: PathBuf,
    pub reason: String,
    /// Where the damaged file now is (`FILE.damaged`).
    pub moved_to: Option<PathBuf>,
}

/// The newest of `path` and its previous checkpoints
/// ([`checkpoint_candidates`]) that loads and passes its checksums. Damaged
/// files passed over are renamed to `FILE.damaged` (so that the next save's
/// rotation does not push a good previous checkpoint out in favour of a
/// damaged one); a missing newest file is just reported. Errors, naming
/// every file tried, when none is usable.
pub fn load_newest_checkpoint(path: &Path, device: &Device) -> Result<LoadedCheckpoint> {
    let mut skipped = Vec::new();
    for candidate in checkpoint_candidates(path) {
        if !candidate.exists() {
            skipped.push(SkippedCheckpoint {
                path: candidate,
                reason: "missing".into(),
                moved_to: None,
            });
            continue;
        }
        match load_checkpoint(&candidate, device) {
            Ok((tensors, meta)) => {
                return Ok(LoadedCheckpoint {
                    tensors,
                    meta,
                    path: candidate,
                    skipped,
                })
            }
            Err(e) => {
                let mut aside = candidate.clone().into_os_string();
                aside.push(".damaged");
                let aside = PathBuf::from(aside);
                let moved_to = std::fs::rename(&candidate, &aside).ok().map(|_| aside);
                skipped.push(SkippedCheckpoint {
                    path: candidate,
                    reason: e.to_string(),
                    moved_to,
                });
            }
        }
    }
    let tried: Vec<String> = skipped
        .iter()
        .map(|s| format!("{}: {}", s.path.display(), s.reason))
        .collect();
    Err(TrainError::BadFile(format!(
        "no usable checkpoint: {}",
        tried.join("; ")
    )))
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

    fn meta(step: u64) -> CheckpointMeta {
        CheckpointMeta {
            run_config: "epochs = 4\n".into(),
            global_step: step,
            epoch: 0,
            step_in_epoch: step as usize,
            finished: false,
            train_images: 100,
            steps_per_epoch: 10,
        }
    }

    fn save_step(path: &Path, step: u64, keep: usize) {
        let w = Tensor::full(step as f32, (64,), &Device::Cpu).unwrap();
        save_checkpoint_keeping(path, &[("w".into(), w)], &meta(step), keep).unwrap();
    }

    fn step_of(path: &Path) -> u64 {
        read_checkpoint_meta(path).unwrap().global_step
    }

    #[test]
    fn saving_keeps_the_previous_checkpoints_newest_first() {
        let path = tmpdir("keep").join("checkpoint.safetensors");
        for step in 1..=4 {
            save_step(&path, step, 3);
        }
        assert_eq!(step_of(&path), 4);
        assert_eq!(step_of(&previous_checkpoint_path(&path, 1)), 3);
        assert_eq!(step_of(&previous_checkpoint_path(&path, 2)), 2);
        assert!(!previous_checkpoint_path(&path, 3).exists());
        assert_eq!(
            previous_checkpoint_path(&path, 1).file_name().unwrap(),
            "checkpoint.1.safetensors"
        );
    }

    #[test]
    fn flipped_payload_bytes_fall_back_to_the_previous_checkpoint_and_keep_the_damaged_one() {
        let path = tmpdir("flip").join("checkpoint.safetensors");
        save_step(&path, 1, 2);
        save_step(&path, 2, 2);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() - 100;
        bytes[mid] ^= 0xff;
        bytes[mid + 1] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();

        let err = load_checkpoint(&path, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is damaged: tensor `w` does not match its checksum"),
            "{err}"
        );
        let got = load_newest_checkpoint(&path, &Device::Cpu).unwrap();
        assert_eq!(got.meta.global_step, 1);
        assert_eq!(got.path, previous_checkpoint_path(&path, 1));
        assert_eq!(got.skipped.len(), 1);
        assert!(
            got.skipped[0].reason.contains("damaged"),
            "{:?}",
            got.skipped
        );
        let aside = got.skipped[0].moved_to.clone().unwrap();
        assert_eq!(aside.file_name().unwrap(), "checkpoint.safetensors.damaged");
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            bytes,
            "the damaged file is kept as it was"
        );
        assert!(!path.exists());
    }

    #[test]
    fn a_truncated_newest_checkpoint_falls_back_saying_so() {
        let path = tmpdir("trunc").join("checkpoint.safetensors");
        save_step(&path, 1, 2);
        save_step(&path, 2, 2);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let got = load_newest_checkpoint(&path, &Device::Cpu).unwrap();
        assert_eq!(got.meta.global_step, 1);
        assert!(
            got.skipped[0].reason.contains("truncated"),
            "{:?}",
            got.skipped
        );
    }

    #[test]
    fn a_missing_newest_checkpoint_falls_back_and_none_at_all_is_an_error_naming_each_file() {
        let dir = tmpdir("missing");
        let path = dir.join("checkpoint.safetensors");
        save_step(&path, 1, 2);
        save_step(&path, 2, 2);
        std::fs::remove_file(&path).unwrap();
        let got = load_newest_checkpoint(&path, &Device::Cpu).unwrap();
        assert_eq!(got.meta.global_step, 1);
        assert_eq!(got.skipped[0].reason, "missing");
        assert_eq!(got.skipped[0].moved_to, None);

        let empty = dir.join("none.safetensors");
        let err = load_newest_checkpoint(&empty, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no usable checkpoint") && err.contains("none.safetensors: missing"),
            "{err}"
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
