//! torch's CPU generator (MT19937) and the way torch turns its output into
//! `uniform_`, `rand`, `randint` and `randperm` draws, so that a view seeded with
//! `s` draws exactly what torchvision draws after `torch.manual_seed(s)`.

const N: usize = 624;
const M: usize = 397;

/// `torch.Generator` on the CPU: a 32-bit Mersenne Twister (Matsumoto and
/// Nishimura, 1998) seeded as `torch.manual_seed(seed)` seeds it, plus torch's
/// mappings from raw 32-bit outputs to draws (see `tests/golden/aug/README.md`,
/// "RNG protocol").
#[derive(Clone)]
pub struct TorchGenerator {
    state: [u32; N],
    /// Next output position in `state`.
    index: usize,
    /// `state[..init]` holds the seeding recurrence; the rest is not computed yet.
    init: usize,
}

impl std::fmt::Debug for TorchGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchGenerator")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl TorchGenerator {
    /// The generator after `torch.manual_seed(seed)` (torch keeps only the low
    /// 32 bits of a seed for its CPU generator, so a `u32` is the whole seed).
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; N];
        state[0] = seed;
        Self {
            state,
            index: 0,
            init: 1,
        }
    }

    /// Runs the seeding recurrence up to `state[..=i]`.
    fn seed_upto(&mut self, i: usize) {
        while self.init <= i {
            let prev = self.state[self.init - 1];
            self.state[self.init] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(self.init as u32);
            self.init += 1;
        }
    }

    /// The next raw 32-bit output (one draw).
    ///
    /// The state is twisted one word at a time, just before that word is
    /// output: the in-place twist of MT19937 reads each word either before or
    /// after its own update in index order, so twisting lazily in the same
    /// order gives the same stream while a view that draws 30 numbers skips
    /// most of the 624-word twist (and of the seeding).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.index = 0;
        }
        let k = self.index;
        if self.init < N {
            self.seed_upto((k + M).min(N - 1));
        }
        let s = &mut self.state;
        let y = (s[k] & 0x8000_0000) | (s[(k + 1) % N] & 0x7fff_ffff);
        let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
        s[k] = s[(k + M) % N] ^ (y >> 1) ^ mag;
        let mut y = s[k];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `torch.rand(1)`: 24 random bits scaled to `[0, 1)`.
    pub fn rand(&mut self) -> f32 {
        (self.next_u32() & 0x00ff_ffff) as f32 / 16_777_216.0
    }

    /// `torch.empty(1).uniform_(low, high)` on a float32 tensor: the bounds are
    /// rounded to f32, the span is an f32 subtraction, and `low + unit * span`
    /// is evaluated in f64 before the final rounding to f32.
    pub fn uniform(&mut self, low: f64, high: f64) -> f32 {
        let lo = low as f32;
        let span = high as f32 - lo;
        let unit = (self.next_u32() & 0x00ff_ffff) as f64 / 16_777_216.0;
        (unit * span as f64 + lo as f64) as f32
    }

    /// `torch.randint(low, high, (1,))` for `high - low <= 2^32`: `low + u32 % (high - low)`,
    /// modulo bias included, as torch does. Returns `low` when the range is empty.
    pub fn randint(&mut self, low: i64, high: i64) -> i64 {
        let range = high.saturating_sub(low);
        if range <= 0 {
            return low;
        }
        low + (self.next_u32() as u64 % range as u64) as i64
    }

    /// `torch.randperm(4)`: a forward Fisher–Yates shuffle with `u32 % (4 - i)`
    /// (3 draws), the order in which ColorJitter applies its four adjustments.
    pub fn randperm4(&mut self) -> [u8; 4] {
        let mut r = [0u8, 1, 2, 3];
        for i in 0..3 {
            let z = (self.next_u32() % (4 - i as u32)) as usize;
            r.swap(i, i + z);
        }
        r
    }
}

/// The generator seed of one view of one sample: a hash of
/// `(seed, epoch, sample_id, view)` (SplitMix64's finaliser, Steele et al. 2014,
/// chained over the four values), folded to 32 bits because torch's CPU
/// generator has a 32-bit seed.
///
/// Every view draws from its own generator, so what a sample gets does not depend
/// on which thread runs it or which batch it lands in, and
/// `torch.manual_seed(view_seed(..))` followed by the same torchvision v2 pipeline
/// on the same float image draws the same parameters.
pub fn view_seed(seed: u64, epoch: u64, sample_id: u64, view: u32) -> u32 {
    fn mix(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let mut h = mix(seed);
    h = mix(h ^ epoch);
    h = mix(h ^ sample_id);
    h = mix(h ^ view as u64);
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_10000th_output() {
        // C++11 [rand.predef]: the 10000th output of a default-constructed
        // std::mt19937 (seed 5489) is 4123659995.
        let mut g = TorchGenerator::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = g.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn view_seeds_differ_across_each_input() {
        let base = view_seed(1, 2, 3, 0);
        assert_ne!(base, view_seed(0, 2, 3, 0));
        assert_ne!(base, view_seed(1, 3, 3, 0));
        assert_ne!(base, view_seed(1, 2, 4, 0));
        assert_ne!(base, view_seed(1, 2, 3, 1));
        assert_eq!(base, view_seed(1, 2, 3, 0));
    }
}
