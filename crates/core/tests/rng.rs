//! The shared generator draws exactly what each crate's own copy drew before they shared it:
//! seeded weights, queue rows and data orders depend on every bit.

use mocca_core::rng::{derive, mix};
use mocca_core::SplitMix64;

/// Raw outputs for `seed`, to feed the formulas the crates used before.
fn outputs(seed: u64, n: usize) -> Vec<u64> {
    let mut r = SplitMix64::new(seed);
    (0..n).map(|_| r.next_u64()).collect()
}

#[test]
fn first_outputs_of_seed_zero_match_vignas_reference() {
    let mut r = SplitMix64::new(0);
    assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
    assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
}

#[test]
fn a_generator_rebuilt_from_its_state_continues_the_stream() {
    let mut a = SplitMix64::new(42);
    a.next_u64();
    let mut b = SplitMix64::new(a.state());
    assert_eq!(a.next_u64(), b.next_u64());
}

#[test]
fn derived_streams_are_the_mix_of_seed_and_mixed_key() {
    assert_eq!(
        derive(5, 3),
        mix(5 ^ mix(3u64.wrapping_add(0x9E37_79B9_7F4A_7C15)))
    );
    assert_ne!(derive(5, 3), derive(5, 4));
}

#[test]
fn below_draws_what_the_threshold_first_rejection_loop_drew() {
    // mocca-methods' and mocca-queue's `below`: the threshold checked on every draw.
    fn threshold_first(r: &mut SplitMix64, n: u64) -> u64 {
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = r.next_u64() as u128 * n as u128;
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
    // Large n make rejections frequent enough to be exercised.
    for n in [1, 2, 3, 5, 7, 1000, u64::MAX / 3 + 7, u64::MAX - 1] {
        let (mut a, mut b) = (SplitMix64::new(n), SplitMix64::new(n));
        for _ in 0..2000 {
            assert_eq!(a.below(n), threshold_first(&mut b, n), "n = {n}");
        }
        assert_eq!(a, b, "same number of draws consumed for n = {n}");
    }
}

#[test]
fn below_stays_in_range_and_hits_every_value_evenly() {
    let mut r = SplitMix64::new(7);
    let mut seen = [0usize; 5];
    for _ in 0..5000 {
        seen[r.below(5) as usize] += 1;
    }
    assert!(seen.iter().all(|&c| (850..1150).contains(&c)), "{seen:?}");
}

#[test]
fn unit_f32_is_the_top_24_bits_in_the_half_open_interval() {
    let raw = outputs(3, 1000);
    let mut r = SplitMix64::new(3);
    for k in raw {
        let x = r.unit_f32();
        assert_eq!(x, (k >> 40) as f32 / (1u64 << 24) as f32);
        assert!((0.0..1.0).contains(&x));
    }
}

#[test]
fn uniform01_and_its_nonzero_twin_are_k_and_k_plus_one_over_2_pow_53() {
    let raw = outputs(11, 1000);
    let (mut a, mut b) = (SplitMix64::new(11), SplitMix64::new(11));
    for k in raw {
        let top = (k >> 11) as f64;
        assert_eq!(a.uniform01(), top / 9_007_199_254_740_992.0);
        assert_eq!(b.uniform01_nonzero(), (top + 1.0) / 9_007_199_254_740_992.0);
    }
}

#[test]
fn normal_is_the_seeded_weights_box_muller() {
    // mocca-methods' `normal` before the generator was shared.
    let raw = outputs(42, 2000);
    let u = |k: u64| (k >> 11) as f64 / (1u64 << 53) as f64;
    let mut r = SplitMix64::new(42);
    for pair in raw.chunks(2) {
        let u1 = 1.0 - u(pair[0]);
        let u2 = u(pair[1]);
        let want = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        assert_eq!(r.normal().to_bits(), want.to_bits());
    }
}

#[test]
fn normal_from_uniform01_nonzero_is_the_queue_rows_box_muller() {
    // mocca-queue's `normal` before the generator was shared.
    let raw = outputs(42, 2000);
    let u = |k: u64| ((k >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
    let mut r = SplitMix64::new(42);
    for pair in raw.chunks(2) {
        let want = (-2.0 * u(pair[0]).ln()).sqrt() * (std::f64::consts::TAU * u(pair[1])).cos();
        assert_eq!(r.normal_from_uniform01_nonzero().to_bits(), want.to_bits());
    }
}

#[test]
fn the_two_normal_draws_differ_for_the_same_seed() {
    let a = SplitMix64::new(42).normal();
    let b = SplitMix64::new(42).normal_from_uniform01_nonzero();
    assert_ne!(a, b);
}

#[test]
fn both_normal_draws_have_zero_mean_and_unit_variance() {
    for draw in [
        SplitMix64::normal as fn(&mut SplitMix64) -> f64,
        SplitMix64::normal_from_uniform01_nonzero,
    ] {
        let mut r = SplitMix64::new(3);
        let xs: Vec<f64> = (0..20000).map(|_| draw(&mut r)).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.04,
            "mean {mean} var {var}"
        );
    }
}

#[test]
fn permutation_holds_every_index_once() {
    let mut p = SplitMix64::new(7).permutation(1000);
    assert_ne!(p, (0..1000).collect::<Vec<_>>());
    p.sort_unstable();
    assert_eq!(p, (0..1000).collect::<Vec<_>>());
}

#[test]
fn seed_42_draws_these_normals() {
    // Also computed by the same formulas in Python (math.log, math.cos).
    let mut r = SplitMix64::new(42);
    let weights: Vec<f64> = (0..3).map(|_| r.normal()).collect();
    assert_eq!(
        weights,
        [0.8822489062222688, -0.4508498757188601, 0.1883526341159315]
    );
    let mut r = SplitMix64::new(42);
    let rows: Vec<f64> = (0..3).map(|_| r.normal_from_uniform01_nonzero()).collect();
    assert_eq!(
        rows,
        [0.41471975043153003, -0.8918862136277573, 1.729593087937403]
    );
}
