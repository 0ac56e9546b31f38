//! In-process Kite networks for tests and benches.
//!
//! [`TestNet::start`] runs N real nodes ([`crate::node::start`]) in the
//! caller's tokio runtime, on 127.0.0.1 with OS-assigned ports and fresh
//! temporary homes: node 0 is the genesis leader, then the validators, the
//! sentries and the blocks-only (archival) nodes. Node 0 starts first; each
//! later node is given the real listen addresses of the nodes its
//! [`Topology`] names, and the kit waits until it is connected and
//! identified before starting the next one. The genesis funds a faucet key
//! and [`NetSpec::funded`] more accounts, all derived from the spec's seed.
//!
//! Helpers: [`wait_for`] (poll with a deadline), tx submission through the
//! RPC backend ([`TestNet::submit`]) or the p2p admission path
//! ([`TestNet::admit`]), heights, block hashes from each node's store, a
//! whole-chain comparison ([`TestNet::check_same_chain`]), a bare libp2p
//! [`Probe`] to send raw streams to a node, and [`TestNet::stop`], which
//! stops every node and waits for it. Every wait has a deadline.
//!
//! With [`NetSpec::memnet`] set, the nodes run on the in-memory network of
//! [`memnet`] instead of libp2p, on tokio's clock: run such a test under
//! paused time (`#[tokio::test(start_paused = true)]`) and it is
//! deterministic for a seed, with the faults the seed draws.

pub mod memnet;

use crate::config::{Config, Role};
use crate::context::{Clock, Shared};
use crate::node::{NodeError, NodeOptions, RunningNode, Transport, start_on};
use crate::p2p::{self, HostConfig, HostEvents, HostHandle, Multiaddr, Network, PeerId};
use crate::rpc::{BroadcastResult, RpcBackend, RpcError, WaitFor};
use kite_types::genesis::{Allocation, Validator};
use kite_types::{Genesis, Hash, NodeKey, PublicKey, Tx};
use memnet::{Faults, MemNet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Balance of the faucet and of every funded account.
pub const FUNDED_BALANCE: u64 = 1_000_000_000_000;
/// How long the kit waits for one node to listen, connect and identify.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long [`TestNet::stop`] waits for one node to stop.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// Unix milliseconds at the start of a run on the in-memory network
/// (its nodes read tokio's clock from there).
pub const SIM_EPOCH_MS: u64 = 1_000_000;
/// How often [`wait_for`] polls.
pub const POLL: Duration = Duration::from_millis(25);

/// What went wrong in a test network.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// A node would not start.
    #[error("node {index}: {source}")]
    Start {
        /// The node.
        index: usize,
        /// Why.
        source: Box<NodeError>,
    },
    /// Something did not happen before its deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// A check failed.
    #[error("{0}")]
    Check(String),
    /// A file-system error (temporary homes).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Who each later node is told to connect to at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Topology {
    /// Every node knows node 0 only.
    #[default]
    Star,
    /// Every node knows all earlier nodes.
    Mesh,
    /// Node `i` knows node `i - 1` only (a line when peer exchange is off).
    Line,
    /// Node `i` knows the nodes listed at index `i` (only earlier ones
    /// count; a missing entry means none).
    Custom(Vec<Vec<usize>>),
}

/// Changes a node's config before it starts: `(index, config)`.
pub type ConfigEdit = Arc<dyn Fn(usize, &mut Config) + Send + Sync>;

/// What network to start.
#[derive(Clone)]
pub struct NetSpec {
    /// Chain id.
    pub chain_id: String,
    /// Seed of every key (nodes, faucet, accounts).
    pub seed: u64,
    /// Genesis validators, the leader (node 0) included; at least 1.
    pub validators: usize,
    /// Sentries with a mempool (after the validators).
    pub sentries: usize,
    /// Blocks-only sentries (last).
    pub blocks_only: usize,
    /// Funded accounts besides the faucet.
    pub funded: usize,
    /// Start order and bootstrap peers.
    pub topology: Topology,
    /// Peer exchange.
    pub pex: bool,
    /// Start each node's JSON-RPC server on 127.0.0.1:0.
    pub rpc: bool,
    /// Genesis `propose_timeout`.
    pub propose_timeout: Duration,
    /// Genesis `empty_block_timeout` (zero: no empty blocks).
    pub empty_block_timeout: Duration,
    /// Start the genesis leader (node 0) at all; when false the network
    /// never commits (useful to watch mempools), and node 1 starts first.
    pub start_leader: bool,
    /// Last changes to each node's config.
    pub edit: Option<ConfigEdit>,
    /// Run on the in-memory network with these faults instead of libp2p.
    pub memnet: Option<Faults>,
}

impl std::fmt::Debug for NetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetSpec")
            .field("chain_id", &self.chain_id)
            .field("seed", &self.seed)
            .field("validators", &self.validators)
            .field("sentries", &self.sentries)
            .field("blocks_only", &self.blocks_only)
            .field("funded", &self.funded)
            .field("topology", &self.topology)
            .field("pex", &self.pex)
            .field("rpc", &self.rpc)
            .field("memnet", &self.memnet)
            .finish_non_exhaustive()
    }
}

impl NetSpec {
    /// `validators` validators (node 0 leads), star topology, no peer
    /// exchange, no RPC server, 4 funded accounts, default genesis timing
    /// with empty blocks every 500 ms.
    pub fn new(validators: usize) -> NetSpec {
        NetSpec {
            chain_id: "kite-testkit".into(),
            seed: 1,
            validators: validators.max(1),
            sentries: 0,
            blocks_only: 0,
            funded: 4,
            topology: Topology::Star,
            pex: false,
            rpc: false,
            propose_timeout: Duration::from_millis(100),
            empty_block_timeout: Duration::from_millis(500),
            start_leader: true,
            edit: None,
            memnet: None,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.validators + self.sentries + self.blocks_only
    }

    /// Whether the spec has no node.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A seeded key: `kind` 0 for nodes, 1 for the faucet, 2 for accounts.
    fn key(&self, kind: u8, i: usize) -> NodeKey {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seed.to_le_bytes());
        seed[8] = kind;
        seed[9..17].copy_from_slice(&(i as u64).to_le_bytes());
        seed[31] = 0x4b;
        NodeKey::from_seed(seed)
    }

    /// The genesis of this spec, with the node keys, the faucet and the
    /// funded accounts.
    pub fn genesis(&self) -> (Genesis, Vec<NodeKey>, NodeKey, Vec<NodeKey>) {
        let keys: Vec<NodeKey> = (0..self.len()).map(|i| self.key(0, i)).collect();
        let faucet = self.key(1, 0);
        let accounts: Vec<NodeKey> = (0..self.funded).map(|i| self.key(2, i)).collect();
        let leader = keys
            .first()
            .map(NodeKey::public)
            .unwrap_or_else(|| self.key(0, 0).public());
        let mut g = Genesis::single(&self.chain_id, leader, faucet.public(), FUNDED_BALANCE);
        g.genesis_time_ms = 1;
        g.validators = keys
            .iter()
            .take(self.validators)
            .enumerate()
            .map(|(i, k)| Validator {
                pub_key: k.public(),
                power: 1,
                name: format!("node{i}"),
            })
            .collect();
        g.allocations = std::iter::once(&faucet)
            .chain(accounts.iter())
            .map(|k| Allocation {
                account: k.public(),
                balance: FUNDED_BALANCE,
            })
            .collect();
        g.propose_timeout = self.propose_timeout;
        g.empty_block_timeout = self.empty_block_timeout;
        (g, keys, faucet, accounts)
    }

    /// The role and blocks-only flag of node `i`.
    pub fn role(&self, i: usize) -> (Role, bool) {
        if i == 0 {
            (Role::Leader, false)
        } else if i < self.validators {
            (Role::Validator, false)
        } else if i < self.validators + self.sentries {
            (Role::Sentry, false)
        } else {
            (Role::Sentry, true)
        }
    }
}

/// The config of a test node: loopback with an OS-assigned port, private
/// addresses allowed, no fsync, RPC on 127.0.0.1:0 or off.
pub fn test_config(role: Role, blocks_only: bool, pex: bool, rpc: bool) -> Config {
    let mut c = Config {
        role,
        blocks_only,
        ..Config::default()
    };
    c.p2p.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    c.p2p.allow_private_addrs = true;
    c.p2p.pex = pex;
    c.rpc.listen = if rpc {
        "127.0.0.1:0".into()
    } else {
        String::new()
    };
    c.store.durable = false;
    c
}

static HOMES: AtomicU64 = AtomicU64::new(0);

/// Logs to the test output when `KITE_TEST_LOG` holds a filter (e.g.
/// `debug` or `kite_node::p2p=debug`); once per process.
pub fn init_log() {
    if let Ok(filter) = std::env::var("KITE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A fresh, empty folder under the system temp dir.
pub fn temp_home(tag: &str) -> Result<PathBuf, TestError> {
    let n = HOMES.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "kite-testkit-{}-{n}-{nanos}-{tag}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Polls `f` every [`POLL`] until it returns `Some`, for at most `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> Result<T, TestError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let poll = async {
        loop {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::time::timeout(deadline, poll)
        .await
        .map_err(|_| TestError::Timeout {
            what: what.to_owned(),
            after: deadline,
        })
}

/// The first listen address of a node, with `/p2p/<id>` appended.
pub async fn dial_addr(node: &RunningNode) -> Result<Multiaddr, TestError> {
    let id = node.peer_id();
    let ctx = node.shared().clone();
    wait_for("a listen address", START_DEADLINE, || {
        let ctx = ctx.clone();
        async move {
            let a = ctx.host.listen_addrs().await.ok()?.into_iter().next()?;
            format!("{a}/p2p/{id}").parse::<Multiaddr>().ok()
        }
    })
    .await
}

/// The dial address of `node`, or None once it stops before it listens
/// (a node that halts at once closes its host).
async fn listen_or_stop(node: &RunningNode) -> Result<Option<Multiaddr>, TestError> {
    let id = node.peer_id();
    let ctx = node.shared().clone();
    wait_for("a listen address", START_DEADLINE, || {
        let ctx = ctx.clone();
        async move {
            if ctx.stop.is_stopping() {
                return Some(None);
            }
            let a = ctx.host.listen_addrs().await.ok()?.into_iter().next()?;
            format!("{a}/p2p/{id}").parse::<Multiaddr>().ok().map(Some)
        }
    })
    .await
}

/// Waits until `host` has an identified connection with `peer`.
pub async fn wait_identified(
    host: &dyn Network,
    peer: PeerId,
    deadline: Duration,
) -> Result<(), TestError> {
    wait_for(
        &format!("identified connection with {peer}"),
        deadline,
        || async move {
            let info = host.peer_info().await.ok()?;
            info.iter()
                .any(|p| p.peer == peer && p.protocol_version.is_some())
                .then_some(())
        },
    )
    .await
}

/// A running in-process network.
pub struct TestNet {
    /// The spec it was started from.
    pub spec: NetSpec,
    /// The genesis.
    pub genesis: Genesis,
    /// Node keys, by index.
    pub keys: Vec<NodeKey>,
    /// The funded faucet.
    pub faucet: NodeKey,
    /// More funded accounts.
    pub accounts: Vec<NodeKey>,
    nodes: Vec<Option<RunningNode>>,
    addrs: Vec<Option<Multiaddr>>,
    homes: Vec<PathBuf>,
    mem: Option<MemNet>,
    /// One clock for every node (on the in-memory network), restarts too.
    clock: Clock,
}

impl TestNet {
    /// Starts every node of `spec`, one after the other (see the module
    /// docs). On error the nodes already started are stopped.
    pub async fn start(spec: NetSpec) -> Result<TestNet, TestError> {
        let (genesis, keys, faucet, accounts) = spec.genesis();
        let mem = spec.memnet.map(|f| MemNet::new(&spec.chain_id, f));
        let mut net = TestNet {
            mem,
            clock: Clock::tokio(SIM_EPOCH_MS),
            genesis,
            keys,
            faucet,
            accounts,
            nodes: Vec::new(),
            addrs: Vec::new(),
            homes: Vec::new(),
            spec,
        };
        for i in 0..net.spec.len() {
            if i == 0 && !net.spec.start_leader {
                net.nodes.push(None);
                net.addrs.push(None);
                // Its home, for a later start.
                match temp_home("node0") {
                    Ok(h) => net.homes.push(h),
                    Err(e) => {
                        net.stop().await;
                        return Err(e);
                    }
                }
                continue;
            }
            if let Err(e) = net.start_one(i).await {
                net.stop().await;
                return Err(e);
            }
        }
        Ok(net)
    }

    async fn start_one(&mut self, i: usize) -> Result<(), TestError> {
        let (role, blocks_only) = self.spec.role(i);
        let mut config = test_config(role, blocks_only, self.spec.pex, self.spec.rpc);
        let first = usize::from(!self.spec.start_leader);
        let boot: Vec<usize> = match &self.spec.topology {
            Topology::Custom(lists) => lists
                .get(i)
                .map(|l| l.iter().copied().filter(|j| *j < i).collect())
                .unwrap_or_default(),
            _ if i == first => Vec::new(),
            Topology::Star => vec![first],
            Topology::Mesh => (first..i).collect(),
            Topology::Line => vec![i - 1],
        };
        config.p2p.peers = boot
            .iter()
            .filter_map(|j| self.addrs.get(*j).cloned().flatten())
            .map(|a| a.to_string())
            .collect();
        if let Some(edit) = &self.spec.edit {
            edit(i, &mut config);
        }
        let home = match self.homes.get(i) {
            Some(h) => h.clone(),
            None => {
                let h = temp_home(&format!("node{i}"))?;
                self.homes.push(h.clone());
                h
            }
        };
        let transport = match &self.mem {
            None => Transport::Libp2p,
            Some(mem) => {
                let me = self
                    .peer_id(i)
                    .ok_or_else(|| TestError::Check(format!("node {i} has no peer id")))?;
                let (network, events) = mem.join(me);
                Transport::Given {
                    network,
                    events,
                    clock: self.clock,
                }
            }
        };
        let node = start_on(
            NodeOptions {
                home,
                config,
                genesis: self.genesis.clone(),
                key: self.keys[i].clone(),
            },
            transport,
        )
        .await
        .map_err(|source| TestError::Start {
            index: i,
            source: Box::new(source),
        })?;
        let addr = listen_or_stop(&node).await;
        let me = node.peer_id();
        put(&mut self.nodes, i, Some(node));
        put(&mut self.addrs, i, addr.as_ref().ok().cloned().flatten());
        if addr?.is_none() {
            // It stopped (halted) before it listened: it is recorded
            // without an address, and nobody will identify it.
            return Ok(());
        }
        for j in boot {
            let Some(other) = self.nodes.get(j).and_then(Option::as_ref) else {
                continue;
            };
            // A boot node that halted (or never listened) identifies
            // nobody; nor is a node that halts right away identified.
            if other.shared().stop.is_stopping() || self.addr(j).is_none() {
                continue;
            }
            let new = self.shared(i)?.clone();
            let identified = wait_identified(other.shared().host.as_ref(), me, START_DEADLINE);
            tokio::select! {
                r = identified => r?,
                _ = new.stop.cancelled() => return Ok(()),
            }
        }
        Ok(())
    }

    /// Number of nodes (started or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the net has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Indexes of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// Node `i`, if it runs.
    pub fn node(&self, i: usize) -> Option<&RunningNode> {
        self.nodes.get(i).and_then(Option::as_ref)
    }

    /// What the tasks of node `i` share.
    pub fn shared(&self, i: usize) -> Result<&Arc<Shared>, TestError> {
        self.node(i)
            .map(RunningNode::shared)
            .ok_or_else(|| TestError::Check(format!("node {i} does not run")))
    }

    /// The dial address (`.../p2p/<id>`) of node `i`.
    pub fn addr(&self, i: usize) -> Option<&Multiaddr> {
        self.addrs.get(i).and_then(Option::as_ref)
    }

    /// The peer id of node `i` (started or not).
    pub fn peer_id(&self, i: usize) -> Option<PeerId> {
        p2p::keys::peer_id_of(&self.keys.get(i)?.public())
    }

    /// Committed height of every running node, by index (0 for the others).
    pub fn heights(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| n.as_ref().map_or(0, RunningNode::height))
            .collect()
    }

    /// Lowest committed height among the running nodes.
    pub fn min_height(&self) -> u64 {
        self.nodes
            .iter()
            .flatten()
            .map(RunningNode::height)
            .min()
            .unwrap_or(0)
    }

    /// Waits until every running node has committed `height`.
    pub async fn wait_height(&self, height: u64, deadline: Duration) -> Result<(), TestError> {
        wait_for(
            &format!("every node at height {height}"),
            deadline,
            || async { (self.min_height() >= height).then_some(()) },
        )
        .await
        .map_err(|e| TestError::Check(format!("{e}; heights {:?}", self.heights())))
    }

    /// Submits a tx at node `i` through the RPC backend (`broadcast_tx`).
    pub async fn submit(
        &self,
        i: usize,
        tx: &Tx,
        wait: WaitFor,
    ) -> Result<BroadcastResult, RpcError> {
        let node = self
            .node(i)
            .ok_or_else(|| RpcError::internal(format!("node {i} does not run")))?;
        node.rpc().broadcast_tx(tx.encode(), wait).await
    }

    /// Hands txs to node `i`'s admission path as if a peer had sent them
    /// (`from: None` is the RPC path without the commit wait).
    pub async fn admit(
        &self,
        i: usize,
        txs: Vec<Tx>,
        from: Option<PeerId>,
    ) -> Result<(), TestError> {
        let gossip = self
            .node(i)
            .and_then(RunningNode::gossip)
            .ok_or_else(|| TestError::Check(format!("node {i} does not run or has no mempool")))?;
        gossip.admit(txs, from).await;
        Ok(())
    }

    /// The hash of node `i`'s committed block at `height`.
    pub async fn block_hash(&self, i: usize, height: u64) -> Result<Option<Hash>, TestError> {
        let ctx = self.shared(i)?;
        let b = ctx
            .store
            .block_by_height(height)
            .await
            .map_err(|e| TestError::Check(format!("node {i} store: {e}")))?;
        Ok(b.map(|b| b.hash()))
    }

    /// Committed balance of `who` at node `i`.
    pub async fn balance(&self, i: usize, who: &PublicKey) -> Result<u64, TestError> {
        let ctx = self.shared(i)?;
        ctx.store
            .account(*who)
            .await
            .map(|a| a.balance)
            .map_err(|e| TestError::Check(format!("node {i} store: {e}")))
    }

    /// Committed nonce of `who` at node `i`.
    pub async fn nonce(&self, i: usize, who: &PublicKey) -> Result<u64, TestError> {
        let ctx = self.shared(i)?;
        ctx.store
            .account(*who)
            .await
            .map(|a| a.nonce)
            .map_err(|e| TestError::Check(format!("node {i} store: {e}")))
    }

    /// Checks that every running node holds the same block hash at every
    /// height from the genesis' initial height up to `height`. Returns the
    /// hashes.
    pub async fn check_same_chain(&self, height: u64) -> Result<Vec<Hash>, TestError> {
        let mut hashes = Vec::new();
        for h in self.genesis.initial_height..=height {
            let mut expected: Option<(usize, Hash)> = None;
            for i in self.running() {
                let Some(got) = self.block_hash(i, h).await? else {
                    return Err(TestError::Check(format!(
                        "node {i} has no block at height {h} (heights {:?})",
                        self.heights()
                    )));
                };
                match expected {
                    None => expected = Some((i, got)),
                    Some((j, want)) if want != got => {
                        return Err(TestError::Check(format!(
                            "fork at height {h}: node {j} has {want}, node {i} has {got}"
                        )));
                    }
                    Some(_) => {}
                }
            }
            if let Some((_, hash)) = expected {
                hashes.push(hash);
            }
        }
        Ok(hashes)
    }

    /// The in-memory network, when the spec runs on one.
    pub fn memnet(&self) -> Option<&MemNet> {
        self.mem.as_ref()
    }

    /// Starts node `i` again on its home, after [`TestNet::stop_node`].
    pub async fn restart_node(&mut self, i: usize) -> Result<(), TestError> {
        if self.node(i).is_some() {
            return Err(TestError::Check(format!("node {i} runs already")));
        }
        self.start_one(i).await
    }

    /// Stops node `i` and waits for it (bounded); returns its exit.
    pub async fn stop_node(&mut self, i: usize) -> Option<Result<(), NodeError>> {
        let node = self.nodes.get_mut(i)?.take()?;
        node.stop();
        tokio::time::timeout(STOP_DEADLINE, node.wait()).await.ok()
    }

    /// Stops every node (all at once) and waits for each (bounded), then
    /// removes the temporary homes. Returns each node's exit (None: not
    /// running, or it did not stop in time).
    pub async fn stop(mut self) -> Vec<Option<Result<(), NodeError>>> {
        for n in self.nodes.iter().flatten() {
            n.stop();
        }
        let waits = self.nodes.drain(..).map(|n| async move {
            match n {
                Some(n) => tokio::time::timeout(STOP_DEADLINE, n.wait()).await.ok(),
                None => None,
            }
        });
        let out = futures::future::join_all(waits).await;
        for h in self.homes.drain(..) {
            let _ = std::fs::remove_dir_all(h);
        }
        out
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // A test that failed before `stop`: at least cancel every task.
        for n in self.nodes.iter().flatten() {
            n.stop();
        }
        for h in &self.homes {
            let _ = std::fs::remove_dir_all(h);
        }
    }
}

/// A bare libp2p host (no Kite node behind it) to talk to nodes with raw
/// streams.
pub struct Probe {
    /// Its handle.
    pub host: HostHandle,
    /// Its events (keep them drained or ignore them: the host drops events
    /// it cannot deliver).
    pub events: HostEvents,
    /// Its key.
    pub key: NodeKey,
}

impl Probe {
    /// Starts a host of chain `chain_id` on 127.0.0.1 with the key of `seed`.
    pub fn spawn(chain_id: &str, seed: u8) -> Result<Probe, TestError> {
        let key = NodeKey::from_seed([seed; 32]);
        let mut c = HostConfig::new(chain_id);
        c.listen = vec![
            "/ip4/127.0.0.1/tcp/0"
                .parse()
                .map_err(|e| TestError::Check(format!("listen addr: {e}")))?,
        ];
        c.allow_private_addrs = true;
        c.target_peers = 0;
        c.pex = false;
        c.open_timeout = Duration::from_secs(10);
        let (host, events) =
            p2p::Host::spawn(&key, c).map_err(|e| TestError::Check(format!("probe host: {e}")))?;
        Ok(Probe { host, events, key })
    }

    /// The probe's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.host.local_peer_id()
    }

    /// Dials `addr` and waits until the connection with `peer` is identified.
    pub async fn connect(&self, addr: &Multiaddr, peer: PeerId) -> Result<(), TestError> {
        self.host
            .dial(addr.clone())
            .await
            .map_err(|e| TestError::Check(format!("dial {addr}: {e}")))?;
        wait_identified(&self.host, peer, START_DEADLINE).await
    }

    /// Stops the host (bounded).
    pub async fn stop(self) {
        let _ = tokio::time::timeout(STOP_DEADLINE, self.host.shutdown()).await;
    }
}

/// Elapsed time since `t` in milliseconds, for printing figures.
pub fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Sets `v[i]`, growing `v` with `None` as needed.
fn put<T>(v: &mut Vec<Option<T>>, i: usize, x: Option<T>) {
    while v.len() <= i {
        v.push(None);
    }
    v[i] = x;
}
