//! MoCo with its three sources of negatives, on a tiny encoder.

mod common;

use candle_core::{Device, Tensor};
use common::{params, views, TinyEncoder};
use mocca_methods::moco::NegativeSource;
use mocca_methods::optim::OptimizerConfig;
use mocca_methods::schedule::LrSchedule;
use mocca_methods::{
    BankSampling, EncoderRole, FeatureLayer, FeatureSource, Method, MethodError, MoCo, MoCoConfig,
    SymmetricReduction,
};

fn config(negatives: NegativeSource, lr: f64) -> MoCoConfig {
    MoCoConfig {
        negatives,
        temperature: 0.2,
        symmetric: false,
        symmetric_reduction: SymmetricReduction::Mean,
        per_view_queues: false,
        momentum: 0.99,
        cosine_momentum: false,
        momentum_end: 1.0,
        end_to_end_detach_keys: false,
        shuffle_bn: false,
        optimizer: OptimizerConfig::sgd(lr, 0.9, 1e-4),
        lr_schedule: LrSchedule::Constant { lr },
        total_steps: 100,
        seed: 7,
    }
}

/// A learning rate at which one step of the tiny encoder lowers the loss.
const LR: f64 = 0.1;

fn moco(cfg: MoCoConfig, init_seed: u64, bn_splits: usize) -> MoCo<TinyEncoder> {
    MoCo::new(
        cfg,
        || Ok(TinyEncoder::new(init_seed, bn_splits)),
        &Device::Cpu,
    )
    .unwrap()
}

fn bank(num_samples: usize) -> NegativeSource {
    NegativeSource::MemoryBank {
        num_samples,
        num_negatives: 32,
        momentum: 0.5,
        sampling: BankSampling::PerQuery,
    }
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

fn assert_rows_close(a: &[Vec<f32>], b: &[Vec<f32>], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        for (u, v) in x.iter().zip(y) {
            assert!((u - v).abs() <= tol, "{x:?} vs {y:?}");
        }
    }
}

#[test]
fn one_step_lowers_the_queue_loss_against_no_step() {
    // The queue changes between the two evaluations (the batch's keys are
    // enqueued) in both runs alike; only the update differs.
    let batch = views(8, 1);
    let mut trained = moco(config(NegativeSource::queue(64), LR), 3, 1);
    let mut frozen = moco(config(NegativeSource::queue(64), 0.0), 3, 1);
    let first = trained.step(&batch, &[]).unwrap().loss;
    assert_eq!(frozen.step(&batch, &[]).unwrap().loss, first);
    let after_update = trained.step(&batch, &[]).unwrap().loss;
    let without_update = frozen.step(&batch, &[]).unwrap().loss;
    assert!(
        after_update < without_update - 1e-3,
        "{after_update} !< {without_update}"
    );
}

#[test]
fn one_step_lowers_the_end_to_end_loss_on_a_fixed_batch() {
    let batch = views(8, 1);
    let mut m = moco(config(NegativeSource::EndToEnd, LR), 3, 1);
    let before = m.step(&batch, &[]).unwrap();
    let after = m.step(&batch, &[]).unwrap();
    assert!(
        after.loss < before.loss - 1e-3,
        "{} !< {}",
        after.loss,
        before.loss
    );
    assert_eq!(before.momentum, None);
}

#[test]
fn one_step_lowers_the_memory_bank_loss_on_a_fixed_batch() {
    let batch = views(8, 1);
    let indices: Vec<usize> = (0..8).collect();
    let mut m = moco(config(bank(8), LR), 3, 1);
    let before = m.step(&batch, &indices).unwrap();
    let after = m.step(&batch, &indices).unwrap();
    assert!(
        after.loss < before.loss - 1e-3,
        "{} !< {}",
        after.loss,
        before.loss
    );
}

#[test]
fn key_encoder_gets_no_gradient_step_only_the_momentum_update() {
    // With m = 1 the momentum update leaves the key encoder as it is: any
    // gradient reaching it would show as a change.
    let mut cfg = config(NegativeSource::queue(64), 1.0);
    cfg.momentum = 1.0;
    let mut m = moco(cfg, 3, 1);
    let k0 = params(m.key_encoder().unwrap());
    let q0 = params(m.query_encoder());
    assert_eq!(
        k0, q0,
        "the key encoder starts as a copy of the query encoder"
    );
    m.step(&views(8, 1), &[]).unwrap();
    assert_eq!(params(m.key_encoder().unwrap()), k0);
    assert_ne!(params(m.query_encoder()), q0);
}

#[test]
fn key_encoder_is_the_ema_of_the_query_encoder_after_each_step() {
    let mut cfg = config(NegativeSource::queue(64), 0.5);
    cfg.momentum = 0.9;
    let mut m = moco(cfg, 3, 1);
    for step in 0..3 {
        let k_before = params(m.key_encoder().unwrap());
        let stats = m.step(&views(8, step), &[]).unwrap();
        assert_eq!(stats.momentum, Some(0.9));
        let q_after = params(m.query_encoder());
        let k_after = params(m.key_encoder().unwrap());
        let (a, b) = (0.9f32, (1.0f64 - 0.9) as f32);
        for (((name, k0), (_, q)), (_, k1)) in k_before.iter().zip(&q_after).zip(&k_after) {
            let want: Vec<f32> = k0.iter().zip(q).map(|(k, q)| k * a + q * b).collect();
            assert_eq!(k1, &want, "{name} at step {step}");
        }
    }
}

#[test]
fn cosine_momentum_schedule_rises_towards_one() {
    let mut cfg = config(NegativeSource::queue(64), 0.1);
    cfg.momentum = 0.99;
    cfg.cosine_momentum = true;
    cfg.total_steps = 10;
    let m = moco(cfg, 3, 1);
    assert!((m.momentum_at(0) - 0.99).abs() < 1e-12);
    assert!((m.momentum_at(5) - 0.995).abs() < 1e-12);
    assert_eq!(m.momentum_at(10), 1.0);
}

/// Keys the key encoder gives `x` right now (train mode, no shuffle).
fn expected_keys(m: &MoCo<TinyEncoder>, x: &Tensor) -> Vec<Vec<f32>> {
    use mocca_methods::Encoder;
    let k = m.key_encoder().unwrap().forward(x, true).unwrap();
    rows(&common::l2_rows(&k))
}

#[test]
fn queue_holds_the_last_keys_in_ring_order_and_wraps() {
    let mut m = moco(config(NegativeSource::queue(24), 0.5), 3, 1);
    let mut history = Vec::new();
    for step in 0..4 {
        let batch = views(8, 10 + step);
        history.push(expected_keys(&m, &batch[1]));
        m.step(&batch, &[]).unwrap();
    }
    let queue = rows(m.dictionary().unwrap());
    // Steps 0, 1, 2 filled rows 0..24; step 3 wrapped to rows 0..8.
    assert_eq!(m.queue_ptr(), Some(8));
    assert_rows_close(&queue[0..8], &history[3], 1e-6);
    assert_rows_close(&queue[8..16], &history[1], 1e-6);
    assert_rows_close(&queue[16..24], &history[2], 1e-6);
}

#[test]
fn symmetric_loss_enqueues_the_keys_of_both_views() {
    let mut cfg = config(NegativeSource::queue(32), 0.5);
    cfg.symmetric = true;
    let mut m = moco(cfg, 3, 1);
    let batch = views(8, 2);
    let k_of_view0 = expected_keys(&m, &batch[0]);
    let k_of_view1 = expected_keys(&m, &batch[1]);
    m.step(&batch, &[]).unwrap();
    assert_eq!(m.queue_ptr(), Some(16));
    let queue = rows(m.dictionary().unwrap());
    assert_rows_close(&queue[0..8], &k_of_view0, 1e-6);
    assert_rows_close(&queue[8..16], &k_of_view1, 1e-6);
}

fn per_view(size: usize) -> MoCoConfig {
    let mut cfg = config(NegativeSource::queue(size), 0.5);
    cfg.symmetric = true;
    cfg.per_view_queues = true;
    cfg
}

#[test]
fn a_queue_per_view_enqueues_each_views_keys_in_its_own_queue() {
    let mut m = moco(per_view(16), 3, 1);
    let batch = views(8, 2);
    let k_of_view0 = expected_keys(&m, &batch[0]);
    let k_of_view1 = expected_keys(&m, &batch[1]);
    m.step(&batch, &[]).unwrap();
    assert_eq!(m.queue_ptr(), Some(8));
    assert_rows_close(&rows(m.queue_of_view(0).unwrap())[0..8], &k_of_view0, 1e-6);
    assert_rows_close(&rows(m.queue_of_view(1).unwrap())[0..8], &k_of_view1, 1e-6);
}

#[test]
fn a_queue_per_view_scores_each_query_against_its_positives_view() {
    // The step's loss is solo-learn's MoCo V2+ loss (mocca-losses checks that form against
    // solo-learn's code) of the encoders' outputs and the queues as they were before it.
    use mocca_losses::{InfoNCEConfig, InfoNCELoss};
    use mocca_methods::Encoder;
    let mut m = moco(per_view(16), 3, 1);
    m.step(&views(8, 1), &[]).unwrap();
    let batch = views(8, 2);
    let q = |x: &Tensor| m.query_encoder().forward(x, true).unwrap();
    let k = |x: &Tensor| m.key_encoder().unwrap().forward(x, true).unwrap();
    let loss = InfoNCELoss::new(InfoNCEConfig {
        temperature: 0.2,
        symmetric_reduction: SymmetricReduction::Mean,
        ..Default::default()
    })
    .unwrap();
    let (queue0, queue1) = (
        m.queue_of_view(0).unwrap().copy().unwrap(),
        m.queue_of_view(1).unwrap().copy().unwrap(),
    );
    let score = |queue1: &Tensor, queue2: &Tensor| {
        let (q1, q2) = (q(&batch[0]), q(&batch[1]));
        let (k1, k2) = (k(&batch[0]), k(&batch[1]));
        let out = loss
            .forward_symmetric_per_view(&q1, &q2, &k1, &k2, queue1, queue2)
            .unwrap();
        out.loss.to_scalar::<f32>().unwrap() as f64
    };
    let (expected, swapped) = (score(&queue0, &queue1), score(&queue1, &queue0));
    let got = m.step(&batch, &[]).unwrap().loss;
    assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
    assert!(
        (got - swapped).abs() > 1e-4,
        "the queues must differ: {got} vs {swapped}"
    );
}

#[test]
fn a_queue_per_view_needs_the_symmetric_loss_with_a_queue() {
    let build = || Ok(TinyEncoder::new(0, 1));
    let mut cfg = per_view(16);
    cfg.symmetric = false;
    let err = MoCo::new(cfg, build, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("queue per view") && err.contains("symmetric"),
        "{err}"
    );
    let mut cfg = per_view(16);
    cfg.negatives = NegativeSource::EndToEnd;
    assert!(MoCo::new(cfg, build, &Device::Cpu).is_err());
}

#[test]
fn a_checkpoint_with_one_queue_does_not_load_into_a_queue_per_view() {
    let path =
        std::env::temp_dir().join(format!("mocca-perview-{}.safetensors", std::process::id()));
    let mut shared = config(NegativeSource::queue(16), 0.1);
    shared.symmetric = true;
    let mut one = moco(shared, 3, 1);
    one.step(&views(4, 1), &[]).unwrap();
    one.save(&path).unwrap();
    let mut two = moco(per_view(16), 3, 1);
    let err = two.load(&path).unwrap_err().to_string();
    std::fs::remove_file(&path).unwrap();
    assert!(err.contains("number of queues"), "{err}");
    assert_eq!(two.steps_done(), 0);
}

#[test]
fn cosine_momentum_ends_at_momentum_end() {
    let mut cfg = per_view(16);
    cfg.cosine_momentum = true;
    cfg.momentum_end = 0.999;
    cfg.total_steps = 10;
    let m = moco(cfg, 3, 1);
    assert_eq!(m.momentum_at(0), 0.99);
    assert!((m.momentum_at(5) - 0.9945).abs() < 1e-12);
    assert_eq!(m.momentum_at(10), 0.999);
}

#[test]
fn shuffle_bn_returns_keys_in_batch_order() {
    // With one BN group the permutation changes nothing but the order of the
    // batch statistics' sums, so the keys match the unshuffled ones.
    let run = |shuffle: bool| {
        let mut cfg = config(NegativeSource::queue(16), 0.5);
        cfg.shuffle_bn = shuffle;
        let mut m = moco(cfg, 3, 1);
        m.step(&views(8, 4), &[]).unwrap();
        rows(m.dictionary().unwrap())
    };
    assert_rows_close(&run(true)[0..8], &run(false)[0..8], 1e-5);
}

#[test]
fn shuffle_bn_with_split_groups_changes_the_key_statistics() {
    // With 2 split-BN groups the shuffled batch is normalised with other
    // group statistics: the keys differ from the unshuffled ones.
    let run = |shuffle: bool| {
        let mut cfg = config(NegativeSource::queue(16), 0.5);
        cfg.shuffle_bn = shuffle;
        let mut m = moco(cfg, 3, 2);
        m.step(&views(8, 4), &[]).unwrap();
        rows(m.dictionary().unwrap())
    };
    let (a, b) = (run(true), run(false));
    let diff: f32 = a[0..8]
        .iter()
        .flatten()
        .zip(b[0..8].iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .sum();
    assert!(diff > 1e-3, "{diff}");
}

#[test]
fn memory_bank_rows_move_towards_the_queries() {
    let mut m = moco(config(bank(16), 0.0), 3, 1);
    let batch = views(4, 5);
    let before = rows(m.dictionary().unwrap());
    use mocca_methods::Encoder;
    let q = common::l2_rows(&m.query_encoder().forward(&batch[0], true).unwrap());
    m.step(&batch, &[3, 7, 11, 15]).unwrap();
    let after = rows(m.dictionary().unwrap());
    let q = rows(&q);
    for (r, &i) in [3usize, 7, 11, 15].iter().enumerate() {
        // v = normalise(0.5 v + 0.5 q̂)
        let blend: Vec<f32> = before[i]
            .iter()
            .zip(&q[r])
            .map(|(v, q)| 0.5 * v + 0.5 * q)
            .collect();
        let norm = blend.iter().map(|x| x * x).sum::<f32>().sqrt();
        let want: Vec<f32> = blend.iter().map(|x| x / norm).collect();
        assert_rows_close(&[after[i].clone()], &[want], 1e-5);
    }
    assert_eq!(after[0], before[0], "rows of other samples are untouched");
}

#[test]
fn given_key_permutations_equal_the_drawn_ones_of_the_same_generator() {
    // A run whose permutations are passed in is the run that drew them.
    let mut cfg = config(NegativeSource::queue(16), 0.5);
    cfg.shuffle_bn = true;
    let (mut drawn, mut given) = (moco(cfg.clone(), 3, 2), moco(cfg, 3, 2));
    let batch = views(8, 4);
    let perm: Vec<usize> = mocca_methods::SplitMix64::new(7 ^ 0x5348_5546_464C_4542)
        .permutation(8)
        .into_iter()
        .map(|i| i as usize)
        .collect();
    let a = drawn.step(&batch, &[]).unwrap();
    let b = given
        .step_with_key_permutations(&batch, &[], &[perm])
        .unwrap();
    assert_eq!(a.loss, b.loss);
    assert_eq!(
        rows(drawn.dictionary().unwrap()),
        rows(given.dictionary().unwrap())
    );
}

#[test]
fn key_permutations_must_be_one_permutation_per_loss_term() {
    let mut m = moco(config(NegativeSource::queue(16), 0.5), 3, 1);
    let batch = views(4, 1);
    let err = |m: &mut MoCo<TinyEncoder>, p: &[Vec<usize>]| {
        m.step_with_key_permutations(&batch, &[], p)
            .unwrap_err()
            .to_string()
    };
    assert!(err(&mut m, &[]).contains("1 key permutation(s) needed"));
    assert!(err(&mut m, &[vec![0, 1, 1, 3]]).contains("not a permutation of 0..4"));
    assert!(err(&mut m, &[vec![0, 1, 2]]).contains("not a permutation of 0..4"));
    let mut b = moco(config(bank(16), 0.1), 3, 1);
    assert!(err(&mut b, &[vec![0, 1, 2, 3]]).contains("queue mode only"));
    assert_eq!((m.steps_done(), b.steps_done()), (0, 0));
}

#[test]
fn batch_unshuffle_undoes_batch_shuffle() {
    let x = views(5, 9).remove(0);
    let (shuffled, unshuffle) = mocca_methods::batch_shuffle(&x, &[3, 0, 4, 1, 2]).unwrap();
    assert_eq!(
        rows(&shuffled.flatten_from(1).unwrap())[0],
        rows(&x.flatten_from(1).unwrap())[3]
    );
    let back = mocca_methods::batch_unshuffle(&shuffled, &unshuffle).unwrap();
    assert_eq!(
        rows(&back.flatten_from(1).unwrap()),
        rows(&x.flatten_from(1).unwrap())
    );
}

#[test]
fn replace_queue_sets_the_keys_and_rewinds_the_pointer() {
    let mut m = moco(config(NegativeSource::queue(16), 0.5), 3, 1);
    m.step(&views(4, 1), &[]).unwrap();
    let keys = Tensor::ones((16, common::OUT), candle_core::DType::F32, &Device::Cpu)
        .unwrap()
        .affine(0.25, 0.0)
        .unwrap();
    m.replace_queue(&keys).unwrap();
    assert_eq!(m.queue_ptr(), Some(0));
    assert_eq!(rows(m.dictionary().unwrap()), rows(&keys));
    let wrong = Tensor::zeros((8, common::OUT), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = m.replace_queue(&wrong).unwrap_err().to_string();
    assert!(err.contains("[16, 8]") && err.contains("[8, 8]"), "{err}");
    let mut b = moco(config(bank(16), 0.1), 3, 1);
    assert!(b
        .replace_queue(&keys)
        .unwrap_err()
        .to_string()
        .contains("no queue"));
}

#[test]
fn per_query_and_shared_bank_draws_score_different_negatives() {
    let run = |sampling| {
        let negatives = NegativeSource::MemoryBank {
            num_samples: 64,
            num_negatives: 8,
            momentum: 0.5,
            sampling,
        };
        let mut m = moco(config(negatives, 0.1), 3, 1);
        m.step(&views(4, 2), &[1, 2, 3, 4]).unwrap().loss
    };
    let (per_query, shared) = (run(BankSampling::PerQuery), run(BankSampling::Shared));
    assert!(per_query.is_finite() && shared.is_finite());
    assert_ne!(per_query, shared);
}

#[test]
fn memory_bank_without_indices_is_an_error() {
    let mut m = moco(config(bank(16), 0.1), 3, 1);
    let err = m.step(&views(4, 1), &[]).unwrap_err().to_string();
    assert!(err.contains("dataset index"), "{err}");
    let err = m
        .step(&views(4, 1), &[0, 1, 2, 16])
        .unwrap_err()
        .to_string();
    assert!(err.contains("index 16"), "{err}");
}

#[test]
fn same_seed_gives_identical_runs() {
    let run = || {
        let mut cfg = config(NegativeSource::queue(32), 0.3);
        cfg.shuffle_bn = true;
        let mut m = moco(cfg, 3, 2);
        let stats: Vec<_> = (0..3).map(|s| m.step(&views(8, s), &[]).unwrap()).collect();
        (
            stats,
            params(m.query_encoder()),
            rows(m.dictionary().unwrap()),
        )
    };
    assert_eq!(run(), run());
}

fn resume_matches_straight_run(
    label: &str,
    negatives: NegativeSource,
    configure: fn(&mut MoCoConfig),
) {
    let mut cfg = config(negatives, 0.3);
    cfg.shuffle_bn = true;
    cfg.cosine_momentum = true;
    cfg.total_steps = 5;
    configure(&mut cfg);
    let idx = |s: u64| -> Vec<usize> { (0..8).map(|i| (i + 3 * s as usize) % 16).collect() };
    let mut straight = moco(cfg.clone(), 3, 2);
    let mut stats_straight = Vec::new();
    for s in 0..5 {
        stats_straight.push(straight.step(&views(8, s), &idx(s)).unwrap());
    }

    let dir = std::env::temp_dir().join(format!("mocca-moco-{}-{label}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ckpt.safetensors");
    let mut first = moco(cfg.clone(), 3, 2);
    let mut stats_resumed = Vec::new();
    for s in 0..2 {
        stats_resumed.push(first.step(&views(8, s), &idx(s)).unwrap());
    }
    first.save(&path).unwrap();
    drop(first);
    // A fresh process would build new encoders (other weights) and load.
    let mut resumed = moco(cfg, 99, 2);
    resumed.load(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(resumed.steps_done(), 2);
    for s in 2..5 {
        stats_resumed.push(resumed.step(&views(8, s), &idx(s)).unwrap());
    }
    assert_eq!(stats_resumed, stats_straight);
    assert_eq!(
        params(resumed.query_encoder()),
        params(straight.query_encoder())
    );
    if let (Some(a), Some(b)) = (resumed.key_encoder(), straight.key_encoder()) {
        assert_eq!(params(a), params(b));
        assert_eq!(a.running_mean(), b.running_mean());
    }
    assert_eq!(
        resumed.query_encoder().running_mean(),
        straight.query_encoder().running_mean()
    );
    match (resumed.dictionary(), straight.dictionary()) {
        (Some(a), Some(b)) => assert_eq!(rows(a), rows(b)),
        (None, None) => {}
        _ => panic!("dictionary presence differs"),
    }
    if let (Some(a), Some(b)) = (resumed.queue_of_view(1), straight.queue_of_view(1)) {
        assert_eq!(rows(a), rows(b));
    }
}

#[test]
fn resumed_queue_run_ends_bit_identical() {
    resume_matches_straight_run("queue", NegativeSource::queue(24), |_| {});
}

#[test]
fn resumed_symmetric_queue_run_ends_bit_identical() {
    resume_matches_straight_run("symmetric", NegativeSource::queue(40), |c| {
        c.symmetric = true
    });
}

#[test]
fn resumed_run_with_a_queue_per_view_ends_bit_identical() {
    resume_matches_straight_run("per-view", NegativeSource::queue(24), |c| {
        c.symmetric = true;
        c.per_view_queues = true;
        c.momentum_end = 0.999;
    });
}

#[test]
fn resumed_memory_bank_run_ends_bit_identical() {
    resume_matches_straight_run("bank", bank(16), |_| {});
}

#[test]
fn resumed_end_to_end_run_ends_bit_identical() {
    resume_matches_straight_run("e2e", NegativeSource::EndToEnd, |_| {});
}

fn bits(e: &dyn mocca_methods::Encoder) -> Vec<(String, Vec<u32>)> {
    params(e)
        .into_iter()
        .map(|(n, v)| (n, v.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

#[test]
fn non_finite_loss_is_an_error_and_changes_nothing() {
    use mocca_methods::Encoder;
    let mut m = moco(config(NegativeSource::queue(32), 0.5), 3, 1);
    m.step(&views(8, 1), &[]).unwrap();
    // A diverged query encoder: its head's bias is NaN.
    let (_, bias) = m
        .query_encoder()
        .named_parameters()
        .into_iter()
        .find(|(n, _)| n == "head.bias")
        .unwrap();
    bias.set(&Tensor::full(f32::NAN, common::OUT, &Device::Cpu).unwrap())
        .unwrap();
    let q0 = bits(m.query_encoder());
    let k0 = bits(m.key_encoder().unwrap());
    let queue0 = rows(m.dictionary().unwrap());
    let opt0 = m.optimizer().state_tensors().unwrap();
    match m.step(&views(8, 2), &[]) {
        Err(MethodError::NonFiniteLoss { step, .. }) => assert_eq!(step, 1),
        other => panic!("expected NonFiniteLoss, got {other:?}"),
    }
    assert_eq!(m.steps_done(), 1);
    assert_eq!(bits(m.query_encoder()), q0);
    assert_eq!(bits(m.key_encoder().unwrap()), k0);
    assert_eq!(rows(m.dictionary().unwrap()), queue0);
    assert_eq!(m.queue_ptr(), Some(8));
    let opt1 = m.optimizer().state_tensors().unwrap();
    for (name, t) in &opt0 {
        let a: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = opt1[name].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn embed_tags_features_with_their_encoder_and_layer() {
    let m = moco(config(NegativeSource::queue(32), 0.5), 3, 1);
    let x = &views(5, 1)[0];
    let src = m.default_eval_source();
    assert_eq!(
        src,
        FeatureSource::new(EncoderRole::Query, FeatureLayer::Backbone)
    );
    let f = m.embed(x, src).unwrap();
    assert_eq!((f.len(), f.dim()), (5, common::HIDDEN));
    let key_head = FeatureSource::new(EncoderRole::Key, FeatureLayer::Head);
    let f = m.embed(x, key_head).unwrap();
    assert_eq!((f.source(), f.dim()), (key_head, common::OUT));
}

/// The query encoder after one SGD step on the end-to-end loss of `batch`, computed by hand
/// from a fresh `TinyEncoder` of seed 3, the keys detached or not.
fn end_to_end_step_by_hand(batch: &[Tensor], detach_keys: bool) -> Vec<(String, Vec<f32>)> {
    use mocca_losses::{InfoNCEConfig, InfoNCELoss};
    use mocca_methods::optim::Optimizer;
    use mocca_methods::Encoder;
    let cfg = config(NegativeSource::EndToEnd, LR);
    let e = TinyEncoder::new(3, 1);
    let q = e.forward(&batch[0], true).unwrap();
    let k = e.forward(&batch[1], true).unwrap();
    let k = if detach_keys { k.detach() } else { k };
    let loss = InfoNCELoss::new(InfoNCEConfig {
        temperature: cfg.temperature,
        ..Default::default()
    })
    .unwrap();
    let grads = loss
        .forward_end_to_end(&q, &k)
        .unwrap()
        .loss
        .backward()
        .unwrap();
    let mut opt = Optimizer::new(e.named_parameters(), cfg.optimizer).unwrap();
    opt.set_lr(LR);
    opt.step(&grads).unwrap();
    params(&e)
}

#[test]
fn end_to_end_keys_carry_the_gradient_unless_detached() {
    let batch = views(8, 1);
    for detach in [false, true] {
        let mut cfg = config(NegativeSource::EndToEnd, LR);
        cfg.end_to_end_detach_keys = detach;
        let mut m = moco(cfg, 3, 1);
        m.step(&batch, &[]).unwrap();
        let got = params(m.query_encoder());
        let (same, other) = (
            end_to_end_step_by_hand(&batch, detach),
            end_to_end_step_by_hand(&batch, !detach),
        );
        let dist = |a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]| {
            a.iter()
                .zip(b)
                .flat_map(|((_, x), (_, y))| x.iter().zip(y).map(|(u, v)| (u - v).abs()))
                .fold(0f32, f32::max)
        };
        assert!(
            dist(&got, &same) < 1e-6,
            "detach {detach}: {}",
            dist(&got, &same)
        );
        assert!(
            dist(&got, &other) > 1e-4,
            "detach {detach}: {}",
            dist(&got, &other)
        );
    }
}

#[test]
fn detached_keys_are_an_end_to_end_option_only() {
    let mut cfg = config(NegativeSource::queue(16), LR);
    cfg.end_to_end_detach_keys = true;
    let build = || Ok(TinyEncoder::new(0, 1));
    let err = MoCo::new(cfg, build, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("end-to-end"), "{err}");
}

#[test]
fn end_to_end_has_no_key_encoder() {
    let m = moco(config(NegativeSource::EndToEnd, 0.5), 3, 1);
    let err = m
        .embed(
            &views(2, 1)[0],
            FeatureSource::new(EncoderRole::Key, FeatureLayer::Backbone),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("no key encoder"), "{err}");
    assert!(m.dictionary().is_none());
}

#[test]
fn the_memory_bank_trains_one_view_without_a_key_encoder() {
    let mut m = moco(config(bank(16), 0.1), 3, 1);
    assert!(m.key_encoder().is_none());
    let one = [views(4, 1)[0].clone()];
    let stats = m.step(&one, &[0, 1, 2, 3]).unwrap();
    assert_eq!((stats.step, stats.momentum), (1, None));
    let err = m
        .embed(
            &one[0],
            FeatureSource::new(EncoderRole::Key, FeatureLayer::Backbone),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("no key encoder"), "{err}");
}

#[test]
fn the_memory_bank_hands_out_each_querys_own_row_as_the_loss_scored_it() {
    let mut m = moco(config(bank(16), 0.1), 3, 1);
    let before: Vec<Vec<f32>> = m.memory_bank().unwrap().to_vec2().unwrap();
    let one = [views(4, 1)[0].clone()];
    m.step(&one, &[5, 0, 9, 2]).unwrap();
    let e = m.last_embeddings().unwrap();
    let own: Vec<Vec<f32>> = e.view1.unwrap().to_vec2().unwrap();
    let want: Vec<Vec<f32>> = [5, 0, 9, 2].iter().map(|&i| before[i].clone()).collect();
    assert_eq!(own, want);
    // The bank itself has moved on for those rows.
    let after: Vec<Vec<f32>> = m.memory_bank().unwrap().to_vec2().unwrap();
    assert_ne!(after[5], before[5]);
    assert_eq!(after[1], before[1]);
}

#[test]
fn mismatched_views_are_rejected() {
    let mut m = moco(config(NegativeSource::queue(32), 0.5), 3, 1);
    let mut v = views(8, 1);
    v[1] = v[1].narrow(0, 0, 4).unwrap();
    let err = m.step(&v, &[]).unwrap_err().to_string();
    assert!(err.contains("same shape"), "{err}");
    let err = m.step(&v[..1], &[]).unwrap_err().to_string();
    assert!(err.contains("2 views"), "{err}");
}

#[test]
fn invalid_configurations_are_rejected() {
    let build = || Ok(TinyEncoder::new(0, 1));
    let mut cfg = config(NegativeSource::queue(0), 0.1);
    let err = MoCo::new(cfg.clone(), build, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("queue"), "{err}");
    cfg.negatives = NegativeSource::queue(8);
    cfg.momentum = 1.5;
    let err = MoCo::new(cfg.clone(), build, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("momentum"), "{err}");
    cfg.momentum = 0.99;
    cfg.negatives = bank(16);
    cfg.symmetric = true;
    assert!(MoCo::new(cfg, build, &Device::Cpu).is_err());
}

#[test]
fn loading_a_checkpoint_of_another_queue_size_is_an_error() {
    let path = std::env::temp_dir().join(format!("mocca-qsize-{}.safetensors", std::process::id()));
    let mut small = moco(config(NegativeSource::queue(16), 0.1), 3, 1);
    small.step(&views(8, 1), &[]).unwrap();
    small.save(&path).unwrap();
    let mut big = moco(config(NegativeSource::queue(32), 0.1), 3, 1);
    let err = big.load(&path).unwrap_err().to_string();
    std::fs::remove_file(&path).unwrap();
    assert!(
        err.contains("queue") && err.contains("16") && err.contains("32"),
        "{err}"
    );
    assert_eq!(
        big.steps_done(),
        0,
        "a failed load leaves the method as it was"
    );
}

#[test]
fn methods_work_as_trait_objects() {
    let mut methods: Vec<Box<dyn Method>> = vec![
        Box::new(moco(config(NegativeSource::queue(16), 0.1), 3, 1)),
        Box::new(moco(config(NegativeSource::EndToEnd, 0.1), 3, 1)),
    ];
    for m in &mut methods {
        let s = m.step(&views(4, 1), &[]).unwrap();
        assert_eq!((s.step, m.steps_done(), m.name()), (1, 1, "moco"));
    }
}

#[test]
fn batches_that_could_fail_after_the_update_are_rejected_before_it() {
    let mut m = moco(config(NegativeSource::queue(6), 0.1), 3, 1);
    let q0 = params(m.query_encoder());
    let err = m.step(&views(8, 1), &[]).unwrap_err().to_string();
    assert!(err.contains("queue holds only 6"), "{err}");
    let mut b = moco(config(bank(16), 0.1), 3, 1);
    let err = b.step(&views(4, 1), &[1, 2, 2, 3]).unwrap_err().to_string();
    assert!(err.contains("index 2 appears twice"), "{err}");
    assert_eq!(params(m.query_encoder()), q0);
    assert_eq!((m.steps_done(), b.steps_done()), (0, 0));
}

#[test]
fn presets_build_for_short_runs_and_match_their_papers() {
    for epochs in [1, 200] {
        for mut cfg in [
            MoCoConfig::v1(256, 3, epochs),
            MoCoConfig::v2(256, 3, epochs),
            MoCoConfig::cifar10_colab(512, 3, epochs),
        ] {
            cfg.negatives = NegativeSource::queue(64);
            MoCo::new(cfg, || Ok(TinyEncoder::new(0, 1)), &Device::Cpu).unwrap();
        }
        let cfg = mocca_methods::SimCLRConfig::paper(256, 3, epochs);
        mocca_methods::SimCLR::new(cfg, TinyEncoder::new(0, 1), &Device::Cpu).unwrap();
    }
    let v1 = MoCoConfig::v1(256, 100, 200);
    assert_eq!(
        (v1.temperature, v1.momentum, v1.optimizer.lr),
        (0.07, 0.999, 0.03)
    );
    assert_eq!(v1.lr_schedule.lr_at(11_999), 0.03);
    assert!((v1.lr_schedule.lr_at(12_000) - 0.003).abs() < 1e-12);
    assert_eq!(MoCoConfig::v2(256, 100, 200).temperature, 0.2);
    let colab = MoCoConfig::cifar10_colab(512, 97, 200);
    assert_eq!(colab.negatives, NegativeSource::queue(4096));
    assert_eq!(
        (colab.momentum, colab.temperature, colab.optimizer.lr),
        (0.99, 0.1, 0.06)
    );
    assert_eq!(colab.optimizer.weight_decay, 5e-4);
}

#[test]
fn a_failed_load_leaves_encoders_optimizer_and_queue_as_they_were() {
    // A checkpoint whose key encoder lacks a tensor: the query encoder and the
    // queue would load, the key encoder fails; everything must be rolled back.
    let path =
        std::env::temp_dir().join(format!("mocca-partial-{}.safetensors", std::process::id()));
    let mut donor = moco(config(NegativeSource::queue(16), 0.1), 5, 1);
    donor.step(&views(8, 3), &[]).unwrap();
    let mut state: std::collections::BTreeMap<String, Tensor> = donor.state().unwrap();
    state.remove("encoder_k.head.weight");
    mocca_methods::checkpoint::save_tensors(&state, &path).unwrap();

    let mut m = moco(config(NegativeSource::queue(16), 0.1), 3, 1);
    m.step(&views(8, 1), &[]).unwrap();
    let (q0, k0, queue0) = (
        params(m.query_encoder()),
        params(m.key_encoder().unwrap()),
        rows(m.dictionary().unwrap()),
    );
    let err = m.load(&path).unwrap_err().to_string();
    std::fs::remove_file(&path).unwrap();
    assert!(err.contains("head.weight"), "{err}");
    assert_eq!(params(m.query_encoder()), q0);
    assert_eq!(params(m.key_encoder().unwrap()), k0);
    assert_eq!(rows(m.dictionary().unwrap()), queue0);
    assert_eq!(m.steps_done(), 1);
}
