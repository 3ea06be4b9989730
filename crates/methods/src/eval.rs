//! Evaluation of learned representations: weighted kNN and a linear probe on
//! frozen features, and the linear classifier of MoCo's `main_lincls.py`
//! protocol ([`LinearClassifier`]), trained on features of augmented images.
//!
//! Features travel as [`Features`], a tensor tagged with the
//! [`FeatureSource`] it came from (query / key / shared encoder; backbone
//! features or head output). Every result repeats that tag, and evaluating
//! train and test features from different sources is an error: lightly once
//! published MoCo numbers from the wrong encoder, and a tag that is carried
//! rather than remembered prevents that. Methods produce tagged features with
//! `Method::embed`.

use std::fmt;

use candle_core::{DType, Tensor, Var, D};
use rayon::prelude::*;

use crate::error::{config_err, input_err, Result};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::schedule::LrSchedule;
use mocca_core::SplitMix64;

/// Which encoder produced features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncoderRole {
    /// MoCo's query encoder `f_q`, the one trained by back-propagation (what
    /// the MoCo papers evaluate).
    Query,
    /// MoCo's key (momentum) encoder `f_k`, the EMA of the query encoder.
    Key,
    /// The single encoder of SimCLR and of MoCo's end-to-end mode.
    Shared,
}

/// Which layer of the encoder produced features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureLayer {
    /// The backbone's pooled features (before the projection head): the
    /// representation the papers evaluate.
    Backbone,
    /// The projection head's output (the embedding the loss sees).
    Head,
}

/// Encoder and layer of a set of features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FeatureSource {
    pub encoder: EncoderRole,
    pub layer: FeatureLayer,
}

impl FeatureSource {
    pub fn new(encoder: EncoderRole, layer: FeatureLayer) -> Self {
        Self { encoder, layer }
    }
}

impl fmt::Display for EncoderRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Query => "query encoder",
            Self::Key => "key (momentum) encoder",
            Self::Shared => "shared encoder",
        })
    }
}

impl fmt::Display for FeatureLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Backbone => "backbone features",
            Self::Head => "projection-head output",
        })
    }
}

impl fmt::Display for FeatureSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}", self.encoder, self.layer)
    }
}

/// A `[N, D]` feature matrix and where it came from.
#[derive(Debug, Clone)]
pub struct Features {
    tensor: Tensor,
    source: FeatureSource,
}

impl Features {
    /// Tags a `[N, D]` float tensor with its source.
    pub fn new(tensor: Tensor, source: FeatureSource) -> Result<Self> {
        if tensor.rank() != 2 || !tensor.dtype().is_float() {
            return Err(input_err(format!(
                "features must be a [N, D] float tensor, got {:?} {:?}",
                tensor.dims(),
                tensor.dtype()
            )));
        }
        Ok(Self { tensor, source })
    }

    /// Concatenates batches of features from one source along the rows.
    pub fn concat(parts: &[Features]) -> Result<Self> {
        let first = parts
            .first()
            .ok_or_else(|| input_err("no feature batches to concatenate"))?;
        if let Some(other) = parts.iter().find(|p| p.source != first.source) {
            return Err(input_err(format!(
                "cannot concatenate features from `{}` and `{}`",
                first.source, other.source
            )));
        }
        let tensors: Vec<&Tensor> = parts.iter().map(|p| &p.tensor).collect();
        Self::new(Tensor::cat(&tensors, 0)?, first.source)
    }

    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    pub fn source(&self) -> FeatureSource {
        self.source
    }

    pub fn len(&self) -> usize {
        self.tensor.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dim(&self) -> usize {
        self.tensor.dims()[1]
    }
}

/// Weighted kNN settings. Defaults are the InstDisc protocol (Wu et al. 2018)
/// used by the MoCo CIFAR-10 colab: k = 200, t = 0.1.
#[derive(Debug, Clone, PartialEq)]
pub struct KnnConfig {
    pub k: usize,
    pub temperature: f64,
    pub num_classes: usize,
    /// Test rows per similarity block: memory is `chunk_size × N_train`
    /// floats at a time.
    pub chunk_size: usize,
}

impl KnnConfig {
    pub fn new(num_classes: usize) -> Self {
        Self {
            k: 200,
            temperature: 0.1,
            num_classes,
            chunk_size: 256,
        }
    }
}

/// Outcome of [`knn_evaluate`].
#[derive(Debug, Clone, PartialEq)]
pub struct KnnResult {
    /// What was evaluated.
    pub source: FeatureSource,
    /// Neighbours used: `min(k, N_train)`.
    pub k: usize,
    pub temperature: f64,
    /// Fraction of test samples whose top-scored class is right.
    pub top1: f64,
    /// Fraction whose class is among the 5 top-scored (1.0 when there are at
    /// most 5 classes).
    pub top5: f64,
    pub correct: usize,
    pub total: usize,
}

impl fmt::Display for KnnResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kNN (k={}, t={}) on {}: top-1 {:.2}% ({}/{}), top-5 {:.2}%",
            self.k,
            self.temperature,
            self.source,
            100.0 * self.top1,
            self.correct,
            self.total,
            100.0 * self.top5
        )
    }
}

fn check_labels(what: &str, labels: &[u32], n: usize, num_classes: usize) -> Result<()> {
    if labels.len() != n {
        return Err(input_err(format!(
            "{what}: {} labels for {n} feature rows",
            labels.len()
        )));
    }
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= num_classes) {
        return Err(input_err(format!(
            "{what}: label {bad} is out of range for {num_classes} classes"
        )));
    }
    Ok(())
}

fn check_pair(train: &Features, test: &Features) -> Result<()> {
    if train.source != test.source {
        return Err(input_err(format!(
            "train features come from `{}` but test features from `{}`",
            train.source, test.source
        )));
    }
    if train.dim() != test.dim() {
        return Err(input_err(format!(
            "train features have {} dimensions, test features {}",
            train.dim(),
            test.dim()
        )));
    }
    if train.is_empty() || test.is_empty() {
        return Err(input_err("empty feature set"));
    }
    Ok(())
}

/// `x / max(‖x‖₂, 1e-12)` per row, in f32 (as `F.normalize`).
pub(crate) fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

/// The rules [`knn_evaluate`] checks its [`KnnConfig`] by, for the trainer's config file to
/// check `eval.knn_k` and `eval.knn_t` by the same ones.
pub mod knn_rules {
    use mocca_core::check::{self, Invalid};

    /// Neighbours voting: at least 1 (more than the training set means all of it).
    pub fn k(k: usize) -> Result<(), Invalid> {
        check::at_least_one(k)
    }

    /// The temperature of the votes `exp(sim / t)`: finite and `> 0`.
    pub fn temperature(t: f64) -> Result<(), Invalid> {
        check::positive(t)
    }
}

/// Weighted kNN classification (Wu et al. 2018, "Unsupervised Feature
/// Learning via Non-Parametric Instance Discrimination"; the MoCo colab's
/// `knn_predict`): features are L2-normalised, each test sample takes its `k`
/// most cosine-similar training samples, each neighbour votes for its class
/// with weight `exp(sim / t)`, and the class with the largest summed vote is
/// the prediction (ties go to the lower class index).
///
/// The test set is processed in blocks of `chunk_size` rows, so memory stays at
/// `chunk_size × N_train` similarities whatever the test set's size.
pub fn knn_evaluate(
    train: &Features,
    train_labels: &[u32],
    test: &Features,
    test_labels: &[u32],
    config: &KnnConfig,
) -> Result<KnnResult> {
    knn_rules::k(config.k).map_err(|e| config_err(format!("kNN k {e}")))?;
    knn_rules::temperature(config.temperature)
        .map_err(|e| config_err(format!("kNN temperature {e}")))?;
    if config.num_classes == 0 || config.chunk_size == 0 {
        return Err(config_err("kNN needs num_classes >= 1 and chunk_size >= 1"));
    }
    check_pair(train, test)?;
    check_labels("train", train_labels, train.len(), config.num_classes)?;
    check_labels("test", test_labels, test.len(), config.num_classes)?;

    let n_train = train.len();
    let k = config.k.min(n_train);
    let num_classes = config.num_classes;
    let inv_t = 1.0 / config.temperature;
    let bank_t = l2_normalize(train.tensor())?.t()?.contiguous()?;
    let test_n = l2_normalize(&test.tensor().to_device(train.tensor().device())?)?;

    let mut correct = 0usize;
    let mut correct5 = 0usize;
    let mut start = 0usize;
    while start < test.len() {
        let rows = config.chunk_size.min(test.len() - start);
        let sims = test_n.narrow(0, start, rows)?.matmul(&bank_t)?;
        let sims: Vec<f32> = sims.flatten_all()?.to_vec1()?;
        let labels = &test_labels[start..start + rows];
        let (c1, c5) = sims
            .par_chunks(n_train)
            .zip(labels.par_iter())
            .map_init(
                || (Vec::<u32>::with_capacity(n_train), vec![0f64; num_classes]),
                |(idx, votes), (row, &label)| {
                    idx.clear();
                    idx.extend(0..n_train as u32);
                    // Largest similarities first; total_cmp keeps NaN from panicking.
                    let by_sim_desc =
                        |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]);
                    if k < n_train {
                        idx.select_nth_unstable_by(k - 1, by_sim_desc);
                    }
                    votes.iter_mut().for_each(|v| *v = 0.0);
                    for &j in &idx[..k] {
                        votes[train_labels[j as usize] as usize] +=
                            (row[j as usize] as f64 * inv_t).exp();
                    }
                    let mine = votes[label as usize];
                    // Rank of the true class: classes scored higher, or equal
                    // with a lower index, come first.
                    let rank = votes
                        .iter()
                        .enumerate()
                        .filter(|&(c, &v)| v > mine || (v == mine && c < label as usize))
                        .count();
                    ((rank == 0) as usize, (rank < 5) as usize)
                },
            )
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        correct += c1;
        correct5 += c5;
        start += rows;
    }
    let total = test.len();
    Ok(KnnResult {
        source: test.source,
        k,
        temperature: config.temperature,
        top1: correct as f64 / total as f64,
        top5: correct5 as f64 / total as f64,
        correct,
        total,
    })
}

/// Linear-probe settings.
///
/// Protocol: multinomial logistic regression (a linear layer + softmax
/// cross-entropy) on *precomputed, frozen* features of un-augmented images,
/// standardised with the training set's per-dimension mean and standard
/// deviation; weights start at zero; momentum SGD with cosine learning-rate
/// decay per step; minibatches drawn in a seeded order each epoch; weight
/// decay on the weights only. A cheap probe of this project's, no reference's:
/// lightly's `LinearClassifier` and MoCo's `main_lincls.py` both train on
/// augmented images through the frozen backbone, the latter with lr 30 and a
/// step schedule ([`LinclsConfig`], [`LinearClassifier`]). Expect numbers a
/// little below the papers' linear accuracies.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearProbeConfig {
    pub num_classes: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

impl LinearProbeConfig {
    /// 100 epochs, batch 256, lr 0.1, momentum 0.9, weight decay 0, seed 0.
    pub fn new(num_classes: usize) -> Self {
        Self {
            num_classes,
            epochs: 100,
            batch_size: 256,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            seed: 0,
        }
    }
}

/// Outcome of [`linear_probe`].
#[derive(Debug, Clone, PartialEq)]
pub struct LinearProbeResult {
    /// What was evaluated.
    pub source: FeatureSource,
    /// Test accuracy of the trained classifier.
    pub top1: f64,
    pub top5: f64,
    /// Training-set accuracy (how separable the features are).
    pub train_top1: f64,
    /// Mean cross-entropy over the last epoch.
    pub final_train_loss: f64,
    pub epochs: usize,
}

impl fmt::Display for LinearProbeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "linear probe ({} epochs) on {}: test top-1 {:.2}%, top-5 {:.2}%, train top-1 {:.2}%",
            self.epochs,
            self.source,
            100.0 * self.top1,
            100.0 * self.top5,
            100.0 * self.train_top1
        )
    }
}

/// Trains a linear classifier on frozen `train` features and reports its
/// accuracy on `test` features (protocol in [`LinearProbeConfig`]).
pub fn linear_probe(
    train: &Features,
    train_labels: &[u32],
    test: &Features,
    test_labels: &[u32],
    config: &LinearProbeConfig,
) -> Result<LinearProbeResult> {
    let c = config.num_classes;
    if c < 2 {
        return Err(config_err("a linear probe needs at least 2 classes"));
    }
    if config.epochs == 0 || config.batch_size == 0 {
        return Err(config_err(
            "linear probe needs epochs >= 1 and batch_size >= 1",
        ));
    }
    check_pair(train, test)?;
    check_labels("train", train_labels, train.len(), c)?;
    check_labels("test", test_labels, test.len(), c)?;

    let device = train.tensor().device().clone();
    let x_train = train.tensor().to_dtype(DType::F32)?;
    let x_test = test.tensor().to_device(&device)?.to_dtype(DType::F32)?;
    let mean = x_train.mean_keepdim(0)?;
    let centered = x_train.broadcast_sub(&mean)?;
    let std = centered.sqr()?.mean_keepdim(0)?.sqrt()?.maximum(1e-6)?;
    let x_train = centered.broadcast_div(&std)?;
    let x_test = x_test.broadcast_sub(&mean)?.broadcast_div(&std)?;

    let d = train.dim();
    let weight = Var::zeros((c, d), DType::F32, &device)?;
    let bias = Var::zeros(c, DType::F32, &device)?;
    let mut opt_cfg = OptimizerConfig::sgd(config.lr, config.momentum, config.weight_decay);
    opt_cfg.exclude_bias_and_norm = true;
    let mut opt = Optimizer::new(
        vec![
            ("weight".to_string(), weight.clone()),
            ("bias".to_string(), bias.clone()),
        ],
        opt_cfg,
    )?;

    let n = train.len();
    let steps_per_epoch = n.div_ceil(config.batch_size);
    let schedule = LrSchedule::cosine(config.lr, (steps_per_epoch * config.epochs) as u64);
    let labels_all = Tensor::new(train_labels, &device)?;
    let mut rng = SplitMix64::new(config.seed);
    let mut step = 0u64;
    let mut last_epoch_loss = 0.0;
    for _ in 0..config.epochs {
        let order = rng.permutation(n);
        let mut loss_sum = 0.0;
        for batch in order.chunks(config.batch_size) {
            let idx = Tensor::new(batch, &device)?;
            let xb = x_train.index_select(&idx, 0)?;
            let yb = labels_all.index_select(&idx, 0)?;
            let logits = xb
                .matmul(&weight.as_tensor().t()?)?
                .broadcast_add(bias.as_tensor())?;
            let loss = candle_nn::loss::cross_entropy(&logits, &yb)?;
            loss_sum += loss.to_scalar::<f32>()? as f64 * batch.len() as f64;
            opt.set_lr(schedule.lr_at(step));
            opt.step(&loss.backward()?)?;
            step += 1;
        }
        last_epoch_loss = loss_sum / n as f64;
    }

    let accuracy = |x: &Tensor, labels: &[u32]| -> Result<(f64, f64)> {
        let logits = x
            .matmul(&weight.as_tensor().t()?)?
            .broadcast_add(bias.as_tensor())?;
        let logits: Vec<Vec<f32>> = logits.to_vec2()?;
        Ok(top_k_accuracy(&logits, labels))
    };
    let (top1, top5) = accuracy(&x_test, test_labels)?;
    let (train_top1, _) = accuracy(&x_train, train_labels)?;
    Ok(LinearProbeResult {
        source: test.source,
        top1,
        top5,
        train_top1,
        final_train_loss: last_epoch_loss,
        epochs: config.epochs,
    })
}

/// MoCo's linear classification protocol (`main_lincls.py` of
/// facebookresearch/moco): a linear layer on the frozen backbone's features
/// (backbone in evaluation mode, BatchNorm statistics untouched), trained on
/// RandomResizedCrop + horizontal-flip views of the training images; weight
/// `N(0, 0.01)`, bias 0; SGD lr 30, momentum 0.9, weight decay 0, batch 256,
/// 100 epochs, the rate ×0.1 from epochs 60 and 80 on (set per epoch). The
/// images and their augmentation are the caller's: this holds the classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct LinclsConfig {
    pub num_classes: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Epochs from which the rate is multiplied by 0.1 (`--schedule 60 80`).
    pub milestones: Vec<u64>,
    /// Seed of the weight initialisation (the data order is the caller's).
    pub seed: u64,
}

impl LinclsConfig {
    /// `main_lincls.py`'s defaults.
    pub fn main_lincls(num_classes: usize) -> Self {
        Self {
            num_classes,
            epochs: 100,
            batch_size: 256,
            lr: 30.0,
            momentum: 0.9,
            weight_decay: 0.0,
            milestones: vec![60, 80],
            seed: 0,
        }
    }

    /// The learning rate of `epoch` (0-based).
    pub fn lr_at_epoch(&self, epoch: usize) -> f64 {
        LrSchedule::MultiStep {
            base_lr: self.lr,
            milestones: self.milestones.clone(),
            gamma: 0.1,
        }
        .lr_at(epoch as u64)
    }
}

/// The linear layer `logits = x Wᵀ + b` of [`LinclsConfig`], trained batch by
/// batch on features the caller computes from augmented images.
pub struct LinearClassifier {
    weight: Var,
    bias: Var,
    optimizer: Optimizer,
    config: LinclsConfig,
    source: FeatureSource,
}

impl LinearClassifier {
    /// A classifier over `feature_dim` features from `source`, weights drawn
    /// from `N(0, 0.01)` with `config.seed`, on `device`.
    pub fn new(
        feature_dim: usize,
        source: FeatureSource,
        config: LinclsConfig,
        device: &candle_core::Device,
    ) -> Result<Self> {
        if config.num_classes < 2 || feature_dim == 0 {
            return Err(config_err(
                "a linear classifier needs at least 2 classes and 1 feature",
            ));
        }
        if config.epochs == 0 || config.batch_size == 0 {
            return Err(config_err("lincls needs epochs >= 1 and batch_size >= 1"));
        }
        let c = config.num_classes;
        let mut rng = SplitMix64::new(config.seed);
        let w: Vec<f32> = (0..c * feature_dim)
            .map(|_| (0.01 * rng.normal()) as f32)
            .collect();
        let weight = Var::from_tensor(&Tensor::from_vec(w, (c, feature_dim), device)?)?;
        let bias = Var::zeros(c, DType::F32, device)?;
        let optimizer = Optimizer::new(
            vec![
                ("weight".to_string(), weight.clone()),
                ("bias".to_string(), bias.clone()),
            ],
            OptimizerConfig::sgd(config.lr, config.momentum, config.weight_decay),
        )?;
        Ok(Self {
            weight,
            bias,
            optimizer,
            config,
            source,
        })
    }

    pub fn config(&self) -> &LinclsConfig {
        &self.config
    }

    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.to_dtype(DType::F32)?
            .matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?)
    }

    /// One SGD step on `features` (detached, from the frozen encoder) with
    /// `labels`, at the rate of `epoch`; returns the batch's mean
    /// cross-entropy.
    pub fn train_batch(
        &mut self,
        features: &Features,
        labels: &[u32],
        epoch: usize,
    ) -> Result<f64> {
        if features.source() != self.source {
            return Err(input_err(format!(
                "the classifier is trained on `{}`, these features come from `{}`",
                self.source,
                features.source()
            )));
        }
        check_labels("train", labels, features.len(), self.config.num_classes)?;
        let y = Tensor::new(labels, features.tensor().device())?;
        let loss = candle_nn::loss::cross_entropy(&self.logits(&features.tensor().detach())?, &y)?;
        let value = loss.to_scalar::<f32>()? as f64;
        self.optimizer.set_lr(self.config.lr_at_epoch(epoch));
        self.optimizer.step(&loss.backward()?)?;
        Ok(value)
    }

    /// Top-1 and top-5 accuracy on `features` (ties count against the label).
    pub fn accuracy(&self, features: &Features, labels: &[u32]) -> Result<(f64, f64)> {
        check_labels("test", labels, features.len(), self.config.num_classes)?;
        let logits: Vec<Vec<f32>> = self.logits(features.tensor())?.to_vec2()?;
        Ok(top_k_accuracy(&logits, labels))
    }
}

/// Fraction of rows whose label ranks first, and within the first five.
fn top_k_accuracy(logits: &[Vec<f32>], labels: &[u32]) -> (f64, f64) {
    let (mut c1, mut c5) = (0usize, 0usize);
    for (row, &label) in logits.iter().zip(labels) {
        let mine = row[label as usize];
        let rank = row
            .iter()
            .enumerate()
            .filter(|&(j, &v)| v > mine || (v == mine && j < label as usize))
            .count();
        c1 += (rank == 0) as usize;
        c5 += (rank < 5) as usize;
    }
    let n = labels.len().max(1) as f64;
    (c1 as f64 / n, c5 as f64 / n)
}
