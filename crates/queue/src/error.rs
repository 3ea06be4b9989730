use candle_core::DType;

/// What was wrong with a queue, memory bank or momentum-update call.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A size in a configuration is zero.
    #[error("{what} must be at least 1")]
    ZeroSize { what: &'static str },
    /// Keys/embeddings are `[N, D]` matrices.
    #[error("`{name}` must be a 2-D [N, D] tensor, got shape {shape:?}")]
    NotAMatrix {
        name: &'static str,
        shape: Vec<usize>,
    },
    /// The rows' width differs from the buffer's.
    #[error("`{name}` has embedding width {got}, but the buffer holds width {expected}")]
    DimMismatch {
        name: &'static str,
        expected: usize,
        got: usize,
    },
    /// More keys in one enqueue than the queue holds.
    #[error("cannot enqueue {batch} keys into a queue of {size}: the batch must not exceed the queue size")]
    BatchLargerThanQueue { batch: usize, size: usize },
    /// An enqueue or update without rows.
    #[error("empty batch: `{name}` has no rows")]
    EmptyBatch { name: &'static str },
    /// The number of indices and of rows differ.
    #[error("{indices} indices for {rows} rows of `{name}`")]
    IndexCountMismatch {
        name: &'static str,
        indices: usize,
        rows: usize,
    },
    /// A memory-bank index past the end.
    #[error("index {index} is out of range for a memory bank of {len} rows")]
    IndexOutOfRange { index: usize, len: usize },
    /// The same memory-bank row twice in one update (the result would
    /// depend on write order).
    #[error("index {index} appears more than once in one update")]
    DuplicateIndex { index: usize },
    /// Floating-point tensors only.
    #[error("`{name}` has dtype {dtype:?}; expected a floating-point dtype")]
    UnsupportedDType { name: &'static str, dtype: DType },
    /// Everything of one queue/bank/encoder lives on one device.
    #[error("`{name}` is on {got:?} but the buffer is on {expected:?}")]
    DeviceMismatch {
        name: String,
        got: candle_core::DeviceLocation,
        expected: candle_core::DeviceLocation,
    },
    /// A momentum outside `[0, 1]` (or NaN).
    #[error("momentum must be in [0, 1], got {0}")]
    InvalidMomentum(f64),
    /// The key and query encoders' tensor lists do not match by name.
    #[error("`{name}` is in the {present} encoder's list but not in the {missing} encoder's")]
    MissingParameter {
        name: String,
        present: &'static str,
        missing: &'static str,
    },
    /// A name appears twice in one encoder's list.
    #[error("`{name}` appears twice in the {side} encoder's list")]
    DuplicateParameter { name: String, side: &'static str },
    /// Matched by name, but different shapes or dtypes.
    #[error("`{name}`: key encoder has {key}, query encoder has {query}")]
    ParameterMismatch {
        name: String,
        key: String,
        query: String,
    },
    /// A saved state lacks a tensor.
    #[error("saved state has no tensor `{name}`")]
    MissingStateTensor { name: String },
    /// A saved state is inconsistent (wrong dtype, shape, pointer past the end, ...).
    #[error("invalid saved state: {0}")]
    InvalidState(String),
    /// Reading or writing a state file.
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// An error from candle itself.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
