//! Image augmentation for self-supervised learning (MoCo v1/v2/v3, SimCLR,
//! BYOL, SimSiam, InstDisc), exact to torchvision and fast enough to never be
//! the bottleneck. [`Preset`] names each paper's (and each reference code's)
//! recipe; BYOL's two views differ ([`Preset::views`]).
//!
//! Every operation reproduces `torchvision.transforms.v2` on float tensors within
//! the tolerances of `tests/golden/aug/README.md` (most bit for bit), and every
//! random draw reproduces torch's CPU generator: a view seeded with `s` gets the
//! parameters torchvision draws after `torch.manual_seed(s)`. Each view of each
//! sample has its own generator, seeded from `(seed, epoch, sample id, view)`
//! ([`view_seed`]), so results do not depend on threads or batch splits.
//!
//! The batch API takes 8-bit HWC images of any size and writes each view as one
//! contiguous `N x 3 x H x W` float buffer, in parallel with rayon, reusing
//! per-thread buffers.
//!
//! ```
//! use mocca_aug::{ImageU8, Preset};
//!
//! // Two 40x48 RGB images (any sizes may be mixed when the pipeline crops).
//! let pixels: Vec<u8> = (0..2 * 40 * 48 * 3).map(|i| (i * 7 % 256) as u8).collect();
//! let (a, b) = pixels.split_at(40 * 48 * 3);
//! let images = [ImageU8::new(a, 40, 48, 3)?, ImageU8::new(b, 40, 48, 3)?];
//!
//! let simclr = Preset::SimClrCifar.two_views(32)?;
//! let views = simclr.apply_batch(&images, &[10, 11], /* seed */ 0, /* epoch */ 3)?;
//! assert_eq!(views.len(), 2);
//! assert_eq!(views[0].shape(), [2, 3, 32, 32]);
//! let query = views[0].clone().into_tensor(&candle_core::Device::Cpu)?;
//! assert_eq!(query.dims(), &[2, 3, 32, 32]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod blur;
mod color;
mod error;
pub mod functional;
mod image;
mod pipeline;
mod presets;
mod resize;
mod rng;
mod simd;
mod transforms;

pub use error::AugError;
pub use image::{ImageF32, ImageU8};
pub use pipeline::{Compose, MultiView, ViewBatch};
pub use presets::{simclr_blur_kernel, Preset};
pub use rng::{view_seed, TorchGenerator};
pub use transforms::{
    ColorJitter, CropBox, GaussianBlur, Jitter, JitterParams, Normalize, RandomApply,
    RandomGrayscale, RandomHorizontalFlip, RandomResizedCrop, RandomSolarize, ResizeCenterCrop,
    Transform, DEFAULT_RATIO,
};
