//! [`Encoder`] over a `mocca-backbones` backbone (a ResNet or a ViT) and projection head.

use std::collections::HashMap;

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::VarMap;
use mocca_backbones::{
    Backbone, ProjectionHead, ProjectionHeadConfig, ResNet, ResNetConfig, StateDict, ViTConfig,
    VisionTransformer,
};

use crate::encoder::Encoder;
use crate::error::{MethodError, Result};
use crate::init::seeded_var_builder;
use crate::precision::Precision;

/// A backbone (a ResNet, [`BackboneEncoder::new`], or a ViT, [`BackboneEncoder::vit`])
/// followed by a projection head, with seeded weights.
///
/// State names are the backbone's keys under `backbone.` (torchvision's for a ResNet, timm's
/// for a ViT) and the head's under `head.` (`backbone.conv1.weight`, `head.layers.0.weight`).
/// Split BatchNorm (MoCo's single-device shuffle-BN) is configured through
/// `ResNetConfig::bn_splits` / `ProjectionHeadConfig::bn_splits`.
pub struct BackboneEncoder {
    backbone: Backbone,
    head: ProjectionHead,
    varmap: VarMap,
    precision: Precision,
}

impl BackboneEncoder {
    /// Builds both parts with weights drawn from `seed` (the same seed gives
    /// the same weights; see [`crate::init`]).
    pub fn new(
        backbone: &ResNetConfig,
        head: ProjectionHeadConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        Self::build(backbone.feature_dim(), head, seed, device, |vb| {
            Ok(Backbone::ResNet(ResNet::new(backbone, vb)?))
        })
    }

    /// A Vision Transformer and a projection head on its class token, weights from `seed`.
    pub fn vit(
        backbone: &ViTConfig,
        head: ProjectionHeadConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        Self::build(backbone.feature_dim(), head, seed, device, |vb| {
            Ok(Backbone::ViT(VisionTransformer::new(backbone, vb)?))
        })
    }

    fn build(
        feature_dim: usize,
        head: ProjectionHeadConfig,
        seed: u64,
        device: &Device,
        backbone: impl FnOnce(candle_nn::VarBuilder) -> Result<Backbone>,
    ) -> Result<Self> {
        if head.input_dim() != feature_dim {
            return Err(MethodError::InvalidConfig(format!(
                "the projection head takes {} inputs but the backbone gives {feature_dim} features",
                head.input_dim(),
            )));
        }
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, DType::F32, device);
        let backbone = backbone(vb.pp("backbone"))?;
        let head = ProjectionHead::new(head, vb.pp("head"))?;
        Ok(Self {
            backbone,
            head,
            varmap,
            precision: Precision::F32,
        })
    }

    /// The same encoder computing in `precision` (f32 by default). The
    /// parameters stay f32 either way; see [`Precision::Bf16`].
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The arithmetic of [`Encoder::features`] and [`Encoder::project`].
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The backbone, e.g. to export it with the reference's key names
    /// (`encoder.backbone().save_safetensors(path)`).
    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    pub fn head(&self) -> &ProjectionHead {
        &self.head
    }

    /// The `VarMap` holding the trainable parameters.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }
}

fn prefixed<T>(
    prefix: &'static str,
    entries: Vec<(String, T)>,
) -> impl Iterator<Item = (String, T)> {
    entries
        .into_iter()
        .map(move |(n, t)| (format!("{prefix}.{n}"), t))
}

fn check_entries(
    part: &dyn StateDictKeys,
    prefix: &str,
    tensors: &HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    let mut sub = HashMap::new();
    for (name, shape) in part.keys() {
        let full = format!("{prefix}.{name}");
        let t = tensors
            .get(&full)
            .ok_or_else(|| MethodError::StateMismatch(format!("state has no `{full}`")))?;
        if t.dims() != shape.as_slice() {
            return Err(MethodError::StateMismatch(format!(
                "`{full}` has shape {:?}, the model expects {shape:?}",
                t.dims()
            )));
        }
        sub.insert(name, t.clone());
    }
    Ok(sub)
}

trait StateDictKeys {
    fn keys(&self) -> Vec<(String, Vec<usize>)>;
}

impl<T: StateDict> StateDictKeys for T {
    fn keys(&self) -> Vec<(String, Vec<usize>)> {
        self.model_state().keys()
    }
}

impl Encoder for BackboneEncoder {
    // Both parts take their input in the compute dtype and hand back f32 (a
    // no-op in f32), so callers never see bf16 tensors.
    fn features(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let x = images.to_dtype(self.precision.compute_dtype())?;
        Ok(self.backbone.forward_t(&x, train)?.to_dtype(DType::F32)?)
    }

    fn project(&self, features: &Tensor, train: bool) -> Result<Tensor> {
        let h = features.to_dtype(self.precision.compute_dtype())?;
        Ok(self.head.forward_t(&h, train)?.to_dtype(DType::F32)?)
    }

    fn output_dim(&self) -> usize {
        self.head.config().output_dim()
    }

    fn named_parameters(&self) -> Vec<(String, Var)> {
        prefixed("backbone", self.backbone.named_parameters())
            .chain(prefixed("head", self.head.named_parameters()))
            .collect()
    }

    fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(prefixed("backbone", self.backbone.state_dict()?)
            .chain(prefixed("head", self.head.state_dict()?))
            .collect())
    }

    fn load_state_dict(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        // Check both parts before touching either, so an error changes nothing.
        let backbone = check_entries(&self.backbone, "backbone", tensors)?;
        let head = check_entries(&self.head, "head", tensors)?;
        self.backbone.load_state_dict(&backbone)?;
        self.head.load_state_dict(&head)?;
        Ok(())
    }
}
