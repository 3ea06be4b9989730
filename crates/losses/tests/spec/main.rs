//! Specification tests of mocca-losses, in one binary (one link in CI).

mod common;

mod closed_forms;
mod errors;
mod fused_vs_composed;
mod golden_losses;
mod gradients;
mod indexed;
