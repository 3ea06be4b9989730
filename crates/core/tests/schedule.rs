//! `half_cosine` gives, bit for bit, the values of the two schedules it replaced.

use mocca_core::schedule::half_cosine;
use std::f64::consts::PI;

#[test]
fn it_is_the_learning_rate_of_the_cosine_schedule() {
    // LrSchedule::WarmupCosine before: final + (base − final)·½·(1 + cos(π·t/T)).
    for (base, fin, span) in [
        (0.06, 0.0, 1000u64),
        (0.4, 0.01, 10),
        (0.3 * 16.0, 0.0, 195),
    ] {
        for t in 0..span {
            let cos = (PI * t as f64 / span as f64).cos();
            let old = fin + (base - fin) * 0.5 * (1.0 + cos);
            let new = half_cosine(base, fin, PI * t as f64 / span as f64);
            assert_eq!(new.to_bits(), old.to_bits(), "base {base} t {t}");
        }
    }
}

#[test]
fn it_is_the_momentum_of_byols_cosine_schedule() {
    // cosine_momentum before: 1 − (1 − m0)·(cos(π·k/K) + 1)/2.
    for (m0, total) in [(0.99, 100usize), (0.996, 12_500), (0.9, 10), (0.0, 7)] {
        for k in 0..=total {
            let progress = k as f64 / total as f64;
            let old = 1.0 - (1.0 - m0) * ((PI * progress).cos() + 1.0) / 2.0;
            let new = half_cosine(m0, 1.0, PI * progress);
            assert_eq!(new.to_bits(), old.to_bits(), "m0 {m0} k {k}");
        }
    }
}

#[test]
fn it_runs_from_start_at_angle_zero_to_end_at_angle_pi() {
    assert_eq!(half_cosine(0.06, 0.0, 0.0), 0.06);
    assert_eq!(half_cosine(0.06, 0.0, PI), 0.0);
    assert_eq!(half_cosine(0.99, 1.0, PI / 2.0), 0.995);
}
