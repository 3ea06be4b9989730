#!/usr/bin/env python3
"""Per-epoch table of a memory-bank run's staleness readings (docs/results.md).

Reads the `"bank"` readings that the trainer writes into metrics.jsonl with the
collapse monitor (mocca_methods::staleness) for methods with a memory bank, and
prints one Markdown row per epoch and run: the mean loss, the mean cosine of
the queries to their own bank row, to the rows written earlier in the epoch
and to the rows not yet written, and the monitored kNN at the epoch's end.

    python3 scripts/bank_staleness.py runs/stale/moco-bank-colab-s0 runs/stale/instdisc-s0
    python3 scripts/bank_staleness.py --steps 0.25 RUN   # quarter-epoch rows
"""
import argparse
import json
import math
import os
import sys


def load(run):
    path = os.path.join(run, "metrics.jsonl")
    steps, knn, epochs = [], {}, {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            kind = r.get("kind")
            if kind == "step" and "bank" in (r.get("collapse") or {}):
                steps.append(r)
            elif kind == "knn" and r.get("layer", "").startswith("backbone"):
                knn[round(r["epoch"], 6)] = r["top1"]
            elif kind == "epoch":
                epochs[round(r["epoch"])] = r["loss_mean"]
    return steps, knn, epochs


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--steps", type=float, default=1.0,
                    help="row width in epochs (default 1: one row per epoch)")
    a = ap.parse_args()
    print("| run | epochs | mean loss | cos(q, own row) | cos(q, written this epoch) "
          "| cos(q, not yet written) | kNN at end (backbone, monitor) |")
    print("|---|---|---|---|---|---|---|")
    for run in a.runs:
        steps, knn, epochs = load(run)
        if not steps:
            sys.exit(f"{run}: no bank readings in metrics.jsonl (a method with a memory "
                     f"bank and the collapse monitor on)")
        bins = {}
        for r in steps:
            b = math.ceil(r["epoch"] / a.steps - 1e-9) - 1
            bins.setdefault(b, []).append(r)
        for b in sorted(bins):
            rs = bins[b]
            lo, hi = b * a.steps, (b + 1) * a.steps
            bank = [r["collapse"]["bank"] for r in rs]
            k = knn.get(round(hi, 6))
            print(f"| {os.path.basename(run.rstrip('/'))} | {lo:g}–{hi:g} "
                  f"| {mean([r['loss'] for r in rs]):.2f} "
                  f"| {mean([x['own'] for x in bank]):+.3f} "
                  f"| {mean([x.get('written') for x in bank]):+.3f} "
                  f"| {mean([x.get('unwritten') for x in bank]):+.3f} "
                  f"| {'' if k is None else f'{k:.1f}'} |")


if __name__ == "__main__":
    main()
