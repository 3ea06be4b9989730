//! # mocca-kernels
//!
//! CPU training kernels for channels-last ("NHWC") CNNs, with forward and backward passes:
//! convolution, BatchNorm, pooling and the fused residual units of a ResNet, each behind a
//! Candle custom op (with the same functions composed from Candle tensor ops, [`composed`], for
//! every other device and dtype). This is the crate's one job; it knows nothing of models and
//! depends on no other mocca crate. `mocca-backbones` runs its ResNets' fast backend on it,
//! `mocca-losses`' fused losses use its GEMM ([`gemm::sgemm_scaled`]) and f32 operand access
//! ([`cpu::f32_operand`]), and `mocca-xtask`'s `gpu-selftest` checks the composed path on a GPU
//! against it.
//!
//! ```
//! use candle_core::{Device, Tensor};
//!
//! let dev = Device::Cpu;
//! // x: NHWC [1, 4, 5, 2]; w: torchvision's [C_out, C_in, kh, kw].
//! let x = (Tensor::arange(0f32, 40., &dev)?.reshape((1, 4, 5, 2))? * 0.1)?;
//! let w = (Tensor::arange(0f32, 54., &dev)?.reshape((3, 2, 3, 3))? * 0.01)?;
//! let y = mocca_kernels::conv2d_nhwc(&x, &w, 1, 1)?; // stride 1, padding 1
//! assert_eq!(y.dims(), &[1, 4, 5, 3]);
//!
//! // The same convolution by Candle's own NCHW conv2d.
//! let reference = x
//!     .permute((0, 3, 1, 2))?
//!     .contiguous()?
//!     .conv2d(&w, 1, 1, 1, 1)?
//!     .permute((0, 2, 3, 1))?;
//! let max_diff = (&y - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
//! assert!(max_diff < 1e-4, "max |diff| = {max_diff}");
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! ## The ops
//!
//! Candle's CPU convolution computes its input gradient with a naive transposed convolution
//! (several times slower than its forward pass), its conv backward fails on some non-square
//! inputs, and its max-pool backward refuses overlapping windows and otherwise scales the
//! gradient by 1/kernel². These ops are Candle custom
//! ops ([`candle_core::CustomOp2`], ...) whose f32 CPU kernels run near the machine's
//! matrix-multiply rate (convolutions) or in one or two memory passes (BatchNorm, pooling, the
//! residual add + ReLU):
//!
//! * [`conv2d_nhwc`]: forward, input gradient and weight gradient, each by the faster of two
//!   kernels for its shape: direct AVX2 + FMA register tiles that read a zero-padded copy of the
//!   input in place (narrow layers; strided input gradients by sub-pixel decomposition), or
//!   GEMMs on im2col tiles that fit the L2 cache (512-channel layers, wide weight gradients;
//!   a 1x1 stride-1 convolution needs no im2col at all);
//! * [`batch_norm_train`] / [`batch_norm_eval`]: fused BatchNorm (+ ReLU), with split-BN groups;
//! * [`add_relu`]: the residual `relu(a + b)`;
//! * [`residual_units_train`]: a chain of ResNet blocks (and the stem) in training mode as one
//!   op, so Candle's backward pass handles no intermediate activation at all;
//! * [`max_pool2d_nhwc`]: with PyTorch's backward (the first maximum of each window);
//! * [`global_avg_pool_nhwc`].
//!
//! Layout: activations are `[N, H, W, C]`, contiguous channels last; convolution weights stay in
//! torchvision's `[C_out, C_in, kh, kw]` (the op repacks them; their gradients come back in that
//! layout), so state dicts are torchvision's.
//!
//! Other devices and dtypes (CUDA f32 and bf16, CPU f64, ...) take [`composed`]: the same
//! functions written with Candle tensor ops, where every convolution (forward, input and weight
//! gradient) is a forward `conv2d`, i.e. cuDNN or cuBLAS on CUDA.
//!
//! Source layout: the public functions here and in `residual.rs`, with their operand checks
//! (`check.rs`, [`OpError`]); one file per CPU kernel family (`batchnorm.rs`, `pool.rs`,
//! `fused.rs` for the residual units) and a `conv/` folder (geometry, weight packing, im2col,
//! kernel choice, the direct AVX2 kernels, the GEMM drivers, the custom ops); `composed.rs`;
//! `cpu.rs` and `gemm.rs` for the plumbing they share (public: mocca-losses shares it too).
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use mocca_kernels::{batch_norm_train, conv2d_nhwc, global_avg_pool_nhwc};
//!
//! let dev = Device::Cpu;
//! let x = Var::randn(0f32, 1., (2, 8, 8, 3), &dev)?; // NHWC
//! let w = Var::randn(0f32, 0.1, (4, 3, 3, 3), &dev)?; // [C_out, C_in, kh, kw]
//! let y = conv2d_nhwc(&x, &w, 2, 1)?;
//! assert_eq!(y.dims(), &[2, 4, 4, 4]);
//! let gamma = Tensor::ones(4, candle_core::DType::F32, &dev)?;
//! let beta = Tensor::zeros(4, candle_core::DType::F32, &dev)?;
//! let bn = batch_norm_train(&y, &gamma, &beta, 1e-5, 1, true)?;
//! let pooled = global_avg_pool_nhwc(&bn.y)?; // [2, 4]
//! let grads = pooled.sum_all()?.backward()?;
//! assert_eq!(grads.get(&w).unwrap().dims(), &[4, 3, 3, 3]);
//! # Ok::<(), candle_core::Error>(())
//! ```

mod batchnorm;
mod check;
pub mod composed;
mod conv;
pub mod cpu;
mod error;
mod fused;
pub mod gemm;
mod pool;
mod residual;

use std::sync::{Arc, OnceLock};

use candle_core::{Result, Tensor};

use check::{
    check_bn_eval_input, check_bn_params, check_rank4, check_same_device, check_same_dtype,
    check_same_shape, fast_path,
};
pub use error::OpError;
pub use residual::{residual_units_train, ConvBn, ResidualUnit, ResidualUnitsOutput, Shortcut};

/// 2-D convolution of channels-last `x` `[N, H, W, C_in]` with `w` `[C_out, C_in, kh, kw]`
/// (torchvision's layout), returning `[N, H_out, W_out, C_out]`; square `stride` and
/// `padding`, no dilation, one group, no bias. Differentiable w.r.t. `x` and `w`; a gradient
/// is only computed for operands that need one (no input gradient for the stem's images).
pub fn conv2d_nhwc(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    check_same_device("conv2d_nhwc", &[("x", x), ("weight", w)])?;
    check_same_dtype("conv2d_nhwc", &[("x", x), ("weight", w)])?;
    conv::ConvGeom::new(x.dims(), w.dims(), stride, padding)?;
    if !fast_path(&[x, w]) {
        return composed::conv2d_nhwc(x, w, stride, padding);
    }
    x.contiguous()?
        .apply_op2(&w.contiguous()?, conv::Conv2dNhwc { stride, padding })
}

/// What [`batch_norm_train`] returns.
#[derive(Debug, Clone)]
pub struct BatchNormOutput {
    /// The normalised (optionally ReLU'd) activations, shaped like the input.
    pub y: Tensor,
    /// Batch mean per group and channel, `[bn_splits, C]` (f32, or f64 for f64 inputs); detached.
    pub mean: Tensor,
    /// Biased batch variance per group and channel, `[bn_splits, C]`, as used to normalise; detached.
    /// PyTorch updates its running variance with the unbiased one: `var · m / (m - 1)`, `m` the
    /// number of values per channel in a group.
    pub var: Tensor,
}

/// Training-mode BatchNorm (Ioffe & Szegedy, 2015) over the `(N, H, W)` values of each channel
/// of `x` `[N, H, W, C]` (or `[N, C]`), `y = γ·(x − μ)/√(σ² + eps) + β`, then ReLU if `relu`.
///
/// `bn_splits` > 1 splits the batch into that many contiguous groups of `N / bn_splits` samples with
/// statistics of their own: split BatchNorm, the single-device stand-in for the shuffled
/// BatchNorm of MoCo (He et al., 2020). Differentiable w.r.t. `x`, `gamma` and `beta` (`[C]`).
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    bn_splits: usize,
    relu: bool,
) -> Result<BatchNormOutput> {
    check_same_device("batch_norm", &[("x", x), ("gamma", gamma), ("beta", beta)])?;
    let (_, c) = batchnorm::bn_geometry(x.dims(), bn_splits)?;
    check_bn_params(c, &[("gamma", gamma), ("beta", beta)])?;
    if !fast_path(&[x, gamma, beta]) {
        return composed::batch_norm_train(x, gamma, beta, eps, bn_splits, relu);
    }
    let saved = Arc::new(OnceLock::new());
    let op = batchnorm::BatchNormTrain {
        eps,
        bn_splits,
        relu,
        saved: saved.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    let stats = saved.get().ok_or_else(|| OpError::Unsupported {
        op: "batch_norm",
        msg: "internal: the forward pass left no statistics".into(),
    })?;
    Ok(BatchNormOutput {
        mean: Tensor::from_slice(&stats.mean, (bn_splits, c), x.device())?,
        var: Tensor::from_slice(&stats.var, (bn_splits, c), x.device())?,
        y,
    })
}

/// Eval-mode BatchNorm with running statistics: `y = γ·(x − running_mean)/√(running_var + eps)
/// + β` per channel of `x` `[N, H, W, C]` (or `[N, C]`), then ReLU if `relu`. Differentiable
/// w.r.t. `x`, `gamma` and `beta`; the running statistics are constants.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let args = [
        ("x", x),
        ("gamma", gamma),
        ("beta", beta),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ];
    check_same_device("batch_norm", &args)?;
    let c = check_bn_eval_input(x)?;
    check_bn_params(c, &args[1..])?;
    if !fast_path(&[x, gamma, beta, running_mean, running_var]) {
        return composed::batch_norm_eval(x, gamma, beta, running_mean, running_var, eps, relu);
    }
    let mean = running_mean.to_vec1::<f32>()?;
    let invstd = running_var
        .to_vec1::<f32>()?
        .iter()
        .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
        .collect();
    let op = batchnorm::BatchNormEval { mean, invstd, relu };
    x.contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)
}

/// `relu(a + b)` in one pass (the end of a residual block); differentiable w.r.t. both, with
/// PyTorch's convention of a zero gradient where the sum is exactly zero.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check_same_shape("add_relu", a, b)?;
    if !fast_path(&[a, b]) {
        return composed::add_relu(a, b);
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, pool::AddRelu)
}

/// Max-pooling of `x` `[N, H, W, C]` over `kernel`x`kernel` windows with the given stride and
/// implicit `-inf` padding (at most `kernel / 2`), as PyTorch's `max_pool2d` with
/// `ceil_mode = false`. The backward pass sends each output's gradient to the first maximum of
/// its window in row-major window order (PyTorch's rule), also when windows overlap
/// (`kernel > stride`, as in the ImageNet stem). Candle's own max-pool backward cannot serve
/// here: it refuses `kernel != stride` and returns `dy / kernel²` at each maximum.
pub fn max_pool2d_nhwc(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let g = pool::PoolGeom::new(x.dims(), kernel, stride, padding)?;
    if !fast_path(&[x]) {
        return composed::max_pool2d_nhwc(x, kernel, stride, padding);
    }
    x.contiguous()?.apply_op1(pool::MaxPool2dNhwc {
        g,
        argmax: OnceLock::new(),
    })
}

/// Mean over `H` and `W`: `[N, H, W, C]` → `[N, C]`.
pub fn global_avg_pool_nhwc(x: &Tensor) -> Result<Tensor> {
    check_rank4("global_avg_pool_nhwc", x)?;
    if !fast_path(&[x]) {
        return composed::global_avg_pool_nhwc(x);
    }
    x.contiguous()?.apply_op1(pool::GlobalAvgPoolNhwc)
}
