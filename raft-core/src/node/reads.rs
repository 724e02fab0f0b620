//! ReadIndex (dissertation §6.4): a read is served at the commit index
//! once a quorum has answered a heartbeat round started after it arrived;
//! the leader confirms its own round as it starts it, like any member.

use crate::action::Action;
use crate::types::Index;

use super::leader::LeaderState;
use super::state::Shared;

#[derive(Clone, Copy, Debug)]
/// A read waiting for its round.
pub(super) struct PendingRead {
    pub(super) ctx: u64,
    pub(super) index: Index,
    pub(super) round: u64,
}

impl LeaderState {
    /// Queues a read: at once in the next round if the leader knows its
    /// commit index (it committed an entry of its term), else until then.
    pub(super) fn read_index(&mut self, ctx: u64, committed_in_term: bool, commit: Index) {
        if !committed_in_term {
            // The leader does not know the commit index of earlier terms until
            // it commits an entry of its own (§6.4 step 1).
            self.reads_before_commit.push(ctx);
        } else {
            self.pending_reads.push_back(PendingRead { ctx, index: commit, round: self.read_round + 1 });
            self.read_round_wanted = true;
        }
    }

    /// Starts the round that queued reads wait for, if any: the leader
    /// confirms it itself, and heartbeats ask the others.
    pub(super) fn start_wanted_read_round(&mut self, s: &mut Shared) {
        if !self.read_round_wanted {
            return;
        }
        self.read_round += 1;
        self.read_round_wanted = false;
        let id = s.id;
        // (A leader being removed is no member of the configuration in
        // force: the others' quorum alone confirms the round.)
        if let Some(progress) = s.tracker.get_mut(id) {
            progress.read_round = self.read_round;
        }
        self.broadcast_heartbeat(s);
    }

    /// Releases every read whose heartbeat round a majority has answered.
    pub(super) fn release_confirmed_reads(&mut self, s: &mut Shared) {
        let confirmed = s.tracker.confirmed_read_round();
        let mut ready = Vec::new();
        while self.pending_reads.front().is_some_and(|r| r.round <= confirmed) {
            ready.push(self.pending_reads.pop_front().expect("checked"));
        }
        for read in ready {
            s.actions.push(Action::ReadReady { ctx: read.ctx, index: read.index });
        }
    }
}
