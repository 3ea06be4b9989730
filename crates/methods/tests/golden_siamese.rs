//! BYOL and SimSiam, whole training steps against lightly's own examples
//! (`examples/pytorch/byol.py`, `examples/pytorch/simsiam.py`): float64 trajectories of 3–4
//! steps (tests/golden/methods/README.md, `byol_lightly`, `simsiam_lightly`) run through the
//! public `BYOL` and `SimSiam` API from the references' starting weights and views, on both
//! backends. Every step's loss (and BYOL's momentum) and every element of every final tensor,
//! the momentum copies and predictors included, within `1e-4 · max(1, max |expected|)`.

mod golden_support;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use golden_support::*;
use mocca_backbones::{
    BYOLPredictionHead, BYOLProjectionHead, Backend, ResNetConfig, SimSiamPredictionHead,
    SimSiamProjectionHead, Stem,
};
use mocca_methods::optim::OptimizerConfig;
use mocca_methods::schedule::{LrSchedule, MomentumSchedule};
use mocca_methods::{BYOLConfig, BackboneEncoder, Predictor, SimSiam, SimSiamConfig, BYOL};

const BYOL_CASES: [&str; 2] = ["w1_16_b8_i16_h32_o16_mcos0.9", "w1_32_b16_i12_h16_o8_m0.8"];
const SIMSIAM_CASES: [&str; 2] = [
    "w1_16_b8_i16_proj32_o16_pred8",
    "w1_32_b16_i12_proj16_o16_pred4",
];

/// The reference entries whose key starts with `prefix`, the prefix taken off.
fn part(state: &serde_json::Value, prefix: &str) -> serde_json::Value {
    let map = state
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|r| (r.to_string(), v.clone())))
        .collect();
    serde_json::Value::Object(map)
}

/// lightly's `backbone.*` / `projection_head.*` (or their `_momentum` copies) as one encoder
/// state: `backbone.<torchvision>`, `head.layers.N.*`.
fn encoder_part(state: &serde_json::Value, momentum: bool) -> serde_json::Value {
    let suffix = if momentum { "_momentum" } else { "" };
    let mut map = serde_json::Map::new();
    for (from, to) in [("backbone", "backbone"), ("projection_head", "head")] {
        for (k, v) in part(state, &format!("{from}{suffix}."))
            .as_object()
            .unwrap()
        {
            map.insert(format!("{to}.{k}"), v.clone());
        }
    }
    serde_json::Value::Object(map)
}

fn load_predictor(p: &Predictor, state: &serde_json::Value) {
    let mut tensors: HashMap<String, Tensor> = p.state_dict().unwrap().into_iter().collect();
    for (k, v) in state.as_object().unwrap() {
        assert!(
            tensors.contains_key(k),
            "reference key {k} is not the predictor's"
        );
        tensors.insert(k.clone(), tensor(&array(v)));
    }
    p.load_state_dict(&tensors).unwrap();
}

fn check_predictor(check: &mut Check, what: &str, p: &Predictor, state: &serde_json::Value) {
    let ours: HashMap<String, Tensor> = p.state_dict().unwrap().into_iter().collect();
    for (k, v) in state.as_object().unwrap() {
        check.close(
            &format!("{what} prediction_head.{k}"),
            &values(&ours[k]),
            &array(v).data,
        );
    }
}

fn backbone_config(c: &serde_json::Value, backend: Backend) -> ResNetConfig {
    let backbone = ResNetConfig {
        stem: Stem::Cifar,
        width: num(c, "width"),
        backend,
        ..ResNetConfig::resnet18()
    };
    assert_eq!(backbone.feature_dim(), int(c, "feature_dim"));
    backbone
}

fn byol_momentum(c: &serde_json::Value) -> MomentumSchedule {
    let s = &c["momentum_schedule"];
    match s["kind"].as_str().unwrap() {
        "constant" => MomentumSchedule::Constant(num(s, "value")),
        // lightly's cosine_schedule(t, max_steps, start, 1): the cosine reaches 1 at max_steps − 1.
        "cosine_schedule" => {
            assert_eq!(num(s, "end_value"), 1.0);
            MomentumSchedule::Cosine {
                base: num(s, "start_value"),
                end: 1.0,
                total_steps: int(s, "max_steps") as u64 - 1,
            }
        }
        other => panic!("unknown momentum schedule {other}"),
    }
}

fn run_byol(name: &str, backend: Backend) -> Check {
    let c = case(&format!("methods/byol_lightly/{name}.json"));
    let backbone = backbone_config(&c, backend);
    let (hidden, out) = (int(&c, "head_hidden_dim"), int(&c, "out_dim"));
    let head = BYOLProjectionHead {
        input_dim: backbone.feature_dim(),
        hidden_dim: hidden,
        output_dim: out,
    };
    let predictor = Predictor::new(
        BYOLPredictionHead {
            input_dim: out,
            hidden_dim: hidden,
            output_dim: out,
        },
        0,
        &Device::Cpu,
    )
    .unwrap();
    let init = &c["initial_state"];
    load_predictor(&predictor, &part(init, "prediction_head."));
    let encoder_init = encoder_part(init, false);
    let build = || {
        let e = BackboneEncoder::new(&backbone, head.into(), 0, &Device::Cpu)?;
        load(&e, &encoder_init, |k| k.to_string());
        Ok(e)
    };
    let lr = num(&c, "lr");
    let config = BYOLConfig {
        momentum: byol_momentum(&c),
        optimizer: OptimizerConfig::sgd(lr, num(&c, "sgd_momentum"), num(&c, "weight_decay")),
        lr_schedule: LrSchedule::Constant { lr },
    };
    let mut byol = BYOL::new(config, build, predictor, &Device::Cpu).unwrap();
    let mut check = Check::default();
    check_steps(&mut check, name, &mut byol, &c, ["x0", "x1"], true);
    let fin = &c["final_state"];
    let same = |k: &str| k.to_string();
    assert_state(
        &mut check,
        name,
        byol.online_encoder(),
        &encoder_part(fin, false),
        same,
        |_, v| v,
    );
    assert_state(
        &mut check,
        &format!("{name} momentum copy"),
        byol.target_encoder(),
        &encoder_part(fin, true),
        same,
        |_, v| v,
    );
    check_predictor(
        &mut check,
        name,
        byol.predictor(),
        &part(fin, "prediction_head."),
    );
    check
}

fn run_simsiam(name: &str, backend: Backend, stop_gradient: bool) -> Check {
    let c = case(&format!("methods/simsiam_lightly/{name}.json"));
    let backbone = backbone_config(&c, backend);
    let out = int(&c, "out_dim");
    let head = SimSiamProjectionHead {
        input_dim: backbone.feature_dim(),
        hidden_dim: int(&c, "projection_hidden_dim"),
        output_dim: out,
    };
    let predictor = Predictor::new(
        SimSiamPredictionHead {
            input_dim: out,
            hidden_dim: int(&c, "prediction_hidden_dim"),
            output_dim: out,
        },
        0,
        &Device::Cpu,
    )
    .unwrap();
    let init = &c["initial_state"];
    load_predictor(&predictor, &part(init, "prediction_head."));
    let encoder = BackboneEncoder::new(&backbone, head.into(), 0, &Device::Cpu).unwrap();
    load(&encoder, &encoder_part(init, false), |k| k.to_string());
    let lr = num(&c, "lr");
    let config = SimSiamConfig {
        optimizer: OptimizerConfig::sgd(lr, num(&c, "sgd_momentum"), num(&c, "weight_decay")),
        lr_schedule: LrSchedule::Constant { lr },
        stop_gradient,
    };
    let mut simsiam = SimSiam::new(config, encoder, predictor, &Device::Cpu).unwrap();
    let mut check = Check::default();
    check_steps(&mut check, name, &mut simsiam, &c, ["x0", "x1"], false);
    let fin = &c["final_state"];
    assert_state(
        &mut check,
        name,
        simsiam.shared_encoder(),
        &encoder_part(fin, false),
        |k| k.to_string(),
        |_, v| v,
    );
    check_predictor(
        &mut check,
        name,
        simsiam.predictor(),
        &part(fin, "prediction_head."),
    );
    check
}

#[test]
fn byol_matches_lightly_with_lightlys_cosine_momentum() {
    run_byol(BYOL_CASES[0], Backend::Native).assert_passes();
}

#[test]
fn byol_matches_lightly_with_constant_momentum_0_8() {
    run_byol(BYOL_CASES[1], Backend::Native).assert_passes();
}

#[test]
fn byol_on_the_fast_backend_matches_lightly_in_every_case() {
    for name in BYOL_CASES {
        run_byol(name, Backend::Fast).assert_passes();
    }
}

#[test]
fn simsiam_matches_lightly_with_a_bottleneck_predictor() {
    run_simsiam(SIMSIAM_CASES[0], Backend::Native, true).assert_passes();
}

#[test]
fn simsiam_matches_lightly_at_batch_16() {
    run_simsiam(SIMSIAM_CASES[1], Backend::Native, true).assert_passes();
}

#[test]
fn simsiam_on_the_fast_backend_matches_lightly_in_every_case() {
    for name in SIMSIAM_CASES {
        run_simsiam(name, Backend::Fast, true).assert_passes();
    }
}

#[test]
fn simsiam_without_the_stop_gradient_leaves_lightlys_trajectory() {
    // The switch is the method: without it the first step's loss is the same (nothing has
    // been updated) but the weights after it differ by far more than the tolerance.
    let check = run_simsiam(SIMSIAM_CASES[0], Backend::Native, false);
    assert!(
        check.worst > 10.0 * TOL,
        "worst scaled error {:e} ({})",
        check.worst,
        check.worst_what
    );
}
