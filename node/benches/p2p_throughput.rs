#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Issue 5 figures on 127.0.0.1, all in this process (prints, asserts no
//! timing):
//! 1. the loopback limit: raw TCP copy with tokio (MB/s);
//! 2. one libp2p stream (TCP + Noise + Yamux) between two bare hosts (MB/s);
//! 3. block get (`/kite/blk/1.0.0`) from a live node's store: ~3 MiB
//!    blocks, one stream at a time and 4 at once (MB/s, blocks/s);
//! 4. tx announce + fetch (`/kite/txann/1.0.0`) between two live nodes:
//!    20,000 transfers admitted at node A, time until all are in node B's
//!    mempool (txs/s), beside A's own admission rate (the same signature
//!    checks B runs).
//!
//! `cargo bench -p kite-node --bench p2p_throughput`

use futures::{AsyncReadExt, AsyncWriteExt};
use kite_node::testkit::{NetSpec, Probe, TestNet, wait_for};
use kite_protocols::blk;
use kite_types::{NodeKey, Payload, Tx};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const MB: f64 = 1_000_000.0;
const SINK: &str = "/kite/bench-sink/1.0.0";

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        println!(
            "{} cpus, 2 tokio workers{}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            if quick {
                " (quick run: small sizes)"
            } else {
                ""
            }
        );
        let scale = if quick { 16 } else { 1 };
        tcp_limit(512 * 1024 * 1024 / scale).await;
        one_libp2p_stream(256 * 1024 * 1024 / scale).await;
        block_get(if quick { 2 } else { 10 }).await;
        tx_gossip(if quick { 1_000 } else { 20_000 }).await;
    });
}

/// Raw TCP over 127.0.0.1: one writer, one reader, 256 KiB writes.
async fn tcp_limit(total: usize) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got += n;
        }
        got
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let chunk = vec![7u8; 256 * 1024];
    let t = Instant::now();
    let mut sent = 0;
    while sent < total {
        s.write_all(&chunk).await.unwrap();
        sent += chunk.len();
    }
    s.shutdown().await.unwrap();
    let got = reader.await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(got, sent);
    println!(
        "loopback TCP (tokio)       {:>8.0} MB/s   ({} MiB)",
        got as f64 / MB / secs,
        got >> 20
    );
}

/// One libp2p stream between two bare hosts: the writer pushes `total`
/// bytes, the sink counts them and answers with one byte at the end.
async fn one_libp2p_stream(total: usize) {
    let chain = "kite-bench-p2p";
    let a = Probe::spawn(chain, 0xb1).unwrap();
    let b = Probe::spawn(chain, 0xb2).unwrap();
    let _sink = kite_node::p2p::spawn_accept_loop(&b.host, SINK, 4, |_, mut s| async move {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
        }
        s.write_all(&[1]).await?;
        s.close().await
    })
    .unwrap();
    let addr = loop {
        if let Some(a) = b.host.listen_addrs().await.unwrap().into_iter().next() {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let addr = format!("{addr}/p2p/{}", b.peer_id()).parse().unwrap();
    a.connect(&addr, b.peer_id()).await.unwrap();
    let mut s = a.host.open_stream(b.peer_id(), SINK).await.unwrap();
    let chunk = vec![7u8; 256 * 1024];
    let t = Instant::now();
    let mut sent = 0;
    while sent < total {
        s.write_all(&chunk).await.unwrap();
        sent += chunk.len();
    }
    s.close().await.unwrap();
    let mut ack = Vec::new();
    s.read_to_end(&mut ack).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(ack, vec![1]);
    println!(
        "libp2p stream (noise+yamux) {:>7.0} MB/s   ({} MiB, one stream)",
        sent as f64 / MB / secs,
        sent >> 20
    );
    a.stop().await;
    b.stop().await;
}

/// Block get from a live node: a one-validator chain is filled with
/// `blocks` blocks of ~3 MiB (Put txs with 16 KiB values), then a second
/// node fetches them by height, in rounds.
async fn block_get(blocks: usize) {
    let mut spec = NetSpec::new(1);
    spec.chain_id = "kite-bench-blk".into();
    spec.seed = 101;
    spec.sentries = 1;
    spec.funded = 4;
    spec.empty_block_timeout = Duration::ZERO;
    spec.propose_timeout = Duration::from_millis(20);
    let net = TestNet::start(spec).await.unwrap();
    let chain = net.genesis.chain_id.clone();
    // ~190 txs of 16 KiB fill a 4 MiB block; 180 leave room.
    let per_block = 180usize;
    let total = per_block * blocks;
    let per_sender = total.div_ceil(net.accounts.len());
    let txs: Vec<Tx> = net
        .accounts
        .iter()
        .flat_map(|k| (1..=per_sender as u64).map(move |n| (k, n)))
        .take(total)
        .map(|(k, n)| {
            Tx::sign(
                k,
                &chain,
                n,
                Payload::Put {
                    key: n.to_be_bytes().to_vec(),
                    value: vec![(n % 251) as u8; kite_types::MAX_VALUE_LEN],
                },
            )
        })
        .collect();
    let leader = net.shared(0).unwrap().clone();
    for chunk in txs.chunks(500) {
        net.admit(0, chunk.to_vec(), None).await.unwrap();
    }
    let m = leader.mempool.clone().unwrap();
    wait_for("blocks filled", Duration::from_secs(300), || async {
        m.is_empty().then_some(())
    })
    .await
    .unwrap();
    let top = leader.store.best().await.unwrap().height;
    net.wait_height(top, Duration::from_secs(120))
        .await
        .unwrap();
    let mut heights = Vec::new();
    let mut bytes_per_round = 0usize;
    for h in 1..=top {
        let b = leader.store.block_by_height(h).await.unwrap().unwrap();
        if b.txs().len() >= 10 {
            heights.push(h);
            bytes_per_round += b.encode().len();
        }
    }
    let host = net.shared(1).unwrap().host.clone();
    let peer = net.peer_id(0).unwrap();
    let max = leader.max_block_bytes();
    let fetch = |h: u64| {
        let host = host.clone();
        async move {
            let s = host.open_stream(peer, blk::PROTOCOL).await.unwrap();
            let r = blk::request(s, blk::BlockQuery::Height(h), max)
                .await
                .unwrap();
            assert!(r.block.is_some());
        }
    };
    let rounds = 5;
    for parallel in [1usize, 4] {
        let t = Instant::now();
        for _ in 0..rounds {
            for group in heights.chunks(parallel) {
                futures::future::join_all(group.iter().map(|h| fetch(*h))).await;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let n = heights.len() * rounds;
        println!(
            "block get, {parallel} at a time      {:>6.0} MB/s   ({:.0} blocks/s, {n} gets of {:.2} MiB blocks)",
            (bytes_per_round * rounds) as f64 / MB / secs,
            n as f64 / secs,
            bytes_per_round as f64 / heights.len().max(1) as f64 / (1 << 20) as f64
        );
    }
    net.stop().await;
}

/// Tx announce + fetch between two live nodes (no leader runs, so nothing
/// commits): `n` transfers are admitted at node 1 in batches of 1,000;
/// the clock stops when node 2's mempool holds them all.
async fn tx_gossip(n: usize) {
    let mut spec = NetSpec::new(3);
    spec.chain_id = "kite-bench-tx".into();
    spec.seed = 102;
    spec.start_leader = false;
    spec.funded = n.div_ceil(1000);
    spec.edit = Some(Arc::new(|_, c: &mut kite_node::config::Config| {
        c.mempool.max_txs = 100_000;
    }));
    let net = TestNet::start(spec).await.unwrap();
    let chain = net.genesis.chain_id.clone();
    let to = NodeKey::from_seed([0xcc; 32]).public();
    let txs: Vec<Tx> = net
        .accounts
        .iter()
        .flat_map(|k| (1..=1000u64).map(move |i| (k, i)))
        .take(n)
        .map(|(k, nonce)| Tx::sign(k, &chain, nonce, Payload::Transfer { to, amount: 1 }))
        .collect();
    let (a, b) = (
        net.shared(1).unwrap().clone(),
        net.shared(2).unwrap().clone(),
    );
    let mb = b.mempool.clone().unwrap();
    let t = Instant::now();
    for chunk in txs.chunks(1000) {
        net.admit(1, chunk.to_vec(), None).await.unwrap();
    }
    let admitted = t.elapsed().as_secs_f64();
    assert_eq!(a.mempool.as_ref().unwrap().len(), n);
    wait_for("all txs at node B", Duration::from_secs(300), || async {
        (mb.len() >= n).then_some(())
    })
    .await
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let bytes: usize = txs.iter().map(Tx::size).sum();
    println!(
        "tx announce+fetch A -> B   {:>8.0} txs/s  ({n} txs, {:.1} MB/s of txs; admission at A alone {:.0} txs/s)",
        n as f64 / secs,
        bytes as f64 / MB / secs,
        n as f64 / admitted
    );
    net.stop().await;
}
