//! The same ops composed from Candle's own tensor ops, for every device and dtype.
//!
//! [`super`] dispatches here for anything but f32 on the CPU (CUDA f32 and bf16 in particular);
//! these functions are public so that the path can be tested on the CPU and used as a reference.
//! Every convolution here, forward or backward, is a forward `Tensor::conv2d` (on CUDA: cuDNN,
//! or im2col and a cuBLAS GEMM): the input gradient is a convolution of the (zero-inserted,
//! for stride > 1) output gradient with the flipped, transposed kernel, the weight gradient a
//! convolution of the transposed input with the transposed output gradient as kernel (dilated
//! by the stride). Candle's own conv2d backward would instead reach its naive
//! `conv_transpose2d`. Statistics of bf16/f16 inputs are computed in f32.

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp3, DType, Layout, MetalStorage, Result, Shape, Tensor,
};

use crate::batchnorm::bn_geometry;
use crate::check::check_bn_params;
use crate::conv::ConvGeom;
use crate::pool::PoolGeom;
use crate::{BatchNormOutput, OpError};

/// See [`crate::conv2d_nhwc`].
pub fn conv2d_nhwc(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let g = ConvGeom::new(x.dims(), w.dims(), stride, padding)?;
    let y = conv_forward(&x.detach(), &w.detach(), &g)?;
    if !x.track_op() && !w.track_op() {
        return Ok(y);
    }
    x.apply_op3(w, &y, ConvGrad { g })
}

/// Forward convolution in NHWC through Candle's NCHW conv2d.
fn conv_forward(x: &Tensor, w: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    let x = x.permute((0, 3, 1, 2))?.contiguous()?;
    conv2d_nchw(&x, &w.contiguous()?, g.pad_h, g.stride, 1)?
        .permute((0, 2, 3, 1))?
        .contiguous()
}

/// Candle's NCHW `conv2d` for every device and float dtype. Candle's CPU convolution has no
/// 16-bit kernel, so there half-precision operands are widened to f32 and the result rounded
/// back: bf16 operands, f32 accumulation, a bf16 result, which is what cuDNN and cuBLAS compute
/// in bf16 on the GPU. Differentiable (the casts are graph ops).
pub fn conv2d_nchw(
    x: &Tensor,
    w: &Tensor,
    padding: usize,
    stride: usize,
    dilation: usize,
) -> Result<Tensor> {
    let dt = x.dtype();
    if x.device().is_cpu() && matches!(dt, DType::BF16 | DType::F16) {
        x.to_dtype(DType::F32)?
            .conv2d(&w.to_dtype(DType::F32)?, padding, stride, dilation, 1)?
            .to_dtype(dt)
    } else {
        x.conv2d(w, padding, stride, dilation, 1)
    }
}

/// Pads (positive) or crops (negative) `t` along `dim`.
fn pad_or_crop(t: &Tensor, dim: usize, before: isize, after: isize) -> Result<Tensor> {
    let t = if before < 0 || after < 0 {
        let len = t.dim(dim)? as isize;
        let lo = (-before).max(0);
        let hi = (-after).max(0);
        t.narrow(dim, lo as usize, (len - lo - hi) as usize)?
    } else {
        t.clone()
    };
    t.pad_with_zeros(dim, before.max(0) as usize, after.max(0) as usize)
}

/// Inserts `stride - 1` zeros between neighbouring elements along `dim` (of a rank-4 tensor).
fn zero_insert(t: &Tensor, dim: usize, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return Ok(t.clone());
    }
    let len = t.dim(dim)?;
    let t = t.unsqueeze(dim + 1)?;
    let mut zshape = t.dims().to_vec();
    zshape[dim + 1] = stride - 1;
    let zeros = Tensor::zeros(zshape, t.dtype(), t.device())?;
    let mut merged = t.dims().to_vec();
    merged.remove(dim + 1);
    merged[dim] = len * stride;
    Tensor::cat(&[&t, &zeros], dim + 1)?
        .reshape(merged)?
        .narrow(dim, 0, (len - 1) * stride + 1)
}

/// `dx` `[n, h, w, cin]` from `dy` `[n, ho, wo, cout]`: a forward convolution of the
/// zero-inserted, padded `dy` with the flipped, transposed kernel.
fn conv_input_grad(dy: &Tensor, w: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    let s = g.stride;
    let dy = dy.permute((0, 3, 1, 2))?; // [n, cout, ho, wo]
    let dy = zero_insert(&zero_insert(&dy, 2, s)?, 3, s)?;
    // Rows of the padded input the forward pass never reached add to the bottom/right margin.
    let rem_h = (g.h + 2 * g.pad_h - g.kh) % s;
    let rem_w = (g.w + 2 * g.pad_w - g.kw) % s;
    let q_h = g.kh as isize - 1 - g.pad_h as isize;
    let q_w = g.kw as isize - 1 - g.pad_w as isize;
    let dy = pad_or_crop(&dy, 2, q_h, q_h + rem_h as isize)?;
    let dy = pad_or_crop(&dy, 3, q_w, q_w + rem_w as isize)?.contiguous()?;
    let wt = w
        .transpose(0, 1)?
        .contiguous()?
        .flip(&[2, 3])?
        .contiguous()?; // [cin, cout, kh, kw]
    conv2d_nchw(&dy, &wt, 0, 1, 1)?
        .permute((0, 2, 3, 1))?
        .contiguous()
}

/// `dw` `[cout, cin, kh, kw]`: the batch becomes the reduced channel dimension, the output
/// gradient the kernel (dilated by the stride).
fn conv_weight_grad(x: &Tensor, dy: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    let xt = x.permute((3, 0, 1, 2))?.contiguous()?; // [cin, n, h, w]
    let dyt = dy.permute((3, 0, 1, 2))?.contiguous()?; // [cout, n, ho, wo]
    conv2d_nchw(&xt, &dyt, g.pad_h, 1, g.stride)? // [cin, cout, kh + rem_h, kw + rem_w]
        .narrow(2, 0, g.kh)?
        .narrow(3, 0, g.kw)?
        .transpose(0, 1)?
        .contiguous()
}

/// Identity on its third argument (the precomputed convolution), with the convolution's
/// gradient for the first two. Its forward is a storage copy, the same on every backend.
struct ConvGrad {
    g: ConvGeom,
}

fn copy_of<S: BackendStorage>(s: &S, l: &Layout) -> Result<(S, Shape)> {
    if l.start_offset() != 0 || !l.is_contiguous() {
        return Err(OpError::Unsupported {
            op: "conv2d_nhwc",
            msg: "internal: precomputed output must be contiguous".into(),
        }
        .into());
    }
    Ok((s.try_clone(l)?, l.shape().clone()))
}

impl CustomOp3 for ConvGrad {
    fn name(&self) -> &'static str {
        "mocca-conv2d-nhwc-composed"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        copy_of(s3, l3)
    }

    fn cuda_fwd(
        &self,
        _: &CudaStorage,
        _: &Layout,
        _: &CudaStorage,
        _: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        copy_of(s3, l3)
    }

    fn metal_fwd(
        &self,
        _: &MetalStorage,
        _: &Layout,
        _: &MetalStorage,
        _: &Layout,
        s3: &MetalStorage,
        l3: &Layout,
    ) -> Result<(MetalStorage, Shape)> {
        copy_of(s3, l3)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = if x.track_op() {
            Some(conv_input_grad(dy, w, &self.g)?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(conv_weight_grad(x, dy, &self.g)?)
        } else {
            None
        };
        Ok((dx, dw, None))
    }
}

/// `relu` whose gradient is zero where the output is zero, as PyTorch's (Candle's `relu`
/// passes the gradient at exactly 0).
fn relu_exact(t: &Tensor) -> Result<Tensor> {
    t.gt(0f64)?.where_cond(t, &t.zeros_like()?)
}

/// Float type the statistics are computed in.
fn stats_dtype(dt: DType) -> DType {
    match dt {
        DType::F64 => DType::F64,
        _ => DType::F32,
    }
}

/// See [`crate::batch_norm_train`].
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    bn_splits: usize,
    relu: bool,
) -> Result<BatchNormOutput> {
    let (m, c) = bn_geometry(x.dims(), bn_splits)?;
    check_bn_params(c, &[("gamma", gamma), ("beta", beta)])?;
    let dt = stats_dtype(x.dtype());
    let xs = x.to_dtype(dt)?.reshape((bn_splits, m, c))?;
    // Centre on a constant (a sample of each group) first: the sums then carry no large common
    // offset, which would swamp the variance. Any constant gives the same function, so the
    // gradient is unaffected.
    let anchor = xs.narrow(1, 0, 1)?.detach();
    let shifted = xs.broadcast_sub(&anchor)?;
    let shifted_mean = shifted.mean_keepdim(1)?; // [bn_splits, 1, c]
    let centred = shifted.broadcast_sub(&shifted_mean)?;
    let mean = (shifted_mean.detach() + anchor)?;
    let var = centred.sqr()?.mean_keepdim(1)?;
    let xhat = centred.broadcast_mul(&(var.clone() + eps)?.sqrt()?.recip()?)?;
    let y = xhat
        .broadcast_mul(&gamma.to_dtype(dt)?.reshape((1, 1, c))?)?
        .broadcast_add(&beta.to_dtype(dt)?.reshape((1, 1, c))?)?;
    let y = if relu { relu_exact(&y)? } else { y };
    Ok(BatchNormOutput {
        y: y.reshape(x.shape())?.to_dtype(x.dtype())?,
        mean: mean.squeeze(1)?.detach(),
        var: var.squeeze(1)?.detach(),
    })
}

/// See [`crate::batch_norm_eval`].
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
    let c = crate::check::check_bn_eval_input(x)?;
    check_bn_params(
        c,
        &[
            ("gamma", gamma),
            ("beta", beta),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
    )?;
    let dt = stats_dtype(x.dtype());
    let invstd = (running_var.to_dtype(dt)? + eps)?.sqrt()?.recip()?;
    let scale = gamma.to_dtype(dt)?.mul(&invstd)?;
    let shift = beta
        .to_dtype(dt)?
        .sub(&running_mean.to_dtype(dt)?.mul(&scale)?)?;
    let y = x
        .to_dtype(dt)?
        .broadcast_mul(&scale)?
        .broadcast_add(&shift)?;
    let y = if relu { relu_exact(&y)? } else { y };
    y.to_dtype(x.dtype())
}

/// See [`crate::add_relu`].
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    crate::check::check_same_shape("add_relu", a, b)?;
    relu_exact(&a.add(b)?)
}

/// See [`crate::max_pool2d_nhwc`]. Each window position contributes through a mask that is one
/// only for the first maximum of its window, so the gradient goes where PyTorch sends it.
pub fn max_pool2d_nhwc(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let g = PoolGeom::new(x.dims(), kernel, stride, padding)?;
    let xp = if padding > 0 {
        let neg = |dims: Vec<usize>| {
            Tensor::full(f32::NEG_INFINITY, dims, x.device())?.to_dtype(x.dtype())
        };
        let (n, h, w, c) = (g.n, g.h, g.w, g.c);
        let side = neg(vec![n, h, padding, c])?;
        let xw = Tensor::cat(&[&side, x, &side], 2)?;
        let top = neg(vec![n, padding, w + 2 * padding, c])?;
        Tensor::cat(&[&top, &xw, &top], 1)?
    } else {
        x.clone()
    };
    // Window tap (a, b) of every output: rows a, a+s, ..., columns b, b+s, ...
    let tap = |a: usize, b: usize| -> Result<Tensor> {
        let span_h = (g.ho - 1) * stride + 1;
        let span_w = (g.wo - 1) * stride + 1;
        let t = xp.narrow(1, a, span_h)?.narrow(2, b, span_w)?;
        let t = zero_strided(&t, 1, stride)?;
        zero_strided(&t, 2, stride)
    };
    let taps: Vec<Tensor> = (0..kernel)
        .flat_map(|a| (0..kernel).map(move |b| (a, b)))
        .map(|(a, b)| tap(a, b))
        .collect::<Result<_>>()?;
    let detached: Vec<Tensor> = taps.iter().map(|t| t.detach()).collect();
    let mut max = detached[0].clone();
    for t in &detached[1..] {
        // NaN wins, as in PyTorch.
        let take = t.gt(&max)?.maximum(&t.ne(t)?)?;
        max = take.where_cond(t, &max)?;
    }
    let mut taken = max.zeros_like()?.to_dtype(DType::U8)?;
    let mut out = max.zeros_like()?;
    for t in &taps {
        let hit = t.detach().eq(&max)?.maximum(&t.ne(t)?)?;
        let first = hit.gt(&taken)?;
        out = first.where_cond(t, &out)?;
        taken = taken.maximum(&hit)?;
    }
    Ok(out)
}

/// Every `stride`-th element along `dim`, starting with the first.
fn zero_strided(t: &Tensor, dim: usize, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return Ok(t.clone());
    }
    let len = t.dim(dim)?;
    let keep = (len - 1) / stride + 1;
    let t = pad_or_crop(t, dim, 0, (keep * stride - len) as isize)?;
    let mut dims = t.dims().to_vec();
    dims[dim] = keep;
    dims.insert(dim + 1, stride);
    t.reshape(dims)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// See [`crate::global_avg_pool_nhwc`].
pub fn global_avg_pool_nhwc(x: &Tensor) -> Result<Tensor> {
    crate::check::check_rank4("global_avg_pool_nhwc", x)?;
    let dt = stats_dtype(x.dtype());
    x.to_dtype(dt)?.mean((1, 2))?.to_dtype(x.dtype())
}
