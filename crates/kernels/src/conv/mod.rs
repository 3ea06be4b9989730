//! Convolution in NHWC on the CPU: forward, input gradient and weight gradient, by the direct
//! kernels of `direct.rs` or as GEMMs ([`Kernel::choose`] picks per pass and shape).
//!
//! With channels last, the im2col row of an output pixel is `kh` contiguous runs of `kw·C_in`
//! floats, and the forward pass is `[rows, kh·kw·C_in] × [kh·kw·C_in, C_out]` written straight
//! into the NHWC output. The rows are cut into chunks whose im2col tile fits in a core's L2
//! cache; each Rayon task fills its tile and multiplies it on its own thread.

mod direct;
mod drivers;
mod geom;
mod im2col;
mod kernel;
mod op;
mod pack;

pub(crate) use drivers::{conv_dgrad, conv_dgrad_add, conv_forward, conv_wgrad};
pub(crate) use geom::ConvGeom;
pub(crate) use kernel::{Kernel, Pass};
pub(crate) use op::Conv2dNhwc;
