//! Errors of this crate.

use std::path::PathBuf;

/// What went wrong building a model, feeding it or moving its state in and out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value that cannot describe a model.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// An input tensor of the wrong rank, channel count or batch size.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A state dict lacks an entry the model needs.
    #[error("state dict has no entry `{0}`")]
    MissingEntry(String),

    /// A state-dict entry whose shape differs from the model's.
    #[error("state dict entry `{name}` has shape {got:?}, the model expects {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    /// Reading or writing a weights file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A weights file that is not valid safetensors, or holds unsupported data.
    #[error("{path}: {message}")]
    WeightsFile { path: PathBuf, message: String },

    /// An error from Candle itself (device, dtype, out of memory, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

// `Module::forward` must return Candle's error type; this keeps our message.
impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(inner) => inner,
            other => candle_core::Error::wrap(other),
        }
    }
}
