//! Runtime choice of instruction set for the per-pixel kernels.
//!
//! Each kernel body is written once as plain Rust and compiled twice: for the
//! baseline target and with AVX2 + FMA enabled (picked at run time). The kernels
//! never reassociate float operations and use `mul_add` exactly where torch uses a
//! fused multiply-add, so both builds give bit-identical results; AVX2 only
//! makes them faster (wider vectors, hardware FMA instead of a libm call).

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    !FORCE_PORTABLE.load(std::sync::atomic::Ordering::Relaxed)
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
}

/// Test hook: route every kernel through the baseline build.
pub(crate) static FORCE_PORTABLE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Defines `pub(crate) fn $name(..)` whose body is compiled for the baseline
/// target and for AVX2 + FMA, dispatching at run time.
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
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
pub(crate) use multiversion;
