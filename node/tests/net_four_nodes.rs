#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Issue 6: a real 4-node network (leader + 3 validators) in one test
//! process commits blocks with txs. 200 transfers from 4 senders go in at
//! 4 different nodes; every one is committed exactly once, every node holds
//! the same block at every height, and the balances agree with a model on
//! every node.

use kite_node::rpc::WaitFor;
use kite_node::testkit::{FUNDED_BALANCE, NetSpec, TestNet, wait_for};
use kite_types::{Hash, NodeKey, Payload, PublicKey, Tx};
use std::collections::HashMap;
use std::time::Duration;

const SENDERS: usize = 4;
const PER_SENDER: u64 = 50;
const ROUNDS: u64 = 5;
const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_commit_200_transfers_submitted_at_every_node() {
    kite_node::testkit::init_log();
    let mut spec = NetSpec::new(4);
    spec.chain_id = "kite-net4".into();
    spec.seed = 6;
    spec.funded = SENDERS;
    let net = TestNet::start(spec).await.unwrap();
    assert_eq!(net.len(), 4);

    let receivers: Vec<PublicKey> = (0..5u8)
        .map(|i| NodeKey::from_seed([0xa0 + i; 32]).public())
        .collect();
    let mut model: HashMap<PublicKey, u64> = HashMap::new();
    let mut by_sender: Vec<Vec<Tx>> = Vec::new();
    for (s, key) in net.accounts.iter().enumerate() {
        let mut txs = Vec::new();
        for nonce in 1..=PER_SENDER {
            let n = s as u64 * PER_SENDER + nonce;
            let to = receivers[(n % 5) as usize];
            let amount = 1 + n % 97;
            *model.entry(key.public()).or_insert(FUNDED_BALANCE) -= amount;
            *model.entry(to).or_insert(0) += amount;
            txs.push(Tx::sign(
                key,
                &net.genesis.chain_id,
                nonce,
                Payload::Transfer { to, amount },
            ));
        }
        by_sender.push(txs);
    }
    let all: Vec<Hash> = by_sender.iter().flatten().map(Tx::hash).collect();

    // In 5 rounds of 10 txs per sender: sender s submits at node
    // (s + round) % 4, the senders at once, each in nonce order; then every
    // node must commit the round before the next one starts (so several
    // blocks carry txs and every sender uses every node).
    for round in 0..ROUNDS {
        let submits = by_sender.iter().enumerate().map(|(s, txs)| {
            let net = &net;
            let at = (s + round as usize) % net.len();
            let per = (PER_SENDER / ROUNDS) as usize;
            async move {
                for t in &txs[round as usize * per..(round as usize + 1) * per] {
                    let r = net.submit(at, t, WaitFor::Accept).await;
                    assert!(r.is_ok(), "node {at} refused a tx: {r:?}");
                }
            }
        });
        futures::future::join_all(submits).await;
        let want = (round + 1) * PER_SENDER / ROUNDS;
        for i in 0..net.len() {
            wait_for(
                &format!("node {i} to commit round {round}"),
                DEADLINE,
                || async {
                    for k in &net.accounts {
                        if net.nonce(i, &k.public()).await.unwrap() != want {
                            return None;
                        }
                    }
                    Some(())
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{e}; heights {:?}", net.heights()));
        }
    }

    // Same chain everywhere, every tx exactly once in it.
    // The store commits before the node state shows the new height: wait
    // until every node reports the highest height seen in any store.
    let mut top = 0;
    for i in 0..net.len() {
        top = top.max(net.shared(i).unwrap().store.best().await.unwrap().height);
    }
    net.wait_height(top, DEADLINE).await.unwrap();
    let hashes = net.check_same_chain(top).await.unwrap();
    assert_eq!(hashes.len() as u64, top - net.genesis.initial_height + 1);
    let mut seen: HashMap<Hash, u64> = HashMap::new();
    let mut blocks_with_txs = 0;
    for h in net.genesis.initial_height..=top {
        let b = net
            .shared(0)
            .unwrap()
            .store
            .block_by_height(h)
            .await
            .unwrap()
            .unwrap();
        if !b.txs().is_empty() {
            blocks_with_txs += 1;
        }
        for t in b.txs() {
            assert!(seen.insert(t.hash(), h).is_none(), "tx twice in the chain");
        }
    }
    assert_eq!(seen.len(), all.len(), "committed txs");
    for h in &all {
        assert!(seen.contains_key(h), "tx {h} not committed");
        for i in 0..net.len() {
            let loc = net.shared(i).unwrap().store.tx_location(*h).await.unwrap();
            assert_eq!(loc.map(|l| l.height), seen.get(h).copied(), "node {i}");
        }
    }
    assert!(
        blocks_with_txs >= ROUNDS,
        "{blocks_with_txs} blocks with txs"
    );

    // Balances agree with the model on every node.
    for i in 0..net.len() {
        for (who, want) in &model {
            assert_eq!(net.balance(i, who).await.unwrap(), *want, "node {i}");
        }
    }
    // No tx lingers in a mempool.
    for i in 0..net.len() {
        let m = net.shared(i).unwrap().mempool.clone().unwrap();
        wait_for("empty mempool", DEADLINE, || async {
            m.is_empty().then_some(())
        })
        .await
        .unwrap();
    }
    println!(
        "4 nodes: {} txs in {blocks_with_txs} blocks, heights {:?}",
        all.len(),
        net.heights()
    );
    for exit in net.stop().await {
        assert!(matches!(exit, Some(Ok(()))), "{exit:?}");
    }
}
