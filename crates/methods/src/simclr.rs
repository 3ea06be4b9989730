//! SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of
//! Visual Representations").

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Tensor};
use mocca_losses::{NTXentConfig, NTXentLoss};

use crate::checkpoint::{self, u64_tensor};
use crate::collapse::StepEmbeddings;
use crate::encoder::Encoder;
use crate::error::{input_err, Result};
use crate::eval::{EncoderRole, FeatureLayer, FeatureSource};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::schedule::LrSchedule;
use crate::step::{check_views, finite_loss, loss_result};
use crate::{Method, StepStats};

/// SimCLR's hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SimCLRConfig {
    /// NT-Xent temperature τ.
    pub temperature: f64,
    pub optimizer: OptimizerConfig,
    pub lr_schedule: LrSchedule,
}

impl SimCLRConfig {
    /// The paper's ImageNet recipe: LARS, lr = 0.3 × batch / 256, momentum
    /// 0.9, weight decay 1e-6 (biases and BN excluded), 10 warmup epochs then
    /// cosine, τ = 0.1.
    pub fn paper(batch_size: usize, steps_per_epoch: u64, epochs: u64) -> Self {
        let lr = 0.3 * batch_size as f64 / 256.0;
        Self {
            temperature: 0.1,
            optimizer: OptimizerConfig::lars(lr, 0.9, 1e-6),
            lr_schedule: LrSchedule::WarmupCosine {
                base_lr: lr,
                warmup_steps: (10 * steps_per_epoch).min(steps_per_epoch * epochs),
                total_steps: steps_per_epoch * epochs,
                warmup_start_lr: 0.0,
                warmup: crate::schedule::Warmup::Lightly,
                final_lr: 0.0,
            },
        }
    }

    /// lightly's CIFAR-10 SimCLR benchmark: SGD lr = 6e-2 × batch / 128, momentum
    /// 0.9, weight decay 5e-4, cosine per step, τ = 0.5.
    pub fn cifar10(batch_size: usize, steps_per_epoch: u64, epochs: u64) -> Self {
        let lr = 6e-2 * batch_size as f64 / 128.0;
        Self {
            temperature: 0.5,
            optimizer: OptimizerConfig::sgd(lr, 0.9, 5e-4),
            lr_schedule: LrSchedule::cosine(lr, steps_per_epoch * epochs),
        }
    }
}

/// SimCLR: two views of each image through one encoder, NT-Xent over the 2N
/// embeddings. The views go through the encoder one after the other (as
/// lightly does), so BatchNorm statistics are per view.
pub struct SimCLR<E: Encoder> {
    encoder: E,
    loss: NTXentLoss,
    optimizer: Optimizer,
    schedule: LrSchedule,
    step: u64,
    device: Device,
    /// `z0`, `z1` of the last step, detached (for [`Method::last_embeddings`]).
    last_embeddings: Option<StepEmbeddings>,
}

impl<E: Encoder> SimCLR<E> {
    /// Wraps `encoder` (weights as built) with the optimizer of `config`.
    pub fn new(config: SimCLRConfig, encoder: E, device: &Device) -> Result<Self> {
        config.lr_schedule.validate()?;
        let loss = NTXentLoss::new(NTXentConfig {
            temperature: config.temperature,
            ..Default::default()
        })?;
        let optimizer = Optimizer::new(encoder.named_parameters(), config.optimizer)?;
        Ok(Self {
            encoder,
            loss,
            optimizer,
            schedule: config.lr_schedule,
            step: 0,
            device: device.clone(),
            last_embeddings: None,
        })
    }

    /// The trained encoder.
    pub fn shared_encoder(&self) -> &E {
        &self.encoder
    }

    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }
}

impl<E: Encoder> SimCLR<E> {
    fn restore(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let step = checkpoint::get_u64(state, "step")?;
        self.encoder
            .load_state_dict(&checkpoint::sub_state(state, "encoder"))?;
        self.optimizer
            .load_state_tensors(&checkpoint::sub_state(state, "optimizer"))?;
        self.step = step;
        Ok(())
    }
}

impl<E: Encoder> Method for SimCLR<E> {
    fn name(&self) -> &'static str {
        "simclr"
    }

    fn step(&mut self, views: &[Tensor], _indices: &[usize]) -> Result<StepStats> {
        let n = check_views(views, 2)?;
        let lr = self.schedule.lr_at(self.step);
        let z0 = self.encoder.forward(&views[0], true)?;
        let z1 = self.encoder.forward(&views[1], true)?;
        let out = loss_result(self.loss.forward(&z0, &z1), self.step)?;
        let loss = finite_loss(&out.loss, self.step)?;
        let accuracy = out
            .accuracy
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
        let grads = out.loss.backward()?;
        self.optimizer.set_lr(lr);
        self.optimizer.step(&grads)?;
        self.step += 1;
        self.last_embeddings = Some(StepEmbeddings {
            view0: z0.detach(),
            view1: Some(z1.detach()),
        });
        Ok(StepStats {
            step: self.step,
            loss,
            accuracy,
            lr,
            momentum: None,
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
            EncoderRole::Shared => Ok(&self.encoder),
            other => Err(input_err(format!(
                "SimCLR has one shared encoder (EncoderRole::Shared), no {other}"
            ))),
        }
    }

    fn default_eval_source(&self) -> FeatureSource {
        FeatureSource::new(EncoderRole::Shared, FeatureLayer::Backbone)
    }

    fn state(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        checkpoint::put_prefixed(&mut out, "encoder", self.encoder.state_dict()?)?;
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
