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

/// The metadata key under which [`encode_safetensors_checked`] stores a
/// CRC-32 of each tensor's bytes (a JSON object, tensor name to 8 hex digits).
pub const CHECKSUMS_KEY: &str = "tensor_crc32";

/// Serialises tensors (any order; stored sorted by name) and string metadata.
pub fn encode_safetensors(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    encode(tensors, metadata, false)
}

/// [`encode_safetensors`] with a CRC-32 (IEEE, as zip and gzip use) of every
/// tensor's data in the metadata ([`CHECKSUMS_KEY`]), which
/// [`read_safetensors`] then checks: a flipped byte anywhere in the payload
/// is caught on load instead of training on. Any safetensors reader still
/// reads the file.
pub fn encode_safetensors_checked(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    encode(tensors, metadata, true)
}

fn encode(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
    checksums: bool,
) -> Result<Vec<u8>> {
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(bad(format!("duplicate tensor name `{}`", w[0].0)));
    }
    let mut entries = Vec::with_capacity(sorted.len());
    let mut crcs = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, t) in sorted {
        let bytes = raw_le_bytes(t).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        if checksums {
            crcs.insert(name.clone(), crc_hex(&bytes).into());
        }
        let start = data.len();
        data.extend_from_slice(&bytes);
        entries.push((
            name.clone(),
            serde_json::json!({
                "dtype": dtype_name(t.dtype())?,
                "shape": t.dims(),
                "data_offsets": [start, data.len()],
            }),
        ));
    }
    let mut md: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    if checksums {
        let crcs = serde_json::Value::Object(crcs).to_string();
        md.insert(CHECKSUMS_KEY.into(), serde_json::Value::String(crcs));
    }
    let mut header = serde_json::Map::new();
    if !md.is_empty() {
        header.insert("__metadata__".into(), serde_json::Value::Object(md));
    }
    header.extend(entries);
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

fn crc_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// A file's metadata and where each tensor's bytes lie (offsets into the
/// whole file).
struct Layout {
    metadata: BTreeMap<String, String>,
    tensors: BTreeMap<String, (usize, usize)>,
}

/// Why a file is not a usable safetensors file, in words a user can act on.
/// `bytes` holds at least the length prefix and header; `file_len` is the
/// whole file's size.
fn check_layout(bytes: &[u8], file_len: usize, path: &Path) -> Result<Layout> {
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
    let mut tensors = BTreeMap::new();
    for (k, v) in obj {
        if k == "__metadata__" {
            if let Some(m) = v.as_object() {
                for (mk, mv) in m {
                    metadata.insert(mk.clone(), mv.as_str().unwrap_or_default().to_string());
                }
            }
            continue;
        }
        let offset = |i: usize| v.get("data_offsets").and_then(|o| o.get(i)?.as_u64());
        let (Some(s), Some(e)) = (offset(0), offset(1)) else {
            return Err(bad(format!("{p}: corrupt safetensors header entry `{k}`")));
        };
        if s > e {
            return Err(bad(format!("{p}: corrupt safetensors header entry `{k}`")));
        }
        end = end.max(e as usize);
        tensors.insert(k.clone(), (8 + n + s as usize, 8 + n + e as usize));
    }
    let have = file_len - 8 - n;
    if have != end {
        return Err(bad(format!(
            "{p} is truncated or padded: the header describes {end} data bytes, the file has {have}"
        )));
    }
    Ok(Layout { metadata, tensors })
}

/// Checks every tensor against the CRC-32 in the metadata, when the file has
/// them ([`encode_safetensors_checked`]); files without are taken as they are.
fn check_checksums(bytes: &[u8], layout: &Layout, path: &Path) -> Result<()> {
    let Some(json) = layout.metadata.get(CHECKSUMS_KEY) else {
        return Ok(());
    };
    let p = path.display();
    let crcs: BTreeMap<String, String> = serde_json::from_str(json)
        .map_err(|e| bad(format!("{p}: corrupt `{CHECKSUMS_KEY}` metadata: {e}")))?;
    for (name, &(s, e)) in &layout.tensors {
        let Some(want) = crcs.get(name) else {
            return Err(bad(format!(
                "{p}: tensor `{name}` has no checksum in the metadata: the header is damaged"
            )));
        };
        let got = crc_hex(&bytes[s..e]);
        if &got != want {
            return Err(bad(format!(
                "{p} is damaged: tensor `{name}` does not match its checksum (CRC-32 {got}, \
                 stored {want})"
            )));
        }
    }
    if let Some(extra) = crcs.keys().find(|k| !layout.tensors.contains_key(*k)) {
        return Err(bad(format!(
            "{p}: the metadata has a checksum for `{extra}`, which the file lacks: the header is damaged"
        )));
    }
    Ok(())
}

/// Reads a safetensors file: its tensors onto `device`, and its metadata.
pub fn read_safetensors(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(io_err("cannot read", path))?;
    let layout = check_layout(&bytes, bytes.len(), path)?;
    check_checksums(&bytes, &layout, path)?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| bad(format!("cannot decode {}: {e}", path.display())))?;
    Ok((tensors, layout.metadata))
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
    Ok(check_layout(&bytes, file_len, path)?.metadata)
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
    fn a_flipped_payload_byte_of_a_checked_file_is_caught_naming_the_tensor() {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 64., &dev).unwrap();
        let b = Tensor::ones(16, DType::F64, &dev).unwrap();
        let bytes = encode_safetensors_checked(
            &[("a".into(), a), ("b".into(), b)],
            &BTreeMap::from([("step".to_string(), "3".to_string())]),
        )
        .unwrap();
        let d = tmpdir("crc");
        let p = d.join("x.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        let (_, md) = read_safetensors(&p, &dev).unwrap();
        assert_eq!(md["step"], "3");
        assert!(md.contains_key(CHECKSUMS_KEY));
        // One byte inside tensor `b` (the last 128 bytes of the file).
        let mut bad = bytes.clone();
        let at = bad.len() - 60;
        bad[at] ^= 0x10;
        std::fs::write(&p, &bad).unwrap();
        let err = read_safetensors(&p, &dev).unwrap_err().to_string();
        assert!(err.contains("is damaged: tensor `b`"), "{err}");
        // The header alone still reads: the damage is in the payload.
        assert_eq!(read_safetensors_metadata(&p).unwrap()["step"], "3");
    }

    #[test]
    fn a_file_without_checksums_still_reads() {
        let dev = Device::Cpu;
        let t = Tensor::ones(4, DType::F32, &dev).unwrap();
        let bytes = encode_safetensors(&[("t".into(), t)], &BTreeMap::new()).unwrap();
        let p = tmpdir("nocrc").join("x.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        assert!(read_safetensors(&p, &dev).is_ok());
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
