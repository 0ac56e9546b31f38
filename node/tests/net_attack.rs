#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! An attack by many peer ids from one address on a live network, with real
//! libp2p swarms on 127.0.0.1: a connection flood, range requests for
//! megabytes of blocks that are never read, and votes from outsiders. The
//! node under attack holds no more than its peer buffer for them, the
//! network keeps committing, and an honest peer still syncs every block
//! from that node.

use futures::AsyncWriteExt;
use kite_node::config::Config;
use kite_node::p2p::PeerId;
use kite_node::rpc::WaitFor;
use kite_node::testkit::{NetSpec, Probe, TestNet, Topology, wait_for, wait_identified};
use kite_protocols::framing::encode_frame;
use kite_protocols::{ack, blk, proto};
use kite_types::{Hash, Payload, Tx, Vote};
use libp2p::Stream;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(90);
const BUFFER: u64 = 8 * 1024 * 1024;
const ATTACKERS: u8 = 12;
const STREAMS_PER_ATTACKER: usize = 16;

/// Resident memory of this process, MiB (for the printed figures only).
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Opens a range request for heights 1.. and never reads the answer.
async fn unread_range(probe: &Probe, peer: PeerId, count: u32) -> Option<Stream> {
    let mut s = probe.host.open_stream(peer, blk::PROTOCOL).await.ok()?;
    let req = proto::BlockRequest {
        query: Some(proto::block_request::Query::Height(1)),
        count,
    };
    s.write_all(&encode_frame(&req)).await.ok()?;
    s.flush().await.ok()?;
    Some(s)
}

/// Fetches heights `1..=to` from `peer` as block sync does, asking again
/// from where it stopped after a short or refused answer.
async fn honest_sync(probe: &Probe, peer: PeerId, to: u64, max_block: usize) -> u64 {
    let mut next = 1;
    while next <= to {
        let Ok(s) = probe.host.open_stream(peer, blk::PROTOCOL).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let count = u32::try_from((to - next + 1).min(64)).unwrap();
        match blk::request_range(s, next, count, max_block).await {
            Ok(r) => {
                for (b, _) in &r.blocks {
                    assert_eq!(b.height(), next);
                    next += 1;
                }
                if r.blocks.is_empty() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    next - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attack_from_many_ids_leaves_memory_bounded_and_the_chain_committing() {
    kite_node::testkit::init_log();
    let mut spec = NetSpec::new(3);
    spec.chain_id = "kite-attack".into();
    spec.seed = 81;
    spec.topology = Topology::Mesh;
    spec.edit = Some(Arc::new(|_, c: &mut Config| {
        c.p2p.peer_buffer = bytesize::ByteSize::b(BUFFER);
        c.p2p.max_inbound_per_ip = 8;
    }));
    let net = TestNet::start(spec).await.unwrap();
    net.wait_height(1, DEADLINE).await.unwrap();

    // About 2.4 MB of blocks to ask for: 150 puts of 16 KB.
    let sender = &net.faucet;
    let nonce = net.nonce(0, &sender.public()).await.unwrap();
    let mut last = None;
    for i in 0..150u64 {
        let payload = Payload::Put {
            key: i.to_be_bytes().to_vec(),
            value: vec![b'x'; 16_000],
        };
        let tx = Tx::sign(sender, &net.genesis.chain_id, nonce + i + 1, payload);
        net.submit(0, &tx, WaitFor::Accept).await.unwrap();
        last = Some(tx);
    }
    let last = last.unwrap();
    net.submit(0, &last, WaitFor::Commit).await.ok();
    wait_for("the big txs committed", DEADLINE, || async {
        (net.nonce(0, &sender.public()).await.ok()? >= nonce + 150).then_some(())
    })
    .await
    .unwrap();
    net.wait_height(2, DEADLINE).await.unwrap();
    let tip = net.heights()[0];
    let target = net.peer_id(0).unwrap();
    let budget = net.shared(0).unwrap().budgets.all().clone();
    let rss_before = rss_mib();

    // The flood: many ids from 127.0.0.1 at once; at most 8 get in.
    let attackers: Vec<Probe> = (0..ATTACKERS)
        .map(|seed| Probe::spawn(&net.genesis.chain_id, 0xa0 + seed).unwrap())
        .collect();
    let addr = net.addr(0).unwrap();
    let tries = attackers.iter().map(|p| async move {
        let short = Duration::from_secs(5);
        matches!(
            tokio::time::timeout(short, p.connect(addr, target)).await,
            Ok(Ok(()))
        )
    });
    let connected: Vec<usize> = futures::future::join_all(tries)
        .await
        .into_iter()
        .enumerate()
        .filter_map(|(i, ok)| ok.then_some(i))
        .collect();
    let inbound = connected.len();
    assert!(
        (1..=8).contains(&inbound),
        "{inbound} of {ATTACKERS} ids from one address got in"
    );
    // Each one asks for every block, many times, and reads nothing.
    let t = Instant::now();
    let mut held = Vec::new();
    for &i in &connected {
        for _ in 0..STREAMS_PER_ATTACKER {
            if let Some(s) = unread_range(&attackers[i], target, 64).await {
                held.push(s);
            }
        }
    }
    wait_for("the peer buffer to fill and refuse", DEADLINE, || async {
        (budget.refused() > 0).then_some(())
    })
    .await
    .unwrap();
    let held_bytes = budget.in_use();
    assert!(held_bytes > 0, "the unread answers are held");

    // The network keeps committing meanwhile, and on one chain.
    let h = net.min_height();
    net.wait_height(h + 3, DEADLINE).await.unwrap();
    net.check_same_chain(h + 3).await.unwrap();

    // An honest peer syncs every block from the node under attack. Every
    // inbound slot of 127.0.0.1 is taken: the node reaches it by its own
    // dial (outbound slots are the node's, whatever inbound peers do).
    let honest = Probe::spawn(&net.genesis.chain_id, 0x9f).unwrap();
    let listen = wait_for("the honest peer's listen address", DEADLINE, || async {
        honest.host.listen_addrs().await.ok()?.into_iter().next()
    })
    .await
    .unwrap();
    let at = format!("{listen}/p2p/{}", honest.peer_id())
        .parse()
        .unwrap();
    net.shared(0).unwrap().host.dial(at).await.unwrap();
    wait_identified(&honest.host, target, DEADLINE)
        .await
        .unwrap();
    let max_block = net.shared(0).unwrap().max_block_bytes();
    let synced = tokio::time::timeout(DEADLINE, honest_sync(&honest, target, tip, max_block))
        .await
        .expect("honest sync did not finish");
    assert_eq!(synced, tip);
    let synced_after = t.elapsed();

    // Votes from outside the validator set: each costs its sender a ban,
    // and the answers it held come back.
    for &i in &connected {
        let key = &attackers[i].key;
        let v = Vote::ack(
            key,
            &net.genesis.chain_id,
            tip + 1,
            Hash([9; 32]),
            Hash([8; 32]),
        );
        if let Ok(s) = attackers[i].host.open_stream(target, ack::PROTOCOL).await {
            let _ = ack::send_vote(s, &v, None).await;
        }
    }
    wait_for("the held answers to come back", DEADLINE, || async {
        (budget.in_use() == 0).then_some(())
    })
    .await
    .unwrap();
    assert!(
        budget.peak() as u64 <= BUFFER,
        "peak {} over {BUFFER}",
        budget.peak()
    );
    let stop = &net.shared(0).unwrap().stop;
    assert!(!stop.is_stopping(), "the node stopped: {:?}", stop.reason());
    println!(
        "{inbound} of {ATTACKERS} attacking ids connected, {} unread range streams held \
         {:.1} MiB; peer buffer peak {:.1} MiB of {:.1} MiB, {} answers refused; \
         process RSS {rss_before:.0} -> {:.0} MiB (3 nodes and {} probes); \
         honest sync of {tip} blocks done {:.1} s after the attack began",
        held.len(),
        held_bytes as f64 / 1048576.0,
        budget.peak() as f64 / 1048576.0,
        BUFFER as f64 / 1048576.0,
        budget.refused(),
        rss_mib(),
        ATTACKERS + 1,
        synced_after.as_secs_f64(),
    );
    drop(held);
    honest.stop().await;
    for p in attackers {
        p.stop().await;
    }
    for exit in net.stop().await {
        assert!(matches!(exit, Some(Ok(()))), "{exit:?}");
    }
}
