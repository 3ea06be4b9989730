//! Helpers shared by the loss tests.
#![allow(dead_code)]

#[path = "../../../../tests/golden/golden.rs"]
pub mod golden;

use candle_core::{DType, Device, Tensor, Var};
pub use golden::Array;
use mocca_losses::Implementation;

pub const BOTH: [Implementation; 2] = [Implementation::Auto, Implementation::Composed];

pub fn array(case: &serde_json::Value, field: &str) -> Array {
    Array::from_json(&case[field])
}

pub fn tensor(a: &Array, dtype: DType) -> Tensor {
    Tensor::from_vec(a.f32(), a.shape.as_slice(), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

pub fn var(a: &Array, dtype: DType) -> Var {
    Var::from_tensor(&tensor(a, dtype)).unwrap()
}

pub fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

pub fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// The README's tolerance: `|got − expected| ≤ rel · max(1, max |expected|)`.
pub fn assert_array_close(what: &str, got: &Tensor, expected: &Array, rel: f64) {
    assert_eq!(got.dims(), expected.shape.as_slice(), "{what}: shape");
    let tol = rel * expected.max_abs().max(1.0);
    let got = values(got);
    let worst = got
        .iter()
        .zip(&expected.data)
        .map(|(g, e)| (g - e).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= tol,
        "{what}: worst |got - expected| = {worst:e} > {tol:e}"
    );
}

pub fn assert_loss_close(what: &str, got: &Tensor, expected: f64, rel: f64) {
    let got = scalar(got);
    let tol = rel * expected.abs().max(1.0);
    assert!(
        (got - expected).abs() <= tol,
        "{what}: loss {got} vs {expected} (tol {tol:e})"
    );
}

/// Deterministic pseudo-random `[rows, cols]` values in [-scale, scale].
pub fn pseudo_random(rows: usize, cols: usize, seed: u64, scale: f64, dtype: DType) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<f64> = (0..rows * cols)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(data, (rows, cols), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// Unit rows (the negatives a queue holds).
pub fn unit_rows(rows: usize, cols: usize, seed: u64, dtype: DType) -> Tensor {
    let x = pseudo_random(rows, cols, seed, 1.0, DType::F64);
    let x = x
        .broadcast_div(&x.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap())
        .unwrap();
    x.to_dtype(dtype).unwrap()
}
