//! Persistence batching: what must become durable leaves in one
//! [`PersistBatch`] per `take_actions`; messages that depend on it wait
//! until the driver reports it durable; committed, durable entries are
//! handed out for apply.

use crate::action::{Action, PersistBatch};
use crate::message::{Message, MessageBody};
use crate::types::NodeId;

use super::state::{InflightPersist, Shared};

impl Shared {
    pub(super) fn gather_persist_batch(&mut self) {
        let entries = self.log.take_unpersisted();
        let snapshot = self.snapshot_to_persist.take().map(Box::new);
        let hard_state = self.hard_state();
        let vote_changed = (hard_state.term, hard_state.vote)
            != (self.persisted_hard_state.term, self.persisted_hard_state.vote);
        if entries.is_empty() && snapshot.is_none() && !vote_changed {
            // The commit index alone is only a hint: it rides along with the
            // next batch instead of costing an fsync of its own.
            return;
        }
        let id = self.next_persist_id;
        self.next_persist_id += 1;
        if let Some(truncated) = self.log.take_truncation() {
            // Batches before this one may have written entries the log has
            // since replaced: their reports count only below `truncated`.
            let lowest = self.rewrite.map_or(truncated, |(_, t)| t.min(truncated));
            self.rewrite = Some((id, lowest));
        }
        self.persists_inflight.push_back(InflightPersist {
            id,
            last_entry: entries.last().map(|e| (e.index, e.term)),
            snapshot_index: snapshot.as_ref().map(|s| s.meta.index),
        });
        let hard_state = (hard_state != self.persisted_hard_state).then_some(hard_state);
        if let Some(hs) = hard_state {
            self.persisted_hard_state = hs;
        }
        self.actions.push(Action::Persist(PersistBatch { id, snapshot, entries, hard_state }));
    }

    pub(super) fn gather_applies(&mut self) {
        if let Some(snapshot) = self.snapshot_to_apply.take() {
            self.apply_emitted = snapshot.meta.index;
            self.actions.push(Action::ApplySnapshot(snapshot));
        }
        if self.apply_emitted < self.log.snapshot_index() {
            // An installed snapshot is not yet durable: nothing after it may
            // be applied before it.
            return;
        }
        // Apply only what is committed *and* durable here, so that a restart
        // never finds the state machine ahead of the log. (Applying committed
        // entries before the local copy is durable would be safe too, since
        // committed means durable on a majority; measured, it did not make
        // W1 faster, so the simpler invariant stays.)
        let upto = self.log.commit().min(self.log.stable());
        if upto > self.apply_emitted {
            let entries = self.log.slice(self.apply_emitted + 1, upto, usize::MAX);
            self.apply_emitted = upto;
            self.actions.push(Action::Apply(entries));
        }
    }

    /// Sends a message that depends on nothing durable.
    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.actions.push(Action::Send(Message { from: self.id, to, term: self.term, body }));
    }

    pub(super) fn send_after_persist_to(&mut self, to: NodeId, body: MessageBody) {
        let m = Message { from: self.id, to, term: self.term, body };
        self.send_after_persist(m);
    }

    /// Sends a message once everything that is not yet durable now has become
    /// durable: the next batch if there is unpersisted state, else the last
    /// batch in flight, else at once.
    pub(super) fn send_after_persist(&mut self, m: Message) {
        let vote_changed =
            (self.term, self.vote) != (self.persisted_hard_state.term, self.persisted_hard_state.vote);
        let unpersisted = vote_changed || self.log.has_unpersisted() || self.snapshot_to_persist.is_some();
        let after = if unpersisted {
            Some(self.next_persist_id)
        } else {
            self.persists_inflight.back().map(|b| b.id)
        };
        match after {
            Some(id) => self.msgs_after_persist.push_back((id, m)),
            None => self.deliver_durable(m),
        }
    }

    /// Delivers a message whose durable dependencies are met: a candidate's
    /// own vote is noted for the role to count, anything else is sent.
    pub(super) fn deliver_durable(&mut self, m: Message) {
        if m.to != self.id {
            self.actions.push(Action::Send(m));
            return;
        }
        // Our own vote, durable: the role counts it (`RaftNode::count_own_vote`).
        self.own_vote_durable = Some(m.term);
    }
}
