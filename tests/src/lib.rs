//! Deterministic simulation, linearizability checking and cluster tests for Raft Lite.

pub mod linearizability;
pub mod sim;
