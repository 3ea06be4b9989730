//! The prediction head of BYOL, SimSiam and MoCo v3: an MLP on the online encoder's output,
//! trained with it, never copied into a momentum encoder.

use std::collections::HashMap;

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::VarMap;
use mocca_backbones::{ProjectionHead, ProjectionHeadConfig, StateDict};

use crate::error::Result;
use crate::init::seeded_var_builder;

/// A predictor `q(z)` with seeded weights (torch's `nn.Linear` initialisation, as every
/// [`ProjectionHead`]). State names are the head's (`layers.0.weight`, …).
pub struct Predictor {
    head: ProjectionHead,
    // Owns the trainable variables the head's weights are.
    _varmap: VarMap,
}

impl Predictor {
    /// Builds the MLP of `cfg` (e.g. `BYOLPredictionHead`, `SimSiamPredictionHead`,
    /// `MoCoV3Mlp::resnet_predictor()`) with weights drawn from `seed`.
    pub fn new(cfg: impl Into<ProjectionHeadConfig>, seed: u64, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, DType::F32, device);
        let head = ProjectionHead::new(cfg, vb.pp("predictor"))?;
        Ok(Self {
            head,
            _varmap: varmap,
        })
    }

    /// `q(z)`; `train` selects BatchNorm's training behaviour.
    pub fn forward(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.head.forward_t(&z.to_dtype(DType::F32)?, train)?)
    }

    pub fn head(&self) -> &ProjectionHead {
        &self.head
    }

    /// Input (and output) width.
    pub fn input_dim(&self) -> usize {
        self.head.config().input_dim()
    }

    pub fn named_parameters(&self) -> Vec<(String, Var)> {
        self.head.named_parameters()
    }

    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self.head.state_dict()?)
    }

    /// Sets every entry of [`Predictor::state_dict`]; a missing entry or a wrong shape is an
    /// error.
    pub fn load_state_dict(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.head.load_state_dict(tensors)?;
        Ok(())
    }
}
