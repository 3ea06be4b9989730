//! The crate's error type.

/// Why a configuration cannot be built, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// A key, value or combination of settings is not valid (the message
    /// names the key and what it expects).
    #[error("{0}")]
    Invalid(String),

    /// A file could not be read.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    /// The data a config names could not be opened.
    #[error(transparent)]
    Data(Box<mocca_data::DataError>),

    /// The same, with what was being opened.
    #[error("{context}: {source}")]
    DataAt {
        context: String,
        source: Box<mocca_data::DataError>,
    },

    #[error(transparent)]
    Method(Box<mocca_methods::MethodError>),

    #[error(transparent)]
    Aug(Box<mocca_aug::AugError>),

    #[error(transparent)]
    Train(Box<mocca_train::TrainError>),

    #[error(transparent)]
    Candle(Box<candle_core::Error>),
}

// Boxed: the errors of the crates below are large, and a config's `Result`
// should stay small.
macro_rules! from_boxed {
    ($($variant:ident($t:ty)),* $(,)?) => {$(
        impl From<$t> for RecipeError {
            fn from(e: $t) -> Self {
                RecipeError::$variant(Box::new(e))
            }
        }
    )*};
}

from_boxed!(
    Data(mocca_data::DataError),
    Method(mocca_methods::MethodError),
    Aug(mocca_aug::AugError),
    Train(mocca_train::TrainError),
    Candle(candle_core::Error),
);

pub type Result<T, E = RecipeError> = std::result::Result<T, E>;

/// `return Err(RecipeError::Invalid(format!(...)))`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::RecipeError::Invalid(format!($($arg)*)))
    };
}

/// `RecipeError::Invalid(format!(...))`.
macro_rules! invalid {
    ($($arg:tt)*) => {
        $crate::error::RecipeError::Invalid(format!($($arg)*))
    };
}

pub(crate) use {bail, invalid};
