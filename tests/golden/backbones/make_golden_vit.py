#!/usr/bin/env python3
"""Golden values for Vision Transformers, in timm's layout.

Writes keys_vit_{tiny,small}.json (every state-dict entry of timm's
vit_tiny_patch16_224 / vit_small_patch16_224 with num_classes=0, at 224 px with patch 16 and
at 32 px with patch 4: name and shape) and forward_vit.json (the class token after the final
LayerNorm, timm's `forward_head(forward_features(x), pre_logits=True)`, of a 2-image batch
under weights both sides generate from the integer hash of make_golden.py, in float64, for
two small configurations: ViT-Tiny width at 32 px / patch 4 / depth 2, ViT-Small width at
64 px / patch 16 / depth 1). Run: python3 make_golden_vit.py  (needs torch, timm)

With --mocov3-vits PATH (facebookresearch/moco-v3's vits.py at c349e6e, taken by path, never
copied) it also writes sincos_mocov3.json: the fixed position embedding its
VisionTransformerMoCo builds (build_2d_sincos_position_embedding) for D 384 at 32 px / patch
4 and 224 px / patch 16 and D 192 at 32 px / patch 4. Two patches let vits.py import under
timm 1.0: `from timm.models.layers.helpers import to_2tuple` -> `from timm.layers import
to_2tuple`, and `self.num_tokens` -> `self.num_prefix_tokens` (timm's renamed attribute).
"""
import argparse
import gzip
import json
import math

import timm
import torch

M32 = 0xFFFFFFFF


def hash_u01(k, n):
    """n values in [0, 1) for tensor k: make_golden.py's hash (README.md)."""
    j = torch.arange(n, dtype=torch.int64)
    x = (j * 0x9E3779B1 + (k + 1) * 0x85EBCA77) & M32
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & M32
    x ^= x >> 12
    x = (x * 0x297A2D39) & M32
    x ^= x >> 15
    return x.double() / 2.0**32


def fill(model):
    """Linear / conv weights (u - 0.5)·2·sqrt(3 / fan_in), LayerNorm weights 0.5 + u, biases
    u - 0.5, cls_token and pos_embed (u - 0.5)·0.04; u from tensor k's hash (k = state-dict
    position)."""
    for k, (name, t) in enumerate(model.state_dict().items()):
        u = hash_u01(k, t.numel()).view(t.shape)
        leaf = name.rsplit(".", 1)[-1]
        if name in ("cls_token", "pos_embed"):
            v = (u - 0.5) * 0.04
        elif leaf == "weight" and t.dim() > 1:
            v = (u - 0.5) * 2 * math.sqrt(3.0 / math.prod(t.shape[1:]))
        elif leaf == "weight":
            v = 0.5 + u
        elif leaf == "bias":
            v = u - 0.5
        else:
            raise ValueError(name)
        t.copy_(v)


def write(name, obj):
    with open(name, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(json.dumps(obj).encode())


def arr(t):
    return {"shape": list(t.shape), "data": t.flatten().tolist()}


def mocov3_sincos(vits_path):
    from functools import partial

    src = open(vits_path).read()
    src = src.replace("from timm.models.layers.helpers import to_2tuple",
                      "from timm.layers import to_2tuple")
    src = src.replace("assert self.num_tokens == 1", "assert self.num_prefix_tokens == 1")
    ns = {"__name__": "vits"}
    exec(compile(src, vits_path, "exec"), ns)
    cases = []
    for d, heads, img, patch in [(384, 12, 32, 4), (384, 12, 224, 16), (192, 3, 32, 4)]:
        m = ns["VisionTransformerMoCo"](img_size=img, patch_size=patch, embed_dim=d, depth=1,
                                        num_heads=heads, mlp_ratio=4, qkv_bias=True,
                                        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
        assert not m.pos_embed.requires_grad
        cases.append({"embed_dim": d, "image_size": img, "patch_size": patch,
                      "pos_embed": arr(m.pos_embed.detach().double())})
    write("sincos_mocov3.json.gz", {"vits_py": "facebookresearch/moco-v3 c349e6e vits.py",
                                    "cases": cases})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mocov3-vits", help="path of moco-v3's vits.py (c349e6e)")
    a = ap.parse_args()
    if a.mocov3_vits:
        mocov3_sincos(a.mocov3_vits)
    for variant in ["tiny", "small"]:
        out = {}
        for img, patch in [(224, 16), (32, 4)]:
            m = timm.create_model(f"vit_{variant}_patch16_224", num_classes=0, img_size=img,
                                  patch_size=patch, pretrained=False)
            out[f"{img}px_patch{patch}"] = [{"name": n, "shape": list(t.shape)}
                                            for n, t in m.state_dict().items()]
        write(f"keys_vit_{variant}.json.gz", {"timm": timm.__version__, "models": out})
    cases = []
    for name, (variant, img, patch, depth) in {
        "tiny_32px_patch4_depth2": ("tiny", 32, 4, 2),
        "small_64px_patch16_depth1": ("small", 64, 16, 1),
    }.items():
        m = timm.create_model(f"vit_{variant}_patch16_224", num_classes=0, img_size=img,
                              patch_size=patch, depth=depth, pretrained=False).double().eval()
        with torch.no_grad():
            fill(m)
            x = ((hash_u01(1000, 2 * 3 * img * img) - 0.5) * 2).view(2, 3, img, img)
            f = m.forward_head(m.forward_features(x), pre_logits=True)
        cases.append({"name": name, "variant": variant, "image_size": img, "patch_size": patch,
                      "depth": depth, "embed_dim": m.embed_dim,
                      "num_heads": m.blocks[0].attn.num_heads, "input": arr(x),
                      "features": arr(f)})
    write("forward_vit.json.gz", {"timm": timm.__version__, "torch": torch.__version__,
                                  "cases": cases})


if __name__ == "__main__":
    main()
