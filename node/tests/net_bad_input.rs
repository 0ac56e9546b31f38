#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Bad input against live nodes: raw streams of every protocol carrying
//! truncated, oversized, garbage and empty messages, then well-framed but
//! forged ones (proposals, resets, votes and commit announces not signed by
//! who they claim, lying tx batches, a peer claiming a far height). After
//! each batch the network must still be up, keep committing one chain and
//! keep serving a well-behaved peer. The tests of this file run one at a
//! time; every wait is bounded and every test stops its nodes.

use futures::{AsyncReadExt, AsyncWriteExt};
use kite_node::config::Config;
use kite_node::p2p::{self, PeerId};
use kite_node::testkit::{NetSpec, Probe, TestNet, wait_for};
use kite_protocols::blkprop::ResetInfo;
use kite_protocols::framing::encode_frame;
use kite_protocols::status::{self, StatusInfo, StatusSource};
use kite_protocols::{
    ALL_PROTOCOLS, ack, blk, blkann, blkprop, discover, proto, tx, txann, txpush,
};
use kite_types::{Block, BlockHeader, CommitInfo, Hash, Payload, Tx, Vote};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Leader + 2 validators; the ban threshold is raised on every node so one
/// attacker can deliver every bad message (bans are tested elsewhere).
async fn start_net(seed: u64) -> TestNet {
    let mut spec = NetSpec::new(3);
    spec.chain_id = format!("kite-bad-{seed}");
    spec.seed = seed;
    spec.topology = kite_node::testkit::Topology::Mesh;
    spec.edit = Some(Arc::new(|_, c: &mut Config| {
        c.p2p.ban_threshold = u32::MAX;
    }));
    TestNet::start(spec).await.unwrap()
}

/// Sends `bytes` on a raw stream of `protocol`, half-closes, and reads what
/// comes back (bounded). Failures are fine: only the node's health counts.
async fn raw(probe: &Probe, peer: PeerId, protocol: &'static str, bytes: &[u8], close: bool) {
    let Ok(mut s) = probe.host.open_stream(peer, protocol).await else {
        return;
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(bytes)).await;
    if close {
        let _ = tokio::time::timeout(Duration::from_secs(5), s.close()).await;
    }
    let mut back = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(15),
        (&mut s).take(8 << 20).read_to_end(&mut back),
    )
    .await;
}

fn prefix(len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut v = len;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// The malformed inputs every protocol gets.
fn malformed() -> Vec<(&'static str, Vec<u8>, bool)> {
    let mut garbage = prefix(24);
    garbage.extend([0xff; 24]);
    let mut truncated = prefix(100);
    truncated.extend([0x0a; 10]);
    let mut two_garbage = garbage.clone();
    two_garbage.extend(&garbage);
    vec![
        ("empty", Vec::new(), true),
        ("garbage", garbage, true),
        ("truncated", truncated, true),
        ("oversized prefix", prefix(1 << 40), true),
        (
            "huge prefix then bytes",
            [prefix(50 << 20), vec![0; 4096]].concat(),
            true,
        ),
        ("11-byte prefix", vec![0x80; 11], true),
        ("non-minimal prefix", vec![0x85, 0x00, 1, 2, 3, 4, 5], true),
        ("prefix cut", vec![0x80], true),
        ("two garbage frames", two_garbage, true),
        ("zero-length frame", prefix(0), true),
    ]
}

/// The network is alive: no node stopped, every node commits `more`
/// blocks past the highest height now, they agree on the chain, and a
/// well-behaved peer gets a status and a block from node 0.
async fn assert_healthy(net: &TestNet, more: u64, clean_seed: u8) {
    for i in net.running() {
        let stop = &net.shared(i).unwrap().stop;
        assert!(!stop.is_stopping(), "node {i} stopped: {:?}", stop.reason());
    }
    let top = *net.heights().iter().max().unwrap();
    net.wait_height(top + more, DEADLINE).await.unwrap();
    net.check_same_chain(top + more).await.unwrap();

    let clean = Probe::spawn(&net.genesis.chain_id, clean_seed).unwrap();
    let peer = net.peer_id(0).unwrap();
    clean.connect(net.addr(0).unwrap(), peer).await.unwrap();
    let s = clean
        .host
        .open_stream(peer, status::PROTOCOL)
        .await
        .unwrap();
    let st = status::request(s).await.unwrap();
    assert_eq!(st.genesis_hash, net.genesis.hash());
    assert!(st.best_height >= top + more);
    let s = clean.host.open_stream(peer, blk::PROTOCOL).await.unwrap();
    let max = net.shared(0).unwrap().max_block_bytes();
    let got = blk::request(s, blk::BlockQuery::Height(top), max)
        .await
        .unwrap();
    let (b, _) = got.block.unwrap();
    assert_eq!(Some(b.hash()), net.block_hash(0, top).await.unwrap());
    clean.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_streams_of_every_protocol_leave_the_network_committing() {
    let _serial = SERIAL.lock().await;
    kite_node::testkit::init_log();
    let net = start_net(70).await;
    net.wait_height(1, DEADLINE).await.unwrap();
    let attacker = Probe::spawn(&net.genesis.chain_id, 0x70).unwrap();
    let mut sent = 0;
    for i in 0..3 {
        let peer = net.peer_id(i).unwrap();
        attacker.connect(net.addr(i).unwrap(), peer).await.unwrap();
        for protocol in ALL_PROTOCOLS {
            for (_, bytes, close) in malformed() {
                raw(&attacker, peer, protocol, &bytes, close).await;
                sent += 1;
            }
        }
    }
    // The handlers saw them and failed them (counted), nothing crashed.
    let mut errors = 0;
    for i in 0..3 {
        for protocol in ALL_PROTOCOLS {
            errors += net
                .shared(i)
                .unwrap()
                .host
                .protocol_stats(protocol)
                .handler_errors;
        }
    }
    println!("{sent} malformed streams, {errors} handler errors");
    assert!(errors >= (sent / 2) as u64, "{errors} of {sent}");
    assert_healthy(&net, 3, 0x71).await;
    attacker.stop().await;
    stop_clean(net).await;
}

/// Status answers of a peer that lies about its height.
struct LyingStatus(StatusInfo);

#[async_trait::async_trait]
impl StatusSource for LyingStatus {
    async fn status(&self) -> StatusInfo {
        self.0.clone()
    }
}

/// Serves no block, at any height, while its status claims a far one.
#[async_trait::async_trait]
impl blk::BlockSource for LyingStatus {
    async fn block(&self, _query: blk::BlockQuery) -> blk::BlockReply {
        blk::BlockReply {
            block: None,
            best_height: self.0.best_height,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_messages_leave_the_network_committing() {
    let _serial = SERIAL.lock().await;
    kite_node::testkit::init_log();
    let net = start_net(71).await;
    net.wait_height(2, DEADLINE).await.unwrap();
    let chain = net.genesis.chain_id.clone();
    let attacker = Probe::spawn(&chain, 0x72).unwrap();
    let evil = attacker.key.clone();
    let ids: Vec<PeerId> = (0..3).map(|i| net.peer_id(i).unwrap()).collect();
    for (i, id) in ids.iter().enumerate() {
        attacker.connect(net.addr(i).unwrap(), *id).await.unwrap();
    }
    let h = net.min_height();
    let top = net
        .shared(0)
        .unwrap()
        .store
        .block_by_height(h)
        .await
        .unwrap()
        .unwrap();
    let next_header = |height: u64, proposer| BlockHeader {
        height,
        prev_hash: top.hash(),
        timestamp_ms: top.header().timestamp_ms + 1,
        proposer,
        tx_root: Block::tx_root_of(&[]),
        ..top.header().clone()
    };

    // Proposals not signed by the leader, from a forger of their own (each
    // costs it the invalid-data score at the node that got it; bans are
    // off in this network): claiming the leader, to a validator and to the
    // leader itself; naming the forger, to a validator. Each names that node's next height, so it passes the
    // cheap filters and reaches the signature check.
    let forger = Probe::spawn(&chain, 0x73).unwrap();
    let fkey = forger.key.clone();
    for (i, id) in ids.iter().enumerate() {
        forger.connect(net.addr(i).unwrap(), *id).await.unwrap();
    }
    for (target, proposer) in [
        (1, net.genesis.leader),
        (0, net.genesis.leader),
        (2, fkey.public()),
    ] {
        let height = net.node(target).unwrap().height() + 1;
        let b = Block::new_signed(next_header(height, proposer), Vec::new(), &fkey);
        let s = forger
            .host
            .open_stream(ids[target], blkprop::PROTOCOL)
            .await
            .unwrap();
        let out = blkprop::propose(s, &b, 0, None).await.unwrap();
        assert_eq!(out, blkann::AnnounceOutcome::NotWanted, "node {target}");
        let host = net.shared(target).unwrap().host.clone();
        let who = forger.peer_id();
        wait_for("the score of the proposal forger", DEADLINE, || {
            let host = host.clone();
            async move {
                let info = host.peer_info().await.ok()?;
                let score = info.into_iter().find(|p| p.peer == who)?.score;
                (score >= kite_protocols::score::INVALID).then_some(())
            }
        })
        .await
        .unwrap();
    }
    // A forged reset to each validator.
    let b = Block::new_signed(next_header(h + 1, net.genesis.leader), Vec::new(), &evil);
    for target in [1, 2] {
        let r = ResetInfo::new_signed(&evil, &chain, 0, h + 1, b.hash(), "forged");
        let s = attacker
            .host
            .open_stream(ids[target], blkprop::PROTOCOL)
            .await
            .unwrap();
        let _ = blkprop::reset(s, &r).await;
    }

    // Votes to the leader: a validator's name with the attacker's
    // signature, a well-signed vote of a non-validator with a far "best
    // header" hint, and NACKs in the validators' names.
    let validator1 = net.keys[1].public();
    let mut forged = Vote::ack(&evil, &chain, h + 1, b.hash(), Hash([3; 32]));
    forged.validator = validator1;
    let far = next_header(h + 1000, net.genesis.leader);
    let outsider = Vote::ack(&evil, &chain, h + 1, b.hash(), Hash([3; 32]));
    let mut nacks = Vec::new();
    for k in &net.keys[1..3] {
        let mut v = Vote::nack(&evil, &chain, h + 1, b.hash(), "forged", &[]);
        v.validator = k.public();
        nacks.push(v);
    }
    for (vote, hint) in [(forged, None), (outsider, Some(&far))]
        .into_iter()
        .chain(nacks.into_iter().map(|v| (v, None)))
    {
        let s = attacker
            .host
            .open_stream(ids[0], ack::PROTOCOL)
            .await
            .unwrap();
        let _ = ack::send_vote(s, &vote, hint).await;
    }
    // Each forged vote cost the forger: the leader scored it.
    let score = net
        .shared(0)
        .unwrap()
        .host
        .peer_info()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.peer == attacker.peer_id())
        .map(|p| p.score);
    assert!(
        score.is_some_and(|s| s >= kite_protocols::score::INVALID),
        "the leader's score of the vote forger: {score:?}"
    );

    // Commit announces: the next block and a far one, signed by the
    // attacker, with votes it signed in the validators' names.
    let forged_announce = |height: u64| {
        let b = Block::new_signed(next_header(height, net.genesis.leader), Vec::new(), &evil);
        let ci = CommitInfo {
            app_hash: Hash([9; 32]),
            votes: net
                .keys
                .iter()
                .map(|k| {
                    let mut v = Vote::ack(&evil, &chain, height, b.hash(), Hash([9; 32]));
                    v.validator = k.public();
                    v
                })
                .collect(),
        };
        (b, ci)
    };
    for height in [h + 1, h + 1000] {
        let (b, ci) = forged_announce(height);
        for id in &ids {
            if let Ok(s) = attacker.host.open_stream(*id, blkann::PROTOCOL).await {
                let _ = blkann::announce(s, &b, &ci).await;
            }
        }
    }
    // A forged announce of each node's next block is checked before the
    // block is asked for: the node never wants it (PROTOCOL.md 5.4), so a
    // peer without keys cannot make it buffer blocks.
    for (i, id) in ids.iter().enumerate() {
        let (b, ci) = forged_announce(net.node(i).unwrap().height() + 1);
        let s = attacker
            .host
            .open_stream(*id, blkann::PROTOCOL)
            .await
            .unwrap();
        let out = blkann::announce(s, &b, &ci).await.unwrap();
        assert_eq!(out, blkann::AnnounceOutcome::NotWanted, "node {i}");
    }

    // Tx announces: more hashes than allowed, a hash twice, a short hash,
    // a batch that is not what was announced, a tx with a bad signature.
    let good = Tx::sign(
        &net.faucet,
        &chain,
        1,
        Payload::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        },
    );
    let mut bad_sig = proto_tx(&good);
    bad_sig.signature[0] ^= 1;
    let bad_sig_hash = Hash::digest(&prost::Message::encode_to_vec(&bad_sig));
    let too_many = proto::TxAnnounce {
        hashes: (0..300u32)
            .map(|i| Hash::digest(&i.to_le_bytes()).0.to_vec())
            .collect(),
    };
    let twice = proto::TxAnnounce {
        hashes: vec![good.hash().0.to_vec(), good.hash().0.to_vec()],
    };
    let short = proto::TxAnnounce {
        hashes: vec![vec![1; 31]],
    };
    for msg in [too_many, twice, short] {
        raw(
            &attacker,
            ids[0],
            txann::PROTOCOL,
            &encode_frame(&msg),
            true,
        )
        .await;
    }
    // Announce `good`, then send another tx in the batch.
    let other = Tx::sign(&evil, &chain, 1, Payload::Delete { key: b"x".to_vec() });
    let lying = [
        encode_frame(&proto::TxAnnounce {
            hashes: vec![good.hash().0.to_vec()],
        }),
        encode_frame(&proto::TxBatch {
            txs: vec![proto_tx(&other)],
        }),
    ]
    .concat();
    raw(&attacker, ids[0], txann::PROTOCOL, &lying, true).await;
    let bad = [
        encode_frame(&proto::TxAnnounce {
            hashes: vec![bad_sig_hash.0.to_vec()],
        }),
        encode_frame(&proto::TxBatch {
            txs: vec![bad_sig.clone()],
        }),
    ]
    .concat();
    raw(&attacker, ids[0], txann::PROTOCOL, &bad, true).await;
    // Block and peer requests out of range.
    let blk_hash_short = proto::BlockRequest {
        query: Some(proto::block_request::Query::Hash(vec![0; 31])),
        ..Default::default()
    };
    raw(
        &attacker,
        ids[0],
        blk::PROTOCOL,
        &encode_frame(&blk_hash_short),
        true,
    )
    .await;
    let s = attacker
        .host
        .open_stream(ids[0], blk::PROTOCOL)
        .await
        .unwrap();
    let r = blk::request(s, blk::BlockQuery::Height(u64::MAX), 1 << 20)
        .await
        .unwrap();
    assert!(r.block.is_none());
    let s = attacker
        .host
        .open_stream(ids[0], discover::PROTOCOL)
        .await
        .unwrap();
    let peers = discover::request(s, u32::MAX).await.unwrap();
    assert!(peers.len() <= kite_protocols::limits::MAX_PEERS);
    let r = tx_get(&attacker, ids[0], Hash([5; 32])).await;
    assert!(r.is_none());

    let m = net.shared(0).unwrap().mempool.clone().unwrap();
    assert!(
        !m.contains(&bad_sig_hash),
        "a tx with a bad signature was admitted"
    );
    assert!(!m.contains(&other.hash()), "an unannounced tx was admitted");
    assert_healthy(&net, 3, 0x73).await;
    for i in 0..3 {
        assert!(
            net.node(i).unwrap().state().halted.is_none(),
            "node {i} halted"
        );
    }
    attacker.stop().await;
    stop_clean(net).await;
}

/// `/kite/txpush`: a pushed tx is admitted without blame; a push carrying
/// a tx whose signature does not verify is the pusher's forgery (honest
/// nodes push only txs they admitted): the pusher is reported and nothing
/// of it is admitted. The same holds for a forged tx delivered after an
/// announce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_pushed_or_announced_tx_gets_its_sender_reported() {
    let _serial = SERIAL.lock().await;
    kite_node::testkit::init_log();
    let net = start_net(75).await;
    net.wait_height(1, DEADLINE).await.unwrap();
    let chain = net.genesis.chain_id.clone();
    let pusher = Probe::spawn(&chain, 0x75).unwrap();
    let id0 = net.peer_id(0).unwrap();
    pusher.connect(net.addr(0).unwrap(), id0).await.unwrap();
    let host0 = net.shared(0).unwrap().host.clone();
    let m = net.shared(0).unwrap().mempool.clone().unwrap();
    let put = |nonce: u64| {
        Tx::sign(
            &net.faucet,
            &chain,
            nonce,
            Payload::Put {
                key: format!("k{nonce}").into_bytes(),
                value: b"v".to_vec(),
            },
        )
    };
    let forge = |t: &Tx| {
        let mut p = proto_tx(t);
        p.signature[0] ^= 1;
        Tx::from_proto(p).unwrap()
    };
    let before = host0.reported_points();
    let good = put(1);
    let s = pusher
        .host
        .open_stream(id0, txpush::PROTOCOL)
        .await
        .unwrap();
    assert_eq!(
        txpush::push(s, std::slice::from_ref(&good)).await.unwrap(),
        1
    );
    wait_for("the pushed tx admitted", DEADLINE, || async {
        m.contains(&good.hash()).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        host0.reported_points(),
        before,
        "an honest push is not blamed"
    );

    let forged = forge(&put(2));
    let s = pusher
        .host
        .open_stream(id0, txpush::PROTOCOL)
        .await
        .unwrap();
    assert_eq!(
        txpush::push(s, std::slice::from_ref(&forged))
            .await
            .unwrap(),
        1
    );
    wait_for("the pusher reported", DEADLINE, || async {
        (host0.reported_points() >= before + u64::from(kite_protocols::score::INVALID))
            .then_some(())
    })
    .await
    .unwrap();
    assert!(!m.contains(&forged.hash()), "a forged tx was admitted");

    let before = host0.reported_points();
    let forged = forge(&put(3));
    let s = pusher.host.open_stream(id0, txann::PROTOCOL).await.unwrap();
    let out = txann::announce(s, &[forged.hash()], |_| Some(forged.clone()))
        .await
        .unwrap();
    assert_eq!(out.sent, 1);
    wait_for("the announcer reported", DEADLINE, || async {
        (host0.reported_points() >= before + u64::from(kite_protocols::score::INVALID))
            .then_some(())
    })
    .await
    .unwrap();
    assert!(!m.contains(&forged.hash()), "a forged tx was admitted");
    assert_healthy(&net, 3, 0x76).await;
    pusher.stop().await;
    stop_clean(net).await;
}

/// A peer over its rate of tx signature checks
/// (`p2p.max_tx_checks_per_peer`, here 1 a second) has its txs dropped
/// unchecked and without blame: pushes of valid txs follow each other
/// until one is dropped, which is then not admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_tx_check_rate_has_its_txs_dropped_unblamed() {
    let _serial = SERIAL.lock().await;
    kite_node::testkit::init_log();
    let mut spec = NetSpec::new(3);
    spec.chain_id = "kite-bad-77".into();
    spec.seed = 77;
    spec.topology = kite_node::testkit::Topology::Mesh;
    spec.edit = Some(Arc::new(|_, c: &mut Config| {
        c.p2p.ban_threshold = u32::MAX;
        c.p2p.max_tx_checks_per_peer = 1;
    }));
    let net = TestNet::start(spec).await.unwrap();
    net.wait_height(1, DEADLINE).await.unwrap();
    let chain = net.genesis.chain_id.clone();
    let pusher = Probe::spawn(&chain, 0x77).unwrap();
    let id0 = net.peer_id(0).unwrap();
    pusher.connect(net.addr(0).unwrap(), id0).await.unwrap();
    let shared0 = net.shared(0).unwrap();
    let m = shared0.mempool.clone().unwrap();
    let (points, limited) = (shared0.host.reported_points(), shared0.tx_checks.limited());
    let mut dropped = None;
    for i in 0..50u8 {
        // A Put from a fresh account: valid and admissible (no fee).
        let t = Tx::sign(
            &kite_types::NodeKey::from_seed([i.wrapping_add(100); 32]),
            &chain,
            1,
            Payload::Put {
                key: vec![i],
                value: b"v".to_vec(),
            },
        );
        let s = pusher
            .host
            .open_stream(id0, txpush::PROTOCOL)
            .await
            .unwrap();
        txpush::push(s, std::slice::from_ref(&t)).await.unwrap();
        let over = wait_for("the push admitted or dropped", DEADLINE, || async {
            if shared0.tx_checks.limited() > limited {
                Some(true)
            } else {
                m.contains(&t.hash()).then_some(false)
            }
        })
        .await
        .unwrap();
        if over {
            dropped = Some(t);
            break;
        }
    }
    let t = dropped.expect("50 pushes in a row stayed within 1 check a second");
    assert!(!m.contains(&t.hash()), "a tx over the rate was admitted");
    assert_eq!(shared0.host.reported_points(), points, "no blame");
    pusher.stop().await;
    stop_clean(net).await;
}

/// Stops the network; every node must exit cleanly.
async fn stop_clean(net: TestNet) {
    for exit in net.stop().await {
        assert!(matches!(exit, Some(Ok(()))), "{exit:?}");
    }
}

fn proto_tx(t: &Tx) -> kite_types::proto::Transaction {
    t.to_proto()
}

async fn tx_get(probe: &Probe, peer: PeerId, hash: Hash) -> Option<Tx> {
    let s = probe.host.open_stream(peer, tx::PROTOCOL).await.ok()?;
    tx::request(s, hash, 64 * 1024).await.ok().flatten()
}

/// A peer that claims a far height in its status (it cannot serve the
/// blocks) connects to both validators: the network keeps committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_lying_about_its_height_does_not_stall_the_network() {
    let _serial = SERIAL.lock().await;
    kite_node::testkit::init_log();
    let net = start_net(72).await;
    net.wait_height(1, DEADLINE).await.unwrap();
    let liar = Probe::spawn(&net.genesis.chain_id, 0x74).unwrap();
    let info = StatusInfo {
        chain_id: net.genesis.chain_id.clone(),
        best_height: 1_000_000,
        best_hash: Hash([1; 32]),
        app_hash: Hash([2; 32]),
        role: status::Role::Sentry,
        round: None,
        genesis_hash: net.genesis.hash(),
        blocks_only: false,
        syncing: false,
        sync_target: 0,
    };
    let source = Arc::new(LyingStatus(info));
    let blocks = source.clone();
    let _serve = p2p::spawn_accept_loop(&liar.host, status::PROTOCOL, 16, move |_, s| {
        let source = source.clone();
        async move { status::serve(s, &*source).await }
    })
    .unwrap();
    let _serve_blocks = p2p::spawn_accept_loop(&liar.host, blk::PROTOCOL, 16, move |_, s| {
        let blocks = blocks.clone();
        async move { blk::serve(s, &*blocks).await }
    })
    .unwrap();
    for i in 0..3 {
        liar.connect(net.addr(i).unwrap(), net.peer_id(i).unwrap())
            .await
            .unwrap();
    }
    // Every node asks the liar for its status on connect and every poll.
    wait_for("status polls of the liar", DEADLINE, || async {
        (liar.host.protocol_stats(status::PROTOCOL).accepted >= 6).then_some(())
    })
    .await
    .unwrap();
    let t = Instant::now();
    assert_healthy(&net, 3, 0x75).await;
    println!(
        "3 blocks committed {:.0} ms after a peer claimed height 1000000",
        t.elapsed().as_secs_f64() * 1000.0
    );
    // Checking the claim costs the nodes one block request each, then
    // nothing for a while (UNPROVEN_BACKOFF), however often they poll.
    wait_for("more status polls of the liar", DEADLINE, || async {
        (liar.host.protocol_stats(status::PROTOCOL).accepted >= 15).then_some(())
    })
    .await
    .unwrap();
    let asked = liar.host.protocol_stats(blk::PROTOCOL).accepted;
    assert!(
        asked <= 3,
        "{asked} block requests to check one claim on 3 nodes"
    );
    // The claim was not believed.
    for i in 0..3 {
        let node = net.node(i).unwrap();
        let seen = node.peers().get(&liar.peer_id()).and_then(|p| p.height);
        assert_ne!(seen, Some(1_000_000), "node {i}");
        assert!(node.state().sync_target < 1_000_000, "node {i}");
    }
    liar.stop().await;
    stop_clean(net).await;
}

/// Idle streams that never send a byte: a few leave the protocol usable;
/// when they fill every handler slot, a well-behaved peer is served again
/// once the handlers' deadline frees the slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_do_not_lock_a_protocol_for_good() {
    let _serial = SERIAL.lock().await;
    kite_node::testkit::init_log();
    let net = start_net(73).await;
    net.wait_height(1, DEADLINE).await.unwrap();
    let chain = net.genesis.chain_id.clone();
    let attacker = Probe::spawn(&chain, 0x76).unwrap();
    let peer = net.peer_id(0).unwrap();
    attacker.connect(net.addr(0).unwrap(), peer).await.unwrap();
    let slots = net.shared(0).unwrap().config.p2p.max_streams_per_protocol as usize;
    let mut idle = Vec::new();
    for _ in 0..slots + 8 {
        if let Ok(mut s) = attacker.host.open_stream(peer, blk::PROTOCOL).await {
            // One byte of a prefix so the stream reaches the handler.
            let _ = s.write_all(&[0x80]).await;
            let _ = s.flush().await;
            idle.push(s);
        }
    }
    let clean = Probe::spawn(&chain, 0x77).unwrap();
    clean.connect(net.addr(0).unwrap(), peer).await.unwrap();
    let max = net.shared(0).unwrap().max_block_bytes();
    let t = Instant::now();
    let refused = std::sync::atomic::AtomicU32::new(0);
    wait_for("a block for the clean peer", DEADLINE, || {
        let host = clean.host.clone();
        let refused = &refused;
        async move {
            let s = host.open_stream(peer, blk::PROTOCOL).await.ok()?;
            match blk::request(s, blk::BlockQuery::Height(1), max).await {
                Ok(r) => r.block.map(|_| ()),
                Err(_) => {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    None
                }
            }
        }
    })
    .await
    .unwrap();
    println!(
        "{} idle blk streams ({} handler slots): clean peer served after {:.0} ms, {} refused tries",
        idle.len(),
        slots,
        t.elapsed().as_secs_f64() * 1000.0,
        refused.into_inner()
    );
    drop(idle);
    assert_healthy(&net, 2, 0x78).await;
    attacker.stop().await;
    clean.stop().await;
    stop_clean(net).await;
}
