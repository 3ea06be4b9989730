//! Specification tests of mocca-queue, in one binary (one link in CI).

mod ema;
mod golden_sequence;
mod memory_bank;
mod queue;
