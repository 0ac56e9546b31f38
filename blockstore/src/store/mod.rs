//! [`BlockStore`]: the synchronous store over sled.
//!
//! The store is one module per concern, each with its own `impl
//! BlockStore`:
//!
//! - `schema`: the on-disk layout (one sled tree, a one-byte prefix per
//!   table; the record table is documented there), the meta keys, the
//!   encodings of [`Best`] and [`TxLocation`] records, and the format
//!   constants ([`FORMAT`], [`MAX_STORED_BLOCK`]).
//! - `open`: [`BlockStore::open`] / [`BlockStore::open_with`]: opening
//!   sled, writing a new store's genesis records, checking an existing
//!   store's format, chain, genesis and best record.
//! - `write`: [`BlockStore::commit`] / [`BlockStore::commit_opts`],
//!   [`BlockStore::execute_block`], [`BlockStore::apply_block`],
//!   [`BlockStore::apply_blocks`] (block sync), [`BlockStore::index_txs`]
//!   and [`BlockStore::flush`].
//! - `txruns`: the tx index as sorted runs, its lookups and
//!   [`BlockStore::compact_tx_index`].
//! - `read`: [`BlockStore::best`], blocks by height or hash and in ranges,
//!   commit infos, the tx index, accounts, state entries, the accessors,
//!   and the [`StateReader`](kite_app::StateReader) impl over the
//!   committed state.
//!
//! This module holds the [`BlockStore`] struct, its [`StoreConfig`] and
//! the error constructor the others share.
//!
//! ## The tx index may lag the chain
//!
//! The tx index is derived data: a commit of a single block writes its
//! index run (see `txruns`) in the same batch when the index is caught
//! up, but block sync's batch applies ([`BlockStore::apply_blocks`])
//! leave it out, so that a node reaches the chain's tip first. [`BlockStore::index_txs`]
//! then catches the index up, a bounded step at a time, each step one
//! atomic batch with the `tx_indexed` record, so a crash at any point
//! leaves a consistent index that the next step resumes.
//! [`BlockStore::tx_indexed`] says how far it is; a tx of a later block is
//! not found by [`BlockStore::tx_location`] until the index gets there.

mod open;
mod read;
mod schema;
mod txruns;
mod write;

pub use read::MAX_RANGE_BLOCKS;
pub use schema::{Best, FORMAT, MAX_STORED_BLOCK, TxLocation};
pub use txruns::{CHUNK_ENTRIES, ENTRY_BYTES, MERGE_BATCH_CHUNKS};
pub use write::{ApplyOutcome, INDEX_STEP_BLOCKS, INDEX_STEP_TXS, IndexProgress};

use crate::durable::Syncer;
use crate::error::StoreError;
use kite_app::App;
use kite_types::Genesis;
use parking_lot::{Mutex, RwLock};
use schema::Trees;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

/// Hands what this thread retired inside sled to the epoch collector and
/// lets the collector free what no thread can still see.
///
/// sled 0.34 frees its replaced pages and its write buffers (one log
/// segment each, 8 MiB in this store) through crossbeam-epoch: an object
/// is retired into a bag of the thread that retired it, and the bag goes
/// to the collector only once it holds 64 objects. Every write of a batch
/// retires a buffer or two, so a thread that wrote some MiB and then went
/// quiet (the writer after a load, a blocking-pool thread after an index
/// merge) kept several segments alive for as long as it lived: heaptrack
/// found nine of them (72 MiB) live on a validator 15 s after a load. So
/// every write and every read through the store calls this when it is
/// done; it costs a pin and, when the bag is not empty, a push and a
/// bounded collection step.
pub(crate) fn release_retired() {
    crossbeam_epoch::pin().flush();
}

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
    /// Where [`crate::StoreHandle`] runs the writes.
    pub writer: Writer,
}

/// Where [`crate::StoreHandle`] runs the store's writes, one at a time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Writer {
    /// A dedicated OS thread (production): writes never wait for a slot
    /// of tokio's blocking pool.
    #[default]
    Thread,
    /// A task that runs each write on tokio's blocking pool. Under tokio's
    /// paused time (the node's deterministic tests) the runtime does not
    /// move the clock while a blocking task runs, so a commit takes no
    /// simulated time; with a thread of its own it could take seconds.
    BlockingPool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            durable: true,
            cache_capacity: 256 * 1024 * 1024,
            writer: Writer::Thread,
        }
    }
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
    /// The tx index's live runs (see `txruns` for who locks it when).
    runs: RwLock<std::sync::Arc<txruns::Runs>>,
    /// Moves on each time a merge publishes (see `txruns`).
    runs_generation: AtomicU64,
    /// One tx index merge at a time.
    compacting: Mutex<()>,
}

impl std::fmt::Debug for BlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockStore")
            .field("path", &self.path)
            .field("chain_id", &self.genesis.chain_id)
            .finish()
    }
}

impl BlockStore {
    /// A [`StoreError::Corrupt`] naming this store.
    fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }
}
