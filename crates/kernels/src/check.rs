//! Operand checks shared by the ops, and the test for the fast CPU path.

use candle_core::{DType, Result, Tensor};

use crate::OpError;

/// Whether the fast CPU kernels take these operands (all f32 on the CPU).
pub(crate) fn fast_path(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

pub(crate) fn check_same_device(op: &'static str, ts: &[(&str, &Tensor)]) -> Result<()> {
    let (name0, t0) = ts[0];
    for (name, t) in &ts[1..] {
        if !t.device().same_device(t0.device()) {
            return Err(OpError::Unsupported {
                op,
                msg: format!(
                    "{name} is on {:?} but {name0} is on {:?}",
                    t.device().location(),
                    t0.device().location()
                ),
            }
            .into());
        }
    }
    Ok(())
}

pub(crate) fn check_same_dtype(op: &'static str, ts: &[(&str, &Tensor)]) -> Result<()> {
    let (name0, t0) = ts[0];
    for (name, t) in &ts[1..] {
        if t.dtype() != t0.dtype() {
            return Err(OpError::Unsupported {
                op,
                msg: format!("{name} is {:?} but {name0} is {:?}", t.dtype(), t0.dtype()),
            }
            .into());
        }
    }
    Ok(())
}

pub(crate) fn check_same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(OpError::Shape {
            op,
            msg: format!("operands differ in shape: {:?} vs {:?}", a.dims(), b.dims()),
        }
        .into());
    }
    check_same_device(op, &[("a", a), ("b", b)])?;
    check_same_dtype(op, &[("a", a), ("b", b)])
}

pub(crate) fn check_rank4(op: &'static str, x: &Tensor) -> Result<()> {
    if x.rank() != 4 || x.elem_count() == 0 {
        return Err(OpError::Shape {
            op,
            msg: format!(
                "x must be a non-empty [N, H, W, C] (NHWC), got shape {:?}",
                x.dims()
            ),
        }
        .into());
    }
    Ok(())
}

/// Per-channel parameters must be `[C]` vectors.
pub(crate) fn check_bn_params(c: usize, params: &[(&str, &Tensor)]) -> Result<()> {
    for (name, t) in params {
        if t.dims() != [c] {
            return Err(OpError::Shape {
                op: "batch_norm",
                msg: format!("{name} must have shape [{c}], got {:?}", t.dims()),
            }
            .into());
        }
    }
    Ok(())
}

/// Channel count of an eval-mode BatchNorm input `[N, C]` or `[N, H, W, C]`.
pub(crate) fn check_bn_eval_input(x: &Tensor) -> Result<usize> {
    match x.dims() {
        [_, c] | [_, _, _, c] if x.elem_count() > 0 => Ok(*c),
        dims => Err(OpError::Shape {
            op: "batch_norm",
            msg: format!("x must be a non-empty [N, C] or [N, H, W, C] (NHWC), got {dims:?}"),
        }
        .into()),
    }
}
