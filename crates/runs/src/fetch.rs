//! Where a run's data comes from: found in the usual places, else downloaded into the per-user
//! cache on first use (as torchvision's `download=True` does), with its progress on stderr.

use anyhow::{bail, Result};
use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mocca_data::download::{self, Dataset, FetchOptions, ProgressFn};
use mocca_recipes::config::TrainConfig;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Whether the network may be used: not with `--no-download` (`flag`), nor with
/// `MOCCA_NO_DOWNLOAD` set to anything but empty, `0` or `false`.
pub fn downloads_allowed(flag: bool) -> bool {
    !flag && !env_forbids(std::env::var_os("MOCCA_NO_DOWNLOAD").as_deref())
}

fn env_forbids(v: Option<&std::ffi::OsStr>) -> bool {
    v.and_then(|v| v.to_str())
        .is_some_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// The run's dataset folder: `data.path` (`--data`), `$MOCCA_DATA`, `./data` or the per-user
/// cache; when none holds the recipe's dataset (`data.dataset`, CIFAR-10 if not named), it is
/// fetched into the cache (downloaded unless `allow_network` is false; an archive already in
/// the cache is only checked and unpacked). An explicit folder that holds no dataset stays an
/// error: it is never filled nor replaced.
pub fn locate_data(cfg: &TrainConfig, allow_network: bool) -> Result<PathBuf> {
    let explicit = cfg.data.path.as_deref().map(Path::new);
    let env_set = std::env::var_os("MOCCA_DATA").is_some_and(|v| !v.is_empty());
    let dataset = cfg.data.dataset();
    let name = dataset.name();
    let report = match mocca_data::locate(explicit, dataset) {
        Err(mocca_data::DataError::NotFound(report)) if explicit.is_none() && !env_set => report,
        found => return Ok(found?),
    };
    let Some(root) = download::default_root() else {
        bail!("{report}\n(neither $XDG_CACHE_HOME nor $HOME is set, so there is no data cache)");
    };
    let archive = official_or_mirrored(dataset);
    let file = root.join(&archive.file);
    let part = root.join(format!("{}.part", archive.file));
    let target = root.join(&archive.folder);
    if target.is_dir() {
        // There, but not a dataset (the report says what is missing): not ours to replace.
        bail!(
            "{report}\n({} is not a whole dataset: remove it and run again to download {name} \
             anew)",
            target.display()
        );
    }
    if file.is_file() {
        eprintln!(
            "data: unpacking {} into {} (its MD5 is checked first)",
            file.display(),
            root.display()
        );
    } else if !allow_network {
        bail!("{report}\n(downloads are off: --no-download or MOCCA_NO_DOWNLOAD)");
    } else {
        let resumed = std::fs::metadata(&part).map_or(String::new(), |m| {
            format!(
                ", resuming the {} already in {}",
                HumanBytes(m.len()),
                part.display()
            )
        });
        eprintln!(
            "data: {name} is not in ./data or {root}: downloading it into {root} from {} \
             (about {}{resumed}; --data DIR or $MOCCA_DATA read another folder, \
             --no-download forbids downloads)",
            archive.url,
            dataset.download_size(),
            root = root.display(),
        );
    }
    let mut opts = FetchOptions {
        allow_network,
        progress: Some(progress()),
    };
    let dir = download::fetch_archive(&archive, &root, &mut opts)?;
    eprintln!(
        "data: {name} checked (MD5 {}) and unpacked in {}",
        archive.md5,
        dir.display()
    );
    Ok(dir)
}

/// The dataset's official archive, or the same file at `$MOCCA_DOWNLOAD_MIRROR` (a base URL: a
/// local copy of the datasets' server, or a test's).
fn official_or_mirrored(dataset: Dataset) -> download::Archive {
    let official = dataset.archive();
    match std::env::var("MOCCA_DOWNLOAD_MIRROR") {
        Ok(base) if !base.trim().is_empty() => official.mirrored(base.trim()),
        _ => official,
    }
}

/// Bytes, rate and ETA of a download on stderr: a bar on a terminal, otherwise (a log file, CI)
/// a plain line every 10 seconds and one at the end.
fn progress() -> Box<ProgressFn> {
    if std::io::stderr().is_terminal() {
        terminal_bar()
    } else {
        plain_lines(Duration::from_secs(10), |line| eprintln!("{line}"))
    }
}

/// The bar counts this run's bytes, so that the rate and ETA leave out a resumed part file's;
/// the sizes and the bar's fill shown are of the whole file.
fn terminal_bar() -> Box<ProgressFn> {
    // Made at the first call, which says where this run starts.
    let mut bar: Option<(ProgressBar, u64)> = None;
    Box::new(move |done, total| {
        let (bar, start) = bar.get_or_insert_with(|| (new_bar(done, total), done));
        bar.set_position(done.saturating_sub(*start));
        if total == Some(done) {
            bar.finish();
        }
    })
}

fn new_bar(start: u64, total: Option<u64>) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        total.map(|t| t.saturating_sub(start)),
        ProgressDrawTarget::stderr(),
    );
    let template = match total {
        Some(_) => "  {done} of {size} [{fill}] {bytes_per_sec}, ETA {eta}",
        None => "  {done} {bytes_per_sec}",
    };
    let style = ProgressStyle::with_template(template)
        .expect("a valid template")
        .with_key(
            "done",
            move |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", HumanBytes(start + s.pos()));
            },
        )
        .with_key(
            "size",
            move |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", HumanBytes(start + s.len().unwrap_or(0)));
            },
        )
        .with_key(
            "fill",
            move |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let (done, size) = (start + s.pos(), start + s.len().unwrap_or(0));
                let width = 30;
                let filled = (done.min(size) * width).checked_div(size).unwrap_or(0) as usize;
                let _ = write!(
                    w,
                    "{}{}",
                    "#".repeat(filled),
                    "-".repeat(width as usize - filled)
                );
            },
        );
    bar.set_style(style);
    bar
}

/// Progress as text lines, at most one per `every` (and the last), through `say`.
fn plain_lines(every: Duration, mut say: impl FnMut(String) + 'static) -> Box<ProgressFn> {
    let started = Instant::now();
    let mut first: Option<u64> = None;
    let mut last_said: Option<Instant> = None;
    Box::new(move |done, total| {
        let start = *first.get_or_insert(done);
        let now = Instant::now();
        let finished = total == Some(done);
        if !finished && last_said.is_some_and(|t| now.duration_since(t) < every) {
            return;
        }
        if last_said.is_none() && !finished {
            // The first call is the offset, before any byte of this run.
            last_said = Some(now);
            return;
        }
        last_said = Some(now);
        say(progress_line(
            done - start,
            done,
            total,
            now.duration_since(started),
        ));
    })
}

/// `data: 34.0 MiB of 162.2 MiB (21%), 2.3 MiB/s, ETA 57s` (`got`: this run's bytes).
fn progress_line(got: u64, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = got as f64 / secs;
    let mut line = format!("data: {}", HumanBytes(done));
    if let Some(t) = total {
        line += &format!(" of {} ({}%)", HumanBytes(t), done * 100 / t.max(1));
    }
    line += &format!(", {}/s", HumanBytes(rate as u64));
    if let Some(t) = total.filter(|&t| t > done && rate > 0.0) {
        let eta = Duration::from_secs_f64((t - done) as f64 / rate);
        line += &format!(", ETA {}", HumanDuration(eta));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::sync::{Arc, Mutex};

    #[test]
    fn the_env_var_forbids_downloads_unless_empty_zero_or_false() {
        for v in ["1", "true", "yes"] {
            assert!(env_forbids(Some(OsStr::new(v))), "{v}");
        }
        for v in ["", "0", "false"] {
            assert!(!env_forbids(Some(OsStr::new(v))), "{v}");
        }
        assert!(!env_forbids(None));
    }

    #[test]
    fn plain_progress_says_bytes_rate_and_eta_now_and_then() {
        let said = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&said);
        let mut p = plain_lines(Duration::from_secs(3600), move |l| {
            s.lock().unwrap().push(l)
        });
        let total = Some(200 << 20);
        // Resumed at 100 MiB: nothing said before a byte arrives, nor within the interval.
        p(100 << 20, total);
        p(150 << 20, total);
        p(160 << 20, total);
        assert!(said.lock().unwrap().is_empty());
        p(200 << 20, total);
        let said = said.lock().unwrap();
        assert_eq!(said.len(), 1);
        assert!(
            said[0].starts_with("data: 200.00 MiB of 200.00 MiB (100%), "),
            "{}",
            said[0]
        );
        assert!(said[0].ends_with("/s"), "{}", said[0]);
    }

    #[test]
    fn a_progress_line_has_an_eta_from_this_runs_rate() {
        // 10 MiB in 10 s after resuming at 50 of 100 MiB: 1 MiB/s, 40 s to go.
        let line = progress_line(10 << 20, 60 << 20, Some(100 << 20), Duration::from_secs(10));
        assert_eq!(
            line,
            "data: 60.00 MiB of 100.00 MiB (60%), 1.00 MiB/s, ETA 40 seconds"
        );
        let unknown = progress_line(1 << 20, 1 << 20, None, Duration::from_secs(1));
        assert_eq!(unknown, "data: 1.00 MiB, 1.00 MiB/s");
    }
}
