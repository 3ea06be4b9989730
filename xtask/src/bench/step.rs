//! `cargo xtask bench step`: images/s of a ResNet-18 (CIFAR stem) SimCLR training step, the
//! workload of `../shared/peers/torch_peers.py`, on the fast backend and on Candle's native ops.
//!
//! One step = forward of both views (batch × 2), NT-Xent, backward, SGD (momentum 0.9, weight
//! decay 5e-4; the trainer's own `mocca_methods::optim`) over backbone + projection head,
//! exactly the peer script's step: the head is `Linear(f, f) → BN → ReLU → Linear(f, 128)`,
//! τ = 0.5. Each configuration runs in a child
//! process, so the peak RSS printed beside it (VmHWM) is that configuration's own. The f32 GEMM
//! rate of this machine is measured in the same run, before and after the steps.
//!
//! `--method simclr|mocov2|byol|simsiam|mocov3` times the trainer's own step instead
//! (`mocca_methods`' method with its CIFAR-10 preset: MoCo v2's queue, momentum update, split
//! BN; BYOL's and MoCo v3's momentum encoder and predictor; SimSiam's predictor), on random
//! images; `scripts/peer_method_step.py` times lightly's BYOL and SimSiam the same way.
//! `--device cuda` and `--precision bf16` (f32 master weights, bf16 activations) apply to both;
//! on CUDA each step ends by reading the loss, which waits for the GPU, so the time is real.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mocca_backbones::{
    Backend, BlockKind, HeadBlock, HeadNorm, ProjectionHead, ProjectionHeadConfig, ResNet,
    ResNetConfig, Stem,
};
use mocca_losses::{NTXentConfig, NTXentLoss};
use mocca_methods::optim::{Optimizer, OptimizerConfig};

use mocca_recipes::config::{ConfigBuilder, DeviceKind, MethodName, Precision, Recipe};
use mocca_recipes::setup;
use mocca_runs::folder as runs;

/// `cargo xtask bench step`: which configurations, how many steps, where.
#[derive(clap::Args, Debug, Clone)]
#[command(
    long_about = "ResNet-18 (CIFAR stem) SimCLR training step, batch x 2 views: forward, \
NT-Xent, backward, SGD: the workload of the PyTorch peer script that docs/benchmarks.md times \
beside it."
)]
pub struct Options {
    /// Width multipliers
    #[arg(long = "width", value_name = "W[,W...]", value_delimiter = ',',
          value_parser = positive_multiplier, default_values = ["1", "0.25"])]
    widths: Vec<f64>,
    /// Backends: fast, native
    #[arg(long = "backend", value_name = "B[,B...]", value_delimiter = ',',
          value_parser = parse_backend, default_values = ["fast", "native"])]
    backends: Vec<Backend>,
    /// Images per view
    #[arg(long, visible_alias = "batch-size", value_name = "N", value_parser = at_least_two,
          default_value_t = 128)]
    batch: usize,
    /// Where the steps run
    #[arg(long, value_name = "cpu|cuda", value_parser = crate::cli::cpu_or_cuda, default_value = "cpu")]
    device: DeviceKind,
    /// f32, bf16: bf16 = mixed precision, f32 master weights, bf16 activations (Candle's CPU
    /// has no bf16 kernels: there bf16 is slow, for tests only)
    #[arg(long = "precision", value_name = "P[,P...]", value_delimiter = ',',
          value_parser = |s: &str| Precision::parse(s).map_err(|e| e.to_string()),
          default_values = ["f32"])]
    precisions: Vec<Precision>,
    /// Time the trainer's own step (mocca-methods, CIFAR-10 preset: MoCo v2 = queue 4096,
    /// m 0.99, split BN 8; BYOL, SimSiam as lightly's benchmark; MoCo v3 as main_moco.py)
    /// instead of the peer script's SimCLR step
    #[arg(long, value_name = "simclr|mocov2|byol|simsiam|mocov3", value_parser = parse_method)]
    method: Option<MethodName>,
    /// Untimed steps first [default: 1; 0 for the native backend at width 1, whose single
    /// step takes minutes]
    #[arg(long, value_name = "N")]
    warmup: Option<usize>,
    /// Timed steps [default: 3 at width 1, 10 below, like the peer script]
    #[arg(long, value_name = "N", value_parser = crate::cli::count)]
    steps: Option<usize>,
    /// Timed steps of the native backend [default: 1 at width 1, 3 below: Candle's native
    /// convolution backward is slow]
    #[arg(long, value_name = "N", value_parser = crate::cli::count)]
    native_steps: Option<usize>,
    /// Run every configuration in this process (peak RSS then covers all configurations so
    /// far)
    #[arg(long)]
    in_process: bool,
    /// One configuration, width:backend:steps:precision, run by the parent in a child process
    #[arg(long, hide = true, value_parser = parse_child)]
    child: Option<ChildSpec>,
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Fast => "fast",
        Backend::Native => "native",
    }
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    match s {
        "fast" => Ok(Backend::Fast),
        "native" => Ok(Backend::Native),
        other => Err(format!(
            "unknown backend `{other}`: expected fast or native"
        )),
    }
}

fn positive_multiplier(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        Ok(x) => Err(format!("{x} is not a positive multiplier")),
        Err(_) => Err(format!("`{s}` is not a number")),
    }
}

/// NT-Xent needs a second image in the batch for negatives.
fn at_least_two(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 2 => Ok(n),
        Ok(n) => Err(format!("must be at least 2, got {n}")),
        Err(_) => Err(format!("takes an integer, got `{s}`")),
    }
}

fn parse_method(s: &str) -> Result<MethodName, String> {
    match s {
        "simclr" => Ok(MethodName::Simclr),
        "mocov2" => Ok(MethodName::Mocov2),
        "byol" => Ok(MethodName::Byol),
        "simsiam" => Ok(MethodName::Simsiam),
        "mocov3" => Ok(MethodName::Mocov3),
        other => Err(format!(
            "`{other}`: expected simclr, mocov2, byol, simsiam or mocov3"
        )),
    }
}

fn parse_child(spec: &str) -> Result<ChildSpec, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [w, b, n, p] = parts.as_slice() else {
        return Err("takes width:backend:steps:precision".into());
    };
    Ok((
        w.parse().map_err(|e| format!("width `{w}`: {e}"))?,
        parse_backend(b)?,
        n.parse().map_err(|e| format!("steps `{n}`: {e}"))?,
        Precision::parse(p).map_err(|e| e.to_string())?,
    ))
}

/// `--child width:backend:steps:precision`.
type ChildSpec = (f64, Backend, usize, Precision);

fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::Bf16 => "bf16",
    }
}

fn warmup_for(o: &Options, width: f64, backend: Backend) -> usize {
    o.warmup
        .unwrap_or(if backend == Backend::Native && width >= 1.0 {
            0
        } else {
            1
        })
}

fn steps_for(o: &Options, width: f64, backend: Backend) -> usize {
    let full = width >= 1.0;
    match backend {
        Backend::Fast => o.steps.unwrap_or(if full { 3 } else { 10 }),
        Backend::Native => o
            .native_steps
            .or(o.steps)
            .unwrap_or(if full { 1 } else { 3 }),
    }
}

pub fn run(o: Options) -> Result<()> {
    if let Some((width, backend, steps, precision)) = o.child {
        let r = measure(
            &o,
            width,
            backend,
            precision,
            warmup_for(&o, width, backend),
            steps,
        )?;
        println!("{}", r.to_line());
        return Ok(());
    }
    println!("== machine load: {}", load_average());
    let on_cpu = o.device == DeviceKind::Cpu;
    let gemm0 = if on_cpu { gemm_gflops()? } else { f64::NAN };
    if on_cpu {
        println!("== f32 GEMM 2048^3 (candle, same run): {gemm0:.1} GFLOP/s");
    }
    match o.method {
        None => println!(
            "== ResNet-18 (CIFAR stem) SimCLR step, batch {} x 2 views, fwd + NT-Xent + bwd + SGD",
            o.batch
        ),
        Some(m) => println!(
            "== ResNet-18 (CIFAR stem) {} training step of mocca-methods (CIFAR-10 preset), batch {} x 2 views",
            m.as_str(),
            o.batch
        ),
    }
    let mut results: Vec<Measurement> = Vec::new();
    for &width in &o.widths {
        for &backend in &o.backends {
            for &precision in &o.precisions {
                let steps = steps_for(&o, width, backend);
                let r = if o.in_process {
                    measure(
                        &o,
                        width,
                        backend,
                        precision,
                        warmup_for(&o, width, backend),
                        steps,
                    )?
                } else {
                    run_child(width, backend, precision, steps, &o)?
                };
                println!("  {}", r.describe(gemm0));
                results.push(r);
            }
        }
        let fast = results
            .iter()
            .find(|r| r.width == width && r.backend == Backend::Fast);
        let native = results
            .iter()
            .find(|r| r.width == width && r.backend == Backend::Native);
        if let (Some(f), Some(n)) = (fast, native) {
            println!(
                "  width {width}: fast / native = {:.2}x",
                n.step_s / f.step_s
            );
        }
    }
    if on_cpu {
        let gemm1 = gemm_gflops()?;
        println!(
            "== f32 GEMM 2048^3 after the steps: {gemm1:.1} GFLOP/s; load: {}",
            load_average()
        );
    }
    Ok(())
}

fn run_child(
    width: f64,
    backend: Backend,
    precision: Precision,
    steps: usize,
    o: &Options,
) -> Result<Measurement> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let spec = format!(
        "{width}:{}:{steps}:{}",
        backend_name(backend),
        precision_name(precision)
    );
    let mut cmd = Command::new(&exe);
    cmd.args(["bench", "step", "--child", &spec])
        .args(["--batch", &o.batch.to_string()])
        .args(["--warmup", &warmup_for(o, width, backend).to_string()])
        .args([
            "--device",
            if o.device == DeviceKind::Cuda {
                "cuda"
            } else {
                "cpu"
            },
        ]);
    if let Some(m) = o.method {
        cmd.args(["--method", m.as_str()]);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "width {width} {} failed ({}):\n{}{}",
            backend_name(backend),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
        .lines()
        .rev()
        .find_map(Measurement::from_line)
        .with_context(|| format!("no result line from the child run:\n{stdout}"))
}

#[derive(Debug, Clone)]
struct Measurement {
    width: f64,
    backend: Backend,
    precision: Precision,
    /// `peer` (the peer script's step) or the method's name.
    workload: String,
    device: String,
    batch: usize,
    steps: usize,
    step_s: f64,
    /// Convolution + linear FLOPs of one step (forward, input and weight gradients).
    step_flop: f64,
    peak_rss_bytes: Option<u64>,
    loss: f32,
}

impl Measurement {
    fn to_line(&self) -> String {
        format!(
            "RESULT {} {} {} {} {} {} {} {:.6} {:.0} {} {}",
            self.width,
            backend_name(self.backend),
            precision_name(self.precision),
            self.workload,
            self.device,
            self.batch,
            self.steps,
            self.step_s,
            self.step_flop,
            self.peak_rss_bytes.map_or(-1, |b| b as i64),
            self.loss
        )
    }

    fn from_line(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.strip_prefix("RESULT ")?.split(' ').collect();
        let [w, b, p, workload, device, batch, steps, t, flop, rss, loss] = f.as_slice() else {
            return None;
        };
        Some(Self {
            width: w.parse().ok()?,
            backend: parse_backend(b).ok()?,
            precision: Precision::parse(p).ok()?,
            workload: workload.to_string(),
            device: device.to_string(),
            batch: batch.parse().ok()?,
            steps: steps.parse().ok()?,
            step_s: t.parse().ok()?,
            step_flop: flop.parse().ok()?,
            peak_rss_bytes: rss.parse::<i64>().ok().and_then(|r| u64::try_from(r).ok()),
            loss: loss.parse().ok()?,
        })
    }

    fn describe(&self, gemm: f64) -> String {
        let gflops = self.step_flop / self.step_s / 1e9;
        let rss = self.peak_rss_bytes.map_or("peak RSS n/a".to_string(), |b| {
            format!("peak RSS {:.2} GiB", b as f64 / (1u64 << 30) as f64)
        });
        let of_gemm = if gemm.is_finite() {
            format!(" = {:.0}% of GEMM", 100.0 * gflops / gemm)
        } else {
            String::new()
        };
        format!(
            "{} {} width {} {} {}: {:.1} img/s ({:.3} s/step, {} steps), {rss}; {:.0} GFLOP/step at {:.0} GFLOP/s{of_gemm}; loss {:.3}",
            self.workload,
            self.device,
            self.width,
            backend_name(self.backend),
            precision_name(self.precision),
            self.batch as f64 / self.step_s,
            self.step_s,
            self.steps,
            self.step_flop / 1e9,
            gflops,
            self.loss
        )
    }
}

/// One timed configuration (in this process).
fn measure(
    o: &Options,
    width: f64,
    backend: Backend,
    precision: Precision,
    warmup: usize,
    steps: usize,
) -> Result<Measurement> {
    let dev = runs::select_device(o.device)?;
    let batch = o.batch;
    if let Some(method) = o.method {
        return measure_method(o, method, width, backend, precision, &dev, warmup, steps);
    }
    let cdt = precision.to_method().compute_dtype();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let cfg = ResNetConfig {
        stem: Stem::Cifar,
        width,
        backend,
        ..ResNetConfig::resnet18()
    };
    let backbone = ResNet::new(&cfg, vb.pp("backbone"))?;
    let f = backbone.feature_dim();
    // The peer script's head: biases on both linear layers, BatchNorm on the hidden one.
    let mut head_cfg = ProjectionHeadConfig::new(vec![
        HeadBlock {
            bias: true,
            ..HeadBlock::new(f, f, HeadNorm::BatchNorm, true)
        },
        HeadBlock::new(f, 128, HeadNorm::None, false),
    ]);
    head_cfg.backend = backend;
    let head = ProjectionHead::new(head_cfg, vb.pp("head"))?;
    let loss_fn = NTXentLoss::new(NTXentConfig {
        temperature: 0.5,
        ..Default::default()
    })?;
    // The trainer's optimizer (torch.optim.SGD's rule, fused in place on the CPU), so the step
    // timed here updates the weights exactly as `train` does.
    let mut params: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned VarMap"))?
        .iter()
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut sgd = Optimizer::new(params, OptimizerConfig::sgd(0.06, 0.9, 5e-4))?;
    let x0 = Tensor::rand(0f32, 1.0, (batch, 3, 32, 32), &dev)?.to_dtype(cdt)?;
    let x1 = Tensor::rand(0f32, 1.0, (batch, 3, 32, 32), &dev)?.to_dtype(cdt)?;

    // Under bf16 the layers cast their f32 weights to bf16 (autocast); the loss takes f32.
    let mut step = || -> Result<f32> {
        let z0 = head
            .forward_t(&backbone.forward_t(&x0, true)?, true)?
            .to_dtype(DType::F32)?;
        let z1 = head
            .forward_t(&backbone.forward_t(&x1, true)?, true)?
            .to_dtype(DType::F32)?;
        let loss = loss_fn.forward(&z0, &z1)?.loss;
        let grads = loss.backward()?;
        sgd.step(&grads)?;
        Ok(loss.to_scalar::<f32>()?)
    };
    for _ in 0..warmup {
        step()?;
    }
    let t0 = Instant::now();
    let mut loss = f32::NAN;
    for _ in 0..steps {
        loss = step()?;
    }
    let step_s = t0.elapsed().as_secs_f64() / steps as f64;
    Ok(Measurement {
        width,
        backend,
        precision,
        workload: "peer-simclr".into(),
        device: runs::device_label(&dev),
        batch,
        steps,
        step_s,
        step_flop: step_flops(&cfg, 32, batch),
        peak_rss_bytes: peak_rss_bytes(),
        loss,
    })
}

/// The trainer's own step (`Method::step`: forward, loss, backward, SGD, momentum update,
/// enqueue) with the CIFAR-10 preset of `method` at this width, batch and precision, on random
/// images (the data pipeline is timed by `train`'s epoch records).
#[allow(clippy::too_many_arguments)]
fn measure_method(
    o: &Options,
    method: MethodName,
    width: f64,
    backend: Backend,
    precision: Precision,
    dev: &Device,
    warmup: usize,
    steps: usize,
) -> Result<Measurement> {
    if backend != Backend::Fast {
        bail!("--method times the trainer, which uses the fast backend: pass --backend fast");
    }
    let mut b = ConfigBuilder::from_preset(method, Recipe::Cifar)?;
    b.set(&format!("batch_size={}", o.batch))?;
    b.set(&format!("model.width={width}"))?;
    b.set(&format!(
        "model.precision=\"{}\"",
        precision_name(precision)
    ))?;
    let cfg = b.build()?;
    let steps_per_epoch = 100;
    let mut m = setup::build_method(&cfg, steps_per_epoch, 50_000, dev)?;
    let views = [
        Tensor::rand(0f32, 1.0, (o.batch, 3, 32, 32), dev)?,
        Tensor::rand(0f32, 1.0, (o.batch, 3, 32, 32), dev)?,
    ];
    let indices: Vec<usize> = (0..o.batch).collect();
    for _ in 0..warmup {
        m.step(&views, &indices)?;
    }
    let t0 = Instant::now();
    let mut loss = f64::NAN;
    for _ in 0..steps {
        loss = m.step(&views, &indices)?.loss;
    }
    let step_s = t0.elapsed().as_secs_f64() / steps as f64;
    let r = setup::resnet_config(&cfg);
    // In units of one view's forward pass (a backward costs two): SimCLR and SimSiam pass both
    // views forward and backward (6); MoCo v1/v2 one view through the query encoder and the
    // other through the key encoder (4); BYOL and MoCo v3 both views through the trained
    // encoder and both through the momentum encoder (8). Heads and losses are not counted.
    let flop = step_flops(&r, 32, o.batch)
        * match method {
            MethodName::Simclr | MethodName::Simsiam => 1.0,
            MethodName::Byol | MethodName::Mocov3 => 8.0 / 6.0,
            _ => 4.0 / 6.0,
        };
    Ok(Measurement {
        width,
        backend,
        precision,
        workload: method.as_str().into(),
        device: runs::device_label(dev),
        batch: o.batch,
        steps,
        step_s,
        step_flop: flop,
        peak_rss_bytes: peak_rss_bytes(),
        loss: loss as f32,
    })
}

/// FLOPs of one step: 2 views × batch × (forward + input gradient + weight gradient) of every
/// convolution and linear layer; the stem has no input gradient.
fn step_flops(cfg: &ResNetConfig, size: usize, batch: usize) -> f64 {
    let planes = |k: usize| (64.0 * cfg.width * (1usize << k) as f64).floor() as usize;
    let conv = |hw: usize, cin: usize, cout: usize, k: usize| (hw * hw * cin * cout * k * k) as f64;
    let stem_macs = conv(size, 3, planes(0), 3);
    let mut macs = 0.0;
    let (mut hw, mut inp) = (size, planes(0));
    let expansion = if cfg.block == BlockKind::Basic { 1 } else { 4 };
    for (k, &n) in cfg.layers.iter().enumerate() {
        let p = planes(k);
        for j in 0..n {
            let stride = if k > 0 && j == 0 { 2 } else { 1 };
            let out_hw = hw / stride;
            macs += match cfg.block {
                BlockKind::Basic => conv(out_hw, inp, p, 3) + conv(out_hw, p, p, 3),
                BlockKind::Bottleneck => {
                    conv(hw, inp, p, 1) + conv(out_hw, p, p, 3) + conv(out_hw, p, 4 * p, 1)
                }
            };
            if stride != 1 || inp != p * expansion {
                macs += conv(out_hw, inp, p * expansion, 1);
            }
            hw = out_hw;
            inp = p * expansion;
        }
    }
    let f = cfg.feature_dim() as f64;
    macs += f * f + f * 128.0;
    let per_image = 2.0 * (3.0 * macs + 2.0 * stem_macs);
    per_image * 2.0 * batch as f64
}

/// f32 GEMM rate of Candle's matmul on 2048³ (one warm-up, five timed).
fn gemm_gflops() -> Result<f64> {
    let n = 2048;
    let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    a.matmul(&b)?;
    let reps = 5;
    let t0 = Instant::now();
    for _ in 0..reps {
        a.matmul(&b)?;
    }
    Ok(2.0 * (n * n * n) as f64 * reps as f64 / t0.elapsed().as_secs_f64() / 1e9)
}

/// VmHWM of this process (peak resident set), from /proc/self/status.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Options> {
        match crate::bench::parse_line(&format!("step {line}"))? {
            crate::bench::What::Step(o) => Ok(o),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn step_flops_of_full_width_cifar_resnet18_match_the_issue_estimate() {
        let cfg = ResNetConfig {
            stem: Stem::Cifar,
            ..ResNetConfig::resnet18()
        };
        let gflop = step_flops(&cfg, 32, 128) / 1e9;
        // 0.56 GMAC per image forward; ×2 FLOP/MAC ×3 passes ×256 images ≈ 850 GFLOP.
        assert!((840.0..870.0).contains(&gflop), "{gflop}");
    }

    #[test]
    fn result_lines_round_trip() {
        let m = Measurement {
            width: 0.25,
            backend: Backend::Native,
            precision: Precision::Bf16,
            workload: "mocov2".into(),
            device: "cuda:0".into(),
            batch: 128,
            steps: 3,
            step_s: 1.25,
            step_flop: 5.5e10,
            peak_rss_bytes: Some(123_456_789),
            loss: 5.25,
        };
        let back = Measurement::from_line(&m.to_line()).unwrap();
        assert_eq!(back.to_line(), m.to_line());
        assert_eq!(back.peak_rss_bytes, Some(123_456_789));
        assert_eq!(back.precision, Precision::Bf16);
        assert_eq!(back.workload, "mocov2");
    }

    #[test]
    fn a_tiny_mocov2_step_runs_in_both_precisions() {
        let o = parse(
            "--method mocov2 --width 0.0625 --batch-size 16 --backend fast --precision f32,bf16 \
             --steps 1 --warmup 0",
        )
        .unwrap();
        assert_eq!(o.precisions, [Precision::F32, Precision::Bf16]);
        for p in [Precision::F32, Precision::Bf16] {
            let m = measure(&o, 0.0625, Backend::Fast, p, 0, 1).unwrap();
            assert_eq!(m.workload, "mocov2");
            assert!(m.loss.is_finite() && m.loss > 0.0, "{p:?}: loss {}", m.loss);
        }
    }

    #[test]
    fn the_peer_step_trains_with_the_trainers_optimizer() {
        let o = parse("--batch 4").unwrap();
        // Two steps: the second one's loss comes from weights the optimizer has updated.
        let m = measure(&o, 0.0625, Backend::Fast, Precision::F32, 1, 1).unwrap();
        assert_eq!(m.workload, "peer-simclr");
        assert!(m.loss.is_finite() && m.loss > 0.0, "loss {}", m.loss);
    }

    #[test]
    fn options_parse_lists_and_reject_nonsense() {
        let o = parse("--width 1,0.5 --backend fast --steps 2").unwrap();
        assert_eq!(o.widths, [1.0, 0.5]);
        assert_eq!(o.backends, [Backend::Fast]);
        assert_eq!(steps_for(&o, 1.0, Backend::Native), 2);
        assert!(o.child.is_none());
        let e = parse("--backend gpu").unwrap_err().to_string();
        assert!(e.contains("unknown backend `gpu`"), "{e}");
        let e = parse("--batch 1").unwrap_err().to_string();
        assert!(e.contains("must be at least 2"), "{e}");
    }

    #[test]
    fn defaults_are_both_widths_both_backends_in_f32_on_the_cpu() {
        let o = parse("").unwrap();
        assert_eq!(o.widths, [1.0, 0.25]);
        assert_eq!(o.backends, [Backend::Fast, Backend::Native]);
        assert_eq!(o.precisions, [Precision::F32]);
        assert_eq!((o.batch, o.device, o.method), (128, DeviceKind::Cpu, None));
    }

    #[test]
    fn the_hidden_child_spec_parses_into_one_configuration() {
        let o = parse("--child 0.25:native:3:bf16").unwrap();
        assert_eq!(o.child, Some((0.25, Backend::Native, 3, Precision::Bf16)));
    }
}
