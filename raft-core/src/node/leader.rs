//! A leader's side of replication: appends and snapshot chunks to each
//! member as its flow control allows, commit by the tracker's quorum,
//! heartbeats and check-quorum.

use std::collections::VecDeque;

use crate::membership::Membership;
use crate::message::{AppendResponse, Message, MessageBody};
use crate::progress::Mode;
use crate::types::{Entry, EntryPayload, Index, NodeId, Term};
use crate::Action;

use super::reads::PendingRead;
use super::state::Shared;

/// What only a leader has (its followers' progress is in the tracker).
#[derive(Debug)]
pub(super) struct LeaderState {
    /// The latest ReadIndex round started (heartbeats carry it).
    pub(super) read_round: u64,
    /// Reads queued since the last round started; they join the next round.
    pub(super) read_round_wanted: bool,
    /// Reads waiting for a heartbeat round to confirm leadership, oldest first.
    pub(super) pending_reads: VecDeque<PendingRead>,
    /// Reads that arrived before the leader committed an entry of its term.
    pub(super) reads_before_commit: Vec<u64>,
    /// An ongoing leadership transfer.
    pub(super) transfer_target: Option<NodeId>,
    /// Bytes ([`Entry::size_bytes`]) of the entries after the commit index.
    pub(super) uncommitted_bytes: u64,
    /// The configuration entry (by index) that needs nothing more of this
    /// leader: committed, not joint, and this node a voter in it.
    pub(super) membership_settled: Option<Index>,
}

impl LeaderState {
    /// Appends a configuration entry, in force at once, and returns its
    /// index.
    pub(super) fn append_membership(&mut self, s: &mut Shared, membership: Membership) -> Index {
        let index = s.log.last_index() + 1;
        let entry = Entry { term: s.term, index, payload: EntryPayload::membership(&membership) };
        self.uncommitted_bytes += entry.size_bytes() as u64;
        s.log.push(entry);
        s.membership_index = index;
        s.set_membership(membership);
        index
    }

    /// Once the configuration entry in force is committed: a joint one is
    /// left (by whichever leader finds it committed, so a leader that dies
    /// in between does not leave it joint forever), and a leader that is
    /// no longer a voter hands over and steps down (it returns true).
    #[must_use]
    pub(super) fn after_commit(&mut self, s: &mut Shared) -> bool {
        if self.membership_settled == Some(s.membership_index) {
            return false;
        }
        if s.membership_index > s.log.commit() || s.log.term(s.log.commit()) != Some(s.term) {
            return false;
        }
        // Committed: the members it removed had their chance to learn it;
        // those holding the entry are told it is committed, so that they
        // stop campaigning (`Shared::may_campaign`), and are dropped.
        let commit = s.log.commit();
        let departing: Vec<(NodeId, Index)> = s
            .tracker
            .iter()
            .filter(|&(id, p)| {
                id != s.id && !s.tracker.membership().is_member(id) && p.match_index >= s.membership_index
            })
            .map(|(id, p)| (id, p.match_index))
            .collect();
        for (to, matched) in departing {
            s.send(to, MessageBody::Heartbeat { commit: commit.min(matched), read_round: 0 });
        }
        if s.tracker.drop_departed() {
            s.update_peers();
        }
        let membership = s.tracker.membership();
        // (Any joint configuration is left, whatever its auto-leave flag: a
        // peer's or the disk's joint configuration without it could
        // otherwise never be left, since no change is taken while joint.)
        if membership.is_joint() {
            if let Ok(left) = membership.leave_joint() {
                self.append_membership(s, left);
            }
            return false;
        }
        if s.is_voter() {
            // Nothing more to do until the next configuration entry.
            self.membership_settled = Some(s.membership_index);
            return false;
        }
        // Removed: hand over to the voter furthest along, so that the
        // others need not wait for an election timeout (etcd #11038).
        let last = s.log.last_index();
        let successor = s
            .tracker
            .iter()
            .filter(|&(id, p)| id != s.id && s.tracker.is_voter(id) && p.match_index == last)
            .map(|(id, _)| id)
            .next();
        if let Some(to) = successor {
            s.send(to, MessageBody::TimeoutNow);
        }
        true
    }

    /// A new leader's: no reads, no transfer, nothing uncommitted counted.
    pub(super) fn new() -> LeaderState {
        LeaderState {
            read_round: 0,
            read_round_wanted: false,
            pending_reads: VecDeque::new(),
            reads_before_commit: Vec::new(),
            transfer_target: None,
            uncommitted_bytes: 0,
            membership_settled: None,
        }
    }

    /// One tick of a leader: heartbeats, and at every election timeout a
    /// check-quorum. False: no quorum was heard from, the leader must step
    /// down (§6.2 of the dissertation: so that clients look for the real
    /// leader).
    #[must_use]
    pub(super) fn tick(&mut self, s: &mut Shared) -> bool {
        s.heartbeat_elapsed += 1;
        if s.election_elapsed >= s.config.election_timeout_ticks_min {
            s.election_elapsed = 0;
            if s.config.check_quorum && !s.tracker.quorum_active() {
                return false;
            }
            s.clear_recently_active();
            // A transfer that did not finish within an election timeout is abandoned.
            self.transfer_target = None;
        }
        if s.heartbeat_elapsed >= s.config.heartbeat_interval_ticks {
            s.heartbeat_elapsed = 0;
            self.broadcast_heartbeat(s);
        }
        true
    }

    pub(super) fn step(&mut self, s: &mut Shared, from: NodeId, body: MessageBody) {
        match body {
            MessageBody::AppendResponse(response) => {
                s.tracker.get_mut(from).expect("a member").recently_active = true;
                self.handle_append_response(s, from, response);
            }
            MessageBody::HeartbeatResponse { read_round } => {
                let current_round = self.read_round;
                let last = s.log.last_index();
                let progress = s.tracker.get_mut(from).expect("a member");
                progress.recently_active = true;
                progress.resume();
                progress.read_round = progress.read_round.max(read_round.min(current_round));
                if progress.mode == Mode::Replicate && progress.is_paused() {
                    // Appends may have been lost: free one slot so that the next
                    // append reveals the gap (etcd does the same).
                    progress.free_oldest();
                }
                let behind = progress.match_index < last;
                if behind {
                    s.send_append(from, true);
                }
                self.release_confirmed_reads(s);
            }
            MessageBody::SnapshotResponse { index, next_offset } => {
                let len = s.snapshot.as_ref().map_or(0, |s| s.data_bytes);
                let progress = s.tracker.get_mut(from).expect("a member");
                progress.recently_active = true;
                if let Mode::Snapshot { index: sending, offset, sent, .. } = &mut progress.mode {
                    if *sending == index {
                        *offset = next_offset.min(len);
                        *sent = false;
                        s.send_append(from, false);
                        return;
                    }
                }
                s.counters.dropped_unexpected += 1;
            }
            _ => s.counters.dropped_unexpected += 1,
        }
    }

    fn handle_append_response(&mut self, s: &mut Shared, from: NodeId, response: AppendResponse) {
        let last = s.log.last_index();
        match response {
            AppendResponse::Accepted { match_index } => {
                if match_index > last {
                    s.counters.dropped_unexpected += 1;
                    return;
                }
                let progress = s.tracker.get_mut(from).expect("a member");
                let advanced = progress.acknowledge(match_index);
                match progress.mode {
                    Mode::Probe { .. } if advanced || progress.match_index + 1 == progress.next_index => {
                        progress.become_replicate()
                    }
                    Mode::Snapshot { index, .. } if progress.match_index >= index => {
                        progress.become_replicate()
                    }
                    _ => {}
                }
                let caught_up = progress.match_index == last;
                if advanced {
                    self.maybe_commit(s);
                }
                if caught_up && self.transfer_target == Some(from) {
                    s.send(from, MessageBody::TimeoutNow);
                }
                s.send_append(from, false);
            }
            AppendResponse::Rejected { rejected_index, conflict_term, conflict_index } => {
                if rejected_index > last {
                    s.counters.dropped_unexpected += 1;
                    return;
                }
                let progress = s.tracker.get(from).expect("a member");
                let stale = match progress.mode {
                    Mode::Replicate => rejected_index <= progress.match_index,
                    Mode::Probe { .. } => rejected_index + 1 != progress.next_index,
                    Mode::Snapshot { .. } => true,
                };
                if stale {
                    return;
                }
                // Fast back-off: skip the follower's whole conflicting term.
                let mut next = conflict_index;
                if let Some(term) = conflict_term {
                    if let Some(index) = s.last_index_of_term(term, rejected_index) {
                        next = index + 1;
                    }
                }
                let progress = s.tracker.get_mut(from).expect("a member");
                progress.become_probe();
                progress.next_index =
                    next.clamp(progress.match_index + 1, rejected_index.max(progress.match_index + 1));
                s.send_append(from, false);
            }
        }
    }

    pub(super) fn broadcast_heartbeat(&mut self, s: &mut Shared) {
        let commit = s.log.commit();
        let round = self.read_round;
        for i in 0..s.peers.len() {
            let to = s.peers[i];
            let commit = commit.min(s.tracker.get(to).expect("a member").match_index);
            s.send(to, MessageBody::Heartbeat { commit, read_round: round });
        }
        // (With one voter, the leader's own confirmation is the quorum.)
        self.release_confirmed_reads(s);
    }

    /// Commits the highest index durable on a majority, if it is of this term
    /// (§5.4.2, Figure 8: earlier terms' entries commit only indirectly).
    pub(super) fn maybe_commit(&mut self, s: &mut Shared) {
        let index = s.tracker.committed_index();
        if index > s.log.commit() && s.log.term(index) == Some(s.term) {
            let first_in_term = s.log.term(s.log.commit()) != Some(s.term);
            let committed = s.entry_bytes(s.log.commit() + 1, index);
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(committed);
            s.log.commit_to(index);
            if first_in_term {
                let commit = s.log.commit();
                let round = self.read_round + 1;
                let waiting: Vec<u64> = self.reads_before_commit.drain(..).collect();
                for ctx in waiting {
                    self.pending_reads.push_back(PendingRead { ctx, index: commit, round });
                    self.read_round_wanted = true;
                }
            }
        }
    }
}

impl Shared {
    /// Sends what `to` needs next, if its flow control allows: appends (as
    /// many as the in-flight window and byte budget allow while replicating),
    /// or the next snapshot chunk. With `send_if_empty`, an append with no
    /// entries goes out too (a probe that reveals where the logs diverge).
    pub(super) fn send_append(&mut self, to: NodeId, send_if_empty: bool) {
        let mut send_if_empty = send_if_empty;
        loop {
            let progress = self.tracker.get(to).expect("a member");
            if let Mode::Snapshot { sent: false, .. } = progress.mode {
                self.send_snapshot_chunk(to);
                return;
            }
            if progress.is_paused() {
                return;
            }
            let next = progress.next_index;
            let is_probe = matches!(progress.mode, Mode::Probe { .. });
            let prev = next - 1;
            let Some(prev_term) = self.log.term(prev) else {
                // The entries the follower needs are compacted: snapshot.
                let index = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
                assert!(index >= next, "no snapshot covers compacted index {prev} (snapshot {index})");
                self.tracker.get_mut(to).expect("a member").become_snapshot(index);
                self.send_snapshot_chunk(to);
                return;
            };
            let last = self.log.last_index();
            let entries = if next <= last {
                self.log.slice(next, last, self.config.max_append_bytes)
            } else {
                Vec::new()
            };
            if entries.is_empty() && !is_probe && !send_if_empty {
                return;
            }
            let sent_last = prev + entries.len() as Index;
            let sent_bytes: u64 = entries.iter().map(|e| e.size_bytes() as u64).sum();
            let body = MessageBody::Append {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries,
                leader_commit: self.log.commit(),
            };
            self.send(to, body);
            self.tracker.get_mut(to).expect("a member").sent_append(sent_last, sent_bytes);
            if is_probe || sent_last >= last {
                return;
            }
            send_if_empty = false;
        }
    }

    pub(super) fn send_snapshot_chunk(&mut self, to: NodeId) {
        let snapshot = self.snapshot.as_ref().expect("a snapshot exists when a follower needs one");
        let (meta, len) = (snapshot.meta.clone(), snapshot.data_bytes);
        let chunk = self.config.snapshot_chunk_bytes as u64;
        let progress = self.tracker.get_mut(to).expect("a member");
        let Mode::Snapshot { index, offset, sent, waited } = &mut progress.mode else {
            unreachable!("sending a snapshot chunk outside snapshot mode")
        };
        if *index != meta.index {
            // A newer snapshot was taken meanwhile: start over with it.
            *index = meta.index;
            *offset = 0;
        }
        *sent = true;
        *waited = 0;
        let start = (*offset).min(len);
        let end = start.saturating_add(chunk).min(len);
        let message = Message {
            from: self.id,
            to,
            term: self.term,
            body: MessageBody::Snapshot { meta, offset: start, data: Vec::new(), done: end == len },
        };
        self.actions.push(Action::SendSnapshotChunk { message, len: end - start });
    }

    /// Bytes ([`Entry::size_bytes`]) of the log's entries `from..=to`.
    pub(super) fn entry_bytes(&self, from: Index, to: Index) -> u64 {
        (from..=to).filter_map(|i| self.log.entry(i)).map(|e| e.size_bytes() as u64).sum()
    }

    /// The last index at or below `upto` whose term is `term`, if our log
    /// (after the snapshot) holds one.
    pub(super) fn last_index_of_term(&self, term: Term, upto: Index) -> Option<Index> {
        let mut index = upto.min(self.log.last_index());
        loop {
            match self.log.term(index) {
                Some(t) if t == term => return Some(index),
                Some(t) if t > term && index > self.log.snapshot_index() => index -= 1,
                _ => return None,
            }
        }
    }

    /// Starts a check-quorum period: nobody heard from yet but the leader
    /// itself (which always hears itself).
    pub(super) fn clear_recently_active(&mut self) {
        for (_, progress) in self.tracker.iter_mut() {
            progress.recently_active = false;
        }
        let id = self.id;
        if let Some(progress) = self.tracker.get_mut(id) {
            progress.recently_active = true;
        }
    }
}
