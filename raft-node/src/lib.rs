//! # raft-node
//!
//! A Raft Lite node: durable storage (WAL and snapshots) and the event loop
//! that drives `raft-core` and the key-value store of `raft-kv`.

pub mod datadir;
mod http;
mod metrics;
pub mod server;
mod snapshots;
pub mod storage;
