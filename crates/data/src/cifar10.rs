//! CIFAR-10 in its binary release layout (`cifar-10-batches-bin`).
//!
//! Each file holds 10,000 records of 3,073 bytes: one label byte, then the
//! 32×32 image as three planes (1,024 bytes R, then G, then B), rows top to
//! bottom. `data_batch_1.bin` … `data_batch_5.bin` are the 50,000 training
//! images, `test_batch.bin` the 10,000 test images. Class names come from
//! `batches.meta.txt` (one per line) when present, else the standard ten.
//!
//! [`open`] wants every file of the split, each exactly 30,730,000 bytes: a
//! partly copied or truncated download is an error naming the file, not a
//! silently smaller training set. To train on a subset on purpose, pass the
//! files you want to [`read_batches`], which takes any whole number of
//! records per file.

use crate::dataset::{ImageDataset, ImageShape, Split};
use crate::error::{DataError, Result};
use crate::fsutil;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Image height and width.
pub const SIDE: usize = 32;
/// Bytes of one record: the label byte and 3 planes of 32×32.
pub const RECORD_BYTES: usize = 1 + 3 * SIDE * SIDE;
/// Records in each file of the binary release.
pub const RECORDS_PER_FILE: usize = 10_000;
/// The standard class names, label 0 to 9.
pub const CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
/// Training files, in label-order-free release order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test file.
pub const TEST_FILES: [&str; 1] = ["test_batch.bin"];
const META_FILE: &str = "batches.meta.txt";

const SHAPE: ImageShape = ImageShape {
    height: SIDE,
    width: SIDE,
    channels: 3,
};

/// File names of `split` (none for the unlabeled splits, which CIFAR-10 does not have).
pub fn split_files(split: Split) -> &'static [&'static str] {
    match split {
        Split::Train => &TRAIN_FILES,
        Split::Test => &TEST_FILES,
        Split::Unlabeled | Split::TrainUnlabeled => &[],
    }
}

/// True when `dir` holds at least one CIFAR-10 batch file (used by `open`'s
/// format detection).
pub(crate) fn looks_like(dir: &Path) -> bool {
    TRAIN_FILES
        .iter()
        .chain(TEST_FILES.iter())
        .any(|f| dir.join(f).is_file())
}

/// Reads `split` from a `cifar-10-batches-bin` folder: 50,000 or 10,000 RGB
/// 32×32 images with labels.
pub fn open(dir: impl AsRef<Path>, split: Split) -> Result<ImageDataset> {
    open_with(dir.as_ref(), split, RECORDS_PER_FILE)
}

pub(crate) fn open_with(dir: &Path, split: Split, records_per_file: usize) -> Result<ImageDataset> {
    let expected = (records_per_file * RECORD_BYTES) as u64;
    let files: Vec<PathBuf> = split_files(split).iter().map(|f| dir.join(f)).collect();
    if files.is_empty() {
        return Err(split.missing_from(dir, "CIFAR-10"));
    }
    // Check every size before reading anything, so a bad fifth file is
    // reported at once rather than after reading 120 MB.
    for path in &files {
        let what =
            format!("CIFAR-10 {split} batch: {records_per_file} records of {RECORD_BYTES} bytes");
        let actual = fsutil::file_len(path, &what)?;
        if actual != expected {
            return Err(DataError::WrongSize {
                path: path.clone(),
                expected,
                actual,
                what,
            });
        }
    }
    read_files(&files, class_names_in(dir)?)
}

/// Reads any list of CIFAR-10 binary batch files (each a non-empty whole
/// number of records), in the order given: for training on a subset.
/// Class names come from `batches.meta.txt` beside the first file, if any.
pub fn read_batches<P: AsRef<Path>>(files: &[P]) -> Result<ImageDataset> {
    let files: Vec<PathBuf> = files.iter().map(|p| p.as_ref().to_path_buf()).collect();
    if files.is_empty() {
        return Err(DataError::InvalidArgument(
            "read_batches needs at least one CIFAR-10 batch file".into(),
        ));
    }
    for path in &files {
        let actual = fsutil::file_len(path, "CIFAR-10 batch")?;
        if actual == 0 || actual % RECORD_BYTES as u64 != 0 {
            let records = (actual / RECORD_BYTES as u64).max(1);
            return Err(DataError::WrongSize {
                path: path.clone(),
                expected: records * RECORD_BYTES as u64,
                actual,
                what: format!("a whole number of {RECORD_BYTES}-byte CIFAR-10 records"),
            });
        }
    }
    let names = match files.first().and_then(|f| f.parent()) {
        Some(dir) => class_names_in(dir)?,
        None => default_names(),
    };
    read_files(&files, names)
}

fn default_names() -> Vec<String> {
    CLASS_NAMES.iter().map(|s| s.to_string()).collect()
}

fn class_names_in(dir: &Path) -> Result<Vec<String>> {
    names_file(&dir.join(META_FILE))?.map_or_else(|| Ok(default_names()), Ok)
}

/// The class names listed in `meta`, one per line (blank lines skipped), or `None` when there
/// is no such file.
pub(crate) fn names_file(meta: &Path) -> Result<Option<Vec<String>>> {
    if !meta.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(meta).map_err(|e| DataError::io(meta, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.is_empty() {
        return Err(DataError::malformed(meta, "lists no class names"));
    }
    Ok(Some(names))
}

fn read_files(files: &[PathBuf], class_names: Vec<String>) -> Result<ImageDataset> {
    read_records(files, class_names, RecordLayout::CIFAR10)
}

/// Where a record's label and pixels lie: CIFAR-10's records are `[label, pixels]`,
/// CIFAR-100's `[coarse label, fine label, pixels]`; the pixels are the same 3 planes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordLayout {
    pub label_at: usize,
    pub pixels_at: usize,
}

impl RecordLayout {
    pub const CIFAR10: RecordLayout = RecordLayout {
        label_at: 0,
        pixels_at: 1,
    };

    pub fn bytes(self) -> usize {
        self.pixels_at + SHAPE.len()
    }
}

/// Reads whole files of `layout` records (sizes already checked), in order.
pub(crate) fn read_records(
    files: &[PathBuf],
    class_names: Vec<String>,
    layout: RecordLayout,
) -> Result<ImageDataset> {
    let (record, at) = (layout.bytes(), layout.label_at);
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for path in files {
        let raw = fsutil::read(path)?;
        let n = raw.len() / record;
        if let Some((i, rec)) = raw
            .chunks_exact(record)
            .enumerate()
            .find(|(_, r)| r[at] as usize >= class_names.len())
        {
            return Err(DataError::malformed(
                path,
                format!(
                    "record {i} has label {}, but there are {} classes",
                    rec[at],
                    class_names.len()
                ),
            ));
        }
        labels.extend(raw.chunks_exact(record).map(|r| r[at] as u32));
        let start = pixels.len();
        pixels.resize(start + n * SHAPE.len(), 0);
        pixels[start..]
            .par_chunks_mut(SHAPE.len())
            .zip(raw.par_chunks_exact(record))
            .for_each(|(hwc, rec)| planes_to_hwc(&rec[layout.pixels_at..], hwc));
    }
    ImageDataset::from_uniform(SHAPE, pixels, Some(labels), class_names)
}

fn planes_to_hwc(planes: &[u8], hwc: &mut [u8]) {
    let plane = SIDE * SIDE;
    for (p, px) in hwc.chunks_exact_mut(3).enumerate() {
        px[0] = planes[p];
        px[1] = planes[plane + p];
        px[2] = planes[2 * plane + p];
    }
}

/// Writes `dataset` (32×32 RGB, labeled, labels < 256) as `split`'s batch
/// files in `dir`, plus `batches.meta.txt` with its class names: 50,000
/// images for the train split, 10,000 for test. Each file is written to a
/// temporary name and renamed into place.
pub fn write(dir: impl AsRef<Path>, split: Split, dataset: &ImageDataset) -> Result<()> {
    write_with(dir.as_ref(), split, dataset, RECORDS_PER_FILE)
}

pub(crate) fn write_with(
    dir: &Path,
    split: Split,
    dataset: &ImageDataset,
    records_per_file: usize,
) -> Result<()> {
    if dataset.uniform_shape() != Some(SHAPE) {
        return Err(DataError::InvalidArgument(format!(
            "CIFAR-10 files hold 32x32 RGB images; this set is {:?}",
            dataset.uniform_shape()
        )));
    }
    let labels = dataset.labels().ok_or_else(|| {
        DataError::InvalidArgument("CIFAR-10 files need labels; this set has none".into())
    })?;
    if let Some(&l) = labels.iter().find(|&&l| l > u8::MAX as u32) {
        return Err(DataError::InvalidArgument(format!(
            "label {l} does not fit CIFAR-10's label byte"
        )));
    }
    let files = split_files(split);
    if files.is_empty() {
        return Err(split.missing_from(dir, "CIFAR-10"));
    }
    let want = files.len() * records_per_file;
    if dataset.len() != want {
        return Err(DataError::InvalidArgument(format!(
            "the CIFAR-10 {split} split has {want} images, this set has {}",
            dataset.len()
        )));
    }
    for (f, name) in files.iter().enumerate() {
        let mut bytes = vec![0u8; records_per_file * RECORD_BYTES];
        bytes
            .par_chunks_mut(RECORD_BYTES)
            .enumerate()
            .for_each(|(r, rec)| {
                let i = f * records_per_file + r;
                rec[0] = labels[i] as u8;
                let hwc = dataset.image(i).pixels;
                let plane = SIDE * SIDE;
                for (p, px) in hwc.chunks_exact(3).enumerate() {
                    rec[1 + p] = px[0];
                    rec[1 + plane + p] = px[1];
                    rec[1 + 2 * plane + p] = px[2];
                }
            });
        fsutil::write_atomic(&dir.join(name), &bytes)?;
    }
    let mut meta = dataset.class_names().join("\n");
    meta.push('\n');
    fsutil::write_atomic(&dir.join(META_FILE), meta.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record in the release layout: label, then R, G, B planes, where
    /// pixel (y, x) of channel c is `seed + c * 3 + y * 5 + x * 7` (mod 256).
    fn record(label: u8, seed: u8) -> Vec<u8> {
        let mut r = vec![label];
        for c in 0..3 {
            for y in 0..SIDE {
                for x in 0..SIDE {
                    r.push(seed.wrapping_add((c * 3 + y * 5 + x * 7) as u8));
                }
            }
        }
        r
    }

    fn write_file(path: &Path, records: &[(u8, u8)]) {
        let bytes: Vec<u8> = records.iter().flat_map(|&(l, s)| record(l, s)).collect();
        std::fs::write(path, bytes).unwrap();
    }

    fn three_record_split(dir: &Path, split: Split) {
        for (f, name) in split_files(split).iter().enumerate() {
            let f = f as u8;
            write_file(&dir.join(name), &[(f, 10 * f), (9, 1), (3, 2)]);
        }
    }

    #[test]
    fn reads_planes_into_hwc_pixels_with_labels() {
        let dir = tempfile::tempdir().unwrap();
        three_record_split(dir.path(), Split::Train);
        let ds = open_with(dir.path(), Split::Train, 3).unwrap();
        assert_eq!(ds.len(), 15);
        assert_eq!(ds.uniform_shape(), Some(SHAPE));
        // File 2 (data_batch_3.bin), record 0: label 2, seed 20.
        assert_eq!(ds.label(6), Some(2));
        assert_eq!(ds.label(7), Some(9));
        let img = ds.image(6);
        // Pixel (y=1, x=2): R = 20 + 0 + 5 + 14, G = R + 3, B = R + 6.
        let at = (SIDE + 2) * 3;
        assert_eq!(&img.pixels[at..at + 3], &[39, 42, 45]);
        assert_eq!(ds.class_names()[9], "truck");
    }

    #[test]
    fn test_split_reads_only_test_batch() {
        let dir = tempfile::tempdir().unwrap();
        three_record_split(dir.path(), Split::Test);
        let ds = open_with(dir.path(), Split::Test, 3).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.labels(), Some(&[0u32, 9, 3][..]));
    }

    #[test]
    fn missing_batch_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        three_record_split(dir.path(), Split::Train);
        std::fs::remove_file(dir.path().join("data_batch_4.bin")).unwrap();
        let err = open_with(dir.path(), Split::Train, 3).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::MissingFile { .. }), "{msg}");
        assert!(msg.contains("data_batch_4.bin"), "{msg}");
    }

    #[test]
    fn truncated_batch_file_reports_expected_and_actual_size() {
        let dir = tempfile::tempdir().unwrap();
        three_record_split(dir.path(), Split::Train);
        let path = dir.path().join("data_batch_2.bin");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let msg = open_with(dir.path(), Split::Train, 3)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("data_batch_2.bin"), "{msg}");
        assert!(msg.contains("expected 9219 bytes"), "{msg}");
        assert!(msg.contains("found 9119 bytes"), "{msg}");
    }

    #[test]
    fn full_size_is_required_by_open() {
        // A 3-record file is a valid layout but not a release file.
        let dir = tempfile::tempdir().unwrap();
        three_record_split(dir.path(), Split::Test);
        let msg = open(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(msg.contains("expected 30730000 bytes"), "{msg}");
    }

    #[test]
    fn label_beyond_class_names_is_malformed() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("test_batch.bin"), &[(0, 0), (10, 0)]);
        let msg = read_batches(&[dir.path().join("test_batch.bin")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("record 1 has label 10"), "{msg}");
    }

    #[test]
    fn read_batches_takes_a_subset_and_meta_names() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("data_batch_3.bin"), &[(1, 0), (0, 5)]);
        std::fs::write(dir.path().join(META_FILE), "a\nb\n\n").unwrap();
        let ds = read_batches(&[dir.path().join("data_batch_3.bin")]).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.class_names(), &["a".to_string(), "b".to_string()]);
        assert_eq!(ds.image(1).pixels[0], 5);
    }

    #[test]
    fn read_batches_rejects_partial_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        std::fs::write(&path, vec![0u8; RECORD_BYTES + 5]).unwrap();
        let msg = read_batches(&[&path]).unwrap_err().to_string();
        assert!(msg.contains("expected 3073 bytes"), "{msg}");
        assert!(msg.contains("found 3078 bytes"), "{msg}");
    }

    #[test]
    fn write_then_open_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        three_record_split(dir.path(), Split::Train);
        let ds = open_with(dir.path(), Split::Train, 3).unwrap();
        let out = tempfile::tempdir().unwrap();
        write_with(out.path(), Split::Train, &ds, 3).unwrap();
        for name in TRAIN_FILES {
            assert_eq!(
                std::fs::read(out.path().join(name)).unwrap(),
                std::fs::read(dir.path().join(name)).unwrap(),
                "{name}"
            );
        }
        let again = open_with(out.path(), Split::Train, 3).unwrap();
        assert_eq!(again.class_names(), ds.class_names());
    }

    #[test]
    fn write_refuses_wrong_count() {
        let dir = tempfile::tempdir().unwrap();
        three_record_split(dir.path(), Split::Test);
        let ds = open_with(dir.path(), Split::Test, 3).unwrap();
        let msg = write(dir.path(), Split::Test, &ds).unwrap_err().to_string();
        assert!(msg.contains("has 10000 images, this set has 3"), "{msg}");
    }

    /// The real data set, made by `python3 ../shared/data/rebuild_cifar10_bins.py data`
    /// (CI has no copy): run with `cargo test -p mocca-data -- --ignored`.
    #[test]
    #[ignore]
    fn real_cifar10_has_balanced_classes_and_known_channel_means() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/cifar-10-batches-bin");
        let train = open(&dir, Split::Train).unwrap();
        let test = open(&dir, Split::Test).unwrap();
        assert_eq!((train.len(), test.len()), (50_000, 10_000));
        for (ds, per_class) in [(&train, 5000), (&test, 1000)] {
            let mut counts = [0usize; 10];
            for &l in ds.labels().unwrap() {
                counts[l as usize] += 1;
            }
            assert_eq!(counts, [per_class; 10]);
        }
        // The published CIFAR-10 training means (0.4914, 0.4822, 0.4465); the
        // JPEG-rebuilt copy may differ by a little.
        let mut sums = [0u64; 3];
        for i in 0..train.len() {
            for px in train.image(i).pixels.chunks_exact(3) {
                for c in 0..3 {
                    sums[c] += px[c] as u64;
                }
            }
        }
        let n = (train.len() * SIDE * SIDE) as f64 * 255.0;
        let means: Vec<f64> = sums.iter().map(|&s| s as f64 / n).collect();
        for (m, want) in means.iter().zip([0.4914, 0.4822, 0.4465]) {
            assert!((m - want).abs() < 0.005, "means {means:?}");
        }
    }
}
