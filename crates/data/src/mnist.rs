//! MNIST in its IDX files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`), plain or gzipped
//! (`….gz`, as distributed).
//!
//! An IDX file is a big-endian header — magic `0x00000803` (images) or
//! `0x00000801` (labels), the item count, and for images the row and column
//! counts — followed by one byte per pixel or label. Every header is checked
//! against the file's length (after decompression) and the two files of a
//! split must agree on the count. Images stay 1-channel; class names are the
//! digits `"0"`, `"1"`, … (Fashion-MNIST, in the same format, reads too).

use crate::dataset::{ImageDataset, ImageShape, Split};
use crate::error::{DataError, Result};
use crate::fsutil;
use std::io::Read;
use std::path::{Path, PathBuf};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// (images, labels) base file names of `split`; `None` for the unlabeled splits, which MNIST
/// does not have.
pub fn split_files(split: Split) -> Option<(&'static str, &'static str)> {
    match split {
        Split::Train => Some(("train-images-idx3-ubyte", "train-labels-idx1-ubyte")),
        Split::Test => Some(("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
        Split::Unlabeled | Split::TrainUnlabeled => None,
    }
}

/// The file for `base` in `dir`: plain if present, else `base.gz`.
fn find(dir: &Path, base: &str) -> PathBuf {
    let plain = dir.join(base);
    let gz = dir.join(format!("{base}.gz"));
    if !plain.exists() && gz.exists() {
        gz
    } else {
        plain
    }
}

pub(crate) fn looks_like(dir: &Path) -> bool {
    [Split::Train, Split::Test]
        .iter()
        .any(|&s| split_files(s).is_some_and(|(images, _)| find(dir, images).is_file()))
}

/// Reads `split` from a folder of MNIST IDX files: 60,000 (train) or 10,000
/// (test) 28×28 grayscale images with labels.
pub fn open(dir: impl AsRef<Path>, split: Split) -> Result<ImageDataset> {
    let dir = dir.as_ref();
    let (images_base, labels_base) =
        split_files(split).ok_or_else(|| split.missing_from(dir, "MNIST"))?;
    let images_path = find(dir, images_base);
    let labels_path = find(dir, labels_base);
    let what = |kind: &str, base: &str| format!("MNIST {split} {kind}: {base} or {base}.gz");
    fsutil::file_len(&images_path, &what("images", images_base))?;
    fsutil::file_len(&labels_path, &what("labels", labels_base))?;

    let images = load(&images_path)?;
    let (n, dims) = header(&images_path, &images, IMAGES_MAGIC, 2)?;
    let (rows, cols) = (dims[0], dims[1]);
    if rows == 0 || cols == 0 {
        return Err(DataError::malformed(
            &images_path,
            format!("header gives {rows}x{cols} images"),
        ));
    }
    let items = n.saturating_mul(rows).saturating_mul(cols);
    check_len(&images_path, &images, 16, items, "images")?;

    let labels = load(&labels_path)?;
    let (n_labels, _) = header(&labels_path, &labels, LABELS_MAGIC, 0)?;
    check_len(&labels_path, &labels, 8, n_labels, "labels")?;
    if n_labels != n {
        return Err(DataError::malformed(
            &labels_path,
            format!(
                "holds {n_labels} labels but {} holds {n} images",
                images_path.display()
            ),
        ));
    }
    let labels: Vec<u32> = labels[8..].iter().map(|&l| l as u32).collect();
    let classes = labels
        .iter()
        .max()
        .map_or(10, |&m| (m as usize + 1).max(10));
    let class_names = (0..classes).map(|c| c.to_string()).collect();
    let shape = ImageShape {
        height: rows as usize,
        width: cols as usize,
        channels: 1,
    };
    let mut pixels = images;
    pixels.drain(..16);
    ImageDataset::from_uniform(shape, pixels, Some(labels), class_names)
}

fn load(path: &Path) -> Result<Vec<u8>> {
    let raw = fsutil::read(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::malformed(path, format!("not a valid gzip file: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Checks the magic number; returns the item count and `n_dims` more sizes.
fn header(path: &Path, bytes: &[u8], magic: u32, n_dims: usize) -> Result<(u64, Vec<u64>)> {
    let header_len = 4 * (2 + n_dims);
    if bytes.len() < header_len {
        return Err(DataError::WrongSize {
            path: path.to_path_buf(),
            expected: header_len as u64,
            actual: bytes.len() as u64,
            what: "at least an IDX header".into(),
        });
    }
    let word = |i: usize| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    if word(0) != magic {
        return Err(DataError::malformed(
            path,
            format!(
                "magic number {:#010x}, expected {magic:#010x} (IDX {})",
                word(0),
                if magic == IMAGES_MAGIC {
                    "images"
                } else {
                    "labels"
                }
            ),
        ));
    }
    let dims = (0..n_dims).map(|d| word(2 + d) as u64).collect();
    Ok((word(1) as u64, dims))
}

fn check_len(path: &Path, bytes: &[u8], header: u64, items: u64, kind: &str) -> Result<()> {
    let expected = header.saturating_add(items);
    let actual = bytes.len() as u64;
    if actual != expected {
        let gz = if path.extension().is_some_and(|e| e == "gz") {
            ", decompressed"
        } else {
            ""
        };
        return Err(DataError::WrongSize {
            path: path.to_path_buf(),
            expected,
            actual,
            what: format!("IDX {kind}: {header}-byte header + {items} bytes{gz}"),
        });
    }
    Ok(())
}

/// Writes `dataset` (grayscale, one shape, labeled, labels < 256) as `split`'s
/// two uncompressed IDX files in `dir`, each through a temporary file.
pub fn write(dir: impl AsRef<Path>, split: Split, dataset: &ImageDataset) -> Result<()> {
    let dir = dir.as_ref();
    let shape = dataset
        .uniform_shape()
        .filter(|s| s.channels == 1)
        .ok_or_else(|| {
            DataError::InvalidArgument(
                "IDX files hold non-empty sets of same-sized grayscale images".into(),
            )
        })?;
    let labels = dataset
        .labels()
        .ok_or_else(|| DataError::InvalidArgument("MNIST files need labels".into()))?;
    if labels.iter().any(|&l| l > u8::MAX as u32) {
        return Err(DataError::InvalidArgument(
            "a label does not fit IDX's label byte".into(),
        ));
    }
    let n = dataset.len() as u32;
    let (images_base, labels_base) = split_files(split).ok_or_else(|| {
        DataError::InvalidArgument(format!("MNIST has no {split} split to write"))
    })?;
    let mut images = Vec::with_capacity(16 + dataset.len() * shape.len());
    for word in [IMAGES_MAGIC, n, shape.height as u32, shape.width as u32] {
        images.extend_from_slice(&word.to_be_bytes());
    }
    for i in 0..dataset.len() {
        images.extend_from_slice(dataset.image(i).pixels);
    }
    let mut label_bytes = Vec::with_capacity(8 + labels.len());
    label_bytes.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    label_bytes.extend_from_slice(&n.to_be_bytes());
    label_bytes.extend(labels.iter().map(|&l| l as u8));
    fsutil::write_atomic(&dir.join(images_base), &images)?;
    fsutil::write_atomic(&dir.join(labels_base), &label_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [IMAGES_MAGIC, n, rows, cols] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        b.extend((0..n * rows * cols).map(|i| (i % 251) as u8));
        b
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut b = LABELS_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        b.extend_from_slice(labels);
        b
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn reads_plain_idx_as_one_channel_images() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte"),
            idx_images(3, 2, 4),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("t10k-labels-idx1-ubyte"),
            idx_labels(&[7, 0, 9]),
        )
        .unwrap();
        let ds = open(dir.path(), Split::Test).unwrap();
        assert_eq!(ds.len(), 3);
        let shape = ds.uniform_shape().unwrap();
        assert_eq!((shape.height, shape.width, shape.channels), (2, 4, 1));
        assert_eq!(ds.image(1).pixels, &[8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(ds.labels(), Some(&[7u32, 0, 9][..]));
        assert_eq!(ds.class_names().len(), 10);
        assert_eq!(ds.class_names()[7], "7");
    }

    #[test]
    fn reads_gzipped_idx() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte.gz"),
            gzip(&idx_images(2, 3, 3)),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte.gz"),
            gzip(&idx_labels(&[1, 2])),
        )
        .unwrap();
        let ds = open(dir.path(), Split::Train).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.image(1).pixels[0], 9);
        assert_eq!(ds.label(1), Some(2));
    }

    #[test]
    fn wrong_magic_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        // Labels where images belong: magic 0x801 instead of 0x803.
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte"),
            idx_labels(&[1; 20]),
        )
        .unwrap();
        std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), idx_labels(&[1])).unwrap();
        let msg = open(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(msg.contains("t10k-images-idx3-ubyte"), "{msg}");
        assert!(
            msg.contains("magic number 0x00000801, expected 0x00000803"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_images_report_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let mut images = idx_images(3, 2, 2);
        images.pop();
        std::fs::write(dir.path().join("t10k-images-idx3-ubyte.gz"), gzip(&images)).unwrap();
        std::fs::write(
            dir.path().join("t10k-labels-idx1-ubyte"),
            idx_labels(&[0, 1, 2]),
        )
        .unwrap();
        let msg = open(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(msg.contains("t10k-images-idx3-ubyte.gz"), "{msg}");
        assert!(msg.contains("expected 28 bytes"), "{msg}");
        assert!(msg.contains("found 27 bytes"), "{msg}");
        assert!(msg.contains("decompressed"), "{msg}");
    }

    #[test]
    fn label_count_must_match_image_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte"),
            idx_images(3, 1, 1),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("t10k-labels-idx1-ubyte"),
            idx_labels(&[0, 1]),
        )
        .unwrap();
        let msg = open(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(msg.contains("holds 2 labels but"), "{msg}");
    }

    #[test]
    fn missing_labels_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte"),
            idx_images(1, 1, 1),
        )
        .unwrap();
        let err = open(dir.path(), Split::Train).unwrap_err();
        assert!(matches!(err, DataError::MissingFile { .. }));
        assert!(err.to_string().contains("train-labels-idx1-ubyte"), "{err}");
    }

    #[test]
    fn corrupt_gzip_is_malformed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte.gz"),
            b"not gzip at all",
        )
        .unwrap();
        std::fs::write(dir.path().join("t10k-labels-idx1-ubyte"), idx_labels(&[0])).unwrap();
        let msg = open(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(msg.contains("not a valid gzip file"), "{msg}");
    }

    #[test]
    fn write_then_open_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte"),
            idx_images(4, 3, 2),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("t10k-labels-idx1-ubyte"),
            idx_labels(&[3, 1, 4, 1]),
        )
        .unwrap();
        let ds = open(dir.path(), Split::Test).unwrap();
        let out = tempfile::tempdir().unwrap();
        write(out.path(), Split::Test, &ds).unwrap();
        for name in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
            assert_eq!(
                std::fs::read(out.path().join(name)).unwrap(),
                std::fs::read(dir.path().join(name)).unwrap()
            );
        }
    }
}
