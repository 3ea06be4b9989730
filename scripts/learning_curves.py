#!/usr/bin/env python3
"""Learning curves of mocca beside the reference code, run the same way on the same machine.

    python3 scripts/learning_curves.py ours moco   --seed 0 --out runs/curves/ours-moco-s0
    python3 scripts/learning_curves.py ours simclr --seed 0 --out runs/curves/ours-simclr-s0
    python3 scripts/learning_curves.py ours instdisc --seed 0 --out runs/curves/ours-instdisc-s0
    python3 scripts/reference_curves.py colab-moco --colab moco_cifar10_demo.ipynb --lr 0.03 \\
        --data data/cifar-10-batches-bin --out runs/curves/colab-moco-s0 --seed 0
    python3 scripts/reference_curves.py lightly-simclr --lightly-benchmark cifar10_benchmark.py \\
        --data data/cifar-10-batches-bin --out runs/curves/lightly-simclr-s0 --seed 0
    python3 scripts/reference_curves.py lemniscate-instdisc --lemniscate lemniscate.pytorch \\
        --data data/cifar-10-batches-bin --out runs/curves/lemniscate-instdisc-s0 --seed 0
    python3 scripts/learning_curves.py report runs/curves --plot docs/curves-parity.png

`ours` runs `cargo xtask train` with the recipe that names the reference (moco: the MoCo
CIFAR-10 colab, `moco-cifar`; simclr: lightly's CIFAR-10 benchmark, `simclr-cifar`; instdisc:
lemniscate.pytorch's cifar.py, `instdisc-cifar`) at the settings `reference_curves.py` gives the
reference code (width 0.125, batch 256 — 128 for instdisc, cifar.py's own —, 10 epochs, kNN
k 200 / t 0.1 every epoch on the same evenly spaced 10,000 train / 2,000 test images), on one
core (`taskset -c CORE`, `RAYON_NUM_THREADS=1`), then the full kNN protocol (50,000 / 10,000)
with `cargo xtask eval knn` on every layer the recipe monitors. Its metrics.jsonl has the schema
reference_curves.py writes; the full-protocol results go to `full.jsonl` in the same schema.

`report` reads every run folder under a directory (`<who>-<method>-s<seed>`: ours-moco,
colab-moco, ours-simclr, lightly-simclr, ours-instdisc, lemniscate-instdisc, ours-byol, lightly-byol, ours-simsiam, lightly-simsiam, ours-mocov3, official-mocov3), and prints per
epoch and layer the reference's seed-to-seed range and each of our seeds, flagging epochs >= 3
where our mean is outside the reference's range or a seed of ours is below the reference's worst
by more than its spread. Nothing here needs torch; the reference runs do (pip install torch
torchvision lightly; lemniscate-instdisc needs torch and torchvision only).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict

RECIPES = {"moco": "moco", "simclr": "simclr", "instdisc": "instdisc", "byol": "byol",
           "simsiam": "simsiam", "mocov3": "mocov3"}
# The batch each reference trains with at these settings (reference_curves.py's default for the
# colab and lightly; cifar.py's fixed 128 for lemniscate).
BATCH_SIZES = {"moco": 256, "simclr": 256, "instdisc": 128, "byol": 256, "simsiam": 256,
               "mocov3": 256}
# Whose code each method's curves are compared with (the reference run folders' prefix).
REFERENCES = {"moco": "colab", "simclr": "lightly", "instdisc": "lemniscate", "byol": "lightly",
              "simsiam": "lightly", "mocov3": "official"}
# Our metrics name layers as the trainer prints them.
LAYER_NAMES = {"backbone features": "backbone", "projection-head output": "head"}


def run_ours(a):
    if a.batch_size is None:
        a.batch_size = BATCH_SIZES[a.method]
    os.makedirs(a.out, exist_ok=True)
    if os.path.exists(os.path.join(a.out, "metrics.jsonl")):
        sys.exit(f"{a.out} already holds a run")
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    pin = ["taskset", "-c", a.core] if a.core else []
    xtask = [a.xtask] if a.xtask else ["cargo", "xtask"]
    train = pin + xtask + [
        "train", RECIPES[a.method],
        "--width", str(a.width), "--batch-size", str(a.batch_size), "--epochs", str(a.epochs),
        "--knn-every", "1", "--knn-train-limit", str(a.knn_train_limit),
        "--knn-test-limit", str(a.knn_test_limit), "--seed", str(a.seed), "--out", a.out,
    ] + (["--data", a.data] if a.data else []) + a.extra
    with open(os.path.join(a.out, "command.txt"), "w") as f:
        f.write(" ".join(train) + "\n")
    t0 = time.time()
    with open(os.path.join(a.out, "stderr.log"), "w") as log:
        subprocess.run(train, env=env, stderr=log, stdout=log, check=True)
    train_s = time.time() - t0
    config = open(os.path.join(a.out, "config.toml")).read()
    layers = ["backbone"]
    m = re.search(r'^layer = "(\w+)"', config, re.M)
    if m:
        layers = [m.group(1)]
    also = re.search(r"^also_layers = \[(.*)\]", config, re.M)
    if also:
        layers += [x.strip().strip('"') for x in also.group(1).split(",") if x.strip()]
    full = []
    for layer in layers:
        cmd = pin + xtask + ["eval", "knn", "--run", a.out, "--layer", layer]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        top1 = float(re.search(r"top-1 ([0-9.]+)%", out).group(1))
        full.append({"kind": "knn", "epoch": a.epochs, "top1": top1, "k": 200, "t": 0.1,
                     "encoder": "query", "layer": layer, "n_train": 50000, "n_test": 10000,
                     "command": " ".join(cmd)})
    with open(os.path.join(a.out, "full.jsonl"), "w") as f:
        for r in full:
            f.write(json.dumps(r) + "\n")
    info = {"who": "ours", "method": a.method, "seed": a.seed, "train_seconds": train_s,
            "threads": a.threads, "core": a.core,
            "cpu": subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"],
                                  capture_output=True, text=True).stdout.strip(),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip()}
    with open(os.path.join(a.out, "run.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info), *[f"full kNN {r['layer']}: {r['top1']:.2f}" for r in full], sep="\n")


def read_run(path):
    """{(layer, epoch): top1} per epoch (subset), {layer: top1} full, {epoch: loss}."""
    curve, full, loss = {}, {}, {}
    for name in ["metrics.jsonl", "full.jsonl"]:
        p = os.path.join(path, name)
        if not os.path.exists(p):
            continue
        for line in open(p):
            r = json.loads(line)
            if r["kind"] == "knn":
                r["layer"] = LAYER_NAMES.get(r["layer"], r["layer"])
                if r["n_test"] >= 10000:
                    full[r["layer"]] = r["top1"]
                else:
                    curve[(r["layer"], round(r["epoch"]))] = r["top1"]
            elif r["kind"] == "epoch":
                loss[round(r["epoch"])] = r["loss_mean"]
    return curve, full, loss


def report(a):
    groups = defaultdict(dict)  # (method) -> {(who, seed): run}
    for name in sorted(os.listdir(a.dir)):
        m = re.fullmatch(r"(ours|%s)-(%s)-s(\d+)" % ("|".join(sorted(set(REFERENCES.values()))),
                                                     "|".join(sorted(REFERENCES))), name)
        if m:
            groups[m.group(2)][(m.group(1), int(m.group(3)))] = read_run(os.path.join(a.dir, name))
    lines, problems = [], []
    for method, runs in groups.items():
        ref_who = REFERENCES[method]
        ours = {s: r for (w, s), r in runs.items() if w == "ours"}
        refs = {s: r for (w, s), r in runs.items() if w == ref_who}
        layers = sorted({l for r in runs.values() for (l, _) in r[0]})
        for layer in layers:
            epochs = sorted({e for r in runs.values() for (l, e) in r[0] if l == layer})
            lines.append(f"\n## {method}: {ref_who}'s code vs ours, kNN top-1 on {layer} "
                         f"(10,000 / 2,000 images; last column: full protocol)\n")
            head = "| run | " + " | ".join(f"ep {e}" for e in epochs) + " | full |"
            lines += [head, "|" + "---|" * (len(epochs) + 2)]
            for who, group in [(ref_who, refs), ("ours", ours)]:
                for s in sorted(group):
                    c, f, _ = group[s]
                    cells = [f"{c[(layer, e)]:.2f}" if (layer, e) in c else "" for e in epochs]
                    full = f"{f[layer]:.2f}" if layer in f else ""
                    lines.append(f"| {who} seed {s} | " + " | ".join(cells) + f" | {full} |")
            for who, group in [(ref_who, refs), ("ours", ours)]:
                cells = []
                for e in epochs + ["full"]:
                    vals = [(g[1].get(layer) if e == "full" else g[0].get((layer, e)))
                            for g in group.values()]
                    vals = [v for v in vals if v is not None]
                    cells.append(f"{min(vals):.2f}–{max(vals):.2f}" if vals else "")
                lines.append(f"| {who} min–max | " + " | ".join(cells) + " |")
            for e in epochs + ["full"]:
                if e != "full" and e < 3:
                    continue
                get = lambda g: (g[1].get(layer) if e == "full" else g[0].get((layer, e)))
                rv = [v for v in map(get, refs.values()) if v is not None]
                ov = [v for v in map(get, ours.values()) if v is not None]
                if len(rv) < 2 or not ov:
                    continue
                lo, hi = min(rv), max(rv)
                spread = hi - lo
                mean = sum(ov) / len(ov)
                if not lo <= mean <= hi:
                    problems.append(f"{method} {layer} epoch {e}: our mean {mean:.2f} outside "
                                    f"{ref_who}'s range {lo:.2f}–{hi:.2f}")
                if min(ov) < lo - spread:
                    problems.append(f"{method} {layer} epoch {e}: our worst seed {min(ov):.2f} "
                                    f"below {ref_who}'s worst {lo:.2f} by more than its spread "
                                    f"{spread:.2f}")
        lines.append(f"\n{method}: mean training loss per epoch\n")
        for who, group in [(ref_who, refs), ("ours", ours)]:
            for s in sorted(group):
                l = group[s][2]
                lines.append(f"- {who} seed {s}: " + ", ".join(f"{l[e]:.3f}" for e in sorted(l)))
    print("\n".join(lines))
    print("\nchecks (epochs >= 3 and full):", "all hold" if not problems else "")
    for p in problems:
        print("-", p)
    if a.plot:
        plot(groups, a.plot)


def plot(groups, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [(m, l) for m in sorted(groups) for l in
              sorted({l for r in groups[m].values() for (l, _) in r[0]})]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (method, layer) in zip(axes[0], panels):
        for (who, seed), (curve, _, _) in sorted(groups[method].items()):
            es = sorted(e for (l, e) in curve if l == layer)
            ax.plot(es, [curve[(layer, e)] for e in es], color="C1" if who == "ours" else "C0",
                    alpha=0.8, label=f"{who} s{seed}")
        ax.set_title(f"{method}, kNN on {layer}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("top-1 % (10k / 2k)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("ours", help="one run of our trainer at the reference settings")
    o.add_argument("method", choices=sorted(RECIPES))
    o.add_argument("--seed", type=int, required=True)
    o.add_argument("--out", required=True)
    o.add_argument("--data", help="dataset folder (default: the trainer's discovery)")
    o.add_argument("--width", type=float, default=0.125)
    o.add_argument("--batch-size", type=int, default=None,
                   help="default: the reference's (moco, simclr 256; instdisc 128)")
    o.add_argument("--epochs", type=int, default=10)
    o.add_argument("--knn-train-limit", type=int, default=10000)
    o.add_argument("--knn-test-limit", type=int, default=2000)
    o.add_argument("--threads", type=int, default=1)
    o.add_argument("--core", default="0", help="taskset CPU list ('' for none)")
    o.add_argument("--xtask", help="a built xtask binary instead of `cargo xtask`")
    # More trainer flags go after `--` (split off before argparse sees them).
    r = sub.add_parser("report", help="tables (and a plot) of every run under a folder")
    r.add_argument("dir")
    r.add_argument("--plot")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    a = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    a.extra = extra
    run_ours(a) if a.cmd == "ours" else report(a)


if __name__ == "__main__":
    main()
