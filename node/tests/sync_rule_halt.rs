#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Issue 13: block sync meets a committed block (the leader's signature, a
//! quorum commit, txs matching the tx root) holding a tx whose signature
//! this node's verification rule refuses (a tx under a mixed-order key,
//! which a node of another rule could have committed). The peer serving
//! it is honest: the node halts with a message naming the block and the
//! rule instead of banning the peer, and commits nothing past the block
//! before it.

mod sync_support;

use kite_blockstore::{BlockStore, StoreConfig};
use kite_node::config::Role;
use kite_node::node::NodeError;
use kite_types::genesis::Allocation;
use kite_types::testing::{Forge, forged_key, forged_tx};
use kite_types::{BLOCK_VERSION, Block, BlockHeader, CommitInfo, Hash, Payload, Vote};
use std::sync::Arc;
use std::time::Duration;
use sync_support::*;
use tempfile::TempDir;

const DEADLINE: Duration = Duration::from_secs(30);
const TIP: u64 = 10;
/// The height of the block with the refused tx.
const BAD: u64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_block_this_node_refuses_halts_it_and_the_peer_is_not_blamed() {
    init_log();
    let _serial = SERIAL.lock().await;
    let keys = Keys::new(91, 3, 2);
    let mut genesis = genesis("kite-sig-rule", &keys, Duration::from_millis(100));
    let odd = forged_key(&keys.senders[0], Forge::MixedOrderKey);
    genesis.allocations.push(Allocation {
        account: odd,
        balance: FUNDS,
    });
    let home = TempDir::new().unwrap();

    // The network's chain, built as its nodes committed it: block BAD
    // holds a tx under the mixed-order key next to an honest one.
    let chain = {
        let store = BlockStore::open_with(
            &home.path().join("network"),
            &genesis,
            StoreConfig {
                durable: false,
                ..StoreConfig::default()
            },
        )
        .unwrap();
        let best = store.best().unwrap();
        let (mut prev, mut prev_app) = (best.block_hash, best.app_hash);
        let mut chain = Vec::new();
        for h in 1..=TIP {
            let pay = |n: u64| Payload::Transfer {
                to: keys.receivers[0],
                amount: n,
            };
            let txs = if h == BAD {
                vec![
                    forged_tx(
                        &keys.senders[1],
                        Forge::Honest,
                        &genesis.chain_id,
                        1,
                        pay(1),
                    ),
                    forged_tx(
                        &keys.senders[0],
                        Forge::MixedOrderKey,
                        &genesis.chain_id,
                        1,
                        pay(2),
                    ),
                ]
            } else {
                Vec::new()
            };
            let header = BlockHeader {
                version: BLOCK_VERSION,
                chain_id: genesis.chain_id.clone(),
                height: h,
                prev_hash: prev,
                prev_app_hash: prev_app,
                timestamp_ms: genesis.genesis_time_ms + h,
                tx_root: Hash::ZERO,
                validator_set_hash: genesis.validator_set().hash(),
                proposer: keys.leader().public(),
                term: 0,
            };
            let block = Block::new_signed(header, txs, keys.leader());
            // As a node of the other rule did: signatures taken as checked.
            let ex = store.execute_block(&block, true).unwrap();
            let votes = keys
                .validators
                .iter()
                .take(2)
                .map(|k| Vote::ack(k, &genesis.chain_id, h, block.hash(), ex.app_hash))
                .collect();
            let ci = CommitInfo {
                app_hash: ex.app_hash,
                votes,
            };
            store.commit(&block, &ci, &ex.changes).unwrap();
            (prev, prev_app) = (block.hash(), ex.app_hash);
            chain.push((block, ci));
        }
        chain
    };
    assert_eq!(chain[(BAD - 1) as usize].0.txs().len(), 2);

    // An honest peer serving exactly that chain.
    let peer = FakePeer::spawn(
        &keys.other(1),
        &genesis,
        Arc::new(chain),
        Misbehaviour::Liar { holds: TIP },
    )
    .await;
    let node = start_node(
        &home.path().join("node"),
        config(Role::Sentry, std::slice::from_ref(&peer.addr)),
        &genesis,
        &keys.other(9),
    )
    .await;
    let ctx = node.shared().clone();
    wait_for("the node to halt", DEADLINE, || {
        let ctx = ctx.clone();
        async move { ctx.stop.is_stopping().then_some(()) }
    })
    .await;
    let height = node.height();
    // The halt closes the host at once: the points it reported stay
    // readable, and the peer store it saved shows no ban. The honest
    // peer (the only one) was neither scored nor banned.
    let peer_id = peer.host.local_peer_id();
    let host = node.shared().host.clone();
    let saved = home
        .path()
        .join("node")
        .join(kite_node::p2p::PEER_STORE_FILE);
    let why = match tokio::time::timeout(DEADLINE, node.wait()).await {
        Ok(Err(NodeError::Halted(why))) => why,
        other => panic!("expected a halt, got {other:?}"),
    };
    assert_eq!(host.reported_points(), 0, "the honest peer was penalised");
    let peers = kite_node::p2p::store::PeerStore::load(
        &saved,
        1024,
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(
        peers.get(&peer_id).is_some(),
        "the saved peer store knows the peer"
    );
    assert!(
        !peers.is_banned(&peer_id, kite_node::p2p::store::now_ms()),
        "banned"
    );
    assert!(why.contains(&format!("block {BAD}")), "{why}");
    assert!(why.contains("verification rule"), "{why}");
    assert!(why.contains("stops rather than fork"), "{why}");
    assert!(height < BAD, "committed {height}, past the refused block");
    peer.stop().await;
}
