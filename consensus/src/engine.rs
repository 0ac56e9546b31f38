//! The commit engine: one pure state machine for the leader, validators and
//! sentries. See docs/CONSENSUS.md for the protocol and its safety argument.
//!
//! [`Engine::handle`] takes one [`Input`] and returns the [`Output`]s the node
//! must carry out, in order. The engine reads no clock (time comes in
//! [`Input::Tick`]), does no I/O, and trusts no input: signatures of blocks,
//! resets, votes and commit infos are checked here.

use crate::config::{CommittedState, EngineConfig, LastCommit, Role};
use crate::io::{ExecError, Input, Output, Target, TimeoutKind};
use crate::sync::SyncPlanner;
use crate::votekeeper::VoteKeeper;
use kite_types::block::verify_header_sig;
use kite_types::promise::MAX_PROPOSED;
use kite_types::{
    BLOCK_VERSION, Block, BlockHeader, CommitInfo, Hash, Promise, PublicKey, Signature, Tx, Vote,
    sign,
};
use std::collections::{BTreeMap, VecDeque};

/// Most distinct leader-signed blocks a validator keeps for one height. A
/// reset block leaves at once; at the bound, the oldest block (by header
/// time) that is neither locked nor committed makes room for the newest.
pub const MAX_BLOCKS_PER_HEIGHT: usize = 16;
/// Block sync: most blocks in one [`Output::ApplyBlocks`]...
pub const APPLY_BATCH: usize = 64;
/// ...and most txs, whichever comes first...
pub const APPLY_BATCH_TXS: usize = 8192;
/// ...and most blocks sent to the store and not yet reported applied (also
/// at most the sync window).
pub const MAX_APPLYING: usize = 256;
/// Most resets remembered for one height: the leader proposes a height at
/// most [`MAX_PROPOSED`] (256) times and resets only blocks it proposed, so
/// an honest leader never signs more. At the bound a validator forgets the
/// reset with the lowest hash to keep the newest (it still refuses any
/// proposal older than the newest it has seen).
pub const MAX_RESETS_PER_HEIGHT: usize = MAX_PROPOSED;
/// Most resets re-sent with a proposal re-send.
const RESETS_RESENT: usize = 4;
/// Most peers whose last re-announce time is remembered.
const MAX_ANNOUNCE_PEERS: usize = 1024;

/// Why an engine could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// A leader or validator without a key.
    #[error("a {0:?} needs its node key to sign; start without a key only as a sentry")]
    MissingKey(Role),
    /// The leader role with a key that is not the genesis leader's.
    #[error(
        "this node's key {key} is not the genesis leader {leader}; start it as a validator or sentry"
    )]
    NotLeader {
        /// This node's key.
        key: PublicKey,
        /// The genesis leader.
        leader: PublicKey,
    },
    /// The validator role with a key outside the validator set.
    #[error("this node's key {0} is not in the genesis validator set; start it as a sentry")]
    NotValidator(PublicKey),
    /// The configuration is inconsistent.
    #[error("invalid consensus configuration: {0}")]
    Config(String),
    /// The store ends below a height this node already promised at: it
    /// went back in time.
    #[error(
        "this node's store ends at height {tip}, but the node already {what} at height {promised} \
         (its promise record says so): the store went back in time (an older copy was restored, \
         or writes that were not durable were lost). Starting from it could make this node \
         contradict what it signed. Start the node from a fresh home and let it sync from the \
         network, or restore a copy of the store at height {need} or later"
    )]
    StoreBehind {
        /// The store's last committed height.
        tip: u64,
        /// The height of the promise record.
        promised: u64,
        /// The lowest store height that fits the record.
        need: u64,
        /// "proposed" or "voted".
        what: &'static str,
    },
    /// The promise record is another node's.
    #[error(
        "the promise record holds a vote of {voter}, not of this node's key {key}: it belongs to \
         another node's home; move it away only if this node never signed anything at height \
         {height}"
    )]
    ForeignPromise {
        /// The voter in the record.
        voter: PublicKey,
        /// This node's key.
        key: PublicKey,
        /// The record's height.
        height: u64,
    },
}

/// What the engine is doing, for status RPCs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStatus {
    /// Last committed height.
    pub committed_height: u64,
    /// Last committed block.
    pub committed_hash: Hash,
    /// App hash after it.
    pub app_hash: Hash,
    /// The height being decided (`committed_height + 1`).
    pub height: u64,
    /// Leader: proposals made at this height.
    pub round: u32,
    /// "idle", "building", "proposed", "voted", "committing", "syncing" or
    /// "halted".
    pub step: &'static str,
    /// Leader: the block being voted on.
    pub proposal: Option<Hash>,
    /// Validator: the block this node ACKed at this height and is locked on.
    pub locked_on: Option<Hash>,
    /// Highest height known to exist (block sync target).
    pub sync_target: u64,
    /// Heights block sync has requested and not received yet.
    pub sync_in_flight: usize,
    /// Why the engine halted, if it did.
    pub halted: Option<String>,
}

#[derive(Debug, Clone)]
enum Exec {
    Pending,
    Done(Result<Hash, ExecError>),
}

/// A block fetched by block sync, kept until its height comes.
#[derive(Debug, Clone)]
struct Fetched {
    block: Block,
    ci: CommitInfo,
    from: Option<PublicKey>,
    /// Its proofs were checked by [`crate::check::ProofChecker`].
    checked: bool,
}

#[derive(Debug, Clone)]
struct KnownCommit {
    block_hash: Hash,
    header: BlockHeader,
    leader_sig: Signature,
    commit_info: CommitInfo,
}

/// State of the height being decided.
#[derive(Debug, Clone)]
struct HeightState {
    height: u64,
    /// Leader-signed blocks seen at this height (verified).
    blocks: BTreeMap<Hash, Block>,
    exec: BTreeMap<Hash, Exec>,
    /// Blocks the leader abandoned, with its signature.
    resets: BTreeMap<Hash, Signature>,
    /// Validator: its vote at this height (an ACK locks it on that block).
    my_vote: Option<Vote>,
    vote_sent_ms: u64,
    /// A verified commit (announce or sync) for this height.
    commit: Option<KnownCommit>,
    /// Leader: the current proposal and its votes.
    proposal: Option<Hash>,
    keeper: Option<VoteKeeper>,
    proposed_ms: u64,
    resent_ms: u64,
    /// Leader: every block it proposed at this height, oldest first (at
    /// most [`MAX_PROPOSED`]); the only blocks it signs resets for.
    proposed: Vec<Hash>,
    /// Leader: when a reset was last sent to a validator that voted for a
    /// block other than the proposal (one per resend interval each).
    reset_sent: BTreeMap<PublicKey, u64>,
    /// The newest header time of the leader's proposals at this height: a
    /// validator ignores older proposals (replays); the leader proposes
    /// strictly later.
    newest_ts: Option<u64>,
    /// Validator: the leader's newest proposal, held while this node is
    /// locked on another block; taken up when a reset releases the lock.
    waiting: Option<(PublicKey, Block)>,
}

impl HeightState {
    fn new(height: u64) -> Self {
        HeightState {
            height,
            blocks: BTreeMap::new(),
            exec: BTreeMap::new(),
            resets: BTreeMap::new(),
            my_vote: None,
            vote_sent_ms: 0,
            commit: None,
            proposal: None,
            keeper: None,
            proposed_ms: 0,
            resent_ms: 0,
            proposed: Vec::new(),
            reset_sent: BTreeMap::new(),
            newest_ts: None,
            waiting: None,
        }
    }

    /// What this node promised at this height, for [`Output::Persist`].
    fn promise(&self) -> Promise {
        Promise {
            height: self.height,
            vote: self.my_vote.clone(),
            proposed: self.proposed.clone(),
        }
    }

    /// Remembers a reset (evicting the one with the lowest hash at the
    /// bound) and forgets the block it abandons.
    fn add_reset(&mut self, hash: Hash, sig: Signature) {
        if self.resets.len() >= MAX_RESETS_PER_HEIGHT
            && !self.resets.contains_key(&hash)
            && let Some(first) = self.resets.keys().next().copied()
        {
            self.resets.remove(&first);
        }
        self.resets.insert(hash, sig);
        self.blocks.remove(&hash);
        self.exec.remove(&hash);
    }

    fn locked_on(&self) -> Option<Hash> {
        self.my_vote
            .as_ref()
            .filter(|v| v.ack && !self.resets.contains_key(&v.block_hash))
            .map(|v| v.block_hash)
    }
}

#[derive(Debug, Clone, Default)]
struct LeaderState {
    building: bool,
    rebuild_now: bool,
    round: u32,
    height_open_ms: u64,
    txs_since: Option<u64>,
    mempool_txs: usize,
    mempool_bytes: u64,
    announced: BTreeMap<PublicKey, u64>,
}

/// The commit engine of one node.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    me: Option<PublicKey>,
    valset_hash: Hash,
    now: u64,
    started_ms: Option<u64>,
    halted: Option<String>,
    committed: CommittedState,
    committing: Option<Hash>,
    h: HeightState,
    ld: LeaderState,
    pending_proposal: Option<(PublicKey, Block)>,
    fetched: BTreeMap<u64, Fetched>,
    /// Block sync: checked blocks sent to the store in
    /// [`Output::ApplyBlocks`] and not yet reported applied, in height
    /// order from the current height. While it is not empty, `committing`
    /// is its first block.
    applying: VecDeque<KnownCommit>,
    sync: SyncPlanner,
    scheduled: Option<u64>,
}

impl Engine {
    /// An engine for `config` starting from what the store holds.
    pub fn new(config: EngineConfig, committed: CommittedState) -> Result<Engine, EngineError> {
        if config.validators.is_empty() {
            return Err(EngineError::Config("the validator set is empty".into()));
        }
        if !config.validators.contains(&config.leader) {
            return Err(EngineError::Config(format!(
                "leader {} is not a validator",
                config.leader
            )));
        }
        let me = config.key.as_ref().map(|k| k.public());
        match (config.role, me) {
            (Role::Leader | Role::Validator, None) => {
                return Err(EngineError::MissingKey(config.role));
            }
            (Role::Leader, Some(k)) if k != config.leader => {
                return Err(EngineError::NotLeader {
                    key: k,
                    leader: config.leader,
                });
            }
            (Role::Validator, Some(k)) if !config.validators.contains(&k) || k == config.leader => {
                if k == config.leader {
                    return Err(EngineError::Config(
                        "the genesis leader must run with the leader role".into(),
                    ));
                }
                return Err(EngineError::NotValidator(k));
            }
            _ => {}
        }
        let sync = SyncPlanner::new(
            config.sync_window,
            config.sync_per_peer,
            config.sync_request_timeout_ms,
        )
        .with_buffer(config.sync_buffer_bytes);
        let valset_hash = config.validators.hash();
        let h = HeightState::new(committed.height.saturating_add(1));
        Ok(Engine {
            cfg: config,
            me,
            valset_hash,
            now: 0,
            started_ms: None,
            halted: None,
            committed,
            committing: None,
            h,
            ld: LeaderState::default(),
            pending_proposal: None,
            fetched: BTreeMap::new(),
            applying: VecDeque::new(),
            sync,
            scheduled: None,
        })
    }

    /// Takes back what this node promised before a restart (the last
    /// [`Output::Persist`] record), before the first input. A record of a
    /// height this node has committed since is fulfilled and ignored; a
    /// record of the open height is respected (a validator stays locked on
    /// the block it ACKed; a leader never re-proposes a block it proposed
    /// and resets only those); a record above the open height means the
    /// store went back in time: [`EngineError::StoreBehind`].
    pub fn restore(&mut self, promise: &Promise) -> Result<(), EngineError> {
        let open = self.committed.height.saturating_add(1);
        if promise.height > open {
            let what = if promise.vote.is_some() {
                "voted"
            } else {
                "proposed"
            };
            return Err(EngineError::StoreBehind {
                tip: self.committed.height,
                promised: promise.height,
                need: promise.height.saturating_sub(1),
                what,
            });
        }
        if promise.height < open {
            return Ok(());
        }
        if let Some(v) = &promise.vote {
            match self.me {
                Some(me) if me == v.validator => {}
                _ => {
                    return Err(EngineError::ForeignPromise {
                        voter: v.validator,
                        key: self.me.unwrap_or(PublicKey([0; 32])),
                        height: promise.height,
                    });
                }
            }
            if self.is_validator() {
                self.h.my_vote = Some(v.clone());
                // Re-sent on the first tick.
                self.h.vote_sent_ms = 0;
            }
        }
        if self.is_leader()
            && let Some(key) = self.cfg.key.clone()
        {
            // Every block proposed before the restart is abandoned (none
            // was committed: the store would hold it), so it is reset.
            let proposed: Vec<Hash> = promise
                .proposed
                .iter()
                .take(MAX_PROPOSED)
                .copied()
                .collect();
            for bh in &proposed {
                let sig = key.sign_digest(&sign::reset_digest(&self.cfg.chain_id, open, bh));
                self.h.add_reset(*bh, sig);
            }
            self.ld.round = u32::try_from(proposed.len()).unwrap_or(u32::MAX);
            self.h.proposed = proposed;
        }
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The committed state the engine knows.
    pub fn committed(&self) -> &CommittedState {
        &self.committed
    }

    /// Why the engine halted, if it did.
    pub fn halted(&self) -> Option<&str> {
        self.halted.as_deref()
    }

    /// What the engine is doing.
    pub fn status(&self) -> EngineStatus {
        let step = if self.halted.is_some() {
            "halted"
        } else if self.committing.is_some() {
            "committing"
        } else if self.behind() {
            "syncing"
        } else if self.h.proposal.is_some() {
            "proposed"
        } else if self.ld.building {
            "building"
        } else if self.h.my_vote.is_some() {
            "voted"
        } else {
            "idle"
        };
        EngineStatus {
            committed_height: self.committed.height,
            committed_hash: self.committed.block_hash,
            app_hash: self.committed.app_hash,
            height: self.h.height,
            round: self.ld.round,
            step,
            proposal: self.h.proposal,
            locked_on: self.h.locked_on(),
            sync_target: self.sync.target(),
            sync_in_flight: self.sync.in_flight(),
            halted: self.halted.clone(),
        }
    }

    /// Handles one input and returns what the node must do, in order.
    /// After a [`Output::Halt`] the engine returns nothing, ever.
    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        if self.halted.is_some() {
            return out;
        }
        if let Input::Tick { now_ms } = &input {
            self.now = self.now.max(*now_ms);
        }
        if self.started_ms.is_none() && matches!(input, Input::Tick { .. }) {
            // The first tick: timers start from the node's clock.
            self.started_ms = Some(self.now);
            self.on_start(&mut out);
        }
        match input {
            Input::Tick { .. } => self.on_tick(&mut out),
            Input::MempoolStatus { txs, bytes } => self.on_mempool(txs, bytes),
            Input::BlockBuilt { txs } => self.on_block_built(txs, &mut out),
            Input::ProposalReceived { from, block } => self.on_proposal(from, block, &mut out),
            Input::ResetReceived {
                height,
                block_hash,
                leader_sig,
            } => self.on_reset(height, block_hash, leader_sig, &mut out),
            Input::BlockExecuted {
                height,
                block_hash,
                result,
            } => self.on_executed(height, block_hash, result, &mut out),
            Input::VoteReceived { vote, best_header } => self.on_vote(vote, best_header, &mut out),
            Input::CommitAnnounced {
                from,
                header,
                leader_sig,
                commit_info,
            } => self.on_announce(from, header, leader_sig, commit_info, &mut out),
            Input::BlockFetched {
                from,
                block,
                commit_info,
            } => {
                self.keep_fetched(from, block, commit_info, false);
                self.process_fetched(&mut out);
            }
            Input::RangeFetched { from, blocks } => {
                for (block, commit_info) in blocks {
                    self.keep_fetched(from, block, commit_info, true);
                }
                self.process_fetched(&mut out);
            }
            Input::BlocksApplied { applied, failed } => {
                self.on_applied(applied, failed, &mut out);
            }
            Input::FetchFailed { from, height } => self.sync.failed(height, from, self.now),
            Input::Committed {
                height,
                block_hash,
                app_hash,
            } => self.on_committed(height, block_hash, app_hash, &mut out),
            Input::PeerStatus { peer, height, .. } => self.on_peer_status(peer, height, &mut out),
        }
        if self.halted.is_none() {
            self.leader_maybe_propose(&mut out);
            self.drive_sync(&mut out);
            self.schedule(&mut out);
        }
        if self.halted.is_some() {
            // Halt is final: nothing after it.
            if let Some(i) = out.iter().position(|o| matches!(o, Output::Halt { .. })) {
                out.truncate(i + 1);
            }
        }
        out
    }

    // ---- helpers -------------------------------------------------------

    fn is_leader(&self) -> bool {
        self.cfg.role == Role::Leader
    }

    fn is_validator(&self) -> bool {
        self.cfg.role == Role::Validator
    }

    fn halt(&mut self, reason: String, out: &mut Vec<Output>) {
        if self.halted.is_none() {
            self.halted = Some(reason.clone());
            out.push(Output::Halt { reason });
        }
    }

    /// Validators other than this node.
    fn others(&self) -> Vec<PublicKey> {
        self.cfg
            .validators
            .validators()
            .iter()
            .map(|v| v.pub_key)
            .filter(|k| Some(*k) != self.me)
            .collect()
    }

    fn announce(&self, to: Target, out: &mut Vec<Output>) {
        if let Some(l) = &self.committed.last {
            out.push(Output::Announce {
                header: l.header.clone(),
                leader_sig: l.leader_sig,
                commit_info: l.commit_info.clone(),
                to,
            });
        }
    }

    /// Leader: re-announces the last commit to a peer that lags, at most
    /// once per resend interval.
    fn reannounce_to(&mut self, peer: PublicKey, out: &mut Vec<Output>) {
        if !self.is_leader() || self.committed.last.is_none() {
            return;
        }
        if let Some(t) = self.ld.announced.get(&peer)
            && self.now < t.saturating_add(self.cfg.vote_resend_interval_ms)
        {
            return;
        }
        if self.ld.announced.len() >= MAX_ANNOUNCE_PEERS {
            self.ld.announced.clear();
        }
        self.ld.announced.insert(peer, self.now);
        self.announce(Target::Peers(vec![peer]), out);
    }

    fn behind(&self) -> bool {
        self.sync.is_behind(self.committed.height)
    }

    // ---- inputs --------------------------------------------------------

    fn on_start(&mut self, out: &mut Vec<Output>) {
        self.ld.height_open_ms = self.now;
        if self.is_leader() {
            // A leader that crashed after committing but before announcing
            // re-announces its last commit.
            self.announce(Target::All, out);
        }
    }

    fn on_tick(&mut self, out: &mut Vec<Output>) {
        let now = self.now;
        let resend = self.cfg.vote_resend_interval_ms;
        if self.is_leader()
            && self.committing.is_none()
            && let Some(hash) = self.h.proposal
        {
            if now >= self.h.proposed_ms.saturating_add(self.cfg.round_timeout_ms) {
                self.leader_reset("round timeout", out);
            } else if now >= self.h.resent_ms.saturating_add(resend) {
                self.h.resent_ms = now;
                let non_voters: Vec<PublicKey> = match &self.h.keeper {
                    Some(k) => k
                        .non_voters()
                        .into_iter()
                        .filter(|p| Some(*p) != self.me)
                        .collect(),
                    None => Vec::new(),
                };
                if !non_voters.is_empty() {
                    let height = self.h.height;
                    for (bh, sig) in self.h.resets.iter().rev().take(RESETS_RESENT) {
                        out.push(Output::SendReset {
                            height,
                            block_hash: *bh,
                            leader_sig: *sig,
                            reason: "superseded".into(),
                            to: Target::Peers(non_voters.clone()),
                        });
                    }
                    if let Some(block) = self.h.blocks.get(&hash) {
                        out.push(Output::SendProposal {
                            to: non_voters,
                            block: block.clone(),
                        });
                    }
                }
            }
        }
        if self.is_validator()
            && let Some(v) = &self.h.my_vote
            && now >= self.h.vote_sent_ms.saturating_add(resend)
        {
            self.h.vote_sent_ms = now;
            out.push(Output::SendVote {
                to: self.cfg.leader,
                vote: v.clone(),
                best_header: None,
            });
        }
    }

    fn on_mempool(&mut self, txs: usize, bytes: u64) {
        self.ld.mempool_txs = txs;
        self.ld.mempool_bytes = bytes;
        if txs == 0 {
            self.ld.txs_since = None;
        } else if self.ld.txs_since.is_none() {
            self.ld.txs_since = Some(self.now);
        }
    }

    fn empty_block_due(&self) -> bool {
        self.cfg.empty_block_timeout_ms > 0
            && self.now
                >= self
                    .ld
                    .height_open_ms
                    .saturating_add(self.cfg.empty_block_timeout_ms)
    }

    fn can_propose(&self) -> bool {
        self.is_leader()
            && self.started_ms.is_some()
            && !self.ld.building
            && self.h.proposal.is_none()
            && self.committing.is_none()
            && !self.behind()
    }

    fn leader_maybe_propose(&mut self, out: &mut Vec<Output>) {
        if !self.can_propose() {
            return;
        }
        let max = self.cfg.max_tx_bytes_per_block();
        let full = self.ld.mempool_txs > 0 && self.ld.mempool_bytes >= max;
        let waited = self
            .ld
            .txs_since
            .is_some_and(|t| self.now >= t.saturating_add(self.cfg.propose_timeout_ms));
        if self.ld.rebuild_now || full || waited || self.empty_block_due() {
            self.ld.rebuild_now = false;
            self.ld.building = true;
            out.push(Output::BuildBlock { max_bytes: max });
        }
    }

    fn on_block_built(&mut self, mut txs: Vec<Tx>, out: &mut Vec<Output>) {
        if !self.is_leader() || !self.ld.building {
            return;
        }
        self.ld.building = false;
        let Some(key) = self.cfg.key.clone() else {
            return;
        };
        // Never trust the mempool with the budget.
        let max = self.cfg.max_tx_bytes_per_block();
        let mut used: u64 = 0;
        let keep = txs
            .iter()
            .take_while(|t| {
                used = used.saturating_add(t.size() as u64);
                used <= max
            })
            .count();
        txs.truncate(keep);
        if txs.is_empty() {
            // The mempool has nothing to give: do not ask again until it
            // reports new txs.
            self.ld.mempool_txs = 0;
            self.ld.mempool_bytes = 0;
            self.ld.txs_since = None;
            if !self.empty_block_due() {
                return;
            }
        }
        let last_ts = self.committed.last_header().map_or(0, |h| h.timestamp_ms);
        // Strictly later than this height's earlier proposals: validators
        // ignore older ones.
        let after = self.h.newest_ts.map_or(0, |t| t.saturating_add(1));
        let mut ts = self.now.max(last_ts).max(after);
        let mut block = None;
        for _ in 0..8 {
            let header = BlockHeader {
                version: BLOCK_VERSION,
                chain_id: self.cfg.chain_id.clone(),
                height: self.h.height,
                prev_hash: self.committed.block_hash,
                prev_app_hash: self.committed.app_hash,
                timestamp_ms: ts,
                tx_root: Hash::ZERO,
                validator_set_hash: self.valset_hash,
                proposer: self.cfg.leader,
            };
            let b = Block::new_signed(header, txs.clone(), &key);
            // Never propose a block twice (same txs, same time).
            if !self.h.proposed.contains(&b.hash()) && !self.h.resets.contains_key(&b.hash()) {
                block = Some(b);
                break;
            }
            ts = ts.saturating_add(1);
        }
        let Some(block) = block else {
            return;
        };
        let hash = block.hash();
        self.ld.round = self.ld.round.saturating_add(1);
        if self.h.proposed.len() >= MAX_PROPOSED {
            // The record keeps the newest proposals: a validator still
            // locked on the oldest is not released at this height.
            self.h.proposed.remove(0);
        }
        self.h.proposed.push(hash);
        self.h.newest_ts = Some(block.header().timestamp_ms);
        out.push(Output::Persist {
            promise: self.h.promise(),
        });
        self.h.blocks.clear();
        self.h.blocks.insert(hash, block.clone());
        self.h.exec.clear();
        self.h.exec.insert(hash, Exec::Pending);
        self.h.proposal = Some(hash);
        self.h.keeper = Some(VoteKeeper::new(
            self.cfg.validators.clone(),
            self.cfg.quorum,
            self.h.height,
            hash,
        ));
        self.h.proposed_ms = self.now;
        self.h.resent_ms = self.now;
        out.push(Output::ExecuteBlock {
            block: block.clone(),
        });
        let to = self.others();
        if !to.is_empty() {
            out.push(Output::SendProposal { to, block });
        }
    }

    /// Structural checks of a leader-signed block at the next height.
    fn check_block(&self, block: &Block) -> Result<(), String> {
        let hd = block.header();
        if hd.prev_hash != self.committed.block_hash {
            return Err(format!(
                "prev hash {} is not this node's block {} at height {}",
                hd.prev_hash.short(),
                self.committed.block_hash.short(),
                self.committed.height
            ));
        }
        if hd.prev_app_hash != self.committed.app_hash {
            return Err(format!(
                "prev app hash {} is not this node's {}",
                hd.prev_app_hash.short(),
                self.committed.app_hash.short()
            ));
        }
        if !block.check_tx_root() {
            return Err("tx root does not match the txs".into());
        }
        let bytes = block
            .txs()
            .iter()
            .fold(0u64, |t, x| t.saturating_add(x.size() as u64));
        if bytes > self.cfg.max_tx_bytes_per_block() {
            return Err(format!(
                "txs weigh {bytes} bytes, at most {} fit a block",
                self.cfg.max_tx_bytes_per_block()
            ));
        }
        if let Some(last) = self.committed.last_header()
            && hd.timestamp_ms < last.timestamp_ms
        {
            return Err("timestamp before the previous block's".into());
        }
        Ok(())
    }

    /// Whether a block claims to be the leader's, for this chain and set.
    fn leader_signed(&self, block: &Block) -> bool {
        let hd = block.header();
        hd.chain_id == self.cfg.chain_id
            && hd.validator_set_hash == self.valset_hash
            && block.verify_leader(&self.cfg.leader)
    }

    /// Validator: votes at the open height: the vote is recorded durably
    /// ([`Output::Persist`]) before it is sent.
    fn vote(&mut self, vote: Vote, out: &mut Vec<Output>) {
        self.h.my_vote = Some(vote.clone());
        self.h.vote_sent_ms = self.now;
        out.push(Output::Persist {
            promise: self.h.promise(),
        });
        self.send_vote(vote, None, out);
    }

    fn send_vote(&mut self, vote: Vote, best_header: Option<BlockHeader>, out: &mut Vec<Output>) {
        out.push(Output::SendVote {
            to: self.cfg.leader,
            vote,
            best_header,
        });
    }

    fn on_proposal(&mut self, from: PublicKey, block: Block, out: &mut Vec<Output>) {
        if !self.is_validator() {
            return;
        }
        let Some(key) = self.cfg.key.clone() else {
            return;
        };
        let hash = block.hash();
        let height = block.height();
        if height == self.h.height && self.h.blocks.contains_key(&hash) {
            // A re-send: the leader has not got our vote.
            if let Some(v) = self.h.my_vote.clone()
                && v.block_hash == hash
            {
                self.h.vote_sent_ms = self.now;
                self.send_vote(v, None, out);
            }
            return;
        }
        if !self.leader_signed(&block) {
            return;
        }
        if height <= self.committed.height {
            // Already committed here: tell a lagging leader where we are.
            let v = Vote::nack(
                &key,
                &self.cfg.chain_id,
                height,
                hash,
                "height already committed",
                &[],
            );
            let best = self.committed.last_header().cloned();
            self.send_vote(v, best, out);
            return;
        }
        if height > self.h.height {
            // The leader is ahead: catch up first, keep the proposal.
            self.sync.peer_height(from, height - 1);
            if self
                .pending_proposal
                .as_ref()
                .is_none_or(|(_, p)| p.height() <= height)
            {
                self.pending_proposal = Some((from, block));
            }
            return;
        }
        if self.committing.is_some() || self.h.resets.contains_key(&hash) {
            return;
        }
        // The leader's proposals at a height have increasing header times:
        // an older one is a replay of a block it abandoned.
        let ts = block.header().timestamp_ms;
        if self.h.newest_ts.is_some_and(|n| ts < n) {
            return;
        }
        self.h.newest_ts = Some(ts);
        if let Some(v) = self.h.my_vote.clone()
            && v.ack
            && !self.h.resets.contains_key(&v.block_hash)
        {
            // Locked on another block without a reset for it: answer with
            // that vote; the leader resets it, and this proposal (the
            // newest) is taken up then.
            self.h.waiting = Some((from, block));
            self.h.vote_sent_ms = self.now;
            self.send_vote(v, None, out);
            return;
        }
        if self.behind() {
            self.pending_proposal = Some((from, block));
            return;
        }
        if let Err(reason) = self.check_block(&block) {
            let v = Vote::nack(&key, &self.cfg.chain_id, height, hash, &reason, &[]);
            self.vote(v, out);
            return;
        }
        if self.h.blocks.len() >= MAX_BLOCKS_PER_HEIGHT {
            // Make room for the newest: drop the oldest block that is
            // neither locked nor committed.
            let keep = [
                self.h.locked_on(),
                self.h.commit.as_ref().map(|k| k.block_hash),
            ];
            let oldest = self
                .h
                .blocks
                .iter()
                .filter(|(h, _)| !keep.contains(&Some(**h)))
                .min_by_key(|(_, b)| b.header().timestamp_ms)
                .map(|(h, _)| *h);
            if let Some(old) = oldest {
                self.h.blocks.remove(&old);
                self.h.exec.remove(&old);
            }
        }
        self.h.blocks.insert(hash, block.clone());
        self.h.exec.insert(hash, Exec::Pending);
        out.push(Output::ExecuteBlock { block });
    }

    fn on_reset(&mut self, height: u64, hash: Hash, sig: Signature, out: &mut Vec<Output>) {
        if height != self.h.height || self.h.resets.contains_key(&hash) {
            return;
        }
        let digest = sign::reset_digest(&self.cfg.chain_id, height, &hash);
        if !sign::verify(&self.cfg.leader, &digest, &sig) {
            return;
        }
        if self.h.commit.as_ref().is_some_and(|k| k.block_hash == hash) {
            self.halt(
                format!(
                    "the leader signed a reset for block {hash} at height {height}, which a quorum \
                     committed: the leader key is misbehaving; stop the network and investigate"
                ),
                out,
            );
            return;
        }
        self.h.add_reset(hash, sig);
        if self
            .h
            .my_vote
            .as_ref()
            .is_some_and(|v| v.block_hash == hash)
        {
            // Released (the record keeps the old vote until the next one:
            // after a restart the node is locked again until the leader
            // re-sends this reset, which is only safe-side).
            self.h.my_vote = None;
            if let Some((from, block)) = self.h.waiting.take() {
                self.on_proposal(from, block, out);
            }
        }
    }

    fn on_executed(
        &mut self,
        height: u64,
        hash: Hash,
        result: Result<Hash, ExecError>,
        out: &mut Vec<Output>,
    ) {
        if height != self.h.height || !matches!(self.h.exec.get(&hash), Some(Exec::Pending)) {
            return;
        }
        self.h.exec.insert(hash, Exec::Done(result.clone()));
        if self.is_leader() && self.h.proposal == Some(hash) {
            match result {
                Ok(app) => {
                    if let Some(key) = &self.cfg.key {
                        let own = Vote::ack(key, &self.cfg.chain_id, height, hash, app);
                        if let Some(k) = self.h.keeper.as_mut() {
                            k.add(own);
                        }
                    }
                    self.leader_check_quorum(out);
                }
                Err(e) => {
                    if !e.bad_txs.is_empty() {
                        out.push(Output::DropTxs {
                            hashes: e.bad_txs.clone(),
                        });
                    }
                    self.leader_reset(&format!("invalid block: {}", e.reason), out);
                }
            }
            return;
        }
        if self.is_validator()
            && self.h.commit.is_none()
            && !self.h.resets.contains_key(&hash)
            && self.h.locked_on().is_none_or(|l| l == hash)
            && self.h.my_vote.as_ref().is_none_or(|v| v.block_hash != hash)
            && let Some(key) = &self.cfg.key
        {
            let vote = match &result {
                Ok(app) => Vote::ack(key, &self.cfg.chain_id, height, hash, *app),
                Err(e) => Vote::nack(key, &self.cfg.chain_id, height, hash, &e.reason, &e.bad_txs),
            };
            self.vote(vote, out);
        }
        self.try_commit(out);
    }

    /// Leader: a vote. One validator's votes cost bounded work per height:
    /// a vote for a committed height costs a rate-limited re-announce and
    /// no signature check; a vote for a later height is a claim and is
    /// ignored (heights are learned only from proven commits); at the open
    /// height, one signature check per vote for the proposal until the
    /// voter is counted, and a vote for a block this leader proposed
    /// earlier costs one reset per resend interval (a reset is public and
    /// harmless, so it is sent without a signature check). Votes for any
    /// other block are ignored: the leader signs resets only for blocks it
    /// proposed. The unsigned `best_header` hint is never acted on.
    fn on_vote(&mut self, vote: Vote, _best: Option<BlockHeader>, out: &mut Vec<Output>) {
        if !self.is_leader() || !self.cfg.validators.contains(&vote.validator) {
            return;
        }
        let voter = vote.validator;
        if vote.height < self.h.height {
            // The voter lags: answering costs one rate-limited announce of
            // public data, so the vote is not worth a signature check.
            self.reannounce_to(voter, out);
            return;
        }
        if vote.height > self.h.height {
            return;
        }
        if Some(vote.block_hash) == self.h.proposal {
            if self
                .h
                .keeper
                .as_ref()
                .is_some_and(|k| k.voted(&vote.validator))
                || !vote.verify(&self.cfg.chain_id)
            {
                return;
            }
            if let Some(k) = self.h.keeper.as_mut() {
                k.add(vote);
            }
            self.leader_check_quorum(out);
            return;
        }
        // A vote for a block this leader proposed at this height and
        // abandoned (before a restart, or reset): the voter is locked on
        // it; send the reset that releases it. Not while this leader may
        // be behind the network.
        let bh = vote.block_hash;
        if self.behind() || !self.h.proposed.contains(&bh) {
            return;
        }
        if let Some(t) = self.h.reset_sent.get(&voter)
            && self.now < t.saturating_add(self.cfg.vote_resend_interval_ms)
        {
            return;
        }
        let sig = match self.h.resets.get(&bh) {
            Some(s) => *s,
            None => {
                let Some(key) = &self.cfg.key else {
                    return;
                };
                let s = key.sign_digest(&sign::reset_digest(&self.cfg.chain_id, vote.height, &bh));
                self.h.add_reset(bh, s);
                s
            }
        };
        self.h.reset_sent.insert(voter, self.now);
        out.push(Output::SendReset {
            height: vote.height,
            block_hash: bh,
            leader_sig: sig,
            reason: "superseded".into(),
            to: Target::Peers(vec![voter]),
        });
    }

    fn leader_check_quorum(&mut self, out: &mut Vec<Output>) {
        if self.committing.is_some() {
            return;
        }
        let Some(hash) = self.h.proposal else {
            return;
        };
        let Some(Exec::Done(Ok(app))) = self.h.exec.get(&hash) else {
            return;
        };
        let app = *app;
        let Some(keeper) = &self.h.keeper else {
            return;
        };
        if let Some(ci) = keeper.commit_info(&app) {
            let Some(block) = self.h.blocks.get(&hash).cloned() else {
                return;
            };
            self.h.commit = Some(KnownCommit {
                block_hash: hash,
                header: block.header().clone(),
                leader_sig: *block.leader_sig(),
                commit_info: ci.clone(),
            });
            self.committing = Some(hash);
            out.push(Output::Commit {
                block,
                commit_info: ci,
            });
            return;
        }
        if keeper.quorum_nack(&app) || keeper.ack_impossible(&app) {
            let in_block: Vec<Hash> = self
                .h
                .blocks
                .get(&hash)
                .map(|b| b.txs().iter().map(Tx::hash).collect())
                .unwrap_or_default();
            let mut drop: Vec<Hash> = keeper
                .nacks()
                .flat_map(|v| v.bad_txs.iter().copied())
                .filter(|h| in_block.contains(h))
                .collect();
            drop.sort();
            drop.dedup();
            if !drop.is_empty() {
                out.push(Output::DropTxs { hashes: drop });
            }
            self.leader_reset("the validators refused the block", out);
        }
    }

    /// Leader: abandons the current proposal with a signed reset and
    /// proposes the height again.
    fn leader_reset(&mut self, reason: &str, out: &mut Vec<Output>) {
        let Some(hash) = self.h.proposal else {
            return;
        };
        let Some(key) = self.cfg.key.clone() else {
            return;
        };
        let height = self.h.height;
        let sig = key.sign_digest(&sign::reset_digest(&self.cfg.chain_id, height, &hash));
        self.h.add_reset(hash, sig);
        self.h.proposal = None;
        self.h.keeper = None;
        self.ld.rebuild_now = true;
        let to = self.others();
        if !to.is_empty() {
            out.push(Output::SendReset {
                height,
                block_hash: hash,
                leader_sig: sig,
                reason: reason.to_owned(),
                to: Target::Peers(to),
            });
        }
    }

    fn on_announce(
        &mut self,
        from: Option<PublicKey>,
        header: BlockHeader,
        sig: Signature,
        ci: CommitInfo,
        out: &mut Vec<Output>,
    ) {
        if header.chain_id != self.cfg.chain_id {
            return;
        }
        let hash = header.hash();
        let height = header.height;
        if height < self.h.height {
            if height == self.committed.height
                && hash != self.committed.block_hash
                && self.commit_proof_ok(&header, &hash, &sig, &ci)
            {
                self.halt(conflict(height, &self.committed.block_hash, &hash), out);
            }
            return;
        }
        if self.h.commit.as_ref().is_some_and(|k| k.block_hash == hash) {
            return;
        }
        if !self.commit_proof_ok(&header, &hash, &sig, &ci) {
            return;
        }
        match from {
            Some(p) => self.sync.peer_height(p, height),
            None => self.sync.hint_height(height),
        }
        if height == self.h.height {
            self.learn_commit(
                KnownCommit {
                    block_hash: hash,
                    header,
                    leader_sig: sig,
                    commit_info: ci,
                },
                out,
            );
            self.try_commit(out);
        }
    }

    /// Records a verified commit for the current height; halts on conflict.
    fn learn_commit(&mut self, kc: KnownCommit, out: &mut Vec<Output>) {
        if let Some(k) = &self.h.commit {
            if k.block_hash != kc.block_hash {
                let msg = conflict(self.h.height, &k.block_hash, &kc.block_hash);
                self.halt(msg, out);
            }
            return;
        }
        if self.h.resets.contains_key(&kc.block_hash) {
            self.halt(
                format!(
                    "block {} at height {} was reset by the leader and then committed: the \
                     leader key is misbehaving; stop the network and investigate",
                    kc.block_hash, self.h.height
                ),
                out,
            );
            return;
        }
        self.h.commit = Some(kc);
    }

    fn commit_proof_ok(
        &self,
        header: &BlockHeader,
        hash: &Hash,
        sig: &Signature,
        ci: &CommitInfo,
    ) -> bool {
        header.chain_id == self.cfg.chain_id
            && header.validator_set_hash == self.valset_hash
            && verify_header_sig(&header.proposer, hash, sig, &self.cfg.leader)
            && ci
                .verify(
                    &self.cfg.chain_id,
                    header.height,
                    hash,
                    &self.cfg.validators,
                    self.cfg.quorum,
                )
                .is_ok()
    }

    /// Commits the known commit of this height once its block is executed
    /// (executing or fetching it first).
    fn try_commit(&mut self, out: &mut Vec<Output>) {
        if self.committing.is_some() || self.halted.is_some() {
            return;
        }
        let Some(kc) = self.h.commit.clone() else {
            return;
        };
        let Some(block) = self.h.blocks.get(&kc.block_hash).cloned() else {
            // The block will come from block sync (the planner knows the
            // height exists).
            self.sync.hint_height(self.h.height);
            return;
        };
        match self.h.exec.get(&kc.block_hash) {
            None => {
                self.h.exec.insert(kc.block_hash, Exec::Pending);
                out.push(Output::ExecuteBlock { block });
            }
            Some(Exec::Pending) => {}
            Some(Exec::Done(Ok(app))) if *app == kc.commit_info.app_hash => {
                self.committing = Some(kc.block_hash);
                out.push(Output::Commit {
                    block,
                    commit_info: kc.commit_info,
                });
            }
            Some(Exec::Done(Ok(app))) => {
                let msg = format!(
                    "app hash mismatch at height {}: this node computed {} for block {} but a quorum \
                     of validators committed {}; this node's state or software differs from the \
                     network's: it stops rather than fork (re-sync it from a trusted peer after \
                     finding the cause)",
                    self.h.height, app, kc.block_hash, kc.commit_info.app_hash
                );
                self.halt(msg, out);
            }
            Some(Exec::Done(Err(e))) => {
                let msg = format!(
                    "block {} at height {} was committed by a quorum but is invalid here ({}); this \
                     node's state or software differs from the network's: it stops rather than fork",
                    kc.block_hash, self.h.height, e.reason
                );
                self.halt(msg, out);
            }
        }
    }

    /// Keeps a fetched block until its height comes (within the window).
    fn keep_fetched(
        &mut self,
        from: Option<PublicKey>,
        block: Block,
        ci: CommitInfo,
        checked: bool,
    ) {
        let height = block.height();
        // The planner asks for up to a window past what is committed or
        // being applied; anything further was not asked for.
        let next = self.next_to_apply();
        let limit = next.saturating_add(self.cfg.sync_window.max(1));
        if height < next || height > limit || self.fetched.contains_key(&height) {
            return;
        }
        let bytes: usize = block.txs().iter().map(|t| t.size()).sum();
        self.sync
            .block_size(u64::try_from(bytes).unwrap_or(u64::MAX).saturating_add(512));
        self.sync.received(height);
        self.fetched.insert(
            height,
            Fetched {
                block,
                ci,
                from,
                checked,
            },
        );
    }

    /// The next height not yet committed nor being applied.
    fn next_to_apply(&self) -> u64 {
        self.applying
            .back()
            .map_or(self.h.height, |k| k.header.height.saturating_add(1))
    }

    /// Block sync's fast path: sends the checked fetched blocks that extend
    /// the committed tip (or the blocks already being applied) to the store
    /// in one [`Output::ApplyBlocks`], at most [`APPLY_BATCH`] blocks or
    /// [`APPLY_BATCH_TXS`] txs, with at most [`MAX_APPLYING`] in flight.
    /// Not while this height's block is executed or committed the slow way
    /// (a validator's proposal).
    fn queue_applies(&mut self, out: &mut Vec<Output>) {
        if self.halted.is_some() || (self.applying.is_empty() && self.committing.is_some()) {
            return;
        }
        let (mut height, mut hash, mut app) = match self.applying.back() {
            Some(k) => (k.header.height, k.block_hash, k.commit_info.app_hash),
            None => {
                if !self.h.exec.is_empty() {
                    return;
                }
                (
                    self.committed.height,
                    self.committed.block_hash,
                    self.committed.app_hash,
                )
            }
        };
        let mut batch: Vec<(Block, CommitInfo)> = Vec::new();
        let mut txs = 0usize;
        // In flight: at most MAX_APPLYING blocks and at most the planner's
        // window (which shrinks for large blocks), so applying and fetched
        // blocks together stay within about twice the sync buffer.
        let in_flight = MAX_APPLYING.min(usize::try_from(self.sync.window()).unwrap_or(usize::MAX));
        while self.applying.len() < in_flight && batch.len() < APPLY_BATCH && txs < APPLY_BATCH_TXS
        {
            let next = height.saturating_add(1);
            if !self.fetched.get(&next).is_some_and(|f| f.checked) {
                break;
            }
            let Some(f) = self.fetched.remove(&next) else {
                break;
            };
            let hd = f.block.header();
            if hd.prev_hash != hash || hd.prev_app_hash != app {
                // A quorum committed this block on top of another block
                // (or state) than the one this node has or applies.
                let msg = format!(
                    "the network committed block {} at height {next} on top of block {} (app hash \
                     {}), but this node holds block {hash} (app hash {app}) at height {height}: \
                     this node is on another chain; it stops",
                    f.block.hash(),
                    hd.prev_hash,
                    hd.prev_app_hash
                );
                self.halt(msg, out);
                return;
            }
            let kc = KnownCommit {
                block_hash: f.block.hash(),
                header: hd.clone(),
                leader_sig: *f.block.leader_sig(),
                commit_info: f.ci.clone(),
            };
            if next == self.h.height {
                self.learn_commit(kc.clone(), out);
                if self.halted.is_some() {
                    return;
                }
            }
            (height, hash, app) = (next, kc.block_hash, kc.commit_info.app_hash);
            txs = txs.saturating_add(f.block.txs().len());
            self.applying.push_back(kc);
            batch.push((f.block, f.ci));
        }
        if batch.is_empty() {
            return;
        }
        self.committing = self.applying.front().map(|k| k.block_hash);
        out.push(Output::ApplyBlocks { blocks: batch });
    }

    /// The store applied (executed, checked against the commit info and
    /// committed) the first blocks of `applying`; `failed` is the block
    /// it could not.
    fn on_applied(
        &mut self,
        applied: Vec<(u64, Hash, Hash)>,
        failed: Option<(u64, Hash, String)>,
        out: &mut Vec<Output>,
    ) {
        let mut moved = false;
        for (height, hash, app) in applied {
            let matches = self
                .applying
                .front()
                .is_some_and(|k| k.header.height == height && k.block_hash == hash);
            if !matches || height != self.h.height {
                break;
            }
            let Some(kc) = self.applying.pop_front() else {
                break;
            };
            if !self.record_commit(height, hash, app, kc, out) {
                return;
            }
            moved = true;
        }
        // The next block being applied is this height's commit.
        if let Some(next) = self.applying.front() {
            self.committing = Some(next.block_hash);
            self.h.commit = Some(next.clone());
        } else if moved {
            self.committing = None;
            self.after_commit(out);
        }
        if let Some((height, hash, reason)) = failed
            && self.applying.front().is_some_and(|k| k.block_hash == hash)
        {
            let msg = format!(
                "block {hash} at height {height} was committed by a quorum but is invalid here \
                 ({reason}); this node's state or software differs from the network's: it stops \
                 rather than fork"
            );
            self.halt(msg, out);
        }
    }

    /// Uses the fetched block of the current height, if there is one.
    fn process_fetched(&mut self, out: &mut Vec<Output>) {
        self.queue_applies(out);
        while self.committing.is_none() && self.halted.is_none() {
            let next = self.h.height;
            let stale = self.fetched.split_off(&next);
            self.fetched = stale;
            let Some(Fetched {
                block, ci, from, ..
            }) = self.fetched.remove(&next)
            else {
                return;
            };
            let hash = block.hash();
            let hd = block.header();
            // A commit already verified for this very header needs no
            // second check of its signatures.
            let known = self
                .h
                .commit
                .as_ref()
                .is_some_and(|k| k.block_hash == hash && k.leader_sig == *block.leader_sig());
            let proof = hd.height == next
                && block.check_tx_root()
                && (known || self.commit_proof_ok(hd, &hash, block.leader_sig(), &ci));
            if !proof {
                self.sync.failed(next, from, self.now);
                continue;
            }
            if hd.prev_hash != self.committed.block_hash {
                let msg = format!(
                    "the network committed block {hash} at height {next} on top of {}, but this \
                     node committed {} at height {}: this node is on another chain; it stops",
                    hd.prev_hash, self.committed.block_hash, self.committed.height
                );
                self.halt(msg, out);
                return;
            }
            if hd.prev_app_hash != self.committed.app_hash {
                let msg = format!(
                    "app hash mismatch at height {}: this node has {} but the network built height \
                     {next} on {}; it stops rather than fork",
                    self.committed.height, self.committed.app_hash, hd.prev_app_hash
                );
                self.halt(msg, out);
                return;
            }
            let kc = KnownCommit {
                block_hash: hash,
                header: hd.clone(),
                leader_sig: *block.leader_sig(),
                commit_info: ci,
            };
            self.h.blocks.insert(hash, block);
            self.learn_commit(kc, out);
            self.try_commit(out);
            return;
        }
    }

    fn on_committed(&mut self, height: u64, hash: Hash, app: Hash, out: &mut Vec<Output>) {
        if self.committing != Some(hash) || height != self.h.height {
            return;
        }
        let Some(kc) = self.h.commit.take() else {
            return;
        };
        if self.record_commit(height, hash, app, kc, out) {
            self.committing = None;
            self.after_commit(out);
        }
    }

    /// Moves the committed tip to the block `kc` the store committed at
    /// `height` with app hash `app`, and opens the next height. Halts (and
    /// answers false) when `app` is not the quorum's.
    fn record_commit(
        &mut self,
        height: u64,
        hash: Hash,
        app: Hash,
        kc: KnownCommit,
        out: &mut Vec<Output>,
    ) -> bool {
        if app != kc.commit_info.app_hash {
            let msg = format!(
                "the store committed app hash {app} at height {height}, the quorum's is {}; stopping",
                kc.commit_info.app_hash
            );
            self.halt(msg, out);
            return false;
        }
        self.committed = CommittedState {
            height,
            block_hash: hash,
            app_hash: app,
            last: Some(LastCommit {
                header: kc.header,
                leader_sig: kc.leader_sig,
                commit_info: kc.commit_info,
            }),
        };
        self.h = HeightState::new(height.saturating_add(1));
        self.sync.advance(self.h.height);
        true
    }

    /// What follows a commit once nothing is being committed: the leader's
    /// announce and new height, a proposal kept for this height, fetched
    /// blocks.
    fn after_commit(&mut self, out: &mut Vec<Output>) {
        if self.is_leader() {
            // Recorded before the announce, so a store that loses this
            // commit (not durable) is refused at restart instead of
            // re-proposing a height the validators committed.
            out.push(Output::Persist {
                promise: self.h.promise(),
            });
            self.announce(Target::All, out);
            self.ld.height_open_ms = self.now;
            self.ld.rebuild_now = false;
            self.ld.round = 0;
            self.ld.txs_since = (self.ld.mempool_txs > 0).then_some(self.now);
        }
        if let Some((from, b)) = self.pending_proposal.take() {
            if b.height() == self.h.height {
                self.on_proposal(from, b, out);
            } else if b.height() > self.h.height {
                self.pending_proposal = Some((from, b));
            }
        }
        self.process_fetched(out);
    }

    fn on_peer_status(&mut self, peer: PublicKey, height: u64, out: &mut Vec<Output>) {
        if Some(peer) == self.me {
            return;
        }
        self.sync.peer_height(peer, height);
        if self.is_leader() && self.behind() && self.h.proposal.is_some() {
            // A proven height above this leader's (the node checks a status
            // claim before it feeds it): its proposal cannot commit; catch
            // up first.
            self.leader_reset("behind the network: catching up", out);
        }
        if height < self.committed.height {
            self.reannounce_to(peer, out);
        }
    }

    fn drive_sync(&mut self, out: &mut Vec<Output>) {
        if self.committing.is_some() && self.applying.is_empty() {
            return;
        }
        let mut next = self.next_to_apply();
        if self
            .h
            .commit
            .as_ref()
            .is_some_and(|k| self.h.blocks.contains_key(&k.block_hash))
        {
            next = next.saturating_add(1);
        }
        for r in self.sync.plan(self.now, next) {
            out.push(Output::RequestBlocks {
                from_height: r.from_height,
                to_height: r.to_height,
                peer: r.peer,
            });
        }
    }

    fn next_deadline(&self) -> Option<(u64, TimeoutKind)> {
        let mut best: Option<(u64, TimeoutKind)> = None;
        let mut consider = |t: u64, k: TimeoutKind| {
            if best.is_none_or(|(b, _)| t < b) {
                best = Some((t, k));
            }
        };
        let resend = self.cfg.vote_resend_interval_ms;
        if self.is_leader() && self.committing.is_none() {
            if self.h.proposal.is_some() {
                consider(
                    self.h.resent_ms.saturating_add(resend),
                    TimeoutKind::ResendProposal,
                );
                consider(
                    self.h.proposed_ms.saturating_add(self.cfg.round_timeout_ms),
                    TimeoutKind::Round,
                );
            } else if self.can_propose() {
                if let Some(t) = self.ld.txs_since {
                    consider(
                        t.saturating_add(self.cfg.propose_timeout_ms),
                        TimeoutKind::Propose,
                    );
                }
                if self.cfg.empty_block_timeout_ms > 0 {
                    consider(
                        self.ld
                            .height_open_ms
                            .saturating_add(self.cfg.empty_block_timeout_ms),
                        TimeoutKind::Propose,
                    );
                }
            }
        }
        if self.is_validator() && self.h.my_vote.is_some() {
            consider(
                self.h.vote_sent_ms.saturating_add(resend),
                TimeoutKind::ResendVote,
            );
        }
        if let Some(t) = self.sync.next_deadline(self.now) {
            consider(t, TimeoutKind::Sync);
        }
        best
    }

    fn schedule(&mut self, out: &mut Vec<Output>) {
        let Some((t, kind)) = self.next_deadline() else {
            return;
        };
        let at = t.max(self.now.saturating_add(1));
        let due = self.scheduled.is_none_or(|s| s <= self.now || at < s);
        if due {
            self.scheduled = Some(at);
            out.push(Output::ScheduleTimeout { at_ms: at, kind });
        }
    }
}

fn conflict(height: u64, a: &Hash, b: &Hash) -> String {
    format!(
        "two blocks committed at height {height}: {a} and {b}, each with a valid quorum: the \
         leader key is misbehaving or the validators' keys are compromised; stopping rather than \
         fork"
    )
}
