//! Downloading CIFAR-10 and MNIST (feature `download`).
//!
//! Uses `candle-datasets`, which fetches the Hugging Face Hub's parquet
//! copies (into the Hub's cache, `~/.cache/huggingface` unless `HF_HOME` says
//! otherwise), then writes them into the data folder in the formats the
//! readers read, so everything downstream is the same as for a manual copy.
//! Needs internet access; nothing here runs in CI.

use crate::dataset::{ImageDataset, ImageShape, Split};
use crate::error::{DataError, Result};
use crate::{cifar10, mnist};
use candle_datasets::vision::Dataset;
use std::path::{Path, PathBuf};

fn failed(dataset: &str, e: impl std::fmt::Display) -> DataError {
    DataError::Download {
        dataset: dataset.into(),
        message: e.to_string(),
    }
}

/// Unit-range floats (`u8 / 255`, as candle-datasets returns them) back to
/// bytes; exact, since `round(255 * (v / 255)) == v` in f32 for every byte.
fn to_bytes(values: Vec<f32>) -> Vec<u8> {
    values
        .into_iter()
        .map(|x| (x * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// Downloads CIFAR-10 and writes `data_dir/cifar-10-batches-bin` (the binary
/// release layout, with `batches.meta.txt`); returns that folder.
pub fn cifar10(data_dir: impl AsRef<Path>) -> Result<PathBuf> {
    const NAME: &str = "CIFAR-10";
    let ds = candle_datasets::vision::cifar::load().map_err(|e| failed(NAME, e))?;
    let dest = data_dir.as_ref().join("cifar-10-batches-bin");
    for split in [Split::Train, Split::Test] {
        let set = cifar_split(&ds, split).map_err(|e| failed(NAME, e))?;
        cifar10::write(&dest, split, &set)?;
    }
    Ok(dest)
}

fn cifar_split(ds: &Dataset, split: Split) -> std::result::Result<ImageDataset, String> {
    let (images, labels) = match split {
        Split::Train => (&ds.train_images, &ds.train_labels),
        Split::Test => (&ds.test_images, &ds.test_labels),
    };
    let side = cifar10::SIDE;
    let n = images.dims().first().copied().unwrap_or(0);
    if images.dims() != [n, 3, side, side] {
        return Err(format!("unexpected image tensor shape {:?}", images.dims()));
    }
    // candle-datasets 0.11.1 (pinned) stacks the decoded HWC images as
    // (N, H, W, C) and permutes them with (0, 3, 2, 1), so its axes are
    // (N, C, W, H), not (N, C, H, W): the same permutation is its own inverse
    // and gives back (N, H, W, C), our layout.
    let hwc = images
        .permute((0, 3, 2, 1))
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| e.to_string())?;
    let labels = labels.to_vec1::<u8>().map_err(|e| e.to_string())?;
    let shape = ImageShape {
        height: side,
        width: side,
        channels: 3,
    };
    let names = cifar10::CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    ImageDataset::from_uniform(
        shape,
        to_bytes(hwc),
        Some(labels.into_iter().map(u32::from).collect()),
        names,
    )
    .map_err(|e| e.to_string())
}

/// Downloads MNIST and writes its four IDX files (uncompressed) into
/// `data_dir/mnist`; returns that folder.
pub fn mnist(data_dir: impl AsRef<Path>) -> Result<PathBuf> {
    const NAME: &str = "MNIST";
    let ds = candle_datasets::vision::mnist::load().map_err(|e| failed(NAME, e))?;
    let dest = data_dir.as_ref().join("mnist");
    for split in [Split::Train, Split::Test] {
        let (images, labels) = match split {
            Split::Train => (&ds.train_images, &ds.train_labels),
            Split::Test => (&ds.test_images, &ds.test_labels),
        };
        let n = images.dims().first().copied().unwrap_or(0);
        if images.dims() != [n, 28 * 28] {
            return Err(failed(
                NAME,
                format!("unexpected image tensor shape {:?}", images.dims()),
            ));
        }
        let pixels = images
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| failed(NAME, e))?;
        let labels = labels.to_vec1::<u8>().map_err(|e| failed(NAME, e))?;
        let shape = ImageShape {
            height: 28,
            width: 28,
            channels: 1,
        };
        let names = (0..10).map(|d: u32| d.to_string()).collect();
        let set = ImageDataset::from_uniform(
            shape,
            to_bytes(pixels),
            Some(labels.into_iter().map(u32::from).collect()),
            names,
        )?;
        mnist::write(&dest, split, &set)?;
    }
    Ok(dest)
}
