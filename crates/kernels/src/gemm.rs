//! The one f32 matrix product every CPU kernel of this module goes through.

use gemm::Parallelism;

/// A strided view of a row-major-ish f32 matrix: element (i, j) is at `ptr + i*rs + j*cs`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a MatRef only carries a pointer to data the caller keeps alive and does not mutate
// for the duration of the parallel kernel that shares it.
unsafe impl Send for MatRef {}
unsafe impl Sync for MatRef {}

/// `dst[m, n] = (accumulate ? dst : 0) + a[m, k] · b[k, n]`.
///
/// `threads` = 1 runs on the calling thread (the kernels parallelise over their own chunks so
/// each thread's im2col buffer stays in its L2); otherwise gemm splits the product over Rayon.
///
/// # Safety
/// Every element addressed by the three views must be valid, `dst` writable and not aliased by
/// `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
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
        1.0f32,
        false,
        false,
        false,
        parallelism,
    );
}
