//! Run-time choice of instruction set for the CPU kernels of mocca-aug and mocca-losses.
//!
//! The workspace is built for baseline x86-64, so a kernel written as plain Rust would never use
//! AVX2 or FMA. [`multiversion!`](crate::multiversion) compiles a kernel twice, for the baseline
//! and with AVX2 + FMA enabled, and picks one per call with [`has_avx2_fma`].

use std::sync::atomic::{AtomicBool, Ordering};

static FORCE_PORTABLE: AtomicBool = AtomicBool::new(false);

/// Whether the AVX2 + FMA builds may run: the CPU has both, and [`force_portable`] is off.
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !FORCE_PORTABLE.load(Ordering::Relaxed)
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Routes every multiversioned kernel (of every crate) through its baseline build while `on`:
/// the hook of the tests that hold the two builds bit-identical.
pub fn force_portable(on: bool) {
    FORCE_PORTABLE.store(on, Ordering::Relaxed);
}

/// Defines a function compiled for the baseline target and for AVX2 + FMA, dispatching at run
/// time ([`simd::has_avx2_fma`](crate::simd::has_avx2_fma)).
///
/// Two forms. With a body, the body is the kernel, compiled into both builds:
///
/// ```
/// mocca_core::multiversion! {
///     /// `x · y`.
///     pub fn dot(x: &[f32], y: &[f32]) -> f32 {
///         x.iter().zip(y).map(|(a, b)| a * b).sum()
///     }
/// }
/// assert_eq!(dot(&[1.0, 2.0], &[3.0, 4.0]), 11.0);
/// ```
///
/// With `= generic`, the two builds call `generic::<true>` (AVX2 + FMA) and `generic::<false>`
/// (baseline), so the kernel can use `mul_add` only where FMA is in hardware (a software `fmaf`
/// would be far slower than two roundings):
///
/// ```
/// #[inline(always)]
/// fn axpy_generic<const FMA: bool>(a: f32, x: &[f32], y: &mut [f32]) {
///     for (y, x) in y.iter_mut().zip(x) {
///         *y = if FMA { a.mul_add(*x, *y) } else { a * x + *y };
///     }
/// }
/// mocca_core::multiversion! {
///     /// `y += a·x`.
///     pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) -> () = axpy_generic
/// }
/// let mut y = [1.0, 1.0];
/// axpy(2.0, &[3.0, 4.0], &mut y);
/// assert_eq!(y, [7.0, 9.0]);
/// ```
#[macro_export]
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty = $generic:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    $generic::<true>($($arg),*)
                }
                if $crate::simd::has_avx2_fma() {
                    // SAFETY: the CPU supports the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic::<false>($($arg),*)
        }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn imp($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                if $crate::simd::has_avx2_fma() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { fast($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}
