//! The snapshot thread: serializes the state machine and writes snapshot
//! files, and decodes and checks the snapshots a leader sends, off the event
//! loop and off the WAL thread.
//!
//! A state of 1 GiB takes about a second to serialize and two or three to
//! write and fsync. Done on the event loop, a leader sent no heartbeat for
//! that long; done on the WAL thread, every vote and append acknowledgement
//! waited behind the file. Either way the cluster held an election at every
//! snapshot (44 of them while 1 GiB was written). Here the event loop only
//! clones the store (its values are shared bytes, so this copies keys, not
//! values) and goes on; the WAL thread only appends the short record that
//! compacts the log once the file is durable.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use raft_core::{Index, NodeId, Snapshot, SnapshotMeta};
use tokio::sync::mpsc;
use tracing::debug;

use crate::storage;
use raft_kv::KvStore;

/// Work for the snapshot thread. The event loop keeps at most one job of
/// each kind in flight, so the queues (of [`JOBS_MAX`]) never fill.
pub(crate) enum SnapshotJob {
    /// Serialize this copy of the store as the snapshot described by `meta`
    /// straight into its file, and make the file durable.
    Take { kv: KvStore, meta: SnapshotMeta },
    /// Decode a snapshot from the leader in full, from the file its chunks
    /// were stored in (`received`, its bare data), and check it against its
    /// metadata; if it is good, make it this node's snapshot file.
    Check { snapshot: Snapshot, received: PathBuf },
}

/// What the snapshot thread reports.
pub(crate) enum SnapshotDone {
    /// The snapshot's file is written and synced: the log may be compacted
    /// to it.
    Taken { snapshot: Snapshot, write_ms: u64 },
    /// The snapshot at `index` could not be taken (a full disk, an encoding
    /// failure); the log is kept, and a later one is tried.
    TakeFailed { index: Index, error: String },
    /// A snapshot from the leader was decoded: the store it holds (its file
    /// written), or why it is refused.
    Checked { snapshot: Snapshot, result: Result<KvStore, String> },
}

/// Jobs (and reports) the queues hold: one take and one check.
const JOBS_MAX: usize = 2;

/// The handle the event loop keeps.
pub(crate) struct SnapshotWorker {
    jobs: SyncSender<SnapshotJob>,
}

impl SnapshotWorker {
    /// Starts the thread for node `id`, writing snapshot files into `dir`
    /// (with fsyncs unless `sync` is off) and reporting on the returned
    /// receiver.
    pub(crate) fn spawn(
        id: NodeId,
        dir: PathBuf,
        sync: bool,
        sessions_max: usize,
    ) -> std::io::Result<(SnapshotWorker, mpsc::Receiver<SnapshotDone>)> {
        let (jobs, job_rx) = sync_channel::<SnapshotJob>(JOBS_MAX);
        let (done_tx, done_rx) = mpsc::channel(JOBS_MAX);
        std::thread::Builder::new().name(format!("snapshot-{id}")).spawn(move || {
            lower_this_threads_priority(id);
            for job in job_rx {
                let done = run_job(job, &dir, sync, sessions_max);
                if done_tx.blocking_send(done).is_err() {
                    return;
                }
            }
        })?;
        Ok((SnapshotWorker { jobs }, done_rx))
    }

    /// Hands a job to the thread. The caller keeps at most one job of each
    /// kind in flight: a full queue is a bug, reported as an error.
    pub(crate) fn submit(&self, job: SnapshotJob) -> anyhow::Result<()> {
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                Err(anyhow::anyhow!("the snapshot thread's queue of {JOBS_MAX} jobs is full"))
            }
            Err(TrySendError::Disconnected(_)) => Err(anyhow::anyhow!("the snapshot thread stopped")),
        }
    }
}

/// The nice value of the snapshot thread: background work that must not
/// take the CPU from the event loop (on a busy machine, a snapshot
/// serialized at the event loop's priority still cost elections).
const SNAPSHOT_THREAD_NICE: libc::c_int = 10;

/// Lowers the calling thread's scheduling priority (Linux: a thread's nice
/// value is its own). Failing to is not worth more than a debug line.
fn lower_this_threads_priority(id: NodeId) {
    // SAFETY: gettid and setpriority take no pointers.
    let result = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, SNAPSHOT_THREAD_NICE)
    };
    if result != 0 {
        debug!(node = id, error = %std::io::Error::last_os_error(), "could not lower the snapshot thread's priority");
    }
}

fn run_job(job: SnapshotJob, dir: &Path, sync: bool, sessions_max: usize) -> SnapshotDone {
    match job {
        SnapshotJob::Take { kv, meta } => {
            let index = meta.index;
            let (written, write_ms) = crate::server::timed(|| {
                let image =
                    kv.snapshot_image().map_err(|e| format!("cannot serialize the state machine: {e}"))?;
                let data_bytes = image.len();
                storage::write_snapshot_file(dir, sync, &meta, data_bytes, ".tmp", |mut out| {
                    image.write_to(&mut out)
                })
                .map_err(|e| e.to_string())?;
                Ok::<_, String>(data_bytes)
            });
            drop(kv);
            match written {
                Ok(data_bytes) => {
                    debug!(index, bytes = data_bytes, write_ms, "snapshot file written");
                    SnapshotDone::Taken { snapshot: Snapshot { meta, data_bytes }, write_ms }
                }
                Err(error) => SnapshotDone::TakeFailed { index, error },
            }
        }
        SnapshotJob::Check { snapshot, received } => {
            let result = check_received(dir, sync, sessions_max, &snapshot, &received);
            let _ = std::fs::remove_file(&received);
            SnapshotDone::Checked { snapshot, result }
        }
    }
}

/// Decodes the bare data a leader sent (stored in `received`) into a store
/// while writing it, framed and checksummed, as this node's snapshot file;
/// the file is kept only if the store decodes whole and is at the index
/// its metadata says.
fn check_received(
    dir: &Path,
    sync: bool,
    sessions_max: usize,
    snapshot: &Snapshot,
    received: &Path,
) -> Result<KvStore, String> {
    let file =
        std::fs::File::open(received).map_err(|e| format!("cannot open {}: {e}", received.display()))?;
    let len = file.metadata().map_err(|e| format!("cannot stat {}: {e}", received.display()))?.len();
    if len != snapshot.data_bytes {
        return Err(format!("{len} bytes were stored of a snapshot of {}", snapshot.data_bytes));
    }
    let index = snapshot.meta.index;
    let mut kv = KvStore::new(sessions_max);
    let mut problem = None;
    let written = storage::write_snapshot_file(dir, sync, &snapshot.meta, len, ".recv.tmp", |out| {
        let mut tee = Tee { input: std::io::BufReader::with_capacity(1 << 20, file), copy: out };
        let restored = match kv.restore_from(&mut tee) {
            Ok(()) if kv.applied() != index => {
                Err(format!("its state is at index {} but its metadata says {index}", kv.applied()))
            }
            Ok(()) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        restored.map_err(|e| {
            problem = Some(e.clone());
            std::io::Error::other(e)
        })
    });
    match (written, problem) {
        (_, Some(problem)) => Err(problem),
        (Err(e), None) => Err(format!("cannot keep it: {e}")),
        (Ok(()), None) => Ok(kv),
    }
}

/// Copies what is read through it to `copy`.
struct Tee<'w, R> {
    input: R,
    copy: &'w mut dyn Write,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}
