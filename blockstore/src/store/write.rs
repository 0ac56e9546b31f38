//! Writing to the store: single-block commits, execution on the committed
//! state, block sync's batch applies, catching the tx index up, and the
//! flush that makes earlier writes durable.

use super::BlockStore;
use super::schema::{Best, META_BEST, META_TX_INDEXED};
use super::txruns::{block_entries, new_run};
use crate::error::StoreError;
use kite_app::{ChangeSet, Executed, StateError, StateKey, StateReader};
use kite_types::{Block, CommitInfo, Hash};
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Most blocks one [`BlockStore::index_txs`] step reads.
pub const INDEX_STEP_BLOCKS: u64 = 256;
/// A [`BlockStore::index_txs`] step ends after the block that takes it to
/// this many txs (one run of the tx index, about 350 KiB).
pub const INDEX_STEP_TXS: usize = 8_192;

/// What [`BlockStore::apply_blocks`] did.
#[derive(Debug)]
pub struct ApplyOutcome {
    /// The blocks committed, in order.
    pub applied: Vec<(Block, CommitInfo)>,
    /// The block that could not be, and why; nothing after it was tried.
    pub failed: Option<(Block, StoreError)>,
}

/// What a [`BlockStore::index_txs`] step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexProgress {
    /// The txs of every block up to this height are indexed.
    pub indexed: u64,
    /// The committed tip.
    pub best: u64,
    /// Txs this step indexed.
    pub txs: usize,
}

impl IndexProgress {
    /// Whether the index holds every committed tx.
    pub fn caught_up(&self) -> bool {
        self.indexed >= self.best
    }
}

impl BlockStore {
    /// Commits `block` with its commit info and the state `changes` its
    /// execution produced, in ONE atomic sled batch over every table (block,
    /// commit info, both height/hash indexes, tx index, state, best
    /// record). Refuses (writing nothing) a block that is not at best + 1,
    /// does not extend the best block, is for another chain, or whose
    /// commit info's app hash is not `sha256(best app hash ||
    /// changes.digest())`. When the config is durable, returns only once
    /// the commit is on stable storage (see the crate docs).
    pub fn commit(
        &self,
        block: &Block,
        commit_info: &CommitInfo,
        changes: &ChangeSet,
    ) -> Result<(), StoreError> {
        self.commit_opts(block, commit_info, changes, true)
    }

    /// [`BlockStore::commit`], with the fsync left to a later
    /// [`BlockStore::flush`] when `sync_now` is false (group commit for
    /// block sync: the commit is as atomic as ever, but a power loss before
    /// the next flush may lose it — whole blocks only, which the node
    /// fetches again).
    pub fn commit_opts(
        &self,
        block: &Block,
        commit_info: &CommitInfo,
        changes: &ChangeSet,
        sync_now: bool,
    ) -> Result<(), StoreError> {
        let serial = self.commits.lock();
        // The commit lock serialises commits: the best record read here is
        // the one the batch replaces.
        let best = self.best()?;
        let new_best = self.check_next(&best, block, commit_info, &changes.digest())?;
        let mut b = sled::Batch::default();
        self.put_block(&mut b, block, commit_info);
        // The tx index takes this block's txs only when it holds every
        // earlier one; otherwise `index_txs` gets to them in order.
        let index = self.indexed.load(Ordering::SeqCst) == best.height;
        self.put_changes(&mut b, changes);
        self.t.meta.put(&mut b, META_BEST, new_best.encode());
        // Held while the batch is applied when it changes the run list:
        // taken last, so lookups and merges wait only for the apply.
        let mut runs = None;
        if index {
            let mut entries = Vec::with_capacity(block.txs().len());
            block_entries(block, &mut entries);
            self.t
                .meta
                .put(&mut b, META_TX_INDEXED, &new_best.height.to_be_bytes());
            if let Some(run) = new_run(entries) {
                let guard = self.runs.write();
                let next = self.put_new_run(&mut b, run, &guard);
                runs = Some((guard, next));
            }
        }
        // One atomic batch: the block, its indexes, its state and the new
        // best record land together or not at all.
        self.t.apply(b)?;
        if let Some((mut guard, next)) = runs {
            *guard = Arc::new(next);
        }
        if index {
            self.indexed.store(new_best.height, Ordering::SeqCst);
        }
        if sync_now && let Some(syncer) = self.syncer.lock().as_mut() {
            syncer.sync(&self.db)?;
        }
        drop(serial);
        tracing::debug!(height = block.height(), hash = %block.hash().short(), txs = block.txs().len(), "committed block");
        Ok(())
    }

    /// Checks that `block` with its commit info and the digest of its
    /// state changes may follow `tip`; returns the tip after it.
    fn check_next(
        &self,
        tip: &Best,
        block: &Block,
        commit_info: &CommitInfo,
        changes_digest: &Hash,
    ) -> Result<Best, StoreError> {
        let header = block.header();
        if header.chain_id != self.genesis.chain_id {
            return Err(StoreError::BlockChain {
                expected: self.genesis.chain_id.clone(),
                got: header.chain_id.clone(),
            });
        }
        let height = block.height();
        let hash = block.hash();
        if height != tip.height.saturating_add(1) {
            return Err(StoreError::NotNext {
                expected: tip.height.saturating_add(1),
                got: height,
            });
        }
        if header.prev_hash != tip.block_hash {
            return Err(StoreError::PrevHash {
                block: hash,
                expected: tip.block_hash,
                got: header.prev_hash,
            });
        }
        if header.prev_app_hash != tip.app_hash {
            return Err(StoreError::PrevAppHash {
                block: hash,
                expected: tip.app_hash,
                got: header.prev_app_hash,
            });
        }
        let computed = Hash::digest_parts(&[tip.app_hash.as_bytes(), changes_digest.as_bytes()]);
        if computed != commit_info.app_hash {
            return Err(StoreError::AppHashMismatch {
                height,
                computed,
                committed: commit_info.app_hash,
            });
        }
        Ok(Best {
            height,
            block_hash: hash,
            app_hash: commit_info.app_hash,
        })
    }

    /// Adds a block's records (block, commit info, both height/hash
    /// indexes) to a batch; the tx index is a run (see `txruns`).
    fn put_block(&self, b: &mut sled::Batch, block: &Block, commit_info: &CommitInfo) {
        let t = &self.t;
        let hkey = block.height().to_be_bytes();
        let hash = block.hash();
        t.blocks.put(b, &hkey, block.encode());
        t.commits
            .put(b, &hkey, commit_info.to_proto().encode_to_vec());
        t.height_hash.put(b, &hkey, hash.as_bytes());
        t.hash_height.put(b, hash.as_bytes(), &hkey);
    }

    /// Adds state changes to a batch.
    fn put_changes(&self, b: &mut sled::Batch, changes: &ChangeSet) {
        for (k, v) in changes.iter() {
            match v {
                Some(v) => self.t.state.put(b, k.as_bytes(), v.as_slice()),
                None => self.t.state.del(b, k.as_bytes()),
            }
        }
    }

    pub(super) fn make_durable(&self) -> Result<(), StoreError> {
        if let Some(s) = self.syncer.lock().as_mut() {
            s.sync(&self.db)?;
        }
        Ok(())
    }

    /// Executes `block` on the committed state (nothing is written; see
    /// [`App::execute_block`](kite_app::App::execute_block)). Serialised
    /// with commits, so it never sees a half-applied commit.
    pub fn execute_block(
        &self,
        block: &Block,
        checked: impl Into<kite_app::SigsChecked>,
    ) -> Result<Executed, StoreError> {
        let _serial = self.commits.lock();
        let best = self.best()?;
        Ok(self
            .app
            .execute_block(self, best.app_hash, block, checked)?)
    }

    /// Executes `block` on the committed state and commits it with
    /// `commit_info`, whose app hash must be the one the execution gives
    /// (block sync and followers). Returns the execution.
    pub fn apply_block(
        &self,
        block: &Block,
        commit_info: &CommitInfo,
        sigs_verified: bool,
    ) -> Result<Executed, StoreError> {
        self.apply_block_opts(block, commit_info, sigs_verified, true)
    }

    /// [`BlockStore::apply_block`] with the fsync deferred when `sync_now`
    /// is false (see [`BlockStore::commit_opts`]).
    pub fn apply_block_opts(
        &self,
        block: &Block,
        commit_info: &CommitInfo,
        sigs_verified: bool,
        sync_now: bool,
    ) -> Result<Executed, StoreError> {
        let ex = self.execute_block(block, sigs_verified)?;
        if ex.app_hash != commit_info.app_hash {
            return Err(StoreError::AppHashMismatch {
                height: block.height(),
                computed: ex.app_hash,
                committed: commit_info.app_hash,
            });
        }
        self.commit_opts(block, commit_info, &ex.changes, sync_now)?;
        Ok(ex)
    }

    /// Applies consecutive blocks whose signatures are already checked
    /// (block sync): executes each on the state the previous ones leave,
    /// checks it extends them and that its app hash is its commit info's,
    /// and commits all that pass in ONE atomic batch (state keys written by
    /// several blocks are written once), stopping at the first that fails.
    /// With `sync_now`, fsyncs after; otherwise the fsync is left to
    /// [`BlockStore::flush`] (group commit, see the crate docs). The txs
    /// of these blocks are left for [`BlockStore::index_txs`] (see "The tx
    /// index may lag the chain" in [`crate::store`]).
    pub fn apply_blocks(&self, blocks: Vec<(Block, CommitInfo)>, sync_now: bool) -> ApplyOutcome {
        let mut out = ApplyOutcome {
            applied: Vec::with_capacity(blocks.len()),
            failed: None,
        };
        let serial = self.commits.lock();
        let mut tip = match self.best() {
            Ok(b) => b,
            Err(e) => {
                out.failed = blocks.into_iter().next().map(|(b, _)| (b, e));
                return out;
            }
        };
        let mut pending = ChangeSet::new();
        let mut batch = sled::Batch::default();
        for (block, ci) in blocks {
            let reader = Pending {
                base: self,
                changes: &pending,
            };
            let next = self
                .app
                .execute_block(&reader, tip.app_hash, &block, true)
                .map_err(StoreError::from)
                .and_then(|ex| {
                    if ex.app_hash != ci.app_hash {
                        return Err(StoreError::AppHashMismatch {
                            height: block.height(),
                            computed: ex.app_hash,
                            committed: ci.app_hash,
                        });
                    }
                    let next = self.check_next(&tip, &block, &ci, &ex.changes.digest())?;
                    Ok((next, ex.changes))
                });
            match next {
                Ok((next, changes)) => {
                    self.put_block(&mut batch, &block, &ci);
                    for (k, v) in changes.iter() {
                        match v {
                            Some(v) => pending.set(k.clone(), v.clone()),
                            None => pending.delete(k.clone()),
                        }
                    }
                    tip = next;
                    out.applied.push((block, ci));
                }
                Err(e) => {
                    out.failed = Some((block, e));
                    break;
                }
            }
        }
        if out.applied.is_empty() {
            return out;
        }
        self.put_changes(&mut batch, &pending);
        self.t.meta.put(&mut batch, META_BEST, tip.encode());
        let written = self
            .t
            .apply(batch)
            .map_err(StoreError::from)
            .and_then(|()| match (sync_now, self.syncer.lock().as_mut()) {
                (true, Some(s)) => s.sync(&self.db),
                _ => Ok(()),
            });
        drop(serial);
        if let Err(e) = written {
            // Nothing (or nothing known durable) was committed: report the
            // first block as failed, so the caller stops.
            let mut applied = std::mem::take(&mut out.applied).into_iter();
            out.failed = applied.next().map(|(b, _)| (b, e));
            return out;
        }
        tracing::debug!(
            to = tip.height,
            blocks = out.applied.len(),
            "committed blocks"
        );
        out
    }

    /// One step of catching the tx index up with the chain: indexes the
    /// txs of the blocks after [`BlockStore::tx_indexed`], at most
    /// `max_blocks` blocks and stopping after the block that reaches
    /// `max_txs` txs, in ONE atomic batch with the new `tx_indexed` record.
    /// Does nothing when the index has caught up. Blocks never change once
    /// committed, so what this reads stays true; the commit lock keeps a
    /// commit from indexing a block at the same time.
    pub fn index_txs(&self, max_blocks: u64, max_txs: usize) -> Result<IndexProgress, StoreError> {
        let _serial = self.commits.lock();
        let best = self.best()?.height;
        let from = self.indexed.load(Ordering::SeqCst);
        let mut progress = IndexProgress {
            indexed: from,
            best,
            txs: 0,
        };
        if from >= best {
            return Ok(progress);
        }
        let to = from.saturating_add(max_blocks.max(1)).min(best);
        let mut batch = sled::Batch::default();
        let mut entries = Vec::new();
        for h in from + 1..=to {
            let block = self.block_by_height(h)?.ok_or_else(|| {
                self.corrupt(format!("block {h} is missing below the best block {best}"))
            })?;
            block_entries(&block, &mut entries);
            progress.indexed = h;
            progress.txs += block.txs().len();
            if progress.txs >= max_txs {
                break;
            }
        }
        self.t
            .meta
            .put(&mut batch, META_TX_INDEXED, &progress.indexed.to_be_bytes());
        // One run for all the blocks of the step.
        let run = new_run(entries);
        let mut runs = self.runs.write();
        let next = run.map(|run| self.put_new_run(&mut batch, run, &runs));
        self.t.apply(batch)?;
        if let Some(next) = next {
            *runs = Arc::new(next);
        }
        drop(runs);
        self.indexed.store(progress.indexed, Ordering::SeqCst);
        Ok(progress)
    }

    /// Flushes and (when durable) fsyncs everything written so far. Safe
    /// to call from any thread, also while commits go on.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.make_durable()
    }
}

/// The committed state seen through changes not yet written (blocks of
/// one [`BlockStore::apply_blocks`] batch).
struct Pending<'a> {
    base: &'a BlockStore,
    changes: &'a ChangeSet,
}

impl StateReader for Pending<'_> {
    fn get(&self, key: &StateKey) -> Result<Option<Vec<u8>>, StateError> {
        match self.changes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(key),
        }
    }
}
