//! A tiny training run through the CLI, then plot, export and eval on it.

use mocca_tests::{metric_steps, run, tensor_bytes, tiny_config, Fixture, Outcome};

const BIN: &str = env!("CARGO_BIN_EXE_mocca-cli");

/// 4 classes x 24 training images of 16 px: 6 steps per epoch at batch 16.
fn fixture() -> Fixture {
    Fixture::new(4, 24, 8, 16)
}

/// `train --config CFG --data <the fixture's> --out OUT EXTRA...` in the fixture folder.
fn train(fx: &Fixture, cfg: &std::path::Path, out: &str, extra: &[&str]) -> Outcome {
    let data = fx.data();
    let mut args = vec![
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    run(BIN, fx.dir.path(), &args)
}

#[test]
fn mocov2_run_leaves_config_metrics_checkpoint_and_the_other_commands_use_it() {
    let fx = fixture();
    let cfg = fx.write("tiny.toml", &tiny_config("mocov2", 2, 16));
    let out = train(&fx, &cfg, "runs/tiny", &[]);
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
    // The memory bank holds the query encoder's features: no key encoder is built or saved.
    let bank = tensor_bytes(&fx.path("runs/case1/checkpoint.safetensors"));
    assert!(bank.keys().any(|k| k.contains("memory_bank.bank")));
    assert!(!bank
        .keys()
        .any(|k| k.starts_with("method.encoder_k") || k.starts_with("encoder_k")));
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

#[test]
fn the_stl10_recipe_trains_on_train_plus_unlabeled_and_monitors_on_the_labeled_splits() {
    let fx = Fixture::new(2, 2, 1, 16);
    let data = mocca_tests::write_stl10(fx.dir.path(), 3, 8, 4, 24);
    let cfg = fx.write("tiny.toml", &tiny_config("mocov2", 1, 16));
    let out = run(
        BIN,
        fx.dir.path(),
        &[
            "train",
            "mocov2",
            "--recipe",
            "stl10",
            "--config",
            cfg.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            "runs/stl",
        ],
    );
    assert!(out.success(), "train failed: {out:?}");
    assert!(
        out.stderr.contains(
            "trains on 48 train+unlabeled images (96x96x3), kNN memory 24 training images, \
             12 test images, 3 classes"
        ),
        "{}",
        out.stderr
    );
    let run_dir = fx.path("runs/stl");
    let config = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    for line in [
        "recipe = \"stl10\"",
        "train_split = \"train+unlabeled\"",
        "stem = \"imagenet\"",
    ] {
        assert!(
            config.contains(line),
            "config.toml lacks `{line}`:\n{config}"
        );
    }
    // 48 images at batch 16: 3 steps; kNN at the start and the end, on 24 memory images.
    let records = metric_steps(&run_dir);
    assert_eq!(records.iter().filter(|r| r.0 == "step").count(), 3);
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let knn: Vec<&str> = metrics.lines().filter(|l| l.contains("\"knn\"")).collect();
    assert_eq!(knn.len(), 4, "{metrics}");
    assert!(
        knn.iter()
            .all(|l| l.contains("\"n_train\":24") && l.contains("\"n_test\":12")),
        "{metrics}"
    );

    // The evaluations read the labeled splits of the same folder.
    let eval = run(BIN, fx.dir.path(), &["eval", "knn", "--run", "runs/stl"]);
    assert!(eval.success(), "{eval:?}");
    assert!(eval.stdout.contains("top-1"), "{}", eval.stdout);
    let linear = run(
        BIN,
        fx.dir.path(),
        &["eval", "linear", "runs/stl", "--epochs", "2"],
    );
    assert!(linear.success(), "{linear:?}");
    assert!(
        linear.stdout.contains("linear probe (2 epochs)"),
        "{}",
        linear.stdout
    );
}

#[test]
fn the_cifar100_recipe_reads_cifar100_and_monitors_its_hundred_classes() {
    let fx = Fixture::new(2, 2, 1, 16);
    mocca_tests::write_cifar100(&fx.path("data100"));
    let cfg = fx.write("tiny.toml", &tiny_config("simclr", 1, 16));
    let out = run(
        BIN,
        fx.dir.path(),
        &[
            "train",
            "simclr",
            "--recipe",
            "cifar100",
            "--config",
            cfg.to_str().unwrap(),
            "--data",
            "data100",
            "--stop-after-steps",
            "2",
            "--knn-train-limit",
            "1000",
            "--knn-test-limit",
            "500",
            "--out",
            "runs/c100",
        ],
    );
    assert!(out.success(), "train failed: {out:?}");
    assert!(
        out.stderr.contains(
            "cifar-100-binary — 50000 training images (32x32x3), 10000 test images, 100 classes"
        ),
        "{}",
        out.stderr
    );
    let metrics = std::fs::read_to_string(fx.path("runs/c100/metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("\"n_train\":1000") && metrics.contains("\"n_test\":500"),
        "{metrics}"
    );
    let eval = run(
        BIN,
        fx.dir.path(),
        &[
            "eval",
            "knn",
            "--run",
            "runs/c100",
            "--train-limit",
            "1000",
            "--test-limit",
            "500",
        ],
    );
    assert!(eval.success(), "{eval:?}");
    // The flat colours tell the 100 classes apart far above chance (1 %).
    let top1: f64 = eval
        .stdout
        .split("top-1")
        .nth(1)
        .and_then(|t| t.trim_start_matches([' ', ':']).split('%').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no top-1 in {}", eval.stdout));
    assert!(top1 > 10.0, "{}", eval.stdout);
}

#[test]
fn instdisc_trains_through_the_cli_with_the_softmax_and_with_nce() {
    let fx = fixture();
    let cfg = fx.write("instdisc.toml", &tiny_config("instdisc", 1, 16));
    for (i, objective) in ["softmax", "nce"].iter().enumerate() {
        let out_dir = format!("runs/instdisc{i}");
        let set = format!("instdisc.objective=\"{objective}\"");
        let out = train(
            &fx,
            &cfg,
            &out_dir,
            &["--set", &set, "--set", "instdisc.nce_k=8"],
        );
        assert!(out.success(), "{objective}: {out:?}");
        let steps = metric_steps(&fx.path(&out_dir))
            .iter()
            .filter(|r| r.0 == "step")
            .count();
        assert_eq!(steps, 6, "{objective}");
        let ckpt = tensor_bytes(&fx.path(&format!("{out_dir}/checkpoint.safetensors")));
        // 96 training images, one bank row each, of the head's 128 dimensions.
        let bank = ckpt
            .iter()
            .find(|(k, _)| k.ends_with("memory.memory_bank.bank"))
            .unwrap_or_else(|| panic!("{objective}: no memory bank in {:?}", ckpt.keys()));
        assert_eq!(bank.1 .1, vec![96, 128]);
        assert_eq!(
            ckpt.keys().any(|k| k.ends_with("nce_z")),
            *objective == "nce"
        );
    }
    let eval = run(BIN, fx.dir.path(), &["eval", "knn", "runs/instdisc0"]);
    assert!(eval.success(), "{eval:?}");
    assert!(eval.stdout.contains("shared encoder"), "{eval:?}");
}

#[test]
fn a_schedule_that_cannot_train_is_named_before_the_first_step_and_the_run_goes_on() {
    let fx = fixture();
    // The colab's per-epoch cosine counts epochs from 1: a one-epoch run is at lr 0 throughout.
    let cfg = fx.write("moco.toml", &tiny_config("moco", 1, 16));
    let out = train(&fx, &cfg, "runs/lr0", &[]);
    assert!(out.success(), "{out:?}");
    let warning = out
        .stderr
        .lines()
        .find(|l| l.starts_with("warning: every one of the run's 6 steps has learning rate 0"))
        .unwrap_or_else(|| panic!("no warning:\n{}", out.stderr));
    assert!(
        warning.contains("--epochs 2") && warning.contains("schedule.first_epoch=0"),
        "{warning}"
    );
    let first_step = out.stderr.find("epoch 1/1").unwrap_or(usize::MAX);
    assert!(
        out.stderr.find(warning).unwrap() < first_step,
        "{}",
        out.stderr
    );
    assert_eq!(
        metric_steps(&fx.path("runs/lr0"))
            .iter()
            .filter(|r| r.0 == "step")
            .count(),
        6
    );
    // Two epochs train, but half of the run at lr 0 is named too; five do not.
    let two = train(&fx, &cfg, "runs/two", &["--epochs", "2"]);
    assert!(
        two.success() && !two.stderr.contains("warning: every one"),
        "{two:?}"
    );
    assert!(
        two.stderr.contains(
            "warning: 6 of the run's 12 steps (50 %) have learning rate 0; the per-epoch cosine \
             counts epochs from 1"
        ),
        "{}",
        two.stderr
    );
    let five = train(&fx, &cfg, "runs/five", &["--epochs", "5"]);
    assert!(
        five.success() && !five.stderr.contains("warning:"),
        "{five:?}"
    );
}

#[test]
fn byol_simsiam_and_mocov3_train_resume_evaluate_and_export_through_the_cli() {
    let fx = fixture();
    for method in ["byol", "simsiam", "mocov3"] {
        let cfg = fx.write(&format!("{method}.toml"), &tiny_config(method, 1, 16));
        let out_dir = format!("runs/{method}");
        let out = train(
            &fx,
            &cfg,
            &out_dir,
            &[
                "--set",
                "model.hidden_dim=32",
                "--set",
                "predictor.hidden_dim=16",
            ],
        );
        assert!(out.success(), "{method}: {out:?}");
        // Extending the finished run by one epoch continues it.
        let more = run(
            BIN,
            fx.dir.path(),
            &["train", "--resume", &out_dir, "--epochs", "2"],
        );
        assert!(more.success(), "{method} resume: {more:?}");
        let steps = metric_steps(&fx.path(&out_dir))
            .iter()
            .filter(|r| r.0 == "step")
            .count();
        assert_eq!(steps, 12, "{method}");
        let ckpt = tensor_bytes(&fx.path(&format!("{out_dir}/checkpoint.safetensors")));
        let has = |prefix: &str| ckpt.keys().any(|k| k.contains(prefix));
        assert!(
            has("predictor.layers.0.weight"),
            "{method}: {:?}",
            ckpt.keys()
        );
        assert_eq!(has("encoder_k."), method != "simsiam", "{method}");
        // The momentum encoder is the key encoder to evaluation.
        let key = run(
            BIN,
            fx.dir.path(),
            &["eval", "knn", &out_dir, "--encoder", "key"],
        );
        assert_eq!(key.success(), method != "simsiam", "{method}: {key:?}");
        let export = run(
            BIN,
            fx.dir.path(),
            &[
                "export",
                &out_dir,
                "--out",
                &format!("{method}.safetensors"),
            ],
        );
        assert!(export.success(), "{method} export: {export:?}");
    }
    // BYOL and MoCo v3 record the momentum of every step; SimSiam has none.
    let metrics = std::fs::read_to_string(fx.path("runs/byol/metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"momentum\":0.99"), "{metrics}");
    assert!(
        !metrics.contains("pos_acc"),
        "BYOL ranks no positive: {metrics}"
    );
}

#[test]
fn mocov3_trains_a_vit_through_the_cli_and_exports_it_with_timms_keys() {
    let fx = fixture();
    let cfg = fx.write("mocov3.toml", &tiny_config("mocov3", 1, 16));
    let out = train(
        &fx,
        &cfg,
        "runs/vit",
        &[
            "--set",
            "model.arch=\"vit-tiny\"",
            "--set",
            "model.width=1.0",
            "--set",
            "model.hidden_dim=32",
            "--set",
            "predictor.hidden_dim=16",
        ],
    );
    assert!(out.success(), "{out:?}");
    assert!(out.stderr.contains("VitTiny"), "{}", out.stderr);
    let export = run(
        BIN,
        fx.dir.path(),
        &["export", "runs/vit", "--out", "vit.safetensors"],
    );
    assert!(export.success(), "{export:?}");
    assert!(
        export.stdout.contains(
            "timm.create_model(\"vit_tiny_patch16_224\", num_classes=0, img_size=16, patch_size=4)"
        ),
        "{}",
        export.stdout
    );
    let keys = tensor_bytes(&fx.path("vit.safetensors"));
    for k in [
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.11.attn.qkv.weight",
        "norm.bias",
    ] {
        assert!(keys.contains_key(k), "{k} not in {:?}", keys.keys());
    }
    assert_eq!(keys["pos_embed"].1, vec![1, 17, 192]);
    // A width multiplier means nothing to a ViT: refused, naming the key.
    let bad = train(
        &fx,
        &cfg,
        "runs/vit-bad",
        &[
            "--set",
            "model.arch=\"vit-tiny\"",
            "--set",
            "model.width=0.5",
        ],
    );
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("model.width"), "{}", bad.stderr);
}
