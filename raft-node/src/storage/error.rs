//! What can go wrong with durable storage, as one error type.
//!
//! Every variant's message is one sentence that names the file (where there
//! is one) and says what to do about it.

use std::path::PathBuf;

use raft_core::Index;

/// A storage failure.
///
/// [`StorageError::Io`] and [`StorageError::Corrupt`] come from the disk; the
/// other variants are refusals of a request that cannot be honoured. After an
/// `Io` error from a write path ([`Storage::append`](super::Storage::append),
/// [`Storage::sync`](super::Storage::sync),
/// [`Storage::save_snapshot`](super::Storage::save_snapshot)) the storage is
/// stopped and every later write returns [`StorageError::Stopped`]: a failed
/// write or fsync cannot be retried safely, so the node must restart and
/// recover from what is durable.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An operating-system call failed (disk full, permissions, hardware).
    #[error("could not {op} {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What was being done, as a verb phrase ("write", "fdatasync", ...).
        op: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The disk is full (or the quota reached) while making a new segment or
    /// a snapshot file: nothing in the WAL changed, and the same write can
    /// be tried again once space is freed. Not fatal.
    #[error(
        "no space left on the disk to {op} {}: {source}; free space there (writes resume by themselves)",
        path.display()
    )]
    NoSpace {
        /// The file that could not be made.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Durable data is damaged somewhere other than a torn tail, so it cannot
    /// be trusted: start-up stops rather than silently losing data.
    #[error(
        "{} is corrupt at byte {offset}: {reason}; restore this node's data directory from a backup or \
         a replica, or remove it so that the node rejoins the cluster empty",
        path.display()
    )]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// The byte offset of the damaged record in that file.
        offset: u64,
        /// What is wrong there, as a clause.
        reason: String,
    },
    /// An earlier write or fsync failed; the storage refuses every further
    /// write (fail-stop).
    #[error(
        "storage refuses writes after an earlier failure ({cause}); stop the node and restart it so that \
         it recovers from what is durable"
    )]
    Stopped {
        /// The first failure, as text.
        cause: String,
    },
    /// A [`PersistBatch`](raft_core::PersistBatch) that would leave a hole or
    /// disorder in the log (a driver bug); nothing was written.
    #[error("refused to persist an invalid batch: {reason}; this is a bug in the caller")]
    InvalidBatch {
        /// What is wrong with the batch.
        reason: String,
    },
    /// A record or snapshot too large to be decoded again; nothing was written.
    #[error("refused to write {what} of {bytes} bytes, above the {max}-byte limit; shrink it")]
    TooLarge {
        /// What was too large ("a WAL record", "a snapshot").
        what: &'static str,
        /// Its encoded size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// [`Storage::save_snapshot`](super::Storage::save_snapshot) with an index
    /// that is not past the current snapshot; nothing was written.
    #[error("refused a snapshot at index {index}: the log is already compacted to index {current}")]
    StaleSnapshot {
        /// The refused snapshot's index.
        index: Index,
        /// The current snapshot's index.
        current: Index,
    },
    /// A value could not be encoded (should not happen for raft-core types).
    #[error("could not encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The codec's message.
        reason: String,
    },
}

impl StorageError {
    /// Builds a closure mapping an `io::Error` to [`StorageError::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StorageError::Io { path, op, source }
    }

    /// Whether this error leaves the storage in an unknown on-disk state, so
    /// that further writes must be refused.
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(self, StorageError::Io { .. })
    }

    /// Whether this is a full disk, after which the same write may be tried
    /// again once space is freed.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StorageError::NoSpace { .. })
    }

    /// An [`StorageError::Io`] error that says the disk is full (`ENOSPC`,
    /// `EDQUOT`) as [`StorageError::NoSpace`]. Only for writes that change
    /// nothing the WAL relies on when they fail (a new file).
    pub(crate) fn no_space_is_not_fatal(self) -> Self {
        match self {
            StorageError::Io { path, op, source }
                if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) =>
            {
                StorageError::NoSpace { path, op, source }
            }
            other => other,
        }
    }
}
