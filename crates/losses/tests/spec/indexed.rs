//! InfoNCE with per-query negatives (`forward_indexed`, InstDisc's memory-bank draws).

use crate::common::{
    array, assert_array_close, assert_loss_close, golden, pseudo_random, scalar, tensor, unit_rows,
    values, var, BOTH,
};
use candle_core::{DType, Device, Tensor, Var};
use mocca_losses::{Implementation, InfoNCEConfig, InfoNCELoss, LossError};

fn loss(tau: f64, implementation: Implementation) -> InfoNCELoss {
    InfoNCELoss::new(InfoNCEConfig {
        temperature: tau,
        implementation,
        ..Default::default()
    })
    .unwrap()
}

/// `[n, k]` row indices drawn with repeats from `0..rows` (xorshift, deterministic).
fn draws(n: usize, k: usize, rows: usize, seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let idx: Vec<u32> = (0..n * k)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % rows as u64) as u32
        })
        .collect();
    Tensor::from_vec(idx, (n, k), &Device::Cpu).unwrap()
}

#[test]
fn every_query_drawing_the_whole_queue_matches_every_golden_infonce_case() {
    for implementation in BOTH {
        for case in golden::load("losses/infonce.json")["cases"]
            .as_array()
            .unwrap()
        {
            let name = format!("{implementation:?} {}", case["name"]);
            let (q, k) = (
                var(&array(case, "q"), DType::F32),
                var(&array(case, "k"), DType::F32),
            );
            let queue = tensor(&array(case, "queue"), DType::F32);
            let (n, rows) = (q.dim(0).unwrap(), queue.dim(0).unwrap());
            let all: Vec<u32> = (0..n).flat_map(|_| 0..rows as u32).collect();
            let indices = Tensor::from_vec(all, (n, rows), &Device::Cpu).unwrap();
            let out = loss(case["tau"].as_f64().unwrap(), implementation)
                .forward_indexed(&q, &k, &queue, &indices)
                .unwrap();
            assert_loss_close(&name, &out.loss, case["loss"].as_f64().unwrap(), 1e-5);
            let grads = out.loss.backward().unwrap();
            let grad_q = grads.get(&q).unwrap();
            assert_array_close(
                &format!("{name} grad_q"),
                grad_q,
                &array(case, "grad_q"),
                1e-5,
            );
            let grad_k = grads.get(&k).unwrap();
            assert_array_close(
                &format!("{name} grad_k"),
                grad_k,
                &array(case, "grad_k"),
                1e-5,
            );
        }
    }
}

#[test]
fn each_query_is_scored_against_its_own_rows() {
    // Query i's loss with rows r_i equals the shared-set loss of that query alone with r_i.
    let (n, d, rows, k) = (5, 8, 40, 12);
    let q = pseudo_random(n, d, 1, 1.0, DType::F32);
    let key = pseudo_random(n, d, 2, 1.0, DType::F32);
    let bank = unit_rows(rows, d, 3, DType::F32);
    let idx = draws(n, k, rows, 4);
    let l = loss(0.2, Implementation::Auto);
    let batch = scalar(&l.forward_indexed(&q, &key, &bank, &idx).unwrap().loss);
    let mut per_query = 0.0;
    for i in 0..n {
        let rows_i = idx.get(i).unwrap();
        let negatives = bank.index_select(&rows_i, 0).unwrap();
        let (qi, ki) = (q.narrow(0, i, 1).unwrap(), key.narrow(0, i, 1).unwrap());
        per_query += scalar(&l.forward(&qi, &ki, &negatives).unwrap().loss);
    }
    per_query /= n as f64;
    assert!((batch - per_query).abs() < 1e-5, "{batch} vs {per_query}");
}

#[test]
fn fused_and_composed_paths_agree_on_repeated_per_query_draws() {
    // Several rows drawn twice, queries with gradients through q and k; the fused loss looks
    // the draws up in q̂·bankᵀ where they cover a twentieth of the bank or more, and gathers
    // them otherwise: both shapes.
    for (rows, k) in [(500, 300), (5000, 40)] {
        agree_on_draws(rows, k);
    }
}

fn agree_on_draws(rows: usize, k: usize) {
    let (n, d) = (37, 32);
    let bank = unit_rows(rows, d, 5, DType::F32);
    let idx = draws(n, k, rows, 6);
    let run = |implementation| {
        let q = Var::from_tensor(&pseudo_random(n, d, 7, 2.0, DType::F32)).unwrap();
        let key = Var::from_tensor(&pseudo_random(n, d, 8, 2.0, DType::F32)).unwrap();
        let out = loss(0.1, implementation)
            .forward_indexed(&q, &key, &bank, &idx)
            .unwrap();
        let g = out.loss.backward().unwrap();
        (
            scalar(&out.loss),
            scalar(&out.accuracy),
            values(g.get(&q).unwrap()),
            values(g.get(&key).unwrap()),
        )
    };
    let (fused, composed) = (run(Implementation::Auto), run(Implementation::Composed));
    assert!((fused.0 - composed.0).abs() < 1e-5 * composed.0.abs().max(1.0));
    assert_eq!(fused.1, composed.1, "accuracy");
    for (a, b) in [(&fused.2, &composed.2), (&fused.3, &composed.3)] {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        assert!(worst <= 1e-5 * scale, "gradient differs by {worst:e}");
    }
}

#[test]
fn indices_must_be_one_row_of_valid_bank_rows_per_query() {
    let (q, key) = (
        pseudo_random(4, 8, 1, 1.0, DType::F32),
        pseudo_random(4, 8, 2, 1.0, DType::F32),
    );
    let bank = unit_rows(10, 8, 3, DType::F32);
    for implementation in BOTH {
        let l = loss(0.2, implementation);
        let err = |idx: &Tensor| l.forward_indexed(&q, &key, &bank, idx).unwrap_err();
        let e = err(&draws(3, 5, 10, 1)).to_string();
        assert!(e.contains("3 rows but there are 4 queries"), "{e}");
        let e = err(&Tensor::new(&[[0u32, 10], [1, 2], [3, 4], [5, 6]], &Device::Cpu).unwrap());
        assert!(
            e.to_string().contains("row 10 but the bank has 10 rows"),
            "{e}"
        );
        let e = err(&Tensor::new(&[[0i64, -1], [1, 2], [3, 4], [5, 6]], &Device::Cpu).unwrap());
        assert!(e.to_string().contains("negative row -1"), "{e}");
        let e = err(&Tensor::zeros((4, 2), DType::F32, &Device::Cpu).unwrap());
        assert!(e.to_string().contains("expected u32 or i64"), "{e}");
        let e = err(&Tensor::zeros(4, DType::U32, &Device::Cpu).unwrap());
        assert!(e.to_string().contains("[4, K] matrix"), "{e}");
        let e = err(&Tensor::zeros((4, 0), DType::U32, &Device::Cpu).unwrap());
        assert!(matches!(e, LossError::NoNegatives { .. }), "{e}");
    }
}
