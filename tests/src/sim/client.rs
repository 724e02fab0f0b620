//! Simulated clients: each has one operation outstanding at a time, sends it
//! to the node it believes is the leader, follows hints, times out and
//! retries with the same `(client, seq)` (exactly-once makes that safe).
//! The interaction with nodes lives in the simulation; this module holds the
//! clients' state, their random workload, and how an operation is spelled
//! in the node's client protocol (`raft_kv`: byte keys and values, here the
//! 8 big-endian bytes of the checker's `u64`s).

use std::collections::{BTreeMap, VecDeque};

use raft_core::NodeId;
use raft_kv::{Command, RequestKind, WriteOp};

use crate::linearizability::{ClientId, Op, OpId, OpResult, Outcome};
use crate::sim::rng::SimRng;

/// Put/CAS values are `client * VALUE_STRIDE + counter`: unique across the
/// run, so every read names exactly one write.
pub const VALUE_STRIDE: u64 = 1_000_000;

/// The handle a replica hands back with each answer
/// ([`raft_kv::Effect::Answer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handle {
    /// Attempt `attempt` of the client at `clients[ci]`; an answer to any
    /// attempt but its current one is void.
    Client { ci: usize, attempt: u64 },
    /// A request of the nemesis or a script (membership change, leadership
    /// transfer, a write outside the history): its answer is only traced.
    Admin(u64),
}

/// One attempt at an operation: a request sent to one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Attempt {
    pub(crate) node: NodeId,
    /// Unique in the run: the answer names it ([`Handle::Client`]).
    pub(crate) number: u64,
    /// The step it was sent at.
    pub(crate) sent: u64,
}

/// A key or value of the checker as the store's bytes.
pub(crate) fn encode_u64(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

/// The store's bytes back as the checker's `u64` (`None`: not 8 bytes).
pub(crate) fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
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
    /// The operation as a request of the client protocol: a write with its
    /// session, or a linearizable read.
    pub(crate) fn request(&self, client: ClientId) -> RequestKind {
        let op = match self.op {
            Op::Put { key, value } => WriteOp::Put { key: encode_u64(key), value: encode_u64(value) },
            Op::Cas { key, expected, new } => WriteOp::Cas {
                key: encode_u64(key),
                expected: expected.map(encode_u64),
                new: encode_u64(new),
            },
            Op::Delete { key } => WriteOp::Delete { key: encode_u64(key) },
            Op::Get { key } => return RequestKind::Get { key: encode_u64(key), stale: false },
        };
        RequestKind::Write(Command { client_id: client, seq: self.seq, op })
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
    fn operations_become_requests_with_8_byte_keys_and_values() {
        let pending = |op| PendingOp {
            history_id: crate::linearizability::History::new().invoke(9, op, 1),
            op,
            seq: 4,
            invoked: 0,
            in_liveness_phase: false,
            attempt: None,
            next_attempt: 0,
            maybe_applied: false,
            handle: None,
        };
        let put = pending(Op::Cas { key: 2, expected: Some(7), new: 258 }).request(9);
        let RequestKind::Write(Command { client_id: 9, seq: 4, op: WriteOp::Cas { key, expected, new } }) =
            put
        else {
            panic!("{put:?}")
        };
        assert_eq!(key, vec![0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(expected.as_deref().and_then(decode_u64), Some(7));
        assert_eq!(decode_u64(&new), Some(258));
        assert!(matches!(pending(Op::Get { key: 1 }).request(9), RequestKind::Get { stale: false, .. }));
        assert_eq!(decode_u64(b"short"), None);
    }

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
