//! `cargo xtask bench losses`: each loss's time against its matmul FLOP
//! bound, measured in the same run as this machine's f32 GEMM rate.
//!
//! Bound = FLOPs of the loss's unavoidable GEMMs / measured GEMM rate:
//! forward = the logits GEMM (`2·R·C·D`: NT-Xent R = C = 2N, InfoNCE R = N,
//! C = K); forward+backward = that plus the gradient GEMM of the same size
//! (NT-Xent `(G + Gᵀ) z`, InfoNCE `G · negatives`). Target: ratio ≤ 2 for
//! NT-Xent N = 512 and InfoNCE K = 65536, forward+backward. The criterion
//! version of the same measurements is `cargo bench -p mocca-losses`.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use mocca_losses::{Implementation, InfoNCEConfig, InfoNCELoss, NTXentConfig, NTXentLoss};

const D: usize = 128;
const GEMM_N: usize = 2048;

/// `cargo xtask bench losses`: how many repetitions, and which paths.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Timed repetitions per case, median reported
    #[arg(long, value_name = "N", value_parser = crate::cli::count, default_value_t = 9)]
    reps: usize,
    /// Also time the composed candle-op path (what CUDA runs)
    #[arg(long)]
    composed: bool,
}

/// Median wall time in seconds of `reps` runs after one warm-up run.
fn median_secs(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[reps / 2])
}

fn unit_rows(k: usize, d: usize, dev: &Device) -> Result<Tensor> {
    let x = Tensor::randn(0f32, 1.0, (k, d), dev)?;
    Ok(x.broadcast_div(&x.sqr()?.sum_keepdim(1)?.sqrt()?)?)
}

struct Row {
    loss: &'static str,
    shape: String,
    path: &'static str,
    pass: &'static str,
    flops: f64,
    secs: f64,
    target: bool,
}

fn ntxent_rows(
    opts: &Options,
    imp: Implementation,
    path: &'static str,
    dev: &Device,
) -> Result<Vec<Row>> {
    let loss = NTXentLoss::new(NTXentConfig {
        temperature: 0.5,
        implementation: imp,
    })?;
    let mut rows = Vec::new();
    for n in [256usize, 512] {
        let fwd_flops = 2.0 * (2 * n) as f64 * (2 * n) as f64 * D as f64;
        let z0 = Var::randn(0f32, 1.0, (n, D), dev)?;
        let z1 = Var::randn(0f32, 1.0, (n, D), dev)?;
        let (t0, t1) = (z0.as_tensor().detach(), z1.as_tensor().detach());
        let fwd = median_secs(opts.reps, || {
            loss.forward(&t0, &t1)?;
            Ok(())
        })?;
        let both = median_secs(opts.reps, || {
            loss.forward(&z0, &z1)?.loss.backward()?;
            Ok(())
        })?;
        let shape = format!("N={n} D={D}");
        rows.push(Row {
            loss: "NT-Xent",
            shape: shape.clone(),
            path,
            pass: "fwd",
            flops: fwd_flops,
            secs: fwd,
            target: false,
        });
        rows.push(Row {
            loss: "NT-Xent",
            shape,
            path,
            pass: "fwd+bwd",
            flops: 2.0 * fwd_flops,
            secs: both,
            target: n == 512,
        });
    }
    Ok(rows)
}

fn infonce_rows(
    opts: &Options,
    imp: Implementation,
    path: &'static str,
    dev: &Device,
) -> Result<Vec<Row>> {
    let n = 256usize;
    let loss = InfoNCELoss::new(InfoNCEConfig {
        temperature: 0.2,
        implementation: imp,
        ..Default::default()
    })?;
    let mut rows = Vec::new();
    for k in [4096usize, 65536] {
        let fwd_flops = 2.0 * n as f64 * k as f64 * D as f64;
        let q = Var::randn(0f32, 1.0, (n, D), dev)?;
        let key = Tensor::randn(0f32, 1.0, (n, D), dev)?;
        let queue = unit_rows(k, D, dev)?;
        let qt = q.as_tensor().detach();
        let fwd = median_secs(opts.reps, || {
            loss.forward(&qt, &key, &queue)?;
            Ok(())
        })?;
        let both = median_secs(opts.reps, || {
            loss.forward(&q, &key, &queue)?.loss.backward()?;
            Ok(())
        })?;
        let shape = format!("N={n} D={D} K={k}");
        rows.push(Row {
            loss: "InfoNCE",
            shape: shape.clone(),
            path,
            pass: "fwd",
            flops: fwd_flops,
            secs: fwd,
            target: false,
        });
        rows.push(Row {
            loss: "InfoNCE",
            shape,
            path,
            pass: "fwd+bwd",
            flops: 2.0 * fwd_flops,
            secs: both,
            target: k == 65536,
        });
    }
    Ok(rows)
}

fn first_line_with(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
}

pub fn run(opts: Options) -> Result<()> {
    let dev = Device::Cpu;
    let cpu =
        first_line_with("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "machine: {cpu}, {} threads; load average before: {load}",
        candle_core::utils::get_num_threads()
    );

    let a = Tensor::randn(0f32, 1.0, (GEMM_N, GEMM_N), &dev)?;
    let b = Tensor::randn(0f32, 1.0, (GEMM_N, GEMM_N), &dev)?;
    let gemm_secs = median_secs(opts.reps.min(5), || {
        a.matmul(&b)?;
        Ok(())
    })?;
    let rate = 2.0 * (GEMM_N as f64).powi(3) / gemm_secs;
    println!(
        "f32 GEMM rate (candle matmul {GEMM_N}³): {:.1} GFLOP/s\n",
        rate / 1e9
    );

    let mut rows = Vec::new();
    let mut paths = vec![(Implementation::Auto, "fused")];
    if opts.composed {
        paths.push((Implementation::Composed, "composed"));
    }
    for &(imp, path) in &paths {
        rows.extend(ntxent_rows(&opts, imp, path, &dev)?);
        rows.extend(infonce_rows(&opts, imp, path, &dev)?);
    }

    println!(
        "{:<8} {:<20} {:<9} {:<8} {:>11} {:>10} {:>10} {:>7}",
        "loss", "shape", "path", "pass", "bound GFLOP", "bound ms", "ours ms", "ratio"
    );
    for r in &rows {
        let bound = r.flops / rate;
        let ratio = r.secs / bound;
        let verdict = match (r.target, ratio <= 2.0) {
            (false, _) => "",
            (true, true) => "  target <= 2: met",
            (true, false) => "  target <= 2: MISSED",
        };
        println!(
            "{:<8} {:<20} {:<9} {:<8} {:>11.3} {:>10.2} {:>10.2} {:>6.2}x{verdict}",
            r.loss,
            r.shape,
            r.path,
            r.pass,
            r.flops / 1e9,
            bound * 1e3,
            r.secs * 1e3,
            ratio
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nload average after: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}
