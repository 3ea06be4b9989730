//! Per-pixel kernels on 3 float planes (`img.len() == 3 * n`), with torch's
//! float32 operation order (fused multiply-adds where torch's CPU kernels fuse).

use crate::simd::multiversion;

const GRAY_R: f32 = 0.2989;
const GRAY_G: f32 = 0.587;
const GRAY_B: f32 = 0.114;

/// `r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114)`; `add_` with alpha
/// is a fused multiply-add on the CPU. The weights sum to 0.9999.
#[inline(always)]
fn gray(r: f32, g: f32, b: f32) -> f32 {
    b.mul_add(GRAY_B, g.mul_add(GRAY_G, r * GRAY_R))
}

/// `clamp(v, 0, 1)`, written as selects so that it vectorises.
#[inline(always)]
fn clamp01(v: f32) -> f32 {
    let v = if v < 0.0 { 0.0 } else { v };
    if v > 1.0 {
        1.0
    } else {
        v
    }
}

#[inline(always)]
fn planes(img: &mut [f32]) -> (&mut [f32], &mut [f32], &mut [f32]) {
    let n = img.len() / 3;
    let (r, rest) = img.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    (r, g, b)
}

multiversion! {
    /// `adjust_brightness`: `clamp(x * f, 0, 1)`.
    pub(crate) fn brightness(img: &mut [f32], factor: f32) {
        for v in img.iter_mut() {
            *v = clamp01(*v * factor);
        }
    }
}

multiversion! {
    /// Mean of the grey image over all pixels, accumulated in f64 (8 fixed
    /// lanes, so the result does not depend on the instruction set) and rounded once.
    pub(crate) fn gray_mean(img: &[f32]) -> f32 {
        let n = img.len() / 3;
        let (r, rest) = img.split_at(n);
        let (g, b) = rest.split_at(n);
        let mut lanes = [0.0f64; 8];
        let mut rc = r.chunks_exact(8);
        let mut gc = g.chunks_exact(8);
        let mut bc = b.chunks_exact(8);
        for ((r8, g8), b8) in (&mut rc).zip(&mut gc).zip(&mut bc) {
            for l in 0..8 {
                lanes[l] += gray(r8[l], g8[l], b8[l]) as f64;
            }
        }
        let mut tail = 0.0f64;
        for ((&r, &g), &b) in rc.remainder().iter().zip(gc.remainder()).zip(bc.remainder()) {
            tail += gray(r, g, b) as f64;
        }
        let total = lanes.iter().sum::<f64>() + tail;
        (total / n as f64) as f32
    }
}

multiversion! {
    /// `_blend(img, mean, f)` with one scalar `mean`: `clamp(fma(mean, 1 - f, x * f), 0, 1)`.
    pub(crate) fn blend_scalar(img: &mut [f32], other: f32, ratio: f32) {
        let keep = 1.0 - ratio;
        for v in img.iter_mut() {
            *v = clamp01(other.mul_add(keep, *v * ratio));
        }
    }
}

/// `adjust_contrast`: blend with the mean of the grey image.
pub(crate) fn contrast(img: &mut [f32], factor: f32) {
    let m = gray_mean(img);
    blend_scalar(img, m, factor);
}

multiversion! {
    /// `adjust_saturation`: blend every pixel with its own grey value.
    pub(crate) fn saturation(img: &mut [f32], factor: f32) {
        let keep = 1.0 - factor;
        let (r, g, b) = planes(img);
        for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
            let y = gray(*r, *g, *b);
            *r = clamp01(y.mul_add(keep, *r * factor));
            *g = clamp01(y.mul_add(keep, *g * factor));
            *b = clamp01(y.mul_add(keep, *b * factor));
        }
    }
}

multiversion! {
    /// `rgb_to_grayscale(num_output_channels=3)`: the grey value in all three planes.
    pub(crate) fn grayscale(img: &mut [f32]) {
        let (r, g, b) = planes(img);
        for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
            let y = gray(*r, *g, *b);
            *r = y;
            *g = y;
            *b = y;
        }
    }
}

multiversion! {
    /// `adjust_hue`: torchvision v2's float32 RGB -> HSV, hue shift with
    /// `remainder(h + f, 1)`, HSV -> RGB, branch-free so that it vectorises.
    pub(crate) fn hue(img: &mut [f32], factor: f32) {
        let (r, g, b) = planes(img);
        for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
            let (rv, gv, bv) = (*r, *g, *b);
            let maxc = if rv > gv { rv } else { gv };
            let maxc = if maxc > bv { maxc } else { bv };
            let minc = if rv < gv { rv } else { gv };
            let minc = if minc < bv { minc } else { bv };
            let eqc = maxc == minc;
            let cr = maxc - minc;
            let s = cr / if eqc { 1.0 } else { maxc };
            let d = if eqc { 1.0 } else { cr };
            // Ties: R wins over G wins over B (the masks of torchvision's
            // _rgb_to_hsv). Each branch needs two of rc, gc, bc: pick the
            // numerators first and divide twice instead of three times.
            let (num_a, num_b, offset) = if maxc == rv {
                (maxc - bv, maxc - gv, 0.0) // bc - gc
            } else if maxc == gv {
                (maxc - rv, maxc - bv, 2.0) // (rc + 2) - bc
            } else {
                (maxc - gv, maxc - rv, 4.0) // (gc + 4) - rc
            };
            let h = (num_a / d + offset) - num_b / d;
            // fmod(h / 6 + 1, 1); the argument is positive and below 2^23, where
            // fmod(x, 1) == x - trunc(x) exactly.
            let h = h * (1.0f32 / 6.0) + 1.0;
            let h = h - h.trunc();
            // remainder(h + f, 1) = fmod, then + 1 when negative.
            let y = h + factor;
            let m = y - y.trunc();
            let h = if m < 0.0 { m + 1.0 } else { m };

            let h6 = h * 6.0;
            let i = h6.floor();
            let f = h6 - i;
            let i = if i >= 6.0 { 0.0 } else { i };
            let sxf = s * f;
            let one_minus_s = 1.0 - s;
            let q = clamp01((1.0 - sxf) * maxc);
            let t = clamp01((sxf + one_minus_s) * maxc);
            let p = clamp01(one_minus_s * maxc);
            let v = maxc;
            *r = if i == 0.0 || i == 5.0 { v } else if i == 1.0 { q } else if i == 4.0 { t } else { p };
            *g = if i == 1.0 || i == 2.0 { v } else if i == 0.0 { t } else if i == 3.0 { q } else { p };
            *b = if i == 3.0 || i == 4.0 { v } else if i == 2.0 { t } else if i == 5.0 { q } else { p };
        }
    }
}

multiversion! {
    /// `solarize`: `x >= t ? 1 - x : x`, compared in float32.
    pub(crate) fn solarize(img: &mut [f32], threshold: f32) {
        for v in img.iter_mut() {
            *v = if *v >= threshold { 1.0 - *v } else { *v };
        }
    }
}

multiversion! {
    /// `normalize`: `(x - mean[c]) / std[c]`, a true float32 division.
    pub(crate) fn normalize(img: &mut [f32], mean: [f32; 3], std: [f32; 3]) {
        let n = img.len() / 3;
        for (c, plane) in img.chunks_exact_mut(n).enumerate() {
            let (m, s) = (mean[c], std[c]);
            for v in plane.iter_mut() {
                *v = (*v - m) / s;
            }
        }
    }
}

/// `horizontal_flip` of every row of every plane.
pub(crate) fn hflip(img: &mut [f32], width: usize) {
    for row in img.chunks_exact_mut(width) {
        row.reverse();
    }
}
