//! Image folders: `root/<class>/**/*.{jpg,jpeg,png}` (one split), or
//! `root/{train,test}/<class>/…` (`val/` is taken as the test split when there
//! is no `test/`), images of any size.
//!
//! Like torchvision's `ImageFolder`: class names are the sorted folder names
//! and label `i` is the `i`-th; files are taken in sorted path order; every
//! image is converted to 8-bit RGB (grayscale repeated, alpha dropped, EXIF
//! orientation ignored). With `train/` and `test/`, the class list is the
//! union of both, so a label means the same class in either split. Hidden
//! files and folders (`.DS_Store`, `._x.jpg`) are skipped. Images placed
//! directly in the split folder form an unlabeled set when there are no class
//! folders, and are ignored beside class folders (as torchvision does).
//!
//! Decoding runs in parallel (rayon); a file that does not decode is an error
//! naming it, and the first such file in sorted order is the one reported, so
//! the message does not depend on thread timing.

use crate::dataset::{ImageDataset, ImageShape, Split};
use crate::error::{DataError, Result};
use crate::files::ImageFiles;
use crate::fsutil::{self, sorted_entries};
use crate::listing_cache;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// File extensions read (case-insensitive).
pub const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn visible(name: &str) -> bool {
    !name.starts_with('.')
}

fn split_dir(root: &Path, split: Split) -> Option<PathBuf> {
    let names: &[&str] = match split {
        Split::Train => &["train"],
        Split::Test => &["test", "val"],
        Split::Unlabeled | Split::TrainUnlabeled => &[],
    };
    names.iter().map(|n| root.join(n)).find(|p| p.is_dir())
}

fn has_split_dirs(root: &Path) -> bool {
    split_dir(root, Split::Train).is_some() || split_dir(root, Split::Test).is_some()
}

/// Whether some image file lies anywhere below `dir` (stops at the first).
fn contains_image(dir: &Path, depth: usize) -> bool {
    let Ok(entries) = sorted_entries(dir) else {
        return false;
    };
    entries.iter().any(|(name, path, is_dir)| {
        visible(name)
            && if *is_dir {
                depth > 0 && contains_image(path, depth - 1)
            } else {
                is_image(path)
            }
    })
}

/// True when `root` looks like an image folder in either layout.
pub(crate) fn looks_like(root: &Path) -> bool {
    let dirs: Vec<PathBuf> = if has_split_dirs(root) {
        [Split::Train, Split::Test]
            .iter()
            .filter_map(|&s| split_dir(root, s))
            .collect()
    } else {
        vec![root.to_path_buf()]
    };
    dirs.iter().any(|d| contains_image(d, 4))
}

fn class_dirs(dir: &Path) -> Result<Vec<String>> {
    Ok(sorted_entries(dir)?
        .into_iter()
        .filter(|(name, _, is_dir)| *is_dir && visible(name))
        .map(|(name, _, _)| name)
        .collect())
}

/// Folder nesting below a class folder that is read; deeper means a
/// symbolic-link loop far more often than a real layout.
const MAX_DEPTH: usize = 16;

/// Image files below `dir`, recursively, in sorted path order.
fn image_files(
    dir: &Path,
    depth: usize,
    out: &mut Vec<PathBuf>,
    progress: &mut Progress<'_>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(DataError::malformed(
            dir,
            format!("folders nested more than {MAX_DEPTH} deep (a symbolic-link loop?)"),
        ));
    }
    for (name, path, is_dir) in sorted_entries(dir)? {
        if !visible(&name) {
            continue;
        }
        if is_dir {
            image_files(&path, depth + 1, out, progress)?;
        } else if is_image(&path) {
            out.push(path);
            progress.tick(out.len());
        }
    }
    Ok(())
}

/// Reads `split` of the image folder at `root`: [`list`], then every file decoded in parallel.
///
/// A folder without `train/`/`test/` subfolders is a single split: it is the
/// train split, and asking for the test split is an error (evaluating on the
/// training images would be silently wrong).
pub fn open(root: impl AsRef<Path>, split: Split) -> Result<ImageDataset> {
    ImageFiles::from_listing(list(root, split)?).decode_all()
}

/// The image files of one split of an image folder, in the order [`open`] reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub files: Vec<PathBuf>,
    /// The label of each file (its class folder's index in `class_names`); `None` for a
    /// folder of images without class folders.
    pub labels: Option<Vec<u32>>,
    pub class_names: Vec<String>,
}

/// Lists `split` of the image folder at `root` without decoding anything (for a loader that
/// decodes each batch as it needs it, where a whole set would not fit in memory).
pub fn list(root: impl AsRef<Path>, split: Split) -> Result<Listing> {
    list_with(root, split, &ListOptions::default())
}

/// What [`list_with`] does beyond the folder's layout.
#[derive(Clone, Default)]
pub struct ListOptions {
    /// Only these classes (a subset such as ImageNet-100, [`read_class_list`]): each must be
    /// a class folder of the dataset; labels index them in sorted order, as torchvision's
    /// `ImageFolder` does on a folder holding only them.
    pub classes: Option<Vec<String>>,
    /// The labels of a split whose images lie flat in its folder (ImageNet's `val/` as
    /// unpacked) when class folders name the classes elsewhere: a file of `name label` lines
    /// (label: a class name, or a class index in sorted order) or Kaggle's
    /// `LOC_val_solution.csv`. `None`: look for `LOC_val_solution.csv`, or the devkit's
    /// `ILSVRC2012_validation_ground_truth.txt` with its `meta.mat` (or the CLS-LOC devkit's
    /// `map_clsloc.txt`), in the dataset folder, the split folder and
    /// `ILSVRC2012_devkit_t12/data/`, or the devkit archive `ILSVRC2012_devkit_t12.tar.gz` in
    /// the dataset or split folder (where torchvision's `ImageNet` wants it).
    pub labels_file: Option<PathBuf>,
    /// Called with the number of files listed so far, every [`PROGRESS_EVERY`] files, and
    /// once at the end.
    pub progress: Option<std::sync::Arc<dyn Fn(usize) + Send + Sync>>,
    /// Keep listings of [`CACHE_MIN_FILES`] files or more in this folder, and use them while
    /// the folders listed are unchanged (the times of the dataset, split and class folders
    /// decide; a change deeper down needs the cache file removed).
    pub cache_dir: Option<PathBuf>,
}

/// The smallest listing [`ListOptions::cache_dir`] keeps: smaller trees list in well under a
/// second.
pub const CACHE_MIN_FILES: usize = 20_000;

impl std::fmt::Debug for ListOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListOptions")
            .field("classes", &self.classes.as_ref().map(Vec::len))
            .field("labels_file", &self.labels_file)
            .field("progress", &self.progress.is_some())
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

/// How often [`ListOptions::progress`] hears from a listing.
pub const PROGRESS_EVERY: usize = 10_000;

/// [`list`] with a class subset, a label file for a flat split, a progress callback and a
/// cache.
pub fn list_with(root: impl AsRef<Path>, split: Split, options: &ListOptions) -> Result<Listing> {
    let root = root.as_ref();
    let Some(cache_dir) = &options.cache_dir else {
        return walk(root, split, options);
    };
    let key = format!(
        "{}\t{split}\t{:?}\t{:?}",
        root.canonicalize()
            .unwrap_or_else(|_| root.to_path_buf())
            .display(),
        options.classes,
        options.labels_file
    );
    let path = listing_cache::cache_path(cache_dir, &key);
    if let Some(listing) = listing_cache::load(&path, &key) {
        if let Some(f) = &options.progress {
            f(listing.files.len());
        }
        return Ok(listing);
    }
    let listing = walk(root, split, options)?;
    if listing.files.len() >= CACHE_MIN_FILES {
        // A cache that cannot be written costs the next run a walk, nothing more.
        let _ = listing_cache::store(&path, &key, root, &listing);
    }
    Ok(listing)
}

fn walk(root: &Path, split: Split, options: &ListOptions) -> Result<Listing> {
    if !root.is_dir() {
        return Err(DataError::MissingFile {
            path: root.to_path_buf(),
            what: "image folder".into(),
        });
    }
    if matches!(split, Split::Unlabeled | Split::TrainUnlabeled) {
        return Err(split.missing_from(root, "an image folder"));
    }
    let (dir, mut class_names) = if has_split_dirs(root) {
        let dir = split_dir(root, split).ok_or_else(|| DataError::NoSuchSplit {
            path: root.to_path_buf(),
            message: format!(
                "has train/test subfolders but no {} folder",
                match split {
                    Split::Test => "test/ (or val/)",
                    _ => "train/",
                }
            ),
        })?;
        let mut names = Vec::new();
        for s in [Split::Train, Split::Test] {
            if let Some(d) = split_dir(root, s) {
                names.extend(class_dirs(&d)?);
            }
        }
        names.sort();
        names.dedup();
        (dir, names)
    } else {
        if split == Split::Test {
            return Err(DataError::NoSuchSplit {
                path: root.to_path_buf(),
                message: "is a single-split image folder (class folders directly inside); \
                          for a test split, arrange it as train/<class>/… and test/<class>/…"
                    .into(),
            });
        }
        (root.to_path_buf(), class_dirs(root)?)
    };
    if let Some(subset) = &options.classes {
        class_names = choose_classes(root, subset, &class_names)?;
    }

    let mut progress = Progress::new(options.progress.as_deref());
    let mut files = Vec::new();
    let mut labels = Vec::new();
    let flat = !class_names.is_empty() && class_dirs(&dir)?.is_empty();
    if flat {
        let table = flat_labels(root, &dir, options.labels_file.as_deref())?;
        for (name, path, is_dir) in sorted_entries(&dir)? {
            if is_dir || !visible(&name) || !is_image(&path) {
                continue;
            }
            let stem = path
                .file_stem()
                .map_or(name.clone(), |s| s.to_string_lossy().into());
            let label = table.label_of(&stem, &class_names, options.classes.is_some())?;
            // A file of a class outside the subset belongs to no class read.
            if let Some(label) = label {
                files.push(path);
                labels.push(label);
                progress.tick(files.len());
            }
        }
    } else {
        for (label, name) in class_names.iter().enumerate() {
            let class_dir = dir.join(name);
            if !class_dir.is_dir() {
                continue; // a class only the other split has
            }
            let before = files.len();
            image_files(&class_dir, 0, &mut files, &mut progress)?;
            if files.len() == before {
                return Err(DataError::malformed(
                    &class_dir,
                    format!(
                        "class folder holds no images (read: .{})",
                        EXTENSIONS.join(", .")
                    ),
                ));
            }
            labels.resize(files.len(), label as u32);
        }
    }
    let labeled = !class_names.is_empty();
    if !labeled {
        for (name, path, is_dir) in sorted_entries(&dir)? {
            if !is_dir && visible(&name) && is_image(&path) {
                files.push(path);
                progress.tick(files.len());
            }
        }
    }
    progress.done(files.len());
    if files.is_empty() {
        return Err(DataError::malformed(
            &dir,
            format!(
                "no images found (expected <class>/*.{{{}}})",
                EXTENSIONS.join(",")
            ),
        ));
    }
    Ok(Listing {
        files,
        labels: labeled.then_some(labels),
        class_names,
    })
}

struct Progress<'a> {
    f: Option<&'a (dyn Fn(usize) + Send + Sync)>,
    next: usize,
}

impl<'a> Progress<'a> {
    fn new(f: Option<&'a (dyn Fn(usize) + Send + Sync)>) -> Self {
        Progress {
            f,
            next: PROGRESS_EVERY,
        }
    }

    fn tick(&mut self, n: usize) {
        if n >= self.next {
            if let Some(f) = self.f {
                f(n);
            }
            self.next += PROGRESS_EVERY;
        }
    }

    fn done(&self, n: usize) {
        if let Some(f) = self.f {
            f(n);
        }
    }
}

/// ImageNet-100's classes (Tian et al. 2019, "Contrastive Multiview Coding"; solo-learn's
/// `imagenet100_classes.txt`), as [`class_list`] reads them for `"imagenet100"`.
pub const IMAGENET100_CLASSES: &str = include_str!("imagenet100_classes.txt");

/// A class list by name (`"imagenet100"`) or from a file ([`read_class_list`]).
pub fn class_list(name_or_path: &str) -> Result<Vec<String>> {
    if name_or_path == "imagenet100" {
        return Ok(parse_class_list(IMAGENET100_CLASSES));
    }
    read_class_list(Path::new(name_or_path))
}

fn parse_class_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == ','))
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// Reads a class list: class names separated by white space or commas (solo-learn's
/// `imagenet100_classes.txt` is one line of 100 WordNet ids); `#` starts a comment.
pub fn read_class_list(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let names = parse_class_list(&text);
    if names.is_empty() {
        return Err(DataError::malformed(path, "the class list names no class"));
    }
    Ok(names)
}

fn choose_classes(root: &Path, subset: &[String], present: &[String]) -> Result<Vec<String>> {
    let mut chosen: Vec<String> = subset.to_vec();
    chosen.sort();
    chosen.dedup();
    let missing: Vec<&String> = chosen
        .iter()
        .filter(|c| present.binary_search(c).is_err())
        .collect();
    if let Some(first) = missing.first() {
        return Err(DataError::malformed(
            root,
            format!(
                "{} of the {} classes of the class list have no class folder here (the first: \
                 {first}); the folder's classes are {}",
                missing.len(),
                chosen.len(),
                preview(present)
            ),
        ));
    }
    if chosen.is_empty() {
        return Err(DataError::InvalidArgument("an empty class list".into()));
    }
    Ok(chosen)
}

fn preview(names: &[String]) -> String {
    match names.len() {
        0 => "none".into(),
        n if n <= 4 => names.join(", "),
        n => format!("{}, … ({n} in all)", names[..3].join(", ")),
    }
}

/// The labels of a flat split: file stem → class name or index.
struct FlatLabels {
    source: PathBuf,
    by_stem: std::collections::HashMap<String, String>,
}

impl FlatLabels {
    /// The label of the file with this stem; `None` for a class outside the subset read.
    fn label_of(&self, stem: &str, class_names: &[String], subset: bool) -> Result<Option<u32>> {
        let class = self.by_stem.get(stem).ok_or_else(|| {
            DataError::malformed(
                &self.source,
                format!("gives no label for {stem} (its split folder holds it)"),
            )
        })?;
        if let Ok(i) = class_names.binary_search(class) {
            return Ok(Some(i as u32));
        }
        Ok(match class.parse::<usize>() {
            Ok(i) if i < class_names.len() => Some(i as u32),
            Ok(i) => {
                return Err(DataError::malformed(
                    &self.source,
                    format!(
                        "label {i} of {stem} is out of range for {} classes",
                        class_names.len()
                    ),
                ))
            }
            Err(_) if subset => None,
            Err(_) => {
                return Err(DataError::malformed(
                    &self.source,
                    format!(
                        "labels {stem} `{class}`, which is not a class folder of the dataset \
                         ({})",
                        preview(class_names)
                    ),
                ))
            }
        })
    }
}

const KAGGLE_VAL: &str = "LOC_val_solution.csv";
const DEVKIT_TRUTH: &str = "ILSVRC2012_validation_ground_truth.txt";
const DEVKIT_MAP: &str = "map_clsloc.txt";
const DEVKIT_META: &str = "meta.mat";
const DEVKIT_ARCHIVE: &str = "ILSVRC2012_devkit_t12.tar.gz";

fn flat_labels(root: &Path, dir: &Path, explicit: Option<&Path>) -> Result<FlatLabels> {
    if let Some(path) = explicit {
        return read_label_file(path);
    }
    let places = [
        root.to_path_buf(),
        dir.to_path_buf(),
        root.join("ILSVRC2012_devkit_t12/data"),
    ];
    let find = |name: &str| places.iter().map(|p| p.join(name)).find(|p| p.is_file());
    if let Some(kaggle) = find(KAGGLE_VAL) {
        return read_label_file(&kaggle);
    }
    if let Some(truth) = find(DEVKIT_TRUTH) {
        let wnids = if let Some(map) = find(DEVKIT_MAP) {
            map_clsloc_wnids(&map)?
        } else if let Some(meta) = find(DEVKIT_META) {
            let bytes = std::fs::read(&meta).map_err(|e| DataError::io(&meta, e))?;
            meta_mat_wnids(&meta, &bytes)?
        } else {
            return Err(DataError::malformed(
                &truth,
                format!(
                    "gives ILSVRC2012 class ids, but neither the devkit's {DEVKIT_META} nor the \
                     CLS-LOC devkit's {DEVKIT_MAP} (\"n02119789 1 kit_fox\" lines) that name \
                     their WordNet ids is beside it: put one there, or sort {} into class \
                     folders",
                    dir.display()
                ),
            ));
        };
        return devkit_labels(&truth, &read_text(&truth)?, &wnids);
    }
    let archive = [root.join(DEVKIT_ARCHIVE), dir.join(DEVKIT_ARCHIVE)]
        .into_iter()
        .find(|p| p.is_file());
    if let Some(archive) = archive {
        return devkit_archive_labels(&archive);
    }
    Err(DataError::malformed(
        dir,
        format!(
            "holds images but no class folders, and no labels for them were found: sort them \
             into <class>/ folders (ImageNet's valprep.sh), or put Kaggle's {KAGGLE_VAL}, the \
             devkit ({DEVKIT_ARCHIVE}, or its {DEVKIT_TRUTH} with {DEVKIT_META} or \
             {DEVKIT_MAP}) in {}, or name a label file (`name label` lines)",
            root.display()
        ),
    ))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))
}

/// `name label` lines (white space or a comma between), or Kaggle's
/// `ImageId,PredictionString` CSV whose prediction starts with the WordNet id.
fn read_label_file(path: &Path) -> Result<FlatLabels> {
    let text = read_text(path)?;
    let mut by_stem = std::collections::HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (n == 0 && line.starts_with("ImageId,")) {
            continue;
        }
        let mut parts = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty());
        let (Some(name), Some(label)) = (parts.next(), parts.next()) else {
            return Err(DataError::malformed(
                path,
                format!("line {}: expected `name label`, found `{line}`", n + 1),
            ));
        };
        let stem = Path::new(name)
            .file_stem()
            .map_or(name.to_string(), |s| s.to_string_lossy().into_owned());
        by_stem.insert(stem, label.to_string());
    }
    Ok(FlatLabels {
        source: path.to_path_buf(),
        by_stem,
    })
}

/// The WordNet id of each ILSVRC2012 class id from `map_clsloc.txt` (`wnid id name` lines).
fn map_clsloc_wnids(map: &Path) -> Result<HashMap<u32, String>> {
    let mut wnid_of = HashMap::new();
    for (n, line) in read_text(map)?.lines().enumerate() {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next().map(str::parse::<u32>)) {
            (Some(wnid), Some(Ok(id))) => {
                wnid_of.insert(id, wnid.to_string());
            }
            (None, _) => {}
            _ => {
                return Err(DataError::malformed(
                    map,
                    format!("line {}: expected `wnid id name`, found `{line}`", n + 1),
                ))
            }
        }
    }
    Ok(wnid_of)
}

/// The WordNet id of each ILSVRC2012 class id from the devkit's `meta.mat`: its `synsets`
/// struct array's `ILSVRC2012_ID` and `WNID` fields (the 1,000 leaf classes and their
/// ancestors; torchvision's `parse_meta_mat` reads the same two).
fn meta_mat_wnids(path: &Path, bytes: &[u8]) -> Result<HashMap<u32, String>> {
    let bad = |m: String| DataError::malformed(path, m);
    let vars = crate::matfile::read(bytes).map_err(bad)?;
    let Some(crate::matfile::MatValue::Struct(synsets)) = vars.get("synsets") else {
        return Err(bad(
            "has no `synsets` struct array (the devkit's meta.mat has one)".into(),
        ));
    };
    let mut wnid_of = HashMap::new();
    for (i, s) in synsets.iter().enumerate() {
        let id = s.get("ILSVRC2012_ID").and_then(|v| v.first_number());
        let wnid = s.get("WNID").and_then(|v| v.as_str());
        match (id, wnid) {
            (Some(id), Some(wnid)) if id >= 1.0 && id.fract() == 0.0 => {
                wnid_of.insert(id as u32, wnid.to_string());
            }
            _ => {
                return Err(bad(format!(
                    "synsets({}) lacks a positive whole ILSVRC2012_ID or a WNID string",
                    i + 1
                )))
            }
        }
    }
    Ok(wnid_of)
}

/// The labels of the devkit archive (`ILSVRC2012_devkit_t12.tar.gz`, as torchvision's
/// `ImageNet` dataset keeps it): its ground truth and its `meta.mat`, read from the archive.
fn devkit_archive_labels(archive: &Path) -> Result<FlatLabels> {
    let file = std::fs::File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let (mut truth, mut meta) = (None, None);
    let entries = tar.entries().map_err(|e| DataError::io(archive, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| DataError::io(archive, e))?;
        let name = entry
            .path()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let slot = match name.as_deref() {
            Some(DEVKIT_TRUTH) => &mut truth,
            Some(DEVKIT_META) => &mut meta,
            _ => continue,
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes)
            .map_err(|e| DataError::io(archive, e))?;
        *slot = Some(bytes);
    }
    let (Some(truth), Some(meta)) = (truth, meta) else {
        return Err(DataError::malformed(
            archive,
            format!(
                "lacks data/{DEVKIT_TRUTH} or data/{DEVKIT_META} (is it the ILSVRC2012 devkit?)"
            ),
        ));
    };
    let wnids = meta_mat_wnids(&archive.join(DEVKIT_META), &meta)?;
    let truth = String::from_utf8(truth)
        .map_err(|_| DataError::malformed(archive, format!("its {DEVKIT_TRUTH} is not text")))?;
    devkit_labels(archive, &truth, &wnids)
}

/// The devkit's ground truth (line k: the ILSVRC2012 id of `ILSVRC2012_val_000k.JPEG`,
/// `truth` read from `source`) through `wnid_of` to WordNet ids.
fn devkit_labels(source: &Path, truth: &str, wnid_of: &HashMap<u32, String>) -> Result<FlatLabels> {
    let mut by_stem = HashMap::new();
    for (n, line) in truth.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let wnid = line
            .parse::<u32>()
            .ok()
            .and_then(|id| wnid_of.get(&id))
            .ok_or_else(|| {
                DataError::malformed(
                    source,
                    format!("line {}: `{line}` is not a class id of the devkit", n + 1),
                )
            })?;
        by_stem.insert(format!("ILSVRC2012_val_{:08}", n + 1), wnid.clone());
    }
    Ok(FlatLabels {
        source: source.to_path_buf(),
        by_stem,
    })
}

/// True for a file [`read_file_list`] reads: a `.txt` or `.csv`.
pub(crate) fn is_file_list(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("txt") || e.eq_ignore_ascii_case("csv"))
}

/// The images of a file list: one image path per line (relative paths from the list's folder),
/// optionally followed by its class after a comma, a tab or spaces (`train/cat/1.jpg,cat`); a
/// header line whose second field is `label` or `class` is skipped, `#` starts a comment. With
/// classes on every line, the class names are the distinct classes sorted and labels index
/// them (as class folders would); on no line, the set is unlabeled. A list is one split, the
/// train split.
pub fn read_file_list(path: &Path, split: Split) -> Result<Listing> {
    if split != Split::Train {
        return Err(DataError::NoSuchSplit {
            path: path.to_path_buf(),
            message: format!(
                "a file list is one split (train); for a {split} split, give a folder with \
                 train/ and test/ (or evaluate with another list)"
            ),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut entries: Vec<(PathBuf, Option<String>)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (file, class) = match line.find([',', '\t']) {
            Some(i) => (line[..i].trim(), Some(line[i + 1..].trim())),
            None => match line.rsplit_once(' ') {
                // A space is a separator only when what follows is not part of an image name.
                Some((f, c)) if is_image(Path::new(f.trim())) && !is_image(Path::new(c)) => {
                    (f.trim(), Some(c.trim()))
                }
                _ => (line, None),
            },
        };
        if n == 0 && matches!(class, Some("label" | "class")) {
            continue;
        }
        let class = class.filter(|c| !c.is_empty()).map(String::from);
        entries.push((base.join(file), class));
    }
    if entries.is_empty() {
        return Err(DataError::malformed(path, "the file list names no image"));
    }
    let labeled = entries.iter().filter(|(_, c)| c.is_some()).count();
    if labeled != 0 && labeled != entries.len() {
        let (first, _) = entries
            .iter()
            .find(|(_, c)| c.is_none())
            .expect("one unlabeled");
        return Err(DataError::malformed(
            path,
            format!(
                "{labeled} of its {} images have a class and {} does not: give every line a \
                 class or none",
                entries.len(),
                first.display()
            ),
        ));
    }
    if let Some((missing, _)) = entries.iter().find(|(f, _)| !f.is_file()) {
        return Err(DataError::MissingFile {
            path: missing.clone(),
            what: format!("an image listed in {}", path.display()),
        });
    }
    let mut class_names: Vec<String> = entries.iter().filter_map(|(_, c)| c.clone()).collect();
    class_names.sort();
    class_names.dedup();
    let labels = (labeled > 0).then(|| {
        entries
            .iter()
            .map(|(_, c)| {
                class_names
                    .binary_search(c.as_ref().expect("labeled"))
                    .expect("listed") as u32
            })
            .collect()
    });
    Ok(Listing {
        files: entries.into_iter().map(|(f, _)| f).collect(),
        labels,
        class_names,
    })
}

/// Reads and decodes one image file (JPEG or PNG, by its contents) into 8-bit RGB, HWC.
pub fn decode(path: &Path) -> Result<(ImageShape, Vec<u8>)> {
    let bytes = fsutil::read(path)?;
    let img = image::load_from_memory(&bytes).map_err(|e| DataError::Decode {
        path: path.to_path_buf(),
        message: e.to_string().trim().to_string(),
    })?;
    // No copy when the file is RGB already (every JPEG photo).
    let rgb = img.into_rgb8();
    let shape = ImageShape {
        height: rgb.height() as usize,
        width: rgb.width() as usize,
        channels: 3,
    };
    Ok((shape, rgb.into_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    /// A solid-colour RGB image saved as `path` (format from the extension).
    fn save_rgb(path: &Path, w: u32, h: u32, colour: [u8; 3]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_pixel(w, h, Rgb(colour)).save(path).unwrap();
    }

    #[test]
    fn classes_and_files_are_sorted_and_sizes_kept() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        save_rgb(&r.join("dog/b.png"), 3, 2, [0, 0, 200]);
        save_rgb(&r.join("dog/a.png"), 1, 1, [0, 200, 0]);
        save_rgb(&r.join("cat/z.PNG"), 4, 4, [200, 0, 0]);
        std::fs::write(r.join("dog/notes.txt"), "ignored").unwrap();
        let ds = open(r, Split::Train).unwrap();
        assert_eq!(ds.class_names(), &["cat".to_string(), "dog".to_string()]);
        assert_eq!(ds.labels(), Some(&[0u32, 1, 1][..]));
        assert_eq!(ds.image(0).pixels[..3], [200, 0, 0]);
        assert_eq!((ds.image(1).width, ds.image(1).height), (1, 1));
        assert_eq!(ds.image(1).pixels, &[0, 200, 0]);
        assert_eq!((ds.image(2).width, ds.image(2).height), (3, 2));
        assert_eq!(ds.uniform_shape(), None);
    }

    #[test]
    fn grayscale_png_is_expanded_to_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/g.png");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        GrayImage::from_pixel(2, 2, Luma([77])).save(&path).unwrap();
        let ds = open(dir.path(), Split::Train).unwrap();
        assert_eq!(ds.image(0).channels, 3);
        assert_eq!(ds.image(0).pixels, &[77; 12]);
    }

    #[test]
    fn jpeg_decodes_close_to_its_source() {
        let dir = tempfile::tempdir().unwrap();
        save_rgb(&dir.path().join("a/x.jpg"), 16, 16, [120, 60, 30]);
        let ds = open(dir.path(), Split::Train).unwrap();
        let px = &ds.image(0).pixels[..3];
        for (got, want) in px.iter().zip([120u8, 60, 30]) {
            assert!(got.abs_diff(want) <= 3, "{px:?}");
        }
    }

    #[test]
    fn split_layout_uses_union_of_class_names() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        save_rgb(&r.join("train/bird/0.png"), 2, 2, [1, 1, 1]);
        save_rgb(&r.join("train/cat/0.png"), 2, 2, [2, 2, 2]);
        save_rgb(&r.join("test/cat/0.png"), 2, 2, [3, 3, 3]);
        save_rgb(&r.join("test/ant/0.png"), 2, 2, [4, 4, 4]);
        let train = open(r, Split::Train).unwrap();
        let test = open(r, Split::Test).unwrap();
        let names = ["ant", "bird", "cat"].map(String::from);
        assert_eq!(train.class_names(), &names);
        assert_eq!(test.class_names(), &names);
        assert_eq!(train.labels(), Some(&[1u32, 2][..]));
        assert_eq!(test.labels(), Some(&[0u32, 2][..]));
        assert_eq!(test.image(1).pixels[0], 3);
        assert_eq!(train.uniform_shape().map(|s| s.width), Some(2));
    }

    #[test]
    fn val_folder_serves_as_test_split() {
        let dir = tempfile::tempdir().unwrap();
        save_rgb(&dir.path().join("train/a/0.png"), 1, 1, [1, 1, 1]);
        save_rgb(&dir.path().join("val/a/0.png"), 1, 1, [9, 9, 9]);
        let test = open(dir.path(), Split::Test).unwrap();
        assert_eq!(test.image(0).pixels, &[9, 9, 9]);
    }

    #[test]
    fn single_split_folder_has_no_test_split() {
        let dir = tempfile::tempdir().unwrap();
        save_rgb(&dir.path().join("a/0.png"), 1, 1, [1, 1, 1]);
        let err = open(dir.path(), Split::Test).unwrap_err();
        assert!(matches!(err, DataError::NoSuchSplit { .. }), "{err}");
    }

    #[test]
    fn corrupt_jpeg_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for i in 0..6 {
            save_rgb(&r.join(format!("a/{i}.jpg")), 8, 8, [10, 20, 30]);
        }
        // A real JPEG cut short after its headers.
        let good = std::fs::read(r.join("a/3.jpg")).unwrap();
        std::fs::write(r.join("a/3.jpg"), &good[..good.len() / 3]).unwrap();
        std::fs::write(r.join("a/5.jpg"), b"\xFF\xD8\xFF\xE0 garbage").unwrap();
        let err = open(r, Split::Train).unwrap_err();
        assert!(matches!(err, DataError::Decode { .. }), "{err}");
        // The first bad file in sorted order, whatever the thread timing.
        assert!(err.to_string().contains("3.jpg"), "{err}");
    }

    #[test]
    fn non_image_bytes_are_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        save_rgb(&dir.path().join("a/0.png"), 1, 1, [1, 1, 1]);
        std::fs::write(dir.path().join("a/1.png"), b"plain text").unwrap();
        let msg = open(dir.path(), Split::Train).unwrap_err().to_string();
        assert!(msg.contains("1.png: cannot decode image"), "{msg}");
    }

    #[test]
    fn empty_class_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        save_rgb(&dir.path().join("a/0.png"), 1, 1, [1, 1, 1]);
        std::fs::create_dir(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/0.webp"), b"").unwrap();
        let msg = open(dir.path(), Split::Train).unwrap_err().to_string();
        assert!(msg.contains("class folder holds no images"), "{msg}");
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loop_is_an_error_not_a_stack_overflow() {
        let dir = tempfile::tempdir().unwrap();
        save_rgb(&dir.path().join("a/0.png"), 1, 1, [1, 1, 1]);
        std::os::unix::fs::symlink("..", dir.path().join("a/loop")).unwrap();
        let msg = open(dir.path(), Split::Train).unwrap_err().to_string();
        assert!(msg.contains("symbolic-link loop"), "{msg}");
    }

    #[test]
    fn loose_images_form_an_unlabeled_set_and_hidden_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        save_rgb(&dir.path().join("1.png"), 1, 1, [1, 1, 1]);
        save_rgb(&dir.path().join("0.png"), 1, 1, [0, 0, 0]);
        std::fs::write(dir.path().join("._0.png"), b"AppleDouble").unwrap();
        let ds = open(dir.path(), Split::Train).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.labels(), None);
        assert!(ds.class_names().is_empty());
        assert_eq!(ds.image(1).pixels, &[1, 1, 1]);
    }

    /// ImageNet's layout: train/<wnid>/ and a flat val/ of ILSVRC2012_val_0000000k.JPEG.
    fn imagenet_like(r: &Path) {
        for (i, wnid) in ["n01", "n02", "n03"].iter().enumerate() {
            save_rgb(
                &r.join(format!("train/{wnid}/{wnid}_1.png")),
                1,
                1,
                [i as u8; 3],
            );
        }
        for k in 1..=4u8 {
            save_rgb(
                &r.join(format!("val/ILSVRC2012_val_{k:08}.png")),
                1,
                1,
                [k; 3],
            );
        }
    }

    #[test]
    fn flat_val_takes_its_labels_from_kaggles_solution_file() {
        let dir = tempfile::tempdir().unwrap();
        imagenet_like(dir.path());
        std::fs::write(
            dir.path().join("LOC_val_solution.csv"),
            "ImageId,PredictionString\nILSVRC2012_val_00000002,n03 1 2 3 4 n03 5 6 7 8\n\
             ILSVRC2012_val_00000001,n02 1 1 9 9\nILSVRC2012_val_00000004,n01 0 0 1 1\n\
             ILSVRC2012_val_00000003,n03 0 0 1 1\n",
        )
        .unwrap();
        let val = list(dir.path(), Split::Test).unwrap();
        assert_eq!(val.class_names, ["n01", "n02", "n03"]);
        assert_eq!(val.labels, Some(vec![1, 2, 2, 0]));
        assert!(val.files[0].ends_with("ILSVRC2012_val_00000001.png"));
    }

    /// [`imagenet_like`] with the extracted devkit's ground truth for its four validation
    /// images (ids 3, 1, 2, 1: devkit ids are not in WordNet order), returning the devkit's
    /// `data/` folder.
    fn devkit_with_ground_truth(root: &Path) -> PathBuf {
        imagenet_like(root);
        let data = root.join("ILSVRC2012_devkit_t12/data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            data.join("ILSVRC2012_validation_ground_truth.txt"),
            "3\n1\n2\n1\n",
        )
        .unwrap();
        data
    }

    #[test]
    fn flat_val_maps_the_devkits_class_ids_through_map_clsloc() {
        let dir = tempfile::tempdir().unwrap();
        let data = devkit_with_ground_truth(dir.path());
        let err = list(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("map_clsloc.txt"), "{err}");
        std::fs::write(data.join("map_clsloc.txt"), "n03 1 c\nn01 2 a\nn02 3 b\n").unwrap();
        let val = list(dir.path(), Split::Test).unwrap();
        assert_eq!(val.labels, Some(vec![1, 2, 0, 2]));
    }

    /// `meta.mat` fixtures made by scipy (tests/fixtures/make_devkit_meta.py): ids 1, 2, 3 are
    /// n03, n01, n02 and id 4 their parent.
    fn devkit_meta(compressed: bool) -> Vec<u8> {
        let name = if compressed {
            "devkit_meta.mat"
        } else {
            "devkit_meta_plain.mat"
        };
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn flat_val_maps_the_devkits_class_ids_through_its_meta_mat() {
        for compressed in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let data = devkit_with_ground_truth(dir.path());
            std::fs::write(data.join("meta.mat"), devkit_meta(compressed)).unwrap();
            let val = list(dir.path(), Split::Test).unwrap();
            assert_eq!(val.class_names, ["n01", "n02", "n03"]);
            assert_eq!(
                val.labels,
                Some(vec![1, 2, 0, 2]),
                "compressed: {compressed}"
            );
        }
    }

    #[test]
    fn flat_val_reads_the_devkit_archive_as_torchvision_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        imagenet_like(dir.path());
        let file = std::fs::File::create(dir.path().join("ILSVRC2012_devkit_t12.tar.gz")).unwrap();
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ));
        let mut add = |path: &str, bytes: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, path, bytes).unwrap();
        };
        add("ILSVRC2012_devkit_t12/COPYING", b"not read");
        add(
            "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt",
            b"2\n2\n3\n1\n",
        );
        add("ILSVRC2012_devkit_t12/data/meta.mat", &devkit_meta(true));
        tar.into_inner().unwrap().finish().unwrap();
        let val = list(dir.path(), Split::Test).unwrap();
        assert_eq!(val.labels, Some(vec![0, 0, 1, 2]));
    }

    #[test]
    fn a_meta_mat_without_synsets_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        imagenet_like(dir.path());
        std::fs::write(
            dir.path().join("ILSVRC2012_validation_ground_truth.txt"),
            "1\n",
        )
        .unwrap();
        let mut bytes = devkit_meta(false);
        // Rename the variable: `synsets` becomes `synsetz`.
        let at = bytes.windows(7).position(|w| w == b"synsets").unwrap();
        bytes[at + 6] = b'z';
        std::fs::write(dir.path().join("meta.mat"), bytes).unwrap();
        let err = list(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(err.contains("meta.mat") && err.contains("synsets"), "{err}");
    }

    #[test]
    fn flat_val_without_labels_is_an_error_saying_where_they_go() {
        let dir = tempfile::tempdir().unwrap();
        imagenet_like(dir.path());
        let err = list(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(
            err.contains("no class folders") && err.contains("LOC_val_solution.csv"),
            "{err}"
        );
        // The train split is unaffected.
        assert_eq!(list(dir.path(), Split::Train).unwrap().files.len(), 3);
    }

    #[test]
    fn a_label_file_of_names_and_indices_labels_a_flat_split() {
        let dir = tempfile::tempdir().unwrap();
        imagenet_like(dir.path());
        let file = dir.path().join("val.txt");
        std::fs::write(
            &file,
            "ILSVRC2012_val_00000001.JPEG 2\nILSVRC2012_val_00000002.JPEG n01\n\
             ILSVRC2012_val_00000003.JPEG 0\n",
        )
        .unwrap();
        let options = ListOptions {
            labels_file: Some(file.clone()),
            ..Default::default()
        };
        let err = list_with(dir.path(), Split::Test, &options)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no label for ILSVRC2012_val_00000004"),
            "{err}"
        );
        std::fs::write(
            &file,
            format!(
                "{}ILSVRC2012_val_00000004 n09\n",
                std::fs::read_to_string(&file).unwrap()
            ),
        )
        .unwrap();
        let err = list_with(dir.path(), Split::Test, &options)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`n09`, which is not a class folder"), "{err}");
    }

    #[test]
    fn a_class_list_keeps_only_its_classes_relabelled_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        imagenet_like(dir.path());
        let list_file = dir.path().join("classes.txt");
        std::fs::write(&list_file, "# subset\nn03 n02\n").unwrap();
        let options = ListOptions {
            classes: Some(read_class_list(&list_file).unwrap()),
            ..Default::default()
        };
        let train = list_with(dir.path(), Split::Train, &options).unwrap();
        assert_eq!(train.class_names, ["n02", "n03"]);
        assert_eq!(train.labels, Some(vec![0, 1]));
        let missing = ListOptions {
            classes: Some(vec!["n02".into(), "n77".into()]),
            ..Default::default()
        };
        let err = list_with(dir.path(), Split::Train, &missing)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 of the 2 classes") && err.contains("n77"),
            "{err}"
        );
    }

    #[test]
    fn listing_reports_progress_and_its_final_count() {
        let dir = tempfile::tempdir().unwrap();
        imagenet_like(dir.path());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&seen);
        let options = ListOptions {
            progress: Some(std::sync::Arc::new(move |n| sink.lock().unwrap().push(n))),
            ..Default::default()
        };
        list_with(dir.path(), Split::Train, &options).unwrap();
        assert_eq!(*seen.lock().unwrap(), [3]);
    }

    #[test]
    fn imagenet100_is_solo_learns_hundred_wordnet_ids() {
        let c = class_list("imagenet100").unwrap();
        assert_eq!(c.len(), 100);
        assert_eq!(c[..3], ["n02869837", "n01749939", "n02488291"]);
        assert!(c.iter().all(|w| w.len() == 9 && w.starts_with('n')));
        let mut sorted = c.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 100);
    }

    #[test]
    fn a_file_list_reads_paths_from_its_folder_with_classes_sorted() {
        let dir = tempfile::tempdir().unwrap();
        save_rgb(&dir.path().join("img/a.png"), 1, 1, [1, 1, 1]);
        save_rgb(&dir.path().join("img/b c.png"), 1, 1, [2, 2, 2]);
        let list = dir.path().join("list.csv");
        std::fs::write(
            &list,
            "path,label\nimg/b c.png,zebra\n# a comment\nimg/a.png,ant\n",
        )
        .unwrap();
        let l = read_file_list(&list, Split::Train).unwrap();
        assert_eq!(
            l.files,
            [dir.path().join("img/b c.png"), dir.path().join("img/a.png")]
        );
        assert_eq!(l.class_names, ["ant", "zebra"]);
        assert_eq!(l.labels, Some(vec![1, 0]));
        // Space-separated, and without classes.
        std::fs::write(&list, "img/a.png ant\nimg/b c.png zebra\n").unwrap();
        assert_eq!(
            read_file_list(&list, Split::Train).unwrap().labels,
            Some(vec![0, 1])
        );
        std::fs::write(&list, "img/b c.png\nimg/a.png\n").unwrap();
        let l = read_file_list(&list, Split::Train).unwrap();
        assert_eq!((l.labels, l.files.len()), (None, 2));
    }

    #[test]
    fn a_file_list_names_a_missing_image_and_half_labelled_lines() {
        let dir = tempfile::tempdir().unwrap();
        save_rgb(&dir.path().join("a.png"), 1, 1, [1, 1, 1]);
        let list = dir.path().join("list.txt");
        std::fs::write(&list, "a.png\tcat\ngone.png\tcat\n").unwrap();
        let err = read_file_list(&list, Split::Train).unwrap_err().to_string();
        assert!(
            err.contains("gone.png") && err.contains("an image listed in"),
            "{err}"
        );
        std::fs::write(&list, "a.png,cat\na.png\n").unwrap();
        let err = read_file_list(&list, Split::Train).unwrap_err().to_string();
        assert!(err.contains("give every line a class or none"), "{err}");
        assert!(matches!(
            read_file_list(&list, Split::Test),
            Err(DataError::NoSuchSplit { .. })
        ));
    }

    #[test]
    fn a_large_listing_is_cached_and_listed_again_when_a_class_folder_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("set");
        for c in 0..2 {
            let class = root.join(format!("c{c}"));
            std::fs::create_dir_all(&class).unwrap();
            // Listing reads names only: empty files will do.
            for i in 0..CACHE_MIN_FILES / 2 {
                std::fs::write(class.join(format!("{i:05}.jpg")), b"").unwrap();
            }
        }
        let options = ListOptions {
            cache_dir: Some(dir.path().join("cache")),
            ..Default::default()
        };
        let first = list_with(&root, Split::Train, &options).unwrap();
        assert_eq!(first.files.len(), CACHE_MIN_FILES);
        let cached: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .collect();
        assert_eq!(cached.len(), 1);
        assert_eq!(list_with(&root, Split::Train, &options).unwrap(), first);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(root.join("c1/zz.jpg"), b"").unwrap();
        let again = list_with(&root, Split::Train, &options).unwrap();
        assert_eq!(again.files.len(), CACHE_MIN_FILES + 1);
        assert_eq!(again.labels.as_ref().unwrap().last(), Some(&1));
    }
}
