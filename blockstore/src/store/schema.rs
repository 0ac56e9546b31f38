//! The store's on-disk schema: the table prefixes, meta keys, record and
//! key encodings, and the format constants.
//!
//! Everything is in ONE sled tree, so that a block's whole commit is one
//! atomic `apply_batch` (sled's multi-tree transactions read every key
//! before writing it, which cost more than the writes). Each table below
//! is a key prefix of one byte (`meta` 0, `blocks` 1, `commits` 2,
//! `height_hash` 3, `hash_height` 4, `tx_index` 5, `state` 6, `tx_runs` 7). Records
//! (integers big-endian, so byte order is height order):
//!
//! | table | key | value |
//! |------|-----|-------|
//! | `meta` | `format` | `kite-blockstore/3` |
//! | `meta` | `chain_id` | the chain id |
//! | `meta` | `genesis_hash` | 32 bytes ([`Genesis::hash`](kite_types::Genesis::hash)) |
//! | `meta` | `best` | `be64(height) \|\| block hash \|\| app hash` (72 bytes) |
//! | `meta` | `tx_indexed` | `be64(height)`: the txs of every block up to it are in the tx index |
//! | `meta` | `tx_runs` | the tx index's live runs (see `txruns`) |
//! | `blocks` | `be64(height)` | encoded `Block` |
//! | `commits` | `be64(height)` | encoded `CommitInfo` |
//! | `height_hash` | `be64(height)` | block hash |
//! | `hash_height` | block hash | `be64(height)` |
//! | `tx_index` | tx hash | `be64(height) \|\| be32(index in block)`: format 2 only, read, never written |
//! | `state` | [`StateKey`](kite_app::StateKey) bytes | value (see `kite_app::state`) |
//! | `tx_runs` | `be64(run id) \|\| first tx hash` | a chunk of a tx index run (see `txruns`) |
//!
//! Before the first block, `best` is `(initial_height - 1, Hash::ZERO,
//! genesis app hash)`.
//!
//! Format 3 differs from format 2 in the tx index only; a format 2 store
//! is opened, marked as format 3, and its `tx_index` records are still
//! read (an older build then refuses the store, whose newer txs it would
//! not find).

use kite_types::Hash;
use sled::Tree;

/// The format this build writes and reads.
pub const FORMAT: &[u8] = b"kite-blockstore/3";
/// The previous format, which this build opens and marks as [`FORMAT`].
pub const FORMAT_2: &[u8] = b"kite-blockstore/2";
/// Largest block this store decodes (64 MiB protocol limit plus slack).
pub const MAX_STORED_BLOCK: usize = 65 * 1024 * 1024;

pub(super) const META_FORMAT: &[u8] = b"format";
pub(super) const META_CHAIN: &[u8] = b"chain_id";
pub(super) const META_GENESIS: &[u8] = b"genesis_hash";
pub(super) const META_BEST: &[u8] = b"best";
pub(super) const META_TX_INDEXED: &[u8] = b"tx_indexed";
pub(super) const META_TX_RUNS: &[u8] = b"tx_runs";

/// The tip of the committed chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Best {
    /// Height of the last committed block (`initial_height - 1` before the
    /// first block).
    pub height: u64,
    /// Its hash (zero before the first block).
    pub block_hash: Hash,
    /// The app hash after it (the genesis app hash before the first block).
    pub app_hash: Hash,
}

impl Best {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(72);
        v.extend_from_slice(&self.height.to_be_bytes());
        v.extend_from_slice(self.block_hash.as_bytes());
        v.extend_from_slice(self.app_hash.as_bytes());
        v
    }

    pub(super) fn decode(b: &[u8]) -> Option<Best> {
        if b.len() != 72 {
            return None;
        }
        Some(Best {
            height: be64(&b[..8])?,
            block_hash: Hash::from_slice(&b[8..40])?,
            app_hash: Hash::from_slice(&b[40..72])?,
        })
    }
}

/// Where a committed tx is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLocation {
    /// Height of its block.
    pub height: u64,
    /// Its position in the block.
    pub index: u32,
}

pub(super) fn be64(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}

pub(super) fn decode_location(b: &[u8]) -> Option<TxLocation> {
    if b.len() != 12 {
        return None;
    }
    Some(TxLocation {
        height: be64(&b[..8])?,
        index: u32::from_be_bytes(<[u8; 4]>::try_from(&b[8..12]).ok()?),
    })
}

/// One table: a key prefix of the store's single tree.
#[derive(Debug, Clone)]
pub(super) struct Table {
    pub(super) tree: Tree,
    pub(super) prefix: u8,
}

impl Table {
    pub(super) fn key(&self, k: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + k.len());
        v.push(self.prefix);
        v.extend_from_slice(k);
        v
    }

    pub(super) fn get(&self, k: impl AsRef<[u8]>) -> sled::Result<Option<sled::IVec>> {
        self.tree.get(self.key(k.as_ref()))
    }

    /// Records with keys `from..=to`, keys without the prefix.
    pub(super) fn range(
        &self,
        from: &[u8],
        to: &[u8],
    ) -> impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + use<> {
        self.tree
            .range(self.key(from)..=self.key(to))
            .map(|r| r.map(|(k, v)| (sled::IVec::from(&k[1..]), v)))
    }

    /// The last record with a key in `from..=to`, key without the prefix.
    pub(super) fn last_in(
        &self,
        from: &[u8],
        to: &[u8],
    ) -> sled::Result<Option<(sled::IVec, sled::IVec)>> {
        self.tree
            .range(self.key(from)..=self.key(to))
            .next_back()
            .transpose()
            .map(|r| r.map(|(k, v)| (sled::IVec::from(&k[1..]), v)))
    }

    /// The first record with a key at or after `from`, key without the
    /// prefix; `None` past the table's last record.
    pub(super) fn first_from(&self, from: &[u8]) -> sled::Result<Option<(sled::IVec, sled::IVec)>> {
        let end = [self.prefix.saturating_add(1)];
        if self.prefix == u8::MAX {
            return Ok(None);
        }
        self.tree
            .range(self.key(from)..end.to_vec())
            .next()
            .transpose()
            .map(|r| r.map(|(k, v)| (sled::IVec::from(&k[1..]), v)))
    }

    /// The records whose keys start with `sub`, keys without the prefix.
    pub(super) fn scan(
        &self,
        sub: &[u8],
    ) -> impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + use<> {
        self.tree
            .scan_prefix(self.key(sub))
            .map(|r| r.map(|(k, v)| (sled::IVec::from(&k[1..]), v)))
    }

    /// Every record, keys without the prefix.
    pub(super) fn iter(
        &self,
    ) -> impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + use<> {
        self.tree
            .scan_prefix([self.prefix])
            .map(|r| r.map(|(k, v)| (sled::IVec::from(&k[1..]), v)))
    }

    pub(super) fn put(&self, b: &mut sled::Batch, k: &[u8], v: impl Into<sled::IVec>) {
        b.insert(self.key(k), v.into());
    }

    pub(super) fn del(&self, b: &mut sled::Batch, k: &[u8]) {
        b.remove(self.key(k));
    }
}

impl Trees {
    /// Applies `batch` atomically (all of it or nothing), then frees what
    /// sled retired on this thread while applying it
    /// ([`release_retired`](super::release_retired)).
    pub(super) fn apply(&self, batch: sled::Batch) -> sled::Result<()> {
        let applied = self.all.apply_batch(batch);
        super::release_retired();
        applied
    }
}

pub(super) struct Trees {
    /// The one tree every table lives in.
    pub(super) all: Tree,
    pub(super) meta: Table,
    pub(super) blocks: Table,
    pub(super) commits: Table,
    pub(super) height_hash: Table,
    pub(super) hash_height: Table,
    pub(super) tx_index: Table,
    pub(super) state: Table,
    pub(super) tx_runs: Table,
}
