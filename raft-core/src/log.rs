//! The replicated log as one node holds it: a snapshot boundary, the entries
//! after it in memory, and three cursors.
//!
//! Invariants (checked by [`RaftLog::check_invariants`]):
//! - `entries[i].index == snapshot_index + 1 + i`: contiguous after the snapshot;
//! - terms never decrease along the log, and none is below `snapshot_term`;
//! - `snapshot_index <= commit <= last_index`;
//! - `stable_index <= last_index`: the durable prefix is a prefix of the log;
//! - `unpersisted_from`, when set, is in `first_index ..= last_index + 1`.

use std::collections::VecDeque;

use crate::types::{Entry, Index, Term};

/// The log of one node.
#[derive(Clone, Debug, Default)]
pub struct RaftLog {
    snapshot_index: Index,
    snapshot_term: Term,
    entries: VecDeque<Entry>,
    commit: Index,
    /// Highest index known durable on this node.
    stable: Index,
    /// Lowest index not yet handed to the driver in a persist batch.
    unpersisted_from: Option<Index>,
    /// Lowest index truncated since the last [`RaftLog::take_truncation`].
    truncated_from: Option<Index>,
}

/// What a follower's consistency check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AppendCheck {
    /// The entries are now in the log; everything up to `last` matches the leader.
    Matched {
        /// The last index covered by the append.
        last: Index,
        /// The first index the append wrote, if it wrote any (entries
        /// already held are skipped).
        appended_from: Option<Index>,
    },
    /// `prev_log_index` does not match; the hints are for the leader.
    Mismatch {
        /// The term held at `prev_log_index`, if the log reaches that far.
        conflict_term: Option<Term>,
        /// First index of `conflict_term`, or last index + 1.
        conflict_index: Index,
    },
    /// The append would overwrite a committed entry: a protocol violation.
    ConflictsWithCommitted {
        /// The committed index that would be overwritten.
        index: Index,
    },
}

impl RaftLog {
    /// An empty log.
    pub fn new() -> RaftLog {
        RaftLog::default()
    }

    /// Rebuilds a log from durable state: everything given is durable.
    pub(crate) fn restore(
        snapshot_index: Index,
        snapshot_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    ) -> RaftLog {
        let mut log = RaftLog {
            snapshot_index,
            snapshot_term,
            entries: entries.into(),
            commit: 0,
            stable: 0,
            unpersisted_from: None,
            truncated_from: None,
        };
        log.stable = log.last_index();
        log.commit = commit.clamp(snapshot_index, log.last_index());
        log
    }

    /// Index of the first entry held (one past the snapshot).
    pub fn first_index(&self) -> Index {
        self.snapshot_index + 1
    }

    /// Index of the last entry (the snapshot index when no entries are held).
    pub fn last_index(&self) -> Index {
        self.snapshot_index + self.entries.len() as Index
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    /// Index of the latest snapshot.
    pub fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    /// Term of the entry at the snapshot index.
    pub fn snapshot_term(&self) -> Term {
        self.snapshot_term
    }

    /// Highest index known committed.
    pub fn commit(&self) -> Index {
        self.commit
    }

    /// Highest index known durable.
    pub fn stable(&self) -> Index {
        self.stable
    }

    /// The term of the entry at `index`, if known: `None` below the snapshot or
    /// past the end.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// Entries from `lo` through `hi` (inclusive), cut after `max_bytes` (at
    /// least one entry is returned if the range is non-empty).
    /// `lo` must be at least `first_index()`.
    pub fn slice(&self, lo: Index, hi: Index, max_bytes: usize) -> Vec<Entry> {
        assert!(
            lo > self.snapshot_index,
            "slice from {lo} reaches into the snapshot at {}",
            self.snapshot_index
        );
        let hi = hi.min(self.last_index());
        let mut out = Vec::new();
        let mut bytes = 0;
        for index in lo..=hi {
            let entry = &self.entries[(index - self.snapshot_index - 1) as usize];
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as
    /// up-to-date as this one (§5.4.1).
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term() || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Appends one entry at the end (leader side).
    pub(crate) fn push(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "leader appends out of order");
        assert!(entry.term >= self.last_term(), "term {} below last term {}", entry.term, self.last_term());
        if self.unpersisted_from.is_none() {
            self.unpersisted_from = Some(entry.index);
        }
        self.entries.push_back(entry);
    }

    /// The follower side of AppendEntries: checks `prev`, skips entries already
    /// held, truncates at the first conflict and appends the rest, moving
    /// them into the log (an append's entries are not copied again).
    pub(crate) fn try_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
    ) -> AppendCheck {
        match self.term(prev_index) {
            Some(t) if t == prev_term => {}
            Some(t) => {
                // Fast back-off hint: the first index we hold of the conflicting term.
                let mut first = prev_index;
                while first > self.first_index() && self.term(first - 1) == Some(t) {
                    first -= 1;
                }
                return AppendCheck::Mismatch { conflict_term: Some(t), conflict_index: first };
            }
            None => {
                return AppendCheck::Mismatch { conflict_term: None, conflict_index: self.last_index() + 1 };
            }
        }
        let last = prev_index + entries.len() as Index;
        for (offset, entry) in entries.iter().enumerate() {
            let index = prev_index + 1 + offset as Index;
            if entry.index != index {
                // A malformed append: entries not contiguous. Treat as a mismatch
                // at prev so the leader probes again.
                return AppendCheck::Mismatch { conflict_term: None, conflict_index: self.last_index() + 1 };
            }
            match self.term(index) {
                Some(t) if t == entry.term => continue,
                Some(_) if index <= self.commit => {
                    return AppendCheck::ConflictsWithCommitted { index };
                }
                Some(_) => {
                    self.truncate_from(index);
                    self.extend(entries, offset);
                    return AppendCheck::Matched { last, appended_from: Some(index) };
                }
                None => {
                    self.extend(entries, offset);
                    return AppendCheck::Matched { last, appended_from: Some(index) };
                }
            }
        }
        AppendCheck::Matched { last, appended_from: None }
    }

    /// Appends `entries[skip..]` at the end of the log.
    fn extend(&mut self, entries: Vec<Entry>, skip: usize) {
        let first = entries[skip].index;
        assert_eq!(first, self.last_index() + 1);
        let mut term = self.last_term();
        for entry in &entries[skip..] {
            assert!(entry.term >= term, "append would make terms go backwards at index {}", entry.index);
            term = entry.term;
        }
        self.unpersisted_from = Some(self.unpersisted_from.map_or(first, |u| u.min(first)));
        self.entries.extend(entries.into_iter().skip(skip));
    }

    /// Drops entries at `index` and after (they conflict with the leader's).
    fn truncate_from(&mut self, index: Index) {
        assert!(index > self.commit, "truncating committed index {index} (commit {})", self.commit);
        assert!(index > self.snapshot_index);
        self.entries.truncate((index - self.snapshot_index - 1) as usize);
        self.stable = self.stable.min(index - 1);
        self.unpersisted_from = Some(self.unpersisted_from.map_or(index, |u| u.min(index)));
        self.truncated_from = Some(self.truncated_from.map_or(index, |t| t.min(index)));
    }

    /// The lowest index truncated since the last call, if any: the persist
    /// batch gathered now is the first to hold what replaced it.
    pub(crate) fn take_truncation(&mut self) -> Option<Index> {
        self.truncated_from.take()
    }

    /// The driver reports durable a batch written before the log was
    /// truncated at `truncated`: only what it wrote below that point still
    /// stands (its last entry may match the new log's and the entries
    /// before it not, when a peer broke Log Matching).
    pub(crate) fn stable_below(&mut self, index: Index, truncated: Index) {
        let upto = index.min(truncated - 1);
        if upto > self.stable && upto <= self.last_index() {
            self.stable = upto;
        }
    }

    /// Raises the commit index to `index` (never lowers it). `index` must be held.
    pub(crate) fn commit_to(&mut self, index: Index) -> bool {
        if index <= self.commit {
            return false;
        }
        assert!(index <= self.last_index(), "commit {index} beyond last index {}", self.last_index());
        self.commit = index;
        true
    }

    /// Entries not yet handed to the driver for persisting; marks them handed.
    pub(crate) fn take_unpersisted(&mut self) -> Vec<Entry> {
        match self.unpersisted_from.take() {
            Some(from) if from <= self.last_index() => self.slice(from, self.last_index(), usize::MAX),
            _ => Vec::new(),
        }
    }

    /// True if some entries were not yet handed to the driver for persisting.
    pub(crate) fn has_unpersisted(&self) -> bool {
        self.unpersisted_from.is_some_and(|from| from <= self.last_index())
    }

    /// The driver reports entries durable up to (`index`, `term`). Ignored when
    /// the log has since been truncated below it or rewritten with another term.
    pub(crate) fn stable_to(&mut self, index: Index, term: Term) {
        if index > self.stable && self.term(index) == Some(term) {
            self.stable = index;
        }
    }

    /// Drops entries up to and including `index` (a snapshot covers them).
    pub(crate) fn compact_to(&mut self, index: Index) {
        assert!(index <= self.commit && index > self.snapshot_index);
        let term = self.term(index).expect("compacting to a held index");
        let drop = (index - self.snapshot_index) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
        if let Some(from) = self.unpersisted_from {
            if from <= index {
                self.unpersisted_from = if index < self.last_index() { Some(index + 1) } else { None };
            }
        }
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub(crate) fn reset_to_snapshot(&mut self, index: Index, term: Term) {
        self.entries.clear();
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.commit = index;
        self.stable = self.stable.min(index);
        self.unpersisted_from = None;
    }

    /// The snapshot just installed is durable: so is everything up to it.
    pub(crate) fn snapshot_stable(&mut self, index: Index) {
        if index == self.snapshot_index && self.stable < index {
            self.stable = index;
        }
    }

    /// Checks the invariants listed in the module docs.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut term = self.snapshot_term;
        for (i, entry) in self.entries.iter().enumerate() {
            let expected = self.snapshot_index + 1 + i as Index;
            if entry.index != expected {
                return Err(format!("log entry at position {i} has index {} not {expected}", entry.index));
            }
            if entry.term < term {
                return Err(format!(
                    "log term goes from {term} down to {} at index {}",
                    entry.term, entry.index
                ));
            }
            term = entry.term;
        }
        if self.commit < self.snapshot_index || self.commit > self.last_index() {
            return Err(format!(
                "commit {} outside snapshot {} ..= last {}",
                self.commit,
                self.snapshot_index,
                self.last_index()
            ));
        }
        if self.stable > self.last_index() {
            return Err(format!("stable {} beyond last {}", self.stable, self.last_index()));
        }
        if let Some(from) = self.unpersisted_from {
            if from < self.first_index() || from > self.last_index() + 1 {
                return Err(format!("unpersisted_from {from} outside the log"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryPayload;

    fn entry(index: Index, term: Term) -> Entry {
        Entry { index, term, payload: EntryPayload::Blank }
    }

    fn log_with_terms(terms: &[Term]) -> RaftLog {
        let mut log = RaftLog::new();
        for (i, &t) in terms.iter().enumerate() {
            log.push(entry(i as Index + 1, t));
        }
        log
    }

    #[test]
    fn append_truncates_at_the_first_conflict_and_keeps_the_rest() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        let res = log.try_append(2, 1, vec![entry(3, 3), entry(4, 3), entry(5, 3)]);
        assert_eq!(res, AppendCheck::Matched { last: 5, appended_from: Some(3) });
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.term(3), Some(3));
        log.check_invariants().unwrap();
    }

    #[test]
    fn stale_append_does_not_truncate_newer_matching_entries() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        let res = log.try_append(1, 1, vec![entry(2, 1)]);
        assert_eq!(res, AppendCheck::Matched { last: 2, appended_from: None });
        assert_eq!(log.last_index(), 4, "entries after a matching prefix stay");
    }

    #[test]
    fn mismatch_hints_name_the_first_index_of_the_conflicting_term() {
        let mut log = log_with_terms(&[1, 2, 2, 2]);
        let res = log.try_append(4, 3, vec![]);
        assert_eq!(res, AppendCheck::Mismatch { conflict_term: Some(2), conflict_index: 2 });
        let res = log.try_append(9, 3, vec![]);
        assert_eq!(res, AppendCheck::Mismatch { conflict_term: None, conflict_index: 5 });
    }

    #[test]
    fn an_append_conflicting_with_committed_entries_is_refused() {
        let mut log = log_with_terms(&[1, 1, 1]);
        log.commit_to(3);
        let res = log.try_append(1, 1, vec![entry(2, 2)]);
        assert_eq!(res, AppendCheck::ConflictsWithCommitted { index: 2 });
        assert_eq!(log.term(2), Some(1));
    }

    #[test]
    fn compaction_keeps_terms_at_the_boundary() {
        let mut log = log_with_terms(&[1, 1, 2, 3]);
        log.commit_to(3);
        log.compact_to(3);
        assert_eq!(log.first_index(), 4);
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.term(2), None);
        assert_eq!(log.last_index(), 4);
        log.check_invariants().unwrap();
    }

    #[test]
    fn truncation_lowers_the_stable_index_and_reissues_entries() {
        let mut log = log_with_terms(&[1, 1, 1]);
        assert_eq!(log.take_unpersisted().len(), 3);
        log.stable_to(3, 1);
        assert_eq!(log.stable(), 3);
        log.try_append(1, 1, vec![entry(2, 2)]);
        assert_eq!(log.stable(), 1);
        let again = log.take_unpersisted();
        assert_eq!(again, vec![entry(2, 2)]);
        log.stable_to(3, 1);
        assert_eq!(log.stable(), 1, "a report for the truncated entry is ignored");
    }
}
