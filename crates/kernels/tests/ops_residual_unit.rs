//! `residual_units_train` (one fused CPU op) against the same unit chained from single-layer ops
//! in f64 (`conv2d_nhwc` → `batch_norm_train` → `add_relu`), forward, statistics and every
//! gradient.

mod ops_util;

use candle_core::{DType, Tensor, Var};
use mocca_kernels::{ConvBn, ResidualUnit, Shortcut};
use ops_util::*;

/// One conv + BN layer's variables: weight `[cout, cin, k, k]`, gamma, beta.
struct LayerVars {
    w: Var,
    gamma: Var,
    beta: Var,
    stride: usize,
    padding: usize,
}

impl LayerVars {
    fn new(cin: usize, cout: usize, k: usize, stride: usize, seed: u64) -> Self {
        let gamma = tensor(&[cout], seed + 1).affine(0.5, 1.0).unwrap();
        Self {
            w: var(&[cout, cin, k, k], seed),
            gamma: Var::from_tensor(&gamma).unwrap(),
            beta: var(&[cout], seed + 2),
            stride,
            padding: k / 2,
        }
    }

    fn vars(&self) -> [&Var; 3] {
        [&self.w, &self.gamma, &self.beta]
    }
}

/// The same layer's values as f64 variables (which take the unfused, composed path).
fn to_f64(v: &Var) -> Var {
    Var::from_tensor(&v.as_tensor().to_dtype(DType::F64).unwrap()).unwrap()
}

struct Unit {
    main: Vec<LayerVars>,
    projection: Option<LayerVars>,
    residual: bool,
}

impl Unit {
    /// Every variable of the unit: per layer weight, gamma, beta (main path, then projection).
    fn vars(&self) -> Vec<&Var> {
        self.main
            .iter()
            .chain(&self.projection)
            .flat_map(|l| l.vars())
            .collect()
    }
}

/// Runs `units` on `x` with the variables `vars` (in `Unit::vars` order, all units in turn).
fn run(
    x: &Var,
    units: &[Unit],
    vars: &[&Var],
    groups: usize,
) -> mocca_kernels::ResidualUnitsOutput {
    let mut at = 0;
    let mut layer = |l: &LayerVars| {
        let v = &vars[at..at + 3];
        at += 3;
        ConvBn {
            weight: v[0].as_tensor(),
            stride: l.stride,
            padding: l.padding,
            gamma: v[1].as_tensor(),
            beta: v[2].as_tensor(),
        }
    };
    let mains: Vec<(Vec<ConvBn>, Option<ConvBn>)> = units
        .iter()
        .map(|u| {
            let main = u.main.iter().map(&mut layer).collect();
            (main, u.projection.as_ref().map(&mut layer))
        })
        .collect();
    let specs: Vec<ResidualUnit> = units
        .iter()
        .zip(&mains)
        .map(|(u, (main, proj))| ResidualUnit {
            main,
            shortcut: match proj {
                Some(p) => Shortcut::Projection(*p),
                None if u.residual => Shortcut::Identity,
                None => Shortcut::None,
            },
        })
        .collect();
    mocca_kernels::residual_units_train(x.as_tensor(), &specs, 1e-5, groups).unwrap()
}

fn check(x_dims: [usize; 4], units: &[Unit], groups: usize, what: &str) {
    let x = var(&x_dims, 100);
    let vars: Vec<&Var> = units.iter().flat_map(Unit::vars).collect();
    let fused = run(&x, units, &vars, groups);

    let x64 = to_f64(&x);
    let vars64: Vec<Var> = vars.iter().map(|v| to_f64(v)).collect();
    let vars64_refs: Vec<&Var> = vars64.iter().collect();
    let want = run(&x64, units, &vars64_refs, groups);

    assert_eq!(fused.y.dims(), want.y.dims(), "{what}: output shape");
    assert_close(&f64s(&fused.y), &f64s(&want.y), 1e-5, &format!("{what}: y"));
    assert_eq!(
        fused.stats.len(),
        units.len(),
        "{what}: statistics per unit"
    );
    for (k, (ours, theirs)) in fused.stats.iter().zip(&want.stats).enumerate() {
        assert_eq!(
            ours.len(),
            theirs.len(),
            "{what}: statistics per BatchNorm of unit {k}"
        );
        for (i, ((m, v), (wm, wv))) in ours.iter().zip(theirs).enumerate() {
            assert_close(&f64s(m), &f64s(wm), 1e-5, &format!("{what}: mean {k}.{i}"));
            assert_close(&f64s(v), &f64s(wv), 1e-5, &format!("{what}: var {k}.{i}"));
        }
    }

    let dy = tensor(fused.y.dims(), 7);
    let g = backward_with(&fused.y, &dy);
    let g64 = backward_with(&want.y, &dy.to_dtype(DType::F64).unwrap());
    assert_close(
        &grad(&g, &x),
        &grad(&g64, &x64),
        1e-4,
        &format!("{what}: dx"),
    );
    for (i, (v, v64)) in vars.iter().zip(&vars64).enumerate() {
        let name = ["weight", "gamma", "beta"][i % 3];
        assert_close(
            &grad(&g, v),
            &grad(&g64, v64),
            1e-4,
            &format!("{what}: d{name} of layer {}", i / 3),
        );
    }
}

#[test]
fn basic_block_with_identity_shortcut_matches_the_layer_chain() {
    let unit = Unit {
        main: vec![LayerVars::new(8, 8, 3, 1, 1), LayerVars::new(8, 8, 3, 1, 4)],
        projection: None,
        residual: true,
    };
    check([4, 6, 5, 8], &[unit], 1, "identity block");
}

#[test]
fn downsampling_block_with_projection_and_split_batch_norm_matches_the_layer_chain() {
    let unit = Unit {
        main: vec![
            LayerVars::new(5, 12, 3, 2, 1),
            LayerVars::new(12, 12, 3, 1, 4),
        ],
        projection: Some(LayerVars::new(5, 12, 1, 2, 7)),
        residual: true,
    };
    check([4, 7, 6, 5], &[unit], 2, "projection block, 2 BN groups");
}

#[test]
fn stem_without_shortcut_matches_conv_bn_relu() {
    let unit = Unit {
        main: vec![LayerVars::new(3, 16, 3, 1, 1)],
        projection: None,
        residual: false,
    };
    check([3, 8, 8, 3], &[unit], 1, "stem");
}

#[test]
fn bottleneck_of_three_layers_matches_the_layer_chain() {
    let unit = Unit {
        main: vec![
            LayerVars::new(16, 4, 1, 1, 1),
            LayerVars::new(4, 4, 3, 1, 4),
            LayerVars::new(4, 16, 1, 1, 7),
        ],
        projection: None,
        residual: true,
    };
    check([2, 5, 5, 16], &[unit], 1, "bottleneck");
}

#[test]
fn a_stem_and_blocks_chained_in_one_op_match_the_layer_chain() {
    let units = [
        Unit {
            main: vec![LayerVars::new(3, 8, 3, 1, 1)],
            projection: None,
            residual: false,
        },
        Unit {
            main: vec![LayerVars::new(8, 8, 3, 1, 4), LayerVars::new(8, 8, 3, 1, 7)],
            projection: None,
            residual: true,
        },
        Unit {
            main: vec![
                LayerVars::new(8, 16, 3, 2, 10),
                LayerVars::new(16, 16, 3, 1, 13),
            ],
            projection: Some(LayerVars::new(8, 16, 1, 2, 16)),
            residual: true,
        },
    ];
    check(
        [4, 9, 8, 3],
        &units,
        2,
        "stem + identity block + projection block",
    );
}

#[test]
fn a_unit_whose_output_cannot_take_the_identity_shortcut_is_an_error() {
    let x = var(&[2, 6, 6, 4], 1);
    let l = LayerVars::new(4, 8, 3, 1, 2);
    let layer = ConvBn {
        weight: l.w.as_tensor(),
        stride: 1,
        padding: 1,
        gamma: l.gamma.as_tensor(),
        beta: l.beta.as_tensor(),
    };
    let unit = ResidualUnit {
        main: &[layer],
        shortcut: Shortcut::Identity,
    };
    let err = mocca_kernels::residual_units_train(x.as_tensor(), &[unit], 1e-5, 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("identity shortcut") && err.contains("[2, 6, 6, 8]"),
        "{err}"
    );
}

#[test]
fn a_unit_without_layers_is_an_error() {
    let x = var(&[2, 6, 6, 4], 1);
    let unit = ResidualUnit {
        main: &[],
        shortcut: Shortcut::Identity,
    };
    let err = mocca_kernels::residual_units_train(x.as_tensor(), &[unit], 1e-5, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least one convolution"), "{err}");
}

#[test]
fn batch_norm_parameters_of_the_wrong_length_are_an_error() {
    let x = var(&[2, 6, 6, 4], 1);
    let l = LayerVars::new(4, 8, 3, 1, 2);
    let short = Tensor::ones(7, DType::F32, &candle_core::Device::Cpu).unwrap();
    let layer = ConvBn {
        weight: l.w.as_tensor(),
        stride: 1,
        padding: 1,
        gamma: &short,
        beta: l.beta.as_tensor(),
    };
    let unit = ResidualUnit {
        main: &[layer],
        shortcut: Shortcut::None,
    };
    let err = mocca_kernels::residual_units_train(x.as_tensor(), &[unit], 1e-5, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("gamma must have shape [8]"), "{err}");
}
