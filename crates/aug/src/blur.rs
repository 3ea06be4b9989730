//! Gaussian blur as torchvision's tensor `gaussian_blur` (reflect padding without
//! edge repetition), computed as two separable 1-D passes with fused
//! multiply-adds (torch's own 2-D convolution sums in yet another order; the
//! difference stays near 1e-6 even for 23x23 kernels).

use crate::resize::take;
use crate::simd::multiversion;

/// Normalised 1-D Gaussian weights of `k` taps: `exp(-d^2 / (2 sigma^2)) / sum`
/// with `d = j - (k - 1) / 2` (what torchvision's `softmax(-(x / sigma)^2)` over
/// `x = linspace(-(k-1)/(2 sqrt 2), (k-1)/(2 sqrt 2), k)` computes), evaluated in
/// f64 and rounded once.
pub(crate) fn kernel1d(k: usize, sigma: f32, out: &mut Vec<f32>) {
    let c = (k as f64 - 1.0) / 2.0;
    let s = sigma as f64;
    let e = |j: usize| {
        let d = j as f64 - c;
        (-(d * d) / (2.0 * s * s)).exp()
    };
    let sum: f64 = (0..k).map(e).sum();
    out.clear();
    out.extend((0..k).map(|j| (e(j) / sum) as f32));
}

/// Mirror index for reflect padding without repeating the edge (`k / 2 < n`).
#[inline(always)]
fn reflect(p: isize, n: usize) -> usize {
    let n = n as isize;
    let q = if p < 0 { -p } else { p };
    (if q >= n { 2 * (n - 1) - q } else { q }) as usize
}

// 32 floats = 4 AVX2 registers of independent accumulators per chunk.
const LANES: usize = 32;

multiversion! {
    /// `dst[x] = sum_b w[b] * line[x + b]` for a padded line.
    pub(crate) fn correlate_line(line: &[f32], w: &[f32], dst: &mut [f32]) {
        let n = dst.len();
        let mut x = 0;
        while x + LANES <= n {
            let mut acc = [0.0f32; LANES];
            for (b, &wb) in w.iter().enumerate() {
                let seg = &line[x + b..x + b + LANES];
                for l in 0..LANES {
                    acc[l] = seg[l].mul_add(wb, acc[l]);
                }
            }
            dst[x..x + LANES].copy_from_slice(&acc);
            x += LANES;
        }
        while x < n {
            let mut acc = 0.0f32;
            for (b, &wb) in w.iter().enumerate() {
                acc = line[x + b].mul_add(wb, acc);
            }
            dst[x] = acc;
            x += 1;
        }
    }
}

multiversion! {
    /// `dst[x] = sum_a w[a] * src[rows[a] * width + x]`.
    pub(crate) fn correlate_rows(src: &[f32], width: usize, rows: &[usize], w: &[f32], dst: &mut [f32]) {
        let mut x = 0;
        while x + LANES <= width {
            let mut acc = [0.0f32; LANES];
            for (&r, &wa) in rows.iter().zip(w) {
                let seg = &src[r * width + x..r * width + x + LANES];
                for l in 0..LANES {
                    acc[l] = seg[l].mul_add(wa, acc[l]);
                }
            }
            dst[x..x + LANES].copy_from_slice(&acc);
            x += LANES;
        }
        while x < width {
            let mut acc = 0.0f32;
            for (&r, &wa) in rows.iter().zip(w) {
                acc = src[r * width + x].mul_add(wa, acc);
            }
            dst[x] = acc;
            x += 1;
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct BlurScratch {
    wx: Vec<f32>,
    wy: Vec<f32>,
    line: Vec<f32>,
    tmp: Vec<f32>,
    rows: Vec<usize>,
}

/// Blurs `img` (`planes` planes of `height x width`) in place; the caller has
/// checked that `kx / 2 < width` and `ky / 2 < height` and that both are odd.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gaussian_blur(
    img: &mut [f32],
    planes: usize,
    height: usize,
    width: usize,
    kernel: [usize; 2],
    sigma: [f32; 2],
    s: &mut BlurScratch,
) {
    let [kx, ky] = kernel;
    kernel1d(kx, sigma[0], &mut s.wx);
    kernel1d(ky, sigma[1], &mut s.wy);
    let (rx, ry) = (kx / 2, ky / 2);
    let plane = height * width;
    let line = take(&mut s.line, width + 2 * rx);
    let tmp = take(&mut s.tmp, plane);
    for p in 0..planes {
        let img = &mut img[p * plane..(p + 1) * plane];
        for y in 0..height {
            let row = &img[y * width..(y + 1) * width];
            line[rx..rx + width].copy_from_slice(row);
            for i in 1..=rx {
                line[rx - i] = row[i];
                line[rx + width - 1 + i] = row[width - 1 - i];
            }
            correlate_line(line, &s.wx, &mut tmp[y * width..(y + 1) * width]);
        }
        for y in 0..height {
            s.rows.clear();
            s.rows
                .extend((0..ky).map(|a| reflect(y as isize + a as isize - ry as isize, height)));
            correlate_rows(
                tmp,
                width,
                &s.rows,
                &s.wy,
                &mut img[y * width..(y + 1) * width],
            );
        }
    }
}
