//! Reading the committed chain and state: the best record, blocks by
//! height or hash and in ranges, commit infos, the tx index, accounts and
//! state entries, and the store's accessors. [`BlockStore`] is also the
//! [`StateReader`] of the committed state.

use super::schema::{Best, MAX_STORED_BLOCK, META_BEST, TxLocation, be64, decode_location};
use super::{BlockStore, StoreConfig};
use crate::error::StoreError;
use kite_app::{App, StateError, StateKey, StateReader};
use kite_types::codec;
use kite_types::genesis::MAX_VALIDATORS;
use kite_types::{Account, Block, CommitInfo, Genesis, Hash, PublicKey, Tx, proto};
use std::path::Path;
use std::sync::atomic::Ordering;

/// Most blocks one [`BlockStore::blocks_range`] call returns.
pub const MAX_RANGE_BLOCKS: u64 = 1024;

impl BlockStore {
    /// The tip of the committed chain, read from the meta record.
    pub fn best(&self) -> Result<Best, StoreError> {
        let raw = self
            .t
            .meta
            .get(META_BEST)?
            .ok_or_else(|| self.corrupt("no best record"))?;
        Best::decode(&raw).ok_or_else(|| self.corrupt("best record is malformed"))
    }

    /// The block at `height`.
    pub fn block_by_height(&self, height: u64) -> Result<Option<Block>, StoreError> {
        match self.t.blocks.get(height.to_be_bytes())? {
            None => Ok(None),
            Some(b) => Block::decode(&b, MAX_STORED_BLOCK)
                .map(Some)
                .map_err(|e| self.corrupt(format!("block {height}: {e}"))),
        }
    }

    /// The encoded block at `height` (serve it without re-encoding).
    pub fn block_bytes(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.t.blocks.get(height.to_be_bytes())?.map(|b| b.to_vec()))
    }

    /// The height of the block with this hash.
    pub fn height_of(&self, hash: &Hash) -> Result<Option<u64>, StoreError> {
        match self.t.hash_height.get(hash.as_bytes())? {
            None => Ok(None),
            Some(h) => be64(&h)
                .map(Some)
                .ok_or_else(|| self.corrupt(format!("hash index entry of {hash}"))),
        }
    }

    /// The hash of the block at `height` (from the index, no decoding).
    pub fn hash_at(&self, height: u64) -> Result<Option<Hash>, StoreError> {
        match self.t.height_hash.get(height.to_be_bytes())? {
            None => Ok(None),
            Some(h) => Hash::from_slice(&h)
                .map(Some)
                .ok_or_else(|| self.corrupt(format!("height index entry {height}"))),
        }
    }

    /// The block with this hash.
    pub fn block_by_hash(&self, hash: &Hash) -> Result<Option<Block>, StoreError> {
        match self.height_of(hash)? {
            None => Ok(None),
            Some(h) => self.block_by_height(h),
        }
    }

    /// Blocks `from..=to` in order, stopping at the best block, after
    /// [`MAX_RANGE_BLOCKS`] blocks, or before the total encoded size would
    /// pass `max_bytes` (the first block is always returned if it exists,
    /// so a caller always progresses).
    pub fn blocks_range(
        &self,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<Vec<Block>, StoreError> {
        let mut out = Vec::new();
        if to < from {
            return Ok(out);
        }
        let end = to.min(from.saturating_add(MAX_RANGE_BLOCKS - 1));
        let mut total = 0usize;
        for item in self.t.blocks.range(&from.to_be_bytes(), &end.to_be_bytes()) {
            let (k, v) = item?;
            if !out.is_empty() && total.saturating_add(v.len()) > max_bytes {
                break;
            }
            total = total.saturating_add(v.len());
            let h = be64(&k).unwrap_or_default();
            out.push(
                Block::decode(&v, MAX_STORED_BLOCK)
                    .map_err(|e| self.corrupt(format!("block {h}: {e}")))?,
            );
        }
        Ok(out)
    }

    /// Up to `count` blocks from `from` on with their commit infos, in one
    /// read (see [`BlockStore::blocks_range`]; at least one block when
    /// `from` exists, then no more than `max_bytes` of encoded blocks).
    pub fn blocks_with_commits(
        &self,
        from: u64,
        count: u64,
        max_bytes: usize,
    ) -> Result<Vec<(Block, CommitInfo)>, StoreError> {
        let to = from.saturating_add(count.max(1) - 1);
        let blocks = self.blocks_range(from, to, max_bytes)?;
        let mut out = Vec::with_capacity(blocks.len());
        for b in blocks {
            let Some(ci) = self.commit_info(b.height())? else {
                return Err(self.corrupt(format!("block {} has no commit info", b.height())));
            };
            out.push((b, ci));
        }
        Ok(out)
    }

    /// The commit info of the block at `height`.
    pub fn commit_info(&self, height: u64) -> Result<Option<CommitInfo>, StoreError> {
        match self.t.commits.get(height.to_be_bytes())? {
            None => Ok(None),
            Some(b) => {
                let p: proto::CommitInfo = codec::decode("commit info", &b, MAX_STORED_BLOCK)
                    .map_err(|e| self.corrupt(format!("commit info {height}: {e}")))?;
                CommitInfo::from_proto(&p, MAX_VALIDATORS)
                    .map(Some)
                    .map_err(|e| self.corrupt(format!("commit info {height}: {e}")))
            }
        }
    }

    /// Height up to which every committed tx is in the tx index (equal to
    /// the best height once the index has caught up).
    pub fn tx_indexed(&self) -> u64 {
        self.indexed.load(Ordering::SeqCst)
    }

    /// Where the committed tx with this hash is; `None` also for a tx of a
    /// block above [`BlockStore::tx_indexed`] (not indexed yet).
    pub fn tx_location(&self, hash: &Hash) -> Result<Option<TxLocation>, StoreError> {
        // A format 2 store's per-tx records first (see `txruns`).
        match self.t.tx_index.get(hash.as_bytes())? {
            None => self.run_lookup(hash),
            Some(b) => decode_location(&b)
                .map(Some)
                .ok_or_else(|| self.corrupt(format!("tx index entry of {hash}"))),
        }
    }

    /// The committed tx with this hash and where it is.
    pub fn tx_by_hash(&self, hash: &Hash) -> Result<Option<(Tx, TxLocation)>, StoreError> {
        let Some(loc) = self.tx_location(hash)? else {
            return Ok(None);
        };
        let block = self.block_by_height(loc.height)?.ok_or_else(|| {
            self.corrupt(format!("tx {hash} points at missing block {}", loc.height))
        })?;
        let tx = block
            .txs()
            .get(loc.index as usize)
            .filter(|t| t.hash() == *hash)
            .cloned()
            .ok_or_else(|| {
                self.corrupt(format!(
                    "tx {hash} is not at index {} of block {}",
                    loc.index, loc.height
                ))
            })?;
        Ok(Some((tx, loc)))
    }

    /// The committed account of `pk`.
    pub fn account(&self, pk: &PublicKey) -> Result<Account, StoreError> {
        kite_app::account(self, pk).map_err(|e| self.corrupt(e.to_string()))
    }

    /// The committed value of `key` in `owner`'s namespace.
    pub fn kv_get(&self, owner: &PublicKey, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .t
            .state
            .get(StateKey::kv(owner, key).as_bytes())?
            .map(|v| v.to_vec()))
    }

    /// Every state entry in key order. Scans the whole state: for checks
    /// and tools, not for the hot path.
    pub fn state_entries(&self) -> Result<Vec<(StateKey, Vec<u8>)>, StoreError> {
        self.t
            .state
            .iter()
            .map(|r| {
                r.map(|(k, v)| (StateKey::from_bytes(k.to_vec()), v.to_vec()))
                    .map_err(StoreError::from)
            })
            .collect()
    }

    /// The application of this chain.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// The genesis this store was opened with.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options.
    pub fn config(&self) -> StoreConfig {
        self.config
    }
}

impl StateReader for BlockStore {
    fn get(&self, key: &StateKey) -> Result<Option<Vec<u8>>, StateError> {
        self.t
            .state
            .get(key.as_bytes())
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| StateError::Storage(e.to_string()))
    }
}
