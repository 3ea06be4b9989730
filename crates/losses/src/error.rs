use candle_core::DType;

/// What was wrong with a loss's configuration or inputs.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// The temperature τ divides the logits: it must be a finite number above zero.
    #[error("temperature must be finite and > 0, got {0}")]
    InvalidTemperature(f64),
    /// Embeddings are `[batch, dim]` matrices.
    #[error("`{name}` must be a 2-D [batch, dim] tensor, got shape {shape:?}")]
    NotAMatrix {
        name: &'static str,
        shape: Vec<usize>,
    },
    /// Two inputs whose shapes have to agree do not.
    #[error("shape mismatch: `{name}` has shape {got:?}, expected {expected}")]
    ShapeMismatch {
        name: &'static str,
        got: Vec<usize>,
        expected: String,
    },
    /// A batch without rows has no loss (the mean would be 0/0).
    #[error("empty batch: `{name}` has no rows")]
    EmptyBatch { name: &'static str },
    /// Zero-width embeddings cannot be normalised.
    #[error("`{name}` has embedding dimension 0")]
    EmptyEmbedding { name: &'static str },
    /// InfoNCE with explicit negatives needs at least one.
    #[error("no negatives: `{name}` has no rows (InfoNCE needs K >= 1)")]
    NoNegatives { name: &'static str },
    /// Only floating-point embeddings make sense.
    #[error("`{name}` has dtype {dtype:?}; expected f32, f16, bf16 or f64")]
    UnsupportedDType { name: &'static str, dtype: DType },
    /// All inputs of one loss must live on the same device.
    #[error("`{name}` is on {got:?} but `{other}` is on {expected:?}")]
    DeviceMismatch {
        name: &'static str,
        other: &'static str,
        got: candle_core::DeviceLocation,
        expected: candle_core::DeviceLocation,
    },
    /// Per-query negative indices that are not a `[batch, K]` integer matrix of valid rows.
    #[error("`{name}`: {reason}")]
    InvalidIndices { name: &'static str, reason: String },
    /// The NCE normaliser `Z` divides the scores: it must be finite and > 0.
    #[error("the NCE normaliser Z must be finite and > 0, got {0}")]
    InvalidNormaliser(f64),
    /// NaN or infinity among the input values.
    #[error("`{name}` contains non-finite values (NaN or infinity)")]
    NonFinite { name: &'static str },
    /// An error from candle itself (allocation, device failure, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
