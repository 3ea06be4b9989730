//! [`residual_units_train`]: a chain of ResNet residual units in training mode, one fused CPU op
//! on the fast path (`fused.rs`), the single-layer ops chained otherwise.

use candle_core::{Result, Tensor};

use crate::check::{check_bn_params, check_same_device, fast_path};
use crate::{add_relu, batch_norm_train, conv2d_nhwc, fused, OpError};

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
    /// benchmark backbone, see mocca-backbones' `ResNetConfig::stem_relu`).
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
    /// biased variance, `[bn_splits, C]`, as [`BatchNormOutput`](crate::BatchNormOutput) gives
    /// them; detached.
    pub stats: Vec<Vec<(Tensor, Tensor)>>,
}

/// A chain of ResNet residual units in training mode (He et al., 2016), each feeding the next.
/// A unit's `main` layers are conv → BatchNorm with a ReLU after every BatchNorm but the last,
/// then `relu(main(x) + shortcut(x))`; with [`Shortcut::None`] the last BatchNorm is ReLU'd too
/// and nothing is added (a stem). `bn_splits` > 1 is split BatchNorm, as in [`batch_norm_train`].
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
    bn_splits: usize,
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
        return residual_units_unfused(x, units, eps, bn_splits);
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
        let plan = fused::plan(&dims, &specs, kind, bn_splits, &mut offset)?;
        dims = plan.out_dims().to_vec();
        plans.push(plan);
    }
    let packed = Tensor::cat(&parts, 0)?;
    let op = fused::ResidualChain::new(plans, eps, bn_splits);
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
                    let c = mean.len() / bn_splits;
                    Ok((
                        Tensor::from_slice(mean, (bn_splits, c), x.device())?,
                        Tensor::from_slice(var, (bn_splits, c), x.device())?,
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
    bn_splits: usize,
) -> Result<ResidualUnitsOutput> {
    let mut all_stats = Vec::with_capacity(units.len());
    let mut h = x.clone();
    for u in units {
        let mut stats = Vec::with_capacity(u.main.len() + 1);
        let mut conv_bn = |h: &Tensor, l: &ConvBn, relu: bool| -> Result<Tensor> {
            let c = conv2d_nhwc(h, l.weight, l.stride, l.padding)?;
            let out = batch_norm_train(&c, l.gamma, l.beta, eps, bn_splits, relu)?;
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
