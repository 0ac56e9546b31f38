//! Kite block store on sled: blocks, commit info, indexes and app state,
//! committed atomically.
//!
//! Bird's-eye view:
//!
//! - [`BlockStore`] (synchronous, in [`store`]): one sled database whose
//!   single tree holds a table per record kind as a one-byte key prefix
//!   (blocks, commit info, height <-> hash indexes, tx index, app state,
//!   meta). It implements [`kite_app::StateReader`] over
//!   the committed state. The store is split by concern:
//!   `store/mod.rs` (the struct and its config), `store/schema.rs` (table
//!   prefixes, meta keys, record encodings, format constants: the on-disk
//!   layout is documented there), `store/open.rs` (open, create, the
//!   format/chain/genesis/best checks), `store/write.rs` (commit, execute,
//!   block sync's batch apply, tx index catch-up, flush),
//!   `store/txruns.rs` (the tx index as sorted runs, its lookups and
//!   merges) and `store/read.rs` (blocks, commit infos, txs, accounts,
//!   state).
//! - [`StoreHandle`] (async, in [`handle`]): what the node and the
//!   consensus driver use. Writes (commit, execute, block sync's batch
//!   apply) go to one dedicated writer thread through a bounded channel;
//!   reads, group flushes and the tx index's merges run on tokio's
//!   blocking pool. sled never runs on the async executor.
//!
//! # Guarantees
//!
//! **Atomicity.** [`BlockStore::commit`] writes the block, its commit info,
//! both height/hash indexes, the tx index, the state changes and the
//! `best` meta record (height, block hash, app hash) in ONE sled batch
//! (`apply_batch`) on the store's single tree, where each table is a key
//! prefix. sled writes a batch guarded by a batch manifest: on recovery an
//! incomplete batch is discarded whole; readers see a batch all or not at
//! all (sled's batch lock). After a crash at any point, reopening gives the state
//! before or after the block, never a mix. The crash test
//! (`tests/crash.rs`) SIGKILLs a committing process at random moments and
//! checks exactly this, plus that no acknowledged block is missing.
//!
//! **Durability.** With [`StoreConfig::durable`] (the default), `commit`
//! returns only after the commit is on stable storage: sled's `flush()`
//! (which on Linux only issues `sync_file_range`, flushing neither file
//! metadata nor the disk's write cache) followed by a real `fsync` of
//! sled's log file `db`, of every new blob file and the `blobs`
//! directory, and of the store directory (see [`durable`]). A commit that
//! returned `Ok` therefore survives a power loss, provided the disk honours
//! flush requests (no lying write cache) and the file system is mounted
//! with barriers (the default on ext4/xfs). With `durable: false` (tests,
//! tools) nothing is flushed per commit: sled's background flusher writes
//! its buffers every 500 ms, so a process crash or power loss may lose the
//! last commits (whole blocks, never part of one).
//!
//! **Group commit for block sync.** [`BlockStore::commit_opts`] /
//! [`StoreHandle::commit_opts`] commit atomically but leave the fsync
//! to the next [`BlockStore::flush`]. The node uses this only for blocks it
//! fetches while syncing (they are committed on the network already and can
//! be fetched again) and flushes every 256 blocks, every 500 ms and when
//! sync ends, on a thread of its own while commits go on; blocks it votes on or commits as leader are always fsynced
//! before the commit returns.
//!
//! **Consistency at open.** The best height and hash come from the `best`
//! meta record (no scan). [`BlockStore::open`] checks the format, chain id
//! and genesis hash and that the best block, its commit info and its index
//! entries agree with the record; any mismatch or undecodable record is a
//! [`StoreError`] naming the store and the problem, never a panic (sled's
//! own panics on malformed files are caught at open).

#![forbid(unsafe_code)]

pub mod durable;
pub mod error;
pub mod handle;
pub mod store;

pub use error::StoreError;
pub use handle::StoreHandle;
pub use store::{
    ApplyOutcome, Best, BlockStore, INDEX_STEP_BLOCKS, INDEX_STEP_TXS, IndexProgress, StoreConfig,
    TxLocation, Writer,
};
