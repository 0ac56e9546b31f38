//! Stateless proof checks of fetched blocks, for block sync.
//!
//! Everything about a fetched block that does not need the committed state
//! is checked here, off the engine, typically on a blocking thread while
//! earlier blocks execute: the height sequence, the header's chain and
//! validator set, the tx root, the links between consecutive blocks of the
//! range (prev hash, and prev app hash against the previous block's commit
//! info), the commit info's structure and quorum, and every signature (the
//! leader's, the votes', the txs') in ONE batch verification per range.
//! The engine then only checks the range's first block against its
//! committed tip ([`crate::Input::RangeFetched`]).
//!
//! A failure is either the serving peer's ([`Bad::Peer`]: a bad leader or
//! vote signature, a commit short of the quorum, a broken link, txs that
//! do not match the tx root: no honest node serves that) or this node's
//! ([`Bad::Committed`]: the block carries the leader's signature and a
//! quorum commit over its txs, and still a tx signature fails here: the
//! network committed it under a verification rule this node does not
//! share). The node must not punish the peer for the second; it halts
//! rather than fork.

use kite_types::sign::{KeyCache, SigItem};
use kite_types::{Block, CommitInfo, Hash, LeaderSchedule, Quorum, ValidatorSet};

/// Checks fetched ranges for one chain; holds a cache of decoded keys
/// (validators and recent tx senders), so share one per node.
#[derive(Debug)]
pub struct ProofChecker {
    chain_id: String,
    schedule: LeaderSchedule,
    validators: ValidatorSet,
    valset_hash: Hash,
    quorum: Quorum,
    keys: KeyCache,
}

/// What [`ProofChecker::check_range`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeCheck {
    /// How many leading blocks passed every check.
    pub good: usize,
    /// Why the block after them failed, if one did.
    pub bad: Option<Bad>,
}

/// Why a fetched block failed [`ProofChecker::check_range`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// The block's proof is bad (leader or vote signature, quorum, header,
    /// links, tx root): the peer that served it misbehaves.
    Peer(String),
    /// The block is committed (valid leader signature, a valid quorum
    /// commit, its txs match its tx root) yet fails a local check (a tx
    /// signature under this node's rule): this node's verification rule or
    /// software differs from the network's. Not the peer's fault.
    Committed(String),
}

impl Bad {
    /// The reason, whoever is at fault.
    pub fn reason(&self) -> &str {
        match self {
            Bad::Peer(r) | Bad::Committed(r) => r,
        }
    }
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl ProofChecker {
    /// A checker for the chain of `cfg`.
    pub fn new(cfg: &crate::EngineConfig) -> ProofChecker {
        ProofChecker {
            chain_id: cfg.chain_id.clone(),
            schedule: cfg.schedule.clone(),
            validators: cfg.validators.clone(),
            valset_hash: cfg.validators.hash(),
            quorum: cfg.quorum,
            keys: KeyCache::default(),
        }
    }

    /// Checks `blocks`, which should be the consecutive heights from
    /// `first_height`, each with its commit info. Returns how many leading
    /// blocks are good and why the next one is not. CPU-heavy (one batch
    /// verification of every signature): call it off the async executor.
    pub fn check_range(&self, first_height: u64, blocks: &[(Block, CommitInfo)]) -> RangeCheck {
        let mut items: Vec<SigItem<'_>> = Vec::new();
        // Per structurally good block: where its proof signatures (the
        // leader's and the votes') end in `items`, and where its txs' end.
        let mut ends: Vec<(usize, usize)> = Vec::with_capacity(blocks.len());
        let mut bad = None;
        for (i, (block, ci)) in blocks.iter().enumerate() {
            let prev = i.checked_sub(1).and_then(|p| blocks.get(p));
            match self.structure(first_height.saturating_add(i as u64), block, prev) {
                Ok(()) => {}
                Err(e) => {
                    bad = Some(Bad::Peer(e));
                    break;
                }
            }
            if ci.term() < block.header().term {
                bad = Some(Bad::Peer(format!(
                    "block {}: committed in term {}, before its own term {}",
                    block.height(),
                    ci.term(),
                    block.header().term
                )));
                break;
            }
            let votes = match ci.sig_items(
                &self.chain_id,
                block.height(),
                &block.hash(),
                &self.validators,
                self.quorum,
            ) {
                Ok(v) => v,
                Err(e) => {
                    bad = Some(Bad::Peer(format!("block {}: {e}", block.height())));
                    break;
                }
            };
            items.push(block.leader_sig_item());
            items.extend(votes);
            let proof_end = items.len();
            items.extend(block.txs().iter().map(|t| t.sig_item()));
            ends.push((proof_end, items.len()));
        }
        let verdicts = self.keys.verify_batch(&items);
        let Some(first_bad) = verdicts.iter().position(|ok| !ok) else {
            return RangeCheck {
                good: ends.len(),
                bad,
            };
        };
        let good = ends
            .iter()
            .position(|(_, end)| first_bad < *end)
            .unwrap_or(0);
        let height = first_height.saturating_add(good as u64);
        let start = good
            .checked_sub(1)
            .and_then(|p| ends.get(p))
            .map_or(0, |(_, end)| *end);
        let (proof_end, end) = ends.get(good).copied().unwrap_or((0, 0));
        let proof_ok = verdicts
            .get(start..proof_end)
            .is_some_and(|v| v.iter().all(|ok| *ok));
        let bad = if proof_ok {
            // Structure, leader signature and quorum are good: the block
            // is committed; only its txs fail here.
            let txs = blocks.get(good).map(|(b, _)| b.txs()).unwrap_or(&[]);
            let refused: Vec<String> = verdicts
                .get(proof_end..end)
                .unwrap_or(&[])
                .iter()
                .zip(txs)
                .filter(|(ok, _)| !**ok)
                .map(|(_, tx)| tx.hash().to_string())
                .collect();
            Bad::Committed(format!(
                "block {height} carries the leader's signature and a quorum commit, \
                 but the signature of its tx {} fails this node's verification rule",
                refused.join(", tx ")
            ))
        } else {
            Bad::Peer(format!("block {height}: a bad leader or vote signature"))
        };
        RangeCheck {
            good,
            bad: Some(bad),
        }
    }

    /// The checks of one block that need no signature verification.
    fn structure(
        &self,
        height: u64,
        block: &Block,
        prev: Option<&(Block, CommitInfo)>,
    ) -> Result<(), String> {
        let hd = block.header();
        if hd.height != height {
            return Err(format!("expected block {height}, got {}", hd.height));
        }
        if hd.chain_id != self.chain_id {
            return Err(format!("block {height} is for chain {:?}", hd.chain_id));
        }
        if hd.validator_set_hash != self.valset_hash {
            return Err(format!("block {height} names another validator set"));
        }
        if hd.proposer != self.schedule.leader(hd.term) {
            return Err(format!(
                "block {height} was not proposed by the leader of its term {}",
                hd.term
            ));
        }
        if !block.check_tx_root() {
            return Err(format!("block {height}: tx root does not match its txs"));
        }
        if let Some((pb, pci)) = prev {
            if hd.prev_hash != pb.hash() {
                return Err(format!(
                    "block {height} does not extend block {}",
                    pb.height()
                ));
            }
            if hd.prev_app_hash != pci.app_hash {
                return Err(format!(
                    "block {height} builds on another app hash than block {} committed",
                    pb.height()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::{EngineConfig, Role};
    use kite_types::genesis::Validator;
    use kite_types::testing::{Forge, forged_tx};
    use kite_types::{BLOCK_VERSION, BlockHeader, Genesis, NodeKey, Payload, Tx, Vote};

    const CHAIN: &str = "kite-check";

    fn key(i: u8) -> NodeKey {
        NodeKey::from_seed([i; 32])
    }

    fn checker() -> ProofChecker {
        let mut g = Genesis::single(CHAIN, key(1).public(), key(50).public(), 1);
        g.validators = (1..=4)
            .map(|i| Validator {
                pub_key: key(i).public(),
                power: 1,
                name: format!("v{i}"),
            })
            .collect();
        ProofChecker::new(&EngineConfig::from_genesis(&g, Role::Sentry, None))
    }

    fn put(sender: u8, nonce: u64, kind: Forge) -> Tx {
        let payload = Payload::Put {
            key: vec![sender],
            value: nonce.to_be_bytes().to_vec(),
        };
        forged_tx(&key(sender), kind, CHAIN, nonce, payload)
    }

    /// A chain of blocks from height 1 holding `txs_at(height)`, each
    /// signed by the leader (validator 1) with the commit of validators 1
    /// to 3.
    fn chain(checker: &ProofChecker, txs: Vec<Vec<Tx>>) -> Vec<(Block, CommitInfo)> {
        let mut out: Vec<(Block, CommitInfo)> = Vec::new();
        let (mut prev, mut prev_app) = (Hash::ZERO, Hash::digest(b"genesis app"));
        for (i, txs) in txs.into_iter().enumerate() {
            let height = i as u64 + 1;
            let header = BlockHeader {
                version: BLOCK_VERSION,
                chain_id: CHAIN.into(),
                height,
                prev_hash: prev,
                prev_app_hash: prev_app,
                timestamp_ms: 10 * height,
                tx_root: Hash::ZERO,
                validator_set_hash: checker.valset_hash,
                proposer: key(1).public(),
                term: 0,
            };
            let b = Block::new_signed(header, txs, &key(1));
            let app = Hash::digest_parts(&[b"app", b.hash().as_bytes()]);
            let votes = (1..=3)
                .map(|v| Vote::ack(&key(v), CHAIN, height, b.hash(), app))
                .collect();
            (prev, prev_app) = (b.hash(), app);
            out.push((
                b,
                CommitInfo {
                    app_hash: app,
                    votes,
                },
            ));
        }
        out
    }

    /// `n` honest txs of distinct senders.
    fn honest(n: usize, from: u8) -> Vec<Tx> {
        (0..n)
            .map(|i| put(from.wrapping_add(i as u8), 1, Forge::Honest))
            .collect()
    }

    #[test]
    fn a_committed_block_with_a_refused_tx_is_committed_not_the_peers_fault() {
        let c = checker();
        for kind in [Forge::MixedOrderKey, Forge::MutatedR, Forge::HighS] {
            // Alone, with 63 honest txs around it, in block 1 or 3.
            for (before, after) in [(0, 0), (0, 63), (31, 32), (63, 0)] {
                for at in [0usize, 2] {
                    let mut blocks: Vec<Vec<Tx>> = vec![honest(3, 60); 4];
                    let mut txs = honest(before, 100);
                    txs.push(put(9, 1, kind));
                    txs.extend(honest(after, 180));
                    blocks[at] = txs;
                    let r = chain(&c, blocks);
                    let got = c.check_range(1, &r);
                    assert_eq!(got.good, at, "{kind:?} {before}+{after}: {got:?}");
                    match &got.bad {
                        Some(Bad::Committed(why)) => {
                            assert!(why.contains(&r[at].0.txs()[before].hash().to_string()))
                        }
                        other => panic!("{kind:?} {before}+{after}: {other:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn a_mixed_order_r_tx_is_valid_in_every_range() {
        let c = checker();
        for _ in 0..8 {
            for (before, after) in [(0, 0), (0, 63), (31, 32), (63, 0)] {
                let mut txs = honest(before, 100);
                txs.push(put(9, 1, Forge::MixedOrderR));
                txs.extend(honest(after, 180));
                let r = chain(&c, vec![honest(2, 60), txs, honest(5, 70)]);
                assert_eq!(
                    c.check_range(1, &r),
                    RangeCheck { good: 3, bad: None },
                    "{before}+{after}"
                );
            }
        }
        // With several bad txs: the block is committed, the bad txs are
        // named, the mixed-order-R tx is not.
        let mut txs = honest(20, 100);
        txs.insert(3, put(9, 1, Forge::MixedOrderKey));
        txs.insert(7, put(10, 1, Forge::MixedOrderR));
        txs.insert(11, put(11, 1, Forge::MutatedR));
        let mixed_r = txs[7].hash().to_string();
        let r = chain(&c, vec![txs]);
        let got = c.check_range(1, &r);
        assert_eq!(got.good, 0);
        match got.bad {
            Some(Bad::Committed(why)) => {
                assert!(why.contains(&r[0].0.txs()[3].hash().to_string()), "{why}");
                assert!(why.contains(&r[0].0.txs()[11].hash().to_string()), "{why}");
                assert!(!why.contains(&mixed_r), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bad_proof_is_the_peers_fault() {
        let c = checker();
        let good = chain(&c, vec![honest(4, 60); 4]);
        assert_eq!(c.check_range(1, &good), RangeCheck { good: 4, bad: None });
        let peer_at = |i: usize, r: &[(Block, CommitInfo)]| {
            let got = c.check_range(1, r);
            assert_eq!(got.good, i, "{got:?}");
            assert!(matches!(got.bad, Some(Bad::Peer(_))), "{got:?}");
        };
        // A forged vote signature in block 3, also with a bad tx there.
        let mut r = good.clone();
        r[2].1.votes[1].signature.0[10] ^= 1;
        peer_at(2, &r);
        // A block with a bad tx and a forged vote: the proof fails first.
        let mut blocks = vec![honest(4, 60); 3];
        blocks[2].push(put(9, 1, Forge::MixedOrderKey));
        let mut r = chain(&c, blocks);
        assert!(matches!(c.check_range(1, &r).bad, Some(Bad::Committed(_))));
        r[2].1.votes[2].signature.0[40] ^= 1;
        peer_at(2, &r);
        // A forged vote in block 2.
        let mut r = good.clone();
        r[1].1.votes[0].signature.0[40] ^= 1;
        peer_at(1, &r);
        // A forged leader signature in block 2.
        let mut r = good.clone();
        let mut sig = *r[1].0.leader_sig();
        sig.0[3] ^= 1;
        r[1].0 = Block::from_parts(r[1].0.header().clone(), r[1].0.txs().to_vec(), sig);
        peer_at(1, &r);
        // Block 2 with a bad tx and a forged leader signature.
        let mut txs = r[1].0.txs().to_vec();
        txs.push(put(9, 1, Forge::MixedOrderKey));
        let hd = r[1].0.header().clone();
        let b = Block::new_signed(hd, txs, &key(2));
        r[1].0 = b;
        peer_at(1, &r);
        // Block 1's txs do not match its tx root (a tx swapped for a bad one).
        let mut r = good;
        let mut txs = r[0].0.txs().to_vec();
        txs[0] = put(9, 1, Forge::MixedOrderKey);
        r[0].0 = Block::from_parts(r[0].0.header().clone(), txs, *r[0].0.leader_sig());
        peer_at(0, &r);
    }
}
