//! Assembles a running Kite node: opens the store, restores the engine
//! from its promise record, starts the libp2p host and every task, and
//! stops them all on one [`Stopper`]. This file only wires; each task's
//! logic lives in its own module, and nothing imports this one.
//!
//! Tasks and who owns what (every channel bounded; see
//! docs/ARCHITECTURE.md for the full map):
//!
//! ```text
//!  host events ──> peers task (peer table, status polls, PEX) ──Finding──> chaincheck
//!  accept loops ─> handlers ──EngineInbox──> driver (Engine, commit waiters, NodeState)
//!            └──> txgossip (in-flight, origins, announces)   │ watch: NodeState
//!  driver ──Outbox (per-peer budget)──> peers                 ▼
//!  driver ──RequestBlocks──> sync::fetch ──RangeFetched──> driver ──ApplyBlocks──> sync::apply
//!  sync::index (tx index catch-up) · RPC backend (reads; waits via CommitWaiters)
//! ```

use crate::admin::AdminListen;
use crate::admission::Admission;
use crate::backend::Backend;
use crate::budget::{PeerBudgets, SigChecks};
use crate::chaincheck::{self, ChainCheck, Judge};
use crate::config::{Config, Role};
use crate::context::{Clock, Shared};
use crate::handlers::Handlers;
use crate::mailbox::{CommitWaiters, EngineInbox, LeaderRequests};
use crate::metrics::Metrics;
use crate::outbound::Outbox;
use crate::p2p::{self, HostConfig, HostError, HostEvents, Multiaddr, Network, PeerId};
use crate::peers::{self, Peers};
use crate::state::{NodeState, StateRx};
use crate::sync::fetch::Fetcher;
use crate::txgossip::TxGossip;
use crate::{driver, handlers, promise_file, sync};
use kite_blockstore::{StoreConfig, StoreHandle, Writer};
use kite_consensus::{CommittedState, Engine, EngineConfig, EngineError, LastCommit};
use kite_mempool::{Mempool, MempoolConfig};
use kite_types::{Genesis, NodeKey, PublicKey};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use crate::stop::{StopReason, Stopper};

/// How long [`RunningNode::wait`] gives the host to close.
pub const HOST_SHUTDOWN: Duration = Duration::from_secs(5);
/// How long the RPC server may finish its requests in flight once the
/// node stops.
pub const RPC_DRAIN: Duration = Duration::from_secs(2);
/// How long [`RunningNode::wait`] gives the tasks to finish once stopped.
pub const TASKS_SHUTDOWN: Duration = Duration::from_secs(15);

/// A role that does not fit the genesis or the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// `--blocks-only` with a voting role.
    #[error(
        "--blocks-only runs an archival node that does not vote: start it with --role sentry, not {0}"
    )]
    BlocksOnlyVotes(Role),
    /// Leader role, another key.
    #[error("role leader, but this node's key {key} is not the genesis leader {leader}")]
    NotLeader {
        /// This node's key.
        key: PublicKey,
        /// The genesis leader.
        leader: PublicKey,
    },
    /// The genesis leader's key in another role.
    #[error("this node's key {0} is the genesis leader: start it with --role leader")]
    IsLeader(PublicKey),
    /// Validator role, a key outside the set.
    #[error(
        "role validator, but this node's key {0} is not in the genesis validator set; start it as a sentry"
    )]
    NotValidator(PublicKey),
}

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The role in the config does not fit the genesis.
    #[error(transparent)]
    Role(#[from] RoleError),
    /// The engine refused its configuration or committed state.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The block store failed.
    #[error(transparent)]
    Store(#[from] kite_blockstore::StoreError),
    /// The libp2p host failed.
    #[error("p2p: {0}")]
    Host(#[from] HostError),
    /// The RPC server could not bind.
    #[error("rpc: cannot listen on {addr}: {source}")]
    Rpc {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The admin listener could not bind.
    #[error("admin: cannot listen on {addr}: {source}")]
    Admin {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A bad setting.
    #[error("config: {key} {value:?}: {reason}")]
    Config {
        /// The config key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The node stopped because it must not go on.
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
        error: EngineError,
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

/// A started node.
pub struct RunningNode {
    shared: Arc<Shared>,
    state: StateRx,
    peers: Peers,
    gossip: Option<TxGossip>,
    backend: Backend,
    /// Where the RPC listens (None when disabled).
    pub rpc_addr: Option<SocketAddr>,
    /// Where the admin listener listens (None when off).
    pub admin_addr: Option<AdminListen>,
}

impl RunningNode {
    /// What the node's tasks share (tests, benches).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer_id
    }

    /// The addresses the host listens on.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.shared.host.listen_addrs().await.unwrap_or_default()
    }

    /// The node state as the driver last published it.
    pub fn state(&self) -> NodeState {
        self.state.borrow().clone()
    }

    /// A receiver of the node state, to wait for a change.
    pub fn watch_state(&self) -> StateRx {
        self.state.clone()
    }

    /// Last committed height.
    pub fn height(&self) -> u64 {
        self.state.borrow().height
    }

    /// The peers task (its table).
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Tx gossip (None on a blocks-only node).
    pub fn gossip(&self) -> Option<&TxGossip> {
        self.gossip.as_ref()
    }

    /// The RPC backend, to call without HTTP.
    pub fn rpc(&self) -> Backend {
        self.backend.clone()
    }

    /// Stops the node (from a signal handler, say).
    pub fn stopper(&self) -> Stopper {
        self.shared.stop.clone()
    }

    /// Asks every task to stop.
    pub fn stop(&self) {
        self.shared.stop.stop(StopReason::Requested("stopped"));
    }

    /// Waits until the node stops (by [`RunningNode::stop`] or by itself),
    /// then for every task to finish (the host's close and the driver's
    /// last flush included). Returns the error that stopped it, if any.
    pub async fn wait(self) -> Result<(), NodeError> {
        let stop = &self.shared.stop;
        stop.cancelled().await;
        let left = stop.wait_tasks(TASKS_SHUTDOWN).await;
        if left > 0 {
            tracing::error!(
                tasks = left,
                "tasks still running {TASKS_SHUTDOWN:?} after the stop; leaving them"
            );
        }
        match stop.reason() {
            Some(StopReason::Halted(why)) => Err(NodeError::Halted(why)),
            Some(StopReason::Requested(_)) | None => Ok(()),
        }
    }
}

/// Checks that the configured role fits the genesis and the key.
pub fn check_role(config: &Config, genesis: &Genesis, key: &PublicKey) -> Result<(), RoleError> {
    let is_leader = *key == genesis.leader;
    let is_validator = genesis.validators.iter().any(|v| v.pub_key == *key);
    if config.blocks_only && config.role != Role::Sentry {
        return Err(RoleError::BlocksOnlyVotes(config.role));
    }
    match config.role {
        Role::Leader if !is_leader => Err(RoleError::NotLeader {
            key: *key,
            leader: genesis.leader,
        }),
        Role::Validator | Role::Sentry if is_leader => Err(RoleError::IsLeader(*key)),
        Role::Validator if !is_validator => Err(RoleError::NotValidator(*key)),
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
    .map_err(NodeError::Host)
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

/// What a node runs on: its network, its clock and where its store writes.
pub enum Transport {
    /// libp2p as the config says, the wall clock, a writer thread
    /// (production).
    Libp2p,
    /// A network given by the caller with its events (the test kit's
    /// in-memory network), a clock (tokio's, under paused time) and the
    /// store's writes on tokio's blocking pool.
    Given {
        /// The network.
        network: Arc<dyn Network>,
        /// Its peer events.
        events: HostEvents,
        /// The clock.
        clock: Clock,
    },
}

/// Starts a node on libp2p; returns once every task runs.
pub async fn start(opts: NodeOptions) -> Result<RunningNode, NodeError> {
    start_on(opts, Transport::Libp2p).await
}

/// Starts a node on `transport`; returns once every task runs.
pub async fn start_on(opts: NodeOptions, transport: Transport) -> Result<RunningNode, NodeError> {
    let public = opts.key.public();
    check_role(&opts.config, &opts.genesis, &public)?;
    let cfg = opts.config.clone();
    let admin_listen =
        AdminListen::parse(&cfg.admin.listen, &opts.home).map_err(|reason| NodeError::Config {
            key: "admin.listen",
            value: cfg.admin.listen.clone(),
            reason,
        })?;

    let max_txs = cfg.consensus.max_block_txs as usize;
    if !(1..=driver::MAX_BLOCK_TXS).contains(&max_txs) {
        return Err(NodeError::Config {
            key: "consensus.max_block_txs",
            value: max_txs.to_string(),
            reason: format!("a block holds 1 to {} txs", driver::MAX_BLOCK_TXS),
        });
    }

    let store_dir = opts.home.join(&cfg.store.dir);
    let store = StoreHandle::open(
        &store_dir,
        &opts.genesis,
        StoreConfig {
            durable: cfg.store.durable,
            cache_capacity: cfg.store.cache.as_u64(),
            writer: match transport {
                Transport::Libp2p => Writer::Thread,
                Transport::Given { .. } => Writer::BlockingPool,
            },
        },
    )
    .await?;
    let committed = committed_state(&store, &opts.genesis).await?;

    let mut ec = EngineConfig::from_genesis(&opts.genesis, cfg.role, Some(opts.key.clone()));
    ec.round_timeout_ms = millis(cfg.consensus.round_timeout);
    ec.vote_resend_interval_ms = millis(cfg.consensus.resend_interval);
    ec.leader_timeout_ms = millis(cfg.consensus.leader_timeout);
    ec.leader_timeout_max_ms = millis(cfg.consensus.leader_timeout_max);
    ec.sync_window = u64::from(cfg.sync.window.max(1));
    ec.sync_request_timeout_ms = millis(cfg.sync.request_timeout);
    // One peer may hold half the window, so two or more peers share it.
    ec.sync_per_peer = (ec.sync_window / 2).max(kite_consensus::sync::MAX_REQUEST);
    ec.sync_buffer_bytes = cfg.sync.buffer.as_u64();
    let mut engine = Engine::new(ec, committed.clone())?;
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
    let (host, events, clock): (Arc<dyn Network>, _, _) = match transport {
        Transport::Libp2p => {
            let (host, events) = p2p::Host::spawn(&opts.key, host_cfg)?;
            (Arc::new(host), events, Clock::Wall)
        }
        Transport::Given {
            network,
            events,
            clock,
        } => (network, events, clock),
    };
    let peer_buffer = usize::try_from(cfg.p2p.peer_buffer.as_u64()).unwrap_or(usize::MAX);
    let shared = Arc::new(Shared {
        genesis_hash: opts.genesis.hash(),
        genesis: opts.genesis.clone(),
        schedule: opts.genesis.leader_schedule(),
        public,
        peer_id: host.local_peer_id(),
        key: opts.key.clone(),
        config: cfg.clone(),
        store,
        mempool,
        host,
        clock,
        metrics: Arc::new(Metrics::new()),
        budgets: PeerBudgets::new(
            peer_buffer,
            kite_protocols::limits::block_response_max(
                usize::try_from(opts.genesis.max_block_bytes).unwrap_or(usize::MAX),
            ),
        ),
        tx_budgets: PeerBudgets::new(peer_buffer / 2, 2 * kite_protocols::limits::TX_BATCH_MAX),
        sig_checks: SigChecks::new(cfg.p2p.max_sig_checks_per_peer),
        tx_checks: SigChecks::new(cfg.p2p.max_tx_checks_per_peer),
        promise_file: promise_path,
        stop: Stopper::new(),
    });
    let stop = &shared.stop;
    // The host closes as soon as the node stops (a halted node must not
    // keep connections that serve nothing), whoever waits for it.
    let host = shared.host.clone();
    let on_stop = stop.clone();
    stop.spawn(async move {
        on_stop.cancelled().await;
        if tokio::time::timeout(HOST_SHUTDOWN, host.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("the p2p host did not close within {HOST_SHUTDOWN:?}");
        }
    });
    shared
        .metrics
        .height
        .set(crate::context::to_i64(committed.height));

    // Mailboxes first, then their owners.
    // The genesis signers' messages go first.
    let signers = std::iter::once(&shared.genesis.leader)
        .chain(shared.genesis.validators.iter().map(|v| &v.pub_key))
        .filter_map(p2p::keys::peer_id_of)
        .collect();
    let (engine_inbox, engine_rx) =
        EngineInbox::new(signers, shared.metrics.engine_inputs_dropped.clone());
    let (waiters, waiters_rx) = CommitWaiters::new();
    let (leader_requests, leader_rx) = LeaderRequests::new();
    let (state_tx, state) = watch::channel(NodeState::of(&engine.status()));
    let (peers, notes, table) = Peers::new();
    let (chain, findings) = ChainCheck::new();
    let outbox = Outbox::new(shared.clone(), peers.table());

    stop.spawn(chaincheck::run(
        stop.clone(),
        Judge::new(bootstrap),
        findings,
    ));
    let peers_ctx = Arc::new(peers::Ctx {
        shared: shared.clone(),
        peers: peers.clone(),
        chain,
        state: state.clone(),
        engine: engine_inbox.clone(),
    });
    stop.spawn(peers::run(peers_ctx, events, notes, table));
    let gossip = shared
        .mempool
        .clone()
        .map(|m| TxGossip::start(shared.clone(), m, peers.clone(), state.clone()));
    let fetcher = Fetcher::new(
        shared.clone(),
        engine_inbox.clone(),
        peers.clone(),
        kite_consensus::ProofChecker::new(engine.config()),
        cfg.sync.window as usize,
    );
    stop.spawn(driver::run(driver::Parts {
        shared: shared.clone(),
        engine,
        inputs: engine_rx,
        waiters: waiters_rx,
        leader_requests: leader_rx,
        state: state_tx,
        peers: peers.clone(),
        outbox,
        fetcher,
    }));
    stop.spawn(sync::index::run(shared.clone(), state.clone()));
    let accepting = handlers::spawn_accept_loops(&Arc::new(Handlers {
        shared: shared.clone(),
        engine: engine_inbox,
        state: state.clone(),
        peers: peers.clone(),
        gossip: gossip.clone(),
    }));
    if let Err(e) = accepting {
        // The tasks started above stop with the node.
        stop.stop(StopReason::Requested("start failed"));
        return Err(e.into());
    }

    let admission = shared
        .mempool
        .clone()
        .map(|m| Admission::start(shared.clone(), m));
    let backend = Backend {
        admission,
        shared: shared.clone(),
        state: state.clone(),
        peers: peers.clone(),
        waiters,
    };
    let listeners = async {
        let rpc = serve_rpc(&shared, &backend).await?;
        let admin = match &admin_listen {
            Some(at) => Some(serve_admin(&shared, at, leader_requests).await?),
            None => None,
        };
        Ok::<_, NodeError>((rpc, admin))
    };
    let (rpc_addr, admin_addr) = match listeners.await {
        Ok(a) => a,
        Err(e) => {
            // Started tasks stop with the node.
            stop.stop(StopReason::Requested("start failed"));
            return Err(e);
        }
    };
    tracing::info!(
        chain = %shared.genesis.chain_id,
        role = %cfg.role,
        blocks_only = cfg.blocks_only,
        peer_id = %shared.peer_id,
        height = committed.height,
        rpc = ?rpc_addr,
        admin = ?admin_addr.as_ref().map(ToString::to_string),
        "node started"
    );
    Ok(RunningNode {
        shared,
        state,
        peers,
        gossip,
        backend,
        rpc_addr,
        admin_addr,
    })
}

/// Starts the admin listener (`admin.listen`).
async fn serve_admin(
    shared: &Arc<Shared>,
    at: &AdminListen,
    leader: LeaderRequests,
) -> Result<AdminListen, NodeError> {
    let stop = shared.stop.clone();
    let targets = crate::admin::AdminTargets {
        host: shared.host.clone(),
        leader: Some(leader),
        validators: shared.genesis.validators.clone(),
    };
    let (bound, task) = crate::admin::serve(at, targets, async move { stop.cancelled().await })
        .await
        .map_err(|source| NodeError::Admin {
            addr: at.to_string(),
            source,
        })?;
    if let AdminListen::Tcp(_) = at {
        tracing::warn!(
            admin = %bound,
            "admin listener on loopback TCP: every local user can ban and add peers; \
             unix:PATH limits it to the node's user"
        );
    }
    drain_on_stop(shared, task);
    Ok(bound)
}

/// Tracks a server task: once the node stops, the server finishes the
/// requests in flight for at most [`RPC_DRAIN`] (a client trickling a body
/// cannot hold the stop), then it is aborted.
fn drain_on_stop(shared: &Arc<Shared>, mut task: tokio::task::JoinHandle<()>) {
    let stop = shared.stop.clone();
    shared.stop.spawn(async move {
        tokio::select! {
            _ = &mut task => {}
            _ = async {
                stop.cancelled().await;
                tokio::time::sleep(RPC_DRAIN).await;
            } => task.abort(),
        }
    });
}

/// Starts the JSON-RPC server when `rpc.listen` is set.
async fn serve_rpc(
    shared: &Arc<Shared>,
    backend: &Backend,
) -> Result<Option<SocketAddr>, NodeError> {
    let cfg = &shared.config.rpc;
    if cfg.listen.trim().is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr =
        cfg.listen
            .parse()
            .map_err(|e: std::net::AddrParseError| NodeError::Config {
                key: "rpc.listen",
                value: cfg.listen.clone(),
                reason: format!("not HOST:PORT: {e}"),
            })?;
    let limits = crate::rpc::RpcLimits {
        max_body_bytes: usize::try_from(cfg.max_body_size.as_u64()).unwrap_or(1 << 20),
        max_concurrent: cfg.max_concurrent as usize,
        request_timeout: cfg.request_timeout,
        commit_timeout: cfg.commit_timeout,
        access: crate::rpc::RpcAccess {
            allowed_hosts: cfg.allowed_hosts.clone(),
            cors_origins: cfg.cors_origins.clone(),
        },
    };
    let stop = shared.stop.clone();
    let (bound, task) = crate::rpc::serve(addr, Arc::new(backend.clone()), limits, async move {
        stop.cancelled().await
    })
    .await
    .map_err(|source| NodeError::Rpc {
        addr: cfg.listen.clone(),
        source,
    })?;
    drain_on_stop(shared, task);
    Ok(Some(bound))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
