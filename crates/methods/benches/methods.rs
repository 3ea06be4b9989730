//! Preliminary throughput of the pieces this crate adds around the models:
//! the optimizer update over ResNet-18-sized parameters, and kNN evaluation.
//! Run: `cargo bench -p mocca-methods --bench methods -- --warm-up-time 1 --measurement-time 3`.

use candle_core::{Device, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use mocca_methods::eval::{knn_evaluate, KnnConfig};
use mocca_methods::optim::{Optimizer, OptimizerConfig};
use mocca_methods::{EncoderRole, FeatureLayer, FeatureSource, Features};

/// Parameter shapes of torchvision's ResNet-18 convolutions (11.2 M weights).
fn resnet18_shapes() -> Vec<Vec<usize>> {
    let mut v = vec![vec![64, 3, 7, 7], vec![64], vec![64]];
    let mut inp = 64;
    for (stage, planes) in [64usize, 128, 256, 512].into_iter().enumerate() {
        for block in 0..2 {
            let cin = if block == 0 { inp } else { planes };
            v.push(vec![planes, cin, 3, 3]);
            v.extend([vec![planes], vec![planes]]);
            v.push(vec![planes, planes, 3, 3]);
            v.extend([vec![planes], vec![planes]]);
            if block == 0 && stage > 0 {
                v.push(vec![planes, inp, 1, 1]);
                v.extend([vec![planes], vec![planes]]);
            }
        }
        inp = planes;
    }
    v
}

fn optimizer_step(c: &mut Criterion) {
    let dev = Device::Cpu;
    let params: Vec<(String, Var)> = resnet18_shapes()
        .into_iter()
        .enumerate()
        .map(|(i, s)| (format!("p{i}"), Var::randn(0f32, 0.1, s, &dev).unwrap()))
        .collect();
    let n: usize = params.iter().map(|(_, v)| v.elem_count()).sum();
    // A loss whose gradient w.r.t. every parameter is the parameter itself.
    let loss = params
        .iter()
        .map(|(_, v)| (v.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap())
        .reduce(|a, b| (a + b).unwrap())
        .unwrap();
    let grads = loss.backward().unwrap();
    let mut group = c.benchmark_group(format!(
        "optimizer step, ResNet-18 ({:.1} M params)",
        n as f64 / 1e6
    ));
    group.sample_size(10);
    for (name, cfg) in [
        ("sgd momentum+wd", OptimizerConfig::sgd(0.03, 0.9, 1e-4)),
        ("lars", OptimizerConfig::lars(0.3, 0.9, 1e-6)),
    ] {
        let mut opt = Optimizer::new(params.clone(), cfg).unwrap();
        group.bench_function(name, |b| b.iter(|| opt.step(&grads).unwrap()));
    }
    // Reference: the same momentum-SGD rule as plain Candle ops (what an
    // optimizer written with tensor ops does), for the ratio.
    let mut buffers: Vec<Tensor> = params
        .iter()
        .map(|(_, v)| v.zeros_like().unwrap())
        .collect();
    group.bench_function("sgd momentum+wd, candle ops", |b| {
        b.iter(|| {
            for ((_, v), buf) in params.iter().zip(buffers.iter_mut()) {
                let p = v.as_detached_tensor();
                let g = grads.get(v.as_tensor()).unwrap();
                let d = (g + (&p * 1e-4).unwrap()).unwrap();
                *buf = ((&*buf * 0.9).unwrap() + d).unwrap();
                v.set(&(&p - (&*buf * 0.03).unwrap()).unwrap()).unwrap();
            }
        })
    });
    group.finish();
}

fn knn(c: &mut Criterion) {
    let dev = Device::Cpu;
    let src = FeatureSource::new(EncoderRole::Query, FeatureLayer::Backbone);
    let (n_train, n_test, d) = (10_000, 2_000, 512);
    let train = Features::new(Tensor::randn(0f32, 1.0, (n_train, d), &dev).unwrap(), src).unwrap();
    let test = Features::new(Tensor::randn(0f32, 1.0, (n_test, d), &dev).unwrap(), src).unwrap();
    let train_labels: Vec<u32> = (0..n_train as u32).map(|i| i % 10).collect();
    let test_labels: Vec<u32> = (0..n_test as u32).map(|i| i % 10).collect();
    let mut group = c.benchmark_group("kNN k=200, 10000 train x 2000 test x 512");
    group.sample_size(10);
    group.bench_function("knn_evaluate", |b| {
        b.iter(|| {
            knn_evaluate(
                &train,
                &train_labels,
                &test,
                &test_labels,
                &KnnConfig::new(10),
            )
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, optimizer_step, knn);
criterion_main!(benches);
