//! Helpers shared by the ResNet tests: the golden files' weight hash and key lists.
#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

#[path = "../../../../tests/golden/golden.rs"]
pub mod golden;

/// One entry of `keys_resnet*.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub parameter: bool,
}

/// Every torchvision state-dict entry of `arch` (fc included), in order.
pub fn golden_keys(arch: &str) -> Vec<KeyEntry> {
    let v = golden::load(&format!("backbones/keys_{arch}.json"));
    v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| KeyEntry {
            name: e["name"].as_str().expect("name").to_string(),
            shape: e["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .collect(),
            parameter: match e["kind"].as_str().expect("kind") {
                "parameter" => true,
                "buffer" => false,
                other => panic!("unknown kind {other}"),
            },
        })
        .collect()
}

/// `h(k, j) / 2^32` of tests/golden/backbones/README.md, in wrapping 32-bit arithmetic.
pub fn hash_u01(k: u64, j: u64) -> f64 {
    let mut x = (j.wrapping_mul(0x9E37_79B1) as u32)
        .wrapping_add(((k + 1).wrapping_mul(0x85EB_CA77)) as u32);
    x ^= x >> 15;
    x = x.wrapping_mul(0x2C1B_3C6D);
    x ^= x >> 12;
    x = x.wrapping_mul(0x297A_2D39);
    x ^= x >> 15;
    x as f64 / 4_294_967_296.0
}

/// The README's value for element `j` of the state-dict tensor at position `k` (ResNets, and
/// the ViTs: LayerNorm weights take the BatchNorm rule, `cls_token` and `pos_embed` their own).
pub fn hashed_value(name: &str, shape: &[usize], k: usize, j: usize) -> f64 {
    let u = hash_u01(k as u64, j as u64);
    if name == "cls_token" || name == "pos_embed" {
        return (u - 0.5) * 0.04;
    }
    let leaf = name.rsplit('.').next().expect("leaf");
    let is_bn = shape.len() == 1 && !name.starts_with("fc.");
    match leaf {
        "weight" if !is_bn => {
            let fan_in: usize = shape[1..].iter().product();
            (u - 0.5) * 2.0 * (3.0 / fan_in as f64).sqrt()
        }
        "weight" => 0.5 + u,
        "bias" => u - 0.5,
        "running_mean" => (u - 0.5) * 0.2,
        "running_var" => 0.5 + u,
        other => panic!("no hash rule for {other}"),
    }
}

/// The hashed state dict of `arch` (f32, `num_batches_tracked` I64 zero), fc included: positions
/// `k` count every entry, as the README says.
pub fn hashed_state_dict(arch: &str) -> HashMap<String, Tensor> {
    golden_keys(arch)
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let t = if e.name.ends_with("num_batches_tracked") {
                Tensor::new(0i64, &Device::Cpu).unwrap()
            } else {
                let n: usize = e.shape.iter().product();
                let data: Vec<f32> = (0..n)
                    .map(|j| hashed_value(&e.name, &e.shape, k, j) as f32)
                    .collect();
                Tensor::from_vec(data, e.shape.as_slice(), &Device::Cpu).unwrap()
            };
            (e.name.clone(), t)
        })
        .collect()
}

/// A golden `{"shape", "data"}` array as an f32 tensor.
pub fn tensor(v: &serde_json::Value) -> Tensor {
    let a = golden::Array::from_json(v);
    Tensor::from_vec(a.f32(), a.shape.as_slice(), &Device::Cpu).unwrap()
}

/// `max |got − expected|` and `max |expected|`.
pub fn max_err(got: &Tensor, expected: &golden::Array) -> (f64, f64) {
    assert_eq!(got.dims(), expected.shape.as_slice(), "shape");
    let got: Vec<f64> = got
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let err = got
        .iter()
        .zip(&expected.data)
        .fold(0.0f64, |m, (g, e)| m.max((g - e).abs()));
    (err, expected.max_abs())
}

/// Flattened f32 values.
pub fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}
