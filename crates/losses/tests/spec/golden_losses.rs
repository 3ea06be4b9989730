//! Every case of tests/golden/losses against both code paths: the loss and
//! the gradients w.r.t. the raw inputs within the README's tolerance.

use crate::common::{array, assert_array_close, assert_loss_close, golden, tensor, var, BOTH};
use candle_core::{DType, Tensor, Var};
use mocca_losses::{
    ContrastiveOutput, InfoNCEConfig, InfoNCELoss, LossError, NTXentConfig, NTXentLoss,
    SymmetricReduction,
};

const REL: f64 = 1e-5;

fn cases(file: &str) -> Vec<serde_json::Value> {
    golden::load(file)["cases"]
        .as_array()
        .expect("cases")
        .clone()
}

fn tau(case: &serde_json::Value) -> f64 {
    case["tau"].as_f64().unwrap()
}

#[test]
fn ntxent_matches_every_golden_case() {
    for implementation in BOTH {
        for case in cases("losses/ntxent.json") {
            let name = format!("{implementation:?} {}", case["name"]);
            let (z0, z1) = (
                var(&array(&case, "z0"), DType::F32),
                var(&array(&case, "z1"), DType::F32),
            );
            let loss = NTXentLoss::new(NTXentConfig {
                temperature: tau(&case),
                implementation,
            })
            .unwrap();
            let out = loss.forward(&z0, &z1).unwrap();
            assert_loss_close(&name, &out.loss, case["loss"].as_f64().unwrap(), REL);
            let grads = out.loss.backward().unwrap();
            assert_array_close(
                &format!("{name} grad_z0"),
                grads.get(&z0).unwrap(),
                &array(&case, "grad_z0"),
                REL,
            );
            assert_array_close(
                &format!("{name} grad_z1"),
                grads.get(&z1).unwrap(),
                &array(&case, "grad_z1"),
                REL,
            );
        }
    }
}

#[test]
fn infonce_matches_every_golden_case() {
    for implementation in BOTH {
        for case in cases("losses/infonce.json") {
            let name = format!("{implementation:?} {}", case["name"]);
            let (q, k) = (
                var(&array(&case, "q"), DType::F32),
                var(&array(&case, "k"), DType::F32),
            );
            let queue = tensor(&array(&case, "queue"), DType::F32);
            let loss = InfoNCELoss::new(InfoNCEConfig {
                temperature: tau(&case),
                implementation,
                ..Default::default()
            })
            .unwrap();
            let out = loss.forward(&q, &k, &queue).unwrap();
            assert_loss_close(&name, &out.loss, case["loss"].as_f64().unwrap(), REL);
            let grads = out.loss.backward().unwrap();
            assert_array_close(
                &format!("{name} grad_q"),
                grads.get(&q).unwrap(),
                &array(&case, "grad_q"),
                REL,
            );
            assert_array_close(
                &format!("{name} grad_k"),
                grads.get(&k).unwrap(),
                &array(&case, "grad_k"),
                REL,
            );
        }
    }
}

#[test]
fn symmetric_moco_loss_matches_every_golden_case_in_both_reductions() {
    check_symmetric_cases("losses/moco_symmetric.json", |loss, q, k, case| {
        let queue = tensor(&array(case, "queue"), DType::F32);
        loss.forward_symmetric(q[0], q[1], k[0], k[1], &queue)
    });
}

#[test]
fn per_view_queues_match_solo_learns_mocov2plus_loss() {
    check_symmetric_cases("losses/mocov2plus.json", |loss, q, k, case| {
        let queue1 = tensor(&array(case, "queue1"), DType::F32);
        let queue2 = tensor(&array(case, "queue2"), DType::F32);
        loss.forward_symmetric_per_view(q[0], q[1], k[0], k[1], &queue1, &queue2)
    });
}

/// Every case of a symmetric file (`q1, q2, k1, k2`, a `reduction`, the loss and the queries'
/// gradients) through `forward` on both code paths.
fn check_symmetric_cases(
    file: &str,
    forward: impl Fn(
        &InfoNCELoss,
        [&Var; 2],
        [&Tensor; 2],
        &serde_json::Value,
    ) -> Result<ContrastiveOutput, LossError>,
) {
    for implementation in BOTH {
        for case in cases(file) {
            let name = format!("{implementation:?} {}", case["name"]);
            let (q1, q2) = (
                var(&array(&case, "q1"), DType::F32),
                var(&array(&case, "q2"), DType::F32),
            );
            let (k1, k2) = (
                tensor(&array(&case, "k1"), DType::F32),
                tensor(&array(&case, "k2"), DType::F32),
            );
            let symmetric_reduction = match case["reduction"].as_str().unwrap() {
                "sum" => SymmetricReduction::Sum,
                "mean" => SymmetricReduction::Mean,
                other => panic!("unknown reduction {other}"),
            };
            let loss = InfoNCELoss::new(InfoNCEConfig {
                temperature: tau(&case),
                symmetric_reduction,
                implementation,
            })
            .unwrap();
            let out = forward(&loss, [&q1, &q2], [&k1, &k2], &case).unwrap();
            assert_loss_close(&name, &out.loss, case["loss"].as_f64().unwrap(), REL);
            let grads = out.loss.backward().unwrap();
            for (q, field) in [(&q1, "grad_q1"), (&q2, "grad_q2")] {
                assert_array_close(
                    &format!("{name} {field}"),
                    grads.get(q).unwrap(),
                    &array(&case, field),
                    REL,
                );
            }
        }
    }
}

#[test]
fn end_to_end_matches_every_golden_case() {
    for implementation in BOTH {
        for case in cases("losses/end_to_end.json") {
            let name = format!("{implementation:?} {}", case["name"]);
            let (q, k) = (
                var(&array(&case, "q"), DType::F32),
                var(&array(&case, "k"), DType::F32),
            );
            let loss = InfoNCELoss::new(InfoNCEConfig {
                temperature: tau(&case),
                implementation,
                ..Default::default()
            })
            .unwrap();
            let out = loss.forward_end_to_end(&q, &k).unwrap();
            assert_loss_close(&name, &out.loss, case["loss"].as_f64().unwrap(), REL);
            let grads = out.loss.backward().unwrap();
            assert_array_close(
                &format!("{name} grad_q"),
                grads.get(&q).unwrap(),
                &array(&case, "grad_q"),
                REL,
            );
            assert_array_close(
                &format!("{name} grad_k"),
                grads.get(&k).unwrap(),
                &array(&case, "grad_k"),
                REL,
            );
        }
    }
}

#[test]
fn half_precision_inputs_accumulate_in_f32_and_return_gradients_in_their_dtype() {
    for implementation in BOTH {
        for case in cases("losses/half_precision.json") {
            let name = format!("{implementation:?} {}", case["name"]);
            let dtype = match case["dtype"].as_str().unwrap() {
                "bf16" => DType::BF16,
                "f16" => DType::F16,
                other => panic!("unknown dtype {other}"),
            };
            let (a, b, ga, gb) = match case["loss_kind"].as_str().unwrap() {
                "ntxent" => ("z0", "z1", "grad_z0", "grad_z1"),
                _ => ("q", "k", "grad_q", "grad_k"),
            };
            let (x, y) = (var(&array(&case, a), dtype), var(&array(&case, b), dtype));
            let out = if a == "z0" {
                let loss = NTXentLoss::new(NTXentConfig {
                    temperature: tau(&case),
                    implementation,
                })
                .unwrap();
                loss.forward(&x, &y).unwrap()
            } else {
                let queue = tensor(&array(&case, "queue"), dtype);
                let loss = InfoNCELoss::new(InfoNCEConfig {
                    temperature: tau(&case),
                    implementation,
                    ..Default::default()
                })
                .unwrap();
                loss.forward(&x, &y, &queue).unwrap()
            };
            assert_eq!(out.loss.dtype(), DType::F32, "{name}: loss dtype");
            let expected = case["loss"].as_f64().unwrap();
            let got = crate::common::scalar(&out.loss);
            assert!(
                ((got - expected) / expected).abs() <= 1e-5,
                "{name}: loss {got} vs {expected}"
            );
            let grads = out.loss.backward().unwrap();
            for (v, field) in [(&x, ga), (&y, gb)] {
                let g = grads.get(v).unwrap();
                assert_eq!(g.dtype(), dtype, "{name} {field}: dtype");
                let want = array(&case, field);
                let tol = 1e-2 * want.max_abs();
                let worst = crate::common::values(g)
                    .iter()
                    .zip(&want.data)
                    .map(|(g, e)| (g - e).abs())
                    .fold(0.0, f64::max);
                assert!(worst <= tol, "{name} {field}: worst {worst:e} > {tol:e}");
            }
        }
    }
}

#[test]
fn negative_cosine_similarity_matches_lightly_in_every_case() {
    let cases = cases("losses/negative_cosine_similarity.json");
    assert!(cases.len() >= 4, "{} cases", cases.len());
    for case in cases {
        let name = case["name"].to_string();
        let (z0, z1) = (
            var(&array(&case, "z0"), DType::F32),
            var(&array(&case, "z1"), DType::F32),
        );
        let loss = mocca_losses::NegativeCosineSimilarity::default()
            .forward(&z0, &z1)
            .unwrap();
        assert_loss_close(&name, &loss, case["loss"].as_f64().unwrap(), REL);
        let grads = loss.backward().unwrap();
        for (v, key) in [(&z0, "grad_z0"), (&z1, "grad_z1")] {
            assert_array_close(
                &format!("{name} {key}"),
                grads.get(v).unwrap(),
                &array(&case, key),
                REL,
            );
        }
    }
}
