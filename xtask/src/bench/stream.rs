//! `cargo xtask bench stream --folder DIR`: the trainer's own streaming input path on an image
//! folder at 224 px (list the files, then per batch: read and decode in parallel, two views
//! drawn straight into the batch's buffers, a loader thread two batches ahead), in images per
//! second, with the process's peak resident memory; `scripts/pipeline_peer.py --dataloader`
//! runs PyTorch's DataLoader with torchvision's loader and lightly's transform on the same
//! files and worker count.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mocca_aug::Preset;
use mocca_data::{
    open_images, BatchSampler, Loader, OnBadFile, OpenOptions, Order, Split, Streaming,
};

/// `cargo xtask bench stream`: which folder, how many batches, how many threads.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Streams an image folder (DIR/<class>/*, DIR/train/<class>/* or flat \
DIR/*) through the trainer's loader: each batch's files read and decoded in parallel and two \
224 px views drawn, two batches prefetched. Prints images/s over the timed batches and the peak \
resident memory (VmHWM)."
)]
pub struct Options {
    /// The image folder
    #[arg(long, value_name = "DIR")]
    folder: PathBuf,
    /// Batches timed, after two untimed ones
    #[arg(long, value_name = "N", value_parser = crate::cli::count, default_value_t = 16)]
    batches: usize,
    /// Images per batch
    #[arg(long, value_name = "N", value_parser = crate::cli::count, default_value_t = 64)]
    batch: usize,
    /// Rayon threads [default: all cores]
    #[arg(long, value_name = "N", value_parser = crate::cli::count)]
    threads: Option<usize>,
    /// Augmentation preset: mocov2 or simclr
    #[arg(long, default_value = "mocov2")]
    preset: String,
}

/// A field of /proc/self/status in MiB (`VmHWM`: peak resident set; `VmRSS`: now).
fn status_mib(field: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn mib(v: Option<f64>) -> String {
    v.map_or("unknown".into(), |m| format!("{m:.0} MiB"))
}

pub fn run(o: Options) -> Result<()> {
    let preset = match o.preset.as_str() {
        "mocov2" => Preset::MocoV2,
        "simclr" => Preset::SimClr,
        other => bail!("--preset {other}: expected mocov2 or simclr"),
    };
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(t) = o.threads {
        pool = pool.num_threads(t);
    }
    pool.build_global().context("building the rayon pool")?;
    let threads = rayon::current_num_threads();

    let t = Instant::now();
    let streamed = OpenOptions {
        streaming: Streaming::Always,
        ..Default::default()
    };
    let data = open_images(&o.folder, Split::Train, &streamed)
        .with_context(|| format!("listing {}", o.folder.display()))?;
    let listed_s = t.elapsed().as_secs_f64();
    let after_listing = status_mib("VmRSS:");
    let data = Arc::new(data);
    let views = preset.two_views(224)?;
    let warmup = 2;
    let sampler = BatchSampler::new(data.len(), o.batch, Order::Shuffled { seed: 0 }, true)?;
    let want = warmup + o.batches;
    let per_epoch = sampler.batches_per_epoch();
    let loader_data = Arc::clone(&data);
    let loader = Loader::new(
        sampler.iter_from(0, 0).take(want),
        2,
        move |b: &mocca_data::Batch| {
            mocca_train::batch_views(
                &loader_data,
                &b.indices,
                &views,
                0,
                b.epoch,
                OnBadFile::Skip,
            )
            .map_err(anyhow::Error::from)
        },
    )?;
    let mut timed_from = None;
    let mut skipped = 0;
    for (i, item) in loader.enumerate() {
        let (views, bad) = item?.data;
        skipped += bad.len();
        drop(views);
        if i + 1 == warmup {
            timed_from = Some(Instant::now());
        }
    }
    let secs = timed_from
        .context("no batch was timed")?
        .elapsed()
        .as_secs_f64();
    let rate = (o.batches * o.batch) as f64 / secs;
    println!(
        "streaming input at 224 px ({}): {} files of {}, listed in {listed_s:.2}s; {threads} rayon \
         threads, batches of {}, {} batches timed after {warmup} ({} per epoch), load average {}",
        preset.name(),
        data.len(),
        o.folder.display(),
        o.batch,
        o.batches,
        per_epoch,
        super::load_average()
    );
    println!(
        "images/s {rate:.1} ({:.1} per thread); resident memory after listing {}, peak {}{}",
        rate / threads as f64,
        mib(after_listing),
        mib(status_mib("VmHWM:")),
        if skipped > 0 {
            format!("; {skipped} files skipped (did not decode)")
        } else {
            String::new()
        }
    );
    Ok(())
}
