//! kNN and linear-probe evaluation.

use candle_core::{Device, Tensor};
use mocca_methods::eval::{
    knn_evaluate, linear_probe, EncoderRole, FeatureLayer, FeatureSource, Features, KnnConfig,
    LinearProbeConfig,
};
use mocca_methods::SplitMix64;

const QUERY_BACKBONE: FeatureSource = FeatureSource {
    encoder: EncoderRole::Query,
    layer: FeatureLayer::Backbone,
};

fn features(rows: &[[f32; 2]], source: FeatureSource) -> Features {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let t = Tensor::from_vec(flat, (rows.len(), 2), &Device::Cpu).unwrap();
    Features::new(t, source).unwrap()
}

/// One close neighbour of class 0 against two farther ones of class 1.
fn weighted_case() -> (Features, Vec<u32>, Features, Vec<u32>) {
    let train = features(&[[3.0, 0.0], [1.0, 1.0], [2.0, -2.0]], QUERY_BACKBONE);
    let test = features(&[[0.5, 0.0]], QUERY_BACKBONE);
    (train, vec![0, 1, 1], test, vec![0])
}

#[test]
fn knn_weights_votes_by_exp_of_similarity_over_temperature() {
    // Cosine similarities 1, 1/√2, 1/√2. With t = 0.1 class 0 gets e^10 ≈ 22026
    // and class 1 gets 2·e^7.07 ≈ 2354: class 0 wins although outnumbered.
    let (train, train_labels, test, test_labels) = weighted_case();
    let mut cfg = KnnConfig::new(2);
    cfg.k = 3;
    let r = knn_evaluate(&train, &train_labels, &test, &test_labels, &cfg).unwrap();
    assert_eq!((r.correct, r.total, r.top1), (1, 1, 1.0));
    // With t = 1 the weights are e^1 ≈ 2.72 against 2·e^0.707 ≈ 4.06: class 1 wins.
    cfg.temperature = 1.0;
    let r = knn_evaluate(&train, &train_labels, &test, &test_labels, &cfg).unwrap();
    assert_eq!((r.correct, r.top1), (0, 0.0));
}

#[test]
fn knn_uses_only_the_k_most_similar_neighbours() {
    // k = 1: only the class-0 neighbour votes, whatever the temperature.
    let (train, train_labels, test, test_labels) = weighted_case();
    let mut cfg = KnnConfig::new(2);
    cfg.k = 1;
    cfg.temperature = 1.0;
    let r = knn_evaluate(&train, &train_labels, &test, &test_labels, &cfg).unwrap();
    assert_eq!(r.correct, 1);
    assert_eq!(r.k, 1);
}

#[test]
fn knn_clamps_k_to_the_training_set_and_defaults_to_instdisc() {
    let (train, train_labels, test, test_labels) = weighted_case();
    let cfg = KnnConfig::new(2);
    assert_eq!((cfg.k, cfg.temperature), (200, 0.1));
    let r = knn_evaluate(&train, &train_labels, &test, &test_labels, &cfg).unwrap();
    assert_eq!(r.k, 3);
}

fn random_features(n: usize, d: usize, seed: u64, source: FeatureSource) -> Features {
    let mut rng = SplitMix64::new(seed);
    let v: Vec<f32> = (0..n * d)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        .collect();
    Features::new(Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap(), source).unwrap()
}

#[test]
fn knn_result_does_not_depend_on_the_chunk_size() {
    let train = random_features(300, 8, 1, QUERY_BACKBONE);
    let test = random_features(77, 8, 2, QUERY_BACKBONE);
    let train_labels: Vec<u32> = (0..300).map(|i| (i * 7 % 5) as u32).collect();
    let test_labels: Vec<u32> = (0..77).map(|i| (i % 5) as u32).collect();
    let mut cfg = KnnConfig::new(5);
    cfg.k = 20;
    let results: Vec<_> = [1, 10, 77, 1000]
        .iter()
        .map(|&c| {
            cfg.chunk_size = c;
            knn_evaluate(&train, &train_labels, &test, &test_labels, &cfg).unwrap()
        })
        .collect();
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
}

#[test]
fn knn_result_names_the_evaluated_encoder_and_layer() {
    let key_head = FeatureSource::new(EncoderRole::Key, FeatureLayer::Head);
    let train = features(&[[1.0, 0.0], [0.0, 1.0]], key_head);
    let test = features(&[[1.0, 0.1]], key_head);
    let r = knn_evaluate(&train, &[0, 1], &test, &[0], &KnnConfig::new(2)).unwrap();
    assert_eq!(r.source, key_head);
    let text = r.to_string();
    assert!(
        text.contains("key (momentum) encoder, projection-head output"),
        "{text}"
    );
}

#[test]
fn evaluating_features_from_different_sources_is_an_error() {
    let train = features(&[[1.0, 0.0]], QUERY_BACKBONE);
    let test = features(
        &[[1.0, 0.0]],
        FeatureSource::new(EncoderRole::Key, FeatureLayer::Backbone),
    );
    let err = knn_evaluate(&train, &[0], &test, &[0], &KnnConfig::new(2))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("query encoder") && err.contains("key (momentum) encoder"),
        "{err}"
    );
    assert!(linear_probe(&train, &[0], &test, &[0], &LinearProbeConfig::new(2)).is_err());
}

#[test]
fn out_of_range_labels_and_length_mismatches_are_errors() {
    let train = features(&[[1.0, 0.0], [0.0, 1.0]], QUERY_BACKBONE);
    let test = features(&[[1.0, 0.0]], QUERY_BACKBONE);
    let err = knn_evaluate(&train, &[0, 2], &test, &[0], &KnnConfig::new(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("label 2"), "{err}");
    let err = knn_evaluate(&train, &[0], &test, &[0], &KnnConfig::new(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 labels for 2"), "{err}");
}

/// Three Gaussian blobs in 16 dimensions, shifted along different axes.
fn blobs(n_per_class: usize, seed: u64) -> (Features, Vec<u32>) {
    let mut rng = SplitMix64::new(seed);
    let d = 16;
    let mut v = Vec::new();
    let mut labels = Vec::new();
    for i in 0..3 * n_per_class {
        let class = i % 3;
        for j in 0..d {
            let u = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            v.push(u + if j == class { 1.5 } else { 0.0 } + 3.0);
        }
        labels.push(class as u32);
    }
    let t = Tensor::from_vec(v, (3 * n_per_class, d), &Device::Cpu).unwrap();
    (Features::new(t, QUERY_BACKBONE).unwrap(), labels)
}

#[test]
fn linear_probe_separates_linearly_separable_classes() {
    let (train, train_labels) = blobs(100, 3);
    let (test, test_labels) = blobs(50, 4);
    let mut cfg = LinearProbeConfig::new(3);
    cfg.epochs = 20;
    cfg.batch_size = 32;
    let r = linear_probe(&train, &train_labels, &test, &test_labels, &cfg).unwrap();
    assert!(r.top1 >= 0.98, "{r}");
    assert!(r.train_top1 >= 0.98, "{r}");
    assert!(r.final_train_loss < 0.1, "{r}");
    assert_eq!(r.top5, 1.0);
    assert_eq!(r.source, QUERY_BACKBONE);
}

#[test]
fn linear_probe_is_deterministic_for_a_seed() {
    let (train, train_labels) = blobs(30, 5);
    let (test, test_labels) = blobs(30, 6);
    let mut cfg = LinearProbeConfig::new(3);
    cfg.epochs = 3;
    cfg.batch_size = 16;
    let a = linear_probe(&train, &train_labels, &test, &test_labels, &cfg).unwrap();
    let b = linear_probe(&train, &train_labels, &test, &test_labels, &cfg).unwrap();
    assert_eq!(a, b);
}

#[test]
fn lincls_rate_is_main_lincls_step_schedule() {
    let c = mocca_methods::eval::LinclsConfig::main_lincls(10);
    assert_eq!(
        (c.lr, c.batch_size, c.epochs, c.weight_decay),
        (30.0, 256, 100, 0.0)
    );
    assert_eq!(c.lr_at_epoch(59), 30.0);
    assert!((c.lr_at_epoch(60) - 3.0).abs() < 1e-12);
    assert!((c.lr_at_epoch(80) - 0.3).abs() < 1e-12);
}

#[test]
fn linear_classifier_learns_separable_features_batch_by_batch() {
    use mocca_methods::eval::{LinclsConfig, LinearClassifier};
    // Two classes on either side of the y axis; lincls' lr 30 is for
    // unnormalised backbone features, a smaller one suits unit-scale ones.
    let mut rng = SplitMix64::new(3);
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for i in 0..64 {
        let side = if i % 2 == 0 { 1.0 } else { -1.0 };
        rows.push([side * (0.5 + rng.uniform01() as f32), rng.normal() as f32]);
        labels.push((i % 2) as u32);
    }
    let x = features(&rows, QUERY_BACKBONE);
    let config = LinclsConfig {
        lr: 0.5,
        epochs: 20,
        batch_size: 16,
        ..LinclsConfig::main_lincls(2)
    };
    let mut clf = LinearClassifier::new(2, QUERY_BACKBONE, config, &Device::Cpu).unwrap();
    let (before, _) = clf.accuracy(&x, &labels).unwrap();
    let mut last = f64::INFINITY;
    for epoch in 0..20 {
        for b in 0..4 {
            let part =
                Features::new(x.tensor().narrow(0, 16 * b, 16).unwrap(), QUERY_BACKBONE).unwrap();
            last = clf
                .train_batch(&part, &labels[16 * b..16 * (b + 1)], epoch)
                .unwrap();
        }
    }
    let (after, top5) = clf.accuracy(&x, &labels).unwrap();
    assert_eq!((after, top5), (1.0, 1.0), "from {before}");
    assert!(last < 0.2, "final batch loss {last}");
}

#[test]
fn linear_classifier_refuses_features_of_another_source() {
    use mocca_methods::eval::{LinclsConfig, LinearClassifier};
    let mut clf = LinearClassifier::new(
        2,
        QUERY_BACKBONE,
        LinclsConfig::main_lincls(2),
        &Device::Cpu,
    )
    .unwrap();
    let head = FeatureSource {
        encoder: EncoderRole::Query,
        layer: FeatureLayer::Head,
    };
    let err = clf
        .train_batch(&features(&[[1.0, 0.0]], head), &[0], 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("trained on"), "{err}");
    assert!(LinearClassifier::new(
        2,
        QUERY_BACKBONE,
        LinclsConfig::main_lincls(1),
        &Device::Cpu
    )
    .is_err());
}
