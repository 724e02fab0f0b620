//! # raft-core
//!
//! The Raft consensus algorithm as a pure, deterministic state machine:
//! no networking, no disk, no clock, no threads, no global randomness.
//!
//! A [`RaftNode`] is fed inputs and produces [`Action`]s:
//!
//! - inputs: [`RaftNode::tick`] (one logical clock tick), [`RaftNode::step`] (a
//!   message from a peer), [`RaftNode::propose`] (a client command),
//!   [`RaftNode::read_index`] (a linearizable read point), and the driver's
//!   reports that asynchronous work finished: [`RaftNode::persisted`],
//!   [`RaftNode::applied`], [`RaftNode::snapshot_taken`];
//! - outputs: [`RaftNode::take_actions`], an ordered list the driver executes
//!   in order (persist, send, apply, answer reads).
//!
//! Snapshot data never passes through the core whole: the core knows a
//! snapshot by its metadata and length ([`Snapshot`]). A leader asks the
//! driver for each chunk it sends ([`Action::SendSnapshotChunk`]: the driver
//! reads that range of its snapshot file); a follower hands the driver each
//! chunk it receives ([`Action::SaveSnapshotChunk`]), then asks for the whole
//! to be checked ([`Action::CheckSnapshot`]). A snapshot of any size costs
//! the core a few hundred bytes.
//!
//! Randomness (election jitter) comes from a PRNG seeded by [`Config::seed`], so
//! the same inputs always give the same outputs, bit for bit. That is what lets
//! the simulator in `raft-tests` replay any failure from its seed.
//!
//! ## The driver loop
//!
//! ```
//! use raft_core::{Action, Config, Membership, RaftNode};
//!
//! // A single-voter cluster elects itself and commits without peers.
//! let membership = Membership::with_voters([1]).unwrap();
//! let mut node = RaftNode::bootstrap(Config::new(1), membership).unwrap();
//! let mut durable_log = Vec::new();
//! let mut applied = Vec::new();
//! let mut proposed = false;
//! for _ in 0..100 {
//!     node.tick();
//!     if node.is_leader() && !proposed {
//!         node.propose(b"SET x=5".to_vec()).unwrap();
//!         proposed = true;
//!     }
//!     for action in node.take_actions() {
//!         match action {
//!             // 1. Write, fsync, then report. A real driver batches many
//!             //    persists under one fsync (group commit).
//!             Action::Persist(batch) => {
//!                 durable_log.extend(batch.entries.clone());
//!                 node.persisted(batch.id);
//!             }
//!             // 2. Send to peers (none here).
//!             Action::Send(_) => {}
//!             // 3. Apply committed entries to the state machine.
//!             Action::Apply(entries) => {
//!                 let last = entries.last().unwrap().index;
//!                 applied.extend(entries);
//!                 node.applied(last);
//!             }
//!             _ => {}
//!         }
//!     }
//! }
//! assert!(node.is_leader());
//! // The bootstrap configuration, the leader's blank entry, then the command.
//! assert_eq!(applied.len(), 3);
//! ```
//!
//! ## Membership change
//!
//! The membership (voters, learners, and an opaque context per member, where
//! a driver keeps addresses) lives in the log and in snapshots, owned by a
//! progress tracker that counts every member the same way, the leader
//! included. The leader changes it with [`RaftNode::propose_membership`]:
//!
//! - one voter added, removed or promoted is a *simple* change; more is a
//!   *joint* one (dissertation §4.3): both the old and the new voters must
//!   agree until the leader, seeing the joint entry committed, leaves it by
//!   itself (a new leader does, if the old one died in between);
//! - a new configuration is in force on a node as soon as its entry is in
//!   that node's log (§4.1), committed or not; an entry the log loses to a
//!   new leader takes its configuration with it;
//! - one change at a time, and none before the leader committed an entry of
//!   its own term; each refusal has its own [`ProposeError`];
//! - a cluster's first membership is given once, to
//!   [`RaftNode::bootstrap`] on each founding node, and becomes the log's
//!   first entry; [`Config`] holds tuning only;
//! - learners receive the log and never vote; a node started with no
//!   membership ([`RaftNode::new`]) waits to be added and never campaigns; a
//!   removed leader leads until its removal commits, then hands over; a node
//!   removed or demoted by an entry it does not know committed still
//!   campaigns, not counting its own vote (dissertation §4.2.2: its vote may
//!   be the one that elects the leader committing that entry).
//!
//! Growing a one-voter cluster to three, the usual way: add each new node as
//! a learner, let it catch up, promote it.
//!
//! ```
//! use std::collections::BTreeMap;
//! use raft_core::{Action, ChangeOp, Config, Membership, MembershipChange, NodeId, RaftNode};
//!
//! let mut nodes: BTreeMap<NodeId, RaftNode> = BTreeMap::new();
//! let founders = Membership::with_voters([1]).unwrap();
//! nodes.insert(1, RaftNode::bootstrap(Config::new(1), founders).unwrap());
//! // Nodes 2 and 3 start with no configuration: they wait to be added.
//! for id in [2, 3] {
//!     nodes.insert(id, RaftNode::new(Config::new(id)).unwrap());
//! }
//! // Runs every node's actions and delivers messages until nothing moves
//! // (persisting is instant here; a real driver fsyncs first).
//! fn run(nodes: &mut BTreeMap<NodeId, RaftNode>) {
//!     loop {
//!         let (mut mail, mut moved) = (Vec::new(), false);
//!         for node in nodes.values_mut() {
//!             for action in node.take_actions() {
//!                 moved = true;
//!                 match action {
//!                     Action::Persist(batch) => node.persisted(batch.id),
//!                     Action::Send(m) => mail.push(m),
//!                     Action::Apply(entries) => node.applied(entries.last().unwrap().index),
//!                     _ => {}
//!                 }
//!             }
//!         }
//!         if !moved {
//!             return;
//!         }
//!         for m in mail {
//!             if let Some(to) = nodes.get_mut(&m.to) {
//!                 to.step(m); // (a node that is gone hears nothing)
//!             }
//!         }
//!     }
//! }
//! let mut tick = |nodes: &mut BTreeMap<NodeId, RaftNode>, n: u32| {
//!     for _ in 0..n {
//!         nodes.values_mut().for_each(|node| node.tick());
//!         run(nodes);
//!     }
//! };
//! nodes.get_mut(&1).unwrap().campaign();
//! run(&mut nodes);
//! assert!(nodes[&1].is_leader());
//! for id in [2, 3] {
//!     let address = format!("10.0.0.{id}:7000").into_bytes();
//!     let learner = MembershipChange { ops: vec![ChangeOp::AddLearner { id, context: address }] };
//!     nodes.get_mut(&1).unwrap().propose_membership(&learner).unwrap();
//!     tick(&mut nodes, 10); // replicated, committed, caught up
//!     let promote = MembershipChange { ops: vec![ChangeOp::PromoteLearner { id }] };
//!     nodes.get_mut(&1).unwrap().propose_membership(&promote).unwrap();
//!     tick(&mut nodes, 10);
//! }
//! let (membership, _) = nodes[&3].membership();
//! assert_eq!(membership.voters().incoming.iter().collect::<Vec<_>>(), vec![1, 2, 3]);
//! assert_eq!(membership.context(2), Some(&b"10.0.0.2:7000"[..]), "every node knows every address");
//! // Three voters now: with node 1 gone, 2 and 3 elect a leader.
//! nodes.remove(&1);
//! tick(&mut nodes, 100);
//! assert!(nodes[&2].is_leader() || nodes[&3].is_leader());
//! ```
//!
//! ## Safety contract
//!
//! The core never emits a message that depends on state that is not yet
//! durable: a vote is granted, and an append acknowledged, only in an action
//! batch taken after [`RaftNode::persisted`] was called for the
//! [`PersistBatch`] holding that state. A leader counts its own log towards a
//! quorum only up to its durable index. The driver's side of the contract:
//! execute actions in order, make `Persist` batches durable in id order, and
//! report them only once durable.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod action;
pub mod config;
pub mod error;
pub mod log;
pub mod membership;
pub mod message;
mod node;
pub mod progress;
pub mod quorum;
mod rng;
pub mod status;
mod tracker;
pub mod types;

pub use action::{Action, PersistBatch};
pub use config::Config;
pub use error::{ConfigError, ProposeError, RestartError, SnapshotError, TransferError};
pub use membership::{ChangeOp, Membership, MembershipChange, MembershipError};
pub use message::{AppendResponse, Message, MessageBody};
pub use node::{Proposed, RaftNode};
pub use status::{Counters, PeerStatus, ReplicationState, Status};
pub use types::{
    DurableState, Entry, EntryPayload, HardState, Index, NodeId, Role, Snapshot, SnapshotMeta, Term,
    INDEX_MAX, PEER_INDEX_MAX, PEER_TERM_MAX, TERM_MAX,
};
