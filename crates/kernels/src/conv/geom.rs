//! The shapes of one convolution ([`ConvGeom`]), checked once, and what the kernels derive
//! from them.

use crate::OpError;

/// Shapes of one convolution: input `[n, h, w, cin]`, weight `[cout, cin, kh, kw]`,
/// output `[n, ho, wo, cout]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeom {
    /// Checks the operands of `conv2d_nhwc` and derives the output size.
    pub(crate) fn new(
        x_dims: &[usize],
        w_dims: &[usize],
        stride: usize,
        padding: usize,
    ) -> std::result::Result<Self, OpError> {
        const OP: &str = "conv2d_nhwc";
        let &[n, h, w, cin] = x_dims else {
            return Err(OpError::Shape {
                op: OP,
                msg: format!("x must be [N, H, W, C_in] (NHWC), got shape {x_dims:?}"),
            });
        };
        let &[cout, wcin, kh, kw] = w_dims else {
            return Err(OpError::Shape {
                op: OP,
                msg: format!("weight must be [C_out, C_in, kh, kw], got shape {w_dims:?}"),
            });
        };
        if wcin != cin {
            return Err(OpError::Shape {
                op: OP,
                msg: format!(
                    "x has {cin} channels (last dim of {x_dims:?}) but the weight {w_dims:?} expects {wcin}"
                ),
            });
        }
        if stride == 0 {
            return Err(OpError::Argument {
                op: OP,
                msg: "stride must be at least 1".into(),
            });
        }
        if x_dims.contains(&0) || w_dims.contains(&0) {
            return Err(OpError::Shape {
                op: OP,
                msg: format!("empty operand: x {x_dims:?}, weight {w_dims:?}"),
            });
        }
        if h + 2 * padding < kh || w + 2 * padding < kw {
            return Err(OpError::Shape {
                op: OP,
                msg: format!(
                    "input {h}x{w} with padding {padding} is smaller than the {kh}x{kw} kernel"
                ),
            });
        }
        Ok(Self {
            n,
            h,
            w,
            cin,
            cout,
            kh,
            kw,
            stride,
            pad_h: padding,
            pad_w: padding,
            ho: (h + 2 * padding - kh) / stride + 1,
            wo: (w + 2 * padding - kw) / stride + 1,
        })
    }

    /// Length of one im2col row.
    pub(crate) fn k(&self) -> usize {
        self.kh * self.kw * self.cin
    }

    /// Number of output pixels, the GEMM's M.
    pub(crate) fn rows(&self) -> usize {
        self.n * self.ho * self.wo
    }

    /// A 1x1 stride-1 unpadded convolution is a plain matrix product over the NHWC rows.
    pub(super) fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad_h == 0 && self.pad_w == 0
    }

    /// For stride 1, the input gradient is a forward convolution of the output gradient with the
    /// spatially flipped, in/out-transposed kernel and padding `k - 1 - p`; `None` when that
    /// padding would be negative or the stride is not 1.
    pub(super) fn dgrad_as_forward(&self) -> Option<ConvGeom> {
        if self.stride != 1 || self.pad_h >= self.kh || self.pad_w >= self.kw {
            return None;
        }
        Some(ConvGeom {
            n: self.n,
            h: self.ho,
            w: self.wo,
            cin: self.cout,
            cout: self.cin,
            kh: self.kh,
            kw: self.kw,
            stride: 1,
            pad_h: self.kh - 1 - self.pad_h,
            pad_w: self.kw - 1 - self.pad_w,
            ho: self.h,
            wo: self.w,
        })
    }

    /// Columns `[b_lo, b_hi)` of the kernel that land inside the input for output column `ow`,
    /// and the input column of kernel column 0 (possibly negative).
    #[inline]
    pub(super) fn col_range(&self, ow: usize) -> (isize, usize, usize) {
        let iw0 = (ow * self.stride) as isize - self.pad_w as isize;
        let b_lo = ((-iw0).max(0) as usize).min(self.kw);
        let b_hi = ((self.w as isize - iw0).max(0) as usize).min(self.kw);
        (iw0, b_lo, b_hi.max(b_lo))
    }
}
