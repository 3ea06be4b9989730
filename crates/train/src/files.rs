//! Crash-safe file writes and a small safetensors codec with metadata.
//!
//! Candle's `safetensors::save` writes straight to the destination and cannot
//! carry metadata; checkpoints need both (a killed write must never leave half
//! a file, and the run's config and step counters travel in the header). The
//! format is tiny (8-byte little-endian header length, a JSON header, raw
//! little-endian data), so it is written here; reading the tensors back goes
//! through Candle's own loader.

use crate::error::{io_err, Result, TrainError};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

fn bad(msg: String) -> TrainError {
    TrainError::BadFile(msg)
}

/// Writes `bytes` to `path` so that a crash at any instant leaves either the
/// old file or the new one ([`mocca_core::fs::write_atomic`]: temp file
/// `.NAME.tmp-PID` in the same folder, fsync, rename, fsync of the folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    mocca_core::fs::write_atomic(path, bytes).map_err(io_err("cannot write", path))
}

/// Removes the temp files (`.NAME.tmp-PID`) that writers of `names` left
/// when they were killed mid-write. Only the named files: another program
/// (a plotter) may be writing into the same folder right now.
pub fn remove_stale_temp_files(dir: &Path, names: &[&str]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if names
            .iter()
            .any(|name| n.starts_with(&format!(".{name}.tmp-")))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn dtype_name(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::U8 => "U8",
        DType::U32 => "U32",
        DType::I64 => "I64",
        DType::F32 => "F32",
        DType::F64 => "F64",
        other => return Err(bad(format!("cannot store dtype {other:?} in safetensors"))),
    })
}

fn raw_le_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let flat = t.flatten_all()?;
    let bytes = match t.dtype() {
        DType::U8 => flat.to_vec1::<u8>()?,
        DType::U32 => flat
            .to_vec1::<u32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::I64 => flat
            .to_vec1::<i64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F32 => flat
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F64 => flat
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        other => return Err(bad(format!("cannot store dtype {other:?} in safetensors"))),
    };
    Ok(bytes)
}

/// Serialises tensors (any order; stored sorted by name) and string metadata.
pub fn encode_safetensors(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(bad(format!("duplicate tensor name `{}`", w[0].0)));
    }
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let md = metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(md));
    }
    let mut data = Vec::new();
    for (name, t) in sorted {
        let bytes = raw_le_bytes(t).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        let start = data.len();
        data.extend_from_slice(&bytes);
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": dtype_name(t.dtype())?,
                "shape": t.dims(),
                "data_offsets": [start, data.len()],
            }),
        );
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| bad(format!("cannot encode a safetensors header: {e}")))?;
    // The reference implementation pads the header to 8 bytes so the data
    // is aligned for zero-copy readers.
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + data.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&data);
    Ok(out)
}

/// Why a file is not a usable safetensors file, in words a user can act on.
/// `bytes` holds at least the length prefix and header; `file_len` is the
/// whole file's size.
fn check_layout(bytes: &[u8], file_len: usize, path: &Path) -> Result<BTreeMap<String, String>> {
    let p = path.display();
    if file_len < 8 || bytes.len() < 8 {
        return Err(bad(format!(
            "{p} is truncated ({file_len} bytes): not a complete safetensors file"
        )));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    if n > file_len - 8 || n > bytes.len() - 8 {
        return Err(bad(format!(
            "{p} is truncated: its header says {n} header bytes, the file has {} after the length",
            file_len - 8
        )));
    }
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n])
        .map_err(|e| bad(format!("{p}: corrupt safetensors header: {e}")))?;
    let obj = header.as_object().ok_or_else(|| {
        bad(format!(
            "{p}: corrupt safetensors header (not a JSON object)"
        ))
    })?;
    let mut end = 0usize;
    let mut metadata = BTreeMap::new();
    for (k, v) in obj {
        if k == "__metadata__" {
            if let Some(m) = v.as_object() {
                for (mk, mv) in m {
                    metadata.insert(mk.clone(), mv.as_str().unwrap_or_default().to_string());
                }
            }
            continue;
        }
        let e = v
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(|o| o.as_u64())
            .ok_or_else(|| bad(format!("{p}: corrupt safetensors header entry `{k}`")))?;
        end = end.max(e as usize);
    }
    let have = file_len - 8 - n;
    if have != end {
        return Err(bad(format!(
            "{p} is truncated or padded: the header describes {end} data bytes, the file has {have}"
        )));
    }
    Ok(metadata)
}

/// Reads a safetensors file: its tensors onto `device`, and its metadata.
pub fn read_safetensors(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(io_err("cannot read", path))?;
    let metadata = check_layout(&bytes, bytes.len(), path)?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| bad(format!("cannot decode {}: {e}", path.display())))?;
    Ok((tensors, metadata))
}

/// The metadata of a safetensors file, reading only its header (the file's
/// size is still checked against the header, so a truncated file is caught).
pub fn read_safetensors_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(io_err("cannot read", path))?;
    let file_len = f.metadata().map_err(io_err("cannot read", path))?.len() as usize;
    let mut len = [0u8; 8];
    if file_len < 8 {
        return Err(bad(format!(
            "{} is truncated ({file_len} bytes): not a complete safetensors file",
            path.display()
        )));
    }
    f.read_exact(&mut len)
        .map_err(io_err("cannot read", path))?;
    let n = (u64::from_le_bytes(len) as usize).min(file_len - 8);
    let mut bytes = len.to_vec();
    bytes.resize(8 + n, 0);
    f.read_exact(&mut bytes[8..])
        .map_err(io_err("cannot read", path))?;
    check_layout(&bytes, file_len, path)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mocca-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn tensors_and_metadata_round_trip_bit_for_bit() {
        let dev = Device::Cpu;
        let a = Tensor::new(
            &[[1.5f32, -0.0, f32::MIN_POSITIVE], [3.0, 1e-30, 7.25]],
            &dev,
        )
        .unwrap();
        let b = Tensor::new(&[-3i64, 1 << 40], &dev).unwrap();
        let c = Tensor::new(&[0.1f64], &dev).unwrap();
        let meta = BTreeMap::from([("step".to_string(), "12".to_string())]);
        let bytes = encode_safetensors(
            &[
                ("b".into(), b.clone()),
                ("a.w".into(), a.clone()),
                ("c".into(), c),
            ],
            &meta,
        )
        .unwrap();
        let d = tmpdir("rt");
        let p = d.join("x.safetensors");
        write_atomic(&p, &bytes).unwrap();
        let (t, m) = read_safetensors(&p, &dev).unwrap();
        assert_eq!(m, meta);
        let a2 = t["a.w"].to_vec2::<f32>().unwrap();
        let bits = |v: Vec<Vec<f32>>| v.concat().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a2), bits(a.to_vec2().unwrap()));
        assert_eq!(t["b"].to_vec1::<i64>().unwrap(), vec![-3, 1 << 40]);
        assert_eq!(t["c"].dtype(), DType::F64);
        assert_eq!(
            bytes.len() % 8,
            0,
            "header padded to 8 bytes; data here is 8-byte sized"
        );
    }

    #[test]
    fn truncated_file_is_an_error_saying_so() {
        let dev = Device::Cpu;
        let t = Tensor::zeros((4, 4), DType::F32, &dev).unwrap();
        let bytes = encode_safetensors(&[("t".into(), t)], &BTreeMap::new()).unwrap();
        let d = tmpdir("trunc");
        let p = d.join("x.safetensors");
        std::fs::write(&p, &bytes[..bytes.len() - 5]).unwrap();
        let err = read_safetensors(&p, &dev).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        std::fs::write(&p, &bytes[..3]).unwrap();
        let err = read_safetensors(&p, &dev).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let d = tmpdir("atomic");
        let p = d.join("f.bin");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new contents").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new contents");
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn stale_temp_files_are_removed() {
        let d = tmpdir("stale");
        std::fs::write(d.join(".checkpoint.safetensors.tmp-123"), b"half").unwrap();
        std::fs::write(d.join("metrics.jsonl"), b"{}").unwrap();
        remove_stale_temp_files(&d, &["checkpoint.safetensors"]);
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("metrics.jsonl")]);
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        let err = encode_safetensors(
            &[("x".into(), t.clone()), ("x".into(), t)],
            &BTreeMap::new(),
        );
        assert!(err.unwrap_err().to_string().contains("duplicate"));
    }
}
