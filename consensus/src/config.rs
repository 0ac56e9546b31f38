//! Engine configuration (from genesis plus local timeouts) and the
//! committed state an engine starts from.

use kite_types::{
    BlockHeader, CommitInfo, Genesis, Hash, LeaderSchedule, NodeKey, PublicKey, Quorum, Signature,
    ValidatorSet,
};

pub use kite_types::Role;

/// Bytes kept free in a block for the header, the signature and framing:
/// the leader asks for at most `max_block_bytes - BLOCK_RESERVE_BYTES` of
/// txs and validators refuse blocks whose txs weigh more.
pub const BLOCK_RESERVE_BYTES: u64 = 1024;

/// Everything the engine needs to know, fixed for its lifetime. Times are
/// milliseconds on the clock the node feeds in [`crate::Input::Tick`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The chain id (in every signed message).
    pub chain_id: String,
    /// This node's role.
    pub role: Role,
    /// The signing key; `None` for a non-validator (sentry, archive).
    pub key: Option<NodeKey>,
    /// The genesis leader: the leader of term 0.
    pub leader: PublicKey,
    /// The validators and their voting power.
    pub validators: ValidatorSet,
    /// Who leads each term (term 0: `leader`).
    pub schedule: LeaderSchedule,
    /// Share of voting power that commits a block.
    pub quorum: Quorum,
    /// Largest encoded block.
    pub max_block_bytes: u64,
    /// Leader: how long txs may wait before a block that is not full is
    /// proposed, counted from when the first tx arrived in an idle mempool
    /// or from the last proposal while txs kept coming (so under steady load
    /// a block goes out at the previous one's commit if that one was
    /// proposed at least this long before).
    pub propose_timeout_ms: u64,
    /// Leader: how long to wait with no tx before proposing an empty block;
    /// 0 means never.
    pub empty_block_timeout_ms: u64,
    /// Leader: how long a proposal may stay uncommitted before it is reset
    /// and the height re-proposed.
    pub round_timeout_ms: u64,
    /// Validator: how long it waits for progress from the leader of its
    /// term (a proposal, a re-send, a reset, a commit) before it moves to
    /// the next term; counted after the empty-block timeout, and doubled
    /// for each term in a row without a commit, up to
    /// [`EngineConfig::leader_timeout_max_ms`].
    pub leader_timeout_ms: u64,
    /// The most the doubled leader timeout grows to.
    pub leader_timeout_max_ms: u64,
    /// Validator: how often its vote is re-sent while the height is open.
    /// Leader: how often the proposal is re-sent to validators that have not
    /// voted, and the least time between two re-announces to one peer.
    pub vote_resend_interval_ms: u64,
    /// Block sync: heights requested ahead of the committed height.
    pub sync_window: u64,
    /// Block sync: heights in flight per peer.
    pub sync_per_peer: u64,
    /// Block sync: bytes of fetched blocks to hold at most, about; the
    /// window shrinks (to no fewer than [`crate::sync::MAX_REQUEST`]
    /// heights) when the blocks seen so far are large.
    pub sync_buffer_bytes: u64,
    /// Block sync: how long a request may stay unanswered before it is
    /// given to another peer.
    pub sync_request_timeout_ms: u64,
}

impl EngineConfig {
    /// The configuration of `genesis` for a node of `role` holding `key`,
    /// with default local timeouts (round 2 s, leader 2 s doubling up to
    /// 16 s, resend 250 ms, sync window 512 heights, 256 per peer, buffer
    /// 256 MiB, request timeout 2 s).
    pub fn from_genesis(genesis: &Genesis, role: Role, key: Option<NodeKey>) -> EngineConfig {
        EngineConfig {
            chain_id: genesis.chain_id.clone(),
            role,
            key,
            leader: genesis.leader,
            validators: genesis.validator_set(),
            schedule: LeaderSchedule::new(&genesis.validator_set(), genesis.leader),
            quorum: genesis.quorum,
            max_block_bytes: genesis.max_block_bytes,
            propose_timeout_ms: millis(genesis.propose_timeout),
            empty_block_timeout_ms: millis(genesis.empty_block_timeout),
            round_timeout_ms: 2_000,
            leader_timeout_ms: 2_000,
            leader_timeout_max_ms: 16_000,
            vote_resend_interval_ms: 250,
            sync_window: 512,
            sync_per_peer: 256,
            sync_buffer_bytes: 256 * 1024 * 1024,
            sync_request_timeout_ms: 2_000,
        }
    }

    /// Most tx bytes one block may carry.
    pub fn max_tx_bytes_per_block(&self) -> u64 {
        self.max_block_bytes.saturating_sub(BLOCK_RESERVE_BYTES)
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The last committed block as the store holds it: enough to re-announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCommit {
    /// Its header.
    pub header: BlockHeader,
    /// The leader's signature over its hash.
    pub leader_sig: Signature,
    /// Its commit info (app hash and the quorum of ACKs).
    pub commit_info: CommitInfo,
}

/// What the store says is committed; an engine starts (and restarts) from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedState {
    /// Last committed height (`initial_height - 1` before the first block).
    pub height: u64,
    /// Hash of that block (zero before the first block).
    pub block_hash: Hash,
    /// App hash after that block (the genesis app hash before the first).
    pub app_hash: Hash,
    /// The last committed block's header, signature and commit info;
    /// `None` before the first block.
    pub last: Option<LastCommit>,
}

impl CommittedState {
    /// The state before the first block of a chain starting at
    /// `initial_height` with genesis app hash `app_hash`.
    pub fn genesis(initial_height: u64, app_hash: Hash) -> CommittedState {
        CommittedState {
            height: initial_height.saturating_sub(1),
            block_hash: Hash::ZERO,
            app_hash,
            last: None,
        }
    }

    /// The last committed header, if any block is committed.
    pub fn last_header(&self) -> Option<&BlockHeader> {
        self.last.as_ref().map(|l| &l.header)
    }
}
