//! Quorum math over a set of voters, as pure functions that know nothing about
//! messages. Joint majorities for membership changes would be built from these.

use crate::types::{Index, NodeId};

/// The outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Neither a majority of grants nor of rejections yet.
    Pending,
    /// A majority granted.
    Won,
    /// A majority rejected: the election cannot be won.
    Lost,
}

/// The number of voters that form a majority of `voters` (at least one).
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The largest index that a majority of `voters` have acknowledged, where
/// `acked(id)` is what voter `id` acknowledged. With no voters, 0.
///
/// This is the k-th largest acknowledgement for k = majority: at least a
/// majority acknowledged it or more, and no larger index has that property.
pub fn committed_index(voters: &[NodeId], acked: impl Fn(NodeId) -> Index) -> Index {
    if voters.is_empty() {
        return 0;
    }
    let mut indexes: Vec<Index> = voters.iter().map(|&id| acked(id)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[majority(voters.len()) - 1]
}

/// Tallies votes: `vote(id)` is `Some(true)` for a grant, `Some(false)` for a
/// rejection, `None` if voter `id` has not answered.
pub fn vote_result(voters: &[NodeId], vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    let need = majority(voters.len());
    let (mut granted, mut rejected) = (0, 0);
    for &id in voters {
        match vote(id) {
            Some(true) => granted += 1,
            Some(false) => rejected += 1,
            None => {}
        }
    }
    if granted >= need {
        VoteResult::Won
    } else if rejected > voters.len() - need {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive_committed(acks: &[Index]) -> Index {
        // The largest candidate index that at least a majority acknowledged.
        let need = majority(acks.len());
        let mut best = 0;
        for &candidate in acks {
            if acks.iter().filter(|&&a| a >= candidate).count() >= need {
                best = best.max(candidate);
            }
        }
        best
    }

    #[test]
    fn majority_of_small_clusters() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(2), 2);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn committed_index_is_the_median_of_three() {
        let acks = [(1, 10), (2, 5), (3, 7)];
        let voters: Vec<NodeId> = acks.iter().map(|a| a.0).collect();
        let got = committed_index(&voters, |id| acks.iter().find(|a| a.0 == id).unwrap().1);
        assert_eq!(got, 7);
    }

    #[test]
    fn election_is_lost_once_a_majority_rejects() {
        let voters = [1, 2, 3, 4, 5];
        let result = vote_result(&voters, |id| match id {
            1 => Some(true),
            2..=4 => Some(false),
            _ => None,
        });
        assert_eq!(result, VoteResult::Lost);
        let result = vote_result(&voters, |id| match id {
            1 => Some(true),
            2 | 3 => Some(false),
            _ => None,
        });
        assert_eq!(result, VoteResult::Pending);
    }

    proptest! {
        #[test]
        fn committed_index_matches_naive_version(acks in proptest::collection::vec(0u64..50, 1..9)) {
            let voters: Vec<NodeId> = (1..=acks.len() as u64).collect();
            let got = committed_index(&voters, |id| acks[(id - 1) as usize]);
            prop_assert_eq!(got, naive_committed(&acks));
        }

        #[test]
        fn vote_result_matches_counting(votes in proptest::collection::vec(proptest::option::of(any::<bool>()), 1..9)) {
            let voters: Vec<NodeId> = (1..=votes.len() as u64).collect();
            let got = vote_result(&voters, |id| votes[(id - 1) as usize]);
            let n = votes.len();
            let yes = votes.iter().filter(|v| **v == Some(true)).count();
            let no = votes.iter().filter(|v| **v == Some(false)).count();
            let expected = if 2 * yes > n { VoteResult::Won } else if 2 * (n - no) <= n { VoteResult::Lost } else { VoteResult::Pending };
            prop_assert_eq!(got, expected);
        }
    }
}
