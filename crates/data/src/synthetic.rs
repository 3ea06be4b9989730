//! A small deterministic labeled image set for smoke tests and examples.
//!
//! Class `c` of `K` is a sinusoidal grating at orientation `π·c/K`, with 2
//! cycles per image side for `c ≤ K/2` and 4 above (so classes `c` and
//! `K − c`, mirror images of each other under a horizontal flip, still differ
//! in frequency). Everything else is drawn per image from its own stream of
//! the seed and carries no class information: the phase (uniform), contrast,
//! base colour (uniform hue), brightness and uniform per-pixel noise.
//!
//! So the label is in the texture, not in pixel positions or colours:
//! nearest-class-mean on raw pixels stays near chance, while a phase- and
//! colour-invariant feature (a gradient-orientation histogram) separates the
//! classes almost perfectly — the kind of feature contrastive training with
//! crops and colour jitter is meant to learn. Images need ≥ 16 pixels a side
//! for the 4-cycle gratings to be resolved, and orientations `π/K` apart stay
//! easy to tell apart up to some 20 classes.
//!
//! The train and test splits are different draws from the same distribution.
//! Image `i` has label `i mod K`, so any prefix is class-balanced.

use crate::dataset::{ImageDataset, ImageShape, Split};
use crate::error::{DataError, Result};
use mocca_core::rng::{derive, SplitMix64};
use rayon::prelude::*;
use std::path::Path;

/// Size and seed of a synthetic set.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    pub classes: usize,
    /// Images of each class in each split.
    pub images_per_class: usize,
    pub height: usize,
    pub width: usize,
    /// 1 (grayscale) or 3.
    pub channels: usize,
    /// Half-width of the uniform per-pixel noise, in 0–255 pixel units.
    pub noise: f32,
    pub seed: u64,
}

impl Default for SyntheticConfig {
    /// 10 classes × 100 images of 32×32 RGB, noise ±24, seed 0.
    fn default() -> Self {
        SyntheticConfig {
            classes: 10,
            images_per_class: 100,
            height: 32,
            width: 32,
            channels: 3,
            noise: 24.0,
            seed: 0,
        }
    }
}

/// HSV (s = 0.5, v = 0.6) to RGB in 0–255 for hue `h` in [0, 1).
fn base_colour(h: f32) -> [f32; 3] {
    let (s, v) = (0.5f32, 0.6f32);
    let sector = h * 6.0;
    let f = sector - sector.floor();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let rgb = match sector as usize % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    };
    rgb.map(|x| x * 255.0)
}

/// Generates `split` of the synthetic set described by `config`.
pub fn generate(config: &SyntheticConfig, split: Split) -> Result<ImageDataset> {
    let c = config;
    if c.classes == 0 || c.images_per_class == 0 || c.height == 0 || c.width == 0 {
        return Err(DataError::InvalidArgument(format!(
            "synthetic set needs at least one class, image and pixel: {c:?}"
        )));
    }
    if c.channels != 1 && c.channels != 3 {
        return Err(DataError::InvalidArgument(format!(
            "synthetic images have 1 or 3 channels, got {}",
            c.channels
        )));
    }
    if !(c.noise.is_finite() && c.noise >= 0.0) {
        return Err(DataError::InvalidArgument(format!(
            "synthetic noise must be finite and >= 0, got {}",
            c.noise
        )));
    }
    let shape = ImageShape {
        height: c.height,
        width: c.width,
        channels: c.channels,
    };
    let len = c.classes * c.images_per_class;
    let split_seed = derive(
        c.seed,
        match split {
            Split::Train => 1,
            Split::Test => 2,
            Split::Unlabeled | Split::TrainUnlabeled => {
                return Err(split.missing_from(Path::new("synthetic"), "the synthetic set"))
            }
        },
    );
    let mut pixels = vec![0u8; len * shape.len()];
    pixels
        .par_chunks_mut(shape.len())
        .enumerate()
        .for_each(|(i, out)| {
            draw(
                c,
                i % c.classes,
                &mut SplitMix64::new(derive(split_seed, i as u64)),
                out,
            )
        });
    let labels = (0..len).map(|i| (i % c.classes) as u32).collect();
    let names = (0..c.classes).map(|k| format!("class_{k}")).collect();
    ImageDataset::from_uniform(shape, pixels, Some(labels), names)
}

fn draw(c: &SyntheticConfig, class: usize, rng: &mut SplitMix64, out: &mut [u8]) {
    use std::f32::consts::PI;
    let theta = PI * class as f32 / c.classes as f32;
    let freq = if 2 * class <= c.classes { 2.0 } else { 4.0 };
    let phase = rng.unit_f32() * 2.0 * PI;
    let contrast = 40.0 + 30.0 * rng.unit_f32();
    let rgb = base_colour(rng.unit_f32());
    let brightness = (rng.unit_f32() - 0.5) * 40.0;
    let base = if c.channels == 3 {
        rgb
    } else {
        [0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]; 3]
    };
    let (dx, dy) = (theta.cos() / c.width as f32, theta.sin() / c.height as f32);
    for y in 0..c.height {
        for x in 0..c.width {
            let wave = (2.0 * PI * freq * (x as f32 * dx + y as f32 * dy) + phase).sin();
            let at = (y * c.width + x) * c.channels;
            for ch in 0..c.channels {
                let noise = (rng.unit_f32() * 2.0 - 1.0) * c.noise;
                let v = base[ch] + brightness + contrast * wave + noise;
                out[at + ch] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::ImageView;

    fn small() -> SyntheticConfig {
        SyntheticConfig {
            classes: 4,
            images_per_class: 5,
            height: 8,
            width: 6,
            ..Default::default()
        }
    }

    #[test]
    fn same_seed_gives_identical_images_other_seed_differs() {
        let a = generate(&small(), Split::Train).unwrap();
        let b = generate(&small(), Split::Train).unwrap();
        let c = generate(&SyntheticConfig { seed: 1, ..small() }, Split::Train).unwrap();
        assert_eq!(a.image(7).pixels, b.image(7).pixels);
        assert_ne!(a.image(7).pixels, c.image(7).pixels);
    }

    #[test]
    fn splits_differ_and_labels_cycle_through_classes() {
        let train = generate(&small(), Split::Train).unwrap();
        let test = generate(&small(), Split::Test).unwrap();
        assert_ne!(train.image(0).pixels, test.image(0).pixels);
        assert_eq!(train.len(), 20);
        assert_eq!(&train.labels().unwrap()[..6], &[0, 1, 2, 3, 0, 1]);
        assert_eq!(train.class_names()[3], "class_3");
        let shape = train.uniform_shape().unwrap();
        assert_eq!((shape.height, shape.width, shape.channels), (8, 6, 3));
    }

    #[test]
    fn grayscale_variant_has_one_channel() {
        let ds = generate(
            &SyntheticConfig {
                channels: 1,
                ..small()
            },
            Split::Test,
        )
        .unwrap();
        assert_eq!(ds.image(0).pixels.len(), 48);
    }

    #[test]
    fn rejects_zero_classes_and_two_channels() {
        for bad in [
            SyntheticConfig {
                classes: 0,
                ..small()
            },
            SyntheticConfig {
                channels: 2,
                ..small()
            },
            SyntheticConfig {
                noise: f32::NAN,
                ..small()
            },
        ] {
            assert!(generate(&bad, Split::Train).is_err(), "{bad:?}");
        }
    }

    /// Nearest-class-mean accuracy on `test` with class means of `feature`
    /// fitted on `train`.
    fn ncm_accuracy(
        train: &ImageDataset,
        test: &ImageDataset,
        feature: impl Fn(ImageView) -> Vec<f32>,
    ) -> f32 {
        let k = train.class_names().len();
        let mut means: Vec<Vec<f32>> = Vec::new();
        for i in 0..train.len() {
            let f = feature(train.image(i));
            if means.is_empty() {
                means = vec![vec![0.0; f.len()]; k];
            }
            for (m, v) in means[train.label(i).unwrap()].iter_mut().zip(f) {
                *m += v;
            }
        }
        let correct = (0..test.len())
            .filter(|&i| {
                let f = feature(test.image(i));
                let dist = |m: &Vec<f32>| -> f32 {
                    let n = (train.len() / k) as f32;
                    m.iter().zip(&f).map(|(a, b)| (a / n - b).powi(2)).sum()
                };
                let best = (0..k)
                    .min_by(|&a, &b| dist(&means[a]).total_cmp(&dist(&means[b])))
                    .unwrap();
                best == test.label(i).unwrap()
            })
            .count();
        correct as f32 / test.len() as f32
    }

    fn pixels(v: ImageView) -> Vec<f32> {
        v.pixels.iter().map(|&p| p as f32).collect()
    }

    /// Magnitude-weighted histogram of luminance-gradient orientations
    /// (mod π, 36 bins), normalised: blind to phase, colour and brightness.
    fn orientation_histogram(v: ImageView) -> Vec<f32> {
        let lum = |x: usize, y: usize| -> f32 {
            let p = &v.pixels[(y * v.width + x) * v.channels..][..v.channels];
            p.iter().map(|&c| c as f32).sum::<f32>() / v.channels as f32
        };
        let mut hist = [0f32; 36];
        for y in 1..v.height - 1 {
            for x in 1..v.width - 1 {
                let gx = lum(x + 1, y) - lum(x - 1, y);
                let gy = lum(x, y + 1) - lum(x, y - 1);
                let angle = gy.atan2(gx).rem_euclid(std::f32::consts::PI);
                let bin = ((angle / std::f32::consts::PI * 36.0) as usize).min(35);
                hist[bin] += (gx * gx + gy * gy).sqrt();
            }
        }
        let total: f32 = hist.iter().sum();
        hist.iter().map(|h| h / total).collect()
    }

    fn default_splits(channels: usize) -> (ImageDataset, ImageDataset) {
        let cfg = SyntheticConfig {
            images_per_class: 30,
            channels,
            ..Default::default()
        };
        (
            generate(&cfg, Split::Train).unwrap(),
            generate(&cfg, Split::Test).unwrap(),
        )
    }

    /// The label must be learnable from texture: an invariant feature finds it.
    #[test]
    fn orientation_feature_separates_the_classes() {
        for channels in [3, 1] {
            let (train, test) = default_splits(channels);
            let acc = ncm_accuracy(&train, &test, orientation_histogram);
            assert!(acc > 0.9, "{channels} channels: accuracy {acc}");
        }
    }

    /// ...and not from raw pixels, so a trained encoder can beat a naive one.
    #[test]
    fn raw_pixels_barely_beat_chance() {
        let (train, test) = default_splits(3);
        let acc = ncm_accuracy(&train, &test, pixels);
        assert!(acc < 0.35, "accuracy {acc}");
    }
}
