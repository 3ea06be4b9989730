use std::collections::HashMap;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Tensor, Var};
use rayon::prelude::*;

use crate::memory_bank::check_momentum;
use crate::QueueError;

/// How the key encoder's BatchNorm running statistics (`running_mean`,
/// `running_var`, `num_batches_tracked`) follow the query encoder's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BufferPolicy {
    /// Leave them alone (MoCo). MoCo averages `encoder_q.parameters()` only;
    /// the key encoder's running statistics evolve through its own
    /// train-mode forward passes on the key batches, so they describe the
    /// features the key encoder actually produces. Averaging or copying the
    /// query encoder's statistics would pair them with different weights.
    #[default]
    Own,
    /// Copy the query encoder's buffers at every update.
    Copy,
    /// Average them with the same momentum as the parameters; integer
    /// buffers (`num_batches_tracked`) are copied.
    Average,
}

/// One key tensor and its query counterpart.
#[derive(Debug)]
struct Pair {
    key: Tensor,
    query: Tensor,
}

/// The momentum (exponential moving average) update of MoCo's key encoder
/// (He et al. 2020, eq. 2): `θ_k ← m·θ_k + (1 − m)·θ_q` over the trainable
/// parameters, matched by name, done in place. BatchNorm running statistics
/// are handled separately and explicitly (see [`BufferPolicy`]).
///
/// The update is the same f32 arithmetic as MoCo's
/// `param_k.data * m + param_q.data * (1. - m)` (two products, one sum, no
/// fused multiply-add), so it reproduces PyTorch's values bit for bit.
/// lightly calls this step `update_momentum(model, model_ema, m)`; here it is
/// [`MomentumUpdate::update`].
#[doc(alias = "update_momentum")]
#[derive(Debug)]
pub struct MomentumUpdate {
    params: Vec<Pair>,
    buffers: Vec<Pair>,
    buffer_policy: BufferPolicy,
}

impl MomentumUpdate {
    /// Pairs the key encoder's trainable parameters with the query
    /// encoder's by name. Errors if a name is missing on either side,
    /// appears twice, or the two tensors differ in shape, dtype or device.
    pub fn new(key: &[(String, Var)], query: &[(String, Var)]) -> Result<Self, QueueError> {
        let key: Vec<(&str, &Tensor)> = key
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_tensor()))
            .collect();
        let query: Vec<(&str, &Tensor)> = query
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_tensor()))
            .collect();
        Ok(Self {
            params: pair_by_name(&key, &query)?,
            buffers: Vec::new(),
            buffer_policy: BufferPolicy::Own,
        })
    }

    /// Adds the encoders' buffers (BatchNorm running statistics; plain
    /// tensors, updated in place) with a policy for them. Same matching
    /// rules as [`new`](Self::new).
    pub fn with_buffers(
        mut self,
        key: &[(String, Tensor)],
        query: &[(String, Tensor)],
        policy: BufferPolicy,
    ) -> Result<Self, QueueError> {
        let key: Vec<(&str, &Tensor)> = key.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let query: Vec<(&str, &Tensor)> = query.iter().map(|(n, t)| (n.as_str(), t)).collect();
        self.buffers = pair_by_name(&key, &query)?;
        self.buffer_policy = policy;
        Ok(self)
    }

    /// MoCo's initialisation: the key encoder starts as an exact copy of the
    /// query encoder (parameters and buffers).
    pub fn copy_query_to_key(&self) -> Result<(), QueueError> {
        for p in self.params.iter().chain(&self.buffers) {
            copy_into(&p.key, &p.query)?;
        }
        Ok(())
    }

    /// One momentum step with `momentum` m ∈ [0, 1] (m = 1 leaves the key
    /// encoder unchanged, m = 0 copies the query encoder): lightly's
    /// `update_momentum`.
    #[doc(alias = "update_momentum")]
    pub fn update(&self, momentum: f64) -> Result<(), QueueError> {
        check_momentum(momentum)?;
        for p in &self.params {
            lerp_into(&p.key, &p.query, momentum)?;
        }
        for b in &self.buffers {
            match self.buffer_policy {
                BufferPolicy::Own => {}
                BufferPolicy::Copy => copy_into(&b.key, &b.query)?,
                BufferPolicy::Average if b.key.dtype().is_float() => {
                    lerp_into(&b.key, &b.query, momentum)?
                }
                BufferPolicy::Average => copy_into(&b.key, &b.query)?,
            }
        }
        Ok(())
    }

    /// Number of (parameter, buffer) tensor pairs the update covers.
    pub fn num_pairs(&self) -> (usize, usize) {
        (self.params.len(), self.buffers.len())
    }
}

/// BYOL's cosine momentum schedule (Grill et al., "Bootstrap Your Own
/// Latent", 2020), used by MoCo v3 and solo-learn:
/// `m = 1 − (1 − m0)·(cos(π·k/K) + 1)/2`, from `m0` at step 0 to 1 at step
/// `K = total_steps` (and 1 after it, or when `total_steps` is 0).
pub fn cosine_momentum(base: f64, step: usize, total_steps: usize) -> f64 {
    cosine_momentum_to(base, 1.0, step, total_steps)
}

/// [`cosine_momentum`] ending at `end` instead of 1: solo-learn's `MomentumUpdater` with a
/// `final_tau` (`solo/utils/momentum.py`; its MoCo V2+ recipes go from 0.99 to 0.999),
/// `m = end − (end − m0)·(cos(π·k/K) + 1)/2`.
pub fn cosine_momentum_to(base: f64, end: f64, step: usize, total_steps: usize) -> f64 {
    let progress = if total_steps == 0 {
        1.0
    } else {
        (step as f64 / total_steps as f64).min(1.0)
    };
    mocca_core::schedule::half_cosine(base, end, std::f64::consts::PI * progress)
}

fn describe(t: &Tensor) -> String {
    format!(
        "shape {:?}, dtype {:?} on {:?}",
        t.dims(),
        t.dtype(),
        t.device().location()
    )
}

fn pair_by_name(
    key: &[(&str, &Tensor)],
    query: &[(&str, &Tensor)],
) -> Result<Vec<Pair>, QueueError> {
    let mut by_name: HashMap<&str, &Tensor> = HashMap::with_capacity(query.len());
    for &(name, t) in query {
        if by_name.insert(name, t).is_some() {
            return Err(QueueError::DuplicateParameter {
                name: name.to_string(),
                side: "query",
            });
        }
    }
    let mut seen = HashMap::with_capacity(key.len());
    let mut pairs = Vec::with_capacity(key.len());
    for &(name, k) in key {
        if seen.insert(name, ()).is_some() {
            return Err(QueueError::DuplicateParameter {
                name: name.to_string(),
                side: "key",
            });
        }
        let Some(&q) = by_name.get(name) else {
            return Err(QueueError::MissingParameter {
                name: name.to_string(),
                present: "key",
                missing: "query",
            });
        };
        if k.dims() != q.dims() || k.dtype() != q.dtype() || !k.device().same_device(q.device()) {
            return Err(QueueError::ParameterMismatch {
                name: name.to_string(),
                key: describe(k),
                query: describe(q),
            });
        }
        pairs.push(Pair {
            key: k.clone(),
            query: q.clone(),
        });
    }
    if let Some(&(name, _)) = query.iter().find(|(n, _)| !seen.contains_key(n)) {
        return Err(QueueError::MissingParameter {
            name: name.to_string(),
            present: "query",
            missing: "key",
        });
    }
    Ok(pairs)
}

/// `key ← m·key + (1 − m)·query` in place.
fn lerp_into(key: &Tensor, query: &Tensor, m: f64) -> Result<(), QueueError> {
    if key.device().is_cpu() && matches!(key.dtype(), DType::F32 | DType::F64) {
        return Ok(key.inplace_op2(query, &Lerp { m })?);
    }
    let new = ((key * m)? + (query * (1.0 - m))?)?;
    write_into(key, &new)
}

fn copy_into(key: &Tensor, query: &Tensor) -> Result<(), QueueError> {
    write_into(key, &query.contiguous()?.copy()?)
}

/// Overwrites `dst`'s storage with `src` (same shape, own storage).
fn write_into(dst: &Tensor, src: &Tensor) -> Result<(), QueueError> {
    // Flattening a contiguous tensor keeps its storage, so the 1-D view
    // writes through to the caller's tensor (scalars included).
    let src = src.contiguous()?.flatten_all()?;
    Ok(dst.flatten_all()?.slice_set(&src, 0, 0)?)
}

/// The CPU update: one pass, no temporaries, split across threads.
struct Lerp {
    m: f64,
}

impl InplaceOp2 for Lerp {
    fn name(&self) -> &'static str {
        "mocca-momentum-update"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dl: &Layout,
        src: &CpuStorage,
        sl: &Layout,
    ) -> candle_core::Result<()> {
        let (Some((d0, d1)), Some((s0, s1))) = (dl.contiguous_offsets(), sl.contiguous_offsets())
        else {
            candle_core::bail!("momentum update: parameters must be contiguous")
        };
        const CHUNK: usize = 1 << 14;
        match (dst, src) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => {
                let (a, b) = (self.m as f32, (1.0 - self.m) as f32);
                d[d0..d1]
                    .par_chunks_mut(CHUNK)
                    .zip(s[s0..s1].par_chunks(CHUNK))
                    .for_each(|(d, s)| {
                        for (x, &y) in d.iter_mut().zip(s) {
                            *x = *x * a + y * b;
                        }
                    });
            }
            (CpuStorage::F64(d), CpuStorage::F64(s)) => {
                let (a, b) = (self.m, 1.0 - self.m);
                d[d0..d1]
                    .par_chunks_mut(CHUNK)
                    .zip(s[s0..s1].par_chunks(CHUNK))
                    .for_each(|(d, s)| {
                        for (x, &y) in d.iter_mut().zip(s) {
                            *x = *x * a + y * b;
                        }
                    });
            }
            (d, s) => candle_core::bail!(
                "momentum update: unsupported dtypes {:?} / {:?}",
                d.dtype(),
                s.dtype()
            ),
        }
        Ok(())
    }
}
