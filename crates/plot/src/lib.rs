//! Figures of training runs. One job: draw what a run (or a sweep of runs)
//! recorded, with [plotters], to PNG or SVG, with a font embedded in the
//! crate so that a figure looks the same on every machine.
//!
//! # Map
//!
//! | item | what |
//! |---|---|
//! | [`curves`] | a run folder's `metrics.jsonl` as curves against epochs ([`RunSeries`]) and the panels `cargo xtask plot` draws: loss (log axis), lr, kNN top-1, and, when recorded, the collapse monitor (std × √d, RankMe, alignment, uniformity) with its thresholds |
//! | [`chart`] | a sweep's result: accuracy against the swept value, one line per series, ± one std over the seeds and each seed's dot ([`Chart`]) |
//! | [`figure`] | the panel grid both are drawn on, the palette, ticks, legends |
//!
//! # Example
//!
//! Two runs' curves as one picture (what `cargo xtask plot a b --out ab.svg`
//! writes):
//!
//! ```
//! use mocca_plot::{curves, figure, RunSeries};
//!
//! let run = |name: &str, last: f64| RunSeries {
//!     name: name.into(),
//!     loss: vec![(0.0, 8.0), (1.0, 7.0), (2.0, last)],
//!     lr: vec![(0.0, 0.06), (2.0, 0.0)],
//!     knn: vec![(0.0, 20.0), (2.0, 40.0)],
//!     ..RunSeries::default()
//! };
//! let runs = [run("queue", 6.0), run("bank", 6.5)];
//! let (panels, cols, rows) = curves::panels(&runs);
//! assert_eq!((cols, rows), (1, 3)); // loss, lr, kNN: no collapse monitor recorded
//! let dir = std::env::temp_dir().join(format!("mocca-plot-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! figure::save(&dir.join("ab.svg"), &panels, cols, rows)?;
//! assert!(std::fs::read_to_string(dir.join("ab.svg"))?.contains("queue"));
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod chart;
pub mod curves;
pub mod figure;

pub use chart::Chart;
pub use curves::RunSeries;

use std::path::PathBuf;

/// Why a figure could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// plotters refused to draw (its backends' errors are not `Sync`, so kept as text).
    #[error("drawing failed: {0}")]
    Draw(String),
    #[error("PNG encoding failed")]
    Png(#[source] image::ImageError),
    /// `metrics.jsonl` missing: the path given is not a run folder.
    #[error("{metrics} not found: is {run} a run folder?")]
    NotARun { run: PathBuf, metrics: PathBuf },
    #[error("{0} holds no step or kNN records yet")]
    NoRecords(PathBuf),
    /// Reading the metrics or writing the picture (boxed: the trainer's error is large).
    #[error(transparent)]
    Run(Box<mocca_train::TrainError>),
}

impl From<mocca_train::TrainError> for PlotError {
    fn from(e: mocca_train::TrainError) -> Self {
        Self::Run(Box::new(e))
    }
}

pub type Result<T, E = PlotError> = std::result::Result<T, E>;
