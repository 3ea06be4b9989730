//! BYOL (Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised
//! Learning"): an online encoder and predictor learn to predict a momentum (target) encoder's
//! projection of the other view; no negatives.

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
use crate::schedule::{LrSchedule, MomentumSchedule};
use crate::siamese::Parts;
use crate::step::{check_views, finite_loss, loss_result};
use crate::{Method, StepStats};

/// BYOL's hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct BYOLConfig {
    /// The target encoder's momentum (the paper: cosine from 0.996 to 1).
    pub momentum: MomentumSchedule,
    pub optimizer: OptimizerConfig,
    pub lr_schedule: LrSchedule,
}

/// BYOL as lightly's `examples/pytorch/byol.py` trains it.
///
/// Per step: first the target (backbone and projection head) moves towards the online one,
/// `θ_t ← m·θ_t + (1 − m)·θ` over parameters only (its BatchNorm statistics follow its own
/// forward passes); then `p_i = q(g(f(x_i)))` online and `z_i = g_t(f_t(x_i))` from the
/// target, view 0 before view 1; `loss = ½·(NCS(p0, z1) + NCS(p1, z0))`
/// ([`NegativeCosineSimilarity`]); the optimizer updates the online encoder and the predictor.
/// Updating the target first means it trails the online weights by one step, as lightly's
/// example and ImageNet benchmark do; at step 0 both are equal and nothing changes.
pub struct BYOL<E: Encoder> {
    parts: Parts<E>,
    loss: NegativeCosineSimilarity,
    config: BYOLConfig,
    device: Device,
    last_embeddings: Option<StepEmbeddings>,
}

impl<E: Encoder> BYOL<E> {
    /// Keeps the predictor's learning rate at its initial value while the schedule moves the
    /// encoder's (the SimSiam paper's "we do not decay the lr of the predictor",
    /// `main_simsiam.py --fix-pred-lr`; solo-learn's `static_lr`).
    pub fn with_fixed_predictor_lr(mut self) -> Self {
        self.parts.fix_predictor_lr();
        self
    }

    /// Builds the online encoder with `build` and the target with a second call, then copies
    /// the online encoder's state into the target. `predictor` maps the projection back to
    /// its own width.
    pub fn new(
        config: BYOLConfig,
        build: impl Fn() -> Result<E>,
        predictor: Predictor,
        device: &Device,
    ) -> Result<Self> {
        config.momentum.validate()?;
        config.lr_schedule.validate()?;
        let parts = Parts::new(
            build()?,
            Some(build()?),
            predictor,
            config.optimizer.clone(),
        )?;
        Ok(Self {
            parts,
            loss: NegativeCosineSimilarity::default(),
            config,
            device: device.clone(),
            last_embeddings: None,
        })
    }

    pub fn config(&self) -> &BYOLConfig {
        &self.config
    }

    /// The online encoder (backbone and projection head), the one evaluated.
    pub fn online_encoder(&self) -> &E {
        &self.parts.online
    }

    /// The momentum (target) encoder.
    pub fn target_encoder(&self) -> &E {
        self.parts.momentum_encoder()
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

impl<E: Encoder> Method for BYOL<E> {
    fn name(&self) -> &'static str {
        "byol"
    }

    fn step(&mut self, views: &[Tensor], _indices: &[usize]) -> Result<StepStats> {
        let n = check_views(views, 2)?;
        let step = self.parts.step;
        let lr = self.config.lr_schedule.lr_at(step);
        let m = self.config.momentum.at(step);
        self.parts.update_momentum(m)?;
        let mut online = Vec::with_capacity(2);
        let mut targets = Vec::with_capacity(2);
        for x in views {
            let z = self.parts.online.forward(x, true)?;
            let p = self.parts.predictor.forward(&z, true)?;
            online.push((z, p));
            targets.push(self.parts.momentum_encoder().forward(x, true)?.detach());
        }
        let (p0, p1) = (&online[0].1, &online[1].1);
        let a = loss_result(self.loss.forward(p0, &targets[1]), step)?;
        let b = loss_result(self.loss.forward(p1, &targets[0]), step)?;
        let loss_t = ((a + b)? * 0.5)?;
        let loss = finite_loss(&loss_t, step)?;
        let grads = loss_t.backward()?;
        self.parts.optimizer.set_lr(lr);
        self.parts.optimizer.step(&grads)?;
        self.parts.step += 1;
        self.last_embeddings = Some(StepEmbeddings {
            view0: online[0].0.detach(),
            view1: Some(online[1].0.detach()),
        });
        Ok(StepStats {
            step: self.parts.step,
            loss,
            // No positive to rank among negatives: BYOL has none.
            accuracy: f64::NAN,
            lr,
            momentum: Some(m),
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
        self.parts.encoder(role, "BYOL")
    }

    fn default_eval_source(&self) -> FeatureSource {
        FeatureSource::new(EncoderRole::Query, FeatureLayer::Backbone)
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
