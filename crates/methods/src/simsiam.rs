//! SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning"): one encoder,
//! a predictor, and a stop-gradient on the target branch; no negatives, no momentum encoder.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use mocca_losses::NegativeCosineSimilarity;

use crate::checkpoint;
use crate::collapse::StepEmbeddings;
use crate::encoder::Encoder;
use crate::error::Result;
use crate::eval::{EncoderRole, FeatureLayer, FeatureSource};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::predictor::Predictor;
use crate::schedule::LrSchedule;
use crate::siamese::Parts;
use crate::step::{check_views, finite_loss, loss_result};
use crate::{Method, StepStats};

/// SimSiam's hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSiamConfig {
    pub optimizer: OptimizerConfig,
    pub lr_schedule: LrSchedule,
    /// Detach the target branch `z` (the method). `false` removes the stop-gradient, the
    /// paper's Fig. 2 ablation, in which the representation collapses to a constant: kept to
    /// show the collapse monitor at work, never for training.
    pub stop_gradient: bool,
}

/// SimSiam as lightly's `examples/pytorch/simsiam.py` trains it.
///
/// Per step: `z_i = g(f(x_i))`, `p_i = q(z_i)` for view 0, then view 1 (the BatchNorm layers
/// see one view at a time); `loss = ½·(NCS(z0, p1) + NCS(z1, p0))`
/// ([`NegativeCosineSimilarity`]) with each `z` detached (stop-gradient: the gradient reaches
/// the encoder only through `p`); the optimizer updates the encoder and the predictor.
pub struct SimSiam<E: Encoder> {
    parts: Parts<E>,
    loss: NegativeCosineSimilarity,
    config: SimSiamConfig,
    device: Device,
    last_embeddings: Option<StepEmbeddings>,
}

impl<E: Encoder> SimSiam<E> {
    /// Keeps the predictor's learning rate at its initial value while the schedule moves the
    /// encoder's (the SimSiam paper's "we do not decay the lr of the predictor",
    /// `main_simsiam.py --fix-pred-lr`; solo-learn's `static_lr`).
    pub fn with_fixed_predictor_lr(mut self) -> Self {
        self.parts.fix_predictor_lr();
        self
    }

    /// Wraps `encoder` (backbone and projection head, weights as built) and `predictor`.
    pub fn new(
        config: SimSiamConfig,
        encoder: E,
        predictor: Predictor,
        device: &Device,
    ) -> Result<Self> {
        config.lr_schedule.validate()?;
        let parts = Parts::new(encoder, None, predictor, config.optimizer.clone())?;
        Ok(Self {
            parts,
            loss: NegativeCosineSimilarity::default(),
            config,
            device: device.clone(),
            last_embeddings: None,
        })
    }

    pub fn config(&self) -> &SimSiamConfig {
        &self.config
    }

    /// The trained encoder (backbone and projection head).
    pub fn shared_encoder(&self) -> &E {
        &self.parts.online
    }

    pub fn predictor(&self) -> &Predictor {
        &self.parts.predictor
    }

    pub fn optimizer(&self) -> &Optimizer {
        &self.parts.optimizer
    }

    fn restore(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.parts.restore(state)
    }
}

impl<E: Encoder> Method for SimSiam<E> {
    fn name(&self) -> &'static str {
        "simsiam"
    }

    fn step(&mut self, views: &[Tensor], _indices: &[usize]) -> Result<StepStats> {
        let n = check_views(views, 2)?;
        let step = self.parts.step;
        let lr = self.config.lr_schedule.lr_at(step);
        let mut zp = Vec::with_capacity(2);
        for x in views {
            let z = self.parts.online.forward(x, true)?;
            let p = self.parts.predictor.forward(&z, true)?;
            zp.push((z, p));
        }
        let target = |z: &Tensor| {
            if self.config.stop_gradient {
                z.detach()
            } else {
                z.clone()
            }
        };
        let a = loss_result(self.loss.forward(&target(&zp[0].0), &zp[1].1), step)?;
        let b = loss_result(self.loss.forward(&target(&zp[1].0), &zp[0].1), step)?;
        let loss_t = ((a + b)? * 0.5)?;
        let loss = finite_loss(&loss_t, step)?;
        let grads = loss_t.backward()?;
        self.parts.optimizer.set_lr(lr);
        self.parts.optimizer.step(&grads)?;
        self.parts.step += 1;
        self.last_embeddings = Some(StepEmbeddings {
            view0: zp[0].0.detach(),
            view1: Some(zp[1].0.detach()),
        });
        Ok(StepStats {
            step: self.parts.step,
            loss,
            // No positive to rank among negatives: SimSiam has none.
            accuracy: f64::NAN,
            lr,
            momentum: None,
            batch_size: n,
        })
    }

    fn steps_done(&self) -> u64 {
        self.parts.step
    }

    fn last_embeddings(&self) -> Option<StepEmbeddings> {
        self.last_embeddings.clone()
    }

    fn encoder(&self, role: EncoderRole) -> Result<&dyn Encoder> {
        self.parts.encoder(role, "SimSiam")
    }

    fn default_eval_source(&self) -> FeatureSource {
        FeatureSource::new(EncoderRole::Shared, FeatureLayer::Backbone)
    }

    fn state(&self) -> Result<BTreeMap<String, Tensor>> {
        self.parts.state()
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        checkpoint::load_all_or_nothing(self, state, Self::restore)
    }

    fn device(&self) -> &Device {
        &self.device
    }
}
