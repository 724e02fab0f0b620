//! The leader's view of one follower: how far it matches, what to send next,
//! and the flow control that keeps a slow follower from being flooded
//! (modelled on etcd's `tracker/progress.go`).

use std::collections::VecDeque;

/// Heartbeat answers a leader waits for a snapshot chunk's answer before it
/// sends the chunk again.
pub(crate) const SNAPSHOT_CHUNK_PATIENCE: u32 = 4;

use crate::status::{PeerStatus, ReplicationState};
use crate::types::{Index, NodeId};

/// Replication state for one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One append at a time until a response arrives; `sent` pauses it.
    Probe {
        /// An append is outstanding; wait for its answer or a heartbeat answer.
        sent: bool,
    },
    /// Optimistic pipelining: `next` advances as appends are sent.
    Replicate,
    /// Sending snapshot `index` in chunks; `offset` is the next byte to send.
    Snapshot {
        /// Index of the snapshot being sent.
        index: Index,
        /// Next byte to send.
        offset: u64,
        /// A chunk is outstanding.
        sent: bool,
        /// Heartbeat answers since the outstanding chunk went out: after
        /// [`SNAPSHOT_CHUNK_PATIENCE`] of them it is taken as lost and sent
        /// again (not at every one: each resend while the chunk is only slow
        /// starts one more stream of chunks, and under a 1 GiB snapshot those
        /// streams multiplied until the transfer crawled).
        waited: u32,
    },
}

/// Progress of one follower, as tracked by the leader.
///
/// Invariant: `match_index < next_index`.
#[derive(Clone, Debug)]
pub struct Progress {
    pub(crate) match_index: Index,
    pub(crate) next_index: Index,
    pub(crate) mode: Mode,
    /// Last index and entry bytes of each append in flight, oldest first
    /// (Replicate only).
    pub(crate) inflight: VecDeque<(Index, u64)>,
    pub(crate) inflight_max: usize,
    /// Bytes of the appends in flight, and their bound (0: none). Without
    /// it, 256 appends of 1 MiB queued ahead of a heartbeat on the link and
    /// the follower, hearing nothing for longer than its election timeout,
    /// deposed the leader.
    pub(crate) inflight_bytes: u64,
    pub(crate) inflight_bytes_max: u64,
    /// Heard from during the current check-quorum period.
    pub(crate) recently_active: bool,
    /// Highest ReadIndex round acknowledged.
    pub(crate) read_round: u64,
}

impl Progress {
    /// A follower about whom nothing is known: probe from `next_index`.
    pub(crate) fn new(next_index: Index, inflight_max: usize, inflight_bytes_max: u64) -> Progress {
        assert!(next_index >= 1, "next_index {next_index} must be at least 1");
        Progress {
            match_index: 0,
            next_index,
            mode: Mode::Probe { sent: false },
            inflight: VecDeque::new(),
            inflight_max,
            inflight_bytes: 0,
            inflight_bytes_max,
            recently_active: false,
            read_round: 0,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        // After a snapshot, resume right after it; otherwise after the match.
        let next = match self.mode {
            Mode::Snapshot { index, .. } => index.max(self.match_index) + 1,
            _ => self.match_index + 1,
        };
        self.mode = Mode::Probe { sent: false };
        self.next_index = next;
        self.clear_inflight();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.mode = Mode::Replicate;
        self.next_index = self.match_index + 1;
        self.clear_inflight();
    }

    pub(crate) fn become_snapshot(&mut self, index: Index) {
        self.mode = Mode::Snapshot { index, offset: 0, sent: false, waited: 0 };
        self.clear_inflight();
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// Frees the oldest append in flight (presumed lost).
    pub(crate) fn free_oldest(&mut self) {
        if let Some((_, bytes)) = self.inflight.pop_front() {
            self.inflight_bytes -= bytes;
        }
    }

    /// True when no append may be sent now.
    pub(crate) fn is_paused(&self) -> bool {
        match self.mode {
            Mode::Probe { sent } => sent,
            Mode::Replicate => {
                self.inflight.len() >= self.inflight_max
                    || (self.inflight_bytes_max > 0 && self.inflight_bytes >= self.inflight_bytes_max)
            }
            Mode::Snapshot { .. } => true,
        }
    }

    /// Records that an append ending at `last`, of `bytes` of entries, was sent.
    pub(crate) fn sent_append(&mut self, last: Index, bytes: u64) {
        match &mut self.mode {
            Mode::Probe { sent } => *sent = true,
            Mode::Replicate => {
                if last >= self.next_index {
                    self.next_index = last + 1;
                    self.inflight.push_back((last, bytes));
                    self.inflight_bytes += bytes;
                }
            }
            Mode::Snapshot { .. } => unreachable!("append sent while sending a snapshot"),
        }
    }

    /// A follower acknowledged `index`. Returns true if the match advanced.
    pub(crate) fn acknowledge(&mut self, index: Index) -> bool {
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
        }
        if self.next_index <= index {
            self.next_index = index + 1;
        }
        while self.inflight.front().is_some_and(|&(last, _)| last <= index) {
            self.free_oldest();
        }
        if let Mode::Probe { sent } = &mut self.mode {
            *sent = false;
        }
        advanced
    }

    /// An answer from the follower arrived: a probe may go out again.
    pub(crate) fn resume(&mut self) {
        match &mut self.mode {
            Mode::Probe { sent } => *sent = false,
            Mode::Snapshot { sent, waited, .. } => {
                *waited += 1;
                if *waited >= SNAPSHOT_CHUNK_PATIENCE {
                    *sent = false;
                }
            }
            Mode::Replicate => {}
        }
    }

    pub(crate) fn status(&self, id: NodeId) -> PeerStatus {
        PeerStatus {
            id,
            match_index: self.match_index,
            next_index: self.next_index,
            state: match self.mode {
                Mode::Probe { .. } => ReplicationState::Probe,
                Mode::Replicate => ReplicationState::Replicate,
                Mode::Snapshot { .. } => ReplicationState::Snapshot,
            },
            inflight: self.inflight.len(),
            recently_active: self.recently_active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_append_until_an_answer() {
        let mut p = Progress::new(5, 4, 0);
        assert!(!p.is_paused());
        p.sent_append(7, 10);
        assert!(p.is_paused());
        assert_eq!(p.next_index, 5, "probe does not advance next optimistically");
        p.resume();
        assert!(!p.is_paused());
    }

    #[test]
    fn replicate_pauses_when_the_inflight_window_is_full() {
        let mut p = Progress::new(1, 2, 0);
        p.acknowledge(3);
        p.become_replicate();
        p.sent_append(5, 10);
        assert!(!p.is_paused());
        p.sent_append(8, 10);
        assert!(p.is_paused());
        assert_eq!(p.next_index, 9);
        assert!(p.acknowledge(5));
        assert!(!p.is_paused());
        assert_eq!(p.inflight.len(), 1);
        assert!(!p.acknowledge(4), "an old ack does not move match back");
        assert_eq!(p.match_index, 5);
    }

    #[test]
    fn replicate_pauses_when_the_bytes_in_flight_reach_their_bound() {
        let mut p = Progress::new(1, 256, 3 << 20);
        p.become_replicate();
        p.sent_append(1, 1 << 20);
        p.sent_append(2, 1 << 20);
        assert!(!p.is_paused());
        p.sent_append(3, 1 << 20);
        assert!(p.is_paused(), "3 MiB in flight");
        p.acknowledge(1);
        assert!(!p.is_paused());
        assert_eq!(p.inflight_bytes, 2 << 20);
        p.free_oldest();
        assert_eq!(p.inflight_bytes, 1 << 20);
        p.become_probe();
        assert_eq!(p.inflight_bytes, 0);
    }

    #[test]
    fn probe_after_snapshot_resumes_after_the_snapshot() {
        let mut p = Progress::new(1, 2, 0);
        p.become_snapshot(40);
        assert!(p.is_paused());
        p.become_probe();
        assert_eq!(p.next_index, 41);
    }
}
