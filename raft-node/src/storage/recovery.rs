//! Replaying WAL records into the state they describe.
//!
//! Replay keeps entries in a sorted map, so that it tolerates a temporary hole:
//! once the segments before a snapshot are deleted, the first remaining
//! segment may restate an older snapshot and then hold entries that start
//! after the deleted ones. The snapshot record that made the deletion safe
//! comes later in the WAL and closes the hole; [`Replay::finish`] checks that
//! none is left.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use raft_core::{Entry, HardState, Index, SnapshotMeta};

use super::error::StorageError;
use super::index::{Span, SpanIndex};
use super::record::{WalRecord, FORMAT_VERSION, FORMAT_VERSION_UNSLOTTED};

/// The state described by the records replayed so far.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub(crate) hard_state: HardState,
    pub(crate) snapshot: Option<SnapshotMeta>,
    entries: BTreeMap<Index, Entry>,
    pub(crate) index: SpanIndex,
}

/// The outcome of a replay, checked.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) hard_state: HardState,
    pub(crate) snapshot: Option<SnapshotMeta>,
    pub(crate) entries: Vec<Entry>,
    pub(crate) index: SpanIndex,
}

impl Replay {
    /// Applies the record found at `offset` of segment `seq` (file `path`),
    /// a segment of format `version` whose records start at `records_start`.
    pub(crate) fn apply(
        &mut self,
        path: &Path,
        (seq, version, records_start): (u64, u32, u64),
        offset: u64,
        record: WalRecord,
    ) -> Result<(), StorageError> {
        let corrupt = |reason: String| StorageError::Corrupt { path: path.to_path_buf(), offset, reason };
        let first_in_segment = offset == records_start;
        match record {
            WalRecord::Begin { format_version, seq: recorded } => {
                if !first_in_segment {
                    return Err(corrupt(
                        "a segment-start record appears in the middle of the segment".into(),
                    ));
                }
                if format_version != version {
                    return Err(corrupt(format!(
                        "the segment has format version {format_version}, but this build reads versions \
                         {FORMAT_VERSION_UNSLOTTED} and {FORMAT_VERSION} (and version {version} in a segment \
                         laid out like this one): run a build that reads version {format_version}"
                    )));
                }
                if recorded != seq {
                    return Err(corrupt(format!(
                        "the segment says it is number {recorded} but its file name says {seq} (a renamed file?)"
                    )));
                }
                return Ok(());
            }
            _ if first_in_segment => {
                return Err(corrupt("the segment does not start with a segment-start record".into()));
            }
            WalRecord::Entries(entries) => {
                let Some(first) = entries.first().map(|e| e.index) else { return Ok(()) };
                let snapshot_index = self.snapshot.as_ref().map_or(0, |s| s.index);
                if first <= snapshot_index {
                    return Err(corrupt(format!(
                        "the entries record starts at index {first}, at or below the snapshot at {snapshot_index}"
                    )));
                }
                for (expected, entry) in (first..).zip(&entries) {
                    if entry.index != expected {
                        return Err(corrupt(format!(
                            "the entries record holds index {} where {expected} belongs",
                            entry.index
                        )));
                    }
                }
                let last = first + entries.len() as u64 - 1;
                self.entries.split_off(&first);
                self.entries.extend(entries.into_iter().map(|e| (e.index, e)));
                self.index.append(Span { first, last, seq, offset });
            }
            WalRecord::HardState(hard_state) => self.hard_state = hard_state,
            WalRecord::InstallSnapshot(meta) => {
                self.entries.clear();
                self.index.clear();
                self.snapshot = Some(meta);
            }
            WalRecord::Compact(meta) => {
                self.entries = self.entries.split_off(&(meta.index + 1));
                self.index.compact_to(meta.index);
                self.snapshot = Some(meta);
            }
            // `parse_wal_record` hands these out upgraded.
            WalRecord::InstallSnapshotV1(meta) => {
                self.entries.clear();
                self.index.clear();
                self.snapshot = Some(meta.upgrade());
            }
            WalRecord::CompactV1(meta) => {
                self.entries = self.entries.split_off(&(meta.index + 1));
                self.index.compact_to(meta.index);
                self.snapshot = Some(meta.upgrade());
            }
        }
        Ok(())
    }

    /// Checks that the entries are contiguous right after the snapshot and
    /// returns the recovered state. `segment_path` names a segment file by its
    /// sequence number, for error messages.
    pub(crate) fn finish(self, segment_path: impl Fn(u64) -> PathBuf) -> Result<Recovered, StorageError> {
        let snapshot_index = self.snapshot.as_ref().map_or(0, |s| s.index);
        let mut expected = snapshot_index + 1;
        for span in self.index.spans() {
            if span.first != expected {
                return Err(StorageError::Corrupt {
                    path: segment_path(span.seq),
                    offset: span.offset,
                    reason: format!(
                        "the log entries recorded there start at index {}, but the log so far ends at index {} \
                         (entries are missing: was a WAL segment deleted?)",
                        span.first,
                        expected - 1
                    ),
                });
            }
            expected = span.last + 1;
        }
        debug_assert_eq!(self.entries.len() as u64, expected - snapshot_index - 1);
        debug_assert_eq!(self.index.check(true), Ok(()));
        Ok(Recovered {
            hard_state: self.hard_state,
            snapshot: self.snapshot,
            entries: self.entries.into_values().collect(),
            index: self.index,
        })
    }
}
