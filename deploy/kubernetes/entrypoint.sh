#!/bin/sh
# The raft container's entrypoint: turns this pod's StatefulSet ordinal into
# raft-node's flags, then execs raft-node. POSIX sh (shell builtins, sleep and
# raft-client): the StatefulSet runs it with the raft-lite image's own /bin/sh
# (a static busybox, docker/Dockerfile).
#
#   pod raft-N  ->  --id N+1 --advertise raft-N.raft.NAMESPACE.svc.DOMAIN:PORT
#   N >= INITIAL_CLUSTER_SIZE  a member added later: --join, and it waits for
#                              `raft-client member add N+1 raft-N.raft...:PORT`
#   N <  INITIAL_CLUSTER_SIZE  a founding member. With data in its data directory:
#                              --peers naming the other founders (the membership
#                              stored there wins over them). With an empty data
#                              directory it first asks the running cluster
#                              (raft-client member list: the other founders and
#                              the client Service) whether it is a member:
#     the leader answers, and N+1 is no member (it was removed)
#         --join: it founds nothing and waits for `member add` (how a founder
#         that lost its volume comes back: README.md, "Kubernetes")
#     the leader answers, and lists N+1
#         INITIAL_CLUSTER_STATE=new: --peers (a founder that never ran before
#           catches up; one that held data is refused by raft-node: its peers
#           know it held data)
#         INITIAL_CLUSTER_STATE=existing: refused here, saying what to do
#     no leader answers
#         new: --peers (the cluster is being founded)
#         existing: asks again for JOIN_WAIT_SECONDS, then refused here (exit 1;
#           the kubelet starts the pod again): an empty founder never founds
#
# Environment (set in statefulset.yaml): POD_NAME and POD_NAMESPACE (downward
# API), SERVICE_NAME (the headless Service, default: the StatefulSet's name),
# CLIENT_SERVICE (the clients' Service, default: NAME-api), CLUSTER_DOMAIN
# (default cluster.local), PEER_PORT (default 8001), INITIAL_CLUSTER_SIZE
# (default 3: never change it once the cluster exists), INITIAL_CLUSTER_STATE
# (new or existing, default new: set it to existing once the cluster has
# formed), JOIN_WAIT_SECONDS (default 60), RAFT_DATA_DIR (default /data),
# RAFT_CLUSTER_ID (read by raft-node and raft-client alike), NODE_BINARY and
# CLIENT_BINARY (default /usr/local/bin/raft-node and raft-client). Arguments
# are passed on to `raft-node run`; every other RAFT_* variable reaches it as
# usual.
set -eu

fail() {
  echo "entrypoint: $*" >&2
  exit 1
}

say() {
  echo "entrypoint: $*" >&2
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
client_service=${CLIENT_SERVICE:-$set_name-api}
domain=${CLUSTER_DOMAIN:-cluster.local}
port=${PEER_PORT:-8001}
initial=${INITIAL_CLUSTER_SIZE:-3}
case $initial in
  '' | *[!0-9]* | 0) fail "INITIAL_CLUSTER_SIZE must be a positive integer, not '$initial'" ;;
esac
state=${INITIAL_CLUSTER_STATE:-new}
case $state in
  new | existing) ;;
  *) fail "INITIAL_CLUSTER_STATE must be new (while the cluster is founded) or existing (once it has formed), not '$state'" ;;
esac
wait_seconds=${JOIN_WAIT_SECONDS:-60}
case $wait_seconds in
  '' | *[!0-9]*) fail "JOIN_WAIT_SECONDS must be a number of seconds, not '$wait_seconds'" ;;
esac
data_dir=${RAFT_DATA_DIR:-/data}
client=${CLIENT_BINARY:-/usr/local/bin/raft-client}

# The address pod ordinal $1 is reached at: its DNS name under the headless Service.
address() {
  echo "$set_name-$1.$service.$namespace.svc.$domain:$port"
}

# True if the data directory holds nothing of raft-node's (no identity, no
# WAL, no snapshot): a new volume, or one that lost its contents.
data_dir_is_new() {
  for f in "$data_dir"/identity.json "$data_dir"/wal-*.log "$data_dir"/snap-*; do
    [ ! -e "$f" ] || return 1
  done
  return 0
}

# Asks the running cluster, once, whether node $id is a member: sets `answer`
# to member, not-member or none (no leader answered within 3 s).
ask_cluster() {
  others=
  i=0
  while [ "$i" -lt "$initial" ]; do
    [ "$i" -eq "$ordinal" ] || others="${others:+$others,}$(address "$i")"
    i=$((i + 1))
  done
  others="${others:+$others,}$client_service.$namespace.svc.$domain:$port"
  if members=$("$client" --cluster "$others" --timeout-ms 3000 member list 2>&1); then
    # A table: a header line, then one line per member, its id first.
    case "
$members" in
      *"
$id "*) answer=member ;;
      *) answer=not-member ;;
    esac
  else
    answer=none
    last_problem=$members
  fi
}

# A founder other than this one, to run raft-client in (the advice given).
other=0
[ "$ordinal" -ne 0 ] || other=1

id=$((ordinal + 1))
set -- run --id "$id" --listen "0.0.0.0:$port" --advertise "$(address "$ordinal")" "$@"
mode=peers
if [ "$ordinal" -ge "$initial" ]; then
  mode=join
elif data_dir_is_new; then
  last_problem=
  ask_cluster
  if [ "$answer" = none ] && [ "$state" = existing ]; then
    waited=0
    while [ "$answer" = none ] && [ "$waited" -lt "$wait_seconds" ]; do
      sleep 2
      waited=$((waited + 5)) # 3 s for the question, 2 s between
      ask_cluster
    done
  fi
  case $answer/$state in
    not-member/*)
      say "node $id has an empty data directory ($data_dir) and the running cluster has no node $id" \
        "(its leader's member list): joining it as a new member; add it with" \
        "\`raft-client member add $id $(address "$ordinal")\`"
      mode=join
      ;;
    member/new)
      say "node $id has an empty data directory ($data_dir) and the running cluster lists it as a member:" \
        "starting with --peers; raft-node refuses if the cluster knows that node $id held data (it lost" \
        "its volume), and then the way back is \`raft-client member remove $id\` (this pod then joins" \
        "afresh) and \`raft-client member add $id $(address "$ordinal")\`: README.md, \"Kubernetes\""
      ;;
    member/existing)
      fail "node $id is a member of the running cluster (its leader lists it) but its data directory" \
        "$data_dir is empty: it lost its data, and must not vote as its old self. Remove it, and this pod" \
        "joins afresh when it next starts: kubectl exec $set_name-$other -- raft-client --cluster" \
        "127.0.0.1:$port member remove $id; kubectl delete pod $name; then kubectl exec $set_name-$other --" \
        "raft-client --cluster 127.0.0.1:$port member add $id $(address "$ordinal") (or restore the volume)"
      ;;
    none/existing)
      fail "node $id has an empty data directory ($data_dir), INITIAL_CLUSTER_STATE is existing, and no" \
        "leader answered within ${wait_seconds}s (${last_problem:-no answer}): an empty founder never" \
        "founds a cluster once it exists; start the other members (or, founding a new cluster on new" \
        "volumes, set INITIAL_CLUSTER_STATE=new)"
      ;;
    none/new) ;;
  esac
fi
case $mode in
  join) set -- "$@" --join ;;
  peers)
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
    ;;
esac

node=${NODE_BINARY:-/usr/local/bin/raft-node}
echo "entrypoint: pod $name is node $id: $node $*" >&2
exec "$node" "$@"
