//! Speed of the training ops against Candle's native ones, and the machine's GEMM rate, in one
//! run (the machine is shared: compare the ratios within a run, not runs with each other).
//!
//! `cargo bench -p mocca-kernels --bench ops` (add e.g. `-- conv3x3` to filter). Reported
//! rates: convolutions as GFLOP/s ("Gelem/s" in criterion's output: one element = one FLOP,
//! 2·N·Ho·Wo·Cout·Cin·kh·kw per pass); BatchNorm as GB/s over the 8 tensor-sized passes of the
//! fused kernels (forward: 2 reads, 1 write; backward: 2 reads each of x and dy, 1 write), the
//! same byte count credited to both implementations.
//!
//! Ours: `mocca_kernels::conv2d_nhwc` on NHWC, input and weight gradients timed through
//! `backward()` with only that operand tracked. Candle-native: `Tensor::conv2d` on NCHW; its
//! input and weight gradients are timed as the calls its backward makes (`conv_transpose2d`,
//! and `conv2d` of transposed tensors), and `fwd+bwd` through `backward()` for both.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// A loss whose gradient w.r.t. its input is a fixed tensor: `backward()` then runs the op's
/// backward with exactly that output gradient and no extra element-wise work.
struct InjectGrad(Tensor);

impl CustomOp1 for InjectGrad {
    fn name(&self) -> &'static str {
        "inject-grad"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(vec![0.0]), Shape::from(())))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, _: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.0.clone()))
    }
}

fn with_grad(y: &Tensor, dy: &Tensor) -> Tensor {
    y.apply_op1(InjectGrad(dy.clone())).unwrap()
}

fn gemm_rate(c: &mut Criterion) {
    let n = 2048;
    let a = vec![0.5f32; n * n];
    let b = vec![0.25f32; n * n];
    let mut d = vec![0.0f32; n * n];
    let mut group = c.benchmark_group("gemm");
    group.sample_size(10);
    group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
    group.bench_function("f32_2048", |bench| {
        bench.iter(|| {
            // SAFETY: three distinct n x n row-major buffers.
            unsafe {
                gemm::gemm(
                    n,
                    n,
                    n,
                    d.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    n as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(0),
                )
            }
        })
    });
    group.finish();
}

const N: usize = 256;
const C: usize = 64;
const HW: usize = 32;

fn conv3x3(c: &mut Criterion) {
    let dev = Device::Cpu;
    let x_nhwc = Tensor::randn(0f32, 1., (N, HW, HW, C), &dev).unwrap();
    let x_nchw = x_nhwc.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
    let w = Tensor::randn(0f32, 0.06, (C, C, 3, 3), &dev).unwrap();
    let dy_nhwc = Tensor::randn(0f32, 1., (N, HW, HW, C), &dev).unwrap();
    let dy_nchw = dy_nhwc.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
    let (xv_nhwc, xv_nchw) = (
        Var::from_tensor(&x_nhwc).unwrap(),
        Var::from_tensor(&x_nchw).unwrap(),
    );
    let wv = Var::from_tensor(&w).unwrap();

    let mut group = c.benchmark_group("conv3x3_64to64_256x32x32");
    group.sample_size(10);
    group.throughput(Throughput::Elements(2 * (N * HW * HW * C * C * 9) as u64));
    group.bench_function(BenchmarkId::new("fwd", "ours"), |b| {
        b.iter(|| mocca_kernels::conv2d_nhwc(&x_nhwc, &w, 1, 1).unwrap())
    });
    group.bench_function(BenchmarkId::new("fwd", "candle"), |b| {
        b.iter(|| x_nchw.conv2d(&w, 1, 1, 1, 1).unwrap())
    });
    let y = with_grad(
        &mocca_kernels::conv2d_nhwc(&xv_nhwc, &w, 1, 1).unwrap(),
        &dy_nhwc,
    );
    group.bench_function(BenchmarkId::new("input_grad", "ours"), |b| {
        b.iter(|| y.backward().unwrap())
    });
    group.bench_function(BenchmarkId::new("input_grad", "candle"), |b| {
        b.iter(|| dy_nchw.conv_transpose2d(&w, 1, 0, 1, 1).unwrap())
    });
    let y = with_grad(
        &mocca_kernels::conv2d_nhwc(&x_nhwc, &wv, 1, 1).unwrap(),
        &dy_nhwc,
    );
    group.bench_function(BenchmarkId::new("weight_grad", "ours"), |b| {
        b.iter(|| y.backward().unwrap())
    });
    group.bench_function(BenchmarkId::new("weight_grad", "candle"), |b| {
        b.iter(|| {
            x_nchw
                .transpose(0, 1)
                .unwrap()
                .conv2d(&dy_nchw.transpose(0, 1).unwrap(), 1, 1, 1, 1)
                .unwrap()
                .transpose(0, 1)
                .unwrap()
        })
    });
    // A training step's view: forward, then both gradients (3 passes' FLOPs).
    group.throughput(Throughput::Elements(
        3 * 2 * (N * HW * HW * C * C * 9) as u64,
    ));
    group.bench_function(BenchmarkId::new("fwd+bwd", "ours"), |b| {
        b.iter(|| {
            let y = mocca_kernels::conv2d_nhwc(&xv_nhwc, &wv, 1, 1).unwrap();
            with_grad(&y, &dy_nhwc).backward().unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("fwd+bwd", "candle"), |b| {
        b.iter(|| {
            let y = xv_nchw.conv2d(&wv, 1, 1, 1, 1).unwrap();
            with_grad(&y, &dy_nchw).backward().unwrap()
        })
    });
    group.finish();
}

/// BatchNorm written with Candle ops on NCHW, statistics over (N, H, W).
fn candle_bn(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Tensor {
    let c = x.dim(1).unwrap();
    let mean = x.mean_keepdim((0, 2, 3)).unwrap();
    let xc = x.broadcast_sub(&mean).unwrap();
    let var = xc.sqr().unwrap().mean_keepdim((0, 2, 3)).unwrap();
    xc.broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(&gamma.reshape((1, c, 1, 1)).unwrap())
        .unwrap()
        .broadcast_add(&beta.reshape((1, c, 1, 1)).unwrap())
        .unwrap()
}

fn batch_norm(c: &mut Criterion) {
    let dev = Device::Cpu;
    let x_nhwc = Tensor::randn(0f32, 1., (N, HW, HW, C), &dev).unwrap();
    let x_nchw = x_nhwc.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
    let dy_nhwc = Tensor::randn(0f32, 1., (N, HW, HW, C), &dev).unwrap();
    let dy_nchw = dy_nhwc.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
    let (xv_nhwc, xv_nchw) = (
        Var::from_tensor(&x_nhwc).unwrap(),
        Var::from_tensor(&x_nchw).unwrap(),
    );
    let gamma = Var::ones(C, DType::F32, &dev).unwrap();
    let beta = Var::zeros(C, DType::F32, &dev).unwrap();

    let mut group = c.benchmark_group("batch_norm_train_256x64x32x32");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(8 * (N * HW * HW * C * 4) as u64));
    group.bench_function(BenchmarkId::new("fwd+bwd", "ours"), |b| {
        b.iter(|| {
            let out =
                mocca_kernels::batch_norm_train(&xv_nhwc, &gamma, &beta, 1e-5, 1, false).unwrap();
            with_grad(&out.y, &dy_nhwc).backward().unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("fwd+bwd", "candle"), |b| {
        b.iter(|| {
            let y = candle_bn(&xv_nchw, &gamma, &beta);
            with_grad(&y, &dy_nchw).backward().unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, gemm_rate, conv3x3, batch_norm);
criterion_main!(benches);
