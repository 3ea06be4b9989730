//! Format detection (`open`) and finding the data in the usual places
//! (`locate`).

use crate::dataset::{ImageDataset, Split};
use crate::download::Dataset;
use crate::error::{DataError, Result};
use crate::files::ImageFiles;
use crate::images::{Images, OnBadFile};
use crate::{cifar10, cifar100, image_folder, mnist, stl10};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The on-disk formats `open` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `data_batch_{1..5}.bin` + `test_batch.bin` ([`cifar10`]).
    Cifar10Binary,
    /// `train.bin` + `test.bin` ([`cifar100`]).
    Cifar100Binary,
    /// `{train,test}_{X,y}.bin` + `unlabeled_X.bin` ([`stl10`]).
    Stl10Binary,
    /// `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` ([`mnist`]).
    MnistIdx,
    /// `<class>/*.{jpg,jpeg,png}`, optionally under `train/` and `test/`
    /// ([`image_folder`]).
    ImageFolder,
    /// A text or CSV file listing image files, one per line, each optionally followed by its
    /// class ([`image_folder::read_file_list`]): one split, decoded as batches need it.
    FileList,
}

/// Subfolders `open` looks into when the folder itself holds no dataset, in
/// order of preference (exact pixels before JPEG copies).
const KNOWN_SUBFOLDERS: [&str; 6] = [
    "cifar-10-batches-bin",
    "cifar-10-jpeg",
    "cifar-100-binary",
    "stl10_binary",
    "mnist",
    "MNIST/raw",
];

const LOOKED_FOR: &str = "CIFAR-10 binary batches (data_batch_1.bin … test_batch.bin), \
CIFAR-100 binary files (train.bin, test.bin), STL-10 binary files (train_X.bin, test_X.bin, \
unlabeled_X.bin), MNIST IDX files (train-images-idx3-ubyte[.gz], t10k-…), an image folder \
(<class>/*.jpg|jpeg|png, or train/<class>/… and test/<class>/…), \
or one of the subfolders cifar-10-batches-bin, cifar-10-jpeg, cifar-100-binary, stl10_binary, \
mnist, MNIST/raw";

/// The binary formats, recognised by their file names.
fn detect_binary(dir: &Path) -> Option<Format> {
    if cifar10::looks_like(dir) {
        Some(Format::Cifar10Binary)
    } else if cifar100::looks_like(dir) {
        Some(Format::Cifar100Binary)
    } else if stl10::looks_like(dir) {
        Some(Format::Stl10Binary)
    } else if mnist::looks_like(dir) {
        Some(Format::MnistIdx)
    } else {
        None
    }
}

fn detect_here(dir: &Path) -> Option<Format> {
    detect_binary(dir).or_else(|| image_folder::looks_like(dir).then_some(Format::ImageFolder))
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
    if path.is_file() && image_folder::is_file_list(path) {
        return Ok((Format::FileList, path.to_path_buf()));
    }
    if !path.is_dir() {
        return Err(DataError::malformed(
            path,
            "is a file; give the folder that holds the dataset (or a .txt / .csv list of \
             image files)",
        ));
    }
    // Files directly inside win over subfolders, so pointing at a batches
    // folder reads exactly it.
    if let Some(format) = detect_binary(path) {
        return Ok((format, path.to_path_buf()));
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
        Format::Cifar100Binary => cifar100::open(dir, split),
        Format::Stl10Binary => stl10::open(dir, split),
        Format::MnistIdx => mnist::open(dir, split),
        Format::ImageFolder => image_folder::open(dir, split),
        Format::FileList => {
            ImageFiles::from_listing(image_folder::read_file_list(&dir, split)?).decode_all()
        }
    }
}

/// Whether an image folder is decoded into memory when opened or file by file as batches
/// need it ([`open_images`]). The binary formats (CIFAR, STL-10, MNIST) are always read into
/// memory: they are small, and their fast path is a copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Streaming {
    /// Stream when the decoded images would take more than [`OpenOptions::memory_budget`].
    #[default]
    Auto,
    Always,
    Never,
}

/// How [`open_images`] reads a dataset.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    pub streaming: Streaming,
    /// Bytes of decoded pixels an image folder may take in memory before [`Streaming::Auto`]
    /// streams it (estimated from the sizes in the headers of up to 64 files spread over the
    /// listing). Default 4 GiB: CIFAR-10 as JPEGs (0.2 GB) and STL-10 stay in memory,
    /// Imagenette (4 GB) and anything of ImageNet's size stream.
    pub memory_budget: u64,
    /// Class subset, flat-split labels, progress and the listing cache for image folders.
    pub list: image_folder::ListOptions,
    /// With [`OnBadFile::Skip`], a folder that [`Streaming::Auto`] would hold in memory but
    /// that has a file that does not decode is streamed instead, so that the file is skipped
    /// batch by batch as in any streamed set (and reported each time); with
    /// [`OnBadFile::Fail`] (or [`Streaming::Never`]) it is an error naming the file.
    pub on_bad_file: OnBadFile,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            streaming: Streaming::Auto,
            memory_budget: 4 << 30,
            list: image_folder::ListOptions::default(),
            on_bad_file: OnBadFile::Skip,
        }
    }
}

/// Reads `split` of the dataset at `path` as [`Images`]: the binary formats into memory, an
/// image folder into memory or as files decoded per batch, as `options` say.
pub fn open_images(path: impl AsRef<Path>, split: Split, options: &OpenOptions) -> Result<Images> {
    let (format, dir) = detect(path)?;
    let listing = match format {
        Format::ImageFolder => image_folder::list_with(&dir, split, &options.list)?,
        Format::FileList => image_folder::read_file_list(&dir, split)?,
        _ => return Ok(Images::Memory(open(dir, split)?)),
    };
    let stream = match options.streaming {
        Streaming::Always => true,
        Streaming::Never => false,
        Streaming::Auto => estimated_bytes(&listing.files) > options.memory_budget,
    };
    let files = ImageFiles::from_listing(listing);
    if stream {
        return Ok(Images::Files(files));
    }
    match files.decode_all() {
        Ok(d) => Ok(Images::Memory(d)),
        Err(DataError::Decode { .. })
            if options.streaming == Streaming::Auto && options.on_bad_file == OnBadFile::Skip =>
        {
            Ok(Images::Files(files))
        }
        Err(e) => Err(e),
    }
}

/// Decoded size of every file, from the headers of up to 64 of them spread over the listing.
pub fn estimated_bytes(files: &[PathBuf]) -> u64 {
    let n = files.len();
    if n == 0 {
        return 0;
    }
    let probes = n.min(64);
    let sizes: Vec<u64> = (0..probes)
        .filter_map(|k| image::image_dimensions(&files[k * n / probes]).ok())
        .map(|(w, h)| w as u64 * h as u64 * 3)
        .collect();
    if sizes.is_empty() {
        return 0;
    }
    let mean = sizes.iter().sum::<u64>() as f64 / sizes.len() as f64;
    (mean * n as f64) as u64
}

/// Finds a dataset folder for the trainer, without the network.
///
/// With `explicit` (a `--data` flag), that path must hold a dataset (any format [`open`]
/// reads): it is never silently replaced by another. Otherwise, in order: `$MOCCA_DATA`
/// (likewise binding when set), then `./data` and the per-user cache
/// ([`download::default_root`]), each searched for `dataset`'s folders
/// ([`Dataset::folders`]: `cifar-10-batches-bin/` then `cifar-10-jpeg/` for CIFAR-10,
/// `cifar-100-binary/`, `stl10_binary/`). The result goes to [`open`]. When nothing is found
/// the error ([`DataError::NotFound`]) lists every place looked at and how to get `dataset`
/// ([`download::fetch`] gets it into the cache).
///
/// [`download::default_root`]: crate::download::default_root
/// [`download::fetch`]: crate::download::fetch
pub fn locate(explicit: Option<&Path>, dataset: Dataset) -> Result<PathBuf> {
    let cwd = std::env::current_dir().map_err(|e| DataError::io(".", e))?;
    locate_in(
        explicit,
        std::env::var_os("MOCCA_DATA"),
        &cwd,
        crate::download::default_root().as_deref(),
        dataset,
    )
}

pub(crate) fn locate_in(
    explicit: Option<&Path>,
    env: Option<OsString>,
    cwd: &Path,
    cache: Option<&Path>,
    dataset: Dataset,
) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return detect(cwd.join(p)).map(|(_, dir)| dir);
    }
    let name = dataset.name();
    let mut report = format!("no {name} data found. Looked in:\n");
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
        for sub in dataset.folders() {
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
            let wanted: Vec<String> = dataset.folders().iter().map(|f| format!("{f}/")).collect();
            notes.push(format!("no {}", wanted.join(" or ")));
        }
        let _ = writeln!(report, "  {shown}: {}", notes.join("; "));
    }
    let cache_shown =
        cache.map_or_else(|| "a data folder".to_string(), |c| c.display().to_string());
    let _ = write!(
        report,
        "Get {name} in one of these ways:\n  \
         - without --no-download, `cargo xtask train` downloads it into {cache_shown}\n  \
         - {}\n  \
         - point --data or $MOCCA_DATA at a dataset folder.",
        crate::download::by_hand(&dataset.archive(), cache.unwrap_or(Path::new("data")))
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
            locate_in(None, None, &cwd, Some(&cache), Dataset::Cifar10).unwrap(),
            cache.join("cifar-10-jpeg")
        );
        cifar_dir(&cwd.join("data/cifar-10-batches-bin"));
        assert_eq!(
            locate_in(None, None, &cwd, Some(&cache), Dataset::Cifar10).unwrap(),
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
        assert_eq!(
            locate_in(None, env, cwd, None, Dataset::Cifar10).unwrap(),
            cwd.join("mine")
        );
        assert_eq!(
            locate_in(Some(Path::new("mine")), None, cwd, None, Dataset::Cifar10).unwrap(),
            cwd.join("mine")
        );
        let typo =
            locate_in(Some(Path::new("mnie")), None, cwd, None, Dataset::Cifar10).unwrap_err();
        assert!(typo.to_string().contains("mnie"), "{typo}");
        let env = Some(OsString::from("nowhere"));
        let msg = locate_in(None, env, cwd, None, Dataset::Cifar10)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("$MOCCA_DATA=nowhere"), "{msg}");
    }

    #[test]
    fn stl10_and_cifar100_are_found_by_their_release_folders() {
        let t = tempfile::tempdir().unwrap();
        let cwd = t.path();
        std::fs::create_dir_all(cwd.join("data/stl10_binary")).unwrap();
        std::fs::write(cwd.join("data/stl10_binary/test_X.bin"), b"").unwrap();
        std::fs::create_dir_all(cwd.join("data/cifar-100-binary")).unwrap();
        std::fs::write(cwd.join("data/cifar-100-binary/test.bin"), b"").unwrap();
        cifar_dir(&cwd.join("data/cifar-10-batches-bin"));
        for (dataset, folder, format) in [
            (Dataset::Stl10, "stl10_binary", Format::Stl10Binary),
            (
                Dataset::Cifar100,
                "cifar-100-binary",
                Format::Cifar100Binary,
            ),
        ] {
            let dir = locate_in(None, None, cwd, None, dataset).unwrap();
            assert_eq!(dir, cwd.join("data").join(folder));
            assert_eq!(detect(&dir).unwrap().0, format);
            assert_eq!(detect(cwd.join("data")).unwrap().0, Format::Cifar10Binary);
        }
    }

    #[test]
    fn a_missing_stl10_names_its_folder_and_archive() {
        let t = tempfile::tempdir().unwrap();
        let cwd = t.path();
        cifar_dir(&cwd.join("data/cifar-10-batches-bin"));
        let msg = locate_in(None, None, cwd, None, Dataset::Stl10)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("no STL-10 data found"), "{msg}");
        assert!(msg.contains("data: no stl10_binary/"), "{msg}");
        assert!(msg.contains("91f7769df0f17e558f3565bffb0c7dfb"), "{msg}");
    }

    #[test]
    fn nothing_found_lists_places_and_remedies() {
        let t = tempfile::tempdir().unwrap();
        let cwd = t.path().join("main");
        let cache = t.path().join("cache/mocca");
        std::fs::create_dir_all(cwd.join("data")).unwrap();
        let msg = locate_in(None, None, &cwd, Some(&cache), Dataset::Cifar10)
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

    #[test]
    fn an_image_folder_streams_when_its_pixels_exceed_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            png(&dir.path().join(format!("a/{i}.png")));
        }
        // 3 images of 2x2x3 bytes: 36 bytes decoded.
        let open_with = |streaming, memory_budget| {
            let o = OpenOptions {
                streaming,
                memory_budget,
                ..Default::default()
            };
            open_images(dir.path(), Split::Train, &o).unwrap()
        };
        assert!(open_with(Streaming::Auto, 35).is_streamed());
        assert!(!open_with(Streaming::Auto, 36).is_streamed());
        assert!(open_with(Streaming::Always, 1 << 40).is_streamed());
        assert!(!open_with(Streaming::Never, 0).is_streamed());
        assert_eq!(open_with(Streaming::Always, 0).len(), 3);
    }

    #[test]
    fn binary_formats_stay_in_memory_whatever_the_streaming_setting() {
        let dir = tempfile::tempdir().unwrap();
        let records = vec![0u8; cifar10::RECORD_BYTES * 10_000];
        std::fs::write(dir.path().join("test_batch.bin"), records).unwrap();
        let o = OpenOptions {
            streaming: Streaming::Always,
            ..Default::default()
        };
        let test = open_images(dir.path(), Split::Test, &o).unwrap();
        assert!(!test.is_streamed());
        assert_eq!(test.len(), 10_000);
    }

    #[test]
    fn a_folder_with_a_bad_file_is_streamed_so_that_batches_skip_it() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            png(&dir.path().join(format!("a/{i}.png")));
        }
        std::fs::write(dir.path().join("a/1.png"), b"\x89PNG cut").unwrap();
        let skip = open_images(dir.path(), Split::Train, &OpenOptions::default()).unwrap();
        assert!(skip.is_streamed());
        let fail = OpenOptions {
            on_bad_file: OnBadFile::Fail,
            ..Default::default()
        };
        let err = open_images(dir.path(), Split::Train, &fail).unwrap_err();
        assert!(err.to_string().contains("1.png: cannot decode"), "{err}");
    }
}
