#!/usr/bin/env bash
# Builds the `raft-lite:dev` image from this tree's release binaries:
#   scripts/docker-image.sh            # cargo build --release, the libraries, then docker build
#   SKIP_BUILD=1 scripts/docker-image.sh
# The image is FROM scratch (docker/Dockerfile): raft-node and raft-client from
# target/release plus the shared libraries they link, gathered here into
# target/docker/rootfs, so it builds with no registry and no base image. Once
# this has run, `docker-compose up --build` rebuilds the image from whatever
# `cargo build --release` left in target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${TAG:-raft-lite:dev}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p raft-node -p raft-client
root=target/docker/rootfs
rm -rf target/docker
mkdir -p "$root/data" "$root/tmp"
# Every library either binary loads, at the path the dynamic loader looks for it.
for lib in $(ldd target/release/raft-node target/release/raft-client |
  awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
docker build -q -f docker/Dockerfile -t "$TAG" . >/dev/null
echo "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.1f MB", $1/1e6}'))"
