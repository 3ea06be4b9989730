//! ResNet-18/34/50 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) in
//! torchvision's parameter layout, as feature extractors (no `fc`).

use candle_core::{DType, ModuleT, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, VarBuilder};

use crate::error::{Error, Result};
use crate::layers::Backend;
use crate::norm::{with_strided_groups, BatchNorm, BatchNormConfig, SplitGrouping};
use crate::state::{ModelState, StateDict};

/// The first layers, before the four residual stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stem {
    /// 3x3 convolution, stride 1, no max-pool: the usual stem for 32x32 CIFAR images
    /// (SimCLR's and MoCo's CIFAR experiments).
    Cifar,
    /// torchvision's 7x7 stride-2 convolution followed by a 3x3 stride-2 max-pool (padding 1).
    ImageNet,
}

/// The residual block of every stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18/34); output width = `planes`.
    Basic,
    /// 1x1 → 3x3 (carrying the stride, as torchvision's "ResNet v1.5") → 1x1 with 4x
    /// expansion (ResNet-50).
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// Architecture and training behaviour of a [`ResNet`].
///
/// Start from a preset and adjust fields:
/// `ResNetConfig { stem: Stem::Cifar, width: 0.25, ..ResNetConfig::resnet18() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    /// Block type of all four stages.
    pub block: BlockKind,
    /// Blocks per stage.
    pub layers: [usize; 4],
    /// Input stem.
    pub stem: Stem,
    /// Width multiplier: stage `k` has `floor(64 · width · 2^k)` planes (and the stem
    /// `floor(64 · width)` channels); 1.0 is the standard network.
    pub width: f64,
    /// Initialise the last BatchNorm weight of every residual block to zero, so each block
    /// starts as the identity (Goyal et al. 2017; torchvision's `zero_init_residual`).
    pub zero_init_residual: bool,
    /// Split BatchNorm groups for training-mode statistics (see [`BatchNormConfig::bn_splits`]).
    pub bn_splits: usize,
    /// Which samples share a split BatchNorm group (strided, as the MoCo colab and lightly).
    pub bn_grouping: SplitGrouping,
    /// Initialisation of the convolutions after the stem.
    pub conv_init: ConvInit,
    /// Initialisation of the stem convolution (`conv1`).
    pub stem_init: ConvInit,
    /// ReLU after the stem's BatchNorm. torchvision has it; lightly's CIFAR-10 benchmark
    /// backbone, `nn.Sequential(*list(resnet.children())[:-1], ...)`, loses it (its ResNet applies
    /// that ReLU functionally in `forward`, which the `Sequential` of children never calls).
    pub stem_relu: bool,
    /// Compute path; does not change parameters or results beyond rounding.
    pub backend: Backend,
}

/// How a convolution's weight is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvInit {
    /// torchvision's ResNet initialisation: Kaiming-normal with fan-out and the ReLU gain,
    /// std `√(2 / (cout·k²))`.
    #[default]
    KaimingNormalFanOut,
    /// PyTorch's default for a fresh `nn.Conv2d`: `kaiming_uniform_(a=√5)`, i.e. uniform in
    /// `±1/√(cin·k²)`. The MoCo CIFAR-10 colab's stem has it (the colab replaces torchvision's
    /// `conv1` after torchvision initialised the network), and every convolution of lightly's
    /// `ResNetGenerator` (which initialises nothing itself).
    TorchDefault,
}

impl ConvInit {
    fn init(self, cin: usize, k: usize) -> Init {
        match self {
            ConvInit::KaimingNormalFanOut => CONV_INIT,
            ConvInit::TorchDefault => {
                let bound = 1.0 / ((cin * k * k) as f64).sqrt();
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                }
            }
        }
    }
}

impl ResNetConfig {
    fn preset(block: BlockKind, layers: [usize; 4]) -> Self {
        Self {
            block,
            layers,
            stem: Stem::ImageNet,
            width: 1.0,
            zero_init_residual: false,
            bn_splits: 1,
            bn_grouping: SplitGrouping::default(),
            conv_init: ConvInit::default(),
            stem_init: ConvInit::default(),
            stem_relu: true,
            backend: Backend::default(),
        }
    }

    /// ResNet-18: basic blocks [2, 2, 2, 2], ImageNet stem.
    pub fn resnet18() -> Self {
        Self::preset(BlockKind::Basic, [2, 2, 2, 2])
    }

    /// ResNet-34: basic blocks [3, 4, 6, 3], ImageNet stem.
    pub fn resnet34() -> Self {
        Self::preset(BlockKind::Basic, [3, 4, 6, 3])
    }

    /// ResNet-50: bottleneck blocks [3, 4, 6, 3], ImageNet stem.
    pub fn resnet50() -> Self {
        Self::preset(BlockKind::Bottleneck, [3, 4, 6, 3])
    }

    /// Planes of stage `k` (0-based), as `int(64 * width * 2**k)` in Python.
    fn planes(&self, k: usize) -> usize {
        (64.0 * self.width * (1usize << k) as f64).floor() as usize
    }

    /// Width of the pooled features: `planes(3) · expansion` (512 for ResNet-18, 2048 for 50).
    pub fn feature_dim(&self) -> usize {
        self.planes(3) * self.block.expansion()
    }

    fn validate(&self) -> Result<()> {
        if !(self.width.is_finite() && self.width > 0.0) || self.planes(0) == 0 {
            return Err(Error::InvalidConfig(format!(
                "width multiplier {} leaves the stem without channels (needs 64 · width ≥ 1)",
                self.width
            )));
        }
        if self.layers.contains(&0) {
            return Err(Error::InvalidConfig(format!(
                "every stage needs at least one block, got layers {:?}",
                self.layers
            )));
        }
        if self.bn_splits == 0 {
            return Err(Error::InvalidConfig("bn_splits must be at least 1".into()));
        }
        Ok(())
    }
}

/// Kaiming-normal with fan-out, torchvision's convolution init.
const CONV_INIT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanOut,
    non_linearity: NonLinearity::ReLU,
};

#[derive(Debug, Clone)]
struct Conv {
    weight: Tensor,
    stride: usize,
    padding: usize,
}

/// Builds the pieces of one model while recording its state-dict entries in torchvision's order.
struct Builder<'a> {
    state: ModelState,
    bn_cfg: BatchNormConfig,
    conv_init: ConvInit,
    vb: VarBuilder<'a>,
}

impl Builder<'_> {
    fn conv(
        &mut self,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
    ) -> Result<Conv> {
        let init = self.conv_init.init(cin, k);
        let w = self
            .vb
            .pp(name)
            .get_with_hints((cout, cin, k, k), "weight", init)?;
        let weight = self.state.parameter(format!("{name}.weight"), w)?;
        Ok(Conv {
            weight,
            stride,
            padding: k / 2,
        })
    }

    fn bn(&mut self, name: &str, channels: usize, gamma: f64) -> Result<BatchNorm> {
        let bn = BatchNorm::with_weight_init(channels, self.bn_cfg, gamma, self.vb.pp(name))?;
        self.state.extend_prefixed(name, bn.model_state());
        Ok(bn)
    }
}

#[derive(Debug, Clone)]
struct Block {
    convs: Vec<Conv>,
    bns: Vec<BatchNorm>,
    downsample: Option<(Conv, BatchNorm)>,
}

impl Conv {
    /// Output dims of this convolution over NHWC `dims`.
    fn out_dims(&self, dims: &[usize]) -> Vec<usize> {
        let (k, s, p) = (self.weight.dim(2).unwrap_or(1), self.stride, self.padding);
        let out = |d: usize| (d + 2 * p).saturating_sub(k) / s + 1;
        vec![
            dims[0],
            out(dims[1]),
            out(dims[2]),
            self.weight.dim(0).unwrap_or(0),
        ]
    }
}

/// Whether a training step takes the fused residual-unit op (the fast backend on f32 CPU data).
fn fused(x: &Tensor, train: bool, backend: Backend) -> bool {
    train && backend == Backend::Fast && x.device().is_cpu() && x.dtype() == DType::F32
}

/// A conv + BatchNorm pair as one layer of a fused unit; `params` are the BatchNorm's affine
/// parameters.
fn conv_bn<'a>(conv: &'a Conv, params: &'a (Tensor, Tensor)) -> mocca_kernels::ConvBn<'a> {
    mocca_kernels::ConvBn {
        weight: &conv.weight,
        stride: conv.stride,
        padding: conv.padding,
        gamma: &params.0,
        beta: &params.1,
    }
}

/// One residual unit (a block, or the stem without a shortcut) of the fused training path.
struct FusedUnit<'a> {
    layers: Vec<(&'a Conv, &'a BatchNorm)>,
    downsample: Option<&'a (Conv, BatchNorm)>,
    residual: bool,
    /// Without a residual (a stem): whether its BatchNorm is followed by a ReLU.
    relu: bool,
}

/// Runs `units` as one fused training op and updates every BatchNorm's running statistics.
fn forward_fused_units(x: &Tensor, units: &[FusedUnit]) -> Result<Tensor> {
    // The layer-by-layer path's checks and messages, on the shapes each BatchNorm will see.
    let mut dims = x.dims().to_vec();
    let mut bn_dims = Vec::with_capacity(units.len());
    for u in units {
        let input = dims.clone();
        let mut unit_dims = Vec::with_capacity(u.layers.len() + 1);
        for (conv, bn) in &u.layers {
            dims = conv.out_dims(&dims);
            bn.check_dims(&dims, true)?;
            unit_dims.push(dims.clone());
        }
        if let Some((conv, bn)) = u.downsample {
            let d = conv.out_dims(&input);
            bn.check_dims(&d, true)?;
            unit_dims.push(d);
        }
        bn_dims.push(unit_dims);
    }
    let params: Vec<Vec<(Tensor, Tensor)>> = units
        .iter()
        .map(|u| u.bns().iter().map(|bn| bn.affine_params(x)).collect())
        .collect::<Result<_>>()?;
    let mains: Vec<Vec<mocca_kernels::ConvBn>> = units
        .iter()
        .zip(&params)
        .map(|(u, p)| {
            u.layers
                .iter()
                .zip(p)
                .map(|((c, _), p)| conv_bn(c, p))
                .collect()
        })
        .collect();
    let specs: Vec<mocca_kernels::ResidualUnit> = units
        .iter()
        .zip(&mains)
        .zip(&params)
        .map(|((u, main), p)| mocca_kernels::ResidualUnit {
            main,
            shortcut: match u.downsample {
                Some((conv, _)) => {
                    mocca_kernels::Shortcut::Projection(conv_bn(conv, &p[u.layers.len()]))
                }
                None if u.residual => mocca_kernels::Shortcut::Identity,
                None if u.relu => mocca_kernels::Shortcut::None,
                None => mocca_kernels::Shortcut::NoneWithoutRelu,
            },
        })
        .collect();
    let first_bn = units[0].layers[0].1;
    let cfg = first_bn.config();
    let out = mocca_kernels::residual_units_train(x, &specs, cfg.eps, cfg.bn_splits)?;
    for ((u, stats), dims) in units.iter().zip(&out.stats).zip(&bn_dims) {
        for ((bn, (mean, var)), d) in u.bns().into_iter().zip(stats).zip(dims) {
            bn.update_running_stats(d, mean, var)?;
        }
    }
    Ok(out.y)
}

impl<'a> FusedUnit<'a> {
    /// The unit's BatchNorms in the fused op's order: main path, then the projection's.
    fn bns(&self) -> Vec<&'a BatchNorm> {
        let mut v: Vec<&BatchNorm> = self.layers.iter().map(|(_, bn)| *bn).collect();
        v.extend(self.downsample.map(|(_, bn)| bn));
        v
    }
}

impl Block {
    fn fused_unit(&self) -> FusedUnit<'_> {
        FusedUnit {
            layers: self.convs.iter().zip(&self.bns).collect(),
            downsample: self.downsample.as_ref(),
            residual: true,
            relu: true,
        }
    }

    fn forward(&self, x: &Tensor, train: bool, backend: Backend) -> Result<Tensor> {
        let identity = match &self.downsample {
            Some((conv, bn)) => {
                let h = backend.conv2d(x, &conv.weight, conv.stride, conv.padding)?;
                bn.forward_fused(&h, train, false)?
            }
            None => x.clone(),
        };
        let last = self.convs.len() - 1;
        let mut h = x.clone();
        for (i, (conv, bn)) in self.convs.iter().zip(&self.bns).enumerate() {
            h = backend.conv2d(&h, &conv.weight, conv.stride, conv.padding)?;
            h = bn.forward_fused(&h, train, i != last)?;
        }
        Ok(backend.add_relu(&h, &identity)?)
    }
}

/// A ResNet returning pooled features `[N, feature_dim]` for NCHW images `[N, 3, H, W]`.
///
/// Parameters and buffers carry torchvision's state-dict names (`conv1.weight`,
/// `layer1.0.bn1.running_mean`, `layer2.0.downsample.0.weight`, ...) in torchvision's order;
/// torchvision's `fc.weight` / `fc.bias` are not part of the model, so loading a torchvision
/// checkpoint reports exactly those two as unused. Train or evaluate through
/// [`ModuleT::forward_t`]; training mode uses batch statistics and updates the running ones.
///
/// `clone()` gives another handle to the *same* parameters and buffers. For an independent
/// copy (MoCo's key encoder) build a second model from its own `VarMap` and
/// [`StateDict::load_state_dict`] the first one's [`StateDict::state_dict`] into it.
#[derive(Debug, Clone)]
pub struct ResNet {
    cfg: ResNetConfig,
    conv1: Conv,
    bn1: BatchNorm,
    blocks: Vec<Block>,
    state: ModelState,
}

impl ResNet {
    /// Builds the model from `vb`: a `VarMap`-backed builder creates fresh trainable weights
    /// (torchvision's init: Kaiming-normal fan-out convolutions, BatchNorm weight 1 and bias 0);
    /// a safetensors-backed one loads a torchvision checkpoint, running statistics included.
    pub fn new(cfg: &ResNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        // The layers group contiguous samples; a strided grouping is one reordering of the
        // batch around the whole network (`forward_features`), not one per layer.
        let bn_cfg = BatchNormConfig {
            bn_splits: cfg.bn_splits,
            grouping: SplitGrouping::Contiguous,
            backend: cfg.backend,
            ..Default::default()
        };
        let mut b = Builder {
            state: ModelState::new(),
            bn_cfg,
            conv_init: cfg.stem_init,
            vb,
        };
        let stem_channels = cfg.planes(0);
        let conv1 = match cfg.stem {
            Stem::Cifar => b.conv("conv1", 3, stem_channels, 3, 1)?,
            Stem::ImageNet => b.conv("conv1", 3, stem_channels, 7, 2)?,
        };
        b.conv_init = cfg.conv_init;
        let bn1 = b.bn("bn1", stem_channels, 1.0)?;
        let expansion = cfg.block.expansion();
        let last_gamma = if cfg.zero_init_residual { 0.0 } else { 1.0 };
        let mut inplanes = stem_channels;
        let mut blocks = Vec::new();
        for (k, &n_blocks) in cfg.layers.iter().enumerate() {
            let planes = cfg.planes(k);
            for j in 0..n_blocks {
                let stride = if k > 0 && j == 0 { 2 } else { 1 };
                let p = format!("layer{}.{j}", k + 1);
                let (convs, bns) = match cfg.block {
                    BlockKind::Basic => {
                        let c1 = b.conv(&format!("{p}.conv1"), inplanes, planes, 3, stride)?;
                        let n1 = b.bn(&format!("{p}.bn1"), planes, 1.0)?;
                        let c2 = b.conv(&format!("{p}.conv2"), planes, planes, 3, 1)?;
                        let n2 = b.bn(&format!("{p}.bn2"), planes, last_gamma)?;
                        (vec![c1, c2], vec![n1, n2])
                    }
                    BlockKind::Bottleneck => {
                        let c1 = b.conv(&format!("{p}.conv1"), inplanes, planes, 1, 1)?;
                        let n1 = b.bn(&format!("{p}.bn1"), planes, 1.0)?;
                        let c2 = b.conv(&format!("{p}.conv2"), planes, planes, 3, stride)?;
                        let n2 = b.bn(&format!("{p}.bn2"), planes, 1.0)?;
                        let c3 = b.conv(&format!("{p}.conv3"), planes, planes * 4, 1, 1)?;
                        let n3 = b.bn(&format!("{p}.bn3"), planes * 4, last_gamma)?;
                        (vec![c1, c2, c3], vec![n1, n2, n3])
                    }
                };
                let out = planes * expansion;
                let downsample = if stride != 1 || inplanes != out {
                    let c = b.conv(&format!("{p}.downsample.0"), inplanes, out, 1, stride)?;
                    let n = b.bn(&format!("{p}.downsample.1"), out, 1.0)?;
                    Some((c, n))
                } else {
                    None
                };
                blocks.push(Block {
                    convs,
                    bns,
                    downsample,
                });
                inplanes = out;
            }
        }
        Ok(Self {
            cfg: cfg.clone(),
            conv1,
            bn1,
            blocks,
            state: b.state,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    /// Width of the output features.
    pub fn feature_dim(&self) -> usize {
        self.cfg.feature_dim()
    }

    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let bn_splits = self.cfg.bn_splits;
        if train && bn_splits > 1 && self.cfg.bn_grouping == SplitGrouping::Strided {
            // The layers group contiguous samples: reorder the batch so that the strided
            // groups are contiguous, and restore the order of the pooled features.
            self.check_input(x)?;
            if x.dim(0)? % bn_splits != 0 {
                return Err(Error::InvalidInput(format!(
                    "split BatchNorm with {bn_splits} splits needs a batch divisible by {bn_splits}, got {}",
                    x.dim(0)?
                )));
            }
            return with_strided_groups(x, bn_splits, |x| self.forward_grouped(x, train));
        }
        self.forward_grouped(x, train)
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != 3 {
            return Err(Error::InvalidInput(format!(
                "ResNet expects NCHW images [N, 3, H, W], got {dims:?}"
            )));
        }
        let min = match self.cfg.stem {
            Stem::Cifar => 1,
            Stem::ImageNet => 4,
        };
        if dims[2] < min || dims[3] < min {
            return Err(Error::InvalidInput(format!(
                "images of {}x{} are too small for the {:?} stem",
                dims[2], dims[3], self.cfg.stem
            )));
        }
        Ok(())
    }

    /// The forward pass with split BatchNorm groups of contiguous samples.
    fn forward_grouped(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x)?;
        let backend = self.cfg.backend;
        let x = backend.to_layout(x)?;
        let c = &self.conv1;
        let h = if fused(&x, train, backend) {
            // One fused op from the stem to the last block (the ImageNet stem's max-pool sits
            // between two).
            let stem = FusedUnit {
                layers: vec![(c, &self.bn1)],
                downsample: None,
                residual: false,
                relu: self.cfg.stem_relu,
            };
            let blocks = self.blocks.iter().map(Block::fused_unit);
            if self.cfg.stem == Stem::ImageNet {
                let h = forward_fused_units(&x, &[stem])?;
                let h = backend.max_pool2d(&h, 3, 2, 1)?;
                forward_fused_units(&h, &blocks.collect::<Vec<_>>())?
            } else {
                forward_fused_units(&x, &std::iter::once(stem).chain(blocks).collect::<Vec<_>>())?
            }
        } else {
            let h = backend.conv2d(&x, &c.weight, c.stride, c.padding)?;
            let mut h = self.bn1.forward_fused(&h, train, self.cfg.stem_relu)?;
            if self.cfg.stem == Stem::ImageNet {
                h = backend.max_pool2d(&h, 3, 2, 1)?;
            }
            for block in &self.blocks {
                h = block.forward(&h, train, backend)?;
            }
            h
        };
        Ok(backend.global_avg_pool(&h)?)
    }
}

impl ModuleT for ResNet {
    /// Pooled features `[N, feature_dim]`; `train` selects batch statistics (and updates the
    /// running ones) or running statistics.
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.forward_features(xs, train)?)
    }
}

impl StateDict for ResNet {
    fn model_state(&self) -> &ModelState {
        &self.state
    }
}
