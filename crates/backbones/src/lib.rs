//! Trainable backbones and heads for contrastive learning: ResNet-18/34/50 with torchvision's
//! parameter names and the projection / prediction heads of MoCo (v1–v3), SimCLR, BYOL and
//! SimSiam.
//! Models only: the fast convolution, BatchNorm and pooling training ops they run on live in
//! [`mocca_kernels`] (crate `mocca-kernels`), which knows nothing of models.
//!
//! # Models
//! [`ResNet`] (He et al. 2016) maps NCHW images to pooled features `[N, feature_dim]`; it has
//! no classifier (`fc`). [`ProjectionHead`] is one table-driven MLP (`Linear` [+ BatchNorm]
//! [+ ReLU] blocks) with lightly's presets ([`MoCoProjectionHead`], [`SimCLRProjectionHead`],
//! [`BYOLProjectionHead`], [`BYOLPredictionHead`], [`SimSiamProjectionHead`],
//! [`SimSiamPredictionHead`]) and moco-v3's ([`MoCoV3Mlp`]). Both follow candle-nn's idiom: built
//! from a `*Config` and a `VarBuilder`, run through `ModuleT::forward_t(xs, train)`.
//!
//! # Parameters, buffers and state dicts
//! Trainable parameters come from the `VarBuilder` (with a `VarMap` behind it they are its
//! variables, so candle-nn optimizers and `VarMap::save` see them). BatchNorm running
//! statistics and `num_batches_tracked` are *buffers*: each model keeps them in its own store
//! and never asks the `VarBuilder` to create them, so the `VarMap` holds exactly the trainable
//! parameters and an EMA over them (MoCo's momentum encoder) is unambiguous. Buffers are read
//! from the builder only when it already holds them (a safetensors checkpoint).
//! [`StateDict`] lists both under PyTorch's names in PyTorch's order
//! ([`StateDict::named_parameters`], [`StateDict::named_buffers`], [`StateDict::state_dict`])
//! and saves / loads safetensors that torchvision reads and writes (`num_batches_tracked` as
//! I64).
//!
//! # Backends
//! [`Backend::Fast`] runs [`mocca_kernels`] on NHWC activations (the model transposes its NCHW
//! input once at the stem); [`Backend::Native`] runs Candle's own NCHW ops and is the reference
//! for tests and benchmarks. Parameters and results agree between them up to float rounding.
//!
//! On the CPU in f32, a training-mode forward of the fast backend runs the stem and every block
//! as one op ([`mocca_kernels::residual_units_train`]) with its own backward pass, and the
//! convolutions pick direct register-tile kernels or GEMMs per layer (docs/benchmarks.md has the
//! figures).
//! Its activation buffers are 1–32 MiB each: under glibc, a program built on this crate trains
//! faster with `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824` (or the
//! same two `mallopt` calls, as `cargo xtask` makes), which keep them on the heap between steps.
//!
//! # Mixed precision
//! A model computes in the dtype of its input. Fed bf16 images, an f32 model runs as PyTorch's
//! autocast does: every convolution and linear layer casts its f32 weight to bf16 (the cast is
//! part of the graph, so gradients reach the f32 parameters in f32), BatchNorm normalises and
//! keeps its running statistics in f32 and returns bf16. Candle's CPU convolution has no bf16
//! kernel, so on the CPU bf16 convolutions are widened to f32 and rounded back (slow; for tests).
//!
//! # Example
//! ```
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use mocca_backbones::{MoCoProjectionHead, ProjectionHead, ResNet, ResNetConfig, StateDict, Stem};
//!
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let cfg = ResNetConfig { stem: Stem::Cifar, width: 0.125, ..ResNetConfig::resnet18() };
//! let backbone = ResNet::new(&cfg, vb.pp("backbone"))?;
//! let head = ProjectionHead::new(MoCoProjectionHead::v2(backbone.feature_dim()), vb.pp("head"))?;
//!
//! let images = Tensor::rand(0f32, 1., (4, 3, 32, 32), &Device::Cpu)?;
//! let z = head.forward_t(&backbone.forward_t(&images, true)?, true)?;
//! assert_eq!(z.dims(), &[4, 128]);
//! assert_eq!(backbone.named_parameters()[0].0, "conv1.weight");
//! // The VarMap holds the parameters only (no running statistics).
//! assert_eq!(varmap.all_vars().len(), backbone.named_parameters().len() + 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backbone;
mod error;
mod heads;
mod layers;
mod norm;
mod resnet;
mod state;
mod vit;

pub use backbone::Backbone;
pub use error::{Error, Result};
pub use heads::{
    BYOLPredictionHead, BYOLProjectionHead, HeadBlock, HeadNorm, MoCoProjectionHead, MoCoV3Mlp,
    ProjectionHead, ProjectionHeadConfig, SimCLRProjectionHead, SimSiamPredictionHead,
    SimSiamProjectionHead,
};
pub use layers::Backend;
pub use norm::{strided_group_order, BatchNorm, BatchNormConfig, SplitBatchNorm, SplitGrouping};
pub use resnet::{BlockKind, ConvInit, ResNet, ResNetConfig, Stem};
pub use state::{ModelState, StateDict};
pub use vit::{ViTConfig, ViTStyle, VisionTransformer};
