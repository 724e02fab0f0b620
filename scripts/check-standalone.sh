#!/usr/bin/env bash
# The repository stands on its own: what the README and BENCHMARKS.md tell a
# user to run, and scripts/bench.sh, need nothing outside this clone. Checks:
#   1. no file a user follows points outside the repository (`../shared`,
#      `shared/etcd-bench`, a `$here/..` path in a script);
#   2. etcd's load generator is here: bench/etcd-bench/Cargo.toml, a
#      workspace of its own (so `cargo test --workspace` needs no protoc) with
#      its Cargo.lock committed, and scripts/bench.sh builds and runs it;
#   3. every compose file can build its image from this tree (`build:`).
# Run by scripts/test.sh; prints each check.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
bad() { echo "  FAIL: $*" >&2; fail=1; }
ok() { echo "  ok: $*"; }

files=(README.md BENCHMARKS.md docker-compose*.yml docker/Dockerfile scripts/*.sh)
for f in "${files[@]}"; do
  [ "$f" = scripts/check-standalone.sh ] && continue
  # shellcheck disable=SC2016 # a literal `$here/..`
  if hits=$(grep -nE '\.\./shared|shared/etcd-bench|shared/(BENCH|DESIGN|STYLE)\.md|\$here/\.\.' "$f"); then
    bad "$f points outside the repository:"
    echo "$hits" | sed 's/^/        /' >&2
  else
    ok "$f points nowhere outside the repository"
  fi
done

manifest=bench/etcd-bench/Cargo.toml
if [ -f "$manifest" ]; then ok "$manifest exists"; else bad "$manifest is missing"; fi
if grep -q '^\[workspace\]' "$manifest" 2>/dev/null; then
  ok "$manifest is a workspace of its own"
else
  bad "$manifest has no [workspace] table: it would join the main workspace, whose build would need protoc"
fi
if git ls-files --error-unmatch bench/etcd-bench/Cargo.lock >/dev/null 2>&1; then
  ok "bench/etcd-bench/Cargo.lock is committed"
else
  bad "bench/etcd-bench/Cargo.lock is not committed"
fi
if grep -q 'bench/etcd-bench/Cargo.toml' scripts/bench.sh && grep -q -- '--manifest-path "\$ETCD_BENCH_MANIFEST"' scripts/bench.sh; then
  ok "scripts/bench.sh builds etcd's load generator from $manifest"
else
  bad "scripts/bench.sh does not build $manifest"
fi
if grep -q '"\$ETCD_BENCH" --endpoints' scripts/bench.sh; then
  ok "scripts/bench.sh runs the generator it built"
else
  bad "scripts/bench.sh does not run the generator it built"
fi

for f in docker-compose*.yml; do
  if grep -qE '^\s+build:' "$f"; then ok "$f builds its image from this tree"; else bad "$f has no build: section"; fi
done

if [ "$fail" = 0 ]; then echo "the repository stands on its own"; else exit 1; fi
