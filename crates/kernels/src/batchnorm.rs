//! Fused BatchNorm on the CPU for channels-last data: rows of `C` contiguous channels.
//!
//! Training forward: one pass for the statistics (shifted sums), one pass writing
//! `y = x·scale + shift` (ReLU fused). Backward: one pass for `Σ dy` and `Σ dy·x̂` per channel,
//! one pass writing `dx`. Statistics are per group of contiguous rows (split BatchNorm).
//!
//! Every per-channel sum accumulates in f64, as PyTorch's CPU BatchNorm does (its accumulation
//! type for float is double). f32 running sums, even over chunks of 256 rows, are not enough:
//! the variance is `E[(x − x₀)²] − (E[x − x₀])²` with `x₀` the group's first row, which cancels
//! when `x₀` lies far from the mean (one sample of a batch whose samples differ by a colour
//! offset, as images do) and so multiplies the sum's rounding error by `(μ − x₀)²/σ²`; an error
//! of ~1e-5 in the variance of every BatchNorm took small ResNets past the golden trajectories'
//! tolerance within four steps (tests/golden/methods/README.md, "Accuracy"), and the backward
//! sums `Σ dy`, `Σ dy·x̂` missed `dβ`, `dγ` by several f32 ulps.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{f32_operand, output_buffer, with_f32};
use crate::OpError;

const NAME: &str = "batch_norm";

/// Floats per task in the streaming passes (rows × channels).
const TASK_FLOATS: usize = 16 * 1024;

/// Rows of `c` channels per task (at most 256).
fn task_rows(c: usize) -> usize {
    (TASK_FLOATS / c.max(1)).clamp(1, 256)
}

/// `(group, first row, end row)` tasks that never straddle a group.
fn tasks(groups: usize, m: usize, c: usize) -> Vec<(usize, usize, usize)> {
    let step = task_rows(c);
    let mut out = Vec::with_capacity(groups * m.div_ceil(step));
    for g in 0..groups {
        let mut r = 0;
        while r < m {
            let end = (r + step).min(m);
            out.push((g, g * m + r, g * m + end));
            r = end;
        }
    }
    out
}

/// `dy` where `y > 0` (or `y` is NaN, as PyTorch's ReLU backward), else 0, without a branch:
/// post-ReLU signs are random, and a mispredicted branch per element costs more than the pass.
#[inline(always)]
fn relu_grad<const RELU: bool>(y: f32, dy: f32) -> f32 {
    if RELU {
        let keep = if y <= 0.0 { 0u32 } else { u32::MAX };
        f32::from_bits(dy.to_bits() & keep)
    } else {
        dy
    }
}

// Row kernels: every slice is cut to the row length first, so the loops have no bounds checks
// and vectorise.

#[inline(always)]
fn stats_row(x: &[f32], shift: &[f32], s1: &mut [f64], s2: &mut [f64]) {
    let n = s1.len();
    let (x, shift, s2) = (&x[..n], &shift[..n], &mut s2[..n]);
    for j in 0..n {
        let d = x[j] as f64 - shift[j] as f64; // exact
        s1[j] += d;
        s2[j] += d * d;
    }
}

#[inline(always)]
fn affine_row<const RELU: bool>(
    x: &[f32],
    an: &[f32],
    de: &[f32],
    sc: &[f32],
    be: &[f32],
    y: &mut [f32],
) {
    let n = y.len();
    let (x, an, de, sc, be) = (&x[..n], &an[..n], &de[..n], &sc[..n], &be[..n]);
    for j in 0..n {
        let v = ((x[j] - an[j]) - de[j]) * sc[j] + be[j];
        y[j] = if RELU && v <= 0.0 { 0.0 } else { v };
    }
}

#[inline(always)]
fn grad_sums_row<const RELU: bool>(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    centre: (&[f32], &[f32]),
    s_dy: &mut [f64],
    s_dyx: &mut [f64],
) {
    let n = s_dy.len();
    let (x, y, dy, s_dyx) = (&x[..n], &y[..n], &dy[..n], &mut s_dyx[..n]);
    let (an, de) = (&centre.0[..n], &centre.1[..n]);
    for j in 0..n {
        let d = relu_grad::<RELU>(y[j], dy[j]);
        s_dy[j] += d as f64;
        s_dyx[j] += d as f64 * ((x[j] - an[j]) - de[j]) as f64;
    }
}

#[inline(always)]
fn input_grad_row<const RELU: bool>(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    centre: (&[f32], &[f32]),
    coef: (&[f32], &[f32], &[f32]),
    dx: &mut [f32],
) {
    let n = dx.len();
    let (x, y, dy) = (&x[..n], &y[..n], &dy[..n]);
    let (an, de) = (&centre.0[..n], &centre.1[..n]);
    let (a, b, k) = (&coef.0[..n], &coef.1[..n], &coef.2[..n]);
    for j in 0..n {
        let d = relu_grad::<RELU>(y[j], dy[j]);
        dx[j] = a[j] * d + b[j] * ((x[j] - an[j]) - de[j]) + k[j];
    }
}

/// Statistics of one forward pass, kept for the backward pass: per `(group, channel)`.
///
/// The mean is kept as `anchor + delta`, `anchor` being an element of the group (exact in f32)
/// and `delta` small: `(x - anchor) - delta` is then accurate even when |mean| >> std, where
/// `x - f32(mean)` would carry the mean's rounding error into every output.
pub(crate) struct Saved {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub invstd: Vec<f32>,
    pub anchor: Vec<f32>,
    pub delta: Vec<f32>,
}

/// Per-(group, channel) batch mean and biased variance of `x` `[groups·m, c]`.
fn batch_stats(x: &[f32], c: usize, groups: usize, m: usize) -> (Vec<f64>, Vec<f64>) {
    // Sums of x - shift, with the group's first row as the shift, so the variance does not come
    // from subtracting two large sums when |mean| >> std; f64 throughout (see the module docs).
    let partials: Vec<(usize, Vec<f64>, Vec<f64>)> = tasks(groups, m, c)
        .into_par_iter()
        .map(|(g, r0, r1)| {
            let shift = &x[g * m * c..(g * m + 1) * c];
            let mut s1 = vec![0.0f64; c];
            let mut s2 = vec![0.0f64; c];
            for row in x[r0 * c..r1 * c].chunks_exact(c) {
                stats_row(row, shift, &mut s1, &mut s2);
            }
            (g, s1, s2)
        })
        .collect();
    let mut s1 = vec![0.0f64; groups * c];
    let mut s2 = vec![0.0f64; groups * c];
    for (g, p1, p2) in partials {
        for j in 0..c {
            s1[g * c + j] += p1[j];
            s2[g * c + j] += p2[j];
        }
    }
    let mut mean = vec![0.0f64; groups * c];
    let mut var = vec![0.0f64; groups * c];
    for g in 0..groups {
        for j in 0..c {
            let i = g * c + j;
            let d = s1[i] / m as f64;
            mean[i] = x[g * m * c + j] as f64 + d;
            var[i] = (s2[i] / m as f64 - d * d).max(0.0);
        }
    }
    (mean, var)
}

/// Per-(group, channel) centring `x - mean = (x - anchor) - delta` (see [`Saved`]).
#[derive(Clone, Copy)]
struct Centre<'a> {
    anchor: &'a [f32],
    delta: &'a [f32],
}

/// `y = ((x - anchor) - delta)·scale + beta` per (group, channel), optionally ReLU'd; rows
/// grouped by `m`.
#[allow(clippy::too_many_arguments)]
fn affine(
    x: &[f32],
    centre: Centre,
    scale: &[f32],
    beta: &[f32],
    c: usize,
    m: usize,
    relu: bool,
) -> Vec<f32> {
    let mut y = output_buffer(x.len());
    let step = task_rows(c) * c;
    y.par_chunks_mut(step)
        .zip(x.par_chunks(step))
        .enumerate()
        .for_each(|(t, (yc, xc))| {
            let r0 = t * step / c;
            for (i, (yr, xr)) in yc.chunks_exact_mut(c).zip(xc.chunks_exact(c)).enumerate() {
                let o = (r0 + i) / m * c;
                let (an, de) = (&centre.anchor[o..o + c], &centre.delta[o..o + c]);
                let sc = &scale[o..o + c];
                if relu {
                    affine_row::<true>(xr, an, de, sc, beta, yr);
                } else {
                    affine_row::<false>(xr, an, de, sc, beta, yr);
                }
            }
        });
    y
}

/// Per-(group, channel) `Σ dy'` and `Σ dy'·(x - mean)` with `dy' = dy` masked by `y > 0` under
/// a fused ReLU.
#[allow(clippy::too_many_arguments)]
fn grad_sums(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    centre: Centre,
    c: usize,
    groups: usize,
    m: usize,
    relu: bool,
) -> (Vec<f64>, Vec<f64>) {
    let partials: Vec<(usize, Vec<f64>, Vec<f64>)> = tasks(groups, m, c)
        .into_par_iter()
        .map(|(g, r0, r1)| {
            let (an, de) = (
                &centre.anchor[g * c..(g + 1) * c],
                &centre.delta[g * c..(g + 1) * c],
            );
            let mut s_dy = vec![0.0f64; c];
            let mut s_dyx = vec![0.0f64; c];
            let rows = r0 * c..r1 * c;
            for ((xr, yr), dr) in x[rows.clone()]
                .chunks_exact(c)
                .zip(y[rows.clone()].chunks_exact(c))
                .zip(dy[rows].chunks_exact(c))
            {
                if relu {
                    grad_sums_row::<true>(xr, yr, dr, (an, de), &mut s_dy, &mut s_dyx);
                } else {
                    grad_sums_row::<false>(xr, yr, dr, (an, de), &mut s_dy, &mut s_dyx);
                }
            }
            (g, s_dy, s_dyx)
        })
        .collect();
    let mut s_dy = vec![0.0f64; groups * c];
    let mut s_dyx = vec![0.0f64; groups * c];
    for (g, p1, p2) in partials {
        for j in 0..c {
            s_dy[g * c + j] += p1[j];
            s_dyx[g * c + j] += p2[j];
        }
    }
    (s_dy, s_dyx)
}

/// `dx = a·dy' + b·(x - mean) + k` per (group, channel).
#[allow(clippy::too_many_arguments)]
fn input_grad(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    centre: Centre,
    a: &[f32],
    b: &[f32],
    k: &[f32],
    c: usize,
    m: usize,
    relu: bool,
) -> Vec<f32> {
    let mut dx = output_buffer(x.len());
    let step = task_rows(c) * c;
    dx.par_chunks_mut(step).enumerate().for_each(|(t, dxc)| {
        let r0 = t * step / c;
        let span = t * step..t * step + dxc.len();
        let rows = dxc
            .chunks_exact_mut(c)
            .zip(x[span.clone()].chunks_exact(c))
            .zip(y[span.clone()].chunks_exact(c))
            .zip(dy[span].chunks_exact(c));
        for (i, (((dxr, xr), yr), dr)) in rows.enumerate() {
            let g = (r0 + i) / m;
            let o = g * c;
            let (an, de, a, b, k) = (
                &centre.anchor[o..o + c],
                &centre.delta[o..o + c],
                &a[o..o + c],
                &b[o..o + c],
                &k[o..o + c],
            );
            if relu {
                input_grad_row::<true>(xr, yr, dr, (an, de), (a, b, k), dxr);
            } else {
                input_grad_row::<false>(xr, yr, dr, (an, de), (a, b, k), dxr);
            }
        }
    });
    dx
}

/// Rows per group and channel count of a BatchNorm input `[N, C]` or `[N, H, W, C]`.
pub(crate) fn bn_geometry(
    dims: &[usize],
    groups: usize,
) -> std::result::Result<(usize, usize), OpError> {
    let (n, c, per_sample) = match *dims {
        [n, c] => (n, c, 1),
        [n, h, w, c] => (n, c, h * w),
        _ => {
            return Err(OpError::Shape {
                op: NAME,
                msg: format!("x must be [N, C] or [N, H, W, C] (NHWC), got shape {dims:?}"),
            })
        }
    };
    if groups == 0 || n % groups != 0 {
        return Err(OpError::Argument {
            op: NAME,
            msg: format!("groups = {groups} must be at least 1 and divide the batch size {n}"),
        });
    }
    let m = n / groups * per_sample;
    if c == 0 || m < 2 {
        return Err(OpError::Shape {
            op: NAME,
            msg: format!(
                "training needs more than one value per channel and group, got {m} (shape {dims:?}, {groups} group(s))"
            ),
        });
    }
    Ok((m, c))
}

/// Training-mode BatchNorm on `(x, gamma, beta)`; the statistics land in `saved`.
pub(crate) struct BatchNormTrain {
    pub eps: f64,
    pub bn_splits: usize,
    pub relu: bool,
    pub saved: Arc<OnceLock<Saved>>,
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "mocca-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, c) = bn_geometry(l1.dims(), self.bn_splits)?;
        let (x, gamma, beta) = (
            f32_operand(s1, l1, NAME)?,
            f32_operand(s2, l2, NAME)?,
            f32_operand(s3, l3, NAME)?,
        );
        let (y, saved) = train_forward(x, gamma, beta, self.eps, c, self.bn_splits, m, self.relu);
        // A second forward through the same op value cannot happen: each call builds a new op.
        let _ = self.saved.set(saved);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self.saved.get().ok_or_else(|| OpError::Unsupported {
            op: NAME,
            msg: "backward before forward".into(),
        })?;
        let (m, c) = bn_geometry(x.dims(), self.bn_splits)?;
        let groups = self.bn_splits;
        let dy = dy.contiguous()?;
        let gamma_v = gamma.to_vec1::<f32>()?;
        with_f32(x, NAME, |xs| {
            with_f32(y, NAME, |ys| {
                with_f32(&dy, NAME, |ds| {
                    let grads = train_backward(
                        xs,
                        ys,
                        ds,
                        &gamma_v,
                        saved,
                        (c, groups, m),
                        self.relu,
                        x.track_op(),
                    );
                    let dx = match grads.dx {
                        Some(dx) => Some(Tensor::from_vec(dx, x.shape(), x.device())?),
                        None => None,
                    };
                    let (dgamma, dbeta) = (grads.dgamma, grads.dbeta);
                    let to_t = |v: Vec<f64>, like: &Tensor| -> Result<Option<Tensor>> {
                        if !like.track_op() {
                            return Ok(None);
                        }
                        let v: Vec<f32> = v.into_iter().map(|v| v as f32).collect();
                        Ok(Some(Tensor::from_vec(v, like.shape(), like.device())?))
                    };
                    Ok((dx, to_t(dgamma, gamma)?, to_t(dbeta, beta)?))
                })
            })
        })
    }
}

/// Training-mode forward pass over `x` `[groups·m, c]`: the normalised (optionally ReLU'd)
/// output and the statistics the backward pass needs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    c: usize,
    groups: usize,
    m: usize,
    relu: bool,
) -> (Vec<f32>, Saved) {
    let (mean, var) = batch_stats(x, c, groups, m);
    let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let n = mean.len();
    let anchor: Vec<f32> = (0..n).map(|i| x[(i / c) * m * c + i % c]).collect();
    let delta: Vec<f32> = (0..n)
        .map(|i| (mean[i] - anchor[i] as f64) as f32)
        .collect();
    let scale: Vec<f32> = (0..n)
        .map(|i| (gamma[i % c] as f64 * invstd[i]) as f32)
        .collect();
    let centre = Centre {
        anchor: &anchor,
        delta: &delta,
    };
    let y = affine(x, centre, &scale, beta, c, m, relu);
    let to32 = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
    let saved = Saved {
        mean: to32(&mean),
        var: to32(&var),
        invstd: to32(&invstd),
        anchor,
        delta,
    };
    (y, saved)
}

/// Gradients of a training-mode BatchNorm.
pub(crate) struct TrainGrads {
    pub dx: Option<Vec<f32>>,
    pub dgamma: Vec<f64>,
    pub dbeta: Vec<f64>,
}

/// Training-mode backward pass: `x` the input, `y` the output (read only under a fused ReLU),
/// `dy` the output gradient, `shape` = `(c, groups, m)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_backward(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    gamma: &[f32],
    saved: &Saved,
    shape: (usize, usize, usize),
    relu: bool,
    need_dx: bool,
) -> TrainGrads {
    let (c, groups, m) = shape;
    let centre = Centre {
        anchor: &saved.anchor,
        delta: &saved.delta,
    };
    let (s_dy, s_dyx) = grad_sums(x, y, dy, centre, c, groups, m, relu);
    let mut dgamma = vec![0.0f64; c];
    let mut dbeta = vec![0.0f64; c];
    for i in 0..groups * c {
        dgamma[i % c] += s_dyx[i] * saved.invstd[i] as f64;
        dbeta[i % c] += s_dy[i];
    }
    let dx = need_dx.then(|| {
        let n = groups * c;
        let (mut a, mut b, mut k) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        for i in 0..n {
            let inv = saved.invstd[i] as f64;
            let ai = gamma[i % c] as f64 * inv;
            a[i] = ai as f32;
            b[i] = (-ai * inv * inv * s_dyx[i] / m as f64) as f32;
            k[i] = (-ai * s_dy[i] / m as f64) as f32;
        }
        input_grad(x, y, dy, centre, &a, &b, &k, c, m, relu)
    });
    TrainGrads { dx, dgamma, dbeta }
}

/// Eval-mode BatchNorm `(x, gamma, beta)` with fixed statistics `mean` and `invstd` per channel.
pub(crate) struct BatchNormEval {
    pub mean: Vec<f32>,
    pub invstd: Vec<f32>,
    pub relu: bool,
}

impl CustomOp3 for BatchNormEval {
    fn name(&self) -> &'static str {
        "mocca-batch-norm-eval"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (
            f32_operand(s1, l1, NAME)?,
            f32_operand(s2, l2, NAME)?,
            f32_operand(s3, l3, NAME)?,
        );
        let c = self.mean.len();
        let rows = x.len() / c;
        let scale: Vec<f32> = (0..c).map(|j| gamma[j] * self.invstd[j]).collect();
        let zeros = vec![0.0f32; c];
        let centre = Centre {
            anchor: &self.mean,
            delta: &zeros,
        };
        let y = affine(x, centre, &scale, beta, c, rows.max(1), self.relu);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = self.mean.len();
        let m = x.elem_count() / c;
        let dy = dy.contiguous()?;
        let gamma_v = gamma.to_vec1::<f32>()?;
        with_f32(x, NAME, |xs| {
            with_f32(y, NAME, |ys| {
                with_f32(&dy, NAME, |ds| {
                    let zeros = vec![0.0f32; c];
                    let centre = Centre {
                        anchor: &self.mean,
                        delta: &zeros,
                    };
                    let (s_dy, s_dyx) = grad_sums(xs, ys, ds, centre, c, 1, m, self.relu);
                    let dx = if x.track_op() {
                        let a: Vec<f32> = (0..c).map(|j| gamma_v[j] * self.invstd[j]).collect();
                        let dx =
                            input_grad(xs, ys, ds, centre, &a, &zeros, &zeros, c, m, self.relu);
                        Some(Tensor::from_vec(dx, x.shape(), x.device())?)
                    } else {
                        None
                    };
                    let dgamma = if gamma.track_op() {
                        let v: Vec<f32> = (0..c)
                            .map(|j| (s_dyx[j] * self.invstd[j] as f64) as f32)
                            .collect();
                        Some(Tensor::from_vec(v, c, x.device())?)
                    } else {
                        None
                    };
                    let dbeta = if beta.track_op() {
                        let v: Vec<f32> = s_dy.iter().map(|&v| v as f32).collect();
                        Some(Tensor::from_vec(v, c, x.device())?)
                    } else {
                        None
                    };
                    Ok((dx, dgamma, dbeta))
                })
            })
        })
    }
}
