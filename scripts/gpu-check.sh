#!/usr/bin/env bash
# gpu-check.sh [--cpu-smoke] LOGDIR
#
# The whole GPU check in one call on the GPU machine, inside the device tool's
# 10-minute limit (docs/gpu.md, "The GPU check"). Prepared here by
# scripts/gpu-prepare.sh, which prints the exact `run` call. Stages, each under
# its own timeout and all under one wall-clock budget:
#   1. unpack the carried CUDA trainer (dist/xtask-cuda.gz) and list the GPU;
#   2. rebuild the CIFAR-10 binary batches from the carried JPEG archive
#      (dist/gpu-data/) and check their sha256s;
#   3. `xtask gpu-selftest` (every custom op and loss, f32 and bf16, vs the CPU);
#   4. `xtask bench step`: SimCLR and MoCo v2 steps at batch 512, f32 and bf16;
#      BYOL, SimSiam and MoCo v3 steps in f32; MoCo v3 with a ViT-Tiny (patch 4)
#      trained for a few dozen steps through the trainer (its losses kept);
#   5. a timing probe: one full MoCo epoch of the CIFAR-10 colab recipe
#      (data loading + augmentation included) and its kNN;
#   6. MoCo, colab recipe (R18, bs 512, K 4096, m 0.99, tau 0.1, lr 0.06 cosine,
#      wd 5e-4, split BN 8), for as many epochs as the probe says fit in the
#      time left, the cosine planned over those epochs, kNN (k 200, t 0.1)
#      every few epochs; a SIGINT at the deadline checkpoints and stops it;
#   7. a short table, printed last (also LOGDIR/summary.txt).
# LOGDIR gets at most 8 files (the device tool brings 8 back): gpu-check.log
# (everything), summary.txt, gpu-selftest.txt, bench-step.txt,
# probe-metrics.jsonl, train-metrics.jsonl, train-config.toml, vit-metrics.jsonl.
#
# --cpu-smoke: the same flow on this machine's CPU with the CPU build
# ($XTASK_BIN, default target/release/xtask), tiny settings (width 1/16, a
# 250-image subset of the archive, batch 32) and a short budget: proves the
# plumbing. Env: GPU_CHECK_BUDGET_S (default 540; smoke 900), TRAIN_PRECISION
# (f32 or bf16, default f32), XTASK_BIN, TORCH_SITE_PACKAGES (see
# scripts/cuda/run-with-cuda-libs.sh).
set -uo pipefail

smoke=0
if [ "${1:-}" = "--cpu-smoke" ]; then smoke=1; shift; fi
logdir="${1:?usage: gpu-check.sh [--cpu-smoke] LOGDIR}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo" || exit 2
mkdir -p "$logdir" || exit 2
logdir="$(cd "$logdir" && pwd)"
log="$logdir/gpu-check.log"
: >"$log"

t0=$(date +%s)
if [ $smoke = 1 ]; then budget=${GPU_CHECK_BUDGET_S:-900}; else budget=${GPU_CHECK_BUDGET_S:-540}; fi
deadline=$((t0 + budget))
precision="${TRAIN_PRECISION:-f32}"
work="$repo/dist/gpu-work"
[ $smoke = 1 ] && work="$repo/dist/gpu-smoke-work"
rm -rf "$work" && mkdir -p "$work"

say() { echo "$*" | tee -a "$log"; }
left() { echo $((deadline - $(date +%s))); }
# stage LIMIT_S NAME CMD...: runs CMD under min(LIMIT_S, time left - 20 s);
# its output goes to $work/last.out and the log. SIGINT first (train
# checkpoints on it), SIGKILL 15 s later.
stage() {
    local limit=$1 name=$2; shift 2
    local l; l=$(left)
    [ $((l - 20)) -lt "$limit" ] && limit=$((l - 20))
    : >"$work/last.out"
    if [ "$limit" -le 5 ]; then
        say "== $name: skipped, no time left"
        return 124
    fi
    say "== $name (limit ${limit}s, $(($(date +%s) - t0))s in): $*"
    local s; s=$(date +%s)
    timeout -s INT -k 15 "$limit" "$@" >"$work/last.out" 2>&1
    local rc=$?
    cat "$work/last.out" >>"$log"
    say "== $name: exit $rc after $(($(date +%s) - s))s"
    return $rc
}

# 1. The trainer binary.
if [ $smoke = 1 ]; then
    bin="${XTASK_BIN:-$repo/target/release/xtask}"
    [ -x "$bin" ] || { say "no CPU build at $bin: cargo build --release -p mocca-xtask --bin xtask"; exit 2; }
    runner=("$bin")
    device=cpu
else
    variant="${GPU_CHECK_VARIANT:-cuda}"
    gz="$repo/dist/xtask-$variant.gz"
    [ -f "$gz" ] || { say "missing $gz: run scripts/gpu-prepare.sh and carry dist/xtask-$variant.gz"; exit 2; }
    bin="$work/xtask-$variant"
    gzip -dc "$gz" >"$bin" && chmod +x "$bin"
    runner=("$repo/scripts/cuda/run-with-cuda-libs.sh" "$bin")
    device=cuda
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv >>"$log" 2>&1 \
        || say "nvidia-smi failed (see log)"
fi
say "== gpu-check: device $device, budget ${budget}s, training precision $precision, binary $bin"

# 2. Data.
gd="$repo/dist/gpu-data"
datadir="$work/data"
data_status="not rebuilt"
if [ -f "$gd/rebuild_cifar10_bins.py" ] && [ -f "$gd/cifar-10-jpeg.tar.xz" ]; then
    python3 -c 'import PIL, numpy; print("Pillow", PIL.__version__, "numpy", numpy.__version__)' >>"$log" 2>&1
    if stage 180 "rebuild CIFAR-10 binary batches" python3 "$gd/rebuild_cifar10_bins.py" "$datadir"; then
        if (cd "$datadir/cifar-10-batches-bin" && sha256sum -c "$gd/SHA256SUMS") >>"$log" 2>&1; then
            data_status="rebuilt, sha256 OK"
        else
            data_status="rebuilt, sha256 MISMATCH (another Pillow? see log)"
        fi
    else
        data_status="rebuild FAILED"
    fi
else
    say "no $gd (scripts/gpu-prepare.sh makes it)"
fi
say "== data: $data_status"
traindata="$datadir/cifar-10-batches-bin"
if [ $smoke = 1 ]; then
    # 25 training and 5 test images per class, as an image folder.
    traindata="$work/smoke-data"
    python3 - "$gd/cifar-10-jpeg.tar.xz" "$traindata" >>"$log" 2>&1 <<'PY'
import os, sys, tarfile
src, out = sys.argv[1:3]
want = {"train": 25, "test": 5}
seen = {}
with tarfile.open(src, "r:xz") as tar:
    for m in tar:
        if not m.isfile() or not m.name.endswith(".jpg"):
            continue
        _, part, cls, name = m.name.split("/")
        if seen.get((part, cls), 0) >= want[part]:
            continue
        seen[(part, cls)] = seen.get((part, cls), 0) + 1
        d = os.path.join(out, part, cls)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name), "wb") as f:
            f.write(tar.extractfile(m).read())
print("smoke data:", sum(seen.values()), "images")
PY
fi

# 3. Self-test.
stage 150 "gpu-selftest" "${runner[@]}" gpu-selftest --device "$device" --out "$logdir"
selftest_rc=$?

# 4. Step timings.
if [ $smoke = 1 ]; then
    bench_args=(--width 0.0625 --batch 16 --warmup 0 --steps 1)
else
    bench_args=(--width 1 --batch 512 --warmup 2 --steps 8)
fi
: >"$logdir/bench-step.txt"
for m in simclr mocov2; do
    stage 120 "bench step $m" "${runner[@]}" bench step --device "$device" --method "$m" \
        --backend fast --precision f32,bf16 "${bench_args[@]}"
    cat "$work/last.out" >>"$logdir/bench-step.txt"
done

for m in byol simsiam mocov3; do
    stage 90 "bench step $m" "${runner[@]}" bench step --device "$device" --method "$m" \
        --backend fast --precision f32 "${bench_args[@]}"
    cat "$work/last.out" >>"$logdir/bench-step.txt"
done
# MoCo v3 with a ViT-Tiny through the trainer: the ViT trains on this device.
vit_steps=40
vit_args=()
if [ $smoke = 1 ]; then
    vit_steps=4
    vit_args=(--batch-size 16 --set model.hidden_dim=64 --set predictor.hidden_dim=64)
fi
stage 150 "train mocov3 vit-tiny, $vit_steps steps" "${runner[@]}" train mocov3 --recipe cifar \
    --device "$device" --data "$traindata" --set 'model.arch="vit-tiny"' --set model.width=1.0 \
    --set eval.knn_at_start=false --set run.log_every=1 --stop-after-steps "$vit_steps" \
    "${vit_args[@]}" --out "$work/run-vit"
vit_rc=$?
[ -f "$work/run-vit/metrics.jsonl" ] && cp "$work/run-vit/metrics.jsonl" "$logdir/vit-metrics.jsonl"

# 5. Timing probe: one full epoch of the colab recipe, then its kNN.
train_common=(train moco --recipe cifar --device "$device" --data "$traindata"
    --precision "$precision" --set eval.knn_at_start=false)
if [ $smoke = 1 ]; then
    train_common+=(--width 0.0625 --batch-size 32)
fi
probe="$work/run-probe"
ps=$(date +%s)
stage 200 "probe: 1 epoch + kNN" "${runner[@]}" "${train_common[@]}" --epochs 1 --knn-every 1 --out "$probe"
probe_rc=$?
probe_wall=$(($(date +%s) - ps))
[ -f "$probe/metrics.jsonl" ] && cp "$probe/metrics.jsonl" "$logdir/probe-metrics.jsonl"

# 6. Train for as many epochs as fit. The probe's epoch record gives the epoch
# time (loading and augmentation included); the rest of its wall time is start
# + kNN + checkpoint, paid again at every kNN.
plan=$(python3 - "$probe/metrics.jsonl" "$probe_wall" "$(left)" <<'PY'
import json, math, sys
path, wall, left = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
try:
    epoch_s = [r["seconds"] for r in map(json.loads, open(path)) if r.get("kind") == "epoch"][0]
except Exception:
    print("0 1 0 0"); sys.exit()
fixed = max(wall - epoch_s, 1.0)
avail = left - 45  # summary, start, last checkpoint
n0 = max(int((avail - fixed) // epoch_s), 0)
every = max(1, math.ceil(n0 / 6))
n = max(int((avail - fixed) // (epoch_s + fixed / every)), 0)
print(n, min(every, max(n, 1)), round(epoch_s, 1), round(fixed, 1))
PY
)
read -r epochs knn_every epoch_s fixed_s <<<"$plan"
say "== plan: probe epoch ${epoch_s}s, start+kNN+checkpoint ${fixed_s}s, $(left)s left: $epochs epochs, kNN every $knn_every"
train_rc=skipped
if [ "${epochs:-0}" -ge 1 ]; then
    stage 100000 "train moco colab recipe, $epochs epochs" "${runner[@]}" "${train_common[@]}" \
        --epochs "$epochs" --knn-every "$knn_every" --out "$work/run-train"
    train_rc=$?
    [ -f "$work/run-train/metrics.jsonl" ] && cp "$work/run-train/metrics.jsonl" "$logdir/train-metrics.jsonl"
    [ -f "$work/run-train/config.toml" ] && cp "$work/run-train/config.toml" "$logdir/train-config.toml"
fi

# 7. Summary, printed last.
python3 - "$logdir" "$device" "$data_status" "$selftest_rc" "$probe_rc" "$train_rc" "$(($(date +%s) - t0))" \
    "$vit_rc" >"$logdir/summary.txt" 2>&1 <<'PY'
import json, os, re, sys
logdir, device, data_status, st_rc, probe_rc, train_rc, wall, vit_rc = sys.argv[1:9]
def records(name):
    p = os.path.join(logdir, name)
    return [json.loads(l) for l in open(p)] if os.path.exists(p) else []
print(f"== GPU check summary ({device}, {wall} s in all)")
print(f"data: {data_status}")
st = os.path.join(logdir, "gpu-selftest.txt")
line = [l.strip() for l in open(st) if l.startswith("gpu-selftest summary")] if os.path.exists(st) else []
print("selftest:", line[-1] if line else f"no summary (exit {st_rc})")
fails = [l.strip() for l in open(st) if l.startswith("FAIL")] if os.path.exists(st) else []
for l in fails[:8]:
    print("  ", l)
print("step timings (batch x 2 views, random images):")
bench = os.path.join(logdir, "bench-step.txt")
rows = 0
for l in open(bench) if os.path.exists(bench) else []:
    m = re.match(r"\s*(\S+) (\S+) width (\S+) (\S+) (\S+): ([\d.]+) img/s \(([\d.]+) s/step", l)
    if m:
        rows += 1
        print(f"  {m[1]:<7} {m[5]:<5} {m[2]:<7} {float(m[6]):>9.1f} img/s  {float(m[7]):.3f} s/step")
if not rows:
    print("  none (see gpu-check.log)")
vit = [r for r in records("vit-metrics.jsonl") if r["kind"] == "step"]
if vit:
    ips = [r["images_per_s"] for r in vit[2:]] or [0]
    print(f"ViT-Tiny MoCo v3 (train exit {vit_rc}): {len(vit)} steps, loss {vit[0]['loss']:.4f} -> "
          f"{vit[-1]['loss']:.4f}, {sum(ips) / len(ips):.0f} img/s after step 2")
else:
    print(f"ViT-Tiny MoCo v3: no step record (exit {vit_rc})")
probe = records("probe-metrics.jsonl")
ep = [r for r in probe if r["kind"] == "epoch"]
steps = [r for r in probe if r["kind"] == "step" and r["step"] > 10]
if ep:
    n = ep[0]["step"]
    print(f"full epoch (loading + augmentation + step), probe: {ep[0]['seconds']:.1f} s, {n} steps")
if steps:
    ips = sum(r["images_per_s"] for r in steps) / len(steps)
    print(f"  training images/s incl. loading (after step 10): {ips:.0f}; compare the moco step row above: "
          "if it is well above, augmentation does not keep up")
if not ep:
    print(f"probe: no epoch record (exit {probe_rc})")
colab = {1: 32.0, 10: 48.0, 20: 61.4}
train = records("train-metrics.jsonl")
knn = [(round(r["epoch"]), r["top1"]) for r in train if r["kind"] == "knn"]
for r in probe:
    if r["kind"] == "knn":
        knn.insert(0, (f"probe {round(r['epoch'])}", r["top1"]))
print(f"MoCo CIFAR-10 colab recipe, kNN top-1 (k 200, t 0.1; train exit {train_rc}; cosine over the epochs run,")
print("  the colab's over 200, so early epochs are not like for like; JPEG copies of CIFAR-10):")
for e, acc in knn:
    ref = colab.get(e) if isinstance(e, int) else None
    print(f"  epoch {e!s:>8}: {acc:5.1f} %" + (f"   colab {ref} %" if ref else ""))
if not knn:
    print("  no kNN record")
print("colab reference: 32.0 % @1, 48.0 % @10, 61.4 % @20")
PY
cat "$logdir/summary.txt" | tee -a "$log"
if [ "$selftest_rc" != 0 ]; then exit 1; fi
exit 0
