#!/usr/bin/env bash
# A founding pod that lost its volume comes back, as README.md ("Kubernetes")
# tells the operator, run in docker the way the StatefulSet runs the pods (no
# cluster runs here): the raft-lite:dev image, deploy/kubernetes/entrypoint.sh
# run by the image's /bin/sh as UID 65532 on a read-only root, each container
# named on a private network by its pod's DNS name
# (raft-N.raft.default.svc.cluster.local, and raft-api.default.svc.cluster.local
# for all), its own data directory as its volume.
#   1. raft-0..2 found the cluster (INITIAL_CLUSTER_STATE=new) and take writes;
#   2. raft-0 is killed and comes back on an empty volume: raft-node refuses
#      (`node 1 was already a member ... has lost its data`), and with
#      INITIAL_CLUSTER_STATE=existing the entrypoint refuses before it;
#   3. `raft-client member remove 1`; raft-0 comes back on its empty volume and
#      the entrypoint starts it with --join; `raft-client member add 1
#      raft-0.raft.default.svc.cluster.local:8001` makes it a voter again, with
#      every write;
#   4. raft-0 restarted (its volume holds data now) follows as before;
#   5. the whole cluster stops, raft-0 loses its volume again and starts first,
#      with INITIAL_CLUSTER_STATE=existing: it waits for a leader rather than
#      found anything, and once raft-1 and raft-2 are up it refuses.
#   scripts/check-kubernetes-rejoin.sh        # needs docker and raft-lite:dev (scripts/docker-image.sh)
# About 20 s. Leaves nothing behind (containers and network k8srejoin-*).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${IMAGE:-raft-lite:dev}
prefix=k8srejoin
net=$prefix-net
domain=svc.cluster.local
die() {
  echo "check-kubernetes-rejoin: $*" >&2
  exit 1
}
docker info >/dev/null 2>&1 || die "no docker engine answers (docker info)"
docker image inspect "$image" >/dev/null 2>&1 || die "no image $image: build it with scripts/docker-image.sh"

remove_all() {
  for n in 0 1 2; do docker rm -f "$prefix-raft-$n" >/dev/null 2>&1 || true; done
  docker network rm "$net" >/dev/null 2>&1 || true
}
remove_all # (what an interrupted run left)
work=$(mktemp -d)
trap 'remove_all; rm -rf "$work"' EXIT
docker network create "$net" >/dev/null
for n in 0 1 2; do mkdir -p "$work/data-$n"; done
chown -R 65532:65532 "$work"

# pod N [docker run options...]: starts pod raft-N as the StatefulSet would.
pod() {
  local n=$1
  shift
  docker rm -f "$prefix-raft-$n" >/dev/null 2>&1 || true
  docker run -d --name "$prefix-raft-$n" --hostname "raft-$n" --network "$net" \
    --network-alias "raft-$n.raft.default.$domain" --network-alias "raft-api.default.$domain" \
    --read-only --user 65532:65532 --tmpfs /tmp \
    -v "$work/data-$n:/data" -v "$PWD/deploy/kubernetes/entrypoint.sh:/etc/raft-lite/entrypoint.sh:ro" \
    -e POD_NAME="raft-$n" -e POD_NAMESPACE=default -e SERVICE_NAME=raft -e PEER_PORT=8001 \
    -e INITIAL_CLUSTER_SIZE=3 -e INITIAL_CLUSTER_STATE=new -e CLIENT_SERVICE=raft-api \
    -e RAFT_DATA_DIR=/data -e RAFT_CLUSTER_ID=raft-lite -e RUST_LOG=info "$@" \
    --entrypoint /bin/sh "$image" /etc/raft-lite/entrypoint.sh >/dev/null
}
# client N ARGS...: raft-client in pod raft-N, as `kubectl exec raft-N -- raft-client ...`.
client() {
  local n=$1
  shift
  docker exec "$prefix-raft-$n" raft-client --cluster 127.0.0.1:8001 "$@"
}
logs() { docker logs "$prefix-raft-$1" 2>&1; }
# exits N SECONDS: waits for pod raft-N's container to stop; prints its exit code.
exits() {
  local code
  code=$(timeout "$2" docker wait "$prefix-raft-$1") || die "raft-$1 still runs after $2 s: $(logs "$1" | tail -n 5)"
  echo "$code"
}
# expect_exit N CODE TEXT: raft-N stops with CODE, having said TEXT.
expect_exit() {
  local code
  code=$(exits "$1" 30)
  logs "$1" | grep -F "$3" | sed 's/^/    /'
  [ "$code" = "$2" ] || die "raft-$1 exited $code, not $2: $(logs "$1" | tail -n 5)"
  logs "$1" | grep -qF "$3" || die "raft-$1 did not say '$3': $(logs "$1" | tail -n 5)"
}
wipe() { find "$work/data-$1" -mindepth 1 -delete; }
address0=raft-0.raft.default.$domain:8001

echo "== 1. raft-0..2 found the cluster"
for n in 0 1 2; do pod "$n"; done
for _ in $(seq 60); do client 1 set k0 v0 >/dev/null 2>&1 && break; sleep 0.5; done
for k in $(seq 1 10); do client 1 set "k$k" "v$k" >/dev/null; done
client 1 member list | sed 's/^/    /'

echo "== 2. raft-0 comes back on an empty volume: refused"
docker rm -f "$prefix-raft-0" >/dev/null
wipe 0
pod 0
expect_exit 0 1 "has lost its data"
wipe 0
pod 0 -e INITIAL_CLUSTER_STATE=existing
expect_exit 0 1 "must not vote as its old self"

echo "== 3. member remove 1; raft-0 joins on its empty volume; member add 1"
client 1 member remove 1 | sed 's/^/    /'
wipe 0
pod 0
for _ in $(seq 40); do logs 0 | grep -q "waiting to be added" && break; sleep 0.25; done
logs 0 | grep -E "^entrypoint:" | sed 's/^/    /'
logs 0 | grep -q -- "--join" || die "raft-0 did not start with --join: $(logs 0 | tail -n 5)"
client 1 member add 1 "$address0" | sed 's/^/    /'
[ "$(client 0 get k7 --stale)" = v7 ] || die "raft-0 does not hold k7 after member add"
client 0 set k11 v11 >/dev/null
client 1 member list | sed 's/^/    /'

echo "== 4. raft-0 restarted with its data: --peers, follows"
docker restart "$prefix-raft-0" >/dev/null
for _ in $(seq 40); do [ "$(client 0 get k11 --stale 2>/dev/null)" = v11 ] && break; sleep 0.25; done
[ "$(client 0 get k11 --stale)" = v11 ] || die "raft-0 restarted does not hold k11"
logs 0 | grep -E "^entrypoint: pod" | tail -n 1 | sed 's/^/    /'
[ "$(docker inspect -f '{{.State.Running}}' "$prefix-raft-0")" = true ] || die "raft-0 stopped after its restart"

echo "== 5. the whole cluster restarts, raft-0 on an empty volume first (existing): it waits, then refuses"
for n in 0 1 2; do docker stop -t 5 "$prefix-raft-$n" >/dev/null; done
wipe 0
pod 0 -e INITIAL_CLUSTER_STATE=existing
sleep 4
[ "$(docker inspect -f '{{.State.Running}}' "$prefix-raft-0")" = true ] ||
  die "raft-0 did not wait for a leader: $(logs 0 | tail -n 5)"
[ -z "$(ls -A "$work/data-0")" ] || die "raft-0 wrote to its data directory while waiting: $(ls -A "$work/data-0")"
for n in 1 2; do docker start "$prefix-raft-$n" >/dev/null; done
expect_exit 0 1 "must not vote as its old self"
[ -z "$(ls -A "$work/data-0")" ] || die "raft-0 wrote to its data directory: $(ls -A "$work/data-0")"
[ "$(client 1 get k11)" = v11 ] || die "the cluster lost k11"

echo "a founding pod that lost its volume is refused, and comes back by member remove, --join and member add"
