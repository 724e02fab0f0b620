#!/usr/bin/env bash
# A/B speed of two builds on this machine, in one run: W1 (puts) at each C in
# CLIENTS against a fresh 3-node cluster of build A (an older revision) and
# build B (the working tree), alternating round by round (A B, then B A, so
# that neither always runs first) so that the machine's drift lands on both;
# prints each round, the medians and the median of per-round ratios, of
# throughput and of the nodes' CPU time per write (steadier than throughput
# on a machine whose disk latency drifts: it shows what a change costs).
#
#   scripts/ab.sh REV            # REV: a git revision for A, e.g. HEAD~3
#
# Environment (defaults in brackets):
#   ROUNDS [6]          rounds per build and C
#   DURATION [5]        seconds measured per round, after a 1 s warm-up
#   CLIENTS [64 1]      the C values
#   AB_DIR [/tmp/raft-ab]   scratch: A's worktree and target, data directories, raw results
#   AB_DATA [AB_DIR/data]  the nodes' data directories; on a tmpfs
#                       (/dev/shm/raft-ab) fsync costs nothing, so the disk's
#                       drift leaves the rounds and what remains is the code's cost
#   RAFT_BASE_PORT [7300]   nodes listen on 127.0.0.1:RAFT_BASE_PORT+1..+3
#   SCRAPE [0]          1: a third arm, S, is build B with every node's
#                       GET /metrics scraped once a second during the round
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
REV=${1:?usage: scripts/ab.sh REV}
ROUNDS=${ROUNDS:-6}
DUR=${DURATION:-5}
CLIENTS=${CLIENTS:-64 1}
AB_DIR=${AB_DIR:-/tmp/raft-ab}
DATA=${AB_DATA:-$AB_DIR/data}
BASE=${RAFT_BASE_PORT:-7300}
mkdir -p "$AB_DIR"

# Build A in a worktree of its own, B here.
if [ ! -d "$AB_DIR/a" ]; then git worktree add -f --detach "$AB_DIR/a" "$REV" >/dev/null; fi
git -C "$AB_DIR/a" checkout -q --detach "$REV"
(cd "$AB_DIR/a" && cargo build --release -q -p raft-node -p raft-client --target-dir "$AB_DIR/a-target")
cargo build --release -q -p raft-node -p raft-client
declare -A BIN=([A]="$AB_DIR/a-target/release" [B]="$here/target/release" [S]="$here/target/release")
BUILDS="A B"
if [ "${SCRAPE:-0}" = 1 ]; then BUILDS="A B S"; command -v curl >/dev/null || { echo "ab: SCRAPE=1 needs curl" >&2; exit 1; }; fi

peers=() ; for i in 1 2 3; do peers+=("127.0.0.1:$((BASE + i))"); done
cluster=$(IFS=,; echo "${peers[*]}")
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
scraper() {   # every node's /metrics once a second, until killed; counts failed scrapes
  while true; do
    for a in "${peers[@]}"; do curl -sf --max-time 1 "http://$a/metrics" >/dev/null || echo "scrape of $a failed" >&2; done
    sleep 1
  done
}
node_cpu_ticks() {   # user + system clock ticks of the running nodes, summed
  local t=0 p f
  for p in "${pids[@]}"; do
    [ -r "/proc/$p/stat" ] || continue
    # (Fields after the command name, which is in parentheses.)
    f=$(sed 's/^.*) //' "/proc/$p/stat")
    set -- $f
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
trap stop EXIT
start() {   # build
  stop
  rm -rf "$DATA"; mkdir -p "$DATA"
  for i in 1 2 3; do
    local p=()
    for j in 1 2 3; do [ "$j" = "$i" ] || p+=("$j=${peers[$((j - 1))]}"); done
    "${BIN[$1]}/raft-node" run --id "$i" --listen "${peers[$((i - 1))]}" --peers "$(IFS=,; echo "${p[*]}")" \
      --data-dir "$DATA/$i" >"$DATA/node-$i.log" 2>&1 &
    pids+=("$!")
  done
  for _ in $(seq 100); do
    "${BIN[$1]}/raft-client" --cluster "$cluster" status 2>/dev/null | grep -q leader && return 0
    sleep 0.1
  done
  echo "ab: build $1 elected no leader; see $DATA/node-*.log" >&2
  exit 1
}

results=$AB_DIR/results.jsonl
: >"$results"
: >"$AB_DIR/scrape-errors.log"
for c in $CLIENTS; do
  for r in $(seq "$ROUNDS"); do
    order=$BUILDS
    if [ $((r % 2)) = 0 ]; then order=$(echo "$BUILDS" | tr ' ' '\n' | tac | tr '\n' ' '); fi
    for b in $order; do
      start "$b"
      sync; sleep 1
      if [ "$b" = S ]; then scraper 2>>"$AB_DIR/scrape-errors.log" & pids+=("$!"); fi
      cpu0=$(node_cpu_ticks)
      "${BIN[$b]}/raft-client" --cluster "$cluster" bench --op put --clients "$c" --duration "${DUR}s" \
        --warmup 1s --value-size 100 --keys 10000 --json >"$AB_DIR/round.json"
      cpu1=$(node_cpu_ticks)
      # The nodes' CPU (user + system, all three) per write: the warm-up's
      # writes are not counted by the bench, so they are estimated at the
      # measured rate.
      python3 -c "
import json, os, sys
r = json.load(open('$AB_DIR/round.json'))
hz = os.sysconf('SC_CLK_TCK')
r.update(build='$b', clients=$c, round=$r, node_cpu_s=($cpu1 - $cpu0) / hz)
r['cpu_us_per_op'] = r['node_cpu_s'] * 1e6 / max(1.0, r['ops_per_s'] * ($DUR + 1))
print(json.dumps(r))" |
        tee -a "$results" | python3 -c "import json,sys; r=json.load(sys.stdin); print(f\"C={r['clients']} round {r['round']} {r['build']}: {r['ops_per_s']:,.0f} ops/s, {r['cpu_us_per_op']:.1f} CPU µs/write\")"
    done
  done
done
stop
if [ "${SCRAPE:-0}" = 1 ]; then echo "ab: $(wc -l <"$AB_DIR/scrape-errors.log") scrapes failed during the S rounds"; fi
python3 - "$results" "$REV" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
scraped = any(r['build'] == 'S' for r in rows)
print(f"\nA = {sys.argv[2]}, B = working tree{', S = B scraped every second' if scraped else ''}; medians of {max(r['round'] for r in rows)} rounds")
builds = ['A', 'B', 'S'] if scraped else ['A', 'B']
cols = [f"{b} ops/s" for b in builds] + [f"{b}/A" for b in builds[1:]] + [f"{b} p99 µs" for b in builds] \
    + [f"{b} CPU µs/write" for b in builds] + [f"{b}/A CPU" for b in builds[1:]]
print("| C | " + " | ".join(cols) + " |")
print("|---" * (len(cols) + 1) + "|")
for c in sorted({r['clients'] for r in rows}, reverse=True):
    med = lambda b, k: statistics.median(r[k] for r in rows if r['clients'] == c and r['build'] == b)
    ops = {b: med(b, 'ops_per_s') for b in builds}
    cpu = {b: med(b, 'cpu_us_per_op') for b in builds}
    cells = [f"{ops[b]:,.0f}" for b in builds] + [f"{ops[b] / ops['A']:.3f}" for b in builds[1:]] \
        + [f"{med(b, 'p99_us'):,.0f}" for b in builds] + [f"{cpu[b]:.1f}" for b in builds] \
        + [f"{cpu[b] / cpu['A']:.3f}" for b in builds[1:]]
    print(f"| {c} | " + " | ".join(cells) + " |")
# A round's arms run back to back, so the ratio within a round cancels most
# of the drift between rounds; the median of those ratios is the steadier figure.
print("\nmedian of per-round ratios (each round's arms ran back to back)")
print("| C | " + " | ".join(f"{b}/A ops/s | {b}/A CPU" for b in builds[1:]) + " |")
print("|---" * (2 * len(builds) - 1) + "|")
for c in sorted({r['clients'] for r in rows}, reverse=True):
    by = {(r['build'], r['round']): r for r in rows if r['clients'] == c}
    rounds = sorted({r for (_, r) in by})
    cells = []
    for b in builds[1:]:
        cells.append(f"{statistics.median(by[(b, r)]['ops_per_s'] / by[('A', r)]['ops_per_s'] for r in rounds):.3f}")
        cells.append(f"{statistics.median(by[(b, r)]['cpu_us_per_op'] / by[('A', r)]['cpu_us_per_op'] for r in rounds):.3f}")
    print(f"| {c} | " + " | ".join(cells) + " |")
EOF
