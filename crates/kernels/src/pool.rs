//! Max-pooling, global average pooling and the fused residual `relu(a + b)` on the CPU (NHWC).

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::{f32_operand, threads, with_f32};
use crate::OpError;

/// Shapes of a max-pool: input `[n, h, w, c]`, output `[n, ho, wo, c]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolGeom {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
}

impl PoolGeom {
    /// Checks a max-pool's arguments the way PyTorch does (`ceil_mode = false`).
    pub(crate) fn new(
        dims: &[usize],
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> std::result::Result<Self, OpError> {
        const OP: &str = "max_pool2d_nhwc";
        let &[n, h, w, c] = dims else {
            return Err(OpError::Shape {
                op: OP,
                msg: format!("x must be [N, H, W, C] (NHWC), got shape {dims:?}"),
            });
        };
        if kernel == 0 || stride == 0 {
            return Err(OpError::Argument {
                op: OP,
                msg: format!("kernel ({kernel}) and stride ({stride}) must be at least 1"),
            });
        }
        if 2 * pad > kernel {
            return Err(OpError::Argument {
                op: OP,
                msg: format!("padding ({pad}) must be at most half the kernel size ({kernel})"),
            });
        }
        if dims.contains(&0) || h + 2 * pad < kernel || w + 2 * pad < kernel {
            return Err(OpError::Shape {
                op: OP,
                msg: format!(
                    "input {dims:?} with padding {pad} has no room for a {kernel}x{kernel} window"
                ),
            });
        }
        Ok(Self {
            n,
            h,
            w,
            c,
            kernel,
            stride,
            pad,
            ho: (h + 2 * pad - kernel) / stride + 1,
            wo: (w + 2 * pad - kernel) / stride + 1,
        })
    }

    /// In-image input rows (or columns) covered by the window starting at output index `o`.
    fn span(&self, o: usize, len: usize) -> std::ops::Range<usize> {
        let start = (o * self.stride) as isize - self.pad as isize;
        let lo = start.max(0) as usize;
        let hi = ((start + self.kernel as isize).max(0) as usize).min(len);
        lo..hi.max(lo)
    }
}

/// Max-pool `(x)`; remembers, for each output, the in-image index of the input that won
/// (PyTorch's rule: the first maximum in window order, NaN wins) for the backward pass.
pub(crate) struct MaxPool2dNhwc {
    pub g: PoolGeom,
    pub argmax: OnceLock<Vec<u32>>,
}

const POOL: &str = "max_pool2d_nhwc";

impl CustomOp1 for MaxPool2dNhwc {
    fn name(&self) -> &'static str {
        "mocca-max-pool2d-nhwc"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.g;
        let x = f32_operand(s, l, POOL)?;
        if (g.h * g.w) as u64 > u32::MAX as u64 {
            return Err(OpError::Shape {
                op: POOL,
                msg: format!("image of {}x{} pixels is too large", g.h, g.w),
            }
            .into());
        }
        let out_img = g.ho * g.wo * g.c;
        let mut y = vec![0.0f32; g.n * out_img];
        let mut arg = vec![0u32; g.n * out_img];
        y.par_chunks_mut(out_img)
            .zip(arg.par_chunks_mut(out_img))
            .enumerate()
            .for_each(|(n, (yi, ai))| {
                let xi = &x[n * g.h * g.w * g.c..(n + 1) * g.h * g.w * g.c];
                for oh in 0..g.ho {
                    for ow in 0..g.wo {
                        let o = (oh * g.wo + ow) * g.c;
                        let (ym, am) = (&mut yi[o..o + g.c], &mut ai[o..o + g.c]);
                        ym.fill(f32::NEG_INFINITY);
                        am.fill(u32::MAX);
                        for ih in g.span(oh, g.h) {
                            for iw in g.span(ow, g.w) {
                                let p = ih * g.w + iw;
                                let xs = &xi[p * g.c..(p + 1) * g.c];
                                for j in 0..g.c {
                                    let v = xs[j];
                                    if v > ym[j] || v.is_nan() || am[j] == u32::MAX {
                                        ym[j] = v;
                                        am[j] = p as u32;
                                    }
                                }
                            }
                        }
                    }
                }
            });
        let _ = self.argmax.set(arg);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.ho, g.wo, g.c))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        if !x.track_op() {
            return Ok(None);
        }
        let g = self.g;
        let arg = self.argmax.get().ok_or_else(|| OpError::Unsupported {
            op: POOL,
            msg: "backward before forward".into(),
        })?;
        let dy = dy.contiguous()?;
        let dx = with_f32(&dy, POOL, |dys| {
            let (in_img, out_img) = (g.h * g.w * g.c, g.ho * g.wo * g.c);
            let mut dx = vec![0.0f32; g.n * in_img];
            dx.par_chunks_mut(in_img).enumerate().for_each(|(n, dxi)| {
                let (d, a) = (
                    &dys[n * out_img..(n + 1) * out_img],
                    &arg[n * out_img..(n + 1) * out_img],
                );
                for (o, (&dv, &p)) in d.iter().zip(a).enumerate() {
                    dxi[p as usize * g.c + o % g.c] += dv;
                }
            });
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

const GAP: &str = "global_avg_pool_nhwc";

/// Mean over H and W of `[n, h, w, c]`, giving `[n, c]`.
pub(crate) struct GlobalAvgPoolNhwc;

impl CustomOp1 for GlobalAvgPoolNhwc {
    fn name(&self) -> &'static str {
        "mocca-global-avg-pool-nhwc"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_operand(s, l, GAP)?;
        let (n, h, w, c) = l.shape().dims4()?;
        let hw = h * w;
        let mut y = vec![0.0f32; n * c];
        y.par_chunks_mut(c).enumerate().for_each(|(i, yr)| {
            let mut acc = vec![0.0f64; c];
            for row in x[i * hw * c..(i + 1) * hw * c].chunks_exact(c) {
                for j in 0..c {
                    acc[j] += row[j] as f64;
                }
            }
            for j in 0..c {
                yr[j] = (acc[j] / hw as f64) as f32;
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((n, c))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        if !x.track_op() {
            return Ok(None);
        }
        let (n, h, w, c) = x.dims4()?;
        let hw = h * w;
        let dy = dy.contiguous()?;
        let dx = with_f32(&dy, GAP, |d| {
            let mut dx = vec![0.0f32; n * hw * c];
            let inv = 1.0 / hw as f32;
            dx.par_chunks_mut(hw * c).enumerate().for_each(|(i, dxi)| {
                let di = &d[i * c..(i + 1) * c];
                for row in dxi.chunks_exact_mut(c) {
                    for j in 0..c {
                        row[j] = di[j] * inv;
                    }
                }
            });
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

const ADD_RELU: &str = "add_relu";

/// Elements per Rayon task in the element-wise passes.
const ELEMS_PER_TASK: usize = 32 * 1024;

/// `relu(a + b)` in one pass; its backward passes `dy` where the output is positive.
pub(crate) struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "mocca-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (
            f32_operand(s1, l1, ADD_RELU)?,
            f32_operand(s2, l2, ADD_RELU)?,
        );
        let mut y = vec![0.0f32; a.len()];
        let step = if a.len() > ELEMS_PER_TASK * threads() {
            ELEMS_PER_TASK
        } else {
            a.len().max(1)
        };
        y.par_chunks_mut(step)
            .zip(a.par_chunks(step).zip(b.par_chunks(step)))
            .for_each(|(y, (a, b))| {
                for ((y, a), b) in y.iter_mut().zip(a).zip(b) {
                    let s = a + b;
                    *y = if s <= 0.0 { 0.0 } else { s };
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if !a.track_op() && !b.track_op() {
            return Ok((None, None));
        }
        let dy = dy.contiguous()?;
        let g = with_f32(y, ADD_RELU, |ys| {
            with_f32(&dy, ADD_RELU, |ds| {
                let mut g = vec![0.0f32; ys.len()];
                g.par_chunks_mut(ELEMS_PER_TASK)
                    .zip(
                        ys.par_chunks(ELEMS_PER_TASK)
                            .zip(ds.par_chunks(ELEMS_PER_TASK)),
                    )
                    .for_each(|(g, (y, d))| {
                        for ((g, y), d) in g.iter_mut().zip(y).zip(d) {
                            // Bit-mask select: the signs are random, a branch would mispredict.
                            let keep = if *y <= 0.0 { 0u32 } else { u32::MAX };
                            *g = f32::from_bits(d.to_bits() & keep);
                        }
                    });
                Ok(g)
            })
        })?;
        let g = Tensor::from_vec(g, y.shape(), y.device())?;
        Ok((a.track_op().then(|| g.clone()), b.track_op().then_some(g)))
    }
}
