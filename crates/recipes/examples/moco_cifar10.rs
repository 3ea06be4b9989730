//! MoCo on CIFAR-10 with the MoCo CIFAR-10 colab's recipe, from library crates only: the
//! recipe named and changed key by key, the run built by `mocca_recipes::build_trainer` (the
//! code `cargo xtask train moco` runs, so the two write bit-identical checkpoints; tested in
//! `tests/recipes_example.rs`), found or downloaded data, a checkpoint each epoch, kNN every
//! epoch, metrics.jsonl, one writer per folder, and exact resume when run again.
//!
//! ```text
//! cargo run --release -p mocca-recipes --example moco_cifar10 -- [RUN_DIR] [KEY=VALUE ...]
//! cargo run --release -p mocca-recipes --example moco_cifar10 -- runs/w025 model.width=0.25 epochs=20
//! ```
//!
//! Defaults: `runs/example-moco`, the colab's 200 epochs at width 1 (its ResNet-18; width 0.25
//! trains about 10x faster on a CPU). Data: `data.path=DIR`, `$MOCCA_DATA`, `./data` or the
//! per-user cache, else downloaded there (170 MB). Stop it at any time; the same command
//! continues it.

use candle_core::Device;
use mocca_data::download::{self, Dataset, FetchOptions};
use mocca_recipes::{build_trainer, ConfigBuilder, MethodName, Recipe, RunData};
use mocca_train::{Event, JsonlMetrics, Outcome, RunLock};
use std::error::Error;
use std::path::{Path, PathBuf};

#[allow(dead_code)] // the test includes this file and calls `train`
fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let run = PathBuf::from(args.next().unwrap_or_else(|| "runs/example-moco".into()));
    let sets: Vec<String> = args.collect();
    let step = train(&run, &sets)?;
    eprintln!(
        "at step {step}: {}",
        run.join("checkpoint.safetensors").display()
    );
    Ok(())
}

/// Trains (or continues) the colab recipe with `sets` applied in run folder
/// `run`; returns the step it stopped at.
pub fn train(run: &Path, sets: &[String]) -> Result<u64, Box<dyn Error>> {
    let mut recipe = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Cifar)?;
    for s in sets {
        recipe.set(s)?;
    }
    let mut cfg = recipe.build()?;

    let explicit = cfg.data.path.as_deref().map(Path::new);
    let data_dir = match mocca_data::locate(explicit, Dataset::Cifar10) {
        Ok(dir) => dir,
        Err(_) if explicit.is_none() => {
            let root =
                download::default_root().ok_or("no $HOME or $XDG_CACHE_HOME to download into")?;
            download::fetch(Dataset::Cifar10, &root, &mut FetchOptions::default())?
        }
        Err(e) => return Err(e.into()),
    };
    // Saved in each checkpoint as the CLI saves it: the data actually read.
    cfg.data.path = Some(std::fs::canonicalize(&data_dir)?.display().to_string());
    let data = RunData::open(&cfg, &data_dir)?;

    let checkpoint = run.join("checkpoint.safetensors");
    let trainer = build_trainer(&cfg, &data, Some(checkpoint.clone()), &Device::Cpu)?;
    std::fs::create_dir_all(run)?;
    let _lock = RunLock::acquire(run)?;
    let mut trainer = trainer;
    let metrics_file = run.join("metrics.jsonl");
    let previous = mocca_train::checkpoint::previous_checkpoint_path(&checkpoint, 1);
    let metrics = if checkpoint.exists() || previous.exists() {
        let resumed = trainer.resume_newest(&checkpoint)?;
        for s in &resumed.skipped {
            eprintln!("not resuming from {}: {}", s.path.display(), s.reason);
        }
        eprintln!("resuming from step {}", resumed.meta.global_step);
        JsonlMetrics::resume(&metrics_file, resumed.meta.global_step)?
    } else {
        JsonlMetrics::open(&metrics_file)?
    };
    let elapsed = metrics.elapsed_s();
    let mut trainer = trainer
        .with_metrics(metrics)
        .with_elapsed_before(elapsed)
        .with_progress(|event| match event {
            Event::EpochEnd {
                epoch,
                loss_mean,
                seconds,
                ..
            } => eprintln!("epoch {epoch}: loss {loss_mean:.4} ({seconds:.0} s)"),
            Event::Knn { report, .. } => eprintln!("  {}", report.results[0]),
            _ => {}
        });
    Ok(match trainer.run()? {
        Outcome::Finished { step }
        | Outcome::StepLimit { step }
        | Outcome::StopRequested { step }
        | Outcome::NothingToDo { step } => step,
    })
}
