#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Issue 7: a node whose store holds blocks the network does not (a home
//! left from another run of a chain with the same genesis) stops with a
//! clear error instead of sitting on its own chain, whether that store is
//! behind the network's tip or ahead of it (see `kite_node::chaincheck`).
//! The network's node it dialed does not stop; and two nodes of different
//! runs that meet outside their `p2p.peers` drop and ban each other, and
//! neither stops.

mod sync_support;

use kite_node::config::Role;
use kite_node::node::{NodeError, RunningNode};
use std::time::Duration;
use sync_support::*;
use tempfile::TempDir;

const DEADLINE: Duration = Duration::from_secs(30);
/// The network's chain: empty blocks.
const NETWORK: u64 = 10;

/// The other run of the chain has a transfer at every third height, so its
/// blocks differ from the network's from height 3 on.
fn other_run_txs(h: u64) -> usize {
    usize::from(h.is_multiple_of(3))
}

/// Waits until `node` stops by itself and returns why.
async fn stops_by_itself(node: RunningNode) -> String {
    let ctx = node.ctx().clone();
    wait_for("the node stops by itself", DEADLINE, || {
        let ctx = ctx.clone();
        async move { ctx.cancel.is_cancelled().then_some(()) }
    })
    .await;
    match tokio::time::timeout(DEADLINE, node.wait()).await {
        Ok(Err(NodeError::Halted(why))) => why,
        other => panic!("expected a halt, got {other:?}"),
    }
}

/// The network's node and the other run's node, started.
struct Runs {
    /// Holds the network's chain of [`NETWORK`] empty blocks.
    server: RunningNode,
    /// Holds `other` blocks of another run of the chain.
    node: RunningNode,
    /// The network's chain.
    net: Built,
    _homes: Vec<TempDir>,
}

/// Two homes of one genesis (the network's chain, and `other` blocks of
/// another run) and a sentry on each; the second names the first in its
/// `p2p.peers` when `joins`, else neither names the other.
async fn start_runs(seed: u8, other: u64, joins: bool) -> Runs {
    init_log();
    let keys = Keys::new(seed, 3, 4);
    let genesis = genesis("kite-other-run", &keys, Duration::ZERO);
    let homes: Vec<TempDir> = (0..2).map(|_| TempDir::new().unwrap()).collect();
    let net = prepare_chain(
        homes[0].path().join("data"),
        &genesis,
        &keys,
        NETWORK,
        |_| 0,
    )
    .await;
    let old = prepare_chain(
        homes[1].path().join("data"),
        &genesis,
        &keys,
        other,
        other_run_txs,
    )
    .await;
    assert_eq!(net.hash(2), old.hash(2), "the runs share blocks 1 and 2");
    assert_ne!(net.hash(3), old.hash(3), "and differ from height 3 on");
    let cfg = config(Role::Sentry, &[]);
    let server = start_node(homes[0].path(), cfg, &genesis, &keys.other(1)).await;
    let peers = if joins {
        vec![node_addr(&server).await]
    } else {
        Vec::new()
    };
    let cfg = config(Role::Sentry, &peers);
    let node = start_node(homes[1].path(), cfg, &genesis, &keys.other(2)).await;
    Runs {
        server,
        node,
        net,
        _homes: homes,
    }
}

/// Starts the other run's node joining the network's node; returns why
/// it stopped, after checking the network's node did not.
async fn join_with_other_run(seed: u8, other: u64) -> String {
    let Runs {
        server, node, net, ..
    } = start_runs(seed, other, true).await;
    let why = stops_by_itself(node).await;
    // The server holds its chain and does not stop.
    assert_eq!(server.height(), NETWORK);
    assert_eq!(stored_hash(&server, NETWORK), Some(net.hash(NETWORK)));
    assert!(server.ctx().state.read().halted.is_none());
    stop(server).await;
    why
}

/// What the stopped node says, whichever side of the network's tip it is.
fn assert_says_another_run(why: &str, height: u64) {
    assert!(
        why.starts_with(
            "this node's store is not the network's chain: 1 of the 1 peers in p2p.peers ("
        ),
        "{why}"
    );
    assert!(
        why.contains(&format!(" at height {height}, where this node holds ")),
        "{why}"
    );
    assert!(why.contains("another run of this chain"), "{why}");
    assert!(why.contains("fresh home"), "{why}");
}

/// The node's store is ahead of the network (20 blocks against 10): no
/// peer is ahead to sync from, so the status check must find out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_ahead_of_the_network_on_another_run_stops_the_node() {
    let _serial = SERIAL.lock().await;
    let why = join_with_other_run(81, 2 * NETWORK).await;
    // The network's best block, 10, is not the node's block 10.
    assert_says_another_run(&why, NETWORK);
}

/// The node's store is behind the network (5 blocks against 10): the
/// network's node is ahead, and its block 5 is not the node's block 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_behind_the_network_on_another_run_stops_the_node() {
    let _serial = SERIAL.lock().await;
    let why = join_with_other_run(82, 5).await;
    assert_says_another_run(&why, 5);
}

/// Two nodes of different runs meet by a plain dial, neither in the
/// other's `p2p.peers`: each finds the other's block at a height it holds
/// is not its own, drops and bans it, and keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_two_runs_that_meet_ban_each_other_and_keep_running() {
    let _serial = SERIAL.lock().await;
    let Runs {
        server,
        node: stranger,
        net,
        ..
    } = start_runs(83, 2 * NETWORK, false).await;
    server
        .ctx()
        .host
        .dial(node_addr(&stranger).await)
        .await
        .unwrap();
    for (a, b) in [(&server, &stranger), (&stranger, &server)] {
        let (host, peer) = (a.ctx().host.clone(), b.peer_id());
        wait_for("each bans the other", DEADLINE, || {
            let host = host.clone();
            async move { host.is_banned(peer).await.ok()?.then_some(()) }
        })
        .await;
        assert!(!a.ctx().peers.read().contains_key(&peer));
    }
    assert_eq!(server.height(), NETWORK);
    assert_eq!(stored_hash(&server, NETWORK), Some(net.hash(NETWORK)));
    assert_eq!(stranger.height(), 2 * NETWORK);
    // stop() checks that neither halted.
    stop(server).await;
    stop(stranger).await;
}
