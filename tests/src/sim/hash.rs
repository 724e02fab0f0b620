//! A stable hash (64-bit FNV-1a) and a manual encoding of the replicas'
//! effects into it. Unlike `std`'s `RandomState`, the result is the same in every run
//! and on every platform, so it can fingerprint a whole simulation trace.

use raft_core::{AppendResponse, Entry, EntryPayload, Message, MessageBody, Snapshot, SnapshotMeta};
use raft_kv::{Effect, ResponseKind, WriteResult};

use crate::sim::client::Handle;

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// 64-bit FNV-1a over whatever is written into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StableHasher {
    state: u64,
}

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher::new()
    }
}

impl StableHasher {
    /// A hasher in its initial state.
    pub fn new() -> StableHasher {
        StableHasher { state: FNV_OFFSET }
    }

    /// Mixes in raw bytes.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.state ^= u64::from(b);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
    }

    /// Mixes in one byte (used as a tag that separates variants).
    pub fn write_u8(&mut self, v: u8) {
        self.write_bytes(&[v]);
    }

    /// Mixes in a `u64`, little-endian.
    pub fn write_u64(&mut self, v: u64) {
        self.write_bytes(&v.to_le_bytes());
    }

    /// Mixes in a length-prefixed byte string (so `"ab","c"` differs from `"a","bc"`).
    pub fn write_len_bytes(&mut self, bytes: &[u8]) {
        self.write_u64(bytes.len() as u64);
        self.write_bytes(bytes);
    }

    /// Mixes in an `Option<u64>`.
    pub fn write_opt(&mut self, v: Option<u64>) {
        match v {
            None => self.write_u8(0),
            Some(v) => {
                self.write_u8(1);
                self.write_u64(v);
            }
        }
    }

    /// The hash of everything written so far.
    pub fn finish(&self) -> u64 {
        self.state
    }
}

/// FNV-1a of a byte string.
pub fn digest_bytes(bytes: &[u8]) -> u64 {
    let mut h = StableHasher::new();
    h.write_bytes(bytes);
    h.finish()
}

/// A digest of an entry's term, index and payload: two entries have the same
/// digest iff (with overwhelming probability) they are equal.
pub fn digest_entry(entry: &Entry) -> u64 {
    let mut h = StableHasher::new();
    write_entry(&mut h, entry);
    h.finish()
}

/// A digest of an entry's payload alone.
pub fn digest_payload(payload: &EntryPayload) -> u64 {
    let mut h = StableHasher::new();
    write_payload(&mut h, payload);
    h.finish()
}

fn write_payload(h: &mut StableHasher, payload: &EntryPayload) {
    match payload {
        EntryPayload::Blank => h.write_u8(0),
        EntryPayload::Command(data) => {
            h.write_u8(1);
            h.write_len_bytes(data);
        }
        EntryPayload::Membership(bytes) => {
            h.write_u8(2);
            h.write_len_bytes(bytes);
        }
    }
}

fn write_entry(h: &mut StableHasher, entry: &Entry) {
    h.write_u64(entry.term);
    h.write_u64(entry.index);
    write_payload(h, &entry.payload);
}

fn write_entries(h: &mut StableHasher, entries: &[Entry]) {
    h.write_u64(entries.len() as u64);
    for e in entries {
        write_entry(h, e);
    }
}

fn write_snapshot(h: &mut StableHasher, snapshot: &Snapshot) {
    h.write_u64(snapshot.meta.index);
    h.write_u64(snapshot.meta.term);
    write_membership(h, &snapshot.meta.membership);
    h.write_u64(snapshot.data_bytes);
}

fn write_membership(h: &mut StableHasher, m: &raft_core::Membership) {
    let sets = [
        m.voters().incoming.iter().collect::<Vec<_>>(),
        m.voters().outgoing.iter().collect(),
        m.learners().iter().copied().collect(),
        m.learners_next().iter().copied().collect(),
    ];
    for set in sets {
        h.write_u64(set.len() as u64);
        for id in set {
            h.write_u64(id);
        }
    }
    h.write_u64(m.auto_leave() as u64);
    for (id, context) in m.members() {
        h.write_u64(*id);
        h.write_len_bytes(context);
    }
}

fn write_message(h: &mut StableHasher, m: &Message) {
    h.write_u64(m.from);
    h.write_u64(m.to);
    h.write_u64(m.term);
    match &m.body {
        MessageBody::VoteRequest { pre_vote, last_log_index, last_log_term, transfer } => {
            h.write_u8(1);
            h.write_u8(u8::from(*pre_vote));
            h.write_u64(*last_log_index);
            h.write_u64(*last_log_term);
            h.write_u8(u8::from(*transfer));
        }
        MessageBody::VoteResponse { pre_vote, granted } => {
            h.write_u8(2);
            h.write_u8(u8::from(*pre_vote));
            h.write_u8(u8::from(*granted));
        }
        MessageBody::Append { prev_log_index, prev_log_term, entries, leader_commit } => {
            h.write_u8(3);
            h.write_u64(*prev_log_index);
            h.write_u64(*prev_log_term);
            write_entries(h, entries);
            h.write_u64(*leader_commit);
        }
        MessageBody::AppendResponse(AppendResponse::Accepted { match_index }) => {
            h.write_u8(4);
            h.write_u64(*match_index);
        }
        MessageBody::AppendResponse(AppendResponse::Rejected {
            rejected_index,
            conflict_term,
            conflict_index,
        }) => {
            h.write_u8(5);
            h.write_u64(*rejected_index);
            h.write_opt(*conflict_term);
            h.write_u64(*conflict_index);
        }
        MessageBody::Heartbeat { commit, read_round } => {
            h.write_u8(6);
            h.write_u64(*commit);
            h.write_u64(*read_round);
        }
        MessageBody::HeartbeatResponse { read_round } => {
            h.write_u8(7);
            h.write_u64(*read_round);
        }
        MessageBody::Snapshot { meta, offset, data, done } => {
            h.write_u8(8);
            h.write_u64(meta.index);
            h.write_u64(meta.term);
            h.write_u64(*offset);
            h.write_len_bytes(data);
            h.write_u8(u8::from(*done));
        }
        MessageBody::SnapshotResponse { index, next_offset } => {
            h.write_u8(9);
            h.write_u64(*index);
            h.write_u64(*next_offset);
        }
        MessageBody::TimeoutNow => h.write_u8(10),
    }
}

/// Mixes one effect, handed out by `node`'s replica at simulation step
/// `step`, into `h`.
pub(crate) fn hash_effect(h: &mut StableHasher, step: u64, node: u64, effect: &Effect<Handle>) {
    h.write_u64(step);
    h.write_u64(node);
    match effect {
        Effect::Persist(batch) => {
            h.write_u8(1);
            h.write_u64(batch.id);
            match &batch.snapshot {
                None => h.write_u8(0),
                Some(s) => {
                    h.write_u8(1);
                    write_snapshot(h, s);
                }
            }
            write_entries(h, &batch.entries);
            match batch.hard_state {
                None => h.write_u8(0),
                Some(hs) => {
                    h.write_u8(1);
                    h.write_u64(hs.term);
                    h.write_opt(hs.vote);
                    h.write_u64(hs.commit);
                }
            }
        }
        Effect::Send(m) => {
            h.write_u8(2);
            write_message(h, m);
        }
        Effect::SendSnapshotChunk { message, len } => {
            h.write_u8(3);
            write_message(h, message);
            h.write_u64(*len);
        }
        Effect::SaveSnapshotChunk { meta, offset, data } => {
            h.write_u8(4);
            write_meta(h, meta);
            h.write_u64(*offset);
            h.write_len_bytes(data);
        }
        Effect::Compact(meta) => {
            h.write_u8(5);
            write_meta(h, meta);
        }
        Effect::Answer(handle, answer) => {
            h.write_u8(6);
            match *handle {
                Handle::Client { ci, attempt } => {
                    h.write_u8(0);
                    h.write_u64(ci as u64);
                    h.write_u64(attempt);
                }
                Handle::Admin(n) => {
                    h.write_u8(1);
                    h.write_u64(n);
                }
            }
            write_response(h, answer);
        }
        Effect::TakeSnapshot { kv, meta } => {
            h.write_u8(7);
            write_meta(h, meta);
            h.write_u64(kv.digest());
        }
        Effect::CheckSnapshot(s) => {
            h.write_u8(8);
            write_snapshot(h, s);
        }
        Effect::TokenLearned(token) => {
            h.write_u8(9);
            h.write_u64(*token);
        }
        Effect::MembersChanged(members) => {
            h.write_u8(10);
            h.write_u64(members.len() as u64);
            for (id, address) in members {
                h.write_u64(*id);
                h.write_len_bytes(address.as_bytes());
            }
        }
        Effect::Removed { index } => {
            h.write_u8(11);
            h.write_u64(*index);
        }
        Effect::SnapshotRejected { index, bytes, rejected, problem } => {
            h.write_u8(12);
            h.write_u64(*index);
            h.write_u64(*bytes);
            h.write_u64(*rejected);
            h.write_len_bytes(problem.as_bytes());
        }
    }
}

fn write_meta(h: &mut StableHasher, meta: &SnapshotMeta) {
    h.write_u64(meta.index);
    h.write_u64(meta.term);
    write_membership(h, &meta.membership);
}

fn write_opt_bytes(h: &mut StableHasher, bytes: Option<&[u8]>) {
    match bytes {
        None => h.write_u8(0),
        Some(b) => {
            h.write_u8(1);
            h.write_len_bytes(b);
        }
    }
}

/// The parts of an answer the simulator acts on, and its kind.
fn write_response(h: &mut StableHasher, answer: &ResponseKind) {
    match answer {
        ResponseKind::Written { index, result: WriteResult::Done { existed } } => {
            h.write_u8(1);
            h.write_u64(*index);
            h.write_u8(u8::from(*existed));
        }
        ResponseKind::Written { index, result: WriteResult::Cas { swapped, current } } => {
            h.write_u8(2);
            h.write_u64(*index);
            h.write_u8(u8::from(*swapped));
            write_opt_bytes(h, current.as_deref());
        }
        ResponseKind::Written { index, result: WriteResult::StaleSequence { last_seq } } => {
            h.write_u8(3);
            h.write_u64(*index);
            h.write_u64(*last_seq);
        }
        ResponseKind::Value { index, value } => {
            h.write_u8(4);
            h.write_u64(*index);
            write_opt_bytes(h, value.as_deref());
        }
        ResponseKind::NotLeader { leader } => {
            h.write_u8(5);
            h.write_opt(leader.as_ref().map(|(id, _)| *id));
        }
        ResponseKind::Unknown { reason } => {
            h.write_u8(6);
            h.write_len_bytes(reason.as_bytes());
        }
        ResponseKind::Error { message } => {
            h.write_u8(7);
            h.write_len_bytes(message.as_bytes());
        }
        ResponseKind::Invalid { message } => {
            h.write_u8(8);
            h.write_len_bytes(message.as_bytes());
        }
        ResponseKind::MembersChanged { index } => {
            h.write_u8(9);
            h.write_u64(*index);
        }
        ResponseKind::LeaderTransferred { leader } => {
            h.write_u8(10);
            h.write_u64(*leader);
        }
        ResponseKind::Status(_) => h.write_u8(11),
        ResponseKind::Log(_) => h.write_u8(12),
        ResponseKind::Members(_) => h.write_u8(13),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(digest_bytes(b""), 0xCBF2_9CE4_8422_2325);
        assert_eq!(digest_bytes(b"a"), 0xAF63_DC4C_8601_EC8C);
        assert_eq!(digest_bytes(b"foobar"), 0x8594_4171_F739_67E8);
    }

    #[test]
    fn length_prefixes_separate_adjacent_fields() {
        let mut a = StableHasher::new();
        a.write_len_bytes(b"ab");
        a.write_len_bytes(b"c");
        let mut b = StableHasher::new();
        b.write_len_bytes(b"a");
        b.write_len_bytes(b"bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn entry_digests_tell_term_index_and_payload_apart() {
        let e =
            |term, index, data: &[u8]| Entry { term, index, payload: EntryPayload::Command(data.to_vec()) };
        let base = digest_entry(&e(1, 1, b"x"));
        assert_eq!(base, digest_entry(&e(1, 1, b"x")));
        assert_ne!(base, digest_entry(&e(2, 1, b"x")));
        assert_ne!(base, digest_entry(&e(1, 2, b"x")));
        assert_ne!(base, digest_entry(&e(1, 1, b"y")));
        let blank = Entry { term: 1, index: 1, payload: EntryPayload::Blank };
        assert_ne!(base, digest_entry(&blank));
    }
}
