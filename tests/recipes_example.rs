//! The recipes crate's example is the run `cargo xtask train` makes: the same
//! recipe and keys through `examples/moco_cifar10.rs` and through the CLI
//! write bit-identical checkpoints after the same steps.

#[path = "../crates/recipes/examples/moco_cifar10.rs"]
mod example;

use mocca_tests::{differing_tensors, run, tensor_bytes, Fixture};

const BIN: &str = env!("CARGO_BIN_EXE_mocca-cli");

#[test]
fn the_example_and_the_cli_write_bit_identical_checkpoints() {
    let fx = Fixture::new(4, 32, 4, 16);
    let data = fx.data();
    let keys = [
        "model.width=0.0625",
        "batch_size=16",
        "epochs=2",
        "data.image_size=16",
        "moco.queue_size=40",
        "moco.bn_splits=2",
        "eval.knn_k=20",
        "run.stop_after_steps=11",
        "seed=3",
    ];
    let mut sets: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
    sets.push(format!("data.path={}", data.display()));
    let step = example::train(&fx.path("runs/example"), &sets).unwrap();
    assert_eq!(step, 11);

    let mut args = vec!["train", "moco", "--out", "runs/cli"];
    let set_args: Vec<String> = sets
        .iter()
        .flat_map(|s| ["--set".into(), s.clone()])
        .collect();
    args.extend(set_args.iter().map(String::as_str));
    let out = run(BIN, fx.dir.path(), &args);
    assert!(out.success(), "{out:?}");

    let (a, b) = (
        fx.path("runs/example/checkpoint.safetensors"),
        fx.path("runs/cli/checkpoint.safetensors"),
    );
    assert!(tensor_bytes(&a).len() > 100, "a whole MoCo state");
    let diff = differing_tensors(&a, &b);
    assert!(
        diff.is_empty(),
        "{} tensors differ, e.g. {:?}",
        diff.len(),
        &diff[..diff.len().min(5)]
    );
}
