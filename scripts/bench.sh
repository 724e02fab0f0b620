#!/usr/bin/env bash
# Benchmarks of BENCH.md, against etcd on the same machine.
#
#   scripts/bench.sh compare   # W1 C=1,16,64,256 and R1 C=64: Raft Lite vs etcd, back to back,
#                              # RUNS rounds (default 3), medians and ratios in one table
#   scripts/bench.sh failover  # F1: W1 at C=16, SIGKILL the leader; RUNS rounds
#   scripts/bench.sh memory    # M1: RSS of each node after W1 at C=64 for MEM_SECONDS (30), sampled
#                              # every 10 s (MEM_SECONDS=300 for the 5-minute flatness check)
#   scripts/bench.sh core      # C1: raft-core alone, in memory
#   scripts/bench.sh all       # all of the above
#
# Env: SKIP_BUILD (use the binaries in target/release as they are), RUNS (3), DURATION (10, seconds measured per row, after a 2 s warm-up), ROOT (/tmp/raft-bench:
# data directories, logs, raw results), CONNS (1, connections our load generator shares; etcd's
# generator uses its own default of 1 gRPC connection, as etcd's tools/benchmark).
# Needs: cargo, python3; for `compare`, etcd (Debian: apt-get install etcd-server etcd-client
# protobuf-compiler; installed here automatically when running as root).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
RUNS=${RUNS:-3}
DUR=${DURATION:-10}
CONNS=${CONNS:-1}
ROOT=${ROOT:-/tmp/raft-bench}
BIN=$here/target/release
ETCD_BENCH_DIR=$here/../shared/etcd-bench
export CARGO_TARGET_DIR_ETCD=$here/target/etcd-bench
PEERS=(127.0.0.1:7101 127.0.0.1:7102 127.0.0.1:7103)
CLUSTER=$(IFS=,; echo "${PEERS[*]}")
mkdir -p "$ROOT"

build_ours() { [ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p raft-node -p raft-client -p raft-tests --bins; }

ensure_etcd() {
  if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null || ! command -v protoc >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && apt-get install -y -qq etcd-server etcd-client protobuf-compiler >/dev/null
    else
      echo "bench: etcd, etcdctl and protoc are needed: apt-get install etcd-server etcd-client protobuf-compiler" >&2
      exit 1
    fi
  fi
  [ -x "$CARGO_TARGET_DIR_ETCD/release/etcd-bench" ] ||
    cargo build --release -q --manifest-path "$ETCD_BENCH_DIR/Cargo.toml" --target-dir "$CARGO_TARGET_DIR_ETCD"
}

# ---------------------------------------------------------------- our cluster
start_ours() {
  stop_ours
  rm -rf "$ROOT/raft"; mkdir -p "$ROOT/raft"
  for i in 1 2 3; do
    local peers=()
    for j in 1 2 3; do [ "$j" = "$i" ] || peers+=("$j=${PEERS[$((j - 1))]}"); done
    "$BIN/raft-node" run --id "$i" --listen "${PEERS[$((i - 1))]}" --peers "$(IFS=,; echo "${peers[*]}")" \
      --data-dir "$ROOT/raft/$i" "$@" >"$ROOT/raft/node-$i.log" 2>&1 &
    echo "$!" >>"$ROOT/raft/pids"
  done
  for _ in $(seq 100); do
    "$BIN/raft-client" --cluster "$CLUSTER" status 2>/dev/null | grep -q leader && return 0
    sleep 0.1
  done
  echo "bench: our cluster elected no leader; see $ROOT/raft/node-*.log" >&2
  exit 1
}

stop_ours() {
  [ -f "$ROOT/raft/pids" ] || return 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$ROOT/raft/pids"
  while read -r pid; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done <"$ROOT/raft/pids"
  rm -f "$ROOT/raft/pids"
}

# Adds system, round and workload to the JSON object on stdin.
tag() { python3 -c "import json,sys; r=json.load(sys.stdin); r.update(system='$1', round=$2, workload='$3'); print(json.dumps(r))"; }

ours_bench() {   # op clients
  "$BIN/raft-client" --cluster "$CLUSTER" bench --op "$1" --clients "$2" --conns "$CONNS" \
    --duration "${DUR}s" --warmup 2s --value-size 100 --keys 10000 --json
}

# ---------------------------------------------------------------- etcd
etcd_run() { ROOT=$ROOT/etcd DURATION=$DUR CARGO_TARGET_DIR=$CARGO_TARGET_DIR_ETCD "$ETCD_BENCH_DIR/run.sh" "$@"; }

# ---------------------------------------------------------------- workloads
# Lets the disk settle before a measurement: the build, an apt install or the
# previous system's run leave dirty pages whose writeback would otherwise
# land on the next system's fsyncs (seen: a first round at a third of the
# throughput of the next, right after building).
settle() { sync; sleep 2; }

compare_ours() {   # round
  echo "== round $1/$RUNS: Raft Lite" >&2
  settle
  start_ours
  for c in 1 16 64 256; do
    ours_bench put "$c" | tag raft-lite "$1" W1 | tee -a "$raw" >&2
  done
  ours_bench get 64 | tag raft-lite "$1" R1 | tee -a "$raw" >&2
  stop_ours
}

compare_etcd() {   # round
  echo "== round $1/$RUNS: etcd" >&2
  etcd_run stop >/dev/null 2>&1 || true
  rm -rf "$ROOT/etcd"
  settle
  etcd_run start >/dev/null
  etcd_run table | python3 -c "
import json, sys
for line in sys.stdin:
    if line.startswith('#') or '=' not in line: continue
    kv = dict(p.split('=', 1) for p in line.split() if '=' in p)
    print(json.dumps(dict(system='etcd', round=$1, workload=kv['label'], op=kv['op'], clients=int(kv['clients']),
        ops_per_s=float(kv['ops_per_s']), p50_us=int(float(kv['p50_us'])), p90_us=int(float(kv['p90_us'])),
        p99_us=int(float(kv['p99_us'])), max_us=int(float(kv['max_us'])), errors=kv.get('errors', '0'))))
" | tee -a "$raw" >&2
  etcd_run stop >/dev/null
}

compare() {
  build_ours
  ensure_etcd
  raw=$ROOT/compare.jsonl
  : >"$raw"
  trap 'stop_ours; etcd_run stop >/dev/null 2>&1 || true' EXIT
  for run in $(seq "$RUNS"); do
    # Odd rounds measure Raft Lite first, even rounds etcd first, so neither
    # system always runs on a machine just warmed (or just dirtied) by the other.
    if [ $((run % 2)) = 1 ]; then
      compare_ours "$run"; compare_etcd "$run"
    else
      compare_etcd "$run"; compare_ours "$run"
    fi
  done
  trap - EXIT
  python3 - "$raw" "$RUNS" "$DUR" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs, dur = sys.argv[2], sys.argv[3]
def med(system, workload, clients, field):
    v = [r[field] for r in rows if r['system'] == system and r['workload'] == workload and r['clients'] == clients]
    return statistics.median(v) if v else float('nan')
print(f"Medians of {runs} back-to-back rounds, {dur} s measured per row after a 2 s warm-up.\n")
print("| workload | C | Raft Lite ops/s | etcd ops/s | ratio | Raft Lite p50 / p99 µs | etcd p50 / p99 µs |")
print("|---|---|---|---|---|---|---|")
for w, c in [('W1', 1), ('W1', 16), ('W1', 64), ('W1', 256), ('R1', 64)]:
    o, e = med('raft-lite', w, c, 'ops_per_s'), med('etcd', w, c, 'ops_per_s')
    print(f"| {w} {'put' if w == 'W1' else 'get'} | {c} | {o:,.0f} | {e:,.0f} | {o / e:.1f}x | "
          f"{med('raft-lite', w, c, 'p50_us'):,.0f} / {med('raft-lite', w, c, 'p99_us'):,.0f} | "
          f"{med('etcd', w, c, 'p50_us'):,.0f} / {med('etcd', w, c, 'p99_us'):,.0f} |")
# Each round on its own: throughput ratio, and for C=1 the p50 ratio (the target is latency there).
def one(system, workload, clients, rnd, field):
    v = [r[field] for r in rows if r['system'] == system and r['workload'] == workload
         and r['clients'] == clients and r['round'] == rnd]
    return v[0] if v else float('nan')
rounds = sorted({r['round'] for r in rows})
print("\nEach round (Raft Lite / etcd, ratio):\n")
print("| row | " + " | ".join(f"round {k}" for k in rounds) + " |")
print("|---|" + "---|" * len(rounds))
for w, c in [('W1', 1), ('W1', 16), ('W1', 64), ('W1', 256), ('R1', 64)]:
    field = 'p50_us' if c == 1 else 'ops_per_s'
    cells = []
    for k in rounds:
        o, e = one('raft-lite', w, c, k, field), one('etcd', w, c, k, field)
        cells.append(f"{o:,.0f} / {e:,.0f} µs ({o / e:.2f})" if c == 1 else f"{o / 1000:,.1f}k / {e / 1000:,.2f}k ({o / e:.1f}x)")
    print(f"| {w} C={c} {'p50' if c == 1 else 'ops/s'} | " + " | ".join(cells) + " |")
PY
  echo "raw results: $raw" >&2
}

failover() {
  build_ours
  local raw=$ROOT/failover.jsonl
  : >"$raw"
  trap stop_ours EXIT
  for run in $(seq "$RUNS"); do
    start_ours
    sleep 1
    "$BIN/raft-client" --cluster "$CLUSTER" failover --clients 16 --before 3s --after 3s --json | tee -a "$raw"
    stop_ours
  done
  trap - EXIT
  python3 - "$raw" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ms = [r['failover_ms'] for r in rows]
print(f"F1 over {len(rows)} runs: failover median {statistics.median(ms):.0f} ms (min {min(ms):.0f}, max {max(ms):.0f}); "
      f"acknowledged writes {sum(r['acknowledged'] for r in rows)}, missing {sum(r['missing'] for r in rows)}")
PY
}

memory() {
  build_ours
  local secs=${MEM_SECONDS:-30}
  trap stop_ours EXIT
  start_ours
  "$BIN/raft-client" --cluster "$CLUSTER" bench --op put --clients 64 --conns "$CONNS" --duration "${secs}s" \
    --warmup 0s --json >"$ROOT/memory-load.json" &
  local load=$!
  for t in $(seq 10 10 "$secs"); do
    sleep 10
    printf "after %3d s: RSS" "$t"
    while read -r pid; do printf " %6d KiB" "$(ps -o rss= -p "$pid")"; done <"$ROOT/raft/pids"
    echo
  done
  wait "$load"
  echo "load: $(cat "$ROOT/memory-load.json")"
  du -sh "$ROOT"/raft/[123] | tr '\n' ' '; echo
  stop_ours
  trap - EXIT
}

core() {
  build_ours
  "$BIN/core-bench"
}

case "${1:-compare}" in
  compare) compare ;;
  failover) failover ;;
  memory) memory ;;
  core) core ;;
  all) compare; failover; memory; core ;;
  *) echo "usage: $0 [compare|failover|memory|core|all]" >&2; exit 2 ;;
esac
