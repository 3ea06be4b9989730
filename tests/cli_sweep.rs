//! `cargo xtask sweep`: a grid of tiny runs (2 points x 2 seeds) through the CLI: the table,
//! a rerun that skips everything, a changed sweep refused, and a sweep stopped by Ctrl-C and
//! then killed outright that, rerun, ends with the same table as the straight one.

use mocca_tests::{run, wait_for, Fixture};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_mocca-cli");

/// 4 classes x 128 images at batch 16: 32 steps an epoch, 2 epochs, kNN after each; long
/// epochs leave the signals below room to land mid-epoch 2 on a fast machine.
const SWEEP: &str = r#"
title = "tiny momentum sweep"
method = "moco"
seeds = [0, 1]
set = [
    "epochs=2", "batch_size=16", "data.image_size=16", "model.width=0.0625",
    "eval.knn_every=1", "eval.knn_k=20", "run.log_every=1", "run.eval_batch_size=64",
    "moco.queue_size=40", "moco.bn_splits=2",
]
[report]
x_label = "momentum"
[[axis]]
key = "moco.momentum"
name = "m"
values = [0.9, 0.99]
"#;

const RUNS: [&str; 4] = ["m-0.9/seed0", "m-0.9/seed1", "m-0.99/seed0", "m-0.99/seed1"];

fn fixture() -> Fixture {
    let fx = Fixture::new(4, 128, 8, 16);
    fx.write("tiny.toml", SWEEP);
    fx
}

fn sweep(fx: &Fixture, out: &str, extra: &[&str]) -> mocca_tests::Outcome {
    let mut args = vec!["sweep", "tiny.toml", "--out", out, "--data", "data"];
    args.extend_from_slice(extra);
    run(BIN, fx.dir.path(), &args)
}

fn spawn_sweep(fx: &Fixture, out: &str) -> Child {
    mocca_tests::command(
        BIN,
        fx.dir.path(),
        &["sweep", "tiny.toml", "--out", out, "--data", "data"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("the CLI starts")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// results.csv without its wall-time column (the only one a resumed run changes).
fn table_without_wall_time(dir: &Path) -> Vec<String> {
    read(&dir.join("results.csv"))
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string())
        .collect()
}

/// What the sweep itself goes by: the run's checkpoint says it finished. (Its train.log may
/// lack the closing "done" line: a child killed with its sweep right after writing the final
/// checkpoint never prints it.)
fn finished(run: &Path) -> bool {
    mocca_train::read_checkpoint_meta(&run.join("checkpoint.safetensors"))
        .is_ok_and(|m| m.finished && m.global_step == 64)
}

#[test]
fn a_sweep_writes_one_table_skips_finished_runs_and_resumes_after_ctrl_c_and_kill() {
    let fx = fixture();

    // Straight through: four runs, the table, the plot.
    let out = sweep(&fx, "sweeps/a", &[]);
    assert!(out.success(), "{out:?}");
    let a = fx.path("sweeps/a");
    assert!(
        out.stdout
            .contains("2 points x 2 seeds = 4 runs; 0 finished already"),
        "{}",
        out.stdout
    );
    for r in RUNS {
        assert!(
            out.stdout.contains(&format!("done: {r} in ")),
            "{r}: {}",
            out.stdout
        );
        let dir = a.join(r);
        assert!(dir.join("checkpoint.safetensors").exists(), "{r}");
        assert!(finished(&dir), "{r}");
        let log = read(&dir.join("train.log"));
        assert!(
            log.starts_with("$ RAYON_NUM_THREADS=1 cargo xtask train moco --recipe cifar"),
            "{log}"
        );
        let seed = &r[r.len() - 1..];
        assert!(read(&dir.join("config.toml")).contains(&format!("seed = {seed}")));
    }
    let m99 = read(&a.join("m-0.99/seed1/config.toml"));
    assert!(m99.contains("momentum = 0.99"), "{m99}");
    let csv = read(&a.join("results.csv"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "point,series,x,method,recipe,runs_finished,knn_mean,knn_std,knn_seed0,knn_seed1,loss_mean,wall_s_mean"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    for (line, x) in lines[1..].iter().zip(["0.9", "0.99"]) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(
            &f[..6],
            [
                &format!("m-{x}"),
                "tiny momentum sweep",
                x,
                "moco",
                "cifar",
                "2"
            ]
        );
        for v in &f[6..] {
            let v: f64 = v.parse().unwrap_or_else(|_| panic!("{line}"));
            assert!(v.is_finite() && v >= 0.0, "{line}");
        }
    }
    let md = read(&a.join("results.md"));
    assert!(
        md.contains("| point | series | momentum | kNN top-1 (%) | seed 0 | seed 1 |"),
        "{md}"
    );
    assert!(md.contains(" ± "), "{md}");
    let png = image::open(a.join("results.png")).unwrap();
    assert!(png.width() > 500 && png.height() > 300);

    // Again: nothing left to run, the same table. `--out` alone continues the saved sweep.
    for again in [
        sweep(&fx, "sweeps/a", &[]),
        run(
            BIN,
            fx.dir.path(),
            &["sweep", "--out", "sweeps/a", "--data", "data"],
        ),
    ] {
        assert!(again.success(), "{again:?}");
        assert!(
            again
                .stdout
                .contains("4 finished already, 0 to resume, 0 to start"),
            "{}",
            again.stdout
        );
        assert!(!again.stdout.contains("start:"), "{}", again.stdout);
    }
    assert_eq!(read(&a.join("results.csv")), csv);
    std::fs::remove_file(a.join("results.md")).unwrap();
    let report = run(BIN, fx.dir.path(), &["sweep", "--report", "sweeps/a"]);
    assert!(report.success(), "{report:?}");
    assert_eq!(read(&a.join("results.md")), md);

    // A different sweep into the same folder is refused, naming what changed.
    let changed = sweep(&fx, "sweeps/a", &["--seeds", "0,2"]);
    assert_eq!(changed.code, Some(1), "{changed:?}");
    assert!(
        changed
            .stderr
            .contains("holds another sweep: seeds: [0, 1] (saved) → [0, 2] (now)"),
        "{}",
        changed.stderr
    );
    // One that only adds seeds extends it: the finished runs are kept, the new seed's start.
    let saved = read(&a.join("sweep.toml"));
    let grown = sweep(&fx, "sweeps/a", &["--seeds", "0,1,2", "--dry-run"]);
    assert!(grown.success(), "{grown:?}");
    assert!(
        grown
            .stdout
            .contains("adding seeds to the saved sweep ([0, 1] → [0, 1, 2])")
            && grown.stdout.contains("6 runs, 2 to run"),
        "{}",
        grown.stdout
    );
    assert_eq!(
        read(&a.join("sweep.toml")),
        saved,
        "a dry run writes nothing"
    );

    // Ctrl-C: the running children checkpoint and stop, the sweep exits 130.
    let b = fx.path("sweeps/b");
    let first = b.join(RUNS[0]);
    let child = spawn_sweep(&fx, "sweeps/b");
    let ready = wait_for(Duration::from_secs(60), || {
        first.join("checkpoint.safetensors").exists()
    });
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let stopped = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&stopped.stdout);
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert!(ready, "no checkpoint: {stdout}{stderr}");
    assert_eq!(stopped.status.code(), Some(130), "{stdout}{stderr}");
    assert!(
        stdout.contains("stopping: asking 2 running run(s) to checkpoint"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("stopped: {}", RUNS[0])),
        "{stdout}"
    );
    assert!(
        stderr.contains("interrupted: the stopped runs checkpointed"),
        "{stderr}"
    );
    assert!(read(&first.join("train.log")).contains("interrupted: checkpoint saved at step"));
    assert!(!finished(&first));

    // Killed outright (SIGKILL): its children die with it; the runs stay resumable.
    let mut child = spawn_sweep(&fx, "sweeps/b");
    let second = b.join(RUNS[2]);
    let ready = wait_for(Duration::from_secs(60), || {
        second.join("checkpoint.safetensors").exists()
    });
    child.kill().unwrap();
    let killed = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&killed.stdout);
    assert!(ready, "no checkpoint: {stdout}");
    // The runs Ctrl-C stopped mid-epoch 2 resume from the step they stopped at.
    let resumed = stdout
        .lines()
        .find(|l| l.ends_with(&format!(": {}", RUNS[0])))
        .unwrap_or_default();
    let step: u64 = resumed
        .split("resume from step ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!((32..64).contains(&step), "{stdout}");
    let metrics = second.join("metrics.jsonl");
    std::thread::sleep(Duration::from_millis(300));
    let len = read(&metrics).len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        read(&metrics).len(),
        len,
        "a child of the killed sweep still trains"
    );

    // The rerun finishes what is left and ends with the straight sweep's table.
    let out = sweep(&fx, "sweeps/b", &[]);
    assert!(out.success(), "{out:?}");
    assert!(
        !out.stdout.contains(&format!("start: {}", RUNS[0])),
        "{}",
        out.stdout
    );
    for r in RUNS {
        assert!(
            finished(&b.join(r)),
            "{r}: {}\n{}",
            out.stdout,
            std::fs::read_to_string(b.join(r).join("train.log")).unwrap_or_default()
        );
    }
    assert_eq!(table_without_wall_time(&b), table_without_wall_time(&a));
}

#[test]
fn bad_sweeps_fail_before_any_run_starts_naming_the_key() {
    let fx = Fixture::new(2, 4, 2, 16);
    fx.write("tiny.toml", SWEEP);
    for (extra, says) in [
        (vec!["--set", "moco.qeue_size=64"], "qeue_size"),
        (
            vec!["--axis", "moco.negatives=queue,ring"],
            "moco.negatives",
        ),
        (vec!["--set", "seed=4"], "give `seeds = [...]`"),
        (vec!["--method", "dino"], "unknown method `dino`"),
    ] {
        let out = sweep(&fx, "sweeps/bad", &extra);
        assert_eq!(out.code, Some(1), "{extra:?}: {out:?}");
        assert!(out.stderr.contains(says), "{extra:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        assert!(
            !fx.path("sweeps/bad").exists(),
            "{extra:?}: the sweep started"
        );
    }
    fx.write("typo.toml", &SWEEP.replace("seeds =", "sedes ="));
    let out = run(
        BIN,
        fx.dir.path(),
        &["sweep", "typo.toml", "--out", "sweeps/bad"],
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("sedes") && out.stderr.contains("typo.toml"),
        "{}",
        out.stderr
    );
    let out = run(BIN, fx.dir.path(), &["sweep", "nope.toml"]);
    for name in [
        "moco-fig3-k",
        "moco-momentum",
        "moco-e2e-ablation",
        "moco-queue-staleness",
        "mocov2-vs-simclr",
        "mocov2-vs-simclr-lr",
    ] {
        assert!(
            out.stderr.contains("the shipped sweeps: ") && out.stderr.contains(name),
            "{name}: {}",
            out.stderr
        );
    }
    // The plan of a shipped sweep, without running anything.
    let out = run(BIN, fx.dir.path(), &["sweep", "moco-fig3-k", "--dry-run"]);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("33 runs, 33 to run"), "{}", out.stdout);
    assert!(
        out.stdout.contains("end-to-end_batch-1024/seed2 [start]"),
        "{}",
        out.stdout
    );
    assert!(!fx.path("runs").exists());
}
