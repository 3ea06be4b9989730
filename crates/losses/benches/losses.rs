//! Loss speed against the machine's GEMM rate, in one run.
//!
//! Every benchmark reports its throughput in FLOPs of its *matmul bound*, so
//! criterion's "thrpt" lines compare directly with the `gemm` line:
//! - forward: the logits GEMM, `2·R·C·D` for `R` anchors and `C` columns
//!   (NT-Xent: R = C = 2N; InfoNCE: R = N, C = K);
//! - forward+backward: that plus the gradient GEMM (NT-Xent: `(G + Gᵀ) z`,
//!   InfoNCE: `G · negatives`; no gradient into the queue), twice the forward.
//!
//! `time / bound = gemm thrpt / loss thrpt`; the target is ≤ 2 for NT-Xent
//! N = 512 and InfoNCE K = 65536, forward+backward.
//! `cargo xtask bench losses` prints that ratio as a table.
//!
//! Run: `cargo bench -p mocca-losses --bench losses` (add
//! `-- --warm-up-time 1 --measurement-time 2` for a quick look).

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mocca_losses::{Implementation, InfoNCEConfig, InfoNCELoss, NTXentConfig, NTXentLoss};

const D: usize = 128;
const GEMM_N: usize = 2048;

fn unit_rows(k: usize, d: usize, dev: &Device) -> Tensor {
    let x = Tensor::randn(0f32, 1.0, (k, d), dev).unwrap();
    x.broadcast_div(&x.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap())
        .unwrap()
}

fn gemm(c: &mut Criterion) {
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (GEMM_N, GEMM_N), &dev).unwrap();
    let b = Tensor::randn(0f32, 1.0, (GEMM_N, GEMM_N), &dev).unwrap();
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10);
    g.throughput(Throughput::Elements(2 * (GEMM_N as u64).pow(3)));
    g.bench_function(BenchmarkId::new("f32", GEMM_N), |bch| {
        bch.iter(|| a.matmul(&b).unwrap())
    });
    g.finish();
}

fn ntxent(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut g = c.benchmark_group("ntxent");
    g.sample_size(20);
    for (imp, tag) in [
        (Implementation::Auto, "fused"),
        (Implementation::Composed, "composed"),
    ] {
        let loss = NTXentLoss::new(NTXentConfig {
            temperature: 0.5,
            implementation: imp,
        })
        .unwrap();
        for n in [256usize, 512] {
            let fwd_flops = 2 * (2 * n as u64).pow(2) * D as u64;
            let z0 = Var::randn(0f32, 1.0, (n, D), &dev).unwrap();
            let z1 = Var::randn(0f32, 1.0, (n, D), &dev).unwrap();
            let (t0, t1) = (z0.as_tensor().detach(), z1.as_tensor().detach());
            g.throughput(Throughput::Elements(fwd_flops));
            g.bench_function(BenchmarkId::new(format!("{tag}/fwd"), n), |b| {
                b.iter(|| loss.forward(&t0, &t1).unwrap().loss)
            });
            g.throughput(Throughput::Elements(2 * fwd_flops));
            g.bench_function(BenchmarkId::new(format!("{tag}/fwd_bwd"), n), |b| {
                b.iter(|| loss.forward(&z0, &z1).unwrap().loss.backward().unwrap())
            });
        }
    }
    g.finish();
}

fn infonce(c: &mut Criterion) {
    let dev = Device::Cpu;
    let n = 256usize;
    let mut g = c.benchmark_group("infonce");
    g.sample_size(10);
    for (imp, tag) in [
        (Implementation::Auto, "fused"),
        (Implementation::Composed, "composed"),
    ] {
        let loss = InfoNCELoss::new(InfoNCEConfig {
            temperature: 0.2,
            implementation: imp,
            ..Default::default()
        })
        .unwrap();
        for k in [4096usize, 65536] {
            let fwd_flops = 2 * (n * k * D) as u64;
            let q = Var::randn(0f32, 1.0, (n, D), &dev).unwrap();
            let key = Tensor::randn(0f32, 1.0, (n, D), &dev).unwrap();
            let queue = unit_rows(k, D, &dev);
            let qt = q.as_tensor().detach();
            g.throughput(Throughput::Elements(fwd_flops));
            g.bench_function(BenchmarkId::new(format!("{tag}/fwd"), k), |b| {
                b.iter(|| loss.forward(&qt, &key, &queue).unwrap().loss)
            });
            g.throughput(Throughput::Elements(2 * fwd_flops));
            g.bench_function(BenchmarkId::new(format!("{tag}/fwd_bwd"), k), |b| {
                b.iter(|| {
                    loss.forward(&q, &key, &queue)
                        .unwrap()
                        .loss
                        .backward()
                        .unwrap()
                })
            });
        }
    }
    g.finish();
}

/// The memory bank's two ways of drawing K negatives (InstDisc's per query, or one set shared
/// by the batch) at the MoCo paper's bank settings: N 256 queries, K 4096 of 50,000 rows (and
/// per query also K 1024 and 16,384).
/// Both include the gather of the rows; the draws themselves are `mocca-queue`'s.
fn memory_bank(c: &mut Criterion) {
    let dev = Device::Cpu;
    let (n, k, rows) = (256usize, 4096usize, 50_000usize);
    let mut g = c.benchmark_group("memory_bank");
    g.sample_size(10);
    let loss = InfoNCELoss::new(InfoNCEConfig {
        temperature: 0.07,
        ..Default::default()
    })
    .unwrap();
    let q = Var::randn(0f32, 1.0, (n, D), &dev).unwrap();
    let key = Tensor::randn(0f32, 1.0, (n, D), &dev).unwrap();
    let bank = unit_rows(rows, D, &dev);
    // A fixed pseudo-random draw (an LCG: the benchmark needs rows spread over the bank,
    // not a particular generator).
    let mut x = 12345u64;
    let mut draw = |len: usize| -> Vec<u32> {
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) % rows as u64) as u32
            })
            .collect()
    };
    let shared = Tensor::from_vec(draw(k), k, &dev).unwrap();
    g.throughput(Throughput::Elements(4 * (n * k * D) as u64));
    g.bench_function(BenchmarkId::new("shared/fwd_bwd", k), |b| {
        b.iter(|| {
            let negatives = bank.index_select(&shared, 0).unwrap();
            loss.forward(&q, &key, &negatives)
                .unwrap()
                .loss
                .backward()
                .unwrap()
        })
    });
    // Per query at three K: 1024 gathers its rows, 4096 and the paper's 16,384 look them up
    // in q̂·bankᵀ (the fused loss's choice).
    for per_k in [1024, k, 16_384] {
        let per_query = Tensor::from_vec(draw(n * per_k), (n, per_k), &dev).unwrap();
        g.throughput(Throughput::Elements(4 * (n * per_k * D) as u64));
        g.bench_function(BenchmarkId::new("per_query/fwd_bwd", per_k), |b| {
            b.iter(|| {
                loss.forward_indexed(&q, &key, &bank, &per_query)
                    .unwrap()
                    .loss
                    .backward()
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, gemm, ntxent, infonce, memory_bank);
criterion_main!(benches);
