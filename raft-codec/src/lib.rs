//! # raft-codec
//!
//! The one place where values become bytes and back. Every frame body
//! (`raft-net`), WAL record and snapshot file (`raft-node`) and replicated
//! command (`raft-kv`) goes through [`encode`] and [`decode`]; swapping the
//! format (bincode 2 today) is a change to this crate.
//! Decoding is bounded: a hostile length inside a body cannot make the
//! decoder allocate more than [`DECODE_LIMIT_BYTES`].
#![deny(missing_docs)]

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest value decode will allocate for, in bytes (64 MiB).
pub const DECODE_LIMIT_BYTES: usize = 64 << 20;

/// A value that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be serialized.
    #[error("encode failed: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type.
    #[error("decode failed: {0}")]
    Decode(String),
    /// The bytes decoded, but some were left over.
    #[error("decode left {0} trailing bytes")]
    Trailing(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT_BYTES>()
}

/// Serializes `value`.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Serializes `value`, appending to `out` (no intermediate buffer). On error
/// `out` may hold part of the encoding after its old end: truncate it back.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(|_| ())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Serializes `value` straight into `out` (a file, a socket), with no
/// intermediate buffer.
pub fn encode_to_writer<T: Serialize, W: std::io::Write>(value: &T, out: &mut W) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(|_| ())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// The length of `value`'s encoding, in bytes, found without building it
/// (the bytes of every slice are counted, not copied).
pub fn encoded_len<T: Serialize>(value: &T) -> Result<u64, CodecError> {
    /// A writer that only counts.
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len() as u64;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    encode_to_writer(value, &mut count)?;
    Ok(count.0)
}

/// Deserializes a whole `T` from `bytes`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::{Entry, EntryPayload, Message, MessageBody};

    #[test]
    fn a_message_round_trips() {
        let m = Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::Append {
                prev_log_index: 4,
                prev_log_term: 2,
                entries: vec![Entry {
                    term: 3,
                    index: 5,
                    payload: EntryPayload::Command(b"SET x=5".to_vec()),
                }],
                leader_commit: 4,
            },
        };
        let bytes = encode(&m).unwrap();
        assert_eq!(decode::<Message>(&bytes).unwrap(), m);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for seed in 0u64..2000 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let bytes: Vec<u8> = (0..(seed % 64))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode::<Message>(&bytes);
        }
    }

    #[test]
    fn a_huge_declared_length_does_not_allocate() {
        // A Vec<u8> claiming 2^60 elements: the limit refuses it up front.
        let mut bytes = vec![253u8];
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let err = decode::<Vec<u8>>(&bytes).unwrap_err();
        assert!(matches!(err, CodecError::Decode(_)), "{err}");
    }

    #[test]
    fn encoded_len_is_the_length_of_the_encoding() {
        let value = (vec![7u8; 300], "key".to_string(), u64::MAX);
        assert_eq!(encoded_len(&value).unwrap(), encode(&value).unwrap().len() as u64);
        let mut out = Vec::new();
        encode_to_writer(&value, &mut out).unwrap();
        assert_eq!(out, encode(&value).unwrap());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&7u64).unwrap();
        bytes.push(0);
        assert!(matches!(decode::<u64>(&bytes), Err(CodecError::Trailing(1))));
    }
}
