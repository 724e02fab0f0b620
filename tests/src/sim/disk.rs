//! A simulated disk: persist batches queue up, each fsync completes after a
//! delay and in order, and only then is the batch durable. A crash loses
//! every write still queued. Snapshot data lives beside the log, in files
//! by index, as on a real node (the core keeps only metadata and lengths).

use std::collections::{BTreeMap, VecDeque};

use raft_core::{DurableState, Index, PersistBatch, Snapshot, SnapshotMeta};

/// A write waiting for its fsync.
#[derive(Clone, Debug)]
struct PendingWrite {
    batch: PersistBatch,
    /// The step at which the fsync completes.
    due: u64,
}

/// One node's disk.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    durable: DurableState,
    pending: VecDeque<PendingWrite>,
    /// Completion step of the last queued write: fsyncs finish in order.
    last_due: u64,
    /// Snapshot files by index: taken here, or received and checked
    /// (written durably before the core may refer to them).
    files: BTreeMap<Index, Vec<u8>>,
    /// The snapshot a leader is sending, chunk by chunk (lost on a crash,
    /// as the core forgets it too).
    incoming: Option<(SnapshotMeta, Vec<u8>)>,
}

impl Disk {
    /// An empty disk.
    pub fn new() -> Disk {
        Disk::default()
    }

    /// What survives a crash.
    pub fn durable(&self) -> &DurableState {
        &self.durable
    }

    /// Writes not yet durable.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Queues `batch`; its fsync completes at `due` or, to keep order, when
    /// the previous one does, whichever is later.
    pub fn write(&mut self, batch: PersistBatch, due: u64) {
        let due = due.max(self.last_due);
        self.last_due = due;
        self.pending.push_back(PendingWrite { batch, due });
    }

    /// Makes every write due by `now` durable, in order. Returns the id of the
    /// last batch made durable (which covers every earlier one), if any, or a
    /// description of a broken durable log.
    pub fn complete_due(&mut self, now: u64) -> Result<Option<u64>, String> {
        let mut last = None;
        while self.pending.front().is_some_and(|w| w.due <= now) {
            let write = self.pending.pop_front().expect("checked non-empty");
            if let Some(snapshot) = &write.batch.snapshot {
                if !self.files.contains_key(&snapshot.meta.index) {
                    return Err(format!(
                        "persist batch {} installs snapshot {} without its file",
                        write.batch.id, snapshot.meta.index
                    ));
                }
            }
            apply_batch(&mut self.durable, &write.batch)?;
            if write.batch.snapshot.is_some() {
                self.prune_files();
            }
            last = Some(write.batch.id);
        }
        Ok(last)
    }

    /// The snapshot worker's file: written and fsynced at once (the
    /// replica's own snapshot, or one from the leader that checked good),
    /// before anything refers to it.
    pub fn write_snapshot_file(&mut self, index: Index, data: Vec<u8>) {
        self.files.insert(index, data);
    }

    /// The WAL's compaction record ([`raft_kv::Effect::Compact`]), durable
    /// at once: the snapshot `meta`, whose file was written, replaces the
    /// durable snapshot and the entries it covers. A stale one (the durable
    /// snapshot is as new: a leader's was installed meanwhile) is ignored:
    /// `Ok(false)`. One without its file is an error.
    pub fn compact(&mut self, meta: SnapshotMeta) -> Result<bool, String> {
        let index = meta.index;
        if self.durable.snapshot.as_ref().is_some_and(|s| s.meta.index >= index) {
            return Ok(false);
        }
        let Some(data) = self.files.get(&index) else {
            return Err(format!("the log is compacted to a snapshot at {index} without its file"));
        };
        let data_bytes = data.len() as u64;
        self.durable.entries.retain(|e| e.index > index);
        self.durable.snapshot = Some(Snapshot { meta, data_bytes });
        self.prune_files();
        Ok(true)
    }

    /// The data of the snapshot file at `index`, if there is one.
    pub fn snapshot_file(&self, index: Index) -> Option<&[u8]> {
        self.files.get(&index).map(Vec::as_slice)
    }

    /// The bytes `offset..offset + len` of the snapshot file at `index`, if
    /// it is still there (a newer snapshot deletes the older ones).
    pub fn read_snapshot_range(&self, index: Index, offset: u64, len: u64) -> Option<Vec<u8>> {
        let data = self.files.get(&index)?;
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        data.get(start..end).map(<[u8]>::to_vec)
    }

    /// Stores a chunk of the snapshot a leader sends, as a node's driver
    /// does: offset 0 starts afresh; a chunk of another snapshot, or out of
    /// order, is ignored (the core never hands out such a one).
    pub fn save_snapshot_chunk(&mut self, meta: SnapshotMeta, offset: u64, data: &[u8]) {
        if offset == 0 {
            self.incoming = Some((meta.clone(), Vec::new()));
        }
        if let Some((m, bytes)) = &mut self.incoming {
            if *m == meta && bytes.len() as u64 == offset {
                bytes.extend_from_slice(data);
            }
        }
    }

    /// The received snapshot `meta` is complete: its bytes, for the check
    /// (`None` if no such snapshot was received).
    pub fn finish_snapshot(&mut self, meta: &SnapshotMeta) -> Option<Vec<u8>> {
        self.incoming.take_if(|(m, _)| m == meta).map(|(_, bytes)| bytes)
    }

    /// Deletes the snapshot files older than the durable snapshot's.
    fn prune_files(&mut self) {
        let durable = self.durable.snapshot.as_ref().map_or(0, |s| s.meta.index);
        self.files.retain(|&index, _| index >= durable);
    }

    /// A crash: every write not yet durable is lost. Returns how many.
    pub fn crash(&mut self) -> usize {
        let lost = self.pending.len();
        self.pending.clear();
        self.last_due = 0;
        self.incoming = None;
        lost
    }
}

/// Makes one batch durable, as the [`PersistBatch`] doc prescribes: the
/// snapshot first (it replaces the durable snapshot and discards every durable
/// entry), then the entries (replacing every durable entry at or after the
/// first one's index), then the hard state. Checks that the durable log
/// stays contiguous after the snapshot, so that a restart can read it.
pub fn apply_batch(durable: &mut DurableState, batch: &PersistBatch) -> Result<(), String> {
    if let Some(snapshot) = &batch.snapshot {
        durable.snapshot = Some((**snapshot).clone());
        durable.entries.clear();
    }
    if let Some(first) = batch.entries.first() {
        let from = first.index;
        durable.entries.retain(|e| e.index < from);
        durable.entries.extend(batch.entries.iter().cloned());
    }
    if let Some(hard_state) = batch.hard_state {
        durable.hard_state = hard_state;
    }
    check_contiguous(durable).map_err(|e| format!("after persist batch {}: {e}", batch.id))
}

/// The durable entries after the snapshot must start right after it and be
/// contiguous (entries at or below the snapshot are ignored on restart).
fn check_contiguous(durable: &DurableState) -> Result<(), String> {
    let snapshot_index: Index = durable.snapshot.as_ref().map_or(0, |s| s.meta.index);
    let after = durable.entries.iter().filter(|e| e.index > snapshot_index);
    for (expected, e) in (snapshot_index + 1..).zip(after) {
        if e.index != expected {
            return Err(format!(
                "durable log has a gap: expected index {expected}, found {} (snapshot at {snapshot_index})",
                e.index
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::{Entry, EntryPayload, HardState, SnapshotMeta};

    fn entries(range: std::ops::RangeInclusive<Index>, term: u64) -> Vec<Entry> {
        range.map(|index| Entry { term, index, payload: EntryPayload::Blank }).collect()
    }

    fn batch(id: u64, entries: Vec<Entry>) -> PersistBatch {
        PersistBatch { id, snapshot: None, entries, hard_state: None }
    }

    #[test]
    fn writes_become_durable_only_when_their_fsync_completes_in_order() {
        let mut disk = Disk::new();
        disk.write(batch(1, entries(1..=2, 1)), 10);
        disk.write(batch(2, entries(3..=3, 1)), 5); // due earlier, but must wait for 1
        assert_eq!(disk.complete_due(4), Ok(None));
        assert_eq!(disk.complete_due(9), Ok(None));
        assert!(disk.durable().entries.is_empty());
        assert_eq!(disk.complete_due(10), Ok(Some(2)));
        assert_eq!(disk.durable().entries.len(), 3);
    }

    #[test]
    fn a_crash_loses_pending_writes_and_keeps_durable_ones() {
        let mut disk = Disk::new();
        disk.write(batch(1, entries(1..=2, 1)), 1);
        disk.complete_due(1).unwrap();
        disk.write(batch(2, entries(3..=4, 1)), 50);
        assert_eq!(disk.crash(), 1);
        assert_eq!(disk.complete_due(100), Ok(None));
        assert_eq!(disk.durable().entries, entries(1..=2, 1));
    }

    #[test]
    fn entries_replace_the_durable_suffix_and_hard_state_comes_last() {
        let mut durable = DurableState::default();
        apply_batch(&mut durable, &batch(1, entries(1..=4, 1))).unwrap();
        let mut b = batch(2, entries(3..=3, 2));
        b.hard_state = Some(HardState { term: 2, vote: Some(1), commit: 2 });
        apply_batch(&mut durable, &b).unwrap();
        let mut expected = entries(1..=2, 1);
        expected.extend(entries(3..=3, 2));
        assert_eq!(durable.entries, expected);
        assert_eq!(durable.hard_state.term, 2);
    }

    #[test]
    fn an_installed_snapshot_discards_every_durable_entry() {
        let mut durable = DurableState::default();
        apply_batch(&mut durable, &batch(1, entries(1..=4, 1))).unwrap();
        let mut b = batch(2, entries(11..=12, 3));
        b.snapshot = Some(Box::new(Snapshot {
            meta: SnapshotMeta {
                index: 10,
                term: 3,
                membership: raft_core::Membership::with_voters([1, 2, 3]).unwrap().into(),
            },
            data_bytes: 0,
        }));
        apply_batch(&mut durable, &b).unwrap();
        assert_eq!(durable.entries, entries(11..=12, 3));
    }

    #[test]
    fn a_gap_in_the_durable_log_is_reported() {
        let mut durable = DurableState::default();
        apply_batch(&mut durable, &batch(1, entries(1..=2, 1))).unwrap();
        let err = apply_batch(&mut durable, &batch(2, entries(5..=5, 1))).unwrap_err();
        assert!(err.contains("gap"), "{err}");
    }

    #[test]
    fn compaction_keeps_only_entries_after_the_snapshot() {
        let mut disk = Disk::new();
        disk.write(batch(1, entries(1..=5, 1)), 1);
        disk.complete_due(1).unwrap();
        let meta = |index| SnapshotMeta {
            index,
            term: 1,
            membership: raft_core::Membership::with_voters([1]).unwrap().into(),
        };
        assert!(disk.compact(meta(3)).is_err(), "a compaction without its file");
        disk.write_snapshot_file(3, vec![1]);
        assert_eq!(disk.compact(meta(3)), Ok(true));
        assert_eq!(disk.durable().entries, entries(4..=5, 1));
        assert_eq!(disk.snapshot_file(3), Some(&[1][..]));
        disk.write_snapshot_file(5, vec![2, 2]);
        disk.write_snapshot_file(2, vec![9]);
        assert_eq!(disk.compact(meta(5)), Ok(true));
        assert_eq!(disk.snapshot_file(3), None, "an older snapshot's file is deleted");
        assert_eq!(disk.read_snapshot_range(5, 1, 1), Some(vec![2]));
        assert_eq!(disk.durable().snapshot.as_ref().map(|s| s.data_bytes), Some(2));
        assert_eq!(disk.compact(meta(3)), Ok(false), "a stale compaction is ignored");
        assert_eq!(disk.durable().snapshot.as_ref().map(|s| s.meta.index), Some(5));
    }
}
