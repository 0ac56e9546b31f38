//! The node's Prometheus metrics (prometheus-client), served at
//! `GET /metrics`.
//!
//! All metrics are prefixed `kite_`. Per-protocol stream counters are
//! labelled by protocol id, direction (inbound/outbound) and outcome
//! (ok/error/refused).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

/// What the process's memory allocator reports, bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocatorStats {
    /// Bytes the program holds (allocated and not freed).
    pub allocated: u64,
    /// Bytes of the allocator's pages that are resident: what it holds plus
    /// freed memory it has not yet given back to the system.
    pub resident: u64,
}

/// The allocator's probe, set once by the binary that chose the allocator.
static ALLOCATOR_PROBE: OnceLock<fn() -> Option<AllocatorStats>> = OnceLock::new();

/// Sets the function that reads the allocator's figures (the `kite` binary
/// sets one for jemalloc); without it the allocator gauges stay 0. Only the
/// first call counts: the allocator is the process's.
pub fn set_allocator_probe(probe: fn() -> Option<AllocatorStats>) {
    let _ = ALLOCATOR_PROBE.set(probe);
}

/// Labels of a stream counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    /// Protocol id, e.g. "/kite/tx/1.0.0".
    pub protocol: String,
    /// "inbound" or "outbound".
    pub direction: String,
    /// "ok", "error" or "refused".
    pub outcome: String,
}

/// Every metric of the node.
pub struct Metrics {
    registry: Registry,
    /// Last committed height.
    pub height: Gauge,
    /// Txs committed since start.
    pub committed_txs: Counter,
    /// Time from proposal to commit, seconds.
    pub commit_round_seconds: Histogram,
    /// Txs in the mempool.
    pub mempool_txs: Gauge,
    /// Bytes in the mempool.
    pub mempool_bytes: Gauge,
    /// Connected peers.
    pub peers: Gauge,
    /// 1 while block sync runs.
    pub syncing: Gauge,
    /// Height block sync heads for.
    pub sync_target: Gauge,
    /// Blocks applied by block sync.
    pub synced_blocks: Counter,
    /// Height up to which every committed tx is in the tx index.
    pub tx_indexed: Gauge,
    /// Runs of the tx index (a lookup reads one chunk per run).
    pub tx_index_runs: Gauge,
    /// Streams by protocol, direction and outcome.
    pub streams: Family<StreamLabels, Counter>,
    /// Time of each durable write of the promise file (one before every
    /// vote or proposal sent), seconds; its count is the number of writes.
    pub promise_write_seconds: Histogram,
    /// Engine inputs dropped because its queue was full.
    pub engine_inputs_dropped: Counter,
    /// Outbound exchanges dropped because the peer's budget was spent.
    pub outbound_dropped: Counter,
    /// Bytes held for peers now (`p2p.peer_buffer`).
    pub peer_buffer_bytes: Gauge,
    /// Most bytes ever held for peers at once.
    pub peer_buffer_peak_bytes: Gauge,
    /// Served blocks and received tx batches declined for want of room.
    pub peer_buffer_refused: Gauge,
    /// Inputs dropped unchecked: their sender was over its rate of
    /// signature checks.
    pub sig_checks_limited: Gauge,
    /// Tx batches from peers dropped unchecked: their sender was over its
    /// rate of tx signature checks.
    pub tx_checks_limited: Gauge,
    /// The process's resident memory (RSS), bytes.
    pub process_resident_bytes: Gauge,
    /// Bytes the node holds on the heap, as its allocator counts them.
    pub allocator_allocated_bytes: Gauge,
    /// The allocator's resident pages, bytes.
    pub allocator_resident_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kite");
        let m = Metrics {
            height: Gauge::default(),
            committed_txs: Counter::default(),
            commit_round_seconds: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            mempool_txs: Gauge::default(),
            mempool_bytes: Gauge::default(),
            peers: Gauge::default(),
            syncing: Gauge::default(),
            sync_target: Gauge::default(),
            synced_blocks: Counter::default(),
            tx_indexed: Gauge::default(),
            tx_index_runs: Gauge::default(),
            streams: Family::default(),
            promise_write_seconds: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            engine_inputs_dropped: Counter::default(),
            outbound_dropped: Counter::default(),
            peer_buffer_bytes: Gauge::default(),
            peer_buffer_peak_bytes: Gauge::default(),
            peer_buffer_refused: Gauge::default(),
            sig_checks_limited: Gauge::default(),
            tx_checks_limited: Gauge::default(),
            process_resident_bytes: Gauge::default(),
            allocator_allocated_bytes: Gauge::default(),
            allocator_resident_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("height", "Last committed height", m.height.clone());
        registry.register(
            "committed_txs",
            "Transactions committed since start",
            m.committed_txs.clone(),
        );
        registry.register(
            "commit_round_seconds",
            "Time from proposal to commit",
            m.commit_round_seconds.clone(),
        );
        registry.register(
            "mempool_txs",
            "Transactions in the mempool",
            m.mempool_txs.clone(),
        );
        registry.register(
            "mempool_bytes",
            "Bytes in the mempool",
            m.mempool_bytes.clone(),
        );
        registry.register("peers", "Connected peers", m.peers.clone());
        registry.register("syncing", "1 while block sync runs", m.syncing.clone());
        registry.register(
            "sync_target_height",
            "Height block sync heads for",
            m.sync_target.clone(),
        );
        registry.register(
            "synced_blocks",
            "Blocks applied by block sync",
            m.synced_blocks.clone(),
        );
        registry.register(
            "tx_indexed_height",
            "Height up to which every committed transaction is in the tx index",
            m.tx_indexed.clone(),
        );
        registry.register(
            "tx_index_runs",
            "Runs of the tx index; the background merge keeps them near the log of the committed tx count",
            m.tx_index_runs.clone(),
        );
        registry.register(
            "streams",
            "Streams by protocol, direction and outcome",
            m.streams.clone(),
        );
        registry.register(
            "promise_write_seconds",
            "Time of each durable write of the promise file (before a vote or proposal is sent)",
            m.promise_write_seconds.clone(),
        );
        registry.register(
            "engine_inputs_dropped",
            "Engine inputs dropped because its queue was full (the protocols re-send them)",
            m.engine_inputs_dropped.clone(),
        );
        registry.register(
            "outbound_dropped",
            "Outbound exchanges dropped because the peer's budget of exchanges at once was spent",
            m.outbound_dropped.clone(),
        );
        registry.register(
            "peer_buffer_bytes",
            "Bytes held for peers now: served blocks not yet written, received tx batches not yet admitted (p2p.peer_buffer bounds it)",
            m.peer_buffer_bytes.clone(),
        );
        registry.register(
            "peer_buffer_peak_bytes",
            "Most bytes held for peers at once since the node started",
            m.peer_buffer_peak_bytes.clone(),
        );
        registry.register(
            "peer_buffer_refused",
            "Block answers cut short and tx batches declined because p2p.peer_buffer (or the peer's quarter of it) was spent",
            m.peer_buffer_refused.clone(),
        );
        registry.register(
            "sig_checks_limited",
            "Announces, proposals, resets and votes dropped unchecked because their sender was over p2p.max_sig_checks_per_peer",
            m.sig_checks_limited.clone(),
        );
        registry.register(
            "tx_checks_limited",
            "Tx batches from peers dropped unchecked because their sender was over p2p.max_tx_checks_per_peer",
            m.tx_checks_limited.clone(),
        );
        registry.register(
            "process_resident_bytes",
            "Resident memory of the node's process (RSS)",
            m.process_resident_bytes.clone(),
        );
        registry.register(
            "allocator_allocated_bytes",
            "Heap bytes the node holds, as its allocator counts them (0 without an allocator probe)",
            m.allocator_allocated_bytes.clone(),
        );
        registry.register(
            "allocator_resident_bytes",
            "The allocator's resident pages: the heap the node holds plus freed pages not yet given back (0 without an allocator probe)",
            m.allocator_resident_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Reads the process's memory figures into their gauges (at each scrape).
    pub fn sample_memory(&self) {
        if let Some(rss) = memory_stats::memory_stats() {
            self.process_resident_bytes
                .set(i64::try_from(rss.physical_mem).unwrap_or(i64::MAX));
        }
        if let Some(stats) = ALLOCATOR_PROBE.get().and_then(|probe| probe()) {
            let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.allocator_allocated_bytes.set(gauge(stats.allocated));
            self.allocator_resident_bytes.set(gauge(stats.resident));
        }
    }

    /// Counts one stream.
    pub fn stream(&self, protocol: &str, inbound: bool, outcome: &str) {
        self.streams
            .get_or_create(&StreamLabels {
                protocol: protocol.to_owned(),
                direction: if inbound { "inbound" } else { "outbound" }.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_metric() {
        let m = Metrics::new();
        m.height.set(7);
        m.stream("/kite/tx/1.0.0", true, "ok");
        m.commit_round_seconds.observe(0.2);
        m.promise_write_seconds.observe(0.0003);
        m.sample_memory();
        assert!(m.process_resident_bytes.get() > 0, "the test's own RSS");
        let text = m.encode();
        assert!(
            text.contains("kite_promise_write_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("kite_height 7"), "{text}");
        assert!(text.contains("kite_streams_total{protocol=\"/kite/tx/1.0.0\",direction=\"inbound\",outcome=\"ok\"} 1"), "{text}");
        assert!(text.contains("kite_commit_round_seconds_count 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
