//! The convolution as Candle custom ops: [`Conv2dNhwc`] and the two ops of its backward pass.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::{conv_dgrad, conv_forward, conv_wgrad, ConvGeom, Kernel, Pass};
use crate::cpu::f32_operand;
use crate::OpError;

const NAME: &str = "conv2d_nhwc";

fn check_dims(l: &Layout, expected: &[usize], what: &str) -> Result<()> {
    if l.dims() != expected {
        return Err(OpError::Shape {
            op: NAME,
            msg: format!("{what} has shape {:?}, expected {expected:?}", l.dims()),
        }
        .into());
    }
    Ok(())
}

/// The differentiable CPU convolution: arguments `(x, w)`.
pub(crate) struct Conv2dNhwc {
    pub stride: usize,
    pub padding: usize,
}

impl CustomOp2 for Conv2dNhwc {
    fn name(&self) -> &'static str {
        "mocca-conv2d-nhwc"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (f32_operand(s1, l1, NAME)?, f32_operand(s2, l2, NAME)?);
        let g = ConvGeom::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        let y = conv_forward(a, b, &g, Kernel::choose(&g, Pass::Forward));
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.ho, g.wo, g.cout))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = ConvGeom::new(x.dims(), w.dims(), self.stride, self.padding)?;
        let dy = dy.contiguous()?;
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(w, &ConvInputGrad(g))?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&dy, &ConvWeightGrad(g))?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// `(dy, w) → dx` for a convolution of geometry `.0`.
struct ConvInputGrad(ConvGeom);

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "mocca-conv2d-nhwc-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let (a, b) = (f32_operand(s1, l1, NAME)?, f32_operand(s2, l2, NAME)?);
        check_dims(l1, &[g.n, g.ho, g.wo, g.cout], "output gradient")?;
        check_dims(l2, &[g.cout, g.cin, g.kh, g.kw], "weight")?;
        let dx = conv_dgrad(a, b, g, Kernel::choose(g, Pass::InputGrad));
        Ok((CpuStorage::F32(dx), Shape::from((g.n, g.h, g.w, g.cin))))
    }
}

/// `(x, dy) → dw` for a convolution of geometry `.0`.
struct ConvWeightGrad(ConvGeom);

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "mocca-conv2d-nhwc-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let (a, b) = (f32_operand(s1, l1, NAME)?, f32_operand(s2, l2, NAME)?);
        check_dims(l1, &[g.n, g.h, g.w, g.cin], "input")?;
        check_dims(l2, &[g.n, g.ho, g.wo, g.cout], "output gradient")?;
        let dw = conv_wgrad(a, b, g, Kernel::choose(g, Pass::WeightGrad));
        Ok((
            CpuStorage::F32(dw),
            Shape::from((g.cout, g.cin, g.kh, g.kw)),
        ))
    }
}
