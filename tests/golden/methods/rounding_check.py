#!/usr/bin/env python3
"""Does rounding decide a golden case? Reruns `make_golden.py`'s own trajectory of a case (same
code, same seed, same inputs) under changes that move only rounding, and prints each run's
largest scaled error against the case's float64 trajectory (`max_scaled_err`: every final
tensor and every loss, over max(1, max |expected|); the tests' tolerance is 1e-4):

- PyTorch float32 with 2 threads (as the generator ran it) and with 1;
- PyTorch float32 with oneDNN off (`torch.backends.mkldnn`): PyTorch's own CPU convolution
  instead of oneDNN's, another order of the same float32 sums;
- float64 from starting weights moved as the generator's check moves them (x(1 + 1e-7 n)), plus
  an absolute 1e-7 n on every 1-D parameter (BatchNorm biases start at 0, where a relative
  nudge moves nothing), `--draws` draws.

A case that one of these misses by more than the tolerance is decided by rounding: a float32
run, ours or PyTorch's, may follow either branch (tests/golden/methods/README.md, "Accuracy").

    python3 rounding_check.py CASES.json [NAME ...] [--draws N]

CASES.json: a file that `make_golden.py OUT --seed-offset N` wrote (moco_colab.json or
simclr_lightly.json); NAME: its cases to check (default: all).
"""
import json
import os
import sys
import warnings

import torch

warnings.filterwarnings("ignore", message=".*TF32.*")
HERE = os.path.dirname(os.path.abspath(__file__))
args, draws = sys.argv[1:], 4
if "--draws" in args:
    i = args.index("--draws")
    draws = int(args[i + 1])
    del args[i:i + 2]
if not args or any(a.startswith("--") for a in args):
    raise SystemExit(__doc__)
path, names = args[0], args[1:]

# make_golden.py's definitions without its generation at the bottom.
src = open(os.path.join(HERE, "make_golden.py")).read().split("\ns = 1000 * OFFSET")[0]
argv, sys.argv = sys.argv, ["make_golden.py"]
G = {"__name__": "make_golden"}
exec(src, G)
sys.argv = argv


def params(c):
    """The case's arguments to its `make_golden.py` function, from its own fields."""
    steps = len(c["steps"])
    if "queue_size" in c:
        return G["moco_colab_case"], (c["width"], c["batch_size"], c["image_size"], c["out_dim"],
                                      c["queue_size"], c["momentum"], c["temperature"],
                                      c["bn_splits"], c["symmetric"], c["lr"],
                                      c["weight_decay"], steps)
    return G["simclr_lightly_case"], (c["width"], c["batch_size"], c["image_size"],
                                      c["head_hidden_dim"], c["out_dim"], c["temperature"],
                                      c["lr"], c["weight_decay"], steps)


def perturb_all(draw):
    def perturb(module):
        g = torch.Generator().manual_seed(7_000_003 + draw)
        with torch.no_grad():
            for p in module.parameters():
                p.mul_(1 + 1e-7 * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
                if p.dim() == 1:
                    p.add_(1e-7 * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    return perturb


def run(ref, dtype, threads=2, perturb=None):
    make, p = params(ref)
    G["DT"] = dtype
    torch.set_num_threads(threads)
    if perturb:
        G["perturb"] = perturb
    try:
        return G["max_scaled_err"](ref, make(ref["name"], ref["seed"], *p))
    finally:
        G["DT"], G["perturb"] = torch.float64, lambda module: None


cases = json.load(open(path))["cases"]
missing = sorted(set(names) - {c["name"] for c in cases})
if missing:
    raise SystemExit(f"{path} has no case {', '.join(missing)}; its cases: "
                     + ", ".join(c["name"] for c in cases))
for ref in [c for c in cases if not names or c["name"] in names]:
    rows = [("f32, 2 threads (as generated)", run(ref, torch.float32)),
            ("f32, 1 thread", run(ref, torch.float32, threads=1))]
    with torch.backends.mkldnn.flags(enabled=False):
        rows.append(("f32, oneDNN off", run(ref, torch.float32)))
    f64 = [run(ref, torch.float64, perturb=perturb_all(k)) for k in range(draws)]
    rows.append((f"f64 nudged, {draws} draws (worst)", max(f64, default=0.0)))
    print(f"{path} {ref['name']} (seed {ref['seed']})")
    for label, err in rows:
        print(f"  {label:32} {err:.2e}{'  MISS' if err > 1e-4 else ''}")
    sys.stdout.flush()
