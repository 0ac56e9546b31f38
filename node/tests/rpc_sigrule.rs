#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Issue 13 on a running node: RPC `broadcast_tx` (single verification)
//! and the announced-tx path (the mempool's batch admission, as the
//! `/kite/txann/1.0.0` handler calls it) give the same verdict: a
//! mixed-order-R tx signed by its sender is accepted on both, a tx under a
//! mixed-order key is refused as `bad_signature` on both.

mod sync_support;

use kite_node::config::Role;
use kite_node::rpc::{RpcBackend, WaitFor};
use kite_types::genesis::Allocation;
use kite_types::testing::{Forge, forged_key, forged_tx};
use kite_types::{Payload, Tx};
use std::time::Duration;
use sync_support::*;
use tempfile::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_and_announced_txs_get_the_same_signature_verdict() {
    init_log();
    let _serial = SERIAL.lock().await;
    let keys = Keys::new(92, 1, 80);
    let mut genesis = genesis("kite-rpc-sig", &keys, Duration::from_secs(3600));
    for k in &keys.senders {
        genesis.allocations.push(Allocation {
            account: forged_key(k, Forge::MixedOrderKey),
            balance: FUNDS,
        });
    }
    let home = TempDir::new().unwrap();
    let node = start_node(
        home.path(),
        config(Role::Sentry, &[]),
        &genesis,
        &keys.other(1),
    )
    .await;
    let rpc = node.rpc();
    let mempool = node
        .shared()
        .mempool
        .clone()
        .expect("a sentry has a mempool");
    let tx = |i: usize, kind: Forge| -> Tx {
        let pay = Payload::Transfer {
            to: keys.receivers[0],
            amount: 1,
        };
        forged_tx(&keys.senders[i], kind, &genesis.chain_id, 1, pay)
    };
    for round in 0..8 {
        // RPC: one tx each.
        let (r, k) = (
            tx(2 * round, Forge::MixedOrderR),
            tx(2 * round, Forge::MixedOrderKey),
        );
        let ok = rpc.broadcast_tx(r.encode(), WaitFor::Accept).await;
        assert_eq!(ok.unwrap().hash, r.hash(), "RPC refused a mixed-order-R tx");
        let err = rpc
            .broadcast_tx(k.encode(), WaitFor::Accept)
            .await
            .expect_err("RPC accepted a tx under a mixed-order key");
        assert_eq!(err.kind, "bad_signature");

        // Announced: in a batch with honest txs of other senders.
        let i = 2 * round + 1;
        let mut txs: Vec<Tx> = (20 + 7 * round..27 + 7 * round)
            .map(|j| tx(j, Forge::Honest))
            .collect();
        txs.insert(2, tx(i, Forge::MixedOrderR));
        txs.insert(5, tx(i, Forge::MixedOrderKey));
        let src = node.shared().accounts();
        let m = mempool.clone();
        let got = tokio::task::spawn_blocking(move || m.admit_batch(txs, &src, 0))
            .await
            .unwrap();
        assert!(
            got[2].is_ok(),
            "batch refused a mixed-order-R tx: {:?}",
            got[2]
        );
        assert_eq!(
            got[5].as_ref().map_err(|e| e.code()),
            Err("bad_signature"),
            "batch verdict on a tx under a mixed-order key"
        );
        assert_eq!(got.iter().filter(|r| r.is_ok()).count(), 8);
    }
    stop(node).await;
}
