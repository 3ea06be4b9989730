//! MomentumQueue: ring semantics, wrap-around, no-copy reads, errors, state.

use candle_core::{DType, Device, Tensor};
use mocca_queue::{MomentumQueue, MomentumQueueConfig, QueueError, QueueMode};

const D: usize = 16;

/// Key number `id` as a raw vector whose normalisation is exact: ±2^s on one axis.
fn key(id: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; D];
    let sign = if (id / D).is_multiple_of(2) {
        1.0
    } else {
        -1.0
    };
    v[id % D] = sign * (1 << (id % 5)) as f32;
    v
}

fn unit_key(id: usize) -> Vec<f32> {
    key(id)
        .iter()
        .map(|x| x.signum() * (x.abs() > 0.0) as u8 as f32)
        .collect()
}

fn batch(first: usize, n: usize) -> Tensor {
    let data: Vec<f32> = (first..first + n).flat_map(key).collect();
    Tensor::from_vec(data, (n, D), &Device::Cpu).unwrap()
}

fn rows(q: &MomentumQueue) -> Vec<Vec<f32>> {
    q.negatives().to_vec2::<f32>().unwrap()
}

fn queue(size: usize, mode: QueueMode) -> MomentumQueue {
    MomentumQueue::new(
        MomentumQueueConfig {
            size,
            dim: D,
            seed: 5,
            mode,
        },
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn ring_matches_a_plain_model_over_many_enqueues_of_varying_size() {
    let k = 10;
    let mut q = queue(k, QueueMode::Ring);
    let mut model: Vec<Vec<f32>> = rows(&q);
    let mut ptr = 0;
    let mut next_id = 0;
    // Batch sizes that are and are not divisors of K, including N = K.
    for (step, n) in [3usize, 4, 10, 1, 7, 6, 9, 2, 5, 8]
        .iter()
        .cycle()
        .take(60)
        .enumerate()
    {
        q.enqueue(&batch(next_id, *n)).unwrap();
        for r in 0..*n {
            model[(ptr + r) % k] = unit_key(next_id + r);
        }
        ptr = (ptr + n) % k;
        next_id += n;
        assert_eq!(rows(&q), model, "buffer after step {step}");
        assert_eq!(q.ptr(), ptr, "pointer after step {step}");
        assert_eq!(q.step(), step as u64 + 1);
    }
}

#[test]
fn enqueue_past_the_end_writes_the_tail_then_wraps_to_the_front() {
    let mut q = queue(5, QueueMode::Ring);
    let init = rows(&q);
    q.enqueue(&batch(0, 3)).unwrap();
    q.enqueue(&batch(3, 3)).unwrap();
    let got = rows(&q);
    assert_eq!(got[3], unit_key(3));
    assert_eq!(got[4], unit_key(4));
    assert_eq!(got[0], unit_key(5));
    assert_eq!(got[1], unit_key(1));
    assert_eq!(got[2], unit_key(2));
    assert_ne!(got[0], init[0]);
    assert_eq!(q.ptr(), 1);
}

#[test]
fn drop_remainder_mode_discards_keys_that_do_not_fit_before_the_end_like_lightly() {
    let mut q = queue(5, QueueMode::DropRemainder);
    let init = rows(&q);
    q.enqueue(&batch(0, 3)).unwrap();
    q.enqueue(&batch(3, 3)).unwrap(); // rows 3, 4 written; key 5 dropped
    let got = rows(&q);
    assert_eq!(
        got[..5],
        [
            unit_key(0),
            unit_key(1),
            unit_key(2),
            unit_key(3),
            unit_key(4)
        ]
    );
    assert_eq!(q.ptr(), 0);
    q.enqueue(&batch(6, 2)).unwrap();
    assert_eq!(rows(&q)[0], unit_key(6));
    assert_ne!(init[0], unit_key(6));
    assert_eq!(q.ptr(), 2);
}

#[test]
fn negatives_is_the_live_buffer_not_a_copy() {
    let mut q = queue(4, QueueMode::Ring);
    let held = q.negatives().clone();
    q.enqueue(&batch(0, 2)).unwrap();
    assert_eq!(held.to_vec2::<f32>().unwrap()[1], unit_key(1));
}

#[test]
fn initial_queue_is_seeded_random_unit_rows() {
    let cfg = MomentumQueueConfig {
        size: 64,
        dim: 8,
        seed: 11,
        mode: QueueMode::Ring,
    };
    let a = MomentumQueue::new(cfg, &Device::Cpu).unwrap();
    let b = MomentumQueue::new(cfg, &Device::Cpu).unwrap();
    let c = MomentumQueue::new(MomentumQueueConfig { seed: 12, ..cfg }, &Device::Cpu).unwrap();
    assert_eq!(rows(&a), rows(&b));
    assert_ne!(rows(&a), rows(&c));
    for r in rows(&a) {
        let norm: f32 = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6);
    }
    // Uniform directions: the mean row is near zero.
    let mean: f32 = rows(&a).iter().map(|r| r[0]).sum::<f32>() / 64.0;
    assert!(mean.abs() < 0.15, "mean of the first coordinate {mean}");
}

#[test]
fn keys_of_another_width_are_a_dim_mismatch() {
    let mut q = queue(8, QueueMode::Ring);
    let keys = Tensor::ones((2, D + 1), DType::F32, &Device::Cpu).unwrap();
    let e = q.enqueue(&keys).unwrap_err();
    assert!(
        matches!(e, QueueError::DimMismatch { name: "keys", expected: D, got } if got == D + 1),
        "{e}"
    );
    assert_eq!(q.ptr(), 0);
    assert_eq!(q.step(), 0);
}

#[test]
fn a_batch_larger_than_the_queue_is_rejected() {
    let mut q = queue(4, QueueMode::Ring);
    let e = q.enqueue(&batch(0, 5)).unwrap_err();
    assert!(
        matches!(e, QueueError::BatchLargerThanQueue { batch: 5, size: 4 }),
        "{e}"
    );
    assert_eq!(q.ptr(), 0);
}

#[test]
fn bad_configs_and_keys_name_the_problem() {
    let e = MomentumQueue::new(
        MomentumQueueConfig {
            size: 0,
            ..Default::default()
        },
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(e, QueueError::ZeroSize { .. }), "{e}");
    let e = MomentumQueue::new(
        MomentumQueueConfig {
            dim: 0,
            ..Default::default()
        },
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(e, QueueError::ZeroSize { .. }), "{e}");
    let mut q = queue(4, QueueMode::Ring);
    let e = q
        .enqueue(&Tensor::ones(D, DType::F32, &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(matches!(e, QueueError::NotAMatrix { .. }), "{e}");
    let e = q
        .enqueue(&Tensor::ones((0, D), DType::F32, &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(matches!(e, QueueError::EmptyBatch { .. }), "{e}");
    let e = q
        .enqueue(&Tensor::ones((2, D), DType::U32, &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(matches!(e, QueueError::UnsupportedDType { .. }), "{e}");
}

#[test]
fn half_precision_keys_are_stored_as_f32_unit_rows() {
    let mut q = queue(4, QueueMode::Ring);
    q.enqueue(&batch(0, 2).to_dtype(DType::BF16).unwrap())
        .unwrap();
    assert_eq!(q.negatives().dtype(), DType::F32);
    assert_eq!(rows(&q)[1], unit_key(1));
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "mocca-queue-{}-{name}.safetensors",
        std::process::id()
    ))
}

#[test]
fn state_round_trips_bit_for_bit_and_continues_identically() {
    for mode in [QueueMode::Ring, QueueMode::DropRemainder] {
        let mut q = queue(7, mode);
        q.enqueue(&batch(0, 3)).unwrap();
        q.enqueue(&batch(3, 3)).unwrap();
        let path = temp_path(&format!("{mode:?}"));
        q.save(&path).unwrap();
        let mut r = MomentumQueue::load(&path, &Device::Cpu).unwrap();
        std::fs::remove_file(&path).unwrap();
        let bits = |q: &MomentumQueue| {
            rows(q)
                .concat()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&r), bits(&q));
        assert_eq!(
            (r.ptr(), r.step(), r.mode(), r.size(), r.dim()),
            (q.ptr(), q.step(), q.mode(), 7, D)
        );
        q.enqueue(&batch(6, 4)).unwrap();
        r.enqueue(&batch(6, 4)).unwrap();
        assert_eq!(bits(&r), bits(&q));
        assert_eq!(r.ptr(), q.ptr());
    }
}

#[test]
fn loading_an_inconsistent_state_is_an_error() {
    let q = queue(4, QueueMode::Ring);
    let mut state = q.state_dict().unwrap();
    state.insert("queue.ptr".into(), Tensor::new(4i64, &Device::Cpu).unwrap());
    let e = MomentumQueue::from_state_dict(&state, &Device::Cpu).unwrap_err();
    assert!(matches!(e, QueueError::InvalidState(_)), "{e}");
    state.remove("queue.step");
    state.insert("queue.ptr".into(), Tensor::new(0i64, &Device::Cpu).unwrap());
    let e = MomentumQueue::from_state_dict(&state, &Device::Cpu).unwrap_err();
    assert!(
        matches!(e, QueueError::MissingStateTensor { ref name } if name == "queue.step"),
        "{e}"
    );
    let e = MomentumQueue::load(temp_path("does-not-exist"), &Device::Cpu).unwrap_err();
    assert!(matches!(e, QueueError::Io { .. }), "{e}");
}
