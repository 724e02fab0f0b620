#!/usr/bin/env bash
# The project's test command: formatting, lints, then every test in the workspace
# (unit tests, the simulator's seed budget, multi-process clusters, and the docker
# cluster when a docker engine is there). Run from anywhere; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== the repository stands on its own"
./scripts/check-standalone.sh
echo "== kubernetes manifests"
./scripts/check-kubernetes.sh
if ! command -v curl >/dev/null; then
  echo "== installing curl (the HTTP tests run the labs' curl commands)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq curl >/dev/null; else sudo apt-get install -y -qq curl >/dev/null; fi
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
if docker info >/dev/null 2>&1; then
  echo "== docker image raft-lite:dev (from this tree's release binaries)"
  ./scripts/docker-image.sh
  echo "== a founding pod that lost its volume, in docker as the StatefulSet runs it"
  ./scripts/check-kubernetes-rejoin.sh
  export RAFT_DOCKER_TESTS=1
elif [ "${CI:-}" = true ]; then
  echo "test.sh: CI needs a running docker engine for the docker cluster tests" >&2
  exit 1
else
  echo "== no docker engine: the docker cluster tests will say they did not run"
fi
echo "== cargo test --workspace"
cargo test --workspace
