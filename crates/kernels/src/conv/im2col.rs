//! im2col and its adjoint: the rows of the GEMM's left operand, one per output pixel, filled
//! from the NHWC input (zeros for padding), and their gradients added back onto the input.

use super::ConvGeom;

/// Fills `col[rows, k]` with the im2col rows of output pixels `r0..r0+rows` (zeros for padding).
pub(super) fn im2col(x: &[f32], g: &ConvGeom, r0: usize, rows: usize, col: &mut [f32]) {
    let k = g.k();
    let run = g.kw * g.cin;
    let per_image = g.ho * g.wo;
    for r in 0..rows {
        let idx = r0 + r;
        let n = idx / per_image;
        let rem = idx - n * per_image;
        let oh = rem / g.wo;
        let ow = rem - oh * g.wo;
        let (iw0, b_lo, b_hi) = g.col_range(ow);
        let dst = &mut col[r * k..(r + 1) * k];
        for a in 0..g.kh {
            let ih = (oh * g.stride + a) as isize - g.pad_h as isize;
            let seg = &mut dst[a * run..(a + 1) * run];
            if ih < 0 || ih >= g.h as isize || b_lo == b_hi {
                seg.fill(0.0);
                continue;
            }
            seg[..b_lo * g.cin].fill(0.0);
            seg[b_hi * g.cin..].fill(0.0);
            let src = ((n * g.h + ih as usize) * g.w + (iw0 + b_lo as isize) as usize) * g.cin;
            seg[b_lo * g.cin..b_hi * g.cin].copy_from_slice(&x[src..src + (b_hi - b_lo) * g.cin]);
        }
    }
}

/// Adds the im2col-shaped gradient `dcol[rows, k]` of output pixels `r0..r0+rows` of image
/// `n` back onto that image's input gradient `dx_img` `[h, w, cin]`.
pub(super) fn col2im_add(dcol: &[f32], g: &ConvGeom, r0: usize, rows: usize, dx_img: &mut [f32]) {
    let k = g.k();
    let run = g.kw * g.cin;
    for r in 0..rows {
        let rem = r0 + r;
        let oh = rem / g.wo;
        let ow = rem - oh * g.wo;
        let (iw0, b_lo, b_hi) = g.col_range(ow);
        if b_lo == b_hi {
            continue;
        }
        let src_row = &dcol[r * k..(r + 1) * k];
        for a in 0..g.kh {
            let ih = (oh * g.stride + a) as isize - g.pad_h as isize;
            if ih < 0 || ih >= g.h as isize {
                continue;
            }
            let src = &src_row[a * run + b_lo * g.cin..a * run + b_hi * g.cin];
            let start = (ih as usize * g.w + (iw0 + b_lo as isize) as usize) * g.cin;
            let dst = &mut dx_img[start..start + src.len()];
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
    }
}
