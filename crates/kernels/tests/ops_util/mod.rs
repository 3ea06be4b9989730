//! Helpers shared by the ops tests: deterministic data, f64 reference implementations in plain
//! loops (NHWC), finite differences, and the two implementations under test.
#![allow(dead_code)]

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use mocca_kernels::BatchNormOutput;

/// Uniform values in [-1, 1) from a hash of (seed, index): reproducible, no RNG crate.
pub fn data(len: usize, seed: u64) -> Vec<f32> {
    (0..len as u64)
        .map(|i| {
            let mut z = i
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(seed.wrapping_mul(0xBF58_476D_1CE4_E5B9))
                .wrapping_add(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            z = z.wrapping_mul(0xD6E8_FEB8_6659_FD93);
            z ^= z >> 29;
            ((z >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

pub fn tensor(dims: &[usize], seed: u64) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(data(n, seed), dims, &Device::Cpu).unwrap()
}

pub fn var(dims: &[usize], seed: u64) -> Var {
    Var::from_tensor(&tensor(dims, seed)).unwrap()
}

pub fn f64s(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

pub fn nhwc_to_nchw(t: &Tensor) -> Tensor {
    t.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap()
}

pub fn nchw_to_nhwc(t: &Tensor) -> Tensor {
    t.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()
}

/// Gradients of `Σ y · dy` (so `dy` is the output gradient).
pub fn backward_with(y: &Tensor, dy: &Tensor) -> GradStore {
    y.mul(dy).unwrap().sum_all().unwrap().backward().unwrap()
}

pub fn grad(g: &GradStore, v: &Var) -> Vec<f64> {
    f64s(g.get(v).expect("no gradient for this variable"))
}

/// `max |got - want| ≤ tol · max(1, max |want|)`, with the worst element in the message.
pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        if d > worst || d.is_nan() {
            worst = d;
            at = i;
            if d.is_nan() {
                break;
            }
        }
    }
    assert!(
        worst <= tol * scale,
        "{what}: element {at}: got {}, want {} (|diff| {worst:e} > {tol:e} x {scale})",
        got[at],
        want[at]
    );
}

/// Central finite differences of a scalar function of `x`, step `h`, all in f64.
pub fn finite_diff(x: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            xp[i] = x[i] + h;
            let up = f(&xp);
            xp[i] = x[i] - h;
            let down = f(&xp);
            xp[i] = x[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// The two implementations of every op: the fast CPU kernels and the device-generic one.
#[derive(Clone, Copy, Debug)]
pub enum Path {
    Fast,
    Composed,
}

pub const PATHS: [Path; 2] = [Path::Fast, Path::Composed];

impl Path {
    pub fn conv(self, x: &Tensor, w: &Tensor, s: usize, p: usize) -> Result<Tensor> {
        match self {
            Path::Fast => mocca_kernels::conv2d_nhwc(x, w, s, p),
            Path::Composed => mocca_kernels::composed::conv2d_nhwc(x, w, s, p),
        }
    }

    pub fn bn_train(
        self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
        groups: usize,
        relu: bool,
    ) -> Result<BatchNormOutput> {
        match self {
            Path::Fast => mocca_kernels::batch_norm_train(x, gamma, beta, eps, groups, relu),
            Path::Composed => {
                mocca_kernels::composed::batch_norm_train(x, gamma, beta, eps, groups, relu)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn bn_eval(
        self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        rm: &Tensor,
        rv: &Tensor,
        eps: f64,
        relu: bool,
    ) -> Result<Tensor> {
        match self {
            Path::Fast => mocca_kernels::batch_norm_eval(x, gamma, beta, rm, rv, eps, relu),
            Path::Composed => {
                mocca_kernels::composed::batch_norm_eval(x, gamma, beta, rm, rv, eps, relu)
            }
        }
    }

    pub fn add_relu(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        match self {
            Path::Fast => mocca_kernels::add_relu(a, b),
            Path::Composed => mocca_kernels::composed::add_relu(a, b),
        }
    }

    pub fn max_pool(self, x: &Tensor, k: usize, s: usize, p: usize) -> Result<Tensor> {
        match self {
            Path::Fast => mocca_kernels::max_pool2d_nhwc(x, k, s, p),
            Path::Composed => mocca_kernels::composed::max_pool2d_nhwc(x, k, s, p),
        }
    }

    pub fn avg_pool(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Path::Fast => mocca_kernels::global_avg_pool_nhwc(x),
            Path::Composed => mocca_kernels::composed::global_avg_pool_nhwc(x),
        }
    }
}

/// Reference NHWC convolution in f64: x `[n, h, w, ci]`, w `[co, ci, kh, kw]`.
pub fn conv_ref(
    x: &[f64],
    xd: [usize; 4],
    w: &[f64],
    wd: [usize; 4],
    s: usize,
    p: usize,
) -> (Vec<f64>, [usize; 4]) {
    let [n, h, wi, ci] = xd;
    let [co, _, kh, kw] = wd;
    let ho = (h + 2 * p - kh) / s + 1;
    let wo = (wi + 2 * p - kw) / s + 1;
    let mut y = vec![0.0; n * ho * wo * co];
    for b in 0..n {
        for oh in 0..ho {
            for ow in 0..wo {
                for o in 0..co {
                    let mut acc = 0.0;
                    for a in 0..kh {
                        for c in 0..kw {
                            let ih = (oh * s + a) as isize - p as isize;
                            let iw = (ow * s + c) as isize - p as isize;
                            if ih < 0 || iw < 0 || ih >= h as isize || iw >= wi as isize {
                                continue;
                            }
                            for i in 0..ci {
                                acc += x[((b * h + ih as usize) * wi + iw as usize) * ci + i]
                                    * w[((o * ci + i) * kh + a) * kw + c];
                            }
                        }
                    }
                    y[((b * ho + oh) * wo + ow) * co + o] = acc;
                }
            }
        }
    }
    (y, [n, ho, wo, co])
}

/// Reference training BatchNorm in f64 (two-pass statistics) on rows of `c` channels, with
/// `groups` contiguous groups of rows. Returns y, mean and biased variance per (group, channel).
pub fn bn_train_ref(
    x: &[f64],
    c: usize,
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
    groups: usize,
    relu: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let rows = x.len() / c;
    let m = rows / groups;
    let mut mean = vec![0.0; groups * c];
    let mut var = vec![0.0; groups * c];
    for g in 0..groups {
        for j in 0..c {
            let vals = (g * m..(g + 1) * m).map(|r| x[r * c + j]);
            let mu = vals.clone().sum::<f64>() / m as f64;
            mean[g * c + j] = mu;
            var[g * c + j] = vals.map(|v| (v - mu) * (v - mu)).sum::<f64>() / m as f64;
        }
    }
    let y = (0..x.len())
        .map(|i| {
            let (r, j) = (i / c, i % c);
            let k = (r / m) * c + j;
            let v = (x[i] - mean[k]) / (var[k] + eps).sqrt() * gamma[j] + beta[j];
            if relu {
                v.max(0.0)
            } else {
                v
            }
        })
        .collect();
    (y, mean, var)
}

/// Reference max-pool in f64 (NHWC, -inf padding); also returns the in-image index of the
/// first maximum of each window.
pub fn max_pool_ref(
    x: &[f64],
    xd: [usize; 4],
    k: usize,
    s: usize,
    p: usize,
) -> (Vec<f64>, Vec<usize>, [usize; 4]) {
    let [n, h, w, c] = xd;
    let ho = (h + 2 * p - k) / s + 1;
    let wo = (w + 2 * p - k) / s + 1;
    let mut y = vec![f64::NEG_INFINITY; n * ho * wo * c];
    let mut arg = vec![usize::MAX; n * ho * wo * c];
    for b in 0..n {
        for oh in 0..ho {
            for ow in 0..wo {
                for j in 0..c {
                    let o = ((b * ho + oh) * wo + ow) * c + j;
                    for a in 0..k {
                        for e in 0..k {
                            let ih = (oh * s + a) as isize - p as isize;
                            let iw = (ow * s + e) as isize - p as isize;
                            if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                                continue;
                            }
                            let i = ((b * h + ih as usize) * w + iw as usize) * c + j;
                            if arg[o] == usize::MAX || x[i] > y[o] {
                                y[o] = x[i];
                                arg[o] = i;
                            }
                        }
                    }
                }
            }
        }
    }
    (y, arg, [n, ho, wo, c])
}
