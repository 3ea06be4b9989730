//! `cargo xtask eval knn|linear|lincls RUN`: the command line of [`mocca_runs::eval`].

use anyhow::Result;
use mocca_recipes::config::{DeviceKind, EncoderChoice, LayerChoice};
use mocca_runs::eval::{ClassifierOptions, EvalOptions, Evaluation};

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

impl Common {
    fn options(self) -> Result<EvalOptions> {
        Ok(EvalOptions {
            run: self.run.path()?,
            data: self.data,
            allow_download: mocca_runs::fetch::downloads_allowed(self.no_download),
            encoder: self.encoder,
            layer: self.layer,
            device: self.device,
            batch_size: self.batch_size,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
        })
    }
}

impl From<Classifier> for ClassifierOptions {
    fn from(c: Classifier) -> Self {
        Self {
            epochs: c.epochs,
            lr: c.lr,
            weight_decay: c.weight_decay,
            probe_batch: c.probe_batch,
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let (what, common) = match args.kind {
        KindArgs::Knn { common, k, t } => (Evaluation::Knn { k, t }, common),
        KindArgs::Linear { common, classifier } => (Evaluation::Linear(classifier.into()), common),
        KindArgs::Lincls { common, classifier } => (Evaluation::Lincls(classifier.into()), common),
    };
    mocca_runs::eval::evaluate(what, common.options()?)
}
