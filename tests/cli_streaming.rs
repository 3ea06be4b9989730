//! Image folders decoded per batch through the CLI: the same run as in memory, a file that
//! does not decode skipped with one warning (or, with --strict, a stop naming it).

use mocca_tests::{metric_steps, run, tensor_bytes, tiny_config, Fixture, Outcome};

const BIN: &str = env!("CARGO_BIN_EXE_mocca-cli");

/// 4 classes x 24 training images of 16 px: 6 steps per epoch at batch 16.
fn fixture() -> Fixture {
    Fixture::new(4, 24, 8, 16)
}

fn train(fx: &Fixture, out: &str, extra: &[&str]) -> Outcome {
    let cfg = fx.write("tiny.toml", &tiny_config("simclr", 1, 16));
    let data = fx.data();
    let mut args = vec![
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out,
        "--knn-every",
        "0",
        "--set",
        "eval.knn_at_start=false",
    ];
    args.extend_from_slice(extra);
    run(BIN, fx.dir.path(), &args)
}

/// Cuts a training image of the fixture to half its bytes.
fn break_file(fx: &Fixture, rel: &str) -> std::path::PathBuf {
    let path = fx.data().join(rel);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    path
}

#[test]
fn a_streamed_folder_trains_to_the_same_checkpoint_as_in_memory() {
    let fx = fixture();
    let memory = train(&fx, "runs/memory", &["--set", "run.streaming=\"never\""]);
    assert!(memory.success(), "{memory:?}");
    let streamed = train(&fx, "runs/streamed", &["--set", "run.streaming=\"always\""]);
    assert!(streamed.success(), "{streamed:?}");
    assert!(
        streamed.stderr.contains("files decoded per batch"),
        "{}",
        streamed.stderr
    );
    let ckpt = |run: &str| tensor_bytes(&fx.path(run).join("checkpoint.safetensors"));
    assert_eq!(ckpt("runs/memory"), ckpt("runs/streamed"));
}

#[test]
fn a_corrupt_file_is_skipped_with_one_warning_and_counted_in_the_metrics() {
    let fx = fixture();
    let bad = break_file(&fx, "train/class_2/005.png");
    let out = train(
        &fx,
        "runs/skip",
        &["--set", "run.streaming=\"always\"", "--epochs", "2"],
    );
    assert!(out.success(), "{out:?}");
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("warning:") && l.contains("skipped"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", out.stderr);
    assert!(
        warnings[0].contains(&bad.display().to_string()),
        "{}",
        warnings[0]
    );
    // 96 images in batches of 16: every image is in every epoch.
    let skipped = metric_steps(&fx.path("runs/skip"))
        .into_iter()
        .filter(|(kind, _)| kind == "skipped_file")
        .count();
    assert_eq!(skipped, 2);
}

#[test]
fn strict_stops_at_a_corrupt_file_and_names_it() {
    let fx = fixture();
    let bad = break_file(&fx, "train/class_1/010.png");
    let out = train(
        &fx,
        "runs/strict",
        &["--set", "run.streaming=\"always\"", "--strict"],
    );
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr.contains(&bad.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("cannot decode image"), "{}", out.stderr);
    assert!(
        out.stderr.contains("Fix or remove the file and resume"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn an_unreadable_folder_is_an_error_before_training_starts() {
    let fx = fixture();
    let broken = fx.data().join("train/class_3");
    std::fs::remove_dir_all(&broken).unwrap();
    std::fs::create_dir_all(&broken).unwrap();
    let out = train(&fx, "runs/empty", &["--set", "run.streaming=\"always\""]);
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr.contains("class folder holds no images"),
        "{}",
        out.stderr
    );
    assert!(!fx.path("runs/empty/metrics.jsonl").exists());
}

/// ImageNet's layout for the 100 classes of ImageNet-100 and one more: train/<wnid>/*.JPEG, a
/// flat val/ labelled by Kaggle's LOC_val_solution.csv.
fn imagenet_like(root: &std::path::Path) {
    let classes = mocca_data::image_folder::class_list("imagenet100").unwrap();
    let mut csv = String::from("ImageId,PredictionString\n");
    for (c, wnid) in classes
        .iter()
        .chain(["n99999999".to_string()].iter())
        .enumerate()
    {
        let dir = root.join("train").join(wnid);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..2 {
            mocca_tests::pattern_image(c, i, 40)
                .save(dir.join(format!("{wnid}_{i}.JPEG")))
                .unwrap();
        }
        let stem = format!("ILSVRC2012_val_{:08}", c + 1);
        std::fs::create_dir_all(root.join("val")).unwrap();
        mocca_tests::pattern_image(c, 100, 40)
            .save(root.join("val").join(format!("{stem}.JPEG")))
            .unwrap();
        csv.push_str(&format!("{stem},{wnid} 1 2 3 4\n"));
    }
    std::fs::write(root.join("LOC_val_solution.csv"), csv).unwrap();
}

#[test]
fn the_imagenet100_recipe_reads_its_classes_from_an_imagenet_folder_and_trains() {
    let fx = fixture();
    let root = fx.path("imagenet");
    imagenet_like(&root);
    let out = run(
        BIN,
        fx.dir.path(),
        &[
            "train",
            "byol",
            "--recipe",
            "imagenet100",
            "--data",
            root.to_str().unwrap(),
            "--out",
            "runs/in100",
            "--width",
            "0.0625",
            "--batch-size",
            "16",
            "--stop-after-steps",
            "1",
            "--set",
            "data.image_size=32",
            "--set",
            "model.hidden_dim=64",
            "--set",
            "predictor.hidden_dim=64",
            "--set",
            "run.streaming=\"always\"",
            "--knn-test-limit",
            "20",
            "--knn-train-limit",
            "40",
        ],
    );
    assert!(out.success(), "{out:?}");
    // 100 classes of 2 training images (the extra class left out), 100 validation images.
    assert!(
        out.stderr.contains(
            "200 training images (files decoded per batch), 100 test images, 100 classes"
        ),
        "{}",
        out.stderr
    );
    // The first step comes straight after the listing: no kNN pass over the data before it.
    let records = metric_steps(&fx.path("runs/in100"));
    assert!(
        records.iter().any(|(k, s)| k == "step" && *s == 1),
        "{records:?}"
    );
    assert!(
        !records.iter().any(|(k, s)| k == "knn" && *s == 0),
        "{records:?}"
    );
}

#[test]
fn a_csv_list_of_image_files_is_a_dataset() {
    let fx = fixture();
    let mut csv = String::from("path,label\n");
    for class in 0..4 {
        for i in 0..8 {
            csv.push_str(&format!(
                "data/train/class_{class}/{i:03}.png,class_{class}\n"
            ));
        }
    }
    let list = fx.write("list.csv", &csv);
    let cfg = fx.write("tiny.toml", &tiny_config("simclr", 1, 16));
    let out = run(
        BIN,
        fx.dir.path(),
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--data",
            list.to_str().unwrap(),
            "--out",
            "runs/list",
        ],
    );
    assert!(out.success(), "{out:?}");
    assert!(out.stderr.contains("32 training images"), "{}", out.stderr);
    assert!(out.stderr.contains("no test split"), "{}", out.stderr);
}
