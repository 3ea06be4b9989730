//! Workspace-level end-to-end tests: the trainer CLI (`cargo xtask train |
//! eval | plot | export`) run as a child process on data the tests generate,
//! so the whole path is covered: argument parsing, data reading, training,
//! checkpoints, resume after SIGKILL / Ctrl-C, and the error messages of bad
//! inputs.
//!
//! This library holds the fixtures; the tests are `cli_*.rs` beside it. The
//! CLI under test is this package's `mocca-cli` binary (a shim over
//! `mocca_xtask::cli_main`), whose path the tests get from
//! `env!("CARGO_BIN_EXE_mocca-cli")`.

use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A class-dependent pattern (colour and stripe direction) plus
/// deterministic noise, so kNN on it can tell the classes apart.
pub fn pattern_image(class: usize, index: usize, size: u32) -> image::RgbImage {
    let base = [
        [200u8, 40, 40],
        [40, 180, 60],
        [50, 70, 210],
        [220, 200, 40],
        [150, 60, 170],
        [40, 190, 190],
    ];
    let c = base[class % base.len()];
    let mut state = (class as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (index as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    image::RgbImage::from_fn(size, size, |x, y| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let noise = (state % 61) as i32 - 30;
        let stripe = if class.is_multiple_of(2) { x } else { y };
        let k = if (stripe / 2) % 2 == 0 { 1.0 } else { 0.55 };
        let px = |v: u8| ((v as f32 * k) as i32 + noise).clamp(0, 255) as u8;
        image::Rgb([px(c[0]), px(c[1]), px(c[2])])
    })
}

/// `root/{train,test}/class_k/NNN.png`: an image folder mocca-data reads.
pub fn write_image_folder(
    root: &Path,
    classes: usize,
    train_per_class: usize,
    test_per_class: usize,
    size: u32,
) {
    for (split, n) in [("train", train_per_class), ("test", test_per_class)] {
        for class in 0..classes {
            let dir = root.join(split).join(format!("class_{class}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let index = if split == "train" { i } else { 10_000 + i };
                pattern_image(class, index, size)
                    .save(dir.join(format!("{i:03}.png")))
                    .unwrap();
            }
        }
    }
}

/// `root/stl10_binary/` in STL-10's release layout (mocca-data's writer): `classes` x
/// `train_per_class` labeled training images, `classes` x `test_per_class` test images and
/// `unlabeled` unlabeled ones, all 96 px patterns as [`pattern_image`] draws them.
pub fn write_stl10(
    root: &Path,
    classes: usize,
    train_per_class: usize,
    test_per_class: usize,
    unlabeled: usize,
) -> PathBuf {
    use mocca_data::{stl10, ImageDataset, ImageShape, Split};
    let dir = root.join("stl10_binary");
    let shape = ImageShape {
        height: 96,
        width: 96,
        channels: 3,
    };
    let names: Vec<String> = (0..classes).map(|c| format!("class_{c}")).collect();
    let set = |n: usize, first: usize, labeled: bool| {
        let mut pixels = Vec::new();
        for i in 0..n {
            pixels.extend(pattern_image(i % classes, first + i, 96).into_raw());
        }
        let labels = labeled.then(|| (0..n).map(|i| (i % classes) as u32).collect());
        let names = if labeled { names.clone() } else { Vec::new() };
        ImageDataset::from_uniform(shape, pixels, labels, names).unwrap()
    };
    stl10::write(&dir, Split::Train, &set(classes * train_per_class, 0, true)).unwrap();
    stl10::write(
        &dir,
        Split::Test,
        &set(classes * test_per_class, 10_000, true),
    )
    .unwrap();
    stl10::write(&dir, Split::Unlabeled, &set(unlabeled, 20_000, false)).unwrap();
    dir
}

/// `root/cifar-100-binary/` at the release's sizes (50,000 + 10,000 records of 3,074 bytes, the
/// reader wants whole files): record `i` has fine label `i % 100`, coarse label `i % 20`, and a
/// flat image whose colour is its fine label's, plus a little noise.
pub fn write_cifar100(root: &Path) -> PathBuf {
    let dir = root.join("cifar-100-binary");
    std::fs::create_dir_all(&dir).unwrap();
    for (file, n) in [("train.bin", 50_000usize), ("test.bin", 10_000)] {
        let mut bytes = vec![0u8; n * 3074];
        for (i, rec) in bytes.chunks_mut(3074).enumerate() {
            let fine = i % 100;
            rec[0] = (i % 20) as u8;
            rec[1] = fine as u8;
            for (c, plane) in rec[2..].chunks_mut(1024).enumerate() {
                let base = ((fine * (37 + 50 * c)) % 200) as u8;
                for (p, v) in plane.iter_mut().enumerate() {
                    *v = base + ((i * 7 + p * 13) % 23) as u8;
                }
            }
        }
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    dir
}

/// A tiny-model configuration (TOML, to be merged over a preset): ResNet-18
/// at width 1/16 on 16 px images, so a step takes milliseconds.
pub fn tiny_config(method: &str, epochs: usize, batch: usize) -> String {
    let mut s = format!(
        "method = \"{method}\"\nepochs = {epochs}\nbatch_size = {batch}\n\n\
         [data]\nimage_size = 16\n\n\
         [model]\nwidth = 0.0625\n\n\
         [eval]\nknn_every = 1\nknn_k = 20\n\n\
         [run]\nlog_every = 1\neval_batch_size = 64\n"
    );
    if method == "moco" || method == "mocov2" {
        // 40 keys with batch 16: the queue wraps mid-batch (K not a multiple
        // of the batch size), which the ring buffer handles.
        s.push_str("\n[moco]\nqueue_size = 40\nbn_splits = 2\n");
    }
    s
}

/// A scratch folder with a dataset and a config file.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// `classes` x (`train_per_class` + `test_per_class`) images of `size` px.
    pub fn new(classes: usize, train_per_class: usize, test_per_class: usize, size: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_image_folder(
            &dir.path().join("data"),
            classes,
            train_per_class,
            test_per_class,
            size,
        );
        Fixture { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn data(&self) -> PathBuf {
        self.path("data")
    }

    /// Writes `text` to `name` in the fixture folder and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// What a finished CLI call left.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// The CLI at `bin`, run in `cwd` with `$MOCCA_DATA` cleared (so discovery
/// only sees what a test sets up).
pub fn command(bin: &str, cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    // Never the network, never the user's cache.
    c.args(args)
        .current_dir(cwd)
        .env_remove("MOCCA_DATA")
        .env("MOCCA_NO_DOWNLOAD", "1")
        .env("XDG_CACHE_HOME", cwd.join(".cache"));
    c
}

pub fn run(bin: &str, cwd: &Path, args: &[&str]) -> Outcome {
    command(bin, cwd, args)
        .output()
        .expect("the CLI binary runs")
        .into()
}

impl From<std::process::Output> for Outcome {
    fn from(out: std::process::Output) -> Self {
        Outcome {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Starts the CLI in the background (output discarded).
pub fn spawn(bin: &str, cwd: &Path, args: &[&str]) -> Child {
    command(bin, cwd, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the CLI binary starts")
}

/// The records of a run's metrics.jsonl (complete lines only), as
/// `(kind, step)` pairs.
pub fn metric_steps(run: &Path) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter(|l| l.ends_with('}'))
        .filter_map(|l| {
            let kind = l
                .split("\"kind\":\"")
                .nth(1)?
                .split('"')
                .next()?
                .to_string();
            let step = l
                .split("\"step\":")
                .nth(1)?
                .split([',', '}'])
                .next()?
                .trim()
                .parse()
                .ok()?;
            Some((kind, step))
        })
        .collect()
}

/// Polls `cond` every millisecond until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// Every tensor of a safetensors file as (dtype, shape, raw bytes), for
/// bit-for-bit comparisons.
pub fn tensor_bytes(path: &Path) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    tensors
        .into_iter()
        .map(|(k, t)| {
            let bytes = raw_bytes(&t);
            (k, (format!("{:?}", t.dtype()), t.dims().to_vec(), bytes))
        })
        .collect()
}

fn raw_bytes(t: &Tensor) -> Vec<u8> {
    let flat = t.flatten_all().unwrap();
    match t.dtype() {
        candle_core::DType::F32 => flat
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        candle_core::DType::F64 => flat
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        candle_core::DType::I64 => flat
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        candle_core::DType::U32 => flat
            .to_vec1::<u32>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        candle_core::DType::U8 => flat.to_vec1::<u8>().unwrap(),
        other => panic!("unexpected dtype {other:?}"),
    }
}

/// Names of the tensors whose bytes differ between two checkpoints (or that
/// only one has).
pub fn differing_tensors(a: &Path, b: &Path) -> Vec<String> {
    let (ta, tb) = (tensor_bytes(a), tensor_bytes(b));
    let mut diff: Vec<String> = ta
        .iter()
        .filter(|(k, v)| tb.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    diff.extend(tb.keys().filter(|k| !ta.contains_key(*k)).cloned());
    diff
}

/// Leftover temporary files of interrupted writes in a run folder.
pub fn temp_files(run: &Path) -> Vec<String> {
    std::fs::read_dir(run)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}
