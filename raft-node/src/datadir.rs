//! What a data directory knows about itself: whose it is (an identity file
//! written at bootstrap and checked at every start) and who is using it (an
//! exclusive lock held while a node runs).
//!
//! - `LOCK`: taken with `flock(LOCK_EX | LOCK_NB)` before anything else is
//!   read; it holds the pid of the node holding it, so that a second process
//!   is refused with a sentence naming the first. The kernel releases the
//!   lock when the process dies, however it dies: a stale `LOCK` file from a
//!   killed node never blocks a restart.
//! - `identity.json`: the cluster id, this node's id, the membership the
//!   cluster was bootstrapped with (this node included) and, once this node
//!   has learned it from the log, the cluster token that tells apart two
//!   clusters bootstrapped with the same flags. Written to a temporary file,
//!   fsynced and renamed, then the directory is fsynced.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use raft_core::NodeId;
use raft_kv::describe_token;
use serde::{Deserialize, Serialize};

/// Name of the lock file inside a data directory.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the identity file inside a data directory.
pub const IDENTITY_FILE: &str = "identity.json";
/// Version of the identity file's format.
pub const IDENTITY_FORMAT: u32 = 1;

/// An exclusive lock on a data directory, released when dropped (or when
/// the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Creates `dir` if needed and locks it for this process. Refused in one
/// sentence naming the holder's pid when another process holds it.
pub fn lock(dir: &Path) -> Result<DataDirLock, String> {
    fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    // SAFETY: flock on a file descriptor this function owns; no memory is shared.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() { "unknown".to_string() } else { holder.to_string() };
            return Err(format!(
                "the data directory {} is in use by another raft-node (pid {holder}); stop that process \
                 or give this one another --data-dir",
                dir.display()
            ));
        }
        return Err(format!("cannot lock {}: {error}", path.display()));
    }
    let write_pid = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "{}", std::process::id())
    };
    write_pid(&mut file).map_err(|e| format!("cannot write the lock file {}: {e}", path.display()))?;
    Ok(DataDirLock { _file: file })
}

/// Whose a data directory is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// [`IDENTITY_FORMAT`].
    pub format: u32,
    /// The cluster id (`--cluster-id`).
    pub cluster_id: String,
    /// This node's id (`--id`).
    pub node_id: NodeId,
    /// The members the cluster was bootstrapped with, this node included,
    /// with the addresses given then.
    pub members: BTreeMap<NodeId, String>,
    /// The cluster token once learned from the log (16 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_token: Option<String>,
    /// Started with `--join`: this node founds nothing; it waits to be added
    /// to a running cluster, and learns the membership from its leader.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub join: bool,
}

/// What a node was started with, to check against its data directory.
#[derive(Clone, Debug)]
pub struct StartFlags<'a> {
    /// `--cluster-id`.
    pub cluster_id: &'a str,
    /// `--id`.
    pub node_id: NodeId,
    /// This node and its `--peers`, with their addresses.
    pub members: &'a BTreeMap<NodeId, String>,
}

impl Identity {
    /// The identity of a data directory bootstrapped with these flags.
    pub fn bootstrap(flags: &StartFlags<'_>) -> Identity {
        Identity {
            format: IDENTITY_FORMAT,
            cluster_id: flags.cluster_id.to_string(),
            node_id: flags.node_id,
            members: flags.members.clone(),
            cluster_token: None,
            join: false,
        }
    }

    /// The identity of a data directory of a node started with `--join`.
    pub fn joining(flags: &StartFlags<'_>) -> Identity {
        Identity { join: true, ..Identity::bootstrap(flags) }
    }

    /// Reads `dir`'s identity; `None` if it has none.
    pub fn load(dir: &Path) -> Result<Option<Identity>, String> {
        let path = dir.join(IDENTITY_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let identity: Identity = serde_json::from_str(&text).map_err(|e| {
            format!("{} is damaged ({e}); restore it from a backup or recreate this member", path.display())
        })?;
        if identity.format != IDENTITY_FORMAT {
            return Err(format!(
                "{} has format {} but this raft-node reads format {IDENTITY_FORMAT}; run a matching version",
                path.display(),
                identity.format
            ));
        }
        identity.token().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Some(identity))
    }

    /// The cluster token, 0 if not known yet.
    pub fn token(&self) -> Result<u64, String> {
        match &self.cluster_token {
            None => Ok(0),
            Some(hex) => u64::from_str_radix(hex, 16)
                .ok()
                .filter(|&t| t != 0)
                .ok_or_else(|| format!("cluster token `{hex}` is not 16 hex digits")),
        }
    }

    /// Records the cluster token.
    pub fn set_token(&mut self, token: u64) {
        self.cluster_token = Some(describe_token(token));
    }

    /// Writes the identity durably (temporary file, fsync, rename, directory fsync).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join(IDENTITY_FILE);
        let tmp: PathBuf = dir.join(format!("{IDENTITY_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        {
            let mut file = File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    }

    /// Checks the flags a node was started with against this identity: a
    /// directory of another cluster or another node is refused, in one
    /// sentence naming both values and what to do. (`--peers` is not
    /// checked here: the membership lives in the log, which wins over the
    /// flags; the node reports a `--peers` that disagrees with it.)
    pub fn check(&self, flags: &StartFlags<'_>, dir: &Path) -> Result<(), String> {
        let dir = dir.display();
        if flags.cluster_id != self.cluster_id {
            return Err(format!(
                "the data directory {dir} belongs to cluster `{}` but this node was started with \
                 --cluster-id `{}`; start it with --cluster-id {} or give it another --data-dir",
                self.cluster_id, flags.cluster_id, self.cluster_id
            ));
        }
        if flags.node_id != self.node_id {
            return Err(format!(
                "the data directory {dir} belongs to node {} but this node was started with --id {}; \
                 start it with --id {} or give it another --data-dir",
                self.node_id, flags.node_id, self.node_id
            ));
        }
        Ok(())
    }
}

/// True if `dir` holds WAL segments or snapshots (a node's data, with or
/// without an identity file).
pub fn holds_raft_data(dir: &Path) -> std::io::Result<bool> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if (name.starts_with("wal-") && name.ends_with(".log")) || name.starts_with("snap-") {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[NodeId]) -> BTreeMap<NodeId, String> {
        ids.iter().map(|&id| (id, format!("127.0.0.1:{}", 8000 + id))).collect()
    }

    #[test]
    fn an_identity_survives_a_save_and_load_with_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let m = members(&[1, 2, 3]);
        let mut identity = Identity::bootstrap(&StartFlags { cluster_id: "c", node_id: 1, members: &m });
        identity.set_token(0xfeed);
        identity.save(dir.path()).unwrap();
        let loaded = Identity::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded, identity);
        assert_eq!(loaded.token().unwrap(), 0xfeed);
    }

    #[test]
    fn another_cluster_or_node_id_is_refused_naming_both_values_and_peers_are_not_checked() {
        let dir = Path::new("d");
        let m = members(&[1, 2, 3]);
        let identity = Identity::bootstrap(&StartFlags { cluster_id: "a", node_id: 1, members: &m });
        let e = identity.check(&StartFlags { cluster_id: "b", node_id: 1, members: &m }, dir).unwrap_err();
        assert!(e.contains("cluster `a`") && e.contains("`b`"), "{e}");
        let m2 = members(&[2, 1, 3]);
        let e = identity.check(&StartFlags { cluster_id: "a", node_id: 2, members: &m2 }, dir).unwrap_err();
        assert!(e.contains("belongs to node 1") && e.contains("--id 2"), "{e}");
        // The membership lives in the log: other peers, or none, are the
        // node's to report, not a refusal.
        for others in [members(&[1]), members(&[1, 2, 4, 5])] {
            identity.check(&StartFlags { cluster_id: "a", node_id: 1, members: &others }, dir).unwrap();
        }
    }

    #[test]
    fn a_second_lock_on_a_data_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in
        // the same process conflicts as another process would.
        let e = lock(dir.path()).unwrap_err();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        lock(dir.path()).unwrap();
    }
}
