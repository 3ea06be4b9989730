//! Autograd gradients (f64, composed path) against central finite
//! differences in f64, for every loss form.

use crate::common::{pseudo_random, scalar, unit_rows, values};
use candle_core::{DType, Device, Tensor, Var};
use mocca_losses::{Implementation, InfoNCEConfig, InfoNCELoss, NTXentConfig, NTXentLoss};

const H: f64 = 1e-6;

/// Compares dL/dx from autograd with (L(x + h e_i) − L(x − h e_i)) / 2h for
/// every element of every input.
fn check(name: &str, inputs: &[Tensor], loss: impl Fn(&[Tensor]) -> Tensor) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let l = loss(&tensors);
    assert_eq!(l.dtype(), DType::F64, "{name}: an f64 loss for f64 inputs");
    let grads = l.backward().unwrap();
    for (which, v) in vars.iter().enumerate() {
        let analytic = values(grads.get(v).unwrap());
        let base = values(v.as_tensor());
        for i in 0..base.len() {
            let at = |delta: f64| {
                let mut x = base.clone();
                x[i] += delta;
                let mut moved: Vec<Tensor> = inputs.to_vec();
                moved[which] = Tensor::from_vec(x, v.shape(), v.device()).unwrap();
                scalar(&loss(&moved))
            };
            let numeric = (at(H) - at(-H)) / (2.0 * H);
            let err = (numeric - analytic[i]).abs();
            assert!(
                err <= 1e-7 * analytic[i].abs().max(1.0),
                "{name} input {which} [{i}]: autograd {} vs fd {numeric}",
                analytic[i]
            );
        }
    }
}

fn raw(rows: usize, cols: usize, seed: u64) -> Tensor {
    pseudo_random(rows, cols, seed, 1.5, DType::F64)
}

#[test]
fn ntxent_gradient_matches_finite_differences() {
    let loss = NTXentLoss::new(NTXentConfig {
        temperature: 0.3,
        implementation: Implementation::Auto,
    })
    .unwrap();
    check("ntxent", &[raw(3, 4, 1), raw(3, 4, 2)], |x| {
        loss.forward(&x[0], &x[1]).unwrap().loss
    });
}

#[test]
fn infonce_gradient_matches_finite_differences() {
    let loss = InfoNCELoss::new(InfoNCEConfig {
        temperature: 0.2,
        implementation: Implementation::Auto,
        ..Default::default()
    })
    .unwrap();
    let negatives = unit_rows(5, 4, 3, DType::F64);
    check("infonce", &[raw(3, 4, 4), raw(3, 4, 5)], |x| {
        loss.forward(&x[0], &x[1], &negatives).unwrap().loss
    });
}

#[test]
fn symmetric_gradient_matches_finite_differences() {
    let loss = InfoNCELoss::new(InfoNCEConfig {
        temperature: 0.5,
        implementation: Implementation::Auto,
        ..Default::default()
    })
    .unwrap();
    let negatives = unit_rows(4, 3, 6, DType::F64);
    check(
        "symmetric",
        &[raw(2, 3, 7), raw(2, 3, 8), raw(2, 3, 9), raw(2, 3, 10)],
        |x| {
            loss.forward_symmetric(&x[0], &x[1], &x[2], &x[3], &negatives)
                .unwrap()
                .loss
        },
    );
}

#[test]
fn end_to_end_gradient_matches_finite_differences() {
    let loss = InfoNCELoss::new(InfoNCEConfig {
        temperature: 0.25,
        implementation: Implementation::Auto,
        ..Default::default()
    })
    .unwrap();
    check("end_to_end", &[raw(4, 3, 11), raw(4, 3, 12)], |x| {
        loss.forward_end_to_end(&x[0], &x[1]).unwrap().loss
    });
}

#[test]
fn indexed_gradient_matches_finite_differences() {
    let loss = InfoNCELoss::new(InfoNCEConfig {
        temperature: 0.3,
        implementation: Implementation::Auto,
        ..Default::default()
    })
    .unwrap();
    let bank = unit_rows(6, 4, 13, DType::F64);
    let indices = Tensor::new(&[[0u32, 3, 3], [5, 1, 2], [4, 4, 0]], &Device::Cpu).unwrap();
    check("indexed", &[raw(3, 4, 14), raw(3, 4, 15)], |x| {
        loss.forward_indexed(&x[0], &x[1], &bank, &indices)
            .unwrap()
            .loss
    });
}
