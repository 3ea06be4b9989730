//! Where MoCo's negatives live and how its key encoder moves:
//!
//! - [`MomentumQueue`]: MoCo's dictionary as a `[K, D]` ring buffer of keys
//!   on the model's device (He et al. 2020), read without copies;
//! - [`MemoryBank`]: one row per training sample, updated by index with a
//!   momentum, negatives drawn per step (Wu et al. 2018, MoCo's mechanism (b));
//! - [`MomentumUpdate`]: the key encoder's exponential moving average of
//!   the query encoder, with BatchNorm buffers handled explicitly, and the
//!   [`cosine_momentum`] schedule.
//!
//! Queue and bank save and restore their whole state (buffer, pointer,
//! step, generator) through safetensors, bit for bit.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use mocca_queue::{MomentumQueue, MomentumQueueConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::Cpu;
//! let cfg = MomentumQueueConfig { size: 6, dim: 3, seed: 1, ..Default::default() };
//! let mut queue = MomentumQueue::new(cfg, &dev)?;
//! let keys = Tensor::new(&[[3f32, 0., 4.], [0., 2., 0.], [1., 0., 0.], [0., 0., 5.]], &dev)?;
//! queue.enqueue(&keys)?; // rows 0..4, normalised
//! queue.enqueue(&keys)?; // rows 4, 5, then wraps to 0, 1
//! assert_eq!(queue.ptr(), 2);
//! let rows = queue.negatives().to_vec2::<f32>()?;
//! assert_eq!(rows[0], [1.0, 0.0, 0.0]); // the third key of the second batch
//! assert_eq!(rows[4], [0.6, 0.0, 0.8]);
//! # Ok(())
//! # }
//! ```

mod ema;
mod error;
mod memory_bank;
mod queue;
mod rng;
mod rows;
pub mod rules;
mod state;

pub use ema::{cosine_momentum, cosine_momentum_to, BufferPolicy, MomentumUpdate};
pub use error::QueueError;
pub use memory_bank::{BankInit, MemoryBank, MemoryBankConfig};
pub use queue::{MomentumQueue, MomentumQueueConfig, QueueMode};
pub use state::u64_tensor;
