//! Range rules shared by the libraries' config checks and the trainer's config file.
//!
//! A rule says what is wrong with a value but not whose value it is: a library adds its field's
//! name, the trainer the config key, so both report the same rule in their own words (one
//! `momentum` rule, `"momentum must be finite and >= 0, got -1"` from the optimizer and
//! `"optimizer.momentum must be finite and >= 0, got -1"` from a config file).
//!
//! ```
//! use mocca_core::check;
//!
//! assert!(check::non_negative(0.0).is_ok());
//! let err = check::non_negative(-1.0).unwrap_err();
//! assert_eq!(format!("momentum {err}"), "momentum must be finite and >= 0, got -1");
//! ```

use std::fmt;

/// What is wrong with one value, phrased to follow its name (`"must be ..., got ..."`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(String);

impl Invalid {
    pub fn new(problem: impl Into<String>) -> Self {
        Self(problem.into())
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// Finite (no NaN, no infinity).
pub fn finite(v: f64) -> Result<(), Invalid> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Invalid::new(format!("must be finite, got {v}")))
    }
}

/// Finite and `>= 0`.
pub fn non_negative(v: f64) -> Result<(), Invalid> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(Invalid::new(format!("must be finite and >= 0, got {v}")))
    }
}

/// Finite and `> 0`.
pub fn positive(v: f64) -> Result<(), Invalid> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Invalid::new(format!("must be finite and > 0, got {v}")))
    }
}

/// In `[0, 1]`.
pub fn unit_interval(v: f64) -> Result<(), Invalid> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(Invalid::new(format!("must be in [0, 1], got {v}")))
    }
}

/// At least 1.
pub fn at_least_one(n: usize) -> Result<(), Invalid> {
    if n >= 1 {
        Ok(())
    } else {
        Err(Invalid::new("must be at least 1"))
    }
}
