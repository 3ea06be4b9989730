#!/usr/bin/env python3
"""What `cargo xtask bench pipeline` measures, done the way PyTorch users do it: torchvision's
ImageFolder loader (PIL: `Image.open(f).convert("RGB")`) and lightly's MoCoV2Transform /
SimCLRTransform at 224 px (two views each, to normalised tensors), in one process on one core
(a DataLoader worker). Same files as ours: the sorted listing, `--limit` spread evenly.

Usage: python3 scripts/pipeline_peer.py FOLDER [--limit N] [--reps N]
(FOLDER as for the bench: FOLDER/train/<class>/*; needs torch, torchvision, lightly)
"""
import os
import sys
import time

import torch
from PIL import Image

torch.set_num_threads(1)
EXT = (".jpg", ".jpeg", ".png")


def option(name, default):
    return int(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


def listing(root):
    # torchvision's ImageFolder order: sorted classes, files sorted within each (recursive).
    if os.path.isdir(os.path.join(root, "train")):
        root = os.path.join(root, "train")
    files = []
    for c in sorted(d for d in os.listdir(root) if not d.startswith(".")):
        for dirpath, dirnames, names in sorted(os.walk(os.path.join(root, c))):
            dirnames.sort()
            files += [os.path.join(dirpath, n) for n in sorted(names)
                      if n.lower().endswith(EXT) and not n.startswith(".")]
    return files


def pil_loader(path):
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


def median_secs(reps, f):
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main():
    from lightly.transforms import MoCoV2Transform, SimCLRTransform

    root = sys.argv[1]
    limit, reps = option("--limit", 256), option("--reps", 3)
    every = listing(root)
    n = min(limit, len(every))
    files = [every[i * len(every) // n] for i in range(n)]
    print(f"lightly {__import__('lightly').__version__} + PIL {Image.__version__}, torch "
          f"{torch.__version__}, 1 thread: {n} of the {len(every)} files of {root}")
    print("\n| stage | transform | images/s |\n|---|---|---|")
    t = median_secs(reps, lambda: [pil_loader(p) for p in files])
    print(f"| read + decode (RGB) | - | {n / t:.1f} |")
    decoded = [pil_loader(p) for p in files]
    for name, tr in [("MoCoV2Transform(224)", MoCoV2Transform(input_size=224)),
                     ("SimCLRTransform(224)", SimCLRTransform(input_size=224))]:
        t = median_secs(reps, lambda: [tr(im) for im in decoded])
        print(f"| augment, 2 views | {name} | {n / t:.1f} |")
        t = median_secs(reps, lambda: [tr(pil_loader(p)) for p in files])
        print(f"| read + decode + augment | {name} | {n / t:.1f} |")


if __name__ == "__main__":
    main()
