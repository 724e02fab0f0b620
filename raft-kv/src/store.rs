//! The replicated key-value state machine, with client sessions that make a
//! retried write apply exactly once.
//!
//! Every replica applies the same commands in the same order, so everything
//! here must be deterministic: sessions are evicted by the index at which
//! they were last used, never by wall-clock time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};

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

/// Reads into `buf` until it is full or the input ends; returns how many
/// bytes it holds.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads the next block of a format-2 snapshot into `buf`: `false` if the
/// input ended cleanly before it.
fn read_block(input: &mut impl Read, buf: &mut Vec<u8>) -> Result<bool, RestoreError> {
    let truncated = || RestoreError::Invalid("a block runs past the end of the snapshot".into());
    let mut len = [0u8; 4];
    match read_up_to(input, &mut len).map_err(RestoreError::Read)? {
        0 => return Ok(false),
        4 => {}
        _ => return Err(truncated()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > codec::DECODE_LIMIT_BYTES {
        return Err(RestoreError::Invalid(format!(
            "a block of {len} bytes, above the limit of {}",
            codec::DECODE_LIMIT_BYTES
        )));
    }
    buf.clear();
    buf.resize(len, 0);
    if read_up_to(input, buf).map_err(RestoreError::Read)? != len {
        return Err(truncated());
    }
    Ok(true)
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
    /// Reading them failed (the file beneath, or its checksums).
    #[error("the snapshot cannot be read: {0}")]
    Read(std::io::Error),
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
        self.apply_indexed(index, command).1
    }

    /// As [`KvStore::apply`], with the index of the entry that applied the
    /// command: `index`, or for a sequence number applied already, the index
    /// of the entry that applied it first (so that a retried write answers
    /// exactly what its first attempt would have).
    pub fn apply_indexed(&mut self, index: Index, command: Command) -> (Index, WriteResult) {
        self.applied = self.applied.max(index);
        if let WriteOp::Identity(op) = command.op {
            return (index, self.apply_identity(index, op));
        }
        if let Some(session) = self.sessions.get(&command.client_id) {
            if command.seq == session.last_seq {
                return (session.last_index, session.last_result.clone());
            }
            if command.seq < session.last_seq {
                return (index, WriteResult::StaleSequence { last_seq: session.last_seq });
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
        (index, result)
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

    /// A digest of the whole replicated state (pairs, sessions, applied
    /// index, cluster identity; not the session bound, which is each node's
    /// own): two stores that hold the same state have the same digest on
    /// every run and platform, and two that differ almost surely differ.
    /// The simulator compares replicas with it after every applied entry.
    /// It costs one pass over the store and no allocation: pairs are hashed
    /// one by one and summed, so the map's order does not matter.
    pub fn digest(&self) -> u64 {
        let pairs = self.data.iter().fold(0u64, |sum, (k, v)| {
            let mut h = Fnv::new();
            h.bytes(k);
            h.bytes(v);
            sum.wrapping_add(h.finish())
        });
        let mut h = Fnv::new();
        h.u64(self.data.len() as u64);
        h.u64(pairs);
        h.u64(self.sessions.len() as u64);
        for (client, s) in &self.sessions {
            h.u64(*client);
            h.u64(s.last_seq);
            h.u64(s.last_index);
            match &s.last_result {
                WriteResult::Done { existed } => {
                    h.u64(1);
                    h.u64(u64::from(*existed));
                }
                WriteResult::Cas { swapped, current } => {
                    h.u64(2);
                    h.u64(u64::from(*swapped));
                    match current {
                        None => h.u64(0),
                        Some(c) => {
                            h.u64(1);
                            h.bytes(c);
                        }
                    }
                }
                WriteResult::StaleSequence { last_seq } => {
                    h.u64(3);
                    h.u64(*last_seq);
                }
            }
        }
        h.u64(self.applied);
        h.u64(self.identity.token);
        h.u64(self.identity.token_index);
        h.u64(self.identity.members_with_data.len() as u64);
        for id in &self.identity.members_with_data {
            h.u64(*id);
        }
        h.finish()
    }

    /// Serializes the whole state: data sorted by key (so that every
    /// replica writes the same bytes for the same state), sessions and the
    /// cluster identity, as a format-2 snapshot of any size. (A node writes
    /// large states with [`KvStore::snapshot_image`] instead, straight to
    /// a file.)
    pub fn snapshot(&self) -> Result<Vec<u8>, CodecError> {
        let image = self.snapshot_image()?;
        let mut out = Vec::with_capacity(usize::try_from(image.len()).unwrap_or(0));
        image.write_to(&mut out).map_err(|e| CodecError::Encode(e.to_string()))?;
        Ok(out)
    }

    /// The state as a snapshot ready to be written: its pairs sorted and
    /// cut into blocks once, its length known before a byte is written (a
    /// snapshot file's header announces it), its values borrowed, not
    /// copied.
    pub fn snapshot_image(&self) -> Result<SnapshotImage<'_>, CodecError> {
        let mut pairs: Vec<(&[u8], &[u8])> = self.data.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let header = SnapshotHeader {
            sessions: self.sessions.clone(),
            applied: self.applied,
            identity: self.identity.clone(),
            pairs: pairs.len() as u64,
        };
        let mut len = SNAPSHOT_MAGIC.len() as u64 + 4 + codec::encoded_len(&header)?;
        let mut blocks = Vec::new();
        let mut start = 0;
        while start < pairs.len() {
            let mut size = 0;
            let n = pairs[start..]
                .iter()
                .take_while(|(k, v)| {
                    size += k.len() + v.len() + 16;
                    size <= SNAPSHOT_BLOCK_BYTES
                })
                .count()
                .max(1);
            let block_len = codec::encoded_len(&SnapshotImage::block(&pairs[start..start + n]))?;
            if block_len > u64::from(u32::MAX) {
                return Err(CodecError::Encode(format!("a snapshot block of {block_len} bytes")));
            }
            len += 4 + block_len;
            blocks.push((start..start + n, block_len as u32));
            start += n;
        }
        Ok(SnapshotImage { header, pairs, blocks, len })
    }

    /// Replaces the state with a snapshot produced by [`KvStore::snapshot`],
    /// after checking it in full: any bytes that are not such a snapshot are
    /// an error and leave the store as it was (never a panic, then or on a
    /// later write). The session bound stays this node's own.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), RestoreError> {
        self.restore_from(bytes)
    }

    /// [`KvStore::restore`] from a stream (a snapshot file), block by
    /// block: besides the store it builds, it holds one block (about 1 MiB)
    /// at a time, whatever the snapshot's size.
    pub fn restore_from(&mut self, mut input: impl Read) -> Result<(), RestoreError> {
        let mut magic = [0u8; SNAPSHOT_MAGIC.len()];
        let got = read_up_to(&mut input, &mut magic).map_err(RestoreError::Read)?;
        if got < magic.len() || magic != SNAPSHOT_MAGIC {
            // Format 1: one encoded value, below the decode limit.
            let mut bytes = magic[..got].to_vec();
            input
                .take(codec::DECODE_LIMIT_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(RestoreError::Read)?;
            let old = codec::decode::<SnapshotOwned>(&bytes)?;
            let pairs = old.data.into_iter().map(|(k, v)| Ok((k.into_vec(), v.into_vec())));
            let header = SnapshotHeader {
                pairs: pairs.len() as u64,
                sessions: old.sessions,
                applied: old.applied,
                identity: old.identity,
            };
            return self.restore_checked(header, pairs);
        }
        let mut buf = Vec::new();
        if !read_block(&mut input, &mut buf)? {
            return Err(RestoreError::Invalid("the snapshot ends before its header".into()));
        }
        let header: SnapshotHeader = codec::decode(&buf)?;
        let announced = header.pairs;
        // The pairs, block by block, as a fallible iterator.
        let mut block = Vec::new().into_iter();
        let mut read = 0u64;
        let pairs = std::iter::from_fn(|| loop {
            if let Some((k, v)) = block.next() {
                read += 1;
                return Some(Ok((serde_bytes::ByteBuf::into_vec(k), serde_bytes::ByteBuf::into_vec(v))));
            }
            if read >= announced {
                return None;
            }
            let next = read_block(&mut input, &mut buf).and_then(|more| {
                if !more {
                    return Err(RestoreError::Invalid(format!(
                        "the header announces {announced} pairs but the blocks hold {read}"
                    )));
                }
                let pairs: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)> = codec::decode(&buf)?;
                if pairs.is_empty() {
                    return Err(RestoreError::Invalid("an empty block of pairs".into()));
                }
                if read + pairs.len() as u64 > announced {
                    return Err(RestoreError::Invalid(format!(
                        "the blocks hold more than the {announced} pairs the header announces"
                    )));
                }
                Ok(pairs)
            });
            match next {
                Ok(pairs) => block = pairs.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        });
        let mut restored = KvStore::new(self.sessions_max);
        restored.restore_checked_into(header, pairs)?;
        if read_up_to(&mut input, &mut [0u8; 1]).map_err(RestoreError::Read)? != 0 {
            return Err(RestoreError::Invalid(format!(
                "bytes follow the {announced} pairs the header announces"
            )));
        }
        *self = restored;
        Ok(())
    }

    /// Checks and takes a snapshot's parts, leaving `self` as it was on error.
    fn restore_checked(
        &mut self,
        header: SnapshotHeader,
        pairs: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), RestoreError>>,
    ) -> Result<(), RestoreError> {
        let mut restored = KvStore::new(self.sessions_max);
        restored.restore_checked_into(header, pairs)?;
        *self = restored;
        Ok(())
    }

    /// Fills this empty store from a snapshot's parts, checking every
    /// invariant the store relies on.
    fn restore_checked_into(
        &mut self,
        header: SnapshotHeader,
        pairs: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), RestoreError>>,
    ) -> Result<(), RestoreError> {
        let invalid = |what: String| Err(RestoreError::Invalid(what));
        if header.applied > raft_core::INDEX_MAX {
            return invalid(format!(
                "its index {} is beyond the largest index {}",
                header.applied,
                raft_core::INDEX_MAX
            ));
        }
        let mut sessions_by_index = BTreeMap::new();
        for (&client, session) in &header.sessions {
            if session.last_index > header.applied {
                return invalid(format!(
                    "session {client} was last used at index {}, after the snapshot's index {}",
                    session.last_index, header.applied
                ));
            }
            if let Some(other) = sessions_by_index.insert(session.last_index, client) {
                return invalid(format!(
                    "sessions {other} and {client} share their last index {}",
                    session.last_index
                ));
            }
        }
        if header.identity.token_index > header.applied
            || (header.identity.token == 0) != (header.identity.token_index == 0)
        {
            return invalid(format!(
                "the cluster token entry's index {} does not fit the snapshot's index {}",
                header.identity.token_index, header.applied
            ));
        }
        let mut data = HashMap::new();
        let mut last_key: Option<Vec<u8>> = None;
        for pair in pairs {
            let (key, value) = pair?;
            if last_key.as_ref().is_some_and(|last| *last >= key) {
                return invalid(format!(
                    "keys are not strictly sorted (key of {} bytes repeats or goes back)",
                    key.len()
                ));
            }
            last_key = Some(key.clone());
            data.insert(key, Bytes::from(value));
        }
        if data.len() as u64 != header.pairs {
            return invalid(format!("{} pairs where the header announces {}", data.len(), header.pairs));
        }
        self.data = data;
        self.sessions = header.sessions;
        self.sessions_by_index = sessions_by_index;
        self.applied = header.applied;
        self.identity = header.identity;
        Ok(())
    }
}

/// A store's snapshot ready to write ([`KvStore::snapshot_image`]).
pub struct SnapshotImage<'a> {
    header: SnapshotHeader,
    pairs: Vec<(&'a [u8], &'a [u8])>,
    /// Each block's pairs and encoded length.
    blocks: Vec<(std::ops::Range<usize>, u32)>,
    len: u64,
}

impl SnapshotImage<'_> {
    /// The snapshot's length, in bytes.
    #[allow(clippy::len_without_is_empty)] // (never empty: it has a header)
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Writes the snapshot, block by block, to `out` (no copy of the
    /// whole): exactly [`SnapshotImage::len`] bytes.
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let codec_error = |e: CodecError| std::io::Error::other(e.to_string());
        out.write_all(&SNAPSHOT_MAGIC)?;
        let header_len = codec::encoded_len(&self.header).map_err(codec_error)?;
        out.write_all(&(header_len as u32).to_le_bytes())?;
        codec::encode_to_writer(&self.header, out).map_err(codec_error)?;
        for (range, len) in &self.blocks {
            out.write_all(&len.to_le_bytes())?;
            codec::encode_to_writer(&Self::block(&self.pairs[range.clone()]), out).map_err(codec_error)?;
        }
        Ok(())
    }

    /// A block of pairs, as it is encoded.
    fn block<'p>(pairs: &[(&'p [u8], &'p [u8])]) -> Vec<(&'p serde_bytes::Bytes, &'p serde_bytes::Bytes)> {
        pairs.iter().map(|(k, v)| (serde_bytes::Bytes::new(k), serde_bytes::Bytes::new(v))).collect()
    }
}

/// 64-bit FNV-1a, for [`KvStore::digest`] (std's hashers are seeded per
/// process; this one is the same everywhere).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xCBF2_9CE4_8422_2325)
    }

    fn byte(&mut self, b: u8) {
        self.0 ^= u64::from(b);
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01B3);
    }

    /// A length-prefixed byte string (so "ab","c" differs from "a","bc").
    fn bytes(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        bytes.iter().for_each(|&b| self.byte(b));
    }

    fn u64(&mut self, v: u64) {
        v.to_le_bytes().iter().for_each(|&b| self.byte(b));
    }

    fn finish(&self) -> u64 {
        self.0
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
        let first = kv.apply_indexed(1, put(7, 1, "x", "5"));
        kv.apply(2, put(8, 1, "x", "6"));
        let retry = kv.apply_indexed(3, put(7, 1, "x", "5"));
        assert_eq!(first, retry, "the retry answers the first attempt's index and result");
        assert_eq!(retry.0, 1);
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
    fn the_digest_is_the_same_for_the_same_state_however_it_was_reached() {
        let mut a = KvStore::new(10);
        a.apply(1, put(1, 1, "x", "1"));
        a.apply(2, put(2, 1, "y", "2"));
        let mut b = KvStore::new(10);
        b.restore(&a.snapshot().unwrap()).unwrap();
        assert_eq!(a.digest(), b.digest(), "a restored snapshot has the digest of its source");
        let before = a.digest();
        // Same pairs, other sessions: another state.
        let mut c = KvStore::new(10);
        c.apply(1, put(3, 1, "x", "1"));
        c.apply(2, put(2, 1, "y", "2"));
        assert_ne!(c.digest(), before, "the digest covers sessions");
        a.apply(3, put(1, 2, "x", "3"));
        assert_ne!(a.digest(), before, "the digest covers values");
        let mut d = KvStore::new(10);
        d.apply(1, put(1, 1, "xy", ""));
        let mut e = KvStore::new(10);
        e.apply(1, put(1, 1, "x", "y"));
        assert_ne!(d.digest(), e.digest(), "key and value bytes are kept apart");
        b.apply_blank(3);
        assert_ne!(b.digest(), before, "the digest covers the applied index");
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
        let mut image = kv.snapshot_image().unwrap();
        for session in image.header.sessions.values_mut() {
            session.last_index = 4;
        }
        let mut bad = Vec::new();
        image.write_to(&mut bad).unwrap();
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
        assert_eq!(kv.snapshot_image().unwrap().len(), bytes.len() as u64, "the length announced");
        let mut other = KvStore::new(10);
        other.restore(&bytes).unwrap();
        assert_eq!(other, kv);
        // A cut or a doubled block is refused, not half restored.
        assert!(KvStore::new(10).restore(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.extend_from_slice(&bytes[bytes.len() - 100..]);
        assert!(KvStore::new(10).restore(&longer).is_err());
    }

    /// A reader that hands out at most 3 bytes per read, as a socket or a
    /// checksummed file reader may.
    struct Trickle<'a>(&'a [u8]);
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(3).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_snapshot_restores_from_a_stream_that_trickles_and_a_cut_one_is_refused() {
        let kv = store_with_sessions();
        let bytes = kv.snapshot().unwrap();
        let mut other = KvStore::new(3);
        other.restore_from(Trickle(&bytes)).unwrap();
        assert_eq!(other, kv);
        for cut in [1, 8, 9, 12, bytes.len() - 1] {
            let err = KvStore::new(3).restore_from(Trickle(&bytes[..cut])).unwrap_err();
            assert!(matches!(err, RestoreError::Invalid(_) | RestoreError::Decode(_)), "cut at {cut}: {err}");
        }
        let failing = std::io::Read::chain(&bytes[..20], FailingReader);
        let err = KvStore::new(3).restore_from(failing).unwrap_err();
        assert!(matches!(err, RestoreError::Read(_)), "{err}");
    }

    /// A reader whose every read fails (a disk error, a bad checksum).
    struct FailingReader;
    impl std::io::Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "checksum mismatch"))
        }
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
