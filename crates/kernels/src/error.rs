//! [`OpError`]: why an op rejected its arguments.

/// Why an op rejected its arguments.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// An operand of the wrong rank or size.
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },
    /// A stride, padding, group count, ... that the op cannot use.
    #[error("{op}: {msg}")]
    Argument { op: &'static str, msg: String },
    /// Operands the op's kernel cannot take (dtype, device, layout).
    #[error("{op}: {msg}")]
    Unsupported { op: &'static str, msg: String },
}

impl From<OpError> for candle_core::Error {
    fn from(e: OpError) -> Self {
        candle_core::Error::wrap(e)
    }
}
