//! `cargo xtask bench pipeline --folder DIR`: the whole input pipeline at 224 px, as a loader
//! runs it on an ImageNet-layout folder of JPEGs: each file read and decoded to RGB, then two
//! augmented views written into the batch's tensors. Each stage is timed alone (decode; augment
//! on images decoded beforehand) and then both together, in images per second, on the threads
//! asked for, so that figures per core compare with one Python process of lightly + PIL
//! (`scripts/pipeline_peer.py`, the same files).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use mocca_aug::{ImageU8, Preset};
use mocca_data::{image_folder, ImageShape, Split};
use rayon::prelude::*;

/// `cargo xtask bench pipeline`: which folder, how many images, in what batches.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Reads, decodes and augments the JPEGs of an image folder \
(DIR/train/<class>/*.JPEG as ImageNet, or DIR/<class>/*) into two 224 px views each (the mocov2 \
and simclr presets)."
)]
pub struct Options {
    /// The image folder
    #[arg(long, value_name = "DIR")]
    folder: PathBuf,
    /// Images timed, spread evenly over the sorted files
    #[arg(long, value_name = "N", value_parser = crate::cli::count, default_value_t = 256)]
    limit: usize,
    /// Images per batch
    #[arg(long, value_name = "N", value_parser = crate::cli::count, default_value_t = 64)]
    batch: usize,
    /// Timed passes per stage, median reported
    #[arg(long, value_name = "N", value_parser = crate::cli::count, default_value_t = 3)]
    reps: usize,
    /// Rayon threads [default: all cores]; 1 gives the figure per core
    #[arg(long, value_name = "N", value_parser = crate::cli::count)]
    threads: Option<usize>,
}

type Decoded = Vec<(ImageShape, Vec<u8>)>;

fn decode_all(files: &[PathBuf]) -> Result<Decoded> {
    files
        .par_iter()
        .map(|f| Ok(image_folder::decode(f)?))
        .collect()
}

fn views_of(decoded: &Decoded) -> Result<Vec<ImageU8<'_>>> {
    decoded
        .iter()
        .map(|(s, px)| Ok(ImageU8::new(px, s.height, s.width, 3)?))
        .collect()
}

/// Median of `reps` timed calls of `f` (after one untimed call that warms caches and buffers).
fn median_secs(reps: usize, mut f: impl FnMut(u64) -> Result<()>) -> Result<f64> {
    f(0)?;
    let mut times = Vec::with_capacity(reps);
    for rep in 1..=reps as u64 {
        let t = Instant::now();
        f(rep)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

pub fn run(opts: Options) -> Result<()> {
    let listing = image_folder::list(&opts.folder, Split::Train)
        .with_context(|| format!("reading the image folder {}", opts.folder.display()))?;
    let all = &listing.files;
    let n = opts.limit.min(all.len());
    let files: Vec<PathBuf> = (0..n).map(|i| all[i * all.len() / n].clone()).collect();
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(t) = opts.threads {
        builder = builder.num_threads(t);
    }
    let pool = builder.build().context("building the rayon pool")?;
    let threads = pool.current_num_threads();

    pool.install(|| -> Result<()> {
        let t = median_secs(opts.reps, |_| decode_all(&files).map(drop))?;
        let decoded = decode_all(&files)?;
        let mean = |side: fn(&ImageShape) -> usize| {
            decoded.iter().map(|(s, _)| side(s)).sum::<usize>() as f64 / n as f64
        };
        println!(
            "input pipeline at 224 px: {n} of the {} files of {}, {:.0} KB and {:.0}x{:.0} px on \
             average; {threads} rayon threads, batches of {}, load average {}",
            all.len(),
            opts.folder.display(),
            bytes as f64 / n as f64 / 1e3,
            mean(|s| s.width),
            mean(|s| s.height),
            opts.batch,
            super::load_average()
        );
        println!("\n| stage | preset | images/s | images/s per thread |\n|---|---|---|---|");
        let row = |stage: &str, preset: &str, secs: f64| {
            let rate = n as f64 / secs;
            println!(
                "| {stage} | {preset} | {rate:.1} | {:.1} |",
                rate / threads as f64
            );
        };
        row("read + decode (RGB)", "-", t);
        let images = views_of(&decoded)?;
        let ids: Vec<u64> = (0..n as u64).collect();
        for preset in [Preset::MocoV2, Preset::SimClr] {
            let views = preset.two_views(224)?;
            let t = median_secs(opts.reps, |epoch| {
                for (imgs, ids) in images.chunks(opts.batch).zip(ids.chunks(opts.batch)) {
                    drop(views.apply_batch(imgs, ids, 0, epoch)?);
                }
                Ok(())
            })?;
            row("augment, 2 views", preset.name(), t);
            let t = median_secs(opts.reps, |epoch| {
                for (chunk, ids) in files.chunks(opts.batch).zip(ids.chunks(opts.batch)) {
                    let decoded = decode_all(chunk)?;
                    drop(views.apply_batch(&views_of(&decoded)?, ids, 0, epoch)?);
                }
                Ok(())
            })?;
            row("read + decode + augment", preset.name(), t);
        }
        Ok(())
    })
}
