#!/usr/bin/env bash
# Builds the `raft-lite:dev` image from this tree's release binaries:
#   scripts/docker-image.sh            # cargo build --release, then docker build
#   SKIP_BUILD=1 scripts/docker-image.sh
# The image is FROM scratch: raft-node and raft-client plus the shared libraries
# they link, so it builds with no registry and no base image.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${TAG:-raft-lite:dev}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p raft-node -p raft-client
ctx=target/docker
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/data" "$ctx/rootfs/tmp"
cp target/release/raft-node target/release/raft-client "$ctx/rootfs/usr/local/bin/"
strip "$ctx"/rootfs/usr/local/bin/* 2>/dev/null || true
# Every library either binary loads, at the path the dynamic loader looks for it.
for lib in $(ldd target/release/raft-node target/release/raft-client |
  awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u); do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
cp docker/Dockerfile "$ctx/Dockerfile"
docker build -q -t "$TAG" "$ctx" >/dev/null
echo "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.1f MB", $1/1e6}'))"
