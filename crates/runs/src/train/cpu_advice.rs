//! What a CPU user is told before a GPU-sized recipe runs for days: that it is one, how long it
//! will take (measured on its first steps), and a command sized for the CPU. The recipe is never
//! changed: the user asked for it, and a run that silently shrank would not be the recipe's.

use crate::train::progress::fmt_duration;
use anyhow::Result;
use candle_core::Device;
use mocca_data::Images;
use mocca_methods::{Encoder, FeatureSource};
use mocca_recipes::config::{MethodName, Recipe, TrainConfig};
use mocca_recipes::setup;
use std::time::Instant;

/// Steps timed before the estimate (the first is left out: it warms the allocator and the
/// kernels' packing buffers).
pub const ESTIMATE_AFTER_STEPS: u64 = 6;

/// Whether `cfg` is sized for a GPU: the recipes' full-size networks (ResNet-18 at width 1
/// trains at about 10 images/s on two CPU cores, so one CIFAR-10 epoch takes over an hour).
pub fn gpu_sized(cfg: &TrainConfig) -> bool {
    cfg.model.width >= 0.5 || cfg.model.arch.is_vit()
}

/// A run of the same method and dataset sized for a 2-core CPU (docs/results.md): on CIFAR,
/// the learning-parity runs beside the colab's code for MoCo (about 10 minutes a core) and the
/// README's 30-minute runs for MoCo v2 and SimCLR. STL-10's epoch is 105,000 images at 96 px,
/// whose ImageNet stem leaves 24x24 maps (CIFAR's stem keeps 32x32): about two CIFAR epochs of
/// work, so it gets a third of the epochs.
pub fn cpu_sized_command(method: MethodName, recipe: Recipe) -> String {
    let epochs: usize = match method {
        MethodName::Moco => 10,
        MethodName::Mocov2 => 9,
        MethodName::Simclr => 6,
        // One view and one encoder pass per image: less work per epoch than MoCo's.
        MethodName::Instdisc => 10,
        // Both views back-propagated through the trained encoder, as SimCLR's; BYOL and
        // MoCo v3 add the momentum encoder's forward passes.
        MethodName::Byol | MethodName::Simsiam | MethodName::Mocov3 => 6,
    };
    let m = method.as_str();
    // InstDisc keeps lemniscate's batch 128 (its lr is not scaled with the batch).
    let sized = match method {
        MethodName::Instdisc => "--width 0.125",
        _ => "--width 0.125 --batch-size 256",
    };
    let cifar = format!(
        "cargo xtask train {m} {sized} --epochs {epochs} --knn-every 1 --knn-train-limit 10000 \
         --knn-test-limit 2000"
    );
    match recipe {
        Recipe::Cifar | Recipe::Paper | Recipe::PaperVit | Recipe::Imagenet100 => cifar,
        Recipe::Cifar100 => format!("{cifar} --recipe cifar100"),
        Recipe::Stl10 => format!(
            "cargo xtask train {m} --recipe stl10 {sized} --epochs {} --knn-every 1 \
             --knn-test-limit 2000",
            epochs.div_ceil(3)
        ),
    }
}

/// The note printed before a GPU-sized run starts on the CPU.
pub fn gpu_recipe_note(cfg: &TrainConfig, total_steps: u64) -> String {
    // A ViT has no width knob: even ViT-Tiny at 32 px is about twice ResNet-18's work per image.
    let (size, try_) = if cfg.model.arch.is_vit() {
        (
            format!("{:?}", cfg.model.arch),
            "the recipe's ResNet at a CPU size instead",
        )
    } else {
        (format!("width {}", cfg.model.width), "")
    };
    let sep = if try_.is_empty() { "" } else { ", " };
    format!(
        "note: the {} {} recipe is sized for a GPU ({size}, batch {}, {} epochs = {total_steps} \
         steps) and runs here on the CPU; an estimate of its time follows its first steps. It is \
         run as asked; for a run sized for this CPU try{sep}{try_}\n  {}",
        cfg.method.as_str(),
        cfg.recipe.as_str(),
        cfg.batch_size,
        cfg.epochs,
        cpu_sized_command(cfg.method, cfg.recipe)
    )
}

/// The estimate from the steps timed so far: training time left at the measured rate.
pub fn estimate_note(seconds_per_step: f64, steps_left: u64) -> String {
    format!(
        "estimate: {:.1} s a step on this CPU, about {} for the remaining {steps_left} steps \
         (kNN and checkpoints not included); Ctrl-C saves a checkpoint to resume from",
        seconds_per_step,
        fmt_long(seconds_per_step * steps_left as f64)
    )
}

/// The note before a kNN pass on the CPU, extrapolated from one timed batch.
pub fn knn_note(seconds_per_batch: f64, batch: usize, images: usize) -> String {
    let batches = images.div_ceil(batch.max(1));
    format!(
        "kNN monitor on {images} images: about {} on this CPU (fewer with --knn-train-limit / \
         --knn-test-limit, none before the first step with --set eval.knn_at_start=false)",
        fmt_long(seconds_per_batch * batches as f64)
    )
}

/// [`knn_note`] for the kNN monitor's first pass, from one batch of its training images
/// embedded and timed first: on a CPU the first kNN of a full-size run takes minutes, and the
/// user should know before waiting through it.
pub fn first_knn_note(
    cfg: &TrainConfig,
    encoder: &dyn Encoder,
    sources: &[FeatureSource],
    train: &Images,
    test: &Images,
    device: &Device,
) -> Result<String> {
    let b = cfg.run.eval_batch_size.max(1);
    let train_idx = setup::spread_subset(train.len(), cfg.run.knn_train_limit);
    let n_test = setup::spread_subset(test.len(), cfg.run.knn_test_limit).len();
    let first = &train_idx[..b.min(train_idx.len())];
    let pipeline = setup::eval_pipeline(cfg, train)?;
    let t = Instant::now();
    setup::embed_sources(encoder, sources, train, first, &pipeline, b, device)?;
    let per_batch = t.elapsed().as_secs_f64() * b as f64 / first.len().max(1) as f64;
    Ok(knn_note(per_batch, b, train_idx.len() + n_test))
}

/// Like [`fmt_duration`], with days spelt out (a GPU recipe on a CPU runs for days).
fn fmt_long(secs: f64) -> String {
    let days = secs / 86_400.0;
    if days >= 1.0 {
        format!("{days:.1} days")
    } else {
        fmt_duration(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mocca_recipes::config::{ConfigBuilder, Recipe};

    fn preset(method: MethodName) -> TrainConfig {
        ConfigBuilder::from_preset(method, Recipe::Cifar)
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    fn the_full_width_recipes_are_gpu_sized() {
        for m in [MethodName::Moco, MethodName::Mocov2, MethodName::Simclr] {
            assert!(gpu_sized(&preset(m)), "{}", m.as_str());
        }
    }

    #[test]
    fn a_vit_is_gpu_sized_and_the_note_says_the_suggestion_is_a_resnet() {
        let mut b = ConfigBuilder::from_preset(MethodName::Mocov3, Recipe::Cifar).unwrap();
        b.set("model.arch=\"vit-tiny\"").unwrap();
        let cfg = b.build().unwrap();
        assert!(gpu_sized(&cfg));
        let note = gpu_recipe_note(&cfg, 100);
        assert!(note.contains("(VitTiny, batch 256"), "{note}");
        assert!(note.contains("the recipe's ResNet at a CPU size"), "{note}");
        assert!(!note.contains("width 1"), "{note}");
    }

    #[test]
    fn a_width_eighth_run_is_cpu_sized() {
        let mut b = ConfigBuilder::from_preset(MethodName::Moco, Recipe::Cifar).unwrap();
        b.set("model.width=0.125").unwrap();
        assert!(!gpu_sized(&b.build().unwrap()));
    }

    #[test]
    fn the_note_names_the_recipe_and_a_cpu_sized_command_of_the_same_method() {
        let note = gpu_recipe_note(&preset(MethodName::Simclr), 78_000);
        assert!(
            note.contains("simclr cifar recipe is sized for a GPU"),
            "{note}"
        );
        assert!(note.contains("200 epochs = 78000 steps"), "{note}");
        assert!(
            note.contains("cargo xtask train simclr --width 0.125"),
            "{note}"
        );
    }

    #[test]
    fn the_cpu_sized_command_keeps_the_dataset() {
        assert_eq!(
            cpu_sized_command(MethodName::Mocov2, Recipe::Stl10),
            "cargo xtask train mocov2 --recipe stl10 --width 0.125 --batch-size 256 --epochs 3 \
             --knn-every 1 --knn-test-limit 2000"
        );
        assert!(
            cpu_sized_command(MethodName::Simclr, Recipe::Cifar100).ends_with(
                "--epochs 6 --knn-every 1 --knn-train-limit 10000 --knn-test-limit 2000 \
                        --recipe cifar100"
            )
        );
        assert!(!cpu_sized_command(MethodName::Moco, Recipe::Paper).contains("--recipe"));
    }

    #[test]
    fn estimates_of_days_are_spelt_in_days() {
        // The colab recipe at full width: 97 steps an epoch, 200 epochs, about 50 s a step.
        let note = estimate_note(50.0, 19_400);
        assert!(note.contains("about 11.2 days"), "{note}");
        assert_eq!(fmt_long(3_725.0), "1:02:05");
    }

    #[test]
    fn the_knn_note_extrapolates_one_batch_to_every_batch() {
        // 60,000 images in batches of 512: 118 batches of 3.4 s.
        let note = knn_note(3.4, 512, 60_000);
        assert!(note.contains("60000 images: about 6:41"), "{note}");
    }
}
