use std::path::PathBuf;

/// Everything that can go wrong reading, finding or batching data.
///
/// Each variant names the file or folder involved, so a message printed as is
/// (`{err}`) tells the user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read (or written).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file the format requires is not there.
    #[error("{}: not found (expected: {what})", path.display())]
    MissingFile { path: PathBuf, what: String },

    /// A file has the wrong length: truncated, padded, or not of this format.
    #[error("{}: expected {expected} bytes ({what}), found {actual} bytes", path.display())]
    WrongSize {
        path: PathBuf,
        expected: u64,
        actual: u64,
        what: String,
    },

    /// A file's contents do not follow its format (bad magic number, label out
    /// of range, headers that disagree...).
    #[error("{}: {message}", path.display())]
    Malformed { path: PathBuf, message: String },

    /// An image file could not be decoded.
    #[error("{}: cannot decode image: {message}", path.display())]
    Decode { path: PathBuf, message: String },

    /// `open` found no dataset format it knows in a folder.
    #[error("{}: no dataset recognised; looked for {looked_for}", path.display())]
    NotRecognised { path: PathBuf, looked_for: String },

    /// `locate` found no data in any of the usual places.
    #[error("{0}")]
    NotFound(String),

    /// The requested split does not exist in this dataset.
    #[error("{}: {message}", path.display())]
    NoSuchSplit { path: PathBuf, message: String },

    /// A batch larger than the dataset would give epochs with no full batch.
    #[error("batch size {batch_size} is larger than the dataset ({len} images)")]
    BatchLargerThanDataset { batch_size: usize, len: usize },

    /// A parameter outside its valid range (zero batch size, 2 channels...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The loader's worker thread could not be started.
    #[error("cannot start the loader thread: {0}")]
    Thread(#[source] std::io::Error),

    /// Downloading a dataset failed (no connection, an HTTP error status, a body cut short);
    /// the message says what happened, whether a partial file was kept to resume, and how to
    /// get the files by hand.
    #[error("{url}: {message}")]
    Download { url: String, message: String },

    /// A dataset is not in its data folder and the network may not be used; the message says
    /// how to get the files by hand.
    #[error("{url}: {message}")]
    DownloadsOff { url: String, message: String },

    /// A downloaded (or given) archive is not the published one.
    #[error("{}: MD5 {actual}, expected {expected} (from {url}); {hint}", path.display())]
    ChecksumMismatch {
        path: PathBuf,
        url: String,
        expected: String,
        actual: String,
        hint: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::Malformed {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
