//! Test support shared by the core's test files.
// (Each test file is its own crate and uses only part of this.)
#![allow(dead_code)]

use std::collections::BTreeMap;

use raft_core::{Index, Message, MessageBody, Snapshot, SnapshotMeta};

/// One node's snapshot bytes, kept by the driver as the core expects: the
/// snapshots it took or installed, by index, and the one a leader is
/// sending it, chunk by chunk (the core itself holds only metadata and
/// lengths).
#[derive(Clone, Debug, Default)]
pub struct SnapshotFiles {
    kept: BTreeMap<Index, Vec<u8>>,
    incoming: Option<(SnapshotMeta, Vec<u8>)>,
}

impl SnapshotFiles {
    /// Keeps `data` as the snapshot at `index`; returns its length, for
    /// `RaftNode::snapshot_taken`.
    pub fn keep(&mut self, index: Index, data: Vec<u8>) -> u64 {
        let len = data.len() as u64;
        self.kept.insert(index, data);
        len
    }

    /// The data of the snapshot at `index`, if kept.
    pub fn data(&self, index: Index) -> Option<&[u8]> {
        self.kept.get(&index).map(Vec::as_slice)
    }

    /// Fills a chunk of `Action::SendSnapshotChunk` with its bytes; `None`
    /// if that snapshot is not kept here (or the range is past its end).
    pub fn fill(&self, mut message: Message, len: u64) -> Option<Message> {
        let MessageBody::Snapshot { meta, offset, data, .. } = &mut message.body else {
            panic!("a snapshot chunk that is not a snapshot message: {message:?}");
        };
        let bytes = self.kept.get(&meta.index)?;
        let start = usize::try_from(*offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        *data = bytes.get(start..end)?.to_vec();
        Some(message)
    }

    /// Stores a chunk of `Action::SaveSnapshotChunk`, asserting what the
    /// core promises: offset 0 starts a snapshot, later chunks follow on.
    pub fn save(&mut self, meta: SnapshotMeta, offset: u64, data: &[u8]) {
        if offset == 0 {
            self.incoming = Some((meta.clone(), Vec::new()));
        }
        let (incoming_meta, bytes) = self.incoming.as_mut().expect("a chunk at offset 0 first");
        assert_eq!(*incoming_meta, meta, "a chunk of another snapshot than the one started");
        assert_eq!(bytes.len() as u64, offset, "a chunk at offset {offset} after {} bytes", bytes.len());
        bytes.extend_from_slice(data);
    }

    /// The complete data of `Action::CheckSnapshot`'s snapshot, if every
    /// chunk was saved (asserting the announced length): moved to the
    /// kept snapshots, as a driver that checked it would.
    pub fn complete(&mut self, snapshot: &Snapshot) -> Option<&[u8]> {
        let (meta, bytes) = self.incoming.take()?;
        if meta != snapshot.meta {
            return None;
        }
        assert_eq!(bytes.len() as u64, snapshot.data_bytes, "the chunks saved and the length checked");
        self.kept.insert(meta.index, bytes);
        self.data(meta.index)
    }
}
