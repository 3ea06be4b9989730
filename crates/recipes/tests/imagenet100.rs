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
        if method != MethodName::Simclr {
            b.set("predictor.hidden_dim=32").unwrap();
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
            MethodName::Simsiam => assert_eq!(o.kind, OptimizerKind::Sgd),
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
