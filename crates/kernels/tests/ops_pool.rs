//! Max-pool, global average pool and the fused residual add + ReLU (fast CPU kernels and the
//! composed path) against Candle's ops, f64 references and finite differences.

mod ops_util;

use candle_core::{Device, Tensor};
use ops_util::*;

/// (x dims NHWC, kernel, stride, padding)
const POOLS: &[([usize; 4], usize, usize, usize)] = &[
    ([2, 9, 9, 3], 3, 2, 1), // the ImageNet stem's max-pool: overlapping windows, padding
    ([1, 8, 7, 2], 3, 2, 0), // batch 1, non-square, no padding
    ([2, 6, 6, 4], 2, 2, 0), // non-overlapping
    ([1, 5, 6, 3], 3, 1, 1), // stride 1, every input in up to 9 windows
];

#[test]
fn max_pool_forward_and_backward_match_f64_reference() {
    for path in PATHS {
        for (i, &(xd, k, s, p)) in POOLS.iter().enumerate() {
            let x = var(&xd, i as u64);
            let y = path.max_pool(&x, k, s, p).unwrap();
            let (want, arg, yd) = max_pool_ref(&f64s(&x), xd, k, s, p);
            let what = format!("{path:?} {xd:?} k{k} s{s} p{p}");
            assert_eq!(y.dims(), &yd, "{what}");
            assert_close(&f64s(&y), &want, 0.0, &what);
            // The gradient of each output lands on its window's first maximum.
            let dy = tensor(&yd, 50 + i as u64);
            let mut dx = vec![0.0f64; x.elem_count()];
            for (o, d) in f64s(&dy).iter().enumerate() {
                dx[arg[o]] += d;
            }
            let g = backward_with(&y, &dy);
            assert_close(&grad(&g, &x), &dx, 1e-6, &format!("dx {what}"));
        }
    }
}

#[test]
fn max_pool_gradient_matches_f64_finite_differences() {
    for path in PATHS {
        let (xd, k, s, p) = POOLS[0];
        let x = var(&xd, 60);
        let y = path.max_pool(&x, k, s, p).unwrap();
        let r = tensor(y.dims(), 61);
        let rv = f64s(&r);
        let g = backward_with(&y, &r);
        // Distinct inputs (hash data): a small step never changes a window's winner.
        let fd = finite_diff(&f64s(&x), 1e-7, |xv| {
            dot(&max_pool_ref(xv, xd, k, s, p).0, &rv)
        });
        assert_close(&grad(&g, &x), &fd, 1e-6, &format!("{path:?}"));
    }
}

#[test]
fn max_pool_forward_matches_candle_max_pool2d() {
    // Candle's max_pool2d has no padding, and its backward is no reference: even with
    // kernel == stride it returns dy / kernel² at each maximum (Candle 0.11).
    for path in PATHS {
        let x = var(&[2, 6, 6, 4], 70);
        for k in [2, 3] {
            let y = path.max_pool(&x, k, k, 0).unwrap();
            let want = nchw_to_nhwc(&nhwc_to_nchw(&x).max_pool2d(k).unwrap());
            assert_close(&f64s(&y), &f64s(&want), 0.0, &format!("{path:?} k{k}"));
        }
    }
}

#[test]
fn max_pool_ties_send_the_gradient_to_the_first_maximum_only() {
    // Post-ReLU activations are full of equal zeros; PyTorch credits the first one in window
    // order, not all of them.
    let x = Tensor::zeros((1, 3, 3, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    let x = candle_core::Var::from_tensor(&x).unwrap();
    for path in PATHS {
        let y = path.max_pool(&x, 3, 2, 1).unwrap(); // 2x2 outputs
        let g = y.sum_all().unwrap().backward().unwrap();
        // Windows start at (-1,-1), (-1,1), (1,-1), (1,1): first in-image elements 0, 1, 3, 4.
        let want = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        assert_close(&grad(&g, &x), &want, 0.0, &format!("{path:?}"));
    }
}

#[test]
fn max_pool_padding_over_half_the_kernel_is_an_error() {
    let x = tensor(&[1, 5, 5, 1], 1);
    let err = mocca_kernels::max_pool2d_nhwc(&x, 3, 2, 2).unwrap_err();
    assert!(err.to_string().contains("at most half"), "{err}");
}

#[test]
fn global_avg_pool_matches_candle_mean_forward_and_backward() {
    for path in PATHS {
        for xd in [[2, 4, 3, 5], [1, 1, 1, 7]] {
            let x = var(&xd, 80);
            let y = path.avg_pool(&x).unwrap();
            assert_eq!(y.dims(), &[xd[0], xd[3]]);
            let want = x.mean((1, 2)).unwrap();
            assert_close(&f64s(&y), &f64s(&want), 1e-6, &format!("{path:?} {xd:?}"));
            let dy = tensor(y.dims(), 81);
            let (ours, theirs) = (backward_with(&y, &dy), backward_with(&want, &dy));
            assert_close(
                &grad(&ours, &x),
                &grad(&theirs, &x),
                1e-6,
                &format!("{path:?} dx"),
            );
        }
    }
}

#[test]
fn add_relu_matches_candle_add_then_relu() {
    for path in PATHS {
        let (a, b) = (var(&[2, 3, 4, 5], 90), var(&[2, 3, 4, 5], 91));
        let y = path.add_relu(&a, &b).unwrap();
        let want = a.add(&b).unwrap().relu().unwrap();
        assert_close(&f64s(&y), &f64s(&want), 0.0, &format!("{path:?} y"));
        let dy = tensor(y.dims(), 92);
        let (ours, theirs) = (backward_with(&y, &dy), backward_with(&want, &dy));
        assert_close(
            &grad(&ours, &a),
            &grad(&theirs, &a),
            0.0,
            &format!("{path:?} da"),
        );
        assert_close(
            &grad(&ours, &b),
            &grad(&theirs, &b),
            0.0,
            &format!("{path:?} db"),
        );
    }
}

#[test]
fn add_relu_has_zero_gradient_where_the_sum_is_exactly_zero() {
    // PyTorch's convention (Candle's relu passes the gradient at 0).
    let a = candle_core::Var::new(&[1.0f32, -2.0, 0.5, 3.0], &Device::Cpu).unwrap();
    let b = candle_core::Var::new(&[-1.0f32, 1.0, 0.5, -4.0], &Device::Cpu).unwrap();
    for path in PATHS {
        let y = path.add_relu(&a, &b).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), [0.0, 0.0, 1.0, 0.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(
            g.get(&a).unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 0.0, 1.0, 0.0]
        );
        assert_eq!(
            g.get(&b).unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 0.0, 1.0, 0.0]
        );
    }
}

#[test]
fn add_relu_of_different_shapes_is_an_error() {
    let err = mocca_kernels::add_relu(&tensor(&[2, 3], 1), &tensor(&[3, 2], 2)).unwrap_err();
    assert!(err.to_string().contains("[2, 3] vs [3, 2]"), "{err}");
}

#[test]
fn global_avg_pool_and_add_relu_gradients_match_f64_finite_differences() {
    for path in PATHS {
        let xd = [2, 3, 2, 4];
        let x = var(&xd, 100);
        let y = path.avg_pool(&x).unwrap();
        let r = tensor(y.dims(), 101);
        let rv = f64s(&r);
        let g = backward_with(&y, &r);
        let pool = |xv: &[f64]| -> f64 {
            // Σ_n,c r[n, c] · mean_hw x[n, h, w, c]
            let (hw, c) = (xd[1] * xd[2], xd[3]);
            (0..xv.len())
                .map(|i| xv[i] * rv[(i / (hw * c)) * c + i % c] / hw as f64)
                .sum()
        };
        let fd = finite_diff(&f64s(&x), 1e-3, pool);
        assert_close(&grad(&g, &x), &fd, 1e-6, &format!("avg pool {path:?}"));

        let (a, b) = (var(&[3, 2, 2, 5], 102), var(&[3, 2, 2, 5], 103));
        let y = path.add_relu(&a, &b).unwrap();
        let r = tensor(y.dims(), 104);
        let rv = f64s(&r);
        let g = backward_with(&y, &r);
        let bv = f64s(&b);
        let loss = |av: &[f64]| -> f64 {
            av.iter()
                .zip(&bv)
                .zip(&rv)
                .map(|((a, b), r)| (a + b).max(0.0) * r)
                .sum()
        };
        let fd = finite_diff(&f64s(&a), 1e-4, loss);
        assert_close(&grad(&g, &a), &fd, 1e-5, &format!("add_relu {path:?}"));
    }
}
