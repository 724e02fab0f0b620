//! The docker layer of the test pyramid: the same binaries as containers on a
//! private network, cut off with `docker network disconnect` and killed with
//! `docker kill`, as a user would deploy them.
//!
//! Needs a docker engine and the `raft-lite:dev` image (`scripts/docker-image.sh`).
//! `scripts/test.sh` builds the image and sets `RAFT_DOCKER_TESTS=1`; without it
//! these tests say why they did not run and pass, so `cargo test` works on a
//! machine without docker. Every container and network they create carries the
//! test process id in its name and is removed at the end, failed or not.

use std::process::Command;
use std::time::{Duration, Instant};

const PORT: u16 = 7000;

/// docker-compose.yml's healthcheck command: ready once the node knows a
/// leader and has applied to near its commit index.
const HEALTH_CMD: &str = "/bin/busybox wget -q -O /dev/null http://127.0.0.1:7000/readyz";

fn enabled(test: &str) -> bool {
    let on = std::env::var("RAFT_DOCKER_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!(
            "{test}: not run: set RAFT_DOCKER_TESTS=1 (scripts/test.sh does, after building the image)"
        );
    }
    on
}

fn image() -> String {
    std::env::var("RAFT_DOCKER_IMAGE").unwrap_or_else(|_| "raft-lite:dev".to_string())
}

/// Runs `docker args...`; the output, or the error with stderr.
fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker").args(args).output().map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Runs `docker args...` and returns its stdout whatever its exit status
/// (`raft-client status` exits non-zero when no leader is known, as on a
/// cut-off node, but still prints what the node said); `None` if docker
/// itself cannot run.
fn docker_stdout(args: &[&str]) -> Option<String> {
    let out = Command::new("docker").args(args).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Debug, Clone)]
struct NodeView {
    id: u64,
    role: String,
    term: u64,
    commit: u64,
    applied: u64,
}

/// A 3-node cluster in containers, removed on drop (with the nodes that
/// joined it later).
struct DockerCluster {
    name: String,
    network: String,
    nodes: u64,
    joined: Vec<u64>,
}

impl DockerCluster {
    fn start(test: &str, nodes: u64) -> DockerCluster {
        let name = format!("rl-{}-{test}", std::process::id());
        let network = format!("{name}-net");
        let c = DockerCluster { name, network, nodes, joined: Vec::new() };
        docker(&["network", "create", &c.network]).unwrap();
        for id in 1..=nodes {
            let peers: Vec<String> =
                (1..=nodes).filter(|&p| p != id).map(|p| format!("{p}=n{p}:{PORT}")).collect();
            c.run_node(id, &[&format!("RAFT_PEERS={}", peers.join(","))]);
        }
        c
    }

    /// Starts node `id` with `--join` (`RAFT_JOIN`): a new container on the
    /// network that waits to be added.
    fn join(&mut self, id: u64) {
        self.joined.push(id);
        self.run_node(id, &["RAFT_JOIN=true"]);
    }

    /// `docker run` of node `id` on the network, under its alias, with its
    /// id, its advertised address and `env`.
    fn run_node(&self, id: u64, env: &[&str]) {
        let (env_id, env_adv, alias) =
            (format!("RAFT_ID={id}"), format!("RAFT_ADVERTISE=n{id}:{PORT}"), format!("n{id}"));
        let container = self.container(id);
        let mut args = vec!["run", "-d", "--name", &container, "--network", &self.network];
        args.extend(["--network-alias", &alias, "-e", &env_id, "-e", &env_adv]);
        // docker-compose.yml's healthcheck (GET /readyz with the image's
        // busybox), checked every second here.
        args.extend(["--health-cmd", HEALTH_CMD, "--health-interval", "1s", "--health-retries", "1"]);
        for e in env {
            args.extend(["-e", e]);
        }
        let image = image();
        args.push(&image);
        docker(&args).unwrap();
    }

    /// The container's health as docker's healthcheck last found it.
    fn health(&self, id: u64) -> Option<String> {
        docker_stdout(&["inspect", "-f", "{{.State.Health.Status}}", &self.container(id)])
            .map(|s| s.trim().to_string())
    }

    fn container(&self, id: u64) -> String {
        format!("{}-n{id}", self.name)
    }

    fn cluster_arg(&self) -> String {
        (1..=self.nodes).map(|id| format!("n{id}:{PORT}")).collect::<Vec<_>>().join(",")
    }

    /// `raft-client` inside container `via` (exec needs no network of its own).
    fn client(&self, via: u64, args: &[&str]) -> Result<String, String> {
        let container = self.container(via);
        let cluster = self.cluster_arg();
        let mut all = vec!["exec", &container, "raft-client", "--cluster", &cluster, "--timeout-ms", "3000"];
        all.extend_from_slice(args);
        docker(&all).map(|s| s.trim().to_string())
    }

    /// A stale read of `key` from node `id` itself.
    fn local_get(&self, id: u64, key: &str) -> Result<String, String> {
        let container = self.container(id);
        let addr = format!("127.0.0.1:{PORT}");
        docker(&["exec", &container, "raft-client", "--cluster", &addr, "get", key, "--stale"])
            .map(|s| s.trim().to_string())
    }

    /// A node's own view, asked inside its own container over loopback (so
    /// that it answers even when cut off the network).
    fn status(&self, id: u64) -> Option<NodeView> {
        let container = self.container(id);
        let addr = format!("127.0.0.1:{PORT}");
        let out = docker_stdout(&[
            "exec",
            &container,
            "raft-client",
            "--cluster",
            &addr,
            "--timeout-ms",
            "1000",
            "status",
            "--json",
        ])?;
        let rows: serde_json::Value = serde_json::from_str(&out).ok()?;
        let row = rows.as_array()?.first()?;
        Some(NodeView {
            id: row["id"].as_u64()?,
            role: row["role"].as_str()?.to_string(),
            term: row["term"].as_u64()?,
            commit: row["commit"].as_u64()?,
            applied: row["applied"].as_u64()?,
        })
    }

    /// The leader that a majority follows, among `among`.
    fn leader(&self, among: &[u64]) -> Option<NodeView> {
        let views: Vec<NodeView> = among.iter().filter_map(|&id| self.status(id)).collect();
        let leader = views.iter().filter(|v| v.role == "leader").max_by_key(|v| v.term)?.clone();
        let same_term = views.iter().filter(|v| v.term == leader.term).count() as u64;
        (same_term * 2 > self.nodes).then_some(leader)
    }

    fn disconnect(&self, id: u64) {
        docker(&["network", "disconnect", &self.network, &self.container(id)]).unwrap();
    }

    fn connect(&self, id: u64) {
        let alias = format!("n{id}");
        docker(&["network", "connect", "--alias", &alias, &self.network, &self.container(id)]).unwrap();
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        // `-v`: the image declares `VOLUME /data`, so every container has an
        // anonymous volume that `docker rm` without it leaves behind.
        for id in (1..=self.nodes).chain(self.joined.iter().copied()) {
            let _ = docker(&["rm", "-f", "-v", &self.container(id)]);
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}

fn wait_for<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_partitioned_leader_is_replaced_and_catches_up_after_reconnecting() {
    if !enabled("a_partitioned_leader_is_replaced_and_catches_up_after_reconnecting") {
        return;
    }
    let c = DockerCluster::start("partition", 3);
    let all = [1, 2, 3];
    let old = wait_for("a leader", Duration::from_secs(30), || c.leader(&all));
    for id in all {
        wait_for("every container to be healthy (/readyz)", Duration::from_secs(30), || {
            (c.health(id).as_deref() == Some("healthy")).then_some(())
        });
    }
    assert_eq!(c.client(1, &["set", "x", "1"]).unwrap(), "OK");
    assert_eq!(c.client(2, &["get", "x"]).unwrap(), "1");

    // Cut the leader off the network: the other two elect a new leader.
    c.disconnect(old.id);
    let rest: Vec<u64> = all.iter().copied().filter(|&id| id != old.id).collect();
    let new = wait_for("a new leader among the connected nodes", Duration::from_secs(30), || {
        c.leader(&rest).filter(|l| l.id != old.id)
    });
    assert!(new.term > old.term);
    assert_eq!(c.client(rest[0], &["set", "y", "2"]).unwrap(), "OK");
    assert_eq!(c.client(rest[1], &["get", "y"]).unwrap(), "2");
    // The cut-off leader steps down (CheckQuorum) and commits nothing new.
    let cut = wait_for("the cut-off leader to step down", Duration::from_secs(30), || {
        c.status(old.id).filter(|s| s.role != "leader")
    });
    assert!(cut.commit < c.status(new.id).unwrap().commit);
    wait_for("the cut-off node's container to turn unhealthy", Duration::from_secs(30), || {
        (c.health(old.id).as_deref() == Some("unhealthy")).then_some(())
    });

    // Heal: it rejoins as a follower and catches up.
    c.connect(old.id);
    let target = c.status(new.id).unwrap().commit;
    wait_for("the healed node to catch up", Duration::from_secs(30), || {
        c.status(old.id).filter(|s| s.applied >= target && s.role == "follower")
    });
    assert_eq!(c.local_get(old.id, "y").unwrap(), "2");
    wait_for("the healed node's container to be healthy again", Duration::from_secs(30), || {
        (c.health(old.id).as_deref() == Some("healthy")).then_some(())
    });
}

#[test]
fn a_killed_follower_restarts_from_its_volume_and_catches_up() {
    if !enabled("a_killed_follower_restarts_from_its_volume_and_catches_up") {
        return;
    }
    let c = DockerCluster::start("kill", 3);
    let all = [1, 2, 3];
    let leader = wait_for("a leader", Duration::from_secs(30), || c.leader(&all));
    let follower = all.into_iter().find(|&id| id != leader.id).unwrap();
    assert_eq!(c.client(leader.id, &["set", "a", "1"]).unwrap(), "OK");
    docker(&["kill", &c.container(follower)]).unwrap();
    for i in 0..20 {
        assert_eq!(c.client(leader.id, &["set", &format!("k{i}"), &i.to_string()]).unwrap(), "OK");
    }
    docker(&["start", &c.container(follower)]).unwrap();
    let target = c.status(leader.id).unwrap().commit;
    wait_for("the restarted follower to catch up", Duration::from_secs(30), || {
        c.status(follower).filter(|s| s.applied >= target)
    });
    assert_eq!(c.local_get(follower, "k19").unwrap(), "19");
    assert_eq!(c.local_get(follower, "a").unwrap(), "1");
}

#[test]
fn a_fourth_container_joins_and_is_promoted_and_an_original_is_removed_and_stopped() {
    if !enabled("a_fourth_container_joins_and_is_promoted_and_an_original_is_removed_and_stopped") {
        return;
    }
    let mut c = DockerCluster::start("join", 3);
    wait_for("a leader", Duration::from_secs(30), || c.leader(&[1, 2, 3]));
    assert_eq!(c.client(1, &["set", "x", "1"]).unwrap(), "OK");
    c.join(4);
    let added = c.client(1, &["member", "add", "4", "n4:7000"]).unwrap();
    assert!(added.contains("promoted node 4 to voter"), "{added}");
    let removed = c.client(1, &["member", "remove", "3"]).unwrap_or_else(|e| {
        let logs: Vec<String> = [1, 2, 3, 4]
            .iter()
            .map(|&id| format!("n{id}:\n{}", docker_stdout(&["logs", &c.container(id)]).unwrap_or_default()))
            .collect();
        let stderr: Vec<String> = [1, 2, 3, 4]
            .iter()
            .map(|&id| {
                let out = Command::new("docker").args(["logs", &c.container(id)]).output().unwrap();
                format!("n{id}:\n{}", String::from_utf8_lossy(&out.stderr))
            })
            .collect();
        panic!("{e}\n{}\n{}", logs.join("\n"), stderr.join("\n"))
    });
    assert!(removed.contains("removed node 3"), "{removed}");
    docker(&["stop", &c.container(3)]).unwrap();
    assert_eq!(c.client(1, &["set", "y", "2"]).unwrap(), "OK");
    wait_for("node 4 to hold every write", Duration::from_secs(30), || {
        (c.local_get(4, "x").ok()? == "1" && c.local_get(4, "y").ok()? == "2").then_some(())
    });
    let list = c.client(1, &["member", "list", "--json"]).unwrap();
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    let voters: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["role"] == "voter")
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(voters, vec![1, 2, 4], "{list}");
}
