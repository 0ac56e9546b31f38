#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Issue 5 on real in-process networks: tx gossip through a node in the
//! middle (no echo, no duplicates, committed exactly once), block get by
//! height and by hash, peer exchange, peers of another chain or genesis
//! dropped, and blocks-only nodes. The tests of this file run one at a
//! time (a shared lock) so a 2-core machine is not asked to run several
//! networks at once; every wait is bounded and every test stops its nodes.

use kite_node::config::Config;
use kite_node::node::NodeError;
use kite_node::p2p::PeerId;
use kite_node::rpc::{UNSUPPORTED, WaitFor};
use kite_node::testkit::{NetSpec, Probe, TestNet, Topology, wait_for};
use kite_protocols::{blk, txann};
use kite_types::{Hash, NodeKey, Payload, Tx};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `n` transfers of `key` with nonces `first..`, to a fixed receiver.
fn transfers(chain: &str, key: &NodeKey, first: u64, n: u64) -> Vec<Tx> {
    let to = NodeKey::from_seed([0xee; 32]).public();
    (first..first + n)
        .map(|nonce| Tx::sign(key, chain, nonce, Payload::Transfer { to, amount: nonce }))
        .collect()
}

async fn connected(net: &TestNet, i: usize) -> HashSet<PeerId> {
    net.shared(i)
        .unwrap()
        .host
        .connected_peers()
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Every tx of `txs` appears exactly once in node `i`'s chain up to its
/// height, and its tx index agrees once it has caught up (blocks that came
/// by block sync are indexed after it).
async fn committed_once(net: &TestNet, i: usize, txs: &[Tx]) {
    let ctx = net.shared(i).unwrap();
    let top = ctx.store.best().await.unwrap().height;
    let t0 = std::time::Instant::now();
    while ctx.store.tx_indexed() < top {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "node {i}: tx index stuck at {} of {top}",
            ctx.store.tx_indexed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut at: HashMap<Hash, u64> = HashMap::new();
    for h in net.genesis.initial_height..=top {
        let b = ctx.store.block_by_height(h).await.unwrap().unwrap();
        for t in b.txs() {
            assert!(at.insert(t.hash(), h).is_none(), "node {i}: tx twice");
        }
    }
    for t in txs {
        let h = at.get(&t.hash()).copied();
        assert!(h.is_some(), "node {i}: tx {} not committed", t.hash());
        let loc = ctx.store.tx_location(t.hash()).await.unwrap();
        assert_eq!(loc.map(|l| l.height), h, "node {i}: tx index");
    }
}

/// A line 1 - 2 - 3 of validators whose leader never starts (nothing
/// commits, so mempools can be watched): 120 txs submitted at node 1 reach
/// node 3 through node 2, each node holds each exactly once, nothing is
/// announced back to its origin, and nodes 1 and 3 never connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txs_cross_a_line_once_without_echo() {
    let _serial = SERIAL.lock().await;
    kite_node::testkit::init_log();
    let mut spec = NetSpec::new(4);
    spec.chain_id = "kite-line".into();
    spec.seed = 51;
    spec.funded = 2;
    spec.start_leader = false;
    spec.topology = Topology::Line;
    // No re-announcement during the test: every announce seen is a fresh one.
    spec.edit = Some(Arc::new(|_, c: &mut Config| {
        c.p2p.reannounce_interval = Duration::from_secs(3600);
    }));
    let net = TestNet::start(spec).await.unwrap();
    let chain = net.genesis.chain_id.clone();
    let mut txs = transfers(&chain, &net.accounts[0], 1, 60);
    txs.extend(transfers(&chain, &net.accounts[1], 1, 60));
    for t in &txs {
        net.submit(1, t, WaitFor::Accept).await.unwrap();
    }
    let want: HashSet<Hash> = txs.iter().map(Tx::hash).collect();
    for i in [2, 3] {
        let m = net.shared(i).unwrap().mempool.clone().unwrap();
        wait_for(&format!("node {i} mempool"), DEADLINE, || async {
            want.iter().all(|h| m.contains(h)).then_some(())
        })
        .await
        .unwrap();
    }
    // Every fetch has ended before counting.
    for i in [1, 2, 3] {
        let gossip = net.node(i).unwrap().gossip().unwrap();
        wait_for(&format!("node {i}: no fetch left"), DEADLINE, || async {
            (gossip.in_flight().await == 0).then_some(())
        })
        .await
        .unwrap();
        let m = net.shared(i).unwrap().mempool.clone().unwrap();
        assert_eq!(m.len(), txs.len(), "node {i} holds each tx once");
        m.check_invariants().unwrap();
    }
    // Node 1 is the origin: node 2 never announces the txs back to it.
    let h1 = &net.shared(1).unwrap().host;
    assert_eq!(h1.protocol_stats(txann::PROTOCOL).accepted, 0);
    assert!(h1.protocol_stats(txann::PROTOCOL).opened >= 1);
    // Node 2 relays; node 3 only receives (it got the txs from node 2).
    assert!(
        net.shared(3)
            .unwrap()
            .host
            .protocol_stats(txann::PROTOCOL)
            .accepted
            >= 1
    );
    assert_eq!(
        net.shared(2)
            .unwrap()
            .host
            .protocol_stats(txann::PROTOCOL)
            .accepted,
        net.shared(1)
            .unwrap()
            .host
            .protocol_stats(txann::PROTOCOL)
            .opened,
        "node 2 accepted announces from node 1 only (none echoed by node 3)"
    );
    // The line holds: 1 and 3 never met.
    let (p1, p3) = (net.peer_id(1).unwrap(), net.peer_id(3).unwrap());
    assert!(!connected(&net, 1).await.contains(&p3));
    assert!(!connected(&net, 3).await.contains(&p1));
    for exit in net.stop().await.into_iter().skip(1) {
        assert!(matches!(exit, Some(Ok(()))), "{exit:?}");
    }
}

/// A line: validator 1 - validator 2 - leader 0 (1 and 0 never connect).
/// Txs submitted at node 1 reach the leader through node 2 and are
/// committed exactly once; node 1 follows the chain through node 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txs_reach_the_leader_through_a_middle_node_and_commit_once() {
    let _serial = SERIAL.lock().await;
    kite_node::testkit::init_log();
    let mut spec = NetSpec::new(3);
    spec.chain_id = "kite-middle".into();
    spec.seed = 52;
    spec.funded = 2;
    spec.topology = Topology::Custom(vec![vec![], vec![], vec![0, 1]]);
    let net = TestNet::start(spec).await.unwrap();
    let chain = net.genesis.chain_id.clone();
    let mut txs = transfers(&chain, &net.accounts[0], 1, 40);
    txs.extend(transfers(&chain, &net.accounts[1], 1, 40));
    for t in &txs {
        net.submit(1, t, WaitFor::Accept).await.unwrap();
    }
    for i in 0..3 {
        wait_for(&format!("node {i} commits every tx"), DEADLINE, || async {
            for k in &net.accounts {
                if net.nonce(i, &k.public()).await.unwrap() != 40 {
                    return None;
                }
            }
            Some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; heights {:?}", net.heights()));
    }
    for i in 0..3 {
        committed_once(&net, i, &txs).await;
    }
    let mut top = 0;
    for i in 0..3 {
        top = top.max(net.shared(i).unwrap().store.best().await.unwrap().height);
    }
    net.wait_height(top, DEADLINE).await.unwrap();
    net.check_same_chain(top).await.unwrap();
    let (p0, p1) = (net.peer_id(0).unwrap(), net.peer_id(1).unwrap());
    assert!(!connected(&net, 0).await.contains(&p1));
    assert!(!connected(&net, 1).await.contains(&p0));
    for exit in net.stop().await {
        assert!(matches!(exit, Some(Ok(()))), "{exit:?}");
    }
}

/// `/kite/blk/1.0.0` between two live nodes: a block by height, the same
/// block by hash, with a commit info that proves it; a missing height is
/// "not found" with the peer's best height.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_are_fetched_by_height_and_by_hash() {
    let _serial = SERIAL.lock().await;
    kite_node::testkit::init_log();
    let mut spec = NetSpec::new(2);
    spec.chain_id = "kite-blk".into();
    spec.seed = 53;
    let net = TestNet::start(spec).await.unwrap();
    let chain = net.genesis.chain_id.clone();
    let txs = transfers(&chain, &net.faucet, 1, 5);
    for t in &txs {
        net.submit(0, t, WaitFor::Accept).await.unwrap();
    }
    wait_for("txs committed", DEADLINE, || async {
        (net.nonce(0, &net.faucet.public()).await.unwrap() == 5).then_some(())
    })
    .await
    .unwrap();
    net.wait_height(2, DEADLINE).await.unwrap();
    let at = net
        .shared(0)
        .unwrap()
        .store
        .tx_location(txs[0].hash())
        .await
        .unwrap()
        .unwrap()
        .height;

    let host = net.shared(1).unwrap().host.clone();
    let leader = net.peer_id(0).unwrap();
    let max = net.shared(1).unwrap().max_block_bytes();
    let s = host.open_stream(leader, blk::PROTOCOL).await.unwrap();
    let by_height = blk::request(s, blk::BlockQuery::Height(at), max)
        .await
        .unwrap();
    let (block, ci) = by_height.block.clone().unwrap();
    assert_eq!(block.height(), at);
    assert!(by_height.best_height >= at);
    assert!(block.txs().iter().any(|t| t.hash() == txs[0].hash()));
    assert!(block.verify_leader(&net.genesis.leader));
    ci.verify(
        &chain,
        at,
        &block.hash(),
        &net.genesis.validator_set(),
        net.genesis.quorum,
    )
    .unwrap();
    assert_eq!(
        Some(block.hash()),
        net.block_hash(1, at).await.unwrap(),
        "both nodes hold the same block"
    );

    let s = host.open_stream(leader, blk::PROTOCOL).await.unwrap();
    let by_hash = blk::request(s, blk::BlockQuery::Hash(block.hash()), max)
        .await
        .unwrap();
    assert_eq!(by_hash.block, by_height.block);

    let s = host.open_stream(leader, blk::PROTOCOL).await.unwrap();
    let missing = blk::request(s, blk::BlockQuery::Height(1_000_000), max)
        .await
        .unwrap();
    assert!(missing.block.is_none());
    assert!(missing.best_height >= at);
    let s = host.open_stream(leader, blk::PROTOCOL).await.unwrap();
    let missing = blk::request(s, blk::BlockQuery::Hash(Hash([7; 32])), max)
        .await
        .unwrap();
    assert!(missing.block.is_none());
    for exit in net.stop().await {
        assert!(matches!(exit, Some(Ok(()))), "{exit:?}");
    }
}

/// Peer exchange: in a star (every node knows node 0 only) every node ends
/// up connected to every other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_exchange_connects_a_star_into_a_mesh() {
    let _serial = SERIAL.lock().await;
    kite_node::testkit::init_log();
    let mut spec = NetSpec::new(4);
    spec.chain_id = "kite-pex".into();
    spec.seed = 54;
    spec.pex = true;
    spec.topology = Topology::Star;
    let net = TestNet::start(spec).await.unwrap();
    let ids: Vec<PeerId> = (0..4).map(|i| net.peer_id(i).unwrap()).collect();
    for i in 0..4 {
        let host = net.shared(i).unwrap().host.clone();
        let others: Vec<PeerId> = ids.iter().filter(|p| **p != ids[i]).copied().collect();
        wait_for(&format!("node {i} connected to all"), DEADLINE, || {
            let (host, others) = (host.clone(), others.clone());
            async move {
                let got = host.connected_peers().await.ok()?;
                others.iter().all(|p| got.contains(p)).then_some(())
            }
        })
        .await
        .unwrap();
    }
    // And the network still commits.
    let h = net.min_height();
    net.wait_height(h + 2, DEADLINE).await.unwrap();
    for exit in net.stop().await {
        assert!(matches!(exit, Some(Ok(()))), "{exit:?}");
    }
}

/// A node of another chain id (identify) and a node of the same chain id
/// but another genesis (status) both dial node 0 of chain A, their only
/// `p2p.peers` entry: each stops with a clear error that says so (see
/// `kite_node::chaincheck`); A never counts it as a peer, is no longer
/// connected to it, and keeps committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_another_chain_or_genesis_are_dropped_and_the_stranger_stops() {
    let _serial = SERIAL.lock().await;
    kite_node::testkit::init_log();
    let mut spec = NetSpec::new(1);
    spec.chain_id = "kite-a".into();
    spec.seed = 55;
    let a = TestNet::start(spec).await.unwrap();
    let a_addr = a.addr(0).unwrap().to_string();

    let start_dialing = |chain: &str, seed: u64| {
        let mut spec = NetSpec::new(1);
        spec.chain_id = chain.into();
        spec.seed = seed;
        let addr = a_addr.clone();
        spec.edit = Some(Arc::new(move |_, c: &mut Config| {
            c.p2p.peers = vec![addr.clone()];
        }));
        TestNet::start(spec)
    };
    let other_chain = start_dialing("kite-b", 56).await.unwrap();
    let other_genesis = start_dialing("kite-a", 57).await.unwrap();
    assert_eq!(other_genesis.genesis.chain_id, a.genesis.chain_id);
    assert_ne!(other_genesis.genesis.hash(), a.genesis.hash());

    let host = a.shared(0).unwrap().host.clone();
    for (what, net, says) in [
        // It may see A's chain id in identify or in A's status, whichever
        // comes first.
        ("another chain id", &other_chain, "kite-a"),
        ("another genesis", &other_genesis, "of genesis"),
    ] {
        let ctx = net.shared(0).unwrap().clone();
        wait_for(&format!("node of {what} stops"), DEADLINE, || {
            let ctx = ctx.clone();
            async move { ctx.stop.is_stopping().then_some(()) }
        })
        .await
        .unwrap();
        let reason = ctx.stop.reason();
        let Some(kite_node::node::StopReason::Halted(why)) = reason else {
            panic!("{what}: expected a halt, got {reason:?}");
        };
        assert!(
            why.starts_with("genesis mismatch: 1 of the 1 peers in p2p.peers ("),
            "{what}: {why}"
        );
        assert!(
            why.contains(") run another chain and no peer runs this node's"),
            "{why}"
        );
        assert!(why.contains(&a.peer_id(0).unwrap().to_string()), "{why}");
        assert!(why.contains(says), "{what}: {why}");
    }
    // A drops both. (A bans a stranger when it saw the mismatch itself,
    // after a grace in which the stranger can read A's identify and status
    // and find out too; the stranger may stop before A gets to see it.)
    let strangers = [
        other_chain.peer_id(0).unwrap(),
        other_genesis.peer_id(0).unwrap(),
    ];
    wait_for("no connection with the strangers", DEADLINE, || {
        let host = host.clone();
        async move {
            let up = host.connected_peers().await.ok()?;
            strangers.iter().all(|p| !up.contains(p)).then_some(())
        }
    })
    .await
    .unwrap();
    let table = a.node(0).unwrap().peers().table();
    wait_for("A's peer table without the strangers", DEADLINE, || {
        let table = table.clone();
        async move {
            let peers = table.borrow();
            strangers
                .iter()
                .all(|p| !peers.contains_key(p))
                .then_some(())
        }
    })
    .await
    .unwrap();
    let h = a.min_height();
    a.wait_height(h + 2, DEADLINE).await.unwrap();
    for exit in a.stop().await {
        assert!(matches!(exit, Some(Ok(()))), "{exit:?}");
    }
    for net in [other_chain, other_genesis] {
        for exit in net.stop().await {
            assert!(
                matches!(&exit, Some(Err(NodeError::Halted(why))) if why.contains("genesis mismatch")),
                "{exit:?}"
            );
        }
    }
}

/// A blocks-only node has no mempool, refuses RPC submission with the
/// UNSUPPORTED error, wants no announced tx, and still follows the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_only_node_holds_no_tx_and_follows_the_chain() {
    let _serial = SERIAL.lock().await;
    kite_node::testkit::init_log();
    let mut spec = NetSpec::new(2);
    spec.chain_id = "kite-archive".into();
    spec.seed = 58;
    spec.blocks_only = 1;
    let net = TestNet::start(spec).await.unwrap();
    let chain = net.genesis.chain_id.clone();
    let archive = 2;
    assert!(net.shared(archive).unwrap().mempool.is_none());

    let txs = transfers(&chain, &net.faucet, 1, 20);
    let err = net
        .submit(archive, &txs[0], WaitFor::Accept)
        .await
        .unwrap_err();
    assert_eq!(err.code, UNSUPPORTED, "{err:?}");
    let err = net
        .submit(archive, &txs[0], WaitFor::Commit)
        .await
        .unwrap_err();
    assert_eq!(err.code, UNSUPPORTED, "{err:?}");

    // A raw announce to the archive: it wants nothing. The same announce
    // to a validator is wanted (the probe works).
    let probe = Probe::spawn(&chain, 0x58).unwrap();
    let extra = transfers(&chain, &net.accounts[0], 1, 1).remove(0);
    for (i, wanted) in [(archive, 0), (1, 1)] {
        let peer = net.peer_id(i).unwrap();
        probe.connect(net.addr(i).unwrap(), peer).await.unwrap();
        let s = probe.host.open_stream(peer, txann::PROTOCOL).await.unwrap();
        let t = extra.clone();
        let out = txann::announce(s, &[t.hash()], move |_| Some(t.clone()))
            .await
            .unwrap();
        assert_eq!(out.wanted, wanted, "node {i}");
    }
    probe.stop().await;

    for t in &txs {
        net.submit(0, t, WaitFor::Accept).await.unwrap();
    }
    wait_for("the archive follows every tx", DEADLINE, || async {
        (net.nonce(archive, &net.faucet.public()).await.unwrap() == 20).then_some(())
    })
    .await
    .unwrap();
    committed_once(&net, archive, &txs).await;
    let mut top = 0;
    for i in 0..3 {
        top = top.max(net.shared(i).unwrap().store.best().await.unwrap().height);
    }
    net.wait_height(top, DEADLINE).await.unwrap();
    net.check_same_chain(top).await.unwrap();
    assert!(net.shared(archive).unwrap().mempool.is_none());
    for exit in net.stop().await {
        assert!(matches!(exit, Some(Ok(()))), "{exit:?}");
    }
}

/// A burst of 1,000 txs of one sender (several announce streams that may
/// be admitted in any order) reaches the next node without waiting for a
/// re-announce: gapped nonces are queued, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_one_sender_crosses_without_reannounce() {
    let _serial = SERIAL.lock().await;
    kite_node::testkit::init_log();
    let mut spec = NetSpec::new(3);
    spec.chain_id = "kite-burst".into();
    spec.seed = 59;
    spec.funded = 1;
    spec.start_leader = false;
    spec.edit = Some(Arc::new(|_, c: &mut Config| {
        c.p2p.reannounce_interval = Duration::from_secs(3600);
    }));
    let net = TestNet::start(spec).await.unwrap();
    let txs = transfers(&net.genesis.chain_id, &net.accounts[0], 1, 1000);
    net.admit(1, txs.clone(), None).await.unwrap();
    let b = net.shared(2).unwrap().mempool.clone().unwrap();
    wait_for("the whole burst at node 2", DEADLINE, || async {
        (b.len() == txs.len()).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", b.stats()));
    assert!(txs.iter().all(|t| b.contains(&t.hash())));
    assert_eq!(b.stats().pending, txs.len());
    for exit in net.stop().await.into_iter().skip(1) {
        assert!(matches!(exit, Some(Ok(()))), "{exit:?}");
    }
}

/// A validator wants a leader-signed proposal for its next height and for
/// the one after (the leader proposes as soon as it commits, before the
/// validator has committed the same block from the announce), not beyond;
/// a proposal not signed by the leader is never wanted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validator_wants_proposals_one_height_ahead_only() {
    let _serial = SERIAL.lock().await;
    kite_node::testkit::init_log();
    let mut spec = NetSpec::new(2);
    spec.chain_id = "kite-ahead".into();
    spec.seed = 60;
    spec.start_leader = false;
    let net = TestNet::start(spec).await.unwrap();
    let probe = Probe::spawn(&net.genesis.chain_id, 0x60).unwrap();
    let peer = net.peer_id(1).unwrap();
    probe.connect(net.addr(1).unwrap(), peer).await.unwrap();
    assert_eq!(net.heights()[1], 0);
    let leader = &net.keys[0];
    let stranger = NodeKey::from_seed([0x61; 32]);
    for (height, key, wanted) in [
        (1, leader, true),
        (2, leader, true),
        (3, leader, false),
        (1, &stranger, false),
    ] {
        let header = kite_types::BlockHeader {
            version: kite_types::BLOCK_VERSION,
            chain_id: net.genesis.chain_id.clone(),
            height,
            prev_hash: Hash::ZERO,
            prev_app_hash: Hash::ZERO,
            timestamp_ms: 1,
            tx_root: kite_types::Block::tx_root_of(&[]),
            validator_set_hash: net.genesis.validator_set().hash(),
            proposer: net.genesis.leader,
            term: 0,
        };
        let block = kite_types::Block::new_signed(header, Vec::new(), key);
        let s = probe
            .host
            .open_stream(peer, kite_protocols::blkprop::PROTOCOL)
            .await
            .unwrap();
        let out = kite_protocols::blkprop::propose(s, &block, 0, None)
            .await
            .unwrap();
        let sent = out == kite_protocols::blkann::AnnounceOutcome::Sent;
        assert_eq!(sent, wanted, "height {height}");
    }
    probe.stop().await;
    for exit in net.stop().await.into_iter().skip(1) {
        assert!(matches!(exit, Some(Ok(()))), "{exit:?}");
    }
}
