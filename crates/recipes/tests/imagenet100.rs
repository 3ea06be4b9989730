//! The `imagenet100` recipes (solo-learn's ImageNet-100 settings) build their methods, and
//! their schedule and optimiser are solo-learn's.

use candle_core::Device;
use mocca_methods::optim::OptimizerKind;
use mocca_recipes::config::{ConfigBuilder, MethodName, Recipe};
use mocca_recipes::setup;

#[test]
fn every_imagenet100_recipe_builds_its_method_with_solo_learns_schedule_and_lars() {
    for method in [
        MethodName::Simclr,
        MethodName::Byol,
        MethodName::Simsiam,
        MethodName::Mocov3,
        MethodName::Mocov2,
    ] {
        let mut b = ConfigBuilder::from_preset(method, Recipe::Imagenet100).unwrap();
        // A small model: the settings under test do not depend on its size.
        for s in [
            "model.width=0.0625",
            "model.hidden_dim=32",
            "data.image_size=32",
        ] {
            b.set(s).unwrap();
        }
        if !matches!(method, MethodName::Simclr | MethodName::Mocov2) {
            b.set("predictor.hidden_dim=32").unwrap();
        }
        if method == MethodName::Mocov2 {
            // Two queues of 65,536 keys are 128 MiB: the queue's length is not under test.
            b.set("moco.queue_size=512").unwrap();
        }
        let cfg = b.build().unwrap();
        assert_eq!(cfg.data.classes.as_deref(), Some("imagenet100"));
        assert_eq!((cfg.batch_size, cfg.epochs), (256, 400));
        // solo-learn's validation transform: Resize(256) + CenterCrop(224).
        assert_eq!(cfg.eval.resize, Some(256));
        setup::build_method(&cfg, 100, 25_600, &Device::Cpu).unwrap();

        // 10 warmup epochs of 100 steps from 3e-5, reaching the base rate on the last.
        let base = cfg.effective_lr();
        let s = setup::lr_schedule(&cfg, 100).unwrap();
        assert_eq!(s.lr_at(0), 3e-5);
        assert!((s.lr_at(999) - base).abs() < 1e-12, "{method:?}");
        assert!((s.lr_at(1000) - base).abs() < 1e-12, "{method:?}");
        let o = setup::optimizer_config(&cfg);
        match method {
            MethodName::Simsiam | MethodName::Mocov2 => assert_eq!(o.kind, OptimizerKind::Sgd),
            _ => assert_eq!(
                o.kind,
                OptimizerKind::Lars {
                    trust_coefficient: 0.02,
                    eps: 1e-8,
                    clip_lr: true
                }
            ),
        }
    }
}

#[test]
fn the_mocov2_imagenet100_recipe_is_solo_learns_mocov2plus() {
    let preset = || ConfigBuilder::from_preset(MethodName::Mocov2, Recipe::Imagenet100).unwrap();
    let full = preset().build().unwrap();
    let m = full.moco.as_ref().unwrap();
    assert_eq!(m.queue_size, 65_536);
    assert!(m.symmetric && m.per_view_queues);
    assert_eq!(
        m.bn_splits, 1,
        "sync_batchnorm over the batch, no shuffle-BN"
    );
    assert_eq!((m.momentum, m.momentum_end), (0.99, Some(0.999)));
    assert_eq!(
        (full.model.hidden_dim, full.model.out_dim),
        (Some(2048), 256)
    );
    assert_eq!(full.loss.temperature, 0.2);
    assert_eq!(full.augmentation.preset, "mocov2plus");
    assert_eq!(full.effective_lr(), 0.3);
    assert_eq!(full.optimizer.weight_decay, 1e-4);

    let mut b = preset();
    for s in [
        "model.width=0.0625",
        "data.image_size=32",
        "moco.queue_size=512",
    ] {
        b.set(s).unwrap();
    }
    let cfg = b.build().unwrap();
    setup::build_method(&cfg, 100, 25_600, &Device::Cpu).unwrap();
    let c = setup::moco_config(&cfg, 100, 25_600).unwrap().unwrap();
    assert!(c.symmetric && c.per_view_queues && c.cosine_momentum);
    assert_eq!(
        c.symmetric_reduction,
        mocca_methods::SymmetricReduction::Mean
    );
    assert!(!c.shuffle_bn);
    // solo-learn's MomentumUpdater over the run's 40,000 steps: 0.99 at the first update,
    // 0.9945 half-way, 0.999 at the end.
    let moco = mocca_methods::MoCo::new(
        c,
        || Ok(setup::build_encoder(&cfg, &Device::Cpu).unwrap()),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(moco.momentum_at(0), 0.99);
    assert!((moco.momentum_at(20_000) - 0.9945).abs() < 1e-12);
    assert!((moco.momentum_at(40_000) - 0.999).abs() < 1e-15);
    assert_eq!(moco.queue_of_view(1).unwrap().dims(), &[512, 256]);
}
