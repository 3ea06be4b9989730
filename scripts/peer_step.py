#!/usr/bin/env python3
"""PyTorch's side of `cargo xtask bench step`, one configuration at a time.

Runs the SimCLR training step of the peer script (../shared/peers/torch_peers.py) -- its own
model, head, NT-Xent and SGD definitions, executed from that file -- at one width and memory
format, so that it can be interleaved with our benchmark run by run (ours, PyTorch, ours, ...)
on a noisy machine instead of minutes apart.

Usage: python3 scripts/peer_step.py PEER_SCRIPT [--width W] [--nchw] [--steps N]
Prints one line like the peer script's: "width 0.25 channels_last: 123.4 img/s (1.04 s/step)".
Needs: torch, torchvision (pip install torch torchvision).
"""
import argparse
import time

import torch
import torch.nn as nn

ap = argparse.ArgumentParser()
ap.add_argument("peer_script")
ap.add_argument("--width", type=float, default=0.25)
ap.add_argument("--nchw", action="store_true", help="contiguous NCHW instead of channels_last")
ap.add_argument("--steps", type=int, default=None, help="timed steps (peer default: 3 at width 1, else 10)")
args = ap.parse_args()

torch.set_num_threads(2)
src = open(args.peer_script).read()
# The model, head and loss definitions: from the first class to the step loop's banner.
defs = src[src.index("class Block") : src.index('print("== ResNet-18')]
ns = {}
exec("import torch, torch.nn as nn, torch.nn.functional as F\n" + defs, ns)

fmt = torch.contiguous_format if args.nchw else torch.channels_last
net, f = ns["resnet18_cifar"](args.width)
net = net.to(memory_format=fmt)
head = nn.Sequential(nn.Linear(f, f), nn.BatchNorm1d(f), nn.ReLU(), nn.Linear(f, 128))
model = nn.Sequential(net, head)
opt = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
x0, x1 = (torch.rand(128, 3, 32, 32).contiguous(memory_format=fmt) for _ in range(2))
steps = args.steps or (3 if args.width == 1.0 else 10)


def step():
    opt.zero_grad()
    loss = ns["ntxent"](model(x0), model(x1))
    loss.backward()
    opt.step()


step()
t0 = time.perf_counter()
for _ in range(steps):
    step()
dt = (time.perf_counter() - t0) / steps
tag = "NCHW" if args.nchw else "channels_last"
print(f"width {args.width} {tag}: {128 / dt:.1f} img/s ({dt:.2f} s/step, {steps} steps)")
