//! A running Kite node: opens the store, starts the libp2p host, the
//! protocol handlers, the commit-engine driver, tx gossip, peer exchange,
//! status polling and the JSON-RPC server, and stops them all on one
//! cancellation token.
//!
//! Task map (every channel bounded, every wait with a deadline):
//!
//! ```text
//!  libp2p host ──accept loops──> handlers ──Input (try_send)──> driver (owns Engine)
//!      ^                             │                              │
//!      └──── open_stream <── gossip / fetch / send tasks <── Output ┘
//!  store (writer thread) <── driver commits; handlers and RPC read
//!  mempool (Arc, short locks) <── handlers, RPC, driver
//! ```

use crate::chaincheck::ChainVotes;
use crate::config::{Config, Role};
use crate::metrics::Metrics;
use crate::p2p::{self, HostConfig, HostHandle, Multiaddr, PeerId};
use crate::{backend, driver, gossip, handlers, indexer, promise_file};
use kite_blockstore::{BlockStore, StoreConfig, StoreHandle};
use kite_consensus::{CommittedState, Engine, EngineConfig, LastCommit};
use kite_mempool::{AccountSource, Mempool, MempoolConfig};
use kite_types::{Account, Genesis, Hash, NodeKey, PublicKey};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Capacity of the engine's input channel.
pub const ENGINE_INPUTS: usize = 4096;
/// Most `broadcast_tx` calls waiting for a commit at once.
pub const MAX_COMMIT_WAITERS: usize = 100_000;
/// Most remembered tx origins (for "never announce back to the sender").
pub const MAX_ORIGINS: usize = 200_000;

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The role in the config does not fit the genesis.
    #[error("{0}")]
    Role(String),
    /// The block store failed.
    #[error(transparent)]
    Store(#[from] kite_blockstore::StoreError),
    /// The libp2p host failed.
    #[error("p2p: {0}")]
    Host(String),
    /// The RPC server could not bind.
    #[error("rpc: cannot listen on {addr}: {source}")]
    Rpc {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A bad setting.
    #[error("config: {0}")]
    Config(String),
    /// The commit engine halted.
    #[error("halted: {0}")]
    Halted(String),
    /// The promise file cannot be read.
    #[error(transparent)]
    PromiseFile(#[from] crate::promise_file::PromiseFileError),
    /// The promise record does not fit this node: its store went back in
    /// time, or the record holds another key's vote (see
    /// [`Engine::restore`]).
    #[error("{error} (promise file {})", path.display())]
    Promise {
        /// The promise file.
        path: PathBuf,
        /// What the engine found.
        error: kite_consensus::EngineError,
    },
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The home folder (store, peer store, promise file).
    pub home: PathBuf,
    /// Configuration (file + flags).
    pub config: Config,
    /// The chain's genesis.
    pub genesis: Genesis,
    /// The node key.
    pub key: NodeKey,
}

/// What the RPC and status show of the node.
#[derive(Debug, Clone, Default)]
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
    /// Engine step ("idle", "proposed", ...).
    pub step: String,
    /// Leader round at this height.
    pub round: u32,
    /// Block being voted on.
    pub proposal: Option<Hash>,
    /// Why the engine halted.
    pub halted: Option<String>,
    /// When the last block was committed.
    pub last_commit: Option<Instant>,
}

/// What is known of a connected peer.
#[derive(Debug, Clone, Default)]
pub struct PeerState {
    /// Best height it reported.
    pub height: Option<u64>,
    /// Its best hash.
    pub hash: Option<Hash>,
    /// Whether it runs blocks-only.
    pub blocks_only: bool,
    /// Addresses seen.
    pub addrs: Vec<Multiaddr>,
    /// Highest height it proved it holds (served that block with a valid
    /// commit); its status claims up to there are believed as they come.
    pub proven: u64,
    /// It served the block this node holds at some height (see
    /// `gossip::ask_status`): it is on this node's chain.
    pub linked: bool,
}

/// A tx being fetched after an announce, and who else announced it.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// The peer it is fetched from.
    pub from: PeerId,
    /// Since when.
    pub since: Instant,
    /// Other peers that announced it (fallbacks).
    pub others: Vec<PeerId>,
}

/// Why a node stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// It was asked to (`RunningNode::stop`, a signal): a clean stop.
    Requested(&'static str),
    /// It must not go on (the engine halted, a write failed, its chain is
    /// not its network's...): the process exits with an error.
    Halted(String),
}

/// State shared by the node's tasks.
pub struct Ctx {
    /// The genesis.
    pub genesis: Genesis,
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
    /// The libp2p host.
    pub host: HostHandle,
    /// Inputs of the engine driver.
    pub inputs: mpsc::Sender<kite_consensus::Input>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Node state for status and health.
    pub state: RwLock<NodeState>,
    /// Connected peers.
    pub peers: RwLock<HashMap<PeerId, PeerState>>,
    /// `broadcast_tx` calls waiting for their tx to commit.
    pub waiters: Mutex<HashMap<Hash, Vec<oneshot::Sender<u64>>>>,
    /// Txs being fetched (fetch dedup).
    pub inflight: Mutex<HashMap<Hash, InFlight>>,
    /// Which peer first sent us a tx.
    pub origins: Mutex<HashMap<Hash, PeerId>>,
    /// Checks the proofs of fetched block ranges (block sync), with its
    /// cache of decoded keys.
    pub checker: Arc<kite_consensus::ProofChecker>,
    /// Block sync's range checks running at once: one per core. (Sync's
    /// serial stage, the store's writer, is light enough to share them
    /// since it leaves the tx index for later; see `indexer`.)
    pub check_permits: Arc<tokio::sync::Semaphore>,
    /// Inputs dropped because the engine queue was full.
    pub dropped_inputs: std::sync::atomic::AtomicU64,
    /// Stops every task.
    pub cancel: CancellationToken,
    /// Why the node stopped (the first reason given).
    pub stop_reason: Mutex<Option<StopReason>>,
    /// What the peers of `p2p.peers` said of their genesis (see
    /// [`crate::chaincheck`]).
    pub genesis_votes: Mutex<ChainVotes>,
    /// What they proved of their blocks at heights this node holds.
    pub fork_votes: Mutex<ChainVotes>,
    /// Where the engine's promise record is written before every vote or
    /// proposal (see [`crate::promise_file`]).
    pub promise_file: PathBuf,
}

impl Ctx {
    /// Feeds the engine without waiting; a full queue drops the input
    /// (the protocols re-send votes, proposals and announces).
    pub fn feed(&self, input: kite_consensus::Input) {
        if self.inputs.try_send(input).is_err() {
            self.dropped_inputs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Account lookups over the committed state, for the mempool.
    pub fn accounts(&self) -> StoreAccounts {
        StoreAccounts(self.store.store().clone())
    }

    /// Max block size of the chain.
    pub fn max_block_bytes(&self) -> usize {
        usize::try_from(self.genesis.max_block_bytes).unwrap_or(usize::MAX)
    }

    /// Connected peers, except `but`.
    pub fn peer_ids(&self, but: Option<PeerId>) -> Vec<PeerId> {
        self.peers
            .read()
            .keys()
            .filter(|p| Some(**p) != but)
            .copied()
            .collect()
    }

    /// Stops the node, keeping the first reason given.
    pub fn stop(&self, reason: StopReason) {
        let mut r = self.stop_reason.lock();
        if r.is_none() {
            *r = Some(reason);
        }
        self.cancel.cancel();
    }

    /// Stops the node because it must not go on (`why`, one line): the
    /// process then exits with `error: halted: WHY`.
    pub fn halt(&self, why: impl Into<String>) {
        self.stop(StopReason::Halted(why.into()));
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

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A started node.
pub struct RunningNode {
    ctx: Arc<Ctx>,
    /// Where the RPC listens (None when disabled).
    pub rpc_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// Shared state (tests).
    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.ctx.peer_id
    }

    /// The addresses the host listens on.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.ctx.host.listen_addrs().await.unwrap_or_default()
    }

    /// Last committed height.
    pub fn height(&self) -> u64 {
        self.ctx.state.read().height
    }

    /// Asks every task to stop.
    pub fn stop(&self) {
        self.ctx.stop(StopReason::Requested("stopped"));
    }

    /// Waits until the node stops (by [`RunningNode::stop`] or by itself),
    /// then shuts the host and tasks down. Returns the error that stopped
    /// it, if any.
    pub async fn wait(self) -> Result<(), NodeError> {
        self.ctx.cancel.cancelled().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.ctx.host.shutdown()).await;
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        let reason = self.ctx.stop_reason.lock().clone();
        match reason {
            Some(StopReason::Halted(why)) => Err(NodeError::Halted(why)),
            Some(StopReason::Requested(_)) | None => Ok(()),
        }
    }
}

/// Checks that the configured role fits the genesis and the key.
pub fn check_role(config: &Config, genesis: &Genesis, key: &PublicKey) -> Result<(), NodeError> {
    let is_leader = *key == genesis.leader;
    let is_validator = genesis.validators.iter().any(|v| v.pub_key == *key);
    if config.blocks_only && config.role != Role::Sentry {
        return Err(NodeError::Role(format!(
            "--blocks-only runs an archival node that does not vote: start it with --role sentry, not {}",
            config.role
        )));
    }
    match config.role {
        Role::Leader if !is_leader => Err(NodeError::Role(format!(
            "role leader, but this node's key {key} is not the genesis leader {}",
            genesis.leader
        ))),
        Role::Validator if is_leader => Err(NodeError::Role(format!(
            "this node's key {key} is the genesis leader: start it with --role leader"
        ))),
        Role::Validator if !is_validator => Err(NodeError::Role(format!(
            "role validator, but this node's key {key} is not in the genesis validator set; start it as a sentry"
        ))),
        Role::Sentry if is_leader => Err(NodeError::Role(format!(
            "this node's key {key} is the genesis leader: start it with --role leader"
        ))),
        _ => Ok(()),
    }
}

fn host_config(opts: &NodeOptions) -> Result<HostConfig, NodeError> {
    let validators = opts
        .genesis
        .validators
        .iter()
        .filter_map(|v| p2p::keys::peer_id_of(&v.pub_key))
        .collect();
    HostConfig::from_node_config(
        &opts.config.p2p,
        &opts.genesis.chain_id,
        validators,
        Some(opts.home.join(p2p::PEER_STORE_FILE)),
    )
    .map_err(|e| NodeError::Config(e.to_string()))
}

/// The committed state the engine starts from.
async fn committed_state(
    store: &StoreHandle,
    genesis: &Genesis,
) -> Result<CommittedState, NodeError> {
    let best = store.best().await?;
    if best.height < genesis.initial_height {
        return Ok(CommittedState::genesis(
            genesis.initial_height,
            best.app_hash,
        ));
    }
    let block = store.block_by_height(best.height).await?;
    let ci = store.commit_info(best.height).await?;
    let last = match (block, ci) {
        (Some(b), Some(ci)) => Some(LastCommit {
            header: b.header().clone(),
            leader_sig: *b.leader_sig(),
            commit_info: ci,
        }),
        _ => None,
    };
    Ok(CommittedState {
        height: best.height,
        block_hash: best.block_hash,
        app_hash: best.app_hash,
        last,
    })
}

/// Starts a node; returns once every task runs.
pub async fn start(opts: NodeOptions) -> Result<RunningNode, NodeError> {
    let public = opts.key.public();
    check_role(&opts.config, &opts.genesis, &public)?;
    let cfg = opts.config.clone();

    let store_dir = opts.home.join(&cfg.store.dir);
    let store = StoreHandle::open(
        &store_dir,
        &opts.genesis,
        StoreConfig {
            durable: cfg.store.durable,
            ..StoreConfig::default()
        },
    )
    .await?;
    let committed = committed_state(&store, &opts.genesis).await?;

    let mut ec = EngineConfig::from_genesis(&opts.genesis, cfg.role, Some(opts.key.clone()));
    ec.round_timeout_ms = millis(cfg.consensus.round_timeout);
    ec.vote_resend_interval_ms = millis(cfg.consensus.resend_interval);
    ec.sync_window = u64::from(cfg.sync.window.max(1));
    ec.sync_request_timeout_ms = millis(cfg.sync.request_timeout);
    // One peer may hold half the window, so two or more peers share it.
    ec.sync_per_peer = (ec.sync_window / 2).max(kite_consensus::sync::MAX_REQUEST);
    ec.sync_buffer_bytes = cfg.sync.buffer.as_u64();
    let mut engine =
        Engine::new(ec, committed.clone()).map_err(|e| NodeError::Role(e.to_string()))?;
    // What this node promised before it stopped, given back to the engine
    // before its first input (and before the host starts, so nothing is
    // sent from a store that went back in time).
    let promise_path = promise_file::path_in(&opts.home);
    if let Some(promise) = promise_file::load(&promise_path)? {
        engine
            .restore(&promise)
            .map_err(|error| NodeError::Promise {
                path: promise_path.clone(),
                error,
            })?;
        tracing::info!(
            height = promise.height,
            voted = promise.vote.is_some(),
            proposed = promise.proposed.len(),
            store_height = committed.height,
            "promise record read back"
        );
    }

    let mempool = if cfg.blocks_only {
        None
    } else {
        let max_tx = usize::try_from(
            cfg.mempool
                .max_tx_bytes
                .as_u64()
                .min(opts.genesis.max_tx_bytes),
        )
        .unwrap_or(usize::MAX);
        let mc = MempoolConfig {
            max_txs: cfg.mempool.max_txs as usize,
            max_bytes: usize::try_from(cfg.mempool.max_bytes.as_u64()).unwrap_or(usize::MAX),
            max_tx_bytes: max_tx,
            max_per_sender: cfg.mempool.max_per_sender as usize,
            // Gossip delivers a sender's txs in several announce streams
            // that may be admitted in any order: queue a whole window of
            // gapped nonces (still bounded by max_txs and max_bytes)
            // rather than refuse them until the next re-announce.
            max_queued_per_sender: cfg.mempool.max_per_sender as usize,
            ..MempoolConfig::default()
        };
        Some(Arc::new(Mempool::new(opts.genesis.chain_id.clone(), mc)))
    };

    let host_cfg = host_config(&opts)?;
    let bootstrap: Vec<PeerId> = host_cfg
        .bootstrap
        .iter()
        .filter_map(|a| p2p::addr::split_peer_id(a).1)
        .collect();
    let (host, events) =
        p2p::Host::spawn(&opts.key, host_cfg).map_err(|e| NodeError::Host(e.to_string()))?;
    let (inputs, inputs_rx) = mpsc::channel(ENGINE_INPUTS);
    let ctx = Arc::new(Ctx {
        genesis_hash: opts.genesis.hash(),
        genesis: opts.genesis.clone(),
        public,
        peer_id: host.local_peer_id(),
        key: opts.key.clone(),
        config: cfg.clone(),
        store,
        mempool,
        host,
        inputs,
        metrics: Arc::new(Metrics::new()),
        state: RwLock::new(NodeState {
            height: committed.height,
            block_hash: committed.block_hash,
            app_hash: committed.app_hash,
            step: "starting".into(),
            ..NodeState::default()
        }),
        peers: RwLock::new(HashMap::new()),
        waiters: Mutex::new(HashMap::new()),
        inflight: Mutex::new(HashMap::new()),
        origins: Mutex::new(HashMap::new()),
        checker: Arc::new(kite_consensus::ProofChecker::new(engine.config())),
        check_permits: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )),
        dropped_inputs: std::sync::atomic::AtomicU64::new(0),
        cancel: CancellationToken::new(),
        stop_reason: Mutex::new(None),
        genesis_votes: Mutex::new(ChainVotes::new(bootstrap.iter().copied())),
        fork_votes: Mutex::new(ChainVotes::new(bootstrap)),
        promise_file: promise_path,
    });
    ctx.metrics
        .height
        .set(i64::try_from(committed.height).unwrap_or(i64::MAX));

    let mut tasks = handlers::spawn_accept_loops(&ctx).map_err(NodeError::Host)?;
    tasks.push(tokio::spawn(driver::run(ctx.clone(), engine, inputs_rx)));
    tasks.push(tokio::spawn(gossip::run_events(ctx.clone(), events)));
    tasks.push(tokio::spawn(gossip::run_status_poll(ctx.clone())));
    tasks.push(tokio::spawn(indexer::run(ctx.clone())));
    if ctx.mempool.is_some() {
        tasks.push(tokio::spawn(gossip::run_tx_gossip(ctx.clone())));
    }
    if cfg.p2p.pex {
        tasks.push(tokio::spawn(gossip::run_pex(ctx.clone())));
    }

    let rpc_addr = if cfg.rpc.listen.trim().is_empty() {
        None
    } else {
        let addr: SocketAddr = cfg.rpc.listen.parse().map_err(|e| {
            NodeError::Config(format!(
                "rpc.listen {:?} is not HOST:PORT: {e}",
                cfg.rpc.listen
            ))
        })?;
        let limits = crate::rpc::RpcLimits {
            max_body_bytes: usize::try_from(cfg.rpc.max_body_size.as_u64()).unwrap_or(1 << 20),
            max_concurrent: cfg.rpc.max_concurrent as usize,
            request_timeout: cfg.rpc.request_timeout,
            commit_timeout: cfg.rpc.commit_timeout,
        };
        let cancel = ctx.cancel.clone();
        let (bound, task) = crate::rpc::serve(
            addr,
            Arc::new(backend::Backend(ctx.clone())),
            limits,
            async move { cancel.cancelled().await },
        )
        .await
        .map_err(|source| NodeError::Rpc {
            addr: cfg.rpc.listen.clone(),
            source,
        })?;
        tasks.push(task);
        Some(bound)
    };
    tracing::info!(
        chain = %ctx.genesis.chain_id,
        role = %cfg.role,
        blocks_only = cfg.blocks_only,
        peer_id = %ctx.peer_id,
        height = committed.height,
        rpc = ?rpc_addr,
        "node started"
    );
    Ok(RunningNode {
        ctx,
        rpc_addr,
        tasks,
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
