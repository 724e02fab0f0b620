//! TCP transport: framing, the hello handshake, the inbound listener, and one
//! outbound link per peer.
//!
//! A misbehaving connection (no hello in time, a wrong cluster id or protocol
//! version, an undecodable or oversized frame, a peer claiming another id) is
//! closed with a logged reason; the node goes on. Peer links reconnect with
//! capped exponential backoff and jitter, each with its own bounded queue, so
//! a dead or slow peer never blocks the others: when a queue is full, new
//! messages to that peer are dropped (Raft retransmits).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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

use crate::codec::{self, CodecError};
use crate::wire::{
    describe_token, ClientRequest, ClientResponse, Hello, HelloReply, ResponseKind, Sender, MAGIC,
    PROTOCOL_VERSION,
};

/// Largest frame accepted or sent (16 MiB): a snapshot chunk is 1 MiB by default.
pub const MAX_FRAME_BYTES: usize = 16 << 20;
/// How long a new connection may take to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Most requests of one client connection waiting for their answers: past
/// this, the connection is not read until answers have gone out.
pub const CLIENT_REQUESTS_IN_FLIGHT_MAX: usize = 4096;

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
    let stream = TcpStream::connect(addr).await?;
    let mut framed = framed(stream);
    send_frame(&mut framed, &hello).await?;
    match tokio::time::timeout(HELLO_TIMEOUT, recv_frame::<HelloReply>(&mut framed)).await {
        Err(_) => Err(NetError::HelloTimeout),
        Ok(Err(e)) => Err(e),
        Ok(Ok(HelloReply::Welcome { node_id })) => Ok((framed, node_id)),
        Ok(Ok(HelloReply::Refused { reason })) => Err(NetError::Refused(reason)),
    }
}

/// What the listener hands to the node's event loop.
#[derive(Debug)]
pub enum Inbound {
    /// A Raft message from a peer (sender already checked against the hello).
    Peer(Message),
    /// A client request; answer it through `reply`.
    Client {
        /// The request.
        request: ClientRequest,
        /// Where the response goes.
        reply: Reply,
    },
}

/// Where the answer to one client request goes: a place in its connection's
/// queue of answers, reserved before the request was taken in, so that an
/// answer is never dropped for want of room, however many requests a client
/// pipelines (the connection is read no further while
/// [`CLIENT_REQUESTS_IN_FLIGHT_MAX`] of its requests wait for answers).
/// Dropping a `Reply` unanswered frees its place; the client gets no answer.
#[derive(Debug)]
pub struct Reply {
    id: u64,
    permit: mpsc::OwnedPermit<ClientResponse>,
}

impl Reply {
    /// The request's id, echoed in the answer.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues the answer for the connection's writer (if the connection is
    /// gone, the answer goes nowhere).
    pub fn send(self, result: ResponseKind) {
        self.permit.send(ClientResponse { id: self.id, result });
    }
}

/// Counters of refused connections and frames, shared with the node.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Connections closed because of a bad hello, frame or sender.
    pub connections_refused: AtomicU64,
    /// Messages dropped because a peer's queue was full.
    pub peer_messages_dropped: AtomicU64,
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

/// What the listener needs to know.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// The cluster id every hello must carry.
    pub cluster_id: String,
    /// The peers allowed to connect.
    pub peers: Vec<NodeId>,
    /// This node's cluster token: a peer's hello with another (non-zero)
    /// token is refused.
    pub cluster_token: SharedToken,
}

/// Accepts connections until the listener fails; each connection runs in its
/// own task and ends on its own errors only.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ListenerConfig>,
    inbound: mpsc::Sender<Inbound>,
    counters: Arc<NetCounters>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let (config, inbound, counters) = (config.clone(), inbound.clone(), counters.clone());
                tokio::spawn(async move {
                    if let Err(reason) = handle_connection(stream, addr, &config, inbound).await {
                        match reason {
                            NetError::Closed => debug!(node = config.node_id, %addr, "connection closed"),
                            reason => {
                                counters.connections_refused.fetch_add(1, Ordering::Relaxed);
                                warn!(node = config.node_id, %addr, %reason, "closed connection");
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

async fn handle_connection(
    stream: TcpStream,
    addr: SocketAddr,
    config: &ListenerConfig,
    inbound: mpsc::Sender<Inbound>,
) -> Result<(), NetError> {
    let mut framed = framed(stream);
    let hello: Hello = match tokio::time::timeout(HELLO_TIMEOUT, recv_frame(&mut framed)).await {
        Err(_) => return Err(NetError::HelloTimeout),
        Ok(result) => result?,
    };
    if let Err(reason) = check_hello(&hello, config) {
        let _ = send_frame(&mut framed, &HelloReply::Refused { reason: reason.clone() }).await;
        return Err(NetError::Refused(reason));
    }
    send_frame(&mut framed, &HelloReply::Welcome { node_id: config.node_id }).await?;
    match hello.sender {
        Sender::Peer(peer) => {
            info!(node = config.node_id, peer, %addr, "peer connected");
            loop {
                let m: Message = recv_frame(&mut framed).await?;
                if m.from != peer || m.to != config.node_id {
                    return Err(NetError::Refused(format!(
                        "peer {peer} sent a message from {} to {}",
                        m.from, m.to
                    )));
                }
                if inbound.send(Inbound::Peer(m)).await.is_err() {
                    return Ok(()); // the node is shutting down
                }
            }
        }
        Sender::Client => serve_client(framed, inbound).await,
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
        if !config.peers.contains(&id) {
            return Err(format!(
                "node {id} is not a member of node {}'s cluster (its members besides itself are {:?}); \
                 start node {id} with the cluster's --peers, or add it as a member",
                config.node_id, config.peers
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

async fn serve_client(framed: FramedStream, inbound: mpsc::Sender<Inbound>) -> Result<(), NetError> {
    let (mut sink, mut stream) = framed.split();
    let (reply_tx, mut reply_rx) = mpsc::channel::<ClientResponse>(CLIENT_REQUESTS_IN_FLIGHT_MAX);
    let writer = tokio::spawn(async move {
        while let Some(response) = reply_rx.recv().await {
            let mut batch = vec![response];
            while let Ok(more) = reply_rx.try_recv() {
                batch.push(more);
                if batch.len() >= 256 {
                    break;
                }
            }
            for response in batch {
                let bytes = match codec::encode(&response) {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(error = %e, "could not encode a client response");
                        continue;
                    }
                };
                if sink.feed(Bytes::from(bytes)).await.is_err() {
                    return;
                }
            }
            if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
                return;
            }
        }
    });
    let result = loop {
        // Room for this request's answer first: with every place taken, the
        // connection waits here, unread, until answers have been written.
        let Ok(permit) = reply_tx.clone().reserve_owned().await else { break Ok(()) };
        let request: ClientRequest = match stream.next().await {
            Some(Ok(bytes)) => match codec::decode(&bytes) {
                Ok(r) => r,
                Err(e) => break Err(NetError::Codec(e)),
            },
            Some(Err(e)) => break Err(NetError::Io(e)),
            None => break Err(NetError::Closed),
        };
        let reply = Reply { id: request.id, permit };
        if inbound.send(Inbound::Client { request, reply }).await.is_err() {
            break Ok(());
        }
    };
    drop(reply_tx);
    // Let answers to requests already taken in go out before closing.
    let _ = writer.await;
    result
}

/// The sending half of a link to one peer.
#[derive(Clone, Debug)]
pub struct PeerLink {
    peer: NodeId,
    queue: mpsc::Sender<Message>,
    counters: Arc<NetCounters>,
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
        tokio::spawn(run_peer_link(node_id, peer, addr, identity, rx));
        PeerLink { peer, queue: tx, counters }
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
}

const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

async fn run_peer_link(
    node_id: NodeId,
    peer: NodeId,
    addr: String,
    identity: LinkIdentity,
    mut queue: mpsc::Receiver<Message>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut jitter_state = node_id.wrapping_mul(31).wrapping_add(peer) | 1;
    let mut connected_before = false;
    // A refusal is logged at WARN once per distinct reason, not per retry.
    let mut last_refusal: Option<String> = None;
    loop {
        let mut hello = Hello::new(&identity.cluster_id, Sender::Peer(node_id));
        hello.cluster_token = identity.cluster_token.get();
        match connect_with(&addr, hello).await {
            Ok((mut framed, _)) => {
                info!(node = node_id, peer, %addr, "connected to peer");
                connected_before = true;
                last_refusal = None;
                backoff = BACKOFF_MIN;
                match pump(&mut framed, &mut queue).await {
                    Ok(()) => return, // the node dropped its link: shutting down
                    Err(e) => info!(node = node_id, peer, %addr, reason = %e, "lost peer link; reconnecting"),
                }
            }
            Err(NetError::Refused(reason)) => {
                if last_refusal.as_deref() != Some(reason.as_str()) {
                    warn!(node = node_id, peer, %addr, "peer refused this node: {reason}");
                    last_refusal = Some(reason);
                }
            }
            Err(e) => {
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
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
        if queue.is_closed() {
            return;
        }
    }
}

/// Sends queued messages, coalescing whatever is queued into one flush.
async fn pump(framed: &mut FramedStream, queue: &mut mpsc::Receiver<Message>) -> Result<(), NetError> {
    loop {
        let Some(first) = queue.recv().await else { return Ok(()) };
        feed_frame(framed, &first).await?;
        let mut n = 1;
        while n < 512 {
            match queue.try_recv() {
                Ok(m) => feed_frame(framed, &m).await?,
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
    use super::*;
    use crate::wire::RequestKind;

    #[test]
    fn a_peer_hello_with_another_cluster_token_is_refused_naming_both_tokens() {
        let config = ListenerConfig {
            node_id: 1,
            cluster_id: "c".into(),
            peers: vec![2],
            cluster_token: SharedToken::new(0xa),
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let config = Arc::new(ListenerConfig {
            node_id: 1,
            cluster_id: "t".into(),
            peers: vec![],
            cluster_token: SharedToken::default(),
        });
        let (inbound_tx, mut inbound_rx) = mpsc::channel(65_536);
        tokio::spawn(serve(listener, config, inbound_tx, Arc::new(NetCounters::default())));
        // The "node": answers every request at once with a large value, so
        // that the socket buffers fill long before the answers run out.
        tokio::spawn(async move {
            while let Some(event) = inbound_rx.recv().await {
                if let Inbound::Client { reply, .. } = event {
                    reply.send(ResponseKind::Value(Some(vec![7; 16 << 10])));
                }
            }
        });

        let requests = CLIENT_REQUESTS_IN_FLIGHT_MAX as u64 + 2000;
        let (mut framed, _) = connect(&addr, "t", Sender::Client).await.unwrap();
        for id in 1..=requests {
            let request = ClientRequest { id, kind: RequestKind::Get { key: b"k".to_vec(), stale: true } };
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
                let answer: ClientResponse = recv_frame(&mut framed).await.unwrap();
                seen += 1;
                assert_eq!(answer.id, seen, "answers come in request order");
            }
        };
        let finished = tokio::time::timeout(Duration::from_secs(30), read_all).await;
        assert!(finished.is_ok(), "only {seen} of {requests} answers arrived");
    }
}
