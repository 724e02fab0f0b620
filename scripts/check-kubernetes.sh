#!/usr/bin/env bash
# The Kubernetes manifests in deploy/kubernetes are valid, checked without a
# cluster (none runs here):
#   1. every manifest (each document of each *.yaml but kustomization.yaml)
#      against the Kubernetes JSON schemas, strictly (an unknown field fails,
#      and so does a kind no schema knows), for each version in
#      K8S_VERSIONS, by the PyPI package kubernetes-validate;
#   2. kustomization.yaml names every manifest and file there, and only those;
#   3. the StatefulSet's raft container runs entrypoint.sh with the raft-lite
#      image's own /bin/sh, with no init container;
#   4. entrypoint.sh parses, and turns pod names into the flags it should.
#   scripts/check-kubernetes.sh                  # all of deploy/kubernetes
#   scripts/check-kubernetes.sh FILE.yaml ...     # step 1 on these files only
# Installs what it needs once: a venv under ${XDG_CACHE_HOME:-~/.cache}/raft-lite
# (python3 with its venv module; as root it apt-get installs python3-venv if
# that is missing). Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

VALIDATE_VERSION=1.37.0 # kubernetes-validate's release; it bundles the schemas
K8S_VERSIONS=${K8S_VERSIONS:-"1.29.0 1.37.0"}
dir=deploy/kubernetes
venv=${XDG_CACHE_HOME:-$HOME/.cache}/raft-lite/k8s-venv-$VALIDATE_VERSION

die() {
  echo "check-kubernetes: $*" >&2
  exit 1
}

# --- the validator, installed once -------------------------------------------
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qF "$VALIDATE_VERSION"; then
  if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "  installing python3-venv (apt-get)"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
    else
      die "python3 with its venv module is needed (apt-get install python3-venv, as root)"
    fi
  fi
  echo "  installing kubernetes-validate $VALIDATE_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv $venv failed"
  "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$VALIDATE_VERSION" ||
    die "pip could not install kubernetes-validate==$VALIDATE_VERSION into $venv"
fi
py=$venv/bin/python

# --- 1. the schemas -----------------------------------------------------------
if [ $# -gt 0 ]; then
  manifests=("$@")
else
  manifests=()
  for f in "$dir"/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
  done
fi
[ ${#manifests[@]} -gt 0 ] || die "no manifests found in $dir"
fail=0
for version in $K8S_VERSIONS; do
  for f in "${manifests[@]}"; do
    # kubernetes-validate exits 0 with only a WARN for a kind it has no schema
    # for (a misspelt kind, a wrong apiVersion): that fails here too.
    if out=$("$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$f" 2>&1) &&
      ! grep -qE '^(WARN|ERROR)' <<<"$out"; then
      echo "  ok: $f is valid against the Kubernetes $version schemas"
    else
      echo "$out" | sed 's/^/    /' >&2
      echo "  FAIL: $f is not a valid Kubernetes $version manifest (strict schema check): see above" >&2
      fail=1
    fi
  done
done
if [ $# -gt 0 ]; then
  [ "$fail" = 0 ] || die "the manifests above are not valid Kubernetes manifests"
  exit 0
fi

# --- 2. kustomization.yaml names every file -----------------------------------
if ! "$py" - "$dir" <<'EOF'; then
import os, sys, yaml

d = sys.argv[1]
with open(os.path.join(d, "kustomization.yaml")) as f:
    k = yaml.safe_load(f)
if k.get("kind") != "Kustomization":
    sys.exit("  FAIL: %s/kustomization.yaml is not a Kustomization" % d)
named = set(k.get("resources", []))
for gen in k.get("configMapGenerator", []):
    named.update(gen.get("files", []))
here = {f for f in os.listdir(d) if f.endswith((".yaml", ".sh")) and f != "kustomization.yaml"}
bad = False
for f in sorted(named - here):
    print("  FAIL: %s/kustomization.yaml names %s, which is not there" % (d, f), file=sys.stderr)
    bad = True
for f in sorted(here - named):
    print("  FAIL: %s/%s is not named in kustomization.yaml: kubectl apply -k would leave it out" % (d, f),
          file=sys.stderr)
    bad = True
sys.exit(1 if bad else 0)
EOF
  fail=1
else
  echo "  ok: $dir/kustomization.yaml names every manifest and file there"
fi

# --- 3. the pod runs entrypoint.sh with the image's own shell -----------------
# (The raft-lite image carries a static busybox as /bin/sh: no init container
# and no second image, which a cluster would have to pull.)
if ! "$py" - "$dir/statefulset.yaml" <<'EOF'; then
import sys, yaml

path = sys.argv[1]
with open(path) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
sets = [d for d in docs if d.get("kind") == "StatefulSet"]
if len(sets) != 1:
    sys.exit("  FAIL: %s holds %d StatefulSets, not one" % (path, len(sets)))
pod = sets[0]["spec"]["template"]["spec"]
problems = []
for c in pod.get("initContainers", []):
    problems.append("has an init container `%s` (image %s): the raft-lite image runs the "
                    "entrypoint with its own /bin/sh" % (c.get("name"), c.get("image")))
raft = [c for c in pod.get("containers", []) if c.get("name") == "raft"]
if len(raft) != 1:
    problems.append("has no container named raft")
else:
    c = raft[0]
    if c.get("image", "").split(":")[0] != "raft-lite":
        problems.append("runs image %s in the raft container, not raft-lite" % c.get("image"))
    want = ["/bin/sh", "/etc/raft-lite/entrypoint.sh"]
    if c.get("command") != want:
        problems.append("runs %s, not %s" % (c.get("command"), want))
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = [m for m in c.get("volumeMounts", []) if m.get("mountPath") == "/etc/raft-lite"]
    if not mounts or volumes.get(mounts[0]["name"], {}).get("configMap", {}).get("name") != "raft-entrypoint":
        problems.append("does not mount the raft-entrypoint ConfigMap at /etc/raft-lite")
for p in problems:
    print("  FAIL: the StatefulSet in %s %s" % (path, p), file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
  fail=1
else
  echo "  ok: the raft container runs /bin/sh /etc/raft-lite/entrypoint.sh from the raft-lite image, with no init container"
fi

# --- 4. the entrypoint ----------------------------------------------------------
entry=$dir/entrypoint.sh
stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
printf '#!/bin/sh\necho "$*"\n' >"$stub/raft-node"
chmod +x "$stub/raft-node"
flags() { POD_NAME=$1 POD_NAMESPACE=ns NODE_BINARY=$stub/raft-node sh "$entry" 2>/dev/null; }
a=raft.ns.svc.cluster.local:8001
expect0="run --id 1 --listen 0.0.0.0:8001 --advertise raft-0.$a --peers 2=raft-1.$a,3=raft-2.$a"
expect3="run --id 4 --listen 0.0.0.0:8001 --advertise raft-3.$a --join"
if ! sh -n "$entry"; then
  echo "  FAIL: $entry does not parse (sh -n)" >&2
  fail=1
elif [ "$(flags raft-0)" != "$expect0" ] || [ "$(flags raft-3)" != "$expect3" ]; then
  echo "  FAIL: $entry gives raft-0 '$(flags raft-0)' and raft-3 '$(flags raft-3)';" \
    "expected '$expect0' and '$expect3'" >&2
  fail=1
elif flags raft >/dev/null; then
  echo "  FAIL: $entry accepts a pod name with no ordinal" >&2
  fail=1
else
  echo "  ok: $entry makes raft-0 a founding node 1 and raft-3 a joining node 4"
fi

[ "$fail" = 0 ] || die "the Kubernetes manifests in $dir have the problems above"
echo "the Kubernetes manifests are valid"
