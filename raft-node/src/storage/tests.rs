//! Unit tests that need the storage's insides: injected write and fsync
//! failures, and the byte format of records. The behaviour seen through the
//! public API is tested in `raft-node/tests/storage.rs`.

use std::io;
use std::path::Path;

use raft_core::{Entry, EntryPayload, HardState, PersistBatch, SnapshotMeta};
use raft_net::codec;

use super::record::{WalRecord, WalRecordRef};
use super::{Storage, StorageError, StorageOptions};

/// A failure to inject into the next matching operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FailPoint {
    /// The next WAL write writes half its bytes, then fails like a full disk.
    Write,
    /// The next WAL fdatasync fails like a device error.
    Sync,
}

impl Storage {
    /// Called by the write and fsync paths: fails if `point` is armed. A
    /// write failure first writes half of `bytes`, as a full disk would.
    pub(super) fn fail_if(
        &mut self,
        point: FailPoint,
        op: &'static str,
        path: &Path,
    ) -> Result<(), StorageError> {
        self.fail_if_writing(point, op, path, &[])
    }

    pub(super) fn fail_if_writing(
        &mut self,
        point: FailPoint,
        op: &'static str,
        path: &Path,
        bytes: &[u8],
    ) -> Result<(), StorageError> {
        if self.failpoint != Some(point) {
            return Ok(());
        }
        self.failpoint = None;
        use std::io::Write;
        self.active.write_all(&bytes[..bytes.len() / 2]).expect("the half write itself succeeds");
        let source = match point {
            FailPoint::Write => io::Error::from_raw_os_error(28), // ENOSPC
            FailPoint::Sync => io::Error::from_raw_os_error(5),   // EIO
        };
        Err(StorageError::Io { path: path.to_path_buf(), op, source })
    }
}

fn entry(index: u64, term: u64) -> Entry {
    Entry { term, index, payload: EntryPayload::Command(format!("SET k{index}={term}").into_bytes()) }
}

fn batch(id: u64, entries: Vec<Entry>, hard_state: Option<HardState>) -> PersistBatch {
    PersistBatch { id, snapshot: None, entries, hard_state }
}

fn opts() -> StorageOptions {
    StorageOptions { segment_bytes_max: 1 << 20, sync: true }
}

#[test]
fn the_borrowing_record_encodes_exactly_like_the_owned_one() {
    let entries = vec![entry(1, 1), Entry { term: 1, index: 2, payload: EntryPayload::Blank }];
    let hard_state = HardState { term: 3, vote: Some(2), commit: 1 };
    let meta = SnapshotMeta { index: 7, term: 2, voters: vec![1, 2, 3] };
    let pairs = [
        (
            codec::encode(&WalRecordRef::Begin { format_version: 1, seq: 9 }),
            WalRecord::Begin { format_version: 1, seq: 9 },
        ),
        (codec::encode(&WalRecordRef::Entries(&entries)), WalRecord::Entries(entries.clone())),
        (codec::encode(&WalRecordRef::HardState(&hard_state)), WalRecord::HardState(hard_state)),
        (codec::encode(&WalRecordRef::InstallSnapshot(&meta)), WalRecord::InstallSnapshot(meta.clone())),
        (codec::encode(&WalRecordRef::Compact(&meta)), WalRecord::Compact(meta.clone())),
    ];
    for (borrowed, owned) in pairs {
        let borrowed = borrowed.unwrap();
        assert_eq!(borrowed, codec::encode(&owned).unwrap(), "{owned:?}");
        assert_eq!(codec::decode::<WalRecord>(&borrowed).unwrap(), owned);
    }
}

#[test]
fn a_failed_write_stops_the_storage_and_the_half_written_batch_is_cut_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path(), opts()).unwrap();
    let hs = HardState { term: 1, vote: Some(1), commit: 0 };
    storage.append(&batch(1, vec![entry(1, 1), entry(2, 1)], Some(hs))).unwrap();
    storage.sync().unwrap();

    storage.failpoint = Some(FailPoint::Write);
    let err = storage.append(&batch(2, vec![entry(3, 1)], None)).unwrap_err();
    assert!(matches!(err, StorageError::Io { op: "write", .. }), "{err}");
    let refused = storage.append(&batch(3, vec![entry(3, 1)], None)).unwrap_err();
    assert!(matches!(refused, StorageError::Stopped { .. }), "{refused}");
    assert!(refused.to_string().contains("restart"), "{refused}");
    assert!(matches!(storage.sync(), Err(StorageError::Stopped { .. })));
    let snapshot =
        raft_core::Snapshot { meta: SnapshotMeta { index: 1, term: 1, voters: vec![1] }, data: vec![] };
    assert!(matches!(storage.save_snapshot(&snapshot), Err(StorageError::Stopped { .. })));
    drop(storage);

    let (_, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.hard_state, hs);
    assert_eq!(durable.entries, vec![entry(1, 1), entry(2, 1)]);
}

#[test]
fn a_failed_fsync_stops_the_storage() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path(), opts()).unwrap();
    storage.append(&batch(1, vec![entry(1, 1)], None)).unwrap();
    storage.failpoint = Some(FailPoint::Sync);
    let err = storage.sync().unwrap_err();
    assert!(matches!(err, StorageError::Io { op: "fdatasync", .. }), "{err}");
    assert!(err.to_string().contains("wal-0000000000000001.log"), "{err}");
    // A retried fsync could report success for pages the kernel already
    // dropped: the storage must not try.
    assert!(matches!(storage.sync(), Err(StorageError::Stopped { .. })));
    assert!(matches!(storage.append(&batch(2, vec![entry(2, 1)], None)), Err(StorageError::Stopped { .. })));
}

#[test]
fn a_refused_batch_writes_nothing_and_does_not_stop_the_storage() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path(), opts()).unwrap();
    storage.append(&batch(1, vec![entry(1, 1)], None)).unwrap();
    let hole = storage.append(&batch(2, vec![entry(3, 1)], None)).unwrap_err();
    assert!(matches!(hole, StorageError::InvalidBatch { .. }), "{hole}");
    let disorder = storage.append(&batch(3, vec![entry(2, 1), entry(4, 1)], None)).unwrap_err();
    assert!(matches!(disorder, StorageError::InvalidBatch { .. }), "{disorder}");
    storage.append(&batch(4, vec![entry(2, 1)], None)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let (_, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.entries, vec![entry(1, 1), entry(2, 1)]);
}
