#!/bin/bash
# Before/after of two commits on one machine, as docs/benchmarks.md records them:
#   1. clean builds, one after the other, each in a fresh worktree and target folder:
#      `cargo build --release -p mocca-xtask`, then `cargo test --workspace --no-run`;
#   2. the two release binaries run alternately from the repository root (bench aug reads
#      data/), ROUNDS rounds of `bench step --width 0.25 --backend fast` and `bench aug --reps 5`.
# Run it from the repository root on a quiet machine; it prints the load average beside each figure.
#
#   bash scripts/ab_release.sh BEFORE AFTER [ROUNDS]     e.g. scripts/ab_release.sh e377d8c 40abe3a 4
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BEFORE AFTER [ROUNDS]" >&2; exit 2; }
root=$(git rev-parse --show-toplevel)
rounds=${3:-4}
work=$(mktemp -d /tmp/ab_release.XXXXXX)
trap 'for w in before after; do git -C "$root" worktree remove --force "$work/$w" 2>/dev/null || true; done' EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }

git -C "$root" worktree add -q --detach "$work/before" "$1"
git -C "$root" worktree add -q --detach "$work/after" "$2"
for w in before after; do
  cd "$work/$w"
  echo "== $w $(git rev-parse --short HEAD) load $(load)"
  s=$(date +%s); cargo build -q --release -p mocca-xtask; e=$(date +%s)
  echo "$w release xtask: $((e - s)) s"
  cp target/release/xtask "$work/xtask-$w"
  s=$(date +%s); cargo test -q --workspace --no-run 2>/dev/null; e=$(date +%s)
  echo "$w test --no-run: $((e - s)) s  load $(load)"
done

cd "$root"
for round in $(seq "$rounds"); do
  for w in before after; do
    echo "== round $round $w load $(load)"
    "$work/xtask-$w" bench step --width 0.25 --backend fast 2>&1 | grep "img/s"
    "$work/xtask-$w" bench aug --reps 5 2>&1 | grep "^| [ms]"
  done
done
