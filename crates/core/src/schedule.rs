//! The half-cosine curve both schedules follow: the learning rate decaying from its base to its
//! final value (SGDR, Loshchilov & Hutter 2017; `CosineAnnealingLR`) and the key-encoder
//! momentum rising from `m0` to 1 (BYOL, Grill et al. 2020).
//!
//! ```
//! use mocca_core::schedule::half_cosine;
//! use std::f64::consts::PI;
//!
//! assert_eq!(half_cosine(0.4, 0.0, 0.0), 0.4);
//! assert_eq!(half_cosine(0.4, 0.0, PI / 2.0), 0.2);
//! assert_eq!(half_cosine(0.99, 1.0, PI), 1.0);
//! ```

/// `end + (start − end)·½·(1 + cos(angle))`: `start` at angle 0, `end` at angle π.
///
/// The caller computes the angle (π times its progress through the schedule) because the two
/// schedules compute it in different orders, `(π·t)/T` for the learning rate and `π·(k/K)` for
/// the momentum, and each order's values are fixed by the runs and golden trajectories that used
/// it.
pub fn half_cosine(start: f64, end: f64, angle: f64) -> f64 {
    end + (start - end) * 0.5 * (1.0 + angle.cos())
}
