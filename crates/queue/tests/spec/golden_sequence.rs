//! tests/golden/losses/infonce_queue_sequence: six InfoNCE steps with a
//! queue of K = 10 and batches of N = 4 (the loss uses the queue before the
//! step, then the step's keys are enqueued), for both wrap behaviours.

#[path = "../../../../tests/golden/golden.rs"]
mod golden;

use candle_core::{DType, Device, Tensor};
use golden::Array;
use mocca_losses::{InfoNCEConfig, InfoNCELoss};
use mocca_queue::{MomentumQueue, QueueMode};

fn tensor(v: &serde_json::Value) -> Tensor {
    let a = Array::from_json(v);
    Tensor::from_vec(a.f32(), a.shape.as_slice(), &Device::Cpu).unwrap()
}

fn replay(mode: QueueMode, expectation: &str) {
    let file = golden::load("losses/infonce_queue_sequence.json");
    let case = &file["cases"][0];
    let k = case["queue_size"].as_u64().unwrap() as usize;
    let loss = InfoNCELoss::new(InfoNCEConfig {
        temperature: case["tau"].as_f64().unwrap(),
        ..Default::default()
    })
    .unwrap();
    let mut queue = MomentumQueue::from_buffer(&tensor(&case["queue_init"]), mode).unwrap();
    assert_eq!(queue.size(), k);
    let steps = case[expectation].as_array().unwrap();
    for (i, (b, want)) in case["batches"]
        .as_array()
        .unwrap()
        .iter()
        .zip(steps)
        .enumerate()
    {
        let (q, key) = (tensor(&b["q"]), tensor(&b["k"]));
        let got = loss
            .forward(&q, &key, queue.negatives())
            .unwrap()
            .loss
            .to_scalar::<f32>()
            .unwrap() as f64;
        let expected = want["loss"].as_f64().unwrap();
        assert!(
            (got - expected).abs() <= 1e-5 * expected.abs().max(1.0),
            "{expectation} step {i}: loss {got} vs {expected}"
        );
        queue.enqueue(&key).unwrap();
        let after = Array::from_json(&want["queue_after"]);
        let buffer = queue
            .negatives()
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let worst = buffer
            .iter()
            .zip(&after.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= 1e-6,
            "{expectation} step {i}: queue differs by {worst:e}"
        );
        assert_eq!(
            queue.ptr() as u64,
            want["ptr_after"].as_u64().unwrap(),
            "{expectation} step {i}: ptr"
        );
    }
}

#[test]
fn ring_queue_reproduces_the_golden_ring_sequence() {
    replay(QueueMode::Ring, "ring");
}

#[test]
fn drop_remainder_queue_reproduces_lightlys_sequence() {
    replay(QueueMode::DropRemainder, "lightly");
}
