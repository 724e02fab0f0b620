#!/bin/sh
# The raft container's entrypoint: turns this pod's StatefulSet ordinal into
# raft-node's flags, then execs raft-node. POSIX sh using only shell builtins:
# the StatefulSet runs it with the raft-lite image's own /bin/sh (a static
# busybox, docker/Dockerfile).
#
#   pod raft-N  ->  --id N+1 --advertise raft-N.raft.NAMESPACE.svc.DOMAIN:PORT
#   N <  INITIAL_CLUSTER_SIZE  a founding member: --peers names the other founders
#                              (used only on an empty data directory; afterwards
#                              the membership in the data directory wins)
#   N >= INITIAL_CLUSTER_SIZE  a member added later: --join, and it waits for
#                              `raft-client member add N+1 raft-N.raft...:PORT`
#
# Environment (set in statefulset.yaml): POD_NAME and POD_NAMESPACE (downward
# API), SERVICE_NAME (the headless Service, default: the StatefulSet's name),
# CLUSTER_DOMAIN (default cluster.local), PEER_PORT (default 8001),
# INITIAL_CLUSTER_SIZE (default 3: never change it once the cluster exists),
# NODE_BINARY (default /usr/local/bin/raft-node). Arguments are passed on to
# `raft-node run`; every other RAFT_* variable reaches it as usual.
set -eu

fail() {
  echo "entrypoint: $*" >&2
  exit 1
}

name=${POD_NAME:-}
[ -n "$name" ] || fail "POD_NAME is not set: give it from the downward API (fieldRef metadata.name)"
namespace=${POD_NAMESPACE:-}
[ -n "$namespace" ] || fail "POD_NAMESPACE is not set: give it from the downward API (fieldRef metadata.namespace)"
ordinal=${name##*-}
set_name=${name%-*}
case $ordinal in
  '' | *[!0-9]*) fail "the pod name $name does not end in -ORDINAL, as a StatefulSet's pods do" ;;
esac
[ "$set_name" != "$name" ] || fail "the pod name $name does not end in -ORDINAL, as a StatefulSet's pods do"
service=${SERVICE_NAME:-$set_name}
domain=${CLUSTER_DOMAIN:-cluster.local}
port=${PEER_PORT:-8001}
initial=${INITIAL_CLUSTER_SIZE:-3}
case $initial in
  '' | *[!0-9]* | 0) fail "INITIAL_CLUSTER_SIZE must be a positive integer, not '$initial'" ;;
esac

# The address pod ordinal $1 is reached at: its DNS name under the headless Service.
address() {
  echo "$set_name-$1.$service.$namespace.svc.$domain:$port"
}

id=$((ordinal + 1))
set -- run --id "$id" --listen "0.0.0.0:$port" --advertise "$(address "$ordinal")" "$@"
if [ "$ordinal" -lt "$initial" ]; then
  peers=
  i=0
  while [ "$i" -lt "$initial" ]; do
    if [ "$i" -ne "$ordinal" ]; then
      peers="${peers:+$peers,}$((i + 1))=$(address "$i")"
    fi
    i=$((i + 1))
  done
  if [ -n "$peers" ]; then
    set -- "$@" --peers "$peers"
  else
    set -- "$@" --single-node
  fi
else
  set -- "$@" --join
fi

node=${NODE_BINARY:-/usr/local/bin/raft-node}
echo "entrypoint: pod $name is node $id: $node $*" >&2
exec "$node" "$@"
