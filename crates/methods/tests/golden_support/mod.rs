//! Reading the whole-step goldens of `tests/golden/methods/` (float64 trajectories of the
//! reference code) into our tensors and holding our float32 run to them: every step's loss and
//! every element of every final tensor within `TOL · max(1, max |expected tensor|)`, every
//! miss of a run collected ([`Check`]) and reported together.

#![allow(dead_code)]

#[path = "../../../../tests/golden/golden.rs"]
pub mod golden;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
pub use golden::Array;
use mocca_methods::Encoder;

/// The tolerance of tests/golden/methods/README.md.
pub const TOL: f64 = 1e-4;

/// The one case of a split golden file, e.g. `case("methods/moco_colab/<name>.json")`.
pub fn case(file: &str) -> serde_json::Value {
    golden::load(file)["cases"][0].clone()
}

pub fn array(v: &serde_json::Value) -> Array {
    Array::from_json(v)
}

/// A golden array as an f32 tensor on the CPU.
pub fn tensor(a: &Array) -> Tensor {
    Tensor::from_vec(a.f32(), a.shape.as_slice(), &Device::Cpu).unwrap()
}

pub fn num(case: &serde_json::Value, field: &str) -> f64 {
    case[field]
        .as_f64()
        .unwrap_or_else(|| panic!("field {field}"))
}

pub fn int(case: &serde_json::Value, field: &str) -> usize {
    case[field]
        .as_u64()
        .unwrap_or_else(|| panic!("field {field}")) as usize
}

/// A JSON list of integer lists (key permutations, sampled bank rows).
pub fn index_lists(v: &serde_json::Value) -> Vec<Vec<usize>> {
    v.as_array().unwrap().iter().map(indices).collect()
}

/// A JSON list of integers.
pub fn indices(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap() as usize)
        .collect()
}

pub fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Loads a reference state dict (keys mapped by `rename`) into `encoder`; the references
/// leave out `num_batches_tracked`, which keeps the encoder's own value.
pub fn load(encoder: &dyn Encoder, state: &serde_json::Value, rename: impl Fn(&str) -> String) {
    let mut tensors: HashMap<String, Tensor> = encoder.state_dict().unwrap().into_iter().collect();
    for (key, v) in state.as_object().unwrap() {
        let ours = rename(key);
        let t = tensor(&array(v));
        let current = tensors
            .get(&ours)
            .unwrap_or_else(|| panic!("reference key {key} -> {ours} is not ours"));
        assert_eq!(current.dims(), t.dims(), "{key}: shape");
        tensors.insert(ours, t);
    }
    encoder.load_state_dict(&tensors).unwrap();
}

/// The scaled errors of one run, `|got − expected| / max(1, max |expected tensor|)`: the worst
/// one and every check over `TOL`.
#[derive(Default)]
pub struct Check {
    pub worst: f64,
    pub worst_what: String,
    pub failures: Vec<String>,
}

impl Check {
    /// `|got − expected| ≤ TOL · max(1, max |expected|)` element by element.
    pub fn close(&mut self, what: &str, got: &[f64], expected: &[f64]) {
        assert_eq!(got.len(), expected.len(), "{what}: length");
        let scale = expected.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(expected)
            .map(|(g, e)| (g - e).abs())
            .fold(0.0, f64::max);
        // NaN anywhere counts as an infinite error.
        let nan = got.iter().any(|g| g.is_nan());
        let scaled = if nan { f64::INFINITY } else { worst / scale };
        if scaled >= self.worst {
            self.worst = scaled;
            self.worst_what = what.to_string();
        }
        if scaled > TOL {
            self.failures.push(format!(
                "{what}: worst |got - expected| = {worst:e} > {:e} ({:.1}x the tolerance)",
                TOL * scale,
                scaled / TOL
            ));
        }
    }

    pub fn assert_passes(&self) {
        assert!(
            self.failures.is_empty(),
            "{} check(s) over the tolerance:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

/// Every reference entry (keys mapped by `rename`) against `encoder`'s state;
/// `expected(key, tensor)` may derive the expected value from the reference.
pub fn assert_state(
    check: &mut Check,
    what: &str,
    encoder: &dyn Encoder,
    state: &serde_json::Value,
    rename: impl Fn(&str) -> String,
    expected: impl Fn(&str, Vec<f64>) -> Vec<f64>,
) {
    let ours: HashMap<String, Tensor> = encoder.state_dict().unwrap().into_iter().collect();
    for (key, v) in state.as_object().unwrap() {
        let got = values(&ours[&rename(key)]);
        check.close(
            &format!("{what} {key}"),
            &got,
            &expected(key, array(v).data),
        );
    }
}

/// torchvision's keys with a linear `fc` head (the MoCo colab's `ModelBase`, lemniscate's
/// ResNet with its `linear` as `fc`) → `BackboneEncoder`'s.
pub fn fc_head_key(key: &str) -> String {
    match key.strip_prefix("fc.") {
        Some(rest) => format!("head.layers.0.{rest}"),
        None => format!("backbone.{key}"),
    }
}

/// Every step of case `c` through `method` (the two views under `views`): each loss, and with
/// `momentum` each recorded momentum, against the reference's.
pub fn check_steps(
    check: &mut Check,
    name: &str,
    method: &mut dyn mocca_methods::Method,
    c: &serde_json::Value,
    views: [&str; 2],
    momentum: bool,
) {
    for (t, s) in c["steps"].as_array().unwrap().iter().enumerate() {
        let x = [tensor(&array(&s[views[0]])), tensor(&array(&s[views[1]]))];
        let stats = method.step(&x, &[]).unwrap();
        check.close(
            &format!("{name} step {t} loss"),
            &[stats.loss],
            &[num(s, "loss")],
        );
        if momentum {
            check.close(
                &format!("{name} step {t} momentum"),
                &[stats.momentum.unwrap()],
                &[num(s, "momentum")],
            );
        }
    }
}
