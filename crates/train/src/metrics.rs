//! Metrics: what a run reports, and where it goes.
//!
//! Every [`Record`] carries `step` (optimizer steps done so far) and `epoch`
//! (fractional: `step / steps_per_epoch`), so plots and a resumed run agree on
//! where each record belongs. The trainer hands each record to every
//! [`MetricsSink`]: a [`JsonlMetrics`] file (`metrics.jsonl`, one JSON object a
//! line, appended as training goes), or any closure `FnMut(&Record)`. A resumed
//! run first drops the records written after its checkpoint
//! ([`JsonlMetrics::resume`]), since it will produce them again.

use crate::error::{io_err, Result, TrainError};
use crate::files::write_atomic;
use mocca_methods::staleness::{BankCosines, QueueCosines};
use mocca_methods::CollapseMetrics;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The metrics file's name in a run folder (one JSON record a line).
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One line of `metrics.jsonl`, tagged by `kind`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// Training statistics of one step (every `log_every` steps).
    Step {
        step: u64,
        epoch: f64,
        loss: f64,
        lr: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        momentum: Option<f64>,
        /// Top-1 accuracy of the positive among the logits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pos_acc: Option<f64>,
        /// Source images per second over the steps since the last record.
        images_per_s: f64,
        /// Wall time of the run so far, earlier processes of a resumed run included.
        elapsed_s: f64,
        /// The collapse monitor's reading of this step's embeddings (every
        /// `collapse_every` steps; absent in files written before it existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        collapse: Option<Collapse>,
    },
    /// Weighted kNN accuracy on the test split.
    Knn {
        step: u64,
        epoch: f64,
        top1: f64,
        k: usize,
        t: f64,
        encoder: String,
        layer: String,
        n_train: usize,
        n_test: usize,
    },
    /// One finished epoch.
    Epoch {
        step: u64,
        epoch: f64,
        loss_mean: f64,
        seconds: f64,
    },
    /// A file that did not decode, skipped in step `step` (its place in the batch taken by
    /// image `stand_in`); one record each time a batch meets it.
    SkippedFile {
        step: u64,
        epoch: f64,
        index: usize,
        path: String,
        error: String,
        stand_in: usize,
    },
}

/// [`CollapseMetrics`] as written in a step record (`"collapse": {...}`), with
/// the verdict of the thresholds in force when it was written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Collapse {
    /// Mean per-dimension std of the ℓ2-normalised embeddings (≈ 1/√d spread, 0 collapsed).
    pub std: f64,
    /// `std · √dim`: 1 spread, 0 collapsed.
    pub std_sqrt_d: f64,
    /// RankMe effective rank (1 to min(batch, dim)).
    pub rank_me: f64,
    /// Mean squared distance of the positive pairs (absent with one view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alignment: Option<f64>,
    /// log mean exp(−2‖u − v‖²) over the batch's pairs (0 collapsed, → −4 spread).
    pub uniformity: f64,
    pub dim: usize,
    pub batch: usize,
    /// [`CollapseMetrics::collapsing`].
    pub collapsing: bool,
    /// The memory bank's staleness at this step (methods with a bank only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank: Option<BankStaleness>,
    /// The momentum queue's staleness at this step (MoCo with a queue only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueStaleness>,
}

/// [`QueueCosines`] as written in a step record (`"queue": {...}` inside
/// `"collapse"`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct QueueStaleness {
    /// Mean cosine of the queries to their own keys.
    pub own: f64,
    /// Mean cosine to the keys enqueued `a` steps before this step's (age 0:
    /// the other images' keys of this step).
    pub by_age: Vec<f64>,
    /// Mean cosine to the rows still holding the queue's random start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<f64>,
}

impl From<&QueueCosines> for QueueStaleness {
    fn from(c: &QueueCosines) -> Self {
        Self {
            own: c.own,
            by_age: c.by_age.clone(),
            initial: c.initial,
        }
    }
}

/// [`BankCosines`] as written in a step record (`"bank": {...}` inside
/// `"collapse"`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct BankStaleness {
    /// Mean cosine of the queries to their own rows, as scored.
    pub own: f64,
    /// Mean cosine to the rows written earlier in this epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<f64>,
    /// Mean cosine to the rows not yet written in this epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unwritten: Option<f64>,
    pub written_rows: usize,
    pub unwritten_rows: usize,
}

impl From<&BankCosines> for BankStaleness {
    fn from(c: &BankCosines) -> Self {
        Self {
            own: c.own,
            written: c.written,
            unwritten: c.unwritten,
            written_rows: c.written_rows,
            unwritten_rows: c.unwritten_rows,
        }
    }
}

impl Collapse {
    /// With the bank's staleness of the same step.
    pub fn with_bank(mut self, bank: Option<&BankCosines>) -> Self {
        self.bank = bank.map(BankStaleness::from);
        self
    }

    /// With the queue's staleness of the same step.
    pub fn with_queue(mut self, queue: Option<&QueueCosines>) -> Self {
        self.queue = queue.map(QueueStaleness::from);
        self
    }
}

impl From<&CollapseMetrics> for Collapse {
    fn from(m: &CollapseMetrics) -> Self {
        Self {
            std: m.embedding_std,
            std_sqrt_d: m.normalized_std(),
            rank_me: m.rank_me,
            alignment: m.alignment,
            uniformity: m.uniformity,
            dim: m.dim,
            batch: m.batch,
            collapsing: m.collapsing(),
            bank: None,
            queue: None,
        }
    }
}

impl Record {
    pub fn step(&self) -> u64 {
        match self {
            Record::Step { step, .. }
            | Record::Knn { step, .. }
            | Record::Epoch { step, .. }
            | Record::SkippedFile { step, .. } => *step,
        }
    }
}

/// Where the trainer sends its records.
pub trait MetricsSink {
    fn record(&mut self, record: &Record) -> Result<()>;
}

/// A callback sink: `trainer.with_metrics(|r: &Record| println!("{r:?}"))`.
impl<F: FnMut(&Record)> MetricsSink for F {
    fn record(&mut self, record: &Record) -> Result<()> {
        self(record);
        Ok(())
    }
}

/// Appends records to a JSON-lines file, one flushed line each.
pub struct JsonlMetrics {
    file: std::fs::File,
    path: PathBuf,
    elapsed_s: f64,
}

impl JsonlMetrics {
    /// Opens `path` for appending (created if missing).
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err("cannot open", path))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            elapsed_s: 0.0,
        })
    }

    /// Opens the file of a run resumed at `step`: the records after `step`
    /// are dropped (the run writes them again), and [`JsonlMetrics::elapsed_s`]
    /// is the wall time the run had when it reached them.
    pub fn resume(path: &Path, step: u64) -> Result<Self> {
        truncate_after(path, step)?;
        let elapsed_s = if path.exists() {
            read_records(path)?
                .iter()
                .rev()
                .find_map(|r| match r {
                    Record::Step { elapsed_s, .. } => Some(*elapsed_s),
                    _ => None,
                })
                .unwrap_or(0.0)
        } else {
            0.0
        };
        Ok(Self {
            elapsed_s,
            ..Self::open(path)?
        })
    }

    /// The last step record's `elapsed_s` of a resumed file (0 for a new one):
    /// give it to [`Trainer::with_elapsed_before`](crate::Trainer::with_elapsed_before).
    pub fn elapsed_s(&self) -> f64 {
        self.elapsed_s
    }
}

impl MetricsSink for JsonlMetrics {
    fn record(&mut self, record: &Record) -> Result<()> {
        let mut line =
            serde_json::to_string(record).map_err(|e| TrainError::Metrics(e.to_string()))?;
        line.push('\n');
        // One write call per line: a crash leaves at most a partial last line,
        // which `read_records` skips.
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(io_err("cannot write", &self.path))
    }
}

/// All complete records of a metrics file (a torn last line is skipped).
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(io_err("cannot read", path))?;
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(TrainError::BadFile(format!(
                    "{} line {}: {e}",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    Ok(out)
}

/// Keeps only records up to `step` (a resumed run rewrites the rest).
pub fn truncate_after(path: &Path, step: u64) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let kept = read_records(path)?.into_iter().filter(|r| r.step() <= step);
    let mut text = String::new();
    for r in kept {
        text.push_str(&serde_json::to_string(&r).map_err(|e| TrainError::Metrics(e.to_string()))?);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(s: u64) -> Record {
        Record::Step {
            step: s,
            epoch: s as f64 / 4.0,
            loss: 5.0 - s as f64 * 0.1,
            lr: 0.06,
            momentum: Some(0.99),
            pos_acc: None,
            images_per_s: 100.0,
            elapsed_s: s as f64,
            collapse: None,
        }
    }

    fn dir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("mocca-train-metrics-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn records_round_trip_with_their_kind_tag() {
        let p = dir("rt").join("metrics.jsonl");
        let mut w = JsonlMetrics::open(&p).unwrap();
        let knn = Record::Knn {
            step: 4,
            epoch: 1.0,
            top1: 31.5,
            k: 200,
            t: 0.1,
            encoder: "query".into(),
            layer: "backbone".into(),
            n_train: 50,
            n_test: 20,
        };
        w.record(&step(1)).unwrap();
        w.record(&knn).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .starts_with("{\"kind\":\"knn\""),
            "{text}"
        );
        assert_eq!(read_records(&p).unwrap(), vec![step(1), knn]);
    }

    #[test]
    fn step_records_carry_the_collapse_monitor_and_old_files_still_read() {
        let p = dir("collapse").join("metrics.jsonl");
        // A line written before the collapse monitor existed.
        std::fs::write(
            &p,
            "{\"kind\":\"step\",\"step\":1,\"epoch\":0.25,\"loss\":4.9,\"lr\":0.06,\
             \"momentum\":0.99,\"images_per_s\":100.0,\"elapsed_s\":1.0}\n",
        )
        .unwrap();
        let metrics = CollapseMetrics {
            batch: 256,
            dim: 128,
            embedding_std: 0.001,
            rank_me: 3.5,
            alignment: Some(0.01),
            uniformity: -0.002,
        };
        let mut with = step(2);
        if let Record::Step { collapse, .. } = &mut with {
            *collapse = Some(Collapse::from(&metrics));
        }
        JsonlMetrics::open(&p).unwrap().record(&with).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let line = text.lines().nth(1).unwrap();
        assert!(line.contains("\"collapse\":{\"std\":0.001,"), "{line}");
        assert!(line.contains("\"collapsing\":true"), "{line}");
        let mut old = step(1);
        if let Record::Step {
            pos_acc,
            epoch,
            loss,
            ..
        } = &mut old
        {
            (*pos_acc, *epoch, *loss) = (None, 0.25, 4.9);
        }
        assert_eq!(read_records(&p).unwrap(), vec![old, with]);
        let c = Collapse::from(&metrics);
        assert!((c.std_sqrt_d - 0.001 * 128f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let p = dir("torn").join("metrics.jsonl");
        let mut w = JsonlMetrics::open(&p).unwrap();
        w.record(&step(1)).unwrap();
        drop(w);
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"kind\":\"step\",\"st").unwrap();
        assert_eq!(read_records(&p).unwrap(), vec![step(1)]);
    }

    #[test]
    fn truncate_keeps_records_up_to_the_checkpoint_step() {
        let p = dir("trunc").join("metrics.jsonl");
        let mut w = JsonlMetrics::open(&p).unwrap();
        for s in 1..=6 {
            w.record(&step(s)).unwrap();
        }
        truncate_after(&p, 4).unwrap();
        assert_eq!(
            read_records(&p).unwrap(),
            (1..=4).map(step).collect::<Vec<_>>()
        );
    }
}
