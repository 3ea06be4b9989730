//! InstDisc's whole training step against lemniscate's code (zhirongw/lemniscate.pytorch,
//! `cifar.py` with `LinearAverage` or `NCEAverage` + `NCECriterion`), float64 trajectories of
//! 3–4 steps (tests/golden/methods/README.md, `instdisc_lemniscate`), run through the public
//! `InstDisc` API from the reference's starting weights, memory, images and NCE draws.

mod golden_support;

use candle_core::Device;
use golden_support::*;
use mocca_backbones::{Backend, MoCoProjectionHead, ResNetConfig, Stem};
use mocca_methods::optim::OptimizerConfig;
use mocca_methods::schedule::LrSchedule;
use mocca_methods::{BackboneEncoder, InstDisc, InstDiscConfig, InstDiscObjective, Method};
use mocca_queue::BankInit;

const CASES: [&str; 3] = [
    "linear_average_w1_16_b8_i16_n24_t0.1",
    "nce_average_w1_16_b8_i16_n24_k8_t0.07",
    "linear_average_w1_32_b16_i12_n32_t0.1_m0.8",
];

fn run_case(name: &str, backend: Backend) {
    let c = case(&format!("methods/instdisc_lemniscate/{name}.json"));
    let lr = num(&c, "lr");
    let backbone = ResNetConfig {
        stem: Stem::Cifar,
        width: num(&c, "width"),
        backend,
        ..ResNetConfig::resnet18()
    };
    assert_eq!(backbone.feature_dim(), int(&c, "feature_dim"));
    // lemniscate's `linear` (feature_dim → low_dim, with bias) is a one-layer head.
    let head = MoCoProjectionHead {
        output_dim: int(&c, "low_dim"),
        ..MoCoProjectionHead::v1(backbone.feature_dim())
    };
    let encoder = BackboneEncoder::new(&backbone, head.into(), 0, &Device::Cpu).unwrap();
    load(&encoder, &c["initial_state"], fc_head_key);
    let objective = match c["kind"].as_str().unwrap() {
        "linear_average" => InstDiscObjective::Softmax,
        "nce_average" => InstDiscObjective::Nce {
            noise_samples: int(&c, "nce_k"),
        },
        other => panic!("unknown kind {other}"),
    };
    // lemniscate keeps τ and m in a float32 buffer: the reference ran with their f32 values.
    let config = InstDiscConfig {
        num_samples: int(&c, "n_data"),
        temperature: num(&c, "temperature_used"),
        memory_momentum: num(&c, "memory_momentum_used"),
        objective,
        bank_init: BankInit::Uniform,
        optimizer: OptimizerConfig::sgd(lr, num(&c, "sgd_momentum"), num(&c, "weight_decay")),
        lr_schedule: LrSchedule::Constant { lr },
        seed: 0,
    };
    let mut instdisc = InstDisc::new(config, encoder, &Device::Cpu).unwrap();
    instdisc
        .replace_memory(&tensor(&array(&c["initial_memory"])))
        .unwrap();
    let mut check = Check::default();
    for (t, s) in c["steps"].as_array().unwrap().iter().enumerate() {
        let views = [tensor(&array(&s["x"]))];
        let y = indices(&s["y"]);
        let stats = match objective {
            InstDiscObjective::Softmax => instdisc.step(&views, &y),
            InstDiscObjective::Nce { .. } => {
                instdisc.step_with_noise(&views, &y, &index_lists(&s["sampled_idx"]))
            }
        }
        .unwrap();
        check.close(
            &format!("{name} step {t} loss"),
            &[stats.loss],
            &[num(s, "loss")],
        );
    }
    if let InstDiscObjective::Nce { .. } = objective {
        check.close(
            &format!("{name} Z"),
            &[instdisc.normaliser().unwrap()],
            &[num(&c, "Z")],
        );
    }
    assert_state(
        &mut check,
        name,
        instdisc.shared_encoder(),
        &c["final_state"],
        fc_head_key,
        |_, v| v,
    );
    check.close(
        &format!("{name} memory"),
        &values(instdisc.memory()),
        &array(&c["final_memory"]).data,
    );
    check.assert_passes();
}

#[test]
fn instdisc_matches_lemniscates_full_softmax() {
    run_case(CASES[0], Backend::Native);
}

#[test]
fn instdisc_matches_lemniscates_nce_with_z_fixed_on_the_first_batch() {
    run_case(CASES[1], Backend::Native);
}

#[test]
fn instdisc_matches_lemniscates_memory_momentum_0_8() {
    run_case(CASES[2], Backend::Native);
}

#[test]
fn instdisc_on_the_fast_backend_matches_lemniscate_in_every_case() {
    for name in CASES {
        run_case(name, Backend::Fast);
    }
}
