//! The commit engine: one pure state machine for the leader, validators and
//! sentries. See docs/CONSENSUS.md for the protocol and its safety argument.
//!
//! [`Engine::handle`] takes one [`Input`] and returns the [`Output`]s the node
//! must carry out, in order. The engine reads no clock (time comes in
//! [`Input::Tick`]), does no I/O, and trusts no input: signatures of blocks,
//! resets, votes and commit infos are checked here.
//!
//! One `impl Engine` per concern: this file holds the state, construction,
//! restore, status and the dispatch of inputs; `leader` proposes and counts
//! votes; `validator` checks proposals, votes and keeps locks; `follower`
//! commits what a quorum committed; `catchup` handles fetched blocks and
//! block sync; `terms` moves between terms (leader failover); `timers`
//! re-sends and times out.

use crate::config::{CommittedState, EngineConfig, LastCommit, Role};
use crate::io::{ExecError, Input, Output, Target, TimeoutKind};
use crate::sync::SyncPlanner;
use crate::votekeeper::VoteKeeper;
use kite_types::block::verify_header_sig;
use kite_types::promise::MAX_PROPOSED;
use kite_types::{
    Acked, BLOCK_VERSION, Block, BlockHeader, CommitInfo, Credential, Hash, Promise, PublicKey,
    Signature, TermChange, Tx, Vote, sign,
};
use std::collections::{BTreeMap, VecDeque};

mod catchup;
mod follower;
mod leader;
mod terms;
mod timers;
mod validator;

pub use terms::{HandOver, HandOverError};

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
/// Leader: most votes with a bad signature checked per validator per
/// height; later votes of that validator at that height are ignored
/// unchecked (votes come from their signer's own peer, so nobody else can
/// use up a validator's allowance).
pub const MAX_BAD_VOTES_PER_HEIGHT: u32 = 4;
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
         contradict what it signed. Give it a store at height {need} or later and keep its \
         promise file: sync one in a fresh home started as a sentry and move that data/ here, or \
         restore a newer copy (starting this node itself from a fresh home forgets what it signed \
         at height {promised})"
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

/// What the engine is doing at the open height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Nothing in flight (a validator waits for a proposal, the leader for
    /// txs or its propose timeout).
    Idle,
    /// Leader: the mempool is building a block.
    Building,
    /// Leader: a proposal is out, votes are being counted.
    Proposed,
    /// Validator: it voted at this height.
    Voted,
    /// A block of this height (or a sync batch) is being committed.
    Committing,
    /// Behind a proven height: block sync first.
    Syncing,
    /// Stopped for good ([`Output::Halt`]).
    Halted,
}

impl Step {
    /// The lowercase name used in status RPCs, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Idle => "idle",
            Step::Building => "building",
            Step::Proposed => "proposed",
            Step::Voted => "voted",
            Step::Committing => "committing",
            Step::Syncing => "syncing",
            Step::Halted => "halted",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// What it is doing.
    pub step: Step,
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
    /// The term this node is in.
    pub term: u64,
    /// The schedule's leader of that term.
    pub leader: PublicKey,
    /// Whether a leader holds a quorum's credential for the term (always
    /// in term 0); while not, validators wait for one and do not vote.
    pub term_settled: bool,
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
    /// Leader: votes with a bad signature per validator at this height
    /// (bounded by the validator set).
    bad_votes: BTreeMap<PublicKey, u32>,
    /// Term changes made at this height: each validator's highest
    /// (verified; bounded by the validator set).
    changes: BTreeMap<PublicKey, TermChange>,
    /// This node's own term change at this height, and when it was last
    /// sent.
    my_change: Option<TermChange>,
    change_sent_ms: u64,
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
            bad_votes: BTreeMap::new(),
            changes: BTreeMap::new(),
            my_change: None,
            change_sent_ms: 0,
        }
    }

    /// What this node promised at this height in `term` (with the
    /// credential of `term` it holds), for [`Output::Persist`].
    fn promise(&self, term: u64, credential: Option<&Credential>) -> Promise {
        let block = self
            .my_vote
            .as_ref()
            .filter(|v| v.ack)
            .and_then(|v| self.blocks.get(&v.block_hash))
            .cloned();
        Promise {
            height: self.height,
            vote: self.my_vote.clone(),
            proposed: self.proposed.clone(),
            newest_ts: if self.proposed.is_empty() {
                0
            } else {
                self.newest_ts.unwrap_or(0)
            },
            term,
            block,
            credential: credential.filter(|c| c.term == term).cloned(),
        }
    }

    /// This node's ACK at this height, as a term change reports it: the
    /// block, the term of the ACK and the block's header time.
    fn acked(&self) -> Option<Acked> {
        let v = self.my_vote.as_ref().filter(|v| v.ack)?;
        if self.resets.contains_key(&v.block_hash) {
            return None;
        }
        let b = self.blocks.get(&v.block_hash)?;
        Some(Acked {
            block_hash: v.block_hash,
            term: v.term,
            timestamp_ms: b.header().timestamp_ms,
        })
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
    /// A proposal above the open height (or while behind), with its term
    /// and credential, kept for when this node gets there.
    pending_proposal: Option<(PublicKey, Block, u64, Option<Credential>)>,
    fetched: BTreeMap<u64, Fetched>,
    /// Block sync: checked blocks sent to the store in
    /// [`Output::ApplyBlocks`] and not yet reported applied, in height
    /// order from the current height. While it is not empty, `committing`
    /// is its first block.
    applying: VecDeque<KnownCommit>,
    sync: SyncPlanner,
    scheduled: Option<u64>,
    /// The term this node is in (persisted before anything reveals it).
    term: u64,
    /// Above term 0: the verified credential of `term`, once known (the
    /// leader of `term` assembled it, or a proposal carried it).
    cred: Option<Credential>,
    /// The last sign of life of the leader of `term` (or of a commit).
    progress_ms: u64,
    /// Terms joined since the last commit (the leader timeout doubles).
    quiet_terms: u32,
    /// A term this node must not lead: it led it before a restart and did
    /// not keep what it proposed there (the validators move on).
    resigned: Option<u64>,
    /// An operator's hand-over waiting to be carried out.
    handover: Option<PendingHandOver>,
}

/// An operator's hand-over (see [`Engine::plan_hand_over`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingHandOver {
    /// The term to move to.
    target: u64,
    /// The term it was asked in (dropped once the node left it).
    from: u64,
    /// When it was first asked.
    asked_ms: u64,
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
            term: 0,
            cred: None,
            progress_ms: 0,
            quiet_terms: 0,
            resigned: None,
            handover: None,
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
        }
        // The term holds at every height: never go back to an earlier one.
        // A leader of a term above 0 does not lead it again after a
        // restart (what it proposed there is not all kept): validators move
        // on to the next. Any other validator takes its verified credential
        // back, so the term's proposals are taken at once.
        self.term = promise.term;
        if promise.term > 0 {
            if self.me == Some(self.cfg.schedule.leader(promise.term)) {
                self.resigned = Some(promise.term);
            } else if let Some(c) = &promise.credential
                && c.term == promise.term
                && c.height <= open
                && c.verify(&self.cfg.chain_id, &self.cfg.validators, self.cfg.quorum)
                    .is_ok()
            {
                self.cred = Some(c.clone());
            }
        }
        if promise.height < open {
            return Ok(());
        }
        if let Some(v) = &promise.vote
            && self.is_member()
        {
            self.h.my_vote = Some(v.clone());
            // Re-sent on the first tick.
            self.h.vote_sent_ms = 0;
            if let Some(b) = &promise.block
                && v.ack
                && b.hash() == v.block_hash
                && b.height() == open
            {
                self.h.blocks.insert(v.block_hash, b.clone());
            }
        }
        if self.term == 0
            && self.is_leader()
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
                let sig = key.sign_digest(&sign::reset_digest(&self.cfg.chain_id, 0, open, bh));
                self.h.add_reset(*bh, sig);
            }
            self.ld.round = u32::try_from(proposed.len()).unwrap_or(u32::MAX);
            if !proposed.is_empty() {
                self.h.newest_ts = Some(promise.newest_ts);
            }
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
            Step::Halted
        } else if self.committing.is_some() {
            Step::Committing
        } else if self.behind() {
            Step::Syncing
        } else if self.h.proposal.is_some() {
            Step::Proposed
        } else if self.ld.building {
            Step::Building
        } else if self.h.my_vote.is_some() {
            Step::Voted
        } else {
            Step::Idle
        };
        EngineStatus {
            committed_height: self.committed.height,
            committed_hash: self.committed.block_hash,
            app_hash: self.committed.app_hash,
            height: self.h.height,
            round: self.ld.round,
            step,
            proposal: self.h.proposal,
            locked_on: self.locked_on(),
            sync_target: self.sync.target(),
            sync_in_flight: self.sync.in_flight(),
            halted: self.halted.clone(),
            term: self.term,
            leader: self.cfg.schedule.leader(self.term),
            term_settled: self.settled(),
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
            Input::ProposalReceived {
                from,
                block,
                term,
                credential,
            } => self.on_proposal(from, block, term, credential, &mut out),
            Input::TermChangeReceived {
                from,
                change,
                block,
            } => self.on_term_change(from, change, block, &mut out),
            Input::ResetReceived {
                term,
                height,
                block_hash,
                leader_sig,
            } => self.on_reset(term, height, block_hash, leader_sig, &mut out),
            Input::BlockExecuted {
                height,
                block_hash,
                result,
            } => self.on_executed(height, block_hash, result, &mut out),
            Input::VoteReceived {
                from,
                vote,
                best_header,
            } => self.on_vote(from, vote, best_header, &mut out),
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
            Input::HandOver { to, force } => self.on_hand_over(to, force),
        }
        if self.halted.is_none() {
            self.maybe_hand_over(&mut out);
            self.take_over(&mut out);
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

    /// A validator with its key (leader or not): it votes, and leads the
    /// terms the schedule gives it.
    fn is_member(&self) -> bool {
        self.cfg.role != Role::Sentry && self.me.is_some_and(|k| self.cfg.validators.contains(&k))
    }

    /// Whether the leader of this term may lead: term 0 needs nothing,
    /// any later term the credential of a quorum.
    fn settled(&self) -> bool {
        self.term == 0 || self.cred.as_ref().is_some_and(|c| c.term == self.term)
    }

    /// This node leads: it is the schedule's leader of its term, and the
    /// term is settled.
    fn is_leader(&self) -> bool {
        self.is_member()
            && self.me == Some(self.cfg.schedule.leader(self.term))
            && self.resigned != Some(self.term)
            && self.settled()
    }

    /// What this node promised at the open height, for [`Output::Persist`].
    fn promise(&self) -> Promise {
        self.h.promise(self.term, self.cred.as_ref())
    }

    /// This node votes on the leader's proposals.
    fn is_validator(&self) -> bool {
        self.is_member() && !self.is_leader()
    }

    /// The leader of this node's term.
    fn term_leader(&self) -> PublicKey {
        self.cfg.schedule.leader(self.term)
    }

    /// The block this node is locked on at the open height: its ACK, unless
    /// the leader of that term reset the block or a credential of a later
    /// term released it.
    fn locked_on(&self) -> Option<Hash> {
        let v = self.h.my_vote.as_ref()?;
        if v.term < self.term && self.settled() {
            return None;
        }
        self.h.locked_on()
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

    /// A validator (the leader, or any when a lagging validator's term
    /// change shows it) re-announces the last commit to a peer that lags,
    /// at most once per resend interval.
    fn reannounce_to(&mut self, peer: PublicKey, out: &mut Vec<Output>) {
        if !self.is_member() || self.committed.last.is_none() {
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
        self.progress_ms = self.now;
        if self.is_leader() {
            // A leader that crashed after committing but before announcing
            // re-announces its last commit.
            self.announce(Target::All, out);
        }
        if self.resigned == Some(self.term) && self.is_member() {
            // A restarted leader of a term above 0 does not lead it again:
            // it moves to the next term at once, and its validators follow
            // it (instead of waiting for their leader timeout).
            let next = self.term.saturating_add(1);
            self.enter_term(next, true, out);
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
