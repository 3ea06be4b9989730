//! Mixed precision as PyTorch's autocast runs it: f32 parameters, bf16 activations. Every layer
//! casts its weights to the activations' dtype, BatchNorm statistics stay in f32, and the
//! gradients reach the f32 parameters in f32. Checked against the same model run in f32, on the
//! CPU (bf16 convolutions and matmuls run there too, widened to f32 inside Candle, only slowly).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mocca_backbones::{
    Backend, MoCoProjectionHead, ProjectionHead, ProjectionHeadConfig, ResNet, ResNetConfig,
    SimCLRProjectionHead, StateDict, Stem,
};

mod resnet_support;
use resnet_support::hash_u01;

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `max |a - b| / max(1e-3, max |b|)`: the error relative to the reference's scale.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (values(a), values(b));
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
    a.iter()
        .zip(&b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn images(n: usize, side: usize, seed: u64) -> Tensor {
    let len = n * 3 * side * side;
    let v: Vec<f32> = (0..len as u64)
        .map(|i| hash_u01(seed, i) as f32 * 2.0 - 1.0)
        .collect();
    Tensor::from_vec(v, (n, 3, side, side), &Device::Cpu).unwrap()
}

struct Model {
    varmap: VarMap,
    backbone: ResNet,
    head: ProjectionHead,
}

fn model(stem: Stem, layers: [usize; 4], backend: Backend, head: ProjectionHeadConfig) -> Model {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = ResNetConfig {
        stem,
        width: 0.125,
        layers,
        bn_splits: 2,
        backend,
        ..ResNetConfig::resnet18()
    };
    let backbone = ResNet::new(&cfg, vb.pp("backbone")).unwrap();
    let mut head = head;
    head.bn_splits = 2;
    head.backend = backend;
    let head = ProjectionHead::new(head, vb.pp("head")).unwrap();
    reseed(&varmap);
    Model {
        varmap,
        backbone,
        head,
    }
}

/// Candle's initialisers are unseeded: every parameter is drawn again from a seeded stream,
/// uniform with the mean and spread Candle's initialiser gave it, so that each test checks one
/// fixed network instead of a new random one on every run.
fn reseed(varmap: &VarMap) {
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (k, name) in names.into_iter().enumerate() {
        let v = &data[name];
        let cur = values(v.as_tensor());
        let n = cur.len() as f64;
        let mean = cur.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = cur.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let half_width = (3.0 * var).sqrt();
        let new: Vec<f32> = (0..cur.len() as u64)
            .map(|i| (mean + half_width * (2.0 * hash_u01(1000 + k as u64, i) - 1.0)) as f32)
            .collect();
        v.set(&Tensor::from_vec(new, v.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
}

/// A scalar of the head's output that weighs every element differently (a plain sum would have
/// a zero gradient through the last BatchNorm).
fn objective(z: &Tensor) -> Tensor {
    let z = z.to_dtype(DType::F32).unwrap();
    let w = Tensor::arange(0f32, z.elem_count() as f32, z.device())
        .unwrap()
        .reshape(z.shape())
        .unwrap()
        .affine(0.01, -0.3)
        .unwrap()
        .sin()
        .unwrap();
    (z * w).unwrap().sum_all().unwrap()
}

fn run(m: &Model, x: &Tensor, dtype: DType, train: bool) -> (Tensor, Tensor) {
    let x = x.to_dtype(dtype).unwrap();
    let f = m.backbone.forward_t(&x, train).unwrap();
    let z = m.head.forward_t(&f, train).unwrap();
    (f, z)
}

/// `‖a − b‖ / ‖b‖` over all the gradients of `vars` together, and the worst single tensor.
fn gradient_errors(vars: &[Var], got: &GradStore, want: &GradStore) -> (f64, f64) {
    let (mut num, mut den, mut worst) = (0.0f64, 0.0f64, 0.0f64);
    for v in vars {
        let a = values(got.get(v).expect("every parameter gets a gradient"));
        let b = values(want.get(v).unwrap());
        let n: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum();
        let d: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        num += n;
        den += d;
        worst = worst.max((n / d.max(1e-30)).sqrt());
    }
    ((num / den).sqrt(), worst)
}

#[test]
fn a_bf16_forward_and_backward_of_an_f32_model_lands_near_the_f32_one() {
    for backend in [Backend::Fast, Backend::Native] {
        // A head without BatchNorm: a BatchNorm over nearly equal head outputs (what a random
        // network gives) would divide their rounding errors by a tiny spread.
        let head: ProjectionHeadConfig = MoCoProjectionHead::v2(64).into();
        // One block per stage: rounding errors (and flipped ReLU decisions) grow with depth in
        // a randomly initialised BatchNorm network, in any implementation.
        let m = model(Stem::Cifar, [1, 1, 1, 1], backend, head);
        let x = images(16, 8, 1);
        let (f32_f, f32_z) = run(&m, &x, DType::F32, true);
        let g32 = objective(&f32_z).backward().unwrap();
        let (bf_f, bf_z) = run(&m, &x, DType::BF16, true);
        assert_eq!(
            bf_f.dtype(),
            DType::BF16,
            "{backend:?}: activations in bf16"
        );
        assert_eq!(bf_z.dtype(), DType::BF16);
        let g16 = objective(&bf_z).backward().unwrap();
        // Over 80 random networks (before the weights were seeded): median 0.029, 95th
        // percentile 0.040, largest 0.061 on either backend (f16 gives 0.2 %).
        let e = rel_err(&bf_f, &f32_f);
        assert!(e < 0.1, "{backend:?} features off by {e}");
        let e = rel_err(&bf_z, &f32_z);
        assert!(e < 0.1, "{backend:?} head output off by {e}");
        let vars = m.varmap.all_vars();
        assert_eq!(
            vars.len(),
            12 * 3 + 4,
            "12 convolutions with BatchNorm, 2 linear layers"
        );
        for v in &vars {
            assert_eq!(v.dtype(), DType::F32, "master weights stay f32");
            let g = g16.get(v).expect("every parameter gets a gradient");
            assert_eq!(g.dtype(), DType::F32, "the gradient arrives in f32");
        }
        // Over random networks the figure moved: 0.15-0.33 in all, 0.31-0.64 for the worst
        // tensor in 12 runs, once 1.01 (f16: 0.04-0.05 and 0.1-0.2). With the network fixed
        // (`reseed`) it still moves from run to run, 0.30-0.72 for the worst tensor over 15
        // runs (some reduction order of the bf16 CPU path is not fixed; not pinned down). A
        // missing or zero gradient is off by exactly 1 in its tensor, a wrong one by more.
        let (total, worst) = gradient_errors(&vars, &g16, &g32);
        assert!(total < 0.5, "{backend:?}: gradients off by {total}");
        assert!(worst < 0.95, "{backend:?}: a gradient off by {worst}");
    }
}

#[test]
fn bf16_training_keeps_batch_norm_statistics_in_f32_and_close_to_f32_training() {
    let head: ProjectionHeadConfig = SimCLRProjectionHead::new(64).into();
    let m32 = model(Stem::ImageNet, [2, 2, 2, 2], Backend::Fast, head.clone());
    let m16 = model(Stem::ImageNet, [2, 2, 2, 2], Backend::Fast, head);
    let weights: HashMap<String, Tensor> = m32.backbone.state_dict().unwrap().into_iter().collect();
    m16.backbone.load_state_dict(&weights).unwrap();
    let weights: HashMap<String, Tensor> = m32.head.state_dict().unwrap().into_iter().collect();
    m16.head.load_state_dict(&weights).unwrap();
    let x = images(8, 32, 2);
    run(&m32, &x, DType::F32, true);
    run(&m16, &x, DType::BF16, true);
    let b32 = m32.backbone.named_buffers().unwrap();
    let b16 = m16.backbone.named_buffers().unwrap();
    let mut compared = 0;
    for ((name, a), (_, b)) in b16.iter().zip(&b32) {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        assert_eq!(a.dtype(), DType::F32, "{name}");
        assert!(rel_err(a, b) < 0.06, "{name}: {}", rel_err(a, b));
        compared += 1;
    }
    assert_eq!(compared, 40, "20 BatchNorm layers, mean and variance each");
    for (name, t) in m16.head.named_buffers().unwrap() {
        if !name.ends_with("num_batches_tracked") {
            assert_eq!(t.dtype(), DType::F32, "head {name}");
        }
    }
    // Evaluation with those statistics, in bf16, stays near f32 evaluation.
    let (e16, _) = run(&m16, &x, DType::BF16, false);
    let (e32, _) = run(&m32, &x, DType::F32, false);
    assert!(rel_err(&e16, &e32) < 0.06);
}
