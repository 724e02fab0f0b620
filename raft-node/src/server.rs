//! The event loop of one node: a single task owns the Raft core and the state
//! machine and turns the outside world into core inputs; a WAL thread owns
//! the storage.
//!
//! One iteration: wait for a tick, an inbound frame or a finished fsync, take
//! every other frame already queued (up to a bound), feed them all to the
//! core, then execute the core's actions in order: persist batches go to the
//! WAL thread, messages to the peer links, committed entries to the state
//! machine. The WAL thread writes whatever batches have queued up and makes
//! them durable with one fsync (group commit), then reports the last one; the
//! core releases what depended on them (vote grants, append acks, the
//! leader's own match index) only then. So the event loop never blocks on
//! the disk: while one fsync runs, the next batch of proposals is already
//! being replicated (the leader writes its log in parallel with sending it,
//! thesis §10.2.1).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use raft_core::{
    Config, DurableState, EntryPayload, Membership, Message, MessageBody, NodeId, RaftNode, Snapshot,
    SnapshotMeta,
};
use raft_kv::{
    describe_token, ClientRequest, ClientResponse, Effect, KvStore, NodeStatus, Replica, ReplicaConfig,
    RequestKind, ResponseKind, WriteLimits,
};
use raft_net::transport::{
    self, ClientProtocol, ConnectionLimits, DataGuard, LinkIdentity, ListenerConfig, NetCounters, PeerLink,
    SharedPeers, SharedToken, StopReason,
};
use raft_net::wire::Sender;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::datadir::{self, Identity, StartFlags};
use crate::metrics::Metrics;
use crate::snapshots::{SnapshotDone, SnapshotJob, SnapshotWorker};
use crate::storage::{IncomingSnapshot, SnapshotFile, Storage, StorageError, StorageOptions};
use raft_net::ratelimit::WarnLimiter;

/// The key-value service's client protocol (`raft-kv`), as the listener
/// serves it.
#[derive(Debug)]
pub struct KvClients;

impl ClientProtocol for KvClients {
    type Request = ClientRequest;
    type Answer = ResponseKind;
    type Response = ClientResponse;
    fn request_id(request: &ClientRequest) -> u64 {
        request.id
    }
    fn response(id: u64, result: ResponseKind) -> ClientResponse {
        ClientResponse { id, result }
    }
    fn answer_bytes(result: &ResponseKind) -> usize {
        result.queued_bytes()
    }
}

type Inbound = transport::Inbound<KvClients>;
type Reply = transport::Reply<KvClients>;

/// Where the answer to a client request goes: its binary connection's
/// queue, or the HTTP request waiting for it.
#[derive(Debug)]
enum Answerer {
    /// A binary connection's, for a request of operation `op` (as
    /// [`crate::metrics::op_of`] numbers them).
    Binary(Reply, u8),
    Http(tokio::sync::oneshot::Sender<ResponseKind>, u8),
}

impl Answerer {
    fn binary(reply: Reply, kind: &RequestKind) -> Answerer {
        Answerer::Binary(reply, crate::metrics::op_of(kind))
    }

    fn http(reply: tokio::sync::oneshot::Sender<ResponseKind>, kind: &RequestKind) -> Answerer {
        Answerer::Http(reply, crate::metrics::op_of(kind))
    }

    fn send(self, answer: ResponseKind, metrics: &Metrics) {
        match self {
            Answerer::Binary(reply, op) => {
                metrics.answered(op, &answer);
                reply.send(answer)
            }
            // (A request that gave up waiting no longer listens.)
            Answerer::Http(reply, op) => {
                metrics.answered(op, &answer);
                drop(reply.send(answer))
            }
        }
    }
}

/// Everything a node needs to run.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// Address to listen on, for peers and clients alike.
    pub listen: String,
    /// The address others reach this node at (defaults to `listen`).
    pub advertise: String,
    /// Every other node: id and address.
    pub peers: BTreeMap<NodeId, String>,
    /// Where the WAL and snapshots live.
    pub data_dir: PathBuf,
    /// Every hello must carry this id.
    pub cluster_id: String,
    /// Length of one core tick.
    pub tick: Duration,
    /// Minimum election timeout (the maximum is twice this).
    pub election_timeout: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Take a snapshot after this many applied entries...
    pub snapshot_entries: u64,
    /// ...or once the commands applied since the last one hold this many bytes.
    pub snapshot_log_bytes: u64,
    /// The largest snapshot this node takes from a leader.
    pub snapshot_bytes_max: u64,
    /// fsync the WAL (only benchmarks of the non-durable path turn this off).
    pub sync: bool,
    /// Bound of the client session table.
    pub sessions_max: usize,
    /// Bootstrap a one-node cluster when `peers` is empty and the data
    /// directory is new (an empty `peers` alone is refused then).
    pub single_node: bool,
    /// A new node joining a running cluster (`--join`): it founds nothing,
    /// never campaigns, and waits to be added by the leader.
    pub join: bool,
    /// The largest key and value a client may write.
    pub limits: WriteLimits,
    /// What connections may take of this node.
    pub connection_limits: ConnectionLimits,
    /// Where to serve `/metrics` and the health probes in plain HTTP as
    /// well (`--metrics-listen`), if anywhere.
    pub metrics_listen: Option<String>,
}

/// How long a new member waits for each peer's answer to "do you know me
/// already?" before it bootstraps.
const BOOTSTRAP_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl NodeConfig {
    /// This node and its peers, with their addresses.
    fn members(&self) -> BTreeMap<NodeId, String> {
        let mut members = self.peers.clone();
        members.insert(self.id, self.advertise.clone());
        members
    }

    fn core_config(&self) -> anyhow::Result<Config> {
        let ticks = |d: Duration| -> u32 { (d.as_micros() / self.tick.as_micros().max(1)).max(1) as u32 };
        let mut config = Config::new(self.id);
        config.election_timeout_ticks_min = ticks(self.election_timeout);
        config.election_timeout_ticks_max = 2 * config.election_timeout_ticks_min;
        config.heartbeat_interval_ticks = ticks(self.heartbeat);
        config.seed = std::process::id() as u64 ^ (self.id << 32);
        config.snapshot_bytes_max = self.snapshot_bytes_max;
        config.validate().map_err(|e| anyhow::anyhow!("invalid timeouts: {e}"))?;
        self.limits
            .validate(config.max_append_bytes, transport::MAX_FRAME_BYTES)
            .map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

/// Work for the WAL thread, done in order.
enum WalCmd {
    /// Append this batch; report it once durable.
    Persist(raft_core::PersistBatch),
    /// Compact the WAL up to this snapshot, whose file the snapshot thread
    /// wrote durably.
    Compact(SnapshotMeta),
}

/// What the WAL thread reports.
enum WalEvent {
    /// Every batch up to this id is durable.
    Persisted(u64),
    /// The storage failed; the node must stop.
    Failed(anyhow::Error),
    /// The disk is full: appends wait (and are retried) until space is freed.
    DiskFull(String),
    /// Appends go through again after a full disk.
    DiskResumed,
}

/// Runs `f`, returning its result and how long it took in milliseconds.
pub(crate) fn timed<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let started = std::time::Instant::now();
    let result = f();
    (result, started.elapsed().as_millis() as u64)
}

/// How often the WAL thread tries again a batch that found the disk full.
const DISK_FULL_RETRY: Duration = Duration::from_millis(250);

/// Descriptors a node needs besides its connections: WAL segments, snapshot
/// files, the lock, the runtime's own.
const FDS_BESIDES_CONNECTIONS: u64 = 64;

/// Checks the open-file limit against `--max-connections` at start-up: raises
/// the soft limit up to the hard one if it is short, and if even that is
/// short, lowers the connection cap to fit it, saying so in one WARN line
/// (past the limit, accept fails and legitimate clients time out).
fn connection_limits_within_fd_limit(node: NodeId, limits: &ConnectionLimits) -> ConnectionLimits {
    let needed = limits.connections_max as u64 + FDS_BESIDES_CONNECTIONS;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read or write the one struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return limits.clone();
    }
    if limit.rlim_cur >= needed {
        return limits.clone();
    }
    let raised = libc::rlimit { rlim_cur: needed.min(limit.rlim_max), rlim_max: limit.rlim_max };
    // SAFETY: as above.
    let soft = if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        raised.rlim_cur
    } else {
        limit.rlim_cur
    };
    if soft >= needed {
        info!(node, from = limit.rlim_cur, to = soft, "raised the open-file limit for --max-connections");
        return limits.clone();
    }
    let fit = soft.saturating_sub(FDS_BESIDES_CONNECTIONS).max(1) as usize;
    warn!(
        node,
        "the open-file limit is {soft} (hard limit {}), too low for --max-connections {} (needs about {needed}); \
         taking at most {fit} connections: raise the limit (ulimit -n) or lower --max-connections",
        limit.rlim_max,
        limits.connections_max
    );
    ConnectionLimits { connections_max: fit, ..limits.clone() }
}

/// How long a removed node goes on before it stops, so that the answers it
/// owes (to the change that removed it, among others) are made and go out.
const REMOVED_ANSWERS_GRACE: Duration = Duration::from_millis(500);

/// A tick this late means the event loop was held up: worth a warning.
const LATE_TICK: Duration = Duration::from_millis(100);

/// An fsync slower than this is worth a warning (etcd warns past 1 s).
const SLOW_FSYNC: Duration = Duration::from_millis(500);

/// How long the WAL thread waits, idle, before it records its last fsync.
const SYNC_RECORD_IDLE: Duration = Duration::from_millis(20);

/// Owns the storage: appends every queued batch, then one fsync for all of
/// them. A full disk stops nothing: the batch that found it and every later
/// command wait, in order, and are tried again every [`DISK_FULL_RETRY`]
/// until space is freed (nothing acknowledged depends on them: their
/// `Persisted` has not been sent). A snapshot that cannot be saved is
/// logged and left: the log it would have compacted is kept.
fn wal_thread(
    mut storage: Storage,
    commands: std::sync::mpsc::Receiver<WalCmd>,
    events: mpsc::UnboundedSender<WalEvent>,
    metrics: Arc<Metrics>,
) {
    let fail = |e: anyhow::Error| {
        let _ = events.send(WalEvent::Failed(e));
    };
    let mut queue: VecDeque<WalCmd> = VecDeque::new();
    let mut disk_full = false;
    let mut slow_fsyncs = WarnLimiter::new(Duration::from_secs(10));
    loop {
        if queue.is_empty() {
            // After a pause of SYNC_RECORD_IDLE, the last fsync is recorded
            // in the segment (appends record it as they go, at most every
            // 100 ms), so that recovery never takes those synced records for
            // a torn write.
            let first = if storage.sync_unrecorded() {
                match commands.recv_timeout(SYNC_RECORD_IDLE) {
                    Ok(command) => command,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(e) = storage.record_sync() {
                            return fail(
                                anyhow::Error::new(e).context("WAL fsync failed; stopping this node"),
                            );
                        }
                        continue;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match commands.recv() {
                    Ok(command) => command,
                    Err(_) => return,
                }
            };
            queue.push_back(first);
        }
        queue.extend(commands.try_iter());
        let mut last_persist = None;
        let mut no_space = None;
        while let Some(command) = queue.pop_front() {
            match command {
                WalCmd::Persist(batch) => match storage.append(&batch) {
                    Ok(()) => {
                        last_persist = Some(batch.id);
                        let bytes: usize = batch.entries.iter().map(|e| e.size_bytes()).sum();
                        metrics.wal_write_bytes.inc_by(bytes as u64);
                    }
                    Err(e) if e.is_no_space() => {
                        no_space = Some(e.to_string());
                        queue.push_front(WalCmd::Persist(batch));
                        break;
                    }
                    Err(e) => {
                        return fail(anyhow::Error::new(e).context("WAL append failed; stopping this node"))
                    }
                },
                // Compacting syncs the WAL, earlier appends included.
                WalCmd::Compact(meta) => match timed(|| storage.compact_to(&meta)) {
                    (Ok(()), ms) => info!(index = meta.index, ms, "compacted the WAL to the snapshot"),
                    (Err(e @ StorageError::StaleSnapshot { .. }), _) => {
                        debug!(index = meta.index, "snapshot not recorded: {e}")
                    }
                    (Err(e), _) if !storage.stopped() => warn!(
                        index = meta.index,
                        "could not record a snapshot: {e}; keeping the log it would have compacted"
                    ),
                    (Err(e), _) => {
                        return fail(
                            anyhow::Error::new(e).context("cannot record a snapshot; stopping this node"),
                        )
                    }
                },
            }
        }
        if let Some(id) = last_persist {
            let started = std::time::Instant::now();
            if let Err(e) = storage.sync() {
                return fail(anyhow::Error::new(e).context("WAL fsync failed; stopping this node"));
            }
            let took = started.elapsed();
            metrics.wal_fsync_duration.observe(took.as_secs_f64());
            if took > SLOW_FSYNC {
                if let Some(held_back) = slow_fsyncs.allow(std::time::Instant::now()) {
                    warn!(
                        ms = took.as_millis() as u64,
                        held_back, "slow WAL fsync: the disk held up every write"
                    );
                }
            }
            if events.send(WalEvent::Persisted(id)).is_err() {
                return;
            }
        }
        match no_space {
            Some(why) => {
                if !disk_full {
                    disk_full = true;
                    if events.send(WalEvent::DiskFull(why)).is_err() {
                        return;
                    }
                }
                std::thread::sleep(DISK_FULL_RETRY);
            }
            None if disk_full => {
                disk_full = false;
                if events.send(WalEvent::DiskResumed).is_err() {
                    return;
                }
            }
            None => {}
        }
    }
}

/// A running node's glue, owned by its event loop: the deterministic
/// [`Replica`] does the node's work; this moves its effects to the WAL
/// thread, the snapshot thread, the peer links and the client connections,
/// and turns time into ticks.
struct Server {
    config: NodeConfig,
    replica: Replica<Answerer>,
    wal: std::sync::mpsc::Sender<WalCmd>,
    links: BTreeMap<NodeId, PeerLink>,
    /// The address each link in `links` goes to.
    link_addresses: BTreeMap<NodeId, String>,
    /// The peers the listener takes hellos from.
    peers: SharedPeers,
    /// What new peer links say in their hello, and their counters.
    link_identity: LinkIdentity,
    counters: Arc<NetCounters>,
    /// The committed membership no longer holds this node: it stops.
    removed: bool,
    /// The members last reported by the replica.
    members_known: BTreeSet<NodeId>,
    /// Whose the data directory is; rewritten when the token is learned.
    identity: Identity,
    /// The cluster token as the peer links and the listener see it.
    token: SharedToken,
    /// The thread that takes snapshots and checks the leader's.
    snapshots: SnapshotWorker,
    /// Warnings of snapshots from a leader that were dropped.
    snapshot_warnings: WarnLimiter,
    /// Snapshots dropped for their size that a warning has named.
    snapshots_too_large_warned: u64,
    /// What `/metrics` shows.
    metrics: Arc<Metrics>,
    /// The leader last seen, for `leader_changes_seen`.
    leader_seen: Option<NodeId>,
    /// Whether this node is fresh, and the members known to hold data, for
    /// the listener and the links (see `DataGuard`)...
    data_guard: DataGuard,
    /// ...and how many of those it was last told of.
    holders_seen: usize,
    /// Warnings of a late tick (the event loop was held up).
    late_warnings: WarnLimiter,
    /// The snapshot a leader is sending this node, stored as it comes.
    incoming_snapshot: Option<IncomingSnapshot>,
    /// This node's snapshot file, open while chunks of it are sent (an
    /// open file stays readable after a newer snapshot deletes it).
    sending_snapshot: Option<SnapshotFile>,
}

/// Checks the data directory against the flags, or bootstraps a new one:
/// refused in one sentence when it belongs to another node or cluster, when
/// a new directory has no peers and no `--single-node`, and when the peers
/// say this member had data before (it lost it: a wiped voter must not vote
/// as its old self). A `--peers` that disagrees with the membership stored
/// is not refused: the stored one wins (see [`peers_disagreement`]).
/// Returns the identity and whether this start bootstrapped it (the node
/// is then fresh: see `DataGuard`).
async fn prepare_identity(config: &NodeConfig) -> anyhow::Result<(Identity, bool)> {
    let dir = &config.data_dir;
    let members = config.members();
    let flags = StartFlags { cluster_id: &config.cluster_id, node_id: config.id, members: &members };
    if let Some(identity) = Identity::load(dir).map_err(anyhow::Error::msg)? {
        identity.check(&flags, dir).map_err(anyhow::Error::msg)?;
        return Ok((identity, false));
    }
    if datadir::holds_raft_data(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        anyhow::bail!(
            "the data directory {} holds a Raft log but no {} (written by an older raft-node, or the \
             file was deleted); restore the file, or start this member with an empty data directory",
            dir.display(),
            datadir::IDENTITY_FILE
        );
    }
    if config.join {
        let identity = Identity::joining(&flags);
        identity.save(dir).with_context(|| format!("cannot write the identity of {}", dir.display()))?;
        info!(
            node = config.id,
            cluster_id = %config.cluster_id,
            "a new data directory in {} for a node joining a running cluster: waiting to be added \
             (raft-client member add {} {})",
            dir.display(),
            config.id,
            config.advertise
        );
        return Ok((identity, false));
    }
    if config.peers.is_empty() && !config.single_node {
        anyhow::bail!(
            "--peers is empty and the data directory {} is new: name the other members \
             (--peers ID=HOST:PORT,...) or pass --single-node to bootstrap a one-node cluster",
            dir.display()
        );
    }
    refuse_if_member_lost_its_data(config).await?;
    let identity = Identity::bootstrap(&flags);
    identity.save(dir).with_context(|| format!("cannot write the identity of {}", dir.display()))?;
    info!(
        node = config.id,
        cluster_id = %config.cluster_id,
        members = ?identity.members,
        "bootstrapped a new data directory in {}",
        dir.display()
    );
    Ok((identity, true))
}

/// The core from what the data directory holds. A directory with nothing
/// durable yet (new, or its first write never reached the disk) founds the
/// cluster with the membership its identity was bootstrapped with, each
/// member's address as its context; that membership becomes the log's first
/// entry. Otherwise the core restarts from its log and snapshot, where the
/// membership lives; a log written before logs carried one (raft-node of
/// stop 16 and earlier) is given the identity's membership as that of index 0.
fn start_core(config: Config, mut durable: DurableState, identity: &Identity) -> anyhow::Result<RaftNode> {
    let founders = || {
        let members = identity.members.iter().map(|(&id, addr)| (id, addr.clone().into_bytes()));
        Membership::new_voters(members)
            .map_err(|e| anyhow::anyhow!("the membership in {} is not valid: {e}", datadir::IDENTITY_FILE))
    };
    if durable == DurableState::default() {
        if identity.join && identity.cluster_token.is_none() {
            // Nothing received yet: still waiting to be added.
            return RaftNode::new(config).context("cannot start the node");
        }
        if identity.cluster_token.is_some() {
            anyhow::bail!(
                "{} records a cluster token, so this node has held the log, but the log is gone; a \
                 member that lost its data must not vote as its old self: remove it from the cluster and \
                 add it back with an empty data directory, or restore the directory",
                datadir::IDENTITY_FILE
            );
        }
        return RaftNode::bootstrap(config, founders()?).context("cannot bootstrap the cluster");
    }
    let holds_membership = durable.snapshot.is_some()
        || durable.entries.iter().any(|e| matches!(e.payload, EntryPayload::Membership(_)));
    if !holds_membership && durable.entries.first().is_some_and(|e| e.index == 1) {
        durable.snapshot = Some(Snapshot {
            meta: SnapshotMeta { index: 0, term: 0, membership: founders()?.into() },
            data_bytes: 0,
        });
    }
    RaftNode::restart(config, durable).context("the durable state cannot be restarted from")
}

/// The one sentence a node logs when the members named by its flags (this
/// node at `--advertise`, and `--peers`) are not the membership in force in
/// its data directory (after membership changes, or a `--peers` left empty
/// or out of date): the data directory's wins, since `--peers` only founds
/// a new cluster. `None` when they agree, and for a node that learns its
/// membership from the cluster (`--join`, or a joined node restarted with
/// no `--peers`) or has none yet.
fn peers_disagreement(config: &NodeConfig, identity: &Identity, node: &RaftNode) -> Option<String> {
    if config.join || (identity.join && config.peers.is_empty()) {
        return None;
    }
    let (membership, index) = node.membership();
    let given = config.members();
    let stored: BTreeMap<NodeId, String> = membership
        .member_ids()
        .map(|id| {
            let context = membership.context(id).and_then(|c| std::str::from_utf8(c).ok());
            // A member with no address in the configuration is reached at the
            // one the flags give.
            let address = context.filter(|a| !a.is_empty()).map(str::to_string);
            (id, address.or_else(|| given.get(&id).cloned()).unwrap_or_default())
        })
        .collect();
    if stored.is_empty() || stored == given {
        return None;
    }
    let show = |members: &BTreeMap<NodeId, String>, roles: bool| -> String {
        let all: Vec<String> = members
            .iter()
            .map(|(id, addr)| {
                let learner = roles && membership.learners().contains(id);
                format!("{id}={addr}{}", if learner { " (learner)" } else { "" })
            })
            .collect();
        all.join(",")
    };
    Some(format!(
        "the flags name the members {} (this node and --peers) but the membership in the data directory \
         {} is {} (configuration entry {index}); using the data directory's: --peers only founds a new \
         cluster, and members change through raft-client member",
        show(&given, false),
        config.data_dir.display(),
        show(&stored, true)
    ))
}

/// Asks every peer, as etcd does before bootstrapping a member, whether the
/// cluster already knows this member as one holding data. Peers that do not
/// answer within [`BOOTSTRAP_PROBE_TIMEOUT`] (a cluster starting for the
/// first time) are not waited for.
async fn refuse_if_member_lost_its_data(config: &NodeConfig) -> anyhow::Result<()> {
    let probes = config.peers.iter().map(|(&peer, addr)| async move {
        let answer =
            tokio::time::timeout(BOOTSTRAP_PROBE_TIMEOUT, ask_status(addr, &config.cluster_id)).await;
        (peer, addr, answer)
    });
    for (peer, addr, answer) in futures::future::join_all(probes).await {
        match answer {
            Ok(Ok(status)) if status.cluster_token != 0 && status.members_with_data.contains(&config.id) => {
                anyhow::bail!(
                    "node {} was already a member of this cluster (token {}, says node {peer} at {addr}) and \
                     has lost its data; remove it and add it back as a new member, or restore its data \
                     directory",
                    config.id,
                    describe_token(status.cluster_token)
                );
            }
            Ok(Ok(status)) => debug!(
                node = config.id, peer, token = %describe_token(status.cluster_token),
                "peer does not know this member's data; bootstrapping"
            ),
            Ok(Err(e)) => debug!(node = config.id, peer, %addr, reason = %e, "peer not asked"),
            Err(_) => debug!(node = config.id, peer, %addr, "peer did not answer in time"),
        }
    }
    Ok(())
}

/// Whether the log holds an entry from a leader (of term 1 or later, or a
/// snapshot): a bootstrapped founder's own entries are of term 0.
fn holds_leader_entry(node: &RaftNode) -> bool {
    let last = node.last_index();
    node.snapshot_meta().index > 0 && node.snapshot_meta().index == last
        || node.entry(last).is_some_and(|e| e.term >= 1)
}

/// One status request to one node.
async fn ask_status(addr: &str, cluster_id: &str) -> anyhow::Result<NodeStatus> {
    let (mut framed, _) = transport::connect(addr, cluster_id, Sender::Client).await?;
    transport::send_frame(&mut framed, &ClientRequest { id: 1, kind: RequestKind::Status }).await?;
    match transport::recv_frame::<ClientResponse>(&mut framed).await?.result {
        ResponseKind::Status(status) => Ok(status),
        other => Err(anyhow::anyhow!("unexpected answer {other:?}")),
    }
}

/// Runs a node until `shutdown` resolves (then finishes the current batch and
/// returns) or a fatal storage error occurs.
pub async fn run(config: NodeConfig, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let core_config = config.core_config()?;
    // Held until this function returns: no second process opens this directory.
    let _lock = datadir::lock(&config.data_dir).map_err(anyhow::Error::msg)?;
    // A founder that bootstraps on an empty data directory is fresh until
    // it holds an entry from a leader (see `DataGuard`).
    let (identity, bootstrapped) = prepare_identity(&config).await?;
    let data_guard = DataGuard::new(bootstrapped);
    let token = SharedToken::new(identity.token().map_err(anyhow::Error::msg)?);
    let (storage, durable) =
        Storage::open(&config.data_dir, StorageOptions { sync: config.sync, ..Default::default() })
            .with_context(|| format!("cannot open the data directory {}", config.data_dir.display()))?;
    let mut kv = KvStore::new(config.sessions_max);
    let mut last_snapshot_index = 0;
    if let Some(file) = storage.open_snapshot().context("cannot open the durable snapshot")? {
        // Streamed from the file, a block at a time, checksums checked.
        last_snapshot_index = file.meta().index;
        kv.restore_from(file.into_reader()).context("the durable snapshot does not decode")?;
    }
    let replica_config = ReplicaConfig {
        id: config.id,
        members: config.members(),
        cluster_id: config.cluster_id.clone(),
        pid: std::process::id(),
        limits: config.limits,
        snapshot_entries: config.snapshot_entries,
        snapshot_log_bytes: config.snapshot_log_bytes,
        token: token.get(),
        new_token: random_token(config.id),
    };
    info!(
        node = config.id,
        term = durable.hard_state.term,
        entries = durable.entries.len(),
        snapshot = last_snapshot_index,
        "recovered from {}",
        config.data_dir.display()
    );
    let node = start_core(core_config, durable, &identity)?;
    if let Some(disagreement) = peers_disagreement(&config, &identity, &node) {
        warn!(node = config.id, "{disagreement}");
    }

    // The peers whose hellos are taken follow the membership (any peer of
    // the cluster while this node waits to be added).
    let peers = SharedPeers::any();
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}; is the port in use?", config.listen))?;
    let counters = Arc::new(NetCounters::default());
    let (inbound_tx, mut inbound_rx) = mpsc::channel::<Inbound>(65_536);
    let metrics = Arc::new(Metrics::new(counters.clone()));
    let (http_tx, mut http_rx) = mpsc::channel::<crate::http::HttpCall>(crate::http::HTTP_CALLS_MAX);
    let http_faces = crate::http::HttpFaces::new(
        config.id,
        config.cluster_id.clone(),
        http_tx,
        random_token(config.id) >> 1,
        metrics.clone(),
    );
    let metrics_task = match &config.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} (--metrics-listen); is the port in use?")
            })?;
            info!(node = config.id, metrics_listen = %addr, "serving /metrics and the health probes");
            let faces = http_faces.clone();
            Some(tokio::spawn(async move { crate::http::serve_probes(listener, &faces).await }))
        }
        None => None,
    };
    let listener_config = Arc::new(ListenerConfig {
        node_id: config.id,
        cluster_id: config.cluster_id.clone(),
        peers: peers.clone(),
        cluster_token: token.clone(),
        limits: connection_limits_within_fd_limit(config.id, &config.connection_limits),
        http: Some(crate::http::handoff(&http_faces)),
        data_guard: data_guard.clone(),
    });
    let accept_task = tokio::spawn(transport::serve(listener, listener_config, inbound_tx, counters.clone()));
    let (removed_tx, mut removed_rx) = mpsc::unbounded_channel();
    let link_identity = LinkIdentity {
        cluster_id: config.cluster_id.clone(),
        cluster_token: token.clone(),
        address: config.advertise.clone(),
        removed: Some(removed_tx),
        data_guard: data_guard.clone(),
    };
    info!(
        node = config.id, listen = %config.listen, peers = ?config.peers,
        cluster_token = %describe_token(token.get()), "node started"
    );

    let (wal_tx, wal_rx) = std::sync::mpsc::channel();
    let (wal_events_tx, mut wal_events) = mpsc::unbounded_channel();
    let wal = std::thread::Builder::new()
        .name(format!("wal-{}", config.id))
        .spawn({
            let metrics = metrics.clone();
            move || wal_thread(storage, wal_rx, wal_events_tx, metrics)
        })
        .context("cannot start the WAL thread")?;
    let (snapshots, mut snapshots_done) =
        SnapshotWorker::spawn(config.id, config.data_dir.clone(), config.sync, config.sessions_max)
            .context("cannot start the snapshot thread")?;
    let mut server = Server {
        replica: Replica::new(replica_config, node, kv),
        wal: wal_tx,
        // Links follow the membership in force (from the data directory,
        // reported by the replica's first effects), never `--peers`.
        link_addresses: BTreeMap::new(),
        links: BTreeMap::new(),
        peers,
        link_identity,
        counters,
        removed: false,
        members_known: BTreeSet::new(),
        identity,
        token,
        snapshots,
        snapshot_warnings: WarnLimiter::new(Duration::from_secs(60)),
        snapshots_too_large_warned: 0,
        metrics: metrics.clone(),
        leader_seen: None,
        data_guard,
        holders_seen: 0,
        late_warnings: WarnLimiter::new(Duration::from_secs(10)),
        incoming_snapshot: None,
        sending_snapshot: None,
        config,
    };
    server.execute_effects()?;
    let mut ticker = tokio::time::interval(server.config.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    // Set once this node is removed: it stops then.
    let mut stop_at: Option<tokio::time::Instant> = None;
    let result = loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            _ = tokio::time::sleep_until(stop_at.unwrap_or_else(tokio::time::Instant::now)), if stop_at.is_some() => {
                break Ok(());
            }
            scheduled = ticker.tick() => {
                server.warn_if_late(scheduled.into_std());
                server.replica.tick();
                server.warn_of_dropped_snapshots();
            }
            event = wal_events.recv() => match event {
                Some(WalEvent::Persisted(id)) => {
                    if server.data_guard.fresh() && holds_leader_entry(server.replica.node()) {
                        // (Before the core acknowledges what was persisted.)
                        server.data_guard.settle();
                    }
                    server.replica.persisted(id)
                }
                Some(WalEvent::Failed(e)) => break Err(e),
                Some(WalEvent::DiskFull(why)) => {
                    warn!(node = server.config.id, "{why}; client writes are refused until then");
                    server.replica.set_disk_full(Some(why));
                }
                Some(WalEvent::DiskResumed) => {
                    info!(node = server.config.id, "the disk has room again; writes resumed");
                    server.replica.set_disk_full(None);
                }
                None => break Err(anyhow::anyhow!("the WAL thread stopped")),
            },
            done = snapshots_done.recv() => match done {
                Some(done) => {
                    if let Err(e) = server.snapshot_done(done) {
                        break Err(e);
                    }
                }
                None => break Err(anyhow::anyhow!("the snapshot thread stopped")),
            },
            Some(stop) = removed_rx.recv() => match stop {
                StopReason::Removed(reason) => {
                    warn!(node = server.config.id, "a peer says: {reason}; stopping");
                    break Ok(());
                }
                StopReason::LostData(reason) => break Err(anyhow::anyhow!(reason)),
            },
            Some(call) = http_rx.recv() => {
                let answerer = Answerer::http(call.reply, &call.kind);
                server.replica.client(call.kind, answerer);
                while let Ok(call) = http_rx.try_recv() {
                    let answerer = Answerer::http(call.reply, &call.kind);
                    server.replica.client(call.kind, answerer);
                }
            }
            event = inbound_rx.recv() => {
                let Some(event) = event else { break Ok(()) };
                server.handle(event);
                // Take whatever else already arrived: one fsync for all of it.
                for _ in 0..4096 {
                    match inbound_rx.try_recv() {
                        Ok(event) => server.handle(event),
                        Err(_) => break,
                    }
                }
            }
        }
        let leader = server.replica.node().leader();
        if leader.is_some() && leader != server.leader_seen {
            server.metrics.leader_changes_seen.inc();
        }
        if leader.is_some() {
            server.leader_seen = leader;
        }
        let pending = server.replica.pending_requests();
        server.metrics.proposals_pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
        if let Err(e) = server.execute_effects() {
            break Err(e);
        }
        server.metrics.proposals(server.replica.proposal_counts());
        let holders = &server.replica.kv().identity().members_with_data;
        if holders.len() != server.holders_seen {
            // (The set only grows.)
            server.holders_seen = holders.len();
            server.data_guard.set_holders(holders.iter().copied());
        }
        if server.removed && stop_at.is_none() {
            // (A supervisor that restarts it gets the same answer.) The
            // node goes on for a moment, so that the answers it owes go
            // out: the one to the change that removed this leader among
            // them, which it gives once it has applied the entry, and that
            // may wait for its own fsync of it (the entry committed
            // without this node's vote).
            info!(node = server.config.id, "this node was removed from the cluster; stopping");
            stop_at = Some(tokio::time::Instant::now() + REMOVED_ANSWERS_GRACE);
        }
    };
    accept_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    // Let the WAL thread finish what it was given (nothing acknowledged
    // depends on it, but a clean stop leaves a clean log).
    let id = server.config.id;
    let Server { wal: wal_tx, .. } = server;
    drop(wal_tx);
    let _ = tokio::task::spawn_blocking(move || wal.join()).await;
    info!(node = id, "node stopped");
    result
}

impl Server {
    fn handle(&mut self, event: Inbound) {
        match event {
            Inbound::Peer(m, _bytes) => self.replica.step(m),
            Inbound::PeerConnected { id, address } => {
                // A link back to a peer this node cannot reach yet (it waits
                // to be added, and the leader is calling); members' links
                // follow the configuration.
                let member_or_unknown = self.members_known.is_empty() || self.members_known.contains(&id);
                if !address.is_empty()
                    && !self.links.contains_key(&id)
                    && id != self.config.id
                    && member_or_unknown
                {
                    self.link_to(id, address);
                }
            }
            Inbound::Client { request, reply } => {
                let answerer = Answerer::binary(reply, &request.kind);
                self.replica.client(request.kind, answerer)
            }
        }
    }

    /// One WARN line (at most a minute apart) when the core dropped a
    /// snapshot that grew past `--max-snapshot-bytes` while arriving.
    fn warn_of_dropped_snapshots(&mut self) {
        let too_large = self.replica.node().counters().snapshots_too_large;
        if too_large > self.snapshots_too_large_warned {
            if let Some(held_back) = self.snapshot_warnings.allow(std::time::Instant::now()) {
                self.snapshots_too_large_warned = too_large;
                warn!(
                    node = self.config.id,
                    dropped = too_large,
                    held_back,
                    "dropped a snapshot from the leader that grew past --max-snapshot-bytes ({} bytes); raise it \
                     if the cluster's state is that large",
                    self.config.snapshot_bytes_max
                );
            }
        }
    }

    /// Warns (at most every 10 s) when a tick ran later than
    /// [`LATE_TICK`] after it was due: the event loop was held up (by
    /// itself or a starved machine), which peers see as silence and which
    /// costs elections.
    fn warn_if_late(&mut self, scheduled: std::time::Instant) {
        let now = std::time::Instant::now();
        let late = now.saturating_duration_since(scheduled);
        if late > LATE_TICK {
            if let Some(held_back) = self.late_warnings.allow(now) {
                warn!(
                    node = self.config.id,
                    late_ms = late.as_millis() as u64,
                    held_back,
                    "the event loop ran a tick late: it was held up, and peers heard nothing meanwhile"
                );
            }
        }
    }

    /// What the snapshot thread finished, for the replica.
    fn snapshot_done(&mut self, done: SnapshotDone) -> anyhow::Result<()> {
        match done {
            SnapshotDone::Taken { snapshot, write_ms } => {
                let (index, bytes) = (snapshot.meta.index, snapshot.data_bytes);
                info!(node = self.config.id, index, bytes, write_ms, "took snapshot; log compacted");
                self.metrics.snapshots_saved.inc();
                self.metrics.snapshot_save_duration.observe(write_ms as f64 / 1000.0);
                self.replica.snapshot_taken(snapshot);
            }
            SnapshotDone::TakeFailed { index, error } => self.replica.snapshot_take_failed(index, &error),
            SnapshotDone::Checked { snapshot, result } => {
                if result.is_ok() {
                    self.metrics.snapshots_installed.inc();
                }
                self.replica.snapshot_checked(snapshot, result)
            }
        }
        Ok(())
    }

    /// Reads a chunk of this node's snapshot file into `message` and sends
    /// it. A chunk that cannot be read (the file replaced by a newer
    /// snapshot, or damaged) is dropped with a rate-limited warning: the
    /// leader sends again, from the newer snapshot if there is one.
    fn send_snapshot_chunk(&mut self, mut message: Message, len: u64) {
        let Some(link) = self.links.get(&message.to) else { return };
        let MessageBody::Snapshot { meta, offset, data, .. } = &mut message.body else { return };
        let index = meta.index;
        let read = (|| {
            if self.sending_snapshot.as_ref().is_none_or(|f| f.meta() != &*meta) {
                self.sending_snapshot = None;
                self.sending_snapshot = Some(SnapshotFile::open(&self.config.data_dir, meta)?);
            }
            self.sending_snapshot.as_ref().expect("opened above").read_range(*offset, len)
        })();
        match read {
            Ok(bytes) => {
                *data = bytes;
                link.send(message);
            }
            Err(e) => {
                self.sending_snapshot = None;
                if let Some(held_back) = self.snapshot_warnings.allow(std::time::Instant::now()) {
                    warn!(
                        node = self.config.id,
                        index, held_back, "cannot read a chunk of this node's snapshot to send: {e}"
                    );
                }
            }
        }
    }

    /// The membership in force changed: hellos are taken from its members,
    /// and links go to each at the address in the configuration. Links to
    /// members that left stay until the configuration without them is
    /// committed (a departing member still hears from the leader until its
    /// removal commits, and a new leader may replace an uncommitted
    /// configuration): see [`Server::close_departed_links`].
    fn members_changed(&mut self, members: BTreeMap<NodeId, String>) {
        let id = self.config.id;
        if members.is_empty() {
            return; // no membership yet: any peer of the cluster may call
        }
        // Members that left are told so if they call again (so that they
        // stop, and a supervisor restarting one cannot bring it back).
        let now: BTreeSet<NodeId> = members.keys().copied().collect();
        self.peers.note_removed(self.members_known.difference(&now).copied().filter(|&m| m != id));
        self.peers.forget_removed(now.iter().copied());
        self.members_known = now;
        self.admit_members_and_links();
        for (member, address) in members {
            if member == id || address.is_empty() || self.link_addresses.get(&member) == Some(&address) {
                continue;
            }
            self.link_to(member, address);
        }
    }

    /// Hellos are taken from the members in force and from the peers this
    /// node has a link to.
    fn admit_members_and_links(&self) {
        let id = self.config.id;
        let mut admitted: Vec<NodeId> = self.members_known.iter().copied().filter(|&m| m != id).collect();
        admitted.extend(self.links.keys().copied());
        self.peers.set(admitted);
    }

    /// Closes the links to peers that are not members once the
    /// configuration in force is committed: a member that left hears
    /// nothing more from this node, and is dialed no more. (A link opened
    /// to a peer that called while this node had no configuration yet, a
    /// joining node's link to its leader, goes the same way once a
    /// committed configuration leaves that peer out.)
    fn close_departed_links(&mut self) {
        if self.members_known.is_empty() || self.links.keys().all(|p| self.members_known.contains(p)) {
            return;
        }
        let (_, index) = self.replica.node().membership();
        let commit = self.replica.node().commit_index();
        if index > commit {
            return; // the configuration may yet be replaced
        }
        let departed: Vec<NodeId> =
            self.links.keys().copied().filter(|p| !self.members_known.contains(p)).collect();
        for peer in departed {
            self.links.remove(&peer);
            let address = self.link_addresses.remove(&peer).unwrap_or_default();
            info!(
                node = self.config.id,
                peer,
                %address,
                index,
                "closed the link to node {peer}: the configuration committed at index {index} leaves it out"
            );
        }
        self.admit_members_and_links();
    }

    /// Opens (or reopens, at a new address) the link to `peer`.
    fn link_to(&mut self, peer: NodeId, address: String) {
        let id = self.config.id;
        info!(node = id, peer, %address, "linking to a peer");
        let one = BTreeMap::from([(peer, address.clone())]);
        let links = transport::spawn_peer_links(id, &one, &self.link_identity, 8192, self.counters.clone());
        self.links.extend(links);
        self.link_addresses.insert(peer, address);
    }

    /// Carries out what the replica asks, in order, until it has nothing
    /// more to say.
    fn execute_effects(&mut self) -> anyhow::Result<()> {
        loop {
            let mut members_changed = None;
            let (mut chunks, mut check_failed) = (Vec::new(), None);
            let mut effects = self.replica.take_effects()?.peekable();
            if effects.peek().is_none() {
                drop(effects);
                self.close_departed_links();
                return Ok(());
            }
            for effect in effects {
                match effect {
                    Effect::Persist(batch) => {
                        self.wal.send(WalCmd::Persist(batch)).context("the WAL thread stopped")?;
                    }
                    Effect::Send(m) => {
                        if let Some(link) = self.links.get(&m.to) {
                            link.send(m);
                        }
                    }
                    Effect::Compact(meta) => {
                        self.wal.send(WalCmd::Compact(meta)).context("the WAL thread stopped")?;
                    }
                    Effect::Answer(reply, answer) => reply.send(answer, &self.metrics),
                    Effect::TakeSnapshot { kv, meta } => {
                        self.snapshots.submit(SnapshotJob::Take { kv: *kv, meta })?
                    }
                    Effect::SendSnapshotChunk { message, len } => chunks.push((message, len)),
                    Effect::SaveSnapshotChunk { meta, offset, data } => {
                        let dir = &self.config.data_dir;
                        let failed =
                            IncomingSnapshot::save(&mut self.incoming_snapshot, dir, &meta, offset, &data);
                        if let Some(error) = failed {
                            warn!(
                                node = self.config.id,
                                index = meta.index,
                                "cannot store the snapshot the leader is sending ({error}); it will be refused \
                                 and sent again"
                            );
                        }
                    }
                    Effect::CheckSnapshot(snapshot) => {
                        match IncomingSnapshot::finish(&mut self.incoming_snapshot, &snapshot.meta) {
                            Ok(received) => {
                                self.snapshots.submit(SnapshotJob::Check { snapshot, received })?
                            }
                            // Reported back at once, as a check that failed.
                            Err(problem) => check_failed = Some((snapshot, problem)),
                        }
                    }
                    Effect::TokenLearned(token) => {
                        self.identity.set_token(token);
                        self.identity
                            .save(&self.config.data_dir)
                            .context("cannot record the cluster token in the data directory")?;
                        self.token.set(token);
                    }
                    Effect::MembersChanged(members) => members_changed = Some(members),
                    Effect::Removed { index } => {
                        warn!(
                            node = self.config.id,
                            index,
                            "removed from the cluster by the configuration entry at index {index}: this node \
                             takes no further part (its data directory stays as it is)"
                        );
                        self.removed = true;
                    }
                    Effect::SnapshotRejected { index, bytes, rejected, problem } => {
                        self.metrics.snapshots_rejected.inc();
                        if let Some(held_back) = self.snapshot_warnings.allow(std::time::Instant::now()) {
                            warn!(
                                node = self.config.id,
                                index,
                                bytes,
                                rejected,
                                held_back,
                                "dropped a snapshot from the leader: {problem}; keeping this node's log"
                            );
                        }
                    }
                }
            }
            for (message, len) in chunks {
                self.send_snapshot_chunk(message, len);
            }
            if let Some((snapshot, problem)) = check_failed {
                self.replica.snapshot_checked(snapshot, Err(problem));
            }
            if let Some(members) = members_changed {
                self.members_changed(members);
            }
        }
    }
}

/// A token for a new cluster: random enough that two clusters bootstrapped
/// with the same flags on the same machine differ (std's per-process random
/// hash keys, the clock, the pid and the node id), never 0.
fn random_token(node_id: NodeId) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(node_id);
    hasher.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(t.as_nanos());
    }
    hasher.finish().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datadir::StartFlags;
    use raft_core::Entry;

    fn identity(ids: &[NodeId]) -> Identity {
        let members: BTreeMap<NodeId, String> =
            ids.iter().map(|&id| (id, format!("10.0.0.{id}:7000"))).collect();
        Identity::bootstrap(&StartFlags { cluster_id: "c", node_id: 1, members: &members })
    }

    fn voters(node: &RaftNode) -> Vec<NodeId> {
        node.membership().0.voters().incoming.iter().collect()
    }

    #[test]
    fn a_new_directory_founds_the_cluster_with_its_identitys_members_as_the_first_entry() {
        let node = start_core(Config::new(1), DurableState::default(), &identity(&[1, 2, 3])).unwrap();
        assert_eq!(voters(&node), vec![1, 2, 3]);
        assert_eq!(node.membership().1, 1, "the membership is the log's first entry");
        assert_eq!(node.membership().0.context(2), Some(&b"10.0.0.2:7000"[..]));
    }

    #[test]
    fn a_log_from_before_logs_carried_a_membership_gets_the_identitys() {
        let durable = DurableState {
            hard_state: raft_core::HardState { term: 1, vote: Some(1), commit: 1 },
            snapshot: None,
            entries: vec![Entry { index: 1, term: 1, payload: EntryPayload::Blank }],
        };
        let node = start_core(Config::new(1), durable, &identity(&[1, 2, 3])).unwrap();
        assert_eq!(voters(&node), vec![1, 2, 3]);
        assert_eq!(node.last_index(), 1);
    }

    #[test]
    fn a_directory_that_held_the_log_and_lost_it_is_refused() {
        let mut identity = identity(&[1, 2, 3]);
        identity.set_token(0x1234);
        let err = start_core(Config::new(1), DurableState::default(), &identity).unwrap_err();
        assert!(format!("{err:#}").contains("the log is gone"), "{err:#}");
    }
}
