//! One writer per run folder: [`RunLock`].
//!
//! Two trainers on one folder would interleave `metrics.jsonl` and leave
//! whichever checkpoint was written last. The lock is an advisory lock
//! (`flock` on Unix, `LockFileEx` on Windows) on `run.lock` in the folder,
//! held for the whole run; the file says who holds it (pid, host, start
//! time) so that a second trainer can name the holder. The operating system
//! drops the lock when its process dies, however it dies, so a lock left by
//! a killed trainer is simply taken over (and reported as such); the file is
//! never deleted, which keeps two processes from locking two different files
//! of the same name.

use crate::error::{io_err, Result, TrainError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The lock file's name in a run folder.
pub const LOCK_FILE: &str = "run.lock";

/// Who holds (or last held) a run folder's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: u32,
    pub host: String,
    /// Seconds since the Unix epoch when the holder took the lock.
    pub started_unix: u64,
}

impl LockHolder {
    fn me() -> Self {
        Self {
            pid: std::process::id(),
            host: host_name(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let mut pid = None;
        let mut host = None;
        let mut started = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("pid", v)) => pid = v.trim().parse().ok(),
                Some(("host", v)) => host = Some(v.trim().to_string()),
                Some(("started_unix", v)) => started = v.trim().parse().ok(),
                _ => {}
            }
        }
        Some(Self {
            pid: pid?,
            host: host?,
            started_unix: started?,
        })
    }

    fn to_text(&self) -> String {
        format!(
            "pid={}\nhost={}\nstarted_unix={}\nstarted={}\n",
            self.pid,
            self.host,
            self.started_unix,
            utc(self.started_unix)
        )
    }
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on host {}, started {}",
            self.pid,
            self.host,
            utc(self.started_unix)
        )
    }
}

/// The lock on a run folder, held until dropped.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    /// The previous holder whose lock was left behind by a process that no
    /// longer holds it (killed, crashed); `None` after a clean release.
    pub taken_over: Option<LockHolder>,
}

impl RunLock {
    /// Takes the lock of run folder `dir` (created if needed), or fails at
    /// once with [`TrainError::Locked`] naming the holder.
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_err("cannot create run folder", dir))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("cannot open the run lock", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(TrainError::Locked {
                    dir: dir.to_path_buf(),
                    holder: LockHolder::parse(&text)
                        .map_or_else(|| "another process".to_string(), |h| h.to_string()),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_err("cannot lock", &path)(e));
            }
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(io_err("cannot read the run lock", &path))?;
        let taken_over = LockHolder::parse(&text);
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(LockHolder::me().to_text().as_bytes())?;
            file.sync_all()
        };
        write(&mut file).map_err(io_err("cannot write the run lock", &path))?;
        Ok(Self {
            file,
            path,
            taken_over,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Emptied while still held: the next trainer finds no holder to
        // report. The lock itself goes with the handle.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// `YYYY-MM-DD HH:MM:SS UTC` of Unix seconds (Howard Hinnant's civil-from-days).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mocca-lock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn utc_dates_are_civil_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_796_601_600 + 3_723), "2026-12-07 01:02:03 UTC");
    }

    #[test]
    fn a_second_lock_on_the_same_folder_fails_naming_the_holder() {
        let dir = tmpdir("second");
        let first = RunLock::acquire(&dir).unwrap();
        assert_eq!(first.taken_over, None);
        let err = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains("started"),
            "{err}"
        );
        drop(first);
        let again = RunLock::acquire(&dir).unwrap();
        assert_eq!(again.taken_over, None, "a clean release leaves no holder");
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_is_taken_over_and_reported() {
        let dir = tmpdir("stale");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(LOCK_FILE),
            "pid=999999\nhost=elsewhere\nstarted_unix=1796601600\n",
        )
        .unwrap();
        let lock = RunLock::acquire(&dir).unwrap();
        let old = lock.taken_over.clone().unwrap();
        assert_eq!((old.pid, old.host.as_str()), (999_999, "elsewhere"));
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert!(
            text.contains(&format!("pid={}", std::process::id())),
            "{text}"
        );
    }
}
