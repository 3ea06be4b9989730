//! The one f32 matrix product every CPU kernel of the workspace goes through: this crate's
//! convolutions and mocca-losses' fused losses (so both translate to `gemm`'s column-first
//! stride convention in one place).

use gemm::Parallelism;

/// A strided view of a row-major-ish f32 matrix: element (i, j) is at `ptr + i*rs + j*cs`.
#[derive(Clone, Copy)]
pub struct MatRef {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a MatRef only carries a pointer to data the caller keeps alive and does not mutate
// for the duration of the parallel kernel that shares it.
unsafe impl Send for MatRef {}
unsafe impl Sync for MatRef {}

/// `dst[m, n] = (accumulate ? dst : 0) + a[m, k] · b[k, n]`: [`sgemm_scaled`] with scale 1.
///
/// `threads` = 1 runs on the calling thread (the kernels parallelise over their own chunks so
/// each thread's im2col buffer stays in its L2); otherwise gemm splits the product over Rayon.
///
/// # Safety
/// Every element addressed by the three views must be valid, `dst` writable and not aliased by
/// `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    accumulate: bool,
    a: MatRef,
    b: MatRef,
    threads: usize,
) {
    sgemm_scaled(m, n, k, dst, dst_rs, dst_cs, accumulate, a, b, 1.0, threads)
}

/// `dst[m, n] = (accumulate ? dst : 0) + scale · a[m, k] · b[k, n]`; `threads` as [`sgemm`].
///
/// # Safety
/// As [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_scaled(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    accumulate: bool,
    a: MatRef,
    b: MatRef,
    scale: f32,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    *dst.offset(i as isize * dst_rs + j as isize * dst_cs) = 0.0;
                }
            }
        }
        return;
    }
    let parallelism = if threads <= 1 {
        Parallelism::None
    } else {
        Parallelism::Rayon(threads)
    };
    // gemm's convention: dst := alpha·dst + beta·lhs·rhs, strides given column first.
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs,
        dst_rs,
        accumulate,
        a.ptr,
        a.cs,
        a.rs,
        b.ptr,
        b.cs,
        b.rs,
        1.0f32,
        scale,
        false,
        false,
        false,
        parallelism,
    );
}
