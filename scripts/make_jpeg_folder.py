#!/usr/bin/env python3
"""Makes an ImageNet-layout folder of photo-sized JPEGs for `cargo xtask bench pipeline`
(and scripts/pipeline_peer.py), offline, from CIFAR-10's binary batches.

There is no ImageNet here, so each image is built to have a photo's size and a photo's mix of
smooth and detailed areas, which is what JPEG decode time depends on: a CIFAR-10 image of the
class upscaled (bicubic) to the whole frame, CIFAR-10 images at their own 32 px resolution tiled
over a random rectangle of 2/3 x 3/4 of it, and sensor-like noise (sigma 6); saved as baseline
JPEG, quality 95, 4:2:0 (PIL's default subsampling), at ImageNet's most common sizes (500x375,
500x333, 375x500). The files average 100 KB, ImageNet's training images about 110 KB.

Usage: python3 scripts/make_jpeg_folder.py CIFAR_BIN_DIR OUT_DIR [--per-class N]
                                           [--flat N]
Writes OUT_DIR/train/<class>/<class>_<i>.JPEG (10 classes, default 50 each) and prints the mean
file size. With --flat N, also OUT_DIR/flat-N/ holding N files directly (no class folders),
hard links to those JPEGs in turn: a folder of any number of files at the disk cost of the
distinct ones, for measuring what the number of files costs (listing, memory) apart from
decoding. Needs numpy and Pillow.
"""
import argparse
import os

import numpy as np
from PIL import Image

NAMES = ["airplane", "automobile", "bird", "cat", "deer",
         "dog", "frog", "horse", "ship", "truck"]
SIZES = [(500, 375), (500, 333), (375, 500)]


def main():
    ap = argparse.ArgumentParser(usage=__doc__)
    ap.add_argument("bins")
    ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--flat", type=int, default=0)
    a = ap.parse_args()
    bins, out, per_class = a.bins, a.out, a.per_class
    raw = np.fromfile(os.path.join(bins, "data_batch_1.bin"), dtype=np.uint8).reshape(-1, 3073)
    labels = raw[:, 0]
    images = raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    rng = np.random.default_rng(0)
    sizes = []
    for c, name in enumerate(NAMES):
        folder = os.path.join(out, "train", name)
        os.makedirs(folder, exist_ok=True)
        own = np.flatnonzero(labels == c)
        for i in range(per_class):
            w, h = SIZES[(c * per_class + i) % len(SIZES)]
            base = Image.fromarray(images[own[i]]).resize((w, h), Image.BICUBIC)
            frame = np.asarray(base, dtype=np.float32).copy()
            tw, th = (w * 2 // 3 // 32) * 32, (h * 3 // 4 // 32) * 32
            x0, y0 = rng.integers(0, w - tw + 1), rng.integers(0, h - th + 1)
            for ty in range(y0, y0 + th - 31, 32):
                for tx in range(x0, x0 + tw - 31, 32):
                    frame[ty:ty + 32, tx:tx + 32] = images[rng.integers(0, len(images))]
            frame += rng.normal(0.0, 6.0, frame.shape)
            img = Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8))
            path = os.path.join(folder, f"{name}_{i:04d}.JPEG")
            tmp = path + ".tmp"
            img.save(tmp, "JPEG", quality=95)
            os.replace(tmp, path)
            sizes.append(os.path.getsize(path))
    print(f"{len(sizes)} JPEGs in {out}/train, mean {np.mean(sizes) / 1e3:.0f} KB "
          f"(ImageNet's training images: about 110 KB)")
    if a.flat:
        flat(out, a.flat)


def flat(out, n):
    sources = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(out, "train"))
                     for f in fs if f.endswith(".JPEG"))
    folder = os.path.join(out, f"flat-{n}")
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        path = os.path.join(folder, f"img_{i:07d}.JPEG")
        if not os.path.exists(path):
            os.link(sources[i % len(sources)], path)
    print(f"{n} files in {folder} (hard links to the {len(sources)} JPEGs above)")


if __name__ == "__main__":
    main()
