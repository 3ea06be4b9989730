//! Runtime choice of instruction set for the per-pixel kernels.
//!
//! Each kernel body is written once as plain Rust and compiled twice: for the
//! baseline target and with AVX2 + FMA enabled (picked at run time). The kernels
//! never reassociate float operations and use `mul_add` exactly where torch uses a
//! fused multiply-add, so both builds give bit-identical results; AVX2 only
//! makes them faster (wider vectors, hardware FMA instead of a libm call).
//!
//! The macro and the run-time check live in mocca-core, shared with mocca-losses' kernels.

pub(crate) use mocca_core::multiversion;
