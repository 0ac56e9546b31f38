//! Shared pieces of the block sync tests (issue 7): chains written straight
//! into a block store (leader-signed blocks, commit infos from validator
//! votes, no consensus needed), node start/stop on loopback with deadlines,
//! and fake peers (a bare libp2p host serving `/kite/status/1.0.0` and
//! `/kite/blk/1.0.0` with a chosen misbehaviour).
#![allow(dead_code)]

use async_trait::async_trait;
use kite_blockstore::{BlockStore, StoreConfig};
use kite_node::config::{Config, Role};
use kite_node::node::{NodeOptions, RunningNode, start};
use kite_node::p2p::{self, HostConfig, HostEvents, HostHandle, Multiaddr, Network, PeerId};
use kite_protocols::blk::{self, BlockQuery, BlockReply, BlockSource};
use kite_protocols::status::{self, StatusInfo, StatusSource};
use kite_types::genesis::{Allocation, Validator};
use kite_types::{
    BLOCK_VERSION, Block, BlockHeader, CommitInfo, Genesis, Hash, NodeKey, Payload, PublicKey, Tx,
    Vote,
};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Balance of every funded sender.
pub const FUNDS: u64 = 1_000_000_000_000;
/// How long one node may take to stop.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// How often waits poll.
pub const POLL: Duration = Duration::from_millis(20);

/// One block as stored: the block and the commit info that proves it.
pub type Entry = (Block, CommitInfo);

/// The keys of a test chain, all from one seed.
#[derive(Clone)]
pub struct Keys {
    /// Genesis validators; the first is the leader.
    pub validators: Vec<NodeKey>,
    /// Funded accounts that send transfers.
    pub senders: Vec<NodeKey>,
    /// Receivers of transfers (not funded).
    pub receivers: Vec<PublicKey>,
}

impl Keys {
    /// `validators` validator keys, `senders` funded senders, 4 receivers.
    pub fn new(seed: u8, validators: usize, senders: usize) -> Keys {
        let key = |kind: u8, i: usize| {
            let mut s = [0u8; 32];
            s[0] = seed;
            s[1] = kind;
            s[2..10].copy_from_slice(&(i as u64).to_le_bytes());
            s[31] = 0x5c;
            NodeKey::from_seed(s)
        };
        Keys {
            validators: (0..validators.max(1)).map(|i| key(0, i)).collect(),
            senders: (0..senders).map(|i| key(1, i)).collect(),
            receivers: (0..4).map(|i| key(2, i).public()).collect(),
        }
    }

    /// The leader (validator 0).
    pub fn leader(&self) -> &NodeKey {
        &self.validators[0]
    }

    /// A key for a non-validator node (sentry, archive, fake peer).
    pub fn other(&self, i: usize) -> NodeKey {
        let mut s = [0u8; 32];
        s[0] = self.validators[0].public().0[0];
        s[1] = 9;
        s[2..10].copy_from_slice(&(i as u64).to_le_bytes());
        s[31] = 0x5d;
        NodeKey::from_seed(s)
    }
}

/// The genesis of a test chain: validator 0 leads, every validator has
/// power 1, the senders are funded.
pub fn genesis(chain_id: &str, keys: &Keys, empty_block_timeout: Duration) -> Genesis {
    let mut g = Genesis::single(chain_id, keys.leader().public(), keys.leader().public(), 1);
    g.genesis_time_ms = 1;
    g.validators = keys
        .validators
        .iter()
        .enumerate()
        .map(|(i, k)| Validator {
            pub_key: k.public(),
            power: 1,
            name: format!("v{i}"),
        })
        .collect();
    g.allocations = keys
        .senders
        .iter()
        .map(|k| Allocation {
            account: k.public(),
            balance: FUNDS,
        })
        .collect();
    g.propose_timeout = Duration::from_millis(50);
    g.empty_block_timeout = empty_block_timeout;
    g
}

/// A chain written into a store.
pub struct Built {
    /// Every block from the initial height, with its commit info.
    pub blocks: Vec<Entry>,
    /// Transfers in the chain.
    pub txs: u64,
    /// The store's best height afterwards.
    pub height: u64,
}

impl Built {
    /// Block hash at `height`.
    pub fn hash(&self, height: u64) -> Hash {
        self.blocks[(height - 1) as usize].0.hash()
    }
}

/// Signs `count` transfers for the block at `height`: sender `i % senders`
/// of the block's batch with its next nonce (`nonces` tracks them), to a
/// receiver, a small amount. Signing runs on `threads` threads.
pub fn transfers(
    keys: &Keys,
    chain_id: &str,
    nonces: &mut [u64],
    height: u64,
    count: usize,
    threads: usize,
) -> Vec<Tx> {
    if count == 0 || keys.senders.is_empty() {
        return Vec::new();
    }
    let n = keys.senders.len();
    let jobs: Vec<(usize, u64, PublicKey, u64)> = (0..count)
        .map(|i| {
            let s = (height as usize * 7 + i) % n;
            nonces[s] += 1;
            let to = keys.receivers[(height as usize + i) % keys.receivers.len()];
            (s, nonces[s], to, 1 + (height + i as u64) % 5)
        })
        .collect();
    let sign = |job: &(usize, u64, PublicKey, u64)| {
        Tx::sign(
            &keys.senders[job.0],
            chain_id,
            job.1,
            Payload::Transfer {
                to: job.2,
                amount: job.3,
            },
        )
    };
    let threads = threads.clamp(1, 16);
    if threads == 1 || count < 64 {
        return jobs.iter().map(sign).collect();
    }
    let chunk = count.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(sign).collect::<Vec<Tx>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signing thread"))
            .collect()
    })
}

/// Writes `heights` blocks into a fresh store at `dir` (no fsync), each
/// signed by the leader and committed with ACK votes of the first quorum
/// of validators; block `h` holds `txs_at(h)` transfers. Blocking: call it
/// from a blocking thread.
pub fn build_chain(
    dir: &Path,
    genesis: &Genesis,
    keys: &Keys,
    heights: u64,
    txs_at: &dyn Fn(u64) -> usize,
    threads: usize,
) -> Built {
    build_chain_opts(dir, genesis, keys, heights, txs_at, threads, true)
}

/// [`build_chain`] on tokio's blocking pool, with 2 signing threads.
pub async fn prepare_chain(
    dir: PathBuf,
    genesis: &Genesis,
    keys: &Keys,
    heights: u64,
    txs_at: fn(u64) -> usize,
) -> Built {
    let (g, k) = (genesis.clone(), keys.clone());
    tokio::task::spawn_blocking(move || build_chain(&dir, &g, &k, heights, &txs_at, 2))
        .await
        .expect("chain building task")
}

/// [`build_chain`], keeping the blocks in memory only when `keep` (big
/// bench chains are read back from the store by the nodes).
pub fn build_chain_opts(
    dir: &Path,
    genesis: &Genesis,
    keys: &Keys,
    heights: u64,
    txs_at: &dyn Fn(u64) -> usize,
    threads: usize,
    keep: bool,
) -> Built {
    let store = BlockStore::open_with(
        dir,
        genesis,
        StoreConfig {
            durable: false,
            ..StoreConfig::default()
        },
    )
    .expect("open the store to build a chain in");
    let valset = genesis.validator_set();
    let quorum_votes = keys.validators.len() / 2 + 1;
    let mut nonces = vec![0u64; keys.senders.len()];
    let mut blocks = Vec::with_capacity(if keep { heights as usize } else { 0 });
    let mut txs_total = 0u64;
    let best = store.best().expect("best");
    let (mut prev_hash, mut prev_app) = (best.block_hash, best.app_hash);
    for h in genesis.initial_height..genesis.initial_height + heights {
        let txs = transfers(keys, &genesis.chain_id, &mut nonces, h, txs_at(h), threads);
        txs_total += txs.len() as u64;
        let header = BlockHeader {
            version: BLOCK_VERSION,
            chain_id: genesis.chain_id.clone(),
            height: h,
            prev_hash,
            prev_app_hash: prev_app,
            timestamp_ms: genesis.genesis_time_ms + h,
            tx_root: Hash::ZERO,
            validator_set_hash: valset.hash(),
            proposer: keys.leader().public(),
            term: 0,
        };
        let block = Block::new_signed(header, txs, keys.leader());
        let ex = store.execute_block(&block, true).expect("execute");
        let votes = keys
            .validators
            .iter()
            .take(quorum_votes)
            .map(|k| Vote::ack(k, &genesis.chain_id, h, block.hash(), ex.app_hash))
            .collect();
        let ci = CommitInfo {
            app_hash: ex.app_hash,
            votes,
        };
        store.commit(&block, &ci, &ex.changes).expect("commit");
        prev_hash = block.hash();
        prev_app = ex.app_hash;
        if keep {
            blocks.push((block, ci));
        }
    }
    store.flush().expect("flush");
    let height = store.best().expect("best").height;
    drop(store);
    Built {
        blocks,
        txs: txs_total,
        height,
    }
}

/// Copies a folder tree (a closed sled store).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("dir entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy file");
        }
    }
}

/// A node config for loopback tests: OS-assigned port, private addresses,
/// no peer exchange, no RPC, no fsync, sync requests time out after 1 s.
pub fn config(role: Role, peers: &[Multiaddr]) -> Config {
    let mut c = Config {
        role,
        ..Config::default()
    };
    c.p2p.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    c.p2p.peers = peers.iter().map(ToString::to_string).collect();
    c.p2p.allow_private_addrs = true;
    c.p2p.pex = false;
    c.rpc.listen = String::new();
    c.store.durable = false;
    c.sync.request_timeout = Duration::from_secs(1);
    c
}

/// Starts a node.
pub async fn start_node(
    home: &Path,
    config: Config,
    genesis: &Genesis,
    key: &NodeKey,
) -> RunningNode {
    start(NodeOptions {
        home: home.to_owned(),
        config,
        genesis: genesis.clone(),
        key: key.clone(),
    })
    .await
    .expect("node start")
}

/// Polls `f` until it gives `Some`, panicking after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `addr/p2p/<id>` of a host's first listen address.
pub async fn host_addr(host: &dyn Network) -> Multiaddr {
    let id = host.local_peer_id();
    wait_for("a listen address", Duration::from_secs(10), || async {
        let a = host.listen_addrs().await.ok()?.into_iter().next()?;
        format!("{a}/p2p/{id}").parse::<Multiaddr>().ok()
    })
    .await
}

/// The dial address of a node.
pub async fn node_addr(node: &RunningNode) -> Multiaddr {
    host_addr(node.shared().host.as_ref()).await
}

/// Stops a node and waits for it (bounded); panics if it stopped with an
/// error (a halt).
pub async fn stop(node: RunningNode) {
    node.stop();
    let r = tokio::time::timeout(STOP_DEADLINE, node.wait())
        .await
        .expect("node stops in time");
    assert!(r.is_ok(), "node stopped with an error: {r:?}");
}

/// The block hash a node stored at `height`.
pub fn stored_hash(node: &RunningNode, height: u64) -> Option<Hash> {
    node.shared()
        .store
        .store()
        .hash_at(height)
        .expect("store read")
}

/// Checks that `node` holds exactly the blocks of `chain` up to `height`.
pub fn assert_same_chain(node: &RunningNode, chain: &[Entry], height: u64) {
    for h in 1..=height {
        let want = chain[(h - 1) as usize].0.hash();
        assert_eq!(stored_hash(node, h), Some(want), "block at height {h}");
    }
}

/// Blocks this node received through block sync (metric).
pub fn synced_blocks(node: &RunningNode) -> u64 {
    node.shared().metrics.synced_blocks.get()
}

// The sync bench includes this module too and logs nothing.
#[allow(unused_imports)]
pub use kite_node::testkit::init_log;

/// How a fake peer misbehaves on `/kite/blk/1.0.0`. Every fake claims the
/// real tip in its status and serves that one block honestly (nodes ask
/// for it to check the claim), then misbehaves on the heights block sync
/// asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Serves every other block tampered (header field under the old
    /// signature, commit info short of the quorum, signed by a non-leader
    /// key, or txs not matching the tx root, by height).
    Corrupt,
    /// Holds only the first `holds` blocks (and the tip): answers "not
    /// found" for the heights between, which it claimed to have.
    Liar {
        /// Blocks it really serves from the start of the chain.
        holds: u64,
    },
    /// Never answers a block request for any other height.
    Stall,
}

/// What a fake peer saw.
#[derive(Debug, Default)]
pub struct FakeCounters {
    /// Status requests answered.
    pub status: AtomicU64,
    /// Block queries received for other heights than the claimed tip (one
    /// per height of a range).
    pub queries: AtomicU64,
    /// Tampered blocks sent.
    pub tampered: AtomicU64,
    /// Queries answered "not found" for heights it claimed.
    pub denied: AtomicU64,
}

struct FakeSource {
    chain: Arc<Vec<Entry>>,
    genesis: Genesis,
    misbehaviour: Misbehaviour,
    counters: Arc<FakeCounters>,
    forger: NodeKey,
}

impl FakeSource {
    fn claim(&self) -> u64 {
        self.chain.len() as u64
    }

    /// A tampered copy of a real block: which field depends on the height
    /// (a broken tx root every 8th height: the wire layer refuses it and
    /// with it the rest of the range; the other kinds reach the engine).
    fn tamper(&self, (block, ci): &Entry) -> Entry {
        let h = block.height();
        let kind = if h % 8 == 7 { 3 } else { h % 3 };
        match kind {
            // A header field changed under the old signature.
            0 => {
                let mut hd = block.header().clone();
                hd.timestamp_ms += 1;
                (
                    Block::from_parts(hd, block.txs().to_vec(), *block.leader_sig()),
                    ci.clone(),
                )
            }
            // A commit info short of the quorum (one vote left).
            1 => {
                let mut ci = ci.clone();
                ci.votes.truncate(1);
                (block.clone(), ci)
            }
            // A self-consistent block signed by a key that is not the leader.
            2 => {
                let hd = block.header().clone();
                let b = Block::new_signed(hd, block.txs().to_vec(), &self.forger);
                (b, ci.clone())
            }
            // A tx added under the old header: the tx root no longer matches.
            _ => {
                let extra = Tx::sign(
                    &self.forger,
                    &self.genesis.chain_id,
                    1,
                    Payload::Transfer {
                        to: self.forger.public(),
                        amount: 1,
                    },
                );
                let mut txs = block.txs().to_vec();
                txs.push(extra);
                (
                    Block::from_parts(block.header().clone(), txs, *block.leader_sig()),
                    ci.clone(),
                )
            }
        }
    }
}

#[async_trait]
impl BlockSource for FakeSource {
    async fn block(&self, query: BlockQuery) -> BlockReply {
        let best_height = self.claim();
        let BlockQuery::Height(h) = query else {
            return BlockReply {
                block: None,
                best_height,
            };
        };
        let real = h.checked_sub(1).and_then(|i| self.chain.get(i as usize));
        if h == best_height {
            // The proof of its claimed height.
            return BlockReply {
                block: real.cloned(),
                best_height,
            };
        }
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        let block = match (self.misbehaviour, real) {
            (Misbehaviour::Stall, _) => std::future::pending().await,
            (Misbehaviour::Corrupt, Some(e)) => {
                self.counters.tampered.fetch_add(1, Ordering::Relaxed);
                Some(self.tamper(e))
            }
            (Misbehaviour::Liar { holds }, Some(e)) if h <= holds => Some(e.clone()),
            _ => {
                if h <= best_height {
                    self.counters.denied.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
        };
        BlockReply { block, best_height }
    }
}

#[async_trait]
impl StatusSource for FakeSource {
    async fn status(&self) -> StatusInfo {
        self.counters.status.fetch_add(1, Ordering::Relaxed);
        let best = self.claim();
        let best_hash = self.chain.last().map_or(Hash::ZERO, |e| e.0.hash());
        StatusInfo {
            chain_id: self.genesis.chain_id.clone(),
            best_height: best,
            best_hash,
            app_hash: Hash::ZERO,
            role: status::Role::Sentry,
            round: None,
            genesis_hash: self.genesis.hash(),
            blocks_only: false,
            syncing: false,
            sync_target: 0,
        }
    }
}

/// A fake peer: a bare libp2p host of the chain that answers status and
/// block requests with a misbehaviour.
pub struct FakePeer {
    /// Its host.
    pub host: HostHandle,
    /// Keep the event channel open.
    _events: HostEvents,
    /// What it saw.
    pub counters: Arc<FakeCounters>,
    /// Its dial address.
    pub addr: Multiaddr,
}

impl FakePeer {
    /// Starts a fake peer with key `key` on 127.0.0.1.
    pub async fn spawn(
        key: &NodeKey,
        genesis: &Genesis,
        chain: Arc<Vec<Entry>>,
        misbehaviour: Misbehaviour,
    ) -> FakePeer {
        let mut c = HostConfig::new(genesis.chain_id.clone());
        c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")];
        c.allow_private_addrs = true;
        c.pex = false;
        c.target_peers = 0;
        let (host, events) = p2p::Host::spawn(key, c).expect("fake host");
        let counters = Arc::new(FakeCounters::default());
        let source = Arc::new(FakeSource {
            chain,
            genesis: genesis.clone(),
            misbehaviour,
            counters: counters.clone(),
            forger: NodeKey::from_seed([0xf0; 32]),
        });
        let s = source.clone();
        p2p::spawn_accept_loop(&host, status::PROTOCOL, 64, move |_peer: PeerId, stream| {
            let s = s.clone();
            async move { status::serve(stream, s.as_ref()).await }
        })
        .expect("status accept loop");
        let s = source;
        p2p::spawn_accept_loop(&host, blk::PROTOCOL, 64, move |_peer: PeerId, stream| {
            let s = s.clone();
            async move { blk::serve(stream, s.as_ref()).await }
        })
        .expect("blk accept loop");
        let addr = host_addr(&host).await;
        FakePeer {
            host,
            _events: events,
            counters,
            addr,
        }
    }

    /// Stops its host (bounded).
    pub async fn stop(self) {
        let _ = tokio::time::timeout(STOP_DEADLINE, self.host.shutdown()).await;
    }
}

/// Serialises the tests of one binary: each runs a few nodes and the
/// machine may have 2 cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
