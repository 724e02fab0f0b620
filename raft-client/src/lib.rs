//! # raft-client
//!
//! A client for a Raft Lite cluster. It finds the leader (trying known nodes
//! and following `NotLeader` hints), retries with backoff within a deadline,
//! and keeps one session (`client_id`, increasing `seq`) so that a retried
//! write is applied exactly once.

pub mod bench;

use std::time::{Duration, Instant};

use raft_core::{Index, MembershipChange, NodeId};
use raft_kv::{
    ClientRequest, ClientResponse, Command, LogEntryView, MemberView, NodeStatus, RequestKind, ResponseKind,
    WriteLimits, WriteOp, WriteResult,
};
use raft_net::transport::{self, FramedStream, NetError};
use raft_net::wire::Sender;

/// The addresses `raft-node cluster` uses by default.
pub const DEFAULT_CLUSTER: &str = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003";
/// The default cluster id of `raft-node`.
pub const DEFAULT_CLUSTER_ID: &str = "raft-lite";

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No node answered usefully within the deadline.
    #[error("no answer within {timeout:?} (last problem: {last}); check that a majority of the cluster is running and reachable")]
    Timeout {
        /// The deadline.
        timeout: Duration,
        /// The last error seen.
        last: String,
    },
    /// A node refused the connection's hello (wrong cluster id or version).
    #[error("{addr} refused the connection: {reason}")]
    Refused {
        /// The node.
        addr: String,
        /// Its reason.
        reason: String,
    },
    /// The node answered with an error.
    #[error("{0}")]
    Server(String),
    /// The request is refused for good (by this client before sending, or
    /// by the node): retrying cannot help.
    #[error("{0}")]
    Invalid(String),
    /// No addresses were given.
    #[error("no cluster addresses given; pass --cluster HOST:PORT,... or set RAFT_CLUSTER")]
    NoAddresses,
}

/// Why one attempt at a request failed.
#[derive(Debug)]
struct Attempt {
    error: NetError,
    /// Whether the request may have reached the node (it was being sent
    /// or had been sent): a node that got it may act on it.
    sent: bool,
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Node addresses, `host:port`.
    pub cluster: Vec<String>,
    /// The cluster id the nodes expect.
    pub cluster_id: String,
    /// Deadline of one operation, retries included.
    pub timeout: Duration,
    /// The largest key and value a write may carry: checked before sending
    /// (the node checks its own limits too).
    pub limits: WriteLimits,
}

impl ClientConfig {
    /// Parses a comma-separated address list.
    pub fn new(cluster: &str, cluster_id: &str, timeout: Duration) -> ClientConfig {
        ClientConfig {
            cluster: cluster.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            cluster_id: cluster_id.to_string(),
            timeout,
            limits: WriteLimits::default(),
        }
    }
}

/// A client session with a cluster.
pub struct Client {
    config: ClientConfig,
    client_id: u64,
    seq: u64,
    next_request_id: u64,
    /// The node to try next: a leader hint, or one of the configured nodes.
    target: String,
    rotation: usize,
    conn: Option<(String, FramedStream)>,
}

pub(crate) fn fresh_client_id() -> u64 {
    // Unique enough across processes: time, pid and an address-space nonce.
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let nonce = &nanos as *const u64 as u64;
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ nonce.rotate_left(17);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x | 1
}

impl Client {
    /// A client with a fresh session id.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let target = config.cluster.first().cloned().ok_or(ClientError::NoAddresses)?;
        Ok(Client {
            config,
            client_id: fresh_client_id(),
            seq: 0,
            next_request_id: 1,
            target,
            rotation: 0,
            conn: None,
        })
    }

    /// The session id.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The node this client talks to now.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Sets `key` to `value`.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<WriteResult, ClientError> {
        self.write(WriteOp::Put { key: key.to_vec(), value: value.to_vec() }).await
    }

    /// Deletes `key`.
    pub async fn delete(&mut self, key: &[u8]) -> Result<WriteResult, ClientError> {
        self.write(WriteOp::Delete { key: key.to_vec() }).await
    }

    /// Sets `key` to `new` if it holds `expected` (`None`: absent).
    pub async fn cas(
        &mut self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<WriteResult, ClientError> {
        self.write(WriteOp::Cas {
            key: key.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.to_vec(),
        })
        .await
    }

    /// Reads `key`: linearizably from the leader, or from any node if `stale`.
    pub async fn get(&mut self, key: &[u8], stale: bool) -> Result<Option<Vec<u8>>, ClientError> {
        match self.call(RequestKind::Get { key: key.to_vec(), stale }).await? {
            ResponseKind::Value { value, .. } => Ok(value),
            other => Err(ClientError::Server(format!("unexpected answer {other:?}"))),
        }
    }

    /// Applies one write exactly once: the sequence number is fixed before the
    /// first attempt and reused by every retry.
    pub async fn write(&mut self, op: WriteOp) -> Result<WriteResult, ClientError> {
        self.config.limits.check(&op).map_err(ClientError::Invalid)?;
        self.seq += 1;
        let command = Command { client_id: self.client_id, seq: self.seq, op };
        match self.call(RequestKind::Write(command)).await? {
            ResponseKind::Written { result, .. } => Ok(result),
            other => Err(ClientError::Server(format!("unexpected answer {other:?}"))),
        }
    }

    /// Every member as the leader sees it: id, address, voter or learner,
    /// match index and lag.
    pub async fn members(&mut self) -> Result<Vec<MemberView>, ClientError> {
        match self.call(RequestKind::Members).await? {
            ResponseKind::Members(members) => Ok(members),
            other => Err(ClientError::Server(format!("unexpected answer {other:?}"))),
        }
    }

    /// Changes the membership through the leader; returns the index of the
    /// configuration entry once it is committed. Not retried once the
    /// leader took it (a change whose fate is unknown could apply twice):
    /// an answer other than success is the error.
    pub async fn change_members(&mut self, change: MembershipChange) -> Result<Index, ClientError> {
        match self.call_once(RequestKind::ChangeMembers(change)).await? {
            ResponseKind::MembersChanged { index } => Ok(index),
            ResponseKind::Unknown { reason } | ResponseKind::Error { message: reason } => {
                Err(ClientError::Server(reason))
            }
            other => Err(ClientError::Server(format!("unexpected answer {other:?}"))),
        }
    }

    /// Hands leadership to `to`; returns once `to` leads.
    pub async fn transfer_leader(&mut self, to: NodeId) -> Result<NodeId, ClientError> {
        match self.call_once(RequestKind::TransferLeader { to }).await? {
            ResponseKind::LeaderTransferred { leader } => Ok(leader),
            ResponseKind::Unknown { reason } | ResponseKind::Error { message: reason } => {
                Err(ClientError::Server(reason))
            }
            other => Err(ClientError::Server(format!("unexpected answer {other:?}"))),
        }
    }

    /// Sends `kind` to the leader, retrying only until a leader answers
    /// (not after an `Unknown` or an `Error` from it).
    async fn call_once(&mut self, kind: RequestKind) -> Result<ResponseKind, ClientError> {
        self.call_with(kind, false).await
    }

    /// Sends `kind` to the leader, retrying until a final answer or the deadline.
    async fn call(&mut self, kind: RequestKind) -> Result<ResponseKind, ClientError> {
        self.call_with(kind, true).await
    }

    async fn call_with(
        &mut self,
        kind: RequestKind,
        retry_answers: bool,
    ) -> Result<ResponseKind, ClientError> {
        let deadline = Instant::now() + self.config.timeout;
        // Short and capped low: an election takes 150-300 ms by default, and a
        // client that sleeps long past it adds its sleep to every failover.
        let mut backoff = Duration::from_millis(5);
        let mut last = String::from("no attempt made");
        while Instant::now() < deadline {
            match self.attempt(&kind, deadline).await {
                Ok(ResponseKind::NotLeader { leader: Some((_, addr)) }) if addr != self.target => {
                    last = format!("{} is not the leader", self.target);
                    self.retarget(Some(addr));
                    continue;
                }
                Ok(ResponseKind::NotLeader { .. }) => {
                    last = format!("{} knows no leader (election in progress?)", self.target);
                    self.retarget(None);
                }
                Ok(answer @ (ResponseKind::Unknown { .. } | ResponseKind::Error { .. }))
                    if !retry_answers =>
                {
                    return Ok(answer)
                }
                Ok(ResponseKind::Unknown { reason }) => last = reason,
                Ok(ResponseKind::Error { message }) => last = message,
                Ok(ResponseKind::Invalid { message }) => return Err(ClientError::Invalid(message)),
                Ok(answer) => return Ok(answer),
                Err(Attempt { error: NetError::Refused(reason), .. }) => {
                    return Err(ClientError::Refused { addr: self.target.clone(), reason });
                }
                Err(Attempt { error, sent: true }) if !retry_answers => {
                    // The leader may have taken it: sending it again could
                    // apply it twice.
                    return Err(ClientError::Server(format!(
                        "sent to {}, but no answer came ({error}); whether it applied is unknown: \
                         check before trying again",
                        self.target
                    )));
                }
                Err(Attempt { error: e, .. }) => {
                    last = format!("{}: {e}", self.target);
                    self.conn = None;
                    self.retarget(None);
                }
            }
            let sleep = backoff.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(sleep).await;
            backoff = (backoff * 2).min(Duration::from_millis(40));
        }
        Err(ClientError::Timeout { timeout: self.config.timeout, last })
    }

    fn retarget(&mut self, hint: Option<String>) {
        self.target = match hint {
            Some(addr) => addr,
            None => {
                self.rotation = (self.rotation + 1) % self.config.cluster.len();
                self.config.cluster[self.rotation].clone()
            }
        };
    }

    async fn attempt(&mut self, kind: &RequestKind, deadline: Instant) -> Result<ResponseKind, Attempt> {
        // One node that accepts connections but never answers (paused, or
        // stuck) must not eat the whole deadline: each attempt gets a fifth of
        // it (at least 200 ms), then the client tries elsewhere. A retried
        // write keeps its sequence number, so it still applies once.
        let per_attempt = (self.config.timeout / 5).max(Duration::from_millis(200));
        let remaining = deadline.saturating_duration_since(Instant::now()).min(per_attempt);
        let target = self.target.clone();
        let mut sent = false;
        let fut = async {
            if self.conn.as_ref().is_none_or(|(addr, _)| *addr != target) {
                let (framed, _) =
                    transport::connect(&target, &self.config.cluster_id, Sender::Client).await?;
                self.conn = Some((target.clone(), framed));
            }
            let (_, framed) = self.conn.as_mut().expect("connected above");
            let id = self.next_request_id;
            self.next_request_id += 1;
            // (Once any byte may have gone, the node may have it.)
            sent = true;
            transport::send_frame(framed, &ClientRequest { id, kind: kind.clone() }).await?;
            loop {
                let response: ClientResponse = transport::recv_frame(framed).await?;
                if response.id == id {
                    return Ok(response.result);
                }
            }
        };
        let result = tokio::time::timeout(remaining, fut).await;
        let error = match result {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => e,
            Err(_) => NetError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out")),
        };
        self.conn = None;
        Err(Attempt { error, sent })
    }

    /// Asks one node directly (no leader search), e.g. for its status.
    pub async fn ask(&self, addr: &str, kind: RequestKind) -> Result<ResponseKind, ClientError> {
        let fut = async {
            let (mut framed, _) = transport::connect(addr, &self.config.cluster_id, Sender::Client).await?;
            transport::send_frame(&mut framed, &ClientRequest { id: 1, kind }).await?;
            let response: ClientResponse = transport::recv_frame(&mut framed).await?;
            Ok::<_, NetError>(response.result)
        };
        match tokio::time::timeout(self.config.timeout, fut).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(NetError::Refused(reason))) => {
                Err(ClientError::Refused { addr: addr.to_string(), reason })
            }
            Ok(Err(e)) => Err(ClientError::Server(format!("{addr}: {e}"))),
            Err(_) => Err(ClientError::Timeout {
                timeout: self.config.timeout,
                last: format!("{addr} did not answer"),
            }),
        }
    }

    /// The status of every configured node (an error for those unreachable).
    pub async fn status_all(&self) -> Vec<(String, Result<NodeStatus, ClientError>)> {
        let mut out = Vec::new();
        for addr in &self.config.cluster {
            let status = match self.ask(addr, RequestKind::Status).await {
                Ok(ResponseKind::Status(s)) => Ok(s),
                Ok(other) => Err(ClientError::Server(format!("unexpected answer {other:?}"))),
                Err(e) => Err(e),
            };
            out.push((addr.clone(), status));
        }
        out
    }

    /// Log entries of the node at `addr`.
    pub async fn log(&self, addr: &str, from: u64, limit: u64) -> Result<Vec<LogEntryView>, ClientError> {
        match self.ask(addr, RequestKind::Log { from, limit }).await? {
            ResponseKind::Log(entries) => Ok(entries),
            other => Err(ClientError::Server(format!("unexpected answer {other:?}"))),
        }
    }

    /// The address of the node that reports itself leader, if any does.
    pub async fn find_leader(&self) -> Option<(String, NodeStatus)> {
        self.status_all().await.into_iter().find_map(|(addr, s)| match s {
            Ok(s) if s.role == raft_core::Role::Leader => Some((addr, s)),
            _ => None,
        })
    }
}
