//! SimCLR on a tiny encoder, and both methods on a small ResNet.

mod common;

use candle_core::Device;
use common::{params, views, TinyEncoder};
use mocca_methods::optim::OptimizerConfig;
use mocca_methods::schedule::LrSchedule;
use mocca_methods::{
    BackboneEncoder, EncoderRole, FeatureLayer, FeatureSource, Method, MoCo, MoCoConfig, SimCLR,
    SimCLRConfig,
};

fn simclr(optimizer: OptimizerConfig, seed: u64) -> SimCLR<TinyEncoder> {
    let cfg = SimCLRConfig {
        temperature: 0.5,
        lr_schedule: LrSchedule::Constant { lr: optimizer.lr },
        optimizer,
    };
    SimCLR::new(cfg, TinyEncoder::new(seed, 1), &Device::Cpu).unwrap()
}

#[test]
fn one_sgd_step_lowers_the_ntxent_loss_on_a_fixed_batch() {
    let batch = views(8, 1);
    let mut m = simclr(OptimizerConfig::sgd(0.1, 0.9, 1e-4), 3);
    let before = m.step(&batch, &[]).unwrap();
    let after = m.step(&batch, &[]).unwrap();
    assert!(
        after.loss < before.loss - 1e-3,
        "{} !< {}",
        after.loss,
        before.loss
    );
    assert_eq!((before.step, after.step), (1, 2));
    assert_eq!(before.momentum, None);
    assert_eq!(before.batch_size, 8);
}

#[test]
fn one_lars_step_lowers_the_ntxent_loss_on_a_fixed_batch() {
    // LARS moves each weight matrix by about lr · 0.001 of its norm; biases
    // and BN parameters take plain momentum-SGD steps.
    let batch = views(8, 1);
    let mut m = simclr(OptimizerConfig::lars(0.1, 0.9, 1e-6), 3);
    let before = m.step(&batch, &[]).unwrap();
    let after = m.step(&batch, &[]).unwrap();
    assert!(
        after.loss < before.loss - 1e-4,
        "{} !< {}",
        after.loss,
        before.loss
    );
}

#[test]
fn lr_follows_the_schedule() {
    let cfg = SimCLRConfig {
        temperature: 0.5,
        optimizer: OptimizerConfig::sgd(0.4, 0.9, 0.0),
        lr_schedule: LrSchedule::WarmupCosine {
            base_lr: 0.4,
            warmup_steps: 2,
            total_steps: 4,
            warmup_start_lr: 0.0,
            warmup: mocca_methods::schedule::Warmup::Lightly,
            final_lr: 0.0,
        },
    };
    let mut m = SimCLR::new(cfg, TinyEncoder::new(0, 1), &Device::Cpu).unwrap();
    let lrs: Vec<f64> = (0..3)
        .map(|_| m.step(&views(4, 1), &[]).unwrap().lr)
        .collect();
    assert_eq!(lrs, [0.2, 0.4, 0.4]);
}

#[test]
fn simclr_state_round_trip_continues_identically() {
    let opt = OptimizerConfig::sgd(0.1, 0.9, 1e-4);
    let mut straight = simclr(opt.clone(), 3);
    let s_straight: Vec<_> = (0..4)
        .map(|s| straight.step(&views(8, s), &[]).unwrap())
        .collect();

    let path =
        std::env::temp_dir().join(format!("mocca-simclr-{}.safetensors", std::process::id()));
    let mut first = simclr(opt.clone(), 3);
    let mut s_resumed: Vec<_> = (0..2)
        .map(|s| first.step(&views(8, s), &[]).unwrap())
        .collect();
    first.save(&path).unwrap();
    let mut resumed = simclr(opt, 42);
    resumed.load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    s_resumed.extend((2..4).map(|s| resumed.step(&views(8, s), &[]).unwrap()));
    assert_eq!(s_resumed, s_straight);
    assert_eq!(
        params(resumed.shared_encoder()),
        params(straight.shared_encoder())
    );
}

#[test]
fn loading_a_missing_or_foreign_file_names_the_problem() {
    let mut m = simclr(OptimizerConfig::sgd(0.1, 0.9, 0.0), 0);
    let missing = std::env::temp_dir().join("mocca-no-such-checkpoint.safetensors");
    let err = m.load(&missing).unwrap_err().to_string();
    assert!(err.contains("mocca-no-such-checkpoint"), "{err}");
    let junk = std::env::temp_dir().join(format!("mocca-junk-{}.safetensors", std::process::id()));
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let err = m.load(&junk).unwrap_err().to_string();
    std::fs::remove_file(&junk).unwrap();
    assert!(err.contains("not a valid state file"), "{err}");
}

#[test]
fn simclr_has_only_a_shared_encoder() {
    let m = simclr(OptimizerConfig::sgd(0.1, 0.9, 0.0), 0);
    assert_eq!(
        m.default_eval_source(),
        FeatureSource::new(EncoderRole::Shared, FeatureLayer::Backbone)
    );
    assert!(m.encoder(EncoderRole::Query).is_err());
    let f = m.embed(&views(3, 1)[0], m.default_eval_source()).unwrap();
    assert_eq!(f.len(), 3);
}

fn small_resnet(bn_splits: usize) -> BackboneEncoder {
    use mocca_backbones::{MoCoProjectionHead, ProjectionHeadConfig, ResNetConfig, Stem};
    let backbone = ResNetConfig {
        stem: Stem::Cifar,
        width: 0.125,
        bn_splits,
        ..ResNetConfig::resnet18()
    };
    let mut head: ProjectionHeadConfig = MoCoProjectionHead::v2(backbone.feature_dim()).into();
    head.bn_splits = bn_splits;
    BackboneEncoder::new(&backbone, head, 5, &Device::Cpu).unwrap()
}

fn images(n: usize, seed: u64) -> Vec<candle_core::Tensor> {
    let mut rng = mocca_methods::SplitMix64::new(seed);
    let mut view = || {
        let v: Vec<f32> = (0..n * 3 * 16 * 16)
            .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
            .collect();
        candle_core::Tensor::from_vec(v, (n, 3, 16, 16), &Device::Cpu).unwrap()
    };
    vec![view(), view()]
}

#[test]
fn moco_v2_on_a_small_resnet_resumes_bit_identically() {
    // Width-0.125 ResNet-18 (CIFAR stem) on 16x16 images, split-BN in 2 groups.
    let mut cfg = MoCoConfig::cifar10_colab(8, 10, 1);
    cfg.negatives = mocca_methods::NegativeSource::queue(32);
    let build = || Ok(small_resnet(2));
    let mut straight = MoCo::new(cfg.clone(), build, &Device::Cpu).unwrap();
    let s1: Vec<_> = (0..3)
        .map(|s| straight.step(&images(8, s), &[]).unwrap())
        .collect();
    assert!(s1.iter().all(|s| s.loss.is_finite() && s.loss > 0.0));

    let path =
        std::env::temp_dir().join(format!("mocca-resnet-{}.safetensors", std::process::id()));
    let mut first = MoCo::new(cfg.clone(), build, &Device::Cpu).unwrap();
    let mut s2: Vec<_> = (0..1)
        .map(|s| first.step(&images(8, s), &[]).unwrap())
        .collect();
    first.save(&path).unwrap();
    let mut resumed = MoCo::new(cfg, build, &Device::Cpu).unwrap();
    resumed.load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    s2.extend((1..3).map(|s| resumed.step(&images(8, s), &[]).unwrap()));
    assert_eq!(s1, s2);
    use mocca_methods::Encoder;
    let state = |e: &BackboneEncoder| -> Vec<(String, Vec<f32>)> {
        e.state_dict()
            .unwrap()
            .into_iter()
            .filter(|(_, t)| t.dtype() == candle_core::DType::F32)
            .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1().unwrap()))
            .collect()
    };
    assert_eq!(
        state(resumed.query_encoder()),
        state(straight.query_encoder())
    );
    assert_eq!(
        state(resumed.key_encoder().unwrap()),
        state(straight.key_encoder().unwrap())
    );
    // The backbone's own names stay torchvision's for export.
    let names =
        mocca_backbones::StateDict::state_dict(straight.query_encoder().backbone()).unwrap();
    assert_eq!(names[0].0, "conv1.weight");
}

#[test]
fn simclr_on_a_small_resnet_lowers_the_loss() {
    use mocca_backbones::{ResNetConfig, SimCLRProjectionHead, Stem};
    let backbone = ResNetConfig {
        stem: Stem::Cifar,
        width: 0.125,
        ..ResNetConfig::resnet18()
    };
    let head = SimCLRProjectionHead::new(backbone.feature_dim());
    let encoder = BackboneEncoder::new(&backbone, head.into(), 5, &Device::Cpu).unwrap();
    let mut cfg = SimCLRConfig::cifar10(8, 10, 1);
    cfg.lr_schedule = LrSchedule::Constant { lr: 0.05 };
    let mut m = SimCLR::new(cfg, encoder, &Device::Cpu).unwrap();
    let batch = images(8, 1);
    let before = m.step(&batch, &[]).unwrap();
    let after = m.step(&batch, &[]).unwrap();
    assert!(
        after.loss < before.loss,
        "{} !< {}",
        after.loss,
        before.loss
    );
}
