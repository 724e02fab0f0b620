//! # raft-net
//!
//! Wire types and framing for Raft Lite. A frame is a 4-byte big-endian
//! length followed by a bincode body ([`transport::frame_codec`]); every
//! connection starts with a [`wire::Hello`] naming the protocol version, the
//! cluster id and the sender. All encoding lives in [`codec`].
#![deny(missing_docs)]

pub mod codec;
pub mod ratelimit;
pub mod transport;
pub mod wire;
