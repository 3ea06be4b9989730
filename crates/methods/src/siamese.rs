//! What BYOL, SimSiam and MoCo v3 share: a trained encoder with a predictor on top, for BYOL
//! and MoCo v3 a momentum copy of the encoder, the optimizer over encoder and predictor, the
//! step counter, and one checkpoint layout (`encoder_q.*` or `encoder.*`, `encoder_k.*`,
//! `predictor.*`, `optimizer.*`, `step`), so that evaluation and export read every method the
//! same way. The steps themselves differ and live with each method.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Tensor, Var};
use mocca_queue::MomentumUpdate;

use crate::checkpoint::{self, u64_tensor};
use crate::encoder::{copy_state, Encoder};
use crate::error::{input_err, MethodError, Result};
use crate::eval::EncoderRole;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::predictor::Predictor;

/// How the predictor's parameters are named in the optimizer and the checkpoint.
const PREDICTOR_PREFIX: &str = "predictor.";

/// The encoder being trained, its predictor, optionally its momentum copy, the optimizer and
/// the step counter.
pub(crate) struct Parts<E: Encoder> {
    pub online: E,
    /// The momentum encoder and the EMA that moves it (BYOL's target, MoCo v3's momentum
    /// encoder); `None` for SimSiam.
    pub momentum: Option<(E, MomentumUpdate)>,
    pub predictor: Predictor,
    pub optimizer: Optimizer,
    pub step: u64,
}

impl<E: Encoder> Parts<E> {
    /// `online` and `predictor`, with a momentum copy built by `copy` (parameters and buffers
    /// copied from `online`) when given.
    pub fn new(
        online: E,
        copy: Option<E>,
        predictor: Predictor,
        optimizer: OptimizerConfig,
    ) -> Result<Self> {
        if predictor.input_dim() != online.output_dim() {
            return Err(MethodError::InvalidConfig(format!(
                "the predictor takes {} inputs but the projection head gives {}",
                predictor.input_dim(),
                online.output_dim()
            )));
        }
        let momentum = match copy {
            Some(m) => {
                copy_state(&online, &m)?;
                let update =
                    MomentumUpdate::new(&m.named_parameters(), &online.named_parameters())?;
                Some((m, update))
            }
            None => None,
        };
        let optimizer = Optimizer::new(trained_parameters(&online, &predictor), optimizer)?;
        Ok(Self {
            online,
            momentum,
            predictor,
            optimizer,
            step: 0,
        })
    }

    /// Keeps the predictor at the initial learning rate ([`Optimizer::fix_lr`]).
    pub fn fix_predictor_lr(&mut self) {
        self.optimizer.fix_lr(PREDICTOR_PREFIX);
    }

    /// The momentum encoder (present by construction for the methods that ask).
    pub fn momentum_encoder(&self) -> &E {
        &self
            .momentum
            .as_ref()
            .expect("built with a momentum encoder")
            .0
    }

    /// Moves the momentum encoder: `θ_m ← m·θ_m + (1 − m)·θ`.
    pub fn update_momentum(&self, m: f64) -> Result<()> {
        if let Some((_, update)) = &self.momentum {
            update.update(m)?;
        }
        Ok(())
    }

    /// `role`'s encoder: the trained one is `Query` with a momentum copy (`Key`), else `Shared`.
    pub fn encoder(&self, role: EncoderRole, method: &str) -> Result<&dyn Encoder> {
        match (role, &self.momentum) {
            (EncoderRole::Query, Some(_)) | (EncoderRole::Shared, None) => Ok(&self.online),
            (EncoderRole::Key, Some((m, _))) => Ok(m),
            (_, Some(_)) => Err(input_err(format!(
                "{method} has a trained (EncoderRole::Query) and a momentum (EncoderRole::Key) \
                 encoder"
            ))),
            (other, None) => Err(input_err(format!(
                "{method} has one shared encoder (EncoderRole::Shared), no {other}"
            ))),
        }
    }

    fn online_prefix(&self) -> &'static str {
        if self.momentum.is_some() {
            "encoder_q"
        } else {
            "encoder"
        }
    }

    pub fn state(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        checkpoint::put_prefixed(&mut out, self.online_prefix(), self.online.state_dict()?)?;
        if let Some((m, _)) = &self.momentum {
            checkpoint::put_prefixed(&mut out, "encoder_k", m.state_dict()?)?;
        }
        checkpoint::put_prefixed(&mut out, "predictor", self.predictor.state_dict()?)?;
        checkpoint::put_prefixed(&mut out, "optimizer", self.optimizer.state_tensors()?)?;
        out.insert("step".into(), u64_tensor(self.step)?);
        Ok(out)
    }

    /// Restores [`Parts::state`] (the caller makes it all-or-nothing).
    pub fn restore(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let step = checkpoint::get_u64(state, "step")?;
        let prefix = self.online_prefix();
        self.online
            .load_state_dict(&checkpoint::sub_state(state, prefix))?;
        if let Some((m, _)) = &self.momentum {
            m.load_state_dict(&checkpoint::sub_state(state, "encoder_k"))?;
        }
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
fn trained_parameters(encoder: &dyn Encoder, predictor: &Predictor) -> Vec<(String, Var)> {
    encoder
        .named_parameters()
        .into_iter()
        .chain(
            predictor
                .named_parameters()
                .into_iter()
                .map(|(n, v)| (format!("{PREDICTOR_PREFIX}{n}"), v)),
        )
        .collect()
}
