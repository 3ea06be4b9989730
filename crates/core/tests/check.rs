//! The shared range rules: what each accepts, and how it words a rejection.

use mocca_core::check;

#[test]
fn non_negative_accepts_zero_and_rejects_negatives_and_nan() {
    assert!(check::non_negative(0.0).is_ok());
    assert!(check::non_negative(1.5).is_ok());
    assert_eq!(
        check::non_negative(-0.5).unwrap_err().to_string(),
        "must be finite and >= 0, got -0.5"
    );
    assert!(check::non_negative(f64::NAN).is_err());
    assert!(check::non_negative(f64::INFINITY).is_err());
}

#[test]
fn positive_rejects_zero() {
    assert!(check::positive(1e-3).is_ok());
    assert_eq!(
        check::positive(0.0).unwrap_err().to_string(),
        "must be finite and > 0, got 0"
    );
}

#[test]
fn unit_interval_is_closed_at_both_ends() {
    assert!(check::unit_interval(0.0).is_ok());
    assert!(check::unit_interval(1.0).is_ok());
    assert_eq!(
        check::unit_interval(1.5).unwrap_err().to_string(),
        "must be in [0, 1], got 1.5"
    );
    assert!(check::unit_interval(f64::NAN).is_err());
}

#[test]
fn finite_and_at_least_one() {
    assert!(check::finite(-3.0).is_ok());
    assert_eq!(
        check::finite(f64::NAN).unwrap_err().to_string(),
        "must be finite, got NaN"
    );
    assert!(check::at_least_one(1).is_ok());
    assert_eq!(
        check::at_least_one(0).unwrap_err().to_string(),
        "must be at least 1"
    );
}
