//! Interrupted runs resume from their last checkpoint and end with exactly
//! the weights (and optimiser state, queue, counters) of a run that was never
//! interrupted.

use mocca_tests::{
    differing_tensors, metric_steps, run, spawn, temp_files, tensor_bytes, tiny_config, wait_for,
    Fixture,
};
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_mocca-cli");
/// 4 classes x 128 images at batch 16: 32 steps per epoch, 2 epochs. Long
/// epochs leave the test ~30 steps of slack to land its signal mid-epoch
/// even on a loaded machine.
const STEPS_PER_EPOCH: u64 = 32;
const TOTAL: u64 = 64;

fn fixture() -> (Fixture, Vec<String>) {
    let fx = Fixture::new(4, 128, 4, 16);
    let cfg = fx.write("tiny.toml", &tiny_config("mocov2", 2, 16));
    let data = fx.data();
    let base = vec![
        "train".to_string(),
        "--config".into(),
        cfg.to_str().unwrap().into(),
        "--data".into(),
        data.to_str().unwrap().into(),
    ];
    (fx, base)
}

fn args<'a>(base: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
        .collect()
}

fn last_step(run: &Path) -> u64 {
    metric_steps(run)
        .iter()
        .filter(|r| r.0 == "step")
        .map(|r| r.1)
        .max()
        .unwrap_or(0)
}

fn checkpoint_step(run: &Path) -> u64 {
    let t = tensor_bytes(&run.join("checkpoint.safetensors"));
    i64::from_le_bytes(t["step"].2.clone().try_into().unwrap()) as u64
}

/// The reference: the same run, never interrupted.
fn uninterrupted(fx: &Fixture, base: &[String]) -> std::path::PathBuf {
    let out = run(BIN, fx.dir.path(), &args(base, &["--out", "runs/straight"]));
    assert!(out.success(), "{out:?}");
    fx.path("runs/straight")
}

fn assert_same_final_state(reference: &Path, resumed: &Path) {
    assert_eq!(checkpoint_step(resumed), TOTAL);
    let diff = differing_tensors(
        &reference.join("checkpoint.safetensors"),
        &resumed.join("checkpoint.safetensors"),
    );
    assert!(
        diff.is_empty(),
        "{} tensors differ after resume, e.g. {:?}",
        diff.len(),
        &diff[..diff.len().min(5)]
    );
    // Each step recorded exactly once: records after the checkpoint were
    // dropped and written again.
    let steps: Vec<u64> = metric_steps(resumed)
        .iter()
        .filter(|r| r.0 == "step")
        .map(|r| r.1)
        .collect();
    assert_eq!(steps, (1..=TOTAL).collect::<Vec<_>>());
}

#[test]
fn a_run_killed_mid_epoch_resumes_to_bit_identical_weights() {
    let (fx, base) = fixture();
    let reference = uninterrupted(&fx, &base);

    let run_dir = fx.path("runs/killed");
    let mut child = spawn(BIN, fx.dir.path(), &args(&base, &["--out", "runs/killed"]));
    // Kill two steps after the end-of-epoch-1 checkpoint exists.
    let ready = wait_for(Duration::from_secs(120), || {
        run_dir.join("checkpoint.safetensors").exists()
            && last_step(&run_dir) >= STEPS_PER_EPOCH + 2
    });
    child.kill().expect("SIGKILL");
    let status = child.wait().unwrap();
    assert!(ready, "the run never got past its first checkpoint");
    assert_eq!(
        status.code(),
        None,
        "the child was killed by the signal, not finished"
    );
    let killed_at = last_step(&run_dir);
    eprintln!("killed after step {killed_at}");
    assert!(
        killed_at > STEPS_PER_EPOCH && killed_at < 2 * STEPS_PER_EPOCH,
        "the kill should land mid-epoch 2, it landed after step {killed_at}"
    );
    assert_eq!(
        checkpoint_step(&run_dir),
        STEPS_PER_EPOCH,
        "the checkpoint is the end of epoch 1"
    );

    // A write killed half-way leaves only a temp file, never a half checkpoint.
    std::fs::write(
        run_dir.join(".checkpoint.safetensors.tmp-99999"),
        b"half a checkpoint",
    )
    .unwrap();
    let resumed = run(BIN, fx.dir.path(), &["train", "--resume", "runs/killed"]);
    assert!(resumed.success(), "{resumed:?}");
    // The killed trainer's lock is taken over, saying whose it was.
    assert!(
        resumed.stderr.contains(&format!(
            "taking over the run lock left by pid {}",
            child.id()
        )),
        "{}",
        resumed.stderr
    );
    assert!(
        resumed
            .stderr
            .contains(&format!("resuming runs/killed from step {STEPS_PER_EPOCH}")),
        "{}",
        resumed.stderr
    );
    assert!(
        temp_files(&run_dir).is_empty(),
        "{:?}",
        temp_files(&run_dir)
    );
    assert_same_final_state(&reference, &run_dir);
}

#[cfg(unix)]
#[test]
fn ctrl_c_checkpoints_at_the_next_step_and_the_resumed_run_matches() {
    let (fx, base) = fixture();
    let reference = uninterrupted(&fx, &base);

    let run_dir = fx.path("runs/interrupted");
    let child = spawn(
        BIN,
        fx.dir.path(),
        &args(&base, &["--out", "runs/interrupted"]),
    );
    let ready = wait_for(Duration::from_secs(120), || last_step(&run_dir) >= 3);
    // SAFETY: plain kill(2) on our own child's pid.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(sent, 0, "kill(SIGINT) failed");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(ready, "the run never started stepping: {stderr}");
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted: checkpoint saved at step"),
        "{stderr}"
    );
    let stopped = checkpoint_step(&run_dir);
    assert_eq!(
        stopped,
        last_step(&run_dir),
        "checkpoint at the step boundary after the signal"
    );
    assert!(stopped < STEPS_PER_EPOCH, "mid-epoch 1 (step {stopped})");

    let resumed = run(
        BIN,
        fx.dir.path(),
        &["train", "--resume", "runs/interrupted"],
    );
    assert!(resumed.success(), "{resumed:?}");
    assert_same_final_state(&reference, &run_dir);
}

#[test]
fn resume_refuses_to_change_training_settings() {
    let (fx, base) = fixture();
    let out = run(
        BIN,
        fx.dir.path(),
        &args(&base, &["--out", "runs/r", "--stop-after-steps", "3"]),
    );
    assert!(out.success(), "{out:?}");
    let changed = run(
        BIN,
        fx.dir.path(),
        &["train", "--resume", "runs/r", "--lr", "0.5"],
    );
    assert_eq!(changed.code, Some(1));
    assert!(
        changed.stderr.contains("optimizer.lr would change"),
        "{}",
        changed.stderr
    );
    // The data may move, but it must be the same dataset.
    mocca_tests::write_image_folder(&fx.path("other"), 4, 50, 4, 16);
    let other = run(
        BIN,
        fx.dir.path(),
        &["train", "--resume", "runs/r", "--data", "other"],
    );
    assert_eq!(other.code, Some(1));
    assert!(
        other.stderr.contains("was taken on 512 training images")
            && other.stderr.contains("has 200"),
        "{}",
        other.stderr
    );
    // Run settings may change: stop after two more steps.
    let more = run(
        BIN,
        fx.dir.path(),
        &[
            "train",
            "--resume",
            "runs/r",
            "--stop-after-steps",
            "5",
            "--knn-every",
            "0",
        ],
    );
    assert!(more.success(), "{more:?}");
    assert_eq!(checkpoint_step(&fx.path("runs/r")), 5);
    // A stop is not part of the run: resuming without one runs to the end.
    let rest = run(BIN, fx.dir.path(), &["train", "--resume", "runs/r"]);
    assert!(rest.success(), "{rest:?}");
    assert_eq!(checkpoint_step(&fx.path("runs/r")), TOTAL);
}

#[test]
fn a_second_trainer_on_a_running_folder_exits_at_once_naming_the_holder() {
    let (fx, base) = fixture();
    let run_dir = fx.path("runs/busy");
    // Long enough to still be running when the others try.
    let mut child = spawn(
        BIN,
        fx.dir.path(),
        &args(&base, &["--out", "runs/busy", "--epochs", "100"]),
    );
    let ready = wait_for(Duration::from_secs(120), || {
        run_dir.join("checkpoint.safetensors").exists()
    });
    let second = run(BIN, fx.dir.path(), &["train", "--resume", "runs/busy"]);
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    assert!(ready, "the first run never checkpointed");
    assert!(
        still_running,
        "the first run ended before the second started"
    );
    assert_eq!(second.code, Some(1), "{second:?}");
    assert!(
        second
            .stderr
            .contains("runs/busy is in use by another trainer")
            && second
                .stderr
                .contains(&format!("pid {} on host", child.id())),
        "{}",
        second.stderr
    );
    // The second trainer wrote nothing: the first one's records are whole.
    let steps: Vec<u64> = metric_steps(&run_dir)
        .iter()
        .filter(|r| r.0 == "step")
        .map(|r| r.1)
        .collect();
    assert_eq!(steps, (1..=steps.len() as u64).collect::<Vec<_>>());
}

#[test]
fn a_damaged_checkpoint_resumes_from_the_previous_one_saying_so() {
    let (fx, base) = fixture();
    let reference = uninterrupted(&fx, &base);
    let run_dir = fx.path("runs/damaged");
    let out = run(
        BIN,
        fx.dir.path(),
        &args(
            &base,
            &["--out", "runs/damaged", "--stop-after-steps", "40"],
        ),
    );
    assert!(out.success(), "{out:?}");
    // Two bytes flipped in the middle of the newest checkpoint (step 40);
    // the previous one (end of epoch 1) is beside it.
    let newest = run_dir.join("checkpoint.safetensors");
    assert!(run_dir.join("checkpoint.1.safetensors").exists());
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    bytes[mid + 3] ^= 0x04;
    std::fs::write(&newest, &bytes).unwrap();

    let resumed = run(BIN, fx.dir.path(), &["train", "--resume", "runs/damaged"]);
    assert!(resumed.success(), "{resumed:?}");
    for want in [
        "warning: not resuming from runs/damaged/checkpoint.safetensors",
        "does not match its checksum",
        "kept as runs/damaged/checkpoint.safetensors.damaged",
        "resuming from the previous checkpoint runs/damaged/checkpoint.1.safetensors instead",
        &format!("resuming runs/damaged from step {STEPS_PER_EPOCH}"),
    ] {
        assert!(resumed.stderr.contains(want), "{want}: {}", resumed.stderr);
    }
    assert_eq!(
        std::fs::read(run_dir.join("checkpoint.safetensors.damaged")).unwrap(),
        bytes,
        "nothing lost: the damaged file is kept as it was"
    );
    assert_same_final_state(&reference, &run_dir);
}

/// The `lr` of each step record of a run, by step.
fn step_lrs(run: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let field = |l: &str, key: &str| -> Option<String> {
        let v = l.split(&format!("\"{key}\":")).nth(1)?;
        Some(v.split([',', '}']).next()?.trim().to_string())
    };
    text.lines()
        .filter(|l| l.contains("\"kind\":\"step\""))
        .map(|l| {
            (
                field(l, "step").unwrap().parse().unwrap(),
                field(l, "lr").unwrap().parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_finished_run_extends_to_more_epochs_on_the_longer_schedule_and_a_shorter_one_is_refused() {
    let (fx, base) = fixture();
    let out = run(BIN, fx.dir.path(), &args(&base, &["--out", "runs/ext"]));
    assert!(out.success(), "{out:?}");
    assert_eq!(checkpoint_step(&fx.path("runs/ext")), TOTAL);

    let shorter = run(
        BIN,
        fx.dir.path(),
        &["train", "--resume", "runs/ext", "--epochs", "1"],
    );
    assert_eq!(shorter.code, Some(1), "{shorter:?}");
    assert!(
        shorter
            .stderr
            .contains("would shorten the run from 2 epochs")
            && shorter.stderr.contains("--stop-after-steps"),
        "{}",
        shorter.stderr
    );

    let longer = run(
        BIN,
        fx.dir.path(),
        &["train", "--resume", "runs/ext", "--epochs", "4"],
    );
    assert!(longer.success(), "{longer:?}");
    assert!(
        longer.stderr.contains(
            "extending the run from 2 to 4 epochs: the learning-rate schedule is rebuilt"
        ),
        "{}",
        longer.stderr
    );
    assert_eq!(checkpoint_step(&fx.path("runs/ext")), 2 * TOTAL);
    // Epochs 3 and 4 train at the rates of a 4-epoch run (the colab's
    // per-epoch cosine: epoch 3 at a quarter-ish of the base rate, epoch 4 at 0).
    let four = run(
        BIN,
        fx.dir.path(),
        &args(&base, &["--out", "runs/four", "--epochs", "4"]),
    );
    assert!(four.success(), "{four:?}");
    let tail = |run: &Path| -> Vec<(u64, f64)> {
        step_lrs(run).into_iter().filter(|r| r.0 > TOTAL).collect()
    };
    let (extended, fresh) = (tail(&fx.path("runs/ext")), tail(&fx.path("runs/four")));
    assert_eq!(extended.len(), TOTAL as usize);
    assert_eq!(extended, fresh);
    assert!(extended[0].1 > 0.0 && extended.last().unwrap().1 == 0.0);
}
