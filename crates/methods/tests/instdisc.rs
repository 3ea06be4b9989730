//! InstDisc on a tiny encoder: one view, the bank rows of the batch, NCE's fixed normaliser,
//! exact resume, and the errors a caller can cause.

mod common;

use candle_core::{Device, Tensor};
use common::{params, views, TinyEncoder};
use mocca_methods::optim::OptimizerConfig;
use mocca_methods::schedule::LrSchedule;
use mocca_methods::{EncoderRole, InstDisc, InstDiscConfig, InstDiscObjective, Method};
use mocca_queue::BankInit;

const ROWS: usize = 20;

fn instdisc(objective: InstDiscObjective, seed: u64) -> InstDisc<TinyEncoder> {
    let config = InstDiscConfig {
        num_samples: ROWS,
        temperature: 0.1,
        memory_momentum: 0.5,
        objective,
        bank_init: BankInit::Uniform,
        optimizer: OptimizerConfig::sgd(0.05, 0.9, 5e-4),
        lr_schedule: LrSchedule::Constant { lr: 0.05 },
        seed,
    };
    InstDisc::new(config, TinyEncoder::new(seed, 1), &Device::Cpu).unwrap()
}

/// One view of 4 images and their bank rows for step `s` (rows cycle through the bank).
fn batch(s: u64) -> (Vec<Tensor>, Vec<usize>) {
    let v = views(4, s);
    let rows = (0..4).map(|i| (4 * s as usize + i) % ROWS).collect();
    (vec![v[0].clone()], rows)
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

#[test]
fn a_step_rewrites_exactly_the_batchs_bank_rows_as_unit_vectors() {
    let mut m = instdisc(InstDiscObjective::Softmax, 1);
    let before = rows(m.memory());
    let (x, idx) = batch(0);
    m.step(&x, &idx).unwrap();
    let after = rows(m.memory());
    for r in 0..ROWS {
        if idx.contains(&r) {
            let norm: f32 = after[r].iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-6, "row {r}: norm {norm}");
            assert_ne!(after[r], before[r], "row {r} was not updated");
        } else {
            assert_eq!(after[r], before[r], "row {r} changed");
        }
    }
}

#[test]
fn nce_fixes_its_normaliser_on_the_first_step_and_keeps_it() {
    let mut m = instdisc(InstDiscObjective::Nce { noise_samples: 6 }, 2);
    assert_eq!(m.normaliser(), None);
    let (x, idx) = batch(0);
    m.step(&x, &idx).unwrap();
    let z = m.normaliser().unwrap();
    assert!(z.is_finite() && z > 0.0);
    for s in 1..4 {
        let (x, idx) = batch(s);
        m.step(&x, &idx).unwrap();
        assert_eq!(m.normaliser(), Some(z));
    }
}

#[test]
fn instdisc_resumes_bit_identically_with_its_bank_normaliser_and_noise_draws() {
    let nce = InstDiscObjective::Nce { noise_samples: 6 };
    let mut straight = instdisc(nce, 3);
    let s_straight: Vec<_> = (0..5)
        .map(|s| {
            let (x, idx) = batch(s);
            straight.step(&x, &idx).unwrap()
        })
        .collect();
    let path =
        std::env::temp_dir().join(format!("mocca-instdisc-{}.safetensors", std::process::id()));
    let mut first = instdisc(nce, 3);
    let mut s_resumed: Vec<_> = (0..2)
        .map(|s| {
            let (x, idx) = batch(s);
            first.step(&x, &idx).unwrap()
        })
        .collect();
    first.save(&path).unwrap();
    // Another seed: every part of the state must come from the file.
    let mut resumed = instdisc(nce, 99);
    resumed.load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    s_resumed.extend((2..5).map(|s| {
        let (x, idx) = batch(s);
        resumed.step(&x, &idx).unwrap()
    }));
    assert_eq!(s_resumed, s_straight);
    assert_eq!(
        params(resumed.shared_encoder()),
        params(straight.shared_encoder())
    );
    assert_eq!(rows(resumed.memory()), rows(straight.memory()));
    assert_eq!(resumed.normaliser(), straight.normaliser());
}

#[test]
fn two_views_are_refused_naming_instdiscs_one_view() {
    let mut m = instdisc(InstDiscObjective::Softmax, 4);
    let err = m.step(&views(4, 0), &[0, 1, 2, 3]).unwrap_err().to_string();
    assert!(err.contains("one augmented view per image, got 2"), "{err}");
}

#[test]
fn bad_sample_indices_are_named_and_change_nothing() {
    let mut m = instdisc(InstDiscObjective::Softmax, 5);
    let before = rows(m.memory());
    let (x, _) = batch(0);
    for (idx, says) in [
        (vec![0, 1, 2], "each of the 4 samples"),
        (vec![0, 1, 2, ROWS], "out of range"),
        (vec![0, 1, 1, 2], "appears twice"),
    ] {
        let err = m.step(&x, &idx).unwrap_err().to_string();
        assert!(err.contains(says), "{idx:?}: {err}");
    }
    assert_eq!(rows(m.memory()), before);
    assert_eq!(m.steps_done(), 0);
}

#[test]
fn given_noise_rows_must_start_with_each_samples_own_row() {
    let mut m = instdisc(InstDiscObjective::Nce { noise_samples: 2 }, 6);
    let (x, idx) = batch(0);
    let bad: Vec<Vec<usize>> = idx.iter().map(|&y| vec![(y + 1) % ROWS, 0, 1]).collect();
    let err = m.step_with_noise(&x, &idx, &bad).unwrap_err().to_string();
    assert!(err.contains("the sample's own index first"), "{err}");
    let good: Vec<Vec<usize>> = idx.iter().map(|&y| vec![y, 0, 1]).collect();
    assert!(m.step_with_noise(&x, &idx, &good).is_ok());
}

#[test]
fn instdisc_has_one_shared_encoder() {
    let m = instdisc(InstDiscObjective::Softmax, 7);
    assert!(Method::encoder(&m, EncoderRole::Shared).is_ok());
    let err = Method::encoder(&m, EncoderRole::Key)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("one encoder"), "{err}");
}

#[test]
fn the_collapse_monitor_sees_the_features_and_their_bank_rows() {
    let mut m = instdisc(InstDiscObjective::Softmax, 8);
    assert!(m.last_embeddings().is_none());
    let (x, idx) = batch(0);
    let before: Vec<Vec<f32>> = idx.iter().map(|&i| rows(m.memory())[i].clone()).collect();
    m.step(&x, &idx).unwrap();
    let e = m.last_embeddings().unwrap();
    assert_eq!(e.view0.dims(), &[4, common::OUT]);
    assert_eq!(rows(e.view1.as_ref().unwrap()), before);
    assert!(e.metrics().unwrap().alignment.is_some());
}
