#!/usr/bin/env bash
# gpu-prepare.sh [--skip-build] [--cudnn]
#
# Run here (no GPU needed): makes everything scripts/gpu-check.sh needs on the
# GPU machine and prints the exact device-tool `run` call for it.
#   1. `cargo xtask cuda-build` (nice'd) -> dist/xtask-cuda.gz (--cudnn: the
#      cuDNN variant, dist/xtask-cudnn.gz); --skip-build keeps the one there
#      (it must be built from the current sources: gpu-selftest is new);
#   2. dist/gpu-data/: the CIFAR-10 JPEG archive and rebuild_cifar10_bins.py
#      from ../shared/data (the GPU machine cannot see ../shared), and
#      SHA256SUMS of the six binary batches, from ../shared/data/README.md;
#   3. checks that the working tree plus the carried paths stay under the
#      device tool's 64 MiB, and prints the call.
# Env: SHARED_DATA (default ../shared/data beside the checkout).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
build=1 variant=cuda
for a in "$@"; do
    case "$a" in
    --skip-build) build=0 ;;
    --cudnn) variant=cudnn ;;
    *) echo "usage: gpu-prepare.sh [--skip-build] [--cudnn]" >&2; exit 2 ;;
    esac
done
shared="${SHARED_DATA:-$repo/../shared/data}"

if [ $build = 1 ]; then
    flag=""
    [ $variant = cudnn ] && flag="--cudnn"
    nice -n 19 cargo xtask cuda-build $flag
fi
gz="dist/xtask-$variant.gz"
[ -f "$gz" ] || { echo "gpu-prepare: $gz missing (run without --skip-build)" >&2; exit 1; }

mkdir -p dist/gpu-data
for f in cifar-10-jpeg.tar.xz rebuild_cifar10_bins.py; do
    [ -f "$shared/$f" ] || { echo "gpu-prepare: $shared/$f missing" >&2; exit 1; }
    if ! cmp -s "$shared/$f" "dist/gpu-data/$f"; then
        cp "$shared/$f" "dist/gpu-data/$f.tmp"
        mv -f "dist/gpu-data/$f.tmp" "dist/gpu-data/$f"
    fi
done
want_tar=$(grep -oE 'sha256 `[0-9a-f]{64}`' "$shared/README.md" | grep -oE '[0-9a-f]{64}' | head -1)
got_tar=$(sha256sum dist/gpu-data/cifar-10-jpeg.tar.xz | cut -d' ' -f1)
[ "$want_tar" = "$got_tar" ] || { echo "gpu-prepare: archive sha256 $got_tar, README says $want_tar" >&2; exit 1; }
grep -E '^ +[0-9a-f]{64}  [a-z_0-9]+\.bin$' "$shared/README.md" | sed 's/^ *//' >dist/gpu-data/SHA256SUMS.tmp
[ "$(wc -l <dist/gpu-data/SHA256SUMS.tmp)" = 6 ] || { echo "gpu-prepare: expected 6 sha256 lines in $shared/README.md" >&2; exit 1; }
mv -f dist/gpu-data/SHA256SUMS.tmp dist/gpu-data/SHA256SUMS

# What travels: tracked + untracked-not-ignored files, plus the carried paths.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
carried=$(du -cb "$gz" dist/gpu-data | tail -1 | cut -f1)
total=$((tree + carried))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "gpu-prepare: working tree $(mib "$tree") + carried $(mib "$carried") = $(mib "$total") (limit 64 MiB)"
[ "$total" -lt $((64 * 1048576)) ] || { echo "gpu-prepare: over the 64 MiB limit" >&2; exit 1; }
cmd="bash scripts/gpu-check.sh \$OUT/gpu-check"
[ $variant = cudnn ] && cmd="GPU_CHECK_VARIANT=cudnn $cmd"
cat <<EOF

The GPU check, for a session whose task has a GPU machine (device tool, one call, about 9 minutes):

  run(command="$cmd",
      carry=["$gz", "dist/gpu-data"],
      timeout_s=600)

Then read \$OUT/gpu-check/summary.txt (printed last) and gpu-check.log; give the machine back.
EOF
