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
//! Randomness (election jitter) comes from a PRNG seeded by [`Config::seed`], so
//! the same inputs always give the same outputs, bit for bit. That is what lets
//! the simulator in `raft-tests` replay any failure from its seed.
//!
//! ## The driver loop
//!
//! ```
//! use raft_core::{Action, Config, RaftNode};
//!
//! // A single-voter cluster elects itself and commits without peers.
//! let mut node = RaftNode::new(Config::new(1, vec![1])).unwrap();
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
//! assert_eq!(applied.len(), 2); // the leader's blank entry, then the command
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
