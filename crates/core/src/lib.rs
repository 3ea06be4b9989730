//! # mocca-core
//!
//! The small pieces every mocca crate shares, each in one place so that two crates can never
//! drift apart on them: the seeded generator ([`SplitMix64`], whose draws fix the initial
//! weights, the queue's initial rows and the data order), crash-safe file writes
//! ([`fs::write_atomic`]), the run-time choice between a baseline and an AVX2 + FMA build of a
//! kernel ([`multiversion!`]), the range rules that libraries and the config file both apply
//! ([`check`]) and the half-cosine curve of the learning-rate and momentum schedules
//! ([`schedule::half_cosine`]). It depends on nothing, not even Candle.
//!
//! ```
//! use mocca_core::{fs, SplitMix64};
//!
//! // The same seed draws the same numbers on every platform, and the whole state is one u64.
//! let mut rng = SplitMix64::new(7);
//! let first = rng.next_u64();
//! let mut resumed = SplitMix64::new(7);
//! assert_eq!(resumed.next_u64(), first);
//! assert_eq!(SplitMix64::new(rng.state()).next_u64(), rng.next_u64());
//!
//! // A file written atomically holds either the old bytes or the new ones, never half of them.
//! let dir = std::env::temp_dir().join(format!("mocca-core-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("state.bin");
//! fs::write_atomic(&path, b"step 1")?;
//! fs::write_atomic(&path, b"step 2")?;
//! assert_eq!(std::fs::read(&path)?, b"step 2");
//! std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod check;
pub mod fs;
pub mod rng;
pub mod schedule;
pub mod simd;

pub use rng::SplitMix64;
