//! `cargo xtask bench aug`: source images per second of the augmentation
//! presets, two views per image, on all cores (rayon's pool).
//!
//! Cases (issue 3): SimCLR and MoCo v2 at 32 px from 32 px CIFAR-10 images
//! (the real training set when it can be found, else synthetic 32 px images),
//! and at 224 px from synthetic 256 px images. Targets on the 2-core reference
//! machine: >= 20,000 images/s at 32 px, >= 400 at 224 px. The criterion
//! version is `cargo bench -p mocca-aug --bench aug`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use mocca_aug::{ImageU8, Preset};

/// `cargo xtask bench aug`: how many batches, on which images, on how many threads.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Timed batches per case, median reported
    #[arg(long, value_name = "N", value_parser = crate::cli::count, default_value_t = 7)]
    reps: usize,
    /// CIFAR-10 folder for the 32 px cases [default: the usual places, else synthetic 32 px
    /// images]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Rayon threads [default: all cores]
    #[arg(long, value_name = "N", value_parser = crate::cli::count)]
    threads: Option<usize>,
}

/// Same-size HWC images, concatenated.
struct Sources {
    pixels: Vec<u8>,
    side: usize,
    what: String,
}

impl Sources {
    fn images(&self) -> Result<Vec<ImageU8<'_>>> {
        let n = self.side * self.side * 3;
        self.pixels
            .chunks_exact(n)
            .map(|p| Ok(ImageU8::new(p, self.side, self.side, 3)?))
            .collect()
    }
}

/// Smooth colour gradients plus noise (every colour op has work to do).
fn synthetic(count: usize, side: usize) -> Sources {
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
    Sources {
        pixels,
        side,
        what: format!("synthetic {side}x{side}"),
    }
}

/// The first `count` CIFAR-10 training images, or `None` (with the reason)
/// when no CIFAR-10 can be found.
fn cifar(dir: Option<&PathBuf>, count: usize) -> std::result::Result<Sources, String> {
    let path = mocca_data::locate(
        dir.map(|p| p.as_path()),
        mocca_data::download::Dataset::Cifar10,
    )
    .map_err(|e| e.to_string())?;
    let ds = mocca_data::open(&path, mocca_data::Split::Train).map_err(|e| e.to_string())?;
    match ds.uniform_shape() {
        Some(s) if s.height == 32 && s.width == 32 && s.channels == 3 => {}
        other => {
            return Err(format!(
                "{}: not 32x32 RGB images ({other:?})",
                path.display()
            ))
        }
    }
    let count = count.min(ds.len());
    let mut pixels = Vec::with_capacity(count * 3072);
    for i in 0..count {
        pixels.extend_from_slice(ds.image(i).pixels);
    }
    Ok(Sources {
        pixels,
        side: 32,
        what: format!("CIFAR-10 train ({})", path.display()),
    })
}

pub fn run(opts: Options) -> Result<()> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = opts.threads {
        builder = builder.num_threads(n);
    }
    let pool = builder.build().context("building the rayon pool")?;

    let small = match cifar(opts.data.as_ref(), 1024) {
        Ok(s) => s,
        Err(why) => {
            eprintln!("note: no CIFAR-10 ({why}); using synthetic 32 px images");
            synthetic(1024, 32)
        }
    };
    let large = synthetic(128, 256);
    println!(
        "augmentation throughput, 2 views per source image, {} rayon threads, load average {}",
        pool.current_num_threads(),
        super::load_average()
    );
    println!(
        "32 px sources: {}; 256 px sources: {}\n",
        small.what, large.what
    );
    println!(
        "| preset | output | sources | batch | source images/s | ms/batch | target |\n\
         |---|---|---|---|---|---|---|"
    );
    let cases = [
        (Preset::SimClrCifar, &small, 20_000.0),
        (Preset::MocoV2Cifar, &small, 20_000.0),
        (Preset::SimClr, &large, 400.0),
        (Preset::MocoV2, &large, 400.0),
    ];
    for (preset, sources, target) in cases {
        let views = preset.two_views(preset.default_size())?;
        let images = sources.images()?;
        let ids: Vec<u64> = (0..images.len() as u64).collect();
        let mut times = Vec::with_capacity(opts.reps);
        pool.install(|| -> Result<()> {
            // Warm-up: grows every thread's scratch buffers.
            views.apply_batch(&images, &ids, 0, 0)?;
            for epoch in 1..=opts.reps as u64 {
                let t = Instant::now();
                let out = views.apply_batch(&images, &ids, 0, epoch)?;
                times.push(t.elapsed().as_secs_f64());
                drop(out);
            }
            Ok(())
        })?;
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let rate = images.len() as f64 / median;
        let size = preset.default_size();
        println!(
            "| {} | {size}x{size} | {}x{} | {} | {:.0} | {:.1} | {} {:.0} |",
            preset.name(),
            sources.side,
            sources.side,
            images.len(),
            rate,
            median * 1e3,
            if rate >= target { ">=" } else { "BELOW" },
            target
        );
    }
    Ok(())
}
