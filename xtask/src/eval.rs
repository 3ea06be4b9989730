//! `cargo xtask eval knn|linear|lincls --run RUN`: evaluates a checkpoint's
//! encoder on the labelled train / test splits, saying which encoder and layer.

use crate::runs::config::{DeviceKind, EncoderChoice, LayerChoice, TrainConfig};
use crate::runs::{checkpoint_path, fetch, load_checkpoint, select_device, setup};
use anyhow::{anyhow, bail, Context, Result};
use mocca_methods::eval::{
    knn_evaluate, linear_probe, KnnConfig, LinclsConfig, LinearClassifier, LinearProbeConfig,
};
use mocca_methods::{Encoder, FeatureLayer, Features, SplitMix64};
use std::time::Instant;

/// `cargo xtask eval`: which evaluation, then its options.
#[derive(clap::Args, Debug)]
#[command(
    about = "Evaluate a run's encoder: knn|linear|lincls",
    long_about = "Evaluates the encoder of a checkpoint on the dataset's train (neighbours / \
classifier training) and test splits; the test images are not augmented.",
    subcommand_required = true
)]
pub struct Args {
    #[command(subcommand)]
    kind: KindArgs,
}

#[derive(clap::Subcommand, Debug)]
enum KindArgs {
    /// Weighted kNN on the frozen features
    Knn {
        #[command(flatten)]
        common: Common,
        /// Neighbours [default: the run's eval.knn_k, 200]
        #[arg(long, value_name = "N")]
        k: Option<usize>,
        /// Temperature of the neighbours' weights [default: the run's eval.knn_t, 0.1]
        #[arg(long, value_name = "X", allow_negative_numbers = true)]
        t: Option<f64>,
    },
    /// Logistic regression on frozen, standardised features of the un-augmented training
    /// images (this project's quick probe)
    Linear {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        classifier: Classifier,
    },
    /// MoCo's main_lincls.py: a linear layer on the frozen backbone in eval mode, trained on
    /// RandomResizedCrop + flip views of the training images, weight N(0, 0.01), SGD momentum
    /// 0.9, lr x0.1 from epochs 60 and 80; backbone only
    Lincls {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        classifier: Classifier,
    },
}

/// The options every evaluation takes.
#[derive(clap::Args, Debug)]
struct Common {
    #[command(flatten)]
    run: crate::cli::RunArg,
    /// Dataset folder [default: the run's, else found or downloaded as `cargo xtask train`
    /// does: $MOCCA_DATA, ./data, the per-user cache]
    #[arg(long, value_name = "DIR")]
    data: Option<String>,
    /// Never use the network (also MOCCA_NO_DOWNLOAD=1; MOCCA_DOWNLOAD_MIRROR=URL downloads
    /// from URL/<file>)
    #[arg(long)]
    no_download: bool,
    /// MoCo's query or momentum encoder [default: the run's eval.encoder]
    #[arg(long, value_name = "query|key", value_parser = parse_encoder)]
    encoder: Option<EncoderChoice>,
    /// Pooled backbone features or head output [default: the run's eval.layer; lincls:
    /// backbone]
    #[arg(long, value_name = "backbone|head", value_parser = parse_layer)]
    layer: Option<LayerChoice>,
    /// auto: CUDA if usable, else CPU [default: the run's]
    #[arg(long, value_name = "auto|cpu|cuda",
          value_parser = |s: &str| DeviceKind::parse(s).map_err(|e| e.to_string()))]
    device: Option<DeviceKind>,
    /// Images per forward pass [default: the run's]
    #[arg(long, value_name = "N")]
    batch_size: Option<usize>,
    /// Evenly spaced subset of the training images (0: all)
    #[arg(long, value_name = "N", default_value_t = 0)]
    train_limit: usize,
    /// Evenly spaced subset of the test images (0: all)
    #[arg(long, value_name = "N", default_value_t = 0)]
    test_limit: usize,
}

/// The options both linear evaluations share; unset, the protocol's own values hold.
#[derive(clap::Args, Debug)]
struct Classifier {
    /// Classifier epochs [default: the protocol's, 100]
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// Learning rate [default: the protocol's, linear 0.1, lincls 30]
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Weight decay [default: the protocol's, 0]
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// Classifier batch size [default: the protocol's, 256]
    #[arg(long, value_name = "N")]
    probe_batch: Option<usize>,
}

pub(crate) fn parse_encoder(v: &str) -> Result<EncoderChoice, String> {
    match v {
        "query" => Ok(EncoderChoice::Query),
        "key" => Ok(EncoderChoice::Key),
        _ => Err(format!("--encoder expects query or key, got `{v}`")),
    }
}

fn parse_layer(v: &str) -> Result<LayerChoice, String> {
    match v {
        "backbone" => Ok(LayerChoice::Backbone),
        "head" => Ok(LayerChoice::Head),
        _ => Err(format!("--layer expects backbone or head, got `{v}`")),
    }
}

#[derive(PartialEq, Clone, Copy)]
enum Kind {
    Knn,
    Linear,
    Lincls,
}

pub fn run(args: Args) -> Result<()> {
    let (kind, common, o) = match args.kind {
        KindArgs::Knn { common, k, t } => (
            Kind::Knn,
            common,
            Options {
                k,
                t,
                ..Options::default()
            },
        ),
        KindArgs::Linear { common, classifier } => {
            (Kind::Linear, common, Options::classifier(classifier))
        }
        KindArgs::Lincls { common, classifier } => {
            (Kind::Lincls, common, Options::classifier(classifier))
        }
    };
    let run = common.run.path()?;
    let ckpt = checkpoint_path(&run)?;
    let no_download = common.no_download;
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
    let mut probe_meta = crate::runs::read_checkpoint_meta(&ckpt)?;
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

    let data_dir = fetch::locate_data(&cfg, fetch::downloads_allowed(no_download))?;
    let (train, test) = setup::open_splits(&data_dir)?;
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
    fn classifier(c: Classifier) -> Self {
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
    data: &'a mocca_data::ImageDataset,
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
            let images = idx
                .iter()
                .map(|&i| Ok(mocca_train::image_u8(train.data, i)?))
                .collect::<Result<Vec<_>>>()?;
            let ids: Vec<u64> = idx.iter().map(|&i| i as u64).collect();
            let x = views
                .apply_batch(&images, &ids, train.seed, epoch as u64, 0)?
                .into_tensor(device)?;
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
