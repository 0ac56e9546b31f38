//! The vote keeper: the power-weighted tally of ACKs and NACKs for one
//! block at one height.
//!
//! The caller verifies signatures; the keeper checks that a vote is for its
//! block and from a validator, ignores a validator's second vote, and
//! answers quorum questions. An ACK whose app hash differs from the one the
//! leader computed counts as a NACK: the leader never commits a state it did
//! not compute itself.

use kite_types::{CommitInfo, Hash, PublicKey, Quorum, ValidatorSet, Vote};
use std::collections::BTreeMap;

/// What [`VoteKeeper::add`] did with a vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddVote {
    /// Counted.
    Added,
    /// The validator has already voted for this block: ignored.
    Duplicate,
    /// Not from a validator: ignored.
    NotValidator,
    /// For another height or block: ignored.
    WrongBlock,
}

/// Votes for one block.
#[derive(Debug, Clone)]
pub struct VoteKeeper {
    validators: ValidatorSet,
    quorum: Quorum,
    height: u64,
    block_hash: Hash,
    votes: BTreeMap<PublicKey, Vote>,
    ack_power: BTreeMap<Hash, u64>,
    nack_power: u64,
}

impl VoteKeeper {
    /// An empty tally for `block_hash` at `height`.
    pub fn new(validators: ValidatorSet, quorum: Quorum, height: u64, block_hash: Hash) -> Self {
        VoteKeeper {
            validators,
            quorum,
            height,
            block_hash,
            votes: BTreeMap::new(),
            ack_power: BTreeMap::new(),
            nack_power: 0,
        }
    }

    /// The block being tallied.
    pub fn block_hash(&self) -> Hash {
        self.block_hash
    }

    /// Counts a vote whose signature the caller has verified.
    pub fn add(&mut self, vote: Vote) -> AddVote {
        if vote.height != self.height || vote.block_hash != self.block_hash {
            return AddVote::WrongBlock;
        }
        let Some(power) = self.validators.power_of(&vote.validator) else {
            return AddVote::NotValidator;
        };
        if self.votes.contains_key(&vote.validator) {
            return AddVote::Duplicate;
        }
        if vote.ack {
            let p = self.ack_power.entry(vote.app_hash).or_insert(0);
            *p = p.saturating_add(power);
        } else {
            self.nack_power = self.nack_power.saturating_add(power);
        }
        self.votes.insert(vote.validator, vote);
        AddVote::Added
    }

    /// Whether `validator` has a vote counted.
    pub fn voted(&self, validator: &PublicKey) -> bool {
        self.votes.contains_key(validator)
    }

    /// Power of the ACKs carrying `app_hash`.
    pub fn ack_power(&self, app_hash: &Hash) -> u64 {
        self.ack_power.get(app_hash).copied().unwrap_or(0)
    }

    /// Power against `app_hash`: NACKs plus ACKs with another app hash.
    pub fn nack_power(&self, app_hash: &Hash) -> u64 {
        let divergent = self
            .ack_power
            .iter()
            .filter(|(h, _)| *h != app_hash)
            .fold(0u64, |t, (_, p)| t.saturating_add(*p));
        self.nack_power.saturating_add(divergent)
    }

    /// Whether the ACKs carrying `app_hash` reach the quorum.
    pub fn quorum_ack(&self, app_hash: &Hash) -> bool {
        self.quorum
            .reached(self.ack_power(app_hash), self.validators.total_power())
    }

    /// Whether the power against `app_hash` (NACKs and divergent ACKs)
    /// reaches the quorum.
    pub fn quorum_nack(&self, app_hash: &Hash) -> bool {
        self.quorum
            .reached(self.nack_power(app_hash), self.validators.total_power())
    }

    /// Whether ACKs for `app_hash` can no longer reach the quorum even if
    /// every validator that has not voted ACKs it.
    pub fn ack_impossible(&self, app_hash: &Hash) -> bool {
        let total = self.validators.total_power();
        let best = total.saturating_sub(self.nack_power(app_hash));
        !self.quorum.reached(best, total)
    }

    /// The commit info for `app_hash` once its ACKs reach the quorum: those
    /// ACKs, ordered by validator key.
    pub fn commit_info(&self, app_hash: &Hash) -> Option<CommitInfo> {
        if !self.quorum_ack(app_hash) {
            return None;
        }
        Some(CommitInfo {
            app_hash: *app_hash,
            votes: self
                .votes
                .values()
                .filter(|v| v.ack && v.app_hash == *app_hash)
                .cloned()
                .collect(),
        })
    }

    /// Validators that have not voted, in key order.
    pub fn non_voters(&self) -> Vec<PublicKey> {
        self.validators
            .validators()
            .iter()
            .map(|v| v.pub_key)
            .filter(|k| !self.votes.contains_key(k))
            .collect()
    }

    /// The counted NACK votes.
    pub fn nacks(&self) -> impl Iterator<Item = &Vote> {
        self.votes.values().filter(|v| !v.ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kite_types::{NodeKey, Validator};

    const C: &str = "kite-test";

    fn setup(powers: &[u64]) -> (Vec<NodeKey>, ValidatorSet) {
        let keys: Vec<NodeKey> = (1..=powers.len() as u8)
            .map(|i| NodeKey::from_seed([i; 32]))
            .collect();
        let set = ValidatorSet::new(
            keys.iter()
                .zip(powers)
                .map(|(k, p)| Validator {
                    pub_key: k.public(),
                    power: *p,
                    name: String::new(),
                })
                .collect(),
        );
        (keys, set)
    }

    #[test]
    fn tally_by_power_and_quorum() {
        let (keys, set) = setup(&[1, 1, 1, 1]);
        let bh = Hash::digest(b"b");
        let ah = Hash::digest(b"a");
        let mut vk = VoteKeeper::new(set.clone(), Quorum::default(), 5, bh);
        assert_eq!(vk.add(Vote::ack(&keys[0], C, 5, bh, ah)), AddVote::Added);
        assert_eq!(vk.add(Vote::ack(&keys[1], C, 5, bh, ah)), AddVote::Added);
        assert!(!vk.quorum_ack(&ah), "2 of 4 is not more than half");
        assert!(vk.commit_info(&ah).is_none());
        assert_eq!(vk.add(Vote::ack(&keys[2], C, 5, bh, ah)), AddVote::Added);
        assert!(vk.quorum_ack(&ah));
        let ci = vk.commit_info(&ah).unwrap();
        assert_eq!(ci.votes.len(), 3);
        assert_eq!(ci.verify(C, 5, &bh, &set, Quorum::default()), Ok(()));
        assert_eq!(vk.non_voters(), vec![keys[3].public()]);
    }

    #[test]
    fn duplicates_outsiders_and_wrong_blocks_are_ignored() {
        let (keys, set) = setup(&[1, 1, 1, 1]);
        let bh = Hash::digest(b"b");
        let ah = Hash::digest(b"a");
        let mut vk = VoteKeeper::new(set, Quorum::default(), 5, bh);
        assert_eq!(vk.add(Vote::ack(&keys[0], C, 5, bh, ah)), AddVote::Added);
        // A second vote of the same validator, even a different one.
        assert_eq!(
            vk.add(Vote::ack(&keys[0], C, 5, bh, ah)),
            AddVote::Duplicate
        );
        assert_eq!(
            vk.add(Vote::nack(&keys[0], C, 5, bh, "x", &[])),
            AddVote::Duplicate
        );
        let outsider = NodeKey::from_seed([99; 32]);
        assert_eq!(
            vk.add(Vote::ack(&outsider, C, 5, bh, ah)),
            AddVote::NotValidator
        );
        assert_eq!(
            vk.add(Vote::ack(&keys[1], C, 6, bh, ah)),
            AddVote::WrongBlock
        );
        assert_eq!(
            vk.add(Vote::ack(&keys[1], C, 5, ah, ah)),
            AddVote::WrongBlock
        );
        assert_eq!(vk.ack_power(&ah), 1);
        assert!(vk.voted(&keys[0].public()));
        assert!(!vk.voted(&keys[1].public()));
        assert!(!vk.voted(&outsider.public()));
    }

    #[test]
    fn divergent_app_hash_counts_as_nack() {
        let (keys, set) = setup(&[1, 1, 1, 1]);
        let bh = Hash::digest(b"b");
        let good = Hash::digest(b"good");
        let bad = Hash::digest(b"bad");
        let mut vk = VoteKeeper::new(set, Quorum::default(), 1, bh);
        vk.add(Vote::ack(&keys[0], C, 1, bh, bad));
        vk.add(Vote::nack(&keys[1], C, 1, bh, "no", &[]));
        assert_eq!(vk.nack_power(&good), 2);
        assert_eq!(vk.nack_power(&bad), 1);
        assert!(!vk.quorum_nack(&good));
        assert!(
            vk.ack_impossible(&good),
            "2 of 4 against: 3 ACKs impossible"
        );
        assert!(!vk.ack_impossible(&bad));
        vk.add(Vote::ack(&keys[2], C, 1, bh, bad));
        assert!(vk.quorum_nack(&good));
        // The divergent ACKs do not form a quorum either.
        assert!(!vk.quorum_ack(&bad));
        assert_eq!(vk.nacks().count(), 1);
    }

    #[test]
    fn weighted_power() {
        // One validator with 5 of 8: alone it is a quorum.
        let (keys, set) = setup(&[5, 1, 1, 1]);
        let bh = Hash::digest(b"b");
        let ah = Hash::digest(b"a");
        let mut vk = VoteKeeper::new(set.clone(), Quorum::default(), 1, bh);
        vk.add(Vote::ack(&keys[1], C, 1, bh, ah));
        vk.add(Vote::ack(&keys[2], C, 1, bh, ah));
        vk.add(Vote::ack(&keys[3], C, 1, bh, ah));
        assert!(!vk.quorum_ack(&ah));
        vk.add(Vote::ack(&keys[0], C, 1, bh, ah));
        assert!(vk.quorum_ack(&ah));
        // With a 2/3 quorum, 5 of 8 is not enough.
        let mut vk = VoteKeeper::new(set, Quorum { num: 2, den: 3 }, 1, bh);
        vk.add(Vote::ack(&keys[0], C, 1, bh, ah));
        assert!(!vk.quorum_ack(&ah));
        vk.add(Vote::ack(&keys[1], C, 1, bh, ah));
        assert!(vk.quorum_ack(&ah));
    }
}
