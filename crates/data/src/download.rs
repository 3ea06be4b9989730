//! Download on first use, as torchvision's `CIFAR10(root, download=True)` does: the datasets'
//! official archives, checked against their published MD5 before anything is unpacked.
//!
//! - An interrupted download resumes from its `<archive>.part` file with an HTTP `Range`
//!   request (a server that answers the whole file instead restarts it).
//! - The archive is unpacked into a temporary folder beside the destination and renamed into
//!   place only when complete, so a broken archive never leaves something that looks like a
//!   dataset; a folder that is there is therefore whole, and is used without a download.
//! - Nothing touches the network unless [`FetchOptions::allow_network`] says so; the error then
//!   names the URL, the checksum and where to put the files by hand.
//!
//! ```no_run
//! use mocca_data::download::{fetch, Dataset, FetchOptions};
//!
//! let root = mocca_data::download::default_root().expect("a home folder");
//! let dir = fetch(Dataset::Cifar10, &root, &mut FetchOptions::default())?;
//! let train = mocca_data::open(&dir, mocca_data::Split::Train)?;
//! assert_eq!(train.len(), 50_000);
//! # Ok::<(), mocca_data::DataError>(())
//! ```

use crate::error::{DataError, Result};
use md5::{Digest, Md5};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The datasets this module fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dataset {
    /// CIFAR-10, binary version (Krizhevsky 2009).
    Cifar10,
    /// CIFAR-100, binary version.
    Cifar100,
    /// STL-10, binary version (Coates, Lee and Ng 2011): 96x96, 100,000 unlabeled images.
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
}

impl Dataset {
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "CIFAR-10",
            Dataset::Cifar100 => "CIFAR-100",
            Dataset::Stl10 => "STL-10",
        }
    }

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

/// Bytes received so far and the archive's size when the server says it.
pub type ProgressFn = dyn FnMut(u64, Option<u64>);

/// How [`fetch`] may get an archive.
pub struct FetchOptions {
    /// Whether the network may be used at all (`--no-download` clears it).
    pub allow_network: bool,
    /// Called as bytes arrive.
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

/// The per-user data folder: `$XDG_CACHE_HOME/mocca`, else `~/.cache/mocca`.
pub fn default_root() -> Option<PathBuf> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("mocca"))
}

/// How to get `archive` into `root` without this module.
pub fn by_hand(archive: &Archive, root: &Path) -> String {
    format!(
        "to get {} by hand: download {} (MD5 {}) and unpack it in {} (giving {})",
        archive.name,
        archive.url,
        archive.md5,
        root.display(),
        root.join(&archive.folder).display()
    )
}

/// `root/<folder>` of `dataset`, downloaded from its official URL, checked and unpacked first
/// if it is not there.
pub fn fetch(dataset: Dataset, root: &Path, opts: &mut FetchOptions) -> Result<PathBuf> {
    fetch_archive(&dataset.archive(), root, opts)
}

/// [`fetch`] for any archive (a mirror, another dataset).
pub fn fetch_archive(a: &Archive, root: &Path, opts: &mut FetchOptions) -> Result<PathBuf> {
    let target = root.join(&a.folder);
    if target.is_dir() {
        return Ok(target);
    }
    std::fs::create_dir_all(root).map_err(|e| DataError::io(root, e))?;
    let archive = root.join(&a.file);
    if archive.is_file() {
        // A complete archive from an earlier run or put there by hand: checked like a new one.
        check_md5(&archive, a, root)?;
    } else {
        if !opts.allow_network {
            return Err(DataError::Download {
                url: a.url.clone(),
                message: format!(
                    "{} is not in {} and downloads are off (--no-download / \
                     MOCCA_NO_DOWNLOAD=1); {}",
                    a.name,
                    root.display(),
                    by_hand(a, root)
                ),
            });
        }
        download(a, &archive, root, opts)?;
    }
    unpack(&archive, root, &a.folder)?;
    Ok(target)
}

fn part_path(archive: &Path) -> PathBuf {
    let mut name = archive.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    archive.with_file_name(name)
}

fn download(a: &Archive, archive: &Path, root: &Path, opts: &mut FetchOptions) -> Result<()> {
    let url = a.url.as_str();
    let part = part_path(archive);
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let fail = |message: String| DataError::Download {
        url: url.to_string(),
        message: format!("{message}; {}", by_hand(a, root)),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into();
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
        206 => (true, response.body().content_length().map(|n| n + have)),
        // The partial file already holds every byte: check it.
        416 if have > 0 => (true, Some(have)),
        other => {
            return Err(fail(format!(
                "the server answered HTTP {other}{}",
                response
                    .status()
                    .canonical_reason()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )))
        }
    };
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&part)
        .map_err(|e| DataError::io(&part, e))?;
    let mut done = if append { have } else { 0 };
    if status != 416 {
        let mut body = response.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = file.sync_all();
                    return Err(fail(format!(
                        "the connection broke after {done} of {} bytes ({e}); the partial file \
                         {} is kept, and the next run resumes it",
                        total.map_or("?".into(), |t| t.to_string()),
                        part.display()
                    )));
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
            return Err(fail(format!(
                "the body ended after {done} of {t} bytes; the partial file {} is kept, and the \
                 next run resumes it",
                part.display()
            )));
        }
    }
    if let Err(e) = check_md5(&part, a, root) {
        // A finished download with the wrong bytes cannot be resumed into the right ones.
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, archive).map_err(|e| DataError::io(archive, e))
}

fn check_md5(path: &Path, a: &Archive, root: &Path) -> Result<()> {
    let mut f = BufReader::new(File::open(path).map_err(|e| DataError::io(path, e))?);
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
    if actual == a.md5 {
        return Ok(());
    }
    Err(DataError::ChecksumMismatch {
        path: path.to_path_buf(),
        url: a.url.clone(),
        expected: a.md5.clone(),
        actual,
        hint: by_hand(a, root),
    })
}

/// Unpacks `archive` (tar.gz) into `root/<folder>` through a temporary folder in `root`.
fn unpack(archive: &Path, root: &Path, folder: &str) -> Result<()> {
    let tmp = root.join(format!(".{folder}.unpacking-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| {
        std::fs::create_dir_all(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        let file = File::open(archive).map_err(|e| DataError::io(archive, e))?;
        let gz = flate2::read::GzDecoder::new(BufReader::new(file));
        // tar's unpack refuses entries that would land outside `tmp`.
        tar::Archive::new(gz)
            .unpack(&tmp)
            .map_err(|e| DataError::malformed(archive, format!("cannot unpack: {e}")))?;
        let inner = tmp.join(folder);
        if !inner.is_dir() {
            return Err(DataError::malformed(
                archive,
                format!("the archive holds no {folder}/ folder"),
            ));
        }
        let target = root.join(folder);
        std::fs::rename(&inner, &target).map_err(|e| DataError::io(&target, e))
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_the_official_ones() {
        let a = Dataset::Cifar10.archive();
        assert_eq!(a.md5, "c32a1d4ab5d03f1284b67883e8d87530");
        assert!(a.url.ends_with("/cifar-10-binary.tar.gz"));
        assert_eq!(Dataset::Stl10.archive().folder, "stl10_binary");
    }

    #[test]
    fn without_the_network_the_error_says_how_to_get_the_data_by_hand() {
        let t = tempfile::tempdir().unwrap();
        let mut opts = FetchOptions {
            allow_network: false,
            ..Default::default()
        };
        let msg = fetch(Dataset::Cifar10, t.path(), &mut opts)
            .unwrap_err()
            .to_string();
        for said in [
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            "c32a1d4ab5d03f1284b67883e8d87530",
            "downloads are off",
            "cifar-10-batches-bin",
        ] {
            assert!(msg.contains(said), "{msg}");
        }
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    }
}
