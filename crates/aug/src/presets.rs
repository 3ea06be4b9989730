//! The published augmentation recipes.

use std::str::FromStr;

use crate::pipeline::{Compose, MultiView};
use crate::transforms::{
    ColorJitter, GaussianBlur, Normalize, RandomApply, RandomGrayscale, RandomHorizontalFlip,
    RandomResizedCrop, RandomSolarize, Transform, DEFAULT_RATIO,
};
use crate::AugError;

/// A named recipe. Each builds a torchvision v2 pipeline on float tensors
/// (`RandomResizedCrop` with `antialias=True`, v2's default for tensors) whose
/// order and parameters follow the reference code cited on each variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// MoCo v1 (He et al. 2020; `main_moco.py` of facebookresearch/moco):
    /// crop scale (0.2, 1), grayscale p = 0.2, ColorJitter(0.4, 0.4, 0.4, 0.4)
    /// always applied, horizontal flip, ImageNet normalisation; 224 px.
    MocoV1,
    /// MoCo v2 (Chen et al. 2020, "Improved Baselines"; `main_moco.py
    /// --aug-plus`): crop scale (0.2, 1), ColorJitter(0.4, 0.4, 0.4, 0.1) with
    /// p = 0.8, grayscale p = 0.2, Gaussian blur sigma in [0.1, 2] with p = 0.5,
    /// horizontal flip, ImageNet normalisation; 224 px. The reference blurs with
    /// PIL's `GaussianBlur(radius=sigma)`, which has no kernel size; here the
    /// torchvision kernel is SimCLR's 10 % of the side, made odd (23 at 224 px).
    MocoV2,
    /// SimCLR (Chen et al. 2020, appendix A; lightly's `SimCLRTransform`): crop
    /// scale (0.08, 1), horizontal flip, ColorJitter(0.8, 0.8, 0.8, 0.2) (strength
    /// s = 1) with p = 0.8, grayscale p = 0.2, Gaussian blur sigma in [0.1, 2],
    /// kernel 10 % of the side made odd, p = 0.5, ImageNet normalisation; 224 px.
    SimClr,
    /// MoCo v1 at 32 px for CIFAR-10: the MoCo v1 recipe (its jitter has no
    /// strength knob and is kept at 0.4 on all four), the CIFAR-10 training
    /// set's per-pixel statistics ([`Normalize::cifar10`]).
    MocoV1Cifar,
    /// MoCo v2 at 32 px for CIFAR-10, as the MoCo CIFAR-10 demo notebook
    /// (facebookresearch/moco, `colab/moco_cifar10_demo.ipynb`) does it: crop
    /// scale (0.08, 1), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) (= SimCLR
    /// strength 0.5) p = 0.8, grayscale p = 0.2, no blur, and the colab's
    /// normalisation ([`Normalize::cifar10_colab`]). lightly's
    /// `MoCoV2Transform(input_size=32, gaussian_blur=0)` is the same pipeline
    /// with ImageNet statistics, i.e. [`Preset::SimClrCifar`].
    MocoV2Cifar,
    /// SimCLR for CIFAR-10 (Chen et al. 2020, appendix B.9) as lightly's
    /// CIFAR-10 benchmark runs it (`SimCLRTransform(input_size=32,
    /// cj_strength=0.5, gaussian_blur=0.0)`): 32 px, colour strength s = 0.5,
    /// no blur, lightly's default ImageNet normalisation.
    SimClrCifar,
    /// InstDisc at 32 px for CIFAR-10, as lemniscate's `cifar.py` builds it
    /// (zhirongw/lemniscate.pytorch): crop scale (0.2, 1), ColorJitter(0.4,
    /// 0.4, 0.4, 0.4) always applied, grayscale p = 0.2, no flip (commented
    /// out there), and its normalisation ([`Normalize::cifar10_colab`]'s values).
    InstDiscCifar,
    /// BYOL (Grill et al. 2020, table 6; lightly's `BYOLTransform`, `BYOLView1Transform` and
    /// `BYOLView2Transform`): two different views, each crop scale (0.08, 1), horizontal
    /// flip, ColorJitter(0.4, 0.4, 0.2, 0.1) with p = 0.8, grayscale p = 0.2, Gaussian blur
    /// sigma in [0.1, 2] (kernel as [`Preset::SimClr`]'s) with p = 1.0 in view 1 and 0.1 in
    /// view 2, solarisation (PIL's threshold 128) with p = 0 and 0.2, ImageNet
    /// normalisation; 224 px. [`Preset::compose`] is view 1; [`Preset::views`] gives both.
    Byol,
    /// BYOL at 32 px as lightly's CIFAR-10 benchmark runs it
    /// (`BYOLView1Transform(input_size=32, gaussian_blur=0.0)`, the same for view 2): the
    /// views of [`Preset::Byol`] without blur, so they differ only in view 2's solarisation
    /// (p = 0.2). Also MoCo v3's CIFAR recipe: moco-v3's `main_moco.py` follows BYOL's
    /// augmentation (its flip comes last, which commutes with the colour operations).
    ByolCifar,
    /// SimSiam (Chen & He 2021, appendix A; lightly's `SimSiamTransform`): crop scale
    /// (0.2, 1), horizontal flip, ColorJitter(0.4, 0.4, 0.4, 0.1) with p = 0.8, grayscale
    /// p = 0.2, Gaussian blur as [`Preset::SimClr`]'s with p = 0.5, ImageNet normalisation;
    /// 224 px.
    SimSiam,
    /// SimSiam at 32 px as lightly's CIFAR-10 benchmark runs it
    /// (`SimSiamTransform(input_size=32, gaussian_blur=0.0)`): [`Preset::SimSiam`] without
    /// blur.
    SimSiamCifar,
    /// solo-learn's MoCo V2+ views (vturrisi/solo-learn,
    /// `scripts/pretrain/imagenet-100/augmentations/symmetric_weak.yaml` through
    /// `solo/data/pretrain_dataloader.py`): [`Preset::MocoV2`] with SimCLR's crop scale
    /// (0.08, 1): ColorJitter(0.4, 0.4, 0.4, 0.1) with p = 0.8, grayscale p = 0.2, Gaussian
    /// blur sigma in [0.1, 2] with p = 0.5, horizontal flip last (solo-learn's order),
    /// ImageNet normalisation; 224 px. solo-learn resamples the crop bicubically and blurs
    /// with PIL's radius; here the crop is antialiased bilinear and the blur kernel
    /// [`Preset::SimClr`]'s.
    MocoV2Plus,
}

impl Preset {
    pub const ALL: [Preset; 12] = [
        Preset::MocoV1,
        Preset::MocoV2,
        Preset::SimClr,
        Preset::MocoV1Cifar,
        Preset::MocoV2Cifar,
        Preset::SimClrCifar,
        Preset::InstDiscCifar,
        Preset::Byol,
        Preset::ByolCifar,
        Preset::SimSiam,
        Preset::SimSiamCifar,
        Preset::MocoV2Plus,
    ];

    /// The name [`Preset::from_str`] parses: `mocov1`, `mocov2`, `simclr`, `byol`,
    /// `simsiam`, the same with `-cifar`, `mocov2plus` and `instdisc-cifar`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::MocoV1 => "mocov1",
            Preset::MocoV2 => "mocov2",
            Preset::SimClr => "simclr",
            Preset::MocoV1Cifar => "mocov1-cifar",
            Preset::MocoV2Cifar => "mocov2-cifar",
            Preset::SimClrCifar => "simclr-cifar",
            Preset::InstDiscCifar => "instdisc-cifar",
            Preset::Byol => "byol",
            Preset::ByolCifar => "byol-cifar",
            Preset::SimSiam => "simsiam",
            Preset::SimSiamCifar => "simsiam-cifar",
            Preset::MocoV2Plus => "mocov2plus",
        }
    }

    /// The output side of the paper's setting: 224, or 32 for the CIFAR variants.
    pub fn default_size(self) -> usize {
        match self {
            Preset::MocoV1
            | Preset::MocoV2
            | Preset::SimClr
            | Preset::Byol
            | Preset::SimSiam
            | Preset::MocoV2Plus => 224,
            _ => 32,
        }
    }

    /// The normalisation of the recipe's reference (see each variant).
    pub fn normalize(self) -> Normalize {
        match self {
            Preset::MocoV1
            | Preset::MocoV2
            | Preset::SimClr
            | Preset::SimClrCifar
            | Preset::Byol
            | Preset::ByolCifar
            | Preset::SimSiam
            | Preset::SimSiamCifar
            | Preset::MocoV2Plus => Normalize::imagenet(),
            Preset::MocoV1Cifar => Normalize::cifar10(),
            Preset::MocoV2Cifar | Preset::InstDiscCifar => Normalize::cifar10_colab(),
        }
    }

    /// The recipe at `size x size` output.
    pub fn compose(self, size: usize) -> Result<Compose, AugError> {
        self.compose_with_normalize(size, self.normalize())
    }

    /// The recipe at `size x size` output, ending with `normalize` instead of
    /// its own normalisation.
    pub fn compose_with_normalize(
        self,
        size: usize,
        normalize: Normalize,
    ) -> Result<Compose, AugError> {
        self.view_with_normalize(0, size, normalize)
    }

    /// Whether the views differ (BYOL's two views).
    pub fn is_asymmetric(self) -> bool {
        matches!(self, Preset::Byol | Preset::ByolCifar)
    }

    /// `n` views of every image: the two different pipelines of an asymmetric recipe
    /// (`n` must then be 2), else `n` copies of [`Preset::compose_with_normalize`].
    pub fn views(self, size: usize, normalize: Normalize, n: usize) -> Result<MultiView, AugError> {
        if !self.is_asymmetric() {
            return MultiView::repeat(self.compose_with_normalize(size, normalize)?, n);
        }
        if n != 2 {
            return Err(AugError::InvalidPipeline(
                "an asymmetric recipe (BYOL's) has exactly two views",
            ));
        }
        MultiView::new(vec![
            self.view_with_normalize(0, size, normalize.clone())?,
            self.view_with_normalize(1, size, normalize)?,
        ])
    }

    /// View `view` (0 or 1) of the recipe; the views differ for asymmetric recipes only.
    fn view_with_normalize(
        self,
        view: usize,
        size: usize,
        normalize: Normalize,
    ) -> Result<Compose, AugError> {
        let crop = |lo: f64| -> Result<Transform, AugError> {
            Ok(RandomResizedCrop::new([size, size], (lo, 1.0), DEFAULT_RATIO, true)?.into())
        };
        let flip = || -> Result<Transform, AugError> { Ok(RandomHorizontalFlip::new(0.5)?.into()) };
        let gray = || -> Result<Transform, AugError> { Ok(RandomGrayscale::new(0.2)?.into()) };
        let jitter = |j: ColorJitter, p: f64| -> Result<Transform, AugError> {
            Ok(RandomApply::new(vec![j.into()], p)?.into())
        };
        let blur_p = |p: f64| -> Result<Transform, AugError> {
            let k = simclr_blur_kernel(size);
            let b = GaussianBlur::new([k, k], (0.1, 2.0))?;
            Ok(RandomApply::new(vec![b.into()], p)?.into())
        };
        let blur = || blur_p(0.5);
        // PIL's `ImageOps.solarize(img, 128)` inverts the 8-bit values >= 128.
        let solarize = |p: f64| -> Result<Transform, AugError> {
            Ok(RandomSolarize::new(128.0 / 255.0, p)?.into())
        };
        let byol_jitter = || jitter(ColorJitter::new(0.4, 0.4, 0.2, 0.1)?, 0.8);
        let second = view == 1;
        let t = match self {
            Preset::MocoV1 | Preset::MocoV1Cifar => vec![
                crop(0.2)?,
                gray()?,
                ColorJitter::new(0.4, 0.4, 0.4, 0.4)?.into(),
                flip()?,
            ],
            Preset::MocoV2 | Preset::MocoV2Plus => vec![
                crop(if self == Preset::MocoV2Plus {
                    0.08
                } else {
                    0.2
                })?,
                jitter(ColorJitter::new(0.4, 0.4, 0.4, 0.1)?, 0.8)?,
                gray()?,
                blur()?,
                flip()?,
            ],
            Preset::SimClr => vec![
                crop(0.08)?,
                flip()?,
                jitter(ColorJitter::simclr(1.0)?, 0.8)?,
                gray()?,
                blur()?,
            ],
            Preset::MocoV2Cifar | Preset::SimClrCifar => vec![
                crop(0.08)?,
                flip()?,
                jitter(ColorJitter::simclr(0.5)?, 0.8)?,
                gray()?,
            ],
            Preset::InstDiscCifar => vec![
                crop(0.2)?,
                ColorJitter::new(0.4, 0.4, 0.4, 0.4)?.into(),
                gray()?,
            ],
            Preset::Byol => vec![
                crop(0.08)?,
                flip()?,
                byol_jitter()?,
                gray()?,
                blur_p(if second { 0.1 } else { 1.0 })?,
            ],
            Preset::ByolCifar => vec![crop(0.08)?, flip()?, byol_jitter()?, gray()?],
            Preset::SimSiam => vec![
                crop(0.2)?,
                flip()?,
                jitter(ColorJitter::new(0.4, 0.4, 0.4, 0.1)?, 0.8)?,
                gray()?,
                blur()?,
            ],
            Preset::SimSiamCifar => vec![
                crop(0.2)?,
                flip()?,
                jitter(ColorJitter::new(0.4, 0.4, 0.4, 0.1)?, 0.8)?,
                gray()?,
            ],
        };
        let mut t = t;
        // BYOL's view 2 alone solarises (view 1's p is 0: no step, no draw).
        if second && self.is_asymmetric() {
            t.push(solarize(0.2)?);
        }
        t.push(normalize.into());
        Compose::new(t)
    }

    /// Two views: the recipe twice (SimCLR's and MoCo's query/key pair), or BYOL's two.
    pub fn two_views(self, size: usize) -> Result<MultiView, AugError> {
        self.views(size, self.normalize(), 2)
    }
}

/// SimCLR's blur kernel: 10 % of the image side, rounded down to an odd size
/// (`kernel_size = size // 10; radius = kernel_size // 2; 2 * radius + 1` in the
/// reference TensorFlow code), so 23 at 224 px and 9 at 96 px.
pub fn simclr_blur_kernel(size: usize) -> usize {
    2 * (size / 10 / 2) + 1
}

impl FromStr for Preset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.to_ascii_lowercase().replace(['_', ' '], "-");
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == norm)
            .ok_or_else(|| {
                let names: Vec<_> = Preset::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "unknown augmentation preset `{s}`; expected one of {}",
                    names.join(", ")
                )
            })
    }
}
