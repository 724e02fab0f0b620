//! The key-value commands as they are replicated (an operation and the
//! client session that makes a retry apply once), their results, the size
//! limits a write must keep, and the classic lab text syntax (`SET x=5`).

use raft_core::NodeId;
use serde::{Deserialize, Serialize};

/// A key-value operation that changes state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Set `key` to `new` if its value is `expected` (`None`: absent).
    Cas {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The value the key must hold now.
        #[serde(with = "serde_bytes")]
        expected: Option<Vec<u8>>,
        /// The value to set.
        #[serde(with = "serde_bytes")]
        new: Vec<u8>,
    },
    /// Cluster bookkeeping, proposed by the leader itself (no client
    /// session): applied by every replica, kept in snapshots.
    Identity(IdentityOp),
}

/// What a cluster records about itself in its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentityOp {
    /// The cluster's token, chosen at random by its first leader. The first
    /// one applied wins; later ones (from a leader that did not know it
    /// yet) are ignored.
    Token(u64),
    /// This member holds the token entry durably: it has data of this
    /// cluster, so an empty data directory under its id is a member that
    /// lost its data, not a new one.
    MemberHasData(NodeId),
}

/// The size limits of a client write, checked by the client before it sends
/// and by the node before it proposes, so that the largest entry always fits
/// in an append frame (see [`WriteLimits::validate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteLimits {
    /// The largest key, in bytes.
    pub key_bytes_max: usize,
    /// The largest value, in bytes (each of a compare-and-swap's two).
    pub value_bytes_max: usize,
}

/// Room in a command for everything but its key and values (session,
/// sequence number, the operation's tag and lengths).
pub const COMMAND_OVERHEAD_BYTES: usize = 1024;

impl Default for WriteLimits {
    /// 4 KiB keys, 1 MiB values.
    fn default() -> WriteLimits {
        WriteLimits { key_bytes_max: 4 << 10, value_bytes_max: 1 << 20 }
    }
}

impl WriteLimits {
    /// The largest command these limits allow: a compare-and-swap of the
    /// largest key with two of the largest values, plus
    /// [`COMMAND_OVERHEAD_BYTES`] (2,102,272 bytes by default).
    pub fn command_bytes_max(&self) -> usize {
        self.key_bytes_max + 2 * self.value_bytes_max + COMMAND_OVERHEAD_BYTES
    }

    /// Checks that an append of `append_bytes_max` of entries plus one
    /// largest command (the core always sends at least one entry) fits in a
    /// frame of `frame_bytes_max`, with room for the message around them.
    pub fn validate(&self, append_bytes_max: usize, frame_bytes_max: usize) -> Result<(), String> {
        if self.key_bytes_max == 0 || self.value_bytes_max == 0 {
            return Err("--max-key-bytes and --max-value-bytes must be at least 1".to_string());
        }
        let needed = self.command_bytes_max() + append_bytes_max + 64 * 1024;
        if needed > frame_bytes_max {
            return Err(format!(
                "--max-key-bytes {} and --max-value-bytes {} make a command of up to {} bytes, which with \
                 the {append_bytes_max}-byte append budget does not fit in a {frame_bytes_max}-byte frame; \
                 lower them (a value may be at most {} bytes)",
                self.key_bytes_max,
                self.value_bytes_max,
                self.command_bytes_max(),
                (frame_bytes_max
                    .saturating_sub(append_bytes_max + 64 * 1024 + COMMAND_OVERHEAD_BYTES)
                    .saturating_sub(self.key_bytes_max))
                    / 2
            ));
        }
        Ok(())
    }

    /// Checks one client write; the error is one sentence naming the size
    /// and the limit.
    pub fn check(&self, op: &WriteOp) -> Result<(), String> {
        let (key, values): (&[u8], Vec<&[u8]>) = match op {
            WriteOp::Put { key, value } => (key, vec![value]),
            WriteOp::Delete { key } => (key, vec![]),
            WriteOp::Cas { key, expected, new } => {
                (key, expected.iter().map(Vec::as_slice).chain([&new[..]]).collect())
            }
            WriteOp::Identity(_) => {
                return Err(
                    "cluster bookkeeping is written by the leader itself, never by a client".to_string()
                )
            }
        };
        if key.len() > self.key_bytes_max {
            return Err(format!(
                "a key of {} bytes is above the largest this cluster takes ({} bytes, --max-key-bytes)",
                key.len(),
                self.key_bytes_max
            ));
        }
        if let Some(value) = values.iter().find(|v| v.len() > self.value_bytes_max) {
            return Err(format!(
                "a value of {} bytes is above the largest this cluster takes ({} bytes, --max-value-bytes); \
                 split it over several keys",
                value.len(),
                self.value_bytes_max
            ));
        }
        Ok(())
    }
}

/// A write as it is replicated: the operation plus the client session that
/// makes a retried write apply once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The client's session id (random, chosen by the client).
    pub client_id: u64,
    /// The client's sequence number for this write, starting at 1.
    pub seq: u64,
    /// What to do.
    pub op: WriteOp,
}

/// The outcome of an applied write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteResult {
    /// Put or delete done. The value before the write is not returned (as
    /// etcd by default): reading it would cost every replica a copy of a
    /// cold value per write; `existed` says whether there was one.
    Done {
        /// True if the key held a value before the write.
        existed: bool,
    },
    /// Compare-and-swap: whether it swapped, and the value found.
    Cas {
        /// True if the value was swapped.
        swapped: bool,
        /// The value found before the operation.
        #[serde(with = "serde_bytes")]
        current: Option<Vec<u8>>,
    },
    /// The sequence number is older than the session's last write: the
    /// client is confused (or two clients share an id).
    StaleSequence {
        /// The last sequence number the session applied.
        last_seq: u64,
    },
}

/// A command in the classic lab syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextCommand {
    /// `SET key=value`
    Set(String, String),
    /// `GET key`
    Get(String),
    /// `DEL key`
    Del(String),
}

/// Parses `SET x=5`, `GET x`, `DEL x` (keyword case-insensitive).
pub fn parse_text_command(text: &str) -> Result<TextCommand, String> {
    let text = text.trim();
    let (verb, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let rest = rest.trim();
    match verb.to_ascii_uppercase().as_str() {
        "SET" => {
            let (key, value) =
                rest.split_once('=').ok_or_else(|| format!("expected `SET key=value`, got `{text}`"))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("`{text}` has an empty key"));
            }
            Ok(TextCommand::Set(key.to_string(), value.trim().to_string()))
        }
        "GET" | "DEL" if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
            Ok(if verb.eq_ignore_ascii_case("GET") {
                TextCommand::Get(rest.to_string())
            } else {
                TextCommand::Del(rest.to_string())
            })
        }
        "GET" | "DEL" => Err(format!("expected `{} key`, got `{text}`", verb.to_ascii_uppercase())),
        _ => Err(format!("unknown command `{verb}`: use SET key=value, GET key or DEL key")),
    }
}

/// Renders a replicated command for logs and the `log` view.
pub fn describe_command(command: &Command) -> String {
    let s = |b: &[u8]| describe_bytes(b);
    match &command.op {
        WriteOp::Put { key, value } => format!("SET {}={}", s(key), s(value)),
        WriteOp::Delete { key } => format!("DEL {}", s(key)),
        WriteOp::Cas { key, expected, new } => {
            format!("CAS {} {}->{}", s(key), expected.as_deref().map_or("<absent>".to_string(), s), s(new))
        }
        WriteOp::Identity(IdentityOp::Token(token)) => format!("(cluster token {})", describe_token(*token)),
        WriteOp::Identity(IdentityOp::MemberHasData(id)) => format!("(member {id} has data)"),
    }
}

/// Renders a key or value for logs and the log view: printable UTF-8 of at
/// most 40 characters as it is, anything else as its length (and the start,
/// when printable), so that logging stays cheap and readable for binary values.
pub fn describe_bytes(b: &[u8]) -> String {
    const SHOWN: usize = 40;
    let printable = |s: &str| s.chars().all(|c| !c.is_control());
    match std::str::from_utf8(b) {
        Ok(s) if s.len() <= SHOWN && printable(s) => s.to_string(),
        Ok(s) if printable(s) => {
            let cut = (0..=SHOWN).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
            format!("{}…({} bytes)", &s[..cut], b.len())
        }
        _ => format!("<{} bytes>", b.len()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// raft-net's largest frame (16 MiB).
    const FRAME_BYTES: usize = 16 << 20;

    #[test]
    fn the_largest_command_the_limits_allow_fits_their_bound_and_an_append_frame() {
        let limits = WriteLimits::default();
        let op = WriteOp::Cas {
            key: vec![1; limits.key_bytes_max],
            expected: Some(vec![2; limits.value_bytes_max]),
            new: vec![3; limits.value_bytes_max],
        };
        assert_eq!(limits.check(&op), Ok(()));
        let command = Command { client_id: u64::MAX, seq: u64::MAX, op };
        let encoded = raft_codec::encode(&command).unwrap().len();
        assert!(encoded <= limits.command_bytes_max(), "{encoded} > {}", limits.command_bytes_max());
        assert_eq!(limits.validate(1 << 20, FRAME_BYTES), Ok(()));
        let too_big = WriteLimits { value_bytes_max: 8 << 20, ..limits };
        let e = too_big.validate(1 << 20, FRAME_BYTES).unwrap_err();
        assert!(e.contains("at most 7"), "{e}");
        let e =
            limits.check(&WriteOp::Put { key: b"k".to_vec(), value: vec![0; (1 << 20) + 1] }).unwrap_err();
        assert!(e.contains("1048577 bytes") && e.contains("1048576 bytes, --max-value-bytes"), "{e}");
        let e = limits.check(&WriteOp::Delete { key: vec![0; 4097] }).unwrap_err();
        assert!(e.contains("4097 bytes") && e.contains("--max-key-bytes"), "{e}");
    }

    #[test]
    fn bytes_render_short_text_as_is_and_the_rest_by_length() {
        assert_eq!(describe_bytes(b"x"), "x");
        assert_eq!(describe_bytes(&[0, 159, 146, 150]), "<4 bytes>");
        assert_eq!(describe_bytes("é".repeat(30).as_bytes()), format!("{}…(60 bytes)", "é".repeat(20)));
        let cmd =
            Command { client_id: 1, seq: 1, op: WriteOp::Put { key: b"k".to_vec(), value: vec![7; 100] } };
        assert_eq!(describe_command(&cmd), "SET k=<100 bytes>");
    }

    #[test]
    fn lab_syntax_parses() {
        assert_eq!(parse_text_command("SET x=5"), Ok(TextCommand::Set("x".into(), "5".into())));
        assert_eq!(
            parse_text_command("set  y = hello world "),
            Ok(TextCommand::Set("y".into(), "hello world".into()))
        );
        assert_eq!(parse_text_command("GET x"), Ok(TextCommand::Get("x".into())));
        assert_eq!(parse_text_command("del x"), Ok(TextCommand::Del("x".into())));
    }

    #[test]
    fn malformed_lab_commands_say_what_is_expected() {
        assert!(parse_text_command("SET x").unwrap_err().contains("SET key=value"));
        assert!(parse_text_command("GET").unwrap_err().contains("GET key"));
        assert!(parse_text_command("FOO x").unwrap_err().contains("unknown command"));
        assert!(parse_text_command("SET =5").unwrap_err().contains("empty key"));
    }
}
