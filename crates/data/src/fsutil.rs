//! File helpers shared by the readers and writers.

use crate::error::{DataError, Result};
use std::path::{Path, PathBuf};

/// Size of `path` in bytes, or `MissingFile` naming `what` the file should hold.
pub(crate) fn file_len(path: &Path, what: &str) -> Result<u64> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(m.len()),
        Ok(_) => Err(DataError::malformed(path, "is not a regular file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DataError::MissingFile {
            path: path.to_path_buf(),
            what: what.to_string(),
        }),
        Err(e) => Err(DataError::io(path, e)),
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| DataError::io(path, e))
}

/// Writes `bytes` to `path` atomically ([`mocca_core::fs::write_atomic`]), creating the folder
/// first: the readers cache converted files in folders that may not exist yet.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    mocca_core::fs::write_atomic(path, bytes).map_err(|e| DataError::io(path, e))
}

/// Sorted entries of a folder (by file name), as (name, path, is_dir).
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        // The entry's own type needs no extra system call on most file systems (a listing of
        // ImageNet would otherwise stat 1.28 M files); symbolic links are followed, as
        // unpacked datasets are often linked into place.
        let is_dir = match entry.file_type() {
            Ok(t) if !t.is_symlink() => t.is_dir(),
            _ => path.is_dir(),
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((name, path, is_dir));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
