//! The event loop of one node: a single task owns the Raft core, the storage
//! and the state machine, and turns the outside world into core inputs.
//!
//! One iteration: wait for a tick or an inbound frame, take every other frame
//! already queued (up to a bound), feed them all to the core, then execute the
//! core's actions in order: WAL appends, sends, applies. All WAL appends of
//! the iteration share one fsync (group commit); messages that depend on them
//! are released by the core only after `persisted`, and go out in the next
//! round of the same iteration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use raft_core::{
    Action, Config, Entry, EntryPayload, Index, NodeId, ProposeError, RaftNode, Role, Snapshot, SnapshotMeta,
    Term,
};
use raft_net::codec;
use raft_net::transport::{self, Inbound, ListenerConfig, NetCounters, PeerLink};
use raft_net::wire::{
    describe_command, ClientRequest, ClientResponse, Command, LogEntryView, NodeStatus, RequestKind,
    ResponseKind,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::kv::KvStore;
use crate::storage::{Storage, StorageOptions};

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
    /// Take a snapshot after this many applied entries.
    pub snapshot_entries: u64,
    /// fsync the WAL (only benchmarks of the non-durable path turn this off).
    pub sync: bool,
    /// Bound of the client session table.
    pub sessions_max: usize,
}

impl NodeConfig {
    fn core_config(&self) -> anyhow::Result<Config> {
        let ticks = |d: Duration| -> u32 { (d.as_micros() / self.tick.as_micros().max(1)).max(1) as u32 };
        let mut voters: Vec<NodeId> = self.peers.keys().copied().collect();
        voters.push(self.id);
        let mut config = Config::new(self.id, voters);
        config.election_timeout_ticks_min = ticks(self.election_timeout);
        config.election_timeout_ticks_max = 2 * config.election_timeout_ticks_min;
        config.heartbeat_interval_ticks = ticks(self.heartbeat);
        config.seed = std::process::id() as u64 ^ (self.id << 32);
        config.validate().map_err(|e| anyhow::anyhow!("invalid timeouts or membership: {e}"))?;
        Ok(config)
    }

    fn address_of(&self, id: NodeId) -> Option<String> {
        if id == self.id {
            Some(self.advertise.clone())
        } else {
            self.peers.get(&id).cloned()
        }
    }
}

struct PendingWrite {
    term: Term,
    id: u64,
    reply: mpsc::Sender<ClientResponse>,
}

struct PendingRead {
    id: u64,
    key: Vec<u8>,
    reply: mpsc::Sender<ClientResponse>,
}

/// A running node's state, owned by its event loop.
struct Server {
    config: NodeConfig,
    node: RaftNode,
    storage: Storage,
    kv: KvStore,
    links: BTreeMap<NodeId, PeerLink>,
    writes: BTreeMap<Index, PendingWrite>,
    reads: BTreeMap<u64, PendingRead>,
    /// Reads released by ReadIndex, waiting for apply to reach their index.
    ready_reads: Vec<(Index, PendingRead)>,
    next_read_ctx: u64,
    last_snapshot_index: Index,
    role: Role,
}

/// Runs a node until `shutdown` resolves (then finishes the current batch and
/// returns) or a fatal storage error occurs.
pub async fn run(config: NodeConfig, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let core_config = config.core_config()?;
    let (storage, durable) =
        Storage::open(&config.data_dir, StorageOptions { sync: config.sync, ..Default::default() })
            .with_context(|| format!("cannot open the data directory {}", config.data_dir.display()))?;
    let mut kv = KvStore::new(config.sessions_max);
    let mut last_snapshot_index = 0;
    if let Some(snapshot) = &durable.snapshot {
        kv.restore(&snapshot.data).context("the durable snapshot does not decode")?;
        last_snapshot_index = snapshot.meta.index;
    }
    info!(
        node = config.id,
        term = durable.hard_state.term,
        entries = durable.entries.len(),
        snapshot = last_snapshot_index,
        "recovered from {}",
        config.data_dir.display()
    );
    let node =
        RaftNode::restart(core_config, durable).context("the durable state cannot be restarted from")?;

    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}; is the port in use?", config.listen))?;
    let counters = Arc::new(NetCounters::default());
    let (inbound_tx, mut inbound_rx) = mpsc::channel::<Inbound>(65_536);
    let listener_config = Arc::new(ListenerConfig {
        node_id: config.id,
        cluster_id: config.cluster_id.clone(),
        peers: config.peers.keys().copied().collect(),
    });
    let accept_task = tokio::spawn(transport::serve(listener, listener_config, inbound_tx, counters.clone()));
    let links = transport::spawn_peer_links(config.id, &config.peers, &config.cluster_id, 8192, counters);
    info!(node = config.id, listen = %config.listen, peers = ?config.peers, "node started");

    let mut server = Server {
        node,
        storage,
        kv,
        links,
        writes: BTreeMap::new(),
        reads: BTreeMap::new(),
        ready_reads: Vec::new(),
        next_read_ctx: 1,
        last_snapshot_index,
        role: Role::Follower,
        config,
    };
    let mut ticker = tokio::time::interval(server.config.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            _ = ticker.tick() => server.node.tick(),
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
        if let Err(e) = server.process_actions() {
            break Err(e);
        }
    };
    accept_task.abort();
    info!(node = server.config.id, "node stopped");
    result
}

impl Server {
    fn handle(&mut self, event: Inbound) {
        match event {
            Inbound::Peer(m) => self.node.step(m),
            Inbound::Client { request, reply } => self.handle_client(request, reply),
        }
    }

    fn not_leader(&self) -> ResponseKind {
        let leader = self.node.leader().filter(|&l| l != self.config.id);
        ResponseKind::NotLeader { leader: leader.and_then(|id| self.config.address_of(id).map(|a| (id, a))) }
    }

    fn handle_client(&mut self, request: ClientRequest, reply: mpsc::Sender<ClientResponse>) {
        let id = request.id;
        let answer = |reply: &mpsc::Sender<ClientResponse>, result| {
            let _ = reply.try_send(ClientResponse { id, result });
        };
        match request.kind {
            RequestKind::Write(command) => {
                let data = match codec::encode(&command) {
                    Ok(d) => d,
                    Err(e) => return answer(&reply, ResponseKind::Error { message: e.to_string() }),
                };
                match self.node.propose(data) {
                    Ok(p) => {
                        self.writes.insert(p.index, PendingWrite { term: p.term, id, reply });
                    }
                    Err(ProposeError::NotLeader { .. }) => answer(&reply, self.not_leader()),
                    Err(e) => answer(&reply, ResponseKind::Error { message: format!("{e}; retry shortly") }),
                }
            }
            RequestKind::Get { key, stale: true } => {
                answer(&reply, ResponseKind::Value(self.kv.get(&key).cloned()));
            }
            RequestKind::Get { key, stale: false } => {
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                match self.node.read_index(ctx) {
                    Ok(()) => {
                        self.reads.insert(ctx, PendingRead { id, key, reply });
                    }
                    Err(_) => answer(&reply, self.not_leader()),
                }
            }
            RequestKind::Status => answer(&reply, ResponseKind::Status(self.status())),
            RequestKind::Log { from, limit } => answer(&reply, ResponseKind::Log(self.log_view(from, limit))),
        }
    }

    fn status(&self) -> NodeStatus {
        let s = self.node.status();
        NodeStatus {
            id: s.id,
            address: self.config.advertise.clone(),
            pid: std::process::id(),
            role: s.role,
            term: s.term,
            leader: s.leader,
            commit: s.commit,
            applied: s.applied,
            last_index: s.last_index,
            first_index: s.first_index,
            snapshot_index: s.snapshot_index,
            keys: self.kv.len() as u64,
        }
    }

    fn log_view(&self, from: Index, limit: u64) -> Vec<LogEntryView> {
        let first = from.max(self.node.first_index());
        let last = self.node.last_index().min(first.saturating_add(limit.min(10_000)).saturating_sub(1));
        let commit = self.node.commit_index();
        (first..=last)
            .filter_map(|i| self.node.entry(i))
            .map(|e| LogEntryView {
                index: e.index,
                term: e.term,
                command: describe_entry(e),
                committed: e.index <= commit,
            })
            .collect()
    }

    /// Executes the core's actions until it has nothing more to say.
    fn process_actions(&mut self) -> anyhow::Result<()> {
        loop {
            let actions = self.node.take_actions();
            if actions.is_empty() {
                break;
            }
            let mut persisted = None;
            for action in actions {
                match action {
                    Action::Persist(batch) => {
                        self.storage.append(&batch).context("WAL append failed; stopping this node")?;
                        persisted = Some(batch.id);
                    }
                    Action::Send(m) => {
                        if let Some(link) = self.links.get(&m.to) {
                            link.send(m);
                        }
                    }
                    Action::Apply(entries) => self.apply(entries),
                    Action::ApplySnapshot(snapshot) => {
                        self.kv
                            .restore(&snapshot.data)
                            .context("snapshot from the leader does not decode")?;
                        self.last_snapshot_index = snapshot.meta.index;
                        info!(
                            node = self.config.id,
                            index = snapshot.meta.index,
                            "installed snapshot from leader"
                        );
                        self.node.applied(snapshot.meta.index);
                    }
                    Action::ReadReady { ctx, index } => {
                        if let Some(read) = self.reads.remove(&ctx) {
                            self.ready_reads.push((index, read));
                        }
                    }
                    Action::ReadFailed { ctx, .. } => {
                        if let Some(read) = self.reads.remove(&ctx) {
                            let _ = read
                                .reply
                                .try_send(ClientResponse { id: read.id, result: self.not_leader() });
                        }
                    }
                    Action::RoleChanged { role, term, leader } => self.role_changed(role, term, leader),
                }
            }
            if let Some(id) = persisted {
                self.storage.sync().context("WAL fsync failed; stopping this node")?;
                self.node.persisted(id);
            }
            self.serve_ready_reads();
            self.maybe_snapshot()?;
        }
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|e| e.index) else { return };
        let leader = self.node.is_leader();
        for entry in entries {
            let result = match &entry.payload {
                EntryPayload::Blank => {
                    self.kv.apply_blank(entry.index);
                    None
                }
                EntryPayload::Command(data) => match codec::decode::<Command>(data) {
                    Ok(command) => {
                        if leader {
                            info!(
                                node = self.config.id,
                                role = %Role::Leader,
                                term = entry.term,
                                index = entry.index,
                                cmd = ?describe_command(&command),
                                "committed"
                            );
                        } else {
                            debug!(node = self.config.id, index = entry.index, cmd = %describe_command(&command), "applied");
                        }
                        Some(self.kv.apply(entry.index, &command))
                    }
                    Err(e) => {
                        // Every replica sees the same bytes and skips them alike.
                        warn!(node = self.config.id, index = entry.index, error = %e, "skipping undecodable command");
                        self.kv.apply_blank(entry.index);
                        None
                    }
                },
            };
            if let Some(write) = self.writes.remove(&entry.index) {
                let response = match result {
                    Some(result) if write.term == entry.term => ResponseKind::Written(result),
                    _ => ResponseKind::Unknown {
                        reason: "the entry was replaced after a leader change; retry".to_string(),
                    },
                };
                let _ = write.reply.try_send(ClientResponse { id: write.id, result: response });
            }
        }
        self.node.applied(last);
    }

    fn serve_ready_reads(&mut self) {
        if self.ready_reads.is_empty() {
            return;
        }
        let applied = self.node.applied_index();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.ready_reads).into_iter().partition(|(i, _)| *i <= applied);
        self.ready_reads = waiting;
        for (_, read) in ready {
            let value = self.kv.get(&read.key).cloned();
            let _ = read.reply.try_send(ClientResponse { id: read.id, result: ResponseKind::Value(value) });
        }
    }

    fn role_changed(&mut self, role: Role, term: Term, leader: Option<NodeId>) {
        match role {
            Role::Leader => info!(node = self.config.id, role = %role, term, "became leader"),
            Role::Candidate => {
                info!(node = self.config.id, role = %role, term, "election timeout; campaigning")
            }
            Role::PreCandidate => {
                debug!(node = self.config.id, role = %role, term, "election timeout; pre-vote")
            }
            Role::Follower => {
                if self.role != Role::Follower || leader.is_some() {
                    info!(node = self.config.id, role = %role, term, leader = ?leader, "following")
                }
            }
        }
        if self.role == Role::Leader && role != Role::Leader {
            // Writes in flight may still commit under the next leader: the
            // client retries with the same sequence number, applied once.
            for (_, write) in std::mem::take(&mut self.writes) {
                let _ = write.reply.try_send(ClientResponse {
                    id: write.id,
                    result: ResponseKind::Unknown { reason: "leadership lost; retry".to_string() },
                });
            }
        }
        self.role = role;
    }

    fn maybe_snapshot(&mut self) -> anyhow::Result<()> {
        let applied = self.node.applied_index();
        if applied < self.last_snapshot_index + self.config.snapshot_entries {
            return Ok(());
        }
        let Some(term) = self.node.term_at(applied) else { return Ok(()) };
        let data = self.kv.snapshot().context("cannot serialize the state machine")?;
        let mut voters: Vec<NodeId> = self.config.peers.keys().copied().collect();
        voters.push(self.config.id);
        voters.sort_unstable();
        let snapshot = Snapshot { meta: SnapshotMeta { index: applied, term, voters }, data };
        self.storage.save_snapshot(&snapshot).context("cannot save a snapshot")?;
        if let Err(e) = self.node.snapshot_taken(applied, snapshot.data) {
            warn!(node = self.config.id, error = %e, "snapshot not taken by the core");
        }
        self.last_snapshot_index = applied;
        info!(node = self.config.id, index = applied, "took snapshot; log compacted");
        Ok(())
    }
}

/// Renders an entry for the `log` view.
pub fn describe_entry(entry: &Entry) -> String {
    match &entry.payload {
        EntryPayload::Blank => "(leader blank)".to_string(),
        EntryPayload::Command(data) => match codec::decode::<Command>(data) {
            Ok(c) => describe_command(&c),
            Err(_) => format!("<{} undecodable bytes>", data.len()),
        },
    }
}
