//! Block sync's home in the node. The planner (which heights to ask whom,
//! back-offs, the window) is `kite_consensus::sync`, inside the engine;
//! the engine asks for ranges with `Output::RequestBlocks` and hands
//! checked ranges to the store with `Output::ApplyBlocks`. Here:
//!
//! - [`fetch`]: fetching ranges from peers over `/kite/blk`, checking their
//!   proofs on blocking threads, feeding the good blocks to the engine and
//!   naming the peer that served a bad one;
//! - [`apply`]: the applier, which hands the engine's batches to the
//!   store's writer thread in order, and the grouped fsync of synced
//!   blocks (the flusher);
//! - [`index`]: the tx index catch-up that block sync leaves for later;
//! - [`Progress`]: the sync progress log.

pub mod apply;
pub mod fetch;
pub mod index;

use std::time::{Duration, Instant};

/// Logs block sync's progress every `every`.
#[derive(Debug)]
pub struct Progress {
    every: Duration,
    last_log: Option<Instant>,
    height_at_log: u64,
    txs_since_log: u64,
}

impl Progress {
    /// A log every `every` (`sync.log_interval`).
    pub fn new(every: Duration) -> Progress {
        Progress {
            every,
            last_log: None,
            height_at_log: 0,
            txs_since_log: 0,
        }
    }

    /// Counts committed txs toward the rate.
    pub fn txs(&mut self, n: u64) {
        self.txs_since_log += n;
    }

    /// Called while syncing: logs the start, then progress every `every`.
    pub fn syncing(&mut self, height: u64, target: u64, step: &str, in_flight: usize) {
        let now = Instant::now();
        let Some(last) = self.last_log else {
            self.last_log = Some(now);
            self.height_at_log = height;
            self.txs_since_log = 0;
            tracing::info!(height, target, "block sync started");
            return;
        };
        let secs = now.duration_since(last).as_secs_f64();
        if secs < self.every.as_secs_f64() {
            return;
        }
        let blocks = height.saturating_sub(self.height_at_log);
        let bps = blocks as f64 / secs;
        let tps = self.txs_since_log as f64 / secs;
        let eta = if bps > 0.0 {
            format!("{:.0}s", target.saturating_sub(height) as f64 / bps)
        } else {
            "unknown".into()
        };
        tracing::info!(height, target, blocks_per_s = format!("{bps:.0}"), tx_per_s = format!("{tps:.0}"), %eta, step, in_flight, "block sync");
        self.last_log = Some(now);
        self.height_at_log = height;
        self.txs_since_log = 0;
    }
}
