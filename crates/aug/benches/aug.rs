//! Throughput of the preset pipelines, two views per source image:
//! 32 px CIFAR recipes from 32 px sources (real CIFAR-10 when
//! `data/cifar-10-batches-bin` exists, else synthetic) and the 224 px recipes
//! from 256 px sources. Throughput is in source images per second.
//!
//! `cargo bench -p mocca-aug --bench aug`

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mocca_aug::{ImageU8, Preset};

/// HWC images, all `side x side x 3`, concatenated.
struct Images {
    pixels: Vec<u8>,
    side: usize,
    count: usize,
}

impl Images {
    fn views(&self) -> Vec<ImageU8<'_>> {
        let n = self.side * self.side * 3;
        self.pixels
            .chunks_exact(n)
            .take(self.count)
            .map(|p| ImageU8::new(p, self.side, self.side, 3).unwrap())
            .collect()
    }
}

/// The first `count` images of CIFAR-10's first training batch (planar RGB
/// records after a label byte), converted to HWC.
fn cifar(count: usize) -> Option<Images> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/cifar-10-batches-bin/data_batch_1.bin");
    let raw = std::fs::read(path).ok()?;
    let count = count.min(raw.len() / 3073);
    let mut pixels = Vec::with_capacity(count * 3072);
    for rec in raw.chunks_exact(3073).take(count) {
        let planes = &rec[1..];
        for p in 0..1024 {
            pixels.extend([planes[p], planes[1024 + p], planes[2048 + p]]);
        }
    }
    Some(Images {
        pixels,
        side: 32,
        count,
    })
}

/// Smooth colour gradients plus noise, so every colour op has work to do.
fn synthetic(count: usize, side: usize) -> Images {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut pixels = Vec::with_capacity(count * side * side * 3);
    for i in 0..count {
        for y in 0..side {
            for x in 0..side {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = (s >> 59) as usize;
                pixels.push(((x * 255 / side + i * 13 + noise) % 256) as u8);
                pixels.push(((y * 255 / side + i * 29 + noise) % 256) as u8);
                pixels.push((((x + y) * 127 / side + i * 7 + noise) % 256) as u8);
            }
        }
    }
    Images {
        pixels,
        side,
        count,
    }
}

fn bench(c: &mut Criterion) {
    let small = cifar(512).unwrap_or_else(|| synthetic(512, 32));
    let large = synthetic(64, 256);
    let cases = [
        (Preset::SimClrCifar, &small),
        (Preset::MocoV2Cifar, &small),
        (Preset::SimClr, &large),
        (Preset::MocoV2, &large),
    ];
    let mut g = c.benchmark_group("aug_two_views");
    for (preset, images) in cases {
        let views = preset.two_views(preset.default_size()).unwrap();
        let imgs = images.views();
        let ids: Vec<u64> = (0..imgs.len() as u64).collect();
        g.throughput(Throughput::Elements(imgs.len() as u64));
        let id = format!(
            "{}_{}px_from_{}px",
            preset.name(),
            preset.default_size(),
            images.side
        );
        let mut epoch = 0;
        g.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter(|| {
                epoch += 1;
                views.apply_batch(&imgs, &ids, 0, epoch).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
