//! A follower's side of replication: appends, heartbeats and snapshots
//! from the leader of its term.

use crate::action::Action;
use crate::log::AppendCheck;
use crate::message::{AppendResponse, MessageBody};
use crate::types::{Entry, EntryPayload, Index, NodeId, Snapshot, SnapshotMeta, Term};

use super::state::{IncomingSnapshot, Shared};
use super::RaftNode;

impl RaftNode {
    /// A message to a follower, already checked for its term.
    pub(super) fn step_follower(&mut self, from: NodeId, body: MessageBody) {
        let from_leader = matches!(
            body,
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::Snapshot { .. }
        );
        if from_leader {
            if self.s.leader.is_some_and(|l| l != from) {
                // Two leaders in one term: impossible unless a peer is broken.
                self.s.counters.dropped_unexpected += 1;
                return;
            }
            self.s.election_elapsed = 0;
            self.s.leader = Some(from);
        }
        match body {
            MessageBody::Append { prev_log_index, prev_log_term, entries, leader_commit } => {
                self.s.handle_append(from, prev_log_index, prev_log_term, entries, leader_commit)
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.s.log.commit_to(commit.min(self.s.log.last_index()));
                self.s.send(from, MessageBody::HeartbeatResponse { read_round });
            }
            MessageBody::Snapshot { meta, offset, data, done } => {
                self.s.handle_snapshot(from, meta, offset, data, done)
            }
            // The leader of this term hands over: campaign at once, skipping
            // PreVote and asking voters to ignore their lease (§3.10). From
            // anyone else it would force an election per message.
            MessageBody::TimeoutNow if self.s.leader == Some(from) => self.start_election(true),
            MessageBody::TimeoutNow => self.s.counters.dropped_transfer += 1,
            _ => self.s.counters.dropped_unexpected += 1,
        }
    }
}

impl Shared {
    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) {
        if prev_index < self.log.commit() {
            // Everything up to our commit index already matches the leader.
            let commit = self.log.commit();
            self.send_after_persist_to(
                from,
                MessageBody::AppendResponse(AppendResponse::Accepted { match_index: commit }),
            );
            return;
        }
        if !entries_well_formed(prev_index, prev_term, self.term, &entries) {
            self.counters.dropped_unexpected += 1;
            return;
        }
        match self.log.try_append(prev_index, prev_term, entries) {
            AppendCheck::Matched { last, appended_from } => {
                self.revert_truncated_membership();
                if let Some(from) = appended_from {
                    self.note_memberships_from(from);
                }
                self.log.commit_to(leader_commit.min(last));
                self.send_after_persist_to(
                    from,
                    MessageBody::AppendResponse(AppendResponse::Accepted { match_index: last }),
                );
            }
            AppendCheck::Mismatch { conflict_term, conflict_index } => {
                self.send(
                    from,
                    MessageBody::AppendResponse(AppendResponse::Rejected {
                        rejected_index: prev_index,
                        conflict_term,
                        conflict_index,
                    }),
                );
            }
            AppendCheck::ConflictsWithCommitted { .. } => self.counters.dropped_unexpected += 1,
        }
    }

    pub(super) fn handle_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) {
        if meta.index <= self.log.commit() {
            self.incoming_snapshot = None;
            let commit = self.log.commit();
            self.send_after_persist_to(
                from,
                MessageBody::AppendResponse(AppendResponse::Accepted { match_index: commit }),
            );
            return;
        }
        // (A leader's snapshot always carries a valid, non-empty membership.)
        let bad_membership =
            meta.membership.voters().incoming.is_empty() || meta.membership.check_invariants().is_err();
        if meta.term > self.term || meta.index == 0 || bad_membership {
            self.counters.dropped_unexpected += 1;
            return;
        }
        if offset == 0 {
            self.incoming_snapshot = Some(IncomingSnapshot { meta: meta.clone(), received_bytes: 0 });
        }
        let expected = match &self.incoming_snapshot {
            Some(incoming) if incoming.meta == meta => incoming.received_bytes,
            _ => 0,
        };
        if offset != expected || (offset > 0 && self.incoming_snapshot.is_none()) {
            self.send(from, MessageBody::SnapshotResponse { index: meta.index, next_offset: expected });
            return;
        }
        let incoming = self.incoming_snapshot.as_mut().expect("set above");
        let max = self.config.snapshot_bytes_max;
        let received_bytes = incoming.received_bytes.saturating_add(data.len() as u64);
        if max > 0 && received_bytes > max {
            // Larger than this node takes: dropped, not grown without bound.
            self.incoming_snapshot = None;
            self.counters.snapshots_too_large += 1;
            return;
        }
        incoming.received_bytes = received_bytes;
        if !data.is_empty() || offset == 0 {
            self.actions.push(Action::SaveSnapshotChunk { meta: meta.clone(), offset, data });
        }
        if !done {
            self.send(from, MessageBody::SnapshotResponse { index: meta.index, next_offset: received_bytes });
            return;
        }
        let incoming = self.incoming_snapshot.take().expect("set above");
        let index = meta.index;
        if self.log.term(index) == Some(meta.term) {
            // We hold the entries the snapshot covers: just learn the commit.
            self.log.commit_to(index);
            self.send_after_persist_to(
                from,
                MessageBody::AppendResponse(AppendResponse::Accepted { match_index: index }),
            );
            return;
        }
        // Nothing of it is trusted, let alone durable, before the driver has
        // checked it in full: see `install_snapshot` and `reject_snapshot`.
        self.snapshot_to_check = Some((from, meta));
        self.actions.push(Action::CheckSnapshot(Snapshot {
            meta: incoming.meta,
            data_bytes: incoming.received_bytes,
        }));
    }
}

/// Checks an append's entries before they touch the log: contiguous after
/// `prev_index`, terms never decreasing from `prev_term` and never beyond the
/// leader's `term`. A well-behaved leader always sends such entries; anything
/// else is refused rather than trusted.
fn entries_well_formed(prev_index: Index, prev_term: Term, term: Term, entries: &[Entry]) -> bool {
    let mut last_term = prev_term;
    for (offset, entry) in entries.iter().enumerate() {
        if Some(entry.index) != prev_index.checked_add(1 + offset as Index)
            || entry.term < last_term
            || entry.term > term
        {
            return false;
        }
        // (A configuration entry must decode; the test is cheap for the rest.)
        if matches!(entry.payload, EntryPayload::Membership(_))
            && entry.payload.decode_membership().is_some_and(|m| m.is_err())
        {
            return false;
        }
        last_term = entry.term;
    }
    true
}
