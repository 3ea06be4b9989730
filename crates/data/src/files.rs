//! Image files decoded when a batch needs them ([`ImageFiles`]): an image folder of any size
//! in memory bounded by the batches in flight, not by the number of files.

use crate::dataset::{ImageDataset, ImageShape, Split};
use crate::error::{DataError, Result};
use crate::image_folder::{self, Listing};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// The files of one split of an image folder (or of a file list), with their labels, decoded
/// one batch at a time ([`ImageFiles::decode_batch`]) instead of all at load.
///
/// Paths are kept relative to one root, packed in a single string: ImageNet's 1.28 M training
/// files cost about 50 MB here, the decoded pixels nothing until a batch asks for them.
///
/// ```no_run
/// use mocca_data::{ImageFiles, Split};
///
/// let train = ImageFiles::open("imagenet", Split::Train)?;
/// let batch = train.decode_batch(&[0, 1, 2]);
/// for (i, image) in batch.iter().enumerate() {
///     let (shape, pixels) = image.as_ref().map_err(|e| e.to_string())?;
///     assert_eq!(pixels.len(), shape.len());
///     println!("{}: {}x{}", train.path(i).display(), shape.width, shape.height);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFiles {
    root: PathBuf,
    /// Every relative path, one after another; file `i` is `names[ends[i-1]..ends[i]]`.
    names: String,
    ends: Vec<usize>,
    labels: Option<Vec<u32>>,
    class_names: Vec<String>,
}

impl ImageFiles {
    /// Lists `split` of the image folder at `root` ([`image_folder::list`]: its layouts, its
    /// order, its labels), decoding nothing.
    pub fn open(root: impl AsRef<Path>, split: Split) -> Result<Self> {
        Ok(Self::from_listing(image_folder::list(root, split)?))
    }

    /// The files of a listing, in its order.
    pub fn from_listing(listing: Listing) -> Self {
        let root = common_root(&listing.files);
        let mut names = String::new();
        let mut ends = Vec::with_capacity(listing.files.len());
        for f in &listing.files {
            let rel = f.strip_prefix(&root).unwrap_or(f);
            names.push_str(&rel.to_string_lossy());
            ends.push(names.len());
        }
        names.shrink_to_fit();
        ImageFiles {
            root,
            names,
            ends,
            labels: listing.labels,
            class_names: listing.class_names,
        }
    }

    /// Files given as paths (relative ones to `root`), with optional labels into
    /// `class_names`: a file list such as a CSV of a dataset's images.
    pub fn from_paths(
        root: impl AsRef<Path>,
        files: &[PathBuf],
        labels: Option<Vec<u32>>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        if files.is_empty() {
            return Err(DataError::InvalidArgument("an empty file list".into()));
        }
        crate::dataset::check_labels(&labels, files.len(), &class_names)?;
        let root = root.as_ref();
        Ok(Self::from_listing(Listing {
            files: files.iter().map(|f| root.join(f)).collect(),
            labels,
            class_names,
        }))
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The path of file `i` (panics if `i >= len()`, like slice indexing).
    pub fn path(&self, i: usize) -> PathBuf {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.root.join(&self.names[start..self.ends[i]])
    }

    /// The label of file `i`, or `None` for unlabeled files.
    pub fn label(&self, i: usize) -> Option<usize> {
        self.labels.as_ref().map(|l| l[i] as usize)
    }

    pub fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }

    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Reads and decodes file `i` to 8-bit RGB ([`image_folder::decode`]).
    pub fn decode(&self, i: usize) -> Result<(ImageShape, Vec<u8>)> {
        image_folder::decode(&self.path(i))
    }

    /// Files `indices` decoded in parallel (rayon's current pool), each its own result in
    /// the order asked: a file that does not decode spoils only its own entry.
    pub fn decode_batch(&self, indices: &[usize]) -> Vec<Result<(ImageShape, Vec<u8>)>> {
        indices.par_iter().map(|&i| self.decode(i)).collect()
    }

    /// Every file decoded into one in-memory set, in parallel (a file that does not decode is
    /// the error, the first in order whatever the thread timing).
    pub fn decode_all(&self) -> Result<ImageDataset> {
        let all: Vec<usize> = (0..self.len()).collect();
        let mut images = Vec::with_capacity(self.len());
        for d in self.decode_batch(&all) {
            images.push(d?);
        }
        ImageDataset::from_images(images, self.labels.clone(), self.class_names.clone())
    }

    /// The files `indices` (in that order, repeats allowed), with their labels.
    pub fn select(&self, indices: &[usize]) -> Result<ImageFiles> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(DataError::InvalidArgument(format!(
                "index {bad} out of range for {} files",
                self.len()
            )));
        }
        Ok(Self::from_listing(Listing {
            files: indices.iter().map(|&i| self.path(i)).collect(),
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            class_names: self.class_names.clone(),
        }))
    }
}

/// The deepest folder holding every file (so the packed names are short).
fn common_root(files: &[PathBuf]) -> PathBuf {
    let Some(first) = files.first() else {
        return PathBuf::new();
    };
    let mut root = first.parent().map(Path::to_path_buf).unwrap_or_default();
    for f in &files[1..] {
        while !f.starts_with(&root) {
            if !root.pop() {
                return PathBuf::new();
            }
        }
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn save(path: &Path, w: u32, colour: [u8; 3]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_pixel(w, 2, Rgb(colour)).save(path).unwrap();
    }

    #[test]
    fn lists_without_decoding_and_decodes_what_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        save(&r.join("b/0.png"), 3, [9, 9, 9]);
        save(&r.join("a/0.png"), 1, [1, 2, 3]);
        std::fs::write(r.join("a/1.png"), b"not a png").unwrap();
        let files = ImageFiles::open(r, Split::Train).unwrap();
        assert_eq!(files.len(), 3);
        assert_eq!(files.labels(), Some(&[0u32, 0, 1][..]));
        assert_eq!(files.path(2), r.join("b/0.png"));
        let got = files.decode_batch(&[2, 1, 0]);
        let (shape, px) = got[0].as_ref().unwrap();
        assert_eq!((shape.width, shape.height, px[0]), (3, 2, 9));
        let err = got[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("1.png: cannot decode image"), "{err}");
        assert_eq!(got[2].as_ref().unwrap().1[..3], [1, 2, 3]);
    }

    #[test]
    fn paths_are_packed_relative_to_the_deepest_common_folder() {
        let files = ImageFiles::from_paths(
            "/data/set",
            &["train/a/x.jpg".into(), "train/b/y.jpg".into()],
            Some(vec![0, 1]),
            vec!["a".into(), "b".into()],
        )
        .unwrap();
        assert_eq!(files.root, Path::new("/data/set/train"));
        assert_eq!(files.names, "a/x.jpgb/y.jpg");
        assert_eq!(files.path(1), Path::new("/data/set/train/b/y.jpg"));
        let sub = files.select(&[1, 1]).unwrap();
        assert_eq!(sub.labels(), Some(&[1u32, 1][..]));
        assert_eq!(sub.path(0), Path::new("/data/set/train/b/y.jpg"));
        assert!(files.select(&[2]).is_err());
    }

    #[test]
    fn file_list_rejects_labels_that_do_not_fit() {
        let err = ImageFiles::from_paths("/r", &["a.jpg".into()], Some(vec![3]), vec!["x".into()])
            .unwrap_err();
        assert!(err.to_string().contains("label 3 of image 0"), "{err}");
        assert!(ImageFiles::from_paths("/r", &[], None, vec![]).is_err());
    }
}
