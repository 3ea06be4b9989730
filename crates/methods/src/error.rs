//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Tensor-level failures from Candle
/// are wrapped as [`MethodError::Candle`]; the other variants name the problem.
#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A tensor or slice handed to the crate has the wrong shape or length.
    #[error("bad input: {0}")]
    BadInput(String),

    /// The loss of a training step was NaN or infinite; no update was applied.
    #[error("non-finite loss ({loss}) at step {step}: no update was applied")]
    NonFiniteLoss { step: u64, loss: f64 },

    /// A saved state does not fit the object it is loaded into.
    #[error("state mismatch: {0}")]
    StateMismatch(String),

    /// Reading or writing a state file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A model could not be built, fed or (re)loaded.
    #[error(transparent)]
    Backbone(#[from] mocca_backbones::Error),

    /// A loss rejected its input.
    #[error(transparent)]
    Loss(#[from] mocca_losses::LossError),

    /// The queue, the memory bank or the momentum update rejected a call.
    #[error(transparent)]
    Queue(#[from] mocca_queue::QueueError),

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with [`MethodError`].
pub type Result<T, E = MethodError> = std::result::Result<T, E>;

pub(crate) fn config_err(msg: impl Into<String>) -> MethodError {
    MethodError::InvalidConfig(msg.into())
}

pub(crate) fn input_err(msg: impl Into<String>) -> MethodError {
    MethodError::BadInput(msg.into())
}
