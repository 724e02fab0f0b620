//! The node's Prometheus metrics, served at `GET /metrics` in the text
//! format (through `prometheus-client`), under the `raftlite_` prefix and
//! modeled on etcd's names. Labels stay bounded: none carries a key.
//!
//! Counters the event loop or the WAL thread bump are atomics (no lock on
//! the write path); the gauges of the node's state are set from its status
//! when a scrape comes, so that a node nobody scrapes pays nothing for them.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use raft_kv::{MemberView, NodeStatus, ProposalCounts, RequestKind, ResponseKind};
use raft_net::transport::{NetCounters, PeerTraffic};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The operations `client_requests_total` counts, by label.
pub(crate) const OPS: [&str; 7] =
    ["write", "get", "status", "log", "members", "change_members", "transfer_leader"];

/// The results it counts them by.
const RESULTS: [&str; 5] = ["ok", "not_leader", "unknown", "retry", "invalid"];

/// The label index of a request's operation in [`OPS`].
pub(crate) fn op_of(kind: &RequestKind) -> u8 {
    match kind {
        RequestKind::Write(_) => 0,
        RequestKind::Get { .. } => 1,
        RequestKind::Status => 2,
        RequestKind::Log { .. } => 3,
        RequestKind::Members => 4,
        RequestKind::ChangeMembers(_) => 5,
        RequestKind::TransferLeader { .. } => 6,
    }
}

/// The label index of an answer's result in [`RESULTS`].
fn result_of(answer: &ResponseKind) -> usize {
    match answer {
        ResponseKind::NotLeader { .. } => 1,
        ResponseKind::Unknown { .. } => 2,
        ResponseKind::Error { .. } => 3,
        ResponseKind::Invalid { .. } => 4,
        _ => 0,
    }
}

/// Every metric of one node.
pub(crate) struct Metrics {
    registry: Registry,
    has_leader: Gauge,
    is_leader: Gauge,
    term: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    last_index: Gauge,
    snapshot_index: Gauge,
    keys: Gauge,
    /// Times this node saw the leader change (to another, or to none and
    /// back), as etcd's `etcd_server_leader_changes_seen_total`.
    pub(crate) leader_changes_seen: Counter,
    /// Durations of the WAL's fsyncs, in seconds.
    pub(crate) wal_fsync_duration: Histogram,
    /// Bytes of entries appended to the WAL.
    pub(crate) wal_write_bytes: Counter,
    /// Snapshots this node took and wrote.
    pub(crate) snapshots_saved: Counter,
    /// How long taking one took (serializing and writing), in seconds.
    pub(crate) snapshot_save_duration: Histogram,
    /// Snapshots from a leader that this node installed.
    pub(crate) snapshots_installed: Counter,
    /// Snapshots from a leader that did not check and were dropped.
    pub(crate) snapshots_rejected: Counter,
    resident_memory_bytes: Gauge,
    open_fds: Gauge,
    /// Client requests answered, by operation and result: one counter per
    /// pair, made up front (no label lookup per request).
    client_requests: Vec<Counter>,
    /// Client requests waiting for their answers (set by the event loop).
    pub(crate) proposals_pending: Gauge,
    /// On the leader, how many entries each follower is behind.
    follower_lag: Family<Vec<(String, String)>, Gauge>,
    /// What the proposals came to ([`ProposalCounts`]).
    proposals_committed: Counter,
    proposals_applied: Counter,
    proposals_failed: Counter,
}

impl Metrics {
    /// The metrics of a node whose transport counts in `net`.
    pub(crate) fn new(net: Arc<NetCounters>) -> Metrics {
        let mut registry = Registry::with_prefix("raftlite");
        registry.register_collector(Box::new(NetCollector(net)));
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let seconds = |registry: &mut Registry, name: &str, help: &str, start: f64| {
            let h = Histogram::new(exponential_buckets(start, 2.0, 16));
            registry.register(name, help, h.clone());
            h
        };
        let requests = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "client_requests",
            "Client requests answered (binary protocol and HTTP), by operation and result",
            requests.clone(),
        );
        let client_requests = OPS
            .iter()
            .flat_map(|op| RESULTS.iter().map(move |result| (op, result)))
            .map(|(op, result)| {
                requests
                    .get_or_create(&vec![
                        ("op".into(), op.to_string()),
                        ("result".into(), result.to_string()),
                    ])
                    .clone()
            })
            .collect();
        let follower_lag = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "follower_lag_entries",
            "On the leader: entries each follower is behind the leader's last index",
            follower_lag.clone(),
        );
        let r = &mut registry;
        Metrics {
            proposals_committed: counter(
                r,
                "proposals_committed",
                "Entries this node learned committed since it started (past what it had applied)",
            ),
            proposals_applied: counter(r, "proposals_applied", "Entries applied to the store since it started"),
            proposals_failed: counter(
                r,
                "proposals_failed",
                "Writes and membership changes this node proposed whose outcome is unknown (leadership lost, \
                 entry replaced) or that the core refused",
            ),
            client_requests,
            follower_lag,
            proposals_pending: gauge(
                r,
                "proposals_pending",
                "Client requests waiting for their answers (writes, reads, changes)",
            ),
            has_leader: gauge(r, "has_leader", "Whether this node knows a leader (1) or not (0)"),
            is_leader: gauge(r, "is_leader", "Whether this node is the leader (1) or not (0)"),
            term: gauge(r, "term", "The node's current term"),
            commit_index: gauge(r, "commit_index", "The highest log index known committed"),
            applied_index: gauge(r, "applied_index", "The highest log index applied to the state machine"),
            last_index: gauge(r, "last_index", "The last index in the node's log"),
            snapshot_index: gauge(r, "snapshot_index", "The index of the node's latest snapshot"),
            keys: gauge(r, "keys", "Keys in the key-value store"),
            leader_changes_seen: counter(r, "leader_changes_seen", "Leader changes this node has seen"),
            wal_fsync_duration: seconds(r, "wal_fsync_duration_seconds", "WAL fsync durations", 0.000_1),
            wal_write_bytes: counter(r, "wal_write_bytes", "Bytes of entries appended to the WAL"),
            snapshots_saved: counter(r, "snapshot_save", "Snapshots taken and written by this node"),
            snapshot_save_duration: seconds(
                r,
                "snapshot_save_duration_seconds",
                "Time to serialize and write a snapshot",
                0.001,
            ),
            snapshots_installed: counter(r, "snapshot_install", "Snapshots from a leader installed"),
            snapshots_rejected: counter(r, "snapshot_rejected", "Snapshots from a leader that did not check"),
            resident_memory_bytes: gauge(
                r,
                "process_resident_memory_bytes",
                "Resident memory of the process",
            ),
            open_fds: gauge(r, "process_open_fds", "Open file descriptors of the process"),
            registry,
        }
    }

    /// Brings the proposal counters up to `counts` (called by the event
    /// loop, their one writer).
    pub(crate) fn proposals(&self, counts: ProposalCounts) {
        for (counter, total) in [
            (&self.proposals_committed, counts.committed),
            (&self.proposals_applied, counts.applied),
            (&self.proposals_failed, counts.failed),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Counts the answer to a request of operation `op` ([`op_of`]).
    pub(crate) fn answered(&self, op: u8, answer: &ResponseKind) {
        if let Some(counter) = self.client_requests.get(op as usize * RESULTS.len() + result_of(answer)) {
            counter.inc();
        }
    }

    /// The exposition, with the state gauges taken from `status` and, on
    /// the leader, the lag of each follower from `members`.
    pub(crate) fn render(&self, status: &NodeStatus, members: Option<&[MemberView]>) -> String {
        self.follower_lag.clear();
        for m in members.unwrap_or_default().iter().filter(|m| m.id != status.id) {
            let labels = vec![("peer".to_string(), m.id.to_string())];
            self.follower_lag.get_or_create(&labels).set(i64::try_from(m.lag_entries).unwrap_or(i64::MAX));
        }
        let set = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.has_leader, u64::from(status.leader.is_some()));
        set(&self.is_leader, u64::from(status.leader == Some(status.id)));
        set(&self.term, status.term);
        set(&self.commit_index, status.commit);
        set(&self.applied_index, status.applied);
        set(&self.last_index, status.last_index);
        set(&self.snapshot_index, status.snapshot_index);
        set(&self.keys, status.keys);
        set(&self.resident_memory_bytes, resident_memory_bytes());
        set(&self.open_fds, open_fds());
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// One of a peer's traffic counters.
type PeerField = fn(&PeerTraffic) -> &AtomicU64;

/// The transport's counters, read at each scrape: per peer, the bytes sent
/// and received and the failures each way; in all, the connections refused
/// and the messages dropped at a full peer queue.
#[derive(Debug)]
struct NetCollector(Arc<NetCounters>);

impl Collector for NetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let peers = self.0.peers();
        let per_peer: [(&str, &str, PeerField); 4] = [
            ("peer_sent_bytes", "Bytes of frames sent to each peer.", |t| &t.sent_bytes),
            ("peer_received_bytes", "Bytes of frames received from each peer.", |t| &t.received_bytes),
            (
                "peer_sent_failures",
                "Failures of the link to each peer (dial or hello failed, connection lost).",
                |t| &t.sent_failures,
            ),
            ("peer_received_failures", "Connections from each peer that ended with an error.", |t| {
                &t.received_failures
            }),
        ];
        for (name, help, field) in per_peer {
            let counter = ConstCounter::new(0u64);
            let mut metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for (id, traffic) in &peers {
                let labels = [("peer", id.to_string())];
                let value = ConstCounter::new(field(traffic).load(Ordering::Relaxed));
                value.encode(metric.encode_family(&labels)?)?;
            }
        }
        let totals = [
            (
                "connections_refused",
                "Connections closed for a bad hello, frame or sender, or past the connection caps.",
                &self.0.connections_refused,
            ),
            (
                "peer_messages_dropped",
                "Messages to peers dropped because the peer's queue was full.",
                &self.0.peer_messages_dropped,
            ),
        ];
        for (name, help, value) in totals {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        Ok(())
    }
}

/// The process's resident memory (Linux: `/proc/self/statm`; 0 elsewhere).
fn resident_memory_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .unwrap_or(0);
    // SAFETY: sysconf takes no pointers.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// The process's open file descriptors (Linux: `/proc/self/fd`; 0 elsewhere).
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}
