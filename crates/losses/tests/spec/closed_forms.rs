//! Values the loss definitions fix exactly, on both code paths.

use crate::common::{pseudo_random, scalar, unit_rows, values, BOTH};
use candle_core::{DType, Device, Tensor, Var};
use mocca_losses::{InfoNCEConfig, InfoNCELoss, NTXentConfig, NTXentLoss};

/// `n` copies of one raw vector (not unit length: the loss normalises).
fn repeated(n: usize, d: usize) -> Tensor {
    let row: Vec<f32> = (0..d).map(|i| (i as f32 * 0.7).cos() * 3.0).collect();
    Tensor::from_vec(row.repeat(n), (n, d), &Device::Cpu).unwrap()
}

fn unit(x: &Tensor) -> Tensor {
    x.broadcast_div(&x.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap())
        .unwrap()
}

#[test]
fn ntxent_of_identical_embeddings_is_ln_2n_minus_1() {
    for implementation in BOTH {
        for (n, tau) in [(1usize, 0.5), (2, 0.5), (8, 0.1), (50, 0.01), (16, 1e-3)] {
            let z = repeated(n, 12);
            let loss = NTXentLoss::new(NTXentConfig {
                temperature: tau,
                implementation,
            })
            .unwrap();
            let out = loss.forward(&z, &z).unwrap();
            let want = ((2 * n - 1) as f64).ln();
            let got = scalar(&out.loss);
            assert!(
                (got - want).abs() <= 1e-5 * want.max(1.0),
                "{implementation:?} n={n} tau={tau}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn infonce_with_k_identical_keys_is_ln_k_plus_1() {
    for implementation in BOTH {
        for (k, tau) in [(1usize, 0.2), (7, 0.07), (5000, 0.2), (300, 1e-3)] {
            let q = repeated(4, 10);
            let negatives = unit(&repeated(k, 10));
            let loss = InfoNCELoss::new(InfoNCEConfig {
                temperature: tau,
                implementation,
                ..Default::default()
            })
            .unwrap();
            let out = loss.forward(&q, &q, &negatives).unwrap();
            let want = ((k + 1) as f64).ln();
            let got = scalar(&out.loss);
            assert!(
                (got - want).abs() <= 1e-5 * want.max(1.0),
                "{implementation:?} k={k} tau={tau}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn ntxent_is_symmetric_under_swapping_the_views() {
    for implementation in BOTH {
        let a = Var::from_tensor(&pseudo_random(9, 16, 1, 2.0, DType::F32)).unwrap();
        let b = Var::from_tensor(&pseudo_random(9, 16, 2, 2.0, DType::F32)).unwrap();
        let loss = NTXentLoss::new(NTXentConfig {
            temperature: 0.2,
            implementation,
        })
        .unwrap();
        let ab = loss.forward(&a, &b).unwrap().loss;
        let ba = loss.forward(&b, &a).unwrap().loss;
        assert!(
            (scalar(&ab) - scalar(&ba)).abs() < 1e-6,
            "{implementation:?}"
        );
        let (g_ab, g_ba) = (ab.backward().unwrap(), ba.backward().unwrap());
        for (x, y) in [(&a, &a), (&b, &b)] {
            let (u, v) = (values(g_ab.get(x).unwrap()), values(g_ba.get(y).unwrap()));
            let worst = u
                .iter()
                .zip(&v)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f64::max);
            assert!(
                worst < 1e-7,
                "{implementation:?}: gradient differs by {worst:e}"
            );
        }
    }
}

#[test]
fn accuracy_counts_queries_whose_positive_has_the_largest_logit() {
    // Rows 0 and 1: key = query, far from every negative. Row 2: the key is
    // orthogonal to the query and a negative equals the query.
    let q = Tensor::new(
        &[[1f32, 0., 0., 0.], [0., 1., 0., 0.], [0., 0., 1., 0.]],
        &Device::Cpu,
    )
    .unwrap();
    let k = Tensor::new(
        &[[2f32, 0., 0., 0.], [0., 3., 0., 0.], [0., 0., 0., 1.]],
        &Device::Cpu,
    )
    .unwrap();
    let negatives = Tensor::new(&[[0f32, 0., 1., 0.], [-1., 0., 0., 0.]], &Device::Cpu).unwrap();
    for implementation in BOTH {
        let loss = InfoNCELoss::new(InfoNCEConfig {
            temperature: 0.1,
            implementation,
            ..Default::default()
        })
        .unwrap();
        let acc = scalar(&loss.forward(&q, &k, &negatives).unwrap().accuracy);
        assert!((acc - 2.0 / 3.0).abs() < 1e-6, "{implementation:?}: {acc}");
    }
}

#[test]
fn ntxent_accuracy_is_one_when_each_view_pair_is_distinct_from_the_rest() {
    let z = unit_rows(6, 8, 3, DType::F32);
    let noisy = (&z + pseudo_random(6, 8, 4, 0.01, DType::F32)).unwrap();
    for implementation in BOTH {
        let loss = NTXentLoss::new(NTXentConfig {
            temperature: 0.5,
            implementation,
        })
        .unwrap();
        let out = loss.forward(&z, &noisy).unwrap();
        assert_eq!(scalar(&out.accuracy), 1.0, "{implementation:?}");
    }
}
