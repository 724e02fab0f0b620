//! The membership nemesis: during the fault phase it changes who belongs to
//! the cluster, through the current leader, as an operator would, mixed with
//! the other faults.
//!
//! Operations (each a short plan of one change at a time):
//! - grow: a new node, started empty with no membership, is added as a
//!   learner and promoted once its match index is close to the leader's (or,
//!   now and then, early), or added directly as a voter;
//! - shrink: a voter leaves, the leader included;
//! - joint: changes of two or more voters at once (two voters out, two
//!   learners promoted, a swap, two new voters, a demotion with a promotion);
//! - replace: a voter crashes for good; a new node joins as a learner, is
//!   promoted, and the dead one is removed (in one of three orders, one of
//!   them joint);
//! - learner chores and changes the core must refuse.
//!
//! Voters stay between 1 and 7, and every change keeps a majority of each
//! half of the voters among nodes that are not dead for good, so that the
//! cluster can always recover once the faults stop. Nodes removed by a
//! committed configuration keep running a while (they must not disrupt),
//! then stop for good. Proposals refused by the core are counted, and the
//! step is tried again later (or the plan dropped, if the change no longer
//! applies).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use raft_core::{ChangeOp, Index, Membership, MembershipChange, NodeId};

use super::{live_majority, Refusal, Simulation};

/// The most voters the nemesis lets a cluster have.
const VOTERS_MAX: usize = 7;
/// A learner is caught up when its match index is within this many entries
/// of the leader's last index.
const CATCH_UP_SLACK: Index = 8;
/// A plan that has not finished after this many steps is dropped.
const PLAN_DEADLINE_STEPS: u64 = 2_000;

/// One step of a plan.
#[derive(Clone, Debug)]
enum Step {
    /// Propose `change` through the leader, once every node of `catch_up`
    /// has a match index close to the leader's (unless `early`).
    Propose { change: MembershipChange, catch_up: Vec<NodeId>, early: bool },
    /// Crash this voter for good, once that leaves a live majority in every
    /// configuration that may still commit.
    Kill(NodeId),
    /// Crash this node (it restarts later, as after any crash).
    Down(NodeId),
}

/// The nemesis' state.
#[derive(Debug, Default)]
pub(crate) struct Nemesis {
    plan: VecDeque<Step>,
    plan_started: u64,
    next_try: u64,
    /// Committed configurations up to this index have been looked at for
    /// removed members.
    handled: Index,
    /// Every node a committed configuration had as a member.
    ever_members: BTreeSet<NodeId>,
    /// Removed members, and when they stop for good.
    retire_at: BTreeMap<NodeId, u64>,
}

fn add_learner(id: NodeId) -> ChangeOp {
    ChangeOp::AddLearner { id, context: context(id) }
}

fn add_voter(id: NodeId) -> ChangeOp {
    ChangeOp::AddVoter { id, context: context(id) }
}

/// The context a member carries (its "address").
fn context(id: NodeId) -> Vec<u8> {
    format!("sim:n{id}").into_bytes()
}

fn propose(ops: Vec<ChangeOp>) -> Step {
    Step::Propose { change: MembershipChange { ops }, catch_up: Vec::new(), early: false }
}

impl Simulation {
    /// One step of the membership nemesis (fault phase only).
    pub(super) fn membership_nemesis(&mut self) {
        let now = self.now;
        self.schedule_retirements();
        let due: Vec<NodeId> =
            self.nemesis.retire_at.iter().filter(|&(_, &at)| at <= now).map(|(&id, _)| id).collect();
        for id in due {
            self.nemesis.retire_at.remove(&id);
            self.retire(id);
        }
        if self.nemesis.plan.is_empty() {
            if !self.rng.nemesis.chance(self.cfg.faults.membership_rate) {
                return;
            }
            self.plan_operation();
            self.nemesis.plan_started = now;
            self.nemesis.next_try = now;
        }
        if self.nemesis.plan.is_empty() || now < self.nemesis.next_try {
            return;
        }
        if now - self.nemesis.plan_started > PLAN_DEADLINE_STEPS {
            self.drop_plan("took too long");
            return;
        }
        self.nemesis.next_try = now + self.rng.nemesis.range(5, 60);
        self.try_plan_step();
    }

    /// Members removed by a committed configuration stop for good a while
    /// later.
    fn schedule_retirements(&mut self) {
        let (last, _) = self.checkers.configs.last();
        if last == self.nemesis.handled {
            return;
        }
        let mut removed = Vec::new();
        for (_, m) in self.checkers.configs.after(self.nemesis.handled) {
            self.nemesis.ever_members.extend(m.member_ids());
        }
        let (_, current) = self.checkers.configs.last();
        for &id in &self.nemesis.ever_members {
            if !current.is_member(id) && !self.slot(id).retired && !self.nemesis.retire_at.contains_key(&id) {
                removed.push(id);
            }
        }
        self.nemesis.handled = last;
        for id in removed {
            let at = self.now + self.rng.nemesis.range(0, 1_500);
            self.nemesis.retire_at.insert(id, at);
            self.trace_event(id, || format!("removed: stops for good at step {at}"));
        }
    }

    fn drop_plan(&mut self, why: &str) {
        if !self.nemesis.plan.is_empty() {
            let left = self.nemesis.plan.len();
            self.trace_event(0, || format!("membership plan dropped ({why}; {left} steps left)"));
            self.nemesis.plan.clear();
        }
    }

    /// A node to add: one that was created but never became a member, or a
    /// new one (while fewer than [`FaultConfig::max_nodes`](super::FaultConfig::max_nodes)).
    fn fresh_node(&mut self, leader_view: &Membership, taken: &[NodeId]) -> Option<NodeId> {
        let spare = self.nodes.iter().find(|s| {
            !s.retired
                && !leader_view.is_member(s.id)
                && !self.nemesis.ever_members.contains(&s.id)
                && !taken.contains(&s.id)
                && s.founders.is_none()
        });
        if let Some(s) = spare {
            return Some(s.id);
        }
        (self.nodes.len() < self.cfg.faults.max_nodes).then(|| self.add_node())
    }

    /// Chooses the next operation and lays out its plan (possibly none).
    fn plan_operation(&mut self) {
        let Some(leader) = self.leader() else {
            return;
        };
        let m = self.node(leader).expect("the leader is up").membership().0.clone();
        let voters: Vec<NodeId> = m.voters().incoming.iter().collect();
        let learners: Vec<NodeId> = m.learners().iter().copied().collect();
        let n = voters.len();
        let dead: Vec<NodeId> = m.member_ids().filter(|&id| self.slot(id).retired).collect();
        let mut plan: Vec<Step> = Vec::new();
        let rng_pick = |sim: &mut Simulation, ids: &[NodeId]| *sim.rng.nemesis.pick(ids);
        if let Some(&d) = dead.first() {
            if self.rng.nemesis.chance(0.7) {
                // A member died for good in an unfinished replacement:
                // remove it (with a learner promoted alongside, now and then).
                let promote = learners.iter().copied().find(|&l| !self.slot(l).retired);
                match promote {
                    Some(l) if m.is_voter(d) && self.rng.nemesis.chance(0.3) => {
                        plan.push(Step::Propose {
                            change: MembershipChange {
                                ops: vec![ChangeOp::PromoteLearner { id: l }, ChangeOp::Remove { id: d }],
                            },
                            catch_up: vec![l],
                            early: false,
                        });
                    }
                    _ if !m.is_voter(d) || n > 1 => plan.push(propose(vec![ChangeOp::Remove { id: d }])),
                    _ => {}
                }
                return self.start_plan(plan, "remove the dead");
            }
        }
        let early = self.rng.nemesis.chance(0.15);
        let what = match self.rng.nemesis.below(100) {
            0..=27 if n < VOTERS_MAX => {
                let Some(x) = self.fresh_node(&m, &[]) else { return };
                plan.push(propose(vec![add_learner(x)]));
                plan.push(Step::Propose {
                    change: MembershipChange { ops: vec![ChangeOp::PromoteLearner { id: x }] },
                    catch_up: vec![x],
                    early,
                });
                "grow through a learner"
            }
            28..=34 if n < VOTERS_MAX => {
                let Some(x) = self.fresh_node(&m, &[]) else { return };
                plan.push(propose(vec![add_voter(x)]));
                "grow by an empty voter"
            }
            35..=41 if n == 2 => {
                // Down to one voter: the other crashes first (it restarts
                // later), so that it cannot hold the entry before the leader
                // made it durable (see `removal_recoverable`).
                let v = voters.iter().copied().find(|&v| v != leader).expect("two voters");
                plan.push(Step::Down(v));
                plan.push(propose(vec![ChangeOp::Remove { id: v }]));
                "shrink to one voter"
            }
            35..=52 if n > 1 => {
                let v = if self.rng.nemesis.chance(0.35) { leader } else { rng_pick(self, &voters) };
                plan.push(propose(vec![ChangeOp::Remove { id: v }]));
                "remove a voter"
            }
            53..=74 => match self.rng.nemesis.below(5) {
                0 if n >= 3 => {
                    let a = rng_pick(self, &voters);
                    let rest: Vec<NodeId> = voters.iter().copied().filter(|&v| v != a).collect();
                    let b = rng_pick(self, &rest);
                    plan.push(propose(vec![ChangeOp::Remove { id: a }, ChangeOp::Remove { id: b }]));
                    "joint: two voters out"
                }
                1 if n + 2 <= VOTERS_MAX => {
                    let Some(x) = self.fresh_node(&m, &[]) else { return };
                    let Some(y) = self.fresh_node(&m, &[x]) else { return };
                    plan.push(propose(vec![add_learner(x), add_learner(y)]));
                    plan.push(Step::Propose {
                        change: MembershipChange {
                            ops: vec![ChangeOp::PromoteLearner { id: x }, ChangeOp::PromoteLearner { id: y }],
                        },
                        catch_up: vec![x, y],
                        early,
                    });
                    "joint: two learners promoted"
                }
                2 if n >= 1 => {
                    let Some(x) = self.fresh_node(&m, &[]) else { return };
                    let v = if self.rng.nemesis.chance(0.35) { leader } else { rng_pick(self, &voters) };
                    plan.push(propose(vec![add_learner(x)]));
                    plan.push(Step::Propose {
                        change: MembershipChange {
                            ops: vec![ChangeOp::PromoteLearner { id: x }, ChangeOp::Remove { id: v }],
                        },
                        catch_up: vec![x],
                        early,
                    });
                    "joint: swap a voter for a new one"
                }
                3 if n + 2 <= VOTERS_MAX => {
                    let Some(x) = self.fresh_node(&m, &[]) else { return };
                    let Some(y) = self.fresh_node(&m, &[x]) else { return };
                    plan.push(propose(vec![add_voter(x), add_voter(y)]));
                    "joint: two empty voters"
                }
                _ if n >= 2 && !learners.is_empty() => {
                    let v = rng_pick(self, &voters);
                    let l = rng_pick(self, &learners);
                    plan.push(Step::Propose {
                        change: MembershipChange {
                            ops: vec![add_learner(v), ChangeOp::PromoteLearner { id: l }],
                        },
                        catch_up: vec![l],
                        early,
                    });
                    "joint: demote a voter, promote a learner"
                }
                _ => return,
            },
            75..=86 if n >= 3 => {
                let d = if self.rng.nemesis.chance(0.3) { leader } else { rng_pick(self, &voters) };
                let Some(x) = self.fresh_node(&m, &[]) else { return };
                let promote = |early| Step::Propose {
                    change: MembershipChange { ops: vec![ChangeOp::PromoteLearner { id: x }] },
                    catch_up: vec![x],
                    early,
                };
                plan.push(Step::Kill(d));
                match self.rng.nemesis.below(3) {
                    0 => {
                        plan.push(propose(vec![add_learner(x)]));
                        plan.push(promote(early));
                        plan.push(propose(vec![ChangeOp::Remove { id: d }]));
                    }
                    1 => {
                        plan.push(propose(vec![add_learner(x)]));
                        plan.push(Step::Propose {
                            change: MembershipChange {
                                ops: vec![ChangeOp::PromoteLearner { id: x }, ChangeOp::Remove { id: d }],
                            },
                            catch_up: vec![x],
                            early,
                        });
                    }
                    _ => {
                        plan.push(propose(vec![ChangeOp::Remove { id: d }]));
                        plan.push(propose(vec![add_learner(x)]));
                        plan.push(promote(early));
                    }
                }
                "replace a crashed voter"
            }
            87..=93 if !learners.is_empty() => {
                let l = rng_pick(self, &learners);
                if n < VOTERS_MAX && self.rng.nemesis.chance(0.6) {
                    plan.push(Step::Propose {
                        change: MembershipChange { ops: vec![ChangeOp::PromoteLearner { id: l }] },
                        catch_up: vec![l],
                        early,
                    });
                    "promote a learner"
                } else {
                    plan.push(propose(vec![ChangeOp::Remove { id: l }]));
                    "remove a learner"
                }
            }
            87..=96 if n > 1 => {
                let v = rng_pick(self, &voters);
                plan.push(propose(vec![add_learner(v)]));
                "demote a voter"
            }
            _ => {
                // Changes the core must refuse: a member added again, a
                // voter promoted, a non-member removed, nothing at all.
                let v = rng_pick(self, &voters);
                let ops = match self.rng.nemesis.below(4) {
                    0 => vec![add_voter(v)],
                    1 => vec![ChangeOp::PromoteLearner { id: v }],
                    2 => vec![ChangeOp::Remove { id: self.cfg.faults.max_nodes as NodeId + 1 }],
                    _ => Vec::new(),
                };
                plan.push(propose(ops));
                "an invalid change"
            }
        };
        self.start_plan(plan, what);
    }

    fn start_plan(&mut self, plan: Vec<Step>, what: &str) {
        if plan.is_empty() {
            return;
        }
        self.trace_event(0, || format!("membership plan: {what}: {plan:?}"));
        self.nemesis.plan = plan.into();
    }

    /// Tries the plan's next step.
    fn try_plan_step(&mut self) {
        let Some(step) = self.nemesis.plan.front().cloned() else {
            return;
        };
        let Some(leader) = self.leader() else {
            return;
        };
        match step {
            Step::Kill(d) => self.try_kill(leader, d),
            Step::Down(id) => {
                self.nemesis.plan.pop_front();
                if self.is_up(id) {
                    self.crash(id);
                    let (lo, hi) = self.cfg.faults.down_steps;
                    let lo = lo.max(self.faults.max_fsync_delay + 200);
                    let down = self.rng.nemesis.range(lo, hi.max(lo));
                    self.slot_mut(id).restart_at = Some(self.now + down);
                }
            }
            Step::Propose { change, catch_up, early } => {
                let node = self.node(leader).expect("the leader is up");
                let (current, _) = node.membership();
                // A change that no longer applies is proposed all the same
                // (the core must refuse it); one that applies must leave a
                // cluster that can recover whatever the faults: a live
                // majority in each half, 7 voters at most.
                if let Ok(next) = current.apply(&change) {
                    let dead = |id: NodeId| self.nodes.get(id as usize - 1).is_none_or(|s| s.retired);
                    if !live_majority(&next, dead) || next.voters().incoming.len() > VOTERS_MAX {
                        return self
                            .drop_plan("the change would leave too few live voters or too many voters");
                    }
                    if !self.cfg.faults.all_removals && !self.removal_recoverable(leader, current, &next) {
                        return self.drop_plan(
                            "voters leaving that older raft-core could not recover from (all_removals off)",
                        );
                    }
                    if !early && !catch_up.is_empty() {
                        let status = node.status();
                        let last = node.last_index();
                        let caught_up = catch_up.iter().all(|&id| {
                            status
                                .progress
                                .iter()
                                .any(|p| p.id == id && p.match_index + CATCH_UP_SLACK >= last)
                        });
                        if !caught_up {
                            return;
                        }
                    }
                }
                match self.propose_membership_on(leader, &change) {
                    Ok(_) => {
                        self.nemesis.plan.pop_front();
                    }
                    Err(Refusal::Invalid(e)) => {
                        let why = format!("refused: {e}");
                        self.drop_plan(&why);
                    }
                    // Not the leader any more, a change pending, no commit
                    // in this term yet, a transfer: later.
                    Err(_) => {}
                }
            }
        }
    }

    /// Whether the voters that `next` removes from `current` (not joint)
    /// cannot leave the cluster without a leader for good, whoever of them
    /// holds the entry (see [`FaultConfig::all_removals`](super::FaultConfig::all_removals)):
    /// the voters that stay, alive, are a majority of the old ones; or, from
    /// two voters to one, the one leaving is down until past the leader's
    /// fsync bound (so the leader has the entry durable before it can).
    fn removal_recoverable(&self, leader: NodeId, current: &Membership, next: &Membership) -> bool {
        let (old, new) = (&current.voters().incoming, &next.voters().incoming);
        let kept = old.iter().filter(|&id| new.contains(id) && !self.slot(id).retired).count();
        if kept > old.len() / 2 {
            return true;
        }
        if next.is_joint() || old.len() != 2 || new.len() != 1 {
            return false;
        }
        let Some(gone) = old.iter().find(|&id| !new.contains(id)) else {
            return false;
        };
        let slot = self.slot(gone);
        let bound = self.now + self.faults.max_fsync_delay;
        gone != leader && slot.replica.is_none() && slot.restart_at.is_some_and(|at| at > bound)
    }

    /// Crashes voter `d` for good, if every configuration that may still
    /// commit keeps a live majority without it: the leader has committed in
    /// its term, its configuration is committed and not joint, every node is
    /// up (no durable log hides a later one), in no later term, and has it
    /// or an earlier one in force (one set at or below the leader's index,
    /// which is committed: after a snapshot, a node gives the snapshot's
    /// index as its membership's).
    fn try_kill(&mut self, leader: NodeId, d: NodeId) {
        let node = self.node(leader).expect("the leader is up");
        let (m, index) = node.membership();
        if !m.is_voter(d) || self.slot(d).retired {
            return self.drop_plan("the voter to replace is gone");
        }
        let term = node.term();
        let settled =
            node.term_at(node.commit_index()) == Some(term) && index <= node.commit_index() && !m.is_joint();
        if !settled || m.voters().incoming.len() < 3 {
            return;
        }
        let quiet = self.nodes.iter().filter(|s| !s.retired).all(|s| {
            s.raft().is_some_and(|r| r.term() <= term && (r.membership().0 == m || r.membership().1 <= index))
        });
        if !quiet {
            return;
        }
        if m.member_ids().any(|id| self.slot(id).retired) {
            return self.drop_plan("another member is dead already");
        }
        let dead = |id: NodeId| id == d || self.nodes.get(id as usize - 1).is_none_or(|s| s.retired);
        if !live_majority(m, dead) {
            return self.drop_plan("too few voters would be left alive");
        }
        self.nemesis.plan.pop_front();
        self.counters.replacements += 1;
        self.trace_event(d, || "crashes for good, to be replaced".to_string());
        self.retire(d);
    }
}
