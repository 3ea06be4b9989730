//! Training ops for channels-last ("NHWC") CNNs, with forward and backward passes.
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
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use mocca_backbones::ops;
//!
//! let dev = Device::Cpu;
//! let x = Var::randn(0f32, 1., (2, 8, 8, 3), &dev)?; // NHWC
//! let w = Var::randn(0f32, 0.1, (4, 3, 3, 3), &dev)?; // [C_out, C_in, kh, kw]
//! let y = ops::conv2d_nhwc(&x, &w, 2, 1)?;
//! assert_eq!(y.dims(), &[2, 4, 4, 4]);
//! let gamma = Tensor::ones(4, candle_core::DType::F32, &dev)?;
//! let beta = Tensor::zeros(4, candle_core::DType::F32, &dev)?;
//! let bn = ops::batch_norm_train(&y, &gamma, &beta, 1e-5, 1, true)?;
//! let pooled = ops::global_avg_pool_nhwc(&bn.y)?; // [2, 4]
//! let grads = pooled.sum_all()?.backward()?;
//! assert_eq!(grads.get(&w).unwrap().dims(), &[4, 3, 3, 3]);
//! # Ok::<(), candle_core::Error>(())
//! ```

mod batchnorm;
pub mod composed;
mod conv;
mod cpu;
mod direct;
mod fused;
mod gemm;
mod pool;

use std::sync::{Arc, OnceLock};

use candle_core::{DType, Result, Tensor};

/// Why an op rejected its arguments.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// An operand of the wrong rank or size.
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },
    /// A stride, padding, group count, ... that the op cannot use.
    #[error("{op}: {msg}")]
    Argument { op: &'static str, msg: String },
    /// Operands the op's kernel cannot take (dtype, device, layout).
    #[error("{op}: {msg}")]
    Unsupported { op: &'static str, msg: String },
}

impl From<OpError> for candle_core::Error {
    fn from(e: OpError) -> Self {
        candle_core::Error::wrap(e)
    }
}

/// Whether the fast CPU kernels take these operands (all f32 on the CPU).
fn fast_path(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

fn check_same_device(op: &'static str, ts: &[(&str, &Tensor)]) -> Result<()> {
    let (name0, t0) = ts[0];
    for (name, t) in &ts[1..] {
        if !t.device().same_device(t0.device()) {
            return Err(OpError::Unsupported {
                op,
                msg: format!(
                    "{name} is on {:?} but {name0} is on {:?}",
                    t.device().location(),
                    t0.device().location()
                ),
            }
            .into());
        }
    }
    Ok(())
}

fn check_same_dtype(op: &'static str, ts: &[(&str, &Tensor)]) -> Result<()> {
    let (name0, t0) = ts[0];
    for (name, t) in &ts[1..] {
        if t.dtype() != t0.dtype() {
            return Err(OpError::Unsupported {
                op,
                msg: format!("{name} is {:?} but {name0} is {:?}", t.dtype(), t0.dtype()),
            }
            .into());
        }
    }
    Ok(())
}

fn check_same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(OpError::Shape {
            op,
            msg: format!("operands differ in shape: {:?} vs {:?}", a.dims(), b.dims()),
        }
        .into());
    }
    check_same_device(op, &[("a", a), ("b", b)])?;
    check_same_dtype(op, &[("a", a), ("b", b)])
}

fn check_rank4(op: &'static str, x: &Tensor) -> Result<()> {
    if x.rank() != 4 || x.elem_count() == 0 {
        return Err(OpError::Shape {
            op,
            msg: format!(
                "x must be a non-empty [N, H, W, C] (NHWC), got shape {:?}",
                x.dims()
            ),
        }
        .into());
    }
    Ok(())
}

/// Per-channel parameters must be `[C]` vectors.
fn check_bn_params(c: usize, params: &[(&str, &Tensor)]) -> Result<()> {
    for (name, t) in params {
        if t.dims() != [c] {
            return Err(OpError::Shape {
                op: "batch_norm",
                msg: format!("{name} must have shape [{c}], got {:?}", t.dims()),
            }
            .into());
        }
    }
    Ok(())
}

/// Channel count of an eval-mode BatchNorm input `[N, C]` or `[N, H, W, C]`.
fn check_bn_eval_input(x: &Tensor) -> Result<usize> {
    match x.dims() {
        [_, c] | [_, _, _, c] if x.elem_count() > 0 => Ok(*c),
        dims => Err(OpError::Shape {
            op: "batch_norm",
            msg: format!("x must be a non-empty [N, C] or [N, H, W, C] (NHWC), got {dims:?}"),
        }
        .into()),
    }
}

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
    /// Batch mean per group and channel, `[groups, C]` (f32, or f64 for f64 inputs); detached.
    pub mean: Tensor,
    /// Biased batch variance per group and channel, `[groups, C]`, as used to normalise; detached.
    /// PyTorch updates its running variance with the unbiased one: `var · m / (m - 1)`, `m` the
    /// number of values per channel in a group.
    pub var: Tensor,
}

/// Training-mode BatchNorm (Ioffe & Szegedy, 2015) over the `(N, H, W)` values of each channel
/// of `x` `[N, H, W, C]` (or `[N, C]`), `y = γ·(x − μ)/√(σ² + eps) + β`, then ReLU if `relu`.
///
/// `groups` > 1 splits the batch into that many contiguous groups of `N / groups` samples with
/// statistics of their own: split BatchNorm, the single-device stand-in for the shuffled
/// BatchNorm of MoCo (He et al., 2020). Differentiable w.r.t. `x`, `gamma` and `beta` (`[C]`).
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    groups: usize,
    relu: bool,
) -> Result<BatchNormOutput> {
    check_same_device("batch_norm", &[("x", x), ("gamma", gamma), ("beta", beta)])?;
    let (_, c) = batchnorm::bn_geometry(x.dims(), groups)?;
    check_bn_params(c, &[("gamma", gamma), ("beta", beta)])?;
    if !fast_path(&[x, gamma, beta]) {
        return composed::batch_norm_train(x, gamma, beta, eps, groups, relu);
    }
    let saved = Arc::new(OnceLock::new());
    let op = batchnorm::BatchNormTrain {
        eps,
        groups,
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
        mean: Tensor::from_slice(&stats.mean, (groups, c), x.device())?,
        var: Tensor::from_slice(&stats.var, (groups, c), x.device())?,
        y,
    })
}

/// One convolution + BatchNorm layer of a [`ResidualUnit`].
#[derive(Debug, Clone, Copy)]
pub struct ConvBn<'a> {
    /// `[C_out, C_in, kh, kw]`.
    pub weight: &'a Tensor,
    pub stride: usize,
    pub padding: usize,
    /// BatchNorm scale and shift, `[C_out]` each.
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
}

/// The shortcut of a [`ResidualUnit`].
#[derive(Debug, Clone, Copy)]
pub enum Shortcut<'a> {
    /// No residual add; the last layer's BatchNorm is followed by a ReLU (a ResNet stem).
    None,
    /// No residual add and no ReLU after the last BatchNorm (the stem of lightly's CIFAR-10
    /// benchmark backbone, see `ResNetConfig::stem_relu`).
    NoneWithoutRelu,
    /// `relu(main(x) + x)`.
    Identity,
    /// `relu(main(x) + bn(conv(x)))`, torchvision's `downsample`.
    Projection(ConvBn<'a>),
}

/// One residual unit of [`residual_units_train`]: conv → BatchNorm layers and a shortcut.
#[derive(Debug, Clone, Copy)]
pub struct ResidualUnit<'a> {
    /// The main path, with a ReLU after every BatchNorm but the last.
    pub main: &'a [ConvBn<'a>],
    pub shortcut: Shortcut<'a>,
}

/// What [`residual_units_train`] returns.
#[derive(Debug, Clone)]
pub struct ResidualUnitsOutput {
    /// The last unit's output, `[N, H_out, W_out, C_out]`.
    pub y: Tensor,
    /// Per unit, per BatchNorm (main layers in order, then the projection's): batch mean and
    /// biased variance, `[groups, C]`, as [`BatchNormOutput`] gives them; detached.
    pub stats: Vec<Vec<(Tensor, Tensor)>>,
}

/// A chain of ResNet residual units in training mode (He et al., 2016), each feeding the next.
/// A unit's `main` layers are conv → BatchNorm with a ReLU after every BatchNorm but the last,
/// then `relu(main(x) + shortcut(x))`; with [`Shortcut::None`] the last BatchNorm is ReLU'd too
/// and nothing is added (a stem). `groups` > 1 is split BatchNorm, as in [`batch_norm_train`].
///
/// Equal to chaining [`conv2d_nhwc`], [`batch_norm_train`] and [`add_relu`], and computed that
/// way off the fast path. On the CPU in f32 the whole chain is one op whose backward pass runs
/// every layer's kernels itself: Candle's backward pass accumulates each tensor's gradient into
/// a fresh zero tensor (four memory passes per activation), and a chain of single-layer ops
/// would hand it six activations per block.
pub fn residual_units_train(
    x: &Tensor,
    units: &[ResidualUnit],
    eps: f64,
    groups: usize,
) -> Result<ResidualUnitsOutput> {
    const OP: &str = "residual_units";
    if units.is_empty() || units.iter().any(|u| u.main.is_empty()) {
        return Err(OpError::Argument {
            op: OP,
            msg: "every residual unit needs at least one convolution".into(),
        }
        .into());
    }
    let mut operands = vec![("x", x)];
    let all_layers: Vec<Vec<ConvBn>> = units.iter().map(unit_layers).collect();
    for l in all_layers.iter().flatten() {
        operands.extend([("weight", l.weight), ("gamma", l.gamma), ("beta", l.beta)]);
        check_bn_params(l.weight.dim(0)?, &[("gamma", l.gamma), ("beta", l.beta)])?;
    }
    check_same_device(OP, &operands)?;
    let all: Vec<&Tensor> = operands.iter().map(|(_, t)| *t).collect();
    if !fast_path(&all) {
        return residual_units_unfused(x, units, eps, groups);
    }
    let mut plans = Vec::with_capacity(units.len());
    let mut parts = Vec::new();
    let mut offset = 0;
    let mut dims = x.dims().to_vec();
    for (u, layers) in units.iter().zip(&all_layers) {
        let kind = match u.shortcut {
            Shortcut::None => fused::ShortcutKind::None,
            Shortcut::NoneWithoutRelu => fused::ShortcutKind::Linear,
            Shortcut::Identity => fused::ShortcutKind::Identity,
            Shortcut::Projection(_) => fused::ShortcutKind::Projection,
        };
        let mut specs = Vec::with_capacity(layers.len());
        for l in layers {
            let wd: [usize; 4] = l.weight.dims().try_into().map_err(|_| OpError::Shape {
                op: OP,
                msg: format!(
                    "weight must be [C_out, C_in, kh, kw], got {:?}",
                    l.weight.dims()
                ),
            })?;
            specs.push((wd, l.stride, l.padding));
            parts.extend([l.weight.flatten_all()?, l.gamma.clone(), l.beta.clone()]);
        }
        let plan = fused::plan(&dims, &specs, kind, groups, &mut offset)?;
        dims = plan.out_dims().to_vec();
        plans.push(plan);
    }
    let packed = Tensor::cat(&parts, 0)?;
    let op = fused::ResidualChain::new(plans, eps, groups);
    let stats = op.stats.clone();
    let y = x.contiguous()?.apply_op2(&packed, op)?;
    let stats = stats.get().ok_or_else(|| OpError::Unsupported {
        op: OP,
        msg: "internal: the forward pass left no statistics".into(),
    })?;
    let stats = stats
        .iter()
        .map(|unit| {
            unit.iter()
                .map(|(mean, var)| {
                    let c = mean.len() / groups;
                    Ok((
                        Tensor::from_slice(mean, (groups, c), x.device())?,
                        Tensor::from_slice(var, (groups, c), x.device())?,
                    ))
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ResidualUnitsOutput { y, stats })
}

/// A unit's layers: the main path, then the projection.
fn unit_layers<'a>(u: &ResidualUnit<'a>) -> Vec<ConvBn<'a>> {
    let mut v = u.main.to_vec();
    if let Shortcut::Projection(p) = u.shortcut {
        v.push(p);
    }
    v
}

/// [`residual_units_train`] as a chain of single-layer ops.
fn residual_units_unfused(
    x: &Tensor,
    units: &[ResidualUnit],
    eps: f64,
    groups: usize,
) -> Result<ResidualUnitsOutput> {
    let mut all_stats = Vec::with_capacity(units.len());
    let mut h = x.clone();
    for u in units {
        let mut stats = Vec::with_capacity(u.main.len() + 1);
        let mut conv_bn = |h: &Tensor, l: &ConvBn, relu: bool| -> Result<Tensor> {
            let c = conv2d_nhwc(h, l.weight, l.stride, l.padding)?;
            let out = batch_norm_train(&c, l.gamma, l.beta, eps, groups, relu)?;
            stats.push((out.mean, out.var));
            Ok(out.y)
        };
        let input = h.clone();
        for (i, l) in u.main.iter().enumerate() {
            let relu = i + 1 < u.main.len() || matches!(u.shortcut, Shortcut::None);
            h = conv_bn(&h, l, relu)?;
        }
        h = match u.shortcut {
            Shortcut::None | Shortcut::NoneWithoutRelu => h,
            Shortcut::Identity => add_relu(&h, &input)?,
            Shortcut::Projection(p) => add_relu(&h, &conv_bn(&input, &p, false)?)?,
        };
        all_stats.push(stats);
    }
    Ok(ResidualUnitsOutput {
        y: h,
        stats: all_stats,
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
