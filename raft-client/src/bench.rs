//! Load generation for the benchmark workloads of BENCHMARKS.md.
//!
//! - [`run_load`]: W1 (puts) and R1 (linearizable gets). `clients` closed-loop
//!   logical clients (one request in flight each) share `conns` connections to
//!   the leader; requests are pipelined on each connection and matched to
//!   their answers by request id, as etcd's own benchmark tool does over gRPC.
//! - [`run_failover`]: F1. Writes under load, SIGKILLs the leader (found by
//!   its pid in `status`), measures the time to the first write acknowledged
//!   by the new leader, then reads back every acknowledged write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use raft_codec as codec;
use raft_kv::{ClientRequest, ClientResponse, Command, RequestKind, ResponseKind, WriteOp};
use raft_net::transport::{self, NetError};
use raft_net::wire::Sender;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::{fresh_client_id, Client, ClientConfig};

/// Which operation a load run issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchOp {
    /// W1: puts of a random key.
    Put,
    /// R1: linearizable gets of a random key.
    Get,
}

/// The shape of a load run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Closed-loop logical clients.
    pub clients: usize,
    /// Connections they share (each to the leader).
    pub conns: usize,
    /// Measured duration, after the warm-up.
    pub duration: Duration,
    /// Warm-up (not measured).
    pub warmup: Duration,
    /// Bytes per value.
    pub value_size: usize,
    /// Keys are drawn uniformly from `0..keys`.
    pub keys: u64,
    /// Put or get.
    pub op: BenchOp,
    /// Give up on one request after this long (counted as an error).
    pub request_timeout: Duration,
}

/// What a load run measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// Put or get.
    pub op: BenchOp,
    /// Logical clients.
    pub clients: usize,
    /// Connections.
    pub conns: usize,
    /// The leader the load went to.
    pub leader: String,
    /// Measured seconds.
    pub seconds: f64,
    /// Successful operations in the measured window.
    pub ops: u64,
    /// `ops / seconds`.
    pub ops_per_s: f64,
    /// Latency percentiles of successful operations, microseconds.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
    /// Failed operations by kind (measured window only).
    pub errors: std::collections::BTreeMap<String, u64>,
}

/// A pipelined connection: requests go out through a writer task that
/// coalesces whatever is queued into one socket write; a reader task routes
/// answers to their waiters by request id.
#[derive(Clone)]
struct Pipe {
    tx: mpsc::Sender<(ClientRequest, oneshot::Sender<ResponseKind>)>,
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<ResponseKind>>>>;

impl Pipe {
    async fn open(addr: &str, cluster_id: &str) -> Result<Pipe, NetError> {
        let (framed, _) = transport::connect(addr, cluster_id, Sender::Client).await?;
        let (mut sink, mut stream) = framed.split();
        let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
        let (tx, mut rx) = mpsc::channel::<(ClientRequest, oneshot::Sender<ResponseKind>)>(65_536);
        let w = waiters.clone();
        tokio::spawn(async move {
            while let Some((request, waiter)) = rx.recv().await {
                let mut batch = vec![(request, waiter)];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                    if batch.len() >= 1024 {
                        break;
                    }
                }
                for (request, waiter) in batch {
                    let Ok(frame) = codec::encode(&request) else { continue };
                    w.lock().expect("waiter map").insert(request.id, waiter);
                    if sink.feed(Bytes::from(frame)).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Ok(response) = codec::decode::<ClientResponse>(&frame) else { break };
                if let Some(waiter) = waiters.lock().expect("waiter map").remove(&response.id) {
                    let _ = waiter.send(response.result);
                }
            }
            // Connection gone: dropping the waiters tells every caller.
            waiters.lock().expect("waiter map").clear();
        });
        Ok(Pipe { tx })
    }

    async fn call(&self, request: ClientRequest) -> Result<ResponseKind, &'static str> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((request, tx)).await.map_err(|_| "disconnected")?;
        rx.await.map_err(|_| "disconnected")
    }
}

/// A tiny xorshift PRNG per logical client (the load needs no quality, only speed).
struct FastRng(u64);

impl FastRng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn key_bytes(k: u64) -> Vec<u8> {
    format!("{k:08}").into_bytes()
}

fn error_kind(answer: &ResponseKind) -> String {
    match answer {
        ResponseKind::NotLeader { .. } => "not_leader".into(),
        ResponseKind::Unknown { .. } => "unknown_outcome".into(),
        ResponseKind::Error { message } => {
            if message.contains("backpressure") || message.contains("Backpressure") {
                "backpressure".into()
            } else {
                "server_error".into()
            }
        }
        other => format!("unexpected_answer_{}", variant_name(other)),
    }
}

fn variant_name(answer: &ResponseKind) -> &'static str {
    match answer {
        ResponseKind::Written { .. } => "written",
        ResponseKind::Value { .. } => "value",
        ResponseKind::NotLeader { .. } => "not_leader",
        ResponseKind::Unknown { .. } => "unknown",
        ResponseKind::Status(_) => "status",
        ResponseKind::Log(_) => "log",
        ResponseKind::Error { .. } => "error",
        ResponseKind::Invalid { .. } => "invalid",
        ResponseKind::Members(_) => "members",
        ResponseKind::MembersChanged { .. } => "members_changed",
        ResponseKind::LeaderTransferred { .. } => "leader_transferred",
    }
}

/// Finds the leader, retrying until `deadline`.
pub async fn wait_for_leader(config: &ClientConfig, deadline: Duration) -> anyhow::Result<String> {
    let client = Client::new(ClientConfig { timeout: Duration::from_millis(500), ..config.clone() })?;
    let start = Instant::now();
    loop {
        if let Some((addr, _)) = client.find_leader().await {
            return Ok(addr);
        }
        if start.elapsed() > deadline {
            anyhow::bail!("no node reports itself leader after {deadline:?}; is the cluster running?");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs W1 or R1 against the leader of `config`'s cluster.
pub async fn run_load(config: &ClientConfig, spec: &LoadSpec) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(spec.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(spec.keys > 0, "--keys must be at least 1");
    let leader = wait_for_leader(config, Duration::from_secs(10)).await?;
    let conns = spec.conns.clamp(1, spec.clients);
    if spec.op == BenchOp::Get {
        // Reads of absent keys are as costly as any other read, but fill the
        // key space first so that reads return values as in etcd's run.
        let mut pipes = Vec::with_capacity(conns);
        for _ in 0..conns {
            pipes.push(
                Pipe::open(&leader, &config.cluster_id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{leader}: {e}"))?,
            );
        }
        prefill(&pipes, spec).await?;
    }
    let start = Instant::now();
    let window = Window { from: start + spec.warmup, until: start + spec.warmup + spec.duration };
    let mut tasks = Vec::with_capacity(conns);
    for conn in 0..conns {
        let framed = transport::connect(&leader, &config.cluster_id, Sender::Client)
            .await
            .map_err(|e| anyhow::anyhow!("{leader}: {e}"))?
            .0;
        // Logical clients conn, conn + conns, conn + 2 * conns, ... share this connection.
        let clients: Vec<Logical> = (conn..spec.clients).step_by(conns).map(Logical::new).collect();
        tasks.push(tokio::spawn(drive_connection(framed, clients, spec.clone(), window)));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
    for task in tasks {
        let (h, e) = task.await?;
        hist.add(&h).expect("same bounds");
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
    }
    let seconds = spec.duration.as_secs_f64();
    Ok(LoadReport {
        op: spec.op,
        clients: spec.clients,
        conns,
        leader,
        seconds,
        ops: hist.len(),
        ops_per_s: hist.len() as f64 / seconds,
        p50_us: hist.value_at_quantile(0.50),
        p90_us: hist.value_at_quantile(0.90),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        max_us: hist.max(),
        mean_us: hist.mean(),
        errors,
    })
}

/// The measured part of a run.
#[derive(Clone, Copy, Debug)]
struct Window {
    from: Instant,
    until: Instant,
}

/// One closed-loop logical client: at most one request in flight.
struct Logical {
    client_id: u64,
    rng: FastRng,
    seq: u64,
    request_id: u64,
    /// When the request in flight was sent (`None`: none in flight).
    sent: Option<Instant>,
    /// After an error answer, the next request waits until then.
    retry_at: Option<Instant>,
}

impl Logical {
    fn new(c: usize) -> Logical {
        let client_id = fresh_client_id() ^ (c as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Logical { client_id, rng: FastRng(client_id | 1), seq: 0, request_id: 0, sent: None, retry_at: None }
    }

    /// The next request of this client, number `slot` on its connection.
    fn next_request(&mut self, slot: usize, spec: &LoadSpec, value: &mut [u8]) -> ClientRequest {
        let key = key_bytes(self.rng.next() % spec.keys);
        self.request_id += 1;
        let kind = match spec.op {
            BenchOp::Put => {
                self.seq += 1;
                for chunk in value.chunks_mut(8) {
                    let r = self.rng.next().to_le_bytes();
                    chunk.copy_from_slice(&r[..chunk.len()]);
                }
                let op = WriteOp::Put { key, value: value.to_vec() };
                RequestKind::Write(Command { client_id: self.client_id, seq: self.seq, op })
            }
            BenchOp::Get => RequestKind::Get { key, stale: false },
        };
        // The slot in the top bits routes the answer back without a lookup.
        ClientRequest { id: ((slot as u64) << 40) | self.request_id, kind }
    }
}

/// Runs the logical clients of one connection from a single task: every
/// answer read is matched to its client by the request id's top bits, and
/// that client's next request is written at once; the answers that arrived
/// together are handled together and their follow-ups go out in one socket
/// write. (No task, channel or timer per request: the load generator costs
/// little enough to stay out of the way of what it measures.)
async fn drive_connection(
    framed: transport::FramedStream,
    mut clients: Vec<Logical>,
    spec: LoadSpec,
    window: Window,
) -> (Histogram<u64>, std::collections::BTreeMap<String, u64>) {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut sink, mut stream) = framed.split();
    let mut value = vec![0u8; spec.value_size];
    let count = |errors: &mut std::collections::BTreeMap<String, u64>, kind: String, at: Instant| {
        if at >= window.from && at <= window.until {
            *errors.entry(kind).or_default() += 1;
        }
    };
    let mut in_flight = 0usize;
    let mut gave_up = false;
    'run: loop {
        // Send what is due: first requests, and retries whose pause is over.
        let now = Instant::now();
        if now >= window.until {
            break;
        }
        let mut wrote = false;
        for (slot, client) in clients.iter_mut().enumerate() {
            if client.sent.is_none() && client.retry_at.is_none_or(|at| at <= now) {
                client.retry_at = None;
                let request = client.next_request(slot, &spec, &mut value);
                let Ok(frame) = codec::encode(&request) else { continue };
                client.sent = Some(Instant::now());
                in_flight += 1;
                wrote = true;
                if sink.feed(Bytes::from(frame)).await.is_err() {
                    gave_up = true;
                    count(&mut errors, "disconnected".into(), now);
                    break 'run;
                }
            }
        }
        if wrote && sink.flush().await.is_err() {
            gave_up = true;
            count(&mut errors, "disconnected".into(), now);
            break;
        }
        // Wait for an answer, for the end of the run, or for the next retry.
        let next_retry = clients.iter().filter_map(|c| c.retry_at).min();
        let wake = next_retry.map_or(window.until, |at| at.min(window.until));
        let deadline = if in_flight > 0 { wake.min(now + spec.request_timeout) } else { wake };
        let first = match tokio::time::timeout_at(deadline.into(), stream.next()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                gave_up = true;
                count(&mut errors, "disconnected".into(), Instant::now());
                break;
            }
            Err(_) if in_flight > 0 && Instant::now() >= now + spec.request_timeout => {
                // Nothing answered for a whole timeout: every request in flight timed out.
                for client in clients.iter_mut().filter(|c| c.sent.is_some()) {
                    client.sent = None;
                    count(&mut errors, "timeout".into(), Instant::now());
                }
                break;
            }
            Err(_) => continue,
        };
        // Handle this answer and every other one already received.
        let mut next = Some(first);
        let mut flush = false;
        while let Some(frame) = next.take() {
            let done = Instant::now();
            let Ok(frame) = frame else {
                gave_up = true;
                count(&mut errors, "disconnected".into(), done);
                break 'run;
            };
            let Ok(response) = codec::decode::<ClientResponse>(&frame) else {
                gave_up = true;
                count(&mut errors, "undecodable_answer".into(), done);
                break 'run;
            };
            // The top bits name the client, the rest must be its request in
            // flight: anything else (a duplicate, a stray id) is ignored.
            let slot = (response.id >> 40) as usize;
            let Some(client) = clients
                .get_mut(slot)
                .filter(|c| c.sent.is_some() && response.id & ((1 << 40) - 1) == c.request_id)
            else {
                continue;
            };
            let sent = client.sent.take().expect("checked");
            in_flight -= 1;
            match response.result {
                ResponseKind::Written { .. } | ResponseKind::Value { .. } => {
                    if sent >= window.from && done <= window.until {
                        hist.saturating_record(done.duration_since(sent).as_micros().max(1) as u64);
                    }
                    if done < window.until {
                        let request = client.next_request(slot, &spec, &mut value);
                        if let Ok(frame) = codec::encode(&request) {
                            client.sent = Some(Instant::now());
                            in_flight += 1;
                            flush = true;
                            if sink.feed(Bytes::from(frame)).await.is_err() {
                                gave_up = true;
                                count(&mut errors, "disconnected".into(), done);
                                break 'run;
                            }
                        }
                    }
                }
                other => {
                    if sent >= window.from && done <= window.until {
                        *errors.entry(error_kind(&other)).or_default() += 1;
                    }
                    client.retry_at = Some(done + Duration::from_millis(5));
                }
            }
            next = stream.next().now_or_never().flatten();
        }
        if flush && sink.flush().await.is_err() {
            gave_up = true;
            count(&mut errors, "disconnected".into(), Instant::now());
            break;
        }
    }
    // A request left unanswered past its timeout while others were answered
    // (so the connection never went quiet) is a timeout too. (Not after a
    // disconnection, which counts once for the connection.)
    for client in clients.iter().filter(|_| !gave_up) {
        if let Some(sent) = client.sent {
            if sent >= window.from && sent + spec.request_timeout <= window.until {
                *errors.entry("timeout".into()).or_default() += 1;
            }
        }
    }
    (hist, errors)
}

/// Writes every key once (R1 reads existing keys).
async fn prefill(pipes: &[Pipe], spec: &LoadSpec) -> anyhow::Result<()> {
    let client_id = fresh_client_id();
    let value = vec![b'v'; spec.value_size];
    let keys: Vec<u64> = (0..spec.keys).collect();
    for (chunk_no, chunk) in keys.chunks(256).enumerate() {
        let mut calls = Vec::with_capacity(chunk.len());
        for (i, &k) in chunk.iter().enumerate() {
            let pipe = pipes[i % pipes.len()].clone();
            let seq = k + 1;
            let request = ClientRequest {
                id: (1 << 62) + (chunk_no * 256 + i) as u64,
                kind: RequestKind::Write(Command {
                    client_id,
                    seq,
                    op: WriteOp::Put { key: key_bytes(k), value: value.clone() },
                }),
            };
            calls.push(async move { pipe.call(request).await });
        }
        for answer in futures::future::join_all(calls).await {
            match answer {
                Ok(ResponseKind::Written { .. }) => {}
                Ok(other) => anyhow::bail!("prefill write failed: {}", error_kind(&other)),
                Err(e) => anyhow::bail!("prefill write failed: {e}"),
            }
        }
    }
    Ok(())
}

/// What a failover run measured.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverReport {
    /// The leader that was killed.
    pub killed_leader: String,
    /// Its pid.
    pub killed_pid: u32,
    /// The leader that took over.
    pub new_leader: String,
    /// From the SIGKILL to the first write acknowledged by the new leader.
    pub failover_ms: f64,
    /// Writes acknowledged over the whole run.
    pub acknowledged: u64,
    /// Acknowledged writes not found (with their value) afterwards. Must be 0.
    pub missing: u64,
}

/// F1: `clients` closed-loop writers of unique keys; after `before` the
/// leader is SIGKILLed; writing goes on for `after`; then every acknowledged
/// write is read back (linearizably) from the new leader.
pub async fn run_failover(
    config: &ClientConfig,
    clients: usize,
    before: Duration,
    after: Duration,
) -> anyhow::Result<FailoverReport> {
    let leader_addr = wait_for_leader(config, Duration::from_secs(10)).await?;
    let probe = Client::new(ClientConfig { timeout: Duration::from_millis(500), ..config.clone() })?;
    let status = match probe.ask(&leader_addr, RequestKind::Status).await? {
        ResponseKind::Status(s) => s,
        other => anyhow::bail!("unexpected status answer {other:?}"),
    };
    let run_id = fresh_client_id();
    let stop = Arc::new(AtomicBool::new(false));
    // (key, value, when acknowledged, by which node)
    type Acked = Vec<(Vec<u8>, Vec<u8>, Instant, String)>;
    let acked: Arc<Mutex<Acked>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = Client::new(ClientConfig { timeout: Duration::from_secs(10), ..config.clone() })?;
        let stop = stop.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("f1-{run_id:x}-{c}-{n}").into_bytes();
                let value = format!("v{n}").into_bytes();
                if client.put(&key, &value).await.is_ok() {
                    let by = client.target().to_string();
                    acked.lock().expect("acked list").push((key, value, Instant::now(), by));
                }
            }
        }));
    }
    tokio::time::sleep(before).await;
    let killed_at = Instant::now();
    kill_pid(status.pid)?;
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let acked = Arc::try_unwrap(acked).map_err(|_| anyhow::anyhow!("writers still running"))?;
    let acked = acked.into_inner().expect("acked list");
    let remaining: Vec<String> = config.cluster.iter().filter(|a| **a != leader_addr).cloned().collect();
    let survivors = ClientConfig { cluster: remaining, ..config.clone() };
    let new_leader = wait_for_leader(&survivors, Duration::from_secs(10)).await?;
    // The first write acknowledged by another node than the killed leader.
    let first_after = acked
        .iter()
        .filter(|(_, _, at, by)| *at > killed_at && *by != leader_addr)
        .map(|(_, _, at, _)| *at)
        .min();
    let failover_ms = first_after.map_or(f64::NAN, |at| at.duration_since(killed_at).as_secs_f64() * 1e3);
    let mut reader = Client::new(ClientConfig { timeout: Duration::from_secs(10), ..survivors.clone() })?;
    let mut missing = 0;
    for (key, value, _, _) in &acked {
        match reader.get(key, false).await {
            Ok(Some(v)) if v == *value => {}
            _ => missing += 1,
        }
    }
    Ok(FailoverReport {
        killed_leader: leader_addr,
        killed_pid: status.pid,
        new_leader,
        failover_ms,
        acknowledged: acked.len() as u64,
        missing,
    })
}

fn kill_pid(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill").arg("-9").arg(pid.to_string()).status()?;
    anyhow::ensure!(status.success(), "kill -9 {pid} failed; is the leader on this machine?");
    Ok(())
}
