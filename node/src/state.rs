//! What the node shows of itself: the engine driver publishes a
//! [`NodeState`] through a `tokio::sync::watch` channel after every batch of
//! inputs; every other task (handlers, status, RPC, block sync, the tx
//! indexer) reads the latest value and never writes it.

use kite_consensus::{EngineStatus, Step};
use kite_types::Hash;
use std::time::Instant;
use tokio::sync::watch;

/// The node's state as its driver last published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// Last committed height.
    pub height: u64,
    /// Its block hash.
    pub block_hash: Hash,
    /// App hash after it.
    pub app_hash: Hash,
    /// Whether block sync runs.
    pub syncing: bool,
    /// Height sync heads for.
    pub sync_target: u64,
    /// Engine step.
    pub step: Step,
    /// Leader round at this height.
    pub round: u32,
    /// Block being voted on.
    pub proposal: Option<Hash>,
    /// Why the engine halted.
    pub halted: Option<String>,
    /// When the last block was committed.
    pub last_commit: Option<Instant>,
    /// The term this node is in.
    pub term: u64,
    /// The schedule's leader of that term.
    pub leader: kite_types::PublicKey,
    /// Whether that leader holds its quorum's credential (always in term
    /// 0); while not, validators wait for one.
    pub term_settled: bool,
}

impl NodeState {
    /// The state shown for an engine status (`last_commit` is the
    /// driver's to set).
    pub fn of(st: &EngineStatus) -> NodeState {
        NodeState {
            height: st.committed_height,
            block_hash: st.committed_hash,
            app_hash: st.app_hash,
            syncing: st.sync_target > st.committed_height + 1 || st.step == Step::Syncing,
            sync_target: st.sync_target.max(st.committed_height),
            step: st.step,
            round: st.round,
            proposal: st.proposal.or(st.locked_on),
            halted: st.halted.clone(),
            last_commit: None,
            term: st.term,
            leader: st.leader,
            term_settled: st.term_settled,
        }
    }
}

/// Reads the node state (a clone of the watch receiver per reader).
pub type StateRx = watch::Receiver<NodeState>;
