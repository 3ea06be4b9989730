//! # mocca-core
//!
//! The small pieces every mocca crate shares, each in one place so that two crates can never
//! drift apart on them. Its one job: hold them, depending on nothing (not even Candle), so any
//! crate can use them. Today that is the seeded generator ([`SplitMix64`]), whose draws fix the
//! initial weights, the queue's initial rows and the data order.
//!
//! ```
//! use mocca_core::SplitMix64;
//!
//! // The same seed draws the same numbers on every platform, and the whole state is one u64.
//! let mut rng = SplitMix64::new(7);
//! let first = rng.next_u64();
//! let mut resumed = SplitMix64::new(7);
//! assert_eq!(resumed.next_u64(), first);
//! assert_eq!(SplitMix64::new(rng.state()).next_u64(), rng.next_u64());
//! ```

pub mod rng;

pub use rng::SplitMix64;
