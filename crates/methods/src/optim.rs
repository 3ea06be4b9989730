//! SGD with momentum and LARS, with PyTorch's update rules, parameter groups and
//! exact state save/load.
//!
//! Candle's own `SGD` has no momentum, and `candle-optimisers` (0.10.2) pins
//! Candle 0.10 and has neither LARS nor state serialisation, so both live here.
//!
//! # Update rules
//!
//! For a parameter `p` with gradient `g`, learning rate `lr`, momentum `μ`,
//! dampening `d`, weight decay `λ` (of the parameter's group), per step:
//!
//! **SGD** (`torch.optim.SGD`):
//! ```text
//! g ← g + λ·p                                  (if λ ≠ 0)
//! b ← g  on the first step,  b ← μ·b + (1−d)·g  afterwards   (if μ ≠ 0)
//! g ← g + μ·b  (Nesterov)   or   g ← b                      (if μ ≠ 0)
//! p ← p − lr·g
//! ```
//!
//! **LARS** (You et al. 2017, "Large Batch Training of Convolutional Networks",
//! as in lightly's / solo-learn's `LARS`): before the SGD part, for parameters
//! of an *adapted* group with `‖p‖ ≠ 0` and `‖g‖ ≠ 0`,
//! ```text
//! η_l = trust · ‖p‖ / (‖g‖ + λ·‖p‖ + eps)
//! η_l ← min(η_l / lr, 1)          (with clip_lr, solo-learn's option)
//! g ← η_l · (g + λ·p)
//! ```
//! then momentum and the update as above, with no second weight decay. Groups
//! that are not adapted (biases and norm parameters when
//! [`OptimizerConfig::exclude_bias_and_norm`] is set) get plain momentum SGD
//! with no weight decay. One difference from lightly: lightly adapts only
//! groups with `λ ≠ 0`, so with a global weight decay of 0 its LARS is plain
//! SGD; here adaptation follows the group's flag alone (as solo-learn does).
//!
//! Parameters without a gradient in the [`GradStore`] are skipped entirely (no
//! weight decay, no momentum), as PyTorch skips `p.grad is None`.
//!
//! # Speed
//!
//! On the CPU, f32 parameters with momentum are updated in place by two fused,
//! multi-threaded passes (momentum buffer, then parameter) instead of seven
//! Candle ops that each allocate and stream a whole tensor; the arithmetic is
//! the same, rounding included (a unit test holds both paths bit-identical).
//! Other devices and dtypes run the Candle ops. Parameters and momentum
//! buffers therefore change in place: [`Optimizer::state_tensors`] returns
//! copies.
//!
//! # Parameter groups
//!
//! With `exclude_bias_and_norm`, a parameter goes to the group without weight
//! decay (and without LARS adaptation) when it has fewer than 2 dimensions
//! (BatchNorm weight and bias, every bias) or its name ends in `bias`
//! ([`is_bias_or_norm`]); this is what lightly's `get_weight_decay_parameters`
//! and solo-learn's `exclude_bias_n_norm` select on ResNets and MLP heads.

use std::collections::{BTreeMap, HashMap, HashSet};

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use mocca_core::check::Invalid;

use crate::error::{config_err, MethodError, Result};

/// The SGD family member to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerKind {
    /// `torch.optim.SGD`.
    Sgd,
    /// LARS layer-wise adaptation on top of SGD.
    Lars {
        /// Trust coefficient η (0.001 in You et al. and SimCLR).
        trust_coefficient: f64,
        /// Added to the denominator of the local learning rate (1e-8).
        eps: f64,
        /// solo-learn's `clip_lr`: the local rate is divided by the learning rate and capped
        /// at 1, `η_l ← min(η_l / lr, 1)`, so that a layer never steps by more than `lr`
        /// times its (decayed) gradient.
        clip_lr: bool,
    },
    /// LARS as MoCo v3 writes it (facebookresearch/moco-v3 `moco/optimizer.py`): the
    /// weight decay goes in first and the trust ratio is taken against the decayed gradient,
    /// `d = g + λ·p`, `d ← trust·‖p‖/‖d‖ · d` (no eps; no scaling when either norm is 0);
    /// parameters of fewer than 2 dimensions get neither ([`OptimizerConfig::lars_mocov3`]).
    LarsMoCoV3 {
        /// Trust coefficient (moco-v3's default 0.001).
        trust_coefficient: f64,
    },
    /// `torch.optim.AdamW` (Loshchilov & Hutter 2019), MoCo v3's optimizer for ViTs: the
    /// decay is decoupled, `p ← p·(1 − lr·λ)`, then Adam with bias correction,
    /// `p ← p − lr/(1 − β1ᵗ) · m / (√v/√(1 − β2ᵗ) + eps)`. `momentum`, `dampening` and
    /// `nesterov` are not used.
    AdamW { beta1: f64, beta2: f64, eps: f64 },
}

/// Hyper-parameters shared by SGD and LARS. `lr` is the initial learning rate;
/// a schedule changes it through [`Optimizer::set_lr`].
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    /// Exclude biases and norm parameters from weight decay (and, for LARS,
    /// from the layer-wise adaptation).
    pub exclude_bias_and_norm: bool,
}

impl OptimizerConfig {
    /// Momentum SGD with weight decay on every parameter (MoCo's recipe).
    pub fn sgd(lr: f64, momentum: f64, weight_decay: f64) -> Self {
        Self {
            kind: OptimizerKind::Sgd,
            lr,
            momentum,
            dampening: 0.0,
            weight_decay,
            nesterov: false,
            exclude_bias_and_norm: false,
        }
    }

    /// LARS with trust coefficient 0.001, eps 1e-8, biases and norm
    /// parameters excluded (SimCLR's recipe).
    pub fn lars(lr: f64, momentum: f64, weight_decay: f64) -> Self {
        Self {
            kind: OptimizerKind::Lars {
                trust_coefficient: 1e-3,
                eps: 1e-8,
                clip_lr: false,
            },
            lr,
            momentum,
            dampening: 0.0,
            weight_decay,
            nesterov: false,
            exclude_bias_and_norm: true,
        }
    }

    /// AdamW with PyTorch's defaults (β 0.9, 0.999, eps 1e-8), weight decay on every
    /// parameter (moco-v3's `torch.optim.AdamW(model.parameters(), lr, weight_decay=wd)`).
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Self {
            kind: OptimizerKind::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay,
            nesterov: false,
            exclude_bias_and_norm: false,
        }
    }

    /// MoCo v3's LARS ([`OptimizerKind::LarsMoCoV3`]) with its trust coefficient 0.001;
    /// biases and norm parameters (every parameter of fewer than 2 dimensions) get no weight
    /// decay and no scaling, as its `p.ndim > 1` test.
    pub fn lars_mocov3(lr: f64, momentum: f64, weight_decay: f64) -> Self {
        Self {
            kind: OptimizerKind::LarsMoCoV3 {
                trust_coefficient: 1e-3,
            },
            lr,
            momentum,
            dampening: 0.0,
            weight_decay,
            nesterov: false,
            exclude_bias_and_norm: true,
        }
    }

    /// Checks the ranges PyTorch checks, plus finiteness ([`rules`]).
    pub fn validate(&self) -> Result<()> {
        let field = |name: &str, rule: std::result::Result<(), Invalid>| {
            rule.map_err(|e| config_err(format!("{name} {e}")))
        };
        field("learning rate", rules::lr(self.lr))?;
        field("momentum", rules::momentum(self.momentum))?;
        field("dampening", rules::dampening(self.dampening))?;
        field("weight decay", rules::weight_decay(self.weight_decay))?;
        field(
            "Nesterov momentum",
            rules::nesterov(self.nesterov, self.momentum, self.dampening),
        )?;
        if let OptimizerKind::Lars {
            trust_coefficient,
            eps,
            ..
        } = self.kind
        {
            field(
                "LARS trust coefficient",
                rules::trust_coefficient(trust_coefficient),
            )?;
            field("LARS eps", rules::lars_eps(eps))?;
        }
        if let OptimizerKind::AdamW { beta1, beta2, eps } = self.kind {
            for (name, b) in [("AdamW beta1", beta1), ("AdamW beta2", beta2)] {
                if !(0.0..1.0).contains(&b) {
                    return Err(config_err(format!("{name} must lie in [0, 1), got {b}")));
                }
            }
            if !(eps.is_finite() && eps > 0.0) {
                return Err(config_err(format!("AdamW eps must be > 0, got {eps}")));
            }
        }
        if let OptimizerKind::LarsMoCoV3 { trust_coefficient } = self.kind {
            field(
                "LARS trust coefficient",
                rules::trust_coefficient(trust_coefficient),
            )?;
        }
        Ok(())
    }
}

/// The rule of each hyper-parameter: the ranges `torch.optim.SGD` accepts, plus finiteness.
/// [`OptimizerConfig::validate`] applies them all under the library's names; the trainer's
/// config file applies them one by one under its keys (`optimizer.momentum`, ...), so the two
/// can never disagree.
pub mod rules {
    use mocca_core::check::{self, Invalid};

    /// `lr >= 0` (SGD: "Invalid learning rate").
    pub fn lr(v: f64) -> Result<(), Invalid> {
        check::non_negative(v)
    }

    /// `momentum >= 0`, PyTorch's only bound: with 1 or more the buffer never forgets old
    /// gradients, a legal (if unusual) setting, so it is not refused here.
    pub fn momentum(v: f64) -> Result<(), Invalid> {
        check::non_negative(v)
    }

    /// Any finite dampening (PyTorch checks none).
    pub fn dampening(v: f64) -> Result<(), Invalid> {
        check::finite(v)
    }

    /// `weight_decay >= 0`.
    pub fn weight_decay(v: f64) -> Result<(), Invalid> {
        check::non_negative(v)
    }

    /// Nesterov momentum needs a momentum and no dampening, as `torch.optim.SGD` insists.
    pub fn nesterov(nesterov: bool, momentum: f64, dampening: f64) -> Result<(), Invalid> {
        if nesterov && (momentum <= 0.0 || dampening != 0.0) {
            return Err(Invalid::new("requires momentum > 0 and dampening 0"));
        }
        Ok(())
    }

    /// LARS' trust coefficient η: `> 0`.
    pub fn trust_coefficient(v: f64) -> Result<(), Invalid> {
        check::positive(v)
    }

    /// LARS' denominator term: `>= 0`.
    pub fn lars_eps(v: f64) -> Result<(), Invalid> {
        check::non_negative(v)
    }
}

/// True for parameters that are conventionally not weight-decayed: anything
/// with fewer than two dimensions (BatchNorm / LayerNorm weights, biases) and
/// anything whose name ends in `bias`.
pub fn is_bias_or_norm(name: &str, var: &Var) -> bool {
    var.rank() < 2 || name.ends_with("bias")
}

/// A set of parameters sharing weight decay and LARS adaptation.
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// `"decay"` or `"no_decay"`, with `"_fixed_lr"` for parameters kept at the initial
    /// learning rate ([`Optimizer::fix_lr`]).
    pub name: &'static str,
    pub weight_decay: f64,
    /// Whether LARS scales this group's updates (ignored by SGD).
    pub lars_adapt: bool,
    /// The learning rate this group keeps whatever [`Optimizer::set_lr`] says.
    pub fixed_lr: Option<f64>,
    params: Vec<(String, Var)>,
}

impl ParamGroup {
    /// Names of the parameters in this group, in update order.
    pub fn param_names(&self) -> Vec<&str> {
        self.params.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// SGD or LARS over named parameters, with momentum buffers keyed by name.
#[derive(Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    lr: f64,
    groups: Vec<ParamGroup>,
    momentum_buffers: HashMap<String, Tensor>,
    /// AdamW's second moments (its first moments are `momentum_buffers`) and step counts.
    second_moments: HashMap<String, Tensor>,
    adam_steps: HashMap<String, u64>,
    /// Use the fused CPU update where it applies (off only to test it).
    fused: bool,
}

/// Weight decay and LARS scale applied to one parameter's gradient.
#[derive(Debug, Clone, Copy)]
struct Direction {
    wd: f64,
    scale: Option<f64>,
}

/// Prefix of momentum buffers (AdamW: first moments) in [`Optimizer::state_tensors`].
pub const MOMENTUM_BUFFER_PREFIX: &str = "momentum_buffer.";
/// Prefix of AdamW's second moments in [`Optimizer::state_tensors`].
pub const SECOND_MOMENT_PREFIX: &str = "exp_avg_sq.";
/// Prefix of AdamW's per-parameter step counts in [`Optimizer::state_tensors`].
pub const ADAM_STEP_PREFIX: &str = "adam_step.";

impl Optimizer {
    /// Builds the optimizer over `params` (name, variable). Non-float
    /// variables are ignored; duplicate names are an error, since state is
    /// saved by name.
    pub fn new(params: Vec<(String, Var)>, config: OptimizerConfig) -> Result<Self> {
        config.validate()?;
        let mut seen = HashSet::new();
        let mut decay = Vec::new();
        let mut no_decay = Vec::new();
        for (name, var) in params {
            if !seen.insert(name.clone()) {
                return Err(config_err(format!("parameter `{name}` is listed twice")));
            }
            if !var.dtype().is_float() {
                continue;
            }
            if config.exclude_bias_and_norm && is_bias_or_norm(&name, &var) {
                no_decay.push((name, var));
            } else {
                decay.push((name, var));
            }
        }
        let mut groups = vec![ParamGroup {
            name: "decay",
            weight_decay: config.weight_decay,
            lars_adapt: true,
            fixed_lr: None,
            params: decay,
        }];
        if config.exclude_bias_and_norm {
            groups.push(ParamGroup {
                name: "no_decay",
                weight_decay: 0.0,
                lars_adapt: false,
                fixed_lr: None,
                params: no_decay,
            });
        }
        Ok(Self {
            lr: config.lr,
            config,
            groups,
            momentum_buffers: HashMap::new(),
            second_moments: HashMap::new(),
            adam_steps: HashMap::new(),
            fused: true,
        })
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// The parameter groups (for inspection: which names are decayed).
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate used by the next [`Optimizer::step`].
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Keeps the parameters whose names start with `prefix` at the initial learning rate
    /// (`config.lr`) whatever [`Optimizer::set_lr`] sets later: SimSiam's predictor
    /// (`main_simsiam.py --fix-pred-lr`, solo-learn's `static_lr`). Their weight decay and
    /// LARS treatment stay those of their group. Returns how many parameters it fixed.
    pub fn fix_lr(&mut self, prefix: &str) -> usize {
        let lr = self.config.lr;
        let mut fixed_groups = Vec::new();
        for g in &mut self.groups {
            let (fixed, rest): (Vec<_>, Vec<_>) =
                g.params.drain(..).partition(|(n, _)| n.starts_with(prefix));
            g.params = rest;
            if !fixed.is_empty() {
                fixed_groups.push(ParamGroup {
                    name: if g.lars_adapt {
                        "decay_fixed_lr"
                    } else {
                        "no_decay_fixed_lr"
                    },
                    weight_decay: g.weight_decay,
                    lars_adapt: g.lars_adapt,
                    fixed_lr: Some(lr),
                    params: fixed,
                });
            }
        }
        let n = fixed_groups.iter().map(|g| g.params.len()).sum();
        self.groups.extend(fixed_groups);
        n
    }

    /// Applies one update from `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let scheduled = self.lr;
        let result = (0..self.groups.len()).try_for_each(|gi| {
            // A fixed-lr group steps at its own rate; the scheduled one is restored below.
            self.lr = self.groups[gi].fixed_lr.unwrap_or(scheduled);
            self.step_group(gi, grads)
        });
        self.lr = scheduled;
        result
    }

    fn step_group(&mut self, gi: usize, grads: &GradStore) -> Result<()> {
        for pi in 0..self.groups[gi].params.len() {
            let (name, var) = &self.groups[gi].params[pi];
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Work on detached views so nothing here joins an autograd graph
            // (a momentum buffer holding a graph would grow it every step).
            let p = var.as_detached_tensor();
            let grad = grad.detach();
            if let OptimizerKind::AdamW { beta1, beta2, eps } = self.config.kind {
                let (name, var) = (name.clone(), var.clone());
                let wd = self.groups[gi].weight_decay;
                self.adamw_update(&name, &var, &p, &grad, wd, (beta1, beta2, eps))?;
                continue;
            }
            let direction = self.direction(&self.groups[gi], &p, &grad)?;
            let (name, var) = (name.clone(), var.clone());
            if self.fused && fused::applies(&p, &grad, self.config.momentum) {
                self.fused_update(&name, &var, &grad, direction)?;
            } else {
                self.composed_update(&name, &var, &p, &grad, direction)?;
            }
        }
        Ok(())
    }

    /// Weight decay and LARS scaling of one parameter's gradient:
    /// `d = scale · (g + wd · p)`.
    fn direction(&self, group: &ParamGroup, p: &Tensor, grad: &Tensor) -> Result<Direction> {
        let wd = group.weight_decay;
        Ok(match self.config.kind {
            // AdamW never gets here (`Optimizer::step` updates it on its own path).
            OptimizerKind::Sgd | OptimizerKind::AdamW { .. } => Direction { wd, scale: None },
            OptimizerKind::Lars {
                trust_coefficient,
                eps,
                clip_lr,
            } => {
                if !group.lars_adapt {
                    return Ok(Direction {
                        wd: 0.0,
                        scale: None,
                    });
                }
                let p_norm = l2_norm(p)?;
                let g_norm = l2_norm(grad)?;
                if p_norm != 0.0 && g_norm != 0.0 {
                    let mut local_lr = trust_coefficient * p_norm / (g_norm + p_norm * wd + eps);
                    if clip_lr {
                        local_lr = (local_lr / self.lr).min(1.0);
                    }
                    Direction {
                        wd,
                        scale: Some(local_lr),
                    }
                } else {
                    // lightly: no scaling and no weight decay for this step.
                    Direction {
                        wd: 0.0,
                        scale: None,
                    }
                }
            }
            OptimizerKind::LarsMoCoV3 { trust_coefficient } => {
                if !group.lars_adapt {
                    return Ok(Direction {
                        wd: 0.0,
                        scale: None,
                    });
                }
                let p_norm = l2_norm(p)?;
                let d_norm = if wd != 0.0 {
                    l2_norm(&(grad + (p * wd)?)?)?
                } else {
                    l2_norm(grad)?
                };
                // moco-v3: `torch.where(param_norm > 0., torch.where(update_norm > 0, ...), 1.)`.
                let scale = if p_norm > 0.0 && d_norm > 0.0 {
                    trust_coefficient * p_norm / d_norm
                } else {
                    1.0
                };
                Direction {
                    wd,
                    scale: Some(scale),
                }
            }
        })
    }

    /// `torch.optim.AdamW`'s update of one parameter (its single-tensor path).
    fn adamw_update(
        &mut self,
        name: &str,
        var: &Var,
        p: &Tensor,
        grad: &Tensor,
        wd: f64,
        (beta1, beta2, eps): (f64, f64, f64),
    ) -> Result<()> {
        let lr = self.lr;
        let step = self.adam_steps.entry(name.to_string()).or_insert(0);
        *step += 1;
        let t = *step as i32;
        let p = if wd != 0.0 {
            (p * (1.0 - lr * wd))?
        } else {
            p.clone()
        };
        let m = match self.momentum_buffers.get(name) {
            None => (grad * (1.0 - beta1))?,
            Some(m) => ((m * beta1)? + (grad * (1.0 - beta1))?)?,
        };
        let g2 = grad.sqr()?;
        let v = match self.second_moments.get(name) {
            None => (g2 * (1.0 - beta2))?,
            Some(v) => ((v * beta2)? + (g2 * (1.0 - beta2))?)?,
        };
        let bias1 = 1.0 - beta1.powi(t);
        let bias2 = 1.0 - beta2.powi(t);
        let denom = ((v.sqrt()? / bias2.sqrt())? + eps)?;
        let updated = (p - (m.div(&denom)? * (lr / bias1))?)?;
        var.set(&updated)?;
        self.momentum_buffers.insert(name.to_string(), m);
        self.second_moments.insert(name.to_string(), v);
        Ok(())
    }

    /// The update as Candle ops (any device, dtype and layout).
    fn composed_update(
        &mut self,
        name: &str,
        var: &Var,
        p: &Tensor,
        grad: &Tensor,
        dir: Direction,
    ) -> Result<()> {
        let momentum = self.config.momentum;
        let dampening = self.config.dampening;
        let mut d_p = if dir.wd != 0.0 {
            (grad + (p * dir.wd)?)?
        } else {
            grad.clone()
        };
        if let Some(scale) = dir.scale {
            d_p = (d_p * scale)?;
        }
        if momentum != 0.0 {
            let buf = match self.momentum_buffers.get(name) {
                None => d_p.copy()?,
                Some(buf) => {
                    let scaled = (buf * momentum)?;
                    if dampening != 0.0 {
                        (scaled + (&d_p * (1.0 - dampening))?)?
                    } else {
                        (scaled + &d_p)?
                    }
                }
            };
            d_p = if self.config.nesterov {
                (&d_p + (&buf * momentum)?)?
            } else {
                buf.clone()
            };
            self.momentum_buffers.insert(name.to_string(), buf);
        }
        let updated = (p - (d_p * self.lr)?)?;
        var.set(&updated)?;
        Ok(())
    }

    /// The same arithmetic in two in-place passes on the CPU (buffer, then
    /// parameter), split across threads; bit-identical to
    /// [`Optimizer::composed_update`].
    fn fused_update(&mut self, name: &str, var: &Var, grad: &Tensor, dir: Direction) -> Result<()> {
        let h = fused::Hyper {
            wd: dir.wd as f32,
            scale: dir.scale.map(|s| s as f32),
            momentum: self.config.momentum as f32,
            one_minus_dampening: (self.config.dampening != 0.0)
                .then_some((1.0 - self.config.dampening) as f32),
            nesterov: self.config.nesterov,
            lr: self.lr as f32,
        };
        let p = var.as_tensor();
        let (buf, first) = match self.momentum_buffers.get(name) {
            Some(buf) if buf.is_contiguous() && buf.device().is_cpu() => (buf.clone(), false),
            _ => (p.zeros_like()?.detach(), true),
        };
        buf.inplace_op3(grad, p, &fused::BufferPass { h: &h, first })?;
        p.inplace_op3(grad, &buf, &fused::ParamPass { h: &h })?;
        self.momentum_buffers.insert(name.to_string(), buf);
        Ok(())
    }

    /// The optimizer's state as named tensors: one
    /// `momentum_buffer.<param name>` per parameter that has a buffer
    /// (parameters never updated have none, as in PyTorch). The learning rate
    /// is not included: it comes from the schedule and the step counter.
    ///
    /// The tensors are copies: later steps, which update the buffers in place
    /// on the CPU, do not change them.
    pub fn state_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out: BTreeMap<String, Tensor> = self
            .momentum_buffers
            .iter()
            .map(|(name, buf)| Ok((format!("{MOMENTUM_BUFFER_PREFIX}{name}"), buf.copy()?)))
            .collect::<Result<_>>()?;
        for (name, v) in &self.second_moments {
            out.insert(format!("{SECOND_MOMENT_PREFIX}{name}"), v.copy()?);
        }
        for (name, &t) in &self.adam_steps {
            out.insert(
                format!("{ADAM_STEP_PREFIX}{name}"),
                mocca_queue::u64_tensor(t)?,
            );
        }
        Ok(out)
    }

    /// Restores [`Optimizer::state_tensors`]. Every `momentum_buffer.*` entry
    /// must name a parameter of this optimizer with the same shape and dtype;
    /// entries with other prefixes are ignored. Buffers absent from `state`
    /// are cleared, so the restored optimizer equals the saved one.
    pub fn load_state_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let params: HashMap<&str, &Var> = self
            .groups
            .iter()
            .flat_map(|g| g.params.iter().map(|(n, v)| (n.as_str(), v)))
            .collect();
        let mut buffers = HashMap::new();
        let mut second = HashMap::new();
        let mut steps = HashMap::new();
        for (key, tensor) in state {
            if let Some(name) = key.strip_prefix(ADAM_STEP_PREFIX) {
                if !params.contains_key(name) {
                    return Err(MethodError::StateMismatch(format!(
                        "AdamW step count for unknown parameter `{name}`"
                    )));
                }
                steps.insert(name.to_string(), crate::checkpoint::get_u64(state, key)?);
                continue;
            }
            let (name, into) = match (
                key.strip_prefix(MOMENTUM_BUFFER_PREFIX),
                key.strip_prefix(SECOND_MOMENT_PREFIX),
            ) {
                (Some(n), _) => (n, &mut buffers),
                (None, Some(n)) => (n, &mut second),
                (None, None) => continue,
            };
            let Some(var) = params.get(name) else {
                return Err(MethodError::StateMismatch(format!(
                    "momentum buffer for unknown parameter `{name}`"
                )));
            };
            if tensor.dims() != var.dims() || tensor.dtype() != var.dtype() {
                return Err(MethodError::StateMismatch(format!(
                    "momentum buffer `{name}` is {:?} {:?}, parameter is {:?} {:?}",
                    tensor.dims(),
                    tensor.dtype(),
                    var.dims(),
                    var.dtype()
                )));
            }
            // A copy: the buffer is updated in place and must not write
            // through to the caller's tensor.
            let buf = tensor.to_device(var.device())?.detach().copy()?;
            into.insert(name.to_string(), buf);
        }
        self.momentum_buffers = buffers;
        self.second_moments = second;
        self.adam_steps = steps;
        Ok(())
    }
}

fn l2_norm(t: &Tensor) -> Result<f64> {
    if let Some(sq) = fused::sum_of_squares(t)? {
        return Ok(sq.sqrt());
    }
    // Accumulate in f64 so the local learning rate does not depend on the
    // parameter's dtype or the reduction order.
    let sq = t
        .to_dtype(candle_core::DType::F64)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()?;
    Ok(sq.sqrt())
}

/// The CPU update of contiguous f32 tensors as two in-place passes.
///
/// Each product is followed by `+ 0.0`, as in Candle's `affine(mul, 0)` that
/// the composed path runs, so both paths round identically (a product of
/// `-0.0` turns into `+0.0` in both).
mod fused {
    use candle_core::{CpuStorage, DType, InplaceOp3, Layout, Tensor};
    use rayon::prelude::*;

    const CHUNK: usize = 1 << 14;

    pub(super) fn applies(p: &Tensor, grad: &Tensor, momentum: f64) -> bool {
        momentum != 0.0
            && p.device().is_cpu()
            && grad.device().is_cpu()
            && p.dtype() == DType::F32
            && grad.dtype() == DType::F32
            && p.is_contiguous()
            && grad.is_contiguous()
    }

    pub(super) struct Hyper {
        pub wd: f32,
        pub scale: Option<f32>,
        pub momentum: f32,
        pub one_minus_dampening: Option<f32>,
        pub nesterov: bool,
        pub lr: f32,
    }

    impl Hyper {
        #[inline(always)]
        fn direction(&self, g: f32, p: f32) -> f32 {
            let mut d = if self.wd != 0.0 {
                g + (p * self.wd + 0.0)
            } else {
                g
            };
            if let Some(s) = self.scale {
                d = d * s + 0.0;
            }
            d
        }
    }

    fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
            _ => candle_core::bail!("fused optimizer update: needs contiguous f32 tensors"),
        }
    }

    fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
        match (s, l.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
            _ => candle_core::bail!("fused optimizer update: needs contiguous f32 tensors"),
        }
    }

    /// `buf ← d` on the first step, else `buf ← μ·buf + (1−damp)·d`.
    pub(super) struct BufferPass<'a> {
        pub h: &'a Hyper,
        pub first: bool,
    }

    impl InplaceOp3 for BufferPass<'_> {
        fn name(&self) -> &'static str {
            "mocca-sgd-momentum-buffer"
        }

        fn cpu_fwd(
            &self,
            buf: &mut CpuStorage,
            lb: &Layout,
            g: &CpuStorage,
            lg: &Layout,
            p: &CpuStorage,
            lp: &Layout,
        ) -> candle_core::Result<()> {
            let (buf, g, p) = (slice_mut(buf, lb)?, slice(g, lg)?, slice(p, lp)?);
            let h = self.h;
            buf.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK).zip(p.par_chunks(CHUNK)))
                .for_each(|(b, (g, p))| {
                    for ((b, &g), &p) in b.iter_mut().zip(g).zip(p) {
                        let d = h.direction(g, p);
                        *b = if self.first {
                            d
                        } else {
                            let scaled = *b * h.momentum + 0.0;
                            match h.one_minus_dampening {
                                Some(k) => scaled + (d * k + 0.0),
                                None => scaled + d,
                            }
                        };
                    }
                });
            Ok(())
        }
    }

    /// `p ← p − lr·(d + μ·buf)` (Nesterov) or `p ← p − lr·buf`.
    pub(super) struct ParamPass<'a> {
        pub h: &'a Hyper,
    }

    impl InplaceOp3 for ParamPass<'_> {
        fn name(&self) -> &'static str {
            "mocca-sgd-param-update"
        }

        fn cpu_fwd(
            &self,
            p: &mut CpuStorage,
            lp: &Layout,
            g: &CpuStorage,
            lg: &Layout,
            buf: &CpuStorage,
            lb: &Layout,
        ) -> candle_core::Result<()> {
            let (p, g, buf) = (slice_mut(p, lp)?, slice(g, lg)?, slice(buf, lb)?);
            let h = self.h;
            p.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK).zip(buf.par_chunks(CHUNK)))
                .for_each(|(p, (g, b))| {
                    for ((p, &g), &b) in p.iter_mut().zip(g).zip(b) {
                        let step = if h.nesterov {
                            h.direction(g, *p) + (b * h.momentum + 0.0)
                        } else {
                            b
                        };
                        *p -= step * h.lr + 0.0;
                    }
                });
            Ok(())
        }
    }

    /// `Σ x²` in f64 of a contiguous f32 CPU tensor, summed per fixed chunk and
    /// then over chunks in order, so the result does not depend on the thread
    /// count; `None` for other tensors.
    pub(super) fn sum_of_squares(t: &Tensor) -> candle_core::Result<Option<f64>> {
        if !(t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous()) {
            return Ok(None);
        }
        let (storage, layout) = t.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            return Ok(None);
        };
        let v = slice(cpu, layout)?;
        let partial: Vec<f64> = v
            .par_chunks(CHUNK)
            .map(|c| c.iter().map(|&x| x as f64 * x as f64).sum::<f64>())
            .collect();
        Ok(Some(partial.iter().sum()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Runs four steps with the given path and returns the parameters' bits.
    fn run(cfg: &OptimizerConfig, fused: bool) -> Vec<u32> {
        let dev = Device::Cpu;
        let w = Var::from_vec(
            (0..40_000)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect(),
            (200, 200),
            &dev,
        )
        .unwrap();
        let b = Var::from_vec(
            (0..200).map(|i| i as f32 / 100.0 - 1.0).collect(),
            200,
            &dev,
        )
        .unwrap();
        let mut opt = Optimizer::new(
            vec![("w".into(), w.clone()), ("fc.bias".into(), b.clone())],
            cfg.clone(),
        )
        .unwrap();
        opt.fused = fused;
        for step in 0..4 {
            let target = Tensor::full(step as f32 * 0.1, (200, 200), &dev).unwrap();
            let loss = ((w.as_tensor() - target)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                + b.as_tensor().sqr().unwrap().sum_all().unwrap())
            .unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        let mut out: Vec<u32> = w
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        out.extend(
            b.as_tensor()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits()),
        );
        out
    }

    #[test]
    fn fused_cpu_update_is_bit_identical_to_the_composed_one() {
        let mut configs = vec![
            OptimizerConfig::sgd(0.01, 0.9, 1e-4),
            OptimizerConfig::lars(0.3, 0.9, 1e-6),
        ];
        let mut nesterov = OptimizerConfig::sgd(0.01, 0.9, 5e-4);
        nesterov.nesterov = true;
        nesterov.exclude_bias_and_norm = true;
        configs.push(nesterov);
        let mut damped = OptimizerConfig::sgd(0.02, 0.8, 1e-3);
        damped.dampening = 0.3;
        configs.push(damped);
        for cfg in &configs {
            assert_eq!(run(cfg, true), run(cfg, false), "{cfg:?}");
        }
    }
}
