//! Evaluating a run's encoder, as `cargo xtask eval knn|linear|lincls RUN` does: a
//! checkpoint's query (or key) encoder on the labelled train / test splits, saying which
//! encoder and layer; results on stdout.

use crate::fetch;
use crate::folder::{checkpoint_path, load_checkpoint, select_device};
use anyhow::{anyhow, bail, Context, Result};
use mocca_methods::eval::{
    knn_evaluate, linear_probe, KnnConfig, LinclsConfig, LinearClassifier, LinearProbeConfig,
};
use mocca_methods::{Encoder, FeatureLayer, Features, SplitMix64};
use mocca_recipes::config::{DeviceKind, EncoderChoice, LayerChoice, TrainConfig};
use mocca_recipes::setup;
use std::path::PathBuf;
use std::time::Instant;

/// Which evaluation, and its own options.
#[derive(Clone, Debug)]
pub enum Evaluation {
    /// Weighted kNN on the frozen features (Wu et al. 2018).
    Knn {
        /// Neighbours [default: the run's eval.knn_k, 200].
        k: Option<usize>,
        /// Temperature of the neighbours' weights [default: the run's eval.knn_t, 0.1].
        t: Option<f64>,
    },
    /// Logistic regression on frozen, standardised features of the un-augmented training
    /// images (this project's quick probe).
    Linear(ClassifierOptions),
    /// MoCo's `main_lincls.py`: a linear layer on the frozen backbone in eval mode, trained on
    /// RandomResizedCrop + flip views of the training images, weight N(0, 0.01), SGD momentum
    /// 0.9, lr ×0.1 from epochs 60 and 80; backbone only.
    Lincls(ClassifierOptions),
}

/// The options every evaluation takes.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Run folder or checkpoint file.
    pub run: PathBuf,
    /// Dataset folder [default: the run's, else found or downloaded as training does].
    pub data: Option<String>,
    /// Whether a missing dataset may be downloaded ([`fetch::downloads_allowed`]).
    pub allow_download: bool,
    /// MoCo's query or momentum encoder [default: the run's eval.encoder].
    pub encoder: Option<EncoderChoice>,
    /// Pooled backbone features or head output [default: the run's eval.layer; lincls:
    /// backbone].
    pub layer: Option<LayerChoice>,
    /// [default: the run's].
    pub device: Option<DeviceKind>,
    /// Images per forward pass [default: the run's].
    pub batch_size: Option<usize>,
    /// Evenly spaced subset of the training images (0: all).
    pub train_limit: usize,
    /// Evenly spaced subset of the test images (0: all).
    pub test_limit: usize,
}

/// The options both linear evaluations share; unset, the protocol's own values hold.
#[derive(Clone, Debug, Default)]
pub struct ClassifierOptions {
    /// Classifier epochs [default: the protocol's, 100].
    pub epochs: Option<usize>,
    /// Learning rate [default: the protocol's, linear 0.1, lincls 30].
    pub lr: Option<f64>,
    /// Weight decay [default: the protocol's, 0].
    pub weight_decay: Option<f64>,
    /// Classifier batch size [default: the protocol's, 256].
    pub probe_batch: Option<usize>,
}

#[derive(PartialEq, Clone, Copy)]
enum Kind {
    Knn,
    Linear,
    Lincls,
}

/// Runs evaluation `what` of `common.run`'s checkpoint and prints its result.
pub fn evaluate(what: Evaluation, common: EvalOptions) -> Result<()> {
    let (kind, o) = match what {
        Evaluation::Knn { k, t } => (
            Kind::Knn,
            Options {
                k,
                t,
                ..Options::default()
            },
        ),
        Evaluation::Linear(c) => (Kind::Linear, Options::classifier(c)),
        Evaluation::Lincls(c) => (Kind::Lincls, Options::classifier(c)),
    };
    let ckpt = checkpoint_path(&common.run)?;
    let allow_download = common.allow_download;
    let o = Options {
        data: common.data,
        device: common.device,
        encoder: common.encoder,
        layer: common.layer,
        batch: common.batch_size.map(|b| b.max(1)),
        train_limit: common.train_limit,
        test_limit: common.test_limit,
        ..o
    };
    let mut probe_meta = crate::folder::read_checkpoint_meta(&ckpt)?;
    let cfg: &mut TrainConfig = &mut probe_meta.config;
    if let Some(d) = &o.data {
        cfg.data.path = Some(d.clone());
    }
    if let Some(d) = o.device {
        cfg.run.device = d;
    }
    if let Some(b) = o.batch {
        cfg.run.eval_batch_size = b;
    }
    let cfg = cfg.clone();
    let device = select_device(cfg.run.device)?;
    // MoCo's protocol trains on the backbone; the others score the run's eval layer.
    let default_layer = match kind {
        Kind::Lincls => LayerChoice::Backbone,
        _ => cfg.eval.layer,
    };
    let source = setup::feature_source(
        &cfg,
        o.encoder.unwrap_or(cfg.eval.encoder),
        o.layer.unwrap_or(default_layer),
    )?;
    if kind == Kind::Lincls && source.layer != FeatureLayer::Backbone {
        bail!("lincls trains its classifier on the backbone features; drop --layer head");
    }
    let (state, meta) = load_checkpoint(&ckpt, &device)?;
    let meta = meta.meta;
    let encoder = setup::encoder_from_state(&cfg, source.encoder, &state, &device)?;

    let data_dir = fetch::locate_data(&cfg, allow_download)?;
    let (train, test) = setup::open_splits(&data_dir, &setup::open_options(&cfg, None)?)?;
    let test = test.ok_or_else(|| {
        anyhow!(
            "{}: the dataset has no test split to evaluate on",
            data_dir.display()
        )
    })?;
    let tr_idx = setup::spread_subset(train.len(), o.train_limit);
    let te_idx = setup::spread_subset(test.len(), o.test_limit);
    let (tr_labels, c1) = setup::labels_of(&train, &tr_idx, "training")?;
    let (te_labels, c2) = setup::labels_of(&test, &te_idx, "test")?;
    let classes = c1.max(c2);
    println!(
        "evaluating {} at step {} (epoch {:.2}{}) — {source} — on {} ({} train / {} test images)",
        ckpt.display(),
        meta.global_step,
        meta.global_step as f64 / meta.steps_per_epoch.max(1) as f64,
        if meta.finished { ", finished" } else { "" },
        data_dir.display(),
        tr_idx.len(),
        te_idx.len()
    );
    let t0 = Instant::now();
    let b = cfg.run.eval_batch_size;
    let f_test = setup::embed(
        &encoder,
        source,
        &test,
        &te_idx,
        &setup::eval_pipeline(&cfg, &test)?,
        b,
        &device,
    )
    .context("computing test-set features")?;
    if kind == Kind::Lincls {
        let mut lc = LinclsConfig::main_lincls(classes);
        o.override_classifier(
            &mut lc.epochs,
            &mut lc.lr,
            &mut lc.weight_decay,
            &mut lc.batch_size,
        );
        let train_set = LinclsData {
            encoder: &encoder,
            data: &train,
            indices: &tr_idx,
            labels: &tr_labels,
            seed: cfg.seed,
        };
        lincls(&cfg, &train_set, (&f_test, &te_labels), lc, &device)?;
        println!("(total {:.1}s)", t0.elapsed().as_secs_f64());
        return Ok(());
    }
    let f_train = setup::embed(
        &encoder,
        source,
        &train,
        &tr_idx,
        &setup::eval_pipeline(&cfg, &train)?,
        b,
        &device,
    )
    .context("computing training-set features")?;
    let feat_s = t0.elapsed().as_secs_f64();
    match kind {
        Kind::Knn => {
            let kc = KnnConfig {
                k: o.k.unwrap_or(cfg.eval.knn_k),
                temperature: o.t.unwrap_or(cfg.eval.knn_t),
                ..KnnConfig::new(classes)
            };
            let r = knn_evaluate(&f_train, &tr_labels, &f_test, &te_labels, &kc)?;
            println!("{r}");
        }
        Kind::Linear => {
            let mut lc = LinearProbeConfig::new(classes);
            o.override_classifier(
                &mut lc.epochs,
                &mut lc.lr,
                &mut lc.weight_decay,
                &mut lc.batch_size,
            );
            let r = linear_probe(&f_train, &tr_labels, &f_test, &te_labels, &lc)?;
            println!("{r}");
        }
        Kind::Lincls => unreachable!("handled above"),
    }
    println!(
        "({} features: {:.1}s; total {:.1}s)",
        f_train.dim(),
        feat_s,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(Default)]
struct Options {
    data: Option<String>,
    device: Option<DeviceKind>,
    encoder: Option<EncoderChoice>,
    layer: Option<LayerChoice>,
    batch: Option<usize>,
    train_limit: usize,
    test_limit: usize,
    k: Option<usize>,
    t: Option<f64>,
    epochs: Option<usize>,
    lr: Option<f64>,
    weight_decay: Option<f64>,
    probe_batch: Option<usize>,
}

impl Options {
    fn classifier(c: ClassifierOptions) -> Self {
        Self {
            epochs: c.epochs,
            lr: c.lr,
            weight_decay: c.weight_decay,
            probe_batch: c.probe_batch,
            ..Self::default()
        }
    }

    /// The flags both linear evaluations share, over the protocol's own values.
    fn override_classifier(
        &self,
        epochs: &mut usize,
        lr: &mut f64,
        weight_decay: &mut f64,
        batch: &mut usize,
    ) {
        *epochs = self.epochs.unwrap_or(*epochs);
        *lr = self.lr.unwrap_or(*lr);
        *weight_decay = self.weight_decay.unwrap_or(*weight_decay);
        *batch = self.probe_batch.unwrap_or(*batch);
    }
}

/// The training images of a lincls run and the frozen encoder that embeds them.
struct LinclsData<'a> {
    encoder: &'a dyn Encoder,
    data: &'a mocca_data::Images,
    indices: &'a [usize],
    labels: &'a [u32],
    /// Seeds the data order and the views (the run's seed).
    seed: u64,
}

/// MoCo's `main_lincls.py` protocol: every epoch, a seeded order of the
/// training images, each batch augmented (RandomResizedCrop + flip + the
/// recipe's normalisation), embedded by the frozen encoder in evaluation mode
/// and used for one SGD step of the classifier; test accuracy every 10 epochs
/// and at the end.
fn lincls(
    cfg: &TrainConfig,
    train: &LinclsData,
    (test, test_labels): (&Features, &[u32]),
    config: LinclsConfig,
    device: &candle_core::Device,
) -> Result<()> {
    let views = setup::lincls_pipeline(cfg, train.data)?;
    let epochs = config.epochs;
    let batch = config.batch_size;
    let mut clf = LinearClassifier::new(test.dim(), test.source(), config, device)?;
    let mut order_rng = SplitMix64::new(train.seed ^ 0x4C49_4E43_4C53);
    for epoch in 0..epochs {
        let t0 = Instant::now();
        let order = order_rng.permutation(train.indices.len());
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        for chunk in order.chunks(batch) {
            let idx: Vec<usize> = chunk.iter().map(|&j| train.indices[j as usize]).collect();
            let labels: Vec<u32> = chunk.iter().map(|&j| train.labels[j as usize]).collect();
            let ids: Vec<u64> = idx.iter().map(|&i| i as u64).collect();
            let x = mocca_train::with_images(
                train.data,
                &idx,
                |images| -> Result<candle_core::Tensor> {
                    Ok(views
                        .apply_batch(images, &ids, train.seed, epoch as u64, 0)?
                        .into_tensor(device)?)
                },
            )?;
            let h = train.encoder.features(&x, false)?.detach();
            loss_sum += clf.train_batch(&Features::new(h, test.source())?, &labels, epoch)?
                * idx.len() as f64;
            seen += idx.len();
        }
        let last = epoch + 1 == epochs;
        if last || (epoch + 1) % 10 == 0 {
            let (top1, top5) = clf.accuracy(test, test_labels)?;
            println!(
                "lincls epoch {}/{epochs}: lr {}, train loss {:.4}, test top-1 {:.2}%, top-5 {:.2}% ({:.1}s/epoch)",
                epoch + 1,
                clf.config().lr_at_epoch(epoch),
                loss_sum / seen.max(1) as f64,
                100.0 * top1,
                100.0 * top5,
                t0.elapsed().as_secs_f64()
            );
            if last {
                println!(
                    "lincls (MoCo's main_lincls.py protocol, {epochs} epochs) on {}: test top-1 {:.2}%, top-5 {:.2}%",
                    test.source(),
                    100.0 * top1,
                    100.0 * top5
                );
            }
        }
    }
    Ok(())
}
