#!/usr/bin/env python3
"""What `cargo xtask bench stream` measures, done the way PyTorch users do it: a Dataset over
the same files (sorted listing: FOLDER/<class>/*, FOLDER/train/<class>/* or flat FOLDER/*),
torchvision's loader (PIL `Image.open(f).convert("RGB")`), lightly's MoCoV2Transform or
SimCLRTransform at 224 px (two views), and torch's DataLoader with W worker processes (shuffled,
batch B, last partial batch dropped, prefetch_factor 2, one torch thread per worker), batches
collated to tensors as a training loop receives them. Prints images/s over N batches after 2
untimed ones, and the peak memory of the main process and its workers together, as the sum of
their proportional set sizes (PSS, /proc/PID/smaps_rollup, sampled every 50 ms), so that pages
the forked workers share with the main process count once.

Usage: python3 scripts/stream_peer.py FOLDER [--workers W] [--batches N] [--batch B]
                                             [--preset mocov2|simclr]
(needs torch, torchvision, lightly)
"""
import argparse
import os
import threading
import time

import torch
from PIL import Image

EXT = (".jpg", ".jpeg", ".png")


def listing(root):
    if os.path.isdir(os.path.join(root, "train")):
        root = os.path.join(root, "train")
    classes = sorted(d for d in os.listdir(root)
                     if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
    if not classes:
        return sorted(os.path.join(root, n) for n in os.listdir(root)
                      if n.lower().endswith(EXT) and not n.startswith("."))
    files = []
    for c in classes:
        for dirpath, dirnames, names in sorted(os.walk(os.path.join(root, c))):
            dirnames.sort()
            files += [os.path.join(dirpath, n) for n in sorted(names)
                      if n.lower().endswith(EXT) and not n.startswith(".")]
    return files


class Files(torch.utils.data.Dataset):
    def __init__(self, files, transform):
        self.files, self.transform = files, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with open(self.files[i], "rb") as f:
            img = Image.open(f).convert("RGB")
        return self.transform(img)


def pss_mib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def one_thread(_):
    torch.set_num_threads(1)


def main():
    from lightly.transforms import MoCoV2Transform, SimCLRTransform

    ap = argparse.ArgumentParser(usage=__doc__)
    ap.add_argument("folder")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--preset", choices=["mocov2", "simclr"], default="mocov2")
    a = ap.parse_args()
    torch.set_num_threads(1)
    t = time.perf_counter()
    files = listing(a.folder)
    listed = time.perf_counter() - t
    transform = (MoCoV2Transform if a.preset == "mocov2" else SimCLRTransform)(input_size=224)
    loader = torch.utils.data.DataLoader(
        Files(files, transform), batch_size=a.batch, shuffle=True, drop_last=True,
        num_workers=a.workers, prefetch_factor=2 if a.workers else None,
        worker_init_fn=one_thread, generator=torch.Generator().manual_seed(0))
    peak = [0.0]
    done = threading.Event()
    me = os.getpid()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], pss_mib(me) + sum(pss_mib(c) for c in children(me)))
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    after_listing = pss_mib(me)
    timed_from = None
    for i, views in enumerate(loader):
        assert len(views) == 2 and views[0].shape[1:] == (3, 224, 224)
        if i == 1:
            timed_from = time.perf_counter()
        if i + 1 == 2 + a.batches:
            break
    secs = time.perf_counter() - timed_from
    done.set()
    rate = a.batches * a.batch / secs
    print(f"PyTorch DataLoader, {a.workers} workers, lightly {__import__('lightly').__version__} "
          f"{a.preset}, torch {torch.__version__}, PIL {Image.__version__}: {len(files)} files of "
          f"{a.folder}, listed in {listed:.2f}s; batches of {a.batch}, {a.batches} timed after 2; "
          f"load average {' '.join(open('/proc/loadavg').read().split()[:3])}")
    print(f"images/s {rate:.1f} ({rate / max(a.workers, 1):.1f} per worker); memory (PSS, main + "
          f"workers) after listing {after_listing:.0f} MiB, peak {peak[0]:.0f} MiB")


if __name__ == "__main__":
    main()
