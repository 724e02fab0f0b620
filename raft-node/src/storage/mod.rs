//! Durable storage of a node: a write-ahead log of segment files plus
//! snapshot files, in one data directory.
//!
//! # What it stores
//!
//! Exactly what `raft-core` hands out in [`PersistBatch`]es and what
//! [`RaftNode::restart`](raft_core::RaftNode::restart) needs back as a
//! [`DurableState`]: the hard state, the snapshot, and the log entries after it.
//!
//! # On-disk format
//!
//! - `wal-<seq:016x>.log`: WAL segments, numbered from 1 without gaps (older
//!   ones are deleted from the front only). A segment (format version 3)
//!   starts with a 512-byte sector holding two **sync slots** (see
//!   `record::SyncSlot`; written alternately, each with its own checksum):
//!   how far the segment is known synced, the length it was created with
//!   (it never shrinks nor grows), and, once its successor exists durably,
//!   that successor's number (sealed). Appends record the last fsync in the
//!   slot with their own write (covered by their own fsync) at most every
//!   100 ms, and the WAL thread records it after 20 ms idle. Its records start at
//!   byte 512 (a version-2 segment, still read, has no slots and its
//!   records start at 0; appends never continue in one). The records are
//!   `[len: u32 LE][crc32c(payload): u32 LE][payload]`, the payload being
//!   [`codec::encode`] of a `WalRecord`:
//!   `Begin { format_version, seq }` (always first), `Entries(Vec<Entry>)`
//!   (discard entries `>=` the first one's index, then append), `HardState`
//!   (replace), `InstallSnapshot(meta)` (replace the snapshot, discard every
//!   entry) and `Compact(meta)` (replace the snapshot, discard entries `<=`
//!   its index). Every segment starts with `Begin`, the current hard state and
//!   the current snapshot (as `Compact`), so deleting older segments never
//!   loses them. A segment is created preallocated: its length set to its
//!   capacity and, when syncing, filled with zeros, so that appends overwrite
//!   allocated blocks and never change the file's size, and `fdatasync`
//!   writes only data, not the inode (under load on this project's test
//!   machine, with three nodes sharing a disk, that halved the fsync time).
//!   A new log's first segment holds 1 MiB, so that a node starts at once;
//!   each next one twice its predecessor, up to
//!   [`StorageOptions::segment_bytes_max`] (at most 1 GiB).
//!   The records end at the first all-zero header followed by nothing but
//!   zeros; no record has length 0.
//! - `snap-<index:016x>.bin`: a snapshot, streamed (see [`SnapshotFile`]): a
//!   magic, a header record (its metadata and data length), then its data in
//!   checksummed records of 1 MiB, so that it is written, sent and read back
//!   in pieces whatever its size. Written to a temporary name, fsynced,
//!   renamed, directory fsynced, and only then referenced from the WAL. Only
//!   the snapshot the durable WAL refers to is kept; older ones are deleted
//!   once a newer one is referenced durably. A snapshot a leader is sending
//!   is stored as it comes in `snap-<index>.bin.recv` (bare data), renamed
//!   `.check` once complete, and becomes a `.bin` only after it decoded in
//!   full; leftovers of a crash are removed at start.
//!
//! # Writing
//!
//! [`Storage::append`] encodes a whole batch into one reusable buffer and
//! writes it with one positioned write at the end of the active segment's
//! records (plus the sync slot's 40 bytes; no fsync); a batch that would run
//! past the segment's end goes whole into the next segment, made large
//! enough for it, so that no record crosses a segment's end; [`Storage::sync`] makes everything appended so far
//! durable with one `fdatasync` (group commit). When the records of the
//! active segment have reached its capacity (1 MiB for a new log's first
//! segment, twice the previous one's for each next, up to
//! [`StorageOptions::segment_bytes_max`]; the bytes written, not the file's
//! length, which is the capacity from the start), the next append first fsyncs it and starts a new one, which a background
//! thread has prepared (created, zero-filled and fsynced under the name
//! `prealloc-<seq:016x>.tmp`, then renamed into place) since the active one
//! was half full. A failed write or fsync stops the storage: every later
//! write is refused with [`StorageError::Stopped`] (fail-stop; an fsync
//! failure cannot be retried safely).
//!
//! # Recovery
//!
//! [`Storage::open`] replays every segment in order.
//! - Zero fill after the records (an all-zero header and only zeros up to the
//!   end of the file) is the clean end of a segment, in any segment.
//! - Damage to synced data is refused, never taken for a torn write: a
//!   segment shorter than the length its slot records (cut short), a last
//!   segment that is sealed (its successor, the newest segment, was
//!   deleted), a bad record or an end of records before the slot's synced
//!   offset (zeroed or damaged synced records).
//! - A bad record in the **last** segment past its synced offset (a short header, a short payload, a
//!   checksum mismatch, a length over the maximum that runs past the end) is
//!   a write torn by a crash if nothing valid follows it (only zeros, or
//!   stray bytes of the same unsynced write further on in the zero fill or
//!   past the preallocated size), or if a whole sector of it is zeros (a
//!   power loss kept later sectors of the unsynced writes and lost that one:
//!   nothing after it was ever durable). It is cut off (zeroed) with
//!   everything after it, and a warning names the file, the offset and the
//!   bytes dropped.
//! - A bad record anywhere else (followed by a valid record without an
//!   unwritten sector in it, or in an earlier segment, or a record with a
//!   good checksum that does not decode), junk in an earlier segment's zero
//!   fill, a missing segment, a hole in the log or a missing snapshot file
//!   stops start-up with [`StorageError::Corrupt`], naming the file and byte
//!   offset. The search for a valid record after a bad one is linear: it
//!   checksums at most twice the bytes it searches (plus 1 MiB), and refuses
//!   to guess past that.
//!
//! Then appends continue in the last segment, right at the end of its valid
//! records, after its tail (torn bytes, zeros) has been cut off and it has
//! been preallocated again, durably, so that nothing but zeros can follow
//! what is appended. (Only an empty directory gets a new segment.)

mod error;
mod index;
mod record;
mod recovery;
mod snapshot_file;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raft_core::{DurableState, Entry, HardState, Index, PersistBatch, Snapshot, SnapshotMeta};
use tracing::{info, warn};

pub use self::error::StorageError;
use self::index::{Span, SpanIndex};
use self::record::{
    push_record, scan_segment, SegmentEnd, SyncSlot, WalRecord, WalRecordRef, ENTRIES_RECORD_BYTES_TARGET,
    FORMAT_VERSION, FORMAT_VERSION_UNSLOTTED, HEADER_BYTES, RECORDS_START, RECORD_PAYLOAD_BYTES_MAX,
};
use self::recovery::Replay;
pub use self::snapshot_file::{write_snapshot_file, IncomingSnapshot, SnapshotFile, SnapshotReader};

/// How a [`Storage`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// Start a new WAL segment once the active one has reached this many bytes
    /// (default 64 MiB). A segment exceeds it by at most one batch. Segment
    /// files are preallocated to this size (up to 1 GiB).
    pub segment_bytes_max: u64,
    /// Whether to fsync at all (default `true`). `false` is **unsafe**: a crash
    /// of the machine (not just the process) may lose or tear acknowledged
    /// writes, breaking Raft's guarantees. Only for tests and benchmarks.
    pub sync: bool,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions { segment_bytes_max: 64 << 20, sync: true }
    }
}

/// The durable storage of one node: WAL segments and snapshot files in one
/// directory. See the [module documentation](self) for the format and the
/// recovery rules.
///
/// Only one `Storage` may use a directory at a time.
#[derive(Debug)]
pub struct Storage {
    dir: PathBuf,
    opts: StorageOptions,
    /// Sequence numbers of the segments on disk, oldest first; the last one
    /// is the active segment.
    segments: VecDeque<u64>,
    /// The active segment, opened for writing (at `active_bytes`: the file is
    /// preallocated, so its length is not where the records end).
    active: File,
    /// Bytes of records in the active segment: where the next write goes.
    active_bytes: u64,
    /// The preallocated length of the active segment: an append that would
    /// run past it starts a new segment (no record crosses a segment's end).
    active_capacity: u64,
    /// The active segment's sync slot as last written.
    active_slot: SyncSlot,
    /// `active_bytes` at the last fsync of the active segment: recorded in
    /// its sync slot with a later write, or by [`Storage::record_sync`].
    synced_end: u64,
    /// When the active segment's sync slot was last written.
    slot_written_at: std::time::Instant,
    /// Where the live entries are.
    index: SpanIndex,
    /// The hard state last appended.
    hard_state: HardState,
    /// The snapshot last appended or saved.
    snapshot: Option<SnapshotMeta>,
    /// Indexes of the snapshot files on disk.
    snapshot_files: BTreeSet<Index>,
    /// A snapshot was appended but not yet synced: older files may be deleted
    /// after the next sync.
    snapshot_cleanup_pending: bool,
    /// A segment was created since the last directory fsync.
    dir_sync_pending: bool,
    /// The reusable encoding buffer of [`Storage::append`].
    buf: Vec<u8>,
    /// The first write failure, after which every write is refused.
    failed: Option<String>,
    /// The next segment, being prepared in the background.
    next: Option<NextSegment>,
    #[cfg(test)]
    failpoint: Option<tests::FailPoint>,
}

/// The next segment file, being created and preallocated (zeros written and
/// fsynced: tens of milliseconds for 64 MiB) by a background thread, under a
/// temporary name, once the active segment is half full; rolling over then
/// only renames it into place instead of stalling appends. As etcd does.
#[derive(Debug)]
struct NextSegment {
    seq: u64,
    capacity: u64,
    temp: PathBuf,
    thread: std::thread::JoinHandle<Result<File, StorageError>>,
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(next) = self.next.take() {
            let _ = next.thread.join();
            let _ = fs::remove_file(&next.temp);
        }
    }
}

fn segment_name(seq: u64) -> String {
    format!("wal-{seq:016x}.log")
}

fn snapshot_name(index: Index) -> String {
    format!("snap-{index:016x}.bin")
}

/// The temporary name of segment `seq` while it is prepared in the background.
/// It does not start with `wal-`: it is no segment until renamed.
fn next_segment_name(seq: u64) -> String {
    format!("prealloc-{seq:016x}.tmp")
}

/// Parses `<prefix><16 hex digits><suffix>`.
fn parse_name(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let hex = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Fsyncs a directory, so that creations, renames and deletions in it are durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StorageError::io("fsync the directory", dir))
}

/// Under load, appends record the last fsync in the sync slot at most this
/// often (and the WAL thread records it after 20 ms idle): so only the
/// writes synced in the last 100 ms before a crash can be taken for a torn
/// tail at recovery, which is what they would be without the slot.
const SYNC_RECORD_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Segment files are never preallocated beyond this, whatever
/// [`StorageOptions::segment_bytes_max`] says.
const PREALLOCATE_BYTES_MAX: u64 = 1 << 30;

/// The chunk of zeros [`preallocate`] writes at a time.
const ZERO_CHUNK_BYTES: usize = 256 << 10;

/// [`preallocate`] flushes the zeros it wrote every this many bytes, so that
/// the disk never has much more than this queued in front of a WAL fsync (one
/// burst of 64 MiB made a concurrent append + fsync wait 15-25 ms; in bursts of
/// 4 MiB, 3 ms).
const ZERO_SYNC_BYTES: u64 = 256 << 10;

/// In the background, [`preallocate`] pauses this long after each flush of
/// zeros, so that WAL fsyncs are not queued behind one burst after another.
const ZERO_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// The capacity of a new log's first segment (or less, if
/// [`StorageOptions::segment_bytes_max`] is less): zero-filling it delays the
/// first start of a node by milliseconds, not the second a full segment takes.
const FIRST_SEGMENT_BYTES: u64 = 1 << 20;

/// The largest length a segment file is preallocated to.
fn preallocated_bytes(opts: &StorageOptions) -> u64 {
    opts.segment_bytes_max.min(PREALLOCATE_BYTES_MAX)
}

/// The capacity of the segment after one of `capacity`: twice as much,
/// between the first segment's and the largest.
fn next_capacity(opts: &StorageOptions, capacity: u64) -> u64 {
    let largest = preallocated_bytes(opts);
    capacity.saturating_mul(2).clamp(FIRST_SEGMENT_BYTES.min(largest), largest)
}

/// Sets the length of `file` to `len` and, if `write_zeros`, writes zeros over
/// `from..len`, so that those blocks are allocated and written: an overwrite
/// of them changes no metadata, and `fdatasync` then writes only the data.
/// The zeros are flushed every [`ZERO_SYNC_BYTES`]; the caller syncs the rest.
/// (Only setting the length leaves a hole, and `fallocate` leaves "unwritten"
/// extents: on ext4 both make the first write to each block a metadata
/// change that `fdatasync` must commit to the journal; measured, neither made
/// 4 KiB appends much cheaper than growing the file, while written zeros did.)
fn preallocate(
    file: &File,
    path: &Path,
    from: u64,
    len: u64,
    write_zeros: bool,
    pace: bool,
) -> Result<(), StorageError> {
    debug_assert!(from <= len);
    file.set_len(len).map_err(StorageError::io("preallocate", path))?;
    if write_zeros {
        let zeros = vec![0; ZERO_CHUNK_BYTES];
        let mut at = from;
        while at < len {
            let n = (len - at).min(ZERO_CHUNK_BYTES as u64) as usize;
            file.write_all_at(&zeros[..n], at).map_err(StorageError::io("preallocate", path))?;
            at += n as u64;
            if (at - from) % ZERO_SYNC_BYTES == 0 && at < len {
                file.sync_data().map_err(StorageError::io("preallocate", path))?;
                if pace {
                    std::thread::sleep(ZERO_PAUSE);
                }
            }
        }
    }
    Ok(())
}

/// Puts the calling thread's disk writes at the lowest priority of the
/// best-effort I/O class (Linux; honoured by the BFQ scheduler): the zeros of
/// the next segment then give way to the WAL's own writes. Not the idle
/// class: under BFQ that starves while any other I/O is queued, and a WAL
/// that fills its segment before the next one is ready waits for it. Best
/// effort; without it the zero fill is still paced.
fn lower_io_priority() {
    #[cfg(target_os = "linux")]
    {
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_BE: libc::c_long = 2;
        const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
        const IOPRIO_LEVEL_LOWEST: libc::c_long = 7;
        // SAFETY: ioprio_set takes three integers and touches no memory of ours;
        // `0` names the calling thread.
        let _ = unsafe {
            libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                0,
                (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | IOPRIO_LEVEL_LOWEST,
            )
        };
    }
}

/// Creates a new, preallocated segment file (fsynced, if syncing; the
/// directory is not).
fn create_segment(
    path: &Path,
    opts: &StorageOptions,
    capacity: u64,
    pace: bool,
) -> Result<File, StorageError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(StorageError::io("create", path))?;
    preallocate(&file, path, 0, capacity, opts.sync, pace)?;
    let slot = first_slot(capacity);
    file.write_all_at(&slot.encode(), slot.offset()).map_err(StorageError::io("write", path))?;
    if opts.sync {
        file.sync_all().map_err(StorageError::io("fsync", path))?;
    }
    Ok(file)
}

/// The sync slot a new segment of `capacity` bytes is created with.
fn first_slot(capacity: u64) -> SyncSlot {
    SyncSlot { gen: 1, synced_to: RECORDS_START, capacity, next_seq: 0 }
}

/// Opens the last segment again for appending at `end` (the end of its valid
/// records): overwrites whatever follows with zeros (torn bytes, stray
/// bytes) and preallocates it again, durably, unless it already holds just
/// zeros after `end` up to the preallocated size. The file never becomes
/// shorter than `capacity`, the length its sync slot records (a crash in
/// the middle must not make it look cut short). Returns the file and its
/// new capacity.
fn reopen_segment(
    path: &Path,
    opts: &StorageOptions,
    end: u64,
    file_bytes: u64,
    capacity: u64,
    torn: bool,
) -> Result<(File, u64), StorageError> {
    let file = OpenOptions::new().write(true).open(path).map_err(StorageError::io("open", path))?;
    let largest = preallocated_bytes(opts);
    let len = file_bytes.clamp(FIRST_SEGMENT_BYTES.min(largest), largest).max(end).max(capacity);
    if torn || file_bytes != len {
        if !opts.sync {
            // No zeros are written without syncing: drop the tail instead.
            file.set_len(end).map_err(StorageError::io("truncate", path))?;
        }
        preallocate(&file, path, end, len, opts.sync, false)?;
        if opts.sync {
            file.sync_all().map_err(StorageError::io("fsync", path))?;
        }
    }
    Ok((file, len))
}

/// What a data directory holds.
#[derive(Debug, Default)]
struct Listing {
    segments: Vec<u64>,
    snapshots: BTreeSet<Index>,
    temporaries: Vec<PathBuf>,
}

fn list_dir(dir: &Path) -> Result<Listing, StorageError> {
    let mut listing = Listing::default();
    for item in fs::read_dir(dir).map_err(StorageError::io("list", dir))? {
        let item = item.map_err(StorageError::io("list", dir))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = parse_name(name, "wal-", ".log") {
            listing.segments.push(seq);
        } else if let Some(index) = parse_name(name, "snap-", ".bin") {
            listing.snapshots.insert(index);
        } else if [".bin.tmp", ".bin.recv", ".bin.check", ".bin.recv.tmp"]
            .iter()
            .any(|suffix| parse_name(name, "snap-", suffix).is_some())
            || parse_name(name, "prealloc-", ".tmp").is_some()
        {
            listing.temporaries.push(item.path());
        }
    }
    listing.segments.sort_unstable();
    Ok(listing)
}

impl Storage {
    /// Opens (creating if absent) the data directory and recovers from it:
    /// returns the storage, ready for appends, and what
    /// [`RaftNode::restart`](raft_core::RaftNode::restart) needs.
    ///
    /// A torn write at the tail of the last segment is cut off (with a
    /// warning); any other damage is a [`StorageError::Corrupt`]. See the
    /// [module documentation](self) for the rules. On success appends continue
    /// at the end of the last segment's records.
    pub fn open(dir: &Path, opts: StorageOptions) -> Result<(Storage, DurableState), StorageError> {
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(StorageError::io("create the directory", dir))?;
            if opts.sync {
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent)?;
                }
            }
        }
        let listing = list_dir(dir)?;
        let segment_path = |seq: u64| dir.join(segment_name(seq));
        for pair in listing.segments.windows(2) {
            if pair[1] != pair[0] + 1 {
                return Err(StorageError::Corrupt {
                    path: segment_path(pair[1]),
                    offset: 0,
                    reason: format!(
                        "the segments before it end at {}, so {} through {} are missing",
                        segment_name(pair[0]),
                        segment_name(pair[0] + 1),
                        segment_name(pair[1] - 1)
                    ),
                });
            }
        }

        let mut replay = Replay::default();
        // Where the records of the last segment end, its length, whether a
        // torn write follows them, and its sync slot (none: version 2).
        let mut last_end = None;
        for (k, &seq) in listing.segments.iter().enumerate() {
            let path = segment_path(seq);
            let data = fs::read(&path).map_err(StorageError::io("read", &path))?;
            let is_last = k + 1 == listing.segments.len();
            let slot = SyncSlot::read(&data);
            let corrupt =
                |offset: u64, reason: String| StorageError::Corrupt { path: path.clone(), offset, reason };
            let (version, start, synced_to) = match slot {
                Some(slot) => (FORMAT_VERSION, RECORDS_START, slot.synced_to),
                None => (FORMAT_VERSION_UNSLOTTED, 0, 0),
            };
            if let Some(slot) = slot {
                if (data.len() as u64) < slot.capacity {
                    return Err(corrupt(
                        data.len() as u64,
                        format!(
                            "the segment is {} bytes long but was created with {} and never shrinks: it was cut \
                             short, and records synced up to byte {} (perhaps acknowledged writes) may be gone; \
                             restore this node's data directory from a backup, or remove the node and add it \
                             back as a new member",
                            data.len(),
                            slot.capacity,
                            slot.synced_to
                        ),
                    ));
                }
                if is_last && slot.next_seq != 0 {
                    return Err(corrupt(
                        0,
                        format!(
                            "the segment was sealed when {} was created, but that file is missing: the newest \
                             WAL segment was deleted, with the synced records (perhaps acknowledged writes) in \
                             it; restore this node's data directory from a backup, or remove the node and add \
                             it back as a new member",
                            segment_name(slot.next_seq)
                        ),
                    ));
                }
            }
            let end = scan_segment(&path, &data, is_last, start, synced_to, |offset, record| {
                replay.apply(&path, (seq, version, start), offset, record)
            })?;
            if let SegmentEnd::TornTail { offset, written_end, bad } = &end {
                warn!(
                    file = %path.display(),
                    offset,
                    dropped_bytes = written_end - offset,
                    synced_to,
                    "cutting off a torn write at the tail of the WAL (past the last sync): {}",
                    bad.describe("the record")
                );
            }
            if is_last {
                last_end =
                    Some((end.offset(), data.len() as u64, matches!(end, SegmentEnd::TornTail { .. }), slot));
            }
        }
        let recovered = replay.finish(segment_path)?;

        let snapshot = match &recovered.snapshot {
            Some(meta) => {
                let file = SnapshotFile::open(dir, meta)?;
                Some(Snapshot { meta: meta.clone(), data_bytes: file.data_bytes() })
            }
            None => None,
        };
        // Before any write: a write may start preparing a segment under a
        // temporary name.
        for path in &listing.temporaries {
            if let Err(e) = fs::remove_file(path) {
                warn!(file = %path.display(), error = %e, "could not remove a leftover temporary file");
            }
        }
        // Appends continue in the last segment if it has sync slots; a
        // version-2 one (or none) is followed by a new segment.
        let mut segments: VecDeque<u64> = listing.segments.iter().copied().collect();
        let (active_seq, active, active_capacity, active_slot, active_bytes) =
            match (listing.segments.last(), last_end) {
                (Some(&seq), Some((end, file_bytes, torn, Some(slot)))) => {
                    let path = segment_path(seq);
                    let (file, capacity) =
                        reopen_segment(&path, &opts, end, file_bytes, slot.capacity, torn)?;
                    (seq, file, capacity, SyncSlot { capacity, ..slot }, end)
                }
                (last, last_end) => {
                    if let (Some(&seq), Some((end, _, true, None))) = (last, last_end) {
                        // A version-2 segment with a torn tail stops being
                        // the last one: cut the tail off first, durably, or
                        // it would read as corruption in a segment that is
                        // not the last.
                        let path = segment_path(seq);
                        let file = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(StorageError::io("open", &path))?;
                        file.set_len(end).map_err(StorageError::io("truncate", &path))?;
                        if opts.sync {
                            file.sync_all().map_err(StorageError::io("fsync", &path))?;
                        }
                    }
                    let seq = last.map_or(1, |&seq| seq + 1);
                    let capacity = FIRST_SEGMENT_BYTES.min(preallocated_bytes(&opts));
                    let file = create_segment(&segment_path(seq), &opts, capacity, false)?;
                    segments.push_back(seq);
                    (seq, file, capacity, first_slot(capacity), RECORDS_START)
                }
            };
        let mut storage = Storage {
            dir: dir.to_path_buf(),
            opts,
            segments,
            active,
            active_bytes,
            active_capacity,
            active_slot,
            synced_end: active_slot.synced_to,
            slot_written_at: std::time::Instant::now(),
            index: recovered.index,
            hard_state: recovered.hard_state,
            snapshot: recovered.snapshot,
            snapshot_files: listing.snapshots,
            snapshot_cleanup_pending: true,
            dir_sync_pending: true,
            buf: Vec::new(),
            failed: None,
            next: None,
            #[cfg(test)]
            failpoint: None,
        };
        if active_bytes == RECORDS_START {
            // A new segment, or one whose first records were torn.
            let mut header = Vec::new();
            storage.push_segment_header(&mut header, active_seq)?;
            storage.write_active(&header)?;
        }
        storage.sync()?;
        // What was read back is durable now: record it (and the capacity).
        storage.record_sync_unconditionally()?;
        // A reopened segment may be half full already: prepare its successor
        // now, not on the first append after it fills.
        storage.prepare_next_segment();
        info!(
            dir = %dir.display(),
            segments = storage.segments.len(),
            term = storage.hard_state.term,
            snapshot_index = storage.snapshot_index(),
            last_index = storage.last_index(),
            "storage recovered"
        );
        let durable = DurableState { hard_state: recovered.hard_state, snapshot, entries: recovered.entries };
        Ok((storage, durable))
    }

    /// Appends one [`PersistBatch`] to the WAL, buffered in the operating
    /// system but **not** synced (call [`Storage::sync`]), in the order the
    /// batch documents: the snapshot first (written to its own file durably —
    /// temp file, fsync, rename, fsync directory — then recorded in the WAL;
    /// it discards every earlier entry), then the entries (replacing every
    /// entry at or after `entries[0].index`), then the hard state.
    ///
    /// One positioned write per batch. A batch that would leave a hole in the log
    /// is refused with [`StorageError::InvalidBatch`] and nothing is written.
    /// After an I/O error the storage is stopped.
    pub fn append(&mut self, batch: &PersistBatch) -> Result<(), StorageError> {
        self.check_running()?;
        if batch.is_empty() {
            return Ok(());
        }
        self.validate(batch)?;
        let result = self.append_unchecked(batch);
        self.stop_on_fatal(result)
    }

    /// Makes everything appended so far durable: one `fdatasync` of the
    /// active segment, plus an fsync of the directory when a segment was
    /// created since the last sync. Group commit: append many batches, then
    /// sync once. After an I/O error the storage is stopped.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.check_running()?;
        let result = self.sync_unchecked();
        self.stop_on_fatal(result)?;
        if self.snapshot_cleanup_pending {
            self.snapshot_cleanup_pending = false;
            self.delete_old_snapshot_files();
        }
        Ok(())
    }

    /// Records a snapshot the driver took of its state machine at
    /// `meta.index` (already applied, at most the durable commit index),
    /// whose data is `data`, and compacts the log up to it: writes the
    /// snapshot file durably
    /// (temp file, fsync, rename, fsync directory), appends a record of it to
    /// the WAL and syncs the WAL (this also makes every earlier append
    /// durable), then deletes the oldest WAL segments whose live entries are
    /// all at or below the index (never the active segment, which restates
    /// the hard state) and the older snapshot files.
    ///
    /// A snapshot at or below the current one is refused with
    /// [`StorageError::StaleSnapshot`]. After an I/O error the storage is stopped.
    pub fn save_snapshot(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        self.check_running()?;
        let current = self.snapshot_index();
        if meta.index <= current {
            return Err(StorageError::StaleSnapshot { index: meta.index, current });
        }
        let result = write_snapshot_file(&self.dir, self.opts.sync, meta, data.len() as u64, ".tmp", |out| {
            out.write_all(data)
        });
        self.stop_on_fatal(result)?;
        self.compact_to(meta)
    }

    /// Compacts the log up to a snapshot whose file
    /// [`write_snapshot_file`] already wrote durably (on a thread of the
    /// driver's, so that a large snapshot does not hold up the WAL's
    /// fsyncs): appends a record of it to the WAL and syncs the WAL, then
    /// deletes the oldest WAL segments it covers and the older snapshot
    /// files, as [`Storage::save_snapshot`] does.
    ///
    /// A snapshot at or below the current one is refused with
    /// [`StorageError::StaleSnapshot`] (its file is deleted: nothing will
    /// refer to it); one whose file is missing is refused with
    /// [`StorageError::Corrupt`] and nothing is written. After an I/O error
    /// the storage is stopped.
    pub fn compact_to(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        self.check_running()?;
        let current = self.snapshot_index();
        let path = self.dir.join(snapshot_name(meta.index));
        if meta.index <= current {
            if !self.snapshot_files.contains(&meta.index) {
                let _ = fs::remove_file(&path);
            }
            return Err(StorageError::StaleSnapshot { index: meta.index, current });
        }
        if !path.is_file() {
            return Err(StorageError::Corrupt {
                path,
                offset: 0,
                reason: format!(
                    "the snapshot file for index {} was not written before compacting to it",
                    meta.index
                ),
            });
        }
        self.snapshot_files.insert(meta.index);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        push_record(&mut buf, &WalRecordRef::Compact(meta), "a WAL record", RECORD_PAYLOAD_BYTES_MAX)?;
        let result = self.write_records(&mut buf).and_then(|_| self.sync_unchecked());
        self.buf = buf;
        self.stop_on_fatal(result)?;
        self.index.compact_to(meta.index);
        self.snapshot = Some(meta.clone());
        self.snapshot_cleanup_pending = false;
        let result = self.delete_covered_segments();
        self.stop_on_fatal(result)?;
        self.delete_old_snapshot_files();
        Ok(())
    }

    /// Opens the latest snapshot's file (the one the WAL refers to last; it
    /// is durable), or `None` if there is none.
    pub fn open_snapshot(&self) -> Result<Option<SnapshotFile>, StorageError> {
        self.snapshot.as_ref().map(|meta| SnapshotFile::open(&self.dir, meta)).transpose()
    }

    /// The entries from `lo` through `hi` inclusive that the log still holds
    /// (those outside `first_index()..=last_index()` are skipped), read back
    /// from the segments. For the `log` view of a node: correct, not fast.
    pub fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        let mut open: Option<(u64, File)> = None;
        let mut data = Vec::new();
        for span in self.index.overlapping(lo, hi) {
            let path = self.segment_path(span.seq);
            if !matches!(&open, Some((seq, _)) if *seq == span.seq) {
                open = Some((span.seq, File::open(&path).map_err(StorageError::io("open", &path))?));
            }
            let (_, file) = open.as_mut().expect("just opened");
            read_record_at(file, &path, span.offset, &mut data)?;
            let corrupt =
                |reason: String| StorageError::Corrupt { path: path.clone(), offset: span.offset, reason };
            match record::parse_wal_record(&data, 0) {
                Ok((WalRecord::Entries(entries), _)) => out.extend(
                    entries
                        .into_iter()
                        .filter(|e| e.index >= lo.max(span.first) && e.index <= hi.min(span.last)),
                ),
                Ok((other, _)) => {
                    return Err(corrupt(format!("expected an entries record, found {other:?}")));
                }
                Err(bad) => return Err(corrupt(bad.describe("the WAL record"))),
            }
        }
        Ok(out)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The hard state last appended.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The metadata of the latest snapshot, if any.
    pub fn snapshot_meta(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref()
    }

    /// The index of the latest snapshot (0 if none).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.index)
    }

    /// The first index the log holds: one past the snapshot.
    pub fn first_index(&self) -> Index {
        self.index.first_index().unwrap_or(self.snapshot_index() + 1)
    }

    /// The last index appended (the snapshot index if the log is empty).
    pub fn last_index(&self) -> Index {
        self.index.last_index().unwrap_or(self.snapshot_index())
    }

    /// The number of WAL segment files, the active one included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Whether an earlier failure stopped the storage (every write refused).
    pub fn stopped(&self) -> bool {
        self.failed.is_some()
    }

    fn active_seq(&self) -> u64 {
        *self.segments.back().expect("there is always an active segment")
    }

    fn segment_path(&self, seq: u64) -> PathBuf {
        self.dir.join(segment_name(seq))
    }

    fn check_running(&self) -> Result<(), StorageError> {
        match &self.failed {
            Some(cause) => Err(StorageError::Stopped { cause: cause.clone() }),
            None => Ok(()),
        }
    }

    /// Stops the storage if `result` is an I/O error (fail-stop).
    fn stop_on_fatal<T>(&mut self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e) = &result {
            if e.is_fatal() && self.failed.is_none() {
                self.failed = Some(e.to_string());
            }
        }
        result
    }

    /// Refuses a batch that would leave a hole or disorder in the log.
    fn validate(&self, batch: &PersistBatch) -> Result<(), StorageError> {
        let Some(first) = batch.entries.first().map(|e| e.index) else { return Ok(()) };
        let (snapshot_index, last_index) = match &batch.snapshot {
            Some(s) => (s.meta.index, s.meta.index),
            None => (self.snapshot_index(), self.last_index()),
        };
        let invalid = |reason: String| Err(StorageError::InvalidBatch { reason });
        if first <= snapshot_index {
            return invalid(format!(
                "entries start at {first}, at or below the snapshot at {snapshot_index}"
            ));
        }
        if first > last_index + 1 {
            return invalid(format!(
                "entries start at {first}, leaving a hole after the last index {last_index}"
            ));
        }
        for (expected, entry) in (first..).zip(&batch.entries) {
            if entry.index != expected {
                return invalid(format!("entry index {} where {expected} belongs", entry.index));
            }
        }
        Ok(())
    }

    /// [`Storage::append`] after the checks: encode everything (no side
    /// effects yet), then write. A batch that would run past the active
    /// segment's end goes whole into a new segment (large enough for it), so
    /// that no record crosses a segment's end and a file never grows.
    fn append_unchecked(&mut self, batch: &PersistBatch) -> Result<(), StorageError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        // Span offsets relative to the start of the batch's records.
        let mut spans = Vec::new();
        let encoded = (|| {
            if let Some(snapshot) = &batch.snapshot {
                push_wal_record(&mut buf, &WalRecordRef::InstallSnapshot(&snapshot.meta))?;
            }
            let mut rest = &batch.entries[..];
            while !rest.is_empty() {
                let mut bytes = 0;
                let n = rest
                    .iter()
                    .take_while(|e| {
                        bytes += e.size_bytes();
                        bytes <= ENTRIES_RECORD_BYTES_TARGET
                    })
                    .count()
                    .max(1);
                let (chunk, tail) = rest.split_at(n);
                let offset = buf.len() as u64;
                push_wal_record(&mut buf, &WalRecordRef::Entries(chunk))?;
                spans.push(Span { first: chunk[0].index, last: chunk[n - 1].index, seq: 0, offset });
                rest = tail;
            }
            if let Some(hard_state) = &batch.hard_state {
                push_wal_record(&mut buf, &WalRecordRef::HardState(hard_state))?;
            }
            Ok::<_, StorageError>(())
        })();
        let result = encoded.and_then(|()| {
            if let Some(snapshot) = &batch.snapshot {
                // Its file was written and checked before the core installed it.
                let path = self.dir.join(snapshot_name(snapshot.meta.index));
                if !path.is_file() {
                    return Err(StorageError::InvalidBatch {
                        reason: format!(
                            "the snapshot file for index {} was not written before installing it",
                            snapshot.meta.index
                        ),
                    });
                }
                self.snapshot_files.insert(snapshot.meta.index);
            }
            self.write_records(&mut buf)
        });
        self.buf = buf;
        let base = result?;
        let seq = self.active_seq();
        if let Some(snapshot) = &batch.snapshot {
            self.index.clear();
            self.snapshot = Some(snapshot.meta.clone());
            self.snapshot_cleanup_pending = true;
        }
        for span in spans {
            self.index.append(Span { seq, offset: base + span.offset, ..span });
        }
        if let Some(hard_state) = batch.hard_state {
            self.hard_state = hard_state;
        }
        debug_assert_eq!(self.index.check(true), Ok(()));
        Ok(())
    }

    /// Writes records at the end of the active segment, or, if they would run
    /// past its end, in a new segment after its header (`records` then
    /// holds the header too). Records the last fsync in the sync slot on the
    /// way. Returns the offset the given records start at.
    fn write_records(&mut self, records: &mut Vec<u8>) -> Result<u64, StorageError> {
        let mut base = self.active_bytes;
        if self.active_bytes + records.len() as u64 > self.active_capacity {
            let seq = self.active_seq() + 1;
            let mut header = Vec::new();
            self.push_segment_header(&mut header, seq)?;
            let needed = RECORDS_START + (header.len() + records.len()) as u64;
            self.rotate(seq, needed)?;
            base = self.active_bytes + header.len() as u64;
            header.extend_from_slice(records);
            *records = header;
        } else if self.opts.sync
            && self.synced_end > self.active_slot.synced_to
            && self.slot_written_at.elapsed() >= SYNC_RECORD_INTERVAL
        {
            // What the last fsync made durable, recorded with this write
            // (the next fsync covers both). Not with every write: the slot
            // is another block for each fsync to write (10% of W1, measured).
            self.write_active_slot(self.synced_end, 0)?;
        }
        self.write_active(records)?;
        Ok(base)
    }

    /// Writes the active segment's next sync slot (not synced: the next
    /// fsync of the segment makes it durable).
    fn write_active_slot(&mut self, synced_to: u64, next_seq: u64) -> Result<(), StorageError> {
        let slot =
            SyncSlot { gen: self.active_slot.gen + 1, synced_to, capacity: self.active_capacity, next_seq };
        let path = self.segment_path(self.active_seq());
        self.active.write_all_at(&slot.encode(), slot.offset()).map_err(StorageError::io("write", &path))?;
        self.active_slot = slot;
        self.slot_written_at = std::time::Instant::now();
        Ok(())
    }

    /// Whether the last fsync is not yet recorded in the active segment's
    /// sync slot (see [`Storage::record_sync`]).
    pub fn sync_unrecorded(&self) -> bool {
        self.opts.sync && self.failed.is_none() && self.synced_end > self.active_slot.synced_to
    }

    /// Records in the active segment's sync slot how far it is synced, and
    /// syncs that (one small write and an `fdatasync`). Appends record the
    /// previous sync as they go; a driver calls this when the WAL is idle, so
    /// that the last writes before a pause are known synced too: only bytes
    /// past the recorded sync may be taken for a torn write at recovery.
    pub fn record_sync(&mut self) -> Result<(), StorageError> {
        self.check_running()?;
        if !self.sync_unrecorded() {
            return Ok(());
        }
        let result = self.record_sync_unconditionally();
        self.stop_on_fatal(result)
    }

    fn record_sync_unconditionally(&mut self) -> Result<(), StorageError> {
        if !self.opts.sync {
            return Ok(());
        }
        self.write_active_slot(self.synced_end, 0)?;
        let path = self.segment_path(self.active_seq());
        self.active.sync_data().map_err(StorageError::io("fdatasync", &path))
    }

    /// Encodes the records every segment starts with: `Begin`, the current
    /// hard state and the current snapshot.
    fn push_segment_header(&self, buf: &mut Vec<u8>, seq: u64) -> Result<(), StorageError> {
        push_wal_record(buf, &WalRecordRef::Begin { format_version: FORMAT_VERSION, seq })?;
        push_wal_record(buf, &WalRecordRef::HardState(&self.hard_state))?;
        if let Some(meta) = &self.snapshot {
            push_wal_record(buf, &WalRecordRef::Compact(meta))?;
        }
        Ok(())
    }

    /// Finishes the active segment (fsync, so that only the last segment can
    /// ever have a torn tail) and creates segment `seq`, of at least
    /// `needed_bytes`, preallocated, as the new active one; then seals the
    /// old one (its sync slot names `seq`, once `seq` exists durably), so
    /// that losing the newest segment is seen as such.
    fn rotate(&mut self, seq: u64, needed_bytes: u64) -> Result<(), StorageError> {
        let old = self.segment_path(self.active_seq());
        if self.opts.sync {
            self.active.sync_data().map_err(StorageError::io("fdatasync", &old))?;
        }
        let path = self.segment_path(seq);
        let (file, capacity) = self.new_segment(seq, &path, needed_bytes)?;
        if self.opts.sync {
            sync_dir(&self.dir)?;
            let sealed = self.active_bytes;
            self.write_active_slot(sealed, seq)?;
            self.active.sync_data().map_err(StorageError::io("fdatasync", &old))?;
        }
        self.active = file;
        self.active_capacity = capacity;
        self.active_slot = first_slot(capacity);
        self.segments.push_back(seq);
        self.active_bytes = RECORDS_START;
        self.synced_end = RECORDS_START;
        self.dir_sync_pending = false;
        Ok(())
    }

    /// Makes segment `seq` at `path`, of at least `needed_bytes`: the one
    /// prepared in the background if it is large enough, else a new one of
    /// the next capacity. On a full disk it tries once more with just the
    /// bytes needed, then gives up with [`StorageError::NoSpace`], leaving no
    /// file behind: nothing in the WAL has changed, so the append may be
    /// tried again.
    fn new_segment(&mut self, seq: u64, path: &Path, needed_bytes: u64) -> Result<(File, u64), StorageError> {
        if let Some(next) = self.next.take() {
            debug_assert_eq!(next.seq, seq);
            let joined = next.thread.join().unwrap_or_else(|_| {
                Err(StorageError::io("preallocate", &next.temp)(std::io::Error::other(
                    "the thread preparing it panicked",
                )))
            });
            match joined {
                Ok(file) if next.capacity >= needed_bytes => {
                    fs::rename(&next.temp, path)
                        .map_err(StorageError::io("rename into place", &next.temp))?;
                    return Ok((file, next.capacity));
                }
                // Too small for this batch, or the disk was full: made anew.
                Ok(_) => {
                    let _ = fs::remove_file(&next.temp);
                }
                Err(e) => {
                    let _ = fs::remove_file(&next.temp);
                    let e = e.no_space_is_not_fatal();
                    if !e.is_no_space() {
                        return Err(e);
                    }
                }
            }
        }
        let needed = needed_bytes.next_multiple_of(4096);
        let mut capacity = next_capacity(&self.opts, self.active_capacity).max(needed);
        loop {
            match create_segment(path, &self.opts, capacity, false)
                .map_err(StorageError::no_space_is_not_fatal)
            {
                Ok(file) => return Ok((file, capacity)),
                Err(e) => {
                    let _ = fs::remove_file(path);
                    if !e.is_no_space() || capacity == needed {
                        return Err(e);
                    }
                    capacity = needed;
                }
            }
        }
    }

    /// Writes `bytes` at the end of the active segment's records (over the
    /// preallocated zeros: the file's length does not change unless the
    /// records run past it).
    fn write_active(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        let path = self.segment_path(self.active_seq());
        let offset = self.active_bytes;
        #[cfg(test)]
        self.fail_if_writing(tests::FailPoint::Write, "write", &path, bytes)?;
        // Counted before the write: after a partial write the size is unknown,
        // and the storage stops anyway.
        self.active_bytes += bytes.len() as u64;
        self.active.write_all_at(bytes, offset).map_err(StorageError::io("write", &path))?;
        self.prepare_next_segment();
        Ok(())
    }

    /// Starts preparing the next segment in the background once the active
    /// one is half full (only when syncing: otherwise creating one is cheap).
    /// If no thread can be started, [`Storage::rotate`] creates it itself.
    fn prepare_next_segment(&mut self) {
        if self.next.is_some() || !self.opts.sync || self.active_bytes < self.active_capacity / 2 {
            return;
        }
        let seq = self.active_seq() + 1;
        let temp = self.dir.join(next_segment_name(seq));
        let (path, opts) = (temp.clone(), self.opts.clone());
        let capacity = next_capacity(&self.opts, self.active_capacity);
        let spawned = std::thread::Builder::new().name("wal-preallocate".into()).spawn(move || {
            // Defensive: open removes what a crash left, before any append.
            let _ = fs::remove_file(&path);
            lower_io_priority();
            create_segment(&path, &opts, capacity, true)
        });
        match spawned {
            Ok(thread) => self.next = Some(NextSegment { seq, capacity, temp, thread }),
            Err(e) => warn!(error = %e, "could not start a thread to preallocate the next WAL segment"),
        }
    }

    fn sync_unchecked(&mut self) -> Result<(), StorageError> {
        if !self.opts.sync {
            return Ok(());
        }
        let path = self.segment_path(self.active_seq());
        #[cfg(test)]
        self.fail_if(tests::FailPoint::Sync, "fdatasync", &path)?;
        self.active.sync_data().map_err(StorageError::io("fdatasync", &path))?;
        self.synced_end = self.active_bytes;
        if self.dir_sync_pending {
            sync_dir(&self.dir)?;
            self.dir_sync_pending = false;
        }
        Ok(())
    }

    /// Deletes the oldest segments while all their live entries are covered by
    /// the snapshot, oldest first with a directory fsync after each, so that
    /// a crash leaves a prefix deleted and never a hole. Never the active one.
    fn delete_covered_segments(&mut self) -> Result<(), StorageError> {
        let upto = self.snapshot_index();
        while self.segments.len() > 1 {
            let seq = self.segments[0];
            if self.index.last_in_segment(seq).is_some_and(|last| last > upto) {
                break;
            }
            let path = self.segment_path(seq);
            if let Err(e) = fs::remove_file(&path) {
                warn!(file = %path.display(), error = %e, "could not delete a WAL segment covered by the snapshot");
                break;
            }
            self.segments.pop_front();
            if self.opts.sync {
                sync_dir(&self.dir)?;
            }
            info!(file = %path.display(), snapshot_index = upto, "deleted a WAL segment covered by the snapshot");
        }
        Ok(())
    }

    /// Deletes every snapshot file but the current one. Only called once the
    /// WAL refers to the current one durably.
    fn delete_old_snapshot_files(&mut self) {
        let current = self.snapshot.as_ref().map(|s| s.index);
        let old: Vec<Index> = self.snapshot_files.iter().copied().filter(|&i| Some(i) != current).collect();
        for index in old {
            let path = self.dir.join(snapshot_name(index));
            match fs::remove_file(&path) {
                Ok(()) => {
                    self.snapshot_files.remove(&index);
                }
                Err(e) => warn!(file = %path.display(), error = %e, "could not delete an old snapshot file"),
            }
        }
    }
}

fn push_wal_record(buf: &mut Vec<u8>, record: &WalRecordRef<'_>) -> Result<(), StorageError> {
    push_record(buf, record, "a WAL record", RECORD_PAYLOAD_BYTES_MAX)
}

/// Reads the whole framed record at `offset` of `file` into `data`.
fn read_record_at(file: &mut File, path: &Path, offset: u64, data: &mut Vec<u8>) -> Result<(), StorageError> {
    let io = |e| StorageError::io("read", path)(e);
    let mut header = [0u8; HEADER_BYTES];
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    file.read_exact(&mut header).map_err(io)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    data.clear();
    data.extend_from_slice(&header);
    if len <= RECORD_PAYLOAD_BYTES_MAX {
        data.resize(HEADER_BYTES + len, 0);
        file.read_exact(&mut data[HEADER_BYTES..]).map_err(io)?;
    }
    Ok(())
}
