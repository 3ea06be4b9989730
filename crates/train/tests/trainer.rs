//! The trainer's contract: checkpoint policy, stop requests, exact resume,
//! refusal of a checkpoint that cannot continue, metrics, divergence.

use candle_core::Device;
use mocca_aug::{MultiView, Preset};
use mocca_backbones::{ResNetConfig, Stem};
use mocca_data::{synthetic, Images, Split};
use mocca_methods::{BackboneEncoder, Method};
use mocca_train::{
    read_checkpoint_meta, read_records, Event, JsonlMetrics, Outcome, Record, TrainError, Trainer,
    TrainerConfig,
};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod common;
use common::simclr;

/// 40 images of 16 px: 5 steps of 8 per epoch.
fn images(per_class: usize) -> Arc<Images> {
    let c = synthetic::SyntheticConfig {
        images_per_class: per_class,
        height: 16,
        width: 16,
        ..Default::default()
    };
    Arc::new(synthetic::generate(&c, Split::Train).unwrap().into())
}

fn views() -> MultiView {
    Preset::SimClrCifar.two_views(16).unwrap()
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mocca-trainer-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(epochs: usize, dir: &std::path::Path) -> TrainerConfig {
    let mut c = TrainerConfig::new(epochs, 8);
    c.data_seed = 3;
    c.aug_seed = 4;
    c.log_every = 1;
    c.checkpoint.path = Some(dir.join("checkpoint.safetensors"));
    c.checkpoint.every_epochs = 1;
    c.checkpoint.run_config = "epochs = 2".into();
    c
}

fn weights(m: &dyn Method) -> Vec<u32> {
    let state = m.state().unwrap();
    let mut out = Vec::new();
    for t in state
        .values()
        .filter(|t| t.dtype() == candle_core::DType::F32)
    {
        out.extend(
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits()),
        );
    }
    out
}

fn trainer(cfg: TrainerConfig) -> Trainer {
    Trainer::new(simclr(0.05), images(4), views(), cfg, &Device::Cpu).unwrap()
}

#[test]
fn a_stop_request_checkpoints_that_step_and_the_resumed_run_ends_bit_identical() {
    let whole_dir = tmpdir("whole");
    let mut whole = trainer(config(2, &whole_dir));
    assert_eq!(whole.run().unwrap(), Outcome::Finished { step: 10 });

    let dir = tmpdir("stopped");
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    let mut first = trainer(config(2, &dir))
        .with_stop_flag(Arc::clone(&flag))
        .with_progress(move |e| {
            if let Event::Step(s) = e {
                if s.step == 3 {
                    set.store(true, Ordering::SeqCst);
                }
            }
        });
    assert_eq!(first.run().unwrap(), Outcome::StopRequested { step: 3 });
    let ckpt = dir.join("checkpoint.safetensors");
    let meta = read_checkpoint_meta(&ckpt).unwrap();
    assert_eq!(
        (
            meta.global_step,
            meta.epoch,
            meta.step_in_epoch,
            meta.finished
        ),
        (3, 0, 3, false)
    );
    assert_eq!(meta.run_config, "epochs = 2");

    let mut second = trainer(config(2, &dir));
    second.resume(&ckpt).unwrap();
    assert_eq!(second.run().unwrap(), Outcome::Finished { step: 10 });
    assert_eq!(weights(second.method()), weights(whole.method()));
    assert!(read_checkpoint_meta(&ckpt).unwrap().finished);
}

#[test]
fn a_damaged_newest_checkpoint_resumes_from_the_previous_one_and_still_ends_bit_identical() {
    let whole_dir = tmpdir("fallback-whole");
    let mut whole = trainer(config(2, &whole_dir));
    assert_eq!(whole.run().unwrap(), Outcome::Finished { step: 10 });

    // Checkpoints at steps 5 (epoch end) and 7 (the stop); two payload
    // bytes of the newest flipped.
    let dir = tmpdir("fallback");
    let mut cfg = config(2, &dir);
    cfg.stop_after_steps = Some(7);
    assert_eq!(trainer(cfg).run().unwrap(), Outcome::StepLimit { step: 7 });
    let ckpt = dir.join("checkpoint.safetensors");
    let previous = dir.join("checkpoint.1.safetensors");
    assert_eq!(read_checkpoint_meta(&previous).unwrap().global_step, 5);
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let mid = bytes.len() / 2 + 1000;
    bytes[mid] ^= 0x5a;
    bytes[mid + 7] ^= 0x01;
    std::fs::write(&ckpt, &bytes).unwrap();

    let mut second = trainer(config(2, &dir));
    let err = second.resume(&ckpt).unwrap_err().to_string();
    assert!(err.contains("is damaged"), "{err}");
    let resumed = second.resume_newest(&ckpt).unwrap();
    assert_eq!(resumed.meta.global_step, 5);
    assert_eq!(resumed.path, previous);
    assert_eq!(resumed.skipped.len(), 1);
    assert!(resumed.skipped[0]
        .reason
        .contains("does not match its checksum"));
    assert!(dir.join("checkpoint.safetensors.damaged").exists());
    assert_eq!(second.run().unwrap(), Outcome::Finished { step: 10 });
    assert_eq!(weights(second.method()), weights(whole.method()));
}

#[test]
fn checkpoints_come_every_n_steps_and_at_each_epoch_end() {
    let dir = tmpdir("every");
    let mut cfg = config(2, &dir);
    cfg.checkpoint.every_steps = 2;
    let saved = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&saved);
    let mut t = trainer(cfg).with_progress(move |e| {
        if let Event::Checkpoint { step, .. } = e {
            seen.borrow_mut().push(*step);
        }
    });
    t.run().unwrap();
    // Steps 2 and 4 inside epoch 1, its end (5), 6 and 8, the end (10).
    assert_eq!(*saved.borrow(), vec![2, 4, 5, 6, 8, 10]);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn stop_after_steps_checkpoints_and_a_finished_run_has_nothing_to_do() {
    let dir = tmpdir("limit");
    let mut cfg = config(1, &dir);
    cfg.stop_after_steps = Some(2);
    assert_eq!(trainer(cfg).run().unwrap(), Outcome::StepLimit { step: 2 });
    let ckpt = dir.join("checkpoint.safetensors");
    assert_eq!(read_checkpoint_meta(&ckpt).unwrap().global_step, 2);

    let mut rest = trainer(config(1, &dir));
    rest.resume(&ckpt).unwrap();
    assert_eq!(rest.run().unwrap(), Outcome::Finished { step: 5 });
    let mut again = trainer(config(1, &dir));
    again.resume(&ckpt).unwrap();
    assert_eq!(again.run().unwrap(), Outcome::NothingToDo { step: 5 });
}

#[test]
fn a_checkpoint_of_another_dataset_size_is_refused_and_changes_nothing() {
    let dir = tmpdir("other-data");
    trainer(config(1, &dir)).run().unwrap();
    let mut bigger = Trainer::new(
        simclr(0.05),
        images(8),
        views(),
        config(1, &dir),
        &Device::Cpu,
    )
    .unwrap();
    let before = weights(bigger.method());
    let err = bigger
        .resume(&dir.join("checkpoint.safetensors"))
        .unwrap_err();
    assert!(matches!(err, TrainError::Resume(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("was taken on 40 training images (5 steps per epoch)")
            && msg.contains("has 80 (10 steps per epoch)"),
        "{msg}"
    );
    assert_eq!(weights(bigger.method()), before);
    assert_eq!(bigger.method().steps_done(), 0);
}

#[test]
fn metrics_go_to_every_sink_and_a_resumed_jsonl_drops_what_comes_after_the_checkpoint() {
    let dir = tmpdir("metrics");
    let file = dir.join("metrics.jsonl");
    let mut cfg = config(2, &dir);
    cfg.stop_after_steps = Some(7);
    let kinds = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&kinds);
    trainer(cfg)
        .with_metrics(JsonlMetrics::open(&file).unwrap())
        .with_metrics(move |r: &Record| {
            seen.borrow_mut().push(match r {
                Record::Step { step, .. } => format!("step {step}"),
                Record::Epoch { step, .. } => format!("epoch {step}"),
                Record::Knn { step, .. } => format!("knn {step}"),
                Record::SkippedFile { step, .. } => format!("skipped {step}"),
            })
        })
        .run()
        .unwrap();
    let expected: Vec<String> = (1..=7)
        .flat_map(|s| {
            let mut v = vec![format!("step {s}")];
            if s == 5 {
                v.push("epoch 5".into());
            }
            v
        })
        .collect();
    assert_eq!(*kinds.borrow(), expected);
    assert_eq!(read_records(&file).unwrap().len(), 8);

    // Resumed from the epoch-1 checkpoint (step 5): steps 6 and 7 are dropped.
    let resumed = JsonlMetrics::resume(&file, 5).unwrap();
    let kept = read_records(&file).unwrap();
    assert_eq!(kept.len(), 6);
    assert!(kept.iter().all(|r| r.step() <= 5));
    assert!(resumed.elapsed_s() > 0.0);
}

#[test]
fn a_diverging_loss_stops_before_the_update_and_names_the_intact_checkpoint() {
    let dir = tmpdir("nan");
    let mut cfg = config(2, &dir);
    cfg.checkpoint.every_steps = 1;
    let mut t = Trainer::new(simclr(1e38), images(4), views(), cfg, &Device::Cpu).unwrap();
    let err = t.run().unwrap_err();
    let TrainError::Diverged {
        step,
        last_checkpoint,
        ..
    } = err
    else {
        panic!("expected divergence, got {err}");
    };
    assert_eq!(last_checkpoint, Some(step - 1));
    assert_eq!(t.method().steps_done(), step - 1);
    let meta = read_checkpoint_meta(&dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!(meta.global_step, step - 1);
}

#[test]
fn the_collapse_monitor_reads_every_n_steps_into_step_records_and_changes_no_weight() {
    let dir = tmpdir("collapse");
    let mut cfg = config(2, &dir);
    cfg.log_every = 4;
    cfg.collapse_every = 3;
    let path = dir.join("metrics.jsonl");
    let events = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&events);
    let mut t = trainer(cfg.clone())
        .with_metrics(JsonlMetrics::open(&path).unwrap())
        .with_progress(move |e| match e {
            Event::Collapse { step, metrics } => seen
                .borrow_mut()
                .push(format!("collapse {step} {}", metrics.batch)),
            Event::Step(s) => seen.borrow_mut().push(format!("step {}", s.step)),
            _ => {}
        });
    assert_eq!(t.run().unwrap(), Outcome::Finished { step: 10 });
    let ev = events.borrow();
    // The reading comes just before its step's Event::Step.
    let at = |s: &str| ev.iter().position(|e| e == s).unwrap();
    for step in [3, 6, 9] {
        assert_eq!(
            at(&format!("collapse {step} 8")) + 1,
            at(&format!("step {step}"))
        );
    }
    assert_eq!(ev.iter().filter(|e| e.starts_with("collapse")).count(), 3);
    // A step record at every log_every step, every collapse_every step and the last.
    let steps: Vec<(u64, bool)> = read_records(&path)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Step { step, collapse, .. } => {
                if let Some(c) = &collapse {
                    assert_eq!((c.dim, c.batch), (128, 8));
                    assert!(c.std_sqrt_d > 0.0 && c.std_sqrt_d <= 1.5, "{c:?}");
                    assert!(c.rank_me >= 1.0 && c.rank_me <= 8.0, "{c:?}");
                    assert!(
                        c.alignment.is_some_and(|a| (0.0..=4.0).contains(&a)),
                        "{c:?}"
                    );
                    assert!((-8.0..=0.0).contains(&c.uniformity), "{c:?}");
                }
                Some((step, collapse.is_some()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            (3, true),
            (4, false),
            (6, true),
            (8, false),
            (9, true),
            (10, false)
        ]
    );
    // Off, the same run trains the same weights.
    let off_dir = tmpdir("collapse-off");
    let mut off_cfg = config(2, &off_dir);
    off_cfg.collapse_every = 0;
    let off_path = off_dir.join("metrics.jsonl");
    let mut off = trainer(off_cfg).with_metrics(JsonlMetrics::open(&off_path).unwrap());
    off.run().unwrap();
    assert_eq!(weights(off.method()), weights(t.method()));
    assert!(read_records(&off_path).unwrap().iter().all(|r| !matches!(
        r,
        Record::Step {
            collapse: Some(_),
            ..
        }
    )));
}

/// A width-0.125 CIFAR ResNet-18 with MoCo v1's linear head (init seed 7).
fn moco_v1_encoder() -> mocca_methods::Result<BackboneEncoder> {
    use mocca_backbones::MoCoProjectionHead;
    let backbone = ResNetConfig {
        stem: Stem::Cifar,
        width: 0.125,
        ..ResNetConfig::resnet18()
    };
    let head = MoCoProjectionHead::v1(backbone.feature_dim());
    BackboneEncoder::new(&backbone, head.into(), 7, &Device::Cpu)
}

/// InstDisc on the 40 test images (5 steps of 8 an epoch), one view.
fn instdisc_trainer(cfg: TrainerConfig) -> Trainer {
    use mocca_methods::{InstDisc, InstDiscConfig};
    let dev = Device::Cpu;
    let encoder = moco_v1_encoder().unwrap();
    let config = InstDiscConfig::cifar10_lemniscate(40, 5, 2);
    let method = InstDisc::new(config, encoder, &dev).unwrap();
    let one_view = MultiView::repeat(Preset::InstDiscCifar.compose(16).unwrap(), 1).unwrap();
    Trainer::new(Box::new(method), images(4), one_view, cfg, &Device::Cpu).unwrap()
}

/// A reading of the collapse monitor by step.
type Readings<T> = Vec<(u64, T)>;

/// The collapse monitor's readings of each step (monitor every step, 2
/// epochs of 5 steps), picked out by `pick`: of one whole run, then of a run
/// stopped after step 7 and resumed from its checkpoint.
fn monitored_whole_and_resumed<T>(
    tag: &str,
    build: fn(TrainerConfig) -> Trainer,
    pick: fn(mocca_train::Collapse) -> Option<T>,
) -> (Readings<T>, Readings<T>) {
    let readings = |path: &std::path::Path| -> Readings<T> {
        read_records(path)
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                Record::Step {
                    step,
                    collapse: Some(c),
                    ..
                } => pick(c).map(|x| (step, x)),
                _ => None,
            })
            .collect()
    };
    let monitored = |dir: &std::path::Path, stop: Option<u64>| {
        let mut cfg = config(2, dir);
        cfg.collapse_every = 1;
        cfg.stop_after_steps = stop;
        build(cfg).with_metrics(JsonlMetrics::open(&dir.join("metrics.jsonl")).unwrap())
    };
    let whole_dir = tmpdir(&format!("{tag}-whole"));
    assert_eq!(
        monitored(&whole_dir, None).run().unwrap(),
        Outcome::Finished { step: 10 }
    );

    let dir = tmpdir(&format!("{tag}-resumed"));
    let mut first = monitored(&dir, Some(7));
    assert_eq!(first.run().unwrap(), Outcome::StepLimit { step: 7 });
    drop(first);
    let mut second = monitored(&dir, None);
    second.resume(&dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!(second.run().unwrap(), Outcome::Finished { step: 10 });
    (
        readings(&whole_dir.join("metrics.jsonl")),
        readings(&dir.join("metrics.jsonl")),
    )
}

#[test]
fn a_memory_bank_gets_its_staleness_by_rows_written_this_epoch_and_resumes_to_the_same_readings() {
    let (readings, resumed) = monitored_whole_and_resumed("bank", instdisc_trainer, |c| c.bank);
    assert_eq!(readings.len(), 10);
    for (step, b) in &readings {
        // Step s of an epoch sees the s - 1 earlier batches as written; its
        // own 8 rows are in neither set.
        let earlier = 8 * ((step - 1) % 5) as usize;
        assert_eq!(
            (b.written_rows, b.unwritten_rows),
            (earlier, 32 - earlier),
            "step {step}"
        );
        assert_eq!(b.written.is_some(), earlier > 0, "step {step}");
        assert!((-1.0..=1.0).contains(&b.own), "step {step}: {b:?}");
    }
    // Stopped mid-epoch and resumed: the rows written before the stop are
    // rebuilt from the data order, so every reading after it is the same.
    assert_eq!(resumed, readings);
}

/// MoCo (the colab's settings) with a queue of 24 keys on the 40 test images.
fn moco_queue_trainer(cfg: TrainerConfig) -> Trainer {
    use mocca_methods::{MoCo, MoCoConfig, NegativeSource};
    let mut config = MoCoConfig::cifar10_colab(8, 5, 2);
    config.negatives = NegativeSource::queue(24);
    let method = MoCo::new(config, moco_v1_encoder, &Device::Cpu).unwrap();
    Trainer::new(Box::new(method), images(4), views(), cfg, &Device::Cpu).unwrap()
}

#[test]
fn a_momentum_queue_gets_its_keys_cosine_by_age_as_it_fills_and_resumes_to_the_same_readings() {
    let (readings, resumed) = monitored_whole_and_resumed("queue", moco_queue_trainer, |c| c.queue);
    assert_eq!(readings.len(), 10);
    for (step, q) in &readings {
        // A queue of 24 keys, 8 a step: step s has written min(s, 3) steps of
        // keys; the rest of the 24 rows still hold the random start.
        let ages = (*step as usize).min(3);
        assert_eq!(q.by_age.len(), ages, "step {step}");
        assert_eq!(q.initial.is_some(), ages < 3, "step {step}");
        assert!((-1.0..=1.0).contains(&q.own), "step {step}: {q:?}");
        // A query is closer to its own key than to the keys of other images.
        assert!(q.own > q.by_age[0], "step {step}: {q:?}");
    }
    assert_eq!(resumed, readings);
}

/// The collapse monitor's cost against a training step, at the CPU settings
/// of docs/results.md (MoCo v2, ResNet-18 width 0.125, CIFAR stem, split-BN 8,
/// batch 256 at 32 px, queue 4096). A measurement, not a check:
/// `cargo test --release -p mocca-train --test trainer -- --ignored --nocapture collapse_cost`.
#[test]
#[ignore]
fn collapse_cost() {
    use mocca_backbones::MoCoProjectionHead;
    use mocca_methods::staleness::queue_cosines;
    use mocca_methods::{MoCo, MoCoConfig, NegativeSource};
    use std::time::Instant;
    let dev = Device::Cpu;
    let (batch, steps) = (256usize, 5usize);
    let backbone = ResNetConfig {
        stem: Stem::Cifar,
        width: 0.125,
        bn_splits: 8,
        ..ResNetConfig::resnet18()
    };
    let mut head: mocca_backbones::ProjectionHeadConfig =
        MoCoProjectionHead::v2(backbone.feature_dim()).into();
    head.bn_splits = 8;
    let build = || BackboneEncoder::new(&backbone, head.clone(), 0, &dev);
    let mut config = MoCoConfig::cifar10_colab(batch, 195, 1);
    config.negatives = NegativeSource::queue(4096);
    let mut moco = MoCo::new(config, build, &dev).unwrap();
    let views: Vec<candle_core::Tensor> = (0..2)
        .map(|_| candle_core::Tensor::randn(0f32, 1., (batch, 3, 32, 32), &dev).unwrap())
        .collect();
    moco.step(&views, &[]).unwrap(); // warm-up
                                     // Interleaved, so a busy machine slows both alike; min and median of each.
    let (mut step_s, mut monitor_s) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        let t = Instant::now();
        moco.step(&views, &[]).unwrap();
        step_s.push(t.elapsed().as_secs_f64());
        let e = moco.last_embeddings().unwrap();
        for _ in 0..10 {
            let t = Instant::now();
            std::hint::black_box(e.metrics().unwrap());
            monitor_s.push(t.elapsed().as_secs_f64());
        }
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2])
    };
    let mut queue_s = Vec::new();
    for _ in 0..10 {
        let e = moco.last_embeddings().unwrap();
        let t = Instant::now();
        let queue = moco.key_queue().unwrap();
        std::hint::black_box(queue_cosines(&e.view0, queue).unwrap());
        queue_s.push(t.elapsed().as_secs_f64());
    }
    let (_, queue_med) = stats(&mut queue_s);
    let ((step_min, step_med), (mon_min, mon_med)) = (stats(&mut step_s), stats(&mut monitor_s));
    let e = moco.last_embeddings().unwrap();
    println!(
        "collapse monitor on [{batch}, {}] x 2 views: min {:.2} ms, median {:.2} ms ({} readings); \
         training step: min {:.0} ms, median {:.0} ms ({steps} steps); ratio (medians) {:.2} %, \
         (mins) {:.2} %; every 10 steps: {:.3} % of training time; last reading: {}",
        e.view0.dim(1).unwrap(),
        mon_min * 1e3,
        mon_med * 1e3,
        monitor_s.len(),
        step_min * 1e3,
        step_med * 1e3,
        100.0 * mon_med / step_med,
        100.0 * mon_min / step_min,
        100.0 * mon_med / step_med / 10.0,
        e.metrics().unwrap()
    );
    println!(
        "queue staleness (K 4096): median {:.2} ms, {:.2} % of a step",
        queue_med * 1e3,
        100.0 * queue_med / step_med
    );
}
