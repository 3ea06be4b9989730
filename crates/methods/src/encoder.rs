//! The encoder seam between methods and models.
//!
//! A method needs four things from a network: backbone features, the
//! projection head applied to them, the trainable parameters (for the
//! optimizer and the momentum update) and the full state including BatchNorm
//! buffers (for checkpoints and for copying the query encoder into the key
//! encoder). [`Encoder`] asks for exactly that, so any model can be trained:
//! [`BackboneEncoder`](crate::BackboneEncoder) wraps `mocca-backbones`' ResNet and
//! projection head; tests use tiny synthetic networks.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::error::Result;
use crate::eval::FeatureLayer;

/// A backbone `f` followed by a projection head `g`: `z = g(f(x))`.
///
/// `train` selects BatchNorm's training behaviour (batch statistics, running
/// statistics updated) as in `ModuleT::forward_t`.
pub trait Encoder {
    /// Backbone features `f(x)`, `[N, F]`.
    fn features(&self, images: &Tensor, train: bool) -> Result<Tensor>;

    /// Projection head `g(h)` of backbone features, `[N, D]`.
    fn project(&self, features: &Tensor, train: bool) -> Result<Tensor>;

    /// Width of the head's output (the embedding the loss and the queue see).
    fn output_dim(&self) -> usize;

    /// Trainable parameters with stable, unique names (the optimizer and the
    /// momentum update pair parameters by name). Never BatchNorm buffers.
    fn named_parameters(&self) -> Vec<(String, Var)>;

    /// Every tensor of the model's state (parameters and buffers) by name.
    fn state_dict(&self) -> Result<Vec<(String, Tensor)>>;

    /// Sets every entry of [`Encoder::state_dict`] from `tensors`; a missing
    /// entry or a shape mismatch is an error and leaves the model unchanged.
    fn load_state_dict(&self, tensors: &HashMap<String, Tensor>) -> Result<()>;

    /// `g(f(x))`.
    fn forward(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.features(images, train)?;
        self.project(&h, train)
    }

    /// The output of `layer` for `images`.
    fn embed(&self, images: &Tensor, layer: FeatureLayer, train: bool) -> Result<Tensor> {
        match layer {
            FeatureLayer::Backbone => self.features(images, train),
            FeatureLayer::Head => self.forward(images, train),
        }
    }
}

/// Copies `src`'s whole state (parameters and buffers) into `dst`: the key
/// encoder's initialisation in MoCo (`param_k.data.copy_(param_q.data)`; the
/// buffers of both start equal too, since both are freshly built).
pub fn copy_state(src: &dyn Encoder, dst: &dyn Encoder) -> Result<()> {
    let state: HashMap<String, Tensor> = src
        .state_dict()?
        .into_iter()
        .map(|(n, t)| Ok((n, t.copy()?)))
        .collect::<Result<_>>()?;
    dst.load_state_dict(&state)
}
