//! Momentum-encoder update and the cosine momentum schedule.

use candle_core::{DType, Device, Tensor, Var};
use mocca_queue::{cosine_momentum, cosine_momentum_to, BufferPolicy, MomentumUpdate, QueueError};

fn var(v: &[f32], dtype: DType) -> Var {
    Var::from_tensor(
        &Tensor::new(v, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
    )
    .unwrap()
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn named(list: &[(&str, &Var)]) -> Vec<(String, Var)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), (*v).clone()))
        .collect()
}

#[test]
fn update_moves_key_parameters_towards_the_query_in_place() {
    for dtype in [DType::F32, DType::F64, DType::BF16] {
        let (kw, kb) = (var(&[1., 2., 3., 4.], dtype), var(&[-8.], dtype));
        let (qw, qb) = (var(&[5., 6., 7., 8.], dtype), var(&[8.], dtype));
        // Lists in different orders: matched by name.
        let ema = MomentumUpdate::new(
            &named(&[("w", &kw), ("b", &kb)]),
            &named(&[("b", &qb), ("w", &qw)]),
        )
        .unwrap();
        ema.update(0.75).unwrap();
        assert_eq!(vals(&kw), [2., 3., 4., 5.], "{dtype:?}");
        assert_eq!(vals(&kb), [-4.], "{dtype:?}");
        assert_eq!(
            vals(&qw),
            [5., 6., 7., 8.],
            "{dtype:?}: the query encoder is not touched"
        );
        ema.update(0.5).unwrap();
        assert_eq!(vals(&kw), [3.5, 4.5, 5.5, 6.5], "{dtype:?}");
    }
}

#[test]
fn update_matches_pytorchs_f32_arithmetic_bit_for_bit() {
    let k: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
    let q: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.11).cos()).collect();
    let (kv, qv) = (var(&k, DType::F32), var(&q, DType::F32));
    let m = 0.999f64;
    MomentumUpdate::new(&named(&[("p", &kv)]), &named(&[("p", &qv)]))
        .unwrap()
        .update(m)
        .unwrap();
    // `param_k * m + param_q * (1 - m)` in f32: two products, one sum.
    let want: Vec<f32> = k
        .iter()
        .zip(&q)
        .map(|(a, b)| a * m as f32 + b * (1.0 - m) as f32)
        .collect();
    assert_eq!(vals(&kv), want);
}

#[test]
fn momentum_one_keeps_and_zero_copies() {
    let (k, q) = (var(&[1., 2.], DType::F32), var(&[3., 5.], DType::F32));
    let ema = MomentumUpdate::new(&named(&[("p", &k)]), &named(&[("p", &q)])).unwrap();
    ema.update(1.0).unwrap();
    assert_eq!(vals(&k), [1., 2.]);
    ema.update(0.0).unwrap();
    assert_eq!(vals(&k), [3., 5.]);
    assert!(matches!(
        ema.update(1.01).unwrap_err(),
        QueueError::InvalidMomentum(_)
    ));
    assert!(matches!(
        ema.update(f64::NAN).unwrap_err(),
        QueueError::InvalidMomentum(_)
    ));
}

fn buffers(mean: f32, count: i64) -> Vec<(String, Tensor)> {
    vec![
        (
            "bn.running_mean".to_string(),
            Tensor::new(&[mean, mean], &Device::Cpu).unwrap(),
        ),
        (
            "bn.num_batches_tracked".to_string(),
            Tensor::new(count, &Device::Cpu).unwrap(),
        ),
    ]
}

#[test]
fn batch_norm_buffers_follow_the_chosen_policy() {
    let expectations = [
        (BufferPolicy::Own, [0.0, 0.0], 3),
        (BufferPolicy::Copy, [4.0, 4.0], 10),
        (BufferPolicy::Average, [1.0, 1.0], 10),
    ];
    for (policy, mean, count) in expectations {
        let (k, q) = (var(&[0.], DType::F32), var(&[4.], DType::F32));
        let (kb, qb) = (buffers(0.0, 3), buffers(4.0, 10));
        let ema = MomentumUpdate::new(&named(&[("p", &k)]), &named(&[("p", &q)]))
            .unwrap()
            .with_buffers(&kb, &qb, policy)
            .unwrap();
        assert_eq!(ema.num_pairs(), (1, 2));
        ema.update(0.75).unwrap();
        assert_eq!(vals(&k), [1.0], "{policy:?}: parameters always averaged");
        assert_eq!(vals(&kb[0].1), mean, "{policy:?}: running mean");
        assert_eq!(
            kb[1].1.to_scalar::<i64>().unwrap(),
            count,
            "{policy:?}: num_batches_tracked"
        );
    }
}

#[test]
fn copy_query_to_key_initialises_parameters_and_buffers() {
    let (k, q) = (var(&[0., 0.], DType::F32), var(&[1., 2.], DType::F32));
    let (kb, qb) = (buffers(0.0, 0), buffers(3.0, 7));
    let ema = MomentumUpdate::new(&named(&[("p", &k)]), &named(&[("p", &q)]))
        .unwrap()
        .with_buffers(&kb, &qb, BufferPolicy::Own)
        .unwrap();
    ema.copy_query_to_key().unwrap();
    assert_eq!(vals(&k), [1., 2.]);
    assert_eq!(vals(&kb[0].1), [3., 3.]);
    assert_eq!(kb[1].1.to_scalar::<i64>().unwrap(), 7);
}

#[test]
fn mismatched_parameter_lists_name_the_tensor() {
    let (a, b, c) = (
        var(&[1., 2.], DType::F32),
        var(&[1., 2., 3.], DType::F32),
        var(&[1., 2.], DType::F64),
    );
    let e = MomentumUpdate::new(&named(&[("w", &a)]), &named(&[("v", &a)])).unwrap_err();
    assert!(
        matches!(e, QueueError::MissingParameter { ref name, present: "key", .. } if name == "w"),
        "{e}"
    );
    let e =
        MomentumUpdate::new(&named(&[("w", &a)]), &named(&[("w", &a), ("extra", &a)])).unwrap_err();
    assert!(
        matches!(e, QueueError::MissingParameter { ref name, present: "query", .. } if name == "extra"),
        "{e}"
    );
    let e = MomentumUpdate::new(&named(&[("w", &a)]), &named(&[("w", &b)])).unwrap_err();
    assert!(
        matches!(e, QueueError::ParameterMismatch { ref name, .. } if name == "w"),
        "{e}"
    );
    assert!(
        e.to_string().contains("[2]") && e.to_string().contains("[3]"),
        "{e}"
    );
    let e = MomentumUpdate::new(&named(&[("w", &a)]), &named(&[("w", &c)])).unwrap_err();
    assert!(matches!(e, QueueError::ParameterMismatch { .. }), "{e}");
    let e = MomentumUpdate::new(&named(&[("w", &a), ("w", &a)]), &named(&[("w", &a)])).unwrap_err();
    assert!(
        matches!(e, QueueError::DuplicateParameter { side: "key", .. }),
        "{e}"
    );
}

#[test]
fn cosine_momentum_goes_from_base_to_one() {
    assert_eq!(cosine_momentum(0.99, 0, 100), 0.99);
    assert!(
        (cosine_momentum(0.99, 25, 100)
            - (1.0 - 0.01 * (std::f64::consts::FRAC_1_SQRT_2 + 1.0) / 2.0))
            .abs()
            < 1e-15
    );
    assert!((cosine_momentum(0.99, 50, 100) - 0.995).abs() < 1e-15);
    assert_eq!(cosine_momentum(0.99, 100, 100), 1.0);
    assert_eq!(cosine_momentum(0.99, 150, 100), 1.0);
    assert_eq!(cosine_momentum(0.996, 3, 0), 1.0);
    let ms: Vec<f64> = (0..=10).map(|k| cosine_momentum(0.9, k, 10)).collect();
    assert!(ms.windows(2).all(|w| w[0] < w[1]), "increasing: {ms:?}");
}

#[test]
fn cosine_momentum_to_ends_at_solo_learns_final_tau() {
    // solo-learn's MoCo V2+: base_tau 0.99, final_tau 0.999.
    assert_eq!(cosine_momentum_to(0.99, 0.999, 0, 100), 0.99);
    assert!((cosine_momentum_to(0.99, 0.999, 50, 100) - 0.9945).abs() < 1e-15);
    assert_eq!(cosine_momentum_to(0.99, 0.999, 100, 100), 0.999);
    assert_eq!(cosine_momentum_to(0.99, 0.999, 250, 100), 0.999);
    assert_eq!(
        cosine_momentum_to(0.99, 1.0, 37, 100),
        cosine_momentum(0.99, 37, 100)
    );
}
