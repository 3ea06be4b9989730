//! The Vision Transformer against timm (tests/golden/backbones/README.md, `*_vit*`): the same
//! state-dict keys and shapes as timm's ViT-Tiny and ViT-Small (so weights load into timm and
//! back), the same features for the same weights and images, and gradients for training.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use mocca_backbones::{StateDict, ViTConfig, VisionTransformer};

mod resnet_support;
use resnet_support::{golden, hashed_value, max_err, tensor};

fn vit(cfg: &ViTConfig) -> (VisionTransformer, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    (VisionTransformer::new(cfg, vb).unwrap(), varmap)
}

#[test]
fn tiny_and_small_have_timms_keys_and_shapes_at_224_and_32_px() {
    for (variant, config) in [
        ("tiny", ViTConfig::tiny as fn(usize, usize) -> ViTConfig),
        ("small", ViTConfig::small),
    ] {
        let golden = golden::load(&format!("backbones/keys_vit_{variant}.json"));
        for (img, patch) in [(224, 16), (32, 4)] {
            let entries = golden["models"][format!("{img}px_patch{patch}")]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let shape: Vec<usize> = e["shape"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_u64().unwrap() as usize)
                        .collect();
                    (e["name"].as_str().unwrap().to_string(), shape)
                })
                .collect::<Vec<_>>();
            let (m, _) = vit(&config(img, patch));
            let ours: Vec<(String, Vec<usize>)> = m
                .state_dict()
                .unwrap()
                .into_iter()
                .map(|(n, t)| (n, t.dims().to_vec()))
                .collect();
            assert_eq!(ours, entries, "{variant} {img}px patch {patch}");
        }
    }
}

/// The golden file's weights: tensor `k` of the state dict (timm's order) from the README's hash.
fn hashed(m: &VisionTransformer) -> HashMap<String, Tensor> {
    m.state_dict()
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(k, (name, t))| {
            let v: Vec<f32> = (0..t.elem_count())
                .map(|j| hashed_value(&name, t.dims(), k, j) as f32)
                .collect();
            let t = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
            (name, t)
        })
        .collect()
}

#[test]
fn the_features_are_timms_class_token_for_the_same_weights() {
    let golden = golden::load("backbones/forward_vit.json");
    for case in golden["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let int = |k: &str| case[k].as_u64().unwrap() as usize;
        let cfg = ViTConfig {
            depth: int("depth"),
            ..match case["variant"].as_str().unwrap() {
                "tiny" => ViTConfig::tiny(int("image_size"), int("patch_size")),
                _ => ViTConfig::small(int("image_size"), int("patch_size")),
            }
        };
        assert_eq!(
            (cfg.embed_dim, cfg.num_heads),
            (int("embed_dim"), int("num_heads"))
        );
        let (m, _) = vit(&cfg);
        m.load_state_dict(&hashed(&m)).unwrap();
        let f = m.forward(&tensor(&case["input"])).unwrap();
        let expected = golden::Array::from_json(&case["features"]);
        let (err, scale) = max_err(&f, &expected);
        assert!(
            err <= 1e-4 * scale,
            "{name}: max error {err:e} (scale {scale})"
        );
    }
}

#[test]
fn every_parameter_gets_a_gradient_and_a_step_lowers_an_objective() {
    let cfg = ViTConfig {
        depth: 2,
        ..ViTConfig::tiny(16, 4)
    };
    let (m, varmap) = vit(&cfg);
    let x = Tensor::rand(-1f32, 1.0, (4, 3, 16, 16), &Device::Cpu).unwrap();
    let target = Tensor::rand(-1f32, 1.0, (4, 192), &Device::Cpu).unwrap();
    let objective = |m: &VisionTransformer| {
        (m.forward(&x).unwrap() - &target)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
    };
    let before = objective(&m);
    let grads = before.backward().unwrap();
    let vars = varmap.all_vars();
    assert_eq!(vars.len(), m.state_dict().unwrap().len());
    for v in &vars {
        let g = grads.get(v).expect("every parameter gets a gradient");
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            norm > 0.0 && norm.is_finite(),
            "{:?}: gradient norm {norm}",
            v.dims()
        );
    }
    for v in &vars {
        let g = grads.get(v).unwrap();
        v.set(&(v.as_tensor() - (g * 0.5).unwrap()).unwrap())
            .unwrap();
    }
    let after = objective(&m).to_scalar::<f32>().unwrap();
    assert!(after < before.to_scalar::<f32>().unwrap(), "{after}");
}

#[test]
fn images_of_another_size_are_refused_naming_the_expected_shape() {
    let (m, _) = vit(&ViTConfig::tiny(32, 4));
    let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
    let err = m.forward(&x).unwrap_err().to_string();
    assert!(err.contains("[N, 3, 32, 32]"), "{err}");
    let bad = ViTConfig::tiny(30, 4);
    let err = VisionTransformer::new(&bad, VarBuilder::zeros(DType::F32, &Device::Cpu))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a multiple of the patch size"), "{err}");
}

#[test]
fn mocov3s_vit_has_its_fixed_sincos_position_embedding() {
    use mocca_backbones::ViTStyle;
    let golden = golden::load("backbones/sincos_mocov3.json");
    for case in golden["cases"].as_array().unwrap() {
        let int = |k: &str| case[k].as_u64().unwrap() as usize;
        let base = if int("embed_dim") == 384 {
            ViTConfig::small(int("image_size"), int("patch_size"))
        } else {
            ViTConfig::tiny(int("image_size"), int("patch_size"))
        };
        let cfg = ViTConfig {
            depth: 1,
            style: ViTStyle::MoCoV3,
            ..base
        };
        let (m, _) = vit(&cfg);
        let state: HashMap<String, Tensor> = m.state_dict().unwrap().into_iter().collect();
        let expected = golden::Array::from_json(&case["pos_embed"]);
        let (err, _) = max_err(&state["pos_embed"], &expected);
        assert!(err < 1e-5, "{case:?}: max error {err:e}");
    }
}

#[test]
fn frozen_parts_stay_in_the_state_dict_but_out_of_training() {
    use mocca_backbones::ViTStyle;
    let cfg = ViTConfig {
        depth: 1,
        style: ViTStyle::MoCoV3,
        freeze_patch_embed: true,
        ..ViTConfig::tiny(16, 4)
    };
    let (m, _) = vit(&cfg);
    let trained: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
    let all: Vec<String> = m
        .state_dict()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for frozen in [
        "pos_embed",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
    ] {
        assert!(
            all.iter().any(|n| n == frozen),
            "{frozen} missing from the state dict"
        );
        assert!(!trained.iter().any(|n| n == frozen), "{frozen} is trained");
    }
    assert_eq!(trained.len() + 3, all.len());
    // A training step through every trainable parameter leaves the frozen ones as they were.
    // Copies: a parameter's state-dict entry shows later steps through.
    let before: Vec<(String, Tensor)> = m
        .state_dict()
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.copy().unwrap()))
        .collect();
    let x = Tensor::rand(-1f32, 1.0, (2, 3, 16, 16), &Device::Cpu).unwrap();
    let grads = m
        .forward(&x)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (_, v) in m.named_parameters() {
        let g = grads.get(&v).unwrap();
        v.set(&(v.as_tensor() - g).unwrap()).unwrap();
    }
    let after: HashMap<String, Tensor> = m.state_dict().unwrap().into_iter().collect();
    for (name, t) in before {
        let same = resnet_support::values(&t) == resnet_support::values(&after[&name]);
        let frozen = name == "pos_embed" || name.starts_with("patch_embed");
        assert_eq!(same, frozen, "{name}");
    }
}
