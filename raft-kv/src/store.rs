//! The replicated key-value state machine, with client sessions that make a
//! retried write apply exactly once.
//!
//! Every replica applies the same commands in the same order, so everything
//! here must be deterministic: sessions are evicted by the index at which
//! they were last used, never by wall-clock time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::command::{Command, IdentityOp, WriteOp, WriteResult};
use bytes::Bytes;
use raft_codec::{self as codec, CodecError};
use raft_core::{Index, NodeId};
use serde::{Deserialize, Serialize};

/// Default bound on the session table.
pub const SESSIONS_MAX_DEFAULT: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    last_seq: u64,
    last_result: WriteResult,
    last_index: Index,
}

/// What the cluster's log says about the cluster itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// The cluster token (0 until the first token entry is applied).
    pub token: u64,
    /// The index of the entry that set it.
    pub token_index: Index,
    /// Members known to hold the token entry durably.
    pub members_with_data: BTreeSet<NodeId>,
}

/// Appends `[len: u32 LE][encoded value]` to `out`.
fn push_block<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), CodecError> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    codec::encode_into(value, out).inspect_err(|_| out.truncate(at))?;
    let len = u32::try_from(out.len() - at - 4)
        .map_err(|_| CodecError::Encode("a snapshot block of 4 GiB".into()))?;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Reads the blocks of a format-2 snapshot (after its magic).
fn read_blocks(mut bytes: &[u8]) -> Result<SnapshotOwned, RestoreError> {
    let next_block = |bytes: &mut &[u8]| -> Result<Vec<u8>, RestoreError> {
        let truncated = || RestoreError::Invalid("a block runs past the end of the snapshot".into());
        let len =
            u32::from_le_bytes(bytes.get(..4).ok_or_else(truncated)?.try_into().expect("4 bytes")) as usize;
        let block = bytes.get(4..4 + len).ok_or_else(truncated)?.to_vec();
        *bytes = &bytes[4 + len..];
        Ok(block)
    };
    let header: SnapshotHeader = codec::decode(&next_block(&mut bytes)?)?;
    let mut data = Vec::with_capacity(header.pairs.min(bytes.len() as u64) as usize);
    while (data.len() as u64) < header.pairs {
        if bytes.is_empty() {
            return Err(RestoreError::Invalid(format!(
                "the header announces {} pairs but the blocks hold {}",
                header.pairs,
                data.len()
            )));
        }
        let block: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)> =
            codec::decode(&next_block(&mut bytes)?)?;
        if block.is_empty() {
            return Err(RestoreError::Invalid("an empty block of pairs".into()));
        }
        data.extend(block);
    }
    if data.len() as u64 != header.pairs || !bytes.is_empty() {
        return Err(RestoreError::Invalid(format!(
            "{} pairs and {} bytes after them, where the header announces {} pairs and nothing after",
            data.len(),
            bytes.len(),
            header.pairs
        )));
    }
    Ok(SnapshotOwned { data, sessions: header.sessions, applied: header.applied, identity: header.identity })
}

/// Why snapshot bytes could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The bytes are not an encoded snapshot.
    #[error("the snapshot does not decode: {0}")]
    Decode(#[from] CodecError),
    /// They decode, but break an invariant of the store.
    #[error("the snapshot is inconsistent: {0}")]
    Invalid(String),
}

/// The key-value map plus the session table.
///
/// The map is a `HashMap` (point reads and writes only; a `BTreeMap` of byte
/// keys cost a dozen `memcmp` calls per write); snapshots write it sorted, so
/// every replica's snapshot of the same state is the same bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    /// Values are shared bytes: cloning the store (for a snapshot taken in
    /// the background) copies no value.
    data: HashMap<Vec<u8>, Bytes>,
    sessions: BTreeMap<u64, Session>,
    /// Sessions by the index of their last write, for eviction.
    sessions_by_index: BTreeMap<Index, u64>,
    sessions_max: usize,
    applied: Index,
    identity: ClusterIdentity,
}

/// The first bytes of a snapshot of format 2: blocks, each `[len: u32 LE]`
/// and an encoded value, so that a snapshot may be of any size while no
/// block comes near the codec's decode limit. 0xff never starts a format-1
/// snapshot (one encoded [`SnapshotOwned`]: a varint length, which 0xff
/// cannot begin).
const SNAPSHOT_MAGIC: [u8; 8] = *b"\xffRLKV\x00\x00\x02";

/// Target bytes of key-value pairs per block of a format-2 snapshot.
const SNAPSHOT_BLOCK_BYTES: usize = 1 << 20;

/// The first block of a format-2 snapshot: everything but the pairs, and
/// how many pairs the blocks after it hold.
#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    sessions: BTreeMap<u64, Session>,
    applied: Index,
    identity: ClusterIdentity,
    pairs: u64,
}

/// The format-1 snapshot, borrowed for writing (kept for the tests that
/// pin reading it)...
#[derive(Serialize)]
#[cfg_attr(not(test), allow(dead_code))]
struct SnapshotRef<'a> {
    data: Vec<(&'a serde_bytes::Bytes, &'a serde_bytes::Bytes)>,
    sessions: &'a BTreeMap<u64, Session>,
    applied: Index,
    identity: &'a ClusterIdentity,
}

/// ...and owned for reading.
#[derive(Deserialize)]
struct SnapshotOwned {
    data: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
    sessions: BTreeMap<u64, Session>,
    applied: Index,
    identity: ClusterIdentity,
}

impl KvStore {
    /// An empty store keeping at most `sessions_max` client sessions.
    pub fn new(sessions_max: usize) -> KvStore {
        KvStore { sessions_max: sessions_max.max(1), ..KvStore::default() }
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.data.get(key).map(|v| &v[..])
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of client sessions held.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// The index of the last entry applied.
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// What the log has said about the cluster itself.
    pub fn identity(&self) -> &ClusterIdentity {
        &self.identity
    }

    /// Marks `index` applied without a command (a blank entry).
    pub fn apply_blank(&mut self, index: Index) {
        self.applied = self.applied.max(index);
    }

    /// Applies the command at `index`. A command whose sequence number the
    /// session has already applied is not applied again: its first result is
    /// returned (exactly-once). An older sequence number gets `StaleSequence`.
    /// The command is taken by value: its key and value move into the map.
    pub fn apply(&mut self, index: Index, command: Command) -> WriteResult {
        self.applied = self.applied.max(index);
        if let WriteOp::Identity(op) = command.op {
            return self.apply_identity(index, op);
        }
        if let Some(session) = self.sessions.get(&command.client_id) {
            if command.seq == session.last_seq {
                return session.last_result.clone();
            }
            if command.seq < session.last_seq {
                return WriteResult::StaleSequence { last_seq: session.last_seq };
            }
        }
        let Command { client_id, seq, op } = command;
        let result = match op {
            WriteOp::Put { key, value } => {
                WriteResult::Done { existed: self.data.insert(key, value.into()).is_some() }
            }
            WriteOp::Delete { key } => WriteResult::Done { existed: self.data.remove(&key).is_some() },
            WriteOp::Cas { key, expected, new } => {
                let current = self.data.get(&key).map(|v| v.to_vec());
                let swapped = current == expected;
                if swapped {
                    self.data.insert(key, new.into());
                }
                WriteResult::Cas { swapped, current }
            }
            WriteOp::Identity(_) => unreachable!("identity operations return above"),
        };
        self.record_session(index, client_id, seq, result.clone());
        result
    }

    /// Cluster bookkeeping: outside every client session. The first token
    /// applied wins (a later one came from a leader that had not applied the
    /// first yet); `existed` says whether the record was there already.
    fn apply_identity(&mut self, index: Index, op: IdentityOp) -> WriteResult {
        let existed = match op {
            IdentityOp::Token(token) if self.identity.token == 0 && token != 0 => {
                self.identity.token = token;
                self.identity.token_index = index;
                false
            }
            IdentityOp::Token(_) => true,
            IdentityOp::MemberHasData(id) => !self.identity.members_with_data.insert(id),
        };
        WriteResult::Done { existed }
    }

    fn record_session(&mut self, index: Index, client_id: u64, seq: u64, result: WriteResult) {
        let session = Session { last_seq: seq, last_result: result, last_index: index };
        if let Some(old) = self.sessions.insert(client_id, session) {
            self.sessions_by_index.remove(&old.last_index);
        }
        self.sessions_by_index.insert(index, client_id);
        while self.sessions.len() > self.sessions_max {
            // `restore` checked that every session has its own index, and
            // apply keeps it so: the index is never short of a session.
            let Some((_, client)) = self.sessions_by_index.pop_first() else { break };
            self.sessions.remove(&client);
        }
    }

    /// Serializes the whole state: data sorted by key (so that every
    /// replica writes the same bytes for the same state), sessions and the
    /// cluster identity, as a format-2 snapshot of any size.
    pub fn snapshot(&self) -> Result<Vec<u8>, CodecError> {
        let mut pairs: Vec<(&Vec<u8>, &Bytes)> = self.data.iter().collect();
        pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 16).sum();
        let mut out = Vec::with_capacity(bytes + 4096);
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        let header = SnapshotHeader {
            sessions: self.sessions.clone(),
            applied: self.applied,
            identity: self.identity.clone(),
            pairs: pairs.len() as u64,
        };
        push_block(&mut out, &header)?;
        let mut rest = &pairs[..];
        while !rest.is_empty() {
            let mut size = 0;
            let n = rest
                .iter()
                .take_while(|(k, v)| {
                    size += k.len() + v.len() + 16;
                    size <= SNAPSHOT_BLOCK_BYTES
                })
                .count()
                .max(1);
            let (block, tail) = rest.split_at(n);
            let block: Vec<(&serde_bytes::Bytes, &serde_bytes::Bytes)> =
                block.iter().map(|(k, v)| (serde_bytes::Bytes::new(k), serde_bytes::Bytes::new(v))).collect();
            push_block(&mut out, &block)?;
            rest = tail;
        }
        Ok(out)
    }

    /// Replaces the state with a snapshot produced by [`KvStore::snapshot`],
    /// after checking it in full: any bytes that are not such a snapshot are
    /// an error and leave the store as it was (never a panic, then or on a
    /// later write). The session bound stays this node's own.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), RestoreError> {
        let snapshot = if bytes.starts_with(&SNAPSHOT_MAGIC) {
            read_blocks(&bytes[SNAPSHOT_MAGIC.len()..])?
        } else {
            codec::decode::<SnapshotOwned>(bytes)?
        };
        let invalid = |what: String| Err(RestoreError::Invalid(what));
        if let Some(pair) = snapshot.data.windows(2).find(|w| w[0].0 >= w[1].0) {
            return invalid(format!(
                "keys are not strictly sorted (key of {} bytes repeats or goes back)",
                pair[1].0.len()
            ));
        }
        if snapshot.applied > raft_core::INDEX_MAX {
            return invalid(format!(
                "its index {} is beyond the largest index {}",
                snapshot.applied,
                raft_core::INDEX_MAX
            ));
        }
        let mut sessions_by_index = BTreeMap::new();
        for (&client, session) in &snapshot.sessions {
            if session.last_index > snapshot.applied {
                return invalid(format!(
                    "session {client} was last used at index {}, after the snapshot's index {}",
                    session.last_index, snapshot.applied
                ));
            }
            if let Some(other) = sessions_by_index.insert(session.last_index, client) {
                return invalid(format!(
                    "sessions {other} and {client} share their last index {}",
                    session.last_index
                ));
            }
        }
        if snapshot.identity.token_index > snapshot.applied
            || (snapshot.identity.token == 0) != (snapshot.identity.token_index == 0)
        {
            return invalid(format!(
                "the cluster token entry's index {} does not fit the snapshot's index {}",
                snapshot.identity.token_index, snapshot.applied
            ));
        }
        *self = KvStore {
            data: snapshot.data.into_iter().map(|(k, v)| (k.into_vec(), v.into_vec().into())).collect(),
            sessions: snapshot.sessions,
            sessions_by_index,
            sessions_max: self.sessions_max,
            applied: snapshot.applied,
            identity: snapshot.identity,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(client_id: u64, seq: u64, key: &str, value: &str) -> Command {
        Command {
            client_id,
            seq,
            op: WriteOp::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec() },
        }
    }

    #[test]
    fn a_retried_write_is_applied_once_and_returns_its_first_result() {
        let mut kv = KvStore::new(10);
        let first = kv.apply(1, put(7, 1, "x", "5"));
        kv.apply(2, put(8, 1, "x", "6"));
        let retry = kv.apply(3, put(7, 1, "x", "5"));
        assert_eq!(first, retry);
        assert_eq!(kv.get(b"x"), Some(&b"6"[..]), "the retry must not overwrite the later write");
    }

    #[test]
    fn an_old_sequence_number_is_refused() {
        let mut kv = KvStore::new(10);
        kv.apply(1, put(7, 2, "x", "5"));
        assert_eq!(kv.apply(2, put(7, 1, "x", "1")), WriteResult::StaleSequence { last_seq: 2 });
        assert_eq!(kv.get(b"x"), Some(&b"5"[..]));
    }

    #[test]
    fn cas_swaps_only_on_the_expected_value() {
        let mut kv = KvStore::new(10);
        let cas = |seq, expected: Option<&str>, new: &str| Command {
            client_id: 1,
            seq,
            op: WriteOp::Cas {
                key: b"k".to_vec(),
                expected: expected.map(|e| e.as_bytes().to_vec()),
                new: new.as_bytes().to_vec(),
            },
        };
        assert_eq!(kv.apply(1, cas(1, None, "a")), WriteResult::Cas { swapped: true, current: None });
        assert_eq!(
            kv.apply(2, cas(2, Some("b"), "c")),
            WriteResult::Cas { swapped: false, current: Some(b"a".to_vec()) }
        );
        assert_eq!(kv.get(b"k"), Some(&b"a"[..]));
    }

    #[test]
    fn the_session_table_is_bounded_and_evicts_the_least_recent() {
        let mut kv = KvStore::new(2);
        kv.apply(1, put(1, 1, "a", "1"));
        kv.apply(2, put(2, 1, "a", "2"));
        kv.apply(3, put(1, 2, "a", "3"));
        kv.apply(4, put(3, 1, "a", "4"));
        assert_eq!(kv.sessions(), 2);
        // Client 2 was least recently used: its session is gone, so a late
        // retry of its write applies again (the documented cost of the bound).
        assert_eq!(kv.apply(5, put(2, 1, "a", "2")), WriteResult::Done { existed: true });
    }

    #[test]
    fn a_snapshot_restores_data_and_sessions() {
        let mut kv = KvStore::new(10);
        kv.apply(1, put(7, 1, "x", "5"));
        let bytes = kv.snapshot().unwrap();
        let mut other = KvStore::new(10);
        other.restore(&bytes).unwrap();
        assert_eq!(other, kv);
        // The restored session still deduplicates.
        assert_eq!(other.apply(2, put(7, 1, "x", "9")), WriteResult::Done { existed: false });
        assert_eq!(other.get(b"x"), Some(&b"5"[..]));
    }

    #[test]
    fn the_first_cluster_token_applied_wins_and_snapshots_keep_it() {
        let mut kv = KvStore::new(10);
        let identity = |op| Command { client_id: 0, seq: 0, op: WriteOp::Identity(op) };
        assert_eq!(kv.apply(2, identity(IdentityOp::Token(7))), WriteResult::Done { existed: false });
        assert_eq!(kv.apply(3, identity(IdentityOp::Token(9))), WriteResult::Done { existed: true });
        kv.apply(4, identity(IdentityOp::MemberHasData(2)));
        assert_eq!((kv.identity().token, kv.identity().token_index), (7, 2));
        assert_eq!(kv.sessions(), 0, "identity records belong to no client session");
        let mut other = KvStore::new(10);
        other.restore(&kv.snapshot().unwrap()).unwrap();
        assert_eq!(other.identity(), kv.identity());
        assert!(other.identity().members_with_data.contains(&2));
    }

    fn store_with_sessions() -> KvStore {
        let mut kv = KvStore::new(3);
        for i in 1..=5u64 {
            kv.apply(i, put(i, 1, &format!("k{i}"), "v"));
        }
        kv
    }

    /// A snapshot whose sessions share one index used to restore, and the
    /// next write that evicted a session panicked on every node.
    #[test]
    fn a_snapshot_whose_sessions_share_an_index_is_refused_and_the_store_is_unchanged() {
        let kv = store_with_sessions();
        let mut snapshot = read_blocks(&kv.snapshot().unwrap()[SNAPSHOT_MAGIC.len()..]).unwrap();
        for session in snapshot.sessions.values_mut() {
            session.last_index = 4;
        }
        let bad = codec::encode(&SnapshotRef {
            data: snapshot
                .data
                .iter()
                .map(|(k, v)| (serde_bytes::Bytes::new(k), serde_bytes::Bytes::new(v)))
                .collect(),
            sessions: &snapshot.sessions,
            applied: snapshot.applied,
            identity: &snapshot.identity,
        })
        .unwrap();
        let mut other = store_with_sessions();
        let err = other.restore(&bad).unwrap_err();
        assert!(err.to_string().contains("share their last index 4"), "{err}");
        assert_eq!(other, kv, "a refused snapshot changed the store");
        other.apply(6, put(9, 1, "x", "y"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// No bytes make restore panic, nor the writes after it; flipping or
        /// cutting bytes of a real snapshot is the likely damage.
        #[test]
        fn restore_never_panics_on_any_bytes(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 0..4),
            cut in 0usize..4096,
        ) {
            let mut kv = KvStore::new(3);
            let _ = kv.restore(&noise);
            let mut real = store_with_sessions().snapshot().unwrap();
            for (at, byte) in flips {
                let len = real.len();
                real[at % len] ^= byte;
            }
            real.truncate(cut.max(1));
            if kv.restore(&real).is_ok() {
                for i in 0..5 {
                    kv.apply(kv.applied().saturating_add(1), put(100 + i, 1, "after", "restore"));
                }
            }
        }
    }

    /// Case 1 of issue 10: state past ~63 MiB made every snapshot fail, on
    /// every node, for good. A snapshot is blocks now, of any size.
    #[test]
    fn a_state_larger_than_the_decode_limit_snapshots_and_restores() {
        let mut kv = KvStore::new(10);
        for i in 0..80u64 {
            let value = vec![i as u8; 1 << 20];
            kv.apply(
                i + 1,
                Command {
                    client_id: 1,
                    seq: i + 1,
                    op: WriteOp::Put { key: i.to_be_bytes().to_vec(), value },
                },
            );
        }
        let bytes = kv.snapshot().unwrap();
        assert!(bytes.len() > raft_codec::DECODE_LIMIT_BYTES, "{} bytes", bytes.len());
        let mut other = KvStore::new(10);
        other.restore(&bytes).unwrap();
        assert_eq!(other, kv);
        // A cut or a doubled block is refused, not half restored.
        assert!(KvStore::new(10).restore(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.extend_from_slice(&bytes[bytes.len() - 100..]);
        assert!(KvStore::new(10).restore(&longer).is_err());
    }

    /// A snapshot written by the format before blocks is still restored.
    #[test]
    fn a_format_1_snapshot_is_still_restored() {
        let kv = store_with_sessions();
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = {
            let mut p: Vec<_> = kv.data.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect();
            p.sort();
            p
        };
        let old = codec::encode(&SnapshotRef {
            data: pairs
                .iter()
                .map(|(k, v)| (serde_bytes::Bytes::new(k), serde_bytes::Bytes::new(v)))
                .collect(),
            sessions: &kv.sessions,
            applied: kv.applied,
            identity: &kv.identity,
        })
        .unwrap();
        let mut other = KvStore::new(3);
        other.restore(&old).unwrap();
        assert_eq!(other, kv);
    }

    #[test]
    fn replicas_with_the_same_state_write_the_same_snapshot_bytes() {
        // Same commands, so same sessions; the map's insertion history differs.
        let mut a = KvStore::new(10);
        let mut b = KvStore::new(10);
        for k in 0..200 {
            a.apply(k + 1, put(1, k + 1, &format!("k{k}"), "v"));
        }
        for k in (0..200).rev() {
            b.data.insert(format!("k{k}").into_bytes(), Bytes::from_static(b"v"));
        }
        b.apply(200, put(1, 200, "k199", "v"));
        b.applied = a.applied;
        b.sessions = a.sessions.clone();
        b.sessions_by_index = a.sessions_by_index.clone();
        assert_eq!(a, b);
        assert_eq!(a.snapshot().unwrap(), b.snapshot().unwrap());
        let mut c = KvStore::new(10);
        c.restore(&a.snapshot().unwrap()).unwrap();
        assert_eq!(c, a);
    }
}
