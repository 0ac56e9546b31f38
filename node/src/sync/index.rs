//! The tx indexer: catches the store's tx index up with the chain after
//! block sync left it behind (block sync's batch applies skip the index;
//! see `kite_blockstore`'s "The tx index may lag the chain"), and merges
//! the index's runs (`BlockStore::compact_tx_index`) off the commit path,
//! at most [`MERGES_PER_TICK`] per tick, on tokio's blocking pool while
//! commits go on.
//!
//! It waits while the node syncs, so that sync keeps the CPU, then indexes
//! in bounded steps on the store's writer thread, between commits, with a
//! merge after each step. Commits index their own txs once the index has
//! caught up; after that it only merges the runs they add. Progress goes
//! to the log, the `kite_tx_indexed_height` and `kite_tx_index_runs`
//! metrics and the `status` RPC (`tx_indexed`).

use crate::context::{Shared, to_i64};
use crate::state::StateRx;
use kite_blockstore::{INDEX_STEP_BLOCKS, INDEX_STEP_TXS, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often an idle indexer looks whether the index fell behind.
const POLL: Duration = Duration::from_millis(250);
/// How long it waits after a storage error before it tries again.
const RETRY: Duration = Duration::from_secs(10);
/// Most run merges per tick. A merge streams (its memory is a few batches
/// of `kite_blockstore::MERGE_BATCH_CHUNKS` chunks, whatever the runs'
/// sizes) and takes about a microsecond per entry; a chain at 15,000 tx/s
/// needs a few merges a second.
pub const MERGES_PER_TICK: usize = 8;

/// Runs until the node stops.
pub async fn run(ctx: Arc<Shared>, state: StateRx) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ctx.metrics.tx_indexed.set(to_i64(ctx.store.tx_indexed()));
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let work = async {
            if behind(&ctx, &state).is_some() {
                catch_up(&ctx, &state).await?;
            }
            compact(&ctx, &state).await
        };
        match work.await {
            Ok(()) => {}
            Err(StoreError::Closed) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot index txs; trying again in {RETRY:?}");
                tokio::select! {
                    _ = ctx.stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

/// Up to [`MERGES_PER_TICK`] merges of the index's runs, while the node
/// does not sync.
async fn compact(ctx: &Shared, state: &StateRx) -> Result<(), StoreError> {
    for _ in 0..MERGES_PER_TICK {
        if state.borrow().syncing || ctx.stop.is_stopping() {
            break;
        }
        if !ctx.store.compact_tx_index().await? {
            break;
        }
    }
    ctx.metrics
        .tx_index_runs
        .set(to_i64(ctx.store.tx_index_runs() as u64));
    Ok(())
}

/// The committed height, when the index lags it and the node is not
/// syncing.
fn behind(ctx: &Shared, state: &StateRx) -> Option<u64> {
    let s = state.borrow();
    (!s.syncing && ctx.store.tx_indexed() < s.height).then_some(s.height)
}

/// Indexes step after step until the index has caught up, the node syncs
/// again or stops; logs progress at the sync log's pace.
async fn catch_up(ctx: &Shared, state: &StateRx) -> Result<(), StoreError> {
    let every = ctx.config.sync.log_interval;
    let start = Instant::now();
    let from = ctx.store.tx_indexed();
    let mut last_log = start;
    let mut txs = 0usize;
    tracing::info!(
        indexed = from,
        height = state.borrow().height,
        "tx index catching up"
    );
    while behind(ctx, state).is_some() && !ctx.stop.is_stopping() {
        let p = ctx
            .store
            .index_txs(INDEX_STEP_BLOCKS, INDEX_STEP_TXS)
            .await?;
        txs += p.txs;
        ctx.metrics.tx_indexed.set(to_i64(p.indexed));
        // Each step adds a run: merge as it goes, so that a long catch-up
        // does not pile runs up for lookups to read. A merge that fails
        // leaves the runs as they were; catching up goes on.
        if let Err(e) = ctx.store.compact_tx_index().await {
            tracing::warn!(error = %e, "cannot merge tx index runs");
        }
        if p.caught_up() {
            let secs = start.elapsed().as_secs_f64();
            tracing::info!(
                indexed = p.indexed,
                blocks = p.indexed.saturating_sub(from),
                txs,
                secs = format!("{secs:.1}"),
                tx_per_s = format!("{:.0}", txs as f64 / secs.max(1e-9)),
                "tx index caught up"
            );
            break;
        }
        if last_log.elapsed() >= every {
            last_log = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            tracing::info!(
                indexed = p.indexed,
                height = p.best,
                tx_per_s = format!("{:.0}", txs as f64 / secs.max(1e-9)),
                "tx index catching up"
            );
        }
    }
    Ok(())
}
