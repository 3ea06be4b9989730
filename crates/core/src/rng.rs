//! SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators", OOPSLA
//! 2014), the one seeded generator of every mocca crate.
//!
//! The state advances by the golden-ratio constant `0x9E3779B97F4A7C15` and each output is the
//! state passed through the [`mix`] finaliser. The whole state is one `u64`, so checkpoints store
//! it exactly and a resumed run draws the same numbers; results do not depend on the platform or
//! on a dependency's version. Independent streams are keyed by hashing (seed, key) with the same
//! finaliser ([`derive()`]), so item `k` of anything (an epoch's permutation, a synthetic image) is
//! computed without generating items `0..k` first.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output finaliser (a bijection on u64 with good avalanche).
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of stream `key` under `seed`: `mix(seed ^ mix(key + GOLDEN))`.
pub fn derive(seed: u64, key: u64) -> u64 {
    mix(seed ^ mix(key.wrapping_add(GOLDEN)))
}

/// 2^-53: one step of the 53-bit grid the float draws live on.
const INV_2_53: f64 = 1.0 / (1u64 << 53) as f64;

/// The generator. Two normal draws exist, [`normal`](Self::normal)
/// and [`normal_from_uniform01_nonzero`](Self::normal_from_uniform01_nonzero): they were fixed
/// by two crates before the crates shared this type (the seeded weights and the linear probe on
/// the first, the queue's and memory bank's initial rows on the second), and every seeded run,
/// checkpoint and golden trajectory depends on their exact values, so both stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// The generator whose state is `seed`; `new(g.state())` continues `g`'s stream.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The state to store.
    pub fn state(&self) -> u64 {
        self.state
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// Uniform integer in `0..n` (`n > 0`), exactly uniform: Lemire's multiply-shift with
    /// rejection ("Fast random integer generation in an interval", ACM TOMACS 2019). The
    /// threshold `2^64 mod n` is only computed when the first product falls below `n`; that
    /// draws what checking every product against the threshold would draw.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let mut m = self.next_u64() as u128 * n as u128;
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = self.next_u64() as u128 * n as u128;
            }
        }
        (m >> 64) as u64
    }

    /// Uniform f32 in `[0, 1)` from the top 24 bits.
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in `[0, 1)`: the top 53 bits `k`, as `k / 2^53`.
    pub fn uniform01(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `(0, 1]`: the top 53 bits `k`, as `(k + 1) / 2^53`, so a logarithm of it is
    /// always finite.
    pub fn uniform01_nonzero(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * INV_2_53
    }

    /// A standard normal draw by Box–Muller from `u1 = 1 − uniform01()` and `u2 = uniform01()`
    /// (`1 − u` keeps the logarithm finite): the draw of the seeded weights.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform01();
        let u2 = self.uniform01();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// A standard normal draw by Box–Muller from `u1, u2 = uniform01_nonzero()`: the draw of the
    /// queue's and memory bank's initial rows. The second value of the pair is dropped, so the
    /// state stays one `u64`.
    pub fn normal_from_uniform01_nonzero(&mut self) -> f64 {
        let u1 = self.uniform01_nonzero();
        let u2 = self.uniform01_nonzero();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A uniformly random permutation of `0..n` (Fisher–Yates, from the last position down).
    pub fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        p
    }
}
