#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Issue 7, hostile peers: block sync is neither stalled nor fooled by a
//! peer that serves corrupted blocks, one that claims a height it cannot
//! serve, or one that never answers. The bad peers are fake libp2p hosts
//! that answer `/kite/status/1.0.0` and `/kite/blk/1.0.0` (see
//! `sync_support`); each proves its claimed tip with the real block, so
//! the node believes the claim and sync meets the misbehaviour.

mod sync_support;

use kite_node::config::Role;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use sync_support::*;
use tempfile::TempDir;

const DEADLINE: Duration = Duration::from_secs(30);
const TIP: u64 = 400;
/// Blocks the liar really holds (it claims all 400).
const LIAR_HOLDS: u64 = 50;

/// A node first meets only the three bad peers: it commits nothing but
/// real blocks (at most the liar's 50 true ones) and does not halt. Then an
/// honest peer connects: the node syncs the 400 blocks although the bad
/// peers keep getting their share, and holds exactly the real chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_survives_a_corrupt_a_lying_and_a_stalling_peer() {
    init_log();
    let keys = Keys::new(73, 3, 4);
    let genesis = genesis("kite-sync-faults", &keys, Duration::from_millis(100));
    let homes: Vec<TempDir> = (0..2).map(|_| TempDir::new().unwrap()).collect();
    let built = prepare_chain(homes[0].path().join("data"), &genesis, &keys, TIP, |h| {
        if h % 8 == 0 { 5 } else { 0 }
    })
    .await;
    let chain = Arc::new(built.blocks);

    let corrupt = FakePeer::spawn(
        &keys.other(1),
        &genesis,
        chain.clone(),
        Misbehaviour::Corrupt,
    )
    .await;
    let liar = FakePeer::spawn(
        &keys.other(2),
        &genesis,
        chain.clone(),
        Misbehaviour::Liar { holds: LIAR_HOLDS },
    )
    .await;
    let staller =
        FakePeer::spawn(&keys.other(3), &genesis, chain.clone(), Misbehaviour::Stall).await;

    // Phase 1: bad peers only.
    let bad = [
        corrupt.addr.clone(),
        liar.addr.clone(),
        staller.addr.clone(),
    ];
    let node = start_node(
        homes[1].path(),
        config(Role::Sentry, &bad),
        &genesis,
        &keys.other(9),
    )
    .await;
    let counts = || {
        let c = |p: &FakePeer| {
            let c = &p.counters;
            [&c.queries, &c.tampered, &c.denied].map(|a| a.load(Ordering::Relaxed))
        };
        (c(&corrupt), c(&liar), c(&staller))
    };
    let t0 = Instant::now();
    loop {
        let (c, l, s) = counts();
        // One bad block gets the corrupt peer banned: how many it serves
        // depends on how many of its requests were in flight by then.
        if c[0] > 0 && l[0] > 0 && s[0] > 0 && c[1] >= 1 && l[2] > 0 {
            break;
        }
        assert!(
            t0.elapsed() < DEADLINE,
            "not every bad peer was asked for blocks: [queries, tampered, denied] of the corrupt peer {c:?}, the liar {l:?}, the staller {s:?}; node at {}",
            node.height()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The liar has denied a height beyond the 50 it holds: the node has
    // tried to go past them, with every bad peer asked. Whatever it took
    // in is real (checked below) and stops at the liar's 50.
    let h1 = node.height();
    assert!(
        h1 <= LIAR_HOLDS,
        "committed {h1} blocks with no honest peer"
    );
    assert_same_chain(&node, &chain, h1);
    assert!(node.state().halted.is_none(), "halted");

    // Phase 2: an honest peer connects to the node.
    let t0 = Instant::now();
    let honest = start_node(
        homes[0].path(),
        config(Role::Sentry, &[node_addr(&node).await]),
        &genesis,
        &keys.other(0),
    )
    .await;
    assert_eq!(honest.height(), TIP);
    wait_for("the node to reach the honest tip", DEADLINE, || async {
        (node.height() >= TIP).then_some(())
    })
    .await;
    let took = t0.elapsed();
    assert_eq!(node.height(), TIP);
    assert_same_chain(&node, &chain, TIP);
    assert!(node.state().halted.is_none(), "halted");
    for k in &keys.senders {
        let a = node.shared().store.store().account(&k.public()).unwrap();
        let b = honest.shared().store.store().account(&k.public()).unwrap();
        assert_eq!(a, b);
    }

    wait_for("the node to leave sync mode", DEADLINE, || async {
        (!node.state().syncing).then_some(())
    })
    .await;

    // The peer that served forged blocks is penalised by the host.
    let corrupt_id = corrupt.host.local_peer_id();
    let penalised = node.shared().host.is_banned(corrupt_id).await.unwrap()
        || node
            .shared()
            .host
            .peer_info()
            .await
            .unwrap()
            .iter()
            .any(|p| p.peer == corrupt_id && p.score > 0);
    assert!(penalised, "the corrupt peer was not penalised");

    // Every misbehaviour was met, not avoided.
    let c = |p: &FakePeer| {
        (
            p.counters.queries.load(Ordering::Relaxed),
            p.counters.tampered.load(Ordering::Relaxed),
            p.counters.denied.load(Ordering::Relaxed),
        )
    };
    let (cq, ct, _) = c(&corrupt);
    let (lq, _, ld) = c(&liar);
    let (sq, _, _) = c(&staller);
    assert!(ct >= 1, "corrupt peer served no tampered block");
    assert!(ld > 0, "the liar was never asked for a height it lacks");
    assert!(sq > 0, "the staller was never asked");
    println!(
        "bad peers only: height {h1}; with an honest peer: {TIP} in {:.2}s; corrupt asked {cq} (tampered {ct}), liar asked {lq} (denied {ld}), staller asked {sq}",
        took.as_secs_f64(),
    );

    stop(node).await;
    stop(honest).await;
    corrupt.stop().await;
    liar.stop().await;
    staller.stop().await;
}
