#!/usr/bin/env bash
# Long runs that CI does not make (each prints what it measured).
#
#   scripts/soak.sh big-state   # a 3-node cluster loaded with STATE_MIB MiB of state in 1 MiB values
#                               # while one follower is down; the snapshots it takes (time, size),
#                               # that follower catching up by snapshot, a restart of all three,
#                               # and every node's RSS
#
# Environment (defaults in brackets):
#   STATE_MIB [1024]          MiB of state (keys of 1 MiB)
#   SOAK_DIR [/tmp/raft-soak] data directories and logs (wiped first)
#   RAFT_BASE_PORT [7500]     nodes listen on 127.0.0.1:RAFT_BASE_PORT+1..+3
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
SOAK_DIR=${SOAK_DIR:-/tmp/raft-soak}
BASE=${RAFT_BASE_PORT:-7500}
STATE_MIB=${STATE_MIB:-1024}
BIN=$here/target/release
peers=(); for i in 1 2 3; do peers+=("127.0.0.1:$((BASE + i))"); done
cluster=$(IFS=,; echo "${peers[*]}")
declare -A pid

start() {   # id
  local i=$1 p=()
  for j in 1 2 3; do [ "$j" = "$i" ] || p+=("$j=${peers[$((j - 1))]}"); done
  "$BIN/raft-node" run --id "$i" --listen "${peers[$((i - 1))]}" --peers "$(IFS=,; echo "${p[*]}")" \
    --data-dir "$SOAK_DIR/$i" >>"$SOAK_DIR/node-$i.log" 2>&1 &
  pid[$i]=$!
}
stop() { kill "${pid[$1]}" 2>/dev/null || true; wait "${pid[$1]}" 2>/dev/null || true; }
cleanup() { for i in "${!pid[@]}"; do stop "$i"; done; }
trap cleanup EXIT
status_json() { "$BIN/raft-client" --cluster "$cluster" --timeout-ms 2000 status --json 2>/dev/null || true; }
field() {   # id field: a field of node id's status
  status_json | python3 -c "
import json, sys
for s in json.load(sys.stdin):
    if s.get('id') == $1 and s.get('$2') is not None: print(s['$2'])" 2>/dev/null || true
}
leader_id() {
  status_json | python3 -c "
import json, sys
for s in json.load(sys.stdin):
    if s.get('role') == 'leader': print(s['id']); break" 2>/dev/null || true
}
wait_for() {   # seconds description command...
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "soak: timed out waiting for $what" >&2; exit 1; }
    sleep 0.5
  done
}
rss_mib() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$1/status" 2>/dev/null || echo 0; }
now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.1f}')"; }

big_state() {
  cargo build --release -q -p raft-node -p raft-client
  rm -rf "$SOAK_DIR"; mkdir -p "$SOAK_DIR"
  for i in 1 2 3; do start "$i"; done
  wait_for 30 "a leader" test -n "$(leader_id)"
  local leader follower t0
  leader=$(leader_id)
  follower=$(( leader % 3 + 1 ))
  echo "soak: leader $leader; stopping follower $follower"
  stop "$follower"
  t0=$(now)
  "$BIN/raft-client" --cluster "$cluster" --timeout-ms 30000 fill --keys "$STATE_MIB" --value-size 1048576 --clients 8
  echo "soak: $STATE_MIB MiB written in $(since "$t0") s with follower $follower down"
  leader=$(leader_id)
  wait_for 120 "the leader's snapshot" test "$(field "$leader" snapshot_index)" -gt 0
  grep -h "took snapshot\|saved snapshot" "$SOAK_DIR/node-$leader.log" | sed 's/^/soak: leader: /' | tail -8
  echo "soak: RSS MiB: $(for i in 1 2 3; do [ "$i" = "$follower" ] || echo -n "node $i $(rss_mib "${pid[$i]}")  "; done)"
  t0=$(now)
  start "$follower"
  local commit
  commit=$(field "$leader" commit)
  wait_for 600 "follower $follower to catch up" \
    sh -c "[ \"\$(\"$BIN/raft-client\" --cluster \"${peers[$((follower - 1))]}\" --timeout-ms 2000 status --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[0].get(\"applied\", 0))' 2>/dev/null || echo 0)\" -ge $commit ]"
  echo "soak: follower $follower caught up to $commit in $(since "$t0") s"
  grep -h "installed snapshot" "$SOAK_DIR/node-$follower.log" | sed 's/^/soak: follower: /' | tail -2
  echo "soak: RSS MiB: $(for i in 1 2 3; do echo -n "node $i $(rss_mib "${pid[$i]}")  "; done)"
  for i in 1 2 3; do stop "$i"; done
  du -sh "$SOAK_DIR"/[123] | sed 's/^/soak: data: /'
  t0=$(now)
  for i in 1 2 3; do start "$i"; done
  wait_for 300 "a leader after the restart" test -n "$(leader_id)"
  echo "soak: all three restarted and elected a leader in $(since "$t0") s"
  for k in 0 $(( STATE_MIB / 2 )) $(( STATE_MIB - 1 )); do
    local n
    n=$("$BIN/raft-client" --cluster "$cluster" --timeout-ms 10000 get "fill$k" | wc -c)
    [ "$n" -ge 1048576 ] || { echo "soak: fill$k read back $n bytes" >&2; exit 1; }
  done
  echo "soak: fill0, fill$(( STATE_MIB / 2 )), fill$(( STATE_MIB - 1 )) read back whole; PASS"
}

case "${1:-}" in
  big-state) big_state ;;
  *) echo "usage: scripts/soak.sh big-state" >&2; exit 2 ;;
esac
