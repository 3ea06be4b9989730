//! `conv2d_nhwc` (fast CPU kernels and the composed, device-generic path) against Candle's own
//! NCHW convolution and against f64 finite differences, on awkward shapes.

mod ops_util;

use candle_core::{DType, Device, Tensor, Var};
use ops_util::*;

/// (x dims NHWC, C_out, kernel (kh, kw), stride, padding)
type Case = ([usize; 4], usize, (usize, usize), usize, usize);

const AWKWARD: &[Case] = &[
    ([2, 7, 5, 3], 4, (3, 3), 1, 1),   // non-square input, padding 1
    ([2, 7, 6, 3], 5, (3, 3), 2, 1),   // stride 2, padding 1, even width
    ([1, 8, 9, 4], 3, (3, 3), 2, 0),   // batch 1, stride 2, padding 0, odd leftovers
    ([3, 5, 4, 6], 7, (1, 1), 1, 0),   // 1x1: a plain GEMM
    ([2, 6, 7, 5], 4, (1, 1), 2, 0),   // 1x1 stride 2 (ResNet downsample)
    ([1, 11, 10, 3], 4, (7, 7), 2, 3), // ImageNet stem geometry
    ([2, 5, 6, 2], 3, (2, 3), 1, 0),   // non-square kernel
    ([1, 3, 4, 2], 2, (1, 1), 1, 1),   // padding >= kernel (input gradient by col2im)
    ([2, 8, 8, 3], 4, (3, 3), 2, 1),   // square stride 2 with an unused last row and column
];

fn case_tensors(case: &Case, seed: u64) -> (Var, Var, [usize; 4]) {
    let (xd, co, (kh, kw), _, _) = *case;
    let wd = [co, xd[3], kh, kw];
    (var(&xd, seed), var(&wd, seed + 1), wd)
}

fn candle_nchw(x: &Tensor, w: &Tensor, s: usize, p: usize) -> Tensor {
    nchw_to_nhwc(&nhwc_to_nchw(x).conv2d(w, p, s, 1, 1).unwrap())
}

#[test]
fn forward_matches_candle_conv2d() {
    for path in PATHS {
        for (i, case) in AWKWARD.iter().enumerate() {
            let (x, w, _) = case_tensors(case, 10 * i as u64);
            let got = path.conv(&x, &w, case.3, case.4).unwrap();
            let want = candle_nchw(&x, &w, case.3, case.4);
            assert_eq!(got.dims(), want.dims(), "{path:?} {case:?}");
            assert_close(
                &f64s(&got),
                &f64s(&want),
                1e-5,
                &format!("{path:?} {case:?}"),
            );
        }
    }
}

/// Candle's conv2d backward fails ("shape mismatch in add") when the strided windows leave a
/// different number of input rows and columns unused, `(H + 2p - kh) % s != (W + 2p - kw) % s`
/// (it derives the transposed convolution's output padding from the height alone); finite
/// differences cover those cases.
fn candle_backward_works(case: &Case) -> bool {
    let ([_, h, w, _], _, (kh, kw), s, p) = *case;
    (h + 2 * p - kh) % s == (w + 2 * p - kw) % s
}

#[test]
fn gradients_match_candle_conv2d_backward() {
    for path in PATHS {
        for (i, case) in AWKWARD.iter().enumerate() {
            if !candle_backward_works(case) {
                continue;
            }
            let (x, w, _) = case_tensors(case, 10 * i as u64);
            let y = path.conv(&x, &w, case.3, case.4).unwrap();
            let dy = tensor(y.dims(), 99);
            let ours = backward_with(&y, &dy);
            let theirs = backward_with(&candle_nchw(&x, &w, case.3, case.4), &dy);
            let what = format!("{path:?} {case:?}");
            assert_close(
                &grad(&ours, &x),
                &grad(&theirs, &x),
                1e-5,
                &format!("dx {what}"),
            );
            assert_close(
                &grad(&ours, &w),
                &grad(&theirs, &w),
                1e-5,
                &format!("dw {what}"),
            );
        }
    }
}

#[test]
fn gradients_match_f64_finite_differences() {
    // L = Σ conv(x, w) · r in f64 loops; conv is bilinear, so central differences are exact up
    // to rounding and the tolerance only covers f32 accumulation.
    for path in PATHS {
        for (i, case) in AWKWARD.iter().enumerate() {
            let (x, w, wd) = case_tensors(case, 10 * i as u64 + 3);
            let (xd, s, p) = (case.0, case.3, case.4);
            let y = path.conv(&x, &w, s, p).unwrap();
            let r = tensor(y.dims(), 7);
            let g = backward_with(&y, &r);
            let (xv, wv, rv) = (f64s(&x), f64s(&w), f64s(&r));
            let fd_x = finite_diff(&xv, 1e-3, |xv| dot(&conv_ref(xv, xd, &wv, wd, s, p).0, &rv));
            let fd_w = finite_diff(&wv, 1e-3, |wv| dot(&conv_ref(&xv, xd, wv, wd, s, p).0, &rv));
            let what = format!("{path:?} {case:?}");
            assert_close(&grad(&g, &x), &fd_x, 1e-5, &format!("dx {what}"));
            assert_close(&grad(&g, &w), &fd_w, 1e-5, &format!("dw {what}"));
        }
    }
}

#[test]
fn forward_matches_f64_reference_across_many_tiles() {
    // Big enough for several im2col chunks per image, a ragged last chunk, and (batch 3 vs 1)
    // both the image-parallel and the GEMM-parallel input-gradient schedules.
    for (xd, s, p) in [([3, 19, 23, 40], 1, 1), ([1, 33, 31, 40], 2, 1)] {
        // (33 + 2 - 3) and (31 + 2 - 3) are even: Candle's backward works here.
        let wd = [24, xd[3], 3, 3];
        let (x, w) = (var(&xd, 5), var(&wd, 6));
        let y = mocca_kernels::conv2d_nhwc(&x, &w, s, p).unwrap();
        let (want, yd) = conv_ref(&f64s(&x), xd, &f64s(&w), wd, s, p);
        assert_eq!(y.dims(), &yd);
        assert_close(&f64s(&y), &want, 1e-5, &format!("{xd:?} s{s} p{p}"));
        let dy = tensor(y.dims(), 8);
        let ours = backward_with(&y, &dy);
        let theirs = backward_with(&candle_nchw(&x, &w, s, p), &dy);
        assert_close(&grad(&ours, &x), &grad(&theirs, &x), 1e-5, "dx");
        assert_close(&grad(&ours, &w), &grad(&theirs, &w), 1e-5, "dw");
    }
}

#[test]
fn composed_path_works_in_f64() {
    let case = &AWKWARD[1];
    let (x, w, wd) = case_tensors(case, 40);
    let (x64, w64) = (
        Var::from_tensor(&x.to_dtype(DType::F64).unwrap()).unwrap(),
        Var::from_tensor(&w.to_dtype(DType::F64).unwrap()).unwrap(),
    );
    let y = mocca_kernels::conv2d_nhwc(&x64, &w64, case.3, case.4).unwrap();
    assert_eq!(y.dtype(), DType::F64);
    let (want, _) = conv_ref(&f64s(&x), case.0, &f64s(&w), wd, case.3, case.4);
    assert_close(&f64s(&y), &want, 1e-12, "f64 forward");
    let r = Tensor::from_vec(data(y.elem_count(), 3), y.dims(), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let g = backward_with(&y, &r);
    let rv = f64s(&r);
    let wv = f64s(&w);
    let fd_x = finite_diff(&f64s(&x), 1e-4, |xv| {
        dot(&conv_ref(xv, case.0, &wv, wd, case.3, case.4).0, &rv)
    });
    assert_close(&grad(&g, &x64), &fd_x, 1e-9, "f64 dx");
}

#[test]
fn no_input_gradient_for_a_constant_input() {
    for path in PATHS {
        let x = tensor(&[2, 5, 5, 3], 1);
        let w = var(&[4, 3, 3, 3], 2);
        let y = path.conv(&x, &w, 1, 1).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_none(), "{path:?}");
        assert_eq!(g.get(&w).unwrap().dims(), &[4, 3, 3, 3]);
    }
}

#[test]
fn channel_mismatch_is_an_error_naming_both_shapes() {
    let x = tensor(&[1, 5, 5, 3], 1);
    let w = tensor(&[4, 2, 3, 3], 2);
    let err = mocca_kernels::conv2d_nhwc(&x, &w, 1, 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("3 channels") && err.contains("[4, 2, 3, 3]"),
        "{err}"
    );
}

#[test]
fn nchw_input_of_wrong_rank_and_zero_stride_are_errors() {
    let w = tensor(&[4, 3, 3, 3], 2);
    let err = mocca_kernels::conv2d_nhwc(&tensor(&[5, 5, 3], 1), &w, 1, 1).unwrap_err();
    assert!(err.to_string().contains("[N, H, W, C_in]"), "{err}");
    let err = mocca_kernels::conv2d_nhwc(&tensor(&[1, 5, 5, 3], 1), &w, 0, 1).unwrap_err();
    assert!(err.to_string().contains("stride"), "{err}");
    let err = mocca_kernels::conv2d_nhwc(&tensor(&[1, 1, 1, 3], 1), &w, 1, 0).unwrap_err();
    assert!(err.to_string().contains("smaller than"), "{err}");
}
