//! What crosses a connection besides the client protocol (which is the
//! key-value service's, in `raft-kv`): the hello, its answer, and peer
//! messages.

use raft_core::{Message, NodeId};
use serde::{Deserialize, Serialize};

/// First four bytes of every hello: "RAFT".
pub const MAGIC: u32 = 0x5241_4654;
/// Bumped on any incompatible change of the wire types. 2: a put or delete
/// answers whether the key existed (`raft_kv::WriteResult::Done`), not the old value.
/// 3: the hello carries the cluster token; status shows the cluster identity.
/// 4: `raft_kv::ResponseKind::Invalid`, a request refused for good (too large).
/// 5: a snapshot's metadata carries the membership, not a voter list.
/// 6: membership requests (`Members`, `ChangeMembers`, `TransferLeader`);
/// a peer's hello carries its address.
/// 7: a write's and a read's answers carry their log index; hellos and
/// welcomes say whether the node is fresh (a founder bootstrapped on an empty
/// data directory that holds no entry from a leader yet), and a fresh node
/// that the cluster knows held data is answered `HelloReply::LostData`.
pub const PROTOCOL_VERSION: u32 = 7;

/// Who opens a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sender {
    /// Another node of the cluster; it will send [`Message`] frames.
    Peer(NodeId),
    /// A client; it will send client requests (`raft_kv::ClientRequest`).
    Client,
}

/// The first frame on every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: u32,
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The cluster the sender belongs to (or, for a client, wants).
    pub cluster_id: String,
    /// Who is talking.
    pub sender: Sender,
    /// The sender's cluster token, 0 while it knows none (a client, or a
    /// node of a cluster whose first leader has not committed one yet). Two
    /// clusters bootstrapped with identical flags have different tokens.
    pub cluster_token: u64,
    /// Where a peer serves (its advertised address), so that a node that
    /// does not know it yet (one waiting to be added) can answer; empty for
    /// a client.
    pub address: String,
    /// The sender is a founder that bootstrapped on an empty data
    /// directory and holds no entry from a leader yet (see
    /// `raft_net::transport::DataGuard`); false for a client.
    pub fresh: bool,
}

impl Hello {
    /// A hello for this build's protocol, with no cluster token.
    pub fn new(cluster_id: &str, sender: Sender) -> Hello {
        Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            cluster_id: cluster_id.to_string(),
            sender,
            cluster_token: 0,
            address: String::new(),
            fresh: false,
        }
    }
}

/// Renders a cluster token as operators see it (16 hex digits; `none` for 0).
pub fn describe_token(token: u64) -> String {
    if token == 0 {
        "none".to_string()
    } else {
        format!("{token:016x}")
    }
}

/// The answer to a hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Accepted by node `node_id`.
    Welcome {
        /// The accepting node.
        node_id: NodeId,
        /// Whether it is fresh (as [`Hello::fresh`]).
        fresh: bool,
    },
    /// Refused; the connection closes after this frame.
    Refused {
        /// One sentence saying why.
        reason: String,
    },
    /// Refused because the sender was removed from the cluster: it should
    /// stop (a supervisor restarting it must not bring it back by accident).
    Removed {
        /// One sentence saying so.
        reason: String,
    },
    /// Refused because the sender is fresh but the cluster knows it held
    /// data: it lost its data directory, forgot its votes and its log, and
    /// must not take part as its old self. It should stop with an error.
    LostData {
        /// One sentence saying so, and what to do.
        reason: String,
    },
}

/// What travels from peer to peer after the hello.
pub type PeerFrame = Message;
