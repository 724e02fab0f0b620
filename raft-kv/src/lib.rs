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
//!   exactly-once sessions and its snapshot format.
//!
//! Every value is encoded with `raft-codec`. Both `raft-node` and
//! `raft-client` depend on this crate; the transport (`raft-net`) does not.
#![deny(missing_docs)]

pub mod command;
pub mod protocol;
pub mod store;

pub use command::{
    describe_bytes, describe_command, describe_token, parse_text_command, Command, IdentityOp, TextCommand,
    WriteLimits, WriteOp, WriteResult, COMMAND_OVERHEAD_BYTES,
};
pub use protocol::{ClientRequest, ClientResponse, LogEntryView, NodeStatus, RequestKind, ResponseKind};
pub use store::{ClusterIdentity, KvStore, RestoreError, SESSIONS_MAX_DEFAULT};
