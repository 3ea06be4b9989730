//! One SimCLR training step (both views forward, NT-Xent, backward) of a CIFAR ResNet-18 at
//! width 0.25, batch 32 × 2, on both backends. `cargo xtask bench step` measures the full-size
//! workload; this is the quick ratio to watch between commits.

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion};
use mocca_backbones::{Backend, ProjectionHead, ResNet, ResNetConfig, SimCLRProjectionHead, Stem};
use mocca_losses::{NTXentConfig, NTXentLoss};

fn simclr_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("simclr_step/resnet18_cifar_w0.25_b32x2");
    group.sample_size(10);
    let x0 = Tensor::rand(0f32, 1.0, (32, 3, 32, 32), &Device::Cpu).unwrap();
    let x1 = Tensor::rand(0f32, 1.0, (32, 3, 32, 32), &Device::Cpu).unwrap();
    let loss_fn = NTXentLoss::new(NTXentConfig::default()).unwrap();
    for (name, backend) in [("fast", Backend::Fast), ("native", Backend::Native)] {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cfg = ResNetConfig {
            stem: Stem::Cifar,
            width: 0.25,
            backend,
            ..ResNetConfig::resnet18()
        };
        let backbone = ResNet::new(&cfg, vb.pp("backbone")).unwrap();
        let mut head_cfg: mocca_backbones::ProjectionHeadConfig =
            SimCLRProjectionHead::new(backbone.feature_dim()).into();
        head_cfg.backend = backend;
        let head = ProjectionHead::new(head_cfg, vb.pp("head")).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                let z0 = head
                    .forward_t(&backbone.forward_t(&x0, true).unwrap(), true)
                    .unwrap();
                let z1 = head
                    .forward_t(&backbone.forward_t(&x1, true).unwrap(), true)
                    .unwrap();
                loss_fn.forward(&z0, &z1).unwrap().loss.backward().unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, simclr_step);
criterion_main!(benches);
