//! `cargo xtask eval knn|linear --run RUN`: evaluates a checkpoint's encoder
//! on the labelled train / test splits, saying which encoder and layer.

use crate::runs::config::{EncoderChoice, LayerChoice, TrainConfig};
use crate::runs::{checkpoint_path, load_checkpoint, select_device, setup};
use anyhow::{anyhow, bail, Context, Result};
use mocca_methods::eval::{knn_evaluate, linear_probe, KnnConfig, LinearProbeConfig};
use std::path::PathBuf;
use std::time::Instant;

const USAGE: &str = "usage: cargo xtask eval knn|linear --run RUN_DIR|CHECKPOINT [options]

Evaluates the encoder of a checkpoint on the dataset's train (neighbours /
probe training) and test splits, without augmentation.

  --run PATH                 run folder or checkpoint file (also positional)
  --data DIR                 dataset folder (default: the run's, else discovery)
  --encoder query|key        MoCo's query or momentum encoder (default: the
                             run's eval.encoder)
  --layer backbone|head      pooled backbone features or head output (default:
                             the run's eval.layer)
  --device auto|cpu|cuda     default: the run's (auto: CUDA if usable, else CPU)
  --batch-size N             images per forward pass (default: the run's)
  --train-limit N --test-limit N   evenly spaced subsets (default: all)
knn:
  --k N (default: the run's, 200)  --t X (default: the run's, 0.1)
linear (logistic regression on frozen, standardised features):
  --epochs N (100)  --lr X (0.1)  --weight-decay X (0)  --probe-batch N (256)";

#[derive(PartialEq, Clone, Copy)]
enum Kind {
    Knn,
    Linear,
}

pub fn run(args: &[String]) -> Result<()> {
    let Some((kind, rest)) = args.split_first() else {
        bail!("say which evaluation: knn or linear\n\n{USAGE}");
    };
    let kind = match kind.as_str() {
        "knn" => Kind::Knn,
        "linear" => Kind::Linear,
        "-h" | "--help" => {
            println!("{USAGE}");
            return Ok(());
        }
        other => bail!("unknown evaluation `{other}`: expected knn or linear\n\n{USAGE}"),
    };
    let mut run: Option<PathBuf> = None;
    let mut sets: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        let a = rest[i].as_str();
        if a == "-h" || a == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        if let Some(flag) = a.strip_prefix("--") {
            let v = rest
                .get(i + 1)
                .ok_or_else(|| anyhow!("--{flag} needs a value\n\n{USAGE}"))?;
            if flag == "run" || flag == "checkpoint" {
                run = Some(PathBuf::from(v));
            } else {
                sets.push((flag.to_string(), v.clone()));
            }
            i += 2;
        } else {
            if run.is_some() {
                bail!("unexpected argument `{a}`\n\n{USAGE}");
            }
            run = Some(PathBuf::from(a));
            i += 1;
        }
    }
    let run = run
        .ok_or_else(|| anyhow!("which run? give --run RUN_DIR or a checkpoint file\n\n{USAGE}"))?;
    let ckpt = checkpoint_path(&run)?;

    let mut o = Options::default();
    for (flag, v) in &sets {
        o.apply(kind, flag, v)?;
    }
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
    let source = setup::feature_source(
        &cfg,
        o.encoder.unwrap_or(cfg.eval.encoder),
        o.layer.unwrap_or(cfg.eval.layer),
    )?;
    let (state, meta) = load_checkpoint(&ckpt, &device)?;
    let encoder = setup::encoder_from_state(&cfg, source.encoder, &state, &device)?;

    let data_dir = setup::locate_data(&cfg)?;
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
            if let Some(e) = o.epochs {
                lc.epochs = e;
            }
            if let Some(lr) = o.lr {
                lc.lr = lr;
            }
            if let Some(wd) = o.weight_decay {
                lc.weight_decay = wd;
            }
            if let Some(pb) = o.probe_batch {
                lc.batch_size = pb;
            }
            let r = linear_probe(&f_train, &tr_labels, &f_test, &te_labels, &lc)?;
            println!("{r}");
        }
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
    device: Option<crate::runs::config::DeviceKind>,
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
    fn apply(&mut self, kind: Kind, flag: &str, v: &str) -> Result<()> {
        let num = |v: &str| -> Result<usize> {
            v.parse()
                .map_err(|_| anyhow!("--{flag} expects a whole number, got `{v}`"))
        };
        let real = |v: &str| -> Result<f64> {
            v.parse()
                .map_err(|_| anyhow!("--{flag} expects a number, got `{v}`"))
        };
        match (flag, kind) {
            ("data", _) => self.data = Some(v.to_string()),
            ("device", _) => self.device = Some(crate::runs::config::DeviceKind::parse(v)?),
            ("encoder", _) => {
                self.encoder = Some(match v {
                    "query" => EncoderChoice::Query,
                    "key" => EncoderChoice::Key,
                    _ => bail!("--encoder expects query or key, got `{v}`"),
                })
            }
            ("layer", _) => {
                self.layer = Some(match v {
                    "backbone" => LayerChoice::Backbone,
                    "head" => LayerChoice::Head,
                    _ => bail!("--layer expects backbone or head, got `{v}`"),
                })
            }
            ("batch-size", _) => self.batch = Some(num(v)?.max(1)),
            ("train-limit", _) => self.train_limit = num(v)?,
            ("test-limit", _) => self.test_limit = num(v)?,
            ("k", Kind::Knn) => self.k = Some(num(v)?),
            ("t", Kind::Knn) => self.t = Some(real(v)?),
            ("epochs", Kind::Linear) => self.epochs = Some(num(v)?),
            ("lr", Kind::Linear) => self.lr = Some(real(v)?),
            ("weight-decay", Kind::Linear) => self.weight_decay = Some(real(v)?),
            ("probe-batch", Kind::Linear) => self.probe_batch = Some(num(v)?),
            _ => bail!("unknown option `--{flag}` for this evaluation\n\n{USAGE}"),
        }
        Ok(())
    }
}
