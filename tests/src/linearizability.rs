//! Linearizability checking for key-value histories.
//!
//! A [`History`] records the operations that clients of the replicated key-value
//! store invoked, when they were invoked, and when (and with which result) they
//! completed. [`check`] decides whether that history is *linearizable*: whether
//! every operation can be assigned a single instant between its invocation and its
//! completion such that executing the operations one at a time, in the order of
//! those instants, against a plain map produces exactly the observed results.
//!
//! # Algorithm
//!
//! The checker is the Wing–Gong / Lowe search as implemented by Porcupine and
//! Knossos' `linear` checker:
//!
//! * **P-compositionality.** A history is linearizable iff its restriction to each
//!   key is, so operations are partitioned by key and every key is searched
//!   independently (keys are checked in ascending order).
//! * **Search.** For one key, the call and return events are put in a doubly
//!   linked list ordered by time (at equal timestamps calls come before returns,
//!   so an operation invoked at the very step another completes is concurrent
//!   with it). A depth-first search repeatedly picks a pending call (one that
//!   appears before the first remaining return) whose effect on the model matches
//!   its recorded result, removes it from the list and continues; reaching a
//!   return event means the operation it belongs to can no longer be linearized
//!   on this path, so the search backtracks.
//! * **Memoization.** Every visited `(set of linearized operations, model state)`
//!   pair is cached (the set is a bitset), so an equivalent configuration is never
//!   explored twice.
//!
//! Operations with an [`Outcome::Unknown`] result (timeouts, crashes, or never
//! completed) may have taken effect at any instant after their invocation, or not
//! at all. They have no return event; they stay pending forever and the search
//! succeeds as soon as every *acknowledged* operation is linearized, so unknown
//! operations are optional rather than forced in. Unknown reads have no effect and
//! are dropped up front, as are [`Outcome::Failed`] operations. Three pruning rules
//! keep unknown operations cheap, each of which preserves completeness:
//!
//! * an unknown operation that would not change the state is never applied
//!   (leaving it pending is at least as permissive);
//! * right after an unknown operation has been applied, the next operation must
//!   depend on it: if a blind write (`Put`/`Delete`) followed, the unknown
//!   operation's effect would be overwritten unobserved and it could simply be
//!   left out; if an acknowledged `Get` or failed `Cas` followed whose result also
//!   fits the state before the unknown operation, the two could be swapped;
//! * identical unknown operations are applied in invocation order (the earlier
//!   one is pending whenever the later one is, so they are interchangeable).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Identifies the client (session) that issued an operation.
pub type ClientId = u64;

/// A key-value operation as invoked by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key written.
        key: u64,
        /// The value written.
        value: u64,
    },
    /// Read the current value of `key` (`None` if absent).
    Get {
        /// The key read.
        key: u64,
    },
    /// Compare-and-swap: if the current value of `key` equals `expected`
    /// (`None` meaning "the key is absent"), set it to `new`; otherwise do nothing.
    Cas {
        /// The key compared and possibly written.
        key: u64,
        /// The value the key must currently have (`None`: the key must be absent).
        expected: Option<u64>,
        /// The value written when the comparison succeeds.
        new: u64,
    },
    /// Remove `key`; afterwards it reads as `None`.
    Delete {
        /// The key removed.
        key: u64,
    },
}

impl Op {
    /// The key this operation touches.
    pub fn key(&self) -> u64 {
        match *self {
            Op::Put { key, .. } | Op::Get { key } | Op::Cas { key, .. } | Op::Delete { key } => key,
        }
    }

    /// Whether the operation never changes the store (only `Get`).
    pub fn is_read_only(&self) -> bool {
        matches!(self, Op::Get { .. })
    }

    /// Whether the operation overwrites the key without looking at its value.
    fn is_blind_write(&self) -> bool {
        matches!(self, Op::Put { .. } | Op::Delete { .. })
    }

    /// The sequential specification: applies the operation to the current value
    /// of its key (`None` = absent) and returns the new value and the result the
    /// operation returns.
    pub fn apply(&self, current: Option<u64>) -> (Option<u64>, OpResult) {
        match *self {
            Op::Put { value, .. } => (Some(value), OpResult::Put),
            Op::Get { .. } => (current, OpResult::Get(current)),
            Op::Cas { expected, new, .. } => {
                if current == expected {
                    (Some(new), OpResult::Cas { succeeded: true })
                } else {
                    (current, OpResult::Cas { succeeded: false })
                }
            }
            Op::Delete { .. } => (None, OpResult::Delete),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Put { key, value } => write!(f, "put({key}, {value})"),
            Op::Get { key } => write!(f, "get({key})"),
            Op::Cas { key, expected, new } => {
                write!(f, "cas({key}, {} -> {new})", ValueDisplay(expected))
            }
            Op::Delete { key } => write!(f, "delete({key})"),
        }
    }
}

/// The result an operation returned to its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpResult {
    /// A `Put` was applied.
    Put,
    /// A `Get` observed this value (`None`: the key was absent).
    Get(Option<u64>),
    /// A `Cas` either swapped (`succeeded`) or found a different value and did nothing.
    Cas {
        /// Whether the comparison matched and the new value was written.
        succeeded: bool,
    },
    /// A `Delete` was applied.
    Delete,
}

impl fmt::Display for OpResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OpResult::Put | OpResult::Delete => f.write_str("ok"),
            OpResult::Get(v) => write!(f, "{}", ValueDisplay(v)),
            OpResult::Cas { succeeded: true } => f.write_str("swapped"),
            OpResult::Cas { succeeded: false } => f.write_str("not swapped"),
        }
    }
}

/// How an operation ended, as far as its client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The operation completed with this result.
    Ok(OpResult),
    /// The operation definitely did NOT take effect (e.g. it was refused before
    /// being proposed); it is dropped from the history.
    Failed,
    /// The operation may or may not have taken effect, at any time after its
    /// invocation (timeout, crash): its return time is +infinity and any result
    /// is acceptable.
    Unknown,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(r) => write!(f, "{r}"),
            Outcome::Failed => f.write_str("failed"),
            Outcome::Unknown => f.write_str("?"),
        }
    }
}

/// One operation of a history: who issued what, when, and how it ended.
///
/// Times are logical (e.g. simulator steps). Operation `a` precedes `b` in real
/// time iff `a.complete < b.invoke` (strictly); otherwise they are concurrent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Operation {
    /// The client that issued the operation.
    pub client: ClientId,
    /// What was asked.
    pub op: Op,
    /// When the client invoked it.
    pub invoke: u64,
    /// When the client got the outcome; ignored when `outcome` is [`Outcome::Unknown`].
    pub complete: u64,
    /// How it ended.
    pub outcome: Outcome,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}: {} -> {} ", self.client, self.op, self.outcome)?;
        match self.outcome {
            Outcome::Unknown => write!(f, "[{}, inf)", self.invoke),
            _ => write!(f, "[{}, {}]", self.invoke, self.complete),
        }
    }
}

/// Index of an operation within a [`History`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(usize);

impl OpId {
    /// Position of the operation in [`History::operations`].
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A recorded history of client operations, built incrementally.
///
/// Operations that are [invoked](History::invoke) but never
/// [completed](History::complete) count as [`Outcome::Unknown`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    ops: Vec<Operation>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `client` invoked `op` at `time`. Until [`History::complete`]
    /// is called for the returned id, the operation's outcome is unknown.
    pub fn invoke(&mut self, client: ClientId, op: Op, time: u64) -> OpId {
        self.ops.push(Operation { client, op, invoke: time, complete: u64::MAX, outcome: Outcome::Unknown });
        OpId(self.ops.len() - 1)
    }

    /// Records the outcome of a previously invoked operation at `time`.
    ///
    /// # Panics
    ///
    /// If `id` is not from this history, or `time` is before the invocation
    /// (for a non-unknown outcome).
    pub fn complete(&mut self, id: OpId, outcome: Outcome, time: u64) {
        let operation = self.ops.get_mut(id.0).unwrap_or_else(|| panic!("unknown operation id {id}"));
        assert!(
            outcome == Outcome::Unknown || time >= operation.invoke,
            "operation {id} completes at {time}, before its invocation at {}",
            operation.invoke
        );
        operation.outcome = outcome;
        operation.complete = time;
    }

    /// Appends a fully described operation.
    ///
    /// # Panics
    ///
    /// If the operation completes before it is invoked (unless its outcome is unknown).
    pub fn push(&mut self, operation: Operation) -> OpId {
        assert!(
            operation.outcome == Outcome::Unknown || operation.complete >= operation.invoke,
            "operation completes at {}, before its invocation at {}",
            operation.complete,
            operation.invoke
        );
        self.ops.push(operation);
        OpId(self.ops.len() - 1)
    }

    /// Number of recorded operations (including failed and unknown ones).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no operation has been recorded.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The recorded operations, indexed by [`OpId::index`].
    pub fn operations(&self) -> &[Operation] {
        &self.ops
    }
}

impl FromIterator<Operation> for History {
    fn from_iter<I: IntoIterator<Item = Operation>>(iter: I) -> Self {
        let mut history = History::new();
        for operation in iter {
            history.push(operation);
        }
        history
    }
}

/// The history is not linearizable: the operations on `key` admit no valid order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key whose operations could not be linearized.
    pub key: u64,
    /// Human-readable explanation: the longest linearizable prefix found and the
    /// pending operations none of which could follow it.
    pub description: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "linearizability violation on key {}: {}", self.key, self.description)
    }
}

impl std::error::Error for Violation {}

/// Why [`check_with_budget`] did not accept a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The history is definitely not linearizable.
    Violation(Violation),
    /// The search for `key` explored more states than allowed without reaching a
    /// verdict (and no other key had a definite violation).
    BudgetExceeded {
        /// The key whose search was abandoned.
        key: u64,
    },
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Violation(v) => write!(f, "{v}"),
            CheckError::BudgetExceeded { key } => {
                write!(f, "linearizability check of key {key} exceeded its state budget without a verdict")
            }
        }
    }
}

impl std::error::Error for CheckError {}

impl From<Violation> for CheckError {
    fn from(v: Violation) -> Self {
        CheckError::Violation(v)
    }
}

/// Checks that `history` is linearizable with respect to a key-value map, with
/// no limit on the search effort.
pub fn check(history: &History) -> Result<(), Violation> {
    match check_with_budget(history, u64::MAX) {
        Ok(()) => Ok(()),
        Err(CheckError::Violation(v)) => Err(v),
        Err(CheckError::BudgetExceeded { .. }) => {
            unreachable!("an unlimited budget cannot be exceeded")
        }
    }
}

/// Checks that `history` is linearizable, exploring at most
/// `max_states_per_key` search states for each key.
///
/// A definite [`CheckError::Violation`] on any key is reported in preference to
/// a [`CheckError::BudgetExceeded`] on another key.
pub fn check_with_budget(history: &History, max_states_per_key: u64) -> Result<(), CheckError> {
    let mut by_key: BTreeMap<u64, Vec<KeyOp>> = BTreeMap::new();
    for (id, operation) in history.ops.iter().enumerate() {
        let result = match operation.outcome {
            Outcome::Failed => continue,
            Outcome::Unknown if operation.op.is_read_only() => continue,
            Outcome::Unknown => None,
            Outcome::Ok(result) => Some(result),
        };
        by_key.entry(operation.op.key()).or_default().push(KeyOp { id, operation: *operation, result });
    }
    let mut exceeded = None;
    for (key, ops) in &by_key {
        match check_key(*key, ops, max_states_per_key) {
            Ok(()) => {}
            Err(CheckError::Violation(v)) => return Err(CheckError::Violation(v)),
            Err(e @ CheckError::BudgetExceeded { .. }) => {
                exceeded.get_or_insert(e);
            }
        }
    }
    exceeded.map_or(Ok(()), Err)
}

/// Displays an optional value as the value or `absent`.
struct ValueDisplay(Option<u64>);

impl fmt::Display for ValueDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("absent"),
        }
    }
}

/// An operation that takes part in the search for one key.
struct KeyOp {
    /// Index in the original history.
    id: usize,
    operation: Operation,
    /// `None` for an unknown outcome.
    result: Option<OpResult>,
}

impl fmt::Display for KeyOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {}", self.id, self.operation)
    }
}

/// A fixed-size set of small indices.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bitset(Box<[u64]>);

impl Bitset {
    fn new(len: usize) -> Self {
        Bitset(vec![0; len.div_ceil(64)].into_boxed_slice())
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn is_subset_of(&self, other: &Bitset) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a & !b == 0)
    }
}

const NIL: usize = usize::MAX;

/// A search node: which operations are linearized, in which state that
/// leaves the key, and (if the last operation had an unknown outcome) the
/// state before it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct NodeKey {
    acknowledged: Bitset,
    state: Option<u64>,
    before_unknown: Option<Option<u64>>,
}

/// Saved search state to restore when backtracking over `op`.
struct Frame {
    op: usize,
    state: Option<u64>,
    before_unknown: Option<Option<u64>>,
    /// Completion time of the earliest pending acknowledged operation at the
    /// node `op` was chosen from: unknown operations invoked after it were not
    /// candidates there.
    deadline: u64,
}

/// The Wing–Gong/Lowe search for the operations on one key.
///
/// Acknowledged operations live in one doubly linked list of call and return
/// events ordered by time; unknown-outcome operations (which have no return)
/// live in a second list of calls ordered by invocation. Node `n` is the head
/// sentinel of the first list and `n + 1` that of the second.
struct Search<'a> {
    ops: &'a [KeyOp],
    next: Vec<usize>,
    prev: Vec<usize>,
    ack_head: usize,
    unknown_head: usize,
    /// For each event node: the operation it belongs to and whether it is a return.
    node_op: Vec<usize>,
    node_is_return: Vec<bool>,
    call_node: Vec<usize>,
    return_node: Vec<Option<usize>>,
    /// Index of each operation within its kind (acknowledged or unknown),
    /// used as its bit in the corresponding bitset.
    bit: Vec<usize>,
    n_acknowledged: usize,
    n_unknown: usize,
    /// For an unknown operation, the previous identical unknown operation
    /// (in invocation order), which must be applied first.
    prev_identical: Vec<Option<usize>>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [KeyOp]) -> Self {
        let mut ack_events: Vec<(u64, bool, usize)> = Vec::new();
        let mut unknown_events: Vec<(u64, bool, usize)> = Vec::new();
        let mut bit = vec![0; ops.len()];
        let (mut n_acknowledged, mut n_unknown) = (0, 0);
        for (i, op) in ops.iter().enumerate() {
            if op.result.is_some() {
                ack_events.push((op.operation.invoke, false, i));
                ack_events.push((op.operation.complete, true, i));
                bit[i] = n_acknowledged;
                n_acknowledged += 1;
            } else {
                unknown_events.push((op.operation.invoke, false, i));
                bit[i] = n_unknown;
                n_unknown += 1;
            }
        }
        // Calls (false) sort before returns (true) at equal timestamps, so an
        // operation invoked when another completes counts as concurrent with it.
        ack_events.sort_unstable();
        unknown_events.sort_unstable();

        let n = ack_events.len() + unknown_events.len();
        let (ack_head, unknown_head) = (n, n + 1);
        let mut search = Search {
            ops,
            next: vec![NIL; n + 2],
            prev: vec![NIL; n + 2],
            ack_head,
            unknown_head,
            node_op: vec![0; n],
            node_is_return: vec![false; n],
            call_node: vec![0; ops.len()],
            return_node: vec![None; ops.len()],
            bit,
            n_acknowledged,
            n_unknown,
            prev_identical: vec![None; ops.len()],
        };
        let mut node = 0;
        for (head, events) in [(ack_head, &ack_events), (unknown_head, &unknown_events)] {
            let mut last = head;
            for &(_, is_return, op) in events.iter() {
                search.prev[node] = last;
                search.next[last] = node;
                search.node_op[node] = op;
                search.node_is_return[node] = is_return;
                if is_return {
                    search.return_node[op] = Some(node);
                } else {
                    search.call_node[op] = node;
                }
                last = node;
                node += 1;
            }
        }

        let mut last: HashMap<Op, usize> = HashMap::new();
        for &(_, _, i) in &unknown_events {
            search.prev_identical[i] = last.insert(ops[i].operation.op, i);
        }
        search
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    /// Removes an operation's call and return events from the lists.
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if let Some(r) = self.return_node[op] {
            self.unlink(r);
        }
    }

    /// Undoes [`Search::lift`]; must be called in reverse order of lifting.
    fn unlift(&mut self, op: usize) {
        if let Some(r) = self.return_node[op] {
            self.relink(r);
        }
        self.relink(self.call_node[op]);
    }

    /// The state after linearizing `op` next, or `None` if it may not be.
    ///
    /// `before_unknown` is `Some(p)` when the last linearized operation had an
    /// unknown outcome and changed the state from `p`. Such an operation `u` is
    /// only worth applying if the operation right after it depends on it:
    /// a blind write would overwrite `u` unobserved (drop `u` instead), and a
    /// non-mutating reader whose result also fits `p` could equally have run
    /// before `u` (move `u` later). Successful CASes cannot fit both states.
    fn step(
        &self,
        op: usize,
        state: Option<u64>,
        before_unknown: Option<Option<u64>>,
        applied_unknown: &Bitset,
    ) -> Option<Option<u64>> {
        let key_op = &self.ops[op];
        let operation = &key_op.operation.op;
        if let Some(previous) = before_unknown {
            if operation.is_blind_write() {
                return None;
            }
            if let Some(expected) = key_op.result {
                if operation.apply(previous).1 == expected {
                    return None;
                }
            }
        }
        let (new_state, result) = operation.apply(state);
        match key_op.result {
            Some(expected) => (result == expected).then_some(new_state),
            None => {
                if new_state == state {
                    return None;
                }
                if let Some(p) = self.prev_identical[op] {
                    if !applied_unknown.get(self.bit[p]) {
                        return None;
                    }
                }
                Some(new_state)
            }
        }
    }

    /// Runs the search. `Err(Some(path))` is a violation with the longest
    /// linearizable prefix found; `Err(None)` means the budget ran out.
    ///
    /// Depth-first: at each node the pending acknowledged calls (those before
    /// the first remaining return) are tried first, then the pending unknown
    /// calls (invoked no later than that return); when both are exhausted the
    /// search backtracks. Fully explored (hence failed) nodes are remembered
    /// per `NodeKey` together with the set of unknown operations they had
    /// applied: a node whose applied set is a superset of a failed one's can
    /// do nothing the failed one could not (unknown operations are optional),
    /// so it is pruned. This subsumes the usual exact-match cache.
    fn run(&mut self, budget: u64) -> Result<(), Option<Vec<usize>>> {
        let mut ok_remaining = self.n_acknowledged;
        let mut state: Option<u64> = None;
        let mut before_unknown: Option<Option<u64>> = None;
        let mut acknowledged = Bitset::new(self.n_acknowledged);
        let mut applied_unknown = Bitset::new(self.n_unknown);
        let mut failed: HashMap<NodeKey, Vec<Bitset>> = HashMap::new();
        let mut visited: u64 = 0;
        let mut stack: Vec<Frame> = Vec::new();
        let mut best_ok = 0;
        let mut best_path: Vec<usize> = Vec::new();
        // Scanning unknown calls (second phase) rather than acknowledged ones.
        let mut unknown_phase = false;
        let mut deadline = 0;
        let mut node = self.next[self.ack_head];
        loop {
            if ok_remaining == 0 {
                return Ok(());
            }
            let candidate = if !unknown_phase {
                // With an acknowledged operation left, its return event lies ahead.
                debug_assert_ne!(node, NIL);
                if self.node_is_return[node] {
                    unknown_phase = true;
                    deadline = self.ops[self.node_op[node]].operation.complete;
                    node = self.next[self.unknown_head];
                    continue;
                }
                Some(self.node_op[node])
            } else if node != NIL && self.ops[self.node_op[node]].operation.invoke <= deadline {
                Some(self.node_op[node])
            } else {
                None
            };

            let Some(op) = candidate else {
                // Nothing pending fits: this node is a dead end. Remember it
                // and backtrack.
                let Some(frame) = stack.pop() else {
                    return Err(Some(best_path));
                };
                failed
                    .entry(NodeKey { acknowledged: acknowledged.clone(), state, before_unknown })
                    .or_default()
                    .push(applied_unknown.clone());
                let known = self.ops[frame.op].result.is_some();
                if known {
                    acknowledged.clear(self.bit[frame.op]);
                    ok_remaining += 1;
                } else {
                    applied_unknown.clear(self.bit[frame.op]);
                }
                state = frame.state;
                before_unknown = frame.before_unknown;
                deadline = frame.deadline;
                unknown_phase = !known;
                self.unlift(frame.op);
                node = self.next[self.call_node[frame.op]];
                continue;
            };

            if let Some(new_state) = self.step(op, state, before_unknown, &applied_unknown) {
                let known = self.ops[op].result.is_some();
                let bit = self.bit[op];
                let new_before_unknown = (!known).then_some(state);
                let (set, other) = if known {
                    (&mut acknowledged, &applied_unknown)
                } else {
                    (&mut applied_unknown, &acknowledged)
                };
                set.set(bit);
                let (ack_bits, unknown_bits) = if known { (&*set, other) } else { (other, &*set) };
                let key = NodeKey {
                    acknowledged: ack_bits.clone(),
                    state: new_state,
                    before_unknown: new_before_unknown,
                };
                let dominated =
                    failed.get(&key).is_some_and(|sets| sets.iter().any(|s| s.is_subset_of(unknown_bits)));
                if !dominated {
                    visited += 1;
                    if visited > budget {
                        return Err(None);
                    }
                    stack.push(Frame { op, state, before_unknown, deadline });
                    state = new_state;
                    before_unknown = new_before_unknown;
                    self.lift(op);
                    if known {
                        ok_remaining -= 1;
                        if self.n_acknowledged - ok_remaining > best_ok {
                            best_ok = self.n_acknowledged - ok_remaining;
                            best_path = stack.iter().map(|f| f.op).collect();
                        }
                    }
                    unknown_phase = false;
                    node = self.next[self.ack_head];
                    continue;
                }
                if known {
                    acknowledged.clear(bit);
                } else {
                    applied_unknown.clear(bit);
                }
            }
            node = self.next[node];
        }
    }
}

/// How many operations of the longest prefix a violation report lists.
const PREFIX_SHOWN: usize = 20;

fn check_key(key: u64, ops: &[KeyOp], budget: u64) -> Result<(), CheckError> {
    let mut search = Search::new(ops);
    match search.run(budget) {
        Ok(()) => Ok(()),
        Err(None) => Err(CheckError::BudgetExceeded { key }),
        Err(Some(path)) => {
            Err(CheckError::Violation(Violation { key, description: describe_violation(key, ops, &path) }))
        }
    }
}

fn describe_violation(key: u64, ops: &[KeyOp], path: &[usize]) -> String {
    use std::fmt::Write as _;

    let mut out = String::new();
    let acknowledged = ops.iter().filter(|o| o.result.is_some()).count();
    let _ = writeln!(
        out,
        "no linearization of the {} operations on key {key} ({acknowledged} acknowledged) exists.",
        ops.len()
    );
    let mut in_path = vec![false; ops.len()];
    let mut state = None;
    for &i in path {
        in_path[i] = true;
        state = ops[i].operation.op.apply(state).0;
    }
    let _ = writeln!(
        out,
        "Longest linearizable prefix: {} operations{}",
        path.len(),
        if path.is_empty() { "." } else { ":" }
    );
    if path.len() > PREFIX_SHOWN {
        let _ = writeln!(out, "  ... ({} earlier operations)", path.len() - PREFIX_SHOWN);
    }
    let skip = path.len().saturating_sub(PREFIX_SHOWN);
    for (pos, &i) in path.iter().enumerate().skip(skip) {
        let _ = writeln!(out, "  {:>4}. {}", pos + 1, ops[i]);
    }
    let _ = writeln!(out, "After it, key {key} is {}.", ValueDisplay(state));

    // The earliest-completing acknowledged operation not in the prefix must be
    // linearized before anything invoked after it completed.
    let blocking = (0..ops.len())
        .filter(|&i| !in_path[i] && ops[i].result.is_some())
        .min_by_key(|&i| (ops[i].operation.complete, i));
    let Some(blocking) = blocking else {
        return out;
    };
    let deadline = ops[blocking].operation.complete;
    let _ = writeln!(
        out,
        "None of the operations pending at that point can follow it (one of them must, \
         since {} completed at t={deadline}):",
        ops[blocking]
    );
    for i in (0..ops.len()).filter(|&i| !in_path[i] && ops[i].operation.invoke <= deadline) {
        let key_op = &ops[i];
        let reason = match key_op.result {
            None => "outcome unknown; applying it does not help".to_string(),
            Some(observed) => {
                let (_, expected) = key_op.operation.op.apply(state);
                if expected == observed {
                    "fits the state, but nothing can follow it".to_string()
                } else {
                    format!("would have returned {expected}, not {observed}")
                }
            }
        };
        let _ = writeln!(out, "  {key_op}: {reason}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(client: ClientId, op: Op, invoke: u64, complete: u64, result: OpResult) -> Operation {
        Operation { client, op, invoke, complete, outcome: Outcome::Ok(result) }
    }

    fn unknown(client: ClientId, op: Op, invoke: u64) -> Operation {
        Operation { client, op, invoke, complete: 0, outcome: Outcome::Unknown }
    }

    fn failed(client: ClientId, op: Op, invoke: u64, complete: u64) -> Operation {
        Operation { client, op, invoke, complete, outcome: Outcome::Failed }
    }

    fn put(key: u64, value: u64) -> Op {
        Op::Put { key, value }
    }

    fn get(key: u64) -> Op {
        Op::Get { key }
    }

    fn cas(key: u64, expected: Option<u64>, new: u64) -> Op {
        Op::Cas { key, expected, new }
    }

    fn delete(key: u64) -> Op {
        Op::Delete { key }
    }

    fn read(value: Option<u64>) -> OpResult {
        OpResult::Get(value)
    }

    fn swapped(succeeded: bool) -> OpResult {
        OpResult::Cas { succeeded }
    }

    fn history(ops: impl IntoIterator<Item = Operation>) -> History {
        ops.into_iter().collect()
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check(&History::new()), Ok(()));
    }

    #[test]
    fn sequential_valid_history_is_linearizable() {
        let h = history([
            ok(1, get(1), 0, 1, read(None)),
            ok(1, put(1, 10), 2, 3, OpResult::Put),
            ok(2, get(1), 4, 5, read(Some(10))),
            ok(2, cas(1, Some(10), 11), 6, 7, swapped(true)),
            ok(3, cas(1, Some(10), 12), 8, 9, swapped(false)),
            ok(3, get(1), 10, 11, read(Some(11))),
            ok(1, delete(1), 12, 13, OpResult::Delete),
            ok(2, get(1), 14, 15, read(None)),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn get_overlapping_a_put_may_see_either_value() {
        for seen in [Some(1), Some(2)] {
            let h = history([
                ok(1, put(5, 1), 0, 1, OpResult::Put),
                ok(1, put(5, 2), 2, 10, OpResult::Put),
                ok(2, get(5), 3, 4, read(seen)),
                ok(3, get(5), 5, 12, read(Some(2))),
            ]);
            assert_eq!(check(&h), Ok(()), "get seeing {seen:?}");
        }
    }

    #[test]
    fn concurrent_readers_may_disagree_only_while_overlapping_the_write() {
        // Reader 2 sees the new value, reader 3 (overlapping the put, but
        // invoked before reader 2 completed) still sees the old one: valid.
        let h = history([
            ok(1, put(5, 1), 0, 1, OpResult::Put),
            ok(1, put(5, 2), 2, 20, OpResult::Put),
            ok(3, get(5), 3, 9, read(Some(1))),
            ok(2, get(5), 4, 6, read(Some(2))),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn read_after_a_newer_read_cannot_see_the_older_value() {
        // Reader 2 sees 2 and completes; reader 3 starts afterwards and sees 1.
        let h = history([
            ok(1, put(5, 1), 0, 1, OpResult::Put),
            ok(1, put(5, 2), 2, 20, OpResult::Put),
            ok(2, get(5), 4, 6, read(Some(2))),
            ok(3, get(5), 7, 9, read(Some(1))),
        ]);
        let err = check(&h).unwrap_err();
        assert_eq!(err.key, 5);
    }

    #[test]
    fn stale_read_after_completed_put_is_rejected() {
        let h = history([ok(1, put(3, 1), 0, 2, OpResult::Put), ok(2, get(3), 3, 4, read(None))]);
        let err = check(&h).unwrap_err();
        assert_eq!(err.key, 3);
        assert!(err.to_string().contains("key 3"), "{err}");

        let h = history([
            ok(1, put(3, 1), 0, 2, OpResult::Put),
            ok(1, put(3, 2), 3, 4, OpResult::Put),
            ok(2, get(3), 5, 6, read(Some(1))),
        ]);
        let err = check(&h).unwrap_err();
        assert_eq!(err.key, 3);
    }

    #[test]
    fn lost_acknowledged_write_is_rejected() {
        let h = history([
            ok(1, get(4), 0, 1, read(None)),
            ok(1, put(4, 9), 2, 3, OpResult::Put),
            ok(2, get(4), 10, 11, read(Some(9))),
            ok(3, get(4), 12, 13, read(None)),
        ]);
        let err = check(&h).unwrap_err();
        assert_eq!(err.key, 4);
        assert!(err.description.contains("#3"), "{}", err.description);
    }

    #[test]
    fn operations_touching_at_the_same_timestamp_are_concurrent() {
        // The get is invoked at the very step the put completes: concurrent,
        // so it may still see the old value.
        let h = history([ok(1, put(1, 1), 0, 5, OpResult::Put), ok(2, get(1), 5, 6, read(None))]);
        assert_eq!(check(&h), Ok(()));
        // One step later it is not concurrent any more.
        let h = history([ok(1, put(1, 1), 0, 5, OpResult::Put), ok(2, get(1), 6, 7, read(None))]);
        assert!(check(&h).is_err());
    }

    #[test]
    fn two_concurrent_cas_from_the_same_value_cannot_both_succeed() {
        let h = history([
            ok(1, put(2, 0), 0, 1, OpResult::Put),
            ok(1, cas(2, Some(0), 1), 2, 5, swapped(true)),
            ok(2, cas(2, Some(0), 2), 3, 6, swapped(true)),
        ]);
        let err = check(&h).unwrap_err();
        assert_eq!(err.key, 2);
    }

    #[test]
    fn concurrent_cas_with_one_success_and_one_failure_is_linearizable() {
        let h = history([
            ok(1, put(2, 0), 0, 1, OpResult::Put),
            ok(1, cas(2, Some(0), 1), 2, 5, swapped(true)),
            ok(2, cas(2, Some(0), 2), 3, 6, swapped(false)),
            ok(3, get(2), 7, 8, read(Some(1))),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn cas_expecting_absent_succeeds_only_on_a_missing_key() {
        let h = history([
            ok(1, cas(6, None, 1), 0, 1, swapped(true)),
            ok(1, cas(6, None, 2), 2, 3, swapped(false)),
            ok(1, get(6), 4, 5, read(Some(1))),
        ]);
        assert_eq!(check(&h), Ok(()));
        let h = history([ok(1, put(6, 0), 0, 1, OpResult::Put), ok(1, cas(6, None, 2), 2, 3, swapped(true))]);
        assert_eq!(check(&h).unwrap_err().key, 6);
    }

    #[test]
    fn failed_cas_has_no_effect() {
        let h = history([
            ok(1, put(6, 0), 0, 1, OpResult::Put),
            ok(1, cas(6, Some(5), 2), 2, 3, swapped(false)),
            ok(1, get(6), 4, 5, read(Some(2))),
        ]);
        assert_eq!(check(&h).unwrap_err().key, 6);
    }

    #[test]
    fn unknown_put_may_be_observed_by_a_later_get() {
        let h = history([
            ok(1, put(1, 1), 0, 1, OpResult::Put),
            unknown(2, put(1, 2), 2),
            ok(3, get(1), 50, 51, read(Some(2))),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn unknown_put_may_never_take_effect() {
        let h = history([
            ok(1, put(1, 1), 0, 1, OpResult::Put),
            unknown(2, put(1, 2), 2),
            ok(3, get(1), 50, 51, read(Some(1))),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn unknown_put_once_observed_cannot_be_undone() {
        let h = history([
            ok(1, put(1, 1), 0, 1, OpResult::Put),
            unknown(2, put(1, 2), 2),
            ok(3, get(1), 50, 51, read(Some(2))),
            ok(3, get(1), 52, 53, read(Some(1))),
        ]);
        let err = check(&h).unwrap_err();
        assert_eq!(err.key, 1);
    }

    #[test]
    fn unknown_put_cannot_take_effect_before_its_invocation() {
        let h = history([ok(3, get(1), 0, 1, read(Some(2))), unknown(2, put(1, 2), 2)]);
        assert!(check(&h).is_err());
    }

    #[test]
    fn unknown_put_may_take_effect_between_two_observations() {
        // The unknown put lands after the first read and before a later cas
        // which relies on it, then a later acknowledged put overwrites it.
        let h = history([
            unknown(2, put(1, 7), 0),
            ok(1, get(1), 10, 11, read(None)),
            ok(1, cas(1, Some(7), 8), 20, 21, swapped(true)),
            ok(1, put(1, 1), 22, 23, OpResult::Put),
            ok(1, get(1), 24, 25, read(Some(1))),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn each_unknown_put_takes_effect_at_most_once() {
        let h = history([
            ok(1, put(1, 1), 0, 1, OpResult::Put),
            unknown(2, put(1, 2), 2),
            ok(1, get(1), 10, 11, read(Some(2))),
            ok(1, put(1, 3), 12, 13, OpResult::Put),
            ok(1, get(1), 14, 15, read(Some(2))),
        ]);
        assert!(check(&h).is_err());
        // Two identical unknown puts can explain two observations.
        let h = history([
            ok(1, put(1, 1), 0, 1, OpResult::Put),
            unknown(2, put(1, 2), 2),
            unknown(3, put(1, 2), 3),
            ok(1, get(1), 10, 11, read(Some(2))),
            ok(1, put(1, 3), 12, 13, OpResult::Put),
            ok(1, get(1), 14, 15, read(Some(2))),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn unknown_reads_are_ignored() {
        let h = history([
            ok(1, put(1, 1), 0, 1, OpResult::Put),
            unknown(2, get(1), 2),
            ok(1, get(1), 3, 4, read(Some(1))),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn never_completed_operations_count_as_unknown() {
        let mut h = History::new();
        let a = h.invoke(1, put(1, 1), 0);
        h.complete(a, Outcome::Ok(OpResult::Put), 1);
        let _pending = h.invoke(2, put(1, 2), 2);
        let b = h.invoke(3, get(1), 10);
        h.complete(b, Outcome::Ok(read(Some(2))), 11);
        assert_eq!(h.len(), 3);
        assert_eq!(h.operations()[1].outcome, Outcome::Unknown);
        assert_eq!(check(&h), Ok(()));

        let c = h.invoke(3, get(1), 12);
        h.complete(c, Outcome::Ok(read(Some(1))), 13);
        assert_eq!(check(&h).unwrap_err().key, 1);
    }

    #[test]
    fn failed_put_never_takes_effect() {
        let h = history([
            ok(1, put(1, 1), 0, 1, OpResult::Put),
            failed(2, put(1, 2), 2, 3),
            ok(3, get(1), 10, 11, read(Some(2))),
        ]);
        let err = check(&h).unwrap_err();
        assert_eq!(err.key, 1);
        let h = history([
            ok(1, put(1, 1), 0, 1, OpResult::Put),
            failed(2, put(1, 2), 2, 3),
            ok(3, get(1), 10, 11, read(Some(1))),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn delete_makes_the_key_read_as_absent() {
        let h = history([
            ok(1, put(8, 1), 0, 1, OpResult::Put),
            ok(1, delete(8), 2, 3, OpResult::Delete),
            ok(2, get(8), 4, 5, read(None)),
            ok(2, cas(8, None, 4), 6, 7, swapped(true)),
            ok(2, get(8), 8, 9, read(Some(4))),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn reading_a_deleted_value_after_the_delete_is_rejected() {
        let h = history([
            ok(1, put(8, 1), 0, 1, OpResult::Put),
            ok(1, delete(8), 2, 3, OpResult::Delete),
            ok(2, get(8), 4, 5, read(Some(1))),
        ]);
        assert_eq!(check(&h).unwrap_err().key, 8);
    }

    #[test]
    fn keys_are_checked_independently_and_the_violation_names_its_key() {
        let h = history([
            ok(1, put(1, 1), 0, 10, OpResult::Put),
            ok(2, put(7, 1), 0, 1, OpResult::Put),
            ok(3, put(9, 1), 0, 1, OpResult::Put),
            // Fine on key 1: concurrent with the put.
            ok(2, get(1), 2, 3, read(None)),
            // Stale on key 7.
            ok(2, get(7), 4, 5, read(None)),
            ok(3, get(9), 4, 5, read(Some(1))),
        ]);
        let err = check(&h).unwrap_err();
        assert_eq!(err.key, 7);
        assert!(err.to_string().contains("key 7"), "{err}");
        assert!(matches!(check_with_budget(&h, 1000), Err(CheckError::Violation(ref v)) if v.key == 7));
    }

    #[test]
    fn violation_description_shows_prefix_and_the_stuck_operations() {
        let h = history([ok(1, put(3, 1), 0, 2, OpResult::Put), ok(2, get(3), 3, 4, read(None))]);
        let err = check(&h).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("put(3, 1)"), "{text}");
        assert!(text.contains("get(3) -> absent"), "{text}");
        assert!(text.contains("would have returned 1"), "{text}");
    }

    #[test]
    fn budget_exhaustion_is_reported_with_its_key() {
        let h = history([
            ok(1, put(4, 1), 0, 1, OpResult::Put),
            ok(1, get(4), 2, 3, read(Some(1))),
            ok(1, get(4), 4, 5, read(Some(1))),
        ]);
        assert_eq!(check_with_budget(&h, 1), Err(CheckError::BudgetExceeded { key: 4 }));
        assert_eq!(check_with_budget(&h, 3), Ok(()));
        let text = CheckError::BudgetExceeded { key: 4 }.to_string();
        assert!(text.contains("key 4"), "{text}");
    }

    #[test]
    fn violation_on_one_key_is_preferred_over_budget_exhaustion_on_another() {
        let h = history([
            ok(1, put(1, 1), 0, 1, OpResult::Put),
            ok(1, get(1), 2, 3, read(Some(1))),
            ok(1, get(1), 4, 5, read(Some(1))),
            ok(1, get(2), 0, 1, read(Some(5))),
        ]);
        assert!(matches!(
            check_with_budget(&h, 1),
            Err(CheckError::Violation(ref v)) if v.key == 2
        ));
    }

    /// A small deterministic generator (SplitMix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_op(rng: &mut Rng, keys: u64, values: u64) -> Op {
        let key = rng.below(keys);
        match rng.below(10) {
            0..=2 => put(key, rng.below(values)),
            3..=6 => get(key),
            7..=8 => {
                let expected = if rng.below(4) == 0 { None } else { Some(rng.below(values)) };
                cas(key, expected, rng.below(values))
            }
            _ => delete(key),
        }
    }

    /// Simulates `clients` clients concurrently running `ops` operations against
    /// an atomic map: each operation takes effect at a distinct instant inside its
    /// interval. Some operations time out (unknown outcome) and then take effect
    /// much later or never; some fail without effect.
    fn concurrent_execution(seed: u64, clients: u64, ops: usize, keys: u64) -> History {
        let mut rng = Rng(seed);
        // (linearization instant, client, op, invoke, complete, mode)
        // mode: 0 = ok, 1 = unknown and applied, 2 = unknown not applied, 3 = failed.
        let mut planned = Vec::with_capacity(ops);
        let mut clock = vec![0u64; clients as usize];
        for i in 0..ops {
            let client = rng.below(clients);
            let c = client as usize;
            let invoke = clock[c] + rng.below(5);
            // Distinct instants: multiply by the client count and add the client.
            let lin = (invoke + rng.below(6)) * clients + client;
            let complete = lin / clients + rng.below(6);
            let mode = match rng.below(20) {
                0 => 1,
                1 => 2,
                2 => 3,
                _ => 0,
            };
            let lin = if mode == 1 { lin + rng.below(400) * clients } else { lin };
            clock[c] = complete + 1;
            planned.push((lin, i, client, random_op(&mut rng, keys, 4), invoke, complete, mode));
        }
        planned.sort_unstable_by_key(|p| (p.0, p.1));
        let mut store: HashMap<u64, u64> = HashMap::new();
        let mut recorded = Vec::with_capacity(ops);
        for (_, i, client, op, invoke, complete, mode) in planned {
            let outcome = match mode {
                0 | 1 => {
                    let current = store.get(&op.key()).copied();
                    let (new, result) = op.apply(current);
                    match new {
                        Some(v) => store.insert(op.key(), v),
                        None => store.remove(&op.key()),
                    };
                    if mode == 0 {
                        Outcome::Ok(result)
                    } else {
                        Outcome::Unknown
                    }
                }
                2 => Outcome::Unknown,
                _ => Outcome::Failed,
            };
            recorded.push((i, Operation { client, op, invoke, complete, outcome }));
        }
        recorded.sort_unstable_by_key(|(i, _)| *i);
        history(recorded.into_iter().map(|(_, o)| o))
    }

    #[test]
    fn large_concurrent_linearizable_histories_pass_within_a_small_budget() {
        for seed in 0..4 {
            let h = concurrent_execution(seed, 10, 3000, 10);
            assert_eq!(check_with_budget(&h, 200_000), Ok(()), "seed {seed}");
        }
        let h = concurrent_execution(99, 10, 3000, 2);
        assert_eq!(check_with_budget(&h, 200_000), Ok(()));
    }

    #[test]
    fn many_pending_unknown_writes_do_not_blow_up_the_search() {
        let mut ops: Vec<Operation> = (0..40).map(|i| unknown(i, put(1, 100 + i), 0)).collect();
        ops.push(ok(50, get(1), 10, 11, read(None)));
        ops.push(ok(50, get(1), 12, 13, read(Some(77))));
        let h = history(ops);
        assert!(matches!(
            check_with_budget(&h, 10_000),
            Err(CheckError::Violation(ref v)) if v.key == 1
        ));
    }

    /// Exhaustive reference checker for tiny histories: tries every subset of
    /// the unknown-outcome operations and every order of the chosen operations
    /// that respects real time, over the whole map at once (no partitioning).
    fn brute_force_linearizable(h: &History) -> bool {
        let ops: Vec<Operation> =
            h.operations().iter().filter(|o| o.outcome != Outcome::Failed).copied().collect();
        let unknown: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].outcome == Outcome::Unknown).collect();
        (0u32..1 << unknown.len()).any(|mask| {
            let chosen: Vec<usize> = (0..ops.len())
                .filter(|i| match unknown.iter().position(|u| u == i) {
                    Some(bit) => mask & (1 << bit) != 0,
                    None => true,
                })
                .collect();
            search_orders(&ops, &chosen, &mut vec![false; ops.len()], &BTreeMap::new())
        })
    }

    fn search_orders(
        ops: &[Operation],
        chosen: &[usize],
        placed: &mut Vec<bool>,
        store: &BTreeMap<u64, u64>,
    ) -> bool {
        let remaining: Vec<usize> = chosen.iter().copied().filter(|&i| !placed[i]).collect();
        if remaining.is_empty() {
            return true;
        }
        let completes = |i: usize| match ops[i].outcome {
            Outcome::Unknown => u64::MAX,
            _ => ops[i].complete,
        };
        remaining.iter().any(|&i| {
            // i may go next unless another remaining op finished before i started.
            if remaining.iter().any(|&j| completes(j) < ops[i].invoke) {
                return false;
            }
            let key = ops[i].op.key();
            let (new, result) = ops[i].op.apply(store.get(&key).copied());
            if let Outcome::Ok(observed) = ops[i].outcome {
                if observed != result {
                    return false;
                }
            }
            let mut next = store.clone();
            match new {
                Some(v) => next.insert(key, v),
                None => next.remove(&key),
            };
            placed[i] = true;
            let found = search_orders(ops, chosen, placed, &next);
            placed[i] = false;
            found
        })
    }

    fn arbitrary_operation() -> impl Strategy<Value = Operation> {
        let op = prop_oneof![
            (0u64..2, 0u64..3).prop_map(|(key, value)| put(key, value)),
            (0u64..2).prop_map(get),
            (0u64..2, proptest::option::of(0u64..3), 0u64..3)
                .prop_map(|(key, expected, new)| cas(key, expected, new)),
            (0u64..2).prop_map(delete),
        ];
        let outcome = prop_oneof![
            6 => proptest::option::of(0u64..3).prop_map(Some),
            1 => Just(None),
        ];
        (0u64..3, op, 0u64..8, 0u64..4, outcome, 0u8..8, any::<bool>()).prop_map(
            |(client, op, invoke, length, read, kind, flag)| {
                let outcome = match (kind, read) {
                    (0, _) => Outcome::Unknown,
                    (1, _) => Outcome::Failed,
                    (_, None) => Outcome::Unknown,
                    (_, Some(value)) => Outcome::Ok(match op {
                        Op::Put { .. } => OpResult::Put,
                        Op::Get { .. } => OpResult::Get(value),
                        Op::Cas { .. } => OpResult::Cas { succeeded: flag },
                        Op::Delete { .. } => OpResult::Delete,
                    }),
                };
                Operation { client, op, invoke, complete: invoke + length, outcome }
            },
        )
    }

    /// One step of a sequential execution, as generated by proptest.
    #[derive(Debug, Clone)]
    struct Step {
        client: ClientId,
        op: Op,
        /// 0 = ok, 1 = unknown and applied, 2 = unknown not applied, 3 = failed.
        mode: u8,
        widen_before: u64,
        widen_after: u64,
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let key = 0u64..3;
        let value = 0u64..4;
        prop_oneof![
            (key.clone(), value.clone()).prop_map(|(key, value)| put(key, value)),
            key.clone().prop_map(get),
            (key.clone(), proptest::option::of(value.clone()), value)
                .prop_map(|(key, expected, new)| cas(key, expected, new)),
            key.prop_map(delete),
        ]
    }

    fn step_strategy() -> impl Strategy<Value = Step> {
        (
            0u64..10,
            op_strategy(),
            prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
            0u64..40,
            0u64..40,
        )
            .prop_map(|(client, op, mode, widen_before, widen_after)| Step {
                client,
                op,
                mode,
                widen_before,
                widen_after,
            })
    }

    /// Runs `steps` one at a time against a reference map; step `i` occupies
    /// `[4i + 10, 4i + 11]`, optionally widened by the step's widening amounts.
    fn sequential_history(steps: &[Step], widen: bool) -> History {
        let mut store: HashMap<u64, u64> = HashMap::new();
        let mut h = History::new();
        for (i, step) in steps.iter().enumerate() {
            let (mut invoke, mut complete) = (4 * i as u64 + 10, 4 * i as u64 + 11);
            if widen {
                invoke = invoke.saturating_sub(step.widen_before);
                complete += step.widen_after;
            }
            let outcome = match step.mode {
                0 | 1 => {
                    let current = store.get(&step.op.key()).copied();
                    let (new, result) = step.op.apply(current);
                    match new {
                        Some(v) => store.insert(step.op.key(), v),
                        None => store.remove(&step.op.key()),
                    };
                    if step.mode == 0 {
                        Outcome::Ok(result)
                    } else {
                        Outcome::Unknown
                    }
                }
                2 => Outcome::Unknown,
                _ => Outcome::Failed,
            };
            h.push(Operation { client: step.client, op: step.op, invoke, complete, outcome });
        }
        h
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn checker_agrees_with_brute_force_on_tiny_arbitrary_histories(
            ops in proptest::collection::vec(arbitrary_operation(), 0..7)
        ) {
            let h = history(ops);
            let expected = brute_force_linearizable(&h);
            let verdict = check(&h);
            prop_assert_eq!(verdict.is_ok(), expected, "history {:#?}: {:?}", h, verdict);
        }
    }

    proptest! {
        #[test]
        fn random_sequential_executions_are_linearizable(
            steps in proptest::collection::vec(step_strategy(), 0..120)
        ) {
            let h = sequential_history(&steps, false);
            prop_assert_eq!(check(&h), Ok(()));
        }

        #[test]
        fn widening_intervals_of_a_sequential_execution_keeps_it_linearizable(
            steps in proptest::collection::vec(step_strategy(), 0..120)
        ) {
            let h = sequential_history(&steps, true);
            prop_assert_eq!(check_with_budget(&h, 1_000_000), Ok(()));
        }

        #[test]
        fn random_concurrent_linearizable_executions_pass(
            seed in any::<u64>(),
            clients in 1u64..10,
            keys in 1u64..4,
        ) {
            let h = concurrent_execution(seed, clients, 150, keys);
            prop_assert_eq!(check_with_budget(&h, 1_000_000), Ok(()));
        }

        #[test]
        fn corrupting_one_read_of_a_sequential_execution_is_rejected(
            ops in proptest::collection::vec(op_strategy(), 0..80),
            read_at in any::<prop::sample::Index>(),
            read_key in 0u64..3,
            wrong in proptest::option::of(0u64..6),
        ) {
            let mut steps: Vec<Step> = ops
                .into_iter()
                .map(|op| Step { client: 1, op, mode: 0, widen_before: 0, widen_after: 0 })
                .collect();
            let at = read_at.index(steps.len() + 1);
            steps.insert(at, Step { client: 2, op: get(read_key), mode: 0, widen_before: 0, widen_after: 0 });
            let mut h = sequential_history(&steps, false);
            let Outcome::Ok(OpResult::Get(truth)) = h.ops[at].outcome else {
                unreachable!("inserted a get");
            };
            let corrupted = if wrong == truth {
                match truth {
                    None => Some(0),
                    Some(v) => Some(v + 1),
                }
            } else {
                wrong
            };
            prop_assert_ne!(corrupted, truth);
            h.ops[at].outcome = Outcome::Ok(OpResult::Get(corrupted));
            let err = check(&h).unwrap_err();
            prop_assert_eq!(err.key, read_key);
        }
    }
}
