//! Helpers shared by the multi-process tests: a cluster of real `raft-node`
//! processes on 127.0.0.1, waits on conditions with deadlines, refusals.
#![allow(dead_code, unused_imports)]

pub use std::collections::BTreeMap;
pub use std::io::Write;
pub use std::net::TcpListener;
pub use std::path::{Path, PathBuf};
pub use std::process::{Child, Command, Stdio};
pub use std::time::{Duration, Instant};

pub use raft_client::bench::{run_load, BenchOp, LoadSpec};
pub use raft_client::{Client, ClientConfig};
pub use raft_core::{NodeId, Role};
pub use raft_kv::{
    ClientRequest, ClientResponse, Command as WireCommand, NodeStatus, RequestKind, ResponseKind, WriteOp,
    WriteResult,
};
pub use raft_net::transport;
pub use raft_net::wire::Sender;

pub const BIN: &str = env!("CARGO_BIN_EXE_raft-node");
pub const CLUSTER_ID: &str = "raft-lite";

/// `n` consecutive ports that are free now, below the kernel's ephemeral
/// range (32768+), so that no outgoing connection of a parallel test can take
/// one between this check and the node's bind. Each test process starts at
/// its own pid-derived offset and never hands out a port twice.
pub fn free_ports(n: u16) -> Vec<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 600) as u16 * 16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let first = NEXT.fetch_add(n, Ordering::SeqCst);
        assert!(first < 32_000, "ran out of test ports");
        let ports: Vec<u16> = (first..first + n).collect();
        if ports.iter().all(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return ports;
        }
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addrs: BTreeMap<NodeId, String>,
    pub children: BTreeMap<NodeId, Child>,
    pub extra: Vec<String>,
}

impl Cluster {
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
        let ports = free_ports(n as u16);
        let addrs = (1..=n).map(|id| (id, format!("127.0.0.1:{}", ports[id as usize - 1]))).collect();
        Cluster::start_on(addrs, extra)
    }

    /// A new cluster (new data directories) on these addresses.
    pub fn start_on(addrs: BTreeMap<NodeId, String>, extra: &[&str]) -> Cluster {
        let mut c = Cluster::unstarted(addrs, extra);
        for id in 1..=c.addrs.len() as u64 {
            c.spawn(id);
        }
        c
    }

    /// A cluster whose nodes are not started yet (see `spawn`).
    pub fn unstarted(addrs: BTreeMap<NodeId, String>, extra: &[&str]) -> Cluster {
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            addrs,
            children: BTreeMap::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(id.to_string())
    }

    pub fn command(&self, id: NodeId) -> Command {
        let peers: Vec<String> =
            self.addrs.iter().filter(|(&p, _)| p != id).map(|(p, a)| format!("{p}={a}")).collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{id}.log")))
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .args(["--id", &id.to_string(), "--listen", &self.addrs[&id], "--peers", &peers.join(",")])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(if peers.is_empty() { &["--single-node"][..] } else { &[] })
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        cmd
    }

    /// The `raft-node run` arguments of node `id`, as `command` uses them.
    pub fn args(&self, id: NodeId) -> Vec<String> {
        let peers: Vec<String> =
            self.addrs.iter().filter(|(&p, _)| p != id).map(|(p, a)| format!("{p}={a}")).collect();
        let data_dir = self.data_dir(id).to_string_lossy().into_owned();
        ["run", "--id", &id.to_string(), "--listen", &self.addrs[&id], "--peers", &peers.join(",")]
            .into_iter()
            .chain(["--data-dir", &data_dir])
            .map(str::to_string)
            .collect()
    }

    pub fn log_of(&self, id: NodeId) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }

    pub fn spawn(&mut self, id: NodeId) {
        let child = self.command(id).spawn().unwrap();
        self.children.insert(id, child);
    }

    pub fn kill(&mut self, id: NodeId) {
        let mut child = self.children.remove(&id).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn client(&self, timeout: Duration) -> Client {
        let addrs: Vec<String> = self.addrs.values().cloned().collect();
        Client::new(ClientConfig::new(&addrs.join(","), CLUSTER_ID, timeout)).unwrap()
    }

    pub fn client_of(&self, id: NodeId) -> Client {
        Client::new(ClientConfig::new(&self.addrs[&id], CLUSTER_ID, Duration::from_secs(10))).unwrap()
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for id in self.addrs.keys() {
            let log =
                std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            out += &format!("--- node {id} (last 40 lines)\n");
            for line in tail.into_iter().rev() {
                out += line;
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

pub async fn wait_until<T>(what: &str, deadline: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn statuses(c: &Cluster) -> Vec<NodeStatus> {
    let client = c.client(Duration::from_millis(300));
    client.status_all().await.into_iter().filter_map(|(_, s)| s.ok()).collect()
}

pub async fn leader(c: &Cluster) -> Option<NodeStatus> {
    let all = statuses(c).await;
    let leaders: Vec<&NodeStatus> = all.iter().filter(|s| s.role == Role::Leader).collect();
    // Two nodes may both believe they lead for a moment (different terms);
    // take the one every other live node follows.
    leaders
        .into_iter()
        .find(|l| {
            all.iter().filter(|s| s.leader == Some(l.id) && s.term == l.term).count() * 2 > c.addrs.len()
        })
        .cloned()
}

pub async fn status_of(c: &Cluster, id: NodeId) -> Option<NodeStatus> {
    let client = c.client(Duration::from_millis(300));
    match client.ask(&c.addrs[&id], RequestKind::Status).await {
        Ok(ResponseKind::Status(s)) => Some(s),
        _ => None,
    }
}

pub fn signal(c: &Cluster, id: NodeId, sig: &str) {
    let pid = c.children[&id].id().to_string();
    assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success(), "kill {sig} {pid}");
}

pub fn wal_segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .collect();
    files.sort();
    files
}

/// Runs `raft-node` with these arguments and environment, expecting it to
/// refuse to start: it must exit non-zero within the deadline (never run
/// on). Returns its stderr.
pub fn refused_start(args: &[String], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RAFT_PEERS")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "raft-node {args:?} was expected to refuse to start but still runs after 20 s:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&log_path).unwrap();
    assert!(!status.success(), "raft-node {args:?} exited with success:\n{stderr}");
    stderr
}

/// `args` with the value of `flag` replaced.
pub fn with_flag(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    let at = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args[at + 1] = value.to_string();
    args
}

/// Waits until every node knows the cluster token and every member is
/// recorded as holding data; returns the token.
pub async fn wait_for_identity(c: &Cluster) -> u64 {
    wait_until("every node to know the cluster token and every member", Duration::from_secs(15), async || {
        let all = statuses(c).await;
        let token = all.first()?.cluster_token;
        let complete = all.len() == c.addrs.len()
            && all.iter().all(|s| s.cluster_token == token && s.members_with_data.len() == c.addrs.len());
        (token != 0 && complete).then_some(token)
    })
    .await
}

pub async fn write_keys(c: &Cluster, prefix: &str, n: usize) {
    let mut client = c.client(Duration::from_secs(10));
    for i in 0..n {
        let (key, value) = (format!("{prefix}{i}"), format!("v{i}"));
        client.put(key.as_bytes(), value.as_bytes()).await.unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    }
}

pub async fn assert_keys(c: &Cluster, prefix: &str, n: usize) {
    let mut client = c.client(Duration::from_secs(10));
    for i in 0..n {
        let key = format!("{prefix}{i}");
        let got = client.get(key.as_bytes(), false).await.unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
        assert_eq!(got, Some(format!("v{i}").into_bytes()), "acknowledged write {key} lost\n{}", c.logs());
    }
}

pub fn run_scenario(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    // The cluster uses base+1..base+3.
    let base = free_ports(4)[0];
    let out = Command::new(BIN)
        .args(["cluster", "--scenario", name, "--base-port", &base.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("[scenario] PASS"), "{stdout}\n{stderr}");
}

pub fn load_spec(op: BenchOp, clients: usize, conns: usize, duration: Duration) -> LoadSpec {
    LoadSpec {
        clients,
        conns,
        duration,
        warmup: Duration::from_millis(200),
        value_size: 100,
        keys: 1000,
        op,
        request_timeout: Duration::from_secs(1),
    }
}

/// The resident set size of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A small filesystem of its own (tmpfs, mounted for the test, unmounted on
/// drop): a disk that fills up. Needs root, as CI has.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn new(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a {bytes}-byte tmpfs to fill a disk and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// The `raft-client` binary of this workspace, built once per test process
/// with the tests' profile (a no-op after `cargo test --workspace`, which
/// built it; `cargo test -p raft-node` builds it here), so that tests run
/// the command line a user runs.
pub fn client_bin() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let out = Command::new(cargo)
            .args(["build", "--profile", "test", "-p", "raft-client", "--bin", "raft-client"])
            .arg("--message-format=json-render-diagnostics")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo to build raft-client");
        assert!(out.status.success(), "cannot build raft-client for the command-line tests");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "raft-client")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo named no raft-client executable")
    })
    .clone()
}

/// What one `raft-client` run said.
#[derive(Debug)]
pub struct CliRun {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl std::fmt::Display for CliRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\nstdout:\n{}stderr:\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

/// Runs `raft-client --cluster CLUSTER ARGS...` (without blocking the
/// runtime: writers on it go on meanwhile); it must end within `deadline`.
pub async fn raft_client(cluster: &str, args: &[&str], deadline: Duration) -> CliRun {
    let started = Instant::now();
    let run = tokio::process::Command::new(client_bin())
        .args(["--cluster", cluster, "--cluster-id", CLUSTER_ID])
        .args(args)
        .env_remove("RAFT_TIMEOUT_MS")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(deadline, run)
        .await
        .unwrap_or_else(|_| panic!("raft-client {args:?} still runs after {deadline:?}"))
        .expect("run raft-client");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    CliRun {
        success: out.status.success(),
        code: out.status.code(),
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
        took: started.elapsed(),
    }
}
