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
# A static busybox, so that the image has a probe for its own HTTP face
# (docker-compose's healthcheck: `busybox wget .../readyz`) and a shell
# (/bin/sh).
busybox=$(command -v busybox || true)
if [ -z "$busybox" ] || ! file -L "$busybox" 2>/dev/null | grep -q "statically linked"; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq busybox-static >/dev/null || { apt-get update -qq && apt-get install -y -qq busybox-static >/dev/null; }
  fi
  busybox=/bin/busybox
fi
if ! [ -x "$busybox" ]; then
  echo "docker-image.sh: the image needs a static busybox (apt-get install busybox-static)" >&2
  exit 1
fi
mkdir -p "$root/bin"
cp -L "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"   # (a healthcheck in the shell form runs /bin/sh -c)
docker build -q -f docker/Dockerfile -t "$TAG" . >/dev/null
echo "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.1f MB", $1/1e6}'))"
