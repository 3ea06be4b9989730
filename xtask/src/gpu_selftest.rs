//! `cargo xtask gpu-selftest`: every custom training op, every loss, the queue and momentum
//! update and one augmentation batch, run on a device and compared with the CPU's fast f32
//! result, in f32 and in bf16 mixed precision. One `OK`/`FAIL` line per check, a summary, and
//! a non-zero exit code on any failure.
//!
//! The reference is always the CPU: `mocca_kernels` (fused f32 kernels) and the losses'
//! fused CPU path. Under test on CUDA are the same public functions, which take the composed
//! Candle-op path there (cuDNN / cuBLAS convolutions, Candle's CUDA kernels). With `--device
//! cpu` the composed path is called directly on the CPU, so the command, and every composed
//! function the GPU runs, is exercised on a machine without a GPU.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use mocca_aug::{ImageU8, Preset};
use mocca_kernels::composed;
use mocca_losses::{Implementation, InfoNCEConfig, InfoNCELoss, NTXentConfig, NTXentLoss};
use mocca_queue::{MomentumQueue, MomentumQueueConfig, MomentumUpdate, QueueMode};

use mocca_recipes::config::DeviceKind;
use mocca_runs::folder as runs;
use mocca_train::files;

/// Exit code of `gpu-selftest` when no GPU can be opened (failed checks exit with 1).
pub const NO_GPU_EXIT_CODE: u8 = 3;

/// `cargo xtask gpu-selftest`: which device, and where the report goes.
#[derive(clap::Args, Debug)]
#[command(
    about = "Custom ops, losses, queue on the GPU vs the CPU",
    long_about = "Runs every custom op (convolution forward and both gradients, BatchNorm train \
and eval with gradients, add+ReLU, max-pool, global average pool), every loss (NT-Xent, \
InfoNCE, symmetric, end-to-end, with gradients), the queue enqueue, the momentum update and one \
augmentation batch on the device, and compares each with the CPU's fast f32 result: in f32 and \
in bf16 mixed precision (f32 parameters, bf16 activations). Prints one OK/FAIL line per check \
and a summary.",
    after_help = "Exit codes: 0 all checks passed, 1 a check failed (or bad usage), 3 no GPU."
)]
pub struct Args {
    /// cuda: GPU 0 (without a usable GPU it says so and exits with code 3); cpu: the composed
    /// Candle-op path (what CUDA runs) on the CPU against the fused CPU kernels, which tests
    /// this command anywhere
    #[arg(long, value_name = "cuda|cpu", value_parser = crate::cli::cpu_or_cuda, default_value = "cuda")]
    device: DeviceKind,
    /// Also write the report to DIR/gpu-selftest.txt
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// No GPU could be opened: `cli_main` maps this error to [`NO_GPU_EXIT_CODE`].
#[derive(Debug)]
pub struct NoGpu(pub String);

impl std::fmt::Display for NoGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gpu-selftest: no usable GPU: {}", self.0)
    }
}

impl std::error::Error for NoGpu {}

/// Relative tolerances, as the largest absolute difference over the largest reference value.
/// f32 on the CPU: different summation orders only. f32 convolutions on CUDA: cuDNN and
/// cuBLAS may use TF32 tensor cores (10-bit mantissa), hence 5e-3 there. bf16: 8-bit mantissa
/// operands, rounded activations and gradients, f32 accumulation.
const TOL_F32: f64 = 1e-4;
const TOL_F32_CUDA_CONV: f64 = 5e-3;
const TOL_BF16: f64 = 3e-2;

/// One check's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub precision: &'static str,
    /// The worst relative error over the check's outputs, and which output it was.
    pub worst: f64,
    pub worst_field: String,
    pub tolerance: f64,
    /// Set when the check could not run at all.
    pub error: Option<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.worst <= self.tolerance
    }

    pub fn line(&self) -> String {
        let status = if self.ok() { "OK  " } else { "FAIL" };
        match &self.error {
            Some(e) => format!(
                "{status} {:<5} {:<34} error: {e}",
                self.precision, self.name
            ),
            None => format!(
                "{status} {:<5} {:<34} max rel err {:.2e} ({}) tol {:.0e}",
                self.precision, self.name, self.worst, self.worst_field, self.tolerance
            ),
        }
    }
}

/// Where the checks run and in which arithmetic.
struct Ctx<'a> {
    dev: &'a Device,
    dtype: DType,
}

impl Ctx<'_> {
    fn cuda(&self) -> bool {
        !self.dev.is_cpu()
    }

    fn precision(&self) -> &'static str {
        if self.dtype == DType::BF16 {
            "bf16"
        } else {
            "f32"
        }
    }

    /// An activation on the device in the compute dtype.
    fn act(&self, t: &Tensor) -> Result<Var> {
        Ok(Var::from_tensor(
            &t.to_device(self.dev)?.to_dtype(self.dtype)?,
        )?)
    }

    /// A parameter: f32 on the device (mixed precision keeps f32 master weights).
    fn param(&self, t: &Tensor) -> Result<Var> {
        Ok(Var::from_tensor(&t.to_device(self.dev)?)?)
    }

    /// A parameter as a layer sees it: cast to the compute dtype inside the graph, so its
    /// gradient comes back in f32.
    fn cast(&self, p: &Var) -> Result<Tensor> {
        Ok(p.as_tensor().to_dtype(self.dtype)?)
    }

    /// Inputs as the compute dtype can hold them (f32 values of bf16 numbers under bf16), so
    /// the f32 reference sees the same inputs and the comparison measures the op's own
    /// rounding, not the inputs' (which would flip ReLU decisions near zero, for one).
    fn round(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.to_dtype(self.dtype)?.to_dtype(DType::F32)?)
    }

    fn conv_tol(&self) -> f64 {
        match (self.dtype, self.cuda()) {
            (DType::BF16, _) => TOL_BF16,
            (_, true) => TOL_F32_CUDA_CONV,
            _ => TOL_F32,
        }
    }

    fn tol(&self) -> f64 {
        if self.dtype == DType::BF16 {
            TOL_BF16
        } else {
            TOL_F32
        }
    }

    /// The op under test: the public function on a GPU (it dispatches to the composed path
    /// there), the composed function itself on the CPU (where the public one would take the
    /// fused kernel that serves as the reference).
    fn conv(&self, x: &Tensor, w: &Tensor, s: usize, p: usize) -> candle_core::Result<Tensor> {
        if self.cuda() {
            mocca_kernels::conv2d_nhwc(x, w, s, p)
        } else {
            composed::conv2d_nhwc(x, w, s, p)
        }
    }
}

/// Deterministic values in [-scale, scale) (an LCG; no dependence on Candle's RNG, so the CPU
/// and the device see the same inputs).
fn values(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("shape matches")
}

fn to_f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?)
}

/// `max |got - want| / max(1e-6, max |want|)`.
pub fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let scale = want.iter().fold(1e-6f64, |m, &x| m.max(x.abs() as f64));
    let diff = got.iter().zip(want).fold(0.0f64, |m, (&a, &b)| {
        let d = (a as f64 - b as f64).abs();
        if d.is_nan() {
            f64::INFINITY
        } else {
            m.max(d)
        }
    });
    diff / scale
}

/// A scalar that weighs each output element differently, so every gradient is non-trivial.
fn objective(y: &Tensor, seed: u64) -> Result<Tensor> {
    let r = values(y.dims(), seed, 1.0).to_device(y.device())?;
    Ok((y.to_dtype(DType::F32)? * r)?.sum_all()?)
}

fn grad(g: &GradStore, v: &Var, what: &str) -> Result<Tensor> {
    g.get(v)
        .cloned()
        .with_context(|| format!("no gradient for {what}"))
}

/// Output fields of one check: (name, under test, reference).
type Fields = Vec<(&'static str, Tensor, Tensor)>;

fn check_conv(ctx: &Ctx, cin: usize, cout: usize, k: usize, s: usize, p: usize) -> Result<Fields> {
    let x0 = ctx.round(&values(&[4, 9, 9, cin], 11, 1.0))?;
    let w0 = ctx.round(&values(&[cout, cin, k, k], 12, 0.3))?;
    let (xr, wr) = (Var::from_tensor(&x0)?, Var::from_tensor(&w0)?);
    let yr = mocca_kernels::conv2d_nhwc(&xr, &wr, s, p)?;
    let gr = objective(&yr, 13)?.backward()?;
    let (x, w) = (ctx.act(&x0)?, ctx.param(&w0)?);
    let y = ctx.conv(&x, &ctx.cast(&w)?, s, p)?;
    let g = objective(&y, 13)?.backward()?;
    Ok(vec![
        ("y", y, yr),
        ("dx", grad(&g, &x, "x")?, grad(&gr, &xr, "x")?),
        ("dw", grad(&g, &w, "w")?, grad(&gr, &wr, "w")?),
    ])
}

fn check_bn_train(ctx: &Ctx, groups: usize, relu: bool) -> Result<Fields> {
    let c = 16;
    // An offset on the activations, as deep layers have: the variance must not suffer.
    let x0 = ctx.round(&(values(&[8, 5, 5, c], 21, 2.0) + 3.0)?)?;
    let g0 = ctx.round(&(values(&[c], 22, 0.5) + 1.0)?)?;
    let b0 = ctx.round(&values(&[c], 23, 0.5))?;
    let (xr, gr_, br) = (
        Var::from_tensor(&x0)?,
        Var::from_tensor(&g0)?,
        Var::from_tensor(&b0)?,
    );
    let outr = mocca_kernels::batch_norm_train(&xr, &gr_, &br, 1e-5, groups, relu)?;
    let gradr = objective(&outr.y, 24)?.backward()?;
    let (x, gamma, beta) = (ctx.act(&x0)?, ctx.param(&g0)?, ctx.param(&b0)?);
    let out = if ctx.cuda() {
        mocca_kernels::batch_norm_train(&x, &gamma, &beta, 1e-5, groups, relu)?
    } else {
        composed::batch_norm_train(&x, &gamma, &beta, 1e-5, groups, relu)?
    };
    let grads = objective(&out.y, 24)?.backward()?;
    Ok(vec![
        ("y", out.y, outr.y),
        ("mean", out.mean, outr.mean),
        ("var", out.var, outr.var),
        ("dx", grad(&grads, &x, "x")?, grad(&gradr, &xr, "x")?),
        (
            "dgamma",
            grad(&grads, &gamma, "gamma")?,
            grad(&gradr, &gr_, "gamma")?,
        ),
        (
            "dbeta",
            grad(&grads, &beta, "beta")?,
            grad(&gradr, &br, "beta")?,
        ),
    ])
}

fn check_bn_eval(ctx: &Ctx) -> Result<Fields> {
    let c = 16;
    let x0 = ctx.round(&(values(&[8, 5, 5, c], 31, 2.0) + 1.0)?)?;
    let g0 = ctx.round(&(values(&[c], 32, 0.5) + 1.0)?)?;
    let b0 = ctx.round(&values(&[c], 33, 0.5))?;
    let rm = values(&[c], 34, 1.0);
    let rv = (values(&[c], 35, 0.5) + 1.0)?;
    let (xr, gr_, br) = (
        Var::from_tensor(&x0)?,
        Var::from_tensor(&g0)?,
        Var::from_tensor(&b0)?,
    );
    let yr = mocca_kernels::batch_norm_eval(&xr, &gr_, &br, &rm, &rv, 1e-5, true)?;
    let gradr = objective(&yr, 36)?.backward()?;
    let (x, gamma, beta) = (ctx.act(&x0)?, ctx.param(&g0)?, ctx.param(&b0)?);
    // Running statistics stay f32 under mixed precision.
    let (rmd, rvd) = (rm.to_device(ctx.dev)?, rv.to_device(ctx.dev)?);
    let y = if ctx.cuda() {
        mocca_kernels::batch_norm_eval(&x, &gamma, &beta, &rmd, &rvd, 1e-5, true)?
    } else {
        composed::batch_norm_eval(&x, &gamma, &beta, &rmd, &rvd, 1e-5, true)?
    };
    let grads = objective(&y, 36)?.backward()?;
    Ok(vec![
        ("y", y, yr),
        ("dx", grad(&grads, &x, "x")?, grad(&gradr, &xr, "x")?),
        (
            "dgamma",
            grad(&grads, &gamma, "gamma")?,
            grad(&gradr, &gr_, "gamma")?,
        ),
        (
            "dbeta",
            grad(&grads, &beta, "beta")?,
            grad(&gradr, &br, "beta")?,
        ),
    ])
}

fn check_add_relu(ctx: &Ctx) -> Result<Fields> {
    let a0 = ctx.round(&values(&[4, 6, 6, 8], 41, 1.0))?;
    let b0 = ctx.round(&values(&[4, 6, 6, 8], 42, 1.0))?;
    let (ar, br) = (Var::from_tensor(&a0)?, Var::from_tensor(&b0)?);
    let yr = mocca_kernels::add_relu(&ar, &br)?;
    let gr = objective(&yr, 43)?.backward()?;
    let (a, b) = (ctx.act(&a0)?, ctx.act(&b0)?);
    let y = if ctx.cuda() {
        mocca_kernels::add_relu(&a, &b)?
    } else {
        composed::add_relu(&a, &b)?
    };
    let g = objective(&y, 43)?.backward()?;
    Ok(vec![
        ("y", y, yr),
        ("da", grad(&g, &a, "a")?, grad(&gr, &ar, "a")?),
        ("db", grad(&g, &b, "b")?, grad(&gr, &br, "b")?),
    ])
}

fn check_max_pool(ctx: &Ctx) -> Result<Fields> {
    let x0 = ctx.round(&values(&[2, 9, 9, 8], 51, 1.0))?;
    let xr = Var::from_tensor(&x0)?;
    let yr = mocca_kernels::max_pool2d_nhwc(&xr, 3, 2, 1)?;
    let gr = objective(&yr, 52)?.backward()?;
    let x = ctx.act(&x0)?;
    let y = if ctx.cuda() {
        mocca_kernels::max_pool2d_nhwc(&x, 3, 2, 1)?
    } else {
        composed::max_pool2d_nhwc(&x, 3, 2, 1)?
    };
    let g = objective(&y, 52)?.backward()?;
    Ok(vec![
        ("y", y, yr),
        ("dx", grad(&g, &x, "x")?, grad(&gr, &xr, "x")?),
    ])
}

fn check_avg_pool(ctx: &Ctx) -> Result<Fields> {
    let x0 = ctx.round(&values(&[4, 5, 5, 16], 61, 1.0))?;
    let xr = Var::from_tensor(&x0)?;
    let yr = mocca_kernels::global_avg_pool_nhwc(&xr)?;
    let gr = objective(&yr, 62)?.backward()?;
    let x = ctx.act(&x0)?;
    let y = if ctx.cuda() {
        mocca_kernels::global_avg_pool_nhwc(&x)?
    } else {
        composed::global_avg_pool_nhwc(&x)?
    };
    let g = objective(&y, 62)?.backward()?;
    Ok(vec![
        ("y", y, yr),
        ("dx", grad(&g, &x, "x")?, grad(&gr, &xr, "x")?),
    ])
}

/// Unit rows, as the queue and the memory bank hold them (always f32).
fn unit_rows(n: usize, d: usize, seed: u64) -> Result<Tensor> {
    let t = values(&[n, d], seed, 1.0);
    Ok(t.broadcast_div(&t.sqr()?.sum_keepdim(1)?.sqrt()?)?)
}

#[derive(Clone, Copy)]
enum LossKind {
    NtXent,
    InfoNce,
    Symmetric,
    EndToEnd,
}

fn check_loss(ctx: &Ctx, kind: LossKind) -> Result<Fields> {
    let (n, d, k) = (32, 64, 256);
    let z0 = ctx.round(&values(&[n, d], 71, 1.0))?;
    let z1 = ctx.round(&values(&[n, d], 72, 1.0))?;
    let (z2, z3) = (
        ctx.round(&values(&[n, d], 73, 1.0))?,
        ctx.round(&values(&[n, d], 74, 1.0))?,
    );
    let neg = unit_rows(k, d, 75)?;
    let run = |imp: Implementation, vars: &[Var], neg: &Tensor| -> Result<Tensor> {
        let out = match kind {
            LossKind::NtXent => NTXentLoss::new(NTXentConfig {
                temperature: 0.5,
                implementation: imp,
            })?
            .forward(&vars[0], &vars[1])?,
            LossKind::InfoNce | LossKind::Symmetric | LossKind::EndToEnd => {
                let l = InfoNCELoss::new(InfoNCEConfig {
                    temperature: 0.1,
                    implementation: imp,
                    ..Default::default()
                })?;
                match kind {
                    LossKind::InfoNce => l.forward(&vars[0], &vars[1], neg)?,
                    LossKind::Symmetric => {
                        l.forward_symmetric(&vars[0], &vars[2], &vars[1], &vars[3], neg)?
                    }
                    _ => l.forward_end_to_end(&vars[0], &vars[1])?,
                }
            }
        };
        Ok(out.loss)
    };
    let inputs = [&z0, &z1, &z2, &z3];
    let refs: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t))
        .collect::<candle_core::Result<_>>()?;
    let lr = run(Implementation::Auto, &refs, &neg)?;
    let gr = lr.backward()?;
    let devs: Vec<Var> = inputs.iter().map(|t| ctx.act(t)).collect::<Result<_>>()?;
    let l = run(Implementation::Composed, &devs, &neg.to_device(ctx.dev)?)?;
    let g = l.backward()?;
    let names = ["dz0", "dz1", "dz2", "dz3"];
    let used = match kind {
        LossKind::Symmetric => 4,
        _ => 2,
    };
    let mut fields = vec![("loss", l, lr)];
    for i in 0..used {
        fields.push((
            names[i],
            grad(&g, &devs[i], names[i])?,
            grad(&gr, &refs[i], names[i])?,
        ));
    }
    Ok(fields)
}

fn check_queue(ctx: &Ctx) -> Result<Fields> {
    let cfg = MomentumQueueConfig {
        size: 64,
        dim: 16,
        seed: 81,
        mode: QueueMode::Ring,
    };
    let mut qr = MomentumQueue::new(cfg, &Device::Cpu)?;
    let mut q = MomentumQueue::new(cfg, ctx.dev)?;
    // 3 x 24 keys into 64 slots: the third enqueue wraps around.
    for seed in 82..85 {
        let keys = unit_rows(24, 16, seed)?;
        qr.enqueue(&keys)?;
        q.enqueue(&keys.to_device(ctx.dev)?)?;
    }
    if q.ptr() != qr.ptr() {
        bail!(
            "queue pointer {} on the device, {} on the CPU",
            q.ptr(),
            qr.ptr()
        );
    }
    Ok(vec![(
        "queue",
        q.negatives().clone(),
        qr.negatives().clone(),
    )])
}

fn check_momentum(ctx: &Ctx) -> Result<Fields> {
    let shapes: [&[usize]; 2] = [&[16, 8, 3, 3], &[16]];
    let make = |dev: &Device, seed: u64| -> Result<Vec<(String, Var)>> {
        shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let t = values(s, seed + i as u64, 1.0).to_device(dev)?;
                Ok((format!("p{i}"), Var::from_tensor(&t)?))
            })
            .collect()
    };
    let (kr, qr) = (make(&Device::Cpu, 91)?, make(&Device::Cpu, 95)?);
    let (k, q) = (make(ctx.dev, 91)?, make(ctx.dev, 95)?);
    let ur = MomentumUpdate::new(&kr, &qr)?;
    let u = MomentumUpdate::new(&k, &q)?;
    for m in [0.99, 0.9] {
        ur.update(m)?;
        u.update(m)?;
    }
    Ok(vec![
        (
            "key0",
            k[0].1.as_tensor().clone(),
            kr[0].1.as_tensor().clone(),
        ),
        (
            "key1",
            k[1].1.as_tensor().clone(),
            kr[1].1.as_tensor().clone(),
        ),
    ])
}

/// One MoCo v2 CIFAR augmentation batch (made on the CPU, where the loader makes it) taken to
/// the device and back, and its per-channel mean computed there.
fn check_aug(ctx: &Ctx) -> Result<Fields> {
    let (n, side) = (6, 40);
    let pixels: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            (0..side * side * 3)
                .map(|j| ((j * 31 + i * 17 + (j / 97) * 5) % 256) as u8)
                .collect()
        })
        .collect();
    let images = pixels
        .iter()
        .map(|p| ImageU8::new(p, side, side, 3))
        .collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<u64> = (0..n as u64).collect();
    let views = Preset::MocoV2Cifar.two_views(32)?;
    let batch = views.views()[1].apply_batch(&images, &ids, 7, 3, 1)?;
    let want = batch.clone().into_tensor(&Device::Cpu)?;
    let got = batch.into_tensor(ctx.dev)?;
    let mean = |t: &Tensor| -> candle_core::Result<Tensor> { t.mean((0, 2, 3)) };
    Ok(vec![
        ("tensor", got.to_device(&Device::Cpu)?, want.clone()),
        ("channel mean", mean(&got)?, mean(&want)?),
    ])
}

type CheckFn<'a> = Box<dyn Fn(&Ctx) -> Result<Fields> + 'a>;

/// Every check for `dtype`: (name, tolerance, body).
fn checks(ctx: &Ctx) -> Vec<(String, f64, CheckFn<'static>)> {
    let mut v: Vec<(String, f64, CheckFn<'static>)> = Vec::new();
    for (cin, cout, k, s, p) in [
        (8, 16, 3, 1, 1),
        (8, 16, 3, 2, 1),
        (8, 16, 1, 2, 0),
        (3, 8, 7, 2, 3),
    ] {
        v.push((
            format!("conv2d {k}x{k} s{s} p{p} {cin}->{cout}"),
            ctx.conv_tol(),
            Box::new(move |c: &Ctx| check_conv(c, cin, cout, k, s, p)),
        ));
    }
    v.push((
        "batch_norm train".into(),
        ctx.tol(),
        Box::new(|c: &Ctx| check_bn_train(c, 1, false)),
    ));
    v.push((
        "batch_norm train split-BN 2 + relu".into(),
        ctx.tol(),
        Box::new(|c: &Ctx| check_bn_train(c, 2, true)),
    ));
    v.push((
        "batch_norm eval + relu".into(),
        ctx.tol(),
        Box::new(check_bn_eval),
    ));
    v.push(("add_relu".into(), ctx.tol(), Box::new(check_add_relu)));
    v.push((
        "max_pool2d 3 s2 p1".into(),
        ctx.tol(),
        Box::new(check_max_pool),
    ));
    v.push((
        "global_avg_pool".into(),
        ctx.tol(),
        Box::new(check_avg_pool),
    ));
    for (name, kind) in [
        ("loss NT-Xent", LossKind::NtXent),
        ("loss InfoNCE (queue negatives)", LossKind::InfoNce),
        ("loss InfoNCE symmetric", LossKind::Symmetric),
        ("loss InfoNCE end-to-end", LossKind::EndToEnd),
    ] {
        v.push((
            name.into(),
            ctx.tol(),
            Box::new(move |c: &Ctx| check_loss(c, kind)),
        ));
    }
    if ctx.dtype == DType::F32 {
        // The queue, the momentum update and the augmented batches are f32 under either
        // precision (the encoder hands f32 embeddings back), so they are checked once.
        v.push(("queue enqueue (wraps)".into(), 1e-6, Box::new(check_queue)));
        v.push(("momentum update".into(), 1e-6, Box::new(check_momentum)));
        v.push((
            "aug batch -> tensor round trip".into(),
            1e-6,
            Box::new(check_aug),
        ));
    }
    v
}

fn run_one(ctx: &Ctx, name: String, tolerance: f64, body: &CheckFn) -> Outcome {
    let mut o = Outcome {
        name,
        precision: ctx.precision(),
        worst: 0.0,
        worst_field: String::new(),
        tolerance,
        error: None,
    };
    let compared = body(ctx).and_then(|fields| {
        for (field, got, want) in fields {
            if got.dims() != want.dims() {
                bail!(
                    "{field}: shape {:?}, reference {:?}",
                    got.dims(),
                    want.dims()
                );
            }
            let e = relative_error(&to_f32_vec(&got)?, &to_f32_vec(&want)?);
            if e > o.worst || o.worst_field.is_empty() {
                o.worst = e;
                o.worst_field = field.to_string();
            }
        }
        Ok(())
    });
    if let Err(e) = compared {
        o.error = Some(format!("{e:#}").replace('\n', " "));
    }
    o
}

/// Runs every check on `dev`, in f32 then bf16, calling `each` with every outcome as it
/// comes (so a hang shows where it happened).
pub fn run_checks(dev: &Device, mut each: impl FnMut(&Outcome)) -> Vec<Outcome> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::BF16] {
        let ctx = Ctx { dev, dtype };
        for (name, tol, body) in checks(&ctx) {
            let o = run_one(&ctx, name, tol, &body);
            each(&o);
            out.push(o);
        }
    }
    out
}

pub fn run(args: Args) -> Result<()> {
    let Args { device: kind, out } = args;
    let dev = runs::select_device(kind).map_err(|e| NoGpu(format!("{e:#}")))?;
    let label = runs::device_label(&dev);
    let mut report = String::new();
    let header = format!(
        "gpu-selftest on {label}: device (composed ops, Implementation::Composed losses) vs CPU fast f32"
    );
    println!("{header}");
    writeln!(report, "{header}")?;
    let outcomes = run_checks(&dev, |o| {
        println!("{}", o.line());
        writeln!(report, "{}", o.line()).expect("writing to a String");
    });
    let failed = outcomes.iter().filter(|o| !o.ok()).count();
    let summary = format!(
        "gpu-selftest summary: {} checks, {} OK, {failed} FAIL ({label}; tolerances: f32 {TOL_F32:.0e}, \
         f32 convolutions on CUDA {TOL_F32_CUDA_CONV:.0e} (TF32), bf16 {TOL_BF16:.0e})",
        outcomes.len(),
        outcomes.len() - failed,
    );
    println!("{summary}");
    writeln!(report, "{summary}")?;
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        files::write_atomic(&dir.join("gpu-selftest.txt"), report.as_bytes())?;
    }
    if failed > 0 {
        bail!("gpu-selftest: {failed} of {} checks failed", outcomes.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_passes_with_the_composed_path_on_the_cpu() {
        let outcomes = run_checks(&Device::Cpu, |o| println!("{}", o.line()));
        for o in &outcomes {
            assert!(o.ok(), "{}", o.line());
        }
        // 4 convolutions, 3 BatchNorms, add_relu, 2 pools, 4 losses in f32 and bf16; queue,
        // momentum update and aug once.
        assert_eq!(outcomes.len(), 2 * 14 + 3);
        // The bf16 checks really ran in bf16: they differ from the f32 reference.
        let bf16_conv = outcomes
            .iter()
            .find(|o| o.precision == "bf16" && o.name.starts_with("conv2d"))
            .unwrap();
        assert!(bf16_conv.worst > 1e-4, "{}", bf16_conv.line());
    }

    #[test]
    fn relative_error_is_scaled_by_the_reference_and_catches_nan() {
        assert_eq!(relative_error(&[1.0, 2.5], &[1.0, 2.0]), 0.25);
        assert!(relative_error(&[f32::NAN], &[1.0]).is_infinite());
        assert!(relative_error(&[1.0], &[1.0, 2.0]).is_infinite());
    }

    #[test]
    fn without_cuda_the_default_device_is_reported_as_no_gpu() {
        if candle_core::utils::cuda_is_available() {
            return; // a CUDA build: the stub or real driver decides
        }
        let err = run(Args {
            device: DeviceKind::Cuda,
            out: None,
        })
        .unwrap_err();
        let no_gpu = err.downcast_ref::<NoGpu>().expect("a NoGpu error");
        assert!(no_gpu.0.contains("no CUDA support"), "{}", no_gpu.0);
    }

    #[test]
    fn unknown_devices_are_refused() {
        let e = crate::cli::parse_line("gpu-selftest --device tpu").unwrap_err();
        assert!(e.to_string().contains("`tpu`: expected cpu or cuda"), "{e}");
    }
}
