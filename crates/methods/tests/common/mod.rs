//! A tiny encoder for method tests: flatten → Linear → BatchNorm → ReLU as the
//! "backbone", Linear as the head. Its BatchNorm keeps running statistics as
//! buffers outside the parameters, as `mocca-backbones` does, and optionally
//! computes batch statistics per group of rows (split BN).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::VarMap;
use mocca_methods::init::seeded_var_builder;
use mocca_methods::{Encoder, MethodError, Result};

pub struct TinyEncoder {
    w1: Var,
    b1: Var,
    gamma: Var,
    beta: Var,
    w2: Var,
    b2: Var,
    running: Mutex<(Tensor, Tensor)>,
    bn_splits: usize,
}

pub const IN: usize = 3 * 4 * 4;
pub const HIDDEN: usize = 16;
pub const OUT: usize = 8;

impl TinyEncoder {
    pub fn new(seed: u64, bn_splits: usize) -> Self {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, seed, DType::F32, &Device::Cpu);
        let get = |shape: &[usize], name: &str, init| {
            vb.get_with_hints(shape.to_vec(), name, init).unwrap();
            vm.data().lock().unwrap()[name].clone()
        };
        let bound1 = 1.0 / (IN as f64).sqrt();
        let bound2 = 1.0 / (HIDDEN as f64).sqrt();
        let u = |b: f64| candle_nn::Init::Uniform { lo: -b, up: b };
        Self {
            w1: get(&[HIDDEN, IN], "fc1.weight", u(bound1)),
            b1: get(&[HIDDEN], "fc1.bias", u(bound1)),
            gamma: get(&[HIDDEN], "bn.weight", candle_nn::Init::Const(1.0)),
            beta: get(&[HIDDEN], "bn.bias", candle_nn::Init::Const(0.0)),
            w2: get(&[OUT, HIDDEN], "head.weight", u(bound2)),
            b2: get(&[OUT], "head.bias", u(bound2)),
            running: Mutex::new((
                Tensor::zeros(HIDDEN, DType::F32, &Device::Cpu).unwrap(),
                Tensor::ones(HIDDEN, DType::F32, &Device::Cpu).unwrap(),
            )),
            bn_splits,
        }
    }

    fn batch_norm(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let eps = 1e-5;
        let normed = if train {
            let n = x.dim(0)?;
            let g = self.bn_splits.max(1);
            let xs = x.reshape((g, n / g, HIDDEN))?;
            let mean = xs.mean_keepdim(1)?;
            let centered = xs.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean_keepdim(1)?;
            let normed = centered.broadcast_div(&(var.clone() + eps)?.sqrt()?)?;
            let mut running = self.running.lock().unwrap();
            let m = 0.1;
            let batch_mean = mean.mean(0)?.squeeze(0)?.detach();
            let unbiased =
                (var.mean(0)?.squeeze(0)? * ((n / g) as f64 / (n / g - 1) as f64))?.detach();
            running.0 = ((&running.0 * (1.0 - m))? + (batch_mean * m)?)?;
            running.1 = ((&running.1 * (1.0 - m))? + (unbiased * m)?)?;
            normed.reshape((n, HIDDEN))?
        } else {
            let running = self.running.lock().unwrap();
            x.broadcast_sub(&running.0)?
                .broadcast_div(&(&running.1 + eps)?.sqrt()?)?
        };
        normed
            .broadcast_mul(self.gamma.as_tensor())?
            .broadcast_add(self.beta.as_tensor())
    }

    pub fn running_mean(&self) -> Vec<f32> {
        self.running.lock().unwrap().0.to_vec1().unwrap()
    }
}

impl Encoder for TinyEncoder {
    fn features(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let x = images.flatten_from(1)?;
        let h = x
            .matmul(&self.w1.as_tensor().t()?)?
            .broadcast_add(self.b1.as_tensor())?;
        Ok(self.batch_norm(&h, train)?.relu()?)
    }

    fn project(&self, h: &Tensor, _train: bool) -> Result<Tensor> {
        Ok(h.matmul(&self.w2.as_tensor().t()?)?
            .broadcast_add(self.b2.as_tensor())?)
    }

    fn output_dim(&self) -> usize {
        OUT
    }

    fn named_parameters(&self) -> Vec<(String, Var)> {
        vec![
            ("fc1.weight".into(), self.w1.clone()),
            ("fc1.bias".into(), self.b1.clone()),
            ("bn.weight".into(), self.gamma.clone()),
            ("bn.bias".into(), self.beta.clone()),
            ("head.weight".into(), self.w2.clone()),
            ("head.bias".into(), self.b2.clone()),
        ]
    }

    fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> = self
            .named_parameters()
            .into_iter()
            .map(|(n, v)| (n, v.as_detached_tensor()))
            .collect();
        let running = self.running.lock().unwrap();
        out.push(("bn.running_mean".into(), running.0.clone()));
        out.push(("bn.running_var".into(), running.1.clone()));
        Ok(out)
    }

    fn load_state_dict(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let get = |n: &str| {
            tensors
                .get(n)
                .cloned()
                .ok_or_else(|| MethodError::StateMismatch(format!("no `{n}`")))
        };
        let mut staged = Vec::new();
        for (n, v) in self.named_parameters() {
            let t = get(&n)?;
            if t.dims() != v.dims() {
                return Err(MethodError::StateMismatch(format!(
                    "`{n}` has the wrong shape"
                )));
            }
            staged.push((v, t));
        }
        let (rm, rv) = (get("bn.running_mean")?, get("bn.running_var")?);
        for (v, t) in staged {
            v.set(&t)?;
        }
        *self.running.lock().unwrap() = (rm.copy()?, rv.copy()?);
        Ok(())
    }
}

/// A fixed batch of `n` random 3×4×4 images and a lightly perturbed second view.
pub fn views(n: usize, seed: u64) -> Vec<Tensor> {
    let mut rng = mocca_methods::SplitMix64::new(seed);
    let mut draw = |count: usize| -> Vec<f32> {
        (0..count)
            .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
            .collect()
    };
    let a = Tensor::from_vec(draw(n * IN), (n, 3, 4, 4), &Device::Cpu).unwrap();
    let noise = Tensor::from_vec(draw(n * IN), (n, 3, 4, 4), &Device::Cpu).unwrap();
    let b = (&a + (noise * 0.1).unwrap()).unwrap();
    vec![a, b]
}

/// Every parameter of an encoder as f32 vectors, by name.
pub fn params(e: &dyn Encoder) -> Vec<(String, Vec<f32>)> {
    e.named_parameters()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

pub fn l2_rows(t: &Tensor) -> Tensor {
    let n = t
        .sqr()
        .unwrap()
        .sum_keepdim(D::Minus1)
        .unwrap()
        .sqrt()
        .unwrap();
    t.broadcast_div(&n).unwrap()
}
