//! The optimisers against PyTorch's update rules, with the expected values
//! computed independently in f64 from the formulas.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use mocca_methods::optim::{Optimizer, OptimizerConfig, OptimizerKind};

fn var(v: &[f32]) -> Var {
    Var::new(v, &Device::Cpu).unwrap()
}

/// A GradStore holding `grad` for `var`, as `loss.backward()` would give for
/// the loss `sum(grad · var)`.
fn grads_for(pairs: &[(&Var, &[f32])]) -> GradStore {
    let loss = pairs
        .iter()
        .map(|(v, g)| {
            let g = Tensor::new(*g, &Device::Cpu).unwrap();
            (v.as_tensor() * g).unwrap().sum_all().unwrap()
        })
        .reduce(|a, b| (a + b).unwrap())
        .unwrap();
    loss.backward().unwrap()
}

fn values(v: &Var) -> Vec<f64> {
    v.as_tensor()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "got {got:?}, want {want:?}"
        );
    }
}

/// torch.optim.SGD for one parameter over a sequence of gradients, in f64.
fn torch_sgd(
    p0: &[f64],
    grads: &[Vec<f64>],
    lr: f64,
    mu: f64,
    damp: f64,
    wd: f64,
    nesterov: bool,
) -> Vec<f64> {
    let mut p = p0.to_vec();
    let mut buf: Option<Vec<f64>> = None;
    for g in grads {
        let d: Vec<f64> = g.iter().zip(&p).map(|(g, p)| g + wd * p).collect();
        let step: Vec<f64> = if mu != 0.0 {
            let b = match buf.take() {
                None => d.clone(),
                Some(b) => b
                    .iter()
                    .zip(&d)
                    .map(|(b, d)| mu * b + (1.0 - damp) * d)
                    .collect(),
            };
            let s = if nesterov {
                d.iter().zip(&b).map(|(d, b)| d + mu * b).collect()
            } else {
                b.clone()
            };
            buf = Some(b);
            s
        } else {
            d
        };
        for (p, s) in p.iter_mut().zip(step) {
            *p -= lr * s;
        }
    }
    p
}

#[test]
fn sgd_first_step_with_momentum_is_plain_gradient_descent() {
    // PyTorch initialises the buffer with the first gradient (no dampening).
    let w = var(&[0.5, -1.0, 2.0]);
    let mut cfg = OptimizerConfig::sgd(0.1, 0.9, 0.0);
    cfg.dampening = 0.5;
    let mut opt = Optimizer::new(vec![("w".into(), w.clone())], cfg).unwrap();
    opt.step(&grads_for(&[(&w, &[1.0, 2.0, -3.0])])).unwrap();
    assert_close(&values(&w), &[0.4, -1.2, 2.3], 1e-7);
}

#[test]
fn sgd_momentum_dampening_weight_decay_match_torch_over_three_steps() {
    let p0 = [0.5f32, -1.0, 2.0];
    let gs = [[1.0f32, 2.0, -3.0], [0.5, -0.5, 0.25], [-1.0, 0.0, 4.0]];
    let w = var(&p0);
    let mut cfg = OptimizerConfig::sgd(0.05, 0.9, 1e-2);
    cfg.dampening = 0.1;
    let mut opt = Optimizer::new(vec![("w".into(), w.clone())], cfg).unwrap();
    for g in &gs {
        opt.step(&grads_for(&[(&w, g)])).unwrap();
    }
    // Hand-derived, step 1: d = g + 0.01 p = [1.005, 1.99, -2.98], b = d,
    // p = p - 0.05 b = [0.44975, -1.0995, 2.149]; later steps by the helper.
    let g64: Vec<Vec<f64>> = gs
        .iter()
        .map(|g| g.iter().map(|&x| x as f64).collect())
        .collect();
    let p64: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
    let want = torch_sgd(&p64, &g64, 0.05, 0.9, 0.1, 1e-2, false);
    assert_close(
        &torch_sgd(&p64, &g64[..1], 0.05, 0.9, 0.1, 1e-2, false),
        &[0.44975, -1.0995, 2.149],
        1e-8,
    );
    assert_close(&values(&w), &want, 1e-6);
}

#[test]
fn sgd_nesterov_matches_torch_over_three_steps() {
    let p0 = [1.0f32, -0.25];
    let gs = [[0.2f32, -0.4], [0.1, 0.3], [-0.5, 0.05]];
    let w = var(&p0);
    let mut cfg = OptimizerConfig::sgd(0.1, 0.9, 5e-4);
    cfg.nesterov = true;
    let mut opt = Optimizer::new(vec![("w".into(), w.clone())], cfg).unwrap();
    for g in &gs {
        opt.step(&grads_for(&[(&w, g)])).unwrap();
    }
    let g64: Vec<Vec<f64>> = gs
        .iter()
        .map(|g| g.iter().map(|&x| x as f64).collect())
        .collect();
    let p64: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
    // Step 1 by hand: d = g + 5e-4 p = [0.2005, -0.400125]; b = d;
    // step = d + 0.9 b = 1.9 d; p = p - 0.1 * 1.9 d.
    let first = [1.0 - 0.19 * 0.2005, -0.25 + 0.19 * 0.400125];
    // The gradients are f32 values, hence the loose tolerance.
    assert_close(
        &torch_sgd(&p64, &g64[..1], 0.1, 0.9, 0.0, 5e-4, true),
        &first,
        1e-8,
    );
    assert_close(
        &values(&w),
        &torch_sgd(&p64, &g64, 0.1, 0.9, 0.0, 5e-4, true),
        1e-6,
    );
}

#[test]
fn parameters_without_gradient_are_left_alone() {
    let used = var(&[1.0, 1.0]);
    let unused = var(&[3.0, 4.0]);
    let mut opt = Optimizer::new(
        vec![
            ("used".into(), used.clone()),
            ("unused".into(), unused.clone()),
        ],
        OptimizerConfig::sgd(0.1, 0.9, 0.5),
    )
    .unwrap();
    opt.step(&grads_for(&[(&used, &[1.0, 1.0])])).unwrap();
    // Weight decay would have moved `unused` if it were applied without a gradient.
    assert_eq!(values(&unused), [3.0, 4.0]);
    assert!(opt
        .state_tensors()
        .unwrap()
        .keys()
        .all(|k| !k.ends_with("unused")));
}

#[test]
fn exclude_bias_and_norm_puts_1d_and_bias_parameters_in_the_no_decay_group() {
    let dev = Device::Cpu;
    let conv = Var::zeros((4, 3, 3, 3), candle_core::DType::F32, &dev).unwrap();
    let bn_w = Var::ones(4, candle_core::DType::F32, &dev).unwrap();
    let fc_b = Var::zeros(10, candle_core::DType::F32, &dev).unwrap();
    let fc_w = Var::zeros((10, 4), candle_core::DType::F32, &dev).unwrap();
    let mut cfg = OptimizerConfig::sgd(0.1, 0.9, 1e-4);
    cfg.exclude_bias_and_norm = true;
    let opt = Optimizer::new(
        vec![
            ("conv1.weight".into(), conv),
            ("bn1.weight".into(), bn_w),
            ("fc.bias".into(), fc_b),
            ("fc.weight".into(), fc_w),
        ],
        cfg,
    )
    .unwrap();
    let groups = opt.groups();
    assert_eq!(groups[0].param_names(), ["conv1.weight", "fc.weight"]);
    assert_eq!(groups[0].weight_decay, 1e-4);
    assert_eq!(groups[1].param_names(), ["bn1.weight", "fc.bias"]);
    assert_eq!(groups[1].weight_decay, 0.0);
}

#[test]
fn no_decay_group_gets_momentum_but_no_weight_decay() {
    let b = var(&[2.0, -2.0]);
    let mut cfg = OptimizerConfig::sgd(0.1, 0.9, 0.5);
    cfg.exclude_bias_and_norm = true;
    let mut opt = Optimizer::new(vec![("fc.bias".into(), b.clone())], cfg).unwrap();
    opt.step(&grads_for(&[(&b, &[1.0, 1.0])])).unwrap();
    opt.step(&grads_for(&[(&b, &[1.0, 1.0])])).unwrap();
    // b1 = b0 - 0.1*1; buffer 0.9*1 + 1 = 1.9; b2 = b1 - 0.19.
    assert_close(&values(&b), &[2.0 - 0.1 - 0.19, -2.0 - 0.1 - 0.19], 1e-7);
}

/// lightly's LARS for one adapted parameter, in f64.
fn lars_step(
    p: &[f64],
    g: &[f64],
    buf: Option<&[f64]>,
    lr: f64,
    mu: f64,
    wd: f64,
) -> (Vec<f64>, Vec<f64>) {
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (pn, gn) = (norm(p), norm(g));
    let local = 1e-3 * pn / (gn + pn * wd + 1e-8);
    let d: Vec<f64> = g.iter().zip(p).map(|(g, p)| local * (g + wd * p)).collect();
    let b: Vec<f64> = match buf {
        None => d,
        Some(b) => b.iter().zip(&d).map(|(b, d)| mu * b + d).collect(),
    };
    let p = p.iter().zip(&b).map(|(p, b)| p - lr * b).collect();
    (p, b)
}

#[test]
fn lars_scales_weights_by_trust_ratio_and_skips_bias_and_norm() {
    let w = Var::new(&[[3.0f32, 4.0], [0.0, 0.0]], &Device::Cpu).unwrap(); // ‖w‖ = 5
    let bias = var(&[1.0, -1.0]);
    let mut opt = Optimizer::new(
        vec![
            ("fc.weight".into(), w.clone()),
            ("fc.bias".into(), bias.clone()),
        ],
        OptimizerConfig::lars(2.0, 0.9, 1e-6),
    )
    .unwrap();
    let gw = [[0.6f32, -0.8], [0.0, 0.0]]; // ‖g‖ = 1
    let gb = [0.5f32, 0.25];
    let step = |opt: &mut Optimizer| {
        let gw_t = Tensor::new(&gw, &Device::Cpu).unwrap();
        let gb_t = Tensor::new(&gb, &Device::Cpu).unwrap();
        let loss = ((w.as_tensor() * gw_t).unwrap().sum_all().unwrap()
            + (bias.as_tensor() * gb_t).unwrap().sum_all().unwrap())
        .unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
    };
    step(&mut opt);
    step(&mut opt);
    // Hand check of step 1: local lr = 1e-3·5/(1 + 5e-6 + 1e-8) ≈ 4.99997e-3.
    let p0 = [3.0, 4.0, 0.0, 0.0];
    let g = [0.6, -0.8, 0.0, 0.0];
    let (p1, b1) = lars_step(&p0, &g, None, 2.0, 0.9, 1e-6);
    assert!((p1[0] - (3.0 - 2.0 * 4.99997e-3 * (0.6 + 3e-6))).abs() < 1e-8);
    let (p2, _) = lars_step(&p1, &g, Some(&b1), 2.0, 0.9, 1e-6);
    let got: Vec<f64> = w
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    assert_close(&got, &p2, 1e-6);
    // The bias is excluded: plain momentum SGD, no adaptation, no decay.
    assert_close(
        &values(&bias),
        &[
            1.0 - 2.0 * 0.5 - 2.0 * 0.95,
            -1.0 - 2.0 * 0.25 - 2.0 * 0.475,
        ],
        1e-6,
    );
}

#[test]
fn lars_with_clip_lr_caps_the_local_rate_at_the_learning_rate() {
    // solo-learn's clip_lr: η_l ← min(η_l / lr, 1). ‖w‖ = 5, ‖g‖ = 1, no decay, eta 0.02:
    // η_l = 0.1, so lr 0.5 gives 0.2 (the step is lr·0.2·g = 0.1·g) and lr 0.05 gives 1 (the
    // step is capped at lr·g = 0.05·g).
    for (lr, step) in [(0.5, 0.1), (0.05, 0.05)] {
        let w = Var::new(&[[3.0f32, 4.0]], &Device::Cpu).unwrap();
        let mut cfg = OptimizerConfig::lars(lr, 0.0, 0.0);
        cfg.kind = OptimizerKind::Lars {
            trust_coefficient: 0.02,
            eps: 0.0,
            clip_lr: true,
        };
        let mut opt = Optimizer::new(vec![("fc.weight".into(), w.clone())], cfg).unwrap();
        let g = Tensor::new(&[[0.6f32, -0.8]], &Device::Cpu).unwrap();
        let loss = (w.as_tensor() * g).unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
        let got: Vec<f64> = w
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        assert_close(&got, &[3.0 - step * 0.6, 4.0 + step * 0.8], 1e-6);
    }
}

#[test]
fn lars_leaves_zero_norm_parameters_unscaled() {
    // ‖p‖ = 0: no adaptation and no weight decay, a plain SGD step.
    let w = Var::new(&[[0.0f32, 0.0]], &Device::Cpu).unwrap();
    let mut opt = Optimizer::new(
        vec![("w".into(), w.clone())],
        OptimizerConfig::lars(0.5, 0.9, 1e-6),
    )
    .unwrap();
    let g = Tensor::new(&[[1.0f32, -2.0]], &Device::Cpu).unwrap();
    let loss = (w.as_tensor() * g).unwrap().sum_all().unwrap();
    opt.step(&loss.backward().unwrap()).unwrap();
    assert_eq!(w.as_tensor().to_vec2::<f32>().unwrap(), [[-0.5, 1.0]]);
}

#[test]
fn state_round_trip_continues_bit_identically() {
    let run = |resume_after: Option<usize>| -> Vec<f32> {
        let w = var(&[0.3, -0.7, 1.1]);
        let mut cfg = OptimizerConfig::sgd(0.05, 0.9, 1e-3);
        cfg.nesterov = true;
        let mut opt = Optimizer::new(vec![("w".into(), w.clone())], cfg.clone()).unwrap();
        let gs = [
            [0.1f32, 0.2, 0.3],
            [-0.3, 0.1, 0.0],
            [0.7, -0.2, 0.4],
            [0.0, 0.5, -0.5],
        ];
        for (i, g) in gs.iter().enumerate() {
            if Some(i) == resume_after {
                let dir = std::env::temp_dir().join(format!("mocca-optim-{}", std::process::id()));
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join("opt.safetensors");
                let mut state = opt.state_tensors().unwrap();
                state.insert("w".into(), w.as_detached_tensor());
                mocca_methods::checkpoint::save_tensors(&state, &path).unwrap();
                let loaded: HashMap<String, Tensor> =
                    mocca_methods::checkpoint::load_tensors(&path, &Device::Cpu).unwrap();
                std::fs::remove_dir_all(&dir).unwrap();
                // A fresh optimizer and the parameter reloaded, as after a restart.
                w.set(&loaded["w"]).unwrap();
                opt = Optimizer::new(vec![("w".into(), w.clone())], cfg.clone()).unwrap();
                opt.load_state_tensors(&loaded).unwrap();
            }
            opt.step(&grads_for(&[(&w, g)])).unwrap();
        }
        w.as_tensor().to_vec1().unwrap()
    };
    let straight = run(None);
    let resumed = run(Some(2));
    assert_eq!(straight, resumed);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&straight), bits(&resumed));
}

#[test]
fn loading_a_buffer_for_an_unknown_parameter_is_an_error() {
    let w = var(&[1.0]);
    let mut opt =
        Optimizer::new(vec![("w".into(), w)], OptimizerConfig::sgd(0.1, 0.9, 0.0)).unwrap();
    let mut state = HashMap::new();
    state.insert(
        "momentum_buffer.other".to_string(),
        Tensor::new(&[1.0f32], &Device::Cpu).unwrap(),
    );
    let err = opt.load_state_tensors(&state).unwrap_err().to_string();
    assert!(err.contains("other"), "{err}");
}

#[test]
fn invalid_hyper_parameters_are_rejected_with_their_name() {
    let w = var(&[1.0]);
    let mut cfg = OptimizerConfig::sgd(0.1, 0.0, 0.0);
    cfg.nesterov = true;
    let err = Optimizer::new(vec![("w".into(), w.clone())], cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Nesterov"), "{err}");
    let cfg = OptimizerConfig::sgd(-1.0, 0.9, 0.0);
    let err = Optimizer::new(vec![("w".into(), w.clone())], cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("learning rate"), "{err}");
    let mut cfg = OptimizerConfig::lars(0.1, 0.9, 0.0);
    cfg.kind = OptimizerKind::Lars {
        trust_coefficient: 0.0,
        eps: 1e-8,
        clip_lr: false,
    };
    assert!(Optimizer::new(vec![("w".into(), w)], cfg).is_err());
}

#[test]
fn saved_state_is_a_snapshot_that_later_steps_do_not_change() {
    let w = var(&[1.0, 2.0]);
    let mut opt = Optimizer::new(
        vec![("w".into(), w.clone())],
        OptimizerConfig::sgd(0.1, 0.9, 0.0),
    )
    .unwrap();
    opt.step(&grads_for(&[(&w, &[1.0, 1.0])])).unwrap();
    let state = opt.state_tensors().unwrap();
    opt.step(&grads_for(&[(&w, &[1.0, 1.0])])).unwrap();
    let buf: Vec<f32> = state["momentum_buffer.w"].to_vec1().unwrap();
    assert_eq!(buf, [1.0, 1.0]);
    let now: Vec<f32> = opt.state_tensors().unwrap()["momentum_buffer.w"]
        .to_vec1()
        .unwrap();
    assert_eq!(now, [1.9, 1.9]);
}

#[test]
fn momentum_follows_torch_sgd_any_non_negative_value_including_one() {
    // torch.optim.SGD raises "Invalid momentum value" for momentum < 0 only.
    for m in [0.0, 0.9, 1.0, 1.5] {
        assert!(OptimizerConfig::sgd(0.1, m, 0.0).validate().is_ok(), "{m}");
    }
    let err = OptimizerConfig::sgd(0.1, -0.1, 0.0)
        .validate()
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "invalid configuration: momentum must be finite and >= 0, got -0.1"
    );
}

#[test]
fn the_rules_name_no_setting_so_a_config_file_can_name_its_key() {
    use mocca_methods::optim::rules;
    assert_eq!(
        rules::weight_decay(-1.0).unwrap_err().to_string(),
        "must be finite and >= 0, got -1"
    );
    assert!(rules::momentum(f64::NAN).is_err());
    assert!(rules::nesterov(true, 0.0, 0.0).is_err());
    assert!(rules::nesterov(true, 0.9, 0.1).is_err());
    assert!(rules::nesterov(true, 0.9, 0.0).is_ok());
    assert!(rules::nesterov(false, 0.0, 0.3).is_ok());
    assert!(rules::trust_coefficient(0.0).is_err());
    assert!(rules::lr(0.0).is_ok());
}

#[test]
fn adamw_matches_torchs_three_steps_and_resumes_from_its_state() {
    use candle_core::{DType, Device, Tensor, Var};
    use mocca_methods::optim::{Optimizer, OptimizerConfig};
    // torch 2.15: AdamW([p], lr=0.1, weight_decay=0.01), float64, these gradients.
    let grads = [[0.3, -0.2, 1.0], [0.1, 0.4, -0.5], [-0.2, 0.0, 0.25]];
    let torch_after = [
        [0.39950000333333324, -0.8990000049999998, 1.898000001],
        [0.3119941121538623, -0.9347113565410369, 1.869468297369903],
        [0.2889595968949429, -0.9620765528364229, 1.8335559147664766],
    ];
    let run = |resume_after: Option<usize>| -> Vec<Vec<f64>> {
        let p =
            Var::from_tensor(&Tensor::new(&[0.5f64, -1.0, 2.0], &Device::Cpu).unwrap()).unwrap();
        let mut opt = Optimizer::new(
            vec![("p".into(), p.clone())],
            OptimizerConfig::adamw(0.1, 0.01),
        )
        .unwrap();
        let mut out = Vec::new();
        for (t, g) in grads.iter().enumerate() {
            if Some(t) == resume_after {
                let state = opt.state_tensors().unwrap().into_iter().collect();
                opt = Optimizer::new(
                    vec![("p".into(), p.clone())],
                    OptimizerConfig::adamw(0.1, 0.01),
                )
                .unwrap();
                opt.load_state_tensors(&state).unwrap();
            }
            // The gradient store of `loss = Σ p·g`, which is g.
            let g = Tensor::new(g, &Device::Cpu).unwrap();
            let loss = (p.as_tensor() * &g).unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            out.push(
                p.as_tensor()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
            );
        }
        out
    };
    for resume in [None, Some(1), Some(2)] {
        for (got, want) in run(resume).iter().zip(&torch_after) {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-12, "{resume:?}: {got:?} vs {want:?}");
            }
        }
    }
}

#[test]
fn a_fixed_lr_group_keeps_the_initial_rate_while_the_rest_follows_set_lr() {
    let enc = Var::new(&[[1.0f32, 2.0]], &Device::Cpu).unwrap();
    let pred = Var::new(&[[3.0f32, 4.0]], &Device::Cpu).unwrap();
    let mut opt = Optimizer::new(
        vec![
            ("encoder.w".into(), enc.clone()),
            ("predictor.w".into(), pred.clone()),
        ],
        OptimizerConfig::sgd(0.5, 0.0, 0.0),
    )
    .unwrap();
    assert_eq!(opt.fix_lr("predictor."), 1);
    let names: Vec<(&str, Option<f64>)> =
        opt.groups().iter().map(|g| (g.name, g.fixed_lr)).collect();
    assert_eq!(names, [("decay", None), ("decay_fixed_lr", Some(0.5))]);
    // The schedule says 0.1: the encoder steps by 0.1·g, the predictor still by 0.5·g.
    opt.set_lr(0.1);
    let loss = (enc.as_tensor().sum_all().unwrap() + pred.as_tensor().sum_all().unwrap()).unwrap();
    opt.step(&loss.backward().unwrap()).unwrap();
    let flat = |v: &Var| {
        v.as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(flat(&enc), [0.9, 1.9]);
    assert_eq!(flat(&pred), [2.5, 3.5]);
    assert_eq!(opt.lr(), 0.1);
}
