//! # raft-net
//!
//! Wire types and framing for Raft Lite. A frame is a 4-byte big-endian
//! length followed by a bincode body ([`transport::frame_codec`]); every
//! connection starts with a [`wire::Hello`] naming the protocol version, the
//! cluster id and the sender. Bodies are encoded with `raft-codec`. The
//! transport knows frames, hellos and Raft messages; the client protocol it
//! serves is a type parameter ([`transport::ClientProtocol`]).
#![deny(missing_docs)]

pub mod ratelimit;
pub mod transport;
pub mod wire;
