//! The crate's error type.

use std::path::PathBuf;

/// Everything that can stop a run. Each variant names the problem in words a
/// user can act on; the wrapped errors keep their own.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting of the trainer is out of range.
    #[error("invalid trainer setting: {0}")]
    InvalidConfig(String),

    /// Data handed to the trainer is unusable (an image the augmentations reject, ...).
    #[error("bad input: {0}")]
    BadInput(String),

    /// The loss of a step was NaN or infinite. Nothing of that step was
    /// applied; `last_checkpoint` is the step of the checkpoint still intact.
    #[error(
        "the loss became {loss} at step {step} (epoch {epoch}): training diverged and was stopped \
         before that update; {}. Try a lower learning rate or a higher temperature.",
        checkpoint_note(*last_checkpoint)
    )]
    Diverged {
        /// The step that produced the loss (1-based, as [`mocca_methods::StepStats::step`]).
        step: u64,
        /// Its epoch (1-based).
        epoch: u64,
        loss: f64,
        last_checkpoint: Option<u64>,
    },

    /// A batch could not be made (a file that does not decode, with skipping off; an
    /// unreadable file) after `step` steps; `last_checkpoint` is where a resumed run starts.
    #[error(
        "{cause}; the run stopped after step {step}: {}. Fix or remove the file and resume{}",
        checkpoint_note(*last_checkpoint),
        if matches!(**cause, TrainError::Data(mocca_data::DataError::Decode { .. })) {
            " (or let the run skip files that do not decode)"
        } else {
            ""
        }
    )]
    DataStopped {
        step: u64,
        last_checkpoint: Option<u64>,
        /// What stopped it (shown in the message, not as a separate cause).
        cause: Box<TrainError>,
    },

    /// A checkpoint cannot continue this run: another dataset, another
    /// configuration, or a step past the run's end.
    #[error("{0}")]
    Resume(String),

    /// A file is not what it should be (not a checkpoint, truncated, corrupt).
    #[error("{0}")]
    BadFile(String),

    /// Another trainer holds the run folder's lock ([`crate::RunLock`]).
    #[error(
        "{} is in use by another trainer ({holder}); wait for it to finish or stop it \
         (Ctrl-C checkpoints), then resume",
        dir.display()
    )]
    Locked { dir: PathBuf, holder: String },

    /// Reading or writing a file failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done: "cannot write", "cannot read", ...
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A metrics sink or a progress callback failed.
    #[error("metrics: {0}")]
    Metrics(String),

    #[error(transparent)]
    Method(#[from] mocca_methods::MethodError),

    #[error(transparent)]
    Data(#[from] mocca_data::DataError),

    #[error(transparent)]
    Aug(#[from] mocca_aug::AugError),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn checkpoint_note(step: Option<u64>) -> String {
    match step {
        Some(s) => format!("the last checkpoint (step {s}) is intact"),
        None => "no checkpoint was written".into(),
    }
}

/// Result with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn io_err(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.to_path_buf();
    move |source| TrainError::Io { what, path, source }
}
