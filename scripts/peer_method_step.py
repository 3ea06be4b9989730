#!/usr/bin/env python3
"""PyTorch's side of `cargo xtask bench step --method byol|simsiam|mocov3`, one configuration
at a time.

byol, simsiam: builds lightly's BYOLModel or SimSiamModel from its CIFAR-10 benchmark (the
reference file is taken by path, never copied; patched as scripts/reference_curves.py patches
it, L1-L15, for the width) and times its own `training_step` + backward + its own
`configure_optimizers` optimizer step. mocov3: moco-v3's MoCo_ResNet from a checkout
(--mocov3 DIR; built as reference_curves.py's mocov3-official builds it, V2-V3) and its LARS
(moco/optimizer.py, lr 0.6 x batch / 256, wd 1e-6), timing `model(x1, x2, m)` + backward + the
optimizer step as main_moco.py's `train` does. All on random 32 px views, without a training
loop around them, so that they can be interleaved with our benchmark run by run on the same
machine.

Usage: python3 scripts/peer_method_step.py BENCHMARK.py byol|simsiam [--width W]
       [--batch N] [--steps N] [--threads N]
       python3 scripts/peer_method_step.py - mocov3 --mocov3 DIR [...]
Prints: "lightly byol width 0.125 batch 256: 123.4 img/s (2.07 s/step, 10 steps)".
Needs: torch, torchvision, lightly, pytorch_lightning.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_curves as rc  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("benchmark")
ap.add_argument("method", choices=["byol", "simsiam", "mocov3"])
ap.add_argument("--mocov3", help="a facebookresearch/moco-v3 checkout (for mocov3)")
ap.add_argument("--width", type=float, default=0.125)
ap.add_argument("--batch", type=int, default=256)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--data", default="data/cifar-10-batches-bin",
                help="the benchmark module reads its kNN datasets at import")
a = ap.parse_args()

torch.set_num_threads(a.threads)
views = (torch.rand(a.batch, 3, 32, 32), torch.rand(a.batch, 3, 32, 32))
if a.method == "mocov3":
    if not a.mocov3:
        sys.exit("mocov3 needs --mocov3 DIR (a facebookresearch/moco-v3 checkout)")
    sys.path.insert(0, os.path.abspath(a.mocov3))
    rc.patch_cuda_noop()  # the builder moves its labels with .cuda()
    import moco.optimizer

    model = rc.mocov3_model(a.width)
    model.train()
    opt = moco.optimizer.LARS(model.parameters(), 0.6 * a.batch / 256, weight_decay=1e-6,
                              momentum=0.9)

    def step(i):
        opt.zero_grad()
        loss = model(views[0], views[1], 0.99)
        loss.backward()
        opt.step()
else:
    ns = rc.lightly_prepare(a.benchmark, a.data, a.width, 1, a.batch)
    Model = ns["BYOLModel" if a.method == "byol" else "SimSiamModel"]
    model = Model(None, ns["classes"])
    model.train()
    optimizers, _ = model.configure_optimizers()
    opt = optimizers[0]
    batch = (views, torch.zeros(a.batch, dtype=torch.long), [""] * a.batch)
    model.log = lambda *args, **kwargs: None  # outside a Trainer

    def step(i):
        opt.zero_grad()
        loss = model.training_step(batch, i)
        loss.backward()
        opt.step()


step(0)
t0 = time.perf_counter()
for i in range(a.steps):
    step(i + 1)
dt = (time.perf_counter() - t0) / a.steps
print(f"{'moco-v3' if a.method == 'mocov3' else 'lightly'} {a.method} width {a.width} batch {a.batch}: {a.batch / dt:.1f} img/s "
      f"({dt:.2f} s/step, {a.steps} steps)")
