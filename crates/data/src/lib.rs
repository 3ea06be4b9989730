//! # mocca-data
//!
//! One job: get images from disk into memory and hand them to a training loop
//! in seeded, resumable batches.
//!
//! - [`ImageDataset`]: 8-bit HWC images (any size, 1 or 3 channels), optional
//!   labels, class names; [`ImageDataset::uniform_shape`] for fast paths.
//! - [`ImageFiles`]: the files of an image folder or a file list, decoded a batch at a time
//!   ([`ImageFiles::decode_batch`]), for sets that do not fit in memory; [`Images`] is either
//!   kind, [`Images::load`] gives one batch's images whichever it is, skipping a file that does
//!   not decode or failing on it ([`OnBadFile`]); [`open_images`] chooses by the decoded
//!   size ([`OpenOptions`], [`Streaming`]).
//! - Readers: [`cifar10`] and [`cifar100`] (binary batches), [`stl10`] (96 px,
//!   with its 100,000 unlabeled images as [`Split::Unlabeled`]), [`mnist`]
//!   (IDX, plain or gzip), [`image_folder`] (`<class>/*.jpg|png`, ImageNet's layouts with a
//!   flat `val/` and its label files, class lists such as ImageNet-100's, file lists; a
//!   listing cache for large trees) and the [`synthetic`] set for smoke tests; [`open`] picks
//!   the reader from the folder's contents, [`locate`] finds a dataset in the usual places.
//! - [`BatchSampler`]: an epoch's order is a pure function of (seed, epoch),
//!   so a resumed run sees the same batches; [`Loader`] prepares the next
//!   batch on a background thread with the caller's closure.
//! - [`download`]: CIFAR-10, CIFAR-100 and STL-10 from their official URLs on
//!   first use (MD5-checked, resumable, unpacked atomically), by default into
//!   the per-user cache [`download::default_root`] that [`locate`] searches.
//!
//! No tensors here: the closure given to the [`Loader`] turns indices into
//! whatever the model wants (augmented views, a Candle tensor).
//!
//! ```
//! use mocca_data::{synthetic, Batch, BatchSampler, Loader, Order, Split, SyntheticConfig};
//! use std::sync::Arc;
//!
//! let config = SyntheticConfig { images_per_class: 20, ..Default::default() };
//! let train = Arc::new(synthetic::generate(&config, Split::Train)?);
//! assert_eq!(train.len(), 200);
//!
//! let sampler = BatchSampler::new(train.len(), 64, Order::Shuffled { seed: 7 }, true)?;
//! let epochs = 2;
//! let steps = epochs * sampler.batches_per_epoch();
//!
//! // The closure would augment and stack the images; here it averages them.
//! let data = Arc::clone(&train);
//! let loader = Loader::new(sampler.iter_from(0, 0).take(steps), 1, move |batch: &Batch| {
//!     let sum: u64 = batch.indices.iter()
//!         .flat_map(|&i| data.image(i).pixels)
//!         .map(|&p| p as u64)
//!         .sum();
//!     let count = batch.indices.len() * data.uniform_shape().unwrap().len();
//!     Ok::<f64, std::convert::Infallible>(sum as f64 / count as f64)
//! })?;
//! let mut seen = 0;
//! for item in loader {
//!     let loaded = item?;
//!     assert_eq!(loaded.batch.indices.len(), 64);
//!     assert!(loaded.data > 0.0 && loaded.data < 255.0);
//!     seen += 1;
//! }
//! assert_eq!(seen, steps);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cifar10;
pub mod cifar100;
mod dataset;
mod discover;
pub mod download;
mod error;
mod files;
mod fsutil;
pub mod image_folder;
mod images;
mod listing_cache;
mod loader;
mod matfile;
pub mod mnist;
mod sampler;
pub mod stl10;
pub mod synthetic;

pub use dataset::{ImageDataset, ImageShape, ImageView, Split};
pub use discover::{
    detect, estimated_bytes, locate, open, open_images, Format, OpenOptions, Streaming,
};
pub use error::{DataError, Result};
pub use files::ImageFiles;
pub use images::{BadFile, BatchImages, Images, OnBadFile};
pub use loader::{LoadedBatch, Loader};
pub use sampler::{shuffled_indices, Batch, BatchSampler, Batches, Order};
pub use synthetic::SyntheticConfig;
