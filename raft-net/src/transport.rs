//! TCP transport: framing, the hello handshake, the inbound listener, and one
//! outbound link per peer.
//!
//! A misbehaving connection (no hello in time, a wrong cluster id or protocol
//! version, an undecodable or oversized frame, a peer claiming another id) is
//! closed with a logged reason; the node goes on. Peer links reconnect with
//! capped exponential backoff and jitter, each with its own bounded queue, so
//! a dead or slow peer never blocks the others: when a queue is full, new
//! messages to that peer are dropped (Raft retransmits). Dropping a link
//! closes it: what it had queued still goes out if it is connected (within
//! a bound), otherwise its task ends at once, wherever it is (dialing,
//! waiting for a hello's answer or to dial again); either way its
//! connection closes, its queue is dropped and it never dials again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use raft_core::{Message, NodeId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tracing::{debug, info, warn};

use raft_codec::{self as codec, CodecError};

use crate::ratelimit::WarnLimiter;
use crate::wire::{describe_token, Hello, HelloReply, Sender, MAGIC, PROTOCOL_VERSION};

/// Largest frame accepted or sent (16 MiB): a snapshot chunk is 1 MiB by default.
pub const MAX_FRAME_BYTES: usize = 16 << 20;
/// How long a new connection may take to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Most requests of one client connection waiting for their answers: past
/// this, the connection is not read until answers have gone out.
pub const CLIENT_REQUESTS_IN_FLIGHT_MAX: usize = 4096;
/// Bytes of a peer connection's messages taken in and not yet handled by
/// the node: past this, the connection is read no further until the node
/// catches up (a peer can queue no more than this in the node's inbox).
pub const PEER_INBOUND_BYTES_MAX: usize = 32 << 20;

/// A peer message's bytes, counted against its connection's
/// [`PEER_INBOUND_BYTES_MAX`] until dropped.
#[derive(Debug)]
pub struct InboundBytes(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

/// Bytes a connection's reader asks the socket for at a time: a frame's
/// buffer grows with what arrives, never by what its length claims.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// A framed TCP connection.
pub type FramedStream = Framed<TcpStream, LengthDelimitedCodec>;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A socket error (including an oversized frame, which the codec reports as one).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A frame whose body does not decode.
    #[error("malformed frame: {0}")]
    Codec(#[from] CodecError),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// No hello within [`HELLO_TIMEOUT`].
    #[error("no hello within {HELLO_TIMEOUT:?}")]
    HelloTimeout,
    /// The hello was refused.
    #[error("handshake refused: {0}")]
    Refused(String),
    /// The peer says this node was removed from the cluster.
    #[error("removed from the cluster: {0}")]
    Removed(String),
    /// The peer says this node lost its data ([`HelloReply::LostData`]).
    #[error("{0}")]
    LostData(String),
    /// A client connection sent nothing for its idle timeout.
    #[error("idle for {0:?}")]
    Idle(Duration),
    /// A frame, once begun, did not arrive whole within the frame timeout.
    #[error("a frame of {len} bytes took longer than {timeout:?} to arrive ({received} bytes came)")]
    SlowFrame {
        /// The frame's declared length (0 if its header did not arrive).
        len: usize,
        /// Bytes of it received.
        received: usize,
        /// The limit.
        timeout: Duration,
    },
    /// A frame declared a length above the limit.
    #[error("a frame of {len} bytes is above the {max}-byte limit")]
    FrameTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The node is holding as many bytes of partly received frames, or of
    /// answers waiting for their clients, as it allows.
    #[error("{0}")]
    Overloaded(String),
}

/// The length-delimited codec every connection uses: a 4-byte big-endian
/// length, then the body; frames above [`MAX_FRAME_BYTES`] are refused before
/// any allocation.
pub fn frame_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// Wraps a stream in the frame codec, with TCP_NODELAY set.
pub fn framed(stream: TcpStream) -> FramedStream {
    let _ = stream.set_nodelay(true);
    Framed::new(stream, frame_codec())
}

/// Encodes and sends one frame, flushing it.
pub async fn send_frame<T: Serialize>(framed: &mut FramedStream, value: &T) -> Result<(), NetError> {
    framed.send(Bytes::from(codec::encode(value)?)).await?;
    Ok(())
}

/// Encodes one frame into the write buffer without flushing.
pub async fn feed_frame<T: Serialize>(framed: &mut FramedStream, value: &T) -> Result<(), NetError> {
    framed.feed(Bytes::from(codec::encode(value)?)).await?;
    Ok(())
}

/// Receives and decodes one frame; `Closed` at end of stream.
pub async fn recv_frame<T: DeserializeOwned>(framed: &mut FramedStream) -> Result<T, NetError> {
    match framed.next().await {
        Some(Ok(bytes)) => Ok(codec::decode(&bytes)?),
        Some(Err(e)) => Err(NetError::Io(e)),
        None => Err(NetError::Closed),
    }
}

/// Opens a connection and performs the hello handshake (with no cluster token).
pub async fn connect(
    addr: &str,
    cluster_id: &str,
    sender: Sender,
) -> Result<(FramedStream, NodeId), NetError> {
    connect_with(addr, Hello::new(cluster_id, sender)).await
}

/// Opens a connection and performs the handshake with this hello.
pub async fn connect_with(addr: &str, hello: Hello) -> Result<(FramedStream, NodeId), NetError> {
    dial(addr, hello).await.map(|(framed, node_id, _)| (framed, node_id))
}

/// As [`connect_with`], with whether the welcoming node is fresh.
async fn dial(addr: &str, hello: Hello) -> Result<(FramedStream, NodeId, bool), NetError> {
    let stream = TcpStream::connect(addr).await?;
    let mut framed = framed(stream);
    send_frame(&mut framed, &hello).await?;
    match tokio::time::timeout(HELLO_TIMEOUT, recv_frame::<HelloReply>(&mut framed)).await {
        Err(_) => Err(NetError::HelloTimeout),
        Ok(Err(e)) => Err(e),
        Ok(Ok(HelloReply::Welcome { node_id, fresh })) => Ok((framed, node_id, fresh)),
        Ok(Ok(HelloReply::Refused { reason })) => Err(NetError::Refused(reason)),
        Ok(Ok(HelloReply::Removed { reason })) => Err(NetError::Removed(reason)),
        Ok(Ok(HelloReply::LostData { reason })) => Err(NetError::LostData(reason)),
    }
}

/// The client protocol a listener serves, as far as the transport needs to
/// know it: what a client's frames decode to, and how an answer becomes a
/// response frame. (The key-value service's protocol is `raft-kv`'s; the
/// transport knows frames, hellos and Raft messages only.)
pub trait ClientProtocol: Send + Sync + 'static {
    /// A request frame from a client.
    type Request: DeserializeOwned + Send + Sync + std::fmt::Debug + 'static;
    /// What the node answers to one request.
    type Answer: Send + Sync + std::fmt::Debug + 'static;
    /// The response frame that carries an answer to the request `id`.
    type Response: Serialize + Send + Sync + std::fmt::Debug + 'static;
    /// The request's id, echoed in its response.
    fn request_id(request: &Self::Request) -> u64;
    /// The response frame of the request `id`.
    fn response(id: u64, answer: Self::Answer) -> Self::Response;
    /// About how many bytes the answer takes while it waits to be written
    /// (counted against [`ConnectionLimits`]' answer budgets).
    fn answer_bytes(answer: &Self::Answer) -> usize;
}

/// What the listener hands to the node's event loop.
#[derive(Debug)]
pub enum Inbound<P: ClientProtocol> {
    /// A Raft message from a peer (sender already checked against the
    /// hello), and its place in the connection's byte budget
    /// ([`PEER_INBOUND_BYTES_MAX`]): drop it once the message is handled.
    Peer(Message, InboundBytes),
    /// A peer connected, saying where it serves: a node that has no link
    /// to it yet (one waiting to be added) can open one to answer it.
    PeerConnected {
        /// The peer.
        id: NodeId,
        /// Its advertised address (empty if it sent none).
        address: String,
    },
    /// A client request; answer it through `reply`.
    Client {
        /// The request.
        request: P::Request,
        /// Where the response goes.
        reply: Reply<P>,
    },
}

/// Where the answer to one client request goes: a place in its connection's
/// queue of answers, reserved before the request was taken in, so that an
/// answer is never dropped for want of room, however many requests a client
/// pipelines (the connection is read no further while
/// [`CLIENT_REQUESTS_IN_FLIGHT_MAX`] of its requests wait for answers).
/// Answers waiting to be written count against the connection's and the
/// listener's byte budgets ([`ConnectionLimits`]): a client whose answers go
/// past them (it pipelines and does not read) is disconnected, its answers
/// dropped. Dropping a `Reply` unanswered frees its place; the client gets
/// no answer.
#[derive(Debug)]
pub struct Reply<P: ClientProtocol> {
    id: u64,
    permit: mpsc::OwnedPermit<QueuedAnswer<P>>,
    conn: Arc<ConnAnswers>,
}

/// The answers of one client connection waiting to be written.
#[derive(Debug)]
struct ConnAnswers {
    queued_bytes: AtomicUsize,
    /// Set when the answers went past a budget: the connection closes.
    overflow: tokio_util::sync::CancellationToken,
    state: Arc<ListenerState>,
    limits: ConnectionLimits,
}

/// An answer in a connection's queue; dropping it (written, or the
/// connection gone) gives its bytes back to the budgets.
#[derive(Debug)]
struct QueuedAnswer<P: ClientProtocol> {
    response: P::Response,
    bytes: usize,
    conn: Arc<ConnAnswers>,
}

impl<P: ClientProtocol> Drop for QueuedAnswer<P> {
    fn drop(&mut self) {
        self.conn.queued_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        self.conn.state.answer_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl<P: ClientProtocol> Reply<P> {
    /// The request's id, echoed in the answer.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues the answer for the connection's writer (if the connection is
    /// gone, the answer goes nowhere; if it would take the connection or the
    /// listener past its budget of queued answers, the connection is closed).
    pub fn send(self, answer: P::Answer) {
        let bytes = P::answer_bytes(&answer);
        let conn = self.conn;
        let mine = conn.queued_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let all = conn.state.answer_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let answer = QueuedAnswer { response: P::response(self.id, answer), bytes, conn: conn.clone() };
        if mine > conn.limits.answer_bytes_per_connection_max || all > conn.limits.answer_bytes_max {
            conn.overflow.cancel();
            return; // `answer` drops here, giving its bytes back
        }
        self.permit.send(answer);
    }
}

/// Counters of refused connections and frames, shared with the node.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Connections closed because of a bad hello, frame or sender.
    pub connections_refused: AtomicU64,
    /// Messages dropped because a peer's queue was full.
    pub peer_messages_dropped: AtomicU64,
    /// Peer links whose task runs (connected or not): one per [`PeerLink`]
    /// alive, until a dropped one's task has ended.
    pub peer_links_open: AtomicU64,
    /// Traffic with each peer this node has had a link or a connection
    /// with (bounded by the members it has known: peer ids, never more).
    peers: std::sync::Mutex<BTreeMap<NodeId, Arc<PeerTraffic>>>,
}

impl NetCounters {
    /// The traffic counters of peer `id` (made on first use; a link or a
    /// connection takes them once, not per message).
    pub fn peer(&self, id: NodeId) -> Arc<PeerTraffic> {
        self.peers.lock().expect("peer counters poisoned").entry(id).or_default().clone()
    }

    /// Every peer's traffic counters, by id.
    pub fn peers(&self) -> Vec<(NodeId, Arc<PeerTraffic>)> {
        let peers = self.peers.lock().expect("peer counters poisoned");
        peers.iter().map(|(&id, t)| (id, t.clone())).collect()
    }
}

/// What went to and came from one peer (frames counted with their 4-byte
/// length prefix).
#[derive(Debug, Default)]
pub struct PeerTraffic {
    /// Bytes of frames this node's link wrote to the peer.
    pub sent_bytes: AtomicU64,
    /// Times the link failed: a dial or hello that did not succeed, or a
    /// connection lost.
    pub sent_failures: AtomicU64,
    /// Bytes of frames received from the peer on its connections.
    pub received_bytes: AtomicU64,
    /// The peer's connections to this node that ended with an error (a bad
    /// frame or message, a reset).
    pub received_failures: AtomicU64,
}

/// The cluster token a node knows, shared by its listener and peer links
/// (0: none yet). It is set once, when the node learns it; reading it costs
/// one atomic load per connection, never per message.
#[derive(Clone, Debug, Default)]
pub struct SharedToken(Arc<AtomicU64>);

impl SharedToken {
    /// A token holder starting at `token` (0: unknown).
    pub fn new(token: u64) -> SharedToken {
        SharedToken(Arc::new(AtomicU64::new(token)))
    }

    /// The token, 0 if unknown.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Records the token once learned.
    pub fn set(&self, token: u64) {
        self.0.store(token, Ordering::Relaxed)
    }
}

/// What tells a member that lost its data from a new one, shared by a
/// node's listener and links. A founder that bootstrapped on an empty data
/// directory is *fresh* until it holds an entry from a leader; the cluster
/// records which members held data (`members_with_data`, applied from the
/// log). A fresh node the cluster knows held data lost its data directory:
/// it forgot its votes and the entries it acknowledged, and must not vote or
/// count toward a majority as its old self. A node that knows the cluster
/// token refuses such a peer both ways: its hello is answered
/// [`HelloReply::LostData`] (the peer stops with that error), and a link
/// that it welcomes sends it nothing.
#[derive(Clone, Debug, Default)]
pub struct DataGuard(Arc<DataGuardInner>);

#[derive(Debug, Default)]
struct DataGuardInner {
    fresh: AtomicBool,
    holders: std::sync::RwLock<BTreeSet<NodeId>>,
}

impl DataGuard {
    /// A guard for a node that is fresh or not.
    pub fn new(fresh: bool) -> DataGuard {
        let guard = DataGuard::default();
        guard.0.fresh.store(fresh, Ordering::Relaxed);
        guard
    }

    /// Whether this node is fresh.
    pub fn fresh(&self) -> bool {
        self.0.fresh.load(Ordering::Relaxed)
    }

    /// This node holds an entry from a leader: it is fresh no more.
    pub fn settle(&self) {
        self.0.fresh.store(false, Ordering::Relaxed);
    }

    /// The members the cluster knows held data, as this node applied them.
    pub fn set_holders(&self, holders: impl IntoIterator<Item = NodeId>) {
        *self.0.holders.write().expect("data guard poisoned") = holders.into_iter().collect();
    }

    /// Why peer `id`, fresh or not, must be refused by node `node_id`
    /// whose cluster token is `token`, if it must.
    fn lost_data(&self, node_id: NodeId, id: NodeId, fresh: bool, token: u64) -> Option<String> {
        let held = self.0.holders.read().expect("data guard poisoned").contains(&id);
        (fresh && token != 0 && held).then(|| {
            format!(
                "node {id} was already a member of this cluster (token {}, says node {node_id}) and has \
                 lost its data: it must not vote as its old self; remove it (raft-client member remove \
                 {id}) and add it back as a new member (an empty data directory and --join), or restore \
                 its data directory",
                describe_token(token)
            )
        })
    }
}

/// The peers a listener takes hellos from, shared with the node, which
/// changes them as the membership changes; or, for a node waiting to be
/// added, any peer of its cluster (it cannot know which leader will
/// contact it).
/// A connection from a peer that leaves the set is closed.
#[derive(Clone, Debug, Default)]
pub struct SharedPeers(Arc<PeersInner>);

/// What [`SharedPeers`] shares.
#[derive(Debug)]
struct PeersInner {
    set: std::sync::RwLock<PeerSet>,
    /// Told of every change of the admitted peers (each peer connection
    /// watches it, to close itself once its peer is admitted no more).
    changed: tokio::sync::watch::Sender<()>,
}

impl Default for PeersInner {
    fn default() -> PeersInner {
        PeersInner { set: Default::default(), changed: tokio::sync::watch::Sender::new(()) }
    }
}

/// What [`SharedPeers`] holds.
#[derive(Debug, Default)]
struct PeerSet {
    /// The peers admitted (`None`: any).
    admitted: Option<Vec<NodeId>>,
    /// Nodes removed from the cluster: told so, so that they stop.
    removed: Vec<NodeId>,
}

impl SharedPeers {
    /// A set holding `peers`.
    pub fn new(peers: impl IntoIterator<Item = NodeId>) -> SharedPeers {
        let shared = SharedPeers::default();
        shared.set(peers);
        shared
    }

    /// Any peer of the cluster (a node waiting to be added).
    pub fn any() -> SharedPeers {
        SharedPeers::default()
    }

    /// Replaces the set.
    pub fn set(&self, peers: impl IntoIterator<Item = NodeId>) {
        let mut ids: Vec<NodeId> = peers.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        self.0.set.write().expect("peer set poisoned").admitted = Some(ids);
        self.0.changed.send_replace(());
    }

    /// Records nodes removed from the cluster (a hello from one is answered
    /// with [`HelloReply::Removed`]).
    pub fn note_removed(&self, ids: impl IntoIterator<Item = NodeId>) {
        let mut set = self.0.set.write().expect("peer set poisoned");
        set.removed.extend(ids);
        set.removed.sort_unstable();
        set.removed.dedup();
    }

    /// Forgets removals of nodes that are members again (a removal whose
    /// entry a new leader's log replaced).
    pub fn forget_removed(&self, ids: impl IntoIterator<Item = NodeId>) {
        let mut set = self.0.set.write().expect("peer set poisoned");
        for id in ids {
            set.removed.retain(|&r| r != id);
        }
    }

    /// Whether `id` was removed from the cluster.
    pub fn was_removed(&self, id: NodeId) -> bool {
        self.0.set.read().expect("peer set poisoned").removed.binary_search(&id).is_ok()
    }

    /// The peers now, sorted (`None`: any).
    pub fn get(&self) -> Option<Vec<NodeId>> {
        self.0.set.read().expect("peer set poisoned").admitted.clone()
    }

    /// A receiver told of every change of the admitted peers.
    fn watch(&self) -> tokio::sync::watch::Receiver<()> {
        self.0.changed.subscribe()
    }

    /// Whether a hello from `id` is taken.
    pub fn admits(&self, id: NodeId) -> bool {
        match &self.0.set.read().expect("peer set poisoned").admitted {
            Some(peers) => peers.binary_search(&id).is_ok(),
            None => true,
        }
    }
}

/// What a listener allows its connections: how many, for how long, and
/// how many bytes they may make it hold. Memory and descriptors a hostile or
/// broken client can take are bounded by these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections in all (peers and clients); more are closed at once.
    pub connections_max: usize,
    /// Open connections from one IP address.
    pub connections_per_source_max: usize,
    /// A client connection that begins no frame for this long is closed
    /// (peer links are not: a follower's link to another follower carries
    /// nothing for as long as the cluster is healthy).
    pub client_idle_timeout: Duration,
    /// A frame, once its first byte has arrived, must arrive whole within
    /// this (a frame sent a byte at a time cannot hold a connection).
    pub frame_timeout: Duration,
    /// Bytes of partly received frames, across all connections; a
    /// connection that would go past it is closed.
    pub partial_frame_bytes_max: usize,
    /// Bytes of answers waiting to be written to one client connection; a
    /// client that pipelines requests and does not read its answers is
    /// closed when its answers go past it.
    pub answer_bytes_per_connection_max: usize,
    /// Bytes of answers waiting to be written, across all connections.
    pub answer_bytes_max: usize,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            connections_max: 1024,
            connections_per_source_max: 256,
            client_idle_timeout: Duration::from_secs(60),
            frame_timeout: Duration::from_secs(10),
            partial_frame_bytes_max: 256 << 20,
            answer_bytes_per_connection_max: 64 << 20,
            answer_bytes_max: 512 << 20,
        }
    }
}

/// Open connections, in all and per source address, and the bytes held in
/// partial frames and queued answers: shared by a listener's connections.
#[derive(Debug, Default)]
struct ListenerState {
    by_source: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    open: AtomicUsize,
    partial_frame_bytes: AtomicUsize,
    answer_bytes: AtomicUsize,
}

/// One admitted connection; dropping it frees its place.
struct Admitted {
    state: Arc<ListenerState>,
    source: std::net::IpAddr,
}

impl ListenerState {
    /// Admits a connection from `source`, or says why not.
    fn admit(
        self: &Arc<Self>,
        source: std::net::IpAddr,
        limits: &ConnectionLimits,
    ) -> Result<Admitted, String> {
        let mut by_source = self.by_source.lock().expect("connection table poisoned");
        let open = self.open.load(Ordering::Relaxed);
        if open >= limits.connections_max {
            return Err(format!("{open} connections are open, the most this node takes (--max-connections)"));
        }
        let from_source = by_source.get(&source).copied().unwrap_or(0);
        if from_source >= limits.connections_per_source_max {
            return Err(format!(
                "{from_source} connections from {source} are open, the most one address may hold \
                 (--max-connections-per-source)"
            ));
        }
        *by_source.entry(source).or_insert(0) += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted { state: self.clone(), source })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut by_source = self.state.by_source.lock().expect("connection table poisoned");
        if let Some(n) = by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
        self.state.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads length-delimited frames (the format of [`frame_codec`]) from one
/// connection, with the listener's limits: a frame's buffer grows only with
/// the bytes that arrived, those bytes count against the listener's budget
/// of partial frames, a begun frame must arrive within the frame timeout,
/// and, if given, a connection that begins no frame within its idle timeout
/// is closed. Buffered: one read can bring many small frames.
struct FrameReader {
    read: tokio::net::tcp::OwnedReadHalf,
    buf: bytes::BytesMut,
    state: Arc<ListenerState>,
    /// Bytes of `buf` counted in `state.partial_frame_bytes`.
    held: usize,
    limits: ConnectionLimits,
}

impl FrameReader {
    fn new(
        read: tokio::net::tcp::OwnedReadHalf,
        state: Arc<ListenerState>,
        limits: ConnectionLimits,
    ) -> Self {
        FrameReader { read, buf: bytes::BytesMut::new(), state, held: 0, limits }
    }

    /// The next frame's body; `Closed` at a clean end of stream. `idle`
    /// bounds the wait for a frame to begin.
    async fn next(&mut self, idle: Option<Duration>) -> Result<Bytes, NetError> {
        use tokio::io::AsyncReadExt;
        let mut begun = (!self.buf.is_empty()).then(tokio::time::Instant::now);
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
                if len > MAX_FRAME_BYTES {
                    return Err(NetError::FrameTooLarge { len, max: MAX_FRAME_BYTES });
                }
                if self.buf.len() >= 4 + len {
                    let mut frame = self.buf.split_to(4 + len);
                    let _ = frame.split_to(4);
                    self.release();
                    return Ok(frame.freeze());
                }
                self.buf.reserve((4 + len - self.buf.len()).min(READ_CHUNK_BYTES));
            } else {
                self.buf.reserve(READ_CHUNK_BYTES);
            }
            let read = self.read.read_buf(&mut self.buf);
            let n = match begun {
                Some(start) => match tokio::time::timeout_at(start + self.limits.frame_timeout, read).await {
                    Ok(n) => n?,
                    Err(_) => {
                        let len = match self.buf.get(..4) {
                            Some(h) => u32::from_be_bytes(h.try_into().expect("4 bytes")) as usize,
                            None => 0,
                        };
                        return Err(NetError::SlowFrame {
                            len,
                            received: self.buf.len().saturating_sub(4),
                            timeout: self.limits.frame_timeout,
                        });
                    }
                },
                None => match idle {
                    Some(idle) => {
                        tokio::time::timeout(idle, read).await.map_err(|_| NetError::Idle(idle))??
                    }
                    None => read.await?,
                },
            };
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    NetError::Closed
                } else {
                    NetError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the connection closed inside a frame",
                    ))
                });
            }
            begun.get_or_insert_with(tokio::time::Instant::now);
            self.hold()?;
        }
    }

    /// Counts the buffered bytes of the frame in progress against the budget.
    fn hold(&mut self) -> Result<(), NetError> {
        let more = self.buf.len().saturating_sub(self.held);
        if more == 0 {
            return Ok(());
        }
        let before = self.state.partial_frame_bytes.fetch_add(more, Ordering::Relaxed);
        self.held += more;
        if before + more > self.limits.partial_frame_bytes_max {
            return Err(NetError::Overloaded(format!(
                "the node holds {} bytes of partly received frames, the most it allows",
                before + more
            )));
        }
        Ok(())
    }

    fn release(&mut self) {
        self.state.partial_frame_bytes.fetch_sub(self.held, Ordering::Relaxed);
        self.held = 0;
    }
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        self.release();
    }
}

/// What the listener needs to know.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// The cluster id every hello must carry.
    pub cluster_id: String,
    /// The peers allowed to connect.
    pub peers: SharedPeers,
    /// This node's cluster token: a peer's hello with another (non-zero)
    /// token is refused.
    pub cluster_token: SharedToken,
    /// What connections may take.
    pub limits: ConnectionLimits,
    /// Where a connection that speaks HTTP goes (told apart from the binary
    /// protocol by its first bytes); `None`: such a connection is closed.
    pub http: Option<HttpHandoff>,
    /// Tells a peer that lost its data (and whether this node is fresh).
    pub data_guard: DataGuard,
}

/// Serves one HTTP connection to its end (the listener has only peeked at
/// its first bytes; the connection counts against the limits until the
/// returned future ends).
#[derive(Clone)]
pub struct HttpHandoff(pub Arc<HttpServeFn>);

/// The function behind an [`HttpHandoff`].
pub type HttpServeFn = dyn Fn(TcpStream, SocketAddr) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    + Send
    + Sync;

impl std::fmt::Debug for HttpHandoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpHandoff")
    }
}

/// The methods an HTTP request may start with. As the 4-byte big-endian
/// length that starts every frame, each of them is above 1 GB, far past the
/// frame limit: no connection of the binary protocol starts like this.
const HTTP_METHODS: [&[u8]; 9] =
    [b"GET ", b"POST", b"PUT ", b"DELE", b"HEAD", b"OPTI", b"PATC", b"CONN", b"TRAC"];

/// Whether a connection that starts with `first` speaks HTTP.
pub fn looks_like_http(first: &[u8]) -> bool {
    first.len() >= 4 && HTTP_METHODS.iter().any(|m| first[..4] == **m)
}

/// Waits (at most [`HELLO_TIMEOUT`]) for the first 4 bytes of a connection
/// without taking them; `None` if it closed or stayed silent.
async fn peek_first_bytes(stream: &TcpStream) -> Option<[u8; 4]> {
    let mut first = [0u8; 4];
    let peek = async {
        loop {
            match stream.peek(&mut first).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n >= 4 => return true,
                // Fewer bytes so far: wait for more to arrive.
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    };
    matches!(tokio::time::timeout(HELLO_TIMEOUT, peek).await, Ok(true)).then_some(first)
}

/// Accepts connections until the listener fails; each connection runs in its
/// own task and ends on its own errors only. Connections past the limits of
/// [`ConnectionLimits`] are closed at once; the warnings of refused and
/// closed connections are rate-limited (one line per 10 s, with the number
/// held back).
pub async fn serve<P: ClientProtocol>(
    listener: TcpListener,
    config: Arc<ListenerConfig>,
    inbound: mpsc::Sender<Inbound<P>>,
    counters: Arc<NetCounters>,
) {
    let state = Arc::new(ListenerState::default());
    let warnings = Arc::new(std::sync::Mutex::new(WarnLimiter::new(Duration::from_secs(10))));
    let warn_limited =
        move |warnings: &std::sync::Mutex<WarnLimiter>, node: NodeId, addr: SocketAddr, reason: &str| {
            let allowed = warnings.lock().expect("warn limiter poisoned").allow(std::time::Instant::now());
            if let Some(held_back) = allowed {
                warn!(node, %addr, held_back, "closed connection: {reason}");
            }
        };
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let admitted = match state.admit(addr.ip(), &config.limits) {
                    Ok(admitted) => admitted,
                    Err(reason) => {
                        counters.connections_refused.fetch_add(1, Ordering::Relaxed);
                        warn_limited(&warnings, config.node_id, addr, &reason);
                        continue; // `stream` drops: closed
                    }
                };
                let (config, inbound, counters) = (config.clone(), inbound.clone(), counters.clone());
                let (state, warnings) = (state.clone(), warnings.clone());
                tokio::spawn(async move {
                    if let Some(http) = &config.http {
                        match peek_first_bytes(&stream).await {
                            Some(first) if looks_like_http(&first) => {
                                (http.0)(stream, addr).await;
                                drop(admitted);
                                return;
                            }
                            Some(_) => {}
                            None => return, // closed, or silent past the hello's deadline
                        }
                    }
                    let result = handle_connection(stream, addr, &config, state, inbound, &counters).await;
                    drop(admitted);
                    if let Err(reason) = result {
                        match reason {
                            NetError::Closed => debug!(node = config.node_id, %addr, "connection closed"),
                            reason => {
                                counters.connections_refused.fetch_add(1, Ordering::Relaxed);
                                warn_limited(&warnings, config.node_id, addr, &reason.to_string());
                            }
                        }
                    }
                });
            }
            Err(e) => {
                warn!(node = config.node_id, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle_connection<P: ClientProtocol>(
    stream: TcpStream,
    addr: SocketAddr,
    config: &ListenerConfig,
    state: Arc<ListenerState>,
    inbound: mpsc::Sender<Inbound<P>>,
    counters: &NetCounters,
) -> Result<(), NetError> {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = FrameReader::new(read, state.clone(), config.limits.clone());
    let mut writer = tokio_util::codec::FramedWrite::new(write, frame_codec());
    let hello: Hello = match reader.next(Some(HELLO_TIMEOUT)).await {
        Err(NetError::Idle(_)) => return Err(NetError::HelloTimeout),
        result => codec::decode(&result?)?,
    };
    if let Err(reason) = check_hello(&hello, config) {
        let reply = match hello.sender {
            Sender::Peer(id) if config.peers.was_removed(id) => {
                HelloReply::Removed { reason: reason.clone() }
            }
            _ => HelloReply::Refused { reason: reason.clone() },
        };
        let _ = writer.send(Bytes::from(codec::encode(&reply)?)).await;
        return Err(NetError::Refused(reason));
    }
    if let Sender::Peer(id) = hello.sender {
        let token = config.cluster_token.get();
        if let Some(reason) = config.data_guard.lost_data(config.node_id, id, hello.fresh, token) {
            let reply = HelloReply::LostData { reason: reason.clone() };
            let _ = writer.send(Bytes::from(codec::encode(&reply)?)).await;
            return Err(NetError::Refused(reason));
        }
    }
    let welcome = HelloReply::Welcome { node_id: config.node_id, fresh: config.data_guard.fresh() };
    writer.send(Bytes::from(codec::encode(&welcome)?)).await?;
    match hello.sender {
        Sender::Peer(peer) => {
            info!(node = config.node_id, peer, %addr, "peer connected");
            let connected = Inbound::PeerConnected { id: peer, address: hello.address.clone() };
            if inbound.send(connected).await.is_err() {
                return Ok(()); // the node is shutting down
            }
            let traffic = counters.peer(peer);
            let served = serve_peer(peer, addr, reader, config, inbound, &traffic).await;
            if matches!(served, Err(ref e) if !matches!(e, NetError::Closed)) {
                traffic.received_failures.fetch_add(1, Ordering::Relaxed);
            }
            served
        }
        Sender::Client => {
            let conn = Arc::new(ConnAnswers {
                queued_bytes: AtomicUsize::new(0),
                overflow: tokio_util::sync::CancellationToken::new(),
                state,
                limits: config.limits.clone(),
            });
            serve_client(reader, writer, conn, inbound).await
        }
    }
}

/// Receives a welcomed peer's messages until its connection ends (or it is
/// no member any more).
async fn serve_peer<P: ClientProtocol>(
    peer: NodeId,
    addr: SocketAddr,
    mut reader: FrameReader,
    config: &ListenerConfig,
    inbound: mpsc::Sender<Inbound<P>>,
    traffic: &PeerTraffic,
) -> Result<(), NetError> {
    let budget = Arc::new(tokio::sync::Semaphore::new(PEER_INBOUND_BYTES_MAX));
    // A peer that leaves the admitted set (its removal committed)
    // loses its connection: its link notices, calls again, and is
    // told it was removed (its hello is answered `Removed`), which
    // is how a removed member that missed the news learns it.
    let mut peers_changed = config.peers.watch();
    loop {
        let frame = tokio::select! {
            frame = reader.next(None) => frame?,
            _ = peers_changed.changed() => {
                if config.peers.admits(peer) {
                    continue;
                }
                info!(
                    node = config.node_id, peer, %addr,
                    "closed the connection of node {peer}: it is no member any more"
                );
                return Ok(());
            }
        };
        traffic.received_bytes.fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
        let bytes = frame.len().clamp(1, PEER_INBOUND_BYTES_MAX) as u32;
        let Ok(permit) = budget.clone().acquire_many_owned(bytes).await else { return Ok(()) };
        let m: Message = codec::decode(&frame)?;
        drop(frame);
        if m.from != peer || m.to != config.node_id {
            return Err(NetError::Refused(format!("peer {peer} sent a message from {} to {}", m.from, m.to)));
        }
        if inbound.send(Inbound::Peer(m, InboundBytes(permit))).await.is_err() {
            return Ok(()); // the node is shutting down
        }
    }
}

fn check_hello(hello: &Hello, config: &ListenerConfig) -> Result<(), String> {
    if hello.magic != MAGIC {
        return Err("not a Raft Lite connection (bad magic)".to_string());
    }
    if hello.version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not supported (this node speaks {PROTOCOL_VERSION})",
            hello.version
        ));
    }
    if hello.cluster_id != config.cluster_id {
        return Err(format!(
            "cluster id `{}` does not match this node's cluster `{}`",
            hello.cluster_id, config.cluster_id
        ));
    }
    if let Sender::Peer(id) = hello.sender {
        if config.peers.was_removed(id) {
            return Err(format!(
                "node {id} was removed from node {}'s cluster; it takes no further part (to bring it \
                 back, start it with --join on an empty data directory and add it as a new member)",
                config.node_id
            ));
        }
        if !config.peers.admits(id) {
            return Err(format!(
                "node {id} is not a member of node {}'s cluster (its members besides itself are {:?}); \
                 start node {id} with the cluster's --peers, or add it as a member",
                config.node_id,
                config.peers.get().unwrap_or_default()
            ));
        }
        let ours = config.cluster_token.get();
        if ours != 0 && hello.cluster_token != 0 && hello.cluster_token != ours {
            return Err(format!(
                "node {id} holds data of another cluster: its cluster token is {} but node {}'s is {} \
                 (both named `{}`); give node {id} a data directory of this cluster, or an empty one \
                 to join as a new member",
                describe_token(hello.cluster_token),
                config.node_id,
                describe_token(ours),
                config.cluster_id
            ));
        }
    }
    Ok(())
}

async fn serve_client<P: ClientProtocol>(
    mut reader: FrameReader,
    mut sink: tokio_util::codec::FramedWrite<tokio::net::tcp::OwnedWriteHalf, LengthDelimitedCodec>,
    conn: Arc<ConnAnswers>,
    inbound: mpsc::Sender<Inbound<P>>,
) -> Result<(), NetError> {
    let idle = conn.limits.client_idle_timeout;
    let (reply_tx, mut reply_rx) = mpsc::channel::<QueuedAnswer<P>>(CLIENT_REQUESTS_IN_FLIGHT_MAX);
    let overflow = conn.overflow.clone();
    let writer_overflow = overflow.clone();
    let writer = tokio::spawn(async move {
        // A socket that takes no bytes for the idle timeout (a client that
        // stopped reading) ends the connection too.
        let write_all = async move {
            loop {
                let Some(response) = reply_rx.recv().await else { return };
                let mut batch = vec![response];
                while let Ok(more) = reply_rx.try_recv() {
                    batch.push(more);
                    if batch.len() >= 256 {
                        break;
                    }
                }
                for answer in &batch {
                    let bytes = match codec::encode(&answer.response) {
                        Ok(b) => b,
                        Err(e) => {
                            warn!(error = %e, "could not encode a client response");
                            continue;
                        }
                    };
                    match tokio::time::timeout(idle, sink.feed(Bytes::from(bytes))).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                match tokio::time::timeout(idle, SinkExt::<Bytes>::flush(&mut sink)).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
                // Their bytes count until the socket has taken them.
                drop(batch);
            }
        };
        // Past a budget, the connection closes now, not when a blocked
        // write gives up.
        tokio::select! {
            biased;
            _ = writer_overflow.cancelled() => {}
            _ = write_all => {}
        }
    });
    let result = loop {
        // Room for this request's answer first: with every place taken, the
        // connection waits here, unread, until answers have been written.
        let permit = tokio::select! {
            biased;
            _ = overflow.cancelled() => break Err(answers_overflow(&conn)),
            permit = reply_tx.clone().reserve_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break Ok(()),
            },
        };
        let frame = tokio::select! {
            biased;
            _ = overflow.cancelled() => break Err(answers_overflow(&conn)),
            frame = reader.next(Some(idle)) => frame,
        };
        let request: P::Request = match frame.and_then(|f| Ok(codec::decode(&f)?)) {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        let reply = Reply { id: P::request_id(&request), permit, conn: conn.clone() };
        if inbound.send(Inbound::Client { request, reply }).await.is_err() {
            break Ok(());
        }
    };
    drop(reply_tx);
    // Let answers to requests already taken in go out before closing.
    let _ = writer.await;
    result
}

fn answers_overflow(conn: &ConnAnswers) -> NetError {
    NetError::Overloaded(format!(
        "the client does not read its answers fast enough: {} bytes of them were waiting (at most {} per \
         connection and {} in all)",
        conn.queued_bytes.load(Ordering::Relaxed),
        conn.limits.answer_bytes_per_connection_max,
        conn.limits.answer_bytes_max
    ))
}

/// The sending half of a link to one peer. Dropping it closes the link: a
/// connected link sends what was queued before (for at most
/// [`LINK_CLOSE_FLUSH_MAX`]) and closes its connection; one that is not
/// connected stops wherever it is (dialing, waiting for its hello's answer
/// or to dial again) and its queue is dropped. It never dials again.
#[derive(Debug)]
pub struct PeerLink {
    peer: NodeId,
    queue: mpsc::Sender<Message>,
    counters: Arc<NetCounters>,
    /// Cancels the link's task when the link is dropped.
    _close: tokio_util::sync::DropGuard,
}

/// Counts a link's task in [`NetCounters::peer_links_open`] while it runs.
struct LinkOpen(Arc<NetCounters>);

impl LinkOpen {
    fn new(counters: Arc<NetCounters>) -> LinkOpen {
        counters.peer_links_open.fetch_add(1, Ordering::Relaxed);
        LinkOpen(counters)
    }
}

impl Drop for LinkOpen {
    fn drop(&mut self) {
        self.0.peer_links_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PeerLink {
    /// Starts a task that keeps a connection to `addr` and sends what is
    /// queued. The queue holds at most `queue_capacity` messages.
    pub fn spawn(
        node_id: NodeId,
        peer: NodeId,
        addr: String,
        identity: LinkIdentity,
        queue_capacity: usize,
        counters: Arc<NetCounters>,
    ) -> PeerLink {
        let (tx, rx) = mpsc::channel(queue_capacity);
        let close = tokio_util::sync::CancellationToken::new();
        let closed = close.clone();
        let open = LinkOpen::new(counters.clone());
        let traffic = counters.peer(peer);
        tokio::spawn(async move {
            let _open = open;
            run_peer_link(node_id, peer, addr, identity, rx, closed, traffic).await
        });
        PeerLink { peer, queue: tx, counters, _close: close.drop_guard() }
    }

    /// The peer this link goes to.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// Queues `m` for the peer; drops it (returning false) if the queue is full.
    pub fn send(&self, m: Message) -> bool {
        debug_assert_eq!(m.to, self.peer);
        match self.queue.try_send(m) {
            Ok(()) => true,
            Err(_) => {
                self.counters.peer_messages_dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Who a node says it is in the hellos of its peer links.
#[derive(Clone, Debug)]
pub struct LinkIdentity {
    /// The cluster id.
    pub cluster_id: String,
    /// The cluster token, read at each (re)connection.
    pub cluster_token: SharedToken,
    /// This node's advertised address, carried in the hello.
    pub address: String,
    /// Where a link says that its peer told this node to stop (it was
    /// removed, or it lost its data); the link then stops.
    pub removed: Option<mpsc::UnboundedSender<StopReason>>,
    /// Whether this node is fresh, and which peers the cluster knows held
    /// data (a fresh one of those is sent nothing).
    pub data_guard: DataGuard,
}

/// Why a peer told this node to stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// It was removed from the cluster (`HelloReply::Removed`).
    Removed(String),
    /// It lost its data and must not take part as its old self
    /// (`HelloReply::LostData`).
    LostData(String),
}

const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long a dropped link that is connected goes on sending what was
/// queued before it (at most): a departing member's last message, the
/// heartbeat that tells it its removal committed, must not be dropped with
/// the link.
pub const LINK_CLOSE_FLUSH_MAX: Duration = Duration::from_secs(1);

async fn run_peer_link(
    node_id: NodeId,
    peer: NodeId,
    addr: String,
    identity: LinkIdentity,
    mut queue: mpsc::Receiver<Message>,
    closing: tokio_util::sync::CancellationToken,
    traffic: Arc<PeerTraffic>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut jitter_state = node_id.wrapping_mul(31).wrapping_add(peer) | 1;
    let mut connected_before = false;
    // A refusal is logged at WARN once per distinct reason, not per retry.
    let mut last_refusal: Option<String> = None;
    loop {
        let mut hello = Hello::new(&identity.cluster_id, Sender::Peer(node_id));
        hello.address = identity.address.clone();
        hello.cluster_token = identity.cluster_token.get();
        hello.fresh = identity.data_guard.fresh();
        // A link dropped before its connection is up ends at once (what it
        // queued is for a peer it cannot reach).
        let connected = tokio::select! {
            biased;
            _ = closing.cancelled() => return debug!(node = node_id, peer, %addr, "peer link closed"),
            connected = dial(&addr, hello) => connected,
        };
        // A peer that lost its data is sent nothing (it would vote and ack
        // as its old self); its own hellos tell it so.
        let connected = match connected {
            Ok((_, _, fresh)) => {
                match identity.data_guard.lost_data(node_id, peer, fresh, identity.cluster_token.get()) {
                    Some(reason) => Err(NetError::Refused(reason)),
                    None => connected,
                }
            }
            Err(e) => Err(e),
        };
        match connected {
            Ok((mut framed, _, _)) => {
                info!(node = node_id, peer, %addr, "connected to peer");
                connected_before = true;
                last_refusal = None;
                backoff = BACKOFF_MIN;
                // Once the link is dropped, its queue closes: the pump sends
                // what is left in it and returns, or is cut off after
                // LINK_CLOSE_FLUSH_MAX.
                let flush_deadline = async {
                    closing.cancelled().await;
                    tokio::time::sleep(LINK_CLOSE_FLUSH_MAX).await;
                };
                let pumped = tokio::select! {
                    pumped = pump(&mut framed, &mut queue, &traffic) => pumped,
                    _ = flush_deadline => Ok(()),
                };
                match pumped {
                    Ok(()) => return debug!(node = node_id, peer, %addr, "peer link closed"),
                    Err(e) => {
                        traffic.sent_failures.fetch_add(1, Ordering::Relaxed);
                        info!(node = node_id, peer, %addr, reason = %e, "lost peer link; reconnecting")
                    }
                }
            }
            Err(NetError::Removed(reason)) => {
                if let Some(removed) = &identity.removed {
                    let _ = removed.send(StopReason::Removed(reason));
                }
                return;
            }
            Err(NetError::LostData(reason)) => {
                if let Some(removed) = &identity.removed {
                    let _ = removed.send(StopReason::LostData(reason));
                }
                return;
            }
            Err(NetError::Refused(reason)) => {
                traffic.sent_failures.fetch_add(1, Ordering::Relaxed);
                if last_refusal.as_deref() != Some(reason.as_str()) {
                    warn!(node = node_id, peer, %addr, "peer refused this node: {reason}");
                    last_refusal = Some(reason);
                }
            }
            Err(e) => {
                traffic.sent_failures.fetch_add(1, Ordering::Relaxed);
                if connected_before {
                    debug!(node = node_id, peer, %addr, reason = %e, "peer unreachable");
                }
            }
        }
        // Messages queued for a dead peer are stale by the time it returns:
        // Raft will resend what matters.
        while queue.try_recv().is_ok() {}
        jitter_state ^= jitter_state << 13;
        jitter_state ^= jitter_state >> 7;
        jitter_state ^= jitter_state << 17;
        let jitter = Duration::from_millis(jitter_state % (backoff.as_millis() as u64 / 2 + 1));
        tokio::select! {
            biased;
            _ = closing.cancelled() => return debug!(node = node_id, peer, %addr, "peer link closed"),
            _ = tokio::time::sleep(backoff + jitter) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Sends queued messages, coalescing whatever is queued into one flush.
/// The peer sends nothing on a link after its hello's answer, so a read
/// that ends says the connection is gone (the peer stopped, or closed it
/// because this node is no member any more): noticed at once, not at the
/// next send, which on an idle link (a follower's to another follower) may
/// never come.
async fn pump(
    framed: &mut FramedStream,
    queue: &mut mpsc::Receiver<Message>,
    traffic: &PeerTraffic,
) -> Result<(), NetError> {
    // One frame into the write buffer, counted.
    async fn feed(framed: &mut FramedStream, m: &Message, traffic: &PeerTraffic) -> Result<(), NetError> {
        let frame = Bytes::from(codec::encode(m)?);
        traffic.sent_bytes.fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
        framed.feed(frame).await?;
        Ok(())
    }
    loop {
        let first = tokio::select! {
            first = queue.recv() => match first {
                Some(first) => first,
                None => return Ok(()),
            },
            read = framed.next() => return Err(match read {
                Some(Err(e)) => NetError::Io(e),
                Some(Ok(_)) => NetError::Refused("the peer sent a frame on this node's link".to_string()),
                None => NetError::Closed,
            }),
        };
        feed(framed, &first, traffic).await?;
        let mut n = 1;
        while n < 512 {
            match queue.try_recv() {
                Ok(m) => feed(framed, &m, traffic).await?,
                Err(_) => break,
            }
            n += 1;
        }
        SinkExt::<Bytes>::flush(framed).await?;
    }
}

/// A client-side connection table: one [`PeerLink`] per peer.
pub fn spawn_peer_links(
    node_id: NodeId,
    peers: &BTreeMap<NodeId, String>,
    identity: &LinkIdentity,
    queue_capacity: usize,
    counters: Arc<NetCounters>,
) -> BTreeMap<NodeId, PeerLink> {
    peers
        .iter()
        .map(|(&id, addr)| {
            (
                id,
                PeerLink::spawn(
                    node_id,
                    id,
                    addr.clone(),
                    identity.clone(),
                    queue_capacity,
                    counters.clone(),
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    /// No frame of the binary protocol starts like an HTTP request: each
    /// method's first four bytes, read as a frame's length, are past the
    /// frame limit (whichever byte order the codec uses).
    #[test]
    fn http_methods_can_never_start_a_frame() {
        for method in super::HTTP_METHODS {
            let bytes: [u8; 4] = method[..4].try_into().unwrap();
            assert!(u32::from_be_bytes(bytes) as usize > super::MAX_FRAME_BYTES, "{method:?}");
            assert!(u32::from_le_bytes(bytes) as usize > super::MAX_FRAME_BYTES, "{method:?}");
            assert!(super::looks_like_http(method));
        }
        let hello_frame = {
            let mut f = 100u32.to_be_bytes().to_vec();
            f.extend_from_slice(b"hello");
            f
        };
        assert!(!super::looks_like_http(&hello_frame));
        assert!(!super::looks_like_http(b"GE"));
    }

    use super::*;

    /// A client protocol of the tests' own: a request names a key, the
    /// answer is a value.
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Get {
        id: u64,
        key: Vec<u8>,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Value {
        id: u64,
        value: Vec<u8>,
    }

    struct Gets;

    impl ClientProtocol for Gets {
        type Request = Get;
        type Answer = Vec<u8>;
        type Response = Value;
        fn request_id(request: &Get) -> u64 {
            request.id
        }
        fn response(id: u64, value: Vec<u8>) -> Value {
            Value { id, value }
        }
        fn answer_bytes(value: &Vec<u8>) -> usize {
            64 + value.len()
        }
    }

    #[test]
    fn a_peer_hello_with_another_cluster_token_is_refused_naming_both_tokens() {
        let config = ListenerConfig {
            node_id: 1,
            cluster_id: "c".into(),
            peers: SharedPeers::new([2]),
            cluster_token: SharedToken::new(0xa),
            limits: ConnectionLimits::default(),
            http: None,
            data_guard: Default::default(),
        };
        let hello = |token| Hello { cluster_token: token, ..Hello::new("c", Sender::Peer(2)) };
        let e = check_hello(&hello(0xb), &config).unwrap_err();
        assert!(e.contains("000000000000000b") && e.contains("000000000000000a"), "{e}");
        assert!(check_hello(&hello(0xa), &config).is_ok());
        assert!(check_hello(&hello(0), &config).is_ok(), "a node that knows no token yet may join");
        config.cluster_token.set(0);
        assert!(check_hello(&hello(0xb), &config).is_ok(), "a node that knows none accepts any");
        let e = check_hello(&Hello::new("c", Sender::Peer(3)), &config).unwrap_err();
        assert!(e.contains("node 3 is not a member"), "{e}");
    }

    /// A client pipelining far more requests than a connection holds answers
    /// for, reading none until all are sent, still gets every answer: the
    /// connection stops being read instead of dropping answers.
    #[tokio::test]
    async fn a_client_pipelining_past_the_answer_queue_gets_every_answer() {
        let (addr, mut inbound_rx, _) = listen(ConnectionLimits::default()).await;
        // The "node": answers every request at once with a value large
        // enough that the socket buffers fill long before the answers run
        // out (4 KiB: 4096 waiting answers stay within the 64 MiB budget).
        tokio::spawn(async move {
            while let Some(event) = inbound_rx.recv().await {
                if let Inbound::Client { reply, .. } = event {
                    reply.send(vec![7; 4 << 10]);
                }
            }
        });

        let requests = CLIENT_REQUESTS_IN_FLIGHT_MAX as u64 + 2000;
        let (mut framed, _) = connect(&addr, "t", Sender::Client).await.unwrap();
        for id in 1..=requests {
            let request = Get { id, key: b"k".to_vec() };
            feed_frame(&mut framed, &request).await.unwrap();
        }
        SinkExt::<Bytes>::flush(&mut framed).await.unwrap();
        // A slow reader: it reads nothing for a while, so the socket fills
        // and answers pile up on the node's side. (Not waiting for anything:
        // whatever the node does meanwhile, no answer may be lost.)
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut seen = 0;
        let read_all = async {
            while seen < requests {
                let answer: Value = recv_frame(&mut framed).await.unwrap();
                seen += 1;
                assert_eq!(answer.id, seen, "answers come in request order");
            }
        };
        let finished = tokio::time::timeout(Duration::from_secs(30), read_all).await;
        assert!(finished.is_ok(), "only {seen} of {requests} answers arrived");
    }

    /// A listener of cluster `t` with these limits on a port of its own:
    /// its address, what it hands the node, and its counters.
    async fn listen(limits: ConnectionLimits) -> (String, mpsc::Receiver<Inbound<Gets>>, Arc<NetCounters>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let config = Arc::new(ListenerConfig {
            node_id: 1,
            cluster_id: "t".into(),
            peers: SharedPeers::new([]),
            cluster_token: SharedToken::default(),
            limits,
            http: None,
            data_guard: Default::default(),
        });
        let (inbound_tx, inbound_rx) = mpsc::channel(65_536);
        let counters = Arc::new(NetCounters::default());
        tokio::spawn(serve(listener, config, inbound_tx, counters.clone()));
        (addr, inbound_rx, counters)
    }

    /// Case 3 of issue 10: a client pipelining gets of a 1 MiB value and
    /// never reading grew a leader to 4.1 GB. Its answers now count against
    /// the connection's budget: past it the connection is closed (its
    /// answers dropped), and the listener serves the next client as before.
    #[tokio::test]
    async fn a_client_that_never_reads_its_answers_is_closed_at_its_budget() {
        let limits =
            ConnectionLimits { answer_bytes_per_connection_max: 8 << 20, ..ConnectionLimits::default() };
        let (addr, mut inbound_rx, counters) = listen(limits).await;
        let answered = Arc::new(AtomicU64::new(0));
        let answered_by_node = answered.clone();
        tokio::spawn(async move {
            while let Some(event) = inbound_rx.recv().await {
                if let Inbound::Client { reply, .. } = event {
                    answered_by_node.fetch_add(1, Ordering::Relaxed);
                    reply.send(vec![7; 1 << 20]);
                }
            }
        });
        let (mut greedy, _) = connect(&addr, "t", Sender::Client).await.unwrap();
        let get = |id| Get { id, key: b"k".to_vec() };
        // It sends and never reads; the node closes it once its unread
        // answers pass 8 MiB, so its writes start failing.
        let mut sent = 0u64;
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                sent += 1;
                if send_frame(&mut greedy, &get(sent)).await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the greedy connection is still open after {sent} requests");
        let answered = answered.load(Ordering::Relaxed);
        assert!(answered < 200, "{answered} answers of 1 MiB were made for a client that reads none");
        assert!(counters.connections_refused.load(Ordering::Relaxed) >= 1);
        // Another client is served as if nothing happened.
        let (mut polite, _) = connect(&addr, "t", Sender::Client).await.unwrap();
        send_frame(&mut polite, &get(1)).await.unwrap();
        let answer: Value = recv_frame(&mut polite).await.unwrap();
        assert_eq!(answer.value, vec![7; 1 << 20]);
    }

    /// Case 5 of issue 10: a frame sent a byte at a time held its
    /// connection forever, and 40 partial frames of 16 MiB held 718 MiB.
    /// A begun frame must now arrive within the frame timeout, and the
    /// buffer of a partial frame holds what arrived, not what it claims.
    #[tokio::test]
    async fn a_frame_that_arrives_too_slowly_closes_its_connection() {
        use tokio::io::AsyncWriteExt;
        let limits =
            ConnectionLimits { frame_timeout: Duration::from_millis(300), ..ConnectionLimits::default() };
        let (addr, _inbound_rx, _) = listen(limits).await;
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        // The header of a 16 MiB hello, then a byte now and then.
        stream.write_all(&(16u32 << 20).to_be_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        let mut closed = false;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if stream.write_all(&[1]).await.is_err() {
                closed = true;
                break;
            }
        }
        // A write to a closed socket may succeed once; a read tells for sure.
        let mut byte = [0u8; 1];
        use tokio::io::AsyncReadExt;
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
        assert!(closed || matches!(read, Ok(Ok(0)) | Ok(Err(_))), "still open after {:?}", started.elapsed());
    }

    /// A peer of the tests' own on a port of its own: it takes link
    /// connections and reads their hellos, answering them (`welcome`) or
    /// never.
    async fn peer_listener() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        (listener, addr)
    }

    /// Takes the next link connection and its hello (within 10 s).
    async fn accept_hello(listener: &TcpListener) -> (FramedStream, Hello) {
        let next = async {
            let (stream, _) = listener.accept().await.unwrap();
            let mut framed = framed(stream);
            let hello: Hello = recv_frame(&mut framed).await.unwrap();
            (framed, hello)
        };
        tokio::time::timeout(Duration::from_secs(10), next).await.expect("no link connected within 10 s")
    }

    fn link_to(addr: &str, counters: &Arc<NetCounters>) -> PeerLink {
        let identity = LinkIdentity {
            cluster_id: "t".into(),
            cluster_token: SharedToken::default(),
            address: "127.0.0.1:1".into(),
            removed: None,
            data_guard: DataGuard::default(),
        };
        PeerLink::spawn(1, 2, addr.to_string(), identity, 16, counters.clone())
    }

    /// What the peer's side of a connection reads next, if it ends within
    /// `within`: `None` if the connection is still open then.
    async fn closed_within(framed: &mut FramedStream, within: Duration) -> Option<Result<Message, NetError>> {
        tokio::time::timeout(within, recv_frame::<Message>(framed)).await.ok()
    }

    fn heartbeat() -> Message {
        Message {
            from: 1,
            to: 2,
            term: 1,
            body: raft_core::MessageBody::VoteRequest {
                pre_vote: true,
                last_log_index: 0,
                last_log_term: 0,
                transfer: false,
            },
        }
    }

    /// A fresh peer (bootstrapped on an empty data directory) that the
    /// cluster knows held data lost it: its hello is answered `LostData`,
    /// while the same peer with its data is welcomed, and so is a fresh one
    /// the cluster never knew to hold data (a first start).
    #[tokio::test]
    async fn a_fresh_peer_known_to_have_held_data_is_told_it_lost_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let guard = DataGuard::new(false);
        guard.set_holders([2]);
        let config = Arc::new(ListenerConfig {
            node_id: 1,
            cluster_id: "t".into(),
            peers: SharedPeers::new([2, 3]),
            cluster_token: SharedToken::new(0xa),
            limits: ConnectionLimits::default(),
            http: None,
            data_guard: guard,
        });
        let (inbound_tx, _inbound_rx) = mpsc::channel::<Inbound<Gets>>(16);
        tokio::spawn(serve(listener, config, inbound_tx, Arc::new(NetCounters::default())));
        let hello = |id, fresh| Hello { fresh, ..Hello::new("t", Sender::Peer(id)) };
        match connect_with(&addr, hello(2, true)).await {
            Err(NetError::LostData(reason)) => {
                assert!(
                    reason.contains("node 2 was already a member") && reason.contains("--join"),
                    "{reason}"
                )
            }
            other => panic!("a fresh node 2 was answered {:?}", other.map(|(_, id)| id)),
        }
        assert!(connect_with(&addr, hello(2, false)).await.is_ok(), "node 2 with its data is refused");
        assert!(
            connect_with(&addr, hello(3, true)).await.is_ok(),
            "a fresh node 3 that never held data is refused"
        );
    }

    /// A link whose peer welcomes it as fresh, while the cluster knows that
    /// peer held data, sends it nothing (no vote request, no entry): it
    /// hangs up and tries again later; a peer with its data gets the message.
    #[tokio::test]
    async fn a_link_sends_nothing_to_a_peer_that_lost_its_data() {
        let (listener, addr) = peer_listener().await;
        let counters = Arc::new(NetCounters::default());
        let guard = DataGuard::new(false);
        guard.set_holders([2]);
        let identity = LinkIdentity {
            cluster_id: "t".into(),
            cluster_token: SharedToken::new(0xa),
            address: "127.0.0.1:1".into(),
            removed: None,
            data_guard: guard.clone(),
        };
        let link = PeerLink::spawn(1, 2, addr.to_string(), identity, 16, counters.clone());
        let (mut framed, _) = accept_hello(&listener).await;
        send_frame(&mut framed, &HelloReply::Welcome { node_id: 2, fresh: true }).await.unwrap();
        link.send(heartbeat());
        let got = closed_within(&mut framed, Duration::from_secs(2)).await;
        assert!(matches!(got, Some(Err(NetError::Closed))), "a peer that lost its data got {got:?}");
        assert!(counters.peer(2).sent_failures.load(Ordering::Relaxed) >= 1);
        // It comes back with its data restored: welcomed, it is sent what
        // is queued from then on.
        let (mut framed, _) = accept_hello(&listener).await;
        send_frame(&mut framed, &HelloReply::Welcome { node_id: 2, fresh: false }).await.unwrap();
        link.send(heartbeat());
        let got = closed_within(&mut framed, Duration::from_secs(10)).await;
        assert!(matches!(&got, Some(Ok(m)) if *m == heartbeat()), "{got:?}");
    }

    /// A link to a member that left the configuration is dropped by the
    /// node: its connection closes, and it never dials the address again
    /// (a link left running would redial within its backoff cap of
    /// BACKOFF_MAX plus jitter, forever).
    #[tokio::test]
    async fn a_dropped_link_closes_its_connection_and_never_dials_again() {
        let (listener, addr) = peer_listener().await;
        let counters = Arc::new(NetCounters::default());
        let link = link_to(&addr, &counters);
        assert_eq!(counters.peer_links_open.load(Ordering::Relaxed), 1);
        let (mut framed, hello) = accept_hello(&listener).await;
        assert_eq!(hello.sender, Sender::Peer(1));
        send_frame(&mut framed, &HelloReply::Welcome { node_id: 2, fresh: false }).await.unwrap();
        assert!(link.send(heartbeat()));
        let got = closed_within(&mut framed, Duration::from_secs(10)).await;
        assert!(matches!(&got, Some(Ok(m)) if *m == heartbeat()), "{got:?}");

        drop(link);
        let end = closed_within(&mut framed, Duration::from_secs(2)).await;
        assert!(matches!(end, Some(Err(NetError::Closed))), "the link's connection stayed open: {end:?}");
        let redial = tokio::time::timeout(BACKOFF_MAX * 3, listener.accept()).await;
        assert!(redial.is_err(), "a dropped link dialed its peer again");
        assert_eq!(counters.peer_links_open.load(Ordering::Relaxed), 0, "its task still runs");
    }

    /// What a connected link had queued when it was dropped still goes
    /// out before its connection closes: the leader's last heartbeat to a
    /// member whose removal just committed, which tells it so, is queued
    /// in the same batch that drops the link.
    #[tokio::test]
    async fn a_dropped_link_sends_what_it_had_queued_then_closes() {
        let (listener, addr) = peer_listener().await;
        let counters = Arc::new(NetCounters::default());
        let link = link_to(&addr, &counters);
        let (mut framed, _) = accept_hello(&listener).await;
        send_frame(&mut framed, &HelloReply::Welcome { node_id: 2, fresh: false }).await.unwrap();
        // Once the link's side is connected (it sends what it is given),
        // the last message and the drop come together.
        assert!(link.send(heartbeat()));
        let first = closed_within(&mut framed, Duration::from_secs(10)).await;
        assert!(matches!(&first, Some(Ok(m)) if *m == heartbeat()), "{first:?}");
        let last = Message { term: 2, ..heartbeat() };
        assert!(link.send(last.clone()));
        drop(link);
        let got = closed_within(&mut framed, Duration::from_secs(2)).await;
        assert!(matches!(&got, Some(Ok(m)) if *m == last), "the last message was dropped: {got:?}");
        let end = closed_within(&mut framed, Duration::from_secs(2)).await;
        assert!(matches!(end, Some(Err(NetError::Closed))), "the link's connection stayed open: {end:?}");
        wait_for(|| counters.peer_links_open.load(Ordering::Relaxed) == 0).await;
    }

    /// A link dropped while its hello waits for an answer (a peer that is
    /// slow, stopped, or not a Raft node) closes that connection at once,
    /// not when the hello times out.
    #[tokio::test]
    async fn a_link_dropped_while_its_hello_waits_closes_its_connection_at_once() {
        let (listener, addr) = peer_listener().await;
        let counters = Arc::new(NetCounters::default());
        let link = link_to(&addr, &counters);
        let (mut framed, _) = accept_hello(&listener).await;
        drop(link);
        let end = closed_within(&mut framed, HELLO_TIMEOUT / 5).await;
        assert!(
            matches!(end, Some(Err(NetError::Closed))),
            "the connection stayed open after its link was dropped: {end:?}"
        );
        wait_for(|| counters.peer_links_open.load(Ordering::Relaxed) == 0).await;
    }

    /// A link dropped while its peer is down (it waits to dial again) ends
    /// its task at once.
    #[tokio::test]
    async fn a_link_to_a_dead_peer_ends_when_dropped() {
        let addr = peer_listener().await.1; // the listener is dropped: nobody answers
        let counters = Arc::new(NetCounters::default());
        let link = link_to(&addr, &counters);
        tokio::time::sleep(BACKOFF_MIN * 4).await; // a few failed dials (nothing is waited for)
        assert_eq!(counters.peer_links_open.load(Ordering::Relaxed), 1);
        drop(link);
        wait_for(|| counters.peer_links_open.load(Ordering::Relaxed) == 0).await;
    }

    /// A peer connection is closed once its peer leaves the admitted set
    /// (its removal committed), so that its link calls again and learns
    /// that it was removed; the other peers' connections stay.
    #[tokio::test]
    async fn a_peer_connection_closes_once_its_peer_is_admitted_no_more() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let peers = SharedPeers::new([2, 3]);
        let config = Arc::new(ListenerConfig {
            node_id: 1,
            cluster_id: "t".into(),
            peers: peers.clone(),
            cluster_token: SharedToken::default(),
            limits: ConnectionLimits::default(),
            http: None,
            data_guard: Default::default(),
        });
        let (inbound_tx, _inbound_rx) = mpsc::channel::<Inbound<Gets>>(64);
        tokio::spawn(serve(listener, config, inbound_tx, Arc::new(NetCounters::default())));
        let (mut two, _) = connect(&addr, "t", Sender::Peer(2)).await.unwrap();
        let (mut three, _) = connect(&addr, "t", Sender::Peer(3)).await.unwrap();
        peers.set([3]);
        let end = tokio::time::timeout(Duration::from_secs(2), recv_frame::<HelloReply>(&mut two)).await;
        assert!(matches!(end, Ok(Err(NetError::Closed))), "node 2's connection stayed open: {end:?}");
        let still =
            tokio::time::timeout(Duration::from_millis(300), recv_frame::<HelloReply>(&mut three)).await;
        assert!(still.is_err(), "node 3's connection was closed: {still:?}");
        peers.note_removed([2]);
        let e = connect(&addr, "t", Sender::Peer(2)).await.err();
        assert!(matches!(e, Some(NetError::Removed(_))), "{e:?}");
    }

    /// A link notices at once that its peer closed the connection, with
    /// nothing to send (an idle follower-to-follower link would otherwise
    /// hold a dead connection until its next message), and dials again.
    #[tokio::test]
    async fn an_idle_link_notices_its_peer_closed_the_connection_and_dials_again() {
        let (listener, addr) = peer_listener().await;
        let counters = Arc::new(NetCounters::default());
        let _link = link_to(&addr, &counters);
        let (mut framed, _) = accept_hello(&listener).await;
        send_frame(&mut framed, &HelloReply::Welcome { node_id: 2, fresh: false }).await.unwrap();
        drop(framed);
        let again = tokio::time::timeout(BACKOFF_MAX, accept_hello(&listener)).await;
        assert!(again.is_ok(), "the link did not dial again after its peer closed the connection");
    }

    /// Waits (at most 2 s) until `done`.
    async fn wait_for(done: impl Fn() -> bool) {
        let end = std::time::Instant::now() + Duration::from_secs(2);
        while !done() {
            assert!(std::time::Instant::now() < end, "not done within 2 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn connections_past_the_caps_are_not_admitted_and_a_closed_one_frees_its_place() {
        let state = Arc::new(ListenerState::default());
        let limits = ConnectionLimits {
            connections_max: 3,
            connections_per_source_max: 2,
            ..ConnectionLimits::default()
        };
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let first = state.admit(a, &limits).unwrap();
        let _second = state.admit(a, &limits).unwrap();
        let e = state.admit(a, &limits).err().unwrap();
        assert!(
            e.contains("2 connections from 10.0.0.1") && e.contains("--max-connections-per-source"),
            "{e}"
        );
        let _third = state.admit(b, &limits).unwrap();
        let e = state.admit(b, &limits).err().unwrap();
        assert!(e.contains("3 connections are open") && e.contains("--max-connections"), "{e}");
        drop(first);
        assert!(state.admit(a, &limits).is_ok());
    }
}
