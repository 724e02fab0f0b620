//! Snapshot files: written as a stream, read back in ranges or as a stream,
//! so that a snapshot of any size never sits whole in memory.
//!
//! A file of format 3 is `SNAPSHOT_MAGIC`, a header record (the metadata and
//! the data's length), then the data in records of [`SNAPSHOT_CHUNK_BYTES`]
//! (the last one shorter), each `[len: u32 LE][crc32c: u32 LE][bytes]`.
//! Every record but the last has the same length, so the record holding any
//! byte of the data is found by arithmetic: a leader reads the range it
//! sends with one positioned read, checksums included. Format 2 has the same
//! records and an older header; format 1 (one record holding the whole
//! encoded snapshot, below the decode limit) is read into memory.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raft_codec as codec;
use raft_core::SnapshotMeta;

use super::record::{self, push_record, HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX, SNAPSHOT_PAYLOAD_BYTES_MAX};
use super::{snapshot_name, sync_dir, StorageError};

/// The first bytes of a snapshot file of format 3: records that stream the
/// snapshot (a header, then its data in chunks), so that it may be of any
/// size. 0xff can never start a format-1 file (one record of at most 63 MiB:
/// its little-endian length would be above 1.3 GB).
pub(super) const SNAPSHOT_MAGIC: [u8; 8] = *b"\xffRLSNAP3";

/// Format 2: the same records, but a header whose metadata holds voters,
/// not a membership (still read).
pub(super) const SNAPSHOT_MAGIC_2: [u8; 8] = *b"\xffRLSNAP2";

/// Bytes of snapshot data per record of a snapshot file.
pub(super) const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// The header record of a format-3 snapshot file.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotFileHeader {
    meta: SnapshotMeta,
    data_bytes: u64,
}

/// The header record of a format-2 snapshot file.
#[derive(serde::Deserialize)]
struct SnapshotFileHeaderV2 {
    meta: record::LegacySnapshotMeta,
    data_bytes: u64,
}

/// A format-1 snapshot file's one record.
#[derive(serde::Deserialize)]
pub(super) struct SnapshotV1 {
    pub(super) meta: record::LegacySnapshotMeta,
    pub(super) data: serde_bytes::ByteBuf,
}

/// Writes the snapshot `meta` durably to its file in the data directory
/// `dir`: a temporary file (named with `temp_suffix`, so that two writers
/// of the same index never share one), fsync, rename, fsync of the
/// directory (no fsync with `sync` off). `write_data` writes exactly
/// `data_bytes` bytes of data to the writer it is given; they are framed in
/// checksummed records of 1 MiB on the way, so any size fits and none of it
/// is held. If `write_data` fails, or writes another number of bytes, the
/// temporary file is removed and nothing is renamed. A full disk is
/// [`StorageError::NoSpace`].
pub fn write_snapshot_file(
    dir: &Path,
    sync: bool,
    meta: &SnapshotMeta,
    data_bytes: u64,
    temp_suffix: &str,
    write_data: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), StorageError> {
    let path = dir.join(snapshot_name(meta.index));
    let temp = dir.join(format!("{}{temp_suffix}", snapshot_name(meta.index)));
    let written = (|| {
        let file = File::create(&temp).map_err(StorageError::io("create", &temp))?;
        let mut out = BufWriter::with_capacity(SNAPSHOT_CHUNK_BYTES + 64, file);
        out.write_all(&SNAPSHOT_MAGIC).map_err(StorageError::io("write", &temp))?;
        let mut header = Vec::new();
        let header_value = SnapshotFileHeader { meta: meta.clone(), data_bytes };
        push_record(&mut header, &header_value, "a snapshot header", RECORD_PAYLOAD_BYTES_MAX)?;
        out.write_all(&header).map_err(StorageError::io("write", &temp))?;
        let mut records = RecordWriter { out, chunk: Vec::with_capacity(SNAPSHOT_CHUNK_BYTES), written: 0 };
        write_data(&mut records).map_err(StorageError::io("write the snapshot's data to", &temp))?;
        records.flush_chunk().map_err(StorageError::io("write", &temp))?;
        if records.written != data_bytes {
            return Err(StorageError::Encode {
                what: "a snapshot",
                reason: format!(
                    "{} bytes of data were written where {data_bytes} were announced",
                    records.written
                ),
            });
        }
        let file = records.out.into_inner().map_err(|e| StorageError::io("write", &temp)(e.into_error()))?;
        if sync {
            file.sync_all().map_err(StorageError::io("fsync", &temp))?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e.no_space_is_not_fatal());
    }
    fs::rename(&temp, &path).map_err(StorageError::io("rename into place", &temp))?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Frames the bytes written to it in records of [`SNAPSHOT_CHUNK_BYTES`].
struct RecordWriter<W: Write> {
    out: W,
    chunk: Vec<u8>,
    written: u64,
}

impl<W: Write> RecordWriter<W> {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        self.out.write_all(&(self.chunk.len() as u32).to_le_bytes())?;
        self.out.write_all(&crc32c::crc32c(&self.chunk).to_le_bytes())?;
        self.out.write_all(&self.chunk)?;
        self.chunk.clear();
        Ok(())
    }
}

impl<W: Write> Write for RecordWriter<W> {
    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len();
        while !bytes.is_empty() {
            let room = SNAPSHOT_CHUNK_BYTES - self.chunk.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.chunk.extend_from_slice(now);
            if self.chunk.len() == SNAPSHOT_CHUNK_BYTES {
                self.flush_chunk()?;
            }
            bytes = rest;
        }
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where a snapshot file's data is.
#[derive(Debug)]
enum Data {
    /// In records from `start` on (formats 2 and 3).
    Records { file: File, start: u64 },
    /// In memory (format 1, at most 63 MiB).
    Memory(Vec<u8>),
}

/// An open snapshot file whose header was checked: its data can be read in
/// ranges (to send) or as a stream (to restore from), its checksums checked
/// on the way.
#[derive(Debug)]
pub struct SnapshotFile {
    path: PathBuf,
    meta: SnapshotMeta,
    data_bytes: u64,
    data: Data,
}

impl SnapshotFile {
    /// Opens the snapshot file for `meta` in `dir` and checks its header
    /// against `meta` and its length against the header: a missing,
    /// truncated or mismatched file is [`StorageError::Corrupt`].
    pub fn open(dir: &Path, meta: &SnapshotMeta) -> Result<SnapshotFile, StorageError> {
        let path = dir.join(snapshot_name(meta.index));
        let file = SnapshotFile::open_path(&path).map_err(|e| match e {
            StorageError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                StorageError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: format!("the snapshot file the WAL refers to (index {}) is missing", meta.index),
                }
            }
            other => other,
        })?;
        if file.meta != *meta {
            return Err(StorageError::Corrupt {
                path,
                offset: HEADER_BYTES as u64,
                reason: format!("the snapshot holds {:?} but the WAL recorded {meta:?}", file.meta),
            });
        }
        Ok(file)
    }

    /// Opens the snapshot file at `path` and checks its header and length.
    pub(super) fn open_path(path: &Path) -> Result<SnapshotFile, StorageError> {
        let corrupt =
            |offset: u64, reason: String| StorageError::Corrupt { path: path.to_path_buf(), offset, reason };
        let mut file = File::open(path).map_err(StorageError::io("open", path))?;
        let file_bytes = file.metadata().map_err(StorageError::io("stat", path))?.len();
        let mut magic = [0u8; 8];
        let got = read_up_to(&mut file, &mut magic).map_err(StorageError::io("read", path))?;
        if got < magic.len() || (magic != SNAPSHOT_MAGIC && magic != SNAPSHOT_MAGIC_2) {
            // Format 1: one record, read whole.
            let mut bytes = magic[..got].to_vec();
            file.read_to_end(&mut bytes).map_err(StorageError::io("read", path))?;
            let (payload, end) = record::parse_frame(&bytes, 0, SNAPSHOT_PAYLOAD_BYTES_MAX)
                .map_err(|bad| corrupt(0, bad.describe("the snapshot record")))?;
            if end != bytes.len() {
                return Err(corrupt(
                    end as u64,
                    format!("{} unexpected bytes follow the snapshot", bytes.len() - end),
                ));
            }
            let old: SnapshotV1 = codec::decode(payload)
                .map_err(|e| corrupt(HEADER_BYTES as u64, format!("the snapshot does not decode ({e})")))?;
            let data = old.data.into_vec();
            return Ok(SnapshotFile {
                path: path.to_path_buf(),
                meta: old.meta.upgrade(),
                data_bytes: data.len() as u64,
                data: Data::Memory(data),
            });
        }
        // The header record: its length, then the record itself.
        let pos = magic.len();
        let mut head = [0u8; HEADER_BYTES];
        file.read_exact(&mut head)
            .map_err(|_| corrupt(pos as u64, "the snapshot header is cut short".into()))?;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        if len > RECORD_PAYLOAD_BYTES_MAX {
            return Err(corrupt(pos as u64, format!("the snapshot header declares {len} bytes")));
        }
        let mut header_record = head.to_vec();
        header_record.resize(HEADER_BYTES + len, 0);
        file.read_exact(&mut header_record[HEADER_BYTES..])
            .map_err(|_| corrupt(pos as u64, "the snapshot header is cut short".into()))?;
        let (payload, next) = record::parse_frame(&header_record, 0, RECORD_PAYLOAD_BYTES_MAX)
            .map_err(|bad| corrupt(pos as u64, bad.describe("the snapshot header")))?;
        let undecodable = |e| corrupt(pos as u64, format!("the snapshot header does not decode ({e})"));
        let header: SnapshotFileHeader = if magic == SNAPSHOT_MAGIC {
            codec::decode(payload).map_err(undecodable)?
        } else {
            let old: SnapshotFileHeaderV2 = codec::decode(payload).map_err(undecodable)?;
            SnapshotFileHeader { meta: old.meta.upgrade(), data_bytes: old.data_bytes }
        };
        let start = (pos + next) as u64;
        let records = header.data_bytes.div_ceil(SNAPSHOT_CHUNK_BYTES as u64);
        let expected = start + records * HEADER_BYTES as u64 + header.data_bytes;
        if file_bytes != expected {
            return Err(corrupt(
                start,
                format!(
                    "the file holds {file_bytes} bytes where its header's {} bytes of data make {expected}",
                    header.data_bytes
                ),
            ));
        }
        Ok(SnapshotFile {
            path: path.to_path_buf(),
            meta: header.meta,
            data_bytes: header.data_bytes,
            data: Data::Records { file, start },
        })
    }

    /// The snapshot's metadata.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// The length of the snapshot's data, in bytes.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// The `len` bytes of data at `offset`, each record they touch read
    /// with one positioned read and its checksum checked.
    pub fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        let end = offset.checked_add(len).filter(|&end| end <= self.data_bytes).ok_or_else(|| {
            StorageError::Corrupt {
                path: self.path.clone(),
                offset: 0,
                reason: format!("bytes {offset}+{len} asked of a snapshot of {} bytes", self.data_bytes),
            }
        })?;
        let (file, start) = match &self.data {
            Data::Memory(data) => return Ok(data[offset as usize..end as usize].to_vec()),
            Data::Records { file, start } => (file, *start),
        };
        let chunk = SNAPSHOT_CHUNK_BYTES as u64;
        let mut out = Vec::with_capacity(len as usize);
        let mut record = Vec::new();
        let mut at = offset;
        while at < end {
            let k = at / chunk;
            let data_in_record = chunk.min(self.data_bytes - k * chunk);
            let record_at = start + k * (chunk + HEADER_BYTES as u64);
            record.resize(HEADER_BYTES + data_in_record as usize, 0);
            file.read_exact_at(&mut record, record_at).map_err(StorageError::io("read", &self.path))?;
            let payload = self.check_record(&record, record_at, data_in_record)?;
            let from = (at - k * chunk) as usize;
            let to = ((end - k * chunk).min(data_in_record)) as usize;
            out.extend_from_slice(&payload[from..to]);
            at = k * chunk + to as u64;
        }
        Ok(out)
    }

    /// Checks one data record read whole: its length and its checksum.
    fn check_record<'r>(
        &self,
        record: &'r [u8],
        at: u64,
        expected_len: u64,
    ) -> Result<&'r [u8], StorageError> {
        let len = u32::from_le_bytes(record[..4].try_into().expect("4 bytes")) as u64;
        let corrupt = |reason: String| StorageError::Corrupt { path: self.path.clone(), offset: at, reason };
        if len != expected_len {
            return Err(corrupt(format!(
                "a snapshot data record declares {len} bytes where {expected_len} belong"
            )));
        }
        let (payload, _) = record::parse_frame(record, 0, SNAPSHOT_CHUNK_BYTES)
            .map_err(|bad| corrupt(bad.describe("the snapshot data record")))?;
        Ok(payload)
    }

    /// The data as a stream, one record (1 MiB) at a time, checksums
    /// checked; damage is an [`std::io::ErrorKind::InvalidData`] error that
    /// says where.
    pub fn into_reader(self) -> SnapshotReader {
        SnapshotReader { file: self, next_record: 0, buf: Vec::new(), pos: 0 }
    }
}

/// [`SnapshotFile::into_reader`].
#[derive(Debug)]
pub struct SnapshotReader {
    file: SnapshotFile,
    next_record: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for SnapshotReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            let chunk = SNAPSHOT_CHUNK_BYTES as u64;
            let offset = self.next_record * chunk;
            if offset >= self.file.data_bytes {
                return Ok(0);
            }
            let len = chunk.min(self.file.data_bytes - offset);
            self.buf = self.file.read_range(offset, len).map_err(|e| match e {
                StorageError::Io { source, .. } => source,
                other => std::io::Error::new(std::io::ErrorKind::InvalidData, other.to_string()),
            })?;
            self.pos = 0;
            self.next_record += 1;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
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

/// The snapshot a leader is sending this node, stored chunk by chunk in
/// `snap-<index>.bin.recv` as its bare data, in the order the core hands
/// the chunks out (offset 0 starts one afresh). Nothing of it is trusted:
/// [`IncomingSnapshot::finish`] hands the file to the check.
#[derive(Debug)]
pub struct IncomingSnapshot {
    meta: SnapshotMeta,
    path: PathBuf,
    file: File,
    written: u64,
    /// The first write that failed (a full disk): the check will refuse it.
    failed: Option<String>,
}

impl IncomingSnapshot {
    /// Stores the chunk at `offset` of the snapshot `meta`. `current` is
    /// the one being received, if any: offset 0 replaces it (its file
    /// removed), a chunk of another snapshot, or out of order, is ignored.
    /// Returns the error of a write that failed (reported once).
    pub fn save(
        current: &mut Option<IncomingSnapshot>,
        dir: &Path,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
    ) -> Option<String> {
        if offset == 0 {
            if let Some(old) = current.take() {
                let _ = fs::remove_file(&old.path);
            }
            let path = dir.join(format!("{}.recv", snapshot_name(meta.index)));
            match File::create(&path) {
                Ok(file) => {
                    *current =
                        Some(IncomingSnapshot { meta: meta.clone(), path, file, written: 0, failed: None })
                }
                Err(e) => return Some(format!("could not create {}: {e}", path.display())),
            }
        }
        let incoming = current.as_mut().filter(|s| s.meta == *meta && s.written == offset)?;
        if incoming.failed.is_some() {
            return None;
        }
        match incoming.file.write_all_at(data, offset) {
            Ok(()) => {
                incoming.written += data.len() as u64;
                None
            }
            Err(e) => {
                let error = format!("could not write {}: {e}", incoming.path.display());
                incoming.failed = Some(error.clone());
                Some(error)
            }
        }
    }

    /// The snapshot `meta` is complete: its file, renamed `.check` (so that
    /// a new snapshot's chunks never write into it), for the check; or why
    /// it cannot be checked (no such snapshot received, a write failed).
    pub fn finish(current: &mut Option<IncomingSnapshot>, meta: &SnapshotMeta) -> Result<PathBuf, String> {
        let Some(incoming) = current.take_if(|s| s.meta == *meta) else {
            return Err(format!("no chunks of the snapshot at index {} were stored", meta.index));
        };
        if let Some(error) = incoming.failed {
            let _ = fs::remove_file(&incoming.path);
            return Err(error);
        }
        let check = incoming.path.with_extension("check");
        fs::rename(&incoming.path, &check)
            .map_err(|e| format!("could not rename {}: {e}", incoming.path.display()))?;
        Ok(check)
    }
}
