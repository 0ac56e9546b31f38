#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Issue 7: a node whose store holds blocks the network does not (a home
//! left from another run of a chain with the same genesis) stops with a
//! clear error instead of sitting on its own chain, whether that store is
//! behind the network's tip or ahead of it (see `kite_node::chaincheck`).
//! Issue 13: two valid commits at one height are proof that the keys signed
//! two chains, whoever shows it, so the network's node it dialed stops too
//! (saying it cannot tell which store is the odd one out), and so do two
//! nodes of different runs that meet outside their `p2p.peers`; none bans
//! the other for it.

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

/// Waits until one of `nodes` stops by itself, then stops the others;
/// returns why each stopped: `Some(reason)` for a halt, `None` for a clean
/// stop (any other error fails the test).
async fn until_one_stops(nodes: Vec<RunningNode>) -> Vec<Option<String>> {
    let ctxs: Vec<_> = nodes.iter().map(|n| n.shared().clone()).collect();
    wait_for("a node stops by itself", DEADLINE, || {
        let stopped = ctxs.iter().any(|c| c.stop.is_stopping());
        async move { stopped.then_some(()) }
    })
    .await;
    let mut whys = Vec::new();
    for node in nodes {
        node.stop();
        whys.push(match tokio::time::timeout(DEADLINE, node.wait()).await {
            Ok(Ok(())) => None,
            Ok(Err(NodeError::Halted(why))) => Some(why),
            other => panic!("expected a clean stop or a halt, got {other:?}"),
        });
    }
    whys
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

/// Starts the other run's node joining the network's node, and checks what
/// each says when it stops: both may find the other's proven commit at a
/// height they hold, and whichever does first stops (the other may then
/// not get the proof before the connection closes). The joiner, whose
/// p2p.peers all proved another block, says its store is from another run
/// at `height`; the network's node says it saw two valid commits. The
/// network's chain is intact either way.
async fn join_with_other_run(seed: u8, other: u64, height: u64) {
    let Runs {
        server, node, net, ..
    } = start_runs(seed, other, true).await;
    let joiner = node.peer_id();
    let server_ctx = server.shared().clone();
    let server_state = server.watch_state();
    let whys = until_one_stops(vec![node, server]).await;
    assert!(
        whys.iter().any(Option::is_some),
        "one of them halts: {whys:?}"
    );
    if let Some(why) = &whys[0] {
        assert_says_another_run(why, height);
    }
    if let Some(why) = &whys[1] {
        assert_says_two_commits(why);
        assert!(why.contains(&joiner.to_string()), "{why}");
    }
    assert_eq!(server_state.borrow().height, NETWORK);
    assert_eq!(
        server_ctx.store.hash_at(NETWORK).await.unwrap(),
        Some(net.hash(NETWORK))
    );
}

/// What a node says that cannot tell which of two commits is the odd one.
fn assert_says_two_commits(why: &str) {
    assert!(
        why.starts_with("two valid commits at one height: peer "),
        "{why}"
    );
    assert!(why.contains("another run of this chain"), "{why}");
    assert!(why.contains("investigate the keys"), "{why}");
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
    // The network's best block, 10, is not the node's block 10.
    join_with_other_run(81, 2 * NETWORK, NETWORK).await;
}

/// The node's store is behind the network (5 blocks against 10): the
/// network's node is ahead, and its block 5 is not the node's block 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_behind_the_network_on_another_run_stops_the_node() {
    let _serial = SERIAL.lock().await;
    join_with_other_run(82, 5, 5).await;
}

/// Two nodes of different runs meet by a plain dial, neither in the
/// other's `p2p.peers`: the first that finds the other's proven block at a
/// height it holds is not its own stops (before, each banned the other and
/// kept running on its own side of the fork).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_two_runs_that_meet_stop() {
    let _serial = SERIAL.lock().await;
    let Runs {
        server,
        node: stranger,
        net,
        ..
    } = start_runs(83, 2 * NETWORK, false).await;
    server
        .shared()
        .host
        .dial(node_addr(&stranger).await)
        .await
        .unwrap();
    let server_ctx = server.shared().clone();
    let (server_state, stranger_state) = (server.watch_state(), stranger.watch_state());
    let ids = [stranger.peer_id(), server.peer_id()];
    let whys = until_one_stops(vec![server, stranger]).await;
    assert!(
        whys.iter().any(Option::is_some),
        "one of them halts: {whys:?}"
    );
    for (why, other) in whys.iter().zip(ids) {
        if let Some(why) = why {
            assert_says_two_commits(why);
            assert!(why.contains(&other.to_string()), "{why}");
        }
    }
    assert_eq!(server_state.borrow().height, NETWORK);
    assert_eq!(
        server_ctx.store.hash_at(NETWORK).await.unwrap(),
        Some(net.hash(NETWORK))
    );
    assert_eq!(stranger_state.borrow().height, 2 * NETWORK);
}
