//! Crash-safe file writes: a file written here holds, at any instant of a crash or a kill,
//! either its old content or its new content, never part of the new one.
//!
//! The bytes go to a temporary file in the destination's folder (a rename is only atomic within
//! one filesystem), named `.{name}.tmp-{pid}` ([`temp_path`]) so that a writer killed mid-write
//! leaves a file that is hidden, cannot collide with another process's, and is recognised by its
//! `.tmp-` part (the trainer removes its own stale ones when it resumes). The temporary file is
//! synced before the rename, so the new name never points at unwritten blocks, and the folder is
//! synced after it, so the rename itself survives a power cut.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// Why [`write_atomic_with`] failed. The temporary file is gone either way and the destination
/// is untouched.
#[derive(Debug)]
pub enum WriteError<E> {
    /// The caller's writer failed.
    Write(E),
    /// Naming, syncing or renaming the temporary file failed.
    Io(io::Error),
}

/// Writes `bytes` to `path` atomically (see the module docs). The folder must exist.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |tmp| std::fs::write(tmp, bytes)).map_err(|e| match e {
        WriteError::Write(e) | WriteError::Io(e) => e,
    })
}

/// [`write_atomic`] for writers that want a path rather than bytes (safetensors serialisers
/// write to a file themselves, and holding a whole checkpoint in memory a second time is not
/// worth it): `write` creates and fills the file at the temporary path it is given, which is
/// then synced and renamed to `path`.
pub fn write_atomic_with<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), WriteError<E>> {
    let tmp = temp_path(path).map_err(WriteError::Io)?;
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(WriteError::Write(e));
    }
    let commit = || -> io::Result<()> {
        // Opened for writing: Windows syncs only through a handle with write access.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&tmp)?
            .sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = commit() {
        let _ = std::fs::remove_file(&tmp);
        return Err(WriteError::Io(e));
    }
    // Some filesystems (and Windows) refuse to open a folder for syncing; the file is already
    // complete under its name, which is not worth failing the write over.
    if let Ok(d) = std::fs::File::open(parent_dir(path)) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The temporary file [`write_atomic`] writes `path` through: `.{name}.tmp-{pid}` beside it.
pub fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file path", path.display()),
        )
    })?;
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp-{}", std::process::id()));
    Ok(parent_dir(path).join(tmp))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
