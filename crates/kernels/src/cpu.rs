//! Plumbing shared by the CPU kernels: typed access to contiguous f32 storage (also what
//! mocca-losses' fused losses read their operands with), per-thread scratch buffers, and work
//! sizes.

use std::cell::RefCell;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};
use rayon::prelude::*;

use crate::OpError;

/// The contiguous f32 data behind a CPU storage and its layout.
pub fn f32_slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &'static str,
) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => Err(OpError::Unsupported {
            op,
            msg: "the CPU kernel needs contiguous inputs".into(),
        }
        .into()),
    }
}

/// The contiguous f32 data of an op operand; any other dtype is an error naming `op`.
pub fn f32_operand<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &'static str,
) -> Result<&'a [f32]> {
    match storage {
        CpuStorage::F32(_) => f32_slice(storage, layout, op),
        other => Err(OpError::Unsupported {
            op,
            msg: format!("the CPU kernel is f32 only, got {:?}", other.dtype()),
        }
        .into()),
    }
}

/// `partial(0) + ... + partial(parts - 1)` element-wise, the partials computed on the Rayon
/// pool (per-thread accumulators of a weight gradient).
pub(crate) fn sum_partials(
    parts: usize,
    len: usize,
    partial: impl Fn(usize) -> Vec<f32> + Sync + Send,
) -> Vec<f32> {
    (0..parts)
        .into_par_iter()
        .map(partial)
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        })
        .unwrap_or_else(|| vec![0.0; len])
}

/// Runs `f` on the contiguous f32 data of a CPU tensor (holding its storage lock meanwhile).
pub(crate) fn with_f32<R>(
    t: &Tensor,
    op: &'static str,
    f: impl FnOnce(&[f32]) -> Result<R>,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(f32_slice(cpu, layout, op)?),
        _ => Err(OpError::Unsupported {
            op,
            msg: "the CPU kernel got a tensor on another device".into(),
        }
        .into()),
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch buffer of `len` floats (contents unspecified) that each thread reuses
/// across calls, so the im2col tiles are not re-faulted in from the OS on every chunk.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        // Only when Rayon runs a second kernel on this thread while the first waits inside a
        // parallel GEMM: give that one its own buffer.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// A vector of `len` floats for a kernel that writes every element before anything reads it.
///
/// Skips the zero-fill: for the activations of a small network the memset of each fresh output
/// is a whole extra memory pass (about 5 % of a training step at ResNet-18 width 0.25).
#[allow(clippy::uninit_vec)] // as Candle's own CPU kernels do; see the SAFETY note
pub(crate) fn output_buffer(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: every caller passes the buffer to a kernel that overwrites all `len` elements
    // before any is read (the GEMMs with `accumulate = false`, the direct convolution, the
    // element-wise BatchNorm passes), and every bit pattern is a valid f32.
    unsafe { v.set_len(len) };
    v
}

/// Number of Rayon worker threads the kernels split their work over.
pub(crate) fn threads() -> usize {
    rayon::current_num_threads().max(1)
}
