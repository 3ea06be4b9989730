//! Download on first use, as torchvision's `CIFAR10(root, download=True)` does: the datasets'
//! official archives, checked against their published MD5 before anything is unpacked.
//!
//! - [`fetch`] returns `root/<folder>` of a [`Dataset`]; a folder that is there is used as is,
//!   without the network (it can only have been put there whole, see below).
//! - The archive is first looked for as `root/<file>` (an earlier download, or one put there by
//!   hand), then downloaded to `root/<file>.part` and renamed to `root/<file>` once complete and
//!   checked. An interrupted download keeps its `.part` file and the next call resumes it with an
//!   HTTP `Range` request; a server that answers with the whole file instead restarts it.
//! - The archive is unpacked into a temporary folder in `root` and its folder renamed into place
//!   only when the whole archive unpacked, so a broken archive never leaves something that looks
//!   like a dataset. The archive is kept, as torchvision keeps it.
//! - Nothing touches the network unless [`FetchOptions::allow_network`] says so. The error of a
//!   refused or failed download, a wrong checksum or an archive that does not unpack names the
//!   URL, the published MD5 and where to put the files by hand ([`by_hand`]).
//! - [`Archive::mirrored`] fetches the same files from another server (a mirror, a test server).
//!
//! Without the network, the error says what to do by hand (this example runs offline):
//!
//! ```
//! use mocca_data::download::{fetch, Dataset, FetchOptions};
//! use mocca_data::DataError;
//!
//! let root = std::env::temp_dir().join("mocca-doc-no-network");
//! let mut offline = FetchOptions { allow_network: false, ..Default::default() };
//! let err = fetch(Dataset::Cifar10, &root, &mut offline).unwrap_err();
//! assert!(matches!(err, DataError::DownloadsOff { .. }));
//! let message = err.to_string();
//! assert!(message.contains("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"));
//! assert!(message.contains("c32a1d4ab5d03f1284b67883e8d87530"));
//! assert!(!root.exists()); // nothing was written
//! ```
//!
//! With it, into the per-user cache, with a progress callback:
//!
//! ```no_run
//! use mocca_data::download::{default_root, fetch, Dataset, FetchOptions};
//!
//! let root = default_root().expect("$XDG_CACHE_HOME or $HOME");
//! let mut opts = FetchOptions {
//!     progress: Some(Box::new(|done, total| eprint!("\r{done} of {total:?} bytes"))),
//!     ..Default::default()
//! };
//! let dir = fetch(Dataset::Cifar10, &root, &mut opts)?;
//! let train = mocca_data::open(&dir, mocca_data::Split::Train)?;
//! assert_eq!(train.len(), 50_000);
//! # Ok::<(), mocca_data::DataError>(())
//! ```

use crate::error::{DataError, Result};
use md5::{Digest, Md5};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The datasets this module fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// CIFAR-10, binary version (Krizhevsky 2009): `cifar-10-batches-bin/`, read by
    /// [`crate::cifar10`].
    Cifar10,
    /// CIFAR-100, binary version: `cifar-100-binary/`.
    Cifar100,
    /// STL-10, binary version (Coates, Lee and Ng 2011; 96x96, with 100,000 unlabeled
    /// images): `stl10_binary/`.
    Stl10,
}

/// A dataset's archive: where it is, its checksum, and the folder it unpacks to (a `.tar.gz`
/// with that folder at its top).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    /// The dataset's name, for messages.
    pub name: String,
    /// File name of the archive, as the server names it.
    pub file: String,
    /// Where it is downloaded from.
    pub url: String,
    /// Its MD5, lowercase hex (the published one for the official archives: torchvision's
    /// `tgz_md5`).
    pub md5: String,
    /// The folder it unpacks to.
    pub folder: String,
}

impl Archive {
    fn official(name: &str, file: &str, url: &str, md5: &str, folder: &str) -> Self {
        Self {
            name: name.into(),
            file: file.into(),
            url: url.into(),
            md5: md5.into(),
            folder: folder.into(),
        }
    }

    /// The same archive at `base` (`http://host:port/path`): its URL becomes
    /// `base/<file>`; the checksum and folder stay.
    pub fn mirrored(self, base: &str) -> Self {
        let url = format!("{}/{}", base.trim_end_matches('/'), self.file);
        Self { url, ..self }
    }
}

impl Dataset {
    /// Every dataset, in a fixed order.
    pub const ALL: [Dataset; 3] = [Dataset::Cifar10, Dataset::Cifar100, Dataset::Stl10];

    /// The folders of a data folder that hold it, in order of preference: its archive's
    /// folder, and for CIFAR-10 also `cifar-10-jpeg/` (an image-folder copy).
    pub fn folders(self) -> &'static [&'static str] {
        match self {
            Dataset::Cifar10 => &["cifar-10-batches-bin", "cifar-10-jpeg"],
            Dataset::Cifar100 => &["cifar-100-binary"],
            Dataset::Stl10 => &["stl10_binary"],
        }
    }

    /// The archive's size, rounded, for messages before a download.
    pub fn download_size(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "170 MB",
            Dataset::Cifar100 => "168 MB",
            Dataset::Stl10 => "2.6 GB",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "CIFAR-10",
            Dataset::Cifar100 => "CIFAR-100",
            Dataset::Stl10 => "STL-10",
        }
    }

    /// The official archive (URLs and MD5s as torchvision has them).
    pub fn archive(self) -> Archive {
        match self {
            Dataset::Cifar10 => Archive::official(
                self.name(),
                "cifar-10-binary.tar.gz",
                "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                "c32a1d4ab5d03f1284b67883e8d87530",
                "cifar-10-batches-bin",
            ),
            Dataset::Cifar100 => Archive::official(
                self.name(),
                "cifar-100-binary.tar.gz",
                "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
                "03b5dce01913d631647c71ecec9e9cb8",
                "cifar-100-binary",
            ),
            Dataset::Stl10 => Archive::official(
                self.name(),
                "stl10_binary.tar.gz",
                "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
                "91f7769df0f17e558f3565bffb0c7dfb",
                "stl10_binary",
            ),
        }
    }
}

/// Called with the bytes of the archive on disk so far and its size when the server says it:
/// once before the body (the resumed offset, or 0), then as bytes arrive.
pub type ProgressFn = dyn FnMut(u64, Option<u64>);

/// How [`fetch`] may get an archive.
pub struct FetchOptions {
    /// Whether the network may be used at all (a `--no-download` flag clears it). Without it
    /// only a folder or an archive already in the data folder is used.
    pub allow_network: bool,
    /// Called as bytes arrive (see [`ProgressFn`]).
    pub progress: Option<Box<ProgressFn>>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            allow_network: true,
            progress: None,
        }
    }
}

/// The per-user data folder: `$XDG_CACHE_HOME/mocca`, else `~/.cache/mocca`; `None` when
/// neither variable is usable.
pub fn default_root() -> Option<PathBuf> {
    cache_root(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

fn cache_root(xdg: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    // The XDG spec says relative values are to be ignored.
    let xdg = xdg.map(PathBuf::from).filter(|p| p.is_absolute());
    let home = || {
        home.filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".cache"))
    };
    xdg.or_else(home).map(|c| c.join("mocca"))
}

/// How to get `archive` into `root` without this module (said by every error here).
pub fn by_hand(archive: &Archive, root: &Path) -> String {
    format!(
        "to get {} by hand, download {} (MD5 {}) and either put it at {} (it is checked and \
         unpacked on the next run) or unpack it in {} yourself (giving {})",
        archive.name,
        archive.url,
        archive.md5,
        root.join(&archive.file).display(),
        root.display(),
        root.join(&archive.folder).display()
    )
}

/// `root/<folder>` of `dataset`: there already, or unpacked from its archive, which is
/// downloaded from the official URL first if it is not in `root`.
pub fn fetch(dataset: Dataset, root: &Path, opts: &mut FetchOptions) -> Result<PathBuf> {
    fetch_archive(&dataset.archive(), root, opts)
}

/// [`fetch`] for any archive (a mirror, another dataset).
pub fn fetch_archive(a: &Archive, root: &Path, opts: &mut FetchOptions) -> Result<PathBuf> {
    let target = root.join(&a.folder);
    if target.is_dir() {
        return Ok(target);
    }
    let archive = root.join(&a.file);
    if archive.is_file() {
        // A complete archive from an earlier run or put there by hand: checked like a new one,
        // and left alone if wrong (it is not ours to delete).
        check_md5(&archive, a, root, "remove it to download it again, or")?;
    } else {
        if !opts.allow_network {
            return Err(DataError::DownloadsOff {
                url: a.url.clone(),
                message: format!(
                    "{} is not in {} and downloads are off; {}",
                    a.name,
                    root.display(),
                    by_hand(a, root)
                ),
            });
        }
        // Created only now, so that a refused or impossible fetch writes nothing.
        std::fs::create_dir_all(root).map_err(|e| DataError::io(root, e))?;
        download(a, &archive, root, opts, true)?;
    }
    unpack(&archive, a, root)?;
    Ok(target)
}

fn part_path(archive: &Path) -> PathBuf {
    let mut name = archive.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    archive.with_file_name(name)
}

/// The first byte of a `Content-Range: bytes FIRST-LAST/TOTAL` header, and TOTAL if known.
fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let first = range.split_once('-')?.0.trim().parse().ok()?;
    Some((first, total.trim().parse().ok()))
}

/// Downloads `a` into `archive` through `archive.part`, resuming the part file when `resume`.
fn download(
    a: &Archive,
    archive: &Path,
    root: &Path,
    opts: &mut FetchOptions,
    resume: bool,
) -> Result<()> {
    let url = a.url.as_str();
    let part = part_path(archive);
    let have = match std::fs::metadata(&part) {
        Ok(m) if resume => m.len(),
        _ => 0,
    };
    let fail = |message: String| DataError::Download {
        url: url.to_string(),
        message: format!("{message}; {}", by_hand(a, root)),
    };
    let mut config = ureq::Agent::config_builder()
        // Statuses are answered here, with the URL and what to do by hand.
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        // A stalled connection is an error (and resumable) rather than a hang; a slow one is not.
        .timeout_per_read(Some(Duration::from_secs(60)));
    if is_loopback(url) {
        // A proxy ($HTTPS_PROXY...) cannot reach this machine's loopback: a local mirror is
        // always asked directly.
        config = config.proxy(None);
    }
    let agent: ureq::Agent = config.build().into();
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = request
        .call()
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    let status = response.status().as_u16();
    let (append, total) = match status {
        200 => (false, response.body().content_length()),
        206 => {
            let range = response
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .and_then(content_range);
            match range {
                Some((first, total)) if first == have => (
                    true,
                    total.or_else(|| response.body().content_length().map(|n| n + have)),
                ),
                // Bytes from elsewhere in the file cannot be appended: start again, once.
                _ if resume => {
                    drop(response);
                    return download(a, archive, root, opts, false);
                }
                _ => {
                    return Err(fail(
                        "the server answered HTTP 206 without the range asked for".into(),
                    ))
                }
            }
        }
        // The partial file already holds every byte: check it.
        416 if have > 0 => (true, Some(have)),
        other => {
            let reason = response
                .status()
                .canonical_reason()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            return Err(fail(format!("the server answered HTTP {other}{reason}")));
        }
    };
    // A 200 to a Range request (the server does not resume) restarts the part file.
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&part)
        .map_err(|e| DataError::io(&part, e))?;
    let mut done = if append { have } else { 0 };
    if let Some(p) = opts.progress.as_mut() {
        p(done, total);
    }
    let kept = |done: u64| {
        format!(
            "after {done} of {} bytes; the partial file {} is kept and the next run resumes it",
            total.map_or("?".into(), |t| t.to_string()),
            part.display()
        )
    };
    if status != 416 {
        let mut body = response.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = file.sync_all();
                    return Err(fail(format!("the connection broke ({e}) {}", kept(done))));
                }
            };
            file.write_all(&buf[..n])
                .map_err(|e| DataError::io(&part, e))?;
            done += n as u64;
            if let Some(p) = opts.progress.as_mut() {
                p(done, total);
            }
        }
    }
    file.sync_all().map_err(|e| DataError::io(&part, e))?;
    drop(file);
    if let Some(t) = total {
        if done != t {
            return Err(fail(format!("the body ended {}", kept(done))));
        }
    }
    if let Err(e) = check_md5(
        &part,
        a,
        root,
        "it was removed; run again to download it anew, or",
    ) {
        // A finished download with the wrong bytes cannot be resumed into the right ones.
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, archive).map_err(|e| DataError::io(archive, e))
}

/// Whether `url`'s host is this machine (`localhost`, `127.0.0.0/8`, `[::1]`).
fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_md5(path: &Path, a: &Archive, root: &Path, remedy: &str) -> Result<()> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual.eq_ignore_ascii_case(&a.md5) {
        return Ok(());
    }
    Err(DataError::ChecksumMismatch {
        path: path.to_path_buf(),
        url: a.url.clone(),
        expected: a.md5.clone(),
        actual,
        hint: format!("{remedy} {}", by_hand(a, root)),
    })
}

/// Unpacks `archive` (tar.gz) into `root/<folder>` through a temporary folder in `root`.
fn unpack(archive: &Path, a: &Archive, root: &Path) -> Result<()> {
    let folder = a.folder.as_str();
    // Hidden and named after this process, so that it is never taken for a dataset nor shared
    // with another run unpacking at the same time.
    let prefix = format!(".{folder}.unpacking-");
    remove_abandoned(root, &prefix);
    let tmp = root.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let target = root.join(folder);
    let result = (|| {
        std::fs::create_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        let file = File::open(archive).map_err(|e| DataError::io(archive, e))?;
        let gz = flate2::read::GzDecoder::new(BufReader::new(file));
        // tar's unpack refuses entries that would land outside `tmp`.
        tar::Archive::new(gz).unpack(&tmp).map_err(|e| {
            DataError::malformed(
                archive,
                format!(
                    "cannot unpack ({e}); nothing was put in place; {}",
                    by_hand(a, root)
                ),
            )
        })?;
        let inner = tmp.join(folder);
        if !inner.is_dir() {
            return Err(DataError::malformed(
                archive,
                format!(
                    "the archive holds no {folder}/ folder; nothing was put in place; {}",
                    by_hand(a, root)
                ),
            ));
        }
        match std::fs::rename(&inner, &target) {
            Ok(()) => Ok(()),
            // Another run put it in place meanwhile: theirs is as whole as ours.
            Err(_) if target.is_dir() => Ok(()),
            Err(e) => Err(DataError::io(&target, e)),
        }
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Removes the temporary folders `<prefix><pid>` of runs killed while unpacking (whose process
/// is gone), which would otherwise stay in the cache; where that cannot be told (no `/proc`),
/// they are left alone, as one may belong to a run still unpacking.
fn remove_abandoned(root: &Path, prefix: &str) {
    let proc = Path::new("/proc/self");
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    if !proc.exists() {
        return;
    }
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix(prefix));
        if let Some(pid) = pid.filter(|p| p.parse::<u32>().is_ok()) {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_the_official_ones() {
        let a = Dataset::Cifar10.archive();
        assert_eq!(a.md5, "c32a1d4ab5d03f1284b67883e8d87530");
        assert_eq!(
            a.url,
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
        );
        let c100 = Dataset::Cifar100.archive();
        assert_eq!(c100.md5, "03b5dce01913d631647c71ecec9e9cb8");
        assert!(c100.url.ends_with("/cifar-100-binary.tar.gz"));
        let stl = Dataset::Stl10.archive();
        assert_eq!(stl.md5, "91f7769df0f17e558f3565bffb0c7dfb");
        assert_eq!(
            stl.url,
            "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
        );
        assert_eq!(stl.folder, "stl10_binary");
    }

    #[test]
    fn a_mirror_keeps_the_file_name_and_checksum() {
        let m = Dataset::Stl10
            .archive()
            .mirrored("http://127.0.0.1:8000/data/");
        assert_eq!(m.url, "http://127.0.0.1:8000/data/stl10_binary.tar.gz");
        assert_eq!(m.md5, Dataset::Stl10.archive().md5);
    }

    #[test]
    fn the_cache_is_xdg_then_home() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            cache_root(os("/x/cache"), os("/home/u")),
            Some(PathBuf::from("/x/cache/mocca"))
        );
        // Unset, empty or relative XDG_CACHE_HOME: ~/.cache.
        for xdg in [None, os(""), os("rel/cache")] {
            assert_eq!(
                cache_root(xdg, os("/home/u")),
                Some(PathBuf::from("/home/u/.cache/mocca"))
            );
        }
        assert_eq!(cache_root(None, None), None);
    }

    #[test]
    fn only_this_machine_is_loopback() {
        for url in [
            "http://127.0.0.1:8000/x.tar.gz",
            "http://localhost/x",
            "http://[::1]:9/x",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            &Dataset::Cifar10.archive().url,
            "http://10.0.0.1/x",
            "not a url",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn content_range_headers_are_parsed() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range("items 1-2/3"), None);
    }

    #[test]
    fn without_the_network_the_error_says_how_to_get_the_data_by_hand() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("cache");
        let mut opts = FetchOptions {
            allow_network: false,
            ..Default::default()
        };
        let err = fetch(Dataset::Cifar10, &root, &mut opts).unwrap_err();
        assert!(matches!(err, DataError::DownloadsOff { .. }), "{err}");
        let msg = err.to_string();
        for said in [
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            "c32a1d4ab5d03f1284b67883e8d87530",
            "downloads are off",
            &format!(
                "put it at {}",
                root.join("cifar-10-binary.tar.gz").display()
            ),
            &format!("giving {}", root.join("cifar-10-batches-bin").display()),
        ] {
            assert!(msg.contains(said), "{said:?} not in {msg}");
        }
        // Nothing was written, not even the data folder.
        assert!(!root.exists());
    }
}
