//! Projection and prediction heads: one table-driven MLP with the presets of the papers, named
//! and laid out as lightly's `lightly.models.modules.heads`.

use candle_core::{ModuleT, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::error::{Error, Result};
use crate::layers::{autocast, Backend};
use crate::norm::{BatchNorm, BatchNormConfig, SplitGrouping};
use crate::state::{ModelState, StateDict};

/// Normalisation after a block's linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadNorm {
    /// None.
    None,
    /// `BatchNorm1d` with learnable scale and shift.
    BatchNorm,
    /// `BatchNorm1d(affine=False)` (SimSiam's projector output).
    BatchNormNoAffine,
}

/// One row of the table: `Linear(in_dim, out_dim)` [+ BatchNorm1d] [+ ReLU].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadBlock {
    pub in_dim: usize,
    pub out_dim: usize,
    pub norm: HeadNorm,
    pub relu: bool,
    /// Linear bias; lightly's rule is "bias unless followed by BatchNorm".
    pub bias: bool,
}

impl HeadBlock {
    /// A block with lightly's bias rule: `bias = (norm == HeadNorm::None)`.
    pub fn new(in_dim: usize, out_dim: usize, norm: HeadNorm, relu: bool) -> Self {
        Self {
            in_dim,
            out_dim,
            norm,
            relu,
            bias: norm == HeadNorm::None,
        }
    }
}

/// The table of a [`ProjectionHead`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionHeadConfig {
    pub blocks: Vec<HeadBlock>,
    /// Split BatchNorm groups for training-mode statistics (see [`BatchNormConfig::bn_splits`]).
    pub bn_splits: usize,
    /// Which samples share a split BatchNorm group.
    pub bn_grouping: SplitGrouping,
    /// Compute path of the BatchNorm layers.
    pub backend: Backend,
}

impl ProjectionHeadConfig {
    /// A head made of `blocks`, ordinary BatchNorm, default backend.
    pub fn new(blocks: Vec<HeadBlock>) -> Self {
        Self {
            blocks,
            bn_splits: 1,
            bn_grouping: SplitGrouping::default(),
            backend: Backend::default(),
        }
    }

    /// Input width.
    pub fn input_dim(&self) -> usize {
        self.blocks.first().map_or(0, |b| b.in_dim)
    }

    /// Output width.
    pub fn output_dim(&self) -> usize {
        self.blocks.last().map_or(0, |b| b.out_dim)
    }
}

/// Stacks lightly's block list for `num_layers` linear layers (`1` = a single linear map).
fn mlp(
    input_dim: usize,
    hidden_dim: usize,
    output_dim: usize,
    num_layers: usize,
    hidden_norm: HeadNorm,
    output_norm: HeadNorm,
) -> Vec<HeadBlock> {
    if num_layers <= 1 {
        return vec![HeadBlock::new(input_dim, output_dim, output_norm, false)];
    }
    let mut blocks = vec![HeadBlock::new(input_dim, hidden_dim, hidden_norm, true)];
    for _ in 2..num_layers {
        blocks.push(HeadBlock::new(hidden_dim, hidden_dim, hidden_norm, true));
    }
    blocks.push(HeadBlock::new(hidden_dim, output_dim, output_norm, false));
    blocks
}

/// lightly's two-layer head with BatchNorm in the middle: `Linear → BN → ReLU → Linear` (the
/// BYOL projector and predictor, SimSiam's predictor).
fn bn_mlp2(input_dim: usize, hidden_dim: usize, output_dim: usize) -> ProjectionHeadConfig {
    ProjectionHeadConfig::new(mlp(
        input_dim,
        hidden_dim,
        output_dim,
        2,
        HeadNorm::BatchNorm,
        HeadNorm::None,
    ))
}

fn norm_if(batch_norm: bool) -> HeadNorm {
    if batch_norm {
        HeadNorm::BatchNorm
    } else {
        HeadNorm::None
    }
}

/// MoCo's projection head (lightly's `MoCoProjectionHead`).
///
/// v1 (He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", 2020):
/// the encoder's last layer is a linear map to 128-d. v2 (Chen et al., "Improved Baselines with
/// Momentum Contrastive Learning", 2020): a 2-layer MLP, hidden width = feature width, ReLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoCoProjectionHead {
    pub input_dim: usize,
    pub hidden_dim: usize,
    pub output_dim: usize,
    /// Linear layers; 1 is v1's single linear map (lightly itself always stacks at least two).
    pub num_layers: usize,
    pub batch_norm: bool,
}

impl MoCoProjectionHead {
    /// MoCo v1: `Linear(input_dim, 128)`.
    pub fn v1(input_dim: usize) -> Self {
        Self {
            input_dim,
            hidden_dim: input_dim,
            output_dim: 128,
            num_layers: 1,
            batch_norm: false,
        }
    }

    /// MoCo v2: `Linear(d, d) → ReLU → Linear(d, 128)`, `d = input_dim`.
    pub fn v2(input_dim: usize) -> Self {
        Self {
            input_dim,
            hidden_dim: input_dim,
            output_dim: 128,
            num_layers: 2,
            batch_norm: false,
        }
    }
}

impl From<MoCoProjectionHead> for ProjectionHeadConfig {
    fn from(h: MoCoProjectionHead) -> Self {
        let norm = norm_if(h.batch_norm);
        Self::new(mlp(
            h.input_dim,
            h.hidden_dim,
            h.output_dim,
            h.num_layers,
            norm,
            norm,
        ))
    }
}

/// SimCLR's projection head (Chen et al., "A Simple Framework for Contrastive Learning of
/// Visual Representations", 2020), as lightly's `SimCLRProjectionHead`: every linear layer
/// followed by BatchNorm, ReLU between them, none after the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimCLRProjectionHead {
    pub input_dim: usize,
    pub hidden_dim: usize,
    pub output_dim: usize,
    /// Linear layers: 2 for SimCLR v1, 3 for v2.
    pub num_layers: usize,
    pub batch_norm: bool,
}

impl SimCLRProjectionHead {
    /// `Linear(d, d) → BN → ReLU → Linear(d, 128) → BN`, `d = input_dim`.
    pub fn new(input_dim: usize) -> Self {
        Self {
            input_dim,
            hidden_dim: input_dim,
            output_dim: 128,
            num_layers: 2,
            batch_norm: true,
        }
    }
}

impl From<SimCLRProjectionHead> for ProjectionHeadConfig {
    fn from(h: SimCLRProjectionHead) -> Self {
        let norm = norm_if(h.batch_norm);
        Self::new(mlp(
            h.input_dim,
            h.hidden_dim,
            h.output_dim,
            h.num_layers.max(2),
            norm,
            norm,
        ))
    }
}

/// BYOL's projector (Grill et al., "Bootstrap Your Own Latent", 2020), as lightly's
/// `BYOLProjectionHead`: `Linear → BN → ReLU → Linear`; defaults 2048 → 4096 → 256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BYOLProjectionHead {
    pub input_dim: usize,
    pub hidden_dim: usize,
    pub output_dim: usize,
}

impl Default for BYOLProjectionHead {
    fn default() -> Self {
        Self {
            input_dim: 2048,
            hidden_dim: 4096,
            output_dim: 256,
        }
    }
}

impl From<BYOLProjectionHead> for ProjectionHeadConfig {
    fn from(h: BYOLProjectionHead) -> Self {
        bn_mlp2(h.input_dim, h.hidden_dim, h.output_dim)
    }
}

/// SimSiam's projector (Chen & He, "Exploring Simple Siamese Representation Learning", 2021),
/// as lightly's `SimSiamProjectionHead`: three linear layers without bias, each followed by
/// BatchNorm, ReLU after the first two, the last BatchNorm without affine parameters;
/// defaults 2048 → 2048 → 2048.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimSiamProjectionHead {
    pub input_dim: usize,
    pub hidden_dim: usize,
    pub output_dim: usize,
}

impl Default for SimSiamProjectionHead {
    fn default() -> Self {
        Self {
            input_dim: 2048,
            hidden_dim: 2048,
            output_dim: 2048,
        }
    }
}

impl From<SimSiamProjectionHead> for ProjectionHeadConfig {
    fn from(h: SimSiamProjectionHead) -> Self {
        Self::new(mlp(
            h.input_dim,
            h.hidden_dim,
            h.output_dim,
            3,
            HeadNorm::BatchNorm,
            HeadNorm::BatchNormNoAffine,
        ))
    }
}

/// MoCo v3's MLPs (Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision
/// Transformers", 2021), as facebookresearch/moco-v3's `_build_mlp(num_layers, input_dim,
/// mlp_dim, output_dim, last_bn)`: every linear layer without bias; after each but the last a
/// BatchNorm1d and a ReLU; after the last a BatchNorm1d without affine parameters if
/// `last_bn`. `MoCo_ResNet` builds the projector with 2 layers and `last_bn` (the paper's text
/// and `MoCo_ViT`: 3), the predictor with 2 layers and no BatchNorm after the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoCoV3Mlp {
    pub num_layers: usize,
    pub input_dim: usize,
    pub mlp_dim: usize,
    pub output_dim: usize,
    pub last_bn: bool,
}

impl MoCoV3Mlp {
    /// `MoCo_ResNet`'s projector: `_build_mlp(2, input_dim, 4096, 256)`.
    pub fn resnet_projector(input_dim: usize) -> Self {
        Self {
            num_layers: 2,
            input_dim,
            mlp_dim: 4096,
            output_dim: 256,
            last_bn: true,
        }
    }

    /// `MoCo_ResNet`'s predictor: `_build_mlp(2, 256, 4096, 256, last_bn=False)`.
    pub fn resnet_predictor() -> Self {
        Self {
            num_layers: 2,
            input_dim: 256,
            mlp_dim: 4096,
            output_dim: 256,
            last_bn: false,
        }
    }
}

impl From<MoCoV3Mlp> for ProjectionHeadConfig {
    fn from(h: MoCoV3Mlp) -> Self {
        let last = if h.last_bn {
            HeadNorm::BatchNormNoAffine
        } else {
            HeadNorm::None
        };
        let mut blocks = mlp(
            h.input_dim,
            h.mlp_dim,
            h.output_dim,
            h.num_layers,
            HeadNorm::BatchNorm,
            last,
        );
        // moco-v3 builds every Linear with bias=False, even the last one without BatchNorm.
        for b in &mut blocks {
            b.bias = false;
        }
        Self::new(blocks)
    }
}

/// BYOL's predictor (Grill et al., "Bootstrap Your Own Latent", 2020), as lightly's
/// `BYOLPredictionHead`: `Linear → BN → ReLU → Linear`; defaults 256 → 4096 → 256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BYOLPredictionHead {
    pub input_dim: usize,
    pub hidden_dim: usize,
    pub output_dim: usize,
}

impl Default for BYOLPredictionHead {
    fn default() -> Self {
        Self {
            input_dim: 256,
            hidden_dim: 4096,
            output_dim: 256,
        }
    }
}

impl From<BYOLPredictionHead> for ProjectionHeadConfig {
    fn from(h: BYOLPredictionHead) -> Self {
        bn_mlp2(h.input_dim, h.hidden_dim, h.output_dim)
    }
}

/// SimSiam's predictor (Chen & He, "Exploring Simple Siamese Representation Learning", 2021),
/// as lightly's `SimSiamPredictionHead`: `Linear → BN → ReLU → Linear`; defaults
/// 2048 → 512 → 2048 (a bottleneck).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimSiamPredictionHead {
    pub input_dim: usize,
    pub hidden_dim: usize,
    pub output_dim: usize,
}

impl Default for SimSiamPredictionHead {
    fn default() -> Self {
        Self {
            input_dim: 2048,
            hidden_dim: 512,
            output_dim: 2048,
        }
    }
}

impl From<SimSiamPredictionHead> for ProjectionHeadConfig {
    fn from(h: SimSiamPredictionHead) -> Self {
        bn_mlp2(h.input_dim, h.hidden_dim, h.output_dim)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    weight: Tensor,
    bias: Option<Tensor>,
    bn: Option<BatchNorm>,
    relu: bool,
}

/// An MLP head `[N, in] → [N, out]` built from a [`ProjectionHeadConfig`] table.
///
/// Parameters are named as lightly's `ProjectionHead`, whose `nn.Sequential` numbers every
/// module: for a SimCLR head `layers.0.weight` (linear), `layers.1.{weight, bias, running_mean,
/// running_var, num_batches_tracked}` (BatchNorm), `layers.2` is the ReLU, `layers.3.weight`, ...
/// Linear layers are initialised as torch's `nn.Linear`: weight and bias uniform in
/// `±1/sqrt(in_dim)`.
#[derive(Debug, Clone)]
pub struct ProjectionHead {
    cfg: ProjectionHeadConfig,
    layers: Vec<Layer>,
    state: ModelState,
}

impl ProjectionHead {
    /// Builds the head from a table or a preset (`MoCoProjectionHead::v2(512)`, ...).
    pub fn new(cfg: impl Into<ProjectionHeadConfig>, vb: VarBuilder) -> Result<Self> {
        let cfg = cfg.into();
        if cfg.blocks.is_empty() {
            return Err(Error::InvalidConfig(
                "a projection head needs at least one block".into(),
            ));
        }
        for (i, pair) in cfg.blocks.windows(2).enumerate() {
            if pair[0].out_dim != pair[1].in_dim {
                return Err(Error::InvalidConfig(format!(
                    "head block {i} outputs {} features but block {} takes {}",
                    pair[0].out_dim,
                    i + 1,
                    pair[1].in_dim
                )));
            }
        }
        if let Some(b) = cfg.blocks.iter().find(|b| b.in_dim == 0 || b.out_dim == 0) {
            return Err(Error::InvalidConfig(format!(
                "head block with zero width: {b:?}"
            )));
        }
        let mut state = ModelState::new();
        let mut layers = Vec::with_capacity(cfg.blocks.len());
        let mut index = 0;
        for block in &cfg.blocks {
            let vb_lin = vb.pp(format!("layers.{index}"));
            let bound = 1.0 / (block.in_dim as f64).sqrt();
            let init = Init::Uniform {
                lo: -bound,
                up: bound,
            };
            let w = vb_lin.get_with_hints((block.out_dim, block.in_dim), "weight", init)?;
            let weight = state.parameter(format!("layers.{index}.weight"), w)?;
            let bias = if block.bias {
                let b = vb_lin.get_with_hints(block.out_dim, "bias", init)?;
                Some(state.parameter(format!("layers.{index}.bias"), b)?)
            } else {
                None
            };
            index += 1;
            let bn = match block.norm {
                HeadNorm::None => None,
                HeadNorm::BatchNorm | HeadNorm::BatchNormNoAffine => {
                    let bn_cfg = BatchNormConfig {
                        affine: block.norm == HeadNorm::BatchNorm,
                        bn_splits: cfg.bn_splits,
                        grouping: cfg.bn_grouping,
                        backend: cfg.backend,
                        ..Default::default()
                    };
                    let name = format!("layers.{index}");
                    let bn = BatchNorm::new(block.out_dim, bn_cfg, vb.pp(&name))?;
                    state.extend_prefixed(&name, bn.model_state());
                    index += 1;
                    Some(bn)
                }
            };
            if block.relu {
                index += 1;
            }
            layers.push(Layer {
                weight,
                bias,
                bn,
                relu: block.relu,
            });
        }
        Ok(Self { cfg, layers, state })
    }

    /// The table the head was built from.
    pub fn config(&self) -> &ProjectionHeadConfig {
        &self.cfg
    }

    fn forward_head(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() != 2 || dims[1] != self.cfg.input_dim() {
            return Err(Error::InvalidInput(format!(
                "projection head expects [N, {}], got {dims:?}",
                self.cfg.input_dim()
            )));
        }
        let mut h = x.clone();
        for layer in &self.layers {
            h = h.matmul(&autocast(&layer.weight, &h)?.t()?)?;
            if let Some(b) = &layer.bias {
                h = h.broadcast_add(&autocast(b, &h)?)?;
            }
            h = match &layer.bn {
                Some(bn) => bn.forward_fused(&h, train, layer.relu)?,
                None if layer.relu => h.relu()?,
                None => h,
            };
        }
        Ok(h)
    }
}

impl ModuleT for ProjectionHead {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        Ok(self.forward_head(xs, train)?)
    }
}

impl StateDict for ProjectionHead {
    fn model_state(&self) -> &ModelState {
        &self.state
    }
}
