//! The fused CPU path against the composed candle ops on shapes the golden
//! files do not reach: several streamed blocks of negatives (merged across
//! threads), partial blocks, large batches.

use crate::common::{pseudo_random, scalar, unit_rows, values};
use candle_core::{DType, Tensor, Var};
use mocca_losses::{
    ContrastiveOutput, Implementation, InfoNCEConfig, InfoNCELoss, NTXentConfig, NTXentLoss,
};

fn assert_same(
    what: &str,
    fused: (ContrastiveOutput, Vec<Vec<f64>>),
    composed: (ContrastiveOutput, Vec<Vec<f64>>),
) {
    let (lf, lc) = (scalar(&fused.0.loss), scalar(&composed.0.loss));
    assert!(
        (lf - lc).abs() <= 1e-5 * lc.abs().max(1.0),
        "{what}: loss {lf} vs {lc}"
    );
    assert_eq!(
        scalar(&fused.0.accuracy),
        scalar(&composed.0.accuracy),
        "{what}: accuracy"
    );
    for (i, (gf, gc)) in fused.1.iter().zip(&composed.1).enumerate() {
        let scale = gc.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let worst = gf
            .iter()
            .zip(gc)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= 1e-5 * scale,
            "{what}: gradient {i} differs by {worst:e}"
        );
    }
}

fn run_infonce(
    implementation: Implementation,
    n: usize,
    d: usize,
    k: usize,
    tau: f64,
) -> (ContrastiveOutput, Vec<Vec<f64>>) {
    let q = Var::from_tensor(&pseudo_random(n, d, 1, 2.0, DType::F32)).unwrap();
    let key = Var::from_tensor(&pseudo_random(n, d, 2, 2.0, DType::F32)).unwrap();
    let negatives = unit_rows(k, d, 3, DType::F32);
    let loss = InfoNCELoss::new(InfoNCEConfig {
        temperature: tau,
        implementation,
        ..Default::default()
    })
    .unwrap();
    let out = loss.forward(&q, &key, &negatives).unwrap();
    let g = out.loss.backward().unwrap();
    let grads = vec![values(g.get(&q).unwrap()), values(g.get(&key).unwrap())];
    (out, grads)
}

#[test]
fn fused_infonce_matches_composed_across_streamed_blocks() {
    // (n, d, K): K spanning 1, several and partial blocks of negatives.
    for (n, d, k, tau) in [
        (64, 32, 5000, 0.07),
        (256, 16, 4097, 0.2),
        (3, 8, 9000, 0.01),
        (17, 5, 1, 0.5),
    ] {
        let what = format!("n={n} d={d} K={k} tau={tau}");
        assert_same(
            &what,
            run_infonce(Implementation::Auto, n, d, k, tau),
            run_infonce(Implementation::Composed, n, d, k, tau),
        );
    }
}

fn run_ntxent(
    implementation: Implementation,
    n: usize,
    d: usize,
    tau: f64,
) -> (ContrastiveOutput, Vec<Vec<f64>>) {
    let z0 = Var::from_tensor(&pseudo_random(n, d, 4, 1.0, DType::F32)).unwrap();
    let z1 = Var::from_tensor(&pseudo_random(n, d, 5, 1.0, DType::F32)).unwrap();
    let loss = NTXentLoss::new(NTXentConfig {
        temperature: tau,
        implementation,
    })
    .unwrap();
    let out = loss.forward(&z0, &z1).unwrap();
    let g = out.loss.backward().unwrap();
    let grads = vec![values(g.get(&z0).unwrap()), values(g.get(&z1).unwrap())];
    (out, grads)
}

#[test]
fn fused_ntxent_matches_composed_on_a_large_batch() {
    for (n, d, tau) in [(300, 64, 0.1), (130, 7, 0.5)] {
        let what = format!("n={n} d={d} tau={tau}");
        assert_same(
            &what,
            run_ntxent(Implementation::Auto, n, d, tau),
            run_ntxent(Implementation::Composed, n, d, tau),
        );
    }
}

#[test]
fn fused_end_to_end_matches_composed_on_a_large_batch() {
    let run = |implementation| {
        let q = Var::from_tensor(&pseudo_random(200, 24, 6, 1.0, DType::F32)).unwrap();
        let k = Var::from_tensor(&pseudo_random(200, 24, 7, 1.0, DType::F32)).unwrap();
        let loss = InfoNCELoss::new(InfoNCEConfig {
            temperature: 0.1,
            implementation,
            ..Default::default()
        })
        .unwrap();
        let out = loss.forward_end_to_end(&q, &k).unwrap();
        let g = out.loss.backward().unwrap();
        let grads = vec![values(g.get(&q).unwrap()), values(g.get(&k).unwrap())];
        (out, grads)
    };
    assert_same(
        "end-to-end n=200",
        run(Implementation::Auto),
        run(Implementation::Composed),
    );
}

#[test]
fn forward_without_gradient_tracking_gives_the_same_loss_and_accuracy() {
    let q = pseudo_random(32, 16, 8, 1.0, DType::F32);
    let k = pseudo_random(32, 16, 9, 1.0, DType::F32);
    let negatives = unit_rows(3000, 16, 10, DType::F32);
    let loss = InfoNCELoss::new(InfoNCEConfig::default()).unwrap();
    let plain = loss.forward(&q, &k, &negatives).unwrap();
    let q_var = Var::from_tensor(&q).unwrap();
    let tracked = loss.forward(&q_var, &k, &negatives).unwrap();
    assert!(!plain.loss.track_op());
    assert_eq!(scalar(&plain.loss), scalar(&tracked.loss));
    assert_eq!(scalar(&plain.accuracy), scalar(&tracked.accuracy));
}

#[test]
fn fused_backward_does_not_read_the_negatives_again() {
    // What lets a CPU queue be updated in place before the backward pass.
    let q = Var::from_tensor(&pseudo_random(8, 16, 11, 1.0, DType::F32)).unwrap();
    let k = pseudo_random(8, 16, 12, 1.0, DType::F32);
    let negatives = unit_rows(100, 16, 13, DType::F32);
    let loss = InfoNCELoss::new(InfoNCEConfig::default()).unwrap();
    let before = values(
        loss.forward(&q, &k, &negatives)
            .unwrap()
            .loss
            .backward()
            .unwrap()
            .get(&q)
            .unwrap(),
    );
    let out = loss.forward(&q, &k, &negatives).unwrap();
    negatives
        .slice_set(
            &Tensor::zeros((100, 16), DType::F32, negatives.device()).unwrap(),
            0,
            0,
        )
        .unwrap();
    let after = values(out.loss.backward().unwrap().get(&q).unwrap());
    assert_eq!(before, after);
}
