#!/usr/bin/env python3
"""How stale MoCo's queue is, by the age of its keys (docs/results.md, "Accuracy against K").

Reads the `"queue"` readings that the trainer writes into metrics.jsonl with the
collapse monitor (mocca_methods::staleness::queue_cosines) for MoCo with a queue:
at each monitored step, the mean cosine of the step's queries to their own keys
and to the keys enqueued `a` steps before this step's (`by_age[a]`; age 0 is the
step's own keys of the other images). Prints one Markdown row per run (or per
queue size with --by-k, means over the seeds with the seeds' spread), averaged
over the monitored steps of epochs FROM..TO, with the ages grouped by powers of
two; with --plot FILE.svg also draws the cosine against the age, one line per
queue size (needs matplotlib). With --per-epoch, instead: one row per queue size
and epoch (means over the seeds), the cosine to the own key, to the step's other
keys (age 0) and to the oldest keys, with the collapse monitor's uniformity.

    python3 scripts/queue_staleness.py runs/sweeps/moco-queue-staleness --by-k
    python3 scripts/queue_staleness.py runs/sweeps/moco-queue-staleness --per-epoch
    python3 scripts/queue_staleness.py RUN_DIR ... --epochs 2 10 --plot by_age.svg
"""
import argparse
import glob
import json
import os
import re
import statistics
import sys

GROUPS = [(0, 0), (1, 1), (2, 3), (4, 7), (8, 15), (16, 31), (32, 63)]


def run_dirs(paths):
    out = []
    for p in paths:
        if os.path.isfile(os.path.join(p, "metrics.jsonl")):
            out.append(p)
        else:
            found = sorted(os.path.dirname(m) for m in
                           glob.glob(os.path.join(p, "**", "metrics.jsonl"), recursive=True))
            if not found:
                sys.exit(f"{p}: neither a run folder nor a folder of runs (no metrics.jsonl)")
            out.extend(found)
    return out


def load(run, lo, hi):
    """Mean own cosine, mean cosine by age, the queue size and kNN of one run."""
    own, ages, k, knn = [], [], None, None
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r.get("kind") == "knn" and r.get("layer", "").startswith("backbone"):
                knn = r["top1"]
            q = (r.get("collapse") or {}).get("queue") if r.get("kind") == "step" else None
            if q is None or not (lo - 1 < r["epoch"] <= hi):
                continue
            own.append(q["own"])
            ages.append(q["by_age"])
    if not ages:
        sys.exit(f"{run}: no queue readings in epochs {lo}..{hi} of metrics.jsonl (MoCo with "
                 f"a queue, the asymmetric loss and the collapse monitor on)")
    n = max(len(a) for a in ages)
    by_age = [statistics.fmean(a[i] for a in ages if len(a) > i) for i in range(n)]
    m = re.search(r"K-(\d+)", run)
    k = int(m.group(1)) if m else None
    return statistics.fmean(own), by_age, k, knn


def per_epoch(runs):
    """{K: {epoch: [(own, age 0, oldest age, uniformity) per reading]}} over the runs."""
    table = {}
    for run in runs:
        m = re.search(r"K-(\d+)", run)
        if not m:
            sys.exit(f"{run}: --per-epoch needs K-<n> in each run's folder name")
        with open(os.path.join(run, "metrics.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                c = r.get("collapse") if r.get("kind") == "step" else None
                if not c or "queue" not in c:
                    continue
                q = c["queue"]
                epoch = int((r["epoch"] - 1e-9) // 1) + 1
                table.setdefault(int(m.group(1)), {}).setdefault(epoch, []).append(
                    (q["own"], q["by_age"][0], q["by_age"][-1], c["uniformity"]))
    return table


def grouped(by_age):
    cells = []
    for lo, hi in GROUPS:
        xs = by_age[lo:hi + 1]
        cells.append(statistics.fmean(xs) if xs else None)
    return cells


def fmt(x, sd=None):
    if x is None:
        return "–"
    return f"{x:.3f}" if sd is None else f"{x:.3f} ± {sd:.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="run folders or folders holding runs")
    ap.add_argument("--epochs", nargs=2, type=int, default=[2, 10], metavar=("FROM", "TO"),
                    help="average the readings of these epochs (default 2 10: past the "
                         "queue's first fill)")
    ap.add_argument("--by-k", action="store_true",
                    help="one row per queue size (K-<n> in the folder name), over its seeds")
    ap.add_argument("--per-epoch", action="store_true",
                    help="one row per queue size and epoch, over the seeds")
    ap.add_argument("--plot", metavar="FILE.svg")
    a = ap.parse_args()
    if a.per_epoch:
        table = per_epoch(run_dirs(a.paths))
        print("| K | epoch | cos(q, own key) | age 0 | oldest age | uniformity |")
        print("|---|---|---|---|---|---|")
        for k in sorted(table):
            for e in sorted(table[k]):
                cols = list(zip(*table[k][e]))
                cells = " | ".join(f"{statistics.fmean(c):.3f}" for c in cols[:3])
                print(f"| {k} | {e} | {cells} | {statistics.fmean(cols[3]):.2f} |")
        return
    runs = [(r, *load(r, *a.epochs)) for r in run_dirs(a.paths)]
    head = ["cos(q, own key)"] + [f"age {lo}" if lo == hi else f"ages {lo}–{hi}"
                                  for lo, hi in GROUPS]
    first = "K (seeds)" if a.by_k else "run"
    print(f"| {first} | " + " | ".join(head) + " | kNN top-1 (%) |")
    print("|---" * (len(head) + 2) + "|")
    series = {}
    if a.by_k:
        for _, own, by_age, k, knn in runs:
            if k is None:
                sys.exit("--by-k needs K-<n> in each run's folder name")
            series.setdefault(k, []).append((own, by_age, knn))
        for k in sorted(series):
            rs = series[k]
            cols = [[r[0] for r in rs]] + [[grouped(r[1])[g] for r in rs]
                                           for g in range(len(GROUPS))]
            cells = []
            for xs in cols:
                xs = [x for x in xs if x is not None]
                if not xs:
                    cells.append("–")
                elif len(xs) == 1:
                    cells.append(fmt(xs[0]))
                else:
                    cells.append(fmt(statistics.fmean(xs), statistics.stdev(xs)))
            knns = ", ".join(f"{r[2]:.2f}" for r in rs if r[2] is not None)
            print(f"| {k} ({len(rs)}) | " + " | ".join(cells) + f" | {knns} |")
    else:
        for run, own, by_age, k, knn in runs:
            cells = [fmt(own)] + [fmt(c) for c in grouped(by_age)]
            knn_s = f"{knn:.2f}" if knn is not None else "–"
            print(f"| {run} | " + " | ".join(cells) + f" | {knn_s} |")
            series.setdefault(k if k is not None else run, []).append((own, by_age, knn))
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for key in sorted(series, key=lambda k: (not isinstance(k, int), str(k).zfill(12))):
            rs = series[key]
            n = min(len(r[1]) for r in rs)
            ys = [statistics.fmean(r[1][i] for r in rs) for i in range(n)]
            ax.plot(range(n), ys, marker="o" if n < 8 else None, ms=3,
                    label=f"K {key}" if isinstance(key, int) else str(key))
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("age of the keys (steps before this step's)")
        ax.set_ylabel("mean cos(query, key)")
        ax.set_title(f"MoCo queue: cosine of the queries to the keys by age, "
                     f"epochs {a.epochs[0]}–{a.epochs[1]}", fontsize=9)
        ax.axhline(0, color="0.8", lw=0.8)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(a.plot)
        print(f"\nwrote {a.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
