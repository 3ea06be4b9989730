//! Training and eval BatchNorm (fast CPU kernels and the composed path) against an f64
//! reference, a BatchNorm written with Candle ops in NCHW, and f64 finite differences.

mod ops_util;

use candle_core::{Device, Tensor, Var};
use ops_util::*;

const EPS: f64 = 1e-5;

/// γ around 1 and β around 0, like a trained network's, but not exactly 1 and 0.
fn affine_params(c: usize, seed: u64) -> (Var, Var) {
    let g: Vec<f32> = data(c, seed).iter().map(|v| 1.0 + 0.5 * v).collect();
    let b: Vec<f32> = data(c, seed + 1).iter().map(|v| 0.3 * v).collect();
    (
        Var::from_vec(g, c, &Device::Cpu).unwrap(),
        Var::from_vec(b, c, &Device::Cpu).unwrap(),
    )
}

/// BatchNorm from Candle ops on NCHW, statistics over (N, H, W): the "native" reference.
fn candle_bn_nchw(x_nhwc: &Tensor, gamma: &Tensor, beta: &Tensor, relu: bool) -> Tensor {
    let x = nhwc_to_nchw(x_nhwc);
    let c = x.dim(1).unwrap();
    let mean = x.mean_keepdim((0, 2, 3)).unwrap();
    let xc = x.broadcast_sub(&mean).unwrap();
    let var = xc.sqr().unwrap().mean_keepdim((0, 2, 3)).unwrap();
    let y = xc
        .broadcast_div(&(var + EPS).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(&gamma.reshape((1, c, 1, 1)).unwrap())
        .unwrap()
        .broadcast_add(&beta.reshape((1, c, 1, 1)).unwrap())
        .unwrap();
    let y = if relu { y.relu().unwrap() } else { y };
    nchw_to_nhwc(&y)
}

#[test]
fn training_forward_matches_f64_reference() {
    for path in PATHS {
        for (dims, groups, relu) in [
            (vec![4, 5, 3, 6], 1, false),
            (vec![4, 5, 3, 6], 2, true),
            (vec![6, 2, 2, 3], 3, false),
            (vec![8, 5], 1, true),
            (vec![8, 5], 4, false),
        ] {
            let x = tensor(&dims, 1);
            let c = *dims.last().unwrap();
            let (gamma, beta) = affine_params(c, 2);
            let out = path.bn_train(&x, &gamma, &beta, EPS, groups, relu).unwrap();
            let (y, mean, var) =
                bn_train_ref(&f64s(&x), c, &f64s(&gamma), &f64s(&beta), EPS, groups, relu);
            let what = format!("{path:?} {dims:?} groups {groups} relu {relu}");
            assert_eq!(out.y.dims(), &dims[..]);
            assert_eq!(out.mean.dims(), &[groups, c]);
            assert_eq!(out.var.dims(), &[groups, c]);
            assert_close(&f64s(&out.y), &y, 1e-5, &format!("y {what}"));
            assert_close(&f64s(&out.mean), &mean, 1e-6, &format!("mean {what}"));
            assert_close(&f64s(&out.var), &var, 1e-6, &format!("var {what}"));
        }
    }
}

#[test]
fn training_forward_and_backward_match_candle_ops_bn() {
    for path in PATHS {
        for relu in [false, true] {
            let x = var(&[3, 4, 5, 7], 3);
            let (gamma, beta) = affine_params(7, 4);
            let y = path.bn_train(&x, &gamma, &beta, EPS, 1, relu).unwrap().y;
            let want = candle_bn_nchw(&x, &gamma, &beta, relu);
            let what = format!("{path:?} relu {relu}");
            assert_close(&f64s(&y), &f64s(&want), 1e-5, &format!("y {what}"));
            let dy = tensor(y.dims(), 5);
            let (ours, theirs) = (backward_with(&y, &dy), backward_with(&want, &dy));
            for (name, v) in [("dx", &x), ("dgamma", &gamma), ("dbeta", &beta)] {
                assert_close(
                    &grad(&ours, v),
                    &grad(&theirs, v),
                    1e-4,
                    &format!("{name} {what}"),
                );
            }
        }
    }
}

#[test]
fn gradients_match_f64_finite_differences() {
    for path in PATHS {
        for (dims, groups, relu) in [(vec![4, 3, 2, 3], 2, false), (vec![6, 4], 3, true)] {
            let x = var(&dims, 6);
            let c = *dims.last().unwrap();
            let (gamma, beta) = affine_params(c, 7);
            let y = path
                .bn_train(&x, &gamma, &beta, EPS, groups, relu)
                .unwrap()
                .y;
            let r = tensor(y.dims(), 8);
            let g = backward_with(&y, &r);
            let (xv, gv, bv, rv) = (f64s(&x), f64s(&gamma), f64s(&beta), f64s(&r));
            let loss = |x: &[f64], ga: &[f64], be: &[f64]| {
                dot(&bn_train_ref(x, c, ga, be, EPS, groups, relu).0, &rv)
            };
            let h = 1e-5;
            let what = format!("{path:?} {dims:?} groups {groups} relu {relu}");
            let fd = finite_diff(&xv, h, |x| loss(x, &gv, &bv));
            assert_close(&grad(&g, &x), &fd, 1e-4, &format!("dx {what}"));
            let fd = finite_diff(&gv, h, |ga| loss(&xv, ga, &bv));
            assert_close(&grad(&g, &gamma), &fd, 1e-4, &format!("dgamma {what}"));
            let fd = finite_diff(&bv, h, |be| loss(&xv, &gv, be));
            assert_close(&grad(&g, &beta), &fd, 1e-4, &format!("dbeta {what}"));
        }
    }
}

#[test]
fn split_batch_norm_equals_batch_norm_of_each_group() {
    for path in PATHS {
        let x = var(&[6, 3, 2, 4], 9);
        let (gamma, beta) = affine_params(4, 10);
        let split = path.bn_train(&x, &gamma, &beta, EPS, 3, true).unwrap();
        let dy = tensor(&[6, 3, 2, 4], 11);
        let g_split = backward_with(&split.y, &dy);
        for g in 0..3 {
            let xg = Var::from_tensor(&x.narrow(0, 2 * g, 2).unwrap()).unwrap();
            let one = path.bn_train(&xg, &gamma, &beta, EPS, 1, true).unwrap();
            let what = format!("{path:?} group {g}");
            let y_split = split.y.narrow(0, 2 * g, 2).unwrap();
            assert_close(&f64s(&y_split), &f64s(&one.y), 1e-6, &format!("y {what}"));
            assert_close(
                &f64s(&split.mean.narrow(0, g, 1).unwrap()),
                &f64s(&one.mean),
                1e-6,
                &format!("mean {what}"),
            );
            assert_close(
                &f64s(&split.var.narrow(0, g, 1).unwrap()),
                &f64s(&one.var),
                1e-6,
                &format!("var {what}"),
            );
            let g_one = backward_with(&one.y, &dy.narrow(0, 2 * g, 2).unwrap());
            let dx_split = g_split.get(&x).unwrap().narrow(0, 2 * g, 2).unwrap();
            assert_close(
                &f64s(&dx_split),
                &grad(&g_one, &xg),
                1e-5,
                &format!("dx {what}"),
            );
        }
    }
}

#[test]
fn variance_stays_accurate_when_the_mean_dwarfs_the_spread() {
    // Activations at 1000 ± 0.01: a naive f32 E[x²] - E[x]² would lose every digit.
    let dims = [64, 8, 8, 4];
    let x: Vec<f32> = data(64 * 8 * 8 * 4, 12)
        .iter()
        .map(|v| 1000.0 + 0.01 * v)
        .collect();
    let x = Tensor::from_vec(x, &dims[..], &Device::Cpu).unwrap();
    let (gamma, beta) = affine_params(4, 13);
    for path in PATHS {
        let out = path.bn_train(&x, &gamma, &beta, EPS, 1, false).unwrap();
        let (y, _, var) = bn_train_ref(&f64s(&x), 4, &f64s(&gamma), &f64s(&beta), EPS, 1, false);
        let var_got = f64s(&out.var);
        for (g, w) in var_got.iter().zip(&var) {
            assert!((g - w).abs() < 1e-3 * w, "{path:?}: var {g} vs {w}");
        }
        assert_close(&f64s(&out.y), &y, 2e-3, &format!("{path:?} y"));
    }
}

#[test]
fn eval_mode_uses_running_statistics_and_has_gradients() {
    for path in PATHS {
        for relu in [false, true] {
            let x = var(&[2, 3, 4, 5], 14);
            let (gamma, beta) = affine_params(5, 15);
            let rm = tensor(&[5], 16);
            let rv: Vec<f32> = data(5, 17).iter().map(|v| 1.0 + 0.5 * v).collect();
            let rv = Tensor::from_vec(rv, 5, &Device::Cpu).unwrap();
            let y = path
                .bn_eval(&x, &gamma, &beta, &rm, &rv, EPS, relu)
                .unwrap();
            let (xv, gv, bv, mv, vv) = (f64s(&x), f64s(&gamma), f64s(&beta), f64s(&rm), f64s(&rv));
            let reference = |x: &[f64], ga: &[f64], be: &[f64]| -> Vec<f64> {
                x.iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let j = i % 5;
                        let o = (v - mv[j]) / (vv[j] + EPS).sqrt() * ga[j] + be[j];
                        if relu {
                            o.max(0.0)
                        } else {
                            o
                        }
                    })
                    .collect()
            };
            let what = format!("{path:?} relu {relu}");
            assert_close(
                &f64s(&y),
                &reference(&xv, &gv, &bv),
                1e-5,
                &format!("y {what}"),
            );
            let r = tensor(y.dims(), 18);
            let rvec = f64s(&r);
            let g = backward_with(&y, &r);
            let fd = finite_diff(&xv, 1e-5, |x| dot(&reference(x, &gv, &bv), &rvec));
            assert_close(&grad(&g, &x), &fd, 1e-4, &format!("dx {what}"));
            let fd = finite_diff(&gv, 1e-5, |ga| dot(&reference(&xv, ga, &bv), &rvec));
            assert_close(&grad(&g, &gamma), &fd, 1e-4, &format!("dgamma {what}"));
            let fd = finite_diff(&bv, 1e-5, |be| dot(&reference(&xv, &gv, be), &rvec));
            assert_close(&grad(&g, &beta), &fd, 1e-4, &format!("dbeta {what}"));
        }
    }
}

#[test]
fn groups_that_do_not_divide_the_batch_are_an_error() {
    let x = tensor(&[6, 2, 2, 3], 1);
    let (gamma, beta) = affine_params(3, 2);
    for path in PATHS {
        let err = path.bn_train(&x, &gamma, &beta, EPS, 4, false).unwrap_err();
        assert!(err.to_string().contains("divide the batch size 6"), "{err}");
    }
}

#[test]
fn a_single_value_per_channel_is_an_error() {
    let x = tensor(&[2, 3], 1);
    let (gamma, beta) = affine_params(3, 2);
    let err = mocca_kernels::batch_norm_train(&x, &gamma, &beta, EPS, 2, false).unwrap_err();
    assert!(
        err.to_string().contains("more than one value per channel"),
        "{err}"
    );
}

#[test]
fn parameters_of_the_wrong_length_are_an_error() {
    let x = tensor(&[4, 3], 1);
    let (gamma, beta) = affine_params(4, 2);
    let err = mocca_kernels::batch_norm_train(&x, &gamma, &beta, EPS, 1, false).unwrap_err();
    assert!(
        err.to_string().contains("gamma must have shape [3]"),
        "{err}"
    );
}

#[test]
fn parameters_may_have_another_float_dtype_than_the_activations() {
    // Mixed precision keeps BatchNorm parameters in f32 under bf16 (CUDA) or f64 activations.
    let x = tensor(&[4, 2, 2, 3], 19)
        .to_dtype(candle_core::DType::F64)
        .unwrap();
    let (gamma, beta) = affine_params(3, 20);
    let out = mocca_kernels::batch_norm_train(&x, &gamma, &beta, EPS, 1, false).unwrap();
    assert_eq!(out.y.dtype(), candle_core::DType::F64);
    let (y, _, _) = bn_train_ref(&f64s(&x), 3, &f64s(&gamma), &f64s(&beta), EPS, 1, false);
    assert_close(&f64s(&out.y), &y, 1e-12, "f64 y");
}

/// The batch statistics come from sums of `x − x₀` (`x₀` the group's first row), and the
/// variance from `E[(x − x₀)²] − (E[x − x₀])²`: when `x₀` lies far from the mean (one sample of a
/// batch whose samples differ by a colour offset, as real images do) that difference cancels,
/// and an f32 running sum's rounding error in `E[(x − x₀)²]` comes out multiplied by
/// `(μ − x₀)²/σ²`. Every such sum accumulates in f64, as PyTorch's CPU BatchNorm does, so the
/// statistics are exact to f32 rounding even then. (f32 sums over 256-row chunks left the
/// variance here ~1e-5 off, an error of a few 1e-6 in every output's scale, which small ResNets
/// amplify past the golden trajectories' tolerance within four steps: tests/golden/methods/README.md,
/// "Accuracy".) Σ dx per channel, zero in exact arithmetic, stays at rounding level too.
#[test]
fn statistics_stay_exact_to_f32_rounding_when_the_first_row_is_far_from_the_mean() {
    // A CIFAR stem's BatchNorm: 8 samples of 16×16, 2 channels (2048 values per channel).
    let (n, h, w, c) = (8, 16, 16, 2);
    let noise = data(n * h * w * c, 21);
    let colour = data(n * c, 22);
    let mut x: Vec<f32> = (0..n * h * w * c)
        .map(|i| 0.5 * noise[i] + 0.5 * colour[(i / (h * w * c)) * c + i % c])
        .collect();
    // The first row (x₀ of the shifted sums) 12σ from the mean.
    x[0] = 4.0;
    x[1] = -4.0;
    let x = Var::from_vec(x, (n, h, w, c), &Device::Cpu).unwrap();
    let (gamma, beta) = affine_params(c, 23);
    let rows = n * h * w;
    for relu in [false, true] {
        let out = Path::Fast
            .bn_train(&x, &gamma, &beta, EPS, 1, relu)
            .unwrap();
        let (y, mean, var) = bn_train_ref(&f64s(&x), c, &f64s(&gamma), &f64s(&beta), EPS, 1, relu);
        let what = format!("relu {relu}");
        assert_close(&f64s(&out.var), &var, 2e-7, &format!("var {what}"));
        assert_close(&f64s(&out.mean), &mean, 2e-7, &format!("mean {what}"));
        assert_close(&f64s(&out.y), &y, 1e-6, &format!("y {what}"));
    }
    let out = Path::Fast
        .bn_train(&x, &gamma, &beta, EPS, 1, false)
        .unwrap();
    let dy = tensor(&[n, h, w, c], 24);
    let dx = grad(&backward_with(&out.y, &dy), &x);
    for j in 0..c {
        let (sum, abs) = (0..rows).fold((0.0, 0.0), |(s, a), r| {
            (s + dx[r * c + j], a + dx[r * c + j].abs())
        });
        assert!(
            (sum / abs).abs() < 1e-6,
            "channel {j}: Σ dx = {sum:e} against Σ |dx| = {abs:e}"
        );
    }
}
