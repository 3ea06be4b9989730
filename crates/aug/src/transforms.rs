//! The transforms of a pipeline, with torchvision v2's parameters, validation
//! and random draws (one generator per view, drawn in pipeline order).

use crate::blur::{self, BlurScratch};
use crate::color;
use crate::rng::TorchGenerator;
use crate::AugError;

/// torchvision's default aspect-ratio range of `RandomResizedCrop`, `(3/4, 4/3)`.
pub const DEFAULT_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

fn check_probability(what: &'static str, p: f64) -> Result<f32, AugError> {
    if (0.0..=1.0).contains(&p) {
        Ok(p as f32)
    } else {
        Err(AugError::InvalidProbability { what, p })
    }
}

fn check_positive_range(what: &'static str, r: (f64, f64)) -> Result<(), AugError> {
    let (low, high) = r;
    let reason = if !(low.is_finite() && high.is_finite()) {
        "bounds must be finite"
    } else if low > high {
        "low > high (reversed range)"
    } else if low <= 0.0 {
        "bounds must be positive"
    } else {
        return Ok(());
    };
    Err(AugError::InvalidRange {
        what,
        low,
        high,
        reason,
    })
}

/// One draw of `torch.rand(1)` compared with `f32(p)`: how every v2 `Random*`
/// transform and `RandomApply` decide (the draw happens even for p = 0 or 1).
fn coin(rng: &mut TorchGenerator, p: f32) -> bool {
    rng.rand() < p
}

/// A crop box in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// `RandomResizedCrop(size, scale, ratio, antialias)` (Szegedy et al. 2015's
/// "Inception" crop): a random box of `scale` times the area and log-uniform
/// aspect ratio in `ratio`, resized bilinearly to `size`.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomResizedCrop {
    size: [usize; 2],
    scale: (f64, f64),
    ratio: (f64, f64),
    log_ratio: (f32, f32),
    antialias: bool,
}

impl RandomResizedCrop {
    /// `size` is `[height, width]`. torchvision v2's default for tensors is
    /// `antialias=True`, and [`DEFAULT_RATIO`] its default ratio.
    pub fn new(
        size: [usize; 2],
        scale: (f64, f64),
        ratio: (f64, f64),
        antialias: bool,
    ) -> Result<Self, AugError> {
        if size[0] == 0 || size[1] == 0 {
            return Err(AugError::EmptyImage {
                what: "RandomResizedCrop output size",
                height: size[0],
                width: size[1],
            });
        }
        check_positive_range("RandomResizedCrop scale", scale)?;
        check_positive_range("RandomResizedCrop ratio", ratio)?;
        // torch.log(torch.tensor(ratio)): float32 logs of the float32 ratios.
        let log = |r: f64| (r as f32 as f64).ln() as f32;
        Ok(Self {
            size,
            scale,
            ratio,
            log_ratio: (log(ratio.0), log(ratio.1)),
            antialias,
        })
    }

    /// Output `[height, width]`.
    pub fn size(&self) -> [usize; 2] {
        self.size
    }
    pub fn scale(&self) -> (f64, f64) {
        self.scale
    }
    pub fn ratio(&self) -> (f64, f64) {
        self.ratio
    }
    pub fn antialias(&self) -> bool {
        self.antialias
    }

    /// torchvision's `get_params` / v2 `make_params`: up to 10 attempts of
    /// (scale, log-ratio) draws, each accepted box followed by two `randint`
    /// draws for its corner, else the centred fallback box. Sides round half to
    /// even, as Python's `round` does.
    pub fn sample_params(&self, height: usize, width: usize, rng: &mut TorchGenerator) -> CropBox {
        if height == 0 || width == 0 {
            return CropBox {
                top: 0,
                left: 0,
                height,
                width,
            };
        }
        let area = (height * width) as f64;
        for _ in 0..10 {
            let target_area = area * rng.uniform(self.scale.0, self.scale.1) as f64;
            let log_ratio = rng.uniform(self.log_ratio.0 as f64, self.log_ratio.1 as f64);
            let aspect = (log_ratio as f64).exp() as f32 as f64;
            let w = (target_area * aspect).sqrt().round_ties_even();
            let h = (target_area / aspect).sqrt().round_ties_even();
            if w > 0.0 && h > 0.0 && w <= width as f64 && h <= height as f64 {
                let (w, h) = (w as usize, h as usize);
                let top = rng.randint(0, (height - h + 1) as i64) as usize;
                let left = rng.randint(0, (width - w + 1) as i64) as usize;
                return CropBox {
                    top,
                    left,
                    height: h,
                    width: w,
                };
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (h, w) = if in_ratio < self.ratio.0 {
            let h = (width as f64 / self.ratio.0).round_ties_even() as usize;
            (h, width)
        } else if in_ratio > self.ratio.1 {
            let w = (height as f64 * self.ratio.1).round_ties_even() as usize;
            (height, w)
        } else {
            (height, width)
        };
        // torchvision can round a side to 0 here for extreme ratios and then
        // fails in the resize; keep at least one pixel instead.
        let (h, w) = (h.clamp(1, height), w.clamp(1, width));
        CropBox {
            top: (height - h) / 2,
            left: (width - w) / 2,
            height: h,
            width: w,
        }
    }
}

/// A jitter amount as torchvision's `ColorJitter` takes it: one number `v`
/// (the range `[c - v, c + v]` around the neutral value `c`) or an explicit range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    Strength(f64),
    Range(f64, f64),
}

impl From<f64> for Jitter {
    fn from(v: f64) -> Self {
        Jitter::Strength(v)
    }
}

impl From<(f64, f64)> for Jitter {
    fn from((a, b): (f64, f64)) -> Self {
        Jitter::Range(a, b)
    }
}

/// The factors one `ColorJitter` call applies, and in which order
/// (`order` holds 0 brightness, 1 contrast, 2 saturation, 3 hue).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterParams {
    pub order: [u8; 4],
    pub brightness: Option<f32>,
    pub contrast: Option<f32>,
    pub saturation: Option<f32>,
    pub hue: Option<f32>,
}

/// `ColorJitter(brightness, contrast, saturation, hue)`: random factors, applied
/// in a random order per sample (Howard 2013; the SimCLR "color distortion").
#[derive(Debug, Clone, PartialEq)]
pub struct ColorJitter {
    ranges: [Option<(f64, f64)>; 4],
}

impl ColorJitter {
    /// torchvision's `_check_input`: a number `v >= 0` means `[max(0, 1 - v), 1 + v]`
    /// (hue: `[-v, v]`); a range must satisfy `0 <= low <= high` (hue:
    /// `-0.5 <= low <= high <= 0.5`); a range equal to the neutral value disables
    /// that adjustment (no draw).
    pub fn new(
        brightness: impl Into<Jitter>,
        contrast: impl Into<Jitter>,
        saturation: impl Into<Jitter>,
        hue: impl Into<Jitter>,
    ) -> Result<Self, AugError> {
        Ok(Self {
            ranges: [
                Self::check("brightness", brightness.into(), 1.0, (0.0, f64::INFINITY))?,
                Self::check("contrast", contrast.into(), 1.0, (0.0, f64::INFINITY))?,
                Self::check("saturation", saturation.into(), 1.0, (0.0, f64::INFINITY))?,
                Self::check("hue", hue.into(), 0.0, (-0.5, 0.5))?,
            ],
        })
    }

    /// SimCLR's colour distortion of strength `s`:
    /// `ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s)` (Chen et al. 2020, appendix A).
    pub fn simclr(strength: f64) -> Result<Self, AugError> {
        Self::new(
            0.8 * strength,
            0.8 * strength,
            0.8 * strength,
            0.2 * strength,
        )
    }

    fn check(
        what: &'static str,
        value: Jitter,
        center: f64,
        bound: (f64, f64),
    ) -> Result<Option<(f64, f64)>, AugError> {
        let (low, high) = match value {
            Jitter::Strength(v) => {
                if !(v >= 0.0 && v.is_finite()) {
                    return Err(AugError::InvalidJitter { what, value: v });
                }
                let low = center - v;
                // brightness/contrast/saturation clip their lower end at 0.
                let low = if center == 1.0 { low.max(0.0) } else { low };
                (low, center + v)
            }
            Jitter::Range(a, b) => (a, b),
        };
        if !(low.is_finite() && high.is_finite()) {
            return Err(AugError::InvalidRange {
                what,
                low,
                high,
                reason: "bounds must be finite",
            });
        }
        if !(bound.0 <= low && low <= high && high <= bound.1) {
            return Err(AugError::InvalidRange {
                what,
                low,
                high,
                reason: if center == 0.0 {
                    "hue needs -0.5 <= low <= high <= 0.5"
                } else {
                    "needs 0 <= low <= high"
                },
            });
        }
        Ok(if low == center && high == center {
            None
        } else {
            Some((low, high))
        })
    }

    /// `[brightness, contrast, saturation, hue]` ranges; `None` = disabled.
    pub fn ranges(&self) -> [Option<(f64, f64)>; 4] {
        self.ranges
    }

    /// `make_params`: `randperm(4)` (3 draws, always), then one uniform draw per
    /// enabled factor in the order brightness, contrast, saturation, hue.
    pub fn sample_params(&self, rng: &mut TorchGenerator) -> JitterParams {
        let order = rng.randperm4();
        let mut f = [None; 4];
        for (slot, range) in f.iter_mut().zip(&self.ranges) {
            *slot = range.map(|(lo, hi)| rng.uniform(lo, hi));
        }
        JitterParams {
            order,
            brightness: f[0],
            contrast: f[1],
            saturation: f[2],
            hue: f[3],
        }
    }
}

/// Applies drawn jitter factors in their order to 3 planes.
pub(crate) fn apply_jitter(img: &mut [f32], p: &JitterParams) {
    for &id in &p.order {
        match id {
            0 => {
                if let Some(f) = p.brightness {
                    color::brightness(img, f)
                }
            }
            1 => {
                if let Some(f) = p.contrast {
                    color::contrast(img, f)
                }
            }
            2 => {
                if let Some(f) = p.saturation {
                    color::saturation(img, f)
                }
            }
            _ => {
                if let Some(f) = p.hue {
                    color::hue(img, f)
                }
            }
        }
    }
}

/// `GaussianBlur(kernel_size, sigma)`: sigma drawn uniformly from a range for
/// every sample, the same along both axes.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianBlur {
    kernel: [usize; 2],
    sigma: (f64, f64),
}

impl GaussianBlur {
    /// `kernel_size` is `[x, y]` (width, height), as torchvision orders it; both odd.
    /// `sigma` is the `(low, high)` range, `0 < low <= high`.
    pub fn new(kernel_size: [usize; 2], sigma: (f64, f64)) -> Result<Self, AugError> {
        let [kx, ky] = kernel_size;
        if kx == 0 || ky == 0 || kx % 2 == 0 || ky % 2 == 0 {
            return Err(AugError::InvalidKernelSize { kx, ky });
        }
        check_positive_range("GaussianBlur sigma", sigma)?;
        Ok(Self {
            kernel: kernel_size,
            sigma,
        })
    }

    /// `[x, y]` kernel size.
    pub fn kernel_size(&self) -> [usize; 2] {
        self.kernel
    }
    pub fn sigma(&self) -> (f64, f64) {
        self.sigma
    }

    fn check_fits(&self, height: usize, width: usize) -> Result<(), AugError> {
        let [kx, ky] = self.kernel;
        if kx / 2 < width && ky / 2 < height {
            Ok(())
        } else {
            Err(AugError::BlurKernelTooLarge {
                kx,
                ky,
                height,
                width,
            })
        }
    }
}

/// `Normalize(mean, std)`: `(x - mean[c]) / std[c]` per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    mean: [f32; 3],
    std: [f32; 3],
}

impl Normalize {
    pub fn new(mean: [f64; 3], std: [f64; 3]) -> Result<Self, AugError> {
        for c in 0..3 {
            if !mean[c].is_finite() {
                return Err(AugError::InvalidNormalize {
                    what: "mean",
                    channel: c,
                    value: mean[c],
                    reason: "must be finite",
                });
            }
            if !(std[c].is_finite() && std[c] != 0.0) {
                return Err(AugError::InvalidNormalize {
                    what: "std",
                    channel: c,
                    value: std[c],
                    reason: "must be finite and non-zero",
                });
            }
        }
        Ok(Self {
            mean: mean.map(|m| m as f32),
            std: std.map(|s| s as f32),
        })
    }

    /// ImageNet statistics, torchvision's reference recipes.
    pub fn imagenet() -> Self {
        Self {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    /// The statistics the MoCo CIFAR-10 colab (and many CIFAR codebases after
    /// kuangliu/pytorch-cifar) normalise with: the training set's mean, and a std
    /// of `(0.2023, 0.1994, 0.2010)`, smaller than the per-pixel one of
    /// [`Normalize::cifar10`].
    pub fn cifar10_colab() -> Self {
        Self {
            mean: [0.4914, 0.4822, 0.4465],
            std: [0.2023, 0.1994, 0.2010],
        }
    }

    /// CIFAR-10 training-set statistics (per-pixel std), as solo-learn uses them.
    pub fn cifar10() -> Self {
        Self {
            mean: [0.4914, 0.4822, 0.4465],
            std: [0.2470, 0.2435, 0.2616],
        }
    }

    pub fn mean(&self) -> [f32; 3] {
        self.mean
    }
    pub fn std(&self) -> [f32; 3] {
        self.std
    }
}

/// A probability, kept as torch compares it (`rand < f32(p)`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Prob(f32);

/// `RandomHorizontalFlip(p)`.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomHorizontalFlip(Prob);

impl RandomHorizontalFlip {
    pub fn new(p: f64) -> Result<Self, AugError> {
        Ok(Self(Prob(check_probability("RandomHorizontalFlip", p)?)))
    }
}

/// `RandomGrayscale(p)`: the grey image (0.2989 R + 0.587 G + 0.114 B) in all
/// three channels.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomGrayscale(Prob);

impl RandomGrayscale {
    pub fn new(p: f64) -> Result<Self, AugError> {
        Ok(Self(Prob(check_probability("RandomGrayscale", p)?)))
    }
}

/// `RandomSolarize(threshold, p)`: invert pixels `>= threshold` (BYOL's view 2).
#[derive(Debug, Clone, PartialEq)]
pub struct RandomSolarize {
    threshold: f32,
    p: Prob,
}

impl RandomSolarize {
    pub fn new(threshold: f64, p: f64) -> Result<Self, AugError> {
        if !(threshold.is_finite() && threshold <= 1.0) {
            return Err(AugError::InvalidThreshold(threshold));
        }
        Ok(Self {
            threshold: threshold as f32,
            p: Prob(check_probability("RandomSolarize", p)?),
        })
    }
}

/// `RandomApply(transforms, p)`: one draw decides whether all of `transforms`
/// run (they then draw their own parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct RandomApply {
    transforms: Vec<Transform>,
    p: Prob,
}

impl RandomApply {
    /// The wrapped transforms keep the image size (no crop inside).
    pub fn new(transforms: Vec<Transform>, p: f64) -> Result<Self, AugError> {
        let p = Prob(check_probability("RandomApply", p)?);
        if transforms.iter().any(Transform::changes_size) {
            return Err(AugError::InvalidPipeline(
                "RandomResizedCrop inside RandomApply would give views of varying size",
            ));
        }
        Ok(Self { transforms, p })
    }
}

/// torchvision's evaluation preprocessing, `Resize(resize)` then `CenterCrop(size)`
/// (`main_lincls.py`'s and solo-learn's validation transform at 256 / 224): the shorter side
/// resized to `resize` and the longer in proportion, `int(resize · long / short)` as
/// torchvision computes it, bilinearly (antialiased when `antialias`, as
/// [`RandomResizedCrop`] resizes), then the centred `size x size` window, its corner at
/// `round((side − size) / 2)` (Python's rounding). Deterministic.
#[derive(Debug, Clone, PartialEq)]
pub struct ResizeCenterCrop {
    resize: usize,
    size: usize,
    antialias: bool,
}

impl ResizeCenterCrop {
    /// `size` must not exceed `resize` (torchvision would pad).
    pub fn new(resize: usize, size: usize, antialias: bool) -> Result<Self, AugError> {
        if size == 0 || size > resize {
            return Err(AugError::InvalidRange {
                what: "ResizeCenterCrop (crop, resize)",
                low: size as f64,
                high: resize as f64,
                reason: "the crop must be at least 1 px and fit the resized shorter side",
            });
        }
        Ok(Self {
            resize,
            size,
            antialias,
        })
    }

    /// Output `[height, width]`.
    pub fn size(&self) -> [usize; 2] {
        [self.size, self.size]
    }

    pub fn resize(&self) -> usize {
        self.resize
    }

    pub fn antialias(&self) -> bool {
        self.antialias
    }

    /// `[height, width]` after the resize of an `height x width` image.
    pub fn resized(&self, height: usize, width: usize) -> [usize; 2] {
        let (short, long) = (height.min(width), height.max(width));
        let long = (self.resize as f64 * long as f64 / short.max(1) as f64) as usize;
        if height <= width {
            [self.resize, long]
        } else {
            [long, self.resize]
        }
    }

    /// The top-left corner of the crop in an image of `[height, width]` (already resized).
    pub fn corner(&self, [height, width]: [usize; 2]) -> [usize; 2] {
        let at = |side: usize| ((side - self.size) as f64 / 2.0).round_ties_even() as usize;
        [at(height), at(width)]
    }
}

/// One step of a [`crate::Compose`].
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    RandomResizedCrop(RandomResizedCrop),
    ResizeCenterCrop(ResizeCenterCrop),
    RandomHorizontalFlip(RandomHorizontalFlip),
    ColorJitter(ColorJitter),
    RandomGrayscale(RandomGrayscale),
    GaussianBlur(GaussianBlur),
    RandomSolarize(RandomSolarize),
    Normalize(Normalize),
    RandomApply(RandomApply),
}

macro_rules! impl_from {
    ($($t:ident),*) => {$(
        impl From<$t> for Transform {
            fn from(t: $t) -> Self {
                Transform::$t(t)
            }
        }
    )*};
}
impl_from!(
    RandomResizedCrop,
    ResizeCenterCrop,
    RandomHorizontalFlip,
    ColorJitter,
    RandomGrayscale,
    GaussianBlur,
    RandomSolarize,
    Normalize,
    RandomApply
);

impl Transform {
    pub(crate) fn changes_size(&self) -> bool {
        match self {
            Transform::RandomResizedCrop(_) | Transform::ResizeCenterCrop(_) => true,
            Transform::RandomApply(a) => a.transforms.iter().any(Transform::changes_size),
            _ => false,
        }
    }

    /// Checks every blur (here or nested) against a known image size.
    pub(crate) fn check_size(&self, height: usize, width: usize) -> Result<(), AugError> {
        match self {
            Transform::GaussianBlur(b) => b.check_fits(height, width),
            Transform::RandomApply(a) => a
                .transforms
                .iter()
                .try_for_each(|t| t.check_size(height, width)),
            _ => Ok(()),
        }
    }
}

/// Scratch buffers of the size-preserving transforms.
#[derive(Debug, Default)]
pub(crate) struct OpScratch {
    pub blur: BlurScratch,
}

/// Runs one size-preserving transform on 3 planes of `height x width`, drawing
/// its parameters from `rng` in torchvision's order.
pub(crate) fn apply_in_place(
    t: &Transform,
    img: &mut [f32],
    height: usize,
    width: usize,
    rng: &mut TorchGenerator,
    s: &mut OpScratch,
) -> Result<(), AugError> {
    match t {
        Transform::RandomResizedCrop(_) | Transform::ResizeCenterCrop(_) => {
            return Err(AugError::InvalidPipeline(
                "a crop can only run as a pipeline step",
            ))
        }
        Transform::RandomHorizontalFlip(RandomHorizontalFlip(p)) => {
            if coin(rng, p.0) {
                color::hflip(img, width);
            }
        }
        Transform::ColorJitter(j) => {
            let params = j.sample_params(rng);
            apply_jitter(img, &params);
        }
        Transform::RandomGrayscale(RandomGrayscale(p)) => {
            if coin(rng, p.0) {
                color::grayscale(img);
            }
        }
        Transform::GaussianBlur(b) => {
            let sigma = rng.uniform(b.sigma.0, b.sigma.1);
            b.check_fits(height, width)?;
            blur::gaussian_blur(img, 3, height, width, b.kernel, [sigma, sigma], &mut s.blur);
        }
        Transform::RandomSolarize(r) => {
            if coin(rng, r.p.0) {
                color::solarize(img, r.threshold);
            }
        }
        Transform::Normalize(n) => color::normalize(img, n.mean, n.std),
        Transform::RandomApply(a) => {
            if coin(rng, a.p.0) {
                for t in &a.transforms {
                    apply_in_place(t, img, height, width, rng, s)?;
                }
            }
        }
    }
    Ok(())
}
