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
# Against stubs: a raft-node that prints its arguments, and a raft-client whose
# `member list` answers with the ids in STUB_MEMBERS (or fails: no leader).
entry=$dir/entrypoint.sh
stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
printf '#!/bin/sh\necho "$*"\n' >"$stub/raft-node"
cat >"$stub/raft-client" <<'EOF'
#!/bin/sh
echo "$*" >>"$STUB_CALLS"
[ "${STUB_MEMBERS:-fail}" != fail ] || { echo "raft-client: no answer within 3s" >&2; exit 1; }
echo "ID   ADDRESS               ROLE            MATCH      LAG"
for m in $STUB_MEMBERS; do echo "$m    raft-$((m - 1)).raft.ns:8001    voter              12        0"; done
EOF
chmod +x "$stub/raft-node" "$stub/raft-client"
mkdir -p "$stub/empty/lost+found" "$stub/held"
echo '{}' >"$stub/held/identity.json"
# flags POD DATA_DIR [VAR=VALUE ...]: what the entrypoint runs raft-node with.
flags() {
  local pod=$1 data=$2
  shift 2
  env POD_NAME="$pod" POD_NAMESPACE=ns RAFT_DATA_DIR="$stub/$data" NODE_BINARY="$stub/raft-node" \
    CLIENT_BINARY="$stub/raft-client" STUB_CALLS="$stub/calls" JOIN_WAIT_SECONDS=0 "$@" sh "$entry" 2>/dev/null
}
a=raft.ns.svc.cluster.local:8001
expect0="run --id 1 --listen 0.0.0.0:8001 --advertise raft-0.$a --peers 2=raft-1.$a,3=raft-2.$a"
expect0join="run --id 1 --listen 0.0.0.0:8001 --advertise raft-0.$a --join"
expect3="run --id 4 --listen 0.0.0.0:8001 --advertise raft-3.$a --join"
asked="--cluster raft-1.$a,raft-2.$a,raft-api.ns.svc.cluster.local:8001 --timeout-ms 3000 member list"
entry_fail() {
  echo "  FAIL: $entry $*" >&2
  fail=1
}
if ! sh -n "$entry"; then
  entry_fail "does not parse (sh -n)"
else
  ok=$fail
  # A founder with data, and a member added later: no question asked.
  rm -f "$stub/calls"
  [ "$(flags raft-0 held)" = "$expect0" ] || entry_fail "gives raft-0 with data '$(flags raft-0 held)', not '$expect0'"
  [ "$(flags raft-3 empty)" = "$expect3" ] || entry_fail "gives raft-3 '$(flags raft-3 empty)', not '$expect3'"
  [ ! -e "$stub/calls" ] || entry_fail "asks the cluster for a pod with data, or past INITIAL_CLUSTER_SIZE: $(cat "$stub/calls")"
  # An empty founder: no leader answers (the cluster is being founded).
  got=$(flags raft-0 empty STUB_MEMBERS=fail)
  [ "$got" = "$expect0" ] || entry_fail "gives an empty raft-0 with no leader answering '$got', not '$expect0'"
  [ "$(cat "$stub/calls" 2>/dev/null)" = "$asked" ] ||
    entry_fail "asks the cluster with '$(cat "$stub/calls" 2>/dev/null)', not '$asked'"
  # ...the cluster runs without node 1 (it was removed): it joins.
  got=$(flags raft-0 empty STUB_MEMBERS="2 3 4")
  [ "$got" = "$expect0join" ] || entry_fail "gives an empty raft-0 that the cluster no longer lists '$got', not '$expect0join'"
  got=$(flags raft-0 empty STUB_MEMBERS="2 3 10 11" INITIAL_CLUSTER_STATE=existing)
  [ "$got" = "$expect0join" ] || entry_fail "takes node 10 for node 1: '$got', not '$expect0join'"
  # ...the cluster lists node 1: --peers (raft-node refuses if it held data)
  # while new, refused here once existing.
  got=$(flags raft-0 empty STUB_MEMBERS="1 2 3")
  [ "$got" = "$expect0" ] || entry_fail "gives an empty raft-0 that the cluster lists '$got', not '$expect0'"
  flags raft-0 empty STUB_MEMBERS="1 2 3" INITIAL_CLUSTER_STATE=existing >/dev/null &&
    entry_fail "starts an empty raft-0 that the cluster lists, with INITIAL_CLUSTER_STATE=existing"
  flags raft-0 empty STUB_MEMBERS=fail INITIAL_CLUSTER_STATE=existing >/dev/null &&
    entry_fail "founds a cluster from an empty raft-0 with INITIAL_CLUSTER_STATE=existing"
  flags raft-0 held INITIAL_CLUSTER_STATE=old >/dev/null && entry_fail "accepts INITIAL_CLUSTER_STATE=old"
  flags raft held >/dev/null && entry_fail "accepts a pod name with no ordinal"
  [ "$fail" != "$ok" ] ||
    echo "  ok: $entry makes raft-0 a founding node 1 (with data, or on a new cluster), a joining one once the cluster has removed it, refused when empty and listed once existing; raft-3 a joining node 4"
fi

[ "$fail" = 0 ] || die "the Kubernetes manifests in $dir have the problems above"
echo "the Kubernetes manifests are valid"
