use crate::error::{DataError, Result};
use std::path::Path;

/// Which part of a dataset to read (torchvision's `split` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The labeled training images (CIFAR-10: 50,000; MNIST: 60,000; STL-10: 5,000).
    Train,
    /// The held-out images (CIFAR-10: 10,000; MNIST: 10,000; STL-10: 8,000).
    Test,
    /// Images without labels, for self-supervised training only (STL-10: 100,000).
    Unlabeled,
    /// `Train` then `Unlabeled`, as one unlabeled set (STL-10: 105,000; what solo-learn
    /// pretrains on).
    TrainUnlabeled,
}

impl Split {
    /// Every split, in the order above.
    pub const ALL: [Split; 4] = [
        Split::Train,
        Split::Test,
        Split::Unlabeled,
        Split::TrainUnlabeled,
    ];

    /// torchvision's name: `train`, `test`, `unlabeled`, `train+unlabeled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Unlabeled => "unlabeled",
            Split::TrainUnlabeled => "train+unlabeled",
        }
    }

    /// The error for a split a dataset does not have (CIFAR-10 has no unlabeled images...).
    pub(crate) fn missing_from(self, path: &Path, dataset: &str) -> DataError {
        DataError::NoSuchSplit {
            path: path.to_path_buf(),
            message: format!(
                "{dataset} has no {self} split (it has train and test; unlabeled and \
                 train+unlabeled are STL-10's)"
            ),
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Split {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        Split::ALL
            .into_iter()
            .find(|split| split.as_str() == s)
            .ok_or_else(|| {
                DataError::InvalidArgument(format!(
                    "unknown split `{s}`: expected train, test, unlabeled or train+unlabeled"
                ))
            })
    }
}

/// Size of one image: `height × width × channels` bytes, stored HWC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageShape {
    pub height: usize,
    pub width: usize,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
}

impl ImageShape {
    /// Number of bytes of one image of this shape.
    pub fn len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// True for a zero-sized image (never produced by the readers).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A borrowed image: `pixels[(y * width + x) * channels + c]`, rows top to bottom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageView<'a> {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub pixels: &'a [u8],
}

impl ImageView<'_> {
    pub fn shape(&self) -> ImageShape {
        ImageShape {
            height: self.height,
            width: self.width,
            channels: self.channels,
        }
    }
}

#[derive(Clone, Debug)]
enum Layout {
    /// Every image has this shape; image `i` starts at `i * shape.len()`.
    Uniform(ImageShape),
    /// Image `i` starts at `offsets[i]` and has `shapes[i]`.
    Varying {
        offsets: Vec<usize>,
        shapes: Vec<ImageShape>,
    },
}

/// An in-memory set of 8-bit images (HWC, 1 or 3 channels, any size each),
/// with optional labels and the class names they index.
///
/// All pixels live in one contiguous buffer, so a set of same-sized images
/// (CIFAR-10, MNIST, the synthetic set) costs exactly `len × H × W × C` bytes
/// and [`uniform_shape`](Self::uniform_shape) lets consumers take fast paths.
///
/// Channels are kept as the source has them: MNIST stays 1-channel (the
/// consumer expands gray to RGB if its model wants 3), CIFAR-10 and image
/// folders are RGB (image folders are converted at load, as torchvision's
/// `ImageFolder` does with `convert("RGB")`).
#[derive(Clone, Debug)]
pub struct ImageDataset {
    pixels: Vec<u8>,
    layout: Layout,
    len: usize,
    labels: Option<Vec<u32>>,
    class_names: Vec<String>,
}

fn check_channels(channels: usize) -> Result<()> {
    if channels == 1 || channels == 3 {
        Ok(())
    } else {
        Err(DataError::InvalidArgument(format!(
            "images must have 1 or 3 channels, got {channels}"
        )))
    }
}

pub(crate) fn check_labels(
    labels: &Option<Vec<u32>>,
    len: usize,
    class_names: &[String],
) -> Result<()> {
    if let Some(labels) = labels {
        if labels.len() != len {
            return Err(DataError::InvalidArgument(format!(
                "{} labels for {len} images",
                labels.len()
            )));
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= class_names.len())
        {
            return Err(DataError::InvalidArgument(format!(
                "label {l} of image {i} is out of range for {} class names",
                class_names.len()
            )));
        }
    }
    Ok(())
}

impl ImageDataset {
    /// Builds a set of `pixels.len() / shape.len()` images of one shape.
    ///
    /// `labels`, when given, has one entry per image, each below
    /// `class_names.len()`.
    pub fn from_uniform(
        shape: ImageShape,
        pixels: Vec<u8>,
        labels: Option<Vec<u32>>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        check_channels(shape.channels)?;
        if shape.is_empty() {
            return Err(DataError::InvalidArgument(format!(
                "zero-sized image shape {shape:?}"
            )));
        }
        if !pixels.len().is_multiple_of(shape.len()) {
            return Err(DataError::InvalidArgument(format!(
                "{} bytes is not a whole number of {}x{}x{} images",
                pixels.len(),
                shape.height,
                shape.width,
                shape.channels
            )));
        }
        let len = pixels.len() / shape.len();
        check_labels(&labels, len, &class_names)?;
        Ok(ImageDataset {
            pixels,
            layout: Layout::Uniform(shape),
            len,
            labels,
            class_names,
        })
    }

    /// Builds a set from images of any sizes, given as (shape, pixels) in order.
    pub(crate) fn from_images(
        images: Vec<(ImageShape, Vec<u8>)>,
        labels: Option<Vec<u32>>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        let len = images.len();
        check_labels(&labels, len, &class_names)?;
        let first = images.first().map(|(s, _)| *s);
        for (shape, px) in &images {
            check_channels(shape.channels)?;
            debug_assert_eq!(shape.len(), px.len());
        }
        let total: usize = images.iter().map(|(_, p)| p.len()).sum();
        let mut pixels = Vec::with_capacity(total);
        let uniform = first.filter(|f| images.iter().all(|(s, _)| s == f));
        let layout = match uniform {
            Some(shape) => {
                for (_, px) in images {
                    pixels.extend_from_slice(&px);
                }
                Layout::Uniform(shape)
            }
            // An empty set is uniform in no useful sense; keep it Varying.
            None => {
                let mut offsets = Vec::with_capacity(len);
                let mut shapes = Vec::with_capacity(len);
                for (shape, px) in images {
                    offsets.push(pixels.len());
                    shapes.push(shape);
                    pixels.extend_from_slice(&px);
                }
                Layout::Varying { offsets, shapes }
            }
        };
        Ok(ImageDataset {
            pixels,
            layout,
            len,
            labels,
            class_names,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Image `i`. Panics if `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> ImageView<'_> {
        assert!(
            i < self.len,
            "image index {i} out of range for a dataset of {} images",
            self.len
        );
        let (offset, shape) = match &self.layout {
            Layout::Uniform(shape) => (i * shape.len(), *shape),
            Layout::Varying { offsets, shapes } => (offsets[i], shapes[i]),
        };
        ImageView {
            width: shape.width,
            height: shape.height,
            channels: shape.channels,
            pixels: &self.pixels[offset..offset + shape.len()],
        }
    }

    /// Label of image `i` (an index into [`class_names`](Self::class_names)),
    /// or `None` for an unlabeled set.
    pub fn label(&self, i: usize) -> Option<usize> {
        self.labels.as_ref().map(|l| l[i] as usize)
    }

    /// All labels in image order, or `None` for an unlabeled set.
    pub fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }

    /// Class names; label `l` is `class_names()[l]`. Empty for unlabeled sets.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The common shape when every image has the same one (CIFAR-10, MNIST,
    /// synthetic); then image `i` is `pixels[i * shape.len()..][..shape.len()]`
    /// of one contiguous buffer. `None` for mixed sizes or an empty set.
    pub fn uniform_shape(&self) -> Option<ImageShape> {
        match &self.layout {
            Layout::Uniform(shape) if self.len > 0 => Some(*shape),
            _ => None,
        }
    }

    /// A new set holding images `indices` (in that order, repeats allowed),
    /// with their labels and the same class names: for quick runs on a part of
    /// a large set.
    pub fn select(&self, indices: &[usize]) -> Result<ImageDataset> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len) {
            return Err(DataError::InvalidArgument(format!(
                "index {bad} out of range for a dataset of {} images",
                self.len
            )));
        }
        let labels = self
            .labels
            .as_ref()
            .map(|l| indices.iter().map(|&i| l[i]).collect());
        let images = indices
            .iter()
            .map(|&i| {
                let v = self.image(i);
                (v.shape(), v.pixels.to_vec())
            })
            .collect();
        ImageDataset::from_images(images, labels, self.class_names.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn uniform_set_views_consecutive_slices() {
        let shape = ImageShape {
            height: 1,
            width: 2,
            channels: 3,
        };
        let ds = ImageDataset::from_uniform(shape, (0..12).collect(), Some(vec![1, 0]), names(2))
            .unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.uniform_shape(), Some(shape));
        assert_eq!(ds.image(1).pixels, &[6, 7, 8, 9, 10, 11]);
        assert_eq!((ds.image(1).width, ds.image(1).height), (2, 1));
        assert_eq!(ds.label(0), Some(1));
        assert_eq!(ds.labels(), Some(&[1u32, 0][..]));
    }

    #[test]
    fn mixed_sizes_are_not_uniform_and_keep_each_shape() {
        let a = ImageShape {
            height: 1,
            width: 1,
            channels: 3,
        };
        let b = ImageShape {
            height: 2,
            width: 1,
            channels: 1,
        };
        let ds = ImageDataset::from_images(vec![(a, vec![1, 2, 3]), (b, vec![4, 5])], None, vec![])
            .unwrap();
        assert_eq!(ds.uniform_shape(), None);
        assert_eq!(ds.image(0).pixels, &[1, 2, 3]);
        assert_eq!(ds.image(1).pixels, &[4, 5]);
        assert_eq!(ds.image(1).shape(), b);
        assert_eq!(ds.label(1), None);
    }

    #[test]
    fn same_sized_images_from_a_list_become_uniform() {
        let s = ImageShape {
            height: 1,
            width: 1,
            channels: 1,
        };
        let ds = ImageDataset::from_images(vec![(s, vec![7]), (s, vec![9])], None, vec![]).unwrap();
        assert_eq!(ds.uniform_shape(), Some(s));
        assert_eq!(ds.image(1).pixels, &[9]);
    }

    #[test]
    fn rejects_two_channels_label_out_of_range_and_ragged_pixels() {
        let two = ImageShape {
            height: 1,
            width: 1,
            channels: 2,
        };
        let err = ImageDataset::from_uniform(two, vec![0; 2], None, vec![]).unwrap_err();
        assert!(err.to_string().contains("1 or 3 channels"), "{err}");

        let one = ImageShape {
            height: 1,
            width: 1,
            channels: 1,
        };
        let err =
            ImageDataset::from_uniform(one, vec![0; 2], Some(vec![0, 2]), names(2)).unwrap_err();
        assert!(err.to_string().contains("label 2 of image 1"), "{err}");

        let rgb = ImageShape {
            height: 1,
            width: 1,
            channels: 3,
        };
        let err = ImageDataset::from_uniform(rgb, vec![0; 4], None, vec![]).unwrap_err();
        assert!(err.to_string().contains("not a whole number"), "{err}");
    }

    #[test]
    fn select_reorders_images_and_labels() {
        let s = ImageShape {
            height: 1,
            width: 1,
            channels: 1,
        };
        let ds =
            ImageDataset::from_uniform(s, vec![10, 11, 12], Some(vec![0, 1, 2]), names(3)).unwrap();
        let sub = ds.select(&[2, 0]).unwrap();
        assert_eq!(sub.len(), 2);
        assert_eq!(sub.image(0).pixels, &[12]);
        assert_eq!(sub.labels(), Some(&[2u32, 0][..]));
        assert_eq!(sub.class_names().len(), 3);
        assert!(ds.select(&[3]).is_err());
    }
}
