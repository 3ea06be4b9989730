//! A whole residual unit — convolution → BatchNorm (→ ReLU) layers, a shortcut, the residual
//! add and its ReLU — as one differentiable CPU op.
//!
//! Why one op: Candle's backward pass accumulates the gradient of every tensor of the graph
//! into a fresh zero tensor (`zeros_like` + `add`: four memory passes over the activation).
//! A ResNet block built from single-layer ops hands Candle six activation gradients per block;
//! at width 0.25 those passes cost as much as a third of the convolutions. As one op, a block
//! exposes one activation gradient (its input's), keeps its intermediates in private buffers,
//! and runs the layer kernels of this crate (`conv/`, `batchnorm.rs`) back to back.
//!
//! The parameters travel as one packed 1-D tensor (`Tensor::cat` of the flattened weights,
//! gammas and betas, in layer order); Candle's `cat` backward hands each parameter its slice of
//! the packed gradient.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::batchnorm::{bn_geometry, train_backward, train_forward, Saved};
use crate::conv::{conv_dgrad, conv_dgrad_add, conv_forward, conv_wgrad, ConvGeom, Kernel, Pass};
use crate::cpu::{f32_operand, with_f32};
use crate::OpError;

const NAME: &str = "residual_units";

/// Floats per task of the element-wise passes.
const TASK_FLOATS: usize = 16 * 1024;

/// One convolution + BatchNorm layer: geometry and offsets into the packed parameters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layer {
    pub geom: ConvGeom,
    /// Offset of the `[cout, cin, kh, kw]` weight.
    pub weight: usize,
    /// Offset of gamma; beta follows it.
    pub gamma: usize,
    /// Rows per BatchNorm group of the convolution's output.
    pub m: usize,
}

impl Layer {
    fn weight_len(&self) -> usize {
        let g = &self.geom;
        g.cout * g.cin * g.kh * g.kw
    }

    fn beta(&self) -> usize {
        self.gamma + self.geom.cout
    }
}

/// Which shortcut the unit adds before its final ReLU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShortcutKind {
    /// No residual: the last layer's BatchNorm applies the ReLU (a ResNet stem).
    None,
    /// No residual and no ReLU after the last BatchNorm.
    Linear,
    /// `relu(main(x) + x)`.
    Identity,
    /// `relu(main(x) + bn(conv(x)))`: the projection is the last entry of `layers`.
    Projection,
}

/// One residual unit of a chain: its layers (main path, then the projection if any).
#[derive(Clone, Debug)]
pub(crate) struct UnitPlan {
    pub layers: Vec<Layer>,
    pub shortcut: ShortcutKind,
}

impl UnitPlan {
    fn main_layers(&self) -> usize {
        self.layers.len() - usize::from(self.shortcut == ShortcutKind::Projection)
    }

    /// Whether main layer `i`'s BatchNorm applies a ReLU.
    fn relu_after(&self, i: usize) -> bool {
        i + 1 < self.main_layers() || self.shortcut == ShortcutKind::None
    }

    /// Output dims `[N, H, W, C]`.
    pub(crate) fn out_dims(&self) -> [usize; 4] {
        let g = &self.layers[self.main_layers() - 1].geom;
        [g.n, g.ho, g.wo, g.cout]
    }
}

/// What the forward pass keeps of one unit for the backward pass.
struct UnitSaved {
    /// Pre-BatchNorm convolution outputs, one per layer (projection last).
    convs: Vec<Vec<f32>>,
    /// Post-BatchNorm (+ ReLU) outputs of every main layer but the last: the next layer's input.
    hidden: Vec<Vec<f32>>,
    /// BatchNorm statistics, one per layer.
    bn: Vec<Saved>,
    /// The unit's output (the next unit's input); empty for the last unit, whose output is the
    /// op's.
    out: Vec<f32>,
}

/// Per unit, per layer: batch mean and biased variance, `[groups · C]` each.
pub(crate) type ChainStats = Vec<Vec<(Vec<f32>, Vec<f32>)>>;

/// The op: `(x, packed parameters) → y`, a chain of residual units applied one after another.
pub(crate) struct ResidualChain {
    pub units: Vec<UnitPlan>,
    pub eps: f64,
    pub bn_splits: usize,
    /// Statistics of the forward pass for the running averages: per unit, per layer (mean, var).
    pub stats: Arc<OnceLock<ChainStats>>,
    saved: OnceLock<Vec<UnitSaved>>,
}

impl ResidualChain {
    pub(crate) fn new(units: Vec<UnitPlan>, eps: f64, bn_splits: usize) -> Self {
        Self {
            units,
            eps,
            bn_splits,
            stats: Arc::new(OnceLock::new()),
            saved: OnceLock::new(),
        }
    }

    fn conv_bn(
        &self,
        l: &Layer,
        input: &[f32],
        packed: &[f32],
        relu: bool,
    ) -> (Vec<f32>, Vec<f32>, Saved) {
        let g = &l.geom;
        let w = &packed[l.weight..l.weight + l.weight_len()];
        let c = conv_forward(input, w, g, Kernel::choose(g, Pass::Forward));
        let (gamma, beta) = (
            &packed[l.gamma..l.gamma + g.cout],
            &packed[l.beta()..l.beta() + g.cout],
        );
        let (y, saved) =
            train_forward(&c, gamma, beta, self.eps, g.cout, self.bn_splits, l.m, relu);
        (c, y, saved)
    }

    /// One unit's forward pass: its output and what its backward pass needs.
    fn unit_forward(&self, u: &UnitPlan, x: &[f32], packed: &[f32]) -> (Vec<f32>, UnitSaved) {
        let main = u.main_layers();
        let mut convs = Vec::with_capacity(u.layers.len());
        let mut hidden: Vec<Vec<f32>> = Vec::with_capacity(main);
        let mut bn = Vec::with_capacity(u.layers.len());
        for i in 0..main {
            let input = if i == 0 { x } else { &hidden[i - 1] };
            let (c, y, s) = self.conv_bn(&u.layers[i], input, packed, u.relu_after(i));
            convs.push(c);
            hidden.push(y);
            bn.push(s);
        }
        let mut out = hidden.pop().unwrap_or_default();
        match u.shortcut {
            ShortcutKind::None | ShortcutKind::Linear => {}
            ShortcutKind::Identity => add_relu_into(&mut out, x),
            ShortcutKind::Projection => {
                let (c, y, s) = self.conv_bn(&u.layers[main], x, packed, false);
                add_relu_into(&mut out, &y);
                convs.push(c);
                bn.push(s);
            }
        }
        let saved = UnitSaved {
            convs,
            hidden,
            bn,
            out: Vec::new(),
        };
        (out, saved)
    }
}

/// `out = max(out + s, 0)`.
fn add_relu_into(out: &mut [f32], s: &[f32]) {
    out.par_chunks_mut(TASK_FLOATS)
        .zip(s.par_chunks(TASK_FLOATS))
        .for_each(|(o, s)| {
            for (o, s) in o.iter_mut().zip(s) {
                let v = *o + s;
                *o = if v > 0.0 { v } else { 0.0 };
            }
        });
}

/// `acc += dy` where `y > 0` (or NaN, as PyTorch's ReLU backward): the identity shortcut's
/// gradient through the final ReLU.
fn add_relu_grad_into(acc: &mut [f32], y: &[f32], dy: &[f32]) {
    acc.par_chunks_mut(TASK_FLOATS)
        .zip(y.par_chunks(TASK_FLOATS).zip(dy.par_chunks(TASK_FLOATS)))
        .for_each(|(a, (y, d))| {
            for ((a, y), d) in a.iter_mut().zip(y).zip(d) {
                let keep = if *y <= 0.0 { 0u32 } else { u32::MAX };
                *a += f32::from_bits(d.to_bits() & keep);
            }
        });
}

impl CustomOp2 for ResidualChain {
    fn name(&self) -> &'static str {
        "mocca-residual-units"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, packed) = (f32_operand(s1, l1, NAME)?, f32_operand(s2, l2, NAME)?);
        let first = &self.units[0].layers[0].geom;
        if l1.dims() != [first.n, first.h, first.w, first.cin] {
            return Err(OpError::Shape {
                op: NAME,
                msg: format!(
                    "x has shape {:?}, the units were built for {first:?}",
                    l1.dims()
                ),
            }
            .into());
        }
        let mut saved: Vec<UnitSaved> = Vec::with_capacity(self.units.len());
        let mut out = Vec::new();
        for (k, u) in self.units.iter().enumerate() {
            let input = if k == 0 { x } else { &saved[k - 1].out };
            let (y, s) = self.unit_forward(u, input, packed);
            saved.push(s);
            if k + 1 < self.units.len() {
                saved[k].out = y;
            } else {
                out = y;
            }
        }
        let stats = saved
            .iter()
            .map(|s| {
                s.bn.iter()
                    .map(|b| (b.mean.clone(), b.var.clone()))
                    .collect()
            })
            .collect();
        // Each call builds a new op value, so these are set exactly once.
        let _ = self.stats.set(stats);
        let _ = self.saved.set(saved);
        let dims = self.units[self.units.len() - 1].out_dims();
        Ok((CpuStorage::F32(out), Shape::from(dims.to_vec())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        packed: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let saved = self.saved.get().ok_or_else(|| OpError::Unsupported {
            op: NAME,
            msg: "backward before forward".into(),
        })?;
        let dy = dy.contiguous()?;
        let need_dx = x.track_op();
        let (dx, dp) = with_f32(x, NAME, |xs| {
            with_f32(packed, NAME, |ps| {
                with_f32(y, NAME, |ys| {
                    with_f32(&dy, NAME, |ds| {
                        let mut dp = vec![0.0f32; ps.len()];
                        let mut grad: Option<Vec<f32>> = None;
                        for k in (0..self.units.len()).rev() {
                            let x_k = if k == 0 { xs } else { &saved[k - 1].out };
                            let y_k = if k + 1 == self.units.len() {
                                ys
                            } else {
                                &saved[k].out
                            };
                            let dy_k = grad.as_deref().unwrap_or(ds);
                            let need = k > 0 || need_dx;
                            grad =
                                self.unit_backward(k, &saved[k], x_k, ps, y_k, dy_k, need, &mut dp);
                        }
                        Ok((grad, dp))
                    })
                })
            })
        })?;
        let dx = match dx {
            Some(dx) if need_dx => Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            _ => None,
        };
        let dp = if packed.track_op() {
            Some(Tensor::from_vec(dp, packed.shape(), packed.device())?)
        } else {
            None
        };
        Ok((dx, dp))
    }
}

impl ResidualChain {
    /// Unit `k`'s backward pass: writes its parameters' gradients into `dp` and returns the
    /// gradient of its input `x` when `need_dx`.
    #[allow(clippy::too_many_arguments)]
    fn unit_backward(
        &self,
        k: usize,
        saved: &UnitSaved,
        x: &[f32],
        packed: &[f32],
        y: &[f32],
        dy: &[f32],
        need_dx: bool,
        dp: &mut [f32],
    ) -> Option<Vec<f32>> {
        let u = &self.units[k];
        let main = u.main_layers();
        let mut grad_store =
            |l: &Layer, dc: &[f32], input: &[f32], dgamma: &[f64], dbeta: &[f64]| {
                let g = &l.geom;
                let dw = conv_wgrad(input, dc, g, Kernel::choose(g, Pass::WeightGrad));
                dp[l.weight..l.weight + l.weight_len()].copy_from_slice(&dw);
                for (d, v) in dp[l.gamma..l.gamma + g.cout].iter_mut().zip(dgamma) {
                    *d = *v as f32;
                }
                for (d, v) in dp[l.beta()..l.beta() + g.cout].iter_mut().zip(dbeta) {
                    *d = *v as f32;
                }
            };
        let mut dx = None;
        let mut grad_h: Option<Vec<f32>> = None;
        for i in (0..main).rev() {
            let l = &u.layers[i];
            let g = &l.geom;
            // The last layer's gradient passes the unit's final ReLU (the stem's own ReLU, or the
            // one after the residual add; a linear stem has none): masking by `y > 0` inside the
            // BatchNorm backward saves a pass over `dy`.
            let bn_out: &[f32] = if i + 1 < main { &saved.hidden[i] } else { y };
            let d_bn_out = grad_h.as_deref().unwrap_or(dy);
            let gamma = &packed[l.gamma..l.gamma + g.cout];
            let grads = train_backward(
                &saved.convs[i],
                bn_out,
                d_bn_out,
                gamma,
                &saved.bn[i],
                (g.cout, self.bn_splits, l.m),
                i + 1 < main || u.shortcut != ShortcutKind::Linear,
                true,
            );
            let dc = grads.dx.unwrap_or_default();
            let input = if i == 0 { x } else { &saved.hidden[i - 1] };
            grad_store(l, &dc, input, &grads.dgamma, &grads.dbeta);
            let w = &packed[l.weight..l.weight + l.weight_len()];
            if i > 0 {
                grad_h = Some(conv_dgrad(&dc, w, g, Kernel::choose(g, Pass::InputGrad)));
            } else if need_dx {
                dx = Some(conv_dgrad(&dc, w, g, Kernel::choose(g, Pass::InputGrad)));
            }
        }
        match u.shortcut {
            ShortcutKind::None | ShortcutKind::Linear => {}
            ShortcutKind::Identity => {
                if let Some(dx) = dx.as_mut() {
                    add_relu_grad_into(dx, y, dy);
                }
            }
            ShortcutKind::Projection => {
                let l = &u.layers[main];
                let g = &l.geom;
                let c = &saved.convs[main];
                let gamma = &packed[l.gamma..l.gamma + g.cout];
                let grads = train_backward(
                    c,
                    y,
                    dy,
                    gamma,
                    &saved.bn[main],
                    (g.cout, self.bn_splits, l.m),
                    true,
                    true,
                );
                let dc = grads.dx.unwrap_or_default();
                grad_store(l, &dc, x, &grads.dgamma, &grads.dbeta);
                if let Some(dx) = dx.as_mut() {
                    let w = &packed[l.weight..l.weight + l.weight_len()];
                    conv_dgrad_add(&dc, w, g, dx);
                }
            }
        }
        dx
    }
}

/// Plans the layers of a unit over input dims `x_dims`: `specs` are
/// `(weight dims, stride, padding)` of the main layers then the projection, whose parameters
/// are packed from `*offset` on (advanced past them).
pub(crate) fn plan(
    x_dims: &[usize],
    specs: &[([usize; 4], usize, usize)],
    shortcut: ShortcutKind,
    groups: usize,
    offset: &mut usize,
) -> std::result::Result<UnitPlan, OpError> {
    let main = specs.len() - usize::from(shortcut == ShortcutKind::Projection);
    let mut layers = Vec::with_capacity(specs.len());
    let mut dims = x_dims.to_vec();
    for (i, (wd, stride, padding)) in specs.iter().enumerate() {
        let input = if i == main { x_dims } else { &dims[..] };
        let geom = ConvGeom::new(input, wd, *stride, *padding)?;
        let out = [geom.n, geom.ho, geom.wo, geom.cout];
        let (m, _) = bn_geometry(&out, groups)?;
        let weight = *offset;
        let gamma = weight + wd.iter().product::<usize>();
        *offset = gamma + 2 * geom.cout;
        layers.push(Layer {
            geom,
            weight,
            gamma,
            m,
        });
        if i < main {
            dims = out.to_vec();
        }
    }
    let last = &layers[main - 1].geom;
    let out = [last.n, last.ho, last.wo, last.cout];
    match shortcut {
        ShortcutKind::Identity if x_dims != out => Err(OpError::Shape {
            op: NAME,
            msg: format!(
                "an identity shortcut needs the output shape {out:?} to equal x's {x_dims:?}"
            ),
        }),
        ShortcutKind::Projection => {
            let p = &layers[main].geom;
            let pout = [p.n, p.ho, p.wo, p.cout];
            if pout != out {
                return Err(OpError::Shape {
                    op: NAME,
                    msg: format!("the projection gives {pout:?} but the main path gives {out:?}"),
                });
            }
            Ok(UnitPlan { layers, shortcut })
        }
        _ => Ok(UnitPlan { layers, shortcut }),
    }
}
