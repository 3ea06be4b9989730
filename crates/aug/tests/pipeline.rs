//! Pipelines, presets, the batch API and its determinism, and parameter errors.

use mocca_aug::{
    functional as F, view_seed, AugError, ColorJitter, Compose, GaussianBlur, ImageF32, ImageU8,
    MultiView, Normalize, Preset, RandomApply, RandomGrayscale, RandomHorizontalFlip,
    RandomResizedCrop, RandomSolarize, ResizeCenterCrop, TorchGenerator, Transform, DEFAULT_RATIO,
};

/// Deterministic pseudo-random bytes (an LCG; the content only has to vary).
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect()
}

/// Images of assorted sizes, RGB and grey.
fn sources() -> Vec<(Vec<u8>, usize, usize, usize)> {
    let shapes = [
        (40, 48, 3),
        (33, 57, 3),
        (64, 64, 3),
        (30, 30, 1),
        (48, 40, 3),
        (61, 35, 3),
        (52, 52, 1),
    ];
    shapes
        .iter()
        .enumerate()
        .map(|(i, &(h, w, c))| (bytes(h * w * c, i as u64), h, w, c))
        .collect()
}

fn views(src: &[(Vec<u8>, usize, usize, usize)]) -> Vec<ImageU8<'_>> {
    src.iter()
        .map(|(p, h, w, c)| ImageU8::new(p, *h, *w, *c).unwrap())
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn batch_output_is_identical_for_any_thread_count_and_batch_split() {
    let src = sources();
    let imgs = views(&src);
    let ids: Vec<u64> = (100..100 + imgs.len() as u64).collect();
    // 48 px SimCLR: blur kernel 5, so every op runs.
    let mv = Preset::SimClr.two_views(48).unwrap();
    let run = |threads: usize, split: usize| -> Vec<Vec<u32>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let a = mv.apply_batch(&imgs[..split], &ids[..split], 7, 3).unwrap();
            let b = mv.apply_batch(&imgs[split..], &ids[split..], 7, 3).unwrap();
            a.iter()
                .zip(&b)
                .map(|(x, y)| bits(&[x.data(), y.data()].concat()))
                .collect()
        })
    };
    let reference = run(1, imgs.len());
    assert_eq!(reference[0].len(), imgs.len() * 3 * 48 * 48);
    assert_eq!(run(2, imgs.len()), reference);
    assert_eq!(run(2, 3), reference);
    assert_eq!(run(1, 1), reference);
    assert_eq!(run(2, 0), reference);
}

#[test]
fn sample_draws_come_from_its_own_view_seed() {
    let src = sources();
    let imgs = views(&src);
    let pipe = Preset::SimClrCifar.compose(32).unwrap();
    let batch = pipe.apply_batch(&imgs[..3], &[5, 6, 7], 11, 2, 1).unwrap();
    let mut g = TorchGenerator::new(view_seed(11, 2, 6, 1));
    let one = pipe.apply(&imgs[1], &mut g).unwrap();
    assert_eq!(bits(&batch.data()[3072..6144]), bits(one.data()));
}

#[test]
fn views_epochs_and_samples_get_different_draws() {
    let src = sources();
    let imgs = views(&src);
    let mv = Preset::SimClrCifar.two_views(32).unwrap();
    let e0 = mv.apply_batch(&imgs[..1], &[0], 1, 0).unwrap();
    let e1 = mv.apply_batch(&imgs[..1], &[0], 1, 1).unwrap();
    let other_id = mv.apply_batch(&imgs[..1], &[1], 1, 0).unwrap();
    assert_ne!(e0[0].data(), e0[1].data());
    assert_ne!(e0[0].data(), e1[0].data());
    assert_ne!(e0[0].data(), other_id[0].data());
}

/// make_golden.py's `check_pipeline_draw_order` pipeline, replayed by hand from
/// the README's draw protocol with the functional ops.
#[test]
fn pipeline_draws_in_torchvision_v2_order() {
    let crop = RandomResizedCrop::new([24, 24], (0.08, 1.0), DEFAULT_RATIO, true).unwrap();
    let jitter = ColorJitter::new(0.4, 0.4, 0.2, 0.1).unwrap();
    let pipe = Compose::new(vec![
        crop.clone().into(),
        RandomHorizontalFlip::new(0.5).unwrap().into(),
        RandomApply::new(vec![jitter.clone().into()], 0.8)
            .unwrap()
            .into(),
        RandomGrayscale::new(0.2).unwrap().into(),
        RandomApply::new(
            vec![GaussianBlur::new([3, 3], (0.1, 2.0)).unwrap().into()],
            0.5,
        )
        .unwrap()
        .into(),
        RandomSolarize::new(0.5, 0.2).unwrap().into(),
        Normalize::imagenet().into(),
    ])
    .unwrap();
    let px = bytes(3 * 40 * 56, 9);
    let x = ImageF32::new(px.iter().map(|&b| b as f32 / 255.0).collect(), 3, 40, 56).unwrap();
    let mut hits = [0usize; 4];
    for seed in 0..40u32 {
        let got = pipe.apply_f32(&x, &mut TorchGenerator::new(seed)).unwrap();

        let mut g = TorchGenerator::new(seed);
        let b = crop.sample_params(40, 56, &mut g);
        let mut y = F::resized_crop(
            &x,
            b.top as i64,
            b.left as i64,
            b.height,
            b.width,
            [24, 24],
            true,
        )
        .unwrap();
        if g.rand() < 0.5 {
            F::horizontal_flip(&mut y);
        }
        if g.rand() < 0.8 {
            hits[0] += 1;
            let p = jitter.sample_params(&mut g);
            for id in p.order {
                match id {
                    0 => F::adjust_brightness(&mut y, p.brightness.unwrap()),
                    1 => F::adjust_contrast(&mut y, p.contrast.unwrap()).unwrap(),
                    2 => F::adjust_saturation(&mut y, p.saturation.unwrap()).unwrap(),
                    _ => F::adjust_hue(&mut y, p.hue.unwrap()).unwrap(),
                }
            }
        }
        if g.rand() < 0.2 {
            hits[1] += 1;
            F::rgb_to_grayscale(&mut y).unwrap();
        }
        if g.rand() < 0.5 {
            hits[2] += 1;
            let s = g.uniform(0.1, 2.0);
            F::gaussian_blur(&mut y, [3, 3], [s, s]).unwrap();
        }
        if g.rand() < 0.2 {
            hits[3] += 1;
            F::solarize(&mut y, 0.5);
        }
        let n = Normalize::imagenet();
        F::normalize(&mut y, n.mean(), n.std()).unwrap();
        assert_eq!(bits(got.data()), bits(y.data()), "seed {seed}");
    }
    // Every random branch was taken at least once over the 40 seeds.
    assert!(hits.iter().all(|&h| h > 0), "{hits:?}");
}

#[test]
fn u8_input_equals_its_to_tensor_float_image() {
    let px = bytes(3 * 37 * 45, 3);
    let u8img = ImageU8::new(&px, 37, 45, 3).unwrap();
    let fimg = ImageF32::from_u8(&u8img);
    assert_eq!(fimg.data()[1], px[3] as f32 / 255.0);
    for p in [Preset::SimClr, Preset::MocoV1, Preset::MocoV2Cifar] {
        let pipe = p.compose(32).unwrap();
        let a = pipe.apply(&u8img, &mut TorchGenerator::new(5)).unwrap();
        let b = pipe.apply_f32(&fimg, &mut TorchGenerator::new(5)).unwrap();
        assert_eq!(bits(a.data()), bits(b.data()), "{}", p.name());
    }
}

#[test]
fn grey_input_is_replicated_to_three_channels() {
    let grey = bytes(20 * 24, 4);
    let rgb: Vec<u8> = grey.iter().flat_map(|&v| [v, v, v]).collect();
    let pipe = Preset::MocoV2Cifar.compose(16).unwrap();
    let a = pipe
        .apply(
            &ImageU8::new(&grey, 20, 24, 1).unwrap(),
            &mut TorchGenerator::new(1),
        )
        .unwrap();
    let b = pipe
        .apply(
            &ImageU8::new(&rgb, 20, 24, 3).unwrap(),
            &mut TorchGenerator::new(1),
        )
        .unwrap();
    assert_eq!(a.shape(), [3, 16, 16]);
    assert_eq!(bits(a.data()), bits(b.data()));
}

#[test]
fn transforms_before_the_crop_run_on_the_full_image() {
    // Grayscale with p = 1 then crop: the output is grey, and the crop still
    // draws after the grayscale coin.
    let pipe = Compose::new(vec![
        RandomGrayscale::new(1.0).unwrap().into(),
        RandomResizedCrop::new([12, 12], (0.3, 1.0), DEFAULT_RATIO, false)
            .unwrap()
            .into(),
    ])
    .unwrap();
    let px = bytes(3 * 30 * 30, 8);
    let out = pipe
        .apply(
            &ImageU8::new(&px, 30, 30, 3).unwrap(),
            &mut TorchGenerator::new(2),
        )
        .unwrap();
    let d = out.data();
    assert_eq!(&d[..144], &d[144..288]);
    assert_eq!(&d[..144], &d[288..]);
}

#[test]
fn pipeline_without_crop_keeps_the_input_size_and_rejects_mixed_sizes() {
    let pipe = Compose::new(vec![Normalize::imagenet().into()]).unwrap();
    assert_eq!(pipe.output_size(), None);
    let a = bytes(3 * 8 * 9, 1);
    let b = bytes(3 * 9 * 8, 2);
    let imgs = [
        ImageU8::new(&a, 8, 9, 3).unwrap(),
        ImageU8::new(&b, 9, 8, 3).unwrap(),
    ];
    let one = pipe.apply_batch(&imgs[..1], &[0], 0, 0, 0).unwrap();
    assert_eq!(one.shape(), [1, 3, 8, 9]);
    assert!((one.data()[0] - (a[0] as f32 / 255.0 - 0.485) / 0.229).abs() < 1e-6);
    assert_eq!(
        pipe.apply_batch(&imgs, &[0, 1], 0, 0, 0).unwrap_err(),
        AugError::ImageSizeMismatch {
            index: 1,
            height: 9,
            width: 8,
            expected_height: 8,
            expected_width: 9
        }
    );
}

#[test]
fn batch_into_a_caller_buffer_checks_lengths() {
    let src = sources();
    let imgs = views(&src);
    let pipe = Preset::SimClrCifar.compose(32).unwrap();
    let mut buf = vec![0.0f32; 2 * 3 * 32 * 32];
    assert_eq!(
        pipe.apply_batch_into(&imgs[..2], &[0, 1], 0, 0, 0, &mut buf)
            .unwrap(),
        [2, 3, 32, 32]
    );
    let fresh = pipe.apply_batch(&imgs[..2], &[0, 1], 0, 0, 0).unwrap();
    assert_eq!(bits(&buf), bits(fresh.data()));
    assert_eq!(
        pipe.apply_batch_into(&imgs[..2], &[0, 1], 0, 0, 0, &mut buf[1..])
            .unwrap_err(),
        AugError::OutputSize {
            expected: 6144,
            actual: 6143
        }
    );
    assert_eq!(
        pipe.apply_batch(&imgs[..2], &[0], 0, 0, 0).unwrap_err(),
        AugError::LengthMismatch { images: 2, ids: 1 }
    );
}

#[test]
fn batch_converts_to_a_candle_tensor_of_its_shape() {
    let src = sources();
    let imgs = views(&src);
    let b = Preset::MocoV2
        .compose(24)
        .unwrap()
        .apply_batch(&imgs, &[0, 1, 2, 3, 4, 5, 6], 0, 0, 0)
        .unwrap();
    let first = b.data()[0];
    let t = b.into_tensor(&candle_core::Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[7, 3, 24, 24]);
    let v: f32 = t
        .flatten_all()
        .unwrap()
        .get(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(v, first);
}

#[test]
fn presets_build_with_the_papers_parameters() {
    for p in Preset::ALL {
        let c = p.compose(p.default_size()).unwrap();
        assert_eq!(c.output_size(), Some([p.default_size(); 2]), "{}", p.name());
        assert_eq!(p.name().parse::<Preset>().unwrap(), p);
        assert!(matches!(
            c.transforms().last(),
            Some(Transform::Normalize(_))
        ));
    }
    assert!("simclr_cifar".parse::<Preset>().is_ok());
    assert!("dino"
        .parse::<Preset>()
        .unwrap_err()
        .contains("simclr-cifar"));

    let simclr = Preset::SimClr.compose(224).unwrap();
    let Transform::RandomResizedCrop(crop) = &simclr.transforms()[0] else {
        panic!("crop first")
    };
    assert_eq!((crop.scale(), crop.antialias()), ((0.08, 1.0), true));
    let Transform::RandomApply(blur) = &simclr.transforms()[4] else {
        panic!("blur fifth")
    };
    let expected_blur = RandomApply::new(
        vec![GaussianBlur::new([23, 23], (0.1, 2.0)).unwrap().into()],
        0.5,
    )
    .unwrap();
    assert_eq!(blur, &expected_blur);

    let moco = Preset::MocoV1.compose(224).unwrap();
    assert_eq!(
        moco.transforms()[2],
        ColorJitter::new(0.4, 0.4, 0.4, 0.4).unwrap().into()
    );
    let Transform::RandomResizedCrop(crop) = &moco.transforms()[0] else {
        panic!("crop first")
    };
    assert_eq!(crop.scale(), (0.2, 1.0));

    let cifar = Preset::SimClrCifar.compose(32).unwrap();
    let jitter = RandomApply::new(
        vec![ColorJitter::new(0.4, 0.4, 0.4, 0.1).unwrap().into()],
        0.8,
    )
    .unwrap();
    assert_eq!(cifar.transforms()[2], jitter.into());
    assert!(!cifar.transforms().iter().any(|t| matches!(t, Transform::RandomApply(a)
        if *a == RandomApply::new(vec![GaussianBlur::new([3, 3], (0.1, 2.0)).unwrap().into()], 0.5).unwrap())));
    assert_eq!(mocca_aug::simclr_blur_kernel(96), 9);
}

#[test]
fn the_mocov2plus_preset_is_solo_learns_symmetric_weak_views() {
    // symmetric_weak.yaml: crop (0.08, 1), jitter 0.4/0.4/0.4/0.1 at p 0.8, grayscale 0.2,
    // blur p 0.5, no solarisation, flip last, ImageNet normalisation.
    let solo = Preset::MocoV2Plus.compose(224).unwrap();
    let mocov2 = Preset::MocoV2.compose(224).unwrap();
    let Transform::RandomResizedCrop(crop) = &solo.transforms()[0] else {
        panic!("crop first")
    };
    assert_eq!(crop.scale(), (0.08, 1.0));
    // Everything after the crop is MoCo v2's (main_moco.py --aug-plus), in solo-learn's order.
    assert_eq!(solo.transforms()[1..], mocov2.transforms()[1..]);
    assert!(matches!(
        solo.transforms()[4],
        Transform::RandomHorizontalFlip(_)
    ));
    assert_eq!(Preset::MocoV2Plus.normalize(), Normalize::imagenet());
    assert!(!Preset::MocoV2Plus.is_asymmetric());
}

#[test]
fn bad_parameters_are_rejected_when_the_pipeline_is_built() {
    let crop = |size: [usize; 2], scale, ratio| RandomResizedCrop::new(size, scale, ratio, true);
    assert!(matches!(
        crop([0, 32], (0.08, 1.0), DEFAULT_RATIO),
        Err(AugError::EmptyImage { .. })
    ));
    assert!(matches!(
        crop([32, 32], (1.0, 0.08), DEFAULT_RATIO),
        Err(AugError::InvalidRange {
            what: "RandomResizedCrop scale",
            ..
        })
    ));
    assert!(matches!(
        crop([32, 32], (0.08, 1.0), (4.0 / 3.0, 0.75)),
        Err(AugError::InvalidRange {
            what: "RandomResizedCrop ratio",
            ..
        })
    ));
    assert!(matches!(
        crop([32, 32], (0.0, 1.0), DEFAULT_RATIO),
        Err(AugError::InvalidRange { .. })
    ));
    for p in [1.5, -0.1, f64::NAN] {
        assert!(matches!(
            RandomHorizontalFlip::new(p),
            Err(AugError::InvalidProbability { .. })
        ));
        assert!(matches!(
            RandomGrayscale::new(p),
            Err(AugError::InvalidProbability { .. })
        ));
        assert!(matches!(
            RandomApply::new(vec![], p),
            Err(AugError::InvalidProbability { .. })
        ));
    }
    for k in [[4, 5], [5, 0], [0, 0]] {
        assert_eq!(
            GaussianBlur::new(k, (0.1, 2.0)).unwrap_err(),
            AugError::InvalidKernelSize { kx: k[0], ky: k[1] }
        );
    }
    assert!(matches!(
        GaussianBlur::new([3, 3], (2.0, 0.1)),
        Err(AugError::InvalidRange { .. })
    ));
    assert!(matches!(
        ColorJitter::new(-0.1, 0.0, 0.0, 0.0),
        Err(AugError::InvalidJitter { .. })
    ));
    assert!(matches!(
        ColorJitter::new(0.0, 0.0, 0.0, 0.6),
        Err(AugError::InvalidRange { what: "hue", .. })
    ));
    assert!(matches!(
        Normalize::new([0.5; 3], [0.2, 0.0, 0.2]),
        Err(AugError::InvalidNormalize { channel: 1, .. })
    ));
    assert!(matches!(
        RandomSolarize::new(1.5, 0.5),
        Err(AugError::InvalidThreshold(_))
    ));

    // A blur that does not fit the crop output is caught by Compose::new.
    let small = RandomResizedCrop::new([8, 8], (0.2, 1.0), DEFAULT_RATIO, true).unwrap();
    let big_blur = RandomApply::new(
        vec![GaussianBlur::new([23, 23], (0.1, 2.0)).unwrap().into()],
        0.5,
    )
    .unwrap();
    assert_eq!(
        Compose::new(vec![small.clone().into(), big_blur.into()]).unwrap_err(),
        AugError::BlurKernelTooLarge {
            kx: 23,
            ky: 23,
            height: 8,
            width: 8
        }
    );
    assert!(matches!(
        Compose::new(vec![small.clone().into(), small.clone().into()]),
        Err(AugError::InvalidPipeline(_))
    ));
    assert!(matches!(
        RandomApply::new(vec![small.into()], 0.5),
        Err(AugError::InvalidPipeline(_))
    ));
    assert!(matches!(
        MultiView::new(vec![]),
        Err(AugError::InvalidPipeline(_))
    ));
}

#[test]
fn bad_images_are_rejected_with_their_shape() {
    assert!(matches!(
        ImageU8::new(&[], 0, 5, 3),
        Err(AugError::EmptyImage { .. })
    ));
    assert_eq!(
        ImageU8::new(&[0; 10], 2, 2, 3).unwrap_err(),
        AugError::BufferSize {
            height: 2,
            width: 2,
            channels: 3,
            expected: 12,
            actual: 10
        }
    );
    assert_eq!(
        ImageU8::new(&[0; 8], 2, 2, 2).unwrap_err(),
        AugError::UnsupportedChannels(2)
    );
    // Blur before any crop is checked against each image.
    let pipe = Compose::new(vec![GaussianBlur::new([9, 9], (1.0, 1.0)).unwrap().into()]).unwrap();
    let px = [0u8; 3 * 4 * 4];
    assert_eq!(
        pipe.apply(
            &ImageU8::new(&px, 4, 4, 3).unwrap(),
            &mut TorchGenerator::new(0)
        )
        .unwrap_err(),
        AugError::BlurKernelTooLarge {
            kx: 9,
            ky: 9,
            height: 4,
            width: 4
        }
    );
    let err = F::adjust_hue(&mut ImageF32::new(vec![0.0; 3], 3, 1, 1).unwrap(), 0.7).unwrap_err();
    assert_eq!(
        err.to_string(),
        "hue factor must lie in [-0.5, 0.5], got 0.699999988079071"
    );
}

#[test]
fn the_instdisc_preset_is_lemniscates_cifar_transform() {
    // RandomResizedCrop(32, scale=(0.2, 1.)), ColorJitter(0.4, 0.4, 0.4, 0.4) always,
    // RandomGrayscale(p=0.2), no flip, Normalize.
    let c = Preset::InstDiscCifar.compose(32).unwrap();
    let t = c.transforms();
    assert_eq!(t.len(), 4);
    assert!(matches!(t[0], Transform::RandomResizedCrop(_)));
    assert!(matches!(t[1], Transform::ColorJitter(_)));
    assert!(matches!(t[2], Transform::RandomGrayscale(_)));
    assert!(matches!(t[3], Transform::Normalize(_)));
    assert_eq!(
        Preset::InstDiscCifar.normalize(),
        Normalize::cifar10_colab()
    );
}

#[test]
fn byols_two_views_differ_only_in_view_twos_solarisation_at_32_px() {
    let mv = Preset::ByolCifar.two_views(32).unwrap();
    let solarises = |c: &mocca_aug::Compose| {
        c.transforms()
            .iter()
            .any(|t| matches!(t, Transform::RandomSolarize(_)))
    };
    let [v1, v2] = mv.views() else {
        panic!("{} views", mv.views().len())
    };
    assert!(!solarises(v1) && solarises(v2));
    assert_eq!(v1.transforms().len() + 1, v2.transforms().len());
    // The 224 px recipe blurs both views (p 1.0 and 0.1); the CIFAR one neither.
    let blurs = |c: &mocca_aug::Compose| format!("{c:?}").contains("GaussianBlur");
    let big = Preset::Byol.two_views(224).unwrap();
    assert!(big.views().iter().all(blurs));
    assert!(!mv.views().iter().any(blurs));
}

#[test]
fn an_asymmetric_recipe_has_exactly_two_views() {
    let n = Preset::Byol.normalize();
    let err = Preset::Byol.views(224, n, 3).unwrap_err().to_string();
    assert!(err.contains("two views"), "{err}");
    // A symmetric one repeats its pipeline as often as asked.
    let mv = Preset::SimSiamCifar
        .views(32, Preset::SimSiamCifar.normalize(), 3)
        .unwrap();
    assert!(mv.views().iter().all(|v| v == &mv.views()[0]));
}

/// torchvision 0.29 `v2.CenterCrop(c)(v2.Resize(r, antialias=True)(x))` on the float image
/// `x = px / 255` of the 7x11 pattern below, for (r, c) = (5, 4) (down: 5x7, window at (0, 2))
/// and (9, 8) (up: 9x14, window at (0, 3)), flattened CHW.
const RESIZE_5_CROP_4: [f32; 48] = [
    0.6125817, 0.5155143, 0.4812909, 0.4457517, 0.6517156, 0.5750487, 0.5427016, 0.5205762,
    0.6159759, 0.6084248, 0.6301471, 0.5941177, 0.3274238, 0.521454, 0.7043846, 0.6653838,
    0.5638071, 0.5901617, 0.6353759, 0.609223, 0.3309096, 0.3964224, 0.4638616, 0.6688696,
    0.4051471, 0.3884417, 0.3280525, 0.6399882, 0.4925926, 0.4602454, 0.3487201, 0.2700557,
    0.4160948, 0.3973856, 0.3329248, 0.5684096, 0.4864924, 0.4637312, 0.3510076, 0.2628903,
    0.5678922, 0.5351909, 0.427451, 0.3474945, 0.6391885, 0.6093797, 0.5141885, 0.4191479,
];
const RESIZE_9_CROP_8: [f32; 192] = [
    0.7715687, 0.3621848, 0.7380951, 0.5044818, 0.4690476, 0.6394959, 0.2266108, 0.5343137,
    0.7970589, 0.4092436, 0.7851539, 0.5340803, 0.4986461, 0.6814194, 0.2459386, 0.574183,
    0.506536, 0.4634609, 0.8243074, 0.5727202, 0.537286, 0.7180051, 0.2862903, 0.6254902,
    0.1407408, 0.5082633, 0.8578119, 0.6123872, 0.576953, 0.7532215, 0.3403364, 0.6732026,
    0.1872549, 0.5308123, 0.9067225, 0.6469187, 0.6114846, 0.8081234, 0.3952383, 0.7029412,
    0.2169935, 0.5566294, 0.2926706, 0.3818862, 0.6663865, 0.857034, 0.4177873, 0.7494553,
    0.2587146, 0.5801122, 0.1521633, 0.3453782, 0.7118737, 0.8905386, 0.4625897, 0.7839869,
    0.2980392, 0.6165267, 0.2036416, 0.39155, 0.6190476, 0.6522408, 0.4909898, 0.820915, 0.1745098,
    0.5488795, 0.8908963, 0.6495798, 0.6141456, 0.7845939, 0.3717089, 0.7117647, 0.2143791,
    0.5443044, 0.3830532, 0.4162465, 0.6437442, 0.8316528, 0.4187677, 0.7372549, 0.2513072,
    0.5727047, 0.1447558, 0.3234205, 0.5146281, 0.51662, 0.4392468, 0.7765795, 0.2858388,
    0.6175071, 0.1782604, 0.3689076, 0.3466543, 0.1012293, 0.4507779, 0.8183007, 0.3323529,
    0.6400561, 0.227171, 0.4238096, 0.3883754, 0.1285713, 0.5044817, 0.8480392, 0.3620915,
    0.6949581, 0.282073, 0.4583412, 0.422907, 0.177482, 0.5270306, 0.3089325, 0.4098039, 0.7490042,
    0.3172893, 0.4980082, 0.462574, 0.2109865, 0.5718331, 0.1941177, 0.4611111, 0.7893558,
    0.353875, 0.536648, 0.5012138, 0.25014, 0.6260503, 0.2382353, 0.3196079, 0.6581234, 0.2113447,
    0.4002801, 0.3817928, 0.1404761, 0.4824928, 0.8568627, 0.3594771, 0.6774511, 0.2532681,
    0.447339, 0.4175538, 0.1639121, 0.5285246, 0.3803921, 0.3964052, 0.7184875, 0.3056024,
    0.4906007, 0.4551665, 0.2035791, 0.5644256, 0.1687364, 0.4333333, 0.7730471, 0.3526301,
    0.5271865, 0.4917523, 0.2463273, 0.595876, 0.2176471, 0.4882353, 0.8267508, 0.3799722,
    0.5689076, 0.5334734, 0.2736694, 0.6495797, 0.272549, 0.5347494, 0.8492998, 0.4288828,
    0.6034392, 0.568005, 0.3285713, 0.7044817, 0.3022876, 0.569281, 0.8941022, 0.4623874,
    0.6431062, 0.6170869, 0.3791938, 0.7362744, 0.3440087, 0.6062092, 0.9344538, 0.4989731,
    0.6904762, 0.6663399, 0.4188608, 0.7721754, 0.3833334,
];

#[test]
fn resize_center_crop_is_torchvisions_resize_then_center_crop() {
    let (h, w) = (7, 11);
    let px: Vec<u8> = (0..h * w * 3)
        .map(|i| ((i * 37 + i / 5 * 11) % 256) as u8)
        .collect();
    let img = ImageU8::new(&px, h, w, 3).unwrap();
    for ((resize, crop), want) in [
        ((5, 4), &RESIZE_5_CROP_4[..]),
        ((9, 8), &RESIZE_9_CROP_8[..]),
    ] {
        let t = ResizeCenterCrop::new(resize, crop, true).unwrap();
        let pipe = Compose::new(vec![t.into()]).unwrap();
        let got = pipe.apply(&img, &mut TorchGenerator::new(0)).unwrap();
        assert_eq!((got.height(), got.width()), (crop, crop));
        for (i, (g, e)) in got.data().iter().zip(want).enumerate() {
            assert!(
                (g - e).abs() < 2e-6,
                "resize {resize} crop {crop} [{i}]: {g} vs {e}"
            );
        }
    }
    // A crop larger than the resized shorter side would need torchvision's padding: refused.
    assert!(ResizeCenterCrop::new(4, 5, true).is_err());
}
