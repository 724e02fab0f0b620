#!/usr/bin/env bash
# C1 cost in instructions, not seconds: core-bench under callgrind, for two
# builds, as instructions per committed entry inside the benchmark's loop
# (inclusive cost of core-bench's Cluster::run_for, divided by the entries it
# committed). Unlike wall-clock A/B on a VM whose speed drifts by the hour,
# the figure repeats to within about 1%.
#
#   scripts/callgrind-core.sh REV    # A: REV, B: the working tree
#
# Environment (defaults in brackets):
#   BATCH [1 64]        batch sizes, one callgrind run each per build
#   RUNS [2]            runs per build and batch size
#   AB_DIR [/tmp/raft-ab-core]   scratch: A's worktree and target (shared with ab-core.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
REV=${1:?usage: scripts/callgrind-core.sh REV}
BATCH=${BATCH:-1 64}
RUNS=${RUNS:-2}
AB_DIR=${AB_DIR:-/tmp/raft-ab-core}
command -v valgrind >/dev/null || { echo "callgrind-core.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
mkdir -p "$AB_DIR"
if [ ! -d "$AB_DIR/a" ]; then git worktree add -f --detach "$AB_DIR/a" "$REV" >/dev/null; fi
git -C "$AB_DIR/a" checkout -q --detach "$REV"
(cd "$AB_DIR/a" && cargo build --release -q -p raft-tests --bin core-bench --target-dir "$AB_DIR/a-target")
cargo build --release -q -p raft-tests --bin core-bench
declare -A BIN=([A]="$AB_DIR/a-target/release/core-bench" [B]="$here/target/release/core-bench")
echo "| build | batch | instructions per committed entry |"
echo "|---|---|---|"
for b in A B; do
  for batch in $BATCH; do
    for run in $(seq "$RUNS"); do
      out="$AB_DIR/callgrind.$b.$batch.$run"
      json=$(valgrind --tool=callgrind --callgrind-out-file="$out" "${BIN[$b]}" --batch "$batch" \
        --duration 1 --warmup 0 --tick-ms 1000000 --no-step-timing --json 2>/dev/null)
      committed=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['committed'])" "$json")
      callgrind_annotate --inclusive=yes "$out" >"$out.txt" 2>/dev/null
      ir=$(awk '/Cluster::run_for/ {gsub(",", "", $1); print $1; exit}' "$out.txt")
      python3 -c "import sys; print(f'| $b | $batch | {int(sys.argv[1]) / int(sys.argv[2]):,.0f} |')" "$ir" "$committed"
    done
  done
done
