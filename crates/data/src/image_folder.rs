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
use crate::fsutil::{self, sorted_entries};
use rayon::prelude::*;
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
fn image_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
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
            image_files(&path, depth + 1, out)?;
        } else if is_image(&path) {
            out.push(path);
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
    let listing = list(root, split)?;
    let decoded: Vec<Result<(ImageShape, Vec<u8>)>> =
        listing.files.par_iter().map(|p| decode(p)).collect();
    let mut images = Vec::with_capacity(decoded.len());
    for d in decoded {
        images.push(d?);
    }
    ImageDataset::from_images(images, listing.labels, listing.class_names)
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
    let root = root.as_ref();
    if !root.is_dir() {
        return Err(DataError::MissingFile {
            path: root.to_path_buf(),
            what: "image folder".into(),
        });
    }
    if matches!(split, Split::Unlabeled | Split::TrainUnlabeled) {
        return Err(split.missing_from(root, "an image folder"));
    }
    let (dir, class_names) = if has_split_dirs(root) {
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

    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, name) in class_names.iter().enumerate() {
        let class_dir = dir.join(name);
        if !class_dir.is_dir() {
            continue; // a class only the other split has
        }
        let before = files.len();
        image_files(&class_dir, 0, &mut files)?;
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
    let labeled = !class_names.is_empty();
    if !labeled {
        for (name, path, is_dir) in sorted_entries(&dir)? {
            if !is_dir && visible(&name) && is_image(&path) {
                files.push(path);
            }
        }
    }
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

/// Reads and decodes one image file (JPEG or PNG, by its contents) into 8-bit RGB, HWC.
pub fn decode(path: &Path) -> Result<(ImageShape, Vec<u8>)> {
    let bytes = fsutil::read(path)?;
    let img = image::load_from_memory(&bytes).map_err(|e| DataError::Decode {
        path: path.to_path_buf(),
        message: e.to_string(),
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
}
