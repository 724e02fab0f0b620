//! Simulated clients: each has one operation outstanding at a time, sends it
//! to the node it believes is the leader, follows hints, times out and
//! retries with the same `(client, seq)` (exactly-once makes that safe).
//! The interaction with nodes lives in the simulation; this module holds the
//! clients' state and their random workload.

use std::collections::{BTreeMap, VecDeque};

use raft_core::{NodeId, Proposed};

use crate::linearizability::{ClientId, Op, OpId, OpResult, Outcome};
use crate::sim::kv::{Command, WriteOp};
use crate::sim::rng::SimRng;

/// Put/CAS values are `client * VALUE_STRIDE + counter`: unique across the
/// run, so every read names exactly one write.
pub const VALUE_STRIDE: u64 = 1_000_000;

/// One attempt at an operation, on one node incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// A proposal accepted by `node` at `proposed`.
    Write { node: NodeId, incarnation: u64, proposed: Proposed, sent: u64 },
    /// A ReadIndex request `ctx` accepted by `node`.
    Read { node: NodeId, incarnation: u64, ctx: u64, sent: u64 },
}

impl Attempt {
    pub(crate) fn node(&self) -> (NodeId, u64) {
        match *self {
            Attempt::Write { node, incarnation, .. } | Attempt::Read { node, incarnation, .. } => {
                (node, incarnation)
            }
        }
    }

    pub(crate) fn sent(&self) -> u64 {
        match *self {
            Attempt::Write { sent, .. } | Attempt::Read { sent, .. } => sent,
        }
    }
}

/// The operation a client is working on.
#[derive(Clone, Debug)]
pub(crate) struct PendingOp {
    pub(crate) history_id: OpId,
    pub(crate) op: Op,
    /// The session sequence number (writes only; 0 for reads).
    pub(crate) seq: u64,
    /// Step of the invocation.
    pub(crate) invoked: u64,
    /// Invoked after the faults stopped (the liveness phase).
    pub(crate) in_liveness_phase: bool,
    pub(crate) attempt: Option<Attempt>,
    /// No new attempt before this step.
    pub(crate) next_attempt: u64,
    /// Some attempt was accepted by a node, so the write may take effect.
    pub(crate) maybe_applied: bool,
    /// Set for operations submitted by a test script.
    pub(crate) handle: Option<usize>,
}

impl PendingOp {
    /// The command this write carries, or `None` for a read.
    pub(crate) fn command(&self, client: ClientId) -> Option<Command> {
        let op = match self.op {
            Op::Put { key, value } => WriteOp::Put { key, value },
            Op::Cas { key, expected, new } => WriteOp::Cas { key, expected, new },
            Op::Delete { key } => WriteOp::Delete { key },
            Op::Get { .. } => return None,
        };
        Some(Command { client, seq: self.seq, op })
    }
}

/// One client session.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    pub(crate) id: ClientId,
    /// Generates random operations (otherwise it only runs scripted ones).
    pub(crate) random: bool,
    /// Scripted operations waiting to start, with their handles.
    pub(crate) queue: VecDeque<(Op, usize)>,
    pub(crate) last_seq: u64,
    value_counter: u64,
    pub(crate) leader_hint: Option<NodeId>,
    pub(crate) current: Option<PendingOp>,
    /// Thinking until this step.
    pub(crate) idle_until: u64,
    /// What this client last learned each key holds (to aim CAS at it).
    last_seen: BTreeMap<u64, Option<u64>>,
    /// In the liveness phase: has started its one extra operation.
    pub(crate) final_started: bool,
    /// In the liveness phase: has completed its one extra operation.
    pub(crate) final_done: bool,
}

impl Client {
    pub(crate) fn new(id: ClientId, random: bool) -> Client {
        Client {
            id,
            random,
            queue: VecDeque::new(),
            last_seq: 0,
            value_counter: 0,
            leader_hint: None,
            current: None,
            idle_until: 0,
            last_seen: BTreeMap::new(),
            final_started: false,
            final_done: false,
        }
    }

    fn fresh_value(&mut self) -> u64 {
        self.value_counter += 1;
        self.id * VALUE_STRIDE + self.value_counter
    }

    /// A random operation over keys `1..=keys`: puts, gets, CAS (mostly
    /// aimed at the value last seen, so that some succeed) and deletes.
    pub(crate) fn random_op(&mut self, rng: &mut SimRng, keys: u64) -> Op {
        let key = rng.range(1, keys.max(1));
        match rng.below(100) {
            0..=29 => Op::Put { key, value: self.fresh_value() },
            30..=59 => Op::Get { key },
            60..=84 => {
                let expected = match self.last_seen.get(&key) {
                    Some(&seen) if rng.chance(0.8) => seen,
                    _ if rng.chance(0.3) => None,
                    _ => Some(self.fresh_value()), // never written: fails
                };
                Op::Cas { key, expected, new: self.fresh_value() }
            }
            _ => Op::Delete { key },
        }
    }

    /// Remembers what a completed operation revealed about its key.
    pub(crate) fn learn(&mut self, op: &Op, outcome: &Outcome) {
        let key = op.key();
        match (op, outcome) {
            (Op::Put { value, .. }, Outcome::Ok(_)) => {
                self.last_seen.insert(key, Some(*value));
            }
            (Op::Get { .. }, Outcome::Ok(OpResult::Get(v))) => {
                self.last_seen.insert(key, *v);
            }
            (Op::Cas { new, .. }, Outcome::Ok(OpResult::Cas { succeeded: true })) => {
                self.last_seen.insert(key, Some(*new));
            }
            (Op::Delete { .. }, Outcome::Ok(_)) => {
                self.last_seen.insert(key, None);
            }
            _ => {
                self.last_seen.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ops_use_unique_values_and_stay_within_the_keys() {
        let mut client = Client::new(3, true);
        let mut rng = SimRng::new(9);
        let mut values = Vec::new();
        for _ in 0..500 {
            let op = client.random_op(&mut rng, 5);
            assert!((1..=5).contains(&op.key()));
            match op {
                Op::Put { value, .. } | Op::Cas { new: value, .. } => values.push(value),
                _ => {}
            }
        }
        let n = values.len();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), n, "a put/cas value repeated");
        assert!(values.iter().all(|v| v / VALUE_STRIDE == 3));
    }

    #[test]
    fn cas_aims_at_the_value_last_seen() {
        let mut client = Client::new(1, true);
        let mut rng = SimRng::new(1);
        client.learn(&Op::Get { key: 2 }, &Outcome::Ok(OpResult::Get(Some(42))));
        let aimed = (0..2_000)
            .filter_map(|_| match client.random_op(&mut rng, 2) {
                Op::Cas { key: 2, expected: Some(42), .. } => Some(()),
                _ => None,
            })
            .count();
        assert!(aimed > 50, "only {aimed} CAS aimed at the last value seen");
    }
}
