//! The small immutable context every task of a running node shares:
//! genesis, configuration, keys, the store and host handles, the mempool,
//! metrics and the [`Stopper`]. Nothing in it is written after start;
//! mutable state lives in the one task that owns it (see
//! docs/ARCHITECTURE.md for who owns what).

use crate::budget::{PeerBudgets, SigChecks};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::p2p::{Network, PeerId};
use crate::stop::Stopper;
use kite_blockstore::{BlockStore, StoreHandle};
use kite_mempool::{AccountSource, Mempool};
use kite_types::{Account, Genesis, Hash, NodeKey, PublicKey};
use std::path::PathBuf;
use std::sync::Arc;

/// Shared by every task of one node.
pub struct Shared {
    /// The genesis.
    pub genesis: Genesis,
    /// Who leads each term (from the genesis).
    pub schedule: kite_types::LeaderSchedule,
    /// Its hash.
    pub genesis_hash: Hash,
    /// The node key.
    pub key: NodeKey,
    /// Its public key.
    pub public: PublicKey,
    /// This node's peer id.
    pub peer_id: PeerId,
    /// Configuration.
    pub config: Config,
    /// The block store.
    pub store: StoreHandle,
    /// The mempool (None on a blocks-only node).
    pub mempool: Option<Arc<Mempool>>,
    /// The network (the libp2p host in production).
    pub host: Arc<dyn Network>,
    /// The clock of the driver's timers and the mempool.
    pub clock: Clock,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The bytes of blocks served to peers (`p2p.peer_buffer`).
    pub budgets: PeerBudgets,
    /// The bytes of tx batches received from peers (half as much).
    pub tx_budgets: PeerBudgets,
    /// Signature checks run for peers (`p2p.max_sig_checks_per_peer`).
    pub sig_checks: SigChecks,
    /// Tx signature checks run for peers (`p2p.max_tx_checks_per_peer`).
    pub tx_checks: SigChecks,
    /// Where the engine's promise record is written before every vote or
    /// proposal (see [`crate::promise_file`]).
    pub promise_file: PathBuf,
    /// Stops the node; tracks its tasks.
    pub stop: Stopper,
}

impl Shared {
    /// Account lookups over the committed state, for the mempool.
    pub fn accounts(&self) -> StoreAccounts {
        StoreAccounts(self.store.store().clone())
    }

    /// Max block size of the chain.
    pub fn max_block_bytes(&self) -> usize {
        usize::try_from(self.genesis.max_block_bytes).unwrap_or(usize::MAX)
    }
}

/// Account reads of the committed state (sled; call off the executor).
pub struct StoreAccounts(Arc<BlockStore>);

impl AccountSource for StoreAccounts {
    /// A store error is reported as such (the mempool refuses admissions
    /// and keeps txs unchecked), never as an empty account.
    fn account(&self, who: &PublicKey) -> Result<Account, kite_mempool::AccountError> {
        self.0
            .account(who)
            .map_err(|e| kite_mempool::AccountError::new(e.to_string()))
    }
}

/// The node's clock: what the driver tells the engine the time is, and
/// what the mempool stamps admissions with.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system's wall clock (production).
    Wall,
    /// Tokio's clock from `start`, counted from `base_ms`: under tokio's
    /// paused time it moves only when the test runtime advances it, so the
    /// engine's timers and the driver's sleeps agree (tests).
    Tokio {
        /// When the clock read `base_ms`.
        start: tokio::time::Instant,
        /// Unix milliseconds at `start`.
        base_ms: u64,
    },
}

impl Clock {
    /// A clock on tokio's time, starting now at `base_ms`.
    pub fn tokio(base_ms: u64) -> Clock {
        Clock::Tokio {
            start: tokio::time::Instant::now(),
            base_ms,
        }
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::Wall => now_ms(),
            Clock::Tokio { start, base_ms } => {
                let gone = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                base_ms.saturating_add(gone)
            }
        }
    }
}

/// Unix milliseconds now, on the wall clock (see [`Clock`]).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `v` as a metric value.
pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
