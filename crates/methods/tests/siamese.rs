//! BYOL, SimSiam and MoCo v3 as a trainer uses them: a checkpoint taken mid-run continues
//! bit-identically, the encoders each method has are the ones it says, and bad parts are
//! refused by name. (Exactness to the references: golden_siamese.rs, golden_mocov3.rs.)

use candle_core::{DType, Device, Tensor};
use mocca_backbones::{
    BYOLPredictionHead, BYOLProjectionHead, MoCoV3Mlp, ResNetConfig, SimSiamPredictionHead,
    SimSiamProjectionHead, Stem,
};
use mocca_methods::optim::OptimizerConfig;
use mocca_methods::schedule::{LrSchedule, MomentumSchedule};
use mocca_methods::{
    BYOLConfig, BackboneEncoder, Encoder, EncoderRole, Method, MoCoV3, MoCoV3Config, Predictor,
    SimSiam, SimSiamConfig, BYOL,
};

const DIM: usize = 16;

fn backbone() -> ResNetConfig {
    ResNetConfig {
        stem: Stem::Cifar,
        width: 0.125,
        ..ResNetConfig::resnet18()
    }
}

fn images(seed: u64) -> Vec<Tensor> {
    let mut rng = mocca_methods::SplitMix64::new(seed);
    let mut view = || {
        let v: Vec<f32> = (0..8 * 3 * 16 * 16)
            .map(|_| rng.uniform01() as f32)
            .collect();
        Tensor::from_vec(v, (8, 3, 16, 16), &Device::Cpu).unwrap()
    };
    vec![view(), view()]
}

fn byol() -> Box<dyn Method> {
    let b = backbone();
    let head = BYOLProjectionHead {
        input_dim: b.feature_dim(),
        hidden_dim: 32,
        output_dim: DIM,
    };
    let predictor = Predictor::new(
        BYOLPredictionHead {
            input_dim: DIM,
            hidden_dim: 32,
            output_dim: DIM,
        },
        3,
        &Device::Cpu,
    )
    .unwrap();
    let config = BYOLConfig {
        momentum: MomentumSchedule::Cosine {
            base: 0.9,
            end: 1.0,
            total_steps: 4,
        },
        optimizer: OptimizerConfig::sgd(0.05, 0.9, 1e-4),
        lr_schedule: LrSchedule::cosine(0.05, 4),
    };
    let build = || BackboneEncoder::new(&b, head.into(), 3, &Device::Cpu);
    Box::new(BYOL::new(config, build, predictor, &Device::Cpu).unwrap())
}

fn simsiam_with(lr_schedule: LrSchedule) -> SimSiam<BackboneEncoder> {
    let b = backbone();
    let head = SimSiamProjectionHead {
        input_dim: b.feature_dim(),
        hidden_dim: 32,
        output_dim: DIM,
    };
    let predictor = Predictor::new(
        SimSiamPredictionHead {
            input_dim: DIM,
            hidden_dim: 8,
            output_dim: DIM,
        },
        3,
        &Device::Cpu,
    )
    .unwrap();
    let config = SimSiamConfig {
        optimizer: OptimizerConfig::sgd(0.05, 0.9, 1e-4),
        lr_schedule,
        stop_gradient: true,
    };
    let encoder = BackboneEncoder::new(&b, head.into(), 3, &Device::Cpu).unwrap();
    SimSiam::new(config, encoder, predictor, &Device::Cpu).unwrap()
}

fn simsiam() -> Box<dyn Method> {
    Box::new(simsiam_with(LrSchedule::cosine(0.05, 4)))
}

fn mocov3() -> Box<dyn Method> {
    let b = backbone();
    let projector = MoCoV3Mlp {
        mlp_dim: 32,
        output_dim: DIM,
        ..MoCoV3Mlp::resnet_projector(b.feature_dim())
    };
    let predictor = Predictor::new(
        MoCoV3Mlp {
            input_dim: DIM,
            mlp_dim: 32,
            output_dim: DIM,
            ..MoCoV3Mlp::resnet_predictor()
        },
        3,
        &Device::Cpu,
    )
    .unwrap();
    let config = MoCoV3Config {
        temperature: 1.0,
        momentum: MomentumSchedule::Cosine {
            base: 0.99,
            end: 1.0,
            total_steps: 4,
        },
        optimizer: OptimizerConfig::lars_mocov3(0.3, 0.9, 1e-6),
        lr_schedule: LrSchedule::cosine(0.3, 4),
    };
    let build = || BackboneEncoder::new(&b, projector.into(), 3, &Device::Cpu);
    Box::new(MoCoV3::new(config, build, predictor, &Device::Cpu).unwrap())
}

fn state_values(m: &dyn Method) -> Vec<(String, Vec<f32>)> {
    m.state()
        .unwrap()
        .into_iter()
        .filter(|(_, t)| t.dtype() == DType::F32)
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

/// Four steps straight, and one step, save, load into a fresh method, three more: the same
/// losses, momenta and final state, bit for bit.
fn resumes_bit_identically(make: fn() -> Box<dyn Method>) {
    let mut straight = make();
    let s1: Vec<(f64, Option<f64>)> = (0..4)
        .map(|s| {
            let st = straight.step(&images(s), &[]).unwrap();
            (st.loss, st.momentum)
        })
        .collect();
    assert!(s1.iter().all(|(l, _)| l.is_finite()), "{s1:?}");
    let path = std::env::temp_dir().join(format!(
        "mocca-siamese-{}-{}.safetensors",
        straight.name(),
        std::process::id()
    ));
    let mut first = make();
    let st = first.step(&images(0), &[]).unwrap();
    first.save(&path).unwrap();
    let mut resumed = make();
    resumed.load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(resumed.steps_done(), 1);
    let mut s2 = vec![(st.loss, st.momentum)];
    s2.extend((1..4).map(|s| {
        let st = resumed.step(&images(s), &[]).unwrap();
        (st.loss, st.momentum)
    }));
    assert_eq!(s1, s2);
    assert_eq!(state_values(&*resumed), state_values(&*straight));
}

#[test]
fn byol_resumes_bit_identically() {
    resumes_bit_identically(byol);
}

#[test]
fn simsiam_resumes_bit_identically() {
    resumes_bit_identically(simsiam);
}

#[test]
fn mocov3_resumes_bit_identically() {
    resumes_bit_identically(mocov3);
}

#[test]
fn byol_and_mocov3_have_an_online_and_a_momentum_encoder_simsiam_one() {
    for make in [byol, mocov3] {
        let m = make();
        assert!(m.encoder(EncoderRole::Query).is_ok(), "{}", m.name());
        assert!(m.encoder(EncoderRole::Key).is_ok(), "{}", m.name());
        assert!(m.encoder(EncoderRole::Shared).is_err(), "{}", m.name());
        assert_eq!(m.default_eval_source().encoder, EncoderRole::Query);
    }
    let m = simsiam();
    assert!(m.encoder(EncoderRole::Shared).is_ok());
    assert!(m.encoder(EncoderRole::Key).is_err());
}

#[test]
fn the_momentum_encoders_start_as_copies_and_trail_the_online_one() {
    let mut m = byol();
    let params = |m: &dyn Method, role| -> Vec<Vec<f32>> {
        let e: &dyn Encoder = m.encoder(role).unwrap();
        e.named_parameters()
            .iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    };
    assert_eq!(
        params(&*m, EncoderRole::Query),
        params(&*m, EncoderRole::Key)
    );
    // Step 0's target update is a no-op (the copies are equal); step 1's moves the target.
    m.step(&images(0), &[]).unwrap();
    let target_after_0 = params(&*m, EncoderRole::Key);
    assert_ne!(params(&*m, EncoderRole::Query), target_after_0);
    m.step(&images(1), &[]).unwrap();
    assert_ne!(params(&*m, EncoderRole::Key), target_after_0);
}

#[test]
fn a_predictor_of_the_wrong_width_is_refused_naming_both_widths() {
    let b = backbone();
    let head = SimSiamProjectionHead {
        input_dim: b.feature_dim(),
        hidden_dim: 32,
        output_dim: DIM,
    };
    let predictor = Predictor::new(
        SimSiamPredictionHead {
            input_dim: 2 * DIM,
            hidden_dim: 8,
            output_dim: 2 * DIM,
        },
        0,
        &Device::Cpu,
    )
    .unwrap();
    let config = SimSiamConfig {
        optimizer: OptimizerConfig::sgd(0.05, 0.9, 0.0),
        lr_schedule: LrSchedule::Constant { lr: 0.05 },
        stop_gradient: true,
    };
    let encoder = BackboneEncoder::new(&b, head.into(), 0, &Device::Cpu).unwrap();
    let err = SimSiam::new(config, encoder, predictor, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("32") && err.contains("16"), "{err}");
}

#[test]
fn methods_without_negatives_report_no_positive_accuracy() {
    for make in [byol, simsiam] {
        let mut m = make();
        let s = m.step(&images(0), &[]).unwrap();
        assert!(s.accuracy.is_nan(), "{}: {}", m.name(), s.accuracy);
    }
    let s = mocov3().step(&images(0), &[]).unwrap();
    assert!((0.0..=1.0).contains(&s.accuracy));
}

#[test]
fn a_fixed_predictor_lr_trains_the_predictor_when_the_schedule_stops_the_encoder() {
    // The schedule holds the rate at 0: only a fixed-rate group can move.
    let mut m = simsiam_with(LrSchedule::Constant { lr: 0.0 }).with_fixed_predictor_lr();
    let before = m.state().unwrap();
    m.step(&images(5), &(0..8).collect::<Vec<_>>()).unwrap();
    let after = m.state().unwrap();
    let moved = |prefix: &str| {
        let weights: Vec<_> = before
            .iter()
            .filter(|(k, t)| {
                k.starts_with(prefix) && t.dtype() == DType::F32 && !k.contains("running")
            })
            .collect();
        assert!(!weights.is_empty(), "no weights named {prefix}*");
        weights.into_iter().any(|(k, t)| {
            let d = (t - &after[k]).unwrap().abs().unwrap().max_all().unwrap();
            d.to_scalar::<f32>().unwrap() > 0.0
        })
    };
    assert!(
        moved("predictor."),
        "the predictor keeps the initial rate, 0.05"
    );
    assert!(
        !moved("encoder.backbone.conv1"),
        "the encoder follows the schedule's 0"
    );
}
