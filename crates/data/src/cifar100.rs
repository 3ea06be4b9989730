//! CIFAR-100 in its binary release layout (`cifar-100-binary`).
//!
//! `train.bin` holds the 50,000 training images and `test.bin` the 10,000 test images, each a
//! record of 3,074 bytes: the coarse label (one of 20 superclasses), the fine label (one of 100
//! classes), then the 32×32 image as three planes like CIFAR-10's. [`open`] reads the fine
//! labels, as torchvision's `CIFAR100` does; [`open_labels`] the coarse ones. Class names come
//! from `fine_label_names.txt` / `coarse_label_names.txt` when present, else the standard ones.
//!
//! As for CIFAR-10, a file of the wrong size (a truncated copy) is an error naming it.

use crate::cifar10::{self, RecordLayout};
use crate::dataset::{ImageDataset, Split};
use crate::error::{DataError, Result};
use crate::fsutil;
use std::path::Path;

/// Bytes of one record: two label bytes and 3 planes of 32×32.
pub const RECORD_BYTES: usize = 2 + 3 * cifar10::SIDE * cifar10::SIDE;
/// The training file (50,000 records).
pub const TRAIN_FILE: &str = "train.bin";
/// The test file (10,000 records).
pub const TEST_FILE: &str = "test.bin";

/// Which of CIFAR-100's two labels to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Labels {
    /// The 100 classes (torchvision's `CIFAR100` targets).
    #[default]
    Fine,
    /// The 20 superclasses.
    Coarse,
}

/// The 100 fine class names, label 0 to 99.
pub const FINE_NAMES: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// The 20 superclass names, coarse label 0 to 19.
pub const COARSE_NAMES: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

/// The file of `split` and its record count in the release.
fn split_file(split: Split) -> Option<(&'static str, usize)> {
    match split {
        Split::Train => Some((TRAIN_FILE, 50_000)),
        Split::Test => Some((TEST_FILE, 10_000)),
        Split::Unlabeled | Split::TrainUnlabeled => None,
    }
}

/// True when `dir` holds `train.bin` or `test.bin` (used by `open`'s format detection).
pub(crate) fn looks_like(dir: &Path) -> bool {
    [TRAIN_FILE, TEST_FILE]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// Reads `split` from a `cifar-100-binary` folder with its fine labels: 50,000 or 10,000 RGB
/// 32×32 images in 100 classes.
pub fn open(dir: impl AsRef<Path>, split: Split) -> Result<ImageDataset> {
    open_labels(dir, split, Labels::Fine)
}

/// Reads `split` with the fine or the coarse labels.
pub fn open_labels(dir: impl AsRef<Path>, split: Split, labels: Labels) -> Result<ImageDataset> {
    let dir = dir.as_ref();
    let (_, records) = split_file(split).ok_or_else(|| split.missing_from(dir, "CIFAR-100"))?;
    open_with(dir, split, labels, records)
}

pub(crate) fn open_with(
    dir: &Path,
    split: Split,
    labels: Labels,
    records: usize,
) -> Result<ImageDataset> {
    let (file, _) = split_file(split).ok_or_else(|| split.missing_from(dir, "CIFAR-100"))?;
    let path = dir.join(file);
    let what = format!("CIFAR-100 {split} file: {records} records of {RECORD_BYTES} bytes");
    let actual = fsutil::file_len(&path, &what)?;
    let expected = (records * RECORD_BYTES) as u64;
    if actual != expected {
        return Err(DataError::WrongSize {
            path,
            expected,
            actual,
            what,
        });
    }
    let (names_file, standard, label_at): (_, &[&str], _) = match labels {
        Labels::Fine => ("fine_label_names.txt", &FINE_NAMES, 1),
        Labels::Coarse => ("coarse_label_names.txt", &COARSE_NAMES, 0),
    };
    let names = cifar10::names_file(&dir.join(names_file))?
        .unwrap_or_else(|| standard.iter().map(|s| s.to_string()).collect());
    let layout = RecordLayout {
        label_at,
        pixels_at: 2,
    };
    debug_assert_eq!(layout.bytes(), RECORD_BYTES);
    cifar10::read_records(&[path], names, layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Record `i`: coarse label `i % 20`, fine label `(7 * i) % 100`, pixel (y, x) of channel c
    /// equal to `i + 3c + 5y + 7x` (mod 256).
    fn records(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            out.push((i % 20) as u8);
            out.push(((7 * i) % 100) as u8);
            for c in 0..3 {
                for y in 0..32 {
                    for x in 0..32 {
                        out.push((i + 3 * c + 5 * y + 7 * x) as u8);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn reads_fine_labels_and_hwc_pixels() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join(TRAIN_FILE), records(3)).unwrap();
        let ds = open_with(t.path(), Split::Train, Labels::Fine, 3).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.labels(), Some(&[0u32, 7, 14][..]));
        assert_eq!(ds.class_names().len(), 100);
        assert_eq!(ds.class_names()[7], "beetle");
        // Image 2, pixel (y 1, x 2): channel c = 2 + 3c + 5 + 14.
        let px = &ds.image(2).pixels[(32 + 2) * 3..][..3];
        assert_eq!(px, &[21, 24, 27]);
    }

    #[test]
    fn the_standard_names_are_the_releases_sorted_lists() {
        for names in [&FINE_NAMES[..], &COARSE_NAMES[..]] {
            assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        }
    }

    #[test]
    fn coarse_labels_come_from_the_first_byte() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join(TEST_FILE), records(25)).unwrap();
        let ds = open_with(t.path(), Split::Test, Labels::Coarse, 25).unwrap();
        assert_eq!(ds.label(21), Some(1));
        assert_eq!(ds.class_names()[19], "vehicles_2");
    }

    #[test]
    fn name_files_beside_the_data_win() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join(TRAIN_FILE), records(1)).unwrap();
        let names: String = (0..100).map(|i| format!("n{i}\n")).collect();
        std::fs::write(t.path().join("fine_label_names.txt"), names).unwrap();
        let ds = open_with(t.path(), Split::Train, Labels::Fine, 1).unwrap();
        assert_eq!(ds.class_names()[99], "n99");
    }

    #[test]
    fn a_truncated_file_is_named_with_its_expected_size() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join(TRAIN_FILE), records(2)).unwrap();
        let msg = open(t.path(), Split::Train).unwrap_err().to_string();
        assert!(msg.contains("train.bin"), "{msg}");
        assert!(msg.contains("expected 153700000 bytes"), "{msg}");
        assert!(msg.contains("found 6148 bytes"), "{msg}");
    }

    #[test]
    fn a_fine_label_past_the_names_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let mut bytes = records(2);
        bytes[RECORD_BYTES + 1] = 100;
        std::fs::write(t.path().join(TRAIN_FILE), bytes).unwrap();
        let msg = open_with(t.path(), Split::Train, Labels::Fine, 2)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("record 1 has label 100"), "{msg}");
    }

    #[test]
    fn there_is_no_unlabeled_split() {
        let t = tempfile::tempdir().unwrap();
        let msg = open(t.path(), Split::Unlabeled).unwrap_err().to_string();
        assert!(msg.contains("CIFAR-100 has no unlabeled split"), "{msg}");
    }
}
