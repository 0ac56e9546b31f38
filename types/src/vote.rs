//! Votes (ACK / NACK) and the commit info stored with every block.

use crate::codec::{self, DecodeError};
use crate::genesis::{Quorum, ValidatorSet};
use crate::{Hash, NodeKey, PublicKey, Signature, proto, sign};

/// Longest NACK reason kept, in bytes; longer ones are cut on decode.
pub const MAX_NACK_REASON: usize = 256;
/// Most bad tx hashes a NACK names; a vote naming more is refused on
/// decode, and [`Vote::nack`] keeps the first ones.
pub const MAX_BAD_TXS: usize = 16;

/// A validator's verdict on a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// Height of the block.
    pub height: u64,
    /// The block voted on.
    pub block_hash: Hash,
    /// ACK (true) or NACK.
    pub ack: bool,
    /// App hash after executing the block (ACK); zero on NACK.
    pub app_hash: Hash,
    /// Why the block was refused (NACK); free text for logs, not signed.
    pub nack_reason: String,
    /// NACK: the txs that made the block invalid (signed; at most
    /// [`MAX_BAD_TXS`]). Empty on ACK.
    pub bad_txs: Vec<Hash>,
    /// The voter.
    pub validator: PublicKey,
    /// Signature over [`sign::vote_digest_in`] (ACK) or
    /// [`sign::nack_digest_in`] (NACK).
    pub signature: Signature,
    /// The term the vote was cast in (the leader it answers is the
    /// schedule's leader of this term).
    pub term: u64,
}

impl Vote {
    /// A signed ACK in term 0.
    pub fn ack(
        key: &NodeKey,
        chain_id: &str,
        height: u64,
        block_hash: Hash,
        app_hash: Hash,
    ) -> Vote {
        Vote::ack_in(key, chain_id, 0, height, block_hash, app_hash)
    }

    /// A signed ACK in `term`.
    pub fn ack_in(
        key: &NodeKey,
        chain_id: &str,
        term: u64,
        height: u64,
        block_hash: Hash,
        app_hash: Hash,
    ) -> Vote {
        let digest = sign::vote_digest_in(chain_id, term, height, &block_hash, true, &app_hash);
        Vote {
            height,
            block_hash,
            ack: true,
            app_hash,
            nack_reason: String::new(),
            bad_txs: Vec::new(),
            validator: key.public(),
            signature: key.sign_digest(&digest),
            term,
        }
    }

    /// A signed NACK in term 0 naming the txs that made the block invalid
    /// (the first [`MAX_BAD_TXS`] of `bad_txs` are kept, and signed).
    pub fn nack(
        key: &NodeKey,
        chain_id: &str,
        height: u64,
        block_hash: Hash,
        reason: &str,
        bad_txs: &[Hash],
    ) -> Vote {
        Vote::nack_in(key, chain_id, 0, height, block_hash, reason, bad_txs)
    }

    /// A signed NACK in `term` (see [`Vote::nack`]).
    pub fn nack_in(
        key: &NodeKey,
        chain_id: &str,
        term: u64,
        height: u64,
        block_hash: Hash,
        reason: &str,
        bad_txs: &[Hash],
    ) -> Vote {
        let bad_txs = bad_txs[..bad_txs.len().min(MAX_BAD_TXS)].to_vec();
        let digest = sign::nack_digest_in(chain_id, term, height, &block_hash, &bad_txs);
        Vote {
            height,
            block_hash,
            ack: false,
            app_hash: Hash::ZERO,
            nack_reason: truncate(reason, MAX_NACK_REASON),
            bad_txs,
            validator: key.public(),
            signature: key.sign_digest(&digest),
            term,
        }
    }

    /// The digest the signature covers.
    pub fn digest(&self, chain_id: &str) -> Hash {
        if self.ack {
            sign::vote_digest_in(
                chain_id,
                self.term,
                self.height,
                &self.block_hash,
                true,
                &self.app_hash,
            )
        } else {
            sign::nack_digest_in(
                chain_id,
                self.term,
                self.height,
                &self.block_hash,
                &self.bad_txs,
            )
        }
    }

    /// Checks the signature.
    pub fn verify(&self, chain_id: &str) -> bool {
        sign::verify(&self.validator, &self.digest(chain_id), &self.signature)
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::Vote {
        proto::Vote {
            height: self.height,
            block_hash: self.block_hash.0.to_vec(),
            ack: self.ack,
            app_hash: if self.ack {
                self.app_hash.0.to_vec()
            } else {
                Vec::new()
            },
            nack_reason: self.nack_reason.clone(),
            validator: self.validator.0.to_vec(),
            signature: self.signature.0.to_vec(),
            bad_txs: self.bad_txs.iter().map(|h| h.0.to_vec()).collect(),
            term: self.term,
        }
    }

    /// Validates the wire form (structure, not the signature).
    pub fn from_proto(p: &proto::Vote) -> Result<Vote, DecodeError> {
        const W: &str = "vote";
        let app_hash = if p.ack {
            codec::hash_field(W, "app_hash", &p.app_hash)?
        } else {
            Hash::ZERO
        };
        if p.ack && !p.bad_txs.is_empty() {
            return Err(DecodeError::invalid(W, "an ACK names bad txs"));
        }
        if p.bad_txs.len() > MAX_BAD_TXS {
            return Err(DecodeError::invalid(
                W,
                format!(
                    "names {} bad txs, at most {MAX_BAD_TXS} are allowed",
                    p.bad_txs.len()
                ),
            ));
        }
        let bad_txs = p
            .bad_txs
            .iter()
            .map(|b| codec::hash_field(W, "bad_txs", b))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Vote {
            height: p.height,
            block_hash: codec::hash_field(W, "block_hash", &p.block_hash)?,
            ack: p.ack,
            app_hash,
            nack_reason: truncate(&p.nack_reason, MAX_NACK_REASON),
            bad_txs,
            validator: codec::key_field(W, "validator", &p.validator)?,
            signature: codec::sig_field(W, "signature", &p.signature)?,
            term: p.term,
        })
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The app hash after a block and the ACKs that committed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// App hash after the block.
    pub app_hash: Hash,
    /// The ACK votes that reached the quorum.
    pub votes: Vec<Vote>,
}

impl CommitInfo {
    /// The wire form.
    pub fn to_proto(&self) -> proto::CommitInfo {
        proto::CommitInfo {
            app_hash: self.app_hash.0.to_vec(),
            votes: self.votes.iter().map(Vote::to_proto).collect(),
        }
    }

    /// Validates the wire form (structure). At most `max_votes` votes.
    pub fn from_proto(p: &proto::CommitInfo, max_votes: usize) -> Result<CommitInfo, DecodeError> {
        const W: &str = "commit info";
        if p.votes.len() > max_votes {
            return Err(DecodeError::invalid(
                W,
                format!(
                    "{} votes, at most {max_votes} validators exist",
                    p.votes.len()
                ),
            ));
        }
        Ok(CommitInfo {
            app_hash: codec::hash_field(W, "app_hash", &p.app_hash)?,
            votes: p
                .votes
                .iter()
                .map(Vote::from_proto)
                .collect::<Result<Vec<_>, _>>()?,
        })
    }

    /// Checks that this commit info proves the block `block_hash` at `height`
    /// committed: every vote is an ACK for that block with this app hash,
    /// from a distinct validator of `validators`, correctly signed, and their
    /// power reaches `quorum`. Signatures are batch-verified.
    pub fn verify(
        &self,
        chain_id: &str,
        height: u64,
        block_hash: &Hash,
        validators: &ValidatorSet,
        quorum: Quorum,
    ) -> Result<(), String> {
        let items = self.sig_items(chain_id, height, block_hash, validators, quorum)?;
        let verdicts = sign::verify_batch(&items);
        if let Some(i) = verdicts.iter().position(|ok| !ok) {
            return Err(format!(
                "bad vote signature from {}",
                self.votes[i].validator.short()
            ));
        }
        Ok(())
    }

    /// The term its votes were cast in (they share one; 0 when it holds
    /// none).
    pub fn term(&self) -> u64 {
        self.votes.first().map_or(0, |v| v.term)
    }

    /// Everything [`CommitInfo::verify`] checks except the signatures,
    /// which it returns (one per vote, in order) for the caller to verify,
    /// typically in one batch with others.
    pub fn sig_items(
        &self,
        chain_id: &str,
        height: u64,
        block_hash: &Hash,
        validators: &ValidatorSet,
        quorum: Quorum,
    ) -> Result<Vec<sign::SigItem<'_>>, String> {
        for v in &self.votes {
            if !v.ack {
                return Err(format!(
                    "commit info holds a NACK from {}",
                    v.validator.short()
                ));
            }
            if v.height != height || v.block_hash != *block_hash {
                return Err(format!(
                    "vote of {} is for height {} block {}, not height {height} block {}",
                    v.validator.short(),
                    v.height,
                    v.block_hash.short(),
                    block_hash.short()
                ));
            }
            if v.term != self.term() {
                return Err(format!(
                    "vote of {} is of term {}, the commit's first vote of term {}",
                    v.validator.short(),
                    v.term,
                    self.term()
                ));
            }
            if v.app_hash != self.app_hash {
                return Err(format!(
                    "vote of {} carries app hash {}, the commit says {}",
                    v.validator.short(),
                    v.app_hash.short(),
                    self.app_hash.short()
                ));
            }
        }
        validators.check_quorum(self.votes.iter().map(|v| &v.validator), quorum, "votes")?;
        Ok(self
            .votes
            .iter()
            .map(|v| sign::SigItem {
                key: &v.validator,
                digest: v.digest(chain_id),
                sig: &v.signature,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesis::Validator;

    fn setup() -> (Vec<NodeKey>, ValidatorSet) {
        let keys: Vec<NodeKey> = (1..=4u8).map(|i| NodeKey::from_seed([i; 32])).collect();
        let set = ValidatorSet::new(
            keys.iter()
                .map(|k| Validator {
                    pub_key: k.public(),
                    power: 1,
                    name: String::new(),
                })
                .collect(),
        );
        (keys, set)
    }

    #[test]
    fn vote_signatures() {
        let k = NodeKey::from_seed([1; 32]);
        let bh = Hash::digest(b"b");
        let ah = Hash::digest(b"a");
        let v = Vote::ack(&k, "c", 5, bh, ah);
        assert!(v.verify("c"));
        assert!(!v.verify("other-chain"));
        let mut w = v.clone();
        w.app_hash = Hash::digest(b"x");
        assert!(!w.verify("c"));
        let bad: Vec<Hash> = (0..20u8).map(|i| Hash::digest(&[i])).collect();
        let n = Vote::nack(&k, "c", 5, bh, &"r".repeat(1000), &bad);
        assert!(n.verify("c"));
        assert_eq!(n.nack_reason.len(), MAX_NACK_REASON);
        assert_eq!(n.bad_txs, bad[..MAX_BAD_TXS]);
        // The reason is free text; the bad txs are signed.
        let mut r = n.clone();
        r.nack_reason = "other".into();
        assert!(r.verify("c"));
        let mut t = n.clone();
        t.bad_txs.swap(0, 1);
        assert!(!t.verify("c"));
        t.bad_txs.truncate(3);
        assert!(!t.verify("c"));
        assert_eq!(Vote::from_proto(&n.to_proto()).unwrap(), n);
        let mut too_many = n.to_proto();
        too_many.bad_txs.push(vec![0; 32]);
        assert!(Vote::from_proto(&too_many).is_err());
        let mut short = n.to_proto();
        short.bad_txs[0] = vec![0; 31];
        assert!(Vote::from_proto(&short).is_err());
        let mut ack_blames = v.to_proto();
        ack_blames.bad_txs.push(vec![0; 32]);
        assert!(Vote::from_proto(&ack_blames).is_err());
        // A NACK cannot be turned into an ACK.
        let mut a = n.clone();
        a.ack = true;
        assert!(!a.verify("c"));
        let back = Vote::from_proto(&v.to_proto()).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn commit_info_quorum() {
        let (keys, set) = setup();
        let q = Quorum::default();
        let bh = Hash::digest(b"b");
        let ah = Hash::digest(b"a");
        let votes = |n: usize| -> Vec<Vote> {
            keys[..n]
                .iter()
                .map(|k| Vote::ack(k, "c", 3, bh, ah))
                .collect()
        };
        let ci = CommitInfo {
            app_hash: ah,
            votes: votes(3),
        };
        assert_eq!(ci.verify("c", 3, &bh, &set, q), Ok(()));
        // 2 of 4 is not more than half.
        let ci2 = CommitInfo {
            app_hash: ah,
            votes: votes(2),
        };
        assert!(ci2.verify("c", 3, &bh, &set, q).is_err());
        // Duplicate votes do not count twice.
        let mut dup = votes(2);
        dup.push(dup[0].clone());
        assert!(
            CommitInfo {
                app_hash: ah,
                votes: dup
            }
            .verify("c", 3, &bh, &set, q)
            .is_err()
        );
        // Wrong height, wrong block, wrong chain, outsider.
        assert!(ci.verify("c", 4, &bh, &set, q).is_err());
        assert!(ci.verify("c", 3, &ah, &set, q).is_err());
        assert!(ci.verify("d", 3, &bh, &set, q).is_err());
        let mut outsider = votes(2);
        outsider.push(Vote::ack(&NodeKey::from_seed([9; 32]), "c", 3, bh, ah));
        assert!(
            CommitInfo {
                app_hash: ah,
                votes: outsider
            }
            .verify("c", 3, &bh, &set, q)
            .is_err()
        );
        // A vote over another app hash.
        let mut mixed = votes(2);
        mixed.push(Vote::ack(&keys[3], "c", 3, bh, bh));
        assert!(
            CommitInfo {
                app_hash: ah,
                votes: mixed
            }
            .verify("c", 3, &bh, &set, q)
            .is_err()
        );
        // Forged signature.
        let mut forged = votes(3);
        forged[1].signature.0[0] ^= 1;
        assert!(
            CommitInfo {
                app_hash: ah,
                votes: forged
            }
            .verify("c", 3, &bh, &set, q)
            .is_err()
        );
        let back = CommitInfo::from_proto(&ci.to_proto(), 10).unwrap();
        assert_eq!(back, ci);
        assert!(CommitInfo::from_proto(&ci.to_proto(), 2).is_err());
    }
}
