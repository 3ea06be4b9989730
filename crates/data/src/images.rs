//! One type for the images a run reads, whether they sit decoded in memory or are decoded
//! per batch ([`Images`]), and what a batch does about a file that does not decode.

use crate::dataset::{ImageDataset, ImageShape, ImageView};
use crate::error::{DataError, Result};
use crate::files::ImageFiles;
use std::path::PathBuf;

/// The images of a split: the in-memory fast path (CIFAR, STL-10, small folders), or files
/// decoded when a batch needs them (image folders of any size).
#[derive(Clone, Debug)]
pub enum Images {
    Memory(ImageDataset),
    Files(ImageFiles),
}

impl From<ImageDataset> for Images {
    fn from(d: ImageDataset) -> Self {
        Images::Memory(d)
    }
}

impl From<ImageFiles> for Images {
    fn from(f: ImageFiles) -> Self {
        Images::Files(f)
    }
}

/// What a batch does with a file that does not decode (truncated, corrupt, not an image).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnBadFile {
    /// Skip it: its place in the batch is taken by the next image of the same batch that
    /// decoded (so batch shapes never change), and it is reported in [`BatchImages::bad`].
    #[default]
    Skip,
    /// Fail the batch with [`DataError::Decode`] naming the file.
    Fail,
}

/// A file skipped in a batch ([`OnBadFile::Skip`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadFile {
    /// Its index in the set.
    pub index: usize,
    pub path: PathBuf,
    /// Why it did not decode.
    pub message: String,
    /// The index of the image that took its place.
    pub stand_in: usize,
}

/// The images of one batch, borrowed from memory or decoded for it.
#[derive(Debug)]
pub struct BatchImages<'a> {
    source: Source<'a>,
    /// Files skipped in this batch, in batch order.
    pub bad: Vec<BadFile>,
}

#[derive(Debug)]
enum Source<'a> {
    Memory(&'a ImageDataset, Vec<usize>),
    /// Decoded images, and for each slot of the batch the one it shows.
    Decoded(Vec<Option<(ImageShape, Vec<u8>)>>, Vec<usize>),
}

impl BatchImages<'_> {
    /// The batch's images, one per index asked for, in order.
    pub fn views(&self) -> Vec<ImageView<'_>> {
        match &self.source {
            Source::Memory(d, idx) => idx.iter().map(|&i| d.image(i)).collect(),
            Source::Decoded(images, slots) => slots
                .iter()
                .map(|&s| {
                    let (shape, px) = images[s].as_ref().expect("slots point at decoded images");
                    ImageView {
                        width: shape.width,
                        height: shape.height,
                        channels: shape.channels,
                        pixels: px,
                    }
                })
                .collect(),
        }
    }
}

impl Images {
    pub fn len(&self) -> usize {
        match self {
            Images::Memory(d) => d.len(),
            Images::Files(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All labels in order, or `None` for an unlabeled set.
    pub fn labels(&self) -> Option<&[u32]> {
        match self {
            Images::Memory(d) => d.labels(),
            Images::Files(f) => f.labels(),
        }
    }

    pub fn label(&self, i: usize) -> Option<usize> {
        self.labels().map(|l| l[i] as usize)
    }

    pub fn class_names(&self) -> &[String] {
        match self {
            Images::Memory(d) => d.class_names(),
            Images::Files(f) => f.class_names(),
        }
    }

    /// The common shape of an in-memory set of same-sized images; `None` for files (their
    /// sizes are known only once decoded) and mixed sizes.
    pub fn uniform_shape(&self) -> Option<ImageShape> {
        match self {
            Images::Memory(d) => d.uniform_shape(),
            Images::Files(_) => None,
        }
    }

    /// True when images are decoded per batch.
    pub fn is_streamed(&self) -> bool {
        matches!(self, Images::Files(_))
    }

    /// The in-memory set, if that is what this is.
    pub fn in_memory(&self) -> Option<&ImageDataset> {
        match self {
            Images::Memory(d) => Some(d),
            Images::Files(_) => None,
        }
    }

    /// The images `indices` (in that order, repeats allowed) as a new set of the same kind.
    pub fn select(&self, indices: &[usize]) -> Result<Images> {
        Ok(match self {
            Images::Memory(d) => Images::Memory(d.select(indices)?),
            Images::Files(f) => Images::Files(f.select(indices)?),
        })
    }

    /// The images `indices` of one batch: borrowed when in memory, else decoded in parallel.
    ///
    /// A file that does not decode is skipped or fails the batch as `on_bad` says; a batch in
    /// which no file decodes fails either way. Which image stands in for a skipped one depends
    /// only on the batch, never on thread timing.
    pub fn load(&self, indices: &[usize], on_bad: OnBadFile) -> Result<BatchImages<'_>> {
        let files = match self {
            Images::Memory(d) => {
                if let Some(&bad) = indices.iter().find(|&&i| i >= d.len()) {
                    return Err(out_of_range(bad, d.len()));
                }
                return Ok(BatchImages {
                    source: Source::Memory(d, indices.to_vec()),
                    bad: Vec::new(),
                });
            }
            Images::Files(f) => f,
        };
        if let Some(&bad) = indices.iter().find(|&&i| i >= files.len()) {
            return Err(out_of_range(bad, files.len()));
        }
        let decoded = files.decode_batch(indices);
        let mut errors = Vec::new();
        let images: Vec<Option<(ImageShape, Vec<u8>)>> = decoded
            .into_iter()
            .enumerate()
            .map(|(slot, r)| match r {
                Ok(img) => Some(img),
                Err(e) => {
                    errors.push((slot, e));
                    None
                }
            })
            .collect();
        let n = indices.len();
        if !errors.is_empty() && (on_bad == OnBadFile::Fail || errors.len() == n) {
            let (_, e) = errors.swap_remove(0);
            return Err(match on_bad {
                OnBadFile::Fail => e,
                OnBadFile::Skip => DataError::InvalidArgument(format!(
                    "no image of a batch of {n} decoded; the first: {e}"
                )),
            });
        }
        let slots: Vec<usize> = (0..n)
            .map(|s| {
                (0..n)
                    .map(|k| (s + k) % n)
                    .find(|&j| images[j].is_some())
                    .expect("at least one image decoded")
            })
            .collect();
        let bad = errors
            .into_iter()
            .map(|(slot, e)| BadFile {
                index: indices[slot],
                path: files.path(indices[slot]),
                message: match e {
                    DataError::Decode { message, .. } => message,
                    e => e.to_string(),
                },
                stand_in: indices[slots[slot]],
            })
            .collect();
        Ok(BatchImages {
            source: Source::Decoded(images, slots),
            bad,
        })
    }

    /// One line saying what this is: "50000 images in memory", "1281167 files, decoded per
    /// batch".
    pub fn describe(&self) -> String {
        match self {
            Images::Memory(d) => format!("{} images in memory", d.len()),
            Images::Files(f) => format!("{} files, decoded per batch", f.len()),
        }
    }
}

fn out_of_range(i: usize, len: usize) -> DataError {
    DataError::InvalidArgument(format!("index {i} out of range for a set of {len} images"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Split;
    use image::{Rgb, RgbImage};
    use std::path::Path;

    fn folder(bad: &[usize], n: usize) -> (tempfile::TempDir, Images) {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..n {
            let p = dir.path().join(format!("a/{i}.png"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            if bad.contains(&i) {
                std::fs::write(&p, b"\x89PNG cut short").unwrap();
            } else {
                RgbImage::from_pixel(1, 1, Rgb([i as u8; 3]))
                    .save(&p)
                    .unwrap();
            }
        }
        let files = ImageFiles::open(dir.path(), Split::Train).unwrap();
        (dir, Images::Files(files))
    }

    fn first_bytes(b: &BatchImages<'_>) -> Vec<u8> {
        b.views().iter().map(|v| v.pixels[0]).collect()
    }

    #[test]
    fn streamed_batch_decodes_the_indices_in_order() {
        let (_d, images) = folder(&[], 4);
        let b = images.load(&[3, 0, 2], OnBadFile::Fail).unwrap();
        assert_eq!(first_bytes(&b), [3, 0, 2]);
        assert!(b.bad.is_empty());
    }

    #[test]
    fn skipped_file_is_replaced_by_the_next_decoded_image_of_its_batch() {
        let (_d, images) = folder(&[1, 2], 4);
        let b = images.load(&[0, 1, 2, 3], OnBadFile::Skip).unwrap();
        assert_eq!(first_bytes(&b), [0, 3, 3, 3]);
        let bad: Vec<(usize, usize)> = b.bad.iter().map(|f| (f.index, f.stand_in)).collect();
        assert_eq!(bad, [(1, 3), (2, 3)]);
        assert!(b.bad[0].path.ends_with(Path::new("a/1.png")));
        // The last slot wraps round to the batch's start.
        let b = images.load(&[3, 2], OnBadFile::Skip).unwrap();
        assert_eq!(first_bytes(&b), [3, 3]);
    }

    #[test]
    fn fail_policy_names_the_first_bad_file_of_the_batch() {
        let (_d, images) = folder(&[1, 2], 4);
        let err = images.load(&[0, 2, 1], OnBadFile::Fail).unwrap_err();
        assert!(matches!(err, DataError::Decode { .. }), "{err}");
        assert!(err.to_string().contains("2.png"), "{err}");
    }

    #[test]
    fn batch_without_one_decodable_file_fails_even_when_skipping() {
        let (_d, images) = folder(&[0, 1], 2);
        let err = images.load(&[0, 1], OnBadFile::Skip).unwrap_err();
        assert!(
            err.to_string().contains("no image of a batch of 2"),
            "{err}"
        );
    }

    #[test]
    fn memory_and_files_give_the_same_views() {
        let (d, files) = folder(&[], 3);
        let memory = Images::Memory(crate::image_folder::open(d.path(), Split::Train).unwrap());
        let a = files.load(&[2, 0], OnBadFile::Fail).unwrap();
        let b = memory.load(&[2, 0], OnBadFile::Fail).unwrap();
        assert_eq!(a.views(), b.views());
        assert_eq!(files.labels(), memory.labels());
        assert!(memory.load(&[3], OnBadFile::Fail).is_err());
    }
}
