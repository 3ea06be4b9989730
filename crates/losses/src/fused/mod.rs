//! Fused CPU path: each loss is one candle custom op whose forward does the
//! whole computation on f32 slices (GEMMs through mocca-kernels' `sgemm`, rows through
//! rayon) and, when an input tracks gradients, also the gradients w.r.t. the
//! raw inputs, which the backward then only scales by the incoming gradient.
//! Computing them in the forward saves recomputing the logits (one GEMM of
//! three) and means the backward never reads the negatives again.

mod dense;
mod infonce;
pub(crate) mod kernels;

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use mocca_kernels::cpu::f32_operand;

pub(crate) use dense::DenseKind;

/// What a fused forward produced.
pub(crate) struct FusedResult {
    loss_sum: f64,
    correct: usize,
    rows: usize,
    /// No NaN or infinity was met among the similarities (InfoNCE checks its
    /// negatives this way instead of scanning the whole queue again).
    pub(crate) finite: bool,
    /// dL/d(first input), dL/d(second input) of the mean loss, when asked for.
    pub(crate) grads: Option<(Vec<f32>, Vec<f32>)>,
}

impl FusedResult {
    pub(crate) fn new(loss_sum: f64, correct: usize, rows: usize) -> Self {
        Self {
            loss_sum,
            correct,
            rows,
            finite: true,
            grads: None,
        }
    }

    fn loss(&self) -> f32 {
        (self.loss_sum / self.rows as f64) as f32
    }

    fn accuracy(&self) -> f32 {
        (self.correct as f64 / self.rows as f64) as f32
    }
}

/// The forward's side results, shared between the op (inside the graph) and
/// the caller.
#[derive(Default)]
struct Shared {
    accuracy: f32,
    finite: bool,
    grads: Option<(Vec<f32>, Vec<f32>)>,
}

type SharedState = Arc<Mutex<Shared>>;

fn publish(state: &SharedState, r: FusedResult) -> candle_core::Result<(CpuStorage, Shape)> {
    let loss = r.loss();
    let mut st = state
        .lock()
        .map_err(|_| candle_core::Error::Msg("poisoned loss state".into()))?;
    st.accuracy = r.accuracy();
    st.finite = r.finite;
    st.grads = r.grads;
    Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
}

fn stored_grads(
    state: &SharedState,
    a: &Tensor,
    b: &Tensor,
    grad_res: &Tensor,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
    let st = state
        .lock()
        .map_err(|_| candle_core::Error::Msg("poisoned loss state".into()))?;
    let Some((ga, gb)) = st.grads.as_ref() else {
        candle_core::bail!("fused loss: backward called on a forward that did not track gradients")
    };
    // Inputs that do not track gradients (MoCo's detached keys) get none.
    let scaled = |g: &[f32], x: &Tensor| -> candle_core::Result<Option<Tensor>> {
        if !x.track_op() {
            return Ok(None);
        }
        Ok(Some(
            Tensor::from_slice(g, x.shape(), x.device())?.broadcast_mul(grad_res)?,
        ))
    };
    Ok((scaled(ga, a)?, scaled(gb, b)?))
}

struct DenseOp {
    kind: DenseKind,
    inv_tau: f32,
    need_grad: bool,
    state: SharedState,
}

impl CustomOp2 for DenseOp {
    fn name(&self) -> &'static str {
        match self.kind {
            DenseKind::NtXent => "mocca-ntxent",
            DenseKind::EndToEnd => "mocca-infonce-end-to-end",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let a = f32_operand(s1, l1, self.name())?;
        let b = f32_operand(s2, l2, self.name())?;
        let (n, d) = l1.shape().dims2()?;
        let r = dense::dense_loss(self.kind, a, b, n, d, self.inv_tau, self.need_grad);
        publish(&self.state, r)
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        stored_grads(&self.state, a, b, grad_res)
    }
}

struct InfoNceOp {
    inv_tau: f32,
    need_grad: bool,
    state: SharedState,
}

impl CustomOp3 for InfoNceOp {
    fn name(&self) -> &'static str {
        "mocca-infonce"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let q = f32_operand(s1, l1, self.name())?;
        let k = f32_operand(s2, l2, self.name())?;
        let negatives = f32_operand(s3, l3, self.name())?;
        let (n, d) = l1.shape().dims2()?;
        let r = infonce::infonce_loss(q, k, negatives, n, d, self.inv_tau, self.need_grad);
        publish(&self.state, r)
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        _negatives: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // No gradient into the negatives: MoCo's queue is a constant.
        let (gq, gk) = stored_grads(&self.state, q, k, grad_res)?;
        Ok((gq, gk, None))
    }
}

struct InfoNceIndexedOp {
    inv_tau: f32,
    need_grad: bool,
    /// `[n, K]` row indices into the bank, row-major.
    indices: Vec<u32>,
    state: SharedState,
}

impl CustomOp3 for InfoNceIndexedOp {
    fn name(&self) -> &'static str {
        "mocca-infonce-indexed"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let q = f32_operand(s1, l1, self.name())?;
        let k = f32_operand(s2, l2, self.name())?;
        let bank = f32_operand(s3, l3, self.name())?;
        let (n, d) = l1.shape().dims2()?;
        let r = infonce::infonce_indexed_loss(
            q,
            k,
            bank,
            &self.indices,
            n,
            d,
            self.inv_tau,
            self.need_grad,
        );
        publish(&self.state, r)
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        _bank: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The memory bank is a constant, as the queue.
        let (gq, gk) = stored_grads(&self.state, q, k, grad_res)?;
        Ok((gq, gk, None))
    }
}

/// Output of a fused loss: the scalar loss (f32, differentiable), the
/// fraction of rows whose positive has the largest logit, and whether every
/// similarity was finite.
pub(crate) struct Fused {
    pub(crate) loss: Tensor,
    pub(crate) accuracy: f32,
    pub(crate) finite: bool,
}

fn finish(loss: Tensor, state: &SharedState) -> candle_core::Result<Fused> {
    let st = state
        .lock()
        .map_err(|_| candle_core::Error::Msg("poisoned loss state".into()))?;
    let (accuracy, finite) = (st.accuracy, st.finite);
    Ok(Fused {
        loss,
        accuracy,
        finite,
    })
}

/// NT-Xent or end-to-end InfoNCE of contiguous f32 CPU tensors `[n, d]`.
pub(crate) fn dense(
    kind: DenseKind,
    a: &Tensor,
    b: &Tensor,
    inv_tau: f32,
) -> candle_core::Result<Fused> {
    let state = SharedState::default();
    let need_grad = a.track_op() || b.track_op();
    let op = DenseOp {
        kind,
        inv_tau,
        need_grad,
        state: state.clone(),
    };
    let loss = if need_grad {
        a.apply_op2(b, op)?
    } else {
        a.apply_op2_no_bwd(b, &op)?
    };
    finish(loss, &state)
}

/// InfoNCE of contiguous f32 CPU tensors: `q`, `k` `[n, d]`, `negatives` `[K, d]`.
pub(crate) fn infonce(
    q: &Tensor,
    k: &Tensor,
    negatives: &Tensor,
    inv_tau: f32,
) -> candle_core::Result<Fused> {
    let state = SharedState::default();
    let need_grad = q.track_op() || k.track_op();
    let op = InfoNceOp {
        inv_tau,
        need_grad,
        state: state.clone(),
    };
    apply_infonce(q, k, negatives, op, need_grad, &state)
}

/// Runs an InfoNCE op over `(q, k, third)`, recording the backward pass only when a gradient
/// is wanted.
fn apply_infonce<O: candle_core::CustomOp3 + Send + Sync + 'static>(
    q: &Tensor,
    k: &Tensor,
    third: &Tensor,
    op: O,
    need_grad: bool,
    state: &SharedState,
) -> candle_core::Result<Fused> {
    let loss = if need_grad {
        q.apply_op3(k, third, op)?
    } else {
        q.apply_op3_no_bwd(k, third, &op)?
    };
    finish(loss, state)
}

/// InfoNCE with per-query negatives: `q`, `k` `[n, d]` and `bank` `[rows, d]` contiguous f32
/// CPU tensors, `indices` the `[n, K]` bank rows of each query's negatives (checked by the
/// caller).
pub(crate) fn infonce_indexed(
    q: &Tensor,
    k: &Tensor,
    bank: &Tensor,
    indices: Vec<u32>,
    inv_tau: f32,
) -> candle_core::Result<Fused> {
    let state = SharedState::default();
    let need_grad = q.track_op() || k.track_op();
    let op = InfoNceIndexedOp {
        inv_tau,
        need_grad,
        indices,
        state: state.clone(),
    };
    apply_infonce(q, k, bank, op, need_grad, &state)
}
