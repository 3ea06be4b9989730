//! Weight repacking: torchvision's `[C_out, C_in, kh, kw]` to the right operands of the
//! forward and the stride-1 input-gradient products.

use super::ConvGeom;

/// Weight `[cout, cin, kh, kw]` to the forward GEMM's right operand `[(a, b, ci), co]`.
pub(super) fn pack_forward(w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let mut wp = vec![0.0f32; g.k() * g.cout];
    for co in 0..g.cout {
        for ci in 0..g.cin {
            for a in 0..g.kh {
                for b in 0..g.kw {
                    let src = ((co * g.cin + ci) * g.kh + a) * g.kw + b;
                    wp[((a * g.kw + b) * g.cin + ci) * g.cout + co] = w[src];
                }
            }
        }
    }
    wp
}

/// Weight `[cout, cin, kh, kw]` to the right operand of the stride-1 input-gradient convolution:
/// `[(a, b, co), ci]` holding `w[co, ci, kh-1-a, kw-1-b]`.
pub(super) fn pack_flipped_transposed(w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let mut wp = vec![0.0f32; g.k() * g.cout];
    for co in 0..g.cout {
        for ci in 0..g.cin {
            for a in 0..g.kh {
                for b in 0..g.kw {
                    let src = ((co * g.cin + ci) * g.kh + (g.kh - 1 - a)) * g.kw + (g.kw - 1 - b);
                    wp[((a * g.kw + b) * g.cout + co) * g.cin + ci] = w[src];
                }
            }
        }
    }
    wp
}
