//! The two compute paths behind every layer: Candle's own ops in NCHW, or [`mocca_kernels`]
//! in NHWC.

use candle_core::{DType, Result, Tensor, D};

/// Which kernels a model runs on.
///
/// Both compute the same function from the same parameters (names, shapes and layouts of the
/// weights do not depend on the backend); they differ in speed and activation layout only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Candle's native ops on NCHW activations: `Tensor::conv2d`, BatchNorm composed from
    /// tensor ops. The reference the fast path is tested and benchmarked against.
    Native,
    /// The fused training ops of [`mocca_kernels`] on NHWC ("channels last") activations:
    /// convolutions as GEMMs, one-pass BatchNorm, fused residual add + ReLU.
    #[default]
    Fast,
}

impl Backend {
    /// Moves an NCHW input into the backend's activation layout.
    pub(crate) fn to_layout(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Backend::Native => Ok(x.clone()),
            Backend::Fast => x.permute((0, 2, 3, 1))?.contiguous(),
        }
    }

    /// Channel dimension of a 4-d activation.
    pub(crate) fn channel_dim(self) -> usize {
        match self {
            Backend::Native => 1,
            Backend::Fast => 3,
        }
    }

    /// Convolution without bias, weight in torchvision's `[Cout, Cin, kh, kw]`. The weight is
    /// cast to the activations' dtype first (see [`autocast`]).
    pub(crate) fn conv2d(
        self,
        x: &Tensor,
        w: &Tensor,
        stride: usize,
        pad: usize,
    ) -> Result<Tensor> {
        let w = autocast(w, x)?;
        match self {
            Backend::Native => mocca_kernels::composed::conv2d_nchw(x, &w, pad, stride, 1),
            Backend::Fast => mocca_kernels::conv2d_nhwc(x, &w, stride, pad),
        }
    }

    /// `relu(a + b)`.
    pub(crate) fn add_relu(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        match self {
            Backend::Native => (a + b)?.relu(),
            Backend::Fast => mocca_kernels::add_relu(a, b),
        }
    }

    /// Max-pool with padding, whose gradient goes to the first maximum of each window in
    /// row-major window order, as PyTorch's.
    pub(crate) fn max_pool2d(
        self,
        x: &Tensor,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Tensor> {
        match self {
            Backend::Native => max_pool2d_nchw(x, k, stride, pad),
            Backend::Fast => mocca_kernels::max_pool2d_nhwc(x, k, stride, pad),
        }
    }

    /// Mean over the spatial dimensions: `[N, C]`.
    pub(crate) fn global_avg_pool(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Backend::Native => x.mean((2, 3)),
            Backend::Fast => mocca_kernels::global_avg_pool_nhwc(x),
        }
    }
}

/// `param` in the dtype of the activations `x`, as PyTorch's autocast feeds a layer: mixed
/// precision keeps f32 master weights and runs the layer in the activations' bf16. The cast is
/// part of the graph, so the weight's gradient comes back in the weight's own dtype (f32).
pub(crate) fn autocast(param: &Tensor, x: &Tensor) -> Result<Tensor> {
    param.to_dtype(x.dtype())
}

/// Candle's `max_pool2d` has no padding and its backward assumes kernel == stride, so this
/// composes the pool from the k*k strided window views instead. Keeping the earlier view unless
/// a later one is strictly greater routes each gradient to the first maximum, like PyTorch.
fn max_pool2d_nchw(x: &Tensor, k: usize, s: usize, p: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h + 2 * p < k || w + 2 * p < k {
        candle_core::bail!(
            "max_pool2d: input {h}x{w} with padding {p} is smaller than the {k}x{k} window"
        );
    }
    let ho = (h + 2 * p - k) / s + 1;
    let wo = (w + 2 * p - k) / s + 1;
    // Each view takes s*ho rows from its offset (only every s-th is used), so the padded
    // tensor must reach k - 1 + s*ho rows even when the last window ends earlier.
    let pad_h = p.max((k - 1 + s * ho).saturating_sub(h + p));
    let pad_w = p.max((k - 1 + s * wo).saturating_sub(w + p));
    let neg_inf = |dims: (usize, usize, usize, usize)| -> Result<Tensor> {
        Tensor::zeros(dims, x.dtype(), x.device())?.affine(1.0, f64::NEG_INFINITY)
    };
    let mut xp = x.clone();
    if p > 0 || pad_h > 0 {
        xp = Tensor::cat(&[neg_inf((n, c, p, w))?, xp, neg_inf((n, c, pad_h, w))?], 2)?;
    }
    let hp = p + h + pad_h;
    if p > 0 || pad_w > 0 {
        xp = Tensor::cat(
            &[neg_inf((n, c, hp, p))?, xp, neg_inf((n, c, hp, pad_w))?],
            3,
        )?;
    }
    let wp = p + w + pad_w;
    let mut best: Option<Tensor> = None;
    for di in 0..k {
        let rows = xp
            .narrow(2, di, s * ho)?
            .reshape((n, c, ho, s, wp))?
            .narrow(3, 0, 1)?
            .squeeze(3)?;
        for dj in 0..k {
            let view = rows
                .narrow(3, dj, s * wo)?
                .reshape((n, c, ho, wo, s))?
                .narrow(4, 0, 1)?
                .squeeze(4)?;
            best = Some(match best {
                None => view,
                Some(b) => view.gt(&b)?.where_cond(&view, &b)?,
            });
        }
    }
    best.ok_or_else(|| candle_core::Error::Msg("max_pool2d: empty window".into()))
}

/// Per-group batch statistics over all dimensions but the channel one, for NCHW `[N, C, H, W]`
/// or `[N, C]` input: `(xhat, mean [G, C], biased var [G, C])` with `xhat` normalised, in the
/// input's shape. Half-precision input is normalised in f32.
pub(crate) fn batch_norm_train_native(
    x: &Tensor,
    eps: f64,
    groups: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dims = x.dims().to_vec();
    let (n, c) = (dims[0], dims[1]);
    let spatial: usize = dims[2..].iter().product();
    let in_dtype = x.dtype();
    let xf = match in_dtype {
        DType::F16 | DType::BF16 => x.to_dtype(DType::F32)?,
        _ => x.clone(),
    };
    let xg = xf.reshape((groups, n / groups, c, spatial))?;
    let mean = xg.mean_keepdim(D::Minus1)?.mean_keepdim(1)?;
    let centered = xg.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?.mean_keepdim(1)?;
    let xhat = centered.broadcast_div(&(var.clone() + eps)?.sqrt()?)?;
    let xhat = xhat.reshape(dims)?.to_dtype(in_dtype)?;
    Ok((xhat, mean.reshape((groups, c))?, var.reshape((groups, c))?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Brute-force pool and its gradient for `sum(pool(x) · r)`: the first maximum in
    /// row-major window order takes the gradient, as in PyTorch.
    fn reference(
        x: &[f32],
        (h, w): (usize, usize),
        k: usize,
        s: usize,
        p: usize,
        r: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let ho = (h + 2 * p - k) / s + 1;
        let wo = (w + 2 * p - k) / s + 1;
        let mut y = vec![0.0; ho * wo];
        let mut g = vec![0.0; h * w];
        for oi in 0..ho {
            for oj in 0..wo {
                let mut best: Option<(f32, usize)> = None;
                for di in 0..k {
                    for dj in 0..k {
                        let (i, j) = (
                            (oi * s + di) as isize - p as isize,
                            (oj * s + dj) as isize - p as isize,
                        );
                        if i < 0 || j < 0 || i >= h as isize || j >= w as isize {
                            continue;
                        }
                        let idx = i as usize * w + j as usize;
                        if best.is_none_or(|(b, _)| x[idx] > b) {
                            best = Some((x[idx], idx));
                        }
                    }
                }
                let (v, idx) = best.unwrap();
                y[oi * wo + oj] = v;
                g[idx] += r[oi * wo + oj];
            }
        }
        (y, g)
    }

    #[test]
    fn native_max_pool_matches_pytorch_forward_and_first_max_gradient() {
        for &(h, w, k, s, p) in &[
            (7, 7, 3, 2, 1),
            (6, 5, 3, 2, 1),
            (8, 8, 2, 2, 0),
            (5, 6, 3, 1, 1),
        ] {
            // Few distinct values, so windows hold ties.
            let x: Vec<f32> = (0..h * w).map(|i| ((i * 7 + 3) % 5) as f32).collect();
            let ho = (h + 2 * p - k) / s + 1;
            let wo = (w + 2 * p - k) / s + 1;
            let r: Vec<f32> = (0..ho * wo).map(|i| 1.0 + i as f32).collect();
            let xv = Var::from_vec(x.clone(), (1, 1, h, w), &Device::Cpu).unwrap();
            let y = max_pool2d_nchw(xv.as_tensor(), k, s, p).unwrap();
            let rt = Tensor::from_vec(r.clone(), (1, 1, ho, wo), &Device::Cpu).unwrap();
            let grads = (&y * &rt).unwrap().sum_all().unwrap().backward().unwrap();
            let g: Vec<f32> = grads
                .get(&xv)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let (ey, eg) = reference(&x, (h, w), k, s, p, &r);
            assert_eq!(
                y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                ey,
                "{h}x{w} k{k} s{s} p{p}"
            );
            assert_eq!(g, eg, "gradient {h}x{w} k{k} s{s} p{p}");
        }
    }
}
