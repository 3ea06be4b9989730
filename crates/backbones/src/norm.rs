//! BatchNorm (Ioffe & Szegedy 2015) with torch's running-statistics rule and split batches.

use std::sync::{Arc, Mutex};

use candle_core::{DType, ModuleT, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::error::{Error, Result};
use crate::layers::{autocast, batch_norm_train_native, Backend};
use crate::state::{lock, ModelState, RunningStats, SharedStats, StateDict};

/// Settings of a [`BatchNorm`] layer; defaults are torch's (`eps` 1e-5, `momentum` 0.1, affine).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Weight of the new batch statistics in the running averages (torch's convention).
    pub momentum: f64,
    /// Learnable per-channel scale (`weight`) and shift (`bias`).
    pub affine: bool,
    /// Split BatchNorm: training-mode statistics are computed separately over `bn_splits`
    /// groups of the batch, emulating MoCo's shuffle-BN (one BN per GPU) on one device. 1 is
    /// ordinary BatchNorm.
    pub bn_splits: usize,
    /// Which samples share a group when `bn_splits > 1`.
    pub grouping: SplitGrouping,
    /// Activation layout: NCHW for [`Backend::Native`], NHWC for [`Backend::Fast`].
    pub backend: Backend,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
            affine: true,
            bn_splits: 1,
            grouping: SplitGrouping::default(),
            backend: Backend::default(),
        }
    }
}

impl BatchNormConfig {
    /// torch's defaults with `bn_splits` groups: the colab's `SplitBatchNorm(dim, num_splits)`.
    pub fn split(bn_splits: usize) -> Self {
        Self {
            bn_splits,
            ..Self::default()
        }
    }
}

/// `SplitBatchNorm`, the MoCo CIFAR-10 colab's layer (He et al. 2020, "Momentum Contrast for
/// Unsupervised Visual Representation Learning"; `moco/colab/moco_cifar10_demo.ipynb`, also
/// lightly's, both from cifar10-fast): BatchNorm whose training-mode statistics come from
/// `bn_splits` groups of the batch, so that one device sees what shuffle-BN's one BatchNorm per
/// GPU sees. Here it is a [`BatchNorm`] built with [`BatchNormConfig::split`] (one layer type,
/// so a ResNet switches between plain and split BN by a number, as the colab's `--bn-splits`).
///
/// ```
/// use candle_core::{DType, Device, ModuleT, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use mocca_backbones::{BatchNormConfig, SplitBatchNorm};
///
/// let dev = Device::Cpu;
/// let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
/// let bn: SplitBatchNorm = SplitBatchNorm::new(1, BatchNormConfig::split(2), vb)?;
/// // Strided groups, as the colab's: samples 0 and 2 form one group, 1 and 3 the other.
/// let x = Tensor::new(&[[1f32], [10.], [3.], [30.]], &dev)?;
/// let y = bn.forward_t(&x, true)?.flatten_all()?.to_vec1::<f32>()?;
/// let want = [-1.0, -1.0, 1.0, 1.0];
/// assert!(y.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-3), "{y:?}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type SplitBatchNorm = BatchNorm;

/// Which samples of a batch of N share BatchNorm statistics when a layer has `S` splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitGrouping {
    /// Group `s` holds samples `s, s+S, s+2S, …`: the `SplitBatchNorm` of the MoCo CIFAR-10
    /// colab and of lightly (both from cifar10-fast), whose `input.view(-1, C·S, H, W)` makes
    /// the split index the fastest-varying one.
    #[default]
    Strided,
    /// Group `s` holds samples `s·N/S .. (s+1)·N/S`: what S devices each holding a slice of the
    /// batch see.
    Contiguous,
}

/// The batch order that makes [`SplitGrouping::Strided`] groups contiguous: position `j` of the
/// reordered batch holds sample `order[j]`, so that group `s` occupies rows `s·N/S .. (s+1)·N/S`.
/// `n` must be a multiple of `bn_splits`.
pub fn strided_group_order(n: usize, bn_splits: usize) -> Vec<u32> {
    let per_group = n / bn_splits;
    (0..n)
        .map(|j| ((j % per_group) * bn_splits + j / per_group) as u32)
        .collect()
}

/// `f` applied to `x` with the batch reordered by [`strided_group_order`], and its output put
/// back in the original order: a computation that groups contiguous samples then groups them
/// strided. Every op of `f` but the grouped statistics must act per sample.
pub(crate) fn with_strided_groups(
    x: &Tensor,
    bn_splits: usize,
    f: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let n = x.dim(0)?;
    let order = strided_group_order(n, bn_splits);
    let mut inverse = vec![0u32; n];
    for (j, &i) in order.iter().enumerate() {
        inverse[i as usize] = j as u32;
    }
    let order = Tensor::new(order.as_slice(), x.device())?;
    let inverse = Tensor::new(inverse.as_slice(), x.device())?;
    let y = f(&x.index_select(&order, 0)?)?;
    Ok(y.index_select(&inverse, 0)?)
}

/// Batch normalisation over every dimension but the channel one, for `[N, C]` input or 4-d
/// activations in the backend's layout.
///
/// Training mode normalises with the batch mean and biased variance and updates the running
/// statistics as torch does: `running = (1 − momentum)·running + momentum·batch`, with the
/// *unbiased* batch variance, and `num_batches_tracked += 1`. With `bn_splits = S > 1` this is
/// `SplitBatchNorm` (the MoCo CIFAR-10 colab's, He et al. 2020, and lightly's): the batch is cut
/// into S groups ([`SplitGrouping`]: strided by default, as those references group), each
/// normalised with its own statistics, and the running statistics move towards the mean over
/// groups of the per-group mean and unbiased variance. Evaluation mode uses the running
/// statistics.
///
/// The running statistics are buffers held by the layer, never variables of the `VarBuilder`.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    stats: SharedStats,
    num_features: usize,
    cfg: BatchNormConfig,
    state: ModelState,
}

impl BatchNorm {
    /// Builds a layer over `num_features` channels: `weight` (init 1) and `bias` (init 0) from
    /// `vb` when affine; running statistics read from `vb` when it holds them (a safetensors
    /// checkpoint), else mean 0 and variance 1.
    pub fn new(num_features: usize, cfg: BatchNormConfig, vb: VarBuilder) -> Result<Self> {
        Self::with_weight_init(num_features, cfg, 1.0, vb)
    }

    /// As [`BatchNorm::new`] with `weight` initialised to `gamma` (0 for zero-init residuals).
    pub(crate) fn with_weight_init(
        num_features: usize,
        cfg: BatchNormConfig,
        gamma: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        if num_features == 0 {
            return Err(Error::InvalidConfig(
                "BatchNorm needs at least one channel".into(),
            ));
        }
        if cfg.bn_splits == 0 {
            return Err(Error::InvalidConfig(
                "BatchNorm bn_splits must be at least 1".into(),
            ));
        }
        if cfg.eps.is_nan() || cfg.eps <= 0.0 || !(0.0..=1.0).contains(&cfg.momentum) {
            return Err(Error::InvalidConfig(format!(
                "BatchNorm needs eps > 0 and momentum in [0, 1], got eps {} momentum {}",
                cfg.eps, cfg.momentum
            )));
        }
        let mut state = ModelState::new();
        let (weight, bias) = if cfg.affine {
            let w = vb.get_with_hints(num_features, "weight", Init::Const(gamma))?;
            let w = state.parameter("weight", w)?;
            let b = vb.get_with_hints(num_features, "bias", Init::Const(0.0))?;
            let b = state.parameter("bias", b)?;
            (Some(w), Some(b))
        } else {
            (None, None)
        };
        // Half-precision statistics would swallow the small momentum steps, so half-precision
        // models keep them in f32 (as torch's mixed-precision training does).
        let stats_dtype = match vb.dtype() {
            DType::F16 | DType::BF16 => DType::F32,
            other => other,
        };
        let buffer = |name: &str, init: f64| -> Result<Tensor> {
            // Only a checkpoint-backed builder holds buffers; asking a VarMap would create a
            // trainable variable, which is exactly what must not happen.
            if vb.contains_tensor(name) {
                let t =
                    vb.get_with_hints_dtype(num_features, name, Init::Const(init), stats_dtype)?;
                Ok(t.detach())
            } else {
                Ok((Tensor::ones(num_features, stats_dtype, vb.device())? * init)?)
            }
        };
        let mean = buffer("running_mean", 0.0)?;
        let var = buffer("running_var", 1.0)?;
        let num_batches_tracked = if vb.contains_tensor("num_batches_tracked") {
            vb.get_with_hints_dtype((), "num_batches_tracked", Init::Const(0.0), DType::I64)?
                .to_scalar::<i64>()?
        } else {
            0
        };
        let stats = Arc::new(Mutex::new(RunningStats {
            mean,
            var,
            num_batches_tracked,
        }));
        state.batch_norm_buffers("", &stats);
        Ok(Self {
            weight,
            bias,
            stats,
            num_features,
            cfg,
            state,
        })
    }

    /// Number of channels.
    pub fn num_features(&self) -> usize {
        self.num_features
    }

    /// The layer's settings.
    pub fn config(&self) -> &BatchNormConfig {
        &self.cfg
    }

    // `usize::is_multiple_of` is newer than the workspace's rust-version (1.85).
    #[allow(clippy::manual_is_multiple_of)]
    fn check_input(&self, x: &Tensor, train: bool) -> Result<()> {
        self.check_dims(x.dims(), train)
    }

    /// Checks an input of shape `dims` (rank, channels, and in training mode the split).
    pub(crate) fn check_dims(&self, dims: &[usize], train: bool) -> Result<()> {
        let c_dim = match dims.len() {
            2 => 1,
            4 => self.cfg.backend.channel_dim(),
            r => {
                return Err(Error::InvalidInput(format!(
                    "BatchNorm expects [N, C] or a 4-d activation, got rank {r} {dims:?}"
                )))
            }
        };
        if dims[c_dim] != self.num_features {
            return Err(Error::InvalidInput(format!(
                "BatchNorm over {} channels got {} channels (input {dims:?}, channel dim {c_dim})",
                self.num_features, dims[c_dim]
            )));
        }
        if train {
            let n = dims[0];
            let s = self.cfg.bn_splits;
            if !n.is_multiple_of(s) {
                return Err(Error::InvalidInput(format!(
                    "split BatchNorm with {s} splits needs a batch divisible by {s}, got {n}"
                )));
            }
            let per_group: usize = n / s
                * dims
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != 0 && *i != c_dim)
                    .map(|(_, d)| d)
                    .product::<usize>();
            if per_group < 2 {
                return Err(Error::InvalidInput(format!(
                    "training-mode BatchNorm needs more than one value per channel and group, \
                     got input {dims:?} with {s} split(s)"
                )));
            }
        }
        Ok(())
    }

    /// Normalises `x`, optionally applying ReLU (fused on the fast backend).
    pub(crate) fn forward_fused(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        self.check_input(x, train)?;
        let y = if train {
            self.forward_train(x, relu)?
        } else {
            self.forward_eval(x, relu)?
        };
        Ok(y)
    }

    pub(crate) fn affine_params(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => Ok((w.clone(), b.clone())),
            _ => Ok((
                Tensor::ones(self.num_features, x.dtype(), x.device())?,
                Tensor::zeros(self.num_features, x.dtype(), x.device())?,
            )),
        }
    }

    /// Shape that broadcasts a per-channel vector against `x` in the backend's layout.
    fn channel_shape(&self, x: &Tensor) -> Vec<usize> {
        let mut shape = vec![1; x.rank()];
        let c_dim = if x.rank() == 2 {
            1
        } else {
            self.cfg.backend.channel_dim()
        };
        shape[c_dim] = self.num_features;
        shape
    }

    fn forward_train(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        if self.cfg.bn_splits > 1 && self.cfg.grouping == SplitGrouping::Strided {
            return with_strided_groups(x, self.cfg.bn_splits, |x| {
                self.forward_train_contiguous(x, relu)
            });
        }
        self.forward_train_contiguous(x, relu)
    }

    fn forward_train_contiguous(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let groups = self.cfg.bn_splits;
        let (y, mean, var) = match self.cfg.backend {
            Backend::Native => {
                // On the CPU, f32 activations are normalised in f64 (statistics, normalisation,
                // affine map) and rounded back to f32 once, so that by autograd every
                // per-channel sum of the backward pass is an f64 one, as in PyTorch's CPU
                // BatchNorm: Candle reduces a broadcast's gradient over N·H·W with one
                // sequential running sum, which in f32 missed `dβ`, `dγ` by several ulps and
                // small ResNets' golden trajectories by up to 210x (tests/golden/methods/README.md,
                // "Accuracy").
                let x_work = match x.dtype() {
                    DType::F32 if x.device().is_cpu() => x.to_dtype(DType::F64)?,
                    _ => x.clone(),
                };
                let (xhat, mean, var) = batch_norm_train_native(&x_work, self.cfg.eps, groups)?;
                let y = match (&self.weight, &self.bias) {
                    (Some(w), Some(b)) => {
                        let shape = self.channel_shape(x);
                        xhat.broadcast_mul(&autocast(w, &xhat)?.reshape(shape.as_slice())?)?
                            .broadcast_add(&autocast(b, &xhat)?.reshape(shape.as_slice())?)?
                    }
                    _ => xhat,
                };
                let y = if relu { y.relu()? } else { y };
                (y.to_dtype(x.dtype())?, mean, var)
            }
            Backend::Fast => {
                let (w, b) = self.affine_params(x)?;
                let out = mocca_kernels::batch_norm_train(x, &w, &b, self.cfg.eps, groups, relu)?;
                (out.y, out.mean, out.var)
            }
        };
        self.update_running_stats(x.dims(), &mean, &var)?;
        Ok(y)
    }

    /// Folds one training batch's statistics (`mean`, biased `var`, `[groups, C]`) of an input
    /// of shape `dims` into the running averages, as torch does (unbiased variance, momentum).
    pub(crate) fn update_running_stats(
        &self,
        dims: &[usize],
        mean: &Tensor,
        var: &Tensor,
    ) -> Result<()> {
        let groups = self.cfg.bn_splits;
        let c_dim = if dims.len() == 2 {
            1
        } else {
            self.cfg.backend.channel_dim()
        };
        let count: usize = dims
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != c_dim)
            .map(|(_, d)| d)
            .product();
        let per_group = (count / groups) as f64;
        let mut st = lock(&self.stats);
        let m = self.cfg.momentum;
        let dtype = st.mean.dtype();
        let work = match dtype {
            DType::F16 | DType::BF16 => DType::F32,
            other => other,
        };
        let batch_mean = mean.detach().to_dtype(work)?.mean(0)?;
        let batch_var = var
            .detach()
            .to_dtype(work)?
            .affine(per_group / (per_group - 1.0), 0.0)?
            .mean(0)?;
        let new_mean = st
            .mean
            .to_dtype(work)?
            .affine(1.0 - m, 0.0)?
            .add(&batch_mean.affine(m, 0.0)?)?;
        let new_var = st
            .var
            .to_dtype(work)?
            .affine(1.0 - m, 0.0)?
            .add(&batch_var.affine(m, 0.0)?)?;
        st.mean = new_mean.to_dtype(dtype)?;
        st.var = new_var.to_dtype(dtype)?;
        st.num_batches_tracked += 1;
        Ok(())
    }

    fn forward_eval(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let (rm, rv) = {
            let st = lock(&self.stats);
            (st.mean.clone(), st.var.clone())
        };
        match self.cfg.backend {
            Backend::Native => {
                // y = x·scale + shift, the form torch's CPU kernel evaluates. Scale and shift
                // come from the statistics' dtype (f32 under bf16 activations), then take the
                // activations' dtype.
                let work = match x.dtype() {
                    DType::F16 | DType::BF16 => rm.dtype(),
                    other => other,
                };
                let inv_std = (rv.to_dtype(work)? + self.cfg.eps)?.sqrt()?.recip()?;
                let rm = rm.to_dtype(work)?;
                let (scale, shift) = match (&self.weight, &self.bias) {
                    (Some(w), Some(b)) => {
                        let scale = (w.to_dtype(work)? * inv_std)?;
                        let shift = (b.to_dtype(work)? - (&rm * &scale)?)?;
                        (scale, shift)
                    }
                    _ => {
                        let shift = (&rm * &inv_std)?.neg()?;
                        (inv_std, shift)
                    }
                };
                let shape = self.channel_shape(x);
                let y = x
                    .broadcast_mul(&autocast(&scale, x)?.reshape(shape.as_slice())?)?
                    .broadcast_add(&autocast(&shift, x)?.reshape(shape.as_slice())?)?;
                Ok(if relu { y.relu()? } else { y })
            }
            Backend::Fast => {
                let (w, b) = self.affine_params(x)?;
                // Half-precision activations take the composed op, which reads the running
                // statistics in f32: rounding them to bf16 first would only lose digits.
                let (rm, rv) = match x.dtype() {
                    DType::F16 | DType::BF16 => (rm, rv),
                    other => (rm.to_dtype(other)?, rv.to_dtype(other)?),
                };
                Ok(mocca_kernels::batch_norm_eval(
                    x,
                    &w,
                    &b,
                    &rm,
                    &rv,
                    self.cfg.eps,
                    relu,
                )?)
            }
        }
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.forward_fused(xs, train, false)?)
    }
}

impl StateDict for BatchNorm {
    fn model_state(&self) -> &ModelState {
        &self.state
    }
}
