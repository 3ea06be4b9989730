//! Which kernel runs each pass of a convolution: the direct register tiles or a GEMM.

use super::{direct, ConvGeom};

/// Which CPU kernel computes a convolution's products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// im2col tiles (none for 1x1 stride 1) multiplied by the `gemm` crate.
    Gemm,
    /// The AVX2 + FMA register-tile kernels of `direct.rs`, reading padded inputs in place.
    Direct,
}

/// Which product of a convolution a kernel is chosen for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pass {
    Forward,
    InputGrad,
    WeightGrad,
}

impl Kernel {
    /// The faster kernel for this pass of this geometry on this CPU (timed layer by layer on
    /// ResNet-18 at widths 0.25 and 1, batch 128, on a 2-core AVX2 machine): the direct kernels
    /// win wherever the channel counts are small; at 512 channels (K = 4608) gemm's packed
    /// panels win, and the weight gradient of a 3x3 convolution prefers gemm from 64 input
    /// channels on. A 1x1 stride-1 convolution is already a plain GEMM over the NHWC rows.
    /// `MOCCA_CONV_KERNEL=gemm` forces the GEMM kernels (for side-by-side benchmarks).
    pub(crate) fn choose(g: &ConvGeom, pass: Pass) -> Kernel {
        static FORCE_GEMM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let force_gemm = *FORCE_GEMM.get_or_init(|| {
            std::env::var("MOCCA_CONV_KERNEL").is_ok_and(|v| v.eq_ignore_ascii_case("gemm"))
        });
        if force_gemm || g.is_pointwise() || !direct::available() {
            return Kernel::Gemm;
        }
        let direct = match pass {
            Pass::Forward => g.cin <= 256 && g.cout <= 256,
            // The stride-1 input gradient is a forward convolution; a strided one is `stride²`
            // short ones (`direct::dgrad_strided`), which beat GEMM + col2im at every width.
            Pass::InputGrad => match g.dgrad_as_forward() {
                Some(gd) => Kernel::choose(&gd, Pass::Forward) == Kernel::Direct,
                None => true,
            },
            Pass::WeightGrad => g.cin <= 32 || (g.kh == 1 && g.kw == 1),
        };
        if direct {
            Kernel::Direct
        } else {
            Kernel::Gemm
        }
    }
}
