//! Fuzzing the core with hostile peers: arbitrary sequences of valid driver
//! calls (tick, campaign, propose, read_index, transfer_leadership,
//! persisted, applied, snapshot_taken, install/reject_snapshot, restart) on a
//! small cluster, interleaved with real messages delivered between its nodes
//! (in order, out of order, dropped, replayed, cut off by a partition) and
//! with hostile messages: every kind with arbitrary fields (terms and indexes
//! near 0, near the receiver's term, last, commit and snapshot indexes, near
//! `TERM_MAX`/`INDEX_MAX` and `u64::MAX`), from known and unknown ids, and
//! real messages with one field changed or sent to the wrong node. The
//! README promises that network input never panics the core: after every
//! input the test executes the node's actions as a driver would and checks
//! [`RaftNode::check_invariants`]. A case fails, and proptest shrinks it to
//! a minimal sequence, on a panic, a broken invariant, or a broken driver
//! contract: entries handed out with a gap or before they are durable, a
//! vote granted before it is durable, a durable state `restart` refuses; and,
//! while no hostile message has been delivered, two leaders in a term, two
//! entries applied at one index, or an entry acknowledged before it is
//! durable.
//!
//! Membership change: the cluster has up to five nodes, of which the first
//! one to three are its voters and the others start with no configuration
//! (they wait to be added). The driver proposes changes over ids 1..=5,
//! mostly sensible ones resolved against the membership in force (add a
//! node as a learner or voter, promote a learner, demote or remove a voter,
//! the leader included, several at once for a joint change), sometimes
//! arbitrary ones; hostile appends and snapshots carry memberships of every
//! shape the constructors make (none, joint, with the receiver removed or a
//! learner, up to `VOTERS_MAX` voters) and invalid ones encoded by hand
//! (a voter that is a learner too, members that are not the roles, no
//! incoming voters, damaged bytes), and real appends and snapshots are
//! forged to carry them. Further checks: a node's membership in force and
//! every committed membership entry (and snapshot membership) pass
//! [`Membership::check_invariants`], a committed membership entry has voters,
//! and no node sends a `VoteRequest` (pre-vote or not) while it is not a
//! voter in its own [`RaftNode::membership`]; among honest nodes, no leader
//! sends a snapshot without voters (its follower must drop it).
//!
//! - `FUZZ_CASES`: number of cases (default 2000, a few seconds; a long run
//!   is `FUZZ_CASES=2000000 cargo test --release -p raft-core --test fuzz_step`);
//! - `FUZZ_OPS`: most inputs per case (default 160);
//! - `FUZZ_IGNORE`: `|`-separated substrings of failures already known (a case
//!   failing with one counts as passing), to look for the next distinct one;
//! - `FUZZ_STATS`: print how often the interesting states were reached;
//! - `PROPTEST_RNG_SEED`: proptest's seed, for a run different from the last.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use raft_core::{
    Action, AppendResponse, ChangeOp, Config, DurableState, Entry, EntryPayload, Index, Membership,
    MembershipChange, Message, MessageBody, NodeId, RaftNode, Snapshot, SnapshotMeta, Term, TERM_MAX,
};

// ------------------------------------------------------------------ inputs

/// A number resolved against the receiving node's state when the input
/// runs, so that hostile messages hit the boundaries that matter (its term,
/// last index, commit, snapshot) whatever state the case has reached.
#[derive(Clone, Copy, Debug)]
enum Num {
    Lit(u64),
    Term(i8),
    Last(i8),
    Commit(i8),
    Snap(i8),
    LastTerm(i8),
    /// `TERM_MAX` (== `INDEX_MAX`) plus the offset.
    Half(i8),
    /// `u64::MAX` minus the offset.
    Max(u8),
    Any(u64),
}

/// What a number (or a membership) may be relative to.
#[derive(Clone, Debug)]
struct View {
    term: u64,
    last: u64,
    commit: u64,
    snap: u64,
    last_term: u64,
    membership: Membership,
}

impl View {
    fn of(node: &RaftNode) -> View {
        View {
            term: node.term(),
            last: node.last_index(),
            commit: node.commit_index(),
            snap: node.snapshot_meta().index,
            last_term: node.term_at(node.last_index()).unwrap_or(0),
            membership: node.membership().0.clone(),
        }
    }
}

fn offset(base: u64, d: i8) -> u64 {
    if d >= 0 {
        base.saturating_add(d as u64)
    } else {
        base.saturating_sub(d.unsigned_abs() as u64)
    }
}

impl Num {
    fn get(self, v: &View) -> u64 {
        match self {
            Num::Lit(x) | Num::Any(x) => x,
            Num::Term(d) => offset(v.term, d),
            Num::Last(d) => offset(v.last, d),
            Num::Commit(d) => offset(v.commit, d),
            Num::Snap(d) => offset(v.snap, d),
            Num::LastTerm(d) => offset(v.last_term, d),
            Num::Half(d) => offset(TERM_MAX, d),
            Num::Max(d) => u64::MAX - d as u64,
        }
    }
}

fn rare_num() -> impl Strategy<Value = Num> {
    prop_oneof![
        2 => (-1i8..=1).prop_map(Num::Half),
        1 => (0u8..=2).prop_map(Num::Max),
        1 => any::<u64>().prop_map(Num::Any),
    ]
}

/// A term: mostly around the receiver's term.
fn term_num() -> impl Strategy<Value = Num> {
    prop_oneof![
        3 => (0u64..=2).prop_map(Num::Lit),
        1 => (0u64..=12).prop_map(Num::Lit),
        6 => Just(Num::Term(0)),
        4 => (-2i8..=2).prop_map(Num::Term),
        2 => (-1i8..=1).prop_map(Num::LastTerm),
        1 => rare_num(),
    ]
}

/// An index: mostly around the receiver's last, commit and snapshot indexes.
fn index_num() -> impl Strategy<Value = Num> {
    prop_oneof![
        3 => (0u64..=2).prop_map(Num::Lit),
        1 => (0u64..=30).prop_map(Num::Lit),
        6 => (-3i8..=2).prop_map(Num::Last),
        3 => (-2i8..=2).prop_map(Num::Commit),
        2 => (-1i8..=2).prop_map(Num::Snap),
        1 => rare_num(),
    ]
}

/// A counter (read round, byte offset): small or wild.
fn small_num() -> impl Strategy<Value = Num> {
    prop_oneof![
        6 => (0u64..=8).prop_map(Num::Lit),
        1 => rare_num(),
    ]
}

#[derive(Clone, Debug)]
struct HEntry {
    index: Num,
    term: Num,
    payload: HPayload,
}

#[derive(Clone, Debug)]
enum HPayload {
    Blank,
    Command(Vec<u8>),
    Membership(AnyMSpec),
}

/// A membership for a hostile message: built with the constructors, or
/// encoded by hand (then possibly invalid).
#[derive(Clone, Debug)]
enum AnyMSpec {
    Built(MSpec),
    Raw(RawMSpec),
}

impl AnyMSpec {
    /// The payload of a configuration entry carrying it.
    fn payload(&self, v: &View) -> EntryPayload {
        match self {
            AnyMSpec::Built(m) => EntryPayload::membership(&m.build(v)),
            AnyMSpec::Raw(r) => EntryPayload::Membership(convert(r.encode(v))),
        }
    }

    /// The membership, for a snapshot's metadata: a hand-encoded one is
    /// decoded as it is, unchecked (the empty one if it does not decode).
    fn membership(&self, v: &View) -> Membership {
        match self {
            AnyMSpec::Built(m) => m.build(v),
            AnyMSpec::Raw(r) => decode_unchecked(&r.encode(v)).unwrap_or_default(),
        }
    }
}

/// `a` as the type a field of the core holds it in (a membership in a
/// snapshot's metadata, an entry's encoded membership), whichever that is.
fn convert<A, B: From<A>>(a: A) -> B {
    B::from(a)
}

/// `bytes` decoded as a membership, whatever it holds (what a peer's
/// snapshot metadata may carry: no invariant is checked).
fn decode_unchecked(bytes: &[u8]) -> Option<Membership> {
    bincode::serde::decode_from_slice::<Membership, _>(bytes, bincode::config::standard())
        .ok()
        .map(|(m, _)| m)
}

/// A membership's fields, as `Membership` serializes them (in order), to
/// encode by hand what its constructors never make.
#[derive(Clone, Debug, Default)]
struct RawParts {
    incoming: Vec<NodeId>,
    outgoing: Vec<NodeId>,
    learners: Vec<NodeId>,
    learners_next: Vec<NodeId>,
    auto_leave: bool,
    members: Vec<(NodeId, Vec<u8>)>,
}

impl RawParts {
    fn of(m: &Membership) -> RawParts {
        RawParts {
            incoming: m.voters().incoming.iter().collect(),
            outgoing: m.voters().outgoing.iter().collect(),
            learners: m.learners().iter().copied().collect(),
            learners_next: m.learners_next().iter().copied().collect(),
            auto_leave: m.auto_leave(),
            members: m.members().iter().map(|(&id, c)| (id, c.clone())).collect(),
        }
    }

    /// The members the roles name, each with no context.
    fn members_of_roles(&mut self) {
        let mut ids: Vec<NodeId> = [&self.incoming, &self.outgoing, &self.learners, &self.learners_next]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        self.members = ids.into_iter().map(|id| (id, Vec::new())).collect();
    }

    /// bincode's standard encoding (variable-length integers), as
    /// `EntryPayload::membership` writes it.
    fn encode(&self) -> Vec<u8> {
        fn int(out: &mut Vec<u8>, x: u64) {
            if x < 251 {
                out.push(x as u8);
            } else if x <= u16::MAX as u64 {
                out.push(251);
                out.extend((x as u16).to_le_bytes());
            } else if x <= u32::MAX as u64 {
                out.push(252);
                out.extend((x as u32).to_le_bytes());
            } else {
                out.push(253);
                out.extend(x.to_le_bytes());
            }
        }
        let mut out = Vec::new();
        for ids in [&self.incoming, &self.outgoing, &self.learners, &self.learners_next] {
            int(&mut out, ids.len() as u64);
            for &id in ids {
                int(&mut out, id);
            }
        }
        out.push(self.auto_leave as u8);
        int(&mut out, self.members.len() as u64);
        for (id, context) in &self.members {
            int(&mut out, *id);
            int(&mut out, context.len() as u64);
            out.extend(context);
        }
        out
    }
}

/// A hand-encoded membership: the receiver's or one of random roles
/// (overlapping, most likely), with one invariant broken, then perhaps its
/// bytes damaged.
#[derive(Clone, Debug)]
struct RawMSpec {
    /// `None`: the receiver's membership in force.
    roles: Option<[Vec<NodeId>; 4]>,
    corruption: Corruption,
    damage: Damage,
}

#[derive(Clone, Debug)]
enum Corruption {
    None,
    /// The id is also a learner (a voter's id: learner and voter at once).
    Learner(NodeId),
    /// The id is also a next learner (not an outgoing voter, most likely).
    LearnerNext(NodeId),
    /// A member (by position) is dropped from the members.
    DropMember(u8),
    /// A member with no role.
    ExtraMember(NodeId),
    FlipAutoLeave,
    /// No incoming voters, the rest kept.
    ClearIncoming,
}

#[derive(Clone, Debug)]
enum Damage {
    None,
    Truncate(u8),
    Trailing(Vec<u8>),
    Garbage(Vec<u8>),
}

impl RawMSpec {
    fn encode(&self, v: &View) -> Vec<u8> {
        let mut parts = match &self.roles {
            None => RawParts::of(&v.membership),
            Some([incoming, outgoing, learners, learners_next]) => {
                let mut parts = RawParts {
                    incoming: incoming.clone(),
                    outgoing: outgoing.clone(),
                    learners: learners.clone(),
                    learners_next: learners_next.clone(),
                    auto_leave: !outgoing.is_empty(),
                    members: Vec::new(),
                };
                parts.members_of_roles();
                parts
            }
        };
        let voter = |parts: &RawParts, id: NodeId| {
            let voters: Vec<NodeId> = parts.incoming.iter().chain(&parts.outgoing).copied().collect();
            if voters.is_empty() {
                id
            } else {
                voters[id as usize % voters.len()]
            }
        };
        match self.corruption {
            Corruption::None => {}
            Corruption::Learner(id) => {
                let id = voter(&parts, id);
                parts.learners.push(id);
                parts.learners.sort_unstable();
                parts.learners.dedup();
            }
            Corruption::LearnerNext(id) => {
                parts.learners_next.push(id);
                parts.learners_next.sort_unstable();
                parts.learners_next.dedup();
                parts.members_of_roles();
            }
            Corruption::DropMember(k) => {
                if !parts.members.is_empty() {
                    let k = k as usize % parts.members.len();
                    parts.members.remove(k);
                }
            }
            Corruption::ExtraMember(id) => {
                if parts.members.iter().all(|(m, _)| *m != id) {
                    parts.members.push((id, Vec::new()));
                    parts.members.sort_unstable();
                }
            }
            Corruption::FlipAutoLeave => parts.auto_leave = !parts.auto_leave,
            Corruption::ClearIncoming => parts.incoming.clear(),
        }
        let mut bytes = parts.encode();
        match &self.damage {
            Damage::None => {}
            Damage::Truncate(k) => bytes.truncate(*k as usize % (bytes.len() + 1)),
            Damage::Trailing(extra) => bytes.extend(extra),
            Damage::Garbage(garbage) => bytes = garbage.clone(),
        }
        bytes
    }
}

fn raw_mspec() -> impl Strategy<Value = RawMSpec> {
    let ids = || prop::collection::vec(member_id(), 0..=3);
    let roles = prop_oneof![
        2 => Just(None),
        3 => (ids(), ids(), ids(), prop_oneof![3 => Just(Vec::new()), 1 => ids()])
            .prop_map(|(a, b, c, d)| Some([a, b, c, d])),
    ];
    let corruption = prop_oneof![
        2 => Just(Corruption::None),
        4 => any::<u8>().prop_map(|id| Corruption::Learner(id as NodeId)),
        1 => member_id().prop_map(Corruption::LearnerNext),
        1 => any::<u8>().prop_map(Corruption::DropMember),
        1 => member_id().prop_map(Corruption::ExtraMember),
        1 => Just(Corruption::FlipAutoLeave),
        1 => Just(Corruption::ClearIncoming),
    ];
    let damage = prop_oneof![
        12 => Just(Damage::None),
        1 => any::<u8>().prop_map(Damage::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..4).prop_map(Damage::Trailing),
        1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(Damage::Garbage),
    ];
    (roles, corruption, damage).prop_map(|(roles, corruption, damage)| RawMSpec { roles, corruption, damage })
}

fn any_mspec() -> impl Strategy<Value = AnyMSpec> {
    prop_oneof![3 => mspec().prop_map(AnyMSpec::Built), 2 => raw_mspec().prop_map(AnyMSpec::Raw)]
}

/// A membership, built with the only constructors there are
/// (`Membership::default`, `with_voters`, `new_voters`, `apply`,
/// `leave_joint`), so never one that breaks `check_invariants`; but it may
/// have no voters, be joint, leave the receiver out or make it a learner,
/// name nodes that do not exist, or hold `VOTERS_MAX` voters.
#[derive(Clone, Debug)]
enum MSpec {
    /// `Membership::default()`: no voters at all.
    Empty,
    /// `with_voters(voters)` (the empty one if refused: none, 0, twice),
    /// then `ops` applied (ignored if refused), then the joint configuration
    /// left with `leave`.
    Built { voters: Vec<NodeId>, ops: Vec<ChangeOp>, leave: bool },
    /// Voters 1..=n (n up to `VOTERS_MAX`), then `ops`.
    Many { n: u64, ops: Vec<ChangeOp> },
    /// The receiver's membership in force, then `ops`.
    Receivers { ops: Vec<ChangeOp>, leave: bool },
}

impl MSpec {
    fn build(&self, v: &View) -> Membership {
        let (base, ops, leave) = match self {
            MSpec::Empty => return Membership::default(),
            MSpec::Built { voters, ops, leave } => {
                (Membership::with_voters(voters.iter().copied()).unwrap_or_default(), ops, *leave)
            }
            MSpec::Many { n, ops } => (Membership::with_voters(1..=*n).unwrap_or_default(), ops, false),
            MSpec::Receivers { ops, leave } => (v.membership.clone(), ops, *leave),
        };
        let mut m = base;
        if !ops.is_empty() {
            if let Ok(next) = m.apply(&MembershipChange { ops: ops.clone() }) {
                m = next;
            }
        }
        if leave {
            if let Ok(left) = m.leave_joint() {
                m = left;
            }
        }
        m
    }
}

/// An id for a membership: mostly 1..=5, sometimes one no node has, rarely
/// the invalid 0 or a huge one.
fn member_id() -> impl Strategy<Value = NodeId> {
    prop_oneof![
        20 => 1u64..=5,
        3 => 6u64..=7,
        1 => Just(0u64),
        1 => Just(u64::MAX),
    ]
}

fn context() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![4 => Just(Vec::new()), 2 => prop::collection::vec(any::<u8>(), 1..4), 1 => Just(vec![b'c'; 300])]
}

/// Any operation, valid or not.
fn raw_change_op() -> impl Strategy<Value = ChangeOp> {
    prop_oneof![
        (member_id(), context()).prop_map(|(id, context)| ChangeOp::AddVoter { id, context }),
        (member_id(), context()).prop_map(|(id, context)| ChangeOp::AddLearner { id, context }),
        member_id().prop_map(|id| ChangeOp::PromoteLearner { id }),
        member_id().prop_map(|id| ChangeOp::Remove { id }),
    ]
}

fn raw_change_ops() -> impl Strategy<Value = Vec<ChangeOp>> {
    prop_oneof![1 => Just(Vec::new()), 3 => prop::collection::vec(raw_change_op(), 1..=3)]
}

fn mspec() -> impl Strategy<Value = MSpec> {
    prop_oneof![
        2 => Just(MSpec::Empty),
        6 => (
            prop_oneof![
                8 => prop::collection::btree_set(1u64..=5, 1..=4).prop_map(|s| s.into_iter().collect::<Vec<_>>()),
                2 => prop::collection::vec(member_id(), 0..=4),
            ],
            raw_change_ops(),
            any::<bool>(),
        )
            .prop_map(|(voters, ops, leave)| MSpec::Built { voters, ops, leave }),
        1 => (prop_oneof![Just(9u64), Just(33u64), Just(63u64), Just(64u64), Just(65u64)], raw_change_ops())
            .prop_map(|(n, ops)| MSpec::Many { n, ops }),
        6 => (raw_change_ops(), any::<bool>()).prop_map(|(ops, leave)| MSpec::Receivers { ops, leave }),
    ]
}

#[derive(Clone, Debug)]
enum HBody {
    VoteRequest {
        pre_vote: bool,
        last_log_index: Num,
        last_log_term: Num,
        transfer: bool,
    },
    VoteResponse {
        pre_vote: bool,
        granted: bool,
    },
    /// With `contiguous`, the entries' indexes follow `prev_log_index` and
    /// their terms never decrease (what a real leader sends); else as given.
    Append {
        prev_log_index: Num,
        prev_log_term: Num,
        entries: Vec<HEntry>,
        contiguous: bool,
        leader_commit: Num,
    },
    Accepted {
        match_index: Num,
    },
    Rejected {
        rejected_index: Num,
        conflict_term: Option<Num>,
        conflict_index: Num,
    },
    Heartbeat {
        commit: Num,
        read_round: Num,
    },
    HeartbeatResponse {
        read_round: Num,
    },
    Snapshot {
        index: Num,
        term: Num,
        membership: AnyMSpec,
        offset: Num,
        data: Vec<u8>,
        done: bool,
    },
    SnapshotResponse {
        index: Num,
        next_offset: Num,
    },
    TimeoutNow,
}

#[derive(Clone, Debug)]
struct Hostile {
    from: NodeId,
    /// `None`: addressed to the receiver; else to this id.
    to: Option<NodeId>,
    term: Num,
    body: HBody,
}

fn hbody() -> impl Strategy<Value = HBody> {
    let payload = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..4).prop_map(HPayload::Command),
        3 => Just(HPayload::Blank),
        2 => any_mspec().prop_map(HPayload::Membership),
    ];
    let entry =
        (index_num(), term_num(), payload).prop_map(|(index, term, payload)| HEntry { index, term, payload });
    prop_oneof![
        2 => (any::<bool>(), index_num(), term_num(), any::<bool>()).prop_map(
            |(pre_vote, last_log_index, last_log_term, transfer)| HBody::VoteRequest {
                pre_vote,
                last_log_index,
                last_log_term,
                transfer
            }
        ),
        2 => (any::<bool>(), any::<bool>())
            .prop_map(|(pre_vote, granted)| HBody::VoteResponse { pre_vote, granted }),
        4 => (index_num(), term_num(), prop::collection::vec(entry, 0..4), prop::bool::weighted(0.8), index_num())
            .prop_map(|(prev_log_index, prev_log_term, entries, contiguous, leader_commit)| HBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                contiguous,
                leader_commit
            }),
        3 => index_num().prop_map(|match_index| HBody::Accepted { match_index }),
        3 => (index_num(), prop::option::of(term_num()), index_num()).prop_map(
            |(rejected_index, conflict_term, conflict_index)| HBody::Rejected {
                rejected_index,
                conflict_term,
                conflict_index
            }
        ),
        2 => (index_num(), small_num()).prop_map(|(commit, read_round)| HBody::Heartbeat { commit, read_round }),
        2 => small_num().prop_map(|read_round| HBody::HeartbeatResponse { read_round }),
        3 => (
            index_num(),
            term_num(),
            any_mspec(),
            small_num(),
            prop::collection::vec(any::<u8>(), 0..8),
            prop::bool::weighted(0.6)
        )
            .prop_map(|(index, term, membership, offset, data, done)| HBody::Snapshot {
                index,
                term,
                membership,
                offset,
                data,
                done
            }),
        2 => (index_num(), small_num())
            .prop_map(|(index, next_offset)| HBody::SnapshotResponse { index, next_offset }),
        1 => Just(HBody::TimeoutNow),
    ]
}

fn hostile() -> impl Strategy<Value = Hostile> {
    let from = prop_oneof![10 => 1u64..=5, 1 => 6u64..=7, 1 => Just(0u64), 1 => Just(u64::MAX)];
    let to = prop_oneof![12 => Just(None), 1 => (0u64..=6).prop_map(Some)];
    (from, to, term_num(), hbody()).prop_map(|(from, to, term, body)| Hostile { from, to, term, body })
}

/// One input. `node` picks a node of the cluster (see `Harness::slot`),
/// `pick` a message of the network (modulo how many there are).
#[derive(Clone, Debug)]
enum Op {
    /// Ticks every node `ticks` times, delivering every message after each.
    Run {
        ticks: u8,
    },
    /// Ticks one node, delivering nothing.
    Tick {
        node: u8,
        ticks: u8,
    },
    Campaign {
        node: u8,
    },
    Propose {
        node: u8,
        len: u8,
    },
    ReadIndex {
        node: u8,
        ctx: u64,
    },
    Transfer {
        node: u8,
        to: NodeId,
    },
    /// Reports the oldest (or every) persist batch held back durable.
    Persist {
        node: u8,
        all: bool,
    },
    /// Reports the oldest (or every) apply batch held back applied.
    Applied {
        node: u8,
        all: bool,
    },
    /// `snapshot_taken` at the applied index plus `delta`.
    SnapshotTaken {
        node: u8,
        delta: i8,
        len: u8,
    },
    /// Answers the oldest (or newest) snapshot held back for its check.
    Check {
        node: u8,
        install: bool,
        newest: bool,
    },
    Deliver {
        pick: u16,
        duplicate: bool,
    },
    DeliverAll,
    Drop {
        pick: u16,
    },
    /// Delivers again a message sent earlier.
    Replay {
        pick: u16,
    },
    /// Delivers a message sent earlier with one field changed (see
    /// `mutate`), to its recipient or to `node`: a hostile message that
    /// looks almost real.
    Mutate {
        pick: u16,
        node: Option<u8>,
        field: u8,
        value: Num,
    },
    Hostile {
        node: u8,
        msg: Hostile,
    },
    /// Forges a message sent earlier to carry a membership: one entry of an
    /// append (or a new one after its last), or a snapshot's metadata.
    Forge {
        pick: u16,
        k: u8,
        membership: AnyMSpec,
    },
    /// `propose_membership`.
    Change {
        node: u8,
        change: ChangeSpec,
    },
    /// Crash and restart from the durable state.
    Restart {
        node: u8,
    },
    /// Cuts a node off: messages from or to it are lost until `Heal`.
    Cut {
        node: u8,
    },
    Heal,
}

/// What one operation of a sensible change does, to an id chosen when the
/// input runs among those it fits (see `ChangeSpec::resolve`).
#[derive(Clone, Copy, Debug)]
enum ChangeKind {
    /// Adds a non-member (preferably a node of the harness) as a learner.
    AddLearner,
    /// Adds a non-member as a voter.
    AddVoter,
    /// Promotes a learner.
    Promote,
    /// Removes a voter (the leader included).
    RemoveVoter,
    /// Removes a learner.
    RemoveLearner,
    /// Demotes a voter to a learner.
    Demote,
}

#[derive(Clone, Debug)]
enum ChangeSpec {
    /// Each operation on an id it fits, picked by the `u8`.
    Sensible(Vec<(ChangeKind, u8)>),
    /// As given, valid or not.
    Raw(Vec<ChangeOp>),
}

fn context_of(id: NodeId) -> Vec<u8> {
    format!("10.0.0.{id}:7000").into_bytes()
}

impl ChangeSpec {
    /// The change, against the membership in force `m` in a harness of
    /// `nodes` nodes.
    fn resolve(&self, m: &Membership, nodes: u64) -> MembershipChange {
        let ops = match self {
            ChangeSpec::Raw(ops) => ops.clone(),
            ChangeSpec::Sensible(kinds) => {
                let mut ops: Vec<ChangeOp> = Vec::new();
                for &(kind, pick) in kinds {
                    let fits: Vec<NodeId> = match kind {
                        ChangeKind::AddLearner | ChangeKind::AddVoter => {
                            let outside = |range: std::ops::RangeInclusive<NodeId>| {
                                range.filter(|&id| !m.is_member(id)).collect::<Vec<_>>()
                            };
                            let in_harness = outside(1..=nodes);
                            if in_harness.is_empty() || pick % 8 == 7 {
                                outside(1..=5)
                            } else {
                                in_harness
                            }
                        }
                        ChangeKind::Promote | ChangeKind::RemoveLearner => {
                            m.learners().iter().copied().collect()
                        }
                        ChangeKind::RemoveVoter | ChangeKind::Demote => m.voters().incoming.iter().collect(),
                    };
                    let fits: Vec<NodeId> =
                        fits.into_iter().filter(|&id| ops.iter().all(|op| op.id() != id)).collect();
                    if fits.is_empty() {
                        continue;
                    }
                    let id = fits[pick as usize % fits.len()];
                    ops.push(match kind {
                        ChangeKind::AddLearner | ChangeKind::Demote => {
                            ChangeOp::AddLearner { id, context: context_of(id) }
                        }
                        ChangeKind::AddVoter => ChangeOp::AddVoter { id, context: context_of(id) },
                        ChangeKind::Promote => ChangeOp::PromoteLearner { id },
                        ChangeKind::RemoveVoter | ChangeKind::RemoveLearner => ChangeOp::Remove { id },
                    });
                }
                ops
            }
        };
        MembershipChange { ops }
    }
}

fn change_spec() -> impl Strategy<Value = ChangeSpec> {
    let kind = prop_oneof![
        4 => Just(ChangeKind::AddLearner),
        2 => Just(ChangeKind::AddVoter),
        4 => Just(ChangeKind::Promote),
        3 => Just(ChangeKind::RemoveVoter),
        1 => Just(ChangeKind::RemoveLearner),
        1 => Just(ChangeKind::Demote),
    ];
    let kinds = prop_oneof![
        3 => prop::collection::vec((kind.clone(), any::<u8>()), 1..=1),
        2 => prop::collection::vec((kind, any::<u8>()), 2..=3),
    ];
    prop_oneof![
        6 => kinds.prop_map(ChangeSpec::Sensible),
        1 => raw_change_ops().prop_map(ChangeSpec::Raw),
    ]
}

/// A node: 0 to 4 by position, 5 to 7 the leader and the nodes after it
/// (see `Harness::slot`).
fn node() -> impl Strategy<Value = u8> {
    prop_oneof![5 => 0u8..5, 4 => 5u8..8]
}

/// A node, mostly the leader: where membership changes are proposed.
fn leader_node() -> impl Strategy<Value = u8> {
    prop_oneof![6 => Just(5u8), 1 => 0u8..8]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (1u8..=12).prop_map(|ticks| Op::Run { ticks }),
        3 => (node(), 1u8..=12).prop_map(|(node, ticks)| Op::Tick { node, ticks }),
        2 => node().prop_map(|node| Op::Campaign { node }),
        6 => (node(), 0u8..=40).prop_map(|(node, len)| Op::Propose { node, len }),
        2 => (node(), 0u64..=3).prop_map(|(node, ctx)| Op::ReadIndex { node, ctx }),
        1 => (node(), 0u64..=5).prop_map(|(node, to)| Op::Transfer { node, to }),
        3 => (node(), any::<bool>()).prop_map(|(node, all)| Op::Persist { node, all }),
        3 => (node(), any::<bool>()).prop_map(|(node, all)| Op::Applied { node, all }),
        4 => (node(), -3i8..=1, 0u8..=24).prop_map(|(node, delta, len)| Op::SnapshotTaken { node, delta, len }),
        2 => (node(), prop::bool::weighted(0.7), any::<bool>())
            .prop_map(|(node, install, newest)| Op::Check { node, install, newest }),
        6 => (any::<u16>(), prop::bool::weighted(0.1)).prop_map(|(pick, duplicate)| Op::Deliver { pick, duplicate }),
        3 => Just(Op::DeliverAll),
        2 => any::<u16>().prop_map(|pick| Op::Drop { pick }),
        3 => any::<u16>().prop_map(|pick| Op::Replay { pick }),
        6 => (any::<u16>(), prop::option::weighted(0.3, node()), any::<u8>(), index_num())
            .prop_map(|(pick, node, field, value)| Op::Mutate { pick, node, field, value }),
        16 => (node(), hostile()).prop_map(|(node, msg)| Op::Hostile { node, msg }),
        3 => (any::<u16>(), any::<u8>(), any_mspec()).prop_map(|(pick, k, membership)| Op::Forge { pick, k, membership }),
        3 => (leader_node(), change_spec()).prop_map(|(node, change)| Op::Change { node, change }),
        1 => node().prop_map(|node| Op::Restart { node }),
        2 => node().prop_map(|node| Op::Cut { node }),
        2 => Just(Op::Heal),
    ]
}

/// Inputs of an honest world (the driver, and a network that loses,
/// reorders, delays and duplicates): leaders live long enough to replicate,
/// compact and send snapshots.
fn honest_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (1u8..=12).prop_map(|ticks| Op::Run { ticks }),
        8 => (node(), 0u8..=40).prop_map(|(node, len)| Op::Propose { node, len }),
        1 => (node(), 0u64..=3).prop_map(|(node, ctx)| Op::ReadIndex { node, ctx }),
        1 => (node(), 0u64..=5).prop_map(|(node, to)| Op::Transfer { node, to }),
        2 => (node(), any::<bool>()).prop_map(|(node, all)| Op::Persist { node, all }),
        2 => (node(), any::<bool>()).prop_map(|(node, all)| Op::Applied { node, all }),
        6 => (node(), -1i8..=0, 0u8..=24).prop_map(|(node, delta, len)| Op::SnapshotTaken { node, delta, len }),
        2 => (node(), prop::bool::weighted(0.8), any::<bool>())
            .prop_map(|(node, install, newest)| Op::Check { node, install, newest }),
        3 => (any::<u16>(), prop::bool::weighted(0.1)).prop_map(|(pick, duplicate)| Op::Deliver { pick, duplicate }),
        1 => any::<u16>().prop_map(|pick| Op::Drop { pick }),
        4 => node().prop_map(|node| Op::Cut { node }),
        3 => Just(Op::Heal),
        2 => (node(), 1u8..=12).prop_map(|(node, ticks)| Op::Tick { node, ticks }),
        1 => node().prop_map(|node| Op::Campaign { node }),
        2 => any::<u16>().prop_map(|pick| Op::Replay { pick }),
        1 => Just(Op::DeliverAll),
        1 => node().prop_map(|node| Op::Restart { node }),
        6 => (leader_node(), change_spec()).prop_map(|(node, change)| Op::Change { node, change }),
    ]
}

/// A case's inputs: stretches of honest inputs and of inputs with hostile
/// messages among them, `max` at most.
fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    let stretch = (max / 4).max(1);
    let stretches = prop_oneof![
        1 => prop::collection::vec(honest_op(), 1..=stretch),
        2 => prop::collection::vec(op(), 1..=stretch),
    ];
    prop::collection::vec(stretches, 1..=4).prop_map(|s| s.into_iter().flatten().collect())
}

/// How the cluster is configured and how each node's driver behaves.
#[derive(Clone, Debug)]
struct Setup {
    /// The voters: nodes 1..=size.
    size: u64,
    /// Nodes size+1..=size+spare, with no configuration (waiting to be
    /// added).
    spare: u64,
    pre_vote: bool,
    check_quorum: bool,
    election_min: u32,
    election_spread: u32,
    heartbeat: u32,
    max_inflight_appends: usize,
    max_inflight_bytes: u64,
    max_append_bytes: usize,
    snapshot_chunk_bytes: usize,
    max_uncommitted_entries: u64,
    max_uncommitted_bytes: u64,
    snapshot_bytes_max: u64,
    seed: u64,
    /// Per node: persist at once, apply at once, check snapshots at once
    /// (installing them) instead of waiting for an input to do so.
    auto: Vec<(bool, bool, bool)>,
}

/// Most nodes in a harness (ids 1..=5).
const NODES_MAX: u64 = 5;

fn setup() -> impl Strategy<Value = Setup> {
    (
        (
            prop_oneof![1 => Just(1u64), 1 => Just(2u64), 6 => Just(3u64)],
            prop_oneof![1 => Just(0u64), 1 => Just(1u64), 2 => Just(2u64)],
            any::<bool>(),
            any::<bool>(),
        ),
        (3u32..=8, 1u32..=6, 1u32..=2),
        (1usize..=4, prop_oneof![Just(0u64), 1u64..=100], prop_oneof![Just(1usize << 20), 1usize..=80]),
        (1usize..=16, prop_oneof![Just(0u64), 1u64..=6], prop_oneof![Just(0u64), 1u64..=200]),
        (prop_oneof![3 => Just(0u64), 1 => 1u64..=40], any::<u64>()),
        prop::collection::vec(
            (prop::bool::weighted(0.7), prop::bool::weighted(0.7), prop::bool::weighted(0.7)),
            NODES_MAX as usize,
        ),
    )
        .prop_map(
            |(
                (size, spare, pre_vote, check_quorum),
                (election_min, election_spread, heartbeat),
                (max_inflight_appends, max_inflight_bytes, max_append_bytes),
                (snapshot_chunk_bytes, max_uncommitted_entries, max_uncommitted_bytes),
                (snapshot_bytes_max, seed),
                auto,
            )| Setup {
                size,
                spare: spare.min(NODES_MAX - size),
                pre_vote,
                check_quorum,
                election_min,
                election_spread,
                heartbeat,
                max_inflight_appends,
                max_inflight_bytes,
                max_append_bytes,
                snapshot_chunk_bytes,
                max_uncommitted_entries,
                max_uncommitted_bytes,
                snapshot_bytes_max,
                seed,
                auto,
            },
        )
}

impl Setup {
    fn config(&self, id: NodeId) -> Config {
        let mut c = Config::new(id);
        c.pre_vote = self.pre_vote;
        c.check_quorum = self.check_quorum;
        c.election_timeout_ticks_min = self.election_min;
        c.election_timeout_ticks_max = self.election_min + self.election_spread;
        c.heartbeat_interval_ticks = self.heartbeat.min(self.election_min - 1);
        c.max_inflight_appends = self.max_inflight_appends;
        c.max_inflight_bytes = self.max_inflight_bytes;
        c.max_append_bytes = self.max_append_bytes;
        c.snapshot_chunk_bytes = self.snapshot_chunk_bytes;
        c.max_uncommitted_entries = self.max_uncommitted_entries;
        c.max_uncommitted_bytes = self.max_uncommitted_bytes;
        c.snapshot_bytes_max = self.snapshot_bytes_max;
        c.seed = self.seed;
        c
    }
}

// ------------------------------------------------------------------ the driver

/// What the cases reached, printed with `FUZZ_STATS=1` (to see that the
/// interesting states are reached at all).
static STATS: [AtomicU64; 15] = [const { AtomicU64::new(0) }; 15];
const STAT_NAMES: [&str; 15] = [
    "cases",
    "inputs",
    "inputs on a leader",
    "leader with a follower in snapshot mode",
    "real snapshot chunks sent",
    "CheckSnapshot",
    "ApplySnapshot",
    "snapshot_taken ok",
    "restarts",
    "propose_membership ok",
    "inputs on a leader in a joint membership",
    "inputs on a leader that is not a voter",
    "inputs on a learner",
    "inputs on a member that started with no configuration",
    "committed membership entries checked",
];

fn stat(k: usize) {
    STATS[k].fetch_add(1, Ordering::Relaxed);
}

/// Why a case failed (a panic is caught and reported as one too).
type Failure = String;

/// One node and what its driver holds: the durable state, the work it has
/// not reported done yet, and what it handed to its state machine.
struct Driver {
    config: Config,
    /// Bootstrapped with the first membership (else started empty, waiting
    /// to be added).
    founder: bool,
    node: RaftNode,
    durable: DurableState,
    auto_persist: bool,
    auto_apply: bool,
    auto_check: bool,
    /// Persist batches written but not reported durable (lost on a crash).
    unpersisted: VecDeque<raft_core::PersistBatch>,
    /// Last index of each apply batch not yet reported applied.
    unapplied: VecDeque<Index>,
    /// Last index handed to the state machine.
    handed_out: Index,
    /// Snapshots waiting for their check.
    to_check: Vec<Snapshot>,
    /// The snapshot bytes this driver keeps (they survive a crash).
    files: common::SnapshotFiles,
    last_persist_id: u64,
    /// Committed membership entries are checked up to here.
    memberships_checked: Index,
    /// The membership in force and the snapshot last checked, by index and
    /// term (`check_memberships` checks them again only once they change).
    membership_checked: (Index, Option<Term>),
    snapshot_checked: (Index, Term),
}

struct Harness {
    drivers: Vec<Driver>,
    network: VecDeque<Message>,
    history: VecDeque<Message>,
    cut: Option<NodeId>,
    /// A hostile message was delivered: from then on peers may lie, and the
    /// checks that hold only among honest nodes (one leader per term, the
    /// same entry applied at an index everywhere, acknowledgements of
    /// durable entries only) are off.
    tainted: bool,
    /// Among honest nodes: the leader of each term, and the entry applied at
    /// each index.
    leaders: BTreeMap<Term, NodeId>,
    applied: BTreeMap<Index, Entry>,
}

const NETWORK_MAX: usize = 256;
const HISTORY_MAX: usize = 64;
const DELIVER_ALL_MAX: usize = 400;

impl Harness {
    fn new(setup: &Setup) -> Harness {
        let drivers = (1..=setup.size + setup.spare)
            .map(|id| {
                let config = setup.config(id);
                let (auto_persist, auto_apply, auto_check) = setup.auto[(id - 1) as usize];
                let founder = id <= setup.size;
                let node = match founder {
                    true => {
                        RaftNode::bootstrap(config.clone(), Membership::with_voters(1..=setup.size).unwrap())
                    }
                    false => RaftNode::new(config.clone()),
                };
                Driver {
                    node: node.expect("valid config"),
                    config,
                    founder,
                    durable: DurableState::default(),
                    auto_persist,
                    auto_apply,
                    auto_check,
                    unpersisted: VecDeque::new(),
                    unapplied: VecDeque::new(),
                    handed_out: 0,
                    to_check: Vec::new(),
                    files: Default::default(),
                    last_persist_id: 0,
                    memberships_checked: 0,
                    membership_checked: (0, None),
                    snapshot_checked: (0, 0),
                }
            })
            .collect();
        Harness {
            drivers,
            network: VecDeque::new(),
            history: VecDeque::new(),
            cut: None,
            tainted: false,
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
        }
    }

    /// The node an input names: 0 to 4 by position (modulo the number of
    /// nodes), 5 the leader, 6 and 7 the nodes after it.
    fn slot(&self, node: u8) -> usize {
        let n = self.drivers.len();
        if node < 5 {
            return node as usize % n;
        }
        let leader = (0..n)
            .filter(|&i| self.drivers[i].node.is_leader())
            .max_by_key(|&i| self.drivers[i].node.term())
            .unwrap_or(0);
        (leader + (node as usize - 5)) % n
    }

    /// Runs one input on node `i`, then executes its actions and checks
    /// its invariants.
    fn input(&mut self, i: usize, f: impl FnOnce(&mut RaftNode)) -> Result<(), Failure> {
        stat(1);
        let node = &self.drivers[i].node;
        let membership = node.membership().0;
        if node.is_leader() {
            stat(2);
            if node.status().progress.iter().any(|p| p.state == raft_core::ReplicationState::Snapshot) {
                stat(3);
            }
            if membership.is_joint() {
                stat(10);
            }
            if !membership.is_voter(node.id()) {
                stat(11);
            }
        }
        if membership.is_learner(node.id()) {
            stat(12);
        }
        if !self.drivers[i].founder && membership.is_member(node.id()) {
            stat(13);
        }
        f(&mut self.drivers[i].node);
        self.check(i, "after the input")?;
        self.drain(i)?;
        self.check_memberships(i)
    }

    /// The membership in force on node `i`, and every membership it
    /// committed since the last call, pass `check_invariants`; a committed
    /// configuration entry has voters.
    fn check_memberships(&mut self, i: usize) -> Result<(), Failure> {
        let d = &mut self.drivers[i];
        let node = &d.node;
        let (m, at) = node.membership();
        let key = (at, node.term_at(at));
        if d.membership_checked != key {
            m.check_invariants().map_err(|e| {
                format!("node {}: membership in force (set at {at}) broken: {e}: {m:?}", i + 1)
            })?;
            d.membership_checked = key;
        }
        let (snapshot_index, snapshot_term) = (node.first_index() - 1, node.term_at(node.first_index() - 1));
        if snapshot_index > 0 && d.snapshot_checked != (snapshot_index, snapshot_term.unwrap_or(0)) {
            let meta = node.snapshot_meta();
            meta.membership.check_invariants().map_err(|e| {
                format!(
                    "node {}: the membership of its snapshot at {} is broken: {e}: {meta:?}",
                    i + 1,
                    meta.index
                )
            })?;
            d.snapshot_checked = (meta.index, meta.term);
        }
        let commit = node.commit_index();
        for index in d.memberships_checked.max(node.first_index().saturating_sub(1)) + 1..=commit {
            let Some(e) = node.entry(index) else { continue };
            // (`decode_membership` checks the invariants and that there are
            // voters; checked again here, in case it stops doing so.)
            let broken = match e.payload.decode_membership() {
                None => None,
                Some(Err(why)) => Some(why),
                Some(Ok(m)) => m
                    .check_invariants()
                    .err()
                    .or_else(|| m.voters().incoming.is_empty().then(|| "no voters".to_string())),
            };
            if matches!(e.payload, EntryPayload::Membership(_)) {
                stat(14);
            }
            if let Some(why) = broken {
                return Err(format!(
                    "node {}: committed membership entry {index} broken: {why}: {e:?}",
                    i + 1
                ));
            }
        }
        d.memberships_checked = d.memberships_checked.max(commit);
        Ok(())
    }

    fn check(&mut self, i: usize, when: &str) -> Result<(), Failure> {
        let node = &self.drivers[i].node;
        node.check_invariants().map_err(|e| format!("invariant broken on node {} {when}: {e}", i + 1))?;
        if node.is_leader() && !self.tainted {
            let leader = *self.leaders.entry(node.term()).or_insert(node.id());
            if leader != node.id() {
                return Err(format!("nodes {leader} and {} both lead term {}", node.id(), node.term()));
            }
        }
        Ok(())
    }

    /// Executes node `i`'s actions, as a driver would, until it has none.
    fn drain(&mut self, i: usize) -> Result<(), Failure> {
        for _ in 0..1000 {
            let actions = self.drivers[i].node.take_actions();
            self.check(i, "after take_actions")?;
            if actions.is_empty() {
                return Ok(());
            }
            for action in actions {
                self.execute(i, action)?;
                self.check(i, "after executing an action")?;
            }
        }
        Err(format!("node {} never stops producing actions", i + 1))
    }

    fn execute(&mut self, i: usize, action: Action) -> Result<(), Failure> {
        let id = i as NodeId + 1;
        let d = &mut self.drivers[i];
        match action {
            Action::Persist(batch) => {
                if batch.id <= d.last_persist_id {
                    return Err(format!("node {id}: persist batch {} after {}", batch.id, d.last_persist_id));
                }
                d.last_persist_id = batch.id;
                if d.auto_persist {
                    d.write(&batch);
                    d.node.persisted(batch.id);
                } else {
                    d.unpersisted.push_back(batch);
                }
            }
            Action::Send(m) => {
                if matches!(m.body, MessageBody::Snapshot { .. }) {
                    stat(4);
                }
                if m.from != id {
                    return Err(format!("node {id} sends as {}: {m:?}", m.from));
                }
                if matches!(m.body, MessageBody::VoteRequest { .. }) && !may_campaign(&d.node) {
                    return Err(format!(
                        "node {id} campaigns while not a voter in its membership {:?}, nor one removed by an \
                         entry not known committed (commit {}): {m:?}",
                        d.node.membership(),
                        d.node.commit_index()
                    ));
                }
                if let MessageBody::Snapshot { meta, .. } = &m.body {
                    if !self.tainted && meta.membership.voters().incoming.is_empty() {
                        return Err(format!(
                            "node {id} sends a snapshot with no voters, which its follower must drop: {meta:?}"
                        ));
                    }
                }
                let hs = d.durable.hard_state;
                if let MessageBody::VoteResponse { pre_vote: false, granted: true } = m.body {
                    if hs.term < m.term || (hs.term == m.term && hs.vote != Some(m.to)) {
                        return Err(format!("node {id} grants a vote not durable ({hs:?}): {m:?}"));
                    }
                }
                if let MessageBody::AppendResponse(AppendResponse::Accepted { match_index }) = m.body {
                    let durable_last = d.durable.entries.last().map(|e| e.index);
                    let durable_last =
                        durable_last.or(d.durable.snapshot.as_ref().map(|s| s.meta.index)).unwrap_or(0);
                    if !self.tainted && durable_last < match_index {
                        return Err(format!(
                            "node {id} acknowledges {match_index} but holds up to {durable_last} durably: {m:?}"
                        ));
                    }
                }
                self.history.push_back(m.clone());
                if self.history.len() > HISTORY_MAX {
                    self.history.pop_front();
                }
                if (1..=self.drivers.len() as NodeId).contains(&m.to) {
                    self.network.push_back(m);
                    if self.network.len() > NETWORK_MAX {
                        self.network.pop_front();
                    }
                }
            }
            Action::Apply(entries) => {
                let Some(last) = entries.last().map(|e| e.index) else {
                    return Err(format!("node {id}: empty Apply"));
                };
                for (k, e) in entries.iter().enumerate() {
                    if e.index != d.handed_out + 1 + k as Index {
                        return Err(format!(
                            "node {id}: Apply hands out index {} after {} (entries {:?})",
                            e.index,
                            d.handed_out,
                            entries.iter().map(|e| e.index).collect::<Vec<_>>()
                        ));
                    }
                    if !d.durable.entries.iter().any(|d| d.index == e.index && d.term == e.term) {
                        return Err(format!("node {id}: Apply hands out {e:?}, not durable here"));
                    }
                    if !self.tainted {
                        let first = self.applied.entry(e.index).or_insert_with(|| e.clone());
                        if first != e {
                            return Err(format!("node {id} applies {e:?} where another applied {first:?}"));
                        }
                    }
                }
                d.handed_out = last;
                if d.auto_apply {
                    d.node.applied(last);
                } else {
                    d.unapplied.push_back(last);
                }
            }
            Action::ApplySnapshot(s) => {
                stat(6);
                let index = s.meta.index;
                if index <= d.handed_out {
                    return Err(format!(
                        "node {id}: ApplySnapshot at {index} after handing out {}",
                        d.handed_out
                    ));
                }
                d.handed_out = index;
                d.unapplied.clear();
                if d.auto_apply {
                    d.node.applied(index);
                } else {
                    d.unapplied.push_back(index);
                }
            }
            Action::SendSnapshotChunk { message, len } => {
                if len > d.config.snapshot_chunk_bytes as u64 {
                    return Err(format!(
                        "node {id}: a chunk of {len} bytes, above the chunk size: {message:?}"
                    ));
                }
                let Some(m) = d.files.fill(message.clone(), len) else {
                    return Err(format!(
                        "node {id} sends {len} bytes of a snapshot it does not keep: {message:?}"
                    ));
                };
                return self.execute(i, Action::Send(m));
            }
            Action::SaveSnapshotChunk { meta, offset, data } => d.files.save(meta, offset, &data),
            Action::CheckSnapshot(s) => {
                stat(5);
                if d.files.complete(&s).is_none() {
                    return Err(format!("node {id}: CheckSnapshot of {s:?} whose chunks were not all saved"));
                }
                if d.auto_check {
                    d.node.install_snapshot(s);
                } else {
                    d.to_check.push(s);
                }
            }
            Action::ReadReady { .. } | Action::ReadFailed { .. } | Action::RoleChanged { .. } => {}
        }
        Ok(())
    }

    /// Delivers a message to its recipient, if it is a node of the cluster.
    fn deliver(&mut self, m: Message) -> Result<(), Failure> {
        let to = m.to;
        if to == 0 || to > self.drivers.len() as NodeId || self.cut.is_some_and(|c| c == to || c == m.from) {
            return Ok(());
        }
        self.input(to as usize - 1, |n| n.step(m))
    }

    fn deliver_all(&mut self) -> Result<(), Failure> {
        for _ in 0..DELIVER_ALL_MAX {
            let Some(m) = self.network.pop_front() else { return Ok(()) };
            self.deliver(m)?;
        }
        Ok(())
    }

    fn run(&mut self, op: &Op) -> Result<(), Failure> {
        match *op {
            Op::Run { ticks } => {
                for _ in 0..ticks {
                    for i in 0..self.drivers.len() {
                        self.input(i, RaftNode::tick)?;
                    }
                    self.deliver_all()?;
                }
            }
            Op::Tick { node, ticks } => {
                let i = self.slot(node);
                for _ in 0..ticks {
                    self.input(i, RaftNode::tick)?;
                }
            }
            Op::Campaign { node } => self.input(self.slot(node), RaftNode::campaign)?,
            Op::Propose { node, len } => {
                let data = vec![b'p'; len as usize];
                self.input(self.slot(node), |n| {
                    let _ = n.propose(data);
                })?
            }
            Op::ReadIndex { node, ctx } => self.input(self.slot(node), |n| {
                let _ = n.read_index(ctx);
            })?,
            Op::Transfer { node, to } => self.input(self.slot(node), |n| {
                let _ = n.transfer_leadership(to);
            })?,
            Op::Persist { node, all } => {
                let i = self.slot(node);
                let d = &mut self.drivers[i];
                let mut last = None;
                while let Some(batch) = d.unpersisted.pop_front() {
                    d.write(&batch);
                    last = Some(batch.id);
                    if !all {
                        break;
                    }
                }
                if let Some(id) = last {
                    self.input(i, |n| n.persisted(id))?;
                }
            }
            Op::Applied { node, all } => {
                let i = self.slot(node);
                let d = &mut self.drivers[i];
                let index = if all { d.unapplied.drain(..).next_back() } else { d.unapplied.pop_front() };
                if let Some(index) = index {
                    self.input(i, |n| n.applied(index))?;
                }
            }
            Op::SnapshotTaken { node, delta, len } => {
                let i = self.slot(node);
                let index = offset(self.drivers[i].node.applied_index(), delta);
                let mut taken = false;
                self.input(i, |n| taken = n.snapshot_taken(index, len as u64).is_ok())?;
                if taken {
                    stat(7);
                    let d = &mut self.drivers[i];
                    let meta = d.node.snapshot_meta();
                    if meta.index != index {
                        return Err(format!("node {}: snapshot_taken({index}) left {meta:?}", i + 1));
                    }
                    d.durable.entries.retain(|e| e.index > index);
                    d.files.keep(index, vec![b's'; len as usize]);
                    d.durable.snapshot = Some(Snapshot { meta, data_bytes: len as u64 });
                }
            }
            Op::Check { node, install, newest } => {
                let i = self.slot(node);
                let d = &mut self.drivers[i];
                if d.to_check.is_empty() {
                    return Ok(());
                }
                let s = if newest { d.to_check.pop().expect("non-empty") } else { d.to_check.remove(0) };
                if install {
                    self.input(i, |n| n.install_snapshot(s))?
                } else {
                    self.input(i, |n| n.reject_snapshot(s.meta.index))?
                }
            }
            Op::Deliver { pick, duplicate } => {
                if self.network.is_empty() {
                    return Ok(());
                }
                let k = pick as usize % self.network.len();
                let m = if duplicate {
                    self.network[k].clone()
                } else {
                    self.network.remove(k).expect("in range")
                };
                self.deliver(m)?
            }
            Op::DeliverAll => self.deliver_all()?,
            Op::Drop { pick } => {
                if !self.network.is_empty() {
                    let k = pick as usize % self.network.len();
                    self.network.remove(k);
                }
            }
            Op::Replay { pick } => {
                if !self.history.is_empty() {
                    let m = self.history[pick as usize % self.history.len()].clone();
                    self.deliver(m)?
                }
            }
            Op::Mutate { pick, node, field, value } => {
                if !self.history.is_empty() {
                    let mut m = self.history[pick as usize % self.history.len()].clone();
                    if let Some(node) = node {
                        m.to = self.slot(node) as NodeId + 1;
                    }
                    if m.to == 0 || m.to > self.drivers.len() as NodeId {
                        return Ok(());
                    }
                    let value = value.get(&View::of(&self.drivers[m.to as usize - 1].node));
                    mutate(&mut m, field, value);
                    self.tainted = true;
                    self.deliver(m)?
                }
            }
            Op::Hostile { node, ref msg } => {
                let i = self.slot(node);
                let m = msg.resolve(i as NodeId + 1, &View::of(&self.drivers[i].node));
                self.tainted = true;
                self.input(i, |n| n.step(m))?
            }
            Op::Forge { pick, k, ref membership } => {
                if self.history.is_empty() {
                    return Ok(());
                }
                let mut m = self.history[pick as usize % self.history.len()].clone();
                if m.to == 0 || m.to > self.drivers.len() as NodeId {
                    return Ok(());
                }
                let v = View::of(&self.drivers[m.to as usize - 1].node);
                match &mut m.body {
                    MessageBody::Append { prev_log_index, entries, .. } => {
                        let payload = membership.payload(&v);
                        if entries.is_empty() || k % 4 == 0 {
                            let (index, term) = match entries.last() {
                                Some(e) => (e.index + 1, e.term),
                                None => (*prev_log_index + 1, m.term),
                            };
                            entries.push(Entry { term, index, payload });
                        } else {
                            let k = k as usize % entries.len();
                            entries[k].payload = payload;
                        }
                    }
                    MessageBody::Snapshot { meta, .. } => {
                        meta.membership = convert(membership.membership(&v))
                    }
                    _ => return Ok(()),
                }
                self.tainted = true;
                self.deliver(m)?
            }
            Op::Change { node, ref change } => {
                let i = self.slot(node);
                let change = change.resolve(self.drivers[i].node.membership().0, self.drivers.len() as u64);
                self.input(i, |n| {
                    if n.propose_membership(&change).is_ok() {
                        stat(9);
                    }
                })?
            }
            Op::Cut { node } => self.cut = Some(self.slot(node) as NodeId + 1),
            Op::Heal => self.cut = None,
            Op::Restart { node } => {
                stat(8);
                let i = self.slot(node);
                let d = &mut self.drivers[i];
                d.node = RaftNode::restart(d.config.clone(), d.durable.clone())
                    .map_err(|e| format!("node {}: restart from its durable state refused: {e}", i + 1))?;
                d.unpersisted.clear();
                d.unapplied.clear();
                d.to_check.clear();
                d.handed_out = d.durable.snapshot.as_ref().map_or(0, |s| s.meta.index);
                d.last_persist_id = 0;
                self.check(i, "after restart")?;
                self.drain(i)?;
                self.check_memberships(i)?
            }
        }
        Ok(())
    }
}

impl Driver {
    /// Writes a persist batch to the durable state, as the action docs say.
    fn write(&mut self, batch: &raft_core::PersistBatch) {
        let d = &mut self.durable;
        if let Some(s) = &batch.snapshot {
            d.snapshot = Some(Snapshot::clone(s));
            d.entries.clear();
        }
        if let Some(first) = batch.entries.first() {
            d.entries.retain(|e| e.index < first.index);
            d.entries.extend(batch.entries.iter().cloned());
        }
        if let Some(hs) = batch.hard_state {
            d.hard_state = hs;
        }
    }
}

/// Changes one field of `m` to `value` (or flips a flag): field 0 is the
/// term, the others depend on the kind of message (a kind with fewer fields
/// has its term changed).
fn mutate(m: &mut Message, field: u8, value: u64) {
    let field = field % 6;
    let flag = value % 2 == 0;
    let changed = match (&mut m.body, field) {
        (_, 0) => false,
        (MessageBody::VoteRequest { last_log_index, .. }, 1) => {
            *last_log_index = value;
            true
        }
        (MessageBody::VoteRequest { last_log_term, .. }, 2) => {
            *last_log_term = value;
            true
        }
        (MessageBody::VoteRequest { pre_vote, .. }, 3) => {
            *pre_vote = flag;
            true
        }
        (MessageBody::VoteRequest { transfer, .. }, 4) => {
            *transfer = flag;
            true
        }
        (MessageBody::VoteResponse { granted, .. }, 1) => {
            *granted = flag;
            true
        }
        (MessageBody::VoteResponse { pre_vote, .. }, 2) => {
            *pre_vote = flag;
            true
        }
        (MessageBody::Append { prev_log_index, .. }, 1) => {
            *prev_log_index = value;
            true
        }
        (MessageBody::Append { prev_log_term, .. }, 2) => {
            *prev_log_term = value;
            true
        }
        (MessageBody::Append { leader_commit, .. }, 3) => {
            *leader_commit = value;
            true
        }
        (MessageBody::Append { entries, .. }, 4) if !entries.is_empty() => {
            let k = value as usize % entries.len();
            entries.truncate(k);
            true
        }
        (MessageBody::Append { entries, .. }, 5) if !entries.is_empty() => {
            let k = value as usize % entries.len();
            entries[k].term = value;
            true
        }
        (MessageBody::AppendResponse(AppendResponse::Accepted { match_index }), _) => {
            *match_index = value;
            true
        }
        (MessageBody::AppendResponse(AppendResponse::Rejected { rejected_index, .. }), 1 | 2) => {
            *rejected_index = value;
            true
        }
        (MessageBody::AppendResponse(AppendResponse::Rejected { conflict_index, .. }), 3 | 4) => {
            *conflict_index = value;
            true
        }
        (MessageBody::AppendResponse(AppendResponse::Rejected { conflict_term, .. }), _) => {
            *conflict_term = flag.then_some(value);
            true
        }
        (MessageBody::Heartbeat { commit, .. }, 1..=3) => {
            *commit = value;
            true
        }
        (MessageBody::Heartbeat { read_round, .. }, _)
        | (MessageBody::HeartbeatResponse { read_round }, _) => {
            *read_round = value;
            true
        }
        (MessageBody::Snapshot { offset, .. }, 1) => {
            *offset = value;
            true
        }
        (MessageBody::Snapshot { meta, .. }, 2) => {
            meta.index = value;
            true
        }
        (MessageBody::Snapshot { meta, .. }, 3) => {
            meta.term = value;
            true
        }
        (MessageBody::Snapshot { done, .. }, 4) => {
            *done = flag;
            true
        }
        (MessageBody::Snapshot { data, .. }, _) => {
            data.truncate(value as usize % (data.len() + 1));
            true
        }
        (MessageBody::SnapshotResponse { index, .. }, 1 | 2) => {
            *index = value;
            true
        }
        (MessageBody::SnapshotResponse { next_offset, .. }, _) => {
            *next_offset = value;
            true
        }
        _ => false,
    };
    if !changed {
        m.term = value;
    }
}

impl Hostile {
    fn resolve(&self, receiver: NodeId, v: &View) -> Message {
        let body = match &self.body {
            HBody::VoteRequest { pre_vote, last_log_index, last_log_term, transfer } => {
                MessageBody::VoteRequest {
                    pre_vote: *pre_vote,
                    last_log_index: last_log_index.get(v),
                    last_log_term: last_log_term.get(v),
                    transfer: *transfer,
                }
            }
            HBody::VoteResponse { pre_vote, granted } => {
                MessageBody::VoteResponse { pre_vote: *pre_vote, granted: *granted }
            }
            HBody::Append { prev_log_index, prev_log_term, entries, contiguous, leader_commit } => {
                let prev = prev_log_index.get(v);
                let prev_term = prev_log_term.get(v);
                let mut term = prev_term;
                let entries = entries
                    .iter()
                    .enumerate()
                    .map(|(k, e)| {
                        let payload = match &e.payload {
                            HPayload::Command(c) => EntryPayload::Command(c.clone()),
                            HPayload::Blank => EntryPayload::Blank,
                            HPayload::Membership(m) => m.payload(v),
                        };
                        if *contiguous {
                            term = term.max(e.term.get(v));
                            Entry { term, index: prev.wrapping_add(1 + k as u64), payload }
                        } else {
                            Entry { term: e.term.get(v), index: e.index.get(v), payload }
                        }
                    })
                    .collect();
                MessageBody::Append {
                    prev_log_index: prev,
                    prev_log_term: prev_term,
                    entries,
                    leader_commit: leader_commit.get(v),
                }
            }
            HBody::Accepted { match_index } => {
                MessageBody::AppendResponse(AppendResponse::Accepted { match_index: match_index.get(v) })
            }
            HBody::Rejected { rejected_index, conflict_term, conflict_index } => {
                MessageBody::AppendResponse(AppendResponse::Rejected {
                    rejected_index: rejected_index.get(v),
                    conflict_term: conflict_term.map(|t| t.get(v)),
                    conflict_index: conflict_index.get(v),
                })
            }
            HBody::Heartbeat { commit, read_round } => {
                MessageBody::Heartbeat { commit: commit.get(v), read_round: read_round.get(v) }
            }
            HBody::HeartbeatResponse { read_round } => {
                MessageBody::HeartbeatResponse { read_round: read_round.get(v) }
            }
            HBody::Snapshot { index, term, membership, offset, data, done } => MessageBody::Snapshot {
                meta: SnapshotMeta {
                    index: index.get(v),
                    term: term.get(v),
                    membership: convert(membership.membership(v)),
                },
                offset: offset.get(v),
                data: data.clone(),
                done: *done,
            },
            HBody::SnapshotResponse { index, next_offset } => {
                MessageBody::SnapshotResponse { index: index.get(v), next_offset: next_offset.get(v) }
            }
            HBody::TimeoutNow => MessageBody::TimeoutNow,
        };
        Message { from: self.from, to: self.to.unwrap_or(receiver), term: self.term.get(v), body }
    }
}

// ------------------------------------------------------------------ running a case

thread_local! {
    /// Set while a case runs on this thread: its panics are recorded here
    /// (message and location) instead of printed.
    static CAPTURE: Cell<bool> = const { Cell::new(false) };
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !CAPTURE.with(Cell::get) {
                return default(info);
            }
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic)".to_string());
            let location = info.location().map_or("?".to_string(), |l| format!("{}:{}", l.file(), l.line()));
            PANIC.with(|p| *p.borrow_mut() = Some(format!("panicked at {location}: {message}")));
        }));
    });
}

/// Runs a case; `Err` describes the first failure.
fn run_case(setup: &Setup, ops: &[Op]) -> Result<(), Failure> {
    install_panic_hook();
    stat(0);
    CAPTURE.with(|c| c.set(true));
    let mut done = 0;
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| -> Result<(), Failure> {
        let mut h = Harness::new(setup);
        for op in ops {
            h.run(op)?;
            done += 1;
        }
        Ok(())
    }));
    CAPTURE.with(|c| c.set(false));
    match outcome {
        Ok(result) => result.map_err(|e| format!("{e} (at input {done})")),
        Err(_) => Err(format!(
            "{} (at input {done})",
            PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "panicked".to_string())
        )),
    }
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn known(failure: &str) -> bool {
    std::env::var("FUZZ_IGNORE")
        .map(|v| v.split('|').any(|known| !known.is_empty() && failure.contains(known)))
        .unwrap_or(false)
}

#[test]
fn hostile_input_never_panics_nor_breaks_invariants() {
    let cases: u32 = env("FUZZ_CASES", 2000);
    let max_ops: usize = env("FUZZ_OPS", 160);
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config);
    let strategy = (setup(), ops(max_ops));
    let result = runner.run(&strategy, |(setup, ops)| match run_case(&setup, &ops) {
        Err(failure) if !known(&failure) => Err(TestCaseError::fail(failure)),
        _ => Ok(()),
    });
    if std::env::var_os("FUZZ_STATS").is_some() {
        for (name, value) in STAT_NAMES.iter().zip(&STATS) {
            eprintln!("{name}: {}", value.load(Ordering::Relaxed));
        }
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The harness reaches the states worth fuzzing: a leader replicating to
/// followers, and a follower catching up by snapshot.
#[test]
fn the_harness_elects_replicates_and_sends_snapshots() {
    let setup = Setup {
        size: 3,
        spare: 0,
        pre_vote: true,
        check_quorum: true,
        election_min: 5,
        election_spread: 3,
        heartbeat: 1,
        max_inflight_appends: 2,
        max_inflight_bytes: 0,
        max_append_bytes: 1 << 20,
        snapshot_chunk_bytes: 4,
        max_uncommitted_entries: 0,
        max_uncommitted_bytes: 0,
        snapshot_bytes_max: 0,
        seed: 1,
        auto: vec![(true, true, true); NODES_MAX as usize],
    };
    let mut h = Harness::new(&setup);
    h.run(&Op::Run { ticks: 20 }).unwrap();
    let leader = h.drivers.iter().position(|d| d.node.is_leader()).expect("a leader");
    for _ in 0..5 {
        h.run(&Op::Propose { node: leader as u8, len: 3 }).unwrap();
    }
    h.run(&Op::Run { ticks: 3 }).unwrap();
    let last = h.drivers[leader].node.last_index();
    assert!(h.drivers.iter().all(|d| d.node.commit_index() == last));
    // Cut one follower off while the leader compacts, then let it catch up.
    let lagging = (leader + 1) % 3;
    for _ in 0..3 {
        h.run(&Op::Propose { node: leader as u8, len: 3 }).unwrap();
        h.network.retain(|m| m.to != lagging as NodeId + 1);
        h.run(&Op::Tick { node: leader as u8, ticks: 1 }).unwrap();
        h.network.retain(|m| m.to != lagging as NodeId + 1);
        h.deliver_all().unwrap();
    }
    h.network.retain(|m| m.to != lagging as NodeId + 1);
    h.run(&Op::SnapshotTaken { node: leader as u8, delta: 0, len: 10 }).unwrap();
    h.run(&Op::Run { ticks: 10 }).unwrap();
    let d = &h.drivers[lagging];
    assert!(d.durable.snapshot.is_some(), "the lagging follower installed a snapshot");
    assert_eq!(d.node.commit_index(), h.drivers[leader].node.commit_index());
}

/// The harness reaches the membership states worth fuzzing: nodes that
/// started with no configuration added as learners and promoted, and the
/// leader removed by a joint change, which is left.
#[test]
fn the_harness_adds_promotes_and_removes_members() {
    let setup = Setup {
        size: 3,
        spare: 2,
        pre_vote: true,
        check_quorum: true,
        election_min: 5,
        election_spread: 3,
        heartbeat: 1,
        max_inflight_appends: 2,
        max_inflight_bytes: 0,
        max_append_bytes: 1 << 20,
        snapshot_chunk_bytes: 4,
        max_uncommitted_entries: 0,
        max_uncommitted_bytes: 0,
        snapshot_bytes_max: 0,
        seed: 1,
        auto: vec![(true, true, true); NODES_MAX as usize],
    };
    let mut h = Harness::new(&setup);
    h.run(&Op::Run { ticks: 20 }).unwrap();
    let leader = h.drivers.iter().position(|d| d.node.is_leader()).expect("a leader");
    let sensible = |kinds: Vec<(ChangeKind, u8)>| Op::Change { node: 5, change: ChangeSpec::Sensible(kinds) };
    h.run(&sensible(vec![(ChangeKind::AddLearner, 0), (ChangeKind::AddLearner, 0)])).unwrap();
    h.run(&Op::Run { ticks: 10 }).unwrap();
    for d in &h.drivers {
        let m = d.node.membership().0;
        assert!(m.is_learner(4) && m.is_learner(5), "node {}: {m:?}", d.node.id());
    }
    h.run(&sensible(vec![
        (ChangeKind::Promote, 0),
        (ChangeKind::Promote, 0),
        (ChangeKind::RemoveVoter, leader as u8),
    ]))
    .unwrap();
    assert!(h.drivers[leader].node.membership().0.is_joint());
    h.run(&Op::Run { ticks: 30 }).unwrap();
    let now = h.drivers.iter().position(|d| d.node.is_leader()).expect("a leader");
    assert_ne!(now, leader, "the removed leader still leads");
    let m = h.drivers[now].node.membership().0.clone();
    assert!(!m.is_joint() && !m.is_member(leader as NodeId + 1), "{m:?}");
    assert_eq!(m.voters().incoming.iter().count(), 4, "{m:?}");
    assert!(h.drivers[3].node.membership().0.is_voter(4));
}

/// Whether `node` may start elections: a voter in the membership in force,
/// or one removed or demoted by a configuration entry it does not know to
/// be committed, that was a voter in the configuration before it
/// (dissertation §4.2.2). Computed from the log, not from the core's own
/// bookkeeping.
fn may_campaign(node: &RaftNode) -> bool {
    let (membership, index) = node.membership();
    if membership.is_voter(node.id()) {
        return true;
    }
    if index <= node.commit_index() || index <= node.first_index().saturating_sub(1) {
        return false;
    }
    let before = (node.first_index()..index)
        .rev()
        .find_map(|i| node.entry(i)?.payload.decode_membership()?.ok())
        .unwrap_or_else(|| Membership::clone(&node.snapshot_meta().membership));
    before.is_voter(node.id())
}

/// The hand encoding of hostile memberships is the core's own, so that
/// those it breaks reach the core's invariant checks, not just its decoder.
#[test]
fn hand_encoded_memberships_are_the_cores_encoding() {
    let v =
        View::of(&RaftNode::bootstrap(Config::new(1), Membership::with_voters([1, 2, 3]).unwrap()).unwrap());
    let add = |id: NodeId| ChangeOp::AddVoter { id, context: context_of(id) };
    let specs = [
        MSpec::Empty,
        MSpec::Receivers { ops: vec![], leave: false },
        MSpec::Receivers {
            ops: vec![add(4), ChangeOp::AddLearner { id: 5, context: vec![7; 300] }],
            leave: false,
        },
        MSpec::Built { voters: vec![1, 2, 3], ops: vec![add(4), ChangeOp::Remove { id: 1 }], leave: false },
        MSpec::Built { voters: vec![250, 251, 70_000, 5_000_000_000, u64::MAX], ops: vec![], leave: false },
        MSpec::Many { n: 64, ops: vec![ChangeOp::Remove { id: 1 }, add(u64::MAX)] },
    ];
    for spec in &specs {
        let m = spec.build(&v);
        let EntryPayload::Membership(bytes) = EntryPayload::membership(&m) else { unreachable!() };
        assert_eq!(RawParts::of(&m).encode().as_slice(), &bytes[..], "{m:?}");
        assert_eq!(decode_unchecked(&bytes), Some(m));
    }
    // A voter that is a learner too: it decodes, and the core refuses it
    // for the invariant it breaks.
    let raw = RawMSpec { roles: None, corruption: Corruption::Learner(0), damage: Damage::None };
    let payload = EntryPayload::Membership(convert(raw.encode(&v)));
    let why = payload.decode_membership().expect("a configuration entry").expect_err("invalid");
    assert!(why.contains("is an incoming voter"), "{why}");
    assert!(decode_unchecked(&raw.encode(&v)).expect("decodes").check_invariants().is_err());
}
