//! BYOL (Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised
//! Learning"): an online encoder and predictor learn to predict a momentum (target) encoder's
//! projection of the other view; no negatives.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use mocca_losses::NegativeCosineSimilarity;
use mocca_queue::MomentumUpdate;

use crate::checkpoint::{self, u64_tensor};
use crate::collapse::StepEmbeddings;
use crate::encoder::{copy_state, Encoder};
use crate::error::{input_err, MethodError, Result};
use crate::eval::{EncoderRole, FeatureLayer, FeatureSource};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::predictor::Predictor;
use crate::schedule::{LrSchedule, MomentumSchedule};
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
    online: E,
    target: E,
    predictor: Predictor,
    momentum_update: MomentumUpdate,
    loss: NegativeCosineSimilarity,
    optimizer: Optimizer,
    config: BYOLConfig,
    step: u64,
    device: Device,
    last_embeddings: Option<StepEmbeddings>,
}

impl<E: Encoder> BYOL<E> {
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
        let online = build()?;
        if predictor.input_dim() != online.output_dim() {
            return Err(MethodError::InvalidConfig(format!(
                "the predictor takes {} inputs but the projection head gives {}",
                predictor.input_dim(),
                online.output_dim()
            )));
        }
        let target = build()?;
        copy_state(&online, &target)?;
        let momentum_update =
            MomentumUpdate::new(&target.named_parameters(), &online.named_parameters())?;
        let optimizer = Optimizer::new(
            trained_parameters(&online, &predictor),
            config.optimizer.clone(),
        )?;
        Ok(Self {
            online,
            target,
            predictor,
            momentum_update,
            loss: NegativeCosineSimilarity::default(),
            optimizer,
            config,
            step: 0,
            device: device.clone(),
            last_embeddings: None,
        })
    }

    pub fn config(&self) -> &BYOLConfig {
        &self.config
    }

    /// The online encoder (backbone and projection head), the one evaluated.
    pub fn online_encoder(&self) -> &E {
        &self.online
    }

    /// The momentum (target) encoder.
    pub fn target_encoder(&self) -> &E {
        &self.target
    }

    pub fn predictor(&self) -> &Predictor {
        &self.predictor
    }

    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    fn restore(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let step = checkpoint::get_u64(state, "step")?;
        self.online
            .load_state_dict(&checkpoint::sub_state(state, "encoder_q"))?;
        self.target
            .load_state_dict(&checkpoint::sub_state(state, "encoder_k"))?;
        self.predictor
            .load_state_dict(&checkpoint::sub_state(state, "predictor"))?;
        self.optimizer
            .load_state_tensors(&checkpoint::sub_state(state, "optimizer"))?;
        self.step = step;
        Ok(())
    }
}

/// The online encoder's parameters and the predictor's (under `predictor.`): what the
/// optimizer of BYOL, SimSiam and MoCo v3 updates.
pub(crate) fn trained_parameters(
    encoder: &dyn Encoder,
    predictor: &Predictor,
) -> Vec<(String, candle_core::Var)> {
    encoder
        .named_parameters()
        .into_iter()
        .chain(
            predictor
                .named_parameters()
                .into_iter()
                .map(|(n, v)| (format!("predictor.{n}"), v)),
        )
        .collect()
}

impl<E: Encoder> Method for BYOL<E> {
    fn name(&self) -> &'static str {
        "byol"
    }

    fn step(&mut self, views: &[Tensor], _indices: &[usize]) -> Result<StepStats> {
        let n = check_views(views, 2)?;
        let step = self.step;
        let lr = self.config.lr_schedule.lr_at(step);
        let m = self.config.momentum.at(step);
        self.momentum_update.update(m)?;
        let mut online = Vec::with_capacity(2);
        let mut targets = Vec::with_capacity(2);
        for x in views {
            let z = self.online.forward(x, true)?;
            let p = self.predictor.forward(&z, true)?;
            online.push((z, p));
            targets.push(self.target.forward(x, true)?.detach());
        }
        let (p0, p1) = (&online[0].1, &online[1].1);
        let a = loss_result(self.loss.forward(p0, &targets[1]), step)?;
        let b = loss_result(self.loss.forward(p1, &targets[0]), step)?;
        let loss_t = ((a + b)? * 0.5)?;
        let loss = finite_loss(&loss_t, step)?;
        let grads = loss_t.backward()?;
        self.optimizer.set_lr(lr);
        self.optimizer.step(&grads)?;
        self.step += 1;
        self.last_embeddings = Some(StepEmbeddings {
            view0: online[0].0.detach(),
            view1: Some(online[1].0.detach()),
        });
        Ok(StepStats {
            step: self.step,
            loss,
            // No positive to rank among negatives: BYOL has none.
            accuracy: f64::NAN,
            lr,
            momentum: Some(m),
            batch_size: n,
        })
    }

    fn steps_done(&self) -> u64 {
        self.step
    }

    fn last_embeddings(&self) -> Option<StepEmbeddings> {
        self.last_embeddings.clone()
    }

    fn encoder(&self, role: EncoderRole) -> Result<&dyn Encoder> {
        match role {
            EncoderRole::Query => Ok(&self.online),
            EncoderRole::Key => Ok(&self.target),
            EncoderRole::Shared => Err(input_err(
                "BYOL has an online (EncoderRole::Query) and a target (EncoderRole::Key) encoder",
            )),
        }
    }

    fn default_eval_source(&self) -> FeatureSource {
        FeatureSource::new(EncoderRole::Query, FeatureLayer::Backbone)
    }

    fn state(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        checkpoint::put_prefixed(&mut out, "encoder_q", self.online.state_dict()?)?;
        checkpoint::put_prefixed(&mut out, "encoder_k", self.target.state_dict()?)?;
        checkpoint::put_prefixed(&mut out, "predictor", self.predictor.state_dict()?)?;
        checkpoint::put_prefixed(&mut out, "optimizer", self.optimizer.state_tensors()?)?;
        out.insert("step".into(), u64_tensor(self.step)?);
        Ok(out)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        checkpoint::load_all_or_nothing(self, state, Self::restore)
    }

    fn device(&self) -> &Device {
        &self.device
    }
}
