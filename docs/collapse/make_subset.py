"""A small CIFAR-10 image folder for the collapse demonstration: the first 256
training images of each class (2,560, 20 steps of 128 per epoch, so the kNN
monitor runs every 20 steps) and the first 100 test images of each class.

    python3 docs/collapse/make_subset.py data/cifar-10-batches-bin runs/cifar-subset-2560

(data/cifar-10-batches-bin: see the README's "Data"; needs numpy and Pillow.)
"""
import os
import sys

import numpy as np
from PIL import Image

src, out = sys.argv[1], sys.argv[2]
names = [l.strip() for l in open(os.path.join(src, "batches.meta.txt")) if l.strip()]


def write(split, files, per_class):
    count = {c: 0 for c in range(10)}
    for f in files:
        rows = np.fromfile(os.path.join(src, f), dtype=np.uint8).reshape(-1, 3073)
        for label, img in zip(rows[:, 0], rows[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)):
            if count[label] >= per_class:
                continue
            d = os.path.join(out, split, names[label])
            os.makedirs(d, exist_ok=True)
            Image.fromarray(img).save(os.path.join(d, f"{count[label]:05d}.png"))
            count[label] += 1
    print(split, sum(count.values()), "images")


write("train", [f"data_batch_{i}.bin" for i in range(1, 6)], 256)
write("test", ["test_batch.bin"], 100)
