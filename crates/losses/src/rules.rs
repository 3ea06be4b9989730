//! The rules this crate checks its configs by, for callers that check the same settings under
//! their own names (the trainer's config file: `loss.temperature`).

use mocca_core::check::{self, Invalid};

/// The temperature τ divides the logits: finite and `> 0`.
pub fn temperature(t: f64) -> Result<(), Invalid> {
    check::positive(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_must_be_positive_and_finite() {
        assert!(temperature(0.07).is_ok());
        assert_eq!(
            temperature(0.0).unwrap_err().to_string(),
            "must be finite and > 0, got 0"
        );
        assert!(temperature(f64::INFINITY).is_err());
    }
}
