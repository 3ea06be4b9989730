//! The composed (device-generic) path in 16-bit floats, as it runs on CUDA in bf16: forward and
//! backward land near the f32 fast path. Run on the CPU here (non-f32 inputs take that path).

mod ops_util;

use candle_core::{DType, Tensor, Var};
use ops_util::*;

fn bf16_var(t: &Tensor) -> Var {
    Var::from_tensor(&t.to_dtype(DType::BF16).unwrap()).unwrap()
}

/// bf16 keeps 8 significant bits: compare at 3e-2 of the largest magnitude.
const TOL: f64 = 3e-2;

#[test]
fn batch_norm_residual_chain_in_bf16_matches_f32() {
    let x32 = var(&[4, 5, 5, 6], 1);
    let dev = candle_core::Device::Cpu;
    let gamma = Tensor::from_vec(vec![1.1f32, 0.9, 1.0, 1.2, 0.8, 1.0], 6, &dev).unwrap();
    let beta = Tensor::from_vec(vec![0.1f32, -0.1, 0.0, 0.2, -0.2, 0.05], 6, &dev).unwrap();
    let x16 = bf16_var(&x32);
    // f32 parameters under bf16 activations, as mixed precision keeps them.
    let y16 = mocca_kernels::batch_norm_train(&x16, &gamma, &beta, 1e-5, 2, true)
        .unwrap()
        .y;
    let s16 = mocca_kernels::add_relu(&y16, &x16).unwrap();
    let z16 = mocca_kernels::global_avg_pool_nhwc(&s16).unwrap();
    let y32 = mocca_kernels::batch_norm_train(&x32, &gamma, &beta, 1e-5, 2, true)
        .unwrap()
        .y;
    let s32 = mocca_kernels::add_relu(&y32, &x32).unwrap();
    let z32 = mocca_kernels::global_avg_pool_nhwc(&s32).unwrap();
    assert_eq!(z16.dtype(), DType::BF16);
    assert_close(&f64s(&z16), &f64s(&z32), TOL, "forward");
    let r = tensor(z32.dims(), 3);
    let g32 = backward_with(&z32, &r);
    let g16 = backward_with(&z16, &r.to_dtype(DType::BF16).unwrap());
    assert_eq!(g16.get(&x16).unwrap().dtype(), DType::BF16);
    assert_close(&grad(&g16, &x16), &grad(&g32, &x32), TOL, "dx");
}

#[test]
fn convolution_in_half_precision_matches_f32() {
    // The same composed code (zero insertion, padding, flipping, conv2d forward) in both 16-bit
    // float types; on the CPU the conv2d itself is widened to f32 (Candle has no 16-bit CPU
    // convolution), so this checks everything around it at the types' tolerances.
    for (dt, tol) in [(DType::F16, 1e-2), (DType::BF16, TOL)] {
        for (s, p) in [(1, 1), (2, 1), (2, 0)] {
            let x32 = var(&[2, 7, 6, 4], 4);
            let w32 = var(&[5, 4, 3, 3], 5);
            let to16 = |v: &Var| Var::from_tensor(&v.to_dtype(dt).unwrap()).unwrap();
            let (x16, w16) = (to16(&x32), to16(&w32));
            let y32 = mocca_kernels::conv2d_nhwc(&x32, &w32, s, p).unwrap();
            let y16 = mocca_kernels::conv2d_nhwc(&x16, &w16, s, p).unwrap();
            assert_eq!(y16.dtype(), dt);
            let what = format!("{dt:?} s{s} p{p}");
            assert_close(&f64s(&y16), &f64s(&y32), tol, &format!("y {what}"));
            let r = tensor(y32.dims(), 6);
            let g32 = backward_with(&y32, &r);
            let g16 = backward_with(&y16, &r.to_dtype(dt).unwrap());
            assert_close(
                &grad(&g16, &x16),
                &grad(&g32, &x32),
                tol,
                &format!("dx {what}"),
            );
            assert_close(
                &grad(&g16, &w16),
                &grad(&g32, &w32),
                tol,
                &format!("dw {what}"),
            );
        }
    }
}

#[test]
fn max_pool_in_bf16_is_exact_on_representable_inputs() {
    // Distinct small integers are exact in bf16, so both dtypes pick the same winners.
    let xd = [1, 7, 6, 2];
    let n: usize = xd.iter().product();
    let vals: Vec<f32> = (0..n).map(|i| ((i * 37) % n) as f32 - 40.0).collect();
    let x32 = Var::from_vec(vals, &xd[..], &candle_core::Device::Cpu).unwrap();
    let x16 = bf16_var(&x32);
    let y32 = mocca_kernels::max_pool2d_nhwc(&x32, 3, 2, 1).unwrap();
    let y16 = mocca_kernels::max_pool2d_nhwc(&x16, 3, 2, 1).unwrap();
    assert_eq!(y16.dtype(), DType::BF16);
    assert_close(&f64s(&y16), &f64s(&y32), 0.0, "forward");
    let r = Tensor::ones(y32.dims(), DType::F32, &candle_core::Device::Cpu).unwrap();
    let g32 = backward_with(&y32, &r);
    let g16 = backward_with(&y16, &r.to_dtype(DType::BF16).unwrap());
    assert_close(&grad(&g16, &x16), &grad(&g32, &x32), 0.0, "dx");
}
