#!/usr/bin/env bash
# Long runs that CI does not make (each prints what it measured); opt-in.
#
#   scripts/soak.sh big-state   # a 3-node cluster loaded with STATE_MIB (1024) MiB of state in
#                               # 1 MiB values while one follower is down: the leader's snapshots
#                               # (time, size), that follower catching up by snapshot, a restart
#                               # of all three, RSS, and the state read back
#
# Environment: STATE_MIB [1024], SOAK_DIR [/tmp/raft-soak], RAFT_BASE_PORT [7500].
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
cargo build --release -q -p raft-node -p raft-client
exec python3 scripts/soak.py "$@"
