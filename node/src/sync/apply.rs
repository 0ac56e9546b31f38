//! Writing synced blocks: the applier hands the engine's checked batches
//! to the store's writer thread one after the other, in order, and passes
//! what happened back to the driver; the flusher makes group-committed
//! blocks durable off the driver and off the writer thread, so commits go
//! on meanwhile.
//!
//! [`SyncWriter`] is the driver's side of both, with the bookkeeping of
//! what is not durable yet: during block sync commits are fsynced together
//! after [`SYNC_FLUSH_BLOCKS`] blocks or [`SYNC_FLUSH_EVERY`], whichever
//! comes first, and when sync ends; and no promise record may become
//! durable before the blocks below it ([`SyncWriter::make_durable`]).

use crate::context::Shared;
use kite_blockstore::{ApplyOutcome, StoreError};
use kite_types::{Block, CommitInfo};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// During block sync, commits are fsynced together: after this many
/// blocks...
pub const SYNC_FLUSH_BLOCKS: u32 = 256;
/// ...or this long, whichever comes first, and when sync ends.
pub const SYNC_FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Most batches queued for the applier; the engine keeps fewer blocks than
/// this in flight, so queueing never waits.
const APPLY_QUEUE: usize = kite_consensus::engine::MAX_APPLYING;

/// What the applier reports for one batch.
pub type Applied = Result<ApplyOutcome, StoreError>;

/// The driver's side of block sync's writes.
pub struct SyncWriter {
    shared: Arc<Shared>,
    apply_tx: mpsc::Sender<Vec<(Block, CommitInfo)>>,
    flush_tx: mpsc::Sender<()>,
    applier: JoinHandle<()>,
    flusher: JoinHandle<()>,
    /// Sync commits not yet fsynced, and since when.
    unflushed: u32,
    unflushed_since: Option<Instant>,
    /// Blocks were committed without an fsync and no flush this writer
    /// waited for has finished since.
    not_durable: bool,
}

/// The batch queue is full (cannot happen: the engine keeps fewer batches
/// in flight) or the applier stopped.
#[derive(Debug, thiserror::Error)]
#[error("block sync's apply queue is full or closed")]
pub struct QueueFull;

impl SyncWriter {
    /// Starts the applier and the flusher; returns the writer and the
    /// applier's reports.
    pub fn start(shared: Arc<Shared>) -> (SyncWriter, mpsc::Receiver<Applied>) {
        let (apply_tx, apply_rx) = mpsc::channel(APPLY_QUEUE);
        let (done_tx, done_rx) = mpsc::channel(APPLY_QUEUE);
        let (flush_tx, flush_rx) = mpsc::channel(1);
        let applier = shared
            .stop
            .spawn(applier(shared.clone(), apply_rx, done_tx));
        let flusher = shared.stop.spawn(flusher(shared.clone(), flush_rx));
        let w = SyncWriter {
            shared,
            apply_tx,
            flush_tx,
            applier,
            flusher,
            unflushed: 0,
            unflushed_since: None,
            not_durable: false,
        };
        (w, done_rx)
    }

    /// Queues a checked batch for the store, in order.
    pub fn apply(&self, blocks: Vec<(Block, CommitInfo)>) -> Result<(), QueueFull> {
        self.apply_tx.try_send(blocks).map_err(|_| QueueFull)
    }

    /// `n` blocks were committed without an fsync.
    pub fn committed_unflushed(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.unflushed = self
            .unflushed
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        self.unflushed_since.get_or_insert_with(Instant::now);
        self.not_durable = true;
    }

    /// After a round of inputs: has the flusher make the unflushed blocks
    /// durable when sync ended, enough piled up or they waited long enough.
    /// A request already waiting covers these blocks too.
    pub fn maybe_flush(&mut self, syncing: bool) {
        if self.unflushed == 0 {
            return;
        }
        let due = !syncing
            || self.unflushed >= SYNC_FLUSH_BLOCKS
            || self
                .unflushed_since
                .is_some_and(|t| t.elapsed() >= SYNC_FLUSH_EVERY);
        if due {
            let _ = self.flush_tx.try_send(());
            self.unflushed = 0;
            self.unflushed_since = None;
        }
    }

    /// Makes every committed block durable now (before a promise record
    /// that names their height is written), when some may not be.
    pub async fn make_durable(&mut self) -> Result<(), StoreError> {
        if self.not_durable {
            self.shared.store.flush().await?;
            self.not_durable = false;
        }
        Ok(())
    }

    /// Lets the applier finish what the store was given, then makes it all
    /// durable.
    pub async fn close(self) {
        drop(self.apply_tx);
        drop(self.flush_tx);
        let _ = self.applier.await;
        let _ = self.flusher.await;
        if let Err(e) = self.shared.store.flush().await {
            tracing::error!(error = %e, "cannot make the last synced blocks durable");
        }
    }
}

/// Makes group-committed blocks durable on request; a failure halts the
/// node.
async fn flusher(shared: Arc<Shared>, mut requests: mpsc::Receiver<()>) {
    while requests.recv().await.is_some() {
        if let Err(e) = shared.store.flush().await {
            let reason = format!("cannot make synced blocks durable: {e}");
            tracing::error!(%reason);
            shared.stop.halt(reason);
            return;
        }
    }
}

/// Applies batches in order until the driver drops its sender.
async fn applier(
    shared: Arc<Shared>,
    mut batches: mpsc::Receiver<Vec<(Block, CommitInfo)>>,
    done: mpsc::Sender<Applied>,
) {
    while let Some(blocks) = batches.recv().await {
        let out = shared.store.apply_blocks(blocks, false).await;
        if done.send(out).await.is_err() {
            return;
        }
    }
}
