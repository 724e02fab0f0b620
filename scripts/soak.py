#!/usr/bin/env python3
"""Long runs that CI does not make; each prints what it measured.

  scripts/soak.sh big-state   (builds, then runs this with the release binaries)

big-state: a 3-node cluster loaded with STATE_MIB MiB of state in 1 MiB values while one
follower is down; the snapshots the leader takes (time, size), that follower catching up
by snapshot, a restart of all three, a wiped follower removed, started with --join and
added back (catching up by snapshot), every node's peak RSS in each phase, and the state
read back.
"""
import json
import os
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(HERE, "target", "release")
SOAK_DIR = os.environ.get("SOAK_DIR", "/tmp/raft-soak")
BASE = int(os.environ.get("RAFT_BASE_PORT", "7500"))
STATE_MIB = int(os.environ.get("STATE_MIB", "1024"))
ADDRS = {i: f"127.0.0.1:{BASE + i}" for i in (1, 2, 3)}
CLUSTER = ",".join(ADDRS.values())
procs = {}
peaks = {}  # node -> peak RSS MiB since the last reset_peaks()


def say(line):
    print(f"soak: {line}", flush=True)


def start(i, join=False):
    peers = ",".join(f"{j}={a}" for j, a in ADDRS.items() if j != i)
    log = open(os.path.join(SOAK_DIR, f"node-{i}.log"), "a")
    membership = ["--join"] if join else ["--peers", peers]  # (a joining node learns its peers)
    procs[i] = subprocess.Popen(
        [f"{BIN}/raft-node", "run", "--id", str(i), "--listen", ADDRS[i],
         "--data-dir", os.path.join(SOAK_DIR, str(i))] + membership,
        stdout=subprocess.DEVNULL, stderr=log)


def sample_peaks():
    while True:
        for i in list(procs):
            peaks[i] = max(peaks.get(i, 0), rss_mib(i))
        time.sleep(0.2)


def reset_peaks():
    peaks.clear()


def show_peaks(phase):
    say(f"peak RSS MiB {phase}: " + ", ".join(f"node {i} {peaks.get(i, 0)}" for i in sorted(peaks)))


def client(*args, timeout_ms=30000, check=True):
    return subprocess.run([f"{BIN}/raft-client", "--cluster", CLUSTER, "--timeout-ms", str(timeout_ms)] + list(args),
                          capture_output=True, text=True, check=check)


def stop(i):
    p = procs.pop(i, None)
    if p:
        p.terminate()
        p.wait()


def statuses(cluster=CLUSTER):
    out = subprocess.run([f"{BIN}/raft-client", "--cluster", cluster, "--timeout-ms", "2000", "status", "--json"],
                         capture_output=True, text=True).stdout
    try:
        return [s for s in json.loads(out) if s.get("reachable")]
    except ValueError:
        return []


def leader():
    return next((s for s in statuses() if s["role"] == "leader"), None)


def wait_for(what, seconds, probe):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    sys.exit(f"soak: timed out after {seconds} s waiting for {what}")


def rss_mib(i):
    try:
        with open(f"/proc/{procs[i].pid}/status") as f:
            return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS"))
    except (OSError, StopIteration, KeyError):
        return 0


def log_lines(i, *needles):
    with open(os.path.join(SOAK_DIR, f"node-{i}.log")) as f:
        return [l.rstrip() for l in f if any(n in l for n in needles)]


def big_state():
    if statuses():
        sys.exit(f"soak: something already answers on {CLUSTER} (an earlier run?); stop it or set RAFT_BASE_PORT")
    shutil.rmtree(SOAK_DIR, ignore_errors=True)
    os.makedirs(SOAK_DIR)
    threading.Thread(target=sample_peaks, daemon=True).start()
    for i in ADDRS:
        start(i)
    first = wait_for("a leader", 30, leader)
    follower = first["id"] % 3 + 1
    say(f"leader {first['id']}; stopping follower {follower}")
    stop(follower)
    t0 = time.time()
    subprocess.run([f"{BIN}/raft-client", "--cluster", CLUSTER, "--timeout-ms", "30000", "fill",
                    "--keys", str(STATE_MIB), "--value-size", str(1 << 20), "--clients", "8"], check=True)
    say(f"{STATE_MIB} MiB written in {time.time() - t0:.1f} s with follower {follower} down")
    lead = wait_for("a leader's snapshot", 120, lambda: (l := leader()) and l["snapshot_index"] > 0 and l)
    say(f"term {lead['term']} after the fill (it started in term {first['term']}: "
        f"{lead['term'] - first['term']} elections while writing)")
    for line in log_lines(lead["id"], "took snapshot"):
        say(f"leader: {line}")
    say("RSS MiB: " + ", ".join(f"node {i} {rss_mib(i)}" for i in sorted(procs)))
    show_peaks("while writing")
    reset_peaks()
    t0 = time.time()
    start(follower)
    commit = lead["commit"]
    wait_for(f"follower {follower} to catch up", 600,
             lambda: any(s["applied"] >= commit for s in statuses(ADDRS[follower])))
    say(f"follower {follower} caught up to index {commit} in {time.time() - t0:.1f} s")
    for line in log_lines(follower, "installed snapshot")[-1:]:
        say(f"follower: {line}")
    say("RSS MiB: " + ", ".join(f"node {i} {rss_mib(i)}" for i in sorted(procs)))
    show_peaks(f"while follower {follower} caught up")
    for i in list(procs):
        stop(i)
    du = subprocess.run(["du", "-sm"] + [os.path.join(SOAK_DIR, str(i)) for i in ADDRS],
                        capture_output=True, text=True).stdout.split()
    say("data MiB: " + ", ".join(f"node {i} {du[2 * (i - 1)]}" for i in ADDRS))
    t0 = time.time()
    for i in ADDRS:
        start(i)
    wait_for("a leader after the restart", 300, leader)
    say(f"all three restarted and elected a leader in {time.time() - t0:.1f} s")
    for k in (0, STATE_MIB // 2, STATE_MIB - 1):
        out = subprocess.run([f"{BIN}/raft-client", "--cluster", CLUSTER, "--timeout-ms", "10000", "get", f"fill{k}"],
                             capture_output=True).stdout
        if len(out.strip()) != 1 << 20:
            sys.exit(f"soak: fill{k} read back {len(out)} bytes")
    say(f"fill0, fill{STATE_MIB // 2}, fill{STATE_MIB - 1} read back whole")
    # A wiped follower: removed, its directory emptied, started with --join, added back.
    lead = wait_for("a leader", 30, leader)
    wiped = lead["id"] % 3 + 1
    stop(wiped)
    client("member", "remove", str(wiped))
    shutil.rmtree(os.path.join(SOAK_DIR, str(wiped)))
    say(f"node {wiped} stopped, removed, its data directory wiped")
    reset_peaks()
    t0 = time.time()
    start(wiped, join=True)
    client("member", "add", str(wiped), ADDRS[wiped], "--catch-up-timeout", "600s", timeout_ms=600000)
    say(f"node {wiped} added back and promoted in {time.time() - t0:.1f} s")
    commit = leader()["commit"]
    wait_for(f"node {wiped} to apply {commit}", 600,
             lambda: any(s["applied"] >= commit for s in statuses(ADDRS[wiped])))
    for line in log_lines(wiped, "installed snapshot")[-1:]:
        say(f"wiped follower: {line}")
    show_peaks(f"while wiped node {wiped} caught up")
    for k in (0, STATE_MIB - 1):
        out = subprocess.run([f"{BIN}/raft-client", "--cluster", ADDRS[wiped], "--timeout-ms", "10000", "get",
                              "--stale", f"fill{k}"], capture_output=True).stdout
        if len(out.strip()) != 1 << 20:
            sys.exit(f"soak: node {wiped} read fill{k} back as {len(out)} bytes")
    say(f"node {wiped} serves fill0 and fill{STATE_MIB - 1} whole from its own state; PASS")


if __name__ == "__main__":
    try:
        {"big-state": big_state}[sys.argv[1] if len(sys.argv) > 1 else ""]()
    except KeyError:
        sys.exit("usage: scripts/soak.sh big-state")
    finally:
        for i in list(procs):
            stop(i)
