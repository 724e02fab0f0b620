//! Fuzzing `KvStore::restore`, the one place where a peer's bytes become the
//! state machine (a leader's snapshot is checked with it before anything of
//! it is persisted or applied). Beside raft-core's `fuzz_step.rs`.
//!
//! Cases are snapshots in the store's own format-2 encoding (hand-encoded
//! here with mirror types; `the_hand_encoding_is_the_stores` pins that they
//! are the store's) whose tables are arbitrary: keys unsorted or repeated,
//! sessions sharing an index or used after the snapshot's index, a cluster
//! token that does not fit, indexes near `INDEX_MAX` and `u64::MAX`, pair
//! counts that disagree with the blocks, empty or cut blocks, bytes after
//! the end; plus damaged real snapshots and plain noise. For each:
//!
//! - `restore` never panics;
//! - refused, the store is exactly as it was;
//! - taken, the store then takes writes (new clients, old ones, evictions
//!   past its session bound) without a panic, and its own snapshot restores
//!   to an equal store.
//!
//! `FUZZ_CASES` sets the number of cases (default 2000, about a second; a
//! long run is `FUZZ_CASES=2000000 cargo test --release -p raft-kv --test
//! fuzz_restore`).

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use raft_kv::{ClusterIdentity, Command, KvStore, WriteOp, WriteResult};
use serde::Serialize;

/// The store's format-2 magic.
const MAGIC: [u8; 8] = *b"\xffRLKV\x00\x00\x02";

/// Mirror of the store's session record (same fields, same order).
#[derive(Clone, Debug, Serialize)]
struct Session {
    last_seq: u64,
    last_result: WriteResult,
    last_index: u64,
}

/// Mirror of the store's snapshot header.
#[derive(Clone, Debug, Serialize)]
struct Header {
    sessions: BTreeMap<u64, Session>,
    applied: u64,
    identity: ClusterIdentity,
    pairs: u64,
}

/// One hostile snapshot, before encoding.
#[derive(Clone, Debug)]
struct Spec {
    header: Header,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Pairs per block (0: an empty block where one is due).
    block_sizes: Vec<usize>,
    /// Bytes appended after the last block.
    trailing: Vec<u8>,
    /// Cut the encoding to this many bytes, if set.
    cut: Option<usize>,
}

fn push_block<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    let body = raft_codec::encode(value).expect("encodes");
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
}

fn encode(spec: &Spec) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    push_block(&mut out, &spec.header);
    let mut rest = &spec.pairs[..];
    let mut sizes = spec.block_sizes.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(1).min(rest.len());
        let (block, tail) = rest.split_at(n);
        let block: Vec<(&serde_bytes::Bytes, &serde_bytes::Bytes)> =
            block.iter().map(|(k, v)| (serde_bytes::Bytes::new(k), serde_bytes::Bytes::new(v))).collect();
        push_block(&mut out, &block);
        rest = tail;
        if n == 0 {
            break; // an empty block: the store must refuse it
        }
    }
    out.extend_from_slice(&spec.trailing);
    if let Some(cut) = spec.cut {
        out.truncate(cut.min(out.len()));
    }
    out
}

/// Indexes where the checks are: small, around a base, at the limits.
fn index() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..8,
        100u64..108,
        Just(raft_core::INDEX_MAX),
        Just(raft_core::INDEX_MAX + 1),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

fn result() -> impl Strategy<Value = WriteResult> {
    prop_oneof![
        any::<bool>().prop_map(|existed| WriteResult::Done { existed }),
        (any::<bool>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)))
            .prop_map(|(swapped, current)| WriteResult::Cas { swapped, current }),
        any::<u64>().prop_map(|last_seq| WriteResult::StaleSequence { last_seq }),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let sessions = proptest::collection::btree_map(
        0u64..6,
        (0u64..4, result(), index()).prop_map(|(last_seq, last_result, last_index)| Session {
            last_seq,
            last_result,
            last_index,
        }),
        0..5,
    );
    let identity =
        (prop_oneof![Just(0u64), any::<u64>()], index(), proptest::collection::btree_set(0u64..5, 0..3))
            .prop_map(|(token, token_index, members_with_data)| ClusterIdentity {
                token,
                token_index,
                members_with_data,
            });
    let key = proptest::collection::vec(0u8..4, 0..3);
    let pairs = proptest::collection::vec((key, proptest::collection::vec(any::<u8>(), 0..4)), 0..8);
    (
        sessions,
        index(),
        identity,
        pairs,
        proptest::option::of(0u64..12),
        proptest::collection::vec(0usize..4, 1..4),
        proptest::collection::vec(any::<u8>(), 0..3),
        proptest::option::of(0usize..200),
        proptest::array::uniform6(proptest::bool::weighted(0.8)),
    )
        .prop_map(
            |(
                mut sessions,
                mut applied,
                mut identity,
                mut pairs,
                pairs_claimed,
                block_sizes,
                trailing,
                cut,
                fix,
            )| {
                // Each invariant of a snapshot is kept with odds of 4 in 5, so
                // that about a quarter of the cases are well-formed and the
                // checks past the first broken one are reached too.
                if fix[0] {
                    pairs.sort();
                    pairs.dedup_by(|a, b| a.0 == b.0);
                }
                if fix[1] {
                    applied = 100 + applied % 8;
                }
                if fix[2] {
                    // Distinct last indexes, none after the snapshot's.
                    let mut next = applied.min(raft_core::INDEX_MAX);
                    for session in sessions.values_mut() {
                        session.last_index = next;
                        next = next.saturating_sub(1);
                    }
                }
                if fix[3] {
                    identity.token_index =
                        if identity.token == 0 { 0 } else { applied.min(1 + identity.token_index % 4) };
                }
                let keep_framing = fix[4];
                let claimed = match pairs_claimed {
                    Some(n) if !keep_framing => n,
                    _ => pairs.len() as u64,
                };
                let header = Header { sessions, applied, identity, pairs: claimed };
                Spec {
                    header,
                    pairs,
                    block_sizes: if keep_framing {
                        block_sizes.into_iter().map(|n| n.max(1)).collect()
                    } else {
                        block_sizes
                    },
                    trailing: if fix[5] { Vec::new() } else { trailing },
                    cut: if keep_framing { None } else { cut },
                }
            },
        )
}

fn put(client_id: u64, seq: u64, key: &[u8]) -> Command {
    Command { client_id, seq, op: WriteOp::Put { key: key.to_vec(), value: b"v".to_vec() } }
}

/// A store with a little of everything, to restore into (a refused
/// snapshot must leave it as it was).
fn occupied() -> KvStore {
    let mut kv = KvStore::new(3);
    for i in 1..=4u64 {
        kv.apply(i, put(i, 1, &[i as u8]));
    }
    kv
}

/// Restores `bytes` into a store and checks what the module docs promise.
fn check(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let mut kv = occupied();
    let before = kv.clone();
    if kv.restore(bytes).is_err() {
        prop_assert_eq!(&kv, &before, "a refused snapshot changed the store");
        return Ok(false);
    }
    // Taken: writes go on, by new clients and by those in the snapshot, past
    // the session bound (3), so that eviction walks the restored table.
    // (A snapshot from a node with a larger bound may hold more sessions:
    // the bound applies from the next write on, the same on every replica.)
    let mut index = kv.applied();
    let mut writes = 0;
    for client in 0..8u64 {
        if index >= raft_core::INDEX_MAX {
            break;
        }
        index += 1;
        writes += 1;
        kv.apply(index, put(client, 1 + client % 3, b"after"));
    }
    prop_assert!(writes == 0 || kv.sessions() <= 3, "{} sessions kept past the bound of 3", kv.sessions());
    let again = kv.snapshot().expect("a restored store snapshots");
    let mut copy = KvStore::new(3);
    copy.restore(&again).map_err(|e| TestCaseError::fail(format!("its own snapshot is refused: {e}")))?;
    prop_assert_eq!(&copy, &kv, "the store's own snapshot did not restore to an equal store");
    Ok(true)
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn restore_refuses_or_takes_any_snapshot_and_never_panics(spec in spec()) {
        check(&encode(&spec))?;
    }

    #[test]
    fn damaged_real_snapshots_and_noise_are_refused_or_taken_whole(
        flips in proptest::collection::vec((any::<usize>(), 1u8..), 0..4),
        cut in proptest::option::of(any::<usize>()),
        noise in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut real = occupied().snapshot().unwrap();
        for (at, byte) in flips {
            let len = real.len();
            real[at % len] ^= byte;
        }
        if let Some(cut) = cut {
            real.truncate(cut % (real.len() + 1));
        }
        check(&real)?;
        check(&noise)?;
        let mut magic_then_noise = MAGIC.to_vec();
        magic_then_noise.extend(&noise);
        check(&magic_then_noise)?;
    }
}

/// The mirror types encode as the store does: a store's snapshot and the
/// hand encoding of the same state are the same bytes (else the cases above
/// would test the decoder of another format).
#[test]
fn the_hand_encoding_is_the_stores() {
    let mut kv = KvStore::new(3);
    kv.apply(1, put(7, 1, b"a"));
    kv.apply(2, put(8, 1, b"b"));
    let mut sessions = BTreeMap::new();
    sessions
        .insert(7, Session { last_seq: 1, last_result: WriteResult::Done { existed: false }, last_index: 1 });
    sessions
        .insert(8, Session { last_seq: 1, last_result: WriteResult::Done { existed: false }, last_index: 2 });
    let spec = Spec {
        header: Header { sessions, applied: 2, identity: ClusterIdentity::default(), pairs: 2 },
        pairs: vec![(b"a".to_vec(), b"v".to_vec()), (b"b".to_vec(), b"v".to_vec())],
        block_sizes: vec![2],
        trailing: vec![],
        cut: None,
    };
    assert_eq!(encode(&spec), kv.snapshot().unwrap());
}

/// The generator reaches both outcomes (a fuzz that only ever sees
/// refusals tests the first check alone).
#[test]
fn the_cases_are_both_taken_and_refused() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut taken, mut refused) = (0, 0);
    for _ in 0..2000 {
        let spec = spec().new_tree(&mut runner).unwrap().current();
        match check(&encode(&spec)) {
            Ok(true) => taken += 1,
            Ok(false) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(taken >= 50 && refused >= 50, "{taken} taken, {refused} refused of 2000");
}
