//! [`StoreHandle`]: the async face of the store for the node and the
//! consensus driver.
//!
//! The store has one owner for writes: a dedicated OS thread
//! (`kite-blockstore`; or a task over tokio's blocking pool, see
//! [`Writer`]) fed through a bounded channel, each request carrying a
//! oneshot for its reply. Commits and block executions run there, one at
//! a time, never on the async executor. Reads run on tokio's blocking pool
//! (`spawn_blocking`); sled makes each single read atomic with respect to
//! a commit, and blocks never change once written. The tx index's merges
//! ([`StoreHandle::compact_tx_index`]) also run there: they write only the
//! index's runs, under their own locks (see `store/txruns.rs`), and would
//! hold commits up on the writer thread.
//!
//! The writer thread ends when the last handle is dropped, after the
//! requests already queued.

use crate::error::StoreError;
use crate::store::{ApplyOutcome, Best, BlockStore, IndexProgress, TxLocation, Writer};
use kite_app::{ChangeSet, Executed};
use kite_types::{Account, Block, CommitInfo, Hash, PublicKey, Tx};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for the writer thread, at most.
pub const WRITE_QUEUE: usize = 64;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum WriteOp {
    Commit {
        block: Box<Block>,
        commit_info: CommitInfo,
        changes: ChangeSet,
        sync_now: bool,
        reply: Reply<()>,
    },
    Execute {
        block: Box<Block>,
        checked: kite_app::SigsChecked,
        reply: Reply<Executed>,
    },
    ApplyMany {
        blocks: Vec<(Block, CommitInfo)>,
        sync_now: bool,
        reply: oneshot::Sender<ApplyOutcome>,
    },
    Apply {
        block: Box<Block>,
        commit_info: CommitInfo,
        sigs_verified: bool,
        sync_now: bool,
        reply: Reply<Executed>,
    },
    IndexTxs {
        max_blocks: u64,
        max_txs: usize,
        reply: Reply<IndexProgress>,
    },
}

/// A cloneable async handle to a [`BlockStore`].
#[derive(Clone, Debug)]
pub struct StoreHandle {
    store: Arc<BlockStore>,
    writes: mpsc::Sender<WriteOp>,
}

impl StoreHandle {
    /// Opens the store (on the blocking pool) and starts its writer thread.
    pub async fn open(
        path: &std::path::Path,
        genesis: &kite_types::Genesis,
        config: crate::StoreConfig,
    ) -> Result<StoreHandle, StoreError> {
        let path = path.to_owned();
        let genesis = genesis.clone();
        let store =
            tokio::task::spawn_blocking(move || BlockStore::open_with(&path, &genesis, config))
                .await
                .map_err(|e| StoreError::Storage(format!("open task failed: {e}")))??;
        Self::spawn(store)
    }

    /// Starts the writer that owns `store` for writes, where the store's
    /// config says ([`Writer`]).
    pub fn spawn(store: BlockStore) -> Result<StoreHandle, StoreError> {
        let writer = store.config().writer;
        let store = Arc::new(store);
        let (writes, mut rx) = mpsc::channel::<WriteOp>(WRITE_QUEUE);
        let owner = Arc::clone(&store);
        match writer {
            Writer::Thread => {
                std::thread::Builder::new()
                    .name("kite-blockstore".into())
                    .spawn(move || {
                        while let Some(op) = rx.blocking_recv() {
                            run(&owner, op);
                        }
                        tracing::debug!("block store writer stopped");
                    })
                    .map_err(|e| {
                        StoreError::Storage(format!("cannot start the writer thread: {e}"))
                    })?;
            }
            Writer::BlockingPool => {
                tokio::spawn(async move {
                    while let Some(op) = rx.recv().await {
                        let owner = Arc::clone(&owner);
                        // A panic in a write drops its reply: the caller
                        // sees the store closed, as with the thread.
                        let _ = tokio::task::spawn_blocking(move || run(&owner, op)).await;
                    }
                    tracing::debug!("block store writer stopped");
                });
            }
        }
        Ok(StoreHandle { store, writes })
    }

    /// The store itself, for synchronous use on a blocking thread.
    pub fn store(&self) -> &Arc<BlockStore> {
        &self.store
    }

    async fn write<T>(&self, op: impl FnOnce(Reply<T>) -> WriteOp) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(op(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&BlockStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let read = f(&store);
            // A read can split or merge sled nodes, which writes.
            crate::store::release_retired();
            read
        })
        .await
        .map_err(|e| StoreError::Storage(format!("read task failed: {e}")))?
    }

    /// Commits a block with its commit info and state changes (see
    /// [`BlockStore::commit`]); returns once durable.
    pub async fn commit(
        &self,
        block: Block,
        commit_info: CommitInfo,
        changes: ChangeSet,
    ) -> Result<(), StoreError> {
        self.commit_opts(block, commit_info, changes, true).await
    }

    /// [`StoreHandle::commit`], with the fsync deferred to the next
    /// [`StoreHandle::flush`] when `sync_now` is false (see
    /// [`BlockStore::commit_opts`]).
    pub async fn commit_opts(
        &self,
        block: Block,
        commit_info: CommitInfo,
        changes: ChangeSet,
        sync_now: bool,
    ) -> Result<(), StoreError> {
        self.write(|reply| WriteOp::Commit {
            block: Box::new(block),
            commit_info,
            changes,
            sync_now,
            reply,
        })
        .await
    }

    /// Makes every commit so far durable (flush + fsync), on the blocking
    /// pool: commits go on meanwhile.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.read(|s| s.flush()).await
    }

    /// Executes a block on the committed state without writing (see
    /// [`BlockStore::execute_block`]).
    pub async fn execute_block(
        &self,
        block: Block,
        checked: impl Into<kite_app::SigsChecked>,
    ) -> Result<Executed, StoreError> {
        let checked = checked.into();
        self.write(|reply| WriteOp::Execute {
            block: Box::new(block),
            checked,
            reply,
        })
        .await
    }

    /// Executes and commits a block whose commit info is known (see
    /// [`BlockStore::apply_block`]).
    pub async fn apply_block(
        &self,
        block: Block,
        commit_info: CommitInfo,
        sigs_verified: bool,
    ) -> Result<Executed, StoreError> {
        self.apply_block_opts(block, commit_info, sigs_verified, true)
            .await
    }

    /// [`StoreHandle::apply_block`], with the fsync deferred to the next
    /// [`StoreHandle::flush`] when `sync_now` is false (block sync).
    pub async fn apply_block_opts(
        &self,
        block: Block,
        commit_info: CommitInfo,
        sigs_verified: bool,
        sync_now: bool,
    ) -> Result<Executed, StoreError> {
        self.write(|reply| WriteOp::Apply {
            block: Box::new(block),
            commit_info,
            sigs_verified,
            sync_now,
            reply,
        })
        .await
    }

    /// Applies consecutive blocks whose signatures are checked (see
    /// [`BlockStore::apply_blocks`]) on the writer thread. Requests are
    /// carried out in the order they are made.
    pub async fn apply_blocks(
        &self,
        blocks: Vec<(Block, CommitInfo)>,
        sync_now: bool,
    ) -> Result<ApplyOutcome, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(WriteOp::ApplyMany {
                blocks,
                sync_now,
                reply: tx,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// One step of catching the tx index up (see
    /// [`BlockStore::index_txs`]), on the writer thread between commits.
    pub async fn index_txs(
        &self,
        max_blocks: u64,
        max_txs: usize,
    ) -> Result<IndexProgress, StoreError> {
        self.write(|reply| WriteOp::IndexTxs {
            max_blocks,
            max_txs,
            reply,
        })
        .await
    }

    /// One merge of the tx index's runs (see
    /// [`BlockStore::compact_tx_index`]), on tokio's blocking pool rather
    /// than the writer thread, so commits go on meanwhile. Returns whether
    /// it merged.
    pub async fn compact_tx_index(&self) -> Result<bool, StoreError> {
        self.read(|s| s.compact_tx_index()).await
    }

    /// How many runs the tx index has (see
    /// [`BlockStore::tx_index_runs`]); no I/O.
    pub fn tx_index_runs(&self) -> usize {
        self.store.tx_index_runs()
    }

    /// Height up to which every committed tx is indexed (see
    /// [`BlockStore::tx_indexed`]); no I/O.
    pub fn tx_indexed(&self) -> u64 {
        self.store.tx_indexed()
    }

    /// The tip of the committed chain.
    pub async fn best(&self) -> Result<Best, StoreError> {
        self.read(|s| s.best()).await
    }

    /// The block at `height`.
    pub async fn block_by_height(&self, height: u64) -> Result<Option<Block>, StoreError> {
        self.read(move |s| s.block_by_height(height)).await
    }

    /// The hash of the block at `height` (see [`BlockStore::hash_at`]).
    pub async fn hash_at(&self, height: u64) -> Result<Option<Hash>, StoreError> {
        self.read(move |s| s.hash_at(height)).await
    }

    /// The block with this hash.
    pub async fn block_by_hash(&self, hash: Hash) -> Result<Option<Block>, StoreError> {
        self.read(move |s| s.block_by_hash(&hash)).await
    }

    /// Blocks `from..=to`, bounded by `max_bytes` (see
    /// [`BlockStore::blocks_range`]).
    pub async fn blocks_range(
        &self,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<Vec<Block>, StoreError> {
        self.read(move |s| s.blocks_range(from, to, max_bytes))
            .await
    }

    /// Up to `count` blocks from `from` with their commit infos, in one
    /// read (see [`BlockStore::blocks_with_commits`]).
    pub async fn blocks_with_commits(
        &self,
        from: u64,
        count: u64,
        max_bytes: usize,
    ) -> Result<Vec<(Block, CommitInfo)>, StoreError> {
        self.read(move |s| s.blocks_with_commits(from, count, max_bytes))
            .await
    }

    /// The commit info at `height`.
    pub async fn commit_info(&self, height: u64) -> Result<Option<CommitInfo>, StoreError> {
        self.read(move |s| s.commit_info(height)).await
    }

    /// Where a committed tx is.
    pub async fn tx_location(&self, hash: Hash) -> Result<Option<TxLocation>, StoreError> {
        self.read(move |s| s.tx_location(&hash)).await
    }

    /// A committed tx and where it is.
    pub async fn tx_by_hash(&self, hash: Hash) -> Result<Option<(Tx, TxLocation)>, StoreError> {
        self.read(move |s| s.tx_by_hash(&hash)).await
    }

    /// A committed account.
    pub async fn account(&self, pk: PublicKey) -> Result<Account, StoreError> {
        self.read(move |s| s.account(&pk)).await
    }

    /// A committed kv value.
    pub async fn kv_get(
        &self,
        owner: PublicKey,
        key: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(move |s| s.kv_get(&owner, &key)).await
    }
}

/// Runs one write and answers it.
fn run(owner: &BlockStore, op: WriteOp) {
    match op {
        WriteOp::Commit {
            block,
            commit_info,
            changes,
            sync_now,
            reply,
        } => {
            let _ = reply.send(owner.commit_opts(&block, &commit_info, &changes, sync_now));
        }
        WriteOp::ApplyMany {
            blocks,
            sync_now,
            reply,
        } => {
            let _ = reply.send(owner.apply_blocks(blocks, sync_now));
        }
        WriteOp::Execute {
            block,
            checked,
            reply,
        } => {
            let _ = reply.send(owner.execute_block(&block, checked));
        }
        WriteOp::Apply {
            block,
            commit_info,
            sigs_verified,
            sync_now,
            reply,
        } => {
            let _ =
                reply.send(owner.apply_block_opts(&block, &commit_info, sigs_verified, sync_now));
        }
        WriteOp::IndexTxs {
            max_blocks,
            max_txs,
            reply,
        } => {
            let _ = reply.send(owner.index_txs(max_blocks, max_txs));
        }
    }
}
