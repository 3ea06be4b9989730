//! Format detection (`open`) and finding the data in the usual places
//! (`locate`).

use crate::dataset::{ImageDataset, Split};
use crate::error::{DataError, Result};
use crate::{cifar10, image_folder, mnist};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The on-disk formats `open` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `data_batch_{1..5}.bin` + `test_batch.bin` ([`cifar10`]).
    Cifar10Binary,
    /// `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` ([`mnist`]).
    MnistIdx,
    /// `<class>/*.{jpg,jpeg,png}`, optionally under `train/` and `test/`
    /// ([`image_folder`]).
    ImageFolder,
}

/// Subfolders `open` looks into when the folder itself holds no dataset, in
/// order of preference (exact pixels before JPEG copies).
const KNOWN_SUBFOLDERS: [&str; 4] = [
    "cifar-10-batches-bin",
    "cifar-10-jpeg",
    "mnist",
    "MNIST/raw",
];

const LOOKED_FOR: &str = "CIFAR-10 binary batches (data_batch_1.bin … test_batch.bin), \
MNIST IDX files (train-images-idx3-ubyte[.gz], t10k-…), an image folder \
(<class>/*.jpg|jpeg|png, or train/<class>/… and test/<class>/…), \
or one of the subfolders cifar-10-batches-bin, cifar-10-jpeg, mnist, MNIST/raw";

fn detect_here(dir: &Path) -> Option<Format> {
    if cifar10::looks_like(dir) {
        Some(Format::Cifar10Binary)
    } else if mnist::looks_like(dir) {
        Some(Format::MnistIdx)
    } else if image_folder::looks_like(dir) {
        Some(Format::ImageFolder)
    } else {
        None
    }
}

/// Which format `path` holds and the folder to read it from (`path` itself,
/// or a known subfolder such as `path/cifar-10-batches-bin`).
pub fn detect(path: impl AsRef<Path>) -> Result<(Format, PathBuf)> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(DataError::MissingFile {
            path: path.to_path_buf(),
            what: "dataset folder".into(),
        });
    }
    if !path.is_dir() {
        return Err(DataError::malformed(
            path,
            "is a file; give the folder that holds the dataset",
        ));
    }
    // Files directly inside win over subfolders, so pointing at a batches
    // folder reads exactly it.
    if cifar10::looks_like(path) {
        return Ok((Format::Cifar10Binary, path.to_path_buf()));
    }
    if mnist::looks_like(path) {
        return Ok((Format::MnistIdx, path.to_path_buf()));
    }
    for sub in KNOWN_SUBFOLDERS {
        let dir = path.join(sub);
        if dir.is_dir() {
            if let Some(format) = detect_here(&dir) {
                return Ok((format, dir));
            }
        }
    }
    if image_folder::looks_like(path) {
        return Ok((Format::ImageFolder, path.to_path_buf()));
    }
    Err(DataError::NotRecognised {
        path: path.to_path_buf(),
        looked_for: LOOKED_FOR.into(),
    })
}

/// Reads `split` of the dataset at `path`, whatever its format (see
/// [`detect`]).
pub fn open(path: impl AsRef<Path>, split: Split) -> Result<ImageDataset> {
    let (format, dir) = detect(path)?;
    match format {
        Format::Cifar10Binary => cifar10::open(dir, split),
        Format::MnistIdx => mnist::open(dir, split),
        Format::ImageFolder => image_folder::open(dir, split),
    }
}

/// Finds a dataset folder for the trainer, without the network.
///
/// With `explicit` (a `--data` flag), that path must hold a dataset: it is
/// never silently replaced by another. Otherwise, in order: `$MOCCA_DATA`
/// (likewise binding when set), then `./data` and the per-user cache
/// ([`download::default_root`]), each searched for `cifar-10-batches-bin/`
/// and then `cifar-10-jpeg/`. The result goes to [`open`]. When nothing is
/// found the error ([`DataError::NotFound`]) lists every place looked at and
/// how to get CIFAR-10 ([`download::fetch`] gets it into the cache).
///
/// [`download::default_root`]: crate::download::default_root
/// [`download::fetch`]: crate::download::fetch
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    let cwd = std::env::current_dir().map_err(|e| DataError::io(".", e))?;
    locate_in(
        explicit,
        std::env::var_os("MOCCA_DATA"),
        &cwd,
        crate::download::default_root().as_deref(),
    )
}

pub(crate) fn locate_in(
    explicit: Option<&Path>,
    env: Option<OsString>,
    cwd: &Path,
    cache: Option<&Path>,
) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return detect(cwd.join(p)).map(|(_, dir)| dir);
    }
    let mut report = String::from("no CIFAR-10 data found. Looked in:\n");
    match env.filter(|v| !v.is_empty()) {
        Some(v) => {
            let p = cwd.join(PathBuf::from(&v));
            return detect(&p).map(|(_, dir)| dir).map_err(|e| {
                DataError::NotFound(format!("$MOCCA_DATA={}: {e}", Path::new(&v).display()))
            });
        }
        None => report.push_str("  $MOCCA_DATA: not set\n"),
    }
    let mut bases = vec![cwd.join("data")];
    bases.extend(cache.map(Path::to_path_buf));
    for base in &bases {
        let shown = base.display();
        if !base.is_dir() {
            let _ = writeln!(report, "  {shown}: no such folder");
            continue;
        }
        let mut notes = Vec::new();
        for sub in ["cifar-10-batches-bin", "cifar-10-jpeg"] {
            let dir = base.join(sub);
            if !dir.is_dir() {
                continue;
            }
            match detect_here(&dir) {
                Some(_) => return Ok(dir),
                None => notes.push(format!("{sub}/ holds no dataset")),
            }
        }
        if notes.is_empty() {
            notes.push("no cifar-10-batches-bin/ or cifar-10-jpeg/".into());
        }
        let _ = writeln!(report, "  {shown}: {}", notes.join("; "));
    }
    let cache_shown =
        cache.map_or_else(|| "a data folder".to_string(), |c| c.display().to_string());
    let _ = write!(
        report,
        "Get CIFAR-10 in one of these ways:\n  \
         - without --no-download, `cargo xtask train` downloads it into {cache_shown}\n  \
         - {}\n  \
         - point --data or $MOCCA_DATA at a dataset folder.",
        crate::download::by_hand(
            &crate::download::Dataset::Cifar10.archive(),
            cache.unwrap_or(Path::new("data"))
        )
    );
    Err(DataError::NotFound(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cifar_dir(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("test_batch.bin"), vec![0u8; cifar10::RECORD_BYTES]).unwrap();
    }

    fn png(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::new(2, 2).save(path).unwrap();
    }

    #[test]
    fn detects_each_format_and_known_subfolders() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        cifar_dir(&r.join("a/cifar-10-batches-bin"));
        std::fs::create_dir_all(r.join("b")).unwrap();
        std::fs::write(r.join("b/t10k-images-idx3-ubyte.gz"), b"").unwrap();
        png(&r.join("c/train/cat/0.png"));
        png(&r.join("d/cifar-10-jpeg/test/cat/0.png"));
        assert_eq!(
            detect(r.join("a")).unwrap(),
            (Format::Cifar10Binary, r.join("a/cifar-10-batches-bin"))
        );
        assert_eq!(detect(r.join("b")).unwrap().0, Format::MnistIdx);
        assert_eq!(
            detect(r.join("c")).unwrap(),
            (Format::ImageFolder, r.join("c"))
        );
        assert_eq!(
            detect(r.join("d")).unwrap(),
            (Format::ImageFolder, r.join("d/cifar-10-jpeg"))
        );
    }

    #[test]
    fn binary_batches_are_preferred_over_jpeg_copies() {
        let t = tempfile::tempdir().unwrap();
        cifar_dir(&t.path().join("cifar-10-batches-bin"));
        png(&t.path().join("cifar-10-jpeg/train/cat/0.png"));
        assert_eq!(detect(t.path()).unwrap().0, Format::Cifar10Binary);
    }

    #[test]
    fn unrecognised_folder_says_what_was_looked_for() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("readme.txt"), "hi").unwrap();
        let msg = open(t.path(), Split::Train).unwrap_err().to_string();
        assert!(msg.contains("no dataset recognised"), "{msg}");
        assert!(msg.contains("data_batch_1.bin"), "{msg}");
        assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");
        assert!(msg.contains("<class>/*.jpg"), "{msg}");
    }

    #[test]
    fn open_dispatches_to_the_detected_reader() {
        let t = tempfile::tempdir().unwrap();
        png(&t.path().join("imgs/test/cat/0.png"));
        png(&t.path().join("imgs/train/cat/0.png"));
        let ds = open(t.path().join("imgs"), Split::Test).unwrap();
        assert_eq!((ds.len(), ds.image(0).width), (1, 2));
    }

    #[test]
    fn locate_prefers_data_then_the_cache() {
        let t = tempfile::tempdir().unwrap();
        let cwd = t.path().join("main");
        let cache = t.path().join("cache/mocca");
        png(&cache.join("cifar-10-jpeg/train/cat/0.png"));
        std::fs::create_dir_all(&cwd).unwrap();
        assert_eq!(
            locate_in(None, None, &cwd, Some(&cache)).unwrap(),
            cache.join("cifar-10-jpeg")
        );
        cifar_dir(&cwd.join("data/cifar-10-batches-bin"));
        assert_eq!(
            locate_in(None, None, &cwd, Some(&cache)).unwrap(),
            cwd.join("data/cifar-10-batches-bin")
        );
    }

    #[test]
    fn explicit_path_and_env_var_win_and_are_never_replaced() {
        let t = tempfile::tempdir().unwrap();
        let cwd = t.path();
        cifar_dir(&cwd.join("data/cifar-10-batches-bin"));
        cifar_dir(&cwd.join("mine"));
        let env = Some(OsString::from("mine"));
        assert_eq!(locate_in(None, env, cwd, None).unwrap(), cwd.join("mine"));
        assert_eq!(
            locate_in(Some(Path::new("mine")), None, cwd, None).unwrap(),
            cwd.join("mine")
        );
        let typo = locate_in(Some(Path::new("mnie")), None, cwd, None).unwrap_err();
        assert!(typo.to_string().contains("mnie"), "{typo}");
        let env = Some(OsString::from("nowhere"));
        let msg = locate_in(None, env, cwd, None).unwrap_err().to_string();
        assert!(msg.starts_with("$MOCCA_DATA=nowhere"), "{msg}");
    }

    #[test]
    fn nothing_found_lists_places_and_remedies() {
        let t = tempfile::tempdir().unwrap();
        let cwd = t.path().join("main");
        let cache = t.path().join("cache/mocca");
        std::fs::create_dir_all(cwd.join("data")).unwrap();
        let msg = locate_in(None, None, &cwd, Some(&cache))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("$MOCCA_DATA: not set"), "{msg}");
        assert!(
            msg.contains("data: no cifar-10-batches-bin/ or cifar-10-jpeg/"),
            "{msg}"
        );
        assert!(msg.contains("cache/mocca: no such folder"), "{msg}");
        assert!(msg.contains("without --no-download"), "{msg}");
        assert!(msg.contains("c32a1d4ab5d03f1284b67883e8d87530"), "{msg}");
        assert!(!msg.contains("shared"), "{msg}");
    }
}
