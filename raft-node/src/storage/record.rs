//! Record framing for WAL segments and snapshot files, and the segment scanner
//! that tells a torn tail from corruption.
//!
//! A record is `[len: u32 LE][crc32c(payload): u32 LE][payload]`, the payload
//! being [`codec::encode`] of a value. A WAL payload is a [`WalRecord`]; a
//! snapshot file holds exactly one record whose payload is a
//! [`Snapshot`](raft_core::Snapshot).
//!
//! No record has length 0 (no value encodes to nothing, and [`push_record`]
//! refuses one that would), so an all-zero header is never a record: WAL
//! segments are preallocated with zeros, and the first all-zero header
//! followed by nothing but zeros is where the written data ends.

use std::path::Path;

use raft_codec::{self as codec, DECODE_LIMIT_BYTES};
use raft_core::{Entry, HardState, SnapshotMeta};
use serde::{Deserialize, Serialize};

use super::error::StorageError;

/// Bytes of the `[len][crc]` header in front of every payload.
pub(crate) const HEADER_BYTES: usize = 8;

/// The largest WAL record payload written or accepted. Half the codec's
/// decode limit: the decoder counts in-memory sizes (8 bytes per integer), so
/// a record of this many encoded bytes always decodes again.
pub(crate) const RECORD_PAYLOAD_BYTES_MAX: usize = DECODE_LIMIT_BYTES / 2;

/// The largest snapshot-file payload written or accepted (the snapshot data is
/// one byte string, which the decoder counts one for one).
pub(crate) const SNAPSHOT_PAYLOAD_BYTES_MAX: usize = DECODE_LIMIT_BYTES - (1 << 20);

/// Target size (by [`Entry::size_bytes`]) of one `Entries` record: a batch
/// larger than this is split into several records, so that no record comes
/// near the decode limit.
pub(crate) const ENTRIES_RECORD_BYTES_TARGET: usize = 1 << 20;

/// The on-disk format version, written in the first record of every segment.
/// A data directory of another version is refused at start-up, with both
/// versions named. 2: a session's last put or delete result says whether the
/// key existed instead of holding the old value (it is part of snapshots).
/// 3: a segment starts with two sync slots ([`SyncSlot`]) and its records at
/// [`RECORDS_START`]; version-2 segments (records from byte 0, no slots) are
/// still read, and never written to again.
pub(crate) const FORMAT_VERSION: u32 = 3;

/// The format of segments without sync slots, still read.
pub(crate) const FORMAT_VERSION_UNSLOTTED: u32 = 2;

/// Where the records of a version-3 segment start: the sector before them
/// holds the two sync slots.
pub(crate) const RECORDS_START: u64 = 512;

/// Offsets of the two sync slots; a slot of generation `g` lives at
/// `SLOT_OFFSETS[g % 2]`, so that a torn slot write leaves the other intact.
const SLOT_OFFSETS: [u64; 2] = [0, 256];

/// Bytes of one encoded sync slot.
pub(crate) const SLOT_BYTES: usize = 40;

/// What a segment knows about itself, rewritten in place (alternating
/// between two slots) as it is synced: how far its records are durable, the
/// length it was created with, and whether its successor exists. With it,
/// recovery tells a torn write (only ever past `synced_to`) from damage to
/// synced data: a segment cut short, zeroed, or deleted after it.
///
/// Encoded as `[0u32][crc32c of the rest][gen][synced_to][capacity][next_seq]`
/// (little endian): the leading zero can never start a record (no record
/// has length 0), so a version-2 segment is never read as slotted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SyncSlot {
    /// Generation: the slot with the highest valid one is current.
    pub(crate) gen: u64,
    /// Every byte before this offset is durable (was fsynced).
    pub(crate) synced_to: u64,
    /// The length the segment file was preallocated to; it never shrinks.
    pub(crate) capacity: u64,
    /// Non-zero once the segment is sealed: segment `next_seq` exists durably
    /// and every later record is there.
    pub(crate) next_seq: u64,
}

impl SyncSlot {
    /// Where this slot is written.
    pub(crate) fn offset(&self) -> u64 {
        SLOT_OFFSETS[(self.gen % 2) as usize]
    }

    /// The slot's bytes.
    pub(crate) fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut out = [0u8; SLOT_BYTES];
        for (k, v) in [self.gen, self.synced_to, self.capacity, self.next_seq].into_iter().enumerate() {
            out[8 + 8 * k..16 + 8 * k].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<SyncSlot> {
        let bytes = bytes.get(..SLOT_BYTES)?;
        let word = |k: usize| u64::from_le_bytes(bytes[8 + 8 * k..16 + 8 * k].try_into().expect("8 bytes"));
        let stored = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let slot = SyncSlot { gen: word(0), synced_to: word(1), capacity: word(2), next_seq: word(3) };
        (bytes[..4] == [0; 4] && stored == crc32c::crc32c(&bytes[8..]) && slot.gen != 0).then_some(slot)
    }

    /// The current slot of a segment's bytes, if it has one (a version-3
    /// segment); `None` for a version-2 segment.
    pub(crate) fn read(data: &[u8]) -> Option<SyncSlot> {
        SLOT_OFFSETS
            .iter()
            .filter_map(|&at| SyncSlot::decode(data.get(at as usize..)?).filter(|slot| slot.offset() == at))
            .max_by_key(|slot| slot.gen)
    }
}

/// One WAL record, as decoded. Replay applies them in order.
///
/// The variant order is the format: never reorder, only append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WalRecord {
    /// The first record of every segment.
    Begin {
        /// [`FORMAT_VERSION`] of the writer.
        format_version: u32,
        /// The segment's sequence number (the one in its file name).
        seq: u64,
    },
    /// Log entries, contiguous: every entry at or after the first one's index
    /// is discarded, then these are appended.
    Entries(Vec<Entry>),
    /// The hard state replaces the previous one.
    HardState(HardState),
    /// [`WalRecord::InstallSnapshot`] as written before snapshots carried a
    /// membership; [`parse_wal_record`] hands it out as the new variant.
    InstallSnapshotV1(LegacySnapshotMeta),
    /// [`WalRecord::Compact`] as written before snapshots carried a
    /// membership; [`parse_wal_record`] hands it out as the new variant.
    CompactV1(LegacySnapshotMeta),
    /// A snapshot received from the leader (its file is already durable): it
    /// replaces the snapshot and discards **every** entry.
    InstallSnapshot(SnapshotMeta),
    /// A snapshot taken locally, or the current snapshot restated at the start
    /// of a segment: it replaces the snapshot and discards the entries at or
    /// below its index.
    Compact(SnapshotMeta),
}

/// A snapshot's metadata as written before it carried a membership: the
/// voters only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LegacySnapshotMeta {
    /// See [`SnapshotMeta::index`].
    pub(crate) index: raft_core::Index,
    /// See [`SnapshotMeta::term`].
    pub(crate) term: raft_core::Term,
    /// The voters (no learners, no joint configuration, no contexts then).
    pub(crate) voters: Vec<raft_core::NodeId>,
}

impl LegacySnapshotMeta {
    /// The same metadata today: the voters as the membership, with no
    /// contexts (an invalid voter list gives the empty membership, which a
    /// restart refuses in a sentence).
    pub(crate) fn upgrade(self) -> SnapshotMeta {
        let membership = raft_core::Membership::with_voters(self.voters).unwrap_or_default();
        SnapshotMeta { index: self.index, term: self.term, membership: membership.into() }
    }
}

/// The borrowing twin of [`WalRecord`], for writing without cloning entries.
/// serde encodes `&[T]` like `Vec<T>` and `&T` like `T`, so the bytes are the
/// same (a unit test pins it).
#[derive(Serialize)]
#[serde(rename = "WalRecord")]
pub(crate) enum WalRecordRef<'a> {
    /// See [`WalRecord::Begin`].
    Begin {
        /// See [`WalRecord::Begin`].
        format_version: u32,
        /// See [`WalRecord::Begin`].
        seq: u64,
    },
    /// See [`WalRecord::Entries`].
    Entries(&'a [Entry]),
    /// See [`WalRecord::HardState`].
    HardState(&'a HardState),
    /// See [`WalRecord::InstallSnapshotV1`] (never written any more; the
    /// tests write it, to read it back).
    #[cfg_attr(not(test), allow(dead_code))]
    InstallSnapshotV1(&'a LegacySnapshotMeta),
    /// See [`WalRecord::CompactV1`] (never written any more).
    #[cfg_attr(not(test), allow(dead_code))]
    CompactV1(&'a LegacySnapshotMeta),
    /// See [`WalRecord::InstallSnapshot`].
    InstallSnapshot(&'a SnapshotMeta),
    /// See [`WalRecord::Compact`].
    Compact(&'a SnapshotMeta),
}

/// Appends one framed record holding `value` to `out`. On error `out` is left
/// as it was.
pub(crate) fn push_record<T: Serialize>(
    out: &mut Vec<u8>,
    value: &T,
    what: &'static str,
    payload_bytes_max: usize,
) -> Result<(), StorageError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    if let Err(e) = codec::encode_into(value, out) {
        out.truncate(start);
        return Err(StorageError::Encode { what, reason: e.to_string() });
    }
    let len = out.len() - start - HEADER_BYTES;
    if len == 0 {
        // Cannot happen (every encoding holds at least a tag or a field), but
        // a zero length would read back as the zero fill that ends a segment.
        out.truncate(start);
        return Err(StorageError::Encode { what, reason: "the value encodes to no bytes".into() });
    }
    if len > payload_bytes_max {
        out.truncate(start);
        return Err(StorageError::TooLarge { what, bytes: len as u64, max: payload_bytes_max as u64 });
    }
    let crc = crc32c::crc32c(&out[start + HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Why the bytes at some offset are not a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BadRecord {
    /// Fewer than [`HEADER_BYTES`] bytes remain.
    ShortHeader { available: usize },
    /// A zero length: no encoded value is empty, so this is zero fill.
    ZeroLength,
    /// A length above the maximum.
    TooLong { len: usize },
    /// The payload runs past the end of the file.
    PastEnd { len: usize, available: usize },
    /// The payload does not match its checksum.
    Checksum { stored: u32, computed: u32 },
    /// The checksum matches but the payload is not a valid value.
    Undecodable { error: String },
}

impl BadRecord {
    /// Whether a crash in the middle of writing this record could explain it.
    /// An undecodable payload with a good checksum was written whole: never torn.
    pub(crate) fn may_be_torn(&self) -> bool {
        !matches!(self, BadRecord::Undecodable { .. })
    }

    /// Describes the problem as a clause, for [`StorageError::Corrupt`].
    pub(crate) fn describe(&self, what: &str) -> String {
        match self {
            BadRecord::ShortHeader { available } => {
                format!("{what} there is cut short ({available} of its {HEADER_BYTES} header bytes)")
            }
            BadRecord::ZeroLength => format!("{what} there has length 0 (zero-filled space)"),
            BadRecord::TooLong { len } => {
                format!("{what} there declares {len} bytes, above the sane maximum")
            }
            BadRecord::PastEnd { len, available } => {
                format!("{what} there declares {len} bytes but only {available} remain in the file")
            }
            BadRecord::Checksum { stored, computed } => {
                format!("{what} there failed its checksum (stored {stored:#010x}, computed {computed:#010x})")
            }
            BadRecord::Undecodable { error } => {
                format!("{what} there has a valid checksum but does not decode ({error})")
            }
        }
    }
}

/// Checks the frame at `pos` of `data`: returns the payload and the offset just
/// after the record. Does not decode the payload.
pub(crate) fn parse_frame(
    data: &[u8],
    pos: usize,
    payload_bytes_max: usize,
) -> Result<(&[u8], usize), BadRecord> {
    let available = data.len().saturating_sub(pos);
    if available < HEADER_BYTES {
        return Err(BadRecord::ShortHeader { available });
    }
    let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes")) as usize;
    let stored = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4 bytes"));
    if len == 0 {
        return Err(BadRecord::ZeroLength);
    }
    let available = available - HEADER_BYTES;
    if len > available {
        return Err(if len > payload_bytes_max {
            BadRecord::TooLong { len }
        } else {
            BadRecord::PastEnd { len, available }
        });
    }
    if len > payload_bytes_max {
        return Err(BadRecord::TooLong { len });
    }
    let payload = &data[pos + HEADER_BYTES..pos + HEADER_BYTES + len];
    let computed = crc32c::crc32c(payload);
    if computed != stored {
        return Err(BadRecord::Checksum { stored, computed });
    }
    Ok((payload, pos + HEADER_BYTES + len))
}

/// Parses and decodes the WAL record at `pos`.
pub(crate) fn parse_wal_record(data: &[u8], pos: usize) -> Result<(WalRecord, usize), BadRecord> {
    let (payload, next) = parse_frame(data, pos, RECORD_PAYLOAD_BYTES_MAX)?;
    let record =
        codec::decode::<WalRecord>(payload).map_err(|e| BadRecord::Undecodable { error: e.to_string() })?;
    let record = match record {
        WalRecord::InstallSnapshotV1(meta) => WalRecord::InstallSnapshot(meta.upgrade()),
        WalRecord::CompactV1(meta) => WalRecord::Compact(meta.upgrade()),
        other => other,
    };
    Ok((record, next))
}

/// The first offset at or after `from` where a complete, valid WAL record
/// starts, if any. Scans byte by byte, so it also finds records after a
/// damaged length field, but skips zero fill quickly: a record's length field
/// is never all zeros, so none starts more than 3 bytes before a non-zero
/// byte. Only called on the error path.
///
/// Linear in the bytes searched: a candidate is checksummed only if its
/// length fits and its first payload byte is a record tag, and the bytes
/// checksummed in all are bounded by twice the bytes searched (plus 1 MiB);
/// past that budget the search gives up with `Err`, and the caller refuses
/// to guess (junk after a damaged length once made recovery quadratic).
fn find_valid_record(data: &[u8], from: usize) -> Result<Option<usize>, SearchExhausted> {
    let Some(last_start) = data.len().checked_sub(HEADER_BYTES) else { return Ok(None) };
    let mut budget = 2 * data.len().saturating_sub(from) + (1 << 20);
    let mut q = from;
    while q <= last_start {
        let Some(nonzero) = data[q..].iter().position(|&b| b != 0) else { return Ok(None) };
        q = q.max((q + nonzero).saturating_sub(3));
        if q > last_start {
            return Ok(None);
        }
        let len = u32::from_le_bytes(data[q..q + 4].try_into().expect("4 bytes")) as usize;
        let fits = len > 0 && len <= RECORD_PAYLOAD_BYTES_MAX && len <= last_start - q;
        if fits && data[q + HEADER_BYTES] <= WAL_RECORD_TAG_MAX {
            if len > budget {
                return Err(SearchExhausted);
            }
            budget -= len;
            if parse_wal_record(data, q).is_ok() {
                return Ok(Some(q));
            }
        }
        q += 1;
    }
    Ok(None)
}

/// [`find_valid_record`] ran out of its checksum budget.
#[derive(Debug)]
struct SearchExhausted;

/// The largest first byte of an encoded [`WalRecord`]: its variant tag.
const WAL_RECORD_TAG_MAX: u8 = 4;

/// The unit a disk writes atomically, at least: a write torn by a power loss
/// leaves whole sectors unwritten.
const SECTOR_BYTES: usize = 512;

/// Whether `data[from..to]`, cut at sector boundaries (of the file), has a
/// piece that is all zeros: a sector of a preallocated segment that the write
/// of these bytes never reached. Pieces shorter than a record header (at the
/// two ends of the range) do not count: a few zero bytes occur in written
/// records, and taking damage for a torn write would drop records that may
/// have been acknowledged, while the opposite mistake only refuses to start.
fn holds_unwritten_sector(data: &[u8], from: usize, to: usize) -> bool {
    let to = to.min(data.len());
    let mut start = from;
    while start < to {
        let end = ((start / SECTOR_BYTES + 1) * SECTOR_BYTES).min(to);
        if end - start >= HEADER_BYTES && data[start..end].iter().all(|&b| b == 0) {
            return true;
        }
        start = end;
    }
    false
}

/// A torn tail from the bad record at `pos` on, up to the last non-zero byte.
fn torn_tail(data: &[u8], pos: usize, bad: BadRecord) -> SegmentEnd {
    let written_end = data.iter().rposition(|&b| b != 0).map_or(pos, |k| k + 1);
    SegmentEnd::TornTail { offset: pos as u64, written_end: written_end as u64, bad }
}

/// How a segment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SegmentEnd {
    /// The valid records end at `offset`, and only zeros follow, if anything:
    /// preallocated space not written yet.
    Clean { offset: u64 },
    /// A write torn by a crash starts at `offset` (the end of the valid
    /// records) and its last non-zero byte is just before `written_end`:
    /// everything from `offset` on is to be cut.
    TornTail { offset: u64, written_end: u64, bad: BadRecord },
}

impl SegmentEnd {
    /// Where the valid records end: the next record belongs here.
    pub(crate) fn offset(&self) -> u64 {
        match *self {
            SegmentEnd::Clean { offset } | SegmentEnd::TornTail { offset, .. } => offset,
        }
    }
}

/// Reads every record of one segment, in order, handing each to `apply` with
/// its offset, and finds where the records end.
///
/// Segments are preallocated with zeros, so the records normally end at an
/// all-zero header followed by nothing but zeros (or at the end of the file):
/// a clean end, in any segment. Anything else that is not a valid record is:
/// - in the last segment, a torn tail (a crash during an unsynced write):
///   a bad record followed by nothing valid (zeros, or later pages of the
///   same unsynced write that reached the disk before its first page, inside
///   or past the preallocated space), or a bad record with a whole unwritten
///   (all-zero) sector in it, whatever follows: the disk kept later sectors
///   of unsynced writes and lost that one, so nothing after it was durable;
///   the tail is cut from the bad record on;
/// - otherwise corruption: a bad record followed by a valid one, any bad
///   record in an earlier segment (only the last one can have been written
///   when a crash happened).
///
/// The records start at `start`; every byte before `synced_to` is known
/// durable (the segment's sync slot), so a bad record or an end of records
/// before it is damage to synced data, never a torn write.
pub(crate) fn scan_segment(
    path: &Path,
    data: &[u8],
    is_last: bool,
    start: u64,
    synced_to: u64,
    mut apply: impl FnMut(u64, WalRecord) -> Result<(), StorageError>,
) -> Result<SegmentEnd, StorageError> {
    let corrupt = |offset: usize, reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let synced = |pos: usize, what: String| {
        corrupt(
            pos,
            format!(
                "{what}, before byte {synced_to}, up to which this segment was synced: synced records \
                 (perhaps acknowledged writes) are damaged or gone, so this is no torn write; restore this \
                 node's data directory from a backup, or remove the node and add it back as a new member"
            ),
        )
    };
    let mut pos = start as usize;
    while pos < data.len() {
        match parse_wal_record(data, pos) {
            Ok((record, next)) => {
                apply(pos as u64, record)?;
                pos = next;
            }
            Err(bad) => {
                let what = "the WAL record";
                if (pos as u64) < synced_to {
                    return Err(synced(pos, bad.describe(what)));
                }
                if data[pos..].iter().all(|&b| b == 0) {
                    return Ok(SegmentEnd::Clean { offset: pos as u64 });
                }
                if !is_last {
                    return Err(corrupt(
                        pos,
                        format!(
                            "{}, in a segment that is not the last one, where no torn write can happen",
                            bad.describe(what)
                        ),
                    ));
                }
                if !bad.may_be_torn() {
                    return Err(corrupt(pos, bad.describe(what)));
                }
                // If the length field is intact, a valid record can only start
                // after the claimed end; if it is damaged, anywhere after `pos`.
                let (resume_at, length_known) = match bad {
                    BadRecord::Checksum { .. } => {
                        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes"));
                        (pos + HEADER_BYTES + len as usize, true)
                    }
                    _ => (pos + 1, false),
                };
                let found = find_valid_record(data, resume_at).map_err(|SearchExhausted| {
                    corrupt(
                        pos,
                        format!(
                            "{}, and the {} bytes after it hold too much that looks like records to tell a \
                             torn write from damage; restore this node's data directory from a backup",
                            bad.describe(what),
                            data.len() - pos
                        ),
                    )
                })?;
                if let Some(valid) = found {
                    // Valid records after a bad one: corruption, unless part
                    // of the bad record was never written. Segments are
                    // preallocated, so the disk may keep the later sectors of
                    // an unsynced write and lose an earlier one (a power
                    // loss, not a process crash); then the zeros of a sector
                    // show in the bad record, and the records after it were
                    // never durable either (an fsync that covered them would
                    // have covered it). As etcd's `isTornEntry`.
                    let bad_end = if length_known { resume_at } else { valid };
                    if holds_unwritten_sector(data, pos, bad_end) {
                        return Ok(torn_tail(data, pos, bad));
                    }
                    return Err(corrupt(
                        pos,
                        format!(
                            "{}, and a valid record follows at byte {valid}, so this is not a torn tail: \
                             the data on this disk is damaged; restore this node's data directory from a \
                             backup",
                            bad.describe(what)
                        ),
                    ));
                }
                // Non-zero bytes further on in the zero fill, with no valid
                // record among them, are the later pages of the same unsynced
                // write reaching the disk before its first page: still torn.
                return Ok(torn_tail(data, pos, bad));
            }
        }
    }
    if (pos as u64) < synced_to {
        return Err(synced(pos, "the file ends there".to_string()));
    }
    Ok(SegmentEnd::Clean { offset: pos as u64 })
}
