//! # raft-kv
//!
//! Raft Lite's key-value service, without IO: what a node replicates and
//! what its clients say.
//!
//! - [`command`]: the replicated commands ([`Command`]: an operation and the
//!   client session that makes a retried write apply once), their results,
//!   the size limits of a write, and the lab text syntax (`SET x=5`);
//! - [`protocol`]: the client protocol, requests and responses;
//! - [`store`]: the replicated state machine ([`KvStore`]) with its
//!   exactly-once sessions and its snapshot format;
//! - [`replica`]: the node's logic as a deterministic [`Replica`] (the core,
//!   the store, pending client answers, snapshot policy; events in, effects
//!   out), which `raft-node` drives with tokio and the simulator drives in
//!   simulated time.
//!
//! Every value is encoded with `raft-codec`. Both `raft-node` and
//! `raft-client` depend on this crate; the transport (`raft-net`) does not.
//! Nothing here does IO or reads a clock.
#![deny(missing_docs)]

pub mod command;
pub mod protocol;
pub mod replica;
pub mod store;

pub use command::{
    describe_bytes, describe_command, describe_token, parse_text_command, Command, IdentityOp, TextCommand,
    WriteLimits, WriteOp, WriteResult, COMMAND_OVERHEAD_BYTES,
};
pub use protocol::{
    ClientRequest, ClientResponse, LogEntryView, MemberRole, MemberView, NodeStatus, RequestKind,
    ResponseKind,
};
pub use replica::{describe_entry, Applied, Effect, ProposalCounts, Replica, ReplicaConfig, ReplicaError};
pub use store::{ClusterIdentity, KvStore, RestoreError, SESSIONS_MAX_DEFAULT};
