#!/usr/bin/env bash
# A/B speed of raft-core alone (C1, core-bench) for two builds, in one run:
# build A (an older revision) and build B (the working tree) alternate,
# A, B, A, B, ..., so that the machine's drift lands on both; prints each
# round and the medians of committed entries/s per batch size.
#
#   scripts/ab-core.sh REV       # REV: a git revision for A, e.g. HEAD~3
#
# Environment (defaults in brackets):
#   ROUNDS [6]          rounds per build
#   DURATION [3]        seconds measured per batch size and round
#   BATCH [1,64]        core-bench --batch
#   AB_DIR [/tmp/raft-ab-core]   scratch: A's worktree and target, raw results
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
REV=${1:?usage: scripts/ab-core.sh REV}
ROUNDS=${ROUNDS:-6}
DUR=${DURATION:-3}
BATCH=${BATCH:-1,64}
AB_DIR=${AB_DIR:-/tmp/raft-ab-core}
mkdir -p "$AB_DIR"
if [ ! -d "$AB_DIR/a" ]; then git worktree add -f --detach "$AB_DIR/a" "$REV" >/dev/null; fi
git -C "$AB_DIR/a" checkout -q --detach "$REV"
(cd "$AB_DIR/a" && cargo build --release -q -p raft-tests --bin core-bench --target-dir "$AB_DIR/a-target")
cargo build --release -q -p raft-tests --bin core-bench
declare -A BIN=([A]="$AB_DIR/a-target/release/core-bench" [B]="$here/target/release/core-bench")
results=$AB_DIR/results.jsonl
: >"$results"
for r in $(seq "$ROUNDS"); do
  # Odd rounds run A first, even rounds B first: whichever runs second in a
  # pair does not always get the warmer (or the throttled) machine.
  order="A B"; [ $((r % 2)) = 0 ] && order="B A"
  for b in $order; do
    "${BIN[$b]}" --batch "$BATCH" --duration "$DUR" --no-step-timing --json |
      python3 -c "
import json, sys
for line in sys.stdin:
    row = json.loads(line); row.update(build='$b', round=$r); print(json.dumps(row))" |
      tee -a "$results" |
      python3 -c "
import json, sys
for line in sys.stdin:
    r = json.loads(line); print(f\"round {r['round']} {r['build']} batch {r['batch']}: {r['entries_per_sec']:,.0f} entries/s\")"
  done
done
python3 - "$results" "$REV" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\nC1 core-bench: A = {sys.argv[2]}, B = working tree; medians of {max(r['round'] for r in rows)} rounds")
print("| batch | A entries/s | B entries/s | B/A of medians | median of per-round B/A |")
print("|---|---|---|---|---|")
for batch in sorted({r['batch'] for r in rows}):
    of = lambda b: {r['round']: r['entries_per_sec'] for r in rows if r['batch'] == batch and r['build'] == b}
    a, b = of('A'), of('B')
    ratio = statistics.median(b[k] / a[k] for k in a)
    ma, mb = statistics.median(a.values()), statistics.median(b.values())
    print(f"| {batch} | {ma:,.0f} | {mb:,.0f} | {mb / ma:.3f} | {ratio:.3f} |")
PY
