//! The rules this crate's configs are checked by, for callers that check the same settings
//! under their own names (mocca-methods' `MoCoConfig`, the trainer's config file).

use mocca_core::check::{self, Invalid};

/// An EMA momentum (the key encoder's, the memory bank's row update): in `[0, 1]`, 1 leaving
/// the target unchanged and 0 copying the source.
pub fn momentum(m: f64) -> Result<(), Invalid> {
    check::unit_interval(m)
}

/// A queue length K or a number of memory-bank negatives: at least 1.
pub fn size(n: usize) -> Result<(), Invalid> {
    check::at_least_one(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn momentum_is_closed_at_zero_and_one() {
        assert!(momentum(0.0).is_ok() && momentum(1.0).is_ok());
        assert_eq!(
            momentum(1.01).unwrap_err().to_string(),
            "must be in [0, 1], got 1.01"
        );
        assert!(momentum(f64::NAN).is_err());
    }

    #[test]
    fn a_size_of_zero_is_rejected() {
        assert!(size(1).is_ok());
        assert_eq!(size(0).unwrap_err().to_string(), "must be at least 1");
    }
}
