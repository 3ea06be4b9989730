//! BatchNorm (plain and split) and the agreement of the two backends, gradients included.

use std::collections::HashMap;

use candle_core::{DType, Device, ModuleT, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use mocca_backbones::{
    Backend, BatchNorm, BatchNormConfig, ConvInit, ResNet, ResNetConfig, SplitGrouping, StateDict,
    Stem,
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

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    values(a)
        .iter()
        .zip(values(b))
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn max_abs(a: &Tensor) -> f32 {
    values(a).iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

fn batch_norm(channels: usize, cfg: BatchNormConfig) -> BatchNorm {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    BatchNorm::new(channels, cfg, vb).unwrap()
}

fn native(bn_splits: usize) -> BatchNormConfig {
    BatchNormConfig {
        bn_splits,
        backend: Backend::Native,
        ..Default::default()
    }
}

/// NCHW activations whose channels have different means and scales.
fn activations(n: usize, c: usize, hw: usize) -> Tensor {
    let x = Tensor::randn(0f32, 1.0, (n, c, hw, hw), &Device::Cpu).unwrap();
    let scale = Tensor::arange(1u32, c as u32 + 1, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let scale = scale.reshape((1, c, 1, 1)).unwrap();
    x.broadcast_mul(&scale)
        .unwrap()
        .broadcast_add(&(scale * 3.0).unwrap())
        .unwrap()
}

fn buffers(m: &impl StateDict) -> HashMap<String, Tensor> {
    m.named_buffers().unwrap().into_iter().collect()
}

/// Per-channel mean and biased variance over (N, H, W) of an NCHW tensor, in f64.
fn channel_stats(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let x = x
        .to_dtype(DType::F64)
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .flatten_from(1)
        .unwrap();
    let mean = x.mean(D::Minus1).unwrap();
    let var = x
        .broadcast_sub(&mean.unsqueeze(1).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .mean(D::Minus1)
        .unwrap();
    (mean.to_vec1().unwrap(), var.to_vec1().unwrap())
}

#[test]
fn train_mode_normalises_each_channel_with_its_biased_batch_variance() {
    let x = activations(4, 3, 5);
    let y = batch_norm(3, native(1)).forward_t(&x, true).unwrap();
    let (mean, var) = channel_stats(&x);
    let x64: Vec<f64> = x
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let y = values(&y);
    for (i, (&xi, &yi)) in x64.iter().zip(&y).enumerate() {
        let c = (i / 25) % 3;
        let expected = (xi - mean[c]) / (var[c] + 1e-5).sqrt();
        assert!(
            (yi as f64 - expected).abs() < 1e-5,
            "element {i}: {yi} vs {expected}"
        );
    }
}

#[test]
fn running_statistics_follow_torch_momentum_rule_with_unbiased_variance() {
    let x = activations(4, 3, 5);
    let bn = batch_norm(3, native(1));
    bn.forward_t(&x, true).unwrap();
    let (mean, var) = channel_stats(&x);
    let n = 100.0;
    let b = buffers(&bn);
    let rm = values(&b["running_mean"]);
    let rv = values(&b["running_var"]);
    for c in 0..3 {
        assert!((rm[c] as f64 - 0.1 * mean[c]).abs() < 1e-5, "mean {c}");
        let expected = 0.9 + 0.1 * var[c] * n / (n - 1.0);
        assert!(
            (rv[c] as f64 - expected).abs() < 1e-5 * expected,
            "var {c}: {} vs {expected}",
            rv[c]
        );
    }
    assert_eq!(b["num_batches_tracked"].to_scalar::<i64>().unwrap(), 1);
}

#[test]
fn eval_mode_uses_the_running_statistics() {
    let bn = batch_norm(3, native(1));
    let x = activations(2, 3, 4);
    bn.forward_t(&activations(4, 3, 5), true).unwrap();
    let b = buffers(&bn);
    let (rm, rv) = (values(&b["running_mean"]), values(&b["running_var"]));
    let y = values(&bn.forward_t(&x, false).unwrap());
    for (i, (xi, yi)) in values(&x).iter().zip(&y).enumerate() {
        let c = (i / 16) % 3;
        let expected = (xi - rm[c]) / (rv[c] + 1e-5).sqrt();
        assert!(
            (yi - expected).abs() < 1e-5,
            "element {i}: {yi} vs {expected}"
        );
    }
}

/// Split BatchNorm over 6 samples in 3 groups against 3 plain BatchNorms, one per group;
/// `members(g)` are the samples of group `g`.
fn assert_groups(grouping: SplitGrouping, members: impl Fn(u32) -> [u32; 2]) {
    let x = activations(6, 3, 4);
    let split = batch_norm(
        3,
        BatchNormConfig {
            grouping,
            ..native(3)
        },
    );
    let y = split.forward_t(&x, true).unwrap();
    let mut means = Vec::new();
    let mut vars = Vec::new();
    for g in 0..3 {
        let idx = Tensor::new(&members(g), &Device::Cpu).unwrap();
        let plain = batch_norm(3, native(1));
        let yg = plain
            .forward_t(&x.index_select(&idx, 0).unwrap(), true)
            .unwrap();
        let got = y.index_select(&idx, 0).unwrap();
        assert!(max_abs_diff(&got, &yg) < 1e-5, "{grouping:?} group {g}");
        let b = buffers(&plain);
        means.push(values(&b["running_mean"]));
        vars.push(values(&b["running_var"]));
    }
    // MoCo's SplitBatchNorm: each group updates a copy of the running statistics, the copies
    // are then averaged.
    let b = buffers(&split);
    for c in 0..3 {
        let m = (0..3).map(|g| means[g][c]).sum::<f32>() / 3.0;
        let v = (0..3).map(|g| vars[g][c]).sum::<f32>() / 3.0;
        assert!((values(&b["running_mean"])[c] - m).abs() < 1e-5);
        assert!((values(&b["running_var"])[c] - v).abs() < 1e-4 * v);
    }
}

#[test]
fn split_batch_norm_groups_strided_samples_as_the_moco_colab() {
    // `input.view(-1, C·S, H, W)`: group g holds samples g and g + S.
    assert_groups(SplitGrouping::Strided, |g| [g, g + 3]);
}

#[test]
fn contiguous_split_batch_norm_groups_consecutive_samples() {
    assert_groups(SplitGrouping::Contiguous, |g| [2 * g, 2 * g + 1]);
}

#[test]
fn fast_nhwc_and_native_nchw_batch_norm_agree() {
    let x = activations(4, 5, 3);
    let nhwc = x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
    let slow = batch_norm(5, native(2));
    let fast = batch_norm(
        5,
        BatchNormConfig {
            bn_splits: 2,
            backend: Backend::Fast,
            ..Default::default()
        },
    );
    let a = slow.forward_t(&x, true).unwrap();
    let b = fast
        .forward_t(&nhwc, true)
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-5);
    for (name, t) in buffers(&slow) {
        assert!(max_abs_diff(&t, &buffers(&fast)[&name]) < 1e-5, "{name}");
    }
    let a = slow.forward_t(&x, false).unwrap();
    let b = fast
        .forward_t(&nhwc, false)
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-5);
}

#[test]
fn feature_vectors_are_normalised_per_feature() {
    let x = Tensor::randn(2f32, 3.0, (8, 6), &Device::Cpu).unwrap();
    for backend in [Backend::Native, Backend::Fast] {
        let bn = batch_norm(
            6,
            BatchNormConfig {
                backend,
                ..Default::default()
            },
        );
        let y = bn.forward_t(&x, true).unwrap();
        let mean = values(&y.mean(0).unwrap());
        let var = values(&y.sqr().unwrap().mean(0).unwrap());
        assert!(mean.iter().all(|m| m.abs() < 1e-5), "{backend:?} {mean:?}");
        assert!(
            var.iter().all(|v| (v - 1.0).abs() < 1e-3),
            "{backend:?} {var:?}"
        );
    }
}

#[test]
fn batch_norm_without_affine_has_buffers_only() {
    let bn = batch_norm(
        4,
        BatchNormConfig {
            affine: false,
            ..native(1)
        },
    );
    assert!(bn.named_parameters().is_empty());
    let names: Vec<String> = bn
        .named_buffers()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        ["running_mean", "running_var", "num_batches_tracked"]
    );
}

#[test]
fn batch_norm_rejects_wrong_channels_and_single_value_groups() {
    let bn = batch_norm(3, native(2));
    let msg = bn
        .forward_t(&activations(4, 2, 3), true)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("3 channels") && msg.contains("2 channels"),
        "{msg}"
    );
    let one_each = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    let msg = bn.forward_t(&one_each, true).unwrap_err().to_string();
    assert!(msg.contains("more than one value"), "{msg}");
}

/// Deterministic values in [-1, 1) from the golden files' hash (stream `k`).
fn hashed(k: u64, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n as u64)
        .map(|j| (2.0 * hash_u01(k, j) - 1.0) as f32)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// Fixed weights (the golden README's rules), so the comparison runs on the same numbers
/// every time.
fn hashed_weights(model: &ResNet) -> HashMap<String, Tensor> {
    let mut sd = HashMap::new();
    for (k, (name, shape)) in model.model_state().keys().into_iter().enumerate() {
        let u = ((hashed(k as u64, &shape) + 1.0).unwrap() * 0.5).unwrap();
        let t = if name.ends_with("num_batches_tracked") {
            Tensor::new(0i64, &Device::Cpu).unwrap()
        } else if name.ends_with("running_var") || (shape.len() == 1 && name.ends_with("weight")) {
            (u + 0.5).unwrap()
        } else if shape.len() == 1 {
            (u - 0.5).unwrap()
        } else {
            let fan_in: usize = shape[1..].iter().product();
            ((u - 0.5).unwrap() * (2.0 * (3.0 / fan_in as f64).sqrt())).unwrap()
        };
        sd.insert(name, t);
    }
    sd
}

/// Gradients of `sum(features · r)` w.r.t. every parameter, for both backends sharing fixed
/// weights and inputs: each parameter's gradient within `tol(name)` of the native one,
/// relative to its largest entry.
///
/// Every ReLU is a kink: where a pre-activation lies within float rounding of zero the two
/// backends may take different sides and one element's gradient path switches, which moves a
/// weight gradient by up to ~1e-2 of its largest entry. Random data at full width hits such an
/// element in a sizeable fraction of draws, so the data is fixed and small (batch 2, 16x16:
/// fewer elements near a kink); on it the backends agree to about 1e-5.
fn assert_fast_gradient_matches_native(
    cfg: ResNetConfig,
    x_shape: (usize, usize, usize, usize),
    tol: impl Fn(&str) -> f32,
) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let slow = ResNet::new(
        &ResNetConfig {
            backend: Backend::Native,
            ..cfg.clone()
        },
        vb.clone(),
    )
    .unwrap();
    let fast = ResNet::new(
        &ResNetConfig {
            backend: Backend::Fast,
            ..cfg
        },
        vb,
    )
    .unwrap();
    slow.load_state_dict(&hashed_weights(&slow)).unwrap();
    let (n, c, h, w) = x_shape;
    let x = hashed(1000, &[n, c, h, w]);
    let r = hashed(1001, &[n, slow.feature_dim()]);
    let fs = slow.forward_t(&x, true).unwrap();
    let ff = fast.forward_t(&x, true).unwrap();
    assert!(
        max_abs_diff(&fs, &ff) <= 1e-4 * max_abs(&fs),
        "features differ"
    );
    let gs = (fs * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gf = (ff * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let mut worst = (0.0f32, String::new());
    for (name, var) in fast.named_parameters() {
        let a = gs
            .get(&var)
            .unwrap_or_else(|| panic!("no native gradient for {name}"));
        let b = gf
            .get(&var)
            .unwrap_or_else(|| panic!("no fast gradient for {name}"));
        let rel = max_abs_diff(a, b) / max_abs(a);
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
        assert!(
            rel <= tol(&name),
            "{name}: relative gradient difference {rel:e}"
        );
    }
    eprintln!(
        "largest relative gradient difference {:.2e} ({})",
        worst.0, worst.1
    );
}

#[test]
fn resnet18_fast_gradient_matches_native_gradient() {
    let cfg = ResNetConfig {
        stem: Stem::Cifar,
        ..ResNetConfig::resnet18()
    };
    assert_fast_gradient_matches_native(cfg, (2, 3, 16, 16), |_| 1e-4);
}

#[test]
fn imagenet_stem_fast_gradient_matches_native_gradient() {
    let cfg = ResNetConfig {
        width: 0.5,
        ..ResNetConfig::resnet18()
    };
    // Max-pool routes each gradient to one element of its window, another kink of the same
    // kind: within rounding of a tie the backends may pick different elements, which moves
    // only the stem's gradients.
    let stem = ["conv1.weight", "bn1.weight", "bn1.bias"];
    assert_fast_gradient_matches_native(cfg, (2, 3, 48, 48), |name| {
        if stem.contains(&name) {
            0.1
        } else {
            1e-4
        }
    });
}

#[test]
fn cifar_resnet18_with_split_bn_fast_gradient_matches_native_gradient() {
    let cfg = ResNetConfig {
        stem: Stem::Cifar,
        width: 0.25,
        bn_splits: 2,
        ..ResNetConfig::resnet18()
    };
    assert_fast_gradient_matches_native(cfg, (4, 3, 16, 16), |_| 1e-4);
}

#[test]
fn resnet_without_stem_relu_fast_gradient_matches_native_gradient() {
    let cfg = ResNetConfig {
        stem: Stem::Cifar,
        width: 0.25,
        stem_relu: false,
        ..ResNetConfig::resnet18()
    };
    assert_fast_gradient_matches_native(cfg, (2, 3, 16, 16), |_| 1e-4);
}

#[test]
fn stem_relu_off_lets_negative_stem_outputs_through() {
    // With the stem's ReLU removed the network computes something else from the same weights.
    let build = |stem_relu| {
        let cfg = ResNetConfig {
            stem: Stem::Cifar,
            width: 0.125,
            stem_relu,
            backend: Backend::Native,
            ..ResNetConfig::resnet18()
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let m = ResNet::new(&cfg, vb).unwrap();
        m.load_state_dict(&hashed_weights(&m)).unwrap();
        m
    };
    let x = hashed(7, &[4, 3, 8, 8]);
    let (with, without) = (build(true), build(false));
    let d = max_abs_diff(
        &with.forward_t(&x, true).unwrap(),
        &without.forward_t(&x, true).unwrap(),
    );
    assert!(d > 1e-3, "stem_relu changed nothing ({d})");
}

#[test]
fn strided_split_bn_resnet_equals_contiguous_groups_of_the_reordered_batch() {
    // Group s of 2 splits holds samples s, s+2, s+4, ...: reordering the batch as
    // [0, 2, 4, 6, 1, 3, 5, 7] makes those groups contiguous.
    let build = |grouping| {
        let cfg = ResNetConfig {
            stem: Stem::Cifar,
            width: 0.125,
            bn_splits: 2,
            bn_grouping: grouping,
            ..ResNetConfig::resnet18()
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let m = ResNet::new(&cfg, vb).unwrap();
        m.load_state_dict(&hashed_weights(&m)).unwrap();
        m
    };
    assert_eq!(
        mocca_backbones::strided_group_order(8, 2),
        [0, 2, 4, 6, 1, 3, 5, 7]
    );
    let x = hashed(11, &[8, 3, 8, 8]);
    let order = Tensor::new(&[0u32, 2, 4, 6, 1, 3, 5, 7], &Device::Cpu).unwrap();
    let (strided, contiguous) = (
        build(SplitGrouping::Strided),
        build(SplitGrouping::Contiguous),
    );
    let a = strided
        .forward_t(&x, true)
        .unwrap()
        .index_select(&order, 0)
        .unwrap();
    let b = contiguous
        .forward_t(&x.index_select(&order, 0).unwrap(), true)
        .unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-5);
    for (name, t) in buffers(&strided) {
        assert!(
            max_abs_diff(&t, &buffers(&contiguous)[&name]) < 1e-5,
            "{name}"
        );
    }
    // The grouping matters: contiguous groups of the original order differ.
    let c = contiguous
        .forward_t(&x, true)
        .unwrap()
        .index_select(&order, 0)
        .unwrap();
    assert!(max_abs_diff(&a, &c) > 1e-3);
}

#[test]
fn torch_default_conv_init_is_uniform_within_one_over_root_fan_in() {
    let cfg = ResNetConfig {
        stem: Stem::Cifar,
        stem_init: ConvInit::TorchDefault,
        conv_init: ConvInit::TorchDefault,
        backend: Backend::Native,
        ..ResNetConfig::resnet18()
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let m = ResNet::new(&cfg, vb).unwrap();
    let sd: HashMap<String, Tensor> = m.state_dict().unwrap().into_iter().collect();
    // kaiming_uniform_(a=√5): U(±1/√fan_in); std = bound/√3.
    for (name, fan_in) in [("conv1.weight", 27.0f32), ("layer1.0.conv1.weight", 576.0)] {
        let w = values(&sd[name]);
        let bound = 1.0 / fan_in.sqrt();
        assert!(
            w.iter().all(|v| v.abs() <= bound),
            "{name} exceeds ±{bound}"
        );
        let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
        let expected = bound / 3f32.sqrt();
        assert!(
            (std / expected - 1.0).abs() < 0.1,
            "{name}: std {std} vs {expected}"
        );
    }
}

#[test]
fn the_colab_stem_init_leaves_the_other_convolutions_kaiming_normal() {
    let cfg = ResNetConfig {
        stem: Stem::Cifar,
        stem_init: ConvInit::TorchDefault,
        backend: Backend::Native,
        ..ResNetConfig::resnet18()
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let m = ResNet::new(&cfg, vb).unwrap();
    let sd: HashMap<String, Tensor> = m.state_dict().unwrap().into_iter().collect();
    let stem = values(&sd["conv1.weight"]);
    assert!(stem.iter().all(|v| v.abs() <= 1.0 / 27f32.sqrt()));
    let w = values(&sd["layer1.0.conv1.weight"]);
    let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
    let expected = (2.0f32 / 576.0).sqrt();
    assert!(
        (std / expected - 1.0).abs() < 0.05,
        "std {std} vs {expected}"
    );
}
