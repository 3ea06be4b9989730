#!/usr/bin/env python3
"""Regenerates mocov2plus.json: solo-learn's MoCo V2+ loss, run from solo-learn's own code.

The reference is `mocov2plus_loss_func` of vturrisi/solo-learn (`solo/losses/mocov2plus.py`),
loaded by path from a checkout (nothing of it is copied here), combined as
`solo/methods/mocov2plus.py` combines it:

    queue = randn(2, D, K) normalised along D        # queue[v] holds past keys of view v
    z = F.normalize(projector(feats))                # queries and keys are unit rows
    loss = (L(q1, k2, queue[1]) + L(q2, k1, queue[0])) / 2

run in float64 autograd; gradients are with respect to the raw (unnormalised) queries, as in
training (the normalisation is part of the model there). `reduction` "sum" is twice the loss.

Run: python3 make_golden_mocov2plus.py --solo-learn PATH/TO/solo-learn   (needs torch)
     then gzip -9 -n mocov2plus.json
"""
import argparse
import importlib.util
import json
import os

import torch
import torch.nn.functional as F

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--solo-learn", required=True, help="a checkout of vturrisi/solo-learn")
parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "mocov2plus.json"))
args = parser.parse_args()

# The loss module alone: `solo.losses`'s package __init__ would import every other loss.
path = os.path.join(args.solo_learn, "solo", "losses", "mocov2plus.py")
spec = importlib.util.spec_from_file_location("solo_mocov2plus", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
mocov2plus_loss_func = module.mocov2plus_loss_func


def solo_loss(q1, q2, k1, k2, queue, tau):
    q1, q2 = F.normalize(q1, dim=-1), F.normalize(q2, dim=-1)
    k1, k2 = F.normalize(k1, dim=-1), F.normalize(k2, dim=-1)
    return (
        mocov2plus_loss_func(q1, k2, queue[1], tau) + mocov2plus_loss_func(q2, k1, queue[0], tau)
    ) / 2


def raw(gen, n, d):
    # rounded to float32 so that the float32 input of the test is exact
    return torch.randn(n, d, generator=gen, dtype=torch.float64).float().double()


def arr(t):
    return {"shape": list(t.shape), "data": [float(v) for v in t.detach().reshape(-1).tolist()]}


gen = torch.Generator().manual_seed(11)
cases = []
for n, d, k, tau in [(4, 8, 16, 0.2), (8, 16, 32, 0.2), (6, 12, 20, 0.07)]:
    for reduction in ["mean", "sum"]:
        q1, q2 = raw(gen, n, d).requires_grad_(), raw(gen, n, d).requires_grad_()
        k1, k2 = raw(gen, n, d), raw(gen, n, d)
        queue = F.normalize(torch.randn(2, d, k, generator=gen, dtype=torch.float64), dim=1)
        queue = queue.float().double()
        loss = solo_loss(q1, q2, k1, k2, queue, tau) * (2.0 if reduction == "sum" else 1.0)
        g1, g2 = torch.autograd.grad(loss, [q1, q2])
        cases.append({
            "name": f"n{n}_d{d}_k{k}_tau{tau}_{reduction}",
            "tau": tau,
            "reduction": reduction,
            "q1": arr(q1), "q2": arr(q2), "k1": arr(k1), "k2": arr(k2),
            # [K, D] rows, as MomentumQueue and InfoNCELoss hold them (solo-learn's are [D, K])
            "queue1": arr(queue[0].T), "queue2": arr(queue[1].T),
            "loss": float(loss.detach()), "grad_q1": arr(g1), "grad_q2": arr(g2),
        })

with open(args.out, "w") as f:
    json.dump({
        "loss": "mocov2plus",
        "generated_with": {
            "torch": torch.__version__,
            "reference": "solo-learn solo/losses/mocov2plus.py, combined as solo/methods/mocov2plus.py",
        },
        "cases": cases,
    }, f)
print(f"wrote {len(cases)} cases to {args.out}")
