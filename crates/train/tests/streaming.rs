//! Training on files decoded per batch: the same run as in memory, files that do not decode
//! skipped and recorded, or (skipping off) a stop that keeps the steps done.

use candle_core::Device;
use image::{Rgb, RgbImage};
use mocca_aug::Preset;
use mocca_data::{image_folder, ImageFiles, Images, OnBadFile, Split};
use mocca_methods::Method;
use mocca_train::{read_checkpoint_meta, TrainerConfig};
use mocca_train::{read_records, Event, JsonlMetrics, Outcome, Record, TrainError, Trainer};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

mod common;
use common::simclr;

/// 24 images of 20x18 px in 3 class folders, written as PNG (`bad`: these are cut short).
fn folder(dir: &Path, bad: &[usize]) {
    for i in 0..24 {
        let path = dir.join(format!("c{}/{i:02}.png", i % 3));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let img = RgbImage::from_fn(20, 18, |x, y| {
            Rgb([(x * 12 + i * 7) as u8, (y * 13) as u8, (i * 10) as u8])
        });
        img.save(&path).unwrap();
        if bad.contains(&(i as usize)) {
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        }
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mocca-streaming-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 2 epochs of 3 steps of 8.
fn config(dir: &Path) -> TrainerConfig {
    std::fs::create_dir_all(dir).unwrap();
    let mut c = TrainerConfig::new(2, 8);
    c.data_seed = 5;
    c.aug_seed = 6;
    c.checkpoint.path = Some(dir.join("checkpoint.safetensors"));
    c
}

fn trainer(data: Images, cfg: TrainerConfig) -> Trainer {
    let views = Preset::SimClrCifar.two_views(16).unwrap();
    Trainer::new(simclr(0.05), Arc::new(data), views, cfg, &Device::Cpu).unwrap()
}

fn weights(m: &dyn Method) -> Vec<u32> {
    let state = m.state().unwrap();
    let mut keys: Vec<&String> = state.keys().collect();
    keys.sort();
    keys.iter()
        .filter(|k| state[**k].dtype() == candle_core::DType::F32)
        .flat_map(|k| {
            let v = state[*k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.into_iter().map(f32::to_bits).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_streamed_folder_trains_bit_identical_to_the_same_folder_in_memory() {
    let dir = tmpdir("same");
    folder(&dir.join("data"), &[]);
    let memory = Images::Memory(image_folder::open(dir.join("data"), Split::Train).unwrap());
    let files = Images::Files(ImageFiles::open(dir.join("data"), Split::Train).unwrap());
    let mut a = trainer(memory, config(&dir.join("a")));
    let mut b = trainer(files, config(&dir.join("b")));
    assert_eq!(a.run().unwrap(), Outcome::Finished { step: 6 });
    assert_eq!(b.run().unwrap(), Outcome::Finished { step: 6 });
    assert_eq!(weights(a.method()), weights(b.method()));
}

#[test]
fn a_file_that_does_not_decode_is_skipped_warned_once_and_recorded_each_time() {
    let dir = tmpdir("skip");
    folder(&dir.join("data"), &[4]);
    let files = Images::Files(ImageFiles::open(dir.join("data"), Split::Train).unwrap());
    let bad_index = (0..files.len())
        .find(|&i| matches!(&files, Images::Files(f) if f.path(i).ends_with("c1/04.png")))
        .unwrap();
    let metrics = dir.join("metrics.jsonl");
    let warnings = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&warnings);
    let mut t = trainer(files, config(&dir))
        .with_metrics(JsonlMetrics::open(&metrics).unwrap())
        .with_progress(move |e| {
            if let Event::SkippedFile { file, first, .. } = e {
                seen.borrow_mut().push((file.index, *first));
            }
        });
    assert_eq!(t.run().unwrap(), Outcome::Finished { step: 6 });
    let skipped: Vec<(usize, String)> = read_records(&metrics)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::SkippedFile { index, path, .. } => Some((index, path)),
            _ => None,
        })
        .collect();
    // 24 images in batches of 8: every file is in every epoch's batches.
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped
        .iter()
        .all(|(i, p)| *i == bad_index && p.ends_with("04.png")));
    assert_eq!(*warnings.borrow(), [(bad_index, true), (bad_index, false)]);
}

#[test]
fn with_skipping_off_a_bad_file_stops_the_run_keeping_a_checkpoint_of_the_steps_done() {
    let dir = tmpdir("strict");
    folder(&dir.join("data"), &[]);
    let whole_dir = dir.join("whole");
    let clean = || Images::Files(ImageFiles::open(dir.join("data"), Split::Train).unwrap());
    let mut whole = trainer(clean(), config(&whole_dir));
    whole.run().unwrap();

    // Steps 1-2 on clean files, then a file breaks that epoch 2 meets in its second batch
    // (step 5) and step 3, the end of epoch 1, does not.
    let mut cfg = config(&dir.join("run"));
    cfg.on_bad_file = OnBadFile::Fail;
    cfg.checkpoint.every_epochs = 1;
    let mut first = cfg.clone();
    first.stop_after_steps = Some(2);
    let ckpt = dir.join("run/checkpoint.safetensors");
    assert_eq!(
        trainer(clean(), first).run().unwrap(),
        Outcome::StepLimit { step: 2 }
    );
    let order = |e| mocca_data::shuffled_indices(24, 5, e);
    let victim = *order(1)[8..16]
        .iter()
        .find(|i| !order(0)[16..].contains(i))
        .unwrap();
    let path = match clean() {
        Images::Files(f) => f.path(victim),
        _ => unreachable!(),
    };
    let good = std::fs::read(&path).unwrap();
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let mut t = trainer(clean(), cfg.clone());
    t.resume(&ckpt).unwrap();
    let err = t.run().unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            TrainError::DataStopped {
                step: 4,
                last_checkpoint: Some(4),
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("resume"), "{msg}");
    assert_eq!(read_checkpoint_meta(&ckpt).unwrap().global_step, 4);

    // Mended, the run resumes from there and ends where the uninterrupted one did.
    std::fs::write(&path, &good).unwrap();
    let mut resumed = trainer(clean(), cfg);
    resumed.resume(&ckpt).unwrap();
    assert_eq!(resumed.run().unwrap(), Outcome::Finished { step: 6 });
    assert_eq!(weights(resumed.method()), weights(whole.method()));
}

#[test]
fn streamed_views_are_the_same_whatever_the_thread_count() {
    let dir = tmpdir("threads");
    folder(&dir.join("data"), &[]);
    let files = Images::Files(ImageFiles::open(dir.join("data"), Split::Train).unwrap());
    let views = Preset::SimClrCifar.two_views(16).unwrap();
    let indices = mocca_data::shuffled_indices(24, 9, 0);
    let draw = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            mocca_train::batch_views(&files, &indices[..16], &views, 11, 3, OnBadFile::Fail)
                .unwrap()
                .0
                .into_iter()
                .flat_map(|v| {
                    v.into_vec()
                        .into_iter()
                        .map(f32::to_bits)
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<u32>>()
        })
    };
    let one = draw(1);
    assert_eq!(one.len(), 2 * 16 * 3 * 16 * 16);
    assert_eq!(one, draw(3));
}
