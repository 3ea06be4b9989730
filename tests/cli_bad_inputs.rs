//! Bad inputs end with a message naming the problem and exit code 1: no
//! panic, no half-written checkpoint.

use mocca_tests::{command, run, temp_files, tensor_bytes, tiny_config, Fixture, Outcome};

const BIN: &str = env!("CARGO_BIN_EXE_mocca-cli");

fn assert_clean_failure(out: &Outcome, needles: &[&str]) {
    assert_eq!(out.code, Some(1), "expected exit code 1: {out:?}");
    assert!(!out.stderr.contains("panicked"), "panic: {}", out.stderr);
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "stderr lacks `{n}`:\n{}",
            out.stderr
        );
    }
}

fn tiny(fx: &Fixture, method: &str) -> String {
    fx.write("tiny.toml", &tiny_config(method, 1, 16))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn missing_data_folder_is_named() {
    let fx = Fixture::new(2, 8, 2, 16);
    let cfg = tiny(&fx, "moco");
    let out = run(
        BIN,
        fx.dir.path(),
        &[
            "train",
            "--config",
            &cfg,
            "--data",
            "no/such/folder",
            "--out",
            "runs/x",
        ],
    );
    assert_clean_failure(&out, &["no/such/folder", "not found"]);
}

#[test]
fn without_data_the_error_says_where_it_looked_and_how_to_get_it() {
    let empty = tempfile::tempdir().unwrap();
    let out = run(BIN, empty.path(), &["train", "moco", "--out", "runs/x"]);
    assert_clean_failure(
        &out,
        &[
            "$MOCCA_DATA",
            "data",
            ".cache/mocca",
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            "c32a1d4ab5d03f1284b67883e8d87530",
            "downloads are off",
        ],
    );
    assert!(!empty.path().join("runs/x/checkpoint.safetensors").exists());
}

/// A base URL on 127.0.0.1 where nothing listens (a port bound, then closed): a download
/// attempt fails at once, and nothing outside this machine is ever contacted.
fn dead_mirror() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

#[test]
fn no_download_flag_forbids_the_network() {
    let empty = tempfile::tempdir().unwrap();
    let out = command(
        BIN,
        empty.path(),
        &["train", "moco", "--no-download", "--out", "runs/x"],
    )
    .env_remove("MOCCA_NO_DOWNLOAD")
    // Were the flag ignored, the attempt would fail here, not reach the dataset's server.
    .env("MOCCA_DOWNLOAD_MIRROR", dead_mirror())
    .output()
    .unwrap();
    let out = Outcome::from(out);
    assert_clean_failure(
        &out,
        &[
            "downloads are off",
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        ],
    );
    assert!(!out.stderr.contains("downloading"), "{}", out.stderr);
    assert!(!empty.path().join(".cache/mocca").exists());
}

#[test]
fn without_a_network_the_download_error_says_what_to_fetch_and_where() {
    let empty = tempfile::tempdir().unwrap();
    let mirror = dead_mirror();
    let out = command(BIN, empty.path(), &["train", "moco", "--out", "runs/x"])
        .env_remove("MOCCA_NO_DOWNLOAD")
        .env("MOCCA_DOWNLOAD_MIRROR", &mirror)
        .output()
        .unwrap();
    let out = Outcome::from(out);
    let cache = empty.path().join(".cache/mocca");
    assert_clean_failure(
        &out,
        &[
            // Which folder, and that it downloads.
            &format!("downloading it into {}", cache.display()),
            // The one error: the URL, the checksum, where the file goes by hand.
            "cannot connect",
            &format!("{mirror}/cifar-10-binary.tar.gz"),
            "c32a1d4ab5d03f1284b67883e8d87530",
            &format!(
                "put it at {}",
                cache.join("cifar-10-binary.tar.gz").display()
            ),
            &format!("giving {}", cache.join("cifar-10-batches-bin").display()),
        ],
    );
    assert!(!out.stderr.contains("shared/data"), "{}", out.stderr);
    // Nothing that looks like a dataset, no temporary file or folder.
    let left: Vec<_> = std::fs::read_dir(&cache)
        .map(|rd| rd.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert!(!empty.path().join("runs/x/checkpoint.safetensors").exists());
}

#[test]
fn truncated_cifar_file_is_named_with_its_sizes() {
    let fx = Fixture::new(2, 8, 2, 16);
    let dir = fx.path("cifar");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data_batch_1.bin"), vec![0u8; 3073 * 3 + 100]).unwrap();
    let out = run(
        BIN,
        fx.dir.path(),
        &["train", "moco", "--data", "cifar", "--out", "runs/x"],
    );
    assert_clean_failure(&out, &["data_batch_1.bin", "30730000"]);
}

#[test]
fn corrupt_image_in_an_image_folder_is_named_and_skipped_or_under_strict_refused() {
    let fx = Fixture::new(2, 8, 2, 16);
    std::fs::write(
        fx.path("data/train/class_1/zz_corrupt.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    let cfg = tiny(&fx, "simclr");
    let args = |out| vec!["train", "--config", &cfg, "--data", "data", "--out", out];
    let strict = run(
        BIN,
        fx.dir.path(),
        &[args("runs/x"), vec!["--strict"]].concat(),
    );
    assert_clean_failure(&strict, &["zz_corrupt.png", "decode"]);
    let skipped = run(BIN, fx.dir.path(), &args("runs/y"));
    assert!(skipped.success(), "{skipped:?}");
    assert!(
        skipped.stderr.contains("warning: step") && skipped.stderr.contains("zz_corrupt.png"),
        "{}",
        skipped.stderr
    );
}

#[test]
fn batch_larger_than_the_dataset_is_refused() {
    let fx = Fixture::new(2, 8, 2, 16);
    let cfg = tiny(&fx, "simclr");
    let out = run(
        BIN,
        fx.dir.path(),
        &[
            "train",
            "--config",
            &cfg,
            "--data",
            "data",
            "--batch-size",
            "64",
            "--out",
            "runs/x",
        ],
    );
    assert_clean_failure(
        &out,
        &["batch size 64 is larger than the dataset (16 images)"],
    );
}

#[test]
fn queue_shorter_than_a_batch_is_refused_before_loading_anything() {
    let fx = Fixture::new(2, 8, 2, 16);
    let cfg = tiny(&fx, "moco");
    let out = run(
        BIN,
        fx.dir.path(),
        &[
            "train",
            "--config",
            &cfg,
            "--data",
            "data",
            "--queue-size",
            "8",
            "--out",
            "runs/x",
        ],
    );
    assert_clean_failure(&out, &["queue_size (8) is smaller than batch_size (16)"]);
    assert!(
        !fx.path("runs/x").exists(),
        "nothing is created for an invalid config"
    );
}

#[test]
fn unknown_config_key_is_named() {
    let fx = Fixture::new(2, 8, 2, 16);
    let cfg = fx.write(
        "bad.toml",
        "method = \"mocov2\"\n[optimizer]\nlearning_rate = 0.1\n",
    );
    let out = run(
        BIN,
        fx.dir.path(),
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--data",
            "data",
            "--out",
            "runs/x",
        ],
    );
    assert_clean_failure(&out, &["optimizer.learning_rate", "unknown field"]);
    assert!(!fx.path("runs/x").exists());
}

#[test]
fn cuda_without_cuda_support_is_a_clear_error() {
    let fx = Fixture::new(2, 8, 2, 16);
    let cfg = tiny(&fx, "moco");
    let out = run(
        BIN,
        fx.dir.path(),
        &[
            "train", "--config", &cfg, "--data", "data", "--device", "cuda", "--out", "runs/x",
        ],
    );
    if out.success() {
        return; // a CUDA build on a GPU machine: nothing to refuse
    }
    assert_clean_failure(&out, &["--device cuda"]);
}

#[test]
fn a_diverging_loss_stops_and_leaves_the_last_good_checkpoint_intact() {
    let fx = Fixture::new(2, 16, 2, 16);
    let cfg = fx.write("tiny.toml", &tiny_config("mocov2", 5, 16));
    let cfg = cfg.to_str().unwrap();
    // A learning rate that overflows the weights to infinity: the loss turns
    // NaN a step or two later. A checkpoint after every step shows what
    // survives.
    let out = run(
        BIN,
        fx.dir.path(),
        &[
            "train",
            "--config",
            cfg,
            "--data",
            "data",
            "--out",
            "runs/nan",
            "--lr",
            "1e38",
            "--checkpoint-every-steps",
            "1",
        ],
    );
    assert_clean_failure(
        &out,
        &["the loss became NaN at step", "diverged", "optimizer.lr"],
    );
    let failed_at: u64 = out
        .stderr
        .split("NaN at step ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(failed_at >= 2, "an update must come first: {}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "the last checkpoint (step {}) is intact",
            failed_at - 1
        )),
        "{}",
        out.stderr
    );
    let run_dir = fx.path("runs/nan");
    assert!(
        temp_files(&run_dir).is_empty(),
        "{:?}",
        temp_files(&run_dir)
    );
    let state = tensor_bytes(&run_dir.join("checkpoint.safetensors"));
    assert_eq!(
        state["step"].2,
        ((failed_at - 1) as i64).to_le_bytes().to_vec()
    );
}

#[test]
fn a_truncated_checkpoint_is_refused_on_resume() {
    let fx = Fixture::new(2, 16, 2, 16);
    let cfg = tiny(&fx, "moco");
    let ok = run(
        BIN,
        fx.dir.path(),
        &[
            "train",
            "--config",
            &cfg,
            "--data",
            "data",
            "--out",
            "runs/x",
            "--stop-after-steps",
            "1",
        ],
    );
    assert!(ok.success(), "{ok:?}");
    let ckpt = fx.path("runs/x/checkpoint.safetensors");
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(BIN, fx.dir.path(), &["train", "--resume", "runs/x"]);
    assert_clean_failure(&out, &["checkpoint.safetensors is truncated"]);
}

#[test]
fn an_unlabeled_train_split_the_data_lacks_is_named() {
    let fx = Fixture::new(2, 8, 2, 16);
    let cfg = tiny(&fx, "moco");
    let out = run(
        BIN,
        fx.dir.path(),
        &[
            "train",
            "--config",
            &cfg,
            "--data",
            fx.data().to_str().unwrap(),
            "--set",
            "data.train_split=unlabeled",
            "--out",
            "runs/x",
        ],
    );
    assert_clean_failure(
        &out,
        &[
            "data.train_split = \"unlabeled\" cannot be read from",
            "an image folder has no unlabeled split",
        ],
    );
    assert!(!fx.path("runs/x/checkpoint.safetensors").exists());
}
