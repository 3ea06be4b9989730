//! `cargo xtask aug-preview`: the command line of [`mocca_runs::preview`].

use anyhow::Result;
use mocca_aug::Preset;
use mocca_runs::preview::PreviewOptions;
use std::path::PathBuf;

/// `cargo xtask aug-preview`: which pipeline, on which images, drawn how.
#[derive(clap::Args, Debug)]
#[command(about = "PNG grid of augmented views")]
pub struct Args {
    /// mocov1, mocov2, simclr, mocov1-cifar, mocov2-cifar, simclr-cifar, instdisc-cifar
    #[arg(long, value_name = "NAME", value_parser = |s: &str| s.parse::<Preset>())]
    preset: Preset,
    /// Dataset folder (CIFAR-10 binary, MNIST, image folder)
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// The PNG to write
    #[arg(long, value_name = "FILE.png")]
    out: PathBuf,
    /// Output side of the views [default: the preset's, 224 or 32]
    #[arg(long, value_name = "N", value_parser = crate::cli::count)]
    size: Option<usize>,
    /// Rows, spread over the dataset
    #[arg(long, value_name = "N", value_parser = crate::cli::count, default_value_t = 8)]
    images: usize,
    /// Views per image
    #[arg(long, value_name = "N", value_parser = crate::cli::count, default_value_t = 6)]
    views: usize,
    /// Augmentation seed
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// train or test
    #[arg(long, value_name = "train|test", value_parser = crate::cli::split, default_value = "train")]
    split: mocca_data::Split,
    /// Draw every pixel N x N times [default: 1, or 3 for views under 64 px]
    #[arg(long, value_name = "N", value_parser = crate::cli::count)]
    scale: Option<usize>,
}

pub fn run(a: Args) -> Result<()> {
    mocca_runs::preview::preview(&PreviewOptions {
        preset: a.preset,
        data: a.data,
        out: a.out,
        size: a.size,
        images: a.images,
        views: a.views,
        seed: a.seed,
        split: a.split,
        scale: a.scale,
    })
}
