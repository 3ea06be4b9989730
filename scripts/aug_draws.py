#!/usr/bin/env python3
"""Our augmentation's random draws beside torchvision's, on the same source images.

    cargo run --release -p mocca-aug --example draws -- 20000 > /tmp/ours.csv
    python3 scripts/aug_draws.py --ours /tmp/ours.csv --data data/cifar-10-batches-bin

Runs the MoCo CIFAR-10 colab's training transform as torchvision builds it (v1 transforms on
PIL images: RandomResizedCrop(32), RandomHorizontalFlip(0.5),
RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), RandomGrayscale(0.2); lightly's
SimCLRTransform(input_size=32, cj_strength=0.5) draws the same) on the first N/2 CIFAR-10
training images, two views each, recording what each transform draws (torchvision's
get_params and the functional calls it makes), and compares the distributions with ours:
crop scale (area fraction) and aspect ratio, flip / jitter / grayscale rates, the order of the
jitter's four operations and its four factors. Prints a markdown table with quantiles and the
two-sample Kolmogorov-Smirnov distance D of each continuous draw; at N = 20,000 per side two
samples of one distribution give D below about 0.014 (the 5 % critical value) in 95 % of cases.
Needs torch, torchvision, numpy, Pillow (not for CI).
"""
import argparse
import csv
import math
import os

import numpy as np


def torchvision_draws(data_dir, n, seed):
    import torch
    import torchvision.transforms as T
    import torchvision.transforms.functional as F
    import torchvision.transforms.transforms as TT
    from PIL import Image

    raw = np.fromfile(os.path.join(data_dir, "data_batch_1.bin"), dtype=np.uint8).reshape(-1, 3073)
    images = raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    rows, cur = [], {}
    crop = T.RandomResizedCrop(32)
    jitter = T.ColorJitter(0.4, 0.4, 0.4, 0.1)
    orig_crop, orig_jitter = T.RandomResizedCrop.get_params, T.ColorJitter.get_params
    orig_hflip, orig_gray = F.hflip, F.rgb_to_grayscale

    def rec_crop(img, scale, ratio):
        i, j, h, w = orig_crop(img, scale, ratio)
        cur.update(scale=h * w / (32 * 32), ratio=w / h)
        return i, j, h, w

    def rec_jitter(b, c, s, h):
        out = orig_jitter(b, c, s, h)
        order, bf, cf, sf, hf = out
        cur.update(jitter=1, order="".join(str(int(o)) for o in order),
                   brightness=bf, contrast=cf, saturation=sf, hue=hf)
        return out

    def rec_hflip(img):
        cur["flip"] = 1
        return orig_hflip(img)

    def rec_gray(img, num_output_channels=1):
        cur["gray"] = 1
        return orig_gray(img, num_output_channels)

    T.RandomResizedCrop.get_params = staticmethod(rec_crop)
    T.ColorJitter.get_params = staticmethod(rec_jitter)
    # torchvision's transforms call these through the functional module they imported.
    TT.F.hflip, TT.F.rgb_to_grayscale = rec_hflip, rec_gray
    pipeline = T.Compose([crop, T.RandomHorizontalFlip(p=0.5),
                          T.RandomApply([jitter], p=0.8), T.RandomGrayscale(p=0.2)])
    torch.manual_seed(seed)
    for k in range(n):
        cur = {"flip": 0, "jitter": 0, "gray": 0}
        pipeline(Image.fromarray(images[k // 2]))
        rows.append(cur)
    return rows


def read_ours(path):
    rows = []
    for r in csv.DictReader(open(path)):
        row = {"scale": float(r["scale"]), "ratio": float(r["ratio"]), "flip": int(r["flip"]),
               "jitter": int(r["jitter"]), "gray": int(r["gray"])}
        if row["jitter"]:
            row["order"] = r["order"]
            for k in ["brightness", "contrast", "saturation", "hue"]:
                row[k] = float(r[k])
        rows.append(row)
    return rows


def ks(a, b):
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ours", required=True, help="CSV from `--example draws`")
    p.add_argument("--data", required=True, help="cifar-10-batches-bin folder")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    ours = read_ours(a.ours)
    ref = torchvision_draws(a.data, len(ours), a.seed)
    n = len(ours)
    crit = 1.36 * math.sqrt(2 / n)
    print(f"{n} views each; KS 5 % critical value {crit:.4f}\n")
    print("| draw | torchvision q10 / q50 / q90 | ours q10 / q50 / q90 | KS D |")
    print("|---|---|---|---|")
    for key in ["scale", "ratio", "brightness", "contrast", "saturation", "hue"]:
        x = np.array([r[key] for r in ref if key in r])
        y = np.array([r[key] for r in ours if key in r])
        q = lambda v: " / ".join(f"{t:.3f}" for t in np.quantile(v, [0.1, 0.5, 0.9]))
        print(f"| {key} | {q(x)} | {q(y)} | {ks(x, y):.4f} |")
    print("\n| rate | torchvision | ours | 2-sigma binomial |")
    print("|---|---|---|---|")
    for key in ["flip", "jitter", "gray"]:
        x = np.mean([r[key] for r in ref])
        y = np.mean([r[key] for r in ours])
        print(f"| {key} | {x:.4f} | {y:.4f} | ±{2 * math.sqrt(x * (1 - x) * 2 / n):.4f} |")
    orders = sorted({r["order"] for r in ref + ours if "order" in r})
    jr = [r["order"] for r in ref if "order" in r]
    jo = [r["order"] for r in ours if "order" in r]
    first = lambda rows, op: np.mean([o[0] == op for o in rows])
    print(f"\njitter order: {len(orders)} distinct permutations seen (24 possible); "
          "first operation (0 brightness, 1 contrast, 2 saturation, 3 hue):")
    for op in "0123":
        print(f"- {op}: torchvision {first(jr, op):.4f}, ours {first(jo, op):.4f}")


if __name__ == "__main__":
    main()
