//! Terms: who leads when, and the signed messages with which validators
//! leave a term and a new leader proves it may lead (docs/CONSENSUS.md,
//! "Terms and leader failover").
//!
//! - [`LeaderSchedule`]: the leader of every term, from the genesis alone.
//! - [`TermChange`]: a validator's signed word that it left every term
//!   below `term`, with the block it ACKed at its open height ([`Acked`]).
//! - [`Credential`]: a quorum of term changes for one term at one height;
//!   the leader of that term sends it with its proposals, and it names the
//!   block that leader must propose first ([`Credential::carried`]).

use crate::codec::{self, DecodeError};
use crate::{Hash, NodeKey, PublicKey, Quorum, Signature, ValidatorSet, proto, sign};

/// The leader of every term: the validators in key order, rotated so that
/// term 0 is led by the genesis leader; term `t` by the `t mod n`-th.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderSchedule {
    order: Vec<PublicKey>,
}

impl LeaderSchedule {
    /// The schedule of `validators` whose term 0 is led by `first` (the
    /// genesis leader; placed first even if it is not in the set).
    pub fn new(validators: &ValidatorSet, first: PublicKey) -> LeaderSchedule {
        let keys: Vec<PublicKey> = validators.validators().iter().map(|v| v.pub_key).collect();
        let order = match keys.iter().position(|k| *k == first) {
            Some(i) => keys[i..].iter().chain(&keys[..i]).copied().collect(),
            None => std::iter::once(first).chain(keys).collect(),
        };
        LeaderSchedule { order }
    }

    /// The leader of `term`.
    pub fn leader(&self, term: u64) -> PublicKey {
        let n = self.order.len().max(1) as u64;
        let i = usize::try_from(term % n).unwrap_or(0);
        self.order.get(i).copied().unwrap_or(PublicKey([0; 32]))
    }

    /// Whether `sig` is the signature of the leader of the header's term
    /// over `hash`, and that leader is the header's proposer.
    pub fn signed_by_leader(
        &self,
        header: &crate::BlockHeader,
        hash: &Hash,
        sig: &Signature,
    ) -> bool {
        crate::block::verify_header_sig(&header.proposer, hash, sig, &self.leader(header.term))
    }

    /// The first term above `after` that `who` leads, if it leads any.
    pub fn next_term_of(&self, after: u64, who: &PublicKey) -> Option<u64> {
        let n = self.order.len() as u64;
        (1..=n)
            .map(|d| after.saturating_add(d))
            .find(|t| self.leader(*t) == *who)
    }

    /// Number of validators in the rotation.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the rotation is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The block a validator ACKed at the height where it leaves a term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Acked {
    /// The block.
    pub block_hash: Hash,
    /// The term of the ACK.
    pub term: u64,
    /// The block's header time: within one term, the leader's later
    /// proposals carry later times.
    pub timestamp_ms: u64,
}

impl Acked {
    /// Which of two ACKs is newer: higher term, then later header time,
    /// then (never between honest leaders) the higher hash.
    pub fn rank(&self) -> (u64, u64, Hash) {
        (self.term, self.timestamp_ms, self.block_hash)
    }
}

/// A validator's signed word that it takes part in `term` or later only,
/// at its open height `height`, with the block it ACKed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermChange {
    /// The term it moves to.
    pub term: u64,
    /// Its open height (its committed height + 1).
    pub height: u64,
    /// Its ACK at `height`, if it holds one.
    pub acked: Option<Acked>,
    /// The validator.
    pub validator: PublicKey,
    /// Signature over [`sign::term_change_digest`].
    pub signature: Signature,
}

impl TermChange {
    /// A signed term change.
    pub fn new(
        key: &NodeKey,
        chain_id: &str,
        term: u64,
        height: u64,
        acked: Option<Acked>,
    ) -> TermChange {
        let mut tc = TermChange {
            term,
            height,
            acked,
            validator: key.public(),
            signature: Signature([0; 64]),
        };
        tc.signature = key.sign_digest(&tc.digest(chain_id));
        tc
    }

    /// The digest the signature covers.
    pub fn digest(&self, chain_id: &str) -> Hash {
        sign::term_change_digest(
            chain_id,
            self.term,
            self.height,
            self.acked
                .as_ref()
                .map(|a| (&a.block_hash, a.term, a.timestamp_ms)),
        )
    }

    /// Checks the signature.
    pub fn verify(&self, chain_id: &str) -> bool {
        sign::verify(&self.validator, &self.digest(chain_id), &self.signature)
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::TermChange {
        proto::TermChange {
            term: self.term,
            height: self.height,
            acked: self.acked.map(|a| proto::Acked {
                block_hash: a.block_hash.0.to_vec(),
                term: a.term,
                timestamp_ms: a.timestamp_ms,
            }),
            validator: self.validator.0.to_vec(),
            signature: self.signature.0.to_vec(),
        }
    }

    /// Validates the wire form (structure, not the signature).
    pub fn from_proto(p: &proto::TermChange) -> Result<TermChange, DecodeError> {
        const W: &str = "term change";
        let acked = match &p.acked {
            None => None,
            Some(a) => {
                if a.term >= p.term {
                    return Err(DecodeError::invalid(
                        W,
                        format!("its ACK is of term {}, not below {}", a.term, p.term),
                    ));
                }
                Some(Acked {
                    block_hash: codec::hash_field(W, "acked.block_hash", &a.block_hash)?,
                    term: a.term,
                    timestamp_ms: a.timestamp_ms,
                })
            }
        };
        if p.term == 0 {
            return Err(DecodeError::invalid(W, "term 0 is the genesis term"));
        }
        Ok(TermChange {
            term: p.term,
            height: p.height,
            acked,
            validator: codec::key_field(W, "validator", &p.validator)?,
            signature: codec::sig_field(W, "signature", &p.signature)?,
        })
    }
}

/// A quorum of term changes for `term` at `height`: the schedule's leader
/// of `term` may lead from `height` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The term.
    pub term: u64,
    /// The height its changes were made at.
    pub height: u64,
    /// The changes, one per validator, reaching the quorum.
    pub changes: Vec<TermChange>,
}

impl Credential {
    /// The newest ACK among the changes: the block the leader of `term`
    /// must propose first at `height` (it may have committed), or `None`
    /// when no change holds an ACK (any new block is safe).
    pub fn carried(&self) -> Option<Acked> {
        self.changes
            .iter()
            .filter_map(|c| c.acked)
            .max_by_key(Acked::rank)
    }

    /// Everything [`Credential::verify`] checks except the signatures,
    /// which it returns (one per change, in order).
    pub fn sig_items(
        &self,
        chain_id: &str,
        validators: &ValidatorSet,
        quorum: Quorum,
    ) -> Result<Vec<sign::SigItem<'_>>, String> {
        for c in &self.changes {
            if c.term != self.term || c.height != self.height {
                return Err(format!(
                    "change of {} is for term {} at height {}, not term {} at height {}",
                    c.validator.short(),
                    c.term,
                    c.height,
                    self.term,
                    self.height
                ));
            }
        }
        validators.check_quorum(self.changes.iter().map(|c| &c.validator), quorum, "changes")?;
        Ok(self
            .changes
            .iter()
            .map(|c| sign::SigItem {
                key: &c.validator,
                digest: c.digest(chain_id),
                sig: &c.signature,
            })
            .collect())
    }

    /// Checks that a quorum of `validators` signed a change to `term` at
    /// `height` (signatures batch-verified).
    pub fn verify(
        &self,
        chain_id: &str,
        validators: &ValidatorSet,
        quorum: Quorum,
    ) -> Result<(), String> {
        let items = self.sig_items(chain_id, validators, quorum)?;
        if let Some(i) = sign::verify_batch(&items).iter().position(|ok| !ok) {
            return Err(format!(
                "bad term-change signature from {}",
                self.changes[i].validator.short()
            ));
        }
        Ok(())
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::Credential {
        proto::Credential {
            term: self.term,
            height: self.height,
            changes: self.changes.iter().map(TermChange::to_proto).collect(),
        }
    }

    /// Validates the wire form (structure). At most `max_changes` changes.
    pub fn from_proto(
        p: &proto::Credential,
        max_changes: usize,
    ) -> Result<Credential, DecodeError> {
        if p.changes.len() > max_changes {
            return Err(DecodeError::invalid(
                "credential",
                format!(
                    "{} changes, at most {max_changes} validators exist",
                    p.changes.len()
                ),
            ));
        }
        Ok(Credential {
            term: p.term,
            height: p.height,
            changes: p
                .changes
                .iter()
                .map(TermChange::from_proto)
                .collect::<Result<Vec<_>, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Validator;

    fn set(n: u8) -> (Vec<NodeKey>, ValidatorSet) {
        let keys: Vec<NodeKey> = (1..=n).map(|i| NodeKey::from_seed([i; 32])).collect();
        let vs = ValidatorSet::new(
            keys.iter()
                .map(|k| Validator {
                    pub_key: k.public(),
                    power: 1,
                    name: String::new(),
                })
                .collect(),
        );
        (keys, vs)
    }

    #[test]
    fn the_schedule_starts_with_the_genesis_leader_and_visits_everyone() {
        let (keys, vs) = set(4);
        let first = keys[2].public();
        let s = LeaderSchedule::new(&vs, first);
        assert_eq!(s.leader(0), first);
        let round: std::collections::HashSet<PublicKey> = (0..4).map(|t| s.leader(t)).collect();
        assert_eq!(round.len(), 4);
        assert_eq!(s.leader(4), first);
        assert_eq!(s.leader(u64::MAX), s.leader(u64::MAX % 4));
        for k in &keys {
            let t = s.next_term_of(5, &k.public()).unwrap();
            assert!(t > 5 && t <= 9);
            assert_eq!(s.leader(t), k.public());
        }
        assert_eq!(s.next_term_of(0, &PublicKey([7; 32])), None);
    }

    #[test]
    fn a_credential_needs_a_quorum_of_good_changes_for_one_term_and_height() {
        let (keys, vs) = set(4);
        let q = Quorum::default();
        let a = Acked {
            block_hash: Hash::digest(b"a"),
            term: 1,
            timestamp_ms: 10,
        };
        let b = Acked {
            block_hash: Hash::digest(b"b"),
            term: 2,
            timestamp_ms: 5,
        };
        let ch = |i: usize, acked| TermChange::new(&keys[i], "c", 3, 7, acked);
        let good = Credential {
            term: 3,
            height: 7,
            changes: vec![ch(0, Some(a)), ch(1, None), ch(2, Some(b))],
        };
        good.verify("c", &vs, q).unwrap();
        // The newest ACK is of the highest term, whatever its time.
        assert_eq!(good.carried(), Some(b));
        assert!(good.verify("d", &vs, q).is_err());
        let mut short = good.clone();
        short.changes.pop();
        assert!(short.verify("c", &vs, q).unwrap_err().contains("quorum"));
        let mut twice = good.clone();
        twice.changes[2] = ch(0, None);
        assert!(twice.verify("c", &vs, q).unwrap_err().contains("two"));
        let mut other = good.clone();
        other.changes[1] = TermChange::new(&keys[1], "c", 4, 7, None);
        assert!(other.verify("c", &vs, q).is_err());
        let mut forged = good.clone();
        forged.changes[1].acked = Some(a);
        assert!(
            forged
                .verify("c", &vs, q)
                .unwrap_err()
                .contains("signature")
        );
        let stranger = NodeKey::from_seed([99; 32]);
        let mut foreign = good.clone();
        foreign.changes[1] = TermChange::new(&stranger, "c", 3, 7, None);
        assert!(foreign.verify("c", &vs, q).is_err());
        let none = Credential {
            changes: vec![ch(0, None), ch(1, None), ch(3, None)],
            ..good.clone()
        };
        assert_eq!(none.carried(), None);
        // Wire round trip, and the structural checks of the decoder.
        let back = Credential::from_proto(&good.to_proto(), 4).unwrap();
        assert_eq!(back, good);
        assert!(Credential::from_proto(&good.to_proto(), 2).is_err());
        let mut p = ch(0, Some(a)).to_proto();
        p.term = 1;
        assert!(TermChange::from_proto(&p).is_err());
        p.term = 0;
        p.acked = None;
        assert!(TermChange::from_proto(&p).is_err());
    }
}
