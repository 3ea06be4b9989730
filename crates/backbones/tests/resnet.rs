//! ResNet: torchvision names and shapes, golden forward references, state dicts.

mod resnet_support;

use std::collections::HashMap;

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use mocca_backbones::{Backend, Error, ResNet, ResNetConfig, StateDict, Stem};
use resnet_support::{golden, golden_keys, hashed_state_dict, max_err, values};

const BACKENDS: [Backend; 2] = [Backend::Native, Backend::Fast];

fn preset(arch: &str) -> ResNetConfig {
    match arch {
        "resnet18" => ResNetConfig::resnet18(),
        "resnet34" => ResNetConfig::resnet34(),
        "resnet50" => ResNetConfig::resnet50(),
        other => panic!("no preset {other}"),
    }
}

fn fresh(cfg: &ResNetConfig) -> (VarMap, ResNet) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = ResNet::new(cfg, vb).unwrap();
    (varmap, model)
}

fn hashed(arch: &str, backend: Backend) -> ResNet {
    let vb = VarBuilder::from_tensors(hashed_state_dict(arch), DType::F32, &Device::Cpu);
    ResNet::new(
        &ResNetConfig {
            backend,
            ..preset(arch)
        },
        vb,
    )
    .unwrap()
}

fn assert_keys_match_torchvision(arch: &str) {
    let golden = golden_keys(arch);
    let (fc, expected): (Vec<_>, Vec<_>) =
        golden.into_iter().partition(|e| e.name.starts_with("fc."));
    // The model has no classifier: exactly torchvision's fc.weight and fc.bias are left out.
    let fc_names: Vec<&str> = fc.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(fc_names, ["fc.weight", "fc.bias"]);
    let (_, model) = fresh(&ResNetConfig {
        backend: Backend::Native,
        ..preset(arch)
    });
    let ours = model.model_state().keys();
    assert_eq!(ours.len(), expected.len());
    for ((name, shape), e) in ours.iter().zip(&expected) {
        assert_eq!((name, shape), (&e.name, &e.shape));
    }
    let params: Vec<String> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let golden_params: Vec<String> = expected
        .iter()
        .filter(|e| e.parameter)
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(params, golden_params);
    let buffers: Vec<String> = model
        .named_buffers()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let golden_buffers: Vec<String> = expected
        .iter()
        .filter(|e| !e.parameter)
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(buffers, golden_buffers);
}

#[test]
fn resnet18_state_dict_keys_and_shapes_equal_torchvision() {
    assert_keys_match_torchvision("resnet18");
}

#[test]
fn resnet34_state_dict_keys_and_shapes_equal_torchvision() {
    assert_keys_match_torchvision("resnet34");
}

#[test]
fn resnet50_state_dict_keys_and_shapes_equal_torchvision() {
    assert_keys_match_torchvision("resnet50");
}

#[test]
fn cifar_stem_changes_only_conv1_to_3x3() {
    let (_, imagenet) = fresh(&ResNetConfig {
        backend: Backend::Native,
        ..ResNetConfig::resnet18()
    });
    let cfg = ResNetConfig {
        stem: Stem::Cifar,
        backend: Backend::Native,
        ..ResNetConfig::resnet18()
    };
    let (_, cifar) = fresh(&cfg);
    let a = imagenet.model_state().keys();
    let b = cifar.model_state().keys();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        if x.0 == "conv1.weight" {
            assert_eq!(y.1, [64, 3, 3, 3]);
        } else {
            assert_eq!(x, y);
        }
    }
}

#[test]
fn width_multiplier_scales_every_channel_count() {
    let cfg = ResNetConfig {
        width: 0.5,
        backend: Backend::Native,
        ..ResNetConfig::resnet50()
    };
    let (_, model) = fresh(&cfg);
    assert_eq!(model.feature_dim(), 1024);
    let full: Vec<_> = golden_keys("resnet50")
        .into_iter()
        .filter(|e| !e.name.starts_with("fc."))
        .collect();
    for ((name, shape), e) in model.model_state().keys().iter().zip(&full) {
        assert_eq!(name, &e.name);
        let expected: Vec<usize> = e
            .shape
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                if i >= 2 || (name == "conv1.weight" && i == 1) {
                    d
                } else {
                    d / 2
                }
            })
            .collect();
        assert_eq!(shape, &expected, "{name}");
    }
}

#[test]
fn varmap_holds_exactly_the_trainable_parameters() {
    let (varmap, model) = fresh(&ResNetConfig {
        backend: Backend::Native,
        ..ResNetConfig::resnet18()
    });
    let vars = varmap.data().lock().unwrap();
    let params = model.named_parameters();
    assert_eq!(vars.len(), params.len());
    assert_eq!(params.len(), 60);
    for (name, var) in &params {
        let in_map = vars
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in VarMap"));
        // Same storage: an optimizer step on the VarMap is seen by the model.
        in_map.set(&var.ones_like().unwrap()).unwrap();
        assert_eq!(values(var.as_tensor())[0], 1.0, "{name}");
    }
    assert!(vars
        .keys()
        .all(|k| !k.contains("running") && !k.contains("num_batches")));
}

#[test]
fn fresh_model_uses_torchvision_init() {
    let cfg = ResNetConfig {
        zero_init_residual: true,
        backend: Backend::Native,
        ..ResNetConfig::resnet18()
    };
    let (_, model) = fresh(&cfg);
    let sd: HashMap<String, Tensor> = model.state_dict().unwrap().into_iter().collect();
    // Kaiming normal, fan-out, ReLU gain: std = sqrt(2 / (64 · 3 · 3)) for layer1 convs.
    let w = values(&sd["layer1.0.conv1.weight"]);
    let std = (w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32).sqrt();
    let expected = (2.0f32 / 576.0).sqrt();
    assert!(
        (std / expected - 1.0).abs() < 0.05,
        "std {std} vs {expected}"
    );
    assert!(values(&sd["bn1.weight"]).iter().all(|&v| v == 1.0));
    assert!(values(&sd["bn1.bias"]).iter().all(|&v| v == 0.0));
    assert!(values(&sd["layer1.0.bn2.weight"]).iter().all(|&v| v == 0.0));
    assert!(values(&sd["layer1.0.bn1.weight"]).iter().all(|&v| v == 1.0));
    assert!(values(&sd["layer2.0.downsample.1.weight"])
        .iter()
        .all(|&v| v == 1.0));
    assert!(values(&sd["layer3.1.bn2.running_var"])
        .iter()
        .all(|&v| v == 1.0));
}

fn check_forward_golden(arch: &str, backend: Backend) {
    let g = golden::load(&format!("backbones/forward_{arch}.json"));
    let input = resnet_support::tensor(&g["input"]);
    let model = hashed(arch, backend);

    let eval = model.forward_t(&input, false).unwrap();
    let (err, max) = max_err(&eval, &golden::Array::from_json(&g["features_eval"]));
    eprintln!("{arch} {backend:?} eval: max error {err:.2e} (max |expected| {max:.2})");
    assert!(
        err <= 1e-4 * max,
        "{arch} {backend:?} eval: error {err:e}, max |expected| {max}"
    );

    let train = model.forward_t(&input, true).unwrap();
    let (err, max) = max_err(&train, &golden::Array::from_json(&g["features_train"]));
    eprintln!("{arch} {backend:?} train: max error {err:.2e} (max |expected| {max:.2})");
    assert!(
        err <= 5e-4 * max,
        "{arch} {backend:?} train: error {err:e}, max |expected| {max}"
    );

    let buffers: HashMap<String, Tensor> = model.named_buffers().unwrap().into_iter().collect();
    let stats = g["running_stats_after_train_forward"].as_object().unwrap();
    assert_eq!(stats.len(), 6);
    for (name, expected) in stats {
        let (err, max) = max_err(&buffers[name], &golden::Array::from_json(expected));
        assert!(
            err <= 5e-4 * max,
            "{arch} {backend:?} {name}: error {err:e}, max {max}"
        );
    }
}

#[test]
fn resnet18_features_and_running_stats_match_torchvision() {
    for backend in BACKENDS {
        check_forward_golden("resnet18", backend);
    }
}

#[test]
fn resnet50_features_and_running_stats_match_torchvision() {
    for backend in BACKENDS {
        check_forward_golden("resnet50", backend);
    }
}

#[test]
fn train_forward_counts_batches_and_eval_forward_changes_nothing() {
    let cfg = ResNetConfig {
        stem: Stem::Cifar,
        width: 0.125,
        backend: Backend::Native,
        ..ResNetConfig::resnet18()
    };
    let (_, model) = fresh(&cfg);
    let x = Tensor::rand(0f32, 1.0, (4, 3, 8, 8), &Device::Cpu).unwrap();
    let nbt = |m: &ResNet| -> i64 {
        let b: HashMap<String, Tensor> = m.named_buffers().unwrap().into_iter().collect();
        b["layer2.0.bn1.num_batches_tracked"]
            .to_scalar::<i64>()
            .unwrap()
    };
    let before = values(&model.named_buffers().unwrap()[0].1);
    model.forward_t(&x, false).unwrap();
    assert_eq!(nbt(&model), 0);
    assert_eq!(values(&model.named_buffers().unwrap()[0].1), before);
    model.forward_t(&x, true).unwrap();
    model.forward_t(&x, true).unwrap();
    assert_eq!(nbt(&model), 2);
    assert_ne!(values(&model.named_buffers().unwrap()[0].1), before);
}

fn write_torchvision_checkpoint(path: &std::path::Path) {
    // A torchvision-style file: every key, fc included, num_batches_tracked as I64.
    candle_core::safetensors::save(&hashed_state_dict("resnet18"), path).unwrap();
}

#[test]
fn torchvision_checkpoint_loads_through_a_safetensors_var_builder() {
    let dir = std::env::temp_dir().join(format!("mocca-bb-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("resnet18.safetensors");
    write_torchvision_checkpoint(&path);
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu) }.unwrap();
    let cfg = ResNetConfig {
        backend: Backend::Native,
        ..ResNetConfig::resnet18()
    };
    let from_file = ResNet::new(&cfg, vb).unwrap();
    let reference = hashed("resnet18", Backend::Native);
    let x = Tensor::rand(-1f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let a = values(&from_file.forward_t(&x, false).unwrap());
    let b = values(&reference.forward_t(&x, false).unwrap());
    assert_eq!(a, b);

    // Into a model built for training (VarMap): in place, fc reported as unused.
    let (_, trainable) = fresh(&cfg);
    let unused = trainable.load_safetensors(&path).unwrap();
    assert_eq!(unused, ["fc.bias", "fc.weight"]);
    assert_eq!(values(&trainable.forward_t(&x, false).unwrap()), b);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn exported_state_dict_has_torchvision_keys_and_int64_counters() {
    let dir = std::env::temp_dir().join(format!("mocca-bb-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("export.safetensors");
    let cfg = ResNetConfig {
        stem: Stem::Cifar,
        width: 0.25,
        backend: Backend::Native,
        ..ResNetConfig::resnet18()
    };
    let (_, model) = fresh(&cfg);
    let x = Tensor::rand(0f32, 1.0, (4, 3, 8, 8), &Device::Cpu).unwrap();
    model.forward_t(&x, true).unwrap();
    model.save_safetensors(&path).unwrap();
    // No temporary file is left beside the export.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    let file = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let keys = model.model_state().keys();
    assert_eq!(file.len(), keys.len());
    for (name, shape) in &keys {
        let t = &file[name];
        assert_eq!(t.dims(), shape.as_slice(), "{name}");
        if name.ends_with("num_batches_tracked") {
            assert_eq!(t.dtype(), DType::I64);
            assert_eq!(t.to_scalar::<i64>().unwrap(), 1);
        } else {
            assert_eq!(t.dtype(), DType::F32, "{name}");
        }
    }

    let (_, copy) = fresh(&cfg);
    assert!(copy.load_safetensors(&path).unwrap().is_empty());
    let a = values(&model.forward_t(&x, false).unwrap());
    assert_eq!(a, values(&copy.forward_t(&x, false).unwrap()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loading_a_wrong_shape_names_the_entry_and_changes_nothing() {
    let cfg = ResNetConfig {
        backend: Backend::Native,
        ..ResNetConfig::resnet18()
    };
    let (_, model) = fresh(&cfg);
    let before = values(&model.state_dict().unwrap()[0].1);
    let mut sd = hashed_state_dict("resnet18");
    sd.insert(
        "layer1.0.bn1.bias".into(),
        Tensor::zeros(65, DType::F32, &Device::Cpu).unwrap(),
    );
    match model.load_state_dict(&sd) {
        Err(Error::ShapeMismatch {
            name,
            expected,
            got,
        }) => {
            assert_eq!(
                (name.as_str(), expected, got),
                ("layer1.0.bn1.bias", vec![64], vec![65])
            );
        }
        other => panic!("expected a shape mismatch, got {other:?}"),
    }
    assert_eq!(values(&model.state_dict().unwrap()[0].1), before);
    sd.remove("layer1.0.bn1.bias");
    assert!(
        matches!(model.load_state_dict(&sd), Err(Error::MissingEntry(n)) if n == "layer1.0.bn1.bias")
    );
}

#[test]
fn bad_configs_and_inputs_are_errors_naming_the_problem() {
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let err = ResNet::new(
        &ResNetConfig {
            width: 0.01,
            ..ResNetConfig::resnet18()
        },
        vb.clone(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    assert!(err.to_string().contains("width"), "{err}");

    let cfg = ResNetConfig {
        stem: Stem::Cifar,
        width: 0.125,
        bn_splits: 4,
        backend: Backend::Native,
        ..ResNetConfig::resnet18()
    };
    let (_, model) = fresh(&cfg);
    let gray = Tensor::zeros((2, 1, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let msg = model.forward_t(&gray, false).unwrap_err().to_string();
    assert!(
        msg.contains("[N, 3, H, W]") && msg.contains("[2, 1, 8, 8]"),
        "{msg}"
    );
    let six = Tensor::zeros((6, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let msg = model.forward_t(&six, true).unwrap_err().to_string();
    assert!(msg.contains("divisible by 4") && msg.contains("6"), "{msg}");
}
