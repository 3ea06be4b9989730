//! File helpers shared by the readers and writers.

use crate::error::{DataError, Result};
use std::io::Write;
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

/// Writes `bytes` to `path` through a temporary file in the same folder and a
/// rename, so a crash never leaves a half-written file under the final name.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp: PathBuf = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DataError::io(path, e)
    })
}

/// Sorted entries of a folder (by file name), as (name, path, is_dir).
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        // Follow symlinks: unpacked datasets are often linked into place.
        let is_dir = path.is_dir();
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((name, path, is_dir));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
