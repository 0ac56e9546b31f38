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

use kite_types::sign::{KeyCache, SigItem};
use kite_types::{Block, CommitInfo, Hash, PublicKey, Quorum, ValidatorSet};

/// Checks fetched ranges for one chain; holds a cache of decoded keys
/// (validators and recent tx senders), so share one per node.
#[derive(Debug)]
pub struct ProofChecker {
    chain_id: String,
    leader: PublicKey,
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
    pub bad: Option<String>,
}

impl ProofChecker {
    /// A checker for the chain of `cfg`.
    pub fn new(cfg: &crate::EngineConfig) -> ProofChecker {
        ProofChecker {
            chain_id: cfg.chain_id.clone(),
            leader: cfg.leader,
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
        // Index in `items` where each structurally good block's signatures end.
        let mut ends: Vec<usize> = Vec::with_capacity(blocks.len());
        let mut bad = None;
        for (i, (block, ci)) in blocks.iter().enumerate() {
            let prev = i.checked_sub(1).and_then(|p| blocks.get(p));
            match self.structure(first_height.saturating_add(i as u64), block, prev) {
                Ok(()) => {}
                Err(e) => {
                    bad = Some(e);
                    break;
                }
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
                    bad = Some(format!("block {}: {e}", block.height()));
                    break;
                }
            };
            items.push(block.leader_sig_item());
            items.extend(votes);
            items.extend(block.txs().iter().map(|t| t.sig_item()));
            ends.push(items.len());
        }
        let verdicts = self.keys.verify_batch(&items);
        let mut good = ends.len();
        if let Some(first_bad) = verdicts.iter().position(|ok| !ok) {
            good = ends.iter().position(|end| first_bad < *end).unwrap_or(0);
            let height = first_height.saturating_add(good as u64);
            bad = Some(format!("block {height}: a bad signature"));
        }
        RangeCheck { good, bad }
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
        if hd.proposer != self.leader {
            return Err(format!("block {height} was not proposed by the leader"));
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
