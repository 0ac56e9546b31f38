#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Issue 7, `--blocks-only` (archival): the node runs no mempool, refuses
//! tx submission, wants no announced tx, ignores proposals, catches up by
//! block sync, then follows the chain by committed-block announces, and
//! serves blocks and its status to others.

mod sync_support;

use kite_node::config::Role;
use kite_node::p2p::{self, HostConfig, HostHandle, Multiaddr, PeerId};
use kite_node::rpc::{RpcBackend, UNSUPPORTED, WaitFor};
use kite_protocols::{blk, blkann, blkprop, status, txann, txpush};
use kite_types::{BLOCK_VERSION, Block, BlockHeader, Hash, Payload, Tx};
use std::time::Duration;
use sync_support::*;
use tempfile::TempDir;

const DEADLINE: Duration = Duration::from_secs(30);
const PREPARED: u64 = 300;
const TXS: u64 = 20;

async fn probe_host(chain_id: &str, to: &Multiaddr, peer: PeerId) -> (HostHandle, p2p::HostEvents) {
    let key = kite_types::NodeKey::from_seed([0x77; 32]);
    let mut c = HostConfig::new(chain_id);
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.allow_private_addrs = true;
    c.pex = false;
    c.target_peers = 0;
    let (host, events) = p2p::Host::spawn(&key, c).unwrap();
    host.dial(to.clone()).await.unwrap();
    wait_for("the probe to connect", DEADLINE, || async {
        host.connected_peers()
            .await
            .ok()?
            .contains(&peer)
            .then_some(())
    })
    .await;
    (host, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_only_node_syncs_follows_serves_and_never_takes_a_tx() {
    init_log();
    let keys = Keys::new(74, 1, 2);
    let genesis = genesis("kite-sync-archive", &keys, Duration::from_millis(200));
    let homes: Vec<TempDir> = (0..2).map(|_| TempDir::new().unwrap()).collect();
    let built = prepare_chain(
        homes[0].path().join("data"),
        &genesis,
        &keys,
        PREPARED,
        |h| if h % 3 == 0 { 4 } else { 0 },
    )
    .await;

    let leader = start_node(
        homes[0].path(),
        config(Role::Leader, &[]),
        &genesis,
        keys.leader(),
    )
    .await;
    let leader_addr = node_addr(&leader).await;
    let mut cfg = config(Role::Sentry, &[leader_addr]);
    cfg.blocks_only = true;
    let archive = start_node(homes[1].path(), cfg, &genesis, &keys.other(0)).await;
    assert!(
        archive.shared().mempool.is_none(),
        "a blocks-only node has a mempool"
    );

    // Catch up by block sync.
    wait_for(
        "the archive to sync the prepared chain",
        DEADLINE,
        || async {
            (archive.height() >= PREPARED && archive.height() + 1 >= leader.height()).then_some(())
        },
    )
    .await;
    assert!(synced_blocks(&archive) >= PREPARED - 1);
    assert_same_chain(&archive, &built.blocks, PREPARED);

    // Txs: refused by the archive, committed by the leader.
    let sender = &keys.senders[0];
    let first = leader
        .shared()
        .store
        .store()
        .account(&sender.public())
        .unwrap()
        .nonce
        + 1;
    let txs: Vec<Tx> = (first..first + TXS)
        .map(|n| {
            Tx::sign(
                sender,
                &genesis.chain_id,
                n,
                Payload::Transfer {
                    to: keys.receivers[0],
                    amount: 3,
                },
            )
        })
        .collect();
    let refused = archive
        .rpc()
        .broadcast_tx(txs[0].encode(), WaitFor::Accept)
        .await;
    let err = refused.expect_err("a blocks-only node accepted a tx");
    assert_eq!(err.code, UNSUPPORTED);
    assert_eq!(err.kind, "blocks_only");
    let leader_rpc = leader.rpc();
    for t in &txs {
        leader_rpc
            .broadcast_tx(t.encode(), WaitFor::Accept)
            .await
            .unwrap();
    }

    // A probe peer announces the txs and proposes a leader-signed block
    // to the archive: it wants neither.
    let archive_addr = node_addr(&archive).await;
    let (probe, _events) = probe_host(&genesis.chain_id, &archive_addr, archive.peer_id()).await;
    let hashes: Vec<Hash> = txs.iter().map(Tx::hash).collect();
    let s = probe
        .open_stream(archive.peer_id(), txann::PROTOCOL)
        .await
        .unwrap();
    let ann = txann::announce(s, &hashes, |h| txs.iter().find(|t| t.hash() == *h).cloned())
        .await
        .unwrap();
    assert_eq!(ann.announced, hashes.len());
    assert_eq!(ann.wanted, 0, "a blocks-only node wanted an announced tx");
    assert_eq!(ann.sent, 0);
    // A push is refused before it is read.
    let s = probe
        .open_stream(archive.peer_id(), txpush::PROTOCOL)
        .await
        .unwrap();
    assert!(
        txpush::push(s, &txs).await.is_err(),
        "a blocks-only node took a push"
    );

    let best = archive.shared().store.store().best().unwrap();
    let proposal = Block::new_signed(
        BlockHeader {
            version: BLOCK_VERSION,
            chain_id: genesis.chain_id.clone(),
            height: best.height + 1,
            prev_hash: best.block_hash,
            prev_app_hash: best.app_hash,
            timestamp_ms: u64::MAX / 2,
            tx_root: Hash::ZERO,
            validator_set_hash: genesis.validator_set().hash(),
            proposer: keys.leader().public(),
            term: 0,
        },
        txs[..1].to_vec(),
        keys.leader(),
    );
    let s = probe
        .open_stream(archive.peer_id(), blkprop::PROTOCOL)
        .await
        .unwrap();
    let prop = blkprop::propose(s, &proposal, 0, None).await.unwrap();
    assert_eq!(
        prop,
        blkann::AnnounceOutcome::NotWanted,
        "a blocks-only node took a proposal"
    );

    // The txs commit at the leader; the archive follows by announces and
    // holds them in its store, in the same blocks.
    wait_for("the leader to commit the txs", DEADLINE, || async {
        let n = leader
            .shared()
            .store
            .store()
            .account(&sender.public())
            .ok()?
            .nonce;
        (n == first + TXS - 1).then_some(())
    })
    .await;
    // The store's tip, not the node state's: the state follows the store
    // a moment later, and the last tx may be in that last block.
    let tip = leader.shared().store.store().best().unwrap().height;
    wait_for("the archive to follow the leader", DEADLINE, || async {
        (archive.height() >= tip).then_some(())
    })
    .await;
    for h in 1..=tip {
        assert_eq!(
            stored_hash(&archive, h),
            stored_hash(&leader, h),
            "height {h}"
        );
    }
    // Blocks that came by sync are indexed once sync is over.
    wait_for("the archive's tx index to catch up", DEADLINE, || async {
        (archive.shared().store.tx_indexed() >= tip).then_some(())
    })
    .await;
    for t in &txs {
        let a = archive
            .shared()
            .store
            .store()
            .tx_location(&t.hash())
            .unwrap();
        let l = leader
            .shared()
            .store
            .store()
            .tx_location(&t.hash())
            .unwrap();
        assert!(a.is_some(), "the archive lacks committed tx {}", t.hash());
        assert_eq!(a, l);
    }
    assert_ne!(
        stored_hash(&archive, proposal.height()),
        Some(proposal.hash()),
        "the archive committed the probe's proposal"
    );
    let announces = archive
        .shared()
        .host
        .protocol_stats(blkann::PROTOCOL)
        .accepted;
    assert!(
        announces > 0,
        "the archive received no committed-block announce"
    );

    // It serves blocks and says what it is.
    let s = probe
        .open_stream(archive.peer_id(), blk::PROTOCOL)
        .await
        .unwrap();
    let served = blk::request_range(s, 1, blk::MAX_RANGE, genesis.max_block_bytes as usize)
        .await
        .unwrap();
    assert_eq!(served.blocks.len(), blk::MAX_RANGE as usize);
    for (i, (b, ci)) in served.blocks.iter().enumerate() {
        assert_eq!(b.hash(), built.blocks[i].0.hash());
        assert_eq!(ci.app_hash, built.blocks[i].1.app_hash);
    }
    assert!(served.best_height >= tip);
    // The chain goes on meanwhile: on a busy machine the archive may be
    // a few blocks behind and syncing at one instant, so ask until it
    // says it follows.
    let st = wait_for(
        "the archive to report it follows the chain",
        DEADLINE,
        || async {
            let s = probe
                .open_stream(archive.peer_id(), status::PROTOCOL)
                .await
                .ok()?;
            let st = status::request(s).await.ok()?;
            (!st.syncing).then_some(st)
        },
    )
    .await;
    assert!(st.blocks_only);
    assert!(st.best_height >= tip);

    // Never a mempool, never a tx in one.
    assert!(archive.shared().mempool.is_none());
    assert_eq!(archive.shared().metrics.mempool_txs.get(), 0);
    println!(
        "archive: synced {} blocks, followed to {tip} with {announces} announces; {TXS} txs committed and stored, none admitted",
        synced_blocks(&archive)
    );

    let _ = tokio::time::timeout(STOP_DEADLINE, probe.shutdown()).await;
    stop(archive).await;
    stop(leader).await;
}
