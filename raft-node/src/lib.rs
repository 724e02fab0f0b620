//! # raft-node
//!
//! A Raft Lite node: durable storage (WAL and snapshots), the key-value state
//! machine, and the event loop that drives `raft-core`.

pub mod cluster;
pub mod datadir;
pub mod kv;
pub mod server;
mod snapshots;
pub mod storage;
