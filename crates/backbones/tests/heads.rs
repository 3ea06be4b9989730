//! Projection and prediction heads: lightly's names, the papers' layouts, forward values.

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use mocca_backbones::{
    BYOLPredictionHead, Backend, Error, HeadBlock, HeadNorm, MoCoProjectionHead, ProjectionHead,
    ProjectionHeadConfig, SimCLRProjectionHead, SimSiamPredictionHead, StateDict,
};

fn build(cfg: impl Into<ProjectionHeadConfig>) -> (VarMap, ProjectionHead) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let head = ProjectionHead::new(cfg, vb).unwrap();
    (varmap, head)
}

fn keys(head: &ProjectionHead) -> Vec<(String, Vec<usize>)> {
    head.model_state().keys()
}

fn key(name: &str, shape: &[usize]) -> (String, Vec<usize>) {
    (name.to_string(), shape.to_vec())
}

fn param(head: &ProjectionHead, name: &str) -> Tensor {
    head.named_parameters()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
        .1
        .as_tensor()
        .clone()
}

fn linear(x: &Tensor, head: &ProjectionHead, i: usize) -> Tensor {
    let w = param(head, &format!("layers.{i}.weight"));
    let b = param(head, &format!("layers.{i}.bias"));
    x.matmul(&w.t().unwrap())
        .unwrap()
        .broadcast_add(&b)
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn moco_v1_head_is_a_single_linear_map_to_128() {
    let (_, head) = build(MoCoProjectionHead::v1(512));
    assert_eq!(
        keys(&head),
        [
            key("layers.0.weight", &[128, 512]),
            key("layers.0.bias", &[128])
        ]
    );
    let x = Tensor::randn(0f32, 1.0, (4, 512), &Device::Cpu).unwrap();
    let z = head.forward_t(&x, true).unwrap();
    assert!(max_abs_diff(&z, &linear(&x, &head, 0)) < 1e-5);
}

#[test]
fn moco_v2_head_is_a_two_layer_mlp_with_feature_width_hidden_layer() {
    let (_, head) = build(MoCoProjectionHead::v2(512));
    assert_eq!(
        keys(&head),
        [
            key("layers.0.weight", &[512, 512]),
            key("layers.0.bias", &[512]),
            key("layers.2.weight", &[128, 512]),
            key("layers.2.bias", &[128]),
        ]
    );
    let x = Tensor::randn(0f32, 1.0, (4, 512), &Device::Cpu).unwrap();
    let expected = linear(&linear(&x, &head, 0).relu().unwrap(), &head, 2);
    assert!(max_abs_diff(&head.forward_t(&x, true).unwrap(), &expected) < 1e-5);
}

#[test]
fn simclr_head_has_lightly_names_with_batch_norm_after_each_linear_layer() {
    let (varmap, head) = build(SimCLRProjectionHead::new(64));
    let bn = |i: usize, c: usize| {
        vec![
            key(&format!("layers.{i}.weight"), &[c]),
            key(&format!("layers.{i}.bias"), &[c]),
            key(&format!("layers.{i}.running_mean"), &[c]),
            key(&format!("layers.{i}.running_var"), &[c]),
            key(&format!("layers.{i}.num_batches_tracked"), &[]),
        ]
    };
    let mut expected = vec![key("layers.0.weight", &[64, 64])];
    expected.extend(bn(1, 64));
    expected.push(key("layers.3.weight", &[128, 64]));
    expected.extend(bn(4, 128));
    assert_eq!(keys(&head), expected);
    // Linear layers followed by BatchNorm carry no bias; the VarMap holds the 6 parameters.
    assert_eq!(varmap.all_vars().len(), 6);
}

#[test]
fn simclr_head_output_is_batch_normalised_in_training_mode() {
    let (_, head) = build(SimCLRProjectionHead::new(32));
    let x = Tensor::randn(1f32, 2.0, (16, 32), &Device::Cpu).unwrap();
    let z = head.forward_t(&x, true).unwrap();
    assert_eq!(z.dims(), [16, 128]);
    let mean: Vec<f32> = z.mean(0).unwrap().to_vec1().unwrap();
    let var: Vec<f32> = z.sqr().unwrap().mean(0).unwrap().to_vec1().unwrap();
    assert!(mean.iter().all(|m| m.abs() < 1e-5), "{mean:?}");
    assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-3), "{var:?}");
}

#[test]
fn prediction_heads_have_the_papers_default_widths() {
    let (_, byol) = build(BYOLPredictionHead::default());
    let shapes: Vec<Vec<usize>> = byol
        .named_parameters()
        .iter()
        .map(|(_, v)| v.dims().to_vec())
        .collect();
    assert_eq!(
        shapes,
        [
            vec![4096, 256],
            vec![4096],
            vec![4096],
            vec![256, 4096],
            vec![256]
        ]
    );
    let (_, simsiam) = build(SimSiamPredictionHead {
        input_dim: 64,
        hidden_dim: 16,
        output_dim: 64,
    });
    let names: Vec<String> = simsiam
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "layers.0.weight",
            "layers.1.weight",
            "layers.1.bias",
            "layers.3.weight",
            "layers.3.bias"
        ]
    );
    assert_eq!(
        SimSiamPredictionHead::default(),
        SimSiamPredictionHead {
            input_dim: 2048,
            hidden_dim: 512,
            output_dim: 2048
        }
    );
}

#[test]
fn linear_layers_start_within_torch_default_bounds() {
    let (_, head) = build(MoCoProjectionHead::v2(100));
    for (name, var) in head.named_parameters() {
        let v: Vec<f32> = var.flatten_all().unwrap().to_vec1().unwrap();
        let bound = 1.0 / 100f32.sqrt();
        assert!(
            v.iter().all(|x| x.abs() <= bound),
            "{name} exceeds ±{bound}"
        );
        // Uniform on ±bound has standard deviation bound / sqrt(3).
        let std = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        assert!(
            (std / (bound / 3f32.sqrt()) - 1.0).abs() < 0.2,
            "{name}: std {std}"
        );
    }
}

#[test]
fn table_blocks_choose_norm_relu_and_bias_independently() {
    let cfg = ProjectionHeadConfig::new(vec![
        HeadBlock {
            bias: true,
            ..HeadBlock::new(8, 6, HeadNorm::BatchNorm, true)
        },
        HeadBlock::new(6, 4, HeadNorm::BatchNormNoAffine, false),
    ]);
    let (_, head) = build(cfg);
    let names: Vec<String> = keys(&head).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "layers.0.weight",
            "layers.0.bias",
            "layers.1.weight",
            "layers.1.bias",
            "layers.1.running_mean",
            "layers.1.running_var",
            "layers.1.num_batches_tracked",
            "layers.3.weight",
            "layers.4.running_mean",
            "layers.4.running_var",
            "layers.4.num_batches_tracked",
        ]
    );
}

#[test]
fn fast_and_native_heads_agree_in_training_and_evaluation() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut cfg: ProjectionHeadConfig = SimCLRProjectionHead::new(24).into();
    cfg.bn_splits = 2;
    cfg.backend = Backend::Native;
    let native = ProjectionHead::new(cfg.clone(), vb.clone()).unwrap();
    cfg.backend = Backend::Fast;
    let fast = ProjectionHead::new(cfg, vb).unwrap();
    let x = Tensor::randn(0f32, 1.0, (8, 24), &Device::Cpu).unwrap();
    for train in [true, false] {
        let a = native.forward_t(&x, train).unwrap();
        let b = fast.forward_t(&x, train).unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-4, "train = {train}");
    }
}

#[test]
fn mismatched_tables_and_inputs_are_errors() {
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let cfg = ProjectionHeadConfig::new(vec![
        HeadBlock::new(8, 6, HeadNorm::None, true),
        HeadBlock::new(5, 4, HeadNorm::None, false),
    ]);
    let err = ProjectionHead::new(cfg, vb.clone()).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)));
    assert!(
        err.to_string()
            .contains("outputs 6 features but block 1 takes 5"),
        "{err}"
    );

    let (_, head) = build(MoCoProjectionHead::v1(16));
    let x = Tensor::zeros((2, 15), DType::F32, &Device::Cpu).unwrap();
    let msg = head.forward_t(&x, false).unwrap_err().to_string();
    assert!(msg.contains("[N, 16]") && msg.contains("[2, 15]"), "{msg}");
}
