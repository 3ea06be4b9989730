#!/usr/bin/env bash
# check-without-gpu.sh BINARY[.gz]
#
# What can be checked of a CUDA trainer (`cargo xtask cuda-build`) on a machine
# with no GPU and no CUDA libraries, against the build toolchain's libraries
# (install-cuda-toolchain.sh): the real libcudart (the kernel launchers that
# nvcc generates bind its internal __cuda* symbols at load) and link-time
# stubs of the others (make-cuda-stubs.sh: every call returns
# CUDA_ERROR_STUB_LIBRARY, as a missing GPU would fail):
#   1. with no CUDA libraries at all the loader refuses it (exit 127) before
#      main: expected, candle links CUDA dynamically (skipped when this
#      machine has a libcuda.so.1);
#   2. with the stubs it starts: `help` exits 0 (it is linked -z now, so every
#      CUDA symbol it uses resolved);
#   3. `train --device auto` on a tiny generated dataset falls back to the CPU
#      with a one-line message naming the driver error, trains, checkpoints,
#      and `eval knn --device auto` reads the checkpoint back;
#   4. `train --device cuda` is an error (exit 1) saying no CUDA GPU is usable,
#      with no panic and no run folder left behind;
#   5. `gpu-selftest --device cuda` says there is no usable GPU and exits 3.
# Prints one line per check and exits 1 if any fails. Never run it with the
# stubs on a GPU machine's library path: there, use run-with-cuda-libs.sh.
#
# Needs: python3 (writes the PNG dataset). Uses the toolchain in
# $CUDA13_PREFIX (default ~/.cache/cuda13) and installs it there if missing
# (python3 with pip, cc, cargo).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="${1:?usage: check-without-gpu.sh BINARY[.gz]}"
[ -f "$src" ] || { echo "check-without-gpu: $src: no such file" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

bin="$work/xtask"
case "$src" in
*.gz) gzip -dc "$src" >"$bin" ;;
*) cp "$src" "$bin" ;;
esac
chmod +x "$bin"

prefix="${CUDA13_PREFIX:-$HOME/.cache/cuda13}"
cuda_lib="$prefix/nvidia/cu13/lib"
if [ ! -e "$cuda_lib/libcudart.so.13" ] || [ ! -e "$cuda_lib/stubs/libcuda.so.1" ]; then
    "$here/install-cuda-toolchain.sh" "$prefix" >/dev/null
fi
stub_path="$cuda_lib:$cuda_lib/stubs"
# --real-libs installs put the real cuDNN here (else its stub is in stubs/)
[ -d "$prefix/nvidia/cudnn/lib" ] && stub_path="$stub_path:$prefix/nvidia/cudnn/lib"

# A labelled image folder: 2 classes x (8 train + 2 test) 16x16 PNGs.
python3 - "$work/data" <<'PY'
import os, random, struct, sys, zlib
root = sys.argv[1]
rng = random.Random(0)
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
def png(path, side, tint):
    rows = b"".join(
        b"\0" + bytes(min(255, rng.randrange(128) + t) for _ in range(side) for t in tint)
        for _ in range(side))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
for split, n in (("train", 8), ("test", 2)):
    for cls, tint in (("red", (120, 0, 0)), ("blue", (0, 0, 120))):
        d = os.path.join(root, split, cls)
        os.makedirs(d)
        for i in range(n):
            png(os.path.join(d, "%d.png" % i), 16, tint)
PY
cat >"$work/tiny.toml" <<'EOF'
method = "moco"
epochs = 1
batch_size = 16

[data]
image_size = 16

[model]
width = 0.0625

[eval]
knn_every = 1
knn_k = 4

[run]
log_every = 1
eval_batch_size = 16

[moco]
queue_size = 32
bn_splits = 2
EOF

failed=0
check() { # name, then a command whose status says pass/fail
    local name="$1"
    shift
    if "$@"; then
        echo "PASS  $name"
    else
        echo "FAIL  $name"
        failed=1
    fi
}
has() { grep -qF -- "$2" "$1"; }
run_stubbed() { # out-prefix, args...: runs the binary with only the stubs to load
    local out="$1"
    shift
    set +e
    LD_LIBRARY_PATH="$stub_path" "$bin" "$@" >"$out.stdout" 2>"$out.stderr"
    echo $? >"$out.code"
    set -e
}
code() { cat "$1.code"; }

# 1. no CUDA libraries: the loader refuses before main
if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
    echo "SKIP  no CUDA libraries: exit 127 from the loader (this machine has a libcuda.so.1)"
else
    set +e
    env -u LD_LIBRARY_PATH "$bin" help >/dev/null 2>"$work/bare.stderr"
    bare=$?
    set -e
    check "no CUDA libraries: exit 127 from the loader, before main" \
        eval '[ "$bare" = 127 ] && has "$work/bare.stderr" "libcuda.so.1"'
fi

# 2. starts against the stubs
run_stubbed "$work/help" help
check "stub libraries: \`xtask help\` starts and exits 0" \
    eval '[ "$(code "$work/help")" = 0 ] && has "$work/help.stdout" "cuda-build"'

# 3. --device auto falls back to the CPU, trains and evaluates
(cd "$work" && run_stubbed "$work/auto" train --config tiny.toml --data data --device auto --out runs/auto)
check "train --device auto: exit 0 on the CPU, checkpoint written" \
    eval '[ "$(code "$work/auto")" = 0 ] && [ -f "$work/runs/auto/checkpoint.safetensors" ]'
check "train --device auto: one line says CPU, no usable GPU, and the driver error" \
    eval 'has "$work/auto.stderr" "device auto: running on the CPU: no usable CUDA GPU (" &&
          has "$work/auto.stderr" "CUDA_ERROR_STUB_LIBRARY" && has "$work/auto.stderr" " on cpu; run folder"'
(cd "$work" && run_stubbed "$work/eval" eval knn --run runs/auto --device auto)
check "eval knn --device auto: exit 0 on the CPU, accuracy printed" \
    eval '[ "$(code "$work/eval")" = 0 ] && has "$work/eval.stderr" "device auto: running on the CPU" &&
          grep -qi "knn" "$work/eval.stdout"'

# 4. --device cuda is a clear error
(cd "$work" && run_stubbed "$work/cuda" train --config tiny.toml --data data --device cuda --out runs/cuda)
check "train --device cuda: exit 1, says no usable CUDA GPU, no panic, no run folder" \
    eval '[ "$(code "$work/cuda")" = 1 ] && has "$work/cuda.stderr" "error: --device cuda: no usable CUDA GPU" &&
          ! has "$work/cuda.stderr" "panicked" && [ ! -e "$work/runs/cuda" ]'

# 5. the GPU self-test says there is no GPU, with its own exit code (3), not a failure (1)
(cd "$work" && run_stubbed "$work/selftest" gpu-selftest --device cuda)
check "gpu-selftest --device cuda: exit 3, says no usable GPU, no panic" \
    eval '[ "$(code "$work/selftest")" = 3 ] && grep -q "no usable GPU" "$work/selftest.stdout" "$work/selftest.stderr" &&
          ! has "$work/selftest.stderr" "panicked"'

if [ "$failed" != 0 ]; then
    for f in auto eval cuda selftest; do
        [ -f "$work/$f.stderr" ] && { echo "--- $f stderr:"; tail -n 20 "$work/$f.stderr"; }
    done
    exit 1
fi
echo "--- what the user sees:"
grep -h -E '^(device auto|error:)' "$work/auto.stderr" "$work/cuda.stderr"
