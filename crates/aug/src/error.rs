/// Everything that can be wrong with a pipeline's parameters or with its input.
///
/// Parameter errors come out of the constructors ([`crate::RandomResizedCrop::new`],
/// [`crate::Compose::new`], ...), so a bad recipe fails when it is built, not in the
/// middle of an epoch. Input errors (a truncated image buffer, images of different
/// sizes for a pipeline without a crop) come out of the batch calls.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AugError {
    /// An output size, a crop or an image with a zero side.
    #[error("{what} is empty ({height}x{width}); both sides must be at least 1")]
    EmptyImage {
        what: &'static str,
        height: usize,
        width: usize,
    },

    /// A `(low, high)` range with `low > high`, a non-positive bound where only
    /// positive values make sense, or a NaN/infinite bound.
    #[error("{what} range ({low}, {high}) is invalid: {reason}")]
    InvalidRange {
        what: &'static str,
        low: f64,
        high: f64,
        reason: &'static str,
    },

    /// A probability outside `[0, 1]` (or NaN).
    #[error("probability of {what} must lie in [0, 1], got {p}")]
    InvalidProbability { what: &'static str, p: f64 },

    /// A Gaussian-blur kernel side that is even or zero.
    #[error("gaussian blur kernel size {kx}x{ky} is invalid: each side must be odd and positive")]
    InvalidKernelSize { kx: usize, ky: usize },

    /// Reflect padding needs `k / 2 < side` (as torch's `reflect` pad does).
    #[error(
        "gaussian blur kernel {kx}x{ky} is too large for a {height}x{width} image \
         (reflect padding needs kernel/2 < side)"
    )]
    BlurKernelTooLarge {
        kx: usize,
        ky: usize,
        height: usize,
        width: usize,
    },

    /// A single-number jitter strength that is negative or not finite.
    #[error("color jitter {what} strength must be finite and >= 0, got {value}")]
    InvalidJitter { what: &'static str, value: f64 },

    /// A normalisation standard deviation that is zero or not finite, or a
    /// non-finite mean.
    #[error("normalize {what}[{channel}] = {value} is invalid: {reason}")]
    InvalidNormalize {
        what: &'static str,
        channel: usize,
        value: f64,
        reason: &'static str,
    },

    /// A solarize threshold above 1 (the largest float pixel value) or not finite.
    #[error("solarize threshold must be finite and <= 1, got {0}")]
    InvalidThreshold(f64),

    /// A hue factor outside `[-0.5, 0.5]`.
    #[error("hue factor must lie in [-0.5, 0.5], got {0}")]
    InvalidHueFactor(f64),

    /// The pipeline's structure: two crops, a crop inside `RandomApply`, no views.
    #[error("invalid pipeline: {0}")]
    InvalidPipeline(&'static str),

    /// An image buffer whose length does not match its stated shape.
    #[error(
        "image buffer holds {actual} values, but {height}x{width}x{channels} needs {expected}"
    )]
    BufferSize {
        height: usize,
        width: usize,
        channels: usize,
        expected: usize,
        actual: usize,
    },

    /// Only RGB (3) and grey (1, replicated to RGB) images are accepted.
    #[error("images must have 1 or 3 channels, got {0}")]
    UnsupportedChannels(usize),

    /// A pipeline without a crop outputs its input size, so a batch needs images
    /// of one size.
    #[error(
        "image {index} is {height}x{width}, but this pipeline has no crop and the batch \
         started with {expected_height}x{expected_width}; add a RandomResizedCrop or pass \
         images of one size"
    )]
    ImageSizeMismatch {
        index: usize,
        height: usize,
        width: usize,
        expected_height: usize,
        expected_width: usize,
    },

    /// `images` and `sample_ids` of a batch call differ in length.
    #[error("batch has {images} images but {ids} sample ids")]
    LengthMismatch { images: usize, ids: usize },

    /// A caller-provided output buffer of the wrong length.
    #[error("output buffer holds {actual} floats, the batch needs {expected}")]
    OutputSize { expected: usize, actual: usize },
}
