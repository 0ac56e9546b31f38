//! [`BlockStore`]: the synchronous store over sled.
//!
//! Everything is in ONE sled tree, so that a block's whole commit is one
//! atomic `apply_batch` (sled's multi-tree transactions read every key
//! before writing it, which cost more than the writes). Each table below
//! is a key prefix of one byte (`meta` 0, `blocks` 1, `commits` 2,
//! `height_hash` 3, `hash_height` 4, `tx_index` 5, `state` 6). Records
//! (integers big-endian, so byte order is height order):
//!
//! | table | key | value |
//! |------|-----|-------|
//! | `meta` | `format` | `kite-blockstore/2` |
//! | `meta` | `chain_id` | the chain id |
//! | `meta` | `genesis_hash` | 32 bytes ([`Genesis::hash`]) |
//! | `meta` | `best` | `be64(height) \|\| block hash \|\| app hash` (72 bytes) |
//! | `meta` | `tx_indexed` | `be64(height)`: the txs of every block up to it are in `tx_index` |
//! | `blocks` | `be64(height)` | encoded `Block` |
//! | `commits` | `be64(height)` | encoded `CommitInfo` |
//! | `height_hash` | `be64(height)` | block hash |
//! | `hash_height` | block hash | `be64(height)` |
//! | `tx_index` | tx hash | `be64(height) \|\| be32(index in block)` |
//! | `state` | [`StateKey`] bytes | value (see `kite_app::state`) |
//!
//! Before the first block, `best` is `(initial_height - 1, Hash::ZERO,
//! genesis app hash)`.
//!
//! ## The tx index may lag the chain
//!
//! The tx index is derived data: a commit of a single block writes its
//! index records in the same batch when the index is caught up, but block
//! sync's batch applies ([`BlockStore::apply_blocks`]) leave them out. The
//! random-key inserts of the index were the largest cost of a replay, and
//! a node should reach the chain's tip first. [`BlockStore::index_txs`]
//! then catches the index up, a bounded step at a time, each step one
//! atomic batch with the `tx_indexed` record, so a crash at any point
//! leaves a consistent index that the next step resumes.
//! [`BlockStore::tx_indexed`] says how far it is; a tx of a later block is
//! not found by [`BlockStore::tx_location`] until the index gets there.

use crate::durable::Syncer;
use crate::error::StoreError;
use kite_app::{App, ChangeSet, Executed, StateError, StateKey, StateReader};
use kite_types::codec;
use kite_types::genesis::MAX_VALIDATORS;
use kite_types::{Account, Block, CommitInfo, Genesis, Hash, PublicKey, Tx, proto};
use parking_lot::Mutex;
use prost::Message;
use sled::Tree;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The format this build writes and reads.
pub const FORMAT: &[u8] = b"kite-blockstore/2";
/// Largest block this store decodes (64 MiB protocol limit plus slack).
pub const MAX_STORED_BLOCK: usize = 65 * 1024 * 1024;
/// Most blocks one [`BlockStore::blocks_range`] call returns.
pub const MAX_RANGE_BLOCKS: u64 = 1024;

const META_FORMAT: &[u8] = b"format";
const META_CHAIN: &[u8] = b"chain_id";
const META_GENESIS: &[u8] = b"genesis_hash";
const META_BEST: &[u8] = b"best";
const META_TX_INDEXED: &[u8] = b"tx_indexed";

/// Most blocks one [`BlockStore::index_txs`] step reads.
pub const INDEX_STEP_BLOCKS: u64 = 256;
/// A [`BlockStore::index_txs`] step ends after the block that takes it to
/// this many txs.
pub const INDEX_STEP_TXS: usize = 2_048;

/// Store options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Make every commit durable against power loss (flush + fsync, see
    /// the crate docs). On by default; tests may turn it off for speed
    /// (the last ~500 ms of commits may then be lost on a crash, whole
    /// blocks only).
    pub durable: bool,
    /// sled's page cache size in bytes.
    pub cache_capacity: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            durable: true,
            cache_capacity: 256 * 1024 * 1024,
        }
    }
}

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
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(72);
        v.extend_from_slice(&self.height.to_be_bytes());
        v.extend_from_slice(self.block_hash.as_bytes());
        v.extend_from_slice(self.app_hash.as_bytes());
        v
    }

    fn decode(b: &[u8]) -> Option<Best> {
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

/// Where a committed tx is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLocation {
    /// Height of its block.
    pub height: u64,
    /// Its position in the block.
    pub index: u32,
}

fn be64(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}

fn decode_location(b: &[u8]) -> Option<TxLocation> {
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
struct Table {
    tree: Tree,
    prefix: u8,
}

impl Table {
    fn key(&self, k: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + k.len());
        v.push(self.prefix);
        v.extend_from_slice(k);
        v
    }

    fn get(&self, k: impl AsRef<[u8]>) -> sled::Result<Option<sled::IVec>> {
        self.tree.get(self.key(k.as_ref()))
    }

    /// Records with keys `from..=to`, keys without the prefix.
    fn range(
        &self,
        from: &[u8],
        to: &[u8],
    ) -> impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + use<> {
        self.tree
            .range(self.key(from)..=self.key(to))
            .map(|r| r.map(|(k, v)| (sled::IVec::from(&k[1..]), v)))
    }

    /// Every record, keys without the prefix.
    fn iter(&self) -> impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + use<> {
        self.tree
            .scan_prefix([self.prefix])
            .map(|r| r.map(|(k, v)| (sled::IVec::from(&k[1..]), v)))
    }

    fn put(&self, b: &mut sled::Batch, k: &[u8], v: impl Into<sled::IVec>) {
        b.insert(self.key(k), v.into());
    }

    fn del(&self, b: &mut sled::Batch, k: &[u8]) {
        b.remove(self.key(k));
    }
}

struct Trees {
    /// The one tree every table lives in.
    all: Tree,
    meta: Table,
    blocks: Table,
    commits: Table,
    height_hash: Table,
    hash_height: Table,
    tx_index: Table,
    state: Table,
}

/// The block store: blocks, commit info, indexes and the committed app
/// state, in one sled database. All methods block (sled does I/O): call
/// them from a dedicated thread or `spawn_blocking`, or use
/// [`crate::StoreHandle`].
pub struct BlockStore {
    path: PathBuf,
    db: sled::Db,
    t: Trees,
    app: App,
    genesis: Genesis,
    config: StoreConfig,
    /// Serialises commits and executions (so an execution never reads a
    /// half-applied commit).
    commits: Mutex<()>,
    /// Makes commits durable; separate from `commits`, so a group flush
    /// on another thread does not hold commits up.
    syncer: Mutex<Option<Syncer>>,
    /// The `tx_indexed` record's height (written under `commits`).
    indexed: AtomicU64,
}

impl std::fmt::Debug for BlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockStore")
            .field("path", &self.path)
            .field("chain_id", &self.genesis.chain_id)
            .finish()
    }
}

/// Runs `f`, turning a panic inside sled (it has some on malformed files)
/// into an error.
fn no_panic<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "sled panicked".into())),
    }
}

impl BlockStore {
    /// Opens (or creates) the store at `path` for `genesis`'s chain, with
    /// the default config (durable commits).
    pub fn open(path: &Path, genesis: &Genesis) -> Result<BlockStore, StoreError> {
        Self::open_with(path, genesis, StoreConfig::default())
    }

    /// Opens (or creates) the store at `path`. A new store gets the genesis
    /// state and meta record in one atomic batch. An existing one must hold
    /// the same chain id and genesis hash and a consistent best record.
    pub fn open_with(
        path: &Path,
        genesis: &Genesis,
        config: StoreConfig,
    ) -> Result<BlockStore, StoreError> {
        let open_err = |detail: String| StoreError::Open {
            path: path.to_owned(),
            detail,
        };
        genesis.validate().map_err(|e| open_err(e.to_string()))?;
        std::fs::create_dir_all(path).map_err(|e| open_err(e.to_string()))?;
        let (db, t) = no_panic(|| {
            let db = open_sled(path, config.cache_capacity)?;
            let all = db.open_tree("kite").map_err(|e| e.to_string())?;
            let table = |prefix: u8| Table {
                tree: all.clone(),
                prefix,
            };
            let t = Trees {
                meta: table(0),
                blocks: table(1),
                commits: table(2),
                height_hash: table(3),
                hash_height: table(4),
                tx_index: table(5),
                state: table(6),
                all,
            };
            Ok((db, t))
        })
        .map_err(open_err)?;
        let syncer = if config.durable {
            Some(Syncer::new(path)?)
        } else {
            None
        };
        let store = BlockStore {
            path: path.to_owned(),
            db,
            t,
            app: App::new(genesis),
            genesis: genesis.clone(),
            config,
            commits: Mutex::new(()),
            syncer: Mutex::new(syncer),
            indexed: AtomicU64::new(0),
        };
        store.init_or_check()?;
        Ok(store)
    }

    fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    fn init_or_check(&self) -> Result<(), StoreError> {
        let legacy = ["meta", "blocks", "state"].iter().any(|n| {
            self.db
                .tree_names()
                .iter()
                .any(|t| t.as_ref() == n.as_bytes())
        });
        if legacy {
            return Err(self.corrupt(
                "a store of an older Kite format (kite-blockstore/1); this build reads \
                 kite-blockstore/2: re-sync the node into a fresh home",
            ));
        }
        match self.t.meta.get(META_FORMAT)? {
            None => self.init(),
            Some(f) if f.as_ref() == FORMAT => self.check(),
            Some(f) => Err(self.corrupt(format!(
                "format {:?}, this build reads {:?}",
                String::from_utf8_lossy(&f),
                String::from_utf8_lossy(FORMAT)
            ))),
        }
    }

    /// Writes the genesis state and meta record into an empty store.
    fn init(&self) -> Result<(), StoreError> {
        if self.t.all.iter().next().is_some() {
            return Err(self.corrupt("data without a format record (not a Kite store?)"));
        }
        let best = Best {
            height: self.genesis.initial_height.saturating_sub(1),
            block_hash: Hash::ZERO,
            app_hash: self.app.genesis_app_hash(),
        };
        let changes = self.app.genesis_changes();
        let chain = self.genesis.chain_id.as_bytes();
        let ghash = self.genesis.hash();
        let mut b = sled::Batch::default();
        for (k, v) in changes.iter() {
            if let Some(v) = v {
                self.t.state.put(&mut b, k.as_bytes(), v.as_slice());
            }
        }
        self.t.meta.put(&mut b, META_CHAIN, chain);
        self.t.meta.put(&mut b, META_GENESIS, ghash.as_bytes());
        self.t.meta.put(&mut b, META_BEST, best.encode());
        self.t
            .meta
            .put(&mut b, META_TX_INDEXED, &best.height.to_be_bytes());
        self.t.meta.put(&mut b, META_FORMAT, FORMAT);
        // One atomic batch: all of it or nothing.
        self.t.all.apply_batch(b)?;
        self.make_durable()?;
        self.indexed.store(best.height, Ordering::SeqCst);
        tracing::info!(path = %self.path.display(), chain = %self.genesis.chain_id, "created block store");
        Ok(())
    }

    /// Checks chain, genesis and the best record of an existing store.
    fn check(&self) -> Result<(), StoreError> {
        let chain = self
            .t
            .meta
            .get(META_CHAIN)?
            .ok_or_else(|| self.corrupt("no chain id record"))?;
        if chain.as_ref() != self.genesis.chain_id.as_bytes() {
            return Err(StoreError::WrongChain {
                path: self.path.clone(),
                expected: self.genesis.chain_id.clone(),
                found: String::from_utf8_lossy(&chain).into_owned(),
            });
        }
        let found = self
            .t
            .meta
            .get(META_GENESIS)?
            .and_then(|g| Hash::from_slice(&g))
            .ok_or_else(|| self.corrupt("no valid genesis hash record"))?;
        let expected = self.genesis.hash();
        if found != expected {
            return Err(StoreError::WrongGenesis {
                path: self.path.clone(),
                expected,
                found,
            });
        }
        let best = self.best()?;
        // Stores written before the index could lag have no record: their
        // index was always complete.
        let indexed = match self.t.meta.get(META_TX_INDEXED)? {
            None => best.height,
            Some(raw) => {
                be64(&raw).ok_or_else(|| self.corrupt("tx_indexed record is malformed"))?
            }
        };
        if indexed > best.height {
            return Err(self.corrupt(format!(
                "the tx index claims height {indexed}, past the best block {}",
                best.height
            )));
        }
        self.indexed.store(indexed, Ordering::SeqCst);
        let base = self.genesis.initial_height.saturating_sub(1);
        if best.height < base {
            return Err(self.corrupt(format!(
                "best height {} is below the genesis height {base}",
                best.height
            )));
        }
        if best.height == base {
            if best.block_hash != Hash::ZERO || best.app_hash != self.app.genesis_app_hash() {
                return Err(self.corrupt("best record at genesis does not match the genesis"));
            }
            return Ok(());
        }
        let block = self
            .block_by_height(best.height)?
            .ok_or_else(|| self.corrupt(format!("best block {} is missing", best.height)))?;
        if block.hash() != best.block_hash || block.height() != best.height {
            return Err(self.corrupt(format!(
                "block at height {} hashes to {}, the best record says {}",
                best.height,
                block.hash(),
                best.block_hash
            )));
        }
        let ci = self
            .commit_info(best.height)?
            .ok_or_else(|| self.corrupt(format!("commit info {} is missing", best.height)))?;
        if ci.app_hash != best.app_hash {
            return Err(self.corrupt(format!(
                "commit info at height {} says app hash {}, the best record says {}",
                best.height, ci.app_hash, best.app_hash
            )));
        }
        if self
            .t
            .hash_height
            .get(best.block_hash.as_bytes())?
            .as_deref()
            != Some(&best.height.to_be_bytes()[..])
        {
            return Err(self.corrupt("hash index does not hold the best block"));
        }
        tracing::info!(path = %self.path.display(), height = best.height, hash = %best.block_hash.short(), tx_indexed = indexed, "opened block store");
        Ok(())
    }

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
        if index {
            self.put_tx_index(&mut b, block);
            self.t
                .meta
                .put(&mut b, META_TX_INDEXED, &new_best.height.to_be_bytes());
        }
        self.put_changes(&mut b, changes);
        self.t.meta.put(&mut b, META_BEST, new_best.encode());
        // One atomic batch: the block, its indexes, its state and the new
        // best record land together or not at all.
        self.t.all.apply_batch(b)?;
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
    /// indexes) to a batch; the tx index is [`BlockStore::put_tx_index`].
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

    /// Adds the tx index records of a block's txs to a batch.
    fn put_tx_index(&self, b: &mut sled::Batch, block: &Block) {
        let hkey = block.height().to_be_bytes();
        for (i, tx) in block.txs().iter().enumerate() {
            let mut loc = Vec::with_capacity(12);
            loc.extend_from_slice(&hkey);
            loc.extend_from_slice(&u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes());
            self.t.tx_index.put(b, tx.hash().as_bytes(), loc);
        }
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

    fn make_durable(&self) -> Result<(), StoreError> {
        if let Some(s) = self.syncer.lock().as_mut() {
            s.sync(&self.db)?;
        }
        Ok(())
    }

    /// Executes `block` on the committed state (nothing is written; see
    /// [`App::execute_block`]). Serialised with commits, so it never sees
    /// a half-applied commit.
    pub fn execute_block(
        &self,
        block: &Block,
        sigs_verified: bool,
    ) -> Result<Executed, StoreError> {
        let _serial = self.commits.lock();
        let best = self.best()?;
        Ok(self
            .app
            .execute_block(self, best.app_hash, block, sigs_verified)?)
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
    /// index may lag the chain" above).
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
            .all
            .apply_batch(batch)
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

    /// Height up to which every committed tx is in the tx index (equal to
    /// the best height once the index has caught up).
    pub fn tx_indexed(&self) -> u64 {
        self.indexed.load(Ordering::SeqCst)
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
        for h in from + 1..=to {
            let block = self.block_by_height(h)?.ok_or_else(|| {
                self.corrupt(format!("block {h} is missing below the best block {best}"))
            })?;
            self.put_tx_index(&mut batch, &block);
            progress.indexed = h;
            progress.txs += block.txs().len();
            if progress.txs >= max_txs {
                break;
            }
        }
        self.t
            .meta
            .put(&mut batch, META_TX_INDEXED, &progress.indexed.to_be_bytes());
        self.t.all.apply_batch(batch)?;
        self.indexed.store(progress.indexed, Ordering::SeqCst);
        Ok(progress)
    }

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

    /// Where the committed tx with this hash is; `None` also for a tx of a
    /// block above [`BlockStore::tx_indexed`] (not indexed yet).
    pub fn tx_location(&self, hash: &Hash) -> Result<Option<TxLocation>, StoreError> {
        match self.t.tx_index.get(hash.as_bytes())? {
            None => Ok(None),
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

    /// Flushes and (when durable) fsyncs everything written so far. Safe
    /// to call from any thread, also while commits go on.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.make_durable()
    }
}

/// How long [`open_sled`] waits for the database lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// sled's log segment size. sled writes any page image over a quarter of a
/// segment (less a header) to a blob file of its own; with the default
/// 512 KiB, leaf pages holding a few blocks of 100 txs cross it and every
/// rewrite of them costs a file creation. 8 MiB keeps them in the log.
/// Fixed when a store is created: sled refuses to open a store made with
/// another size.
const SEGMENT_SIZE: usize = 8 * 1024 * 1024;

/// Opens sled, waiting up to [`LOCK_WAIT`] for its file lock: sled's
/// background threads release it a little after the previous `Db` of the
/// same path in this process is dropped.
fn open_sled(path: &Path, cache_capacity: u64) -> Result<sled::Db, String> {
    let start = std::time::Instant::now();
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .segment_size(SEGMENT_SIZE)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(e) => {
                let msg = e.to_string();
                if !msg.contains("could not acquire lock") {
                    return Err(msg);
                }
                if start.elapsed() >= LOCK_WAIT {
                    return Err(format!(
                        "{msg} (is another Kite node using this directory?)"
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
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

impl StateReader for BlockStore {
    fn get(&self, key: &StateKey) -> Result<Option<Vec<u8>>, StateError> {
        self.t
            .state
            .get(key.as_bytes())
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| StateError::Storage(e.to_string()))
    }
}
