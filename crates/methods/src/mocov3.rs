//! MoCo v3 (Chen, Xie & He 2021, "An Empirical Study of Training Self-Supervised Vision
//! Transformers"): a base encoder with a predictor, a momentum encoder, and a symmetric
//! contrastive loss whose keys are the batch's own, from the momentum encoder.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use mocca_losses::{InfoNCEConfig, InfoNCELoss};

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

/// MoCo v3's hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct MoCoV3Config {
    /// τ of the contrastive loss (moco-v3: 1.0 for ResNet, 0.2 for ViT).
    pub temperature: f64,
    /// The momentum encoder's m (moco-v3: cosine from 0.99 to 1 over the run,
    /// `--moco-m-cos`).
    pub momentum: MomentumSchedule,
    /// moco-v3 trains ResNets with its LARS ([`OptimizerConfig::lars_mocov3`]), ViTs with AdamW.
    pub optimizer: OptimizerConfig,
    pub lr_schedule: LrSchedule,
}

/// MoCo v3 as facebookresearch/moco-v3's `MoCo` (`moco/builder.py`) and `main_moco.py` train
/// it on one process (the all-gather of keys is the identity).
///
/// Per step: `q1 = q(f(x1))`, `q2 = q(f(x2))` (base encoder with its projector, then the
/// predictor); the momentum encoder (backbone and projector, not the predictor) moves,
/// `θ_m ← m·θ_m + (1 − m)·θ` over parameters only; `k1 = f_m(x1)`, `k2 = f_m(x2)` without
/// gradient; `loss = ctr(q1, k2) + ctr(q2, k1)` with
/// `ctr(q, k) = CE(q̂ k̂ᵀ / τ, labels = arange(N)) · 2τ` (the end-to-end InfoNCE of
/// [`InfoNCELoss::forward_end_to_end`], scaled by 2τ); the optimizer updates the base encoder
/// and the predictor. moco-v3 moves the momentum encoder between the query and the key passes;
/// the base weights do not change in between, so doing it first is the same step.
pub struct MoCoV3<E: Encoder> {
    parts: Parts<E>,
    loss: InfoNCELoss,
    config: MoCoV3Config,
    device: Device,
    last_embeddings: Option<StepEmbeddings>,
}

impl<E: Encoder> MoCoV3<E> {
    /// Keeps the predictor's learning rate at its initial value while the schedule moves the
    /// encoder's (the SimSiam paper's "we do not decay the lr of the predictor",
    /// `main_simsiam.py --fix-pred-lr`; solo-learn's `static_lr`).
    pub fn with_fixed_predictor_lr(mut self) -> Self {
        self.parts.fix_predictor_lr();
        self
    }

    /// Builds the base encoder with `build` and the momentum encoder with a second call, then
    /// copies the base encoder's state into it.
    pub fn new(
        config: MoCoV3Config,
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
        let loss = InfoNCELoss::new(InfoNCEConfig {
            temperature: config.temperature,
            ..Default::default()
        })?;
        Ok(Self {
            parts,
            loss,
            config,
            device: device.clone(),
            last_embeddings: None,
        })
    }

    pub fn config(&self) -> &MoCoV3Config {
        &self.config
    }

    /// The base encoder (backbone and projector), the one evaluated.
    pub fn base_encoder(&self) -> &E {
        &self.parts.online
    }

    pub fn momentum_encoder(&self) -> &E {
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

impl<E: Encoder> Method for MoCoV3<E> {
    fn name(&self) -> &'static str {
        "mocov3"
    }

    fn step(&mut self, views: &[Tensor], _indices: &[usize]) -> Result<StepStats> {
        let n = check_views(views, 2)?;
        let step = self.parts.step;
        let lr = self.config.lr_schedule.lr_at(step);
        let mut queries = Vec::with_capacity(2);
        for x in views {
            let z = self.parts.online.forward(x, true)?;
            queries.push(self.parts.predictor.forward(&z, true)?);
        }
        let m = self.config.momentum.at(step);
        self.parts.update_momentum(m)?;
        let keys = views
            .iter()
            .map(|x| Ok(self.parts.momentum_encoder().forward(x, true)?.detach()))
            .collect::<Result<Vec<_>>>()?;
        let a = loss_result(self.loss.forward_end_to_end(&queries[0], &keys[1]), step)?;
        let b = loss_result(self.loss.forward_end_to_end(&queries[1], &keys[0]), step)?;
        let scale = 2.0 * self.config.temperature;
        let loss_t = ((a.loss + b.loss)? * scale)?;
        let loss = finite_loss(&loss_t, step)?;
        let accuracy = ((a.accuracy + b.accuracy)? * 0.5)?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        let grads = loss_t.backward()?;
        self.parts.optimizer.set_lr(lr);
        self.parts.optimizer.step(&grads)?;
        self.parts.step += 1;
        self.last_embeddings = Some(StepEmbeddings {
            view0: queries[0].detach(),
            view1: Some(keys[1].clone()),
        });
        Ok(StepStats {
            step: self.parts.step,
            loss,
            accuracy,
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
        self.parts.encoder(role, "MoCo v3")
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
