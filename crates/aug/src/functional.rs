//! Stateless operations on one float CHW image with explicit parameters, as
//! `torchvision.transforms.v2.functional` offers them. They run the same
//! kernels as the pipelines (which add the random draws and reuse buffers).

use crate::blur::{self, BlurScratch};
use crate::color;
use crate::image::ImageF32;
use crate::resize::{self, CropSource, ResizeScratch, Window};
use crate::AugError;

/// `resized_crop(img, top, left, height, width, size=[h, w], antialias)`:
/// crop (zero-padded where the box leaves the image), then bilinear resize with
/// `align_corners=False`. 3-channel images.
pub fn resized_crop(
    img: &ImageF32,
    top: i64,
    left: i64,
    height: usize,
    width: usize,
    size: [usize; 2],
    antialias: bool,
) -> Result<ImageF32, AugError> {
    img.require_rgb()?;
    if height == 0 || width == 0 {
        return Err(AugError::EmptyImage {
            what: "crop box",
            height,
            width,
        });
    }
    if size[0] == 0 || size[1] == 0 {
        return Err(AugError::EmptyImage {
            what: "output size",
            height: size[0],
            width: size[1],
        });
    }
    let (h, w) = (img.height() as i64, img.width() as i64);
    let inside = top >= 0 && left >= 0 && top + height as i64 <= h && left + width as i64 <= w;
    let padded;
    let (src, win) = if inside {
        let src = CropSource::F32 {
            data: img.data(),
            height: img.height(),
            width: img.width(),
        };
        let win = Window {
            top: top as usize,
            left: left as usize,
            height,
            width,
        };
        (src, win)
    } else {
        let mut data = vec![0.0f32; 3 * height * width];
        for c in 0..3 {
            for y in 0..height as i64 {
                let sy = top + y;
                if !(0..h).contains(&sy) {
                    continue;
                }
                for x in 0..width as i64 {
                    let sx = left + x;
                    if (0..w).contains(&sx) {
                        data[(c * height + y as usize) * width + x as usize] =
                            img.data()[((c as i64 * h + sy) * w + sx) as usize];
                    }
                }
            }
        }
        padded = data;
        let src = CropSource::F32 {
            data: &padded,
            height,
            width,
        };
        let win = Window {
            top: 0,
            left: 0,
            height,
            width,
        };
        (src, win)
    };
    let mut out = vec![0.0f32; 3 * size[0] * size[1]];
    resize::resized_crop(
        &src,
        win,
        size[0],
        size[1],
        antialias,
        &mut out,
        &mut ResizeScratch::default(),
    );
    ImageF32::new(out, 3, size[0], size[1])
}

/// `horizontal_flip`.
pub fn horizontal_flip(img: &mut ImageF32) {
    let w = img.width();
    color::hflip(img.data_mut(), w);
}

/// `adjust_brightness`: `clamp(x * factor, 0, 1)`.
pub fn adjust_brightness(img: &mut ImageF32, factor: f32) {
    color::brightness(img.data_mut(), factor);
}

/// `adjust_contrast`: blend with the mean of the grey image (one scalar).
pub fn adjust_contrast(img: &mut ImageF32, factor: f32) -> Result<(), AugError> {
    img.require_rgb()?;
    color::contrast(img.data_mut(), factor);
    Ok(())
}

/// `adjust_saturation`: blend with the per-pixel grey image.
pub fn adjust_saturation(img: &mut ImageF32, factor: f32) -> Result<(), AugError> {
    img.require_rgb()?;
    color::saturation(img.data_mut(), factor);
    Ok(())
}

/// `adjust_hue`: rotate the hue by `factor` turns, `factor` in `[-0.5, 0.5]`.
pub fn adjust_hue(img: &mut ImageF32, factor: f32) -> Result<(), AugError> {
    img.require_rgb()?;
    if !(-0.5..=0.5).contains(&factor) {
        return Err(AugError::InvalidHueFactor(factor as f64));
    }
    color::hue(img.data_mut(), factor);
    Ok(())
}

/// `rgb_to_grayscale(num_output_channels=3)`.
pub fn rgb_to_grayscale(img: &mut ImageF32) -> Result<(), AugError> {
    img.require_rgb()?;
    color::grayscale(img.data_mut());
    Ok(())
}

/// `gaussian_blur(kernel_size=[kx, ky], sigma=[sx, sy])` (x = along the width),
/// reflect padding. Any number of channels.
pub fn gaussian_blur(
    img: &mut ImageF32,
    kernel_size: [usize; 2],
    sigma: [f32; 2],
) -> Result<(), AugError> {
    let [kx, ky] = kernel_size;
    if kx == 0 || ky == 0 || kx % 2 == 0 || ky % 2 == 0 {
        return Err(AugError::InvalidKernelSize { kx, ky });
    }
    if !(sigma[0] > 0.0 && sigma[1] > 0.0 && sigma[0].is_finite() && sigma[1].is_finite()) {
        return Err(AugError::InvalidRange {
            what: "gaussian blur sigma",
            low: sigma[0] as f64,
            high: sigma[1] as f64,
            reason: "sigmas must be positive and finite",
        });
    }
    let (c, h, w) = (img.channels(), img.height(), img.width());
    if kx / 2 >= w || ky / 2 >= h {
        return Err(AugError::BlurKernelTooLarge {
            kx,
            ky,
            height: h,
            width: w,
        });
    }
    blur::gaussian_blur(
        img.data_mut(),
        c,
        h,
        w,
        kernel_size,
        sigma,
        &mut BlurScratch::default(),
    );
    Ok(())
}

/// `solarize`: `x >= threshold ? 1 - x : x` (compared in float32).
pub fn solarize(img: &mut ImageF32, threshold: f32) {
    color::solarize(img.data_mut(), threshold);
}

/// `normalize`: `(x - mean[c]) / std[c]`.
pub fn normalize(img: &mut ImageF32, mean: [f32; 3], std: [f32; 3]) -> Result<(), AugError> {
    img.require_rgb()?;
    crate::Normalize::new(mean.map(f64::from), std.map(f64::from))?;
    color::normalize(img.data_mut(), mean, std);
    Ok(())
}
