//! The Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words") as timm's
//! `VisionTransformer` builds it, with timm's key names, so that weights move both ways
//! between this crate and `timm.create_model("vit_small_patch16_224", num_classes=0)`.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Init, VarBuilder};

use crate::error::{Error, Result};
use crate::layers::autocast;
use crate::state::{ModelState, StateDict};

/// Whose ViT: timm's, or MoCo v3's `VisionTransformerMoCo` (facebookresearch/moco-v3
/// `vits.py`), which keeps timm's layers and keys but fixes the position embedding and
/// initialises differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViTStyle {
    /// Learned position embedding (normal, std 0.02); Linear weights normal std 0.02, bias 0;
    /// patch embedding PyTorch's `Conv2d` default.
    #[default]
    Timm,
    /// A fixed 2-D sin-cos position embedding (`build_2d_sincos_position_embedding`, zeros for
    /// the class token; never trained); Xavier-uniform Linear weights (`qkv` as three
    /// matrices: bound √(6 / (out/3 + in))), patch embedding uniform in
    /// ±√(6 / (3·p² + D)), biases 0.
    MoCoV3,
}

/// The shape of a ViT: patch size and image side, width, depth and heads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViTConfig {
    /// Side of the square input images (the position embedding has one row per patch).
    pub image_size: usize,
    /// Side of the square patches (16 at 224 px, 4 at 32 px).
    pub patch_size: usize,
    /// Token width D (ViT-Tiny 192, ViT-Small 384).
    pub embed_dim: usize,
    /// Transformer blocks (12 for both).
    pub depth: usize,
    /// Attention heads (Tiny 3, Small 6); `embed_dim` must be a multiple.
    pub num_heads: usize,
    /// MLP hidden width as a multiple of D (4).
    pub mlp_ratio: f64,
    /// LayerNorm epsilon (timm's ViTs: 1e-6).
    pub layer_norm_eps: f64,
    /// Position embedding and initialisation.
    pub style: ViTStyle,
    /// Hold the patch embedding at its initial values (MoCo v3's `--stop-grad-conv1`, a random
    /// patch projection that stabilises training).
    pub freeze_patch_embed: bool,
}

impl ViTConfig {
    /// ViT-Tiny (timm's `vit_tiny_patch16_224`: D 192, 12 blocks, 3 heads) for `image_size`
    /// px images cut into `patch_size` px patches.
    pub fn tiny(image_size: usize, patch_size: usize) -> Self {
        Self {
            image_size,
            patch_size,
            embed_dim: 192,
            depth: 12,
            num_heads: 3,
            mlp_ratio: 4.0,
            layer_norm_eps: 1e-6,
            style: ViTStyle::Timm,
            freeze_patch_embed: false,
        }
    }

    /// ViT-Small (timm's `vit_small_patch16_224`: D 384, 12 blocks, 6 heads).
    pub fn small(image_size: usize, patch_size: usize) -> Self {
        Self {
            embed_dim: 384,
            num_heads: 6,
            ..Self::tiny(image_size, patch_size)
        }
    }

    /// Patches per image.
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Width of the features [`VisionTransformer`] returns (the class token's).
    pub fn feature_dim(&self) -> usize {
        self.embed_dim
    }

    fn mlp_dim(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.patch_size == 0 || self.image_size == 0 || self.depth == 0 {
            return bad(format!("a ViT needs non-zero sizes, got {self:?}"));
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return bad(format!(
                "image size {} is not a multiple of the patch size {}",
                self.image_size, self.patch_size
            ));
        }
        if self.style == ViTStyle::MoCoV3 && !self.embed_dim.is_multiple_of(4) {
            return bad(format!(
                "the 2-D sin-cos position embedding needs embed_dim a multiple of 4, got {}",
                self.embed_dim
            ));
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return bad(format!(
                "embed_dim {} is not a multiple of num_heads {}",
                self.embed_dim, self.num_heads
            ));
        }
        if self.mlp_ratio.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            || self.layer_norm_eps.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        {
            return bad(format!(
                "mlp_ratio and layer_norm_eps must be > 0, got {self:?}"
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// timm's `init_weights_vit_timm`: weight truncated normal std 0.02 (here a normal: the
    /// truncation at ±2 std changes one draw in twenty), bias 0.
    fn new(
        state: &mut ModelState,
        vb: &VarBuilder,
        name: &str,
        (inp, out): (usize, usize),
        style: ViTStyle,
    ) -> Result<Self> {
        // MoCo v3's: Xavier uniform, `qkv` (out = 3·in) as three square matrices.
        let init = match style {
            ViTStyle::Timm => Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            ViTStyle::MoCoV3 => {
                let fan_out = if name.ends_with("qkv") { out / 3 } else { out };
                let bound = (6.0 / (fan_out + inp) as f64).sqrt();
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                }
            }
        };
        let w = vb.get_with_hints((out, inp), &format!("{name}.weight"), init)?;
        let b = vb.get_with_hints(out, &format!("{name}.bias"), Init::Const(0.0))?;
        Ok(Self {
            weight: state.parameter(format!("{name}.weight"), w)?,
            bias: state.parameter(format!("{name}.bias"), b)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = autocast(&self.weight, x)?;
        Ok(x.broadcast_matmul(&w.t()?)?
            .broadcast_add(&autocast(&self.bias, x)?)?)
    }
}

#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn new(
        state: &mut ModelState,
        vb: &VarBuilder,
        name: &str,
        dim: usize,
        eps: f64,
    ) -> Result<Self> {
        let w = vb.get_with_hints(dim, &format!("{name}.weight"), Init::Const(1.0))?;
        let b = vb.get_with_hints(dim, &format!("{name}.bias"), Init::Const(0.0))?;
        Ok(Self {
            weight: state.parameter(format!("{name}.weight"), w)?,
            bias: state.parameter(format!("{name}.bias"), b)?,
            eps,
        })
    }

    /// Over the last dimension, statistics in f32 (as autocast runs `layer_norm`), composed
    /// from Candle ops so that it has a gradient.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        // f32 statistics for f32/bf16/f16 activations; f64 stays f64.
        let x = x.to_dtype(if dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        })?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let y = y
            .broadcast_mul(&self.weight.to_dtype(y.dtype())?)?
            .broadcast_add(&self.bias.to_dtype(y.dtype())?)?;
        Ok(y.to_dtype(dtype)?)
    }
}

/// MoCo v3's `build_2d_sincos_position_embedding` (temperature 10,000): a zero row for the
/// class token, then per patch `[sin(w·ω), cos(w·ω), sin(h·ω), cos(h·ω)]` with
/// `ω_k = 10000^(−k/(D/4))`, where patch `m` (row-major over the grid) has `w = m / g` and
/// `h = m mod g`: the order `torch.meshgrid(grid_w, grid_h)` flattens to.
fn sincos_2d(cfg: &ViTConfig, device: &candle_core::Device) -> Result<Tensor> {
    let g = cfg.image_size / cfg.patch_size;
    let d = cfg.embed_dim;
    let q = d / 4;
    let omega: Vec<f32> = (0..q)
        .map(|k| 1.0 / 10000f32.powf(k as f32 / q as f32))
        .collect();
    let mut v = vec![0f32; (g * g + 1) * d];
    for m in 0..g * g {
        let (w, h) = ((m / g) as f32, (m % g) as f32);
        let row = &mut v[(m + 1) * d..(m + 2) * d];
        for k in 0..q {
            row[k] = (w * omega[k]).sin();
            row[q + k] = (w * omega[k]).cos();
            row[2 * q + k] = (h * omega[k]).sin();
            row[3 * q + k] = (h * omega[k]).cos();
        }
    }
    Ok(Tensor::from_vec(v, (1, g * g + 1, d), device)?)
}

/// `softmax` over the last dimension with a gradient (Candle's fused one has none).
fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    num_heads: usize,
}

impl Block {
    fn new(cfg: &ViTConfig, state: &mut ModelState, vb: &VarBuilder, i: usize) -> Result<Self> {
        let (d, eps, st) = (cfg.embed_dim, cfg.layer_norm_eps, cfg.style);
        let p = |s: &str| format!("blocks.{i}.{s}");
        Ok(Self {
            norm1: LayerNorm::new(state, vb, &p("norm1"), d, eps)?,
            qkv: Linear::new(state, vb, &p("attn.qkv"), (d, 3 * d), st)?,
            proj: Linear::new(state, vb, &p("attn.proj"), (d, d), st)?,
            norm2: LayerNorm::new(state, vb, &p("norm2"), d, eps)?,
            fc1: Linear::new(state, vb, &p("mlp.fc1"), (d, cfg.mlp_dim()), st)?,
            fc2: Linear::new(state, vb, &p("mlp.fc2"), (cfg.mlp_dim(), d), st)?,
            num_heads: cfg.num_heads,
        })
    }

    /// timm's `Attention`: `softmax(q kᵀ / √d_head) v` per head, then `proj`.
    fn attention(&self, x: &Tensor) -> Result<Tensor> {
        let (n, l, d) = x.dims3()?;
        let h = self.num_heads;
        let dh = d / h;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((n, l, 3, h, dh))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)?.contiguous()? * (dh as f64).powf(-0.5))?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let attn = softmax_last_dim(&q.matmul(&k.t()?.contiguous()?)?)?;
        let out = attn
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, l, d))?;
        self.proj.forward(&out)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.attention(&self.norm1.forward(x)?)?)?;
        let m = self.fc1.forward(&self.norm2.forward(&x)?)?.gelu_erf()?;
        Ok((&x + self.fc2.forward(&m)?)?)
    }
}

/// A ViT without classifier (timm's `num_classes=0`): patch embedding (a `patch_size`-strided
/// convolution, here as one matrix product over the flattened patches), a learned class
/// token and position embedding, `depth` pre-norm blocks (LayerNorm → multi-head
/// self-attention → residual, LayerNorm → MLP with exact GELU → residual), a final
/// LayerNorm; the features are the class token's, `[N, embed_dim]` (timm's
/// `forward_head(forward_features(x), pre_logits=True)` with `global_pool="token"`).
///
/// Keys are timm's: `cls_token`, `pos_embed`, `patch_embed.proj.{weight,bias}`,
/// `blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.{weight,bias}`,
/// `norm.{weight,bias}`. Fresh weights follow timm's default initialisation (Linear normal
/// std 0.02 and bias 0, position embedding std 0.02, class token std 1e-6, the patch
/// embedding PyTorch's `Conv2d` default). There is no dropout (timm's defaults are 0).
#[derive(Debug, Clone)]
pub struct VisionTransformer {
    cfg: ViTConfig,
    cls_token: Tensor,
    pos_embed: Tensor,
    patch_weight: Tensor,
    patch_bias: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    state: ModelState,
}

impl VisionTransformer {
    pub fn new(cfg: &ViTConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let mut state = ModelState::new();
        let d = cfg.embed_dim;
        let cls = vb.get_with_hints(
            (1, 1, d),
            "cls_token",
            Init::Randn {
                mean: 0.0,
                stdev: 1e-6,
            },
        )?;
        let cls_token = state.parameter("cls_token", cls)?;
        let pos_embed = match cfg.style {
            ViTStyle::Timm => {
                let pos = vb.get_with_hints(
                    (1, cfg.num_patches() + 1, d),
                    "pos_embed",
                    Init::Randn {
                        mean: 0.0,
                        stdev: 0.02,
                    },
                )?;
                state.parameter("pos_embed", pos)?
            }
            ViTStyle::MoCoV3 => state.frozen("pos_embed", sincos_2d(cfg, vb.device())?)?,
        };
        let p = cfg.patch_size;
        let fan_in = 3 * p * p;
        let (w_init, b_init) = match cfg.style {
            ViTStyle::Timm => {
                let bound = 1.0 / (fan_in as f64).sqrt();
                let u = Init::Uniform {
                    lo: -bound,
                    up: bound,
                };
                (u, u)
            }
            ViTStyle::MoCoV3 => {
                let bound = (6.0 / (fan_in + d) as f64).sqrt();
                let u = Init::Uniform {
                    lo: -bound,
                    up: bound,
                };
                (u, Init::Const(0.0))
            }
        };
        let w = vb.get_with_hints((d, 3, p, p), "patch_embed.proj.weight", w_init)?;
        let b = vb.get_with_hints(d, "patch_embed.proj.bias", b_init)?;
        let (patch_weight, patch_bias) = if cfg.freeze_patch_embed {
            (
                state.frozen("patch_embed.proj.weight", w)?,
                state.frozen("patch_embed.proj.bias", b)?,
            )
        } else {
            (
                state.parameter("patch_embed.proj.weight", w)?,
                state.parameter("patch_embed.proj.bias", b)?,
            )
        };
        let blocks = (0..cfg.depth)
            .map(|i| Block::new(cfg, &mut state, &vb, i))
            .collect::<Result<Vec<_>>>()?;
        let norm = LayerNorm::new(&mut state, &vb, "norm", d, cfg.layer_norm_eps)?;
        Ok(Self {
            cfg: *cfg,
            cls_token,
            pos_embed,
            patch_weight,
            patch_bias,
            blocks,
            norm,
            state,
        })
    }

    pub fn config(&self) -> &ViTConfig {
        &self.cfg
    }

    /// The class token's features `[N, embed_dim]` of `[N, 3, S, S]` images.
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let (s, p) = (self.cfg.image_size, self.cfg.patch_size);
        if c != 3 || h != s || w != s {
            return Err(Error::InvalidInput(format!(
                "this ViT takes [N, 3, {s}, {s}] images, got {:?}",
                x.dims()
            )));
        }
        let g = s / p;
        let patches = x
            .reshape((n, c, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n, g * g, c * p * p))?;
        let d = self.cfg.embed_dim;
        let weight = autocast(&self.patch_weight, x)?.reshape((d, c * p * p))?;
        let tokens = patches
            .broadcast_matmul(&weight.t()?)?
            .broadcast_add(&autocast(&self.patch_bias, x)?)?;
        let cls = autocast(&self.cls_token, x)?.broadcast_as((n, 1, d))?;
        let mut t =
            Tensor::cat(&[&cls, &tokens], 1)?.broadcast_add(&autocast(&self.pos_embed, x)?)?;
        for b in &self.blocks {
            t = b.forward(&t)?;
        }
        Ok(self.norm.forward(&t)?.narrow(1, 0, 1)?.squeeze(1)?)
    }
}

/// A ViT has no BatchNorm and no dropout here: training and evaluation compute the same
/// function, so `ModuleT::forward_t` (Candle's blanket impl) ignores `train`.
impl Module for VisionTransformer {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.forward_features(xs)?)
    }
}

impl StateDict for VisionTransformer {
    fn model_state(&self) -> &ModelState {
        &self.state
    }
}
