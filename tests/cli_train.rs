//! A tiny training run through the CLI, then plot, export and eval on it.

use mocca_tests::{metric_steps, run, tensor_bytes, tiny_config, Fixture};

const BIN: &str = env!("CARGO_BIN_EXE_mocca-cli");

/// 4 classes x 24 training images of 16 px: 6 steps per epoch at batch 16.
fn fixture() -> Fixture {
    Fixture::new(4, 24, 8, 16)
}

#[test]
fn mocov2_run_leaves_config_metrics_checkpoint_and_the_other_commands_use_it() {
    let fx = fixture();
    let cfg = fx.write("tiny.toml", &tiny_config("mocov2", 2, 16));
    let data = fx.data();
    let out = run(
        BIN,
        fx.dir.path(),
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            "runs/tiny",
        ],
    );
    assert!(out.success(), "train failed: {out:?}");
    let run_dir = fx.path("runs/tiny");

    // The resolved config is complete and says what was asked.
    let config = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    for line in [
        "method = \"mocov2\"",
        "batch_size = 16",
        "width = 0.0625",
        "queue_size = 40",
    ] {
        assert!(
            config.contains(line),
            "config.toml lacks `{line}`:\n{config}"
        );
    }

    // One step record per step, an epoch record per epoch, kNN at the start
    // (random init) and after each epoch, on the head output (what the MoCo
    // colab monitors) and on the backbone.
    let records = metric_steps(&run_dir);
    let steps: Vec<u64> = records
        .iter()
        .filter(|r| r.0 == "step")
        .map(|r| r.1)
        .collect();
    assert_eq!(steps, (1..=12).collect::<Vec<_>>());
    let knn: Vec<u64> = records
        .iter()
        .filter(|r| r.0 == "knn")
        .map(|r| r.1)
        .collect();
    assert_eq!(knn, vec![0, 0, 6, 6, 12, 12]);
    let epochs: Vec<u64> = records
        .iter()
        .filter(|r| r.0 == "epoch")
        .map(|r| r.1)
        .collect();
    assert_eq!(epochs, vec![6, 12]);
    for source in [
        "on query encoder, projection-head output",
        "on query encoder, backbone features",
    ] {
        assert!(out.stderr.contains(source), "{}", out.stderr);
    }
    assert!(
        out.stderr.contains("kNN monitor on 128 images: about"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("sized for a GPU"), "{}", out.stderr);

    // The checkpoint holds both encoders, the optimiser, the queue and the step.
    let state = tensor_bytes(&run_dir.join("checkpoint.safetensors"));
    for key in [
        "encoder_q.backbone.conv1.weight",
        "encoder_k.backbone.layer4.1.bn2.running_var",
        "encoder_q.head.layers.0.weight",
        "step",
        "rng_state",
    ] {
        assert!(state.contains_key(key), "checkpoint lacks `{key}`");
    }
    assert!(
        state.keys().any(|k| k.starts_with("optimizer.")),
        "no optimiser state"
    );
    assert!(
        state.keys().any(|k| k.starts_with("dictionary.")),
        "no queue state"
    );
    assert_eq!(state["step"].2, 12i64.to_le_bytes().to_vec());

    // plot: one PNG with three panels.
    let plot = run(BIN, fx.dir.path(), &["plot", "runs/tiny"]);
    assert!(plot.success(), "{plot:?}");
    let png = image::open(run_dir.join("curves.png"))
        .expect("curves.png decodes")
        .to_rgb8();
    assert!(
        png.width() >= 600 && png.height() >= 700,
        "{}x{}",
        png.width(),
        png.height()
    );

    // export: the query backbone with torchvision names, BN counters as int64.
    let export = run(
        BIN,
        fx.dir.path(),
        &["export", "runs/tiny", "--out", "backbone.safetensors"],
    );
    assert!(export.success(), "{export:?}");
    let weights = tensor_bytes(&fx.path("backbone.safetensors"));
    assert_eq!(
        weights.len(),
        120,
        "ResNet-18 has 120 state-dict entries without fc"
    );
    assert_eq!(
        weights["conv1.weight"].1,
        vec![4, 3, 3, 3],
        "CIFAR stem, width 1/16"
    );
    assert_eq!(weights["layer1.0.bn1.num_batches_tracked"].0, "I64");
    assert!(!weights
        .keys()
        .any(|k| k.starts_with("fc.") || k.starts_with("head.")));
    assert_eq!(
        weights["conv1.weight"],
        state["encoder_q.backbone.conv1.weight"]
    );

    // eval: scores the run's eval.layer (the colab recipe's head output)
    // unless told otherwise, and says which encoder and layer it evaluated.
    let eval = run(
        BIN,
        fx.dir.path(),
        &["eval", "knn", "--run", "runs/tiny", "--encoder", "key"],
    );
    assert!(eval.success(), "{eval:?}");
    assert!(
        eval.stdout
            .contains("key (momentum) encoder, projection-head output: top-1"),
        "{}",
        eval.stdout
    );
    let eval = run(
        BIN,
        fx.dir.path(),
        &["eval", "knn", "--run", "runs/tiny", "--layer", "backbone"],
    );
    assert!(eval.success(), "{eval:?}");
    assert!(
        eval.stdout
            .contains("query encoder, backbone features: top-1"),
        "{}",
        eval.stdout
    );
    let lincls = run(
        BIN,
        fx.dir.path(),
        &[
            "eval",
            "lincls",
            "runs/tiny",
            "--epochs",
            "2",
            "--lr",
            "0.1",
        ],
    );
    assert!(lincls.success(), "{lincls:?}");
    assert!(
        lincls.stdout.contains(
            "lincls (MoCo's main_lincls.py protocol, 2 epochs) on query encoder, backbone features: test top-1"
        ),
        "{}",
        lincls.stdout
    );
    let head = run(
        BIN,
        fx.dir.path(),
        &["eval", "lincls", "runs/tiny", "--layer", "head"],
    );
    assert!(
        !head.success() && head.stderr.contains("backbone features"),
        "{head:?}"
    );
    let linear = run(
        BIN,
        fx.dir.path(),
        &["eval", "linear", "runs/tiny", "--epochs", "5"],
    );
    assert!(linear.success(), "{linear:?}");
    assert!(
        linear
            .stdout
            .contains("linear probe (5 epochs) on query encoder"),
        "{}",
        linear.stdout
    );
}

#[test]
fn simclr_and_the_other_negative_sources_train_through_the_cli() {
    let fx = fixture();
    let data = fx.data();
    let simclr = fx.write("simclr.toml", &tiny_config("simclr", 1, 16));
    let moco = fx.write("moco.toml", &tiny_config("moco", 1, 16));
    let cases: [(&std::path::Path, &[&str]); 3] = [
        (&simclr, &[]),
        (&moco, &["--negatives", "bank"]),
        (&moco, &["--negatives", "end-to-end"]),
    ];
    for (i, (cfg, extra)) in cases.iter().enumerate() {
        let out_dir = format!("runs/case{i}");
        let mut args = vec![
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ];
        args.extend_from_slice(&["--out", &out_dir]);
        args.extend_from_slice(extra);
        let out = run(BIN, fx.dir.path(), &args);
        assert!(out.success(), "case {i} {extra:?} failed: {out:?}");
        let steps = metric_steps(&fx.path(&out_dir))
            .iter()
            .filter(|r| r.0 == "step")
            .count();
        assert_eq!(steps, 6, "case {i}");
    }
    // SimCLR has one encoder: evaluation names it, and refuses a key encoder.
    let eval = run(BIN, fx.dir.path(), &["eval", "knn", "runs/case0"]);
    assert!(
        eval.stdout.contains("shared encoder, backbone features"),
        "{eval:?}"
    );
    let key = run(
        BIN,
        fx.dir.path(),
        &["eval", "knn", "runs/case0", "--encoder", "key"],
    );
    assert_eq!(key.code, Some(1));
    assert!(key.stderr.contains("no key encoder"), "{}", key.stderr);
}

#[test]
fn a_gpu_sized_recipe_on_the_cpu_is_named_timed_and_run_as_asked() {
    let fx = fixture();
    let cfg = fx.write("tiny.toml", &tiny_config("mocov2", 2, 16));
    let data = fx.data();
    let out = run(
        BIN,
        fx.dir.path(),
        &[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            "runs/wide",
            "--set",
            "model.width=0.5",
        ],
    );
    assert!(out.success(), "train failed: {out:?}");
    for said in [
        "recipe is sized for a GPU (width 0.5, batch 16, 2 epochs = 12 steps)",
        "cargo xtask train mocov2 --width 0.125",
        "kNN monitor on 128 images: about",
        "estimate: ",
        "for the remaining 5 steps",
    ] {
        assert!(
            out.stderr.contains(said),
            "stderr lacks `{said}`:\n{}",
            out.stderr
        );
    }
    let config = std::fs::read_to_string(fx.path("runs/wide/config.toml")).unwrap();
    assert!(config.contains("width = 0.5"), "{config}");
}

#[test]
fn a_second_run_into_the_same_folder_is_refused() {
    let fx = fixture();
    let cfg = fx.write("tiny.toml", &tiny_config("moco", 1, 16));
    let data = fx.data();
    let args = [
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        "runs/a",
        "--stop-after-steps",
        "2",
    ];
    assert!(run(BIN, fx.dir.path(), &args).success());
    let again = run(BIN, fx.dir.path(), &args);
    assert_eq!(again.code, Some(1));
    assert!(
        again.stderr.contains("already holds a run") && again.stderr.contains("--resume runs/a"),
        "{}",
        again.stderr
    );
}
