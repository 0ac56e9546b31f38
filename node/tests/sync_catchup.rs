#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Issue 7, catching up: a node that joins a live network at height 1,000
//! syncs to the tip while the network keeps committing, then follows it;
//! a node stopped in the middle of a sync resumes from its store after a
//! restart and finishes.

mod sync_support;

use kite_node::config::Role;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sync_support::*;
use tempfile::TempDir;

const DEADLINE: Duration = Duration::from_secs(30);

/// 1,000 blocks prepared in a store (every 10th with 20 transfers), copied
/// to a leader and two validators that keep committing empty blocks every
/// 150 ms; a fresh sentry that knows all three joins, syncs the 1,000
/// blocks and those committed meanwhile, and then follows the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_at_height_1000_and_syncs_while_the_network_commits() {
    let _serial = SERIAL.lock().await;
    init_log();
    const PREPARED: u64 = 1000;
    let keys = Keys::new(71, 3, 8);
    // Empty blocks every 30 ms: block sync of the prepared chain is fast,
    // and the network must commit while it runs.
    let genesis = genesis("kite-sync-join", &keys, Duration::from_millis(30));
    let homes: Vec<TempDir> = (0..4).map(|_| TempDir::new().unwrap()).collect();
    let built = prepare_chain(
        homes[0].path().join("data"),
        &genesis,
        &keys,
        PREPARED,
        |h| if h % 10 == 0 { 20 } else { 0 },
    )
    .await;
    assert_eq!(built.height, PREPARED);
    assert_eq!(built.txs, 2000);
    for h in &homes[1..3] {
        copy_dir(&homes[0].path().join("data"), &h.path().join("data"));
    }

    // The network: leader, then two validators.
    let leader = start_node(
        homes[0].path(),
        config(Role::Leader, &[]),
        &genesis,
        keys.leader(),
    )
    .await;
    // Alone, the leader has no quorum: it starts at the prepared tip. (Once
    // validators join it may commit at any moment, so check it here.)
    assert_eq!(leader.height(), PREPARED);
    let leader_addr = node_addr(&leader).await;
    let mut validators = Vec::new();
    let mut addrs = vec![leader_addr];
    for (i, home) in homes.iter().enumerate().take(3).skip(1) {
        let v = start_node(
            home.path(),
            config(Role::Validator, &addrs),
            &genesis,
            &keys.validators[i],
        )
        .await;
        addrs.push(node_addr(&v).await);
        validators.push(v);
    }
    wait_for(
        "the network to commit past the prepared chain",
        DEADLINE,
        || async { (leader.height() >= PREPARED + 3).then_some(()) },
    )
    .await;

    // The late sentry.
    let joined_at = leader.height();
    let t0 = Instant::now();
    let sentry = start_node(
        homes[3].path(),
        config(Role::Sentry, &addrs),
        &genesis,
        &keys.other(0),
    )
    .await;
    assert_eq!(sentry.height(), 0);
    let caught_up = wait_for(
        "the sentry to reach the network's tip",
        DEADLINE,
        || async {
            let (s, l) = (sentry.height(), leader.height());
            (s >= PREPARED && s + 1 >= l).then_some(s)
        },
    )
    .await;
    let took = t0.elapsed();
    // The network kept committing while the sentry synced.
    assert!(
        leader.height() > joined_at,
        "the network did not commit while the sentry synced"
    );
    // It fetched at least the prepared chain by block sync.
    assert!(
        synced_blocks(&sentry) >= PREPARED,
        "only {} blocks came by sync",
        synced_blocks(&sentry)
    );
    // Then it follows: it commits blocks the network makes after it caught up.
    let later = leader.height() + 3;
    wait_for("the sentry to follow the chain", DEADLINE, || async {
        (sentry.height() >= later).then_some(())
    })
    .await;
    wait_for("the sentry to leave sync mode", DEADLINE, || async {
        (!sentry.state().syncing).then_some(())
    })
    .await;

    // Same blocks as the prepared chain and as the leader, same balances.
    let top = sentry.height();
    assert_same_chain(&sentry, &built.blocks, PREPARED);
    for h in PREPARED..=top {
        assert_eq!(
            stored_hash(&sentry, h),
            stored_hash(&leader, h),
            "height {h}"
        );
    }
    for k in &keys.senders {
        let a = sentry.shared().store.store().account(&k.public()).unwrap();
        let b = leader.shared().store.store().account(&k.public()).unwrap();
        assert_eq!(a, b);
        assert!(a.nonce > 0);
    }
    println!(
        "joined at network height {joined_at}, caught up at {caught_up} in {:.2}s ({:.0} blocks/s), following at {top}",
        took.as_secs_f64(),
        caught_up as f64 / took.as_secs_f64()
    );
    stop(sentry).await;
    for v in validators {
        stop(v).await;
    }
    stop(leader).await;
}

/// A static chain of 600 blocks. A fresh node first syncs from a peer that
/// claims all 600 but serves only the first 300, so it is stopped in the
/// middle of its sync at exactly height 300 (sync of a few hundred blocks is
/// too fast to stop at a chosen moment otherwise). It restarts on the same
/// home with two honest peers, resumes from its store (not from scratch)
/// and reaches the tip with the same blocks and balances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_resumes_after_a_restart_in_the_middle() {
    let _serial = SERIAL.lock().await;
    init_log();
    const TIP: u64 = 600;
    /// Blocks the first run's only peer serves.
    const STOP_AT: u64 = 300;
    let keys = Keys::new(72, 1, 4);
    // No leader runs: the chain stays at its prepared tip.
    let genesis = genesis("kite-sync-restart", &keys, Duration::from_millis(100));
    let homes: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let built = prepare_chain(homes[0].path().join("data"), &genesis, &keys, TIP, |h| {
        if h % 5 == 0 { 10 } else { 0 }
    })
    .await;
    let chain = Arc::new(built.blocks);
    copy_dir(&homes[0].path().join("data"), &homes[1].path().join("data"));
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for (i, home) in homes[..2].iter().enumerate() {
        let n = start_node(
            home.path(),
            config(Role::Sentry, &[]),
            &genesis,
            &keys.other(i),
        )
        .await;
        assert_eq!(n.height(), TIP);
        addrs.push(node_addr(&n).await);
        servers.push(n);
    }

    let half = FakePeer::spawn(
        &keys.other(5),
        &genesis,
        chain.clone(),
        Misbehaviour::Liar { holds: STOP_AT },
    )
    .await;

    // The syncing node commits durably, as a real node does.
    let mut cfg = config(Role::Sentry, std::slice::from_ref(&half.addr));
    cfg.store.durable = true;
    let me = keys.other(9);
    let home = homes[2].path();
    let first = start_node(home, cfg.clone(), &genesis, &me).await;
    wait_for("the first run to reach the middle", DEADLINE, || async {
        (first.height() >= STOP_AT).then_some(())
    })
    .await;
    let stopped_at = first.height();
    assert_eq!(stopped_at, STOP_AT, "only {STOP_AT} blocks were served");
    stop(first).await;
    half.stop().await;

    cfg.p2p.peers = addrs.iter().map(ToString::to_string).collect();
    let second = start_node(home, cfg, &genesis, &me).await;
    let resumed_at = second.height();
    assert!(
        resumed_at >= stopped_at,
        "restarted at height {resumed_at}, the first run had committed {stopped_at}"
    );
    assert!(resumed_at < TIP);
    assert_same_chain(&second, &chain, resumed_at);
    wait_for("the second run to reach the tip", DEADLINE, || async {
        (second.height() >= TIP).then_some(())
    })
    .await;
    assert_eq!(second.height(), TIP);
    assert_same_chain(&second, &chain, TIP);
    // The second run fetched only what it lacked (plus a window of slack).
    let fetched = synced_blocks(&second);
    assert!(
        fetched >= TIP - resumed_at && fetched <= TIP - resumed_at + 64,
        "second run fetched {fetched} blocks to go from {resumed_at} to {TIP}"
    );
    for k in &keys.senders {
        let a = second.shared().store.store().account(&k.public()).unwrap();
        let b = servers[0]
            .shared()
            .store
            .store()
            .account(&k.public())
            .unwrap();
        assert_eq!(a, b);
    }
    wait_for("the node to leave sync mode", DEADLINE, || async {
        (!second.state().syncing).then_some(())
    })
    .await;
    println!(
        "stopped at {stopped_at}, resumed at {resumed_at}, reached {TIP}; second run fetched {fetched} blocks"
    );
    stop(second).await;
    for s in servers {
        stop(s).await;
    }
}
