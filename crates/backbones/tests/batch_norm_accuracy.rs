//! Training-mode BatchNorm on both backends against the same layer run in f64, on a CIFAR
//! stem-sized input: 8 samples of 16×16, 2 channels, 2048 values per channel, samples apart by
//! a colour offset as real images are. The per-channel sums of the backward pass are where f32
//! rounding shows most: Σ dx over a channel is exactly zero in exact arithmetic, and an error in
//! it, or in `dβ`, moves the gradient along the per-channel shift, the direction small ResNets
//! amplify a thousandfold within a few steps (tests/golden/methods/README.md, "Accuracy").
//! Both backends accumulate those sums in f64 on the CPU, as PyTorch's CPU BatchNorm does.

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mocca_backbones::{Backend, BatchNorm, BatchNormConfig};

mod resnet_support;
use resnet_support::hash_u01;

const DIMS: (usize, usize, usize, usize) = (8, 2, 16, 16); // NCHW

fn layer(backend: Backend, dtype: DType) -> (BatchNorm, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let cfg = BatchNormConfig {
        backend,
        ..BatchNormConfig::default()
    };
    let bn = BatchNorm::new(DIMS.1, cfg, vb).unwrap();
    // γ, β not exactly 1, 0.
    for (name, v) in varmap.data().lock().unwrap().iter() {
        let vals: Vec<f64> = if name.ends_with("weight") {
            vec![1.3, 0.8]
        } else {
            vec![0.2, -0.1]
        };
        v.set(
            &Tensor::new(vals.as_slice(), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap();
    }
    (bn, varmap)
}

/// NCHW input and output gradient, f32-representable.
fn inputs() -> (Vec<f32>, Vec<f32>) {
    let (n, c, h, w) = DIMS;
    let x = (0..n * c * h * w)
        .map(|i| {
            let (s, ch) = (i / (c * h * w), (i / (h * w)) % c);
            let colour = 2.0 * hash_u01(7, (s * c + ch) as u64) - 1.0;
            (0.5 * (2.0 * hash_u01(8, i as u64) - 1.0) + colour) as f32
        })
        .collect();
    let dy = (0..n * c * h * w)
        .map(|i| (2.0 * hash_u01(9, i as u64) - 1.0) as f32)
        .collect();
    (x, dy)
}

fn nchw_to(backend: Backend, t: Tensor) -> Tensor {
    match backend {
        Backend::Native => t,
        Backend::Fast => t.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap(),
    }
}

/// `(dx as NCHW, dγ, dβ)`, in f64, of `Σ y·dy` through a training-mode layer.
fn gradients(backend: Backend, dtype: DType) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, c, h, w) = DIMS;
    let (x, dy) = inputs();
    let (bn, varmap) = layer(backend, dtype);
    let x = Tensor::from_vec(x, (n, c, h, w), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let x = Var::from_tensor(&nchw_to(backend, x)).unwrap();
    let dy = Tensor::from_vec(dy, (n, c, h, w), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let y = bn.forward_t(x.as_tensor(), true).unwrap();
    let grads = (y * nchw_to(backend, dy))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let f64s = |t: &Tensor| -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let dx = grads.get(x.as_tensor()).unwrap();
    let dx = match backend {
        Backend::Native => dx.clone(),
        Backend::Fast => dx.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap(),
    };
    let data = varmap.data().lock().unwrap();
    let (dgamma, dbeta) = (
        f64s(grads.get(data["weight"].as_tensor()).unwrap()),
        f64s(grads.get(data["bias"].as_tensor()).unwrap()),
    );
    (f64s(&dx), dgamma, dbeta)
}

#[test]
fn backward_sums_are_exact_to_f32_rounding_on_a_stem_sized_input() {
    let (n, c, h, w) = DIMS;
    let (dx64, dg64, db64) = gradients(Backend::Native, DType::F64);
    let mut failures = Vec::new();
    for backend in [Backend::Native, Backend::Fast] {
        let (dx, dg, db) = gradients(backend, DType::F32);
        for j in 0..c {
            let idx = || (0..n).flat_map(move |s| (0..h * w).map(move |k| (s * c + j) * h * w + k));
            let sum: f64 = idx().map(|i| dx[i]).sum();
            let abs: f64 = idx().map(|i| dx[i].abs()).sum();
            let worst = idx().map(|i| (dx[i] - dx64[i]).abs()).fold(0.0, f64::max);
            eprintln!(
                "{backend:?} channel {j}: Σdx/Σ|dx| {:e}, |Δdβ| {:e}, |Δdγ| {:e}, max |Δdx| {worst:e}",
                sum / abs,
                (db[j] - db64[j]).abs(),
                (dg[j] - dg64[j]).abs()
            );
            if (sum / abs).abs() > 1e-7 {
                failures.push(format!(
                    "{backend:?} channel {j}: Σ dx = {sum:e}, Σ |dx| = {abs:e}"
                ));
            }
            for (what, got, want) in [("dβ", db[j], db64[j]), ("dγ", dg[j], dg64[j])] {
                // Half an f32 ulp of |dβ| ≈ 40 is 1.9e-6; f32 running sums missed by 5e-6 to 1.6e-5.
                if (got - want).abs() > 3e-6 {
                    failures.push(format!("{backend:?} {what}[{j}] = {got} vs {want} in f64"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
