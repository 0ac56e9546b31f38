//! What goes into the engine ([`Input`]) and what comes out ([`Output`]).
//!
//! Peers are named by their ed25519 public key (a Kite node's libp2p
//! identity is its node key).

use kite_types::{
    Block, BlockHeader, CommitInfo, Credential, Hash, Promise, PublicKey, Signature, TermChange,
    Tx, Vote,
};

/// Why a block failed to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecError {
    /// The txs that made it invalid (bad signature, nonce, balance...).
    pub bad_txs: Vec<Hash>,
    /// Human-readable reason.
    pub reason: String,
}

/// An event fed to the engine.
#[derive(Debug, Clone)]
pub enum Input {
    /// The clock (unix milliseconds on a real node). Feed it at least at
    /// every [`Output::ScheduleTimeout`] time; the engine checks all its
    /// deadlines on every tick. Time never goes backwards in the engine.
    Tick {
        /// Now.
        now_ms: u64,
    },
    /// What the mempool holds (after admissions and commits). The leader
    /// builds blocks from it; a validator that holds txs expects the
    /// leader to propose them.
    MempoolStatus {
        /// Number of txs waiting.
        txs: usize,
        /// Their total encoded size.
        bytes: u64,
    },
    /// Leader: the txs the mempool picked after [`Output::BuildBlock`].
    BlockBuilt {
        /// The txs, in block order.
        txs: Vec<Tx>,
    },
    /// A proposal (the full block) from the blkprop handler.
    ProposalReceived {
        /// The peer that sent it.
        from: PublicKey,
        /// The proposed block (unverified).
        block: Block,
        /// The term it is proposed in: the block's own term, or a later
        /// one when the leader of that term proposes a block its
        /// credential carries.
        term: u64,
        /// Above term 0: the quorum of term changes that lets the leader
        /// of `term` lead (unverified).
        credential: Option<Credential>,
    },
    /// A validator's term change (unverified), with the block it ACKed
    /// when it is sent to the leader of the new term.
    TermChangeReceived {
        /// The peer that sent it, when known: validators send their own.
        from: Option<PublicKey>,
        /// The change.
        change: TermChange,
        /// The block of `change.acked` (unverified), if attached.
        block: Option<Block>,
    },
    /// A reset from the leader of `term` (unverified).
    ResetReceived {
        /// The term of the reset.
        term: u64,
        /// Height of the abandoned block.
        height: u64,
        /// The abandoned block.
        block_hash: Hash,
        /// The leader's signature over the reset digest.
        leader_sig: Signature,
    },
    /// The node executed a block after [`Output::ExecuteBlock`] on a staged
    /// state above the committed state; it keeps that staged state until
    /// the next commit.
    BlockExecuted {
        /// Height of the block.
        height: u64,
        /// The block.
        block_hash: Hash,
        /// The app hash after it, or why it is invalid.
        result: Result<Hash, ExecError>,
    },
    /// A vote (unverified), with the voter's best header when it has
    /// already committed the voted height.
    VoteReceived {
        /// The peer that sent it, when known: validators send their own
        /// votes, so a vote from another peer is ignored unchecked.
        from: Option<PublicKey>,
        /// The vote.
        vote: Vote,
        /// The voter's best committed header (a hint, not signed).
        best_header: Option<BlockHeader>,
    },
    /// A committed-block announce (unverified).
    CommitAnnounced {
        /// The peer that sent it.
        from: Option<PublicKey>,
        /// The committed header.
        header: BlockHeader,
        /// The leader's signature over its hash.
        leader_sig: Signature,
        /// Its commit info.
        commit_info: CommitInfo,
    },
    /// A block fetched by block sync (unverified).
    BlockFetched {
        /// The peer that served it.
        from: Option<PublicKey>,
        /// The block.
        block: Block,
        /// Its commit info.
        commit_info: CommitInfo,
    },
    /// Blocks fetched by block sync whose proofs the node has checked with
    /// [`crate::ProofChecker::check_range`] (consecutive heights, linked,
    /// every signature and quorum good): the engine only checks that the
    /// first extends what it commits, then has them applied in batches
    /// ([`Output::ApplyBlocks`]).
    RangeFetched {
        /// The peer that served them.
        from: Option<PublicKey>,
        /// The blocks, in height order, with their commit infos.
        blocks: Vec<(Block, CommitInfo)>,
    },
    /// What the store made of an [`Output::ApplyBlocks`].
    BlocksApplied {
        /// The blocks committed, in order: height, block hash, app hash.
        applied: Vec<(u64, Hash, Hash)>,
        /// The block that could not be applied (invalid here, or another
        /// app hash than its commit info's), and why; none after it was.
        failed: Option<(u64, Hash, String)>,
    },
    /// A block the engine asked for could not be fetched (not found,
    /// timeout, bad response) from `from`.
    FetchFailed {
        /// The peer asked.
        from: Option<PublicKey>,
        /// The height asked for.
        height: u64,
    },
    /// The node has durably committed what [`Output::Commit`] asked for.
    Committed {
        /// The committed height.
        height: u64,
        /// The committed block.
        block_hash: Hash,
        /// The app hash after it.
        app_hash: Hash,
    },
    /// An operator asks for `to` to lead (`kite admin leader --to`). The
    /// leader of this node's term leaves it for the first later term `to`
    /// leads once no proposal of its is out (a clean hand-over at the next
    /// height); any other validator leaves at once, as when its leader
    /// timeout passes. See [`crate::Engine::plan_hand_over`] for what it
    /// will do and why it may refuse.
    HandOver {
        /// The validator that should lead.
        to: PublicKey,
        /// On a validator: leave the term even though its leader made
        /// progress within a leader timeout (the operator knows it is
        /// down). See [`crate::HandOverError::LeaderAlive`].
        force: bool,
    },
    /// A peer's status (best committed height and hash).
    PeerStatus {
        /// The peer.
        peer: PublicKey,
        /// Its best committed height.
        height: u64,
        /// Its best committed block.
        hash: Hash,
    },
}

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every connected peer.
    All,
    /// These peers.
    Peers(Vec<PublicKey>),
}

/// Which deadline a [`Output::ScheduleTimeout`] is for (informational: the
/// node just feeds a [`Input::Tick`] at that time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// Leader: propose a block that is not full, or an empty block.
    Propose,
    /// Leader: re-send the proposal to validators that have not voted.
    ResendProposal,
    /// Leader: the proposal is taking too long; reset it.
    Round,
    /// Validator: re-send the vote.
    ResendVote,
    /// Validator: no progress from the leader; move to the next term.
    Leader,
    /// Validator: re-send its term change while no leader has a quorum.
    ResendTermChange,
    /// Block sync: a request is overdue.
    Sync,
}

/// An action the node must carry out.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write this record durably, replacing the one before, BEFORE
    /// carrying out any output that follows it: it is what this node
    /// promised (a validator's vote, a leader's proposals at a height), and
    /// the message that makes the promise comes next. Give it back to
    /// [`crate::Engine::restore`] after a restart. If it cannot be written,
    /// stop the node (do not send what follows).
    Persist {
        /// The record.
        promise: Promise,
    },
    /// Leader: pick txs from the mempool (per-sender nonce order) whose
    /// encoded sizes add up to at most `max_bytes`, answer with
    /// [`Input::BlockBuilt`].
    BuildBlock {
        /// Tx byte budget.
        max_bytes: u64,
    },
    /// Leader: send the proposal to these validators.
    SendProposal {
        /// The validators.
        to: Vec<PublicKey>,
        /// The signed block.
        block: Block,
        /// The term it is proposed in.
        term: u64,
        /// Above term 0: the credential of `term`.
        credential: Option<Credential>,
    },
    /// Validator: send this term change to these validators (the block
    /// of its ACK goes only to the leader of the new term).
    SendTermChange {
        /// The validators.
        to: Vec<PublicKey>,
        /// The signed change.
        change: TermChange,
        /// The block of `change.acked`, if attached.
        block: Option<Block>,
    },
    /// Execute the block on a staged state above the committed state and
    /// answer with [`Input::BlockExecuted`].
    ExecuteBlock {
        /// The block.
        block: Block,
    },
    /// Validator: send this vote to the leader of its term.
    SendVote {
        /// The leader.
        to: PublicKey,
        /// The signed vote.
        vote: Vote,
        /// Best committed header (with a NACK for an already committed
        /// height).
        best_header: Option<BlockHeader>,
    },
    /// Commit the block, its commit info and its staged state in one atomic
    /// write, then remove its txs from the mempool and feed
    /// [`Input::Committed`].
    Commit {
        /// The block (executed before).
        block: Block,
        /// Its commit info.
        commit_info: CommitInfo,
    },
    /// Block sync: execute each block in order on the committed state,
    /// check its app hash against its commit info and commit it (the fsync
    /// may be grouped with later ones), stopping at the first that fails;
    /// then feed [`Input::BlocksApplied`]. Blocks of several of these may
    /// be in flight: carry them out in the order given.
    ApplyBlocks {
        /// Consecutive blocks with their commit infos, proofs checked.
        blocks: Vec<(Block, CommitInfo)>,
    },
    /// Announce a committed block.
    Announce {
        /// Its header.
        header: BlockHeader,
        /// The leader's signature.
        leader_sig: Signature,
        /// Its commit info.
        commit_info: CommitInfo,
        /// Who to tell.
        to: Target,
    },
    /// Leader: send a signed reset (the block is abandoned).
    SendReset {
        /// The term of the leader that signed it.
        term: u64,
        /// Height of the block.
        height: u64,
        /// The abandoned block.
        block_hash: Hash,
        /// Signature over the reset digest.
        leader_sig: Signature,
        /// Why (not signed).
        reason: String,
        /// Who to tell.
        to: Target,
    },
    /// Leader: remove these txs from the mempool (they made a block invalid).
    DropTxs {
        /// Tx hashes.
        hashes: Vec<Hash>,
    },
    /// Block sync: fetch the blocks (with commit infos) of these heights
    /// and feed each as [`Input::BlockFetched`] (or [`Input::FetchFailed`]).
    RequestBlocks {
        /// First height.
        from_height: u64,
        /// Last height (inclusive).
        to_height: u64,
        /// The peer to ask; `None`: any peer.
        peer: Option<PublicKey>,
    },
    /// Feed a [`Input::Tick`] at this time.
    ScheduleTimeout {
        /// When.
        at_ms: u64,
        /// What for.
        kind: TimeoutKind,
    },
    /// Stop: the node must not commit anything further. Final.
    Halt {
        /// What happened and what to do.
        reason: String,
    },
}
