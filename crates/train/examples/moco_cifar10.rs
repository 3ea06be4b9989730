//! MoCo on CIFAR-10 with the MoCo CIFAR-10 colab's settings, from library crates only:
//! found or downloaded data, a checkpoint each epoch, kNN every epoch, metrics.jsonl, and
//! exact resume when run again. (`cargo xtask train moco` is the same run with the colab's
//! weight initialisation too, and a config file.)
//!
//! ```text
//! cargo run --release -p mocca-train --example moco_cifar10 -- [RUN_DIR] [EPOCHS] [WIDTH]
//! ```
//!
//! Defaults: `runs/example-moco`, 200 epochs, width 1 (the colab's ResNet-18; width 0.25
//! trains about 10x faster on a CPU). Data: `$MOCCA_DATA`, `./data` or the per-user cache,
//! else downloaded there (170 MB). Stop it at any time; the same command continues it.

use candle_core::Device;
use mocca_aug::{Compose, Normalize, Preset};
use mocca_backbones::{MoCoProjectionHead, ResNetConfig, Stem};
use mocca_data::download::{self, Dataset, FetchOptions};
use mocca_data::Split;
use mocca_methods::{Method, MoCo, MoCoConfig, ResNetEncoder};
use mocca_train::{JsonlMetrics, KnnMonitor, Outcome, Trainer, TrainerConfig};
use std::path::PathBuf;
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let run = PathBuf::from(args.next().unwrap_or_else(|| "runs/example-moco".into()));
    let epochs: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let width: f64 = args.next().map_or(Ok(1.0), |a| a.parse())?;

    let data = match mocca_data::locate(None, Dataset::Cifar10) {
        Ok(dir) => dir,
        Err(_) => {
            let root =
                download::default_root().ok_or("no $HOME or $XDG_CACHE_HOME to download into")?;
            download::fetch(Dataset::Cifar10, &root, &mut FetchOptions::default())?
        }
    };
    let train = Arc::new(mocca_data::open(&data, Split::Train)?);
    let test = Arc::new(mocca_data::open(&data, Split::Test)?);

    let (batch, dev) = (512, Device::Cpu);
    let steps_per_epoch = (train.len() / batch) as u64;
    // The colab's ResNet-18: CIFAR stem, SplitBatchNorm over 8 groups (single-device
    // shuffle-BN), a linear 128-d head; queue 4096, m 0.99, t 0.1, SGD 0.06 cosine.
    let backbone = ResNetConfig {
        stem: Stem::Cifar,
        width,
        bn_splits: 8,
        ..ResNetConfig::resnet18()
    };
    let mut head: mocca_backbones::ProjectionHeadConfig =
        MoCoProjectionHead::v1(backbone.feature_dim()).into();
    head.bn_splits = 8;
    let build = || ResNetEncoder::new(&backbone, head.clone(), 0, &dev);
    let config = MoCoConfig::cifar10_colab(batch, steps_per_epoch, epochs as u64);
    let method: Box<dyn Method> = Box::new(MoCo::new(config, build, &dev)?);

    let mut cfg = TrainerConfig::new(epochs, batch);
    let checkpoint = run.join("checkpoint.safetensors");
    cfg.checkpoint.path = Some(checkpoint.clone());
    cfg.checkpoint.every_epochs = 1;
    let source = method.default_eval_source();
    let normalize = Compose::new(vec![Normalize::cifar10_colab().into()])?;
    let monitor = KnnMonitor::new(Arc::clone(&train), test, source, normalize);
    let views = Preset::MocoV2Cifar.two_views(32)?;
    let mut trainer = Trainer::new(method, train, views, cfg, &dev)?;

    std::fs::create_dir_all(&run)?;
    let metrics_file = run.join("metrics.jsonl");
    let metrics = if checkpoint.exists() {
        let step = trainer.resume(&checkpoint)?.global_step;
        eprintln!("resuming from step {step}");
        JsonlMetrics::resume(&metrics_file, step)?
    } else {
        JsonlMetrics::open(&metrics_file)?
    };
    let elapsed = metrics.elapsed_s();
    let mut trainer = trainer
        .with_knn(monitor, 1, false)
        .with_metrics(metrics)
        .with_elapsed_before(elapsed)
        .with_progress(|event| match event {
            mocca_train::Event::EpochEnd {
                epoch,
                loss_mean,
                seconds,
                ..
            } => {
                eprintln!("epoch {epoch}: loss {loss_mean:.4} ({seconds:.0} s)")
            }
            mocca_train::Event::Knn { report, .. } => eprintln!("  {}", report.results[0]),
            _ => {}
        });
    match trainer.run()? {
        Outcome::Finished { step } => {
            eprintln!("done after {step} steps: {}", checkpoint.display())
        }
        other => eprintln!("{other:?}"),
    }
    Ok(())
}
