//! Elections: PreVote and vote rounds, answering vote requests, and the
//! role changes they lead to.

use std::collections::BTreeMap;

use crate::action::Action;
use crate::message::{Message, MessageBody};
use crate::quorum::VoteResult;
use crate::types::{Entry, EntryPayload, Index, NodeId, Term};

use super::leader::LeaderState;
use super::state::Shared;
use super::{RaftNode, RoleState};

impl RaftNode {
    pub(super) fn start_election(&mut self, transfer: bool) {
        // Learners, removed nodes and nodes not yet added never campaign
        // (a node removed by an entry not yet committed still does).
        if !self.s.may_campaign() {
            self.s.reset_election_timer();
            return;
        }
        if self.s.config.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    pub(super) fn become_pre_candidate(&mut self) {
        // No term change and no vote: a PreVote round that fails disturbs nobody.
        let mut votes = BTreeMap::new();
        votes.insert(self.s.id, true);
        self.role = RoleState::PreCandidate { votes };
        self.s.leader = None;
        self.s.reset_election_timer();
        self.emit_role_changed();
        let term = self.s.term.saturating_add(1);
        self.s.request_votes(term, true, false);
        self.tally_votes(true);
    }

    pub(super) fn become_candidate(&mut self, transfer: bool) {
        self.s.snapshot_to_check = None;
        self.s.term = self.s.term.saturating_add(1);
        self.s.vote = Some(self.s.id);
        self.s.leader = None;
        self.role = RoleState::Candidate { votes: BTreeMap::new() };
        self.s.counters.elections += 1;
        self.s.reset_election_timer();
        self.emit_role_changed();
        // Our own vote counts once term and vote are durable.
        let own_vote = Message {
            from: self.s.id,
            to: self.s.id,
            term: self.s.term,
            body: MessageBody::VoteResponse { pre_vote: false, granted: true },
        };
        self.s.send_after_persist(own_vote);
        self.s.request_votes(self.s.term, false, transfer);
    }

    pub(super) fn tally_votes(&mut self, pre_vote: bool) {
        let result = match &self.role {
            RoleState::PreCandidate { votes } if pre_vote => self.s.tracker.tally(votes),
            RoleState::Candidate { votes } if !pre_vote => self.s.tracker.tally(votes),
            _ => return,
        };
        match result {
            VoteResult::Pending => {}
            VoteResult::Won if pre_vote => self.become_candidate(false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.s.term, None),
        }
    }

    pub(super) fn step_candidate(&mut self, from: NodeId, term: Term, body: MessageBody) {
        match body {
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::Snapshot { .. } => {
                // A leader exists in our term (a candidate's term) or in the
                // term a pre-candidate stayed in: follow it.
                self.become_follower(term, Some(from));
                self.step_follower(from, body);
            }
            MessageBody::VoteResponse { pre_vote, granted } => {
                let pre = match &mut self.role {
                    RoleState::PreCandidate { votes } if pre_vote => {
                        votes.insert(from, granted);
                        true
                    }
                    RoleState::Candidate { votes } if !pre_vote => {
                        votes.insert(from, granted);
                        false
                    }
                    _ => {
                        self.s.counters.dropped_unexpected += 1;
                        return;
                    }
                };
                self.tally_votes(pre);
            }
            _ => self.s.counters.dropped_unexpected += 1,
        }
    }

    pub(super) fn become_leader(&mut self) {
        // Every member's progress starts over; the leader's own match is
        // what its log holds durably (acknowledged like anyone's, in
        // `persisted`, as more becomes durable).
        self.s.tracker.reset(self.s.log.last_index() + 1);
        self.s.update_peers();
        let (id, stable) = (self.s.id, self.s.log.stable());
        if let Some(progress) = self.s.tracker.get_mut(id) {
            progress.acknowledge(stable);
        }
        self.s.clear_recently_active();
        self.role = RoleState::Leader(Box::new(LeaderState::new()));
        self.s.leader = Some(self.s.id);
        self.s.election_elapsed = 0;
        self.s.heartbeat_elapsed = 0;
        self.emit_role_changed();
        // A blank entry of the new term lets the leader commit everything
        // before it (§5.4.2) and learn the commit index for reads (§6.4).
        let index = self.s.log.last_index() + 1;
        self.s.log.push(Entry { term: self.s.term, index, payload: EntryPayload::Blank });
        let uncommitted = self.s.entry_bytes(self.s.log.commit() + 1, index);
        if let RoleState::Leader(leader) = &mut self.role {
            leader.uncommitted_bytes = uncommitted;
            // A single voter commits as soon as the blank is durable.
            leader.maybe_commit(&mut self.s);
        }
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if let RoleState::Leader(state) = &mut self.role {
            let pending: Vec<u64> = state
                .pending_reads
                .drain(..)
                .map(|r| r.ctx)
                .chain(state.reads_before_commit.drain(..))
                .collect();
            for ctx in pending {
                self.s.actions.push(Action::ReadFailed { ctx, leader });
            }
        }
        if term > self.s.term {
            self.s.term = term;
            self.s.vote = None;
        }
        if self.s.leader != leader || leader.is_none() {
            // Chunks of another leader's (or term's) snapshot never complete,
            // and one being checked is from a leader that is gone.
            self.s.incoming_snapshot = None;
            self.s.snapshot_to_check = None;
        }
        self.role = RoleState::Follower;
        self.s.leader = leader;
        self.s.reset_election_timer();
        self.emit_role_changed();
    }

    pub(super) fn emit_role_changed(&mut self) {
        self.s.actions.push(Action::RoleChanged {
            role: self.role(),
            term: self.s.term,
            leader: self.s.leader,
        });
    }
}

impl Shared {
    pub(super) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        last_index: Index,
        last_term: Term,
    ) {
        // We may vote for `from` if we already did in this term, or have voted
        // for nobody and know no leader; a PreVote for a future term is free.
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && term > self.term);
        let up_to_date = self.log.is_up_to_date(last_index, last_term);
        if !(can_vote && up_to_date) {
            self.send(from, MessageBody::VoteResponse { pre_vote, granted: false });
            return;
        }
        if pre_vote {
            // Granted PreVotes carry the requested term so that the
            // pre-candidate can tell them from stale answers.
            self.actions.push(Action::Send(Message {
                from: self.id,
                to: from,
                term,
                body: MessageBody::VoteResponse { pre_vote: true, granted: true },
            }));
        } else {
            self.election_elapsed = 0;
            self.vote = Some(from);
            let m = Message {
                from: self.id,
                to: from,
                term: self.term,
                body: MessageBody::VoteResponse { pre_vote: false, granted: true },
            };
            self.send_after_persist(m);
        }
    }

    pub(super) fn request_votes(&mut self, term: Term, pre_vote: bool, transfer: bool) {
        let body = MessageBody::VoteRequest {
            pre_vote,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            transfer,
        };
        for &to in &self.peers {
            if self.tracker.is_voter(to) {
                self.actions.push(Action::Send(Message { from: self.id, to, term, body: body.clone() }));
            }
        }
    }

    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout =
            self.rng.range(self.config.election_timeout_ticks_min, self.config.election_timeout_ticks_max);
    }

    pub(super) fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.config.election_timeout_ticks_min
    }
}
