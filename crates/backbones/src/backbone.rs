//! One type for every backbone a method can train: the ResNets and the Vision Transformer.

use candle_core::{ModuleT, Tensor};

use crate::resnet::ResNet;
use crate::state::{ModelState, StateDict};
use crate::vit::VisionTransformer;

/// A backbone: images `[N, 3, H, W]` to features `[N, feature_dim]`, with its state dict under
/// the reference's key names (torchvision's for the ResNets, timm's for the ViT).
#[derive(Debug, Clone)]
pub enum Backbone {
    ResNet(ResNet),
    ViT(VisionTransformer),
}

impl Backbone {
    /// Width of the features.
    pub fn feature_dim(&self) -> usize {
        match self {
            Self::ResNet(r) => r.feature_dim(),
            Self::ViT(v) => v.config().feature_dim(),
        }
    }
}

impl ModuleT for Backbone {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Self::ResNet(r) => r.forward_t(xs, train),
            Self::ViT(v) => v.forward_t(xs, train),
        }
    }
}

impl StateDict for Backbone {
    fn model_state(&self) -> &ModelState {
        match self {
            Self::ResNet(r) => r.model_state(),
            Self::ViT(v) => v.model_state(),
        }
    }
}
