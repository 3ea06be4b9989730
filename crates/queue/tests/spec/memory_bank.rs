//! MemoryBank: momentum row updates by index, seeded negative draws, errors, state.

use candle_core::{DType, Device, Tensor};
use mocca_queue::{MemoryBank, MemoryBankConfig, QueueError};

fn bank(seed: u64) -> MemoryBank {
    MemoryBank::new(
        MemoryBankConfig {
            num_samples: 20,
            dim: 4,
            momentum: 0.5,
            seed,
            ..Default::default()
        },
        &Device::Cpu,
    )
    .unwrap()
}

fn all_rows(b: &MemoryBank) -> Vec<Vec<f32>> {
    b.bank().to_vec2::<f32>().unwrap()
}

fn unit(v: &[f64]) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| x / n).collect()
}

#[test]
fn update_blends_normalised_embeddings_into_the_indexed_rows_and_renormalises() {
    let mut b = MemoryBank::new(
        MemoryBankConfig {
            num_samples: 20,
            dim: 4,
            momentum: 0.75,
            seed: 2,
            ..Default::default()
        },
        &Device::Cpu,
    )
    .unwrap();
    let before = all_rows(&b);
    let z = Tensor::new(&[[3f32, 0., 0., 4.], [0., -2., 0., 0.]], &Device::Cpu).unwrap();
    b.update(&[7, 2], &z).unwrap();
    let after = all_rows(&b);
    for (row, zr) in [(7usize, [0.6, 0.0, 0.0, 0.8]), (2, [0.0, -1.0, 0.0, 0.0])] {
        let blended: Vec<f64> = before[row]
            .iter()
            .zip(zr)
            .map(|(&v, z)| 0.75 * v as f64 + 0.25 * z)
            .collect();
        let want = unit(&blended);
        for (g, w) in after[row].iter().zip(&want) {
            assert!(
                (*g as f64 - w).abs() < 1e-6,
                "row {row}: {:?} vs {want:?}",
                after[row]
            );
        }
    }
    for row in (0..20).filter(|r| *r != 7 && *r != 2) {
        assert_eq!(after[row], before[row], "row {row} untouched");
    }
    assert_eq!(b.step(), 1);
}

#[test]
fn rows_returns_copies_of_the_indexed_rows() {
    let b = bank(3);
    let all = all_rows(&b);
    let got = b.rows(&[5, 0, 5]).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(got, vec![all[5].clone(), all[0].clone(), all[5].clone()]);
}

#[test]
fn negatives_are_seeded_draws_of_bank_rows() {
    let (mut a, mut b) = (bank(4), bank(4));
    let all = all_rows(&a);
    let idx = a.sample_indices(50);
    assert!(idx.iter().all(|&i| i < 20));
    assert!(
        idx.iter().collect::<std::collections::HashSet<_>>().len() > 10,
        "draws cover the bank"
    );
    let negs = b.sample_negatives(50).unwrap().to_vec2::<f32>().unwrap();
    let want: Vec<Vec<f32>> = idx.iter().map(|&i| all[i].clone()).collect();
    assert_eq!(negs, want, "same seed, same draws");
    assert_ne!(a.sample_indices(50), idx, "the generator advances");
}

#[test]
fn per_query_negatives_are_k_seeded_draws_for_each_query() {
    let (mut a, mut b) = (bank(5), bank(5));
    let flat = a.sample_indices(3 * 40);
    let per_query = b.sample_negative_indices(3, 40).unwrap();
    assert_eq!(per_query.dims(), [3, 40]);
    assert_eq!(per_query.dtype(), DType::U32);
    let got: Vec<usize> = per_query
        .flatten_all()
        .unwrap()
        .to_vec1::<u32>()
        .unwrap()
        .into_iter()
        .map(|i| i as usize)
        .collect();
    assert_eq!(got, flat, "row-major draws from the same generator");
    let rows: Vec<Vec<u32>> = per_query.to_vec2().unwrap();
    assert_ne!(rows[0], rows[1], "each query has its own draws");
    assert!(matches!(
        b.sample_negative_indices(3, 0),
        Err(QueueError::ZeroSize { .. })
    ));
}

#[test]
fn bad_indices_and_shapes_name_the_problem() {
    let mut b = bank(5);
    let z = Tensor::ones((2, 4), DType::F32, &Device::Cpu).unwrap();
    let e = b.update(&[1, 20], &z).unwrap_err();
    assert!(
        matches!(e, QueueError::IndexOutOfRange { index: 20, len: 20 }),
        "{e}"
    );
    let e = b.update(&[3, 3], &z).unwrap_err();
    assert!(matches!(e, QueueError::DuplicateIndex { index: 3 }), "{e}");
    let e = b.update(&[1], &z).unwrap_err();
    assert!(
        matches!(
            e,
            QueueError::IndexCountMismatch {
                indices: 1,
                rows: 2,
                ..
            }
        ),
        "{e}"
    );
    let e = b
        .update(
            &[1, 2],
            &Tensor::ones((2, 5), DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            QueueError::DimMismatch {
                expected: 4,
                got: 5,
                ..
            }
        ),
        "{e}"
    );
    let e = b.sample_negatives(0).unwrap_err();
    assert!(matches!(e, QueueError::ZeroSize { .. }), "{e}");
    let e = MemoryBank::new(
        MemoryBankConfig {
            momentum: 1.5,
            ..Default::default()
        },
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(e, QueueError::InvalidMomentum(_)), "{e}");
    assert_eq!(b.step(), 0);
}

#[test]
fn state_round_trips_bit_for_bit_including_the_generator() {
    let mut b = bank(6);
    b.update(
        &[1, 4],
        &Tensor::new(&[[1f32, 2., 3., 4.], [0., 1., 0., 1.]], &Device::Cpu).unwrap(),
    )
    .unwrap();
    b.sample_negatives(7).unwrap();
    let path = std::env::temp_dir().join(format!("mocca-bank-{}.safetensors", std::process::id()));
    b.save(&path).unwrap();
    let mut r = MemoryBank::load(&path, &Device::Cpu).unwrap();
    std::fs::remove_file(&path).unwrap();
    let bits = |b: &MemoryBank| {
        all_rows(b)
            .concat()
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&r), bits(&b));
    assert_eq!((r.step(), r.momentum()), (b.step(), b.momentum()));
    assert_eq!(r.sample_indices(30), b.sample_indices(30));
}
