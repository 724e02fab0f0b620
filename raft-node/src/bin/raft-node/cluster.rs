//! `raft-node cluster`: a local cluster of real `raft-node run` child
//! processes, and the classic failure experiments as scripted scenarios.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raft_client::{Client, ClientConfig};
use raft_core::{NodeId, Role};
use raft_kv::NodeStatus;

/// How to lay out the local cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of nodes.
    pub nodes: u64,
    /// Node i listens on 127.0.0.1:(base_port + i).
    pub base_port: u16,
    /// Node i keeps its data in data_dir/i.
    pub data_dir: PathBuf,
    /// Remove the data directories first.
    pub fresh: bool,
}

/// A scripted failure experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Kill the leader, see a new one elected, restart the old one.
    LeaderCrash,
    /// Kill a follower, keep writing, restart it (it catches up by snapshot).
    FollowerCrash,
}

/// The local cluster: one child process per node.
pub struct LocalCluster {
    exe: PathBuf,
    options: ClusterOptions,
    extra_args: Vec<String>,
    children: BTreeMap<NodeId, Child>,
}

impl LocalCluster {
    /// Starts every node.
    pub fn start(options: ClusterOptions, extra_args: Vec<String>) -> Result<LocalCluster, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the raft-node executable: {e}"))?;
        if options.fresh {
            for id in 1..=options.nodes {
                let dir = options.data_dir.join(id.to_string());
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)
                        .map_err(|e| format!("cannot remove {}: {e}", dir.display()))?;
                }
            }
        }
        let mut cluster = LocalCluster { exe, options, extra_args, children: BTreeMap::new() };
        for id in 1..=cluster.options.nodes {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// The address of node `id`.
    pub fn addr(&self, id: NodeId) -> String {
        format!("127.0.0.1:{}", u64::from(self.options.base_port) + id)
    }

    /// Every node's address, comma-separated.
    pub fn addrs(&self) -> String {
        (1..=self.options.nodes).map(|id| self.addr(id)).collect::<Vec<_>>().join(",")
    }

    /// Starts (or restarts) node `id` from its data directory.
    pub fn spawn(&mut self, id: NodeId) -> Result<(), String> {
        let peers: Vec<String> =
            (1..=self.options.nodes).filter(|&p| p != id).map(|p| format!("{p}={}", self.addr(p))).collect();
        let mut command = Command::new(&self.exe);
        command.arg("run");
        if peers.is_empty() {
            command.arg("--single-node");
        }
        let mut child = command
            .args(["--id", &id.to_string()])
            .args(["--listen", &self.addr(id)])
            .args(["--peers", &peers.join(",")])
            .arg("--data-dir")
            .arg(self.options.data_dir.join(id.to_string()))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start node {id}: {e}"))?;
        prefix_lines(id, child.stdout.take());
        prefix_lines(id, child.stderr.take());
        self.children.insert(id, child);
        Ok(())
    }

    /// SIGKILLs node `id` and waits for it to die.
    pub fn kill(&mut self, id: NodeId) {
        if let Some(mut child) = self.children.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id of node `id`, if it runs.
    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.children.get(&id).map(Child::id)
    }

    /// The first node whose process exited on its own, with its exit status.
    pub fn exited(&mut self) -> Option<(NodeId, String)> {
        self.children.iter_mut().find_map(|(&id, c)| c.try_wait().ok().flatten().map(|s| (id, s.to_string())))
    }

    /// Waits until every node answers a status request; fails early, naming
    /// the node, if one exits (a port in use, a damaged data directory...).
    pub async fn wait_ready(&mut self, deadline: Duration) -> Result<(), String> {
        let probe = Client::new(ClientConfig::new(
            &self.addrs(),
            raft_client::DEFAULT_CLUSTER_ID,
            Duration::from_millis(300),
        ))
        .map_err(|e| e.to_string())?;
        let end = Instant::now() + deadline;
        loop {
            if let Some((id, status)) = self.exited() {
                return Err(format!("node {id} exited during start-up ({status}); see its log lines above"));
            }
            if probe.status_all().await.iter().all(|(_, s)| s.is_ok()) {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(format!("not every node answered within {deadline:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reports children that exited on their own.
    pub fn reap(&mut self) {
        let exited: Vec<(NodeId, String)> = self
            .children
            .iter_mut()
            .filter_map(|(&id, c)| c.try_wait().ok().flatten().map(|s| (id, s.to_string())))
            .collect();
        for (id, status) in exited {
            eprintln!("[cluster] node {id} exited ({status})");
            self.children.remove(&id);
        }
    }

    /// SIGTERMs every node and waits (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        for child in self.children.values() {
            // SAFETY-free: kill(2) with a pid we own.
            unsafe_free_sigterm(child.id());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (id, mut child) in std::mem::take(&mut self.children) {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        eprintln!("[cluster] node {id} ignored SIGTERM; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if !self.children.is_empty() {
            self.stop();
        }
    }
}

fn unsafe_free_sigterm(pid: u32) {
    // `kill -TERM` keeps this crate free of unsafe code.
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
}

fn prefix_lines(id: NodeId, stream: Option<impl Read + Send + 'static>) {
    if let Some(stream) = stream {
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                // One write per line, so lines of different nodes never interleave.
                let line = format!("[node {id}] {line}\n");
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
        });
    }
}

/// Entry point of `raft-node cluster`.
pub fn main(options: ClusterOptions, scenario: Option<Scenario>) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    match scenario {
        None => serve(options, &runtime),
        Some(s) => {
            let result = runtime.block_on(run_scenario(options, s));
            match &result {
                Ok(()) => println!("[scenario] PASS"),
                Err(reason) => println!("[scenario] FAIL: {reason}"),
            }
            result.map_err(|e| format!("scenario failed: {e}"))
        }
    }
}

fn serve(options: ClusterOptions, runtime: &tokio::runtime::Runtime) -> Result<(), String> {
    let mut cluster = LocalCluster::start(options, Vec::new())?;
    eprintln!(
        "[cluster] {} nodes started; data in {}.\n[cluster] try:  raft-client --cluster {} set x 5\n[cluster]       raft-client --cluster {} status\n[cluster] Ctrl-C stops every node.",
        cluster.options.nodes,
        cluster.options.data_dir.display(),
        cluster.addrs(),
        cluster.addrs()
    );
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
        let mut reap = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = reap.tick() => cluster.reap(),
            }
        }
        Ok::<(), String>(())
    })?;
    eprintln!("[cluster] stopping every node");
    cluster.stop();
    Ok(())
}

fn say(line: String) {
    let line = format!("[scenario] {line}\n");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
}

async fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> Result<T, String> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() > end {
            return Err(format!("timed out after {deadline:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn leader(client: &Client, not: Option<NodeId>) -> Option<NodeStatus> {
    let statuses = client.status_all().await;
    statuses.into_iter().filter_map(|(_, s)| s.ok()).find(|s| s.role == Role::Leader && Some(s.id) != not)
}

async fn run_scenario(options: ClusterOptions, scenario: Scenario) -> Result<(), String> {
    // A small snapshot threshold, so that the restarted follower has to catch
    // up by snapshot: the log it missed is compacted by then.
    let extra = vec!["--snapshot-entries".to_string(), "20".to_string()];
    let mut cluster = LocalCluster::start(options, extra)?;
    let config =
        ClientConfig::new(&cluster.addrs(), raft_client::DEFAULT_CLUSTER_ID, Duration::from_secs(10));
    let status_client = Client::new(ClientConfig { timeout: Duration::from_millis(300), ..config.clone() })
        .map_err(|e| e.to_string())?;
    let mut client = Client::new(config).map_err(|e| e.to_string())?;

    cluster.wait_ready(Duration::from_secs(10)).await?;
    say(format!("started {} nodes at {}", cluster.options.nodes, cluster.addrs()));
    let first =
        wait_for("a leader", Duration::from_secs(10), async || leader(&status_client, None).await).await?;
    say(format!("node {} is leader in term {}", first.id, first.term));

    let mut written = BTreeMap::new();
    for i in 1..=5 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        client.put(k.as_bytes(), v.as_bytes()).await.map_err(|e| format!("write {k} failed: {e}"))?;
        written.insert(k, v);
    }
    say("wrote k1..k5".to_string());

    let victim = match scenario {
        Scenario::LeaderCrash => first.id,
        Scenario::FollowerCrash => {
            (1..=cluster.options.nodes).find(|&id| id != first.id).expect("a follower")
        }
    };
    let role = if victim == first.id { "leader" } else { "follower" };
    say(format!("SIGKILL node {victim} ({role}, pid {})", cluster.pid(victim).unwrap_or(0)));
    let killed_at = Instant::now();
    cluster.kill(victim);

    if scenario == Scenario::LeaderCrash {
        let new = wait_for("a new leader", Duration::from_secs(10), async || {
            leader(&status_client, Some(victim)).await
        })
        .await?;
        say(format!(
            "node {} elected leader in term {} ({} ms after the kill)",
            new.id,
            new.term,
            killed_at.elapsed().as_millis()
        ));
    }
    for i in 6..=40 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        client.put(k.as_bytes(), v.as_bytes()).await.map_err(|e| format!("write {k} failed: {e}"))?;
        written.insert(k, v);
    }
    let acked_at = killed_at.elapsed();
    say(format!("wrote k6..k40 with node {victim} down ({} ms after the kill)", acked_at.as_millis()));

    cluster.spawn(victim)?;
    cluster.wait_ready(Duration::from_secs(10)).await?;
    say(format!("restarted node {victim} from its data directory"));
    let leader_now =
        wait_for("a leader", Duration::from_secs(10), async || leader(&status_client, None).await).await?;
    let target = leader_now.commit;
    let victim_addr = cluster.addr(victim);
    let caught_up = wait_for("the restarted node to catch up", Duration::from_secs(15), async || {
        match status_client.ask(&victim_addr, raft_kv::RequestKind::Status).await {
            Ok(raft_kv::ResponseKind::Status(s)) if s.applied >= target => Some(s),
            _ => None,
        }
    })
    .await?;
    say(format!(
        "node {victim} caught up: applied {} >= leader commit {target} (snapshot index {})",
        caught_up.applied, caught_up.snapshot_index
    ));

    // Every node holds the same committed entries where their logs overlap,
    // and every acknowledged write reads back.
    let mut logs = Vec::new();
    for id in 1..=cluster.options.nodes {
        let entries = status_client.log(&cluster.addr(id), 1, 10_000).await.map_err(|e| e.to_string())?;
        logs.push((id, entries));
    }
    for (id, entries) in &logs[1..] {
        let (base_id, base) = &logs[0];
        for e in entries.iter().filter(|e| e.committed) {
            if let Some(b) = base.iter().find(|b| b.index == e.index && b.committed) {
                if (b.term, &b.command) != (e.term, &e.command) {
                    return Err(format!(
                        "node {id} and node {base_id} differ at committed index {}: {:?} vs {:?}",
                        e.index, e.command, b.command
                    ));
                }
            }
        }
    }
    say("every node holds the same committed entries".to_string());
    for (k, v) in &written {
        let got = client.get(k.as_bytes(), false).await.map_err(|e| format!("read {k} failed: {e}"))?;
        if got.as_deref() != Some(v.as_bytes()) {
            return Err(format!(
                "{k} reads {:?}, expected {v}",
                got.map(|g| String::from_utf8_lossy(&g).into_owned())
            ));
        }
    }
    say(format!("all {} acknowledged writes read back", written.len()));
    cluster.stop();
    Ok(())
}
