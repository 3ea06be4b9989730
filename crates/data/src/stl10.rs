//! STL-10 in its binary release layout (`stl10_binary`; Coates, Lee & Ng 2011).
//!
//! 96×96 RGB images in three files: `train_X.bin` (5,000 labeled), `test_X.bin` (8,000
//! labeled) and `unlabeled_X.bin` (100,000 without labels, for self-supervised training). Each
//! image is 27,648 bytes: three planes (R, G, B), each stored column by column (the transpose
//! of CIFAR's row order; torchvision's `STL10` transposes them back). Labels are one byte per
//! image in `train_y.bin` / `test_y.bin`, 1 to 10; they are read as 0 to 9, naming
//! `class_names.txt`'s lines (else the standard ten).
//!
//! [`Split::Unlabeled`] is the 100,000 unlabeled images, [`Split::TrainUnlabeled`] the 5,000
//! training images followed by them (torchvision's `split="train+unlabeled"`, what solo-learn
//! pretrains on); both come without labels. The unlabeled file is 2.76 GB: it is read in
//! chunks straight into the set's buffer, so reading it takes its size in memory, not twice.
//!
//! A file must be a whole number of images and a labels file must have one byte per image of
//! its split; the counts are not fixed, so a subset written with [`write`](fn@write) reads back (the
//! downloader checks the official archive's MD5).

use crate::cifar10::names_file;
use crate::dataset::{ImageDataset, ImageShape, Split};
use crate::error::{DataError, Result};
use crate::fsutil;
use rayon::prelude::*;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Image height and width.
pub const SIDE: usize = 96;
/// Bytes of one image: 3 planes of 96×96.
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
/// The standard class names, label 0 to 9 (the files' 1 to 10).
pub const CLASS_NAMES: [&str; 10] = [
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
];
const NAMES_FILE: &str = "class_names.txt";
/// Images read per chunk of a file (about 28 MB).
const CHUNK_IMAGES: usize = 1024;

const SHAPE: ImageShape = ImageShape {
    height: SIDE,
    width: SIDE,
    channels: 3,
};

/// The (images, labels) files of one part of the release.
#[derive(Clone, Copy)]
struct Part {
    images: &'static str,
    labels: Option<&'static str>,
}

const TRAIN: Part = Part {
    images: "train_X.bin",
    labels: Some("train_y.bin"),
};
const TEST: Part = Part {
    images: "test_X.bin",
    labels: Some("test_y.bin"),
};
const UNLABELED: Part = Part {
    images: "unlabeled_X.bin",
    labels: None,
};

fn parts(split: Split) -> &'static [Part] {
    match split {
        Split::Train => &[TRAIN],
        Split::Test => &[TEST],
        Split::Unlabeled => &[UNLABELED],
        Split::TrainUnlabeled => &[TRAIN, UNLABELED],
    }
}

/// True when `dir` holds one of the image files (used by `open`'s format detection).
pub(crate) fn looks_like(dir: &Path) -> bool {
    [TRAIN, TEST, UNLABELED]
        .iter()
        .any(|p| dir.join(p.images).is_file())
}

/// Reads `split` from an `stl10_binary` folder: labeled for `Train` and `Test`, unlabeled for
/// `Unlabeled` and `TrainUnlabeled`.
pub fn open(dir: impl AsRef<Path>, split: Split) -> Result<ImageDataset> {
    let dir = dir.as_ref();
    let parts = parts(split);
    // Every size is checked before anything is read.
    let mut counts = Vec::new();
    for part in parts {
        let path = dir.join(part.images);
        let what = format!("STL-10 images: whole {IMAGE_BYTES}-byte 96x96 RGB images");
        let len = fsutil::file_len(&path, &what)?;
        if len == 0 || len % IMAGE_BYTES as u64 != 0 {
            return Err(DataError::WrongSize {
                path,
                expected: (len / IMAGE_BYTES as u64).max(1) * IMAGE_BYTES as u64,
                actual: len,
                what,
            });
        }
        let n = (len / IMAGE_BYTES as u64) as usize;
        if let Some(labels) = part.labels.filter(|_| split_is_labeled(split)) {
            let path = dir.join(labels);
            let what = format!("STL-10 labels: one byte per image of {}", part.images);
            let len = fsutil::file_len(&path, &what)?;
            if len != n as u64 {
                return Err(DataError::WrongSize {
                    path,
                    expected: n as u64,
                    actual: len,
                    what,
                });
            }
        }
        counts.push(n);
    }
    let total: usize = counts.iter().sum();
    let mut pixels = vec![0u8; total * IMAGE_BYTES];
    let mut start = 0;
    for (part, &n) in parts.iter().zip(&counts) {
        let out = &mut pixels[start * IMAGE_BYTES..(start + n) * IMAGE_BYTES];
        read_images(&dir.join(part.images), out)?;
        start += n;
    }
    if !split_is_labeled(split) {
        return ImageDataset::from_uniform(SHAPE, pixels, None, Vec::new());
    }
    let names = names_file(&dir.join(NAMES_FILE))?
        .unwrap_or_else(|| CLASS_NAMES.iter().map(|s| s.to_string()).collect());
    let labels_path = dir.join(parts[0].labels.expect("labeled splits have labels"));
    let raw = fsutil::read(&labels_path)?;
    if let Some((i, &l)) = raw
        .iter()
        .enumerate()
        .find(|(_, &l)| l == 0 || l as usize > names.len())
    {
        return Err(DataError::malformed(
            &labels_path,
            format!(
                "image {i} has label {l}; STL-10 labels run from 1 to {}",
                names.len()
            ),
        ));
    }
    let labels = raw.iter().map(|&l| l as u32 - 1).collect();
    ImageDataset::from_uniform(SHAPE, pixels, Some(labels), names)
}

fn split_is_labeled(split: Split) -> bool {
    matches!(split, Split::Train | Split::Test)
}

/// Reads the file's images into `out` (HWC), `CHUNK_IMAGES` at a time.
fn read_images(path: &Path, out: &mut [u8]) -> Result<()> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut chunk = vec![0u8; CHUNK_IMAGES * IMAGE_BYTES];
    for hwc in out.chunks_mut(CHUNK_IMAGES * IMAGE_BYTES) {
        let raw = &mut chunk[..hwc.len()];
        file.read_exact(raw).map_err(|e| DataError::io(path, e))?;
        hwc.par_chunks_mut(IMAGE_BYTES)
            .zip(raw.par_chunks(IMAGE_BYTES))
            .for_each(|(dst, src)| columns_to_hwc(src, dst));
    }
    Ok(())
}

/// Pixel (y, x) of channel c is `planes[c * 96² + x * 96 + y]`.
fn columns_to_hwc(planes: &[u8], hwc: &mut [u8]) {
    for_each_byte(|p, q| hwc[p] = planes[q]);
}

/// Calls `f(p, q)` for every byte of an image: `p` its offset in HWC order, `q` in the release's
/// layout (one plane per channel, each stored column by column).
fn for_each_byte(mut f: impl FnMut(usize, usize)) {
    let plane = SIDE * SIDE;
    for y in 0..SIDE {
        for x in 0..SIDE {
            let p = (y * SIDE + x) * 3;
            let q = x * SIDE + y;
            for c in 0..3 {
                f(p + c, c * plane + q);
            }
        }
    }
}

/// Writes `dataset` (96×96 RGB) as `split`'s files in `dir`, in the release's layout: images
/// and labels for `Train` and `Test` (labeled, at most 255 classes; `class_names.txt` too), the
/// images alone for `Unlabeled`. Each file goes through a temporary name and a rename.
pub fn write(dir: impl AsRef<Path>, split: Split, dataset: &ImageDataset) -> Result<()> {
    let dir = dir.as_ref();
    if dataset.uniform_shape() != Some(SHAPE) {
        return Err(DataError::InvalidArgument(format!(
            "STL-10 files hold 96x96 RGB images; this set is {:?}",
            dataset.uniform_shape()
        )));
    }
    let part = match split {
        Split::Train => TRAIN,
        Split::Test => TEST,
        Split::Unlabeled => UNLABELED,
        Split::TrainUnlabeled => {
            return Err(DataError::InvalidArgument(
                "train+unlabeled is two files: write the train and unlabeled splits".into(),
            ))
        }
    };
    let mut bytes = vec![0u8; dataset.len() * IMAGE_BYTES];
    bytes
        .par_chunks_mut(IMAGE_BYTES)
        .enumerate()
        .for_each(|(i, planes)| hwc_to_columns(dataset.image(i).pixels, planes));
    let labels_file: Option<(PathBuf, Vec<u8>)> = match part.labels {
        Some(name) => {
            let labels = dataset.labels().ok_or_else(|| {
                DataError::InvalidArgument(format!(
                    "the STL-10 {split} split has labels; this set has none"
                ))
            })?;
            if let Some(&l) = labels.iter().find(|&&l| l >= u8::MAX as u32) {
                return Err(DataError::InvalidArgument(format!(
                    "label {l} does not fit STL-10's label byte (1 to 255)"
                )));
            }
            Some((
                dir.join(name),
                labels.iter().map(|&l| l as u8 + 1).collect(),
            ))
        }
        None => None,
    };
    fsutil::write_atomic(&dir.join(part.images), &bytes)?;
    if let Some((path, labels)) = labels_file {
        fsutil::write_atomic(&path, &labels)?;
        let mut names = dataset.class_names().join("\n");
        names.push('\n');
        fsutil::write_atomic(&dir.join(NAMES_FILE), names.as_bytes())?;
    }
    Ok(())
}

fn hwc_to_columns(hwc: &[u8], planes: &mut [u8]) {
    for_each_byte(|p, q| planes[q] = hwc[p]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Image `i` in the release layout: pixel (y, x) of channel c is `i + 3c + 5y + 7x`
    /// (mod 256), stored column by column.
    fn images(n: usize, first: usize) -> Vec<u8> {
        let mut out = vec![0u8; n * IMAGE_BYTES];
        for (k, img) in out.chunks_mut(IMAGE_BYTES).enumerate() {
            let i = first + k;
            for c in 0..3 {
                for x in 0..SIDE {
                    for y in 0..SIDE {
                        img[c * SIDE * SIDE + x * SIDE + y] = (i + 3 * c + 5 * y + 7 * x) as u8;
                    }
                }
            }
        }
        out
    }

    fn release(dir: &Path, train: usize, test: usize, unlabeled: usize) {
        std::fs::write(dir.join("train_X.bin"), images(train, 0)).unwrap();
        std::fs::write(
            dir.join("train_y.bin"),
            (0..train).map(|i| (i % 10 + 1) as u8).collect::<Vec<_>>(),
        )
        .unwrap();
        std::fs::write(dir.join("test_X.bin"), images(test, 100)).unwrap();
        std::fs::write(dir.join("test_y.bin"), vec![10u8; test]).unwrap();
        std::fs::write(dir.join("unlabeled_X.bin"), images(unlabeled, 200)).unwrap();
    }

    #[test]
    fn columns_are_read_into_rows_and_labels_from_one() {
        let t = tempfile::tempdir().unwrap();
        release(t.path(), 3, 2, 4);
        let ds = open(t.path(), Split::Train).unwrap();
        assert_eq!((ds.len(), ds.uniform_shape()), (3, Some(SHAPE)));
        assert_eq!(ds.labels(), Some(&[0u32, 1, 2][..]));
        assert_eq!(ds.class_names()[7], "monkey");
        // Image 2, pixel (y 1, x 2), channel c: 2 + 3c + 5 + 14.
        assert_eq!(&ds.image(2).pixels[(SIDE + 2) * 3..][..3], &[21, 24, 27]);
        let test = open(t.path(), Split::Test).unwrap();
        assert_eq!((test.len(), test.label(1)), (2, Some(9)));
    }

    #[test]
    fn train_unlabeled_is_the_training_images_then_the_unlabeled_without_labels() {
        let t = tempfile::tempdir().unwrap();
        release(t.path(), 3, 2, 4);
        let ds = open(t.path(), Split::TrainUnlabeled).unwrap();
        assert_eq!(ds.len(), 7);
        assert_eq!(ds.labels(), None);
        assert!(ds.class_names().is_empty());
        // Image 3 is unlabeled image 0 (i = 200): pixel (0, 0) channel 0.
        assert_eq!(ds.image(3).pixels[0], 200);
        assert_eq!(ds.image(2).pixels[0], 2);
        assert_eq!(open(t.path(), Split::Unlabeled).unwrap().len(), 4);
    }

    #[test]
    fn more_images_than_a_chunk_are_read_whole() {
        let t = tempfile::tempdir().unwrap();
        let n = CHUNK_IMAGES + 3;
        std::fs::write(t.path().join("unlabeled_X.bin"), images(n, 0)).unwrap();
        let ds = open(t.path(), Split::Unlabeled).unwrap();
        assert_eq!(ds.len(), n);
        assert_eq!(ds.image(n - 1).pixels[3 * 5], (n - 1 + 7 * 5) as u8);
    }

    #[test]
    fn write_then_open_gives_the_same_set() {
        let t = tempfile::tempdir().unwrap();
        release(t.path(), 3, 2, 4);
        let out = tempfile::tempdir().unwrap();
        for split in [Split::Train, Split::Test, Split::Unlabeled] {
            let ds = open(t.path(), split).unwrap();
            write(out.path(), split, &ds).unwrap();
            let again = open(out.path(), split).unwrap();
            assert_eq!(again.labels(), ds.labels(), "{split}");
            assert_eq!(again.image(1).pixels, ds.image(1).pixels, "{split}");
        }
        for f in ["train_X.bin", "train_y.bin", "unlabeled_X.bin"] {
            assert_eq!(
                std::fs::read(out.path().join(f)).unwrap(),
                std::fs::read(t.path().join(f)).unwrap(),
                "{f}"
            );
        }
    }

    #[test]
    fn a_partial_image_file_is_named_with_its_size() {
        let t = tempfile::tempdir().unwrap();
        release(t.path(), 3, 2, 4);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(t.path().join("unlabeled_X.bin"))
            .unwrap();
        f.set_len(4 * IMAGE_BYTES as u64 - 1).unwrap();
        let msg = open(t.path(), Split::TrainUnlabeled)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("unlabeled_X.bin"), "{msg}");
        assert!(msg.contains("found 110591 bytes"), "{msg}");
    }

    #[test]
    fn labels_must_match_the_images_and_run_from_one() {
        let t = tempfile::tempdir().unwrap();
        release(t.path(), 3, 2, 4);
        std::fs::write(t.path().join("train_y.bin"), [1u8, 2]).unwrap();
        let msg = open(t.path(), Split::Train).unwrap_err().to_string();
        assert!(msg.contains("train_y.bin: expected 3 bytes"), "{msg}");
        std::fs::write(t.path().join("test_y.bin"), [1u8, 0]).unwrap();
        let msg = open(t.path(), Split::Test).unwrap_err().to_string();
        assert!(msg.contains("image 1 has label 0"), "{msg}");
    }

    #[test]
    fn a_missing_unlabeled_file_is_named() {
        let t = tempfile::tempdir().unwrap();
        release(t.path(), 3, 2, 4);
        std::fs::remove_file(t.path().join("unlabeled_X.bin")).unwrap();
        let msg = open(t.path(), Split::TrainUnlabeled)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("unlabeled_X.bin: not found"), "{msg}");
    }
}
