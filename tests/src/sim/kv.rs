//! The replicated state machine of the simulation: a key-value map with
//! exactly-once client sessions, its command encoding and its snapshot
//! encoding (a tiny hand-written binary format).
//!
//! A command is `(client, seq, op)`. The session table remembers, per client,
//! the last sequence number applied and its result: a retried command (same
//! `seq`) is not applied again and returns the saved result; an older one is
//! ignored (its client has moved on).

use std::collections::BTreeMap;

use crate::linearizability::{ClientId, OpResult};
use crate::sim::hash::StableHasher;

/// A write operation carried in a log entry (reads go through ReadIndex).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: u64,
        /// The value.
        value: u64,
    },
    /// Set `key` to `new` if it currently holds `expected` (`None`: absent).
    Cas {
        /// The key.
        key: u64,
        /// The value required.
        expected: Option<u64>,
        /// The value written on success.
        new: u64,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: u64,
    },
}

/// What a write returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteResult {
    /// A put was applied.
    Put,
    /// A compare-and-swap, and whether it swapped.
    Cas {
        /// True if the value matched and was replaced.
        succeeded: bool,
    },
    /// A delete was applied.
    Delete,
}

impl WriteResult {
    /// The result as the linearizability checker spells it.
    pub fn to_op_result(self) -> OpResult {
        match self {
            WriteResult::Put => OpResult::Put,
            WriteResult::Cas { succeeded } => OpResult::Cas { succeeded },
            WriteResult::Delete => OpResult::Delete,
        }
    }
}

/// A client command: who, which attempt of theirs, and what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// The client session.
    pub client: ClientId,
    /// The client's sequence number for this operation (from 1).
    pub seq: u64,
    /// The write.
    pub op: WriteOp,
}

const TAG_PUT: u8 = 1;
const TAG_CAS: u8 = 2;
const TAG_DELETE: u8 = 3;

/// Reads little-endian integers from a byte slice; every read is checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, String> {
        let (&b, rest) = self.bytes.split_first().ok_or("truncated: expected a byte")?;
        self.bytes = rest;
        Ok(b)
    }

    fn u64(&mut self) -> Result<u64, String> {
        if self.bytes.len() < 8 {
            return Err(format!("truncated: expected 8 bytes, {} left", self.bytes.len()));
        }
        let (head, rest) = self.bytes.split_at(8);
        self.bytes = rest;
        Ok(u64::from_le_bytes(head.try_into().expect("8 bytes")))
    }

    fn opt_u64(&mut self) -> Result<Option<u64>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            t => Err(format!("bad option tag {t}")),
        }
    }

    fn finish(&self) -> Result<(), String> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.bytes.len()))
        }
    }
}

fn put_opt(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

impl Command {
    /// The command as log entry bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(34);
        out.extend_from_slice(&self.client.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        match self.op {
            WriteOp::Put { key, value } => {
                out.push(TAG_PUT);
                out.extend_from_slice(&key.to_le_bytes());
                out.extend_from_slice(&value.to_le_bytes());
            }
            WriteOp::Cas { key, expected, new } => {
                out.push(TAG_CAS);
                out.extend_from_slice(&key.to_le_bytes());
                put_opt(&mut out, expected);
                out.extend_from_slice(&new.to_le_bytes());
            }
            WriteOp::Delete { key } => {
                out.push(TAG_DELETE);
                out.extend_from_slice(&key.to_le_bytes());
            }
        }
        out
    }

    /// Parses log entry bytes written by [`Command::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Command, String> {
        let mut r = Reader { bytes };
        let client = r.u64()?;
        let seq = r.u64()?;
        let op = match r.u8()? {
            TAG_PUT => WriteOp::Put { key: r.u64()?, value: r.u64()? },
            TAG_CAS => WriteOp::Cas { key: r.u64()?, expected: r.opt_u64()?, new: r.u64()? },
            TAG_DELETE => WriteOp::Delete { key: r.u64()? },
            t => return Err(format!("unknown command tag {t}")),
        };
        r.finish()?;
        Ok(Command { client, seq, op })
    }
}

/// How a command fared against the session table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Applied now, with this result.
    Applied(WriteResult),
    /// A retry of the last command of its client: not applied again; this is
    /// the result saved when it was.
    Duplicate(WriteResult),
    /// Older than the client's last applied command: ignored.
    Stale,
}

impl ApplyOutcome {
    /// The result a client waiting for this command should get, if any.
    pub fn result(self) -> Option<WriteResult> {
        match self {
            ApplyOutcome::Applied(r) | ApplyOutcome::Duplicate(r) => Some(r),
            ApplyOutcome::Stale => None,
        }
    }
}

/// The last command applied for one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    /// Its sequence number.
    pub seq: u64,
    /// Its result.
    pub result: WriteResult,
}

/// The key-value state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    data: BTreeMap<u64, u64>,
    sessions: BTreeMap<ClientId, Session>,
}

impl KvStore {
    /// An empty store.
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: u64) -> Option<u64> {
        self.data.get(&key).copied()
    }

    /// The session of `client`, if it ever had a command applied.
    pub fn session(&self, client: ClientId) -> Option<Session> {
        self.sessions.get(&client).copied()
    }

    /// Applies a command once per `(client, seq)`.
    pub fn apply(&mut self, cmd: &Command) -> ApplyOutcome {
        if let Some(session) = self.sessions.get(&cmd.client) {
            if cmd.seq == session.seq {
                return ApplyOutcome::Duplicate(session.result);
            }
            if cmd.seq < session.seq {
                return ApplyOutcome::Stale;
            }
        }
        let result = match cmd.op {
            WriteOp::Put { key, value } => {
                self.data.insert(key, value);
                WriteResult::Put
            }
            WriteOp::Cas { key, expected, new } => {
                let succeeded = self.data.get(&key).copied() == expected;
                if succeeded {
                    self.data.insert(key, new);
                }
                WriteResult::Cas { succeeded }
            }
            WriteOp::Delete { key } => {
                self.data.remove(&key);
                WriteResult::Delete
            }
        };
        self.sessions.insert(cmd.client, Session { seq: cmd.seq, result });
        ApplyOutcome::Applied(result)
    }

    /// The snapshot bytes: the map, then the session table, each as a count
    /// followed by sorted records.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 16 * self.data.len() + 26 * self.sessions.len());
        out.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        for (k, v) in &self.data {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.sessions.len() as u64).to_le_bytes());
        for (client, s) in &self.sessions {
            out.extend_from_slice(&client.to_le_bytes());
            out.extend_from_slice(&s.seq.to_le_bytes());
            match s.result {
                WriteResult::Put => out.push(TAG_PUT),
                WriteResult::Cas { succeeded } => {
                    out.push(TAG_CAS);
                    out.push(u8::from(succeeded));
                }
                WriteResult::Delete => out.push(TAG_DELETE),
            }
        }
        out
    }

    /// Parses snapshot bytes written by [`KvStore::encode`].
    pub fn decode(bytes: &[u8]) -> Result<KvStore, String> {
        let mut r = Reader { bytes };
        let mut store = KvStore::new();
        for _ in 0..r.u64()? {
            let k = r.u64()?;
            let v = r.u64()?;
            store.data.insert(k, v);
        }
        for _ in 0..r.u64()? {
            let client = r.u64()?;
            let seq = r.u64()?;
            let result = match r.u8()? {
                TAG_PUT => WriteResult::Put,
                TAG_CAS => WriteResult::Cas { succeeded: r.u8()? != 0 },
                TAG_DELETE => WriteResult::Delete,
                t => return Err(format!("unknown result tag {t}")),
            };
            store.sessions.insert(client, Session { seq, result });
        }
        r.finish()?;
        Ok(store)
    }

    /// A stable digest of the whole state (map and sessions).
    pub fn digest(&self) -> u64 {
        let mut h = StableHasher::new();
        h.write_u64(self.data.len() as u64);
        for (k, v) in &self.data {
            h.write_u64(*k);
            h.write_u64(*v);
        }
        h.write_u64(self.sessions.len() as u64);
        for (c, s) in &self.sessions {
            h.write_u64(*c);
            h.write_u64(s.seq);
            match s.result {
                WriteResult::Put => h.write_u8(1),
                WriteResult::Cas { succeeded } => {
                    h.write_u8(2);
                    h.write_u8(u8::from(succeeded));
                }
                WriteResult::Delete => h.write_u8(3),
            }
        }
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(client: ClientId, seq: u64, op: WriteOp) -> Command {
        Command { client, seq, op }
    }

    #[test]
    fn commands_round_trip_through_their_encoding() {
        for op in [
            WriteOp::Put { key: 1, value: 7 },
            WriteOp::Cas { key: 2, expected: None, new: 9 },
            WriteOp::Cas { key: 2, expected: Some(3), new: 9 },
            WriteOp::Delete { key: 5 },
        ] {
            let c = cmd(3, 42, op);
            assert_eq!(Command::decode(&c.encode()), Ok(c));
        }
        assert!(Command::decode(b"short").is_err());
        let mut bad = cmd(1, 1, WriteOp::Delete { key: 1 }).encode();
        bad.push(0);
        assert!(Command::decode(&bad).is_err(), "trailing bytes are refused");
    }

    #[test]
    fn a_retried_command_is_applied_once_and_returns_the_saved_result() {
        let mut kv = KvStore::new();
        let cas = cmd(1, 1, WriteOp::Cas { key: 1, expected: None, new: 10 });
        assert_eq!(kv.apply(&cas), ApplyOutcome::Applied(WriteResult::Cas { succeeded: true }));
        // Applied again, the CAS would now fail; the session returns the first answer.
        assert_eq!(kv.apply(&cas), ApplyOutcome::Duplicate(WriteResult::Cas { succeeded: true }));
        assert_eq!(kv.get(1), Some(10));
        kv.apply(&cmd(1, 2, WriteOp::Put { key: 1, value: 20 }));
        assert_eq!(kv.apply(&cas), ApplyOutcome::Stale);
        assert_eq!(kv.get(1), Some(20));
    }

    #[test]
    fn cas_swaps_only_on_a_matching_value() {
        let mut kv = KvStore::new();
        kv.apply(&cmd(1, 1, WriteOp::Put { key: 1, value: 5 }));
        let r = kv.apply(&cmd(2, 1, WriteOp::Cas { key: 1, expected: Some(4), new: 6 }));
        assert_eq!(r.result(), Some(WriteResult::Cas { succeeded: false }));
        assert_eq!(kv.get(1), Some(5));
        kv.apply(&cmd(2, 2, WriteOp::Delete { key: 1 }));
        assert_eq!(kv.get(1), None);
    }

    #[test]
    fn snapshots_round_trip_with_their_sessions() {
        let mut kv = KvStore::new();
        kv.apply(&cmd(1, 1, WriteOp::Put { key: 1, value: 5 }));
        kv.apply(&cmd(2, 4, WriteOp::Cas { key: 3, expected: None, new: 8 }));
        kv.apply(&cmd(3, 2, WriteOp::Delete { key: 9 }));
        let restored = KvStore::decode(&kv.encode()).unwrap();
        assert_eq!(restored, kv);
        assert_eq!(restored.digest(), kv.digest());
        assert_eq!(KvStore::decode(&KvStore::new().encode()).unwrap(), KvStore::new());
        let mut truncated = kv.encode();
        truncated.pop();
        assert!(KvStore::decode(&truncated).is_err());
    }

    #[test]
    fn the_digest_covers_sessions_too() {
        let mut a = KvStore::new();
        let mut b = KvStore::new();
        a.apply(&cmd(1, 1, WriteOp::Put { key: 1, value: 5 }));
        b.apply(&cmd(2, 1, WriteOp::Put { key: 1, value: 5 }));
        assert_eq!(a.get(1), b.get(1));
        assert_ne!(a.digest(), b.digest());
    }
}
