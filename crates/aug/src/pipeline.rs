//! Pipelines (`Compose`), multi-view recipes and the batch API.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::image::{ImageF32, ImageU8, U8_TO_F32};
use crate::resize::{self, CropSource, ResizeScratch, Window};
use crate::rng::{view_seed, TorchGenerator};
use crate::transforms::{apply_in_place, OpScratch, Transform};
use crate::AugError;

/// A pipeline of transforms run in order on one image, as torchvision's
/// `Compose`. At most one `RandomResizedCrop`, which fixes the output size; the
/// input is converted to float with `ToTensor`'s `k / 255` first.
#[derive(Debug, Clone, PartialEq)]
pub struct Compose {
    transforms: Vec<Transform>,
    crop: Option<usize>,
}

/// Per-thread buffers, grown to the largest image seen and then reused, so
/// that the batch loop allocates nothing per image.
#[derive(Debug, Default)]
struct Scratch {
    pre: Vec<f32>,
    /// The whole resized image of a [`ResizeCenterCrop`], before its window is taken.
    resized: Vec<f32>,
    resize: ResizeScratch,
    ops: OpScratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// What a view is computed from.
#[derive(Clone, Copy)]
enum Input<'a> {
    U8(ImageU8<'a>),
    F32(&'a ImageF32),
}

impl Input<'_> {
    fn hw(&self) -> (usize, usize) {
        match self {
            Input::U8(i) => (i.height(), i.width()),
            Input::F32(i) => (i.height(), i.width()),
        }
    }

    /// Writes the image as 3 float planes (grey replicated).
    fn to_planes(self, dst: &mut [f32]) {
        match self {
            Input::U8(img) => {
                let n = img.height() * img.width();
                let (r, rest) = dst.split_at_mut(n);
                let (g, b) = rest.split_at_mut(n);
                if img.channels() == 3 {
                    for (i, p) in img.pixels().chunks_exact(3).enumerate() {
                        r[i] = U8_TO_F32[p[0] as usize];
                        g[i] = U8_TO_F32[p[1] as usize];
                        b[i] = U8_TO_F32[p[2] as usize];
                    }
                } else {
                    for (i, &p) in img.pixels().iter().enumerate() {
                        let v = U8_TO_F32[p as usize];
                        r[i] = v;
                        g[i] = v;
                        b[i] = v;
                    }
                }
            }
            Input::F32(img) => {
                let n = img.height() * img.width();
                for c in 0..3 {
                    let src_c = c.min(img.channels() - 1);
                    dst[c * n..(c + 1) * n]
                        .copy_from_slice(&img.data()[src_c * n..(src_c + 1) * n]);
                }
            }
        }
    }
}

impl Compose {
    /// Checks the structure (at most one crop) and, after the crop, that every
    /// blur kernel fits the output size.
    pub fn new(transforms: Vec<Transform>) -> Result<Self, AugError> {
        let mut crop = None;
        for (i, t) in transforms.iter().enumerate() {
            if crop_size(t).is_some() {
                if crop.is_some() {
                    return Err(AugError::InvalidPipeline(
                        "more than one crop (RandomResizedCrop, ResizeCenterCrop) in one pipeline",
                    ));
                }
                crop = Some(i);
            }
        }
        if let Some([h, w]) = crop.and_then(|k| crop_size(&transforms[k])) {
            for t in &transforms[crop.unwrap_or(0) + 1..] {
                t.check_size(h, w)?;
            }
        }
        Ok(Self { transforms, crop })
    }

    pub fn transforms(&self) -> &[Transform] {
        &self.transforms
    }

    /// `[height, width]` of every output when the pipeline crops; `None` when
    /// the output has the input's size.
    pub fn output_size(&self) -> Option<[usize; 2]> {
        self.crop.and_then(|k| crop_size(&self.transforms[k]))
    }

    /// One view of one image, drawing from `rng` (allocates its output; the
    /// batch calls do not).
    pub fn apply(
        &self,
        image: &ImageU8<'_>,
        rng: &mut TorchGenerator,
    ) -> Result<ImageF32, AugError> {
        self.apply_input(Input::U8(*image), rng)
    }

    /// As [`Compose::apply`] for a float CHW image (1 or 3 channels, values in
    /// `[0, 1]`): what torchvision's v2 pipeline computes on a float tensor.
    pub fn apply_f32(
        &self,
        image: &ImageF32,
        rng: &mut TorchGenerator,
    ) -> Result<ImageF32, AugError> {
        if image.channels() != 1 && image.channels() != 3 {
            return Err(AugError::UnsupportedChannels(image.channels()));
        }
        self.apply_input(Input::F32(image), rng)
    }

    fn apply_input(
        &self,
        input: Input<'_>,
        rng: &mut TorchGenerator,
    ) -> Result<ImageF32, AugError> {
        let [h, w] = self.output_size().unwrap_or_else(|| {
            let (h, w) = input.hw();
            [h, w]
        });
        let mut out = vec![0.0; 3 * h * w];
        SCRATCH.with(|s| self.run(input, rng, &mut out, [h, w], &mut s.borrow_mut()))?;
        ImageF32::new(out, 3, h, w)
    }

    /// The whole pipeline for one view, writing 3 planes into `out`.
    fn run(
        &self,
        input: Input<'_>,
        rng: &mut TorchGenerator,
        out: &mut [f32],
        [oh, ow]: [usize; 2],
        s: &mut Scratch,
    ) -> Result<(), AugError> {
        let (h, w) = input.hw();
        let Some(k) = self.crop else {
            if (h, w) != (oh, ow) {
                return Err(AugError::ImageSizeMismatch {
                    index: 0,
                    height: h,
                    width: w,
                    expected_height: oh,
                    expected_width: ow,
                });
            }
            input.to_planes(out);
            for t in &self.transforms {
                apply_in_place(t, out, h, w, rng, &mut s.ops)?;
            }
            return Ok(());
        };
        // Transforms before the crop run on the full image in float.
        let source = if k == 0 {
            match input {
                Input::U8(img) => CropSource::U8(img),
                Input::F32(img) if img.channels() == 3 => CropSource::F32 {
                    data: img.data(),
                    height: h,
                    width: w,
                },
                Input::F32(_) => {
                    let pre = resize::take(&mut s.pre, 3 * h * w);
                    input.to_planes(pre);
                    CropSource::F32 {
                        data: pre,
                        height: h,
                        width: w,
                    }
                }
            }
        } else {
            let pre = resize::take(&mut s.pre, 3 * h * w);
            input.to_planes(pre);
            for t in &self.transforms[..k] {
                apply_in_place(t, pre, h, w, rng, &mut s.ops)?;
            }
            CropSource::F32 {
                data: pre,
                height: h,
                width: w,
            }
        };
        match &self.transforms[k] {
            Transform::RandomResizedCrop(crop) => {
                let b = crop.sample_params(h, w, rng);
                let win = Window {
                    top: b.top,
                    left: b.left,
                    height: b.height,
                    width: b.width,
                };
                resize::resized_crop(&source, win, oh, ow, crop.antialias(), out, &mut s.resize);
            }
            Transform::ResizeCenterCrop(c) => {
                let [rh, rw] = c.resized(h, w);
                let whole = Window {
                    top: 0,
                    left: 0,
                    height: h,
                    width: w,
                };
                let resized = resize::take(&mut s.resized, 3 * rh * rw);
                resize::resized_crop(
                    &source,
                    whole,
                    rh,
                    rw,
                    c.antialias(),
                    resized,
                    &mut s.resize,
                );
                let [top, left] = c.corner([rh, rw]);
                for (plane, src) in out
                    .chunks_exact_mut(oh * ow)
                    .zip(resized.chunks_exact(rh * rw))
                {
                    for (row, dst) in plane.chunks_exact_mut(ow).enumerate() {
                        let from = (top + row) * rw + left;
                        dst.copy_from_slice(&src[from..from + ow]);
                    }
                }
            }
            _ => return Err(AugError::InvalidPipeline("crop index out of sync")),
        }
        for t in &self.transforms[k + 1..] {
            apply_in_place(t, out, oh, ow, rng, &mut s.ops)?;
        }
        Ok(())
    }

    /// Output `[height, width]` for a batch, checking that a pipeline without a
    /// crop gets images of one size.
    fn batch_size(&self, images: &[ImageU8<'_>]) -> Result<[usize; 2], AugError> {
        if let Some(size) = self.output_size() {
            return Ok(size);
        }
        let Some(first) = images.first() else {
            return Ok([0, 0]);
        };
        let (eh, ew) = (first.height(), first.width());
        for (index, img) in images.iter().enumerate() {
            if (img.height(), img.width()) != (eh, ew) {
                return Err(AugError::ImageSizeMismatch {
                    index,
                    height: img.height(),
                    width: img.width(),
                    expected_height: eh,
                    expected_width: ew,
                });
            }
        }
        Ok([eh, ew])
    }

    /// View `view` of every image, written into one NCHW float buffer (`N x 3 x
    /// H x W`), in parallel on rayon's current pool. Sample `i` draws from
    /// `TorchGenerator::new(view_seed(seed, epoch, sample_ids[i], view))`, so the
    /// result depends on the ids, not on the batch split or the thread count.
    pub fn apply_batch(
        &self,
        images: &[ImageU8<'_>],
        sample_ids: &[u64],
        seed: u64,
        epoch: u64,
        view: u32,
    ) -> Result<ViewBatch, AugError> {
        let [h, w] = self.batch_size(images)?;
        let mut data = vec![0.0f32; images.len() * 3 * h * w];
        let shape = self.apply_batch_into(images, sample_ids, seed, epoch, view, &mut data)?;
        Ok(ViewBatch { data, shape })
    }

    /// As [`Compose::apply_batch`], into a caller's buffer of exactly
    /// `N * 3 * H * W` floats; returns the NCHW shape.
    pub fn apply_batch_into(
        &self,
        images: &[ImageU8<'_>],
        sample_ids: &[u64],
        seed: u64,
        epoch: u64,
        view: u32,
        out: &mut [f32],
    ) -> Result<[usize; 4], AugError> {
        if images.len() != sample_ids.len() {
            return Err(AugError::LengthMismatch {
                images: images.len(),
                ids: sample_ids.len(),
            });
        }
        let [h, w] = self.batch_size(images)?;
        let chw = 3 * h * w;
        let shape = [images.len(), 3, h, w];
        if out.len() != images.len() * chw {
            return Err(AugError::OutputSize {
                expected: images.len() * chw,
                actual: out.len(),
            });
        }
        if images.is_empty() {
            return Ok(shape);
        }
        out.par_chunks_mut(chw)
            .zip(images.par_iter().zip(sample_ids.par_iter()))
            .try_for_each(|(o, (img, &id))| {
                let mut rng = TorchGenerator::new(view_seed(seed, epoch, id, view));
                SCRATCH
                    .with(|s| self.run(Input::U8(*img), &mut rng, o, [h, w], &mut s.borrow_mut()))
            })?;
        Ok(shape)
    }
}

/// One augmented view of a batch: `N x 3 x H x W` floats, contiguous.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewBatch {
    data: Vec<f32>,
    shape: [usize; 4],
}

impl ViewBatch {
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// `[N, 3, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
    /// The batch as a Candle tensor (moves the buffer, no copy on the CPU).
    pub fn into_tensor(
        self,
        device: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        candle_core::Tensor::from_vec(self.data, self.shape.to_vec(), device)
    }
}

/// Several views of every image, each with its own pipeline (and its own
/// generator stream: view `v` is seeded with `view = v`), e.g. the two
/// identical views of SimCLR / MoCo or the asymmetric views of BYOL / MoCo v3.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiView {
    views: Vec<Compose>,
}

impl MultiView {
    pub fn new(views: Vec<Compose>) -> Result<Self, AugError> {
        if views.is_empty() {
            return Err(AugError::InvalidPipeline(
                "MultiView needs at least one view",
            ));
        }
        Ok(Self { views })
    }

    /// `n` views with the same pipeline.
    pub fn repeat(view: Compose, n: usize) -> Result<Self, AugError> {
        Self::new(vec![view; n])
    }

    pub fn views(&self) -> &[Compose] {
        &self.views
    }

    /// Every view of every image: one [`ViewBatch`] per view.
    pub fn apply_batch(
        &self,
        images: &[ImageU8<'_>],
        sample_ids: &[u64],
        seed: u64,
        epoch: u64,
    ) -> Result<Vec<ViewBatch>, AugError> {
        self.views
            .iter()
            .enumerate()
            .map(|(v, p)| p.apply_batch(images, sample_ids, seed, epoch, v as u32))
            .collect()
    }
}

/// The output `[height, width]` of a crop step; `None` for the other transforms.
fn crop_size(t: &Transform) -> Option<[usize; 2]> {
    match t {
        Transform::RandomResizedCrop(c) => Some(c.size()),
        Transform::ResizeCenterCrop(c) => Some(c.size()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Preset;

    #[test]
    fn baseline_and_avx2_kernels_give_bit_identical_views() {
        let px: Vec<u8> = (0..3 * 70 * 90)
            .map(|i| ((i * 37 + i / 7) % 256) as u8)
            .collect();
        let img = ImageU8::new(&px, 70, 90, 3).unwrap();
        for preset in [Preset::SimClr, Preset::MocoV1] {
            let pipe = preset.compose(48).unwrap();
            for seed in 0..12 {
                mocca_core::simd::force_portable(true);
                let slow = pipe.apply(&img, &mut TorchGenerator::new(seed)).unwrap();
                mocca_core::simd::force_portable(false);
                let fast = pipe.apply(&img, &mut TorchGenerator::new(seed)).unwrap();
                let b = |v: &ImageF32| v.data().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(b(&slow), b(&fast), "{} seed {seed}", preset.name());
            }
        }
    }
}
