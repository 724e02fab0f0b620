//! Unit tests that need the storage's insides: injected write and fsync
//! failures, the byte format of records, and recovery from preallocated
//! segments (zero fill, torn tails, corruption, rollover). Crashes of whole
//! nodes are tested in `raft-node/tests/processes.rs`.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raft_codec as codec;
use raft_core::{Entry, EntryPayload, HardState, PersistBatch, SnapshotMeta};

use super::record::{
    push_record, SyncSlot, WalRecord, WalRecordRef, RECORDS_START, RECORD_PAYLOAD_BYTES_MAX,
};
use super::{segment_name, Storage, StorageError, StorageOptions};

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
        self.active
            .write_all_at(&bytes[..bytes.len() / 2], self.active_bytes)
            .expect("the half write itself succeeds");
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
    let meta = SnapshotMeta {
        index: 7,
        term: 2,
        membership: raft_core::Membership::with_voters([1, 2, 3]).unwrap().into(),
    };
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
    let meta = SnapshotMeta {
        index: 1,
        term: 1,
        membership: raft_core::Membership::with_voters([1]).unwrap().into(),
    };
    assert!(matches!(storage.save_snapshot(&meta, b""), Err(StorageError::Stopped { .. })));
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

fn segment(dir: &Path, seq: u64) -> PathBuf {
    dir.join(segment_name(seq))
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn all_zero_from(path: &Path, from: u64) -> bool {
    fs::read(path).unwrap()[from as usize..].iter().all(|&b| b == 0)
}

/// Appends entries `from..=to` of term 1, one per batch, and syncs.
fn append_range(storage: &mut Storage, from: u64, to: u64, hard_state: Option<HardState>) {
    for i in from..=to {
        storage.append(&batch(i, vec![entry(i, 1)], hard_state)).unwrap();
    }
    storage.sync().unwrap();
}

fn entries(from: u64, to: u64) -> Vec<Entry> {
    (from..=to).map(|i| entry(i, 1)).collect()
}

#[test]
fn a_new_segment_is_preallocated_and_appends_continue_in_it_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let wal = segment(dir.path(), 1);
    let (mut storage, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert!(durable.entries.is_empty());
    assert_eq!(file_len(&wal), opts().segment_bytes_max, "preallocated to the segment limit");
    let hs = HardState { term: 1, vote: Some(2), commit: 3 };
    append_range(&mut storage, 1, 10, Some(hs));
    let end = storage.active_bytes;
    assert_eq!(file_len(&wal), opts().segment_bytes_max, "appends do not change the file's length");
    assert!(all_zero_from(&wal, end), "zeros after the records");
    drop(storage);

    let (mut storage, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.entries, entries(1, 10));
    assert_eq!(durable.hard_state, hs);
    assert_eq!(storage.segment_count(), 1, "the last segment is continued");
    assert_eq!(storage.active_bytes, end, "right at the end of the records");
    assert_eq!(file_len(&wal), opts().segment_bytes_max);
    let hs2 = HardState { term: 2, vote: None, commit: 12 };
    append_range(&mut storage, 11, 12, Some(hs2));
    assert_eq!(storage.entries(1, 12).unwrap(), entries(1, 12));
    drop(storage);

    let (storage, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.entries, entries(1, 12));
    assert_eq!(durable.hard_state, hs2);
    assert_eq!(storage.segment_count(), 1);
}

#[test]
fn a_torn_record_before_the_zero_fill_is_cut_and_appends_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let wal = segment(dir.path(), 1);
    let (mut storage, _) = Storage::open(dir.path(), opts()).unwrap();
    let hs = HardState { term: 1, vote: Some(1), commit: 2 };
    append_range(&mut storage, 1, 5, Some(hs));
    let end = storage.active_bytes;
    drop(storage);
    // A crash in the middle of a write: the start of a record (length 200,
    // some checksum, 2 payload bytes), then the preallocated zeros.
    let file = fs::OpenOptions::new().write(true).open(&wal).unwrap();
    file.write_all_at(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9], end).unwrap();
    drop(file);

    let (mut storage, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.entries, entries(1, 5));
    assert_eq!(durable.hard_state, hs);
    assert_eq!(storage.active_bytes, end);
    assert_eq!(file_len(&wal), opts().segment_bytes_max, "still preallocated");
    assert!(all_zero_from(&wal, end), "the torn bytes are zeroed");
    // A shorter record than the torn one now starts where it started.
    storage.append(&batch(6, vec![Entry { term: 1, index: 6, payload: EntryPayload::Blank }], None)).unwrap();
    storage.sync().unwrap();
    drop(storage);

    let (storage, durable) = Storage::open(dir.path(), opts()).unwrap();
    let mut expected = entries(1, 5);
    expected.push(Entry { term: 1, index: 6, payload: EntryPayload::Blank });
    assert_eq!(durable.entries, expected);
    assert_eq!(storage.segment_count(), 1);
}

#[test]
fn stray_bytes_after_the_last_record_with_no_valid_record_among_them_are_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let wal = segment(dir.path(), 1);
    let (mut storage, _) = Storage::open(dir.path(), opts()).unwrap();
    append_range(&mut storage, 1, 3, None);
    let end = storage.active_bytes;
    drop(storage);

    // A write that ran past the preallocated space, whose start was lost.
    let mut file = fs::OpenOptions::new().append(true).open(&wal).unwrap();
    io::Write::write_all(&mut file, &[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
    drop(file);
    let (storage, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.entries, entries(1, 3));
    assert_eq!(file_len(&wal), opts().segment_bytes_max, "cut back to the preallocated length");
    assert!(all_zero_from(&wal, end));
    drop(storage);

    // A later page of an unsynced write reached the disk, its first page did
    // not: a byte in the middle of the zero fill, no valid record around it.
    let middle = opts().segment_bytes_max / 2;
    let file = fs::OpenOptions::new().write(true).open(&wal).unwrap();
    file.write_all_at(&[0xff], middle).unwrap();
    drop(file);
    let (storage, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.entries, entries(1, 3));
    assert!(all_zero_from(&wal, end), "the stray byte was cut");
    drop(storage);
}

#[test]
fn a_corrupt_record_followed_by_valid_ones_refuses_to_open_naming_file_and_byte() {
    let dir = tempfile::tempdir().unwrap();
    let wal = segment(dir.path(), 1);
    let (mut storage, _) = Storage::open(dir.path(), opts()).unwrap();
    storage.append(&batch(1, vec![entry(1, 1)], None)).unwrap();
    let record = storage.index.spans()[0].offset;
    append_range(&mut storage, 2, 6, None);
    drop(storage);
    // Flip a byte of the first entries record's payload.
    let file = fs::OpenOptions::new().read(true).write(true).open(&wal).unwrap();
    let mut byte = [0];
    file.read_exact_at(&mut byte, record + 12).unwrap();
    file.write_all_at(&[byte[0] ^ 0xff], record + 12).unwrap();
    drop(file);

    let err = Storage::open(dir.path(), opts()).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { offset, .. } if offset == record), "{err}");
    let message = err.to_string();
    assert!(message.contains(&wal.display().to_string()), "{message}");
    assert!(message.contains("byte") && message.contains("valid record follows"), "{message}");
}

/// Appends entries `from..=to` of term 1 with `bytes`-byte payloads, one per
/// batch, and syncs; returns each batch's record offset.
fn append_large(storage: &mut Storage, from: u64, to: u64, bytes: usize) -> Vec<u64> {
    let mut offsets = Vec::new();
    for i in from..=to {
        offsets.push(storage.active_bytes);
        let payload = EntryPayload::Command(vec![(i % 250) as u8 + 1; bytes]);
        storage.append(&batch(i, vec![Entry { term: 1, index: i, payload }], None)).unwrap();
    }
    storage.sync().unwrap();
    offsets
}

#[test]
fn a_lost_sector_inside_an_unsynced_write_is_a_torn_tail_even_with_valid_records_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let wal = segment(dir.path(), 1);
    let (mut storage, _) = Storage::open(dir.path(), opts()).unwrap();
    append_range(&mut storage, 1, 3, None);
    // Records of 1.5 KiB: each spans several sectors.
    let offsets = append_large(&mut storage, 4, 8, 1536);
    let end = storage.active_bytes;
    drop(storage);
    // A power loss: the disk kept the later sectors of the unsynced writes
    // (entries 5..=8) but not one sector in the middle of entry 5's record.
    let sector = (offsets[1] / 512 + 1) * 512;
    assert!(sector + 512 < offsets[2], "the sector lies inside entry 5's record");
    let file = fs::OpenOptions::new().write(true).open(&wal).unwrap();
    file.write_all_at(&[0; 512], sector).unwrap();
    drop(file);

    let (storage, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.entries.len(), 4, "entries 1..=4 survive; 5 is torn, 6..=8 were never durable");
    assert_eq!(durable.entries.last().unwrap().index, 4);
    assert_eq!(storage.active_bytes, offsets[1], "appends continue where entry 5 started");
    assert!(all_zero_from(&wal, offsets[1]), "the torn record and everything after it is zeroed");
    assert!(end > offsets[1]);
    drop(storage);

    // The same with the lost sector holding the start of entry 5's record
    // (its header): a zero length, then valid records.
    let dir = tempfile::tempdir().unwrap();
    let wal = segment(dir.path(), 1);
    let (mut storage, _) = Storage::open(dir.path(), opts()).unwrap();
    append_range(&mut storage, 1, 3, None);
    let offsets = append_large(&mut storage, 4, 8, 1536);
    drop(storage);
    let sector_end = (offsets[1] / 512 + 1) * 512;
    let file = fs::OpenOptions::new().write(true).open(&wal).unwrap();
    // What was before the record in its first sector was synced earlier and
    // is still there; the record's bytes in that sector are zeros.
    file.write_all_at(&vec![0; (sector_end - offsets[1]) as usize], offsets[1]).unwrap();
    drop(file);
    let (_, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.entries.last().unwrap().index, 4);
}

#[test]
fn a_damaged_record_with_no_unwritten_sector_before_valid_ones_is_still_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let wal = segment(dir.path(), 1);
    let (mut storage, _) = Storage::open(dir.path(), opts()).unwrap();
    let offsets = append_large(&mut storage, 1, 4, 1536);
    drop(storage);
    // Bit rot in the middle of entry 2's record: a few bytes changed, no
    // sector of zeros.
    let file = fs::OpenOptions::new().write(true).open(&wal).unwrap();
    file.write_all_at(&[0xde, 0xad, 0xbe, 0xef], offsets[1] + 700).unwrap();
    drop(file);
    let err = Storage::open(dir.path(), opts()).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { offset, .. } if offset == offsets[1]), "{err}");
    assert!(err.to_string().contains("valid record follows"), "{err}");
}

#[test]
fn the_log_rolls_over_many_small_segments_and_recovers_all_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let small = StorageOptions { segment_bytes_max: 4096, sync: true };
    let (mut storage, _) = Storage::open(dir.path(), small.clone()).unwrap();
    let mut hs = HardState::default();
    for i in 1..=1000 {
        hs = HardState { term: 1, vote: Some(1), commit: i - 1 };
        storage.append(&batch(i, vec![entry(i, 1)], Some(hs))).unwrap();
        // Half full: the next segment is being prepared in the background.
        assert_eq!(storage.next.is_some(), storage.active_bytes >= 2048, "{}", storage.active_bytes);
        if i % 7 == 0 {
            storage.sync().unwrap();
        }
    }
    storage.sync().unwrap();
    let count = storage.segment_count();
    assert!(count >= 5, "{count} segments");
    let active_bytes = storage.active_bytes;
    assert_eq!(storage.entries(1, 1000).unwrap(), entries(1, 1000));
    drop(storage);
    for seq in 1..=count as u64 {
        // Rolled over before a batch would run past the end: no record
        // crosses it, and no file grows past its capacity.
        let len = file_len(&segment(dir.path(), seq));
        assert_eq!(len, 4096, "segment {seq}");
    }
    assert!(active_bytes <= 4096);
    let names: Vec<String> =
        fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert!(names.iter().all(|n| n.starts_with("wal-")), "no prepared segment left behind: {names:?}");
    // A segment prepared in the background when the process died is removed.
    // (Another seq than the one open may start preparing right away.)
    let leftover = dir.path().join(super::next_segment_name(count as u64 + 5));
    fs::write(&leftover, [0; 16]).unwrap();

    let (mut storage, durable) = Storage::open(dir.path(), small.clone()).unwrap();
    assert_eq!(durable.entries, entries(1, 1000));
    assert_eq!(durable.hard_state, hs);
    assert_eq!(storage.segment_count(), count);
    assert!(!leftover.exists(), "the leftover prepared segment is removed");
    let wal_files = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("wal-"))
        .count();
    assert_eq!(wal_files, count);
    // The reopened segment is half full: its successor is being prepared already.
    assert_eq!(storage.next.is_some(), storage.active_bytes >= 2048, "{}", storage.active_bytes);
    append_range(&mut storage, 1001, 1200, None);
    assert!(storage.segment_count() > count);
    drop(storage);
    let (_, durable) = Storage::open(dir.path(), small).unwrap();
    assert_eq!(durable.entries, entries(1, 1200));
    assert_eq!(durable.hard_state, hs);
}

/// The first `RECORDS_START` bytes of a version-3 segment of `capacity`
/// bytes: its sync slot (nothing synced past the slots yet).
fn slot_area(capacity: u64) -> Vec<u8> {
    let mut bytes = vec![0; RECORDS_START as usize];
    let slot = SyncSlot { gen: 1, synced_to: RECORDS_START, capacity, next_seq: 0 };
    let at = slot.offset() as usize;
    bytes[at..at + slot.encode().len()].copy_from_slice(&slot.encode());
    bytes
}

/// Writes a segment `seq` by hand: its sync slots, its first records, then
/// zero fill.
fn write_segment(dir: &Path, seq: u64, hard_state: &HardState, zero_fill: usize) {
    let mut records = Vec::new();
    let begin = WalRecordRef::Begin { format_version: super::record::FORMAT_VERSION, seq };
    push_record(&mut records, &begin, "test", RECORD_PAYLOAD_BYTES_MAX).unwrap();
    push_record(&mut records, &WalRecordRef::HardState(hard_state), "test", RECORD_PAYLOAD_BYTES_MAX)
        .unwrap();
    let capacity = RECORDS_START as usize + records.len() + zero_fill;
    let mut bytes = slot_area(capacity as u64);
    bytes.extend_from_slice(&records);
    bytes.resize(capacity, 0);
    fs::write(segment(dir, seq), bytes).unwrap();
}

#[test]
fn an_earlier_segment_ends_at_its_zero_fill_but_junk_in_it_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path(), opts()).unwrap();
    let hs = HardState { term: 3, vote: Some(1), commit: 4 };
    append_range(&mut storage, 1, 4, Some(hs));
    let end = storage.active_bytes;
    drop(storage);
    // As if a crash came right after the next segment was started.
    write_segment(dir.path(), 2, &hs, 4096);

    let (mut storage, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.entries, entries(1, 4));
    assert_eq!(durable.hard_state, hs);
    assert_eq!(storage.segment_count(), 2);
    append_range(&mut storage, 5, 6, None);
    drop(storage);
    let (_, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.entries, entries(1, 6));

    let first = segment(dir.path(), 1);
    let file = fs::OpenOptions::new().write(true).open(&first).unwrap();
    file.write_all_at(&[1, 2, 3], end).unwrap();
    drop(file);
    let err = Storage::open(dir.path(), opts()).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { offset, .. } if offset == end), "{err}");
    assert!(err.to_string().contains(&first.display().to_string()), "{err}");
}

#[test]
fn a_last_segment_torn_before_its_first_record_gets_a_new_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path(), opts()).unwrap();
    let hs = HardState { term: 2, vote: Some(3), commit: 1 };
    append_range(&mut storage, 1, 2, Some(hs));
    drop(storage);
    // Segment 2 was created and preallocated, but its first record is torn.
    let second = segment(dir.path(), 2);
    let mut bytes = slot_area(8192);
    bytes.resize(8192, 0);
    bytes[512..518].copy_from_slice(&[40, 0, 0, 0, 7, 7]);
    fs::write(&second, bytes).unwrap();

    let (mut storage, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.entries, entries(1, 2));
    assert_eq!(durable.hard_state, hs);
    assert_eq!(file_len(&second), opts().segment_bytes_max);
    append_range(&mut storage, 3, 3, None);
    drop(storage);
    let (storage, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.entries, entries(1, 3));
    assert_eq!(durable.hard_state, hs);
    assert_eq!(storage.segment_count(), 2);
}

#[test]
fn no_record_has_length_zero() {
    let mut out = Vec::new();
    push_record(&mut out, &(), "a unit", RECORD_PAYLOAD_BYTES_MAX).unwrap_err();
    assert!(out.is_empty());
    push_record(&mut out, &WalRecordRef::Entries(&[]), "test", RECORD_PAYLOAD_BYTES_MAX).unwrap();
    assert_ne!(out[..4], [0; 4]);
}

#[test]
fn a_new_log_starts_with_a_small_segment_and_each_next_one_is_twice_as_large() {
    let dir = tempfile::tempdir().unwrap();
    let four_mib = StorageOptions { segment_bytes_max: 4 << 20, sync: true };
    let (mut storage, _) = Storage::open(dir.path(), four_mib.clone()).unwrap();
    assert_eq!(file_len(&segment(dir.path(), 1)), 1 << 20, "a first start zero-fills 1 MiB, not 4");
    // Entries of ~64 KiB: a segment fills after a handful of batches.
    let big = |index| Entry { term: 1, index, payload: EntryPayload::Command(vec![index as u8; 64 << 10]) };
    let mut index = 0;
    while storage.segment_count() < 5 {
        index += 1;
        storage.append(&batch(index, vec![big(index)], None)).unwrap();
        storage.sync().unwrap();
    }
    let lens: Vec<u64> = (1..=5).map(|seq| file_len(&segment(dir.path(), seq))).collect();
    // Each is preallocated to its capacity; the last batch may run past it.
    for (len, capacity) in lens.iter().zip([1u64 << 20, 2 << 20, 4 << 20, 4 << 20, 4 << 20]) {
        assert!((capacity..capacity + (65 << 10)).contains(len), "doubling up to the maximum: {lens:?}");
    }
    drop(storage);
    let (storage, durable) = Storage::open(dir.path(), four_mib).unwrap();
    assert_eq!(durable.entries, (1..=index).map(big).collect::<Vec<_>>());
    assert_eq!(storage.segment_count(), 5);
}

/// Appends entries 1..=n in batches of one, syncing each and recording the
/// last sync, as the WAL thread does when it goes idle.
fn synced_log(dir: &Path, n: u64) -> Storage {
    let (mut storage, _) = Storage::open(dir, opts()).unwrap();
    for i in 1..=n {
        storage
            .append(&batch(i, vec![entry(i, 1)], Some(HardState { term: 1, vote: Some(1), commit: i })))
            .unwrap();
        storage.sync().unwrap();
    }
    storage.record_sync().unwrap();
    storage
}

fn corrupt_message(err: StorageError, path: &Path) -> String {
    let message = err.to_string();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    message
}

/// Case 6: the last segment cut to half its length used to be taken as a
/// torn tail (last index 267 -> 188, fsynced entries dropped). A segment
/// never shrinks, so a short one is refused, naming both lengths.
#[test]
fn a_segment_cut_short_is_refused_not_taken_for_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let storage = synced_log(dir.path(), 50);
    let end = storage.active_bytes;
    drop(storage);
    let wal = segment(dir.path(), 1);
    let file = fs::OpenOptions::new().write(true).open(&wal).unwrap();
    file.set_len(end / 2).unwrap();
    drop(file);
    let message = corrupt_message(Storage::open(dir.path(), opts()).unwrap_err(), &wal);
    assert!(
        message.contains(&format!("{} bytes long but was created with {}", end / 2, 1 << 20)),
        "{message}"
    );
    assert!(message.contains("cut short"), "{message}");
}

/// Case 6: deleting the newest segment used to lose its entries silently
/// (267 -> 109). The segment before it was sealed when it was created.
#[test]
fn a_deleted_newest_segment_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let small = StorageOptions { segment_bytes_max: 4096, sync: true };
    let (mut storage, _) = Storage::open(dir.path(), small.clone()).unwrap();
    for i in 1..=200 {
        storage.append(&batch(i, vec![entry(i, 1)], None)).unwrap();
        storage.sync().unwrap();
    }
    let count = storage.segment_count() as u64;
    assert!(count >= 2, "{count} segments");
    drop(storage);
    fs::remove_file(segment(dir.path(), count)).unwrap();
    let before = segment(dir.path(), count - 1);
    let message = corrupt_message(Storage::open(dir.path(), small).unwrap_err(), &before);
    assert!(message.contains(&format!("sealed when {} was created", segment_name(count))), "{message}");
}

/// Case 6: only bytes past the last recorded sync may be a torn write. The
/// same damage to the last record is cut as torn while its sync is not yet
/// recorded, and refused once it is.
#[test]
fn damage_before_the_recorded_sync_is_corruption_and_after_it_a_torn_tail() {
    let damage = |dir: &Path, at: u64| {
        let file = fs::OpenOptions::new().write(true).open(segment(dir, 1)).unwrap();
        file.write_all_at(&[0xde, 0xad], at).unwrap();
    };
    // Recorded: refused.
    let dir = tempfile::tempdir().unwrap();
    let storage = synced_log(dir.path(), 20);
    let last = storage.index.spans().last().unwrap().offset;
    assert!(!storage.sync_unrecorded());
    drop(storage);
    damage(dir.path(), last + 10);
    let message = corrupt_message(Storage::open(dir.path(), opts()).unwrap_err(), &segment(dir.path(), 1));
    assert!(message.contains("up to which this segment was synced"), "{message}");

    // Synced but not yet recorded (the WAL thread records it when idle):
    // the one case where the last synced batch can still be taken as torn.
    let dir = tempfile::tempdir().unwrap();
    let mut storage = synced_log(dir.path(), 20);
    storage.append(&batch(21, vec![entry(21, 1)], None)).unwrap();
    storage.sync().unwrap();
    assert!(storage.sync_unrecorded());
    let last = storage.index.spans().last().unwrap().offset;
    drop(storage);
    damage(dir.path(), last + 10);
    let (_, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.entries, entries(1, 20));
}

/// Case 6: synced records zeroed (or a file that ends early) are refused
/// too: the records must reach the recorded sync.
#[test]
fn synced_records_that_were_zeroed_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = synced_log(dir.path(), 20);
    let last = storage.index.spans().last().unwrap().offset;
    let end = storage.active_bytes;
    drop(storage);
    let file = fs::OpenOptions::new().write(true).open(segment(dir.path(), 1)).unwrap();
    file.write_all_at(&vec![0; (end - last) as usize], last).unwrap();
    drop(file);
    let message = corrupt_message(Storage::open(dir.path(), opts()).unwrap_err(), &segment(dir.path(), 1));
    assert!(message.contains(&format!("before byte {end}")), "{message}");
}

/// Case 6: junk after a damaged length field made recovery quadratic (40
/// MiB: still at 100% CPU after a minute). The search for valid records
/// after a bad one is bounded: here it gives up and refuses, in a sentence.
#[test]
fn junk_after_a_damaged_length_is_searched_in_linear_time() {
    let dir = tempfile::tempdir().unwrap();
    let big = StorageOptions { segment_bytes_max: 64 << 20, sync: false };
    let (mut storage, _) = Storage::open(dir.path(), big.clone()).unwrap();
    for i in 1..=5 {
        storage.append(&batch(i, vec![entry(i, 1)], None)).unwrap();
    }
    let end = storage.active_bytes;
    drop(storage);
    // A damaged length, then 40 MiB of pseudo-random bytes.
    let mut junk = vec![0u8; 40 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in junk.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let file = fs::OpenOptions::new().write(true).open(segment(dir.path(), 1)).unwrap();
    file.set_len(64 << 20).unwrap();
    file.write_all_at(&junk, end).unwrap();
    drop(file);
    let started = std::time::Instant::now();
    let err = Storage::open(dir.path(), big).unwrap_err();
    let message = corrupt_message(err, &segment(dir.path(), 1));
    assert!(message.contains("too much that looks like records"), "{message}");
    eprintln!("recovery gave up after {:?}", started.elapsed());
}

/// A batch larger than the active segment's room goes whole into a new
/// segment made large enough: no record crosses a segment's end, and every
/// file keeps the length it was created with.
#[test]
fn a_batch_larger_than_a_segment_gets_a_segment_of_its_own_size() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path(), opts()).unwrap();
    append_range(&mut storage, 1, 3, None);
    let huge = Entry { term: 1, index: 4, payload: EntryPayload::Command(vec![7; 3 << 20]) };
    storage.append(&batch(4, vec![huge.clone()], None)).unwrap();
    storage.sync().unwrap();
    append_range(&mut storage, 5, 6, None);
    let count = storage.segment_count();
    assert!(count >= 2);
    drop(storage);
    for seq in 1..=count as u64 {
        let data = fs::read(segment(dir.path(), seq)).unwrap();
        let slot = SyncSlot::read(&data).unwrap();
        assert_eq!(data.len() as u64, slot.capacity, "segment {seq} grew past its capacity");
    }
    let (_, durable) = Storage::open(dir.path(), opts()).unwrap();
    let mut expected = entries(1, 3);
    expected.push(huge);
    expected.extend(entries(5, 6));
    assert_eq!(durable.entries, expected);
}

/// A version-2 data directory (records from byte 0, no sync slots) is still
/// read, and appends go on in a new version-3 segment after it; a torn tail
/// in it is cut first (it is no longer the last segment after that).
#[test]
fn a_version_2_segment_is_read_and_followed_by_a_slotted_one() {
    for torn in [false, true] {
        version_2_segment_is_followed(torn);
    }
}

fn version_2_segment_is_followed(torn: bool) {
    let dir = tempfile::tempdir().unwrap();
    let hs = HardState { term: 4, vote: Some(2), commit: 3 };
    let mut bytes = Vec::new();
    let begin = WalRecordRef::Begin { format_version: 2, seq: 1 };
    push_record(&mut bytes, &begin, "test", RECORD_PAYLOAD_BYTES_MAX).unwrap();
    push_record(&mut bytes, &WalRecordRef::HardState(&hs), "test", RECORD_PAYLOAD_BYTES_MAX).unwrap();
    push_record(&mut bytes, &WalRecordRef::Entries(&entries(1, 3)), "test", RECORD_PAYLOAD_BYTES_MAX)
        .unwrap();
    if torn {
        bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 9]);
    }
    bytes.resize(bytes.len() + 4096, 0);
    fs::write(segment(dir.path(), 1), bytes).unwrap();
    let (mut storage, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!((durable.entries, durable.hard_state), (entries(1, 3), hs));
    assert_eq!(storage.segment_count(), 2);
    append_range(&mut storage, 4, 5, None);
    drop(storage);
    assert!(SyncSlot::read(&fs::read(segment(dir.path(), 2)).unwrap()).is_some());
    let (_, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.entries, entries(1, 5));
}

/// Case 1 of issue 10: a snapshot above 63 MiB could not be written
/// ("refused to write a snapshot of 125832292 bytes"), which stopped every
/// node. Snapshot files are a stream of records now, of any size, read back
/// as a stream or in ranges (what a leader sends), checksums checked.
#[test]
fn a_snapshot_larger_than_one_record_is_saved_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path(), opts()).unwrap();
    append_range(&mut storage, 1, 10, Some(HardState { term: 1, vote: Some(1), commit: 10 }));
    let data: Vec<u8> = (0..(100u32 << 20) / 4).flat_map(|i| i.to_le_bytes()).collect();
    let meta = SnapshotMeta {
        index: 10,
        term: 1,
        membership: raft_core::Membership::with_voters([1]).unwrap().into(),
    };
    storage.save_snapshot(&meta, &data).unwrap();
    drop(storage);
    let (storage, durable) = Storage::open(dir.path(), opts()).unwrap();
    let expected = raft_core::Snapshot { meta: meta.clone(), data_bytes: 100 << 20 };
    assert_eq!(durable.snapshot, Some(expected));
    let file = storage.open_snapshot().unwrap().unwrap();
    // Ranges within a record, across records, and at the very end.
    let mib = 1u64 << 20;
    for (offset, len) in [(0, 10), (mib - 3, 7), (5 * mib + 1, 3 * mib), ((100 << 20) - 5, 5), (0, 0)] {
        let range = file.read_range(offset, len).unwrap();
        assert!(range == data[offset as usize..(offset + len) as usize], "bytes {offset}+{len} differ");
    }
    assert!(file.read_range((100 << 20) - 5, 6).is_err(), "a range past the end");
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut file.into_reader(), &mut back).unwrap();
    assert!(back == data, "the snapshot read back as a stream differs");
    drop(storage);
    // A flipped byte in its data is found by any read that covers it.
    let path = dir.path().join(super::snapshot_name(10));
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0xff, 0xee], 50 << 20).unwrap();
    drop(f);
    let (storage, _) = Storage::open(dir.path(), opts()).unwrap();
    let file = storage.open_snapshot().unwrap().unwrap();
    let err = file.read_range(49 * mib, 2 * mib).unwrap_err().to_string();
    assert!(err.contains("snapshot data record") && err.contains("checksum"), "{err}");
    let err = std::io::Read::read_to_end(&mut file.into_reader(), &mut Vec::new()).unwrap_err().to_string();
    assert!(err.contains("snapshot data record") && err.contains("checksum"), "{err}");
    drop(storage);
    // A file cut short is refused at open, with the corruption sentence.
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(60 << 20).unwrap();
    drop(f);
    let err = Storage::open(dir.path(), opts()).unwrap_err();
    assert!(
        matches!(err, StorageError::Corrupt { .. }) && err.to_string().contains("bytes of data make"),
        "{err}"
    );
}

/// The chunks of a snapshot from a leader are stored as they come, in the
/// order the core hands them out; a chunk of another snapshot or out of
/// order is ignored; offset 0 starts afresh; the finished file is renamed
/// for the check so that a new snapshot's chunks cannot write into it.
#[test]
fn incoming_snapshot_chunks_are_stored_in_order_and_handed_to_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let meta = |index| SnapshotMeta {
        index,
        term: 1,
        membership: raft_core::Membership::with_voters([1]).unwrap().into(),
    };
    let mut current = None;
    assert!(super::IncomingSnapshot::save(&mut current, dir.path(), &meta(5), 0, b"abc").is_none());
    super::IncomingSnapshot::save(&mut current, dir.path(), &meta(5), 3, b"def");
    super::IncomingSnapshot::save(&mut current, dir.path(), &meta(5), 3, b"XXX"); // a repeat: ignored
    super::IncomingSnapshot::save(&mut current, dir.path(), &meta(6), 6, b"YYY"); // another: ignored
    assert!(super::IncomingSnapshot::finish(&mut current, &meta(6)).is_err(), "no chunks of 6 were stored");
    let path = super::IncomingSnapshot::finish(&mut current, &meta(5)).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"abcdef");
    // A new snapshot starts afresh and removes the old partial file.
    super::IncomingSnapshot::save(&mut current, dir.path(), &meta(7), 0, b"one");
    let partial = dir.path().join(format!("{}.recv", super::snapshot_name(7)));
    assert!(partial.exists());
    super::IncomingSnapshot::save(&mut current, dir.path(), &meta(8), 0, b"two");
    assert!(!partial.exists(), "the partial snapshot 7 was left behind");
    assert_eq!(fs::read(&path).unwrap(), b"abcdef", "the file handed to the check changed");
    // Leftovers of a crash are removed when the storage opens.
    drop(current);
    Storage::open(dir.path(), opts()).unwrap();
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("snap-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A snapshot file written off the WAL thread (as the node's snapshot
/// thread does) is recorded by `compact_to`, which compacts the log and
/// survives a reopen; compacting to a file that was never written is
/// refused with nothing recorded, and a stale one's file is deleted.
#[test]
fn a_snapshot_written_off_the_wal_thread_is_recorded_by_compact_to() {
    let dir = tempfile::tempdir().unwrap();
    let (mut storage, _) = Storage::open(dir.path(), opts()).unwrap();
    append_range(&mut storage, 1, 20, Some(HardState { term: 1, vote: Some(1), commit: 20 }));
    let snapshot = |index| raft_core::Snapshot {
        meta: SnapshotMeta {
            index,
            term: 1,
            membership: raft_core::Membership::with_voters([1]).unwrap().into(),
        },
        data_bytes: 3000,
    };
    let write = |s: &raft_core::Snapshot| {
        let data = vec![s.meta.index as u8; 3000];
        super::write_snapshot_file(dir.path(), true, &s.meta, 3000, ".tmp", |out| out.write_all(&data))
    };

    let missing = storage.compact_to(&snapshot(8).meta).unwrap_err();
    assert!(matches!(missing, StorageError::Corrupt { .. }), "{missing}");
    assert!(!storage.stopped(), "a refused compaction must not stop the storage");
    assert_eq!(storage.snapshot_index(), 0);

    write(&snapshot(10)).unwrap();
    // Appends keep going while the file is written elsewhere.
    append_range(&mut storage, 21, 25, None);
    storage.compact_to(&snapshot(10).meta).unwrap();
    assert_eq!((storage.snapshot_index(), storage.first_index(), storage.last_index()), (10, 11, 25));

    write(&snapshot(5)).unwrap();
    let stale = storage.compact_to(&snapshot(5).meta).unwrap_err();
    assert!(matches!(stale, StorageError::StaleSnapshot { index: 5, current: 10 }), "{stale}");
    assert!(!dir.path().join(super::snapshot_name(5)).exists(), "the stale snapshot's file is left behind");
    drop(storage);

    let (_, durable) = Storage::open(dir.path(), opts()).unwrap();
    assert_eq!(durable.snapshot, Some(snapshot(10)));
    assert_eq!(durable.entries, entries(11, 25));
}

/// Data directories written before snapshots carried a membership are read:
/// the old WAL records and the old (format 2) snapshot file come back with
/// the voters as the membership.
#[test]
fn records_and_snapshot_files_from_before_memberships_are_read_with_the_voters_as_membership() {
    use super::record::{parse_wal_record, LegacySnapshotMeta};
    let legacy = LegacySnapshotMeta { index: 7, term: 2, voters: vec![1, 2, 3] };
    let upgraded = SnapshotMeta {
        index: 7,
        term: 2,
        membership: raft_core::Membership::with_voters([1, 2, 3]).unwrap().into(),
    };
    for (old, new) in [
        (WalRecordRef::CompactV1(&legacy), WalRecord::Compact(upgraded.clone())),
        (WalRecordRef::InstallSnapshotV1(&legacy), WalRecord::InstallSnapshot(upgraded.clone())),
    ] {
        let mut buf = Vec::new();
        push_record(&mut buf, &old, "a WAL record", RECORD_PAYLOAD_BYTES_MAX).unwrap();
        assert_eq!(parse_wal_record(&buf, 0).unwrap().0, new);
    }

    // A format-2 snapshot file: magic, header record (voters), data records.
    #[derive(serde::Serialize)]
    struct HeaderV2<'a> {
        meta: &'a LegacySnapshotMeta,
        data_bytes: u64,
    }
    let dir = tempfile::tempdir().unwrap();
    let data = b"state".to_vec();
    let mut file = b"\xffRLSNAP2".to_vec();
    push_record(&mut file, &HeaderV2 { meta: &legacy, data_bytes: 5 }, "a header", RECORD_PAYLOAD_BYTES_MAX)
        .unwrap();
    file.extend_from_slice(&(data.len() as u32).to_le_bytes());
    file.extend_from_slice(&crc32c::crc32c(&data).to_le_bytes());
    file.extend_from_slice(&data);
    fs::write(dir.path().join(super::snapshot_name(7)), &file).unwrap();
    let snapshot = super::SnapshotFile::open(dir.path(), &upgraded).unwrap();
    assert_eq!((snapshot.meta(), &snapshot.read_range(0, 5).unwrap()[..]), (&upgraded, &b"state"[..]));
}
