//! Mempool limits. Plain values (no serde): the node maps its own config
//! onto [`MempoolConfig`].

/// One MiB in bytes.
pub const MIB: usize = 1024 * 1024;

/// Limits of a [`crate::Mempool`]. Every limit covers pending *and* queued
/// txs: the pool never holds more than `max_txs` txs nor more than
/// `max_bytes` encoded bytes, whatever the load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Most txs held (pending + queued).
    pub max_txs: usize,
    /// Most encoded bytes held (sum of `Tx::size`, pending + queued).
    pub max_bytes: usize,
    /// Largest accepted tx (encoded size).
    pub max_tx_bytes: usize,
    /// Most pending (executable, contiguous-nonce) txs of one sender.
    pub max_per_sender: usize,
    /// Most queued txs of one sender: txs whose nonce leaves a gap, held
    /// until the gap fills. `0` disables queueing: every gap is refused
    /// with [`crate::MempoolError::NonceGap`].
    pub max_queued_per_sender: usize,
    /// Most hashes one [`crate::Mempool::reannounce`] call returns.
    pub reannounce_max_txs: usize,
    /// Most encoded bytes (of the txs behind the hashes) one
    /// [`crate::Mempool::reannounce`] call covers.
    pub reannounce_max_bytes: usize,
    /// Threads one [`crate::Mempool::admit_batch`] call verifies
    /// signatures on (scoped threads, batches of at least 128 txs). `0`:
    /// one per available core; `1`: the calling thread only.
    pub verify_threads: usize,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_txs: 50_000,
            max_bytes: 200 * MIB,
            max_tx_bytes: 64 * 1024,
            max_per_sender: 1_000,
            max_queued_per_sender: 64,
            reannounce_max_txs: 1_000,
            reannounce_max_bytes: 4 * MIB,
            verify_threads: 0,
        }
    }
}
