//! MoCo v3's whole training step against facebookresearch/moco-v3's own code (`moco/builder.py`
//! `MoCo_ResNet`, `moco/optimizer.py` `LARS`, `main_moco.py`'s loop): float64 trajectories of
//! 3–4 steps (tests/golden/methods/README.md, `mocov3_official`), run through the public
//! `MoCoV3` API from the reference's starting weights and views, on both backends. Every step's
//! loss and momentum, and every element of the final base encoder, momentum encoder and
//! predictor, within `1e-4 · max(1, max |expected|)`.

mod golden_support;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use golden_support::*;
use mocca_backbones::{Backend, MoCoV3Mlp, ResNetConfig, Stem};
use mocca_methods::optim::{OptimizerConfig, OptimizerKind};
use mocca_methods::schedule::{LrSchedule, MomentumSchedule};
use mocca_methods::{BackboneEncoder, MoCoV3, MoCoV3Config, Predictor};

const CASES: [&str; 3] = [
    "resnet_proj2_lars_w1_32_b16_i12_t1.0_mcos0.9",
    "resnet_proj2_sgd_w1_32_b16_i12_t0.2_m0.9",
    "resnet_proj3_sgd_w1_16_b8_i16_t1.0_m0.9",
];

/// moco-v3's keys of one encoder (`<prefix>.<torchvision>`, `<prefix>.fc.N.*` the projector) as
/// `BackboneEncoder`'s, the entries of other modules left out.
fn encoder_part(state: &serde_json::Value, prefix: &str) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (k, v) in state.as_object().unwrap() {
        let Some(rest) = k.strip_prefix(&format!("{prefix}.")) else {
            continue;
        };
        let ours = match rest.strip_prefix("fc.") {
            Some(head) => format!("head.layers.{head}"),
            None => format!("backbone.{rest}"),
        };
        map.insert(ours, v.clone());
    }
    serde_json::Value::Object(map)
}

/// `predictor.N.*` as the predictor's `layers.N.*`.
fn predictor_part(state: &serde_json::Value) -> HashMap<String, serde_json::Value> {
    state
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("predictor.")
                .map(|r| (format!("layers.{r}"), v.clone()))
        })
        .collect()
}

fn run_case(name: &str, backend: Backend) -> Check {
    let c = case(&format!("methods/mocov3_official/{name}.json"));
    let backbone = ResNetConfig {
        stem: Stem::Cifar,
        width: num(&c, "width"),
        backend,
        ..ResNetConfig::resnet18()
    };
    assert_eq!(backbone.feature_dim(), int(&c, "feature_dim"));
    assert_eq!(int(&c, "predictor_layers"), 2);
    assert!(!c["predictor_last_bn"].as_bool().unwrap());
    let (dim, mlp) = (int(&c, "dim"), int(&c, "mlp_dim"));
    let projector = MoCoV3Mlp {
        num_layers: int(&c, "projector_layers"),
        input_dim: backbone.feature_dim(),
        mlp_dim: mlp,
        output_dim: dim,
        last_bn: true,
    };
    let predictor = Predictor::new(
        MoCoV3Mlp {
            num_layers: 2,
            input_dim: dim,
            mlp_dim: mlp,
            output_dim: dim,
            last_bn: false,
        },
        0,
        &Device::Cpu,
    )
    .unwrap();
    let init = &c["initial_state"];
    let mut tensors: HashMap<String, Tensor> =
        predictor.state_dict().unwrap().into_iter().collect();
    for (k, v) in predictor_part(init) {
        assert!(
            tensors.contains_key(&k),
            "reference key {k} is not the predictor's"
        );
        tensors.insert(k, tensor(&array(&v)));
    }
    predictor.load_state_dict(&tensors).unwrap();
    let base_init = encoder_part(init, "base_encoder");
    let build = || {
        let e = BackboneEncoder::new(&backbone, projector.into(), 0, &Device::Cpu)?;
        load(&e, &base_init, |k| k.to_string());
        Ok(e)
    };
    let lr = num(&c, "lr");
    let (sgd_momentum, wd) = (num(&c, "sgd_momentum"), num(&c, "weight_decay"));
    let optimizer = match c["optimizer"].as_str().unwrap() {
        "sgd" => OptimizerConfig::sgd(lr, sgd_momentum, wd),
        "lars" => OptimizerConfig {
            kind: OptimizerKind::LarsMoCoV3 {
                trust_coefficient: num(&c, "lars_trust_coefficient"),
            },
            ..OptimizerConfig::lars_mocov3(lr, sgd_momentum, wd)
        },
        other => panic!("unknown optimizer {other}"),
    };
    let s = &c["momentum_schedule"];
    let momentum = match s["kind"].as_str().unwrap() {
        "constant" => MomentumSchedule::Constant(num(s, "value")),
        // main_moco.py's adjust_moco_momentum with each step counted as an epoch.
        "moco_m_cos" => MomentumSchedule::Cosine {
            base: num(s, "moco_m"),
            end: 1.0,
            total_steps: int(s, "epochs") as u64,
        },
        other => panic!("unknown momentum schedule {other}"),
    };
    let config = MoCoV3Config {
        temperature: num(&c, "temperature"),
        momentum,
        optimizer,
        lr_schedule: LrSchedule::Constant { lr },
    };
    let mut moco = MoCoV3::new(config, build, predictor, &Device::Cpu).unwrap();
    let mut check = Check::default();
    check_steps(&mut check, name, &mut moco, &c, ["x1", "x2"], true);
    let fin = &c["final_state"];
    let same = |k: &str| k.to_string();
    for (what, encoder, prefix) in [
        ("base", moco.base_encoder(), "base_encoder"),
        ("momentum", moco.momentum_encoder(), "momentum_encoder"),
    ] {
        assert_state(
            &mut check,
            &format!("{name} {what}"),
            encoder,
            &encoder_part(fin, prefix),
            same,
            |_, v| v,
        );
    }
    let ours: HashMap<String, Tensor> =
        moco.predictor().state_dict().unwrap().into_iter().collect();
    for (k, v) in predictor_part(fin) {
        check.close(
            &format!("{name} predictor {k}"),
            &values(&ours[&k]),
            &array(&v).data,
        );
    }
    check
}

#[test]
fn mocov3_matches_the_official_code_with_its_lars_and_cosine_momentum() {
    run_case(CASES[0], Backend::Native).assert_passes();
}

#[test]
fn mocov3_matches_the_official_code_with_sgd_at_tau_0_2() {
    run_case(CASES[1], Backend::Native).assert_passes();
}

#[test]
fn mocov3_matches_the_official_code_with_the_papers_three_layer_projector() {
    run_case(CASES[2], Backend::Native).assert_passes();
}

#[test]
fn mocov3_on_the_fast_backend_matches_the_official_code_in_every_case() {
    for name in CASES {
        run_case(name, Backend::Fast).assert_passes();
    }
}
