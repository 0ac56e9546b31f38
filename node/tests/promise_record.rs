#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Issue 13, "persist before sending", at the node level: a validator's
//! promise file holds the vote it sent (height, block), the validator
//! restarts from it and votes again at the next height; a promise file
//! above the store, of another key, or corrupt keeps the node from
//! starting with a clear error, before its host starts.

use kite_consensus::EngineError;
use kite_node::config::Role;
use kite_node::node::{NodeError, NodeOptions, start};
use kite_node::promise_file;
use kite_node::rpc::WaitFor;
use kite_node::testkit::{NetSpec, TestNet, test_config, wait_for};
use kite_types::{Hash, NodeKey, Payload, Promise, Tx, Vote};
use std::path::Path;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

fn transfer(net: &TestNet, nonce: u64) -> Tx {
    Tx::sign(
        &net.faucet,
        &net.genesis.chain_id,
        nonce,
        Payload::Transfer {
            to: NodeKey::from_seed([0x77; 32]).public(),
            amount: 5,
        },
    )
}

/// The vote in `home`'s promise file, checked against what it must be.
fn recorded_vote(file: &Path, height: u64, voter: &NodeKey, block: Hash) -> Vote {
    let p = promise_file::load(file)
        .unwrap()
        .unwrap_or_else(|| panic!("no promise file at {}", file.display()));
    assert_eq!(p.height, height, "{p:?}");
    assert!(p.proposed.is_empty(), "{p:?}");
    let v = p.vote.clone().unwrap_or_else(|| panic!("no vote in {p:?}"));
    assert_eq!(v.validator, voter.public());
    assert_eq!((v.height, v.block_hash, v.ack), (height, block, true));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_records_its_vote_and_votes_again_after_a_restart() {
    let mut spec = NetSpec::new(2);
    spec.chain_id = "kite-promise".into();
    spec.seed = 13;
    // No empty blocks: the chain moves only with the txs of the test, so
    // the records read below are the last ones.
    spec.empty_block_timeout = Duration::ZERO;
    let mut net = TestNet::start(spec).await.unwrap();
    let files: Vec<_> = (0..2)
        .map(|i| net.shared(i).unwrap().promise_file.clone())
        .collect();

    // Two validators of power 1: a commit needs node 1's ACK.
    let h1 = net
        .submit(0, &transfer(&net, 1), WaitFor::Commit)
        .await
        .unwrap()
        .height
        .unwrap();
    wait_for("node 1 at the tx's height", DEADLINE, || async {
        (net.node(1)?.height() >= h1).then_some(())
    })
    .await
    .unwrap();
    let b1 = net.block_hash(1, h1).await.unwrap().unwrap();
    recorded_vote(&files[1], h1, &net.keys[1], b1);
    // The leader's record: the block it proposed at h1, then (written
    // once the commit is in, just after the tx's waiter is answered) the
    // height it opened, with nothing proposed yet.
    let led = wait_for(
        "the leader's record of the next height",
        DEADLINE,
        || async {
            let p = promise_file::load(&files[0]).unwrap()?;
            if p.height == h1 {
                assert_eq!(p.proposed.last(), Some(&b1), "{p:?}");
                return None;
            }
            Some(p)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        led,
        Promise {
            height: h1 + 1,
            vote: None,
            proposed: Vec::new(),
            newest_ts: 0,
            term: 0,
            block: None,
            credential: None,
        }
    );

    // Node 1 restarts from its home and record; the next block needs its
    // vote again.
    let leader_addr = net.addr(0).unwrap().to_string();
    assert!(matches!(net.stop_node(1).await, Some(Ok(()))));
    let home = files[1].parent().unwrap().to_owned();
    let mut config = test_config(Role::Validator, false, false, false);
    config.p2p.peers = vec![leader_addr];
    let again = start(NodeOptions {
        home,
        config,
        genesis: net.genesis.clone(),
        key: net.keys[1].clone(),
    })
    .await
    .unwrap();
    let h2 = net
        .submit(0, &transfer(&net, 2), WaitFor::Commit)
        .await
        .unwrap()
        .height
        .unwrap();
    assert!(h2 > h1);
    wait_for("node 1 at the second tx's height", DEADLINE, || async {
        (again.height() >= h2).then_some(())
    })
    .await
    .unwrap();
    let b2 = net.block_hash(0, h2).await.unwrap().unwrap();
    recorded_vote(&files[1], h2, &net.keys[1], b2);

    again.stop();
    assert!(
        tokio::time::timeout(DEADLINE, again.wait())
            .await
            .unwrap()
            .is_ok()
    );
    net.stop().await;
}

/// Starts node `i` of a 2-validator spec in `home` (no network needed:
/// every refusal comes before the host starts).
async fn start_in(home: &Path, i: usize) -> Result<(), NodeError> {
    let spec = NetSpec::new(2);
    let (genesis, keys, _, _) = spec.genesis();
    let role = if i == 0 {
        Role::Leader
    } else {
        Role::Validator
    };
    let node = start(NodeOptions {
        home: home.to_owned(),
        config: test_config(role, false, false, false),
        genesis,
        key: keys[i].clone(),
    })
    .await?;
    node.stop();
    node.wait().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_above_the_store_of_another_key_or_corrupt_refuses_to_start() {
    let spec = NetSpec::new(2);
    let (genesis, keys, _, _) = spec.genesis();

    // The store is at genesis; the record says the leader proposed at 5.
    let dir = tempfile::tempdir().unwrap();
    let file = promise_file::path_in(dir.path());
    let above = Promise {
        height: 5,
        vote: None,
        proposed: vec![Hash::digest(b"a block")],
        newest_ts: 0,
        term: 0,
        block: None,
        credential: None,
    };
    promise_file::save(&file, &above, true).unwrap();
    let e = start_in(dir.path(), 0).await.unwrap_err();
    assert!(
        matches!(
            e,
            NodeError::Promise {
                error: EngineError::StoreBehind { promised: 5, .. },
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("proposed at height 5"), "{msg}");
    assert!(msg.contains("fresh home"), "{msg}");
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    // The refusal left the record alone.
    assert_eq!(promise_file::load(&file).unwrap(), Some(above));

    // The same record at the open height is this leader's own: it starts.
    let open = Promise {
        height: genesis.initial_height,
        vote: None,
        proposed: vec![Hash::digest(b"a block")],
        newest_ts: 0,
        term: 0,
        block: None,
        credential: None,
    };
    promise_file::save(&file, &open, true).unwrap();
    start_in(dir.path(), 0).await.unwrap();

    // A validator whose record holds another key's vote at its open height.
    let dir = tempfile::tempdir().unwrap();
    let file = promise_file::path_in(dir.path());
    let foreign = Vote::ack(
        &keys[0],
        &genesis.chain_id,
        genesis.initial_height,
        Hash::digest(b"b"),
        Hash::digest(b"a"),
    );
    let rec = Promise {
        height: genesis.initial_height,
        vote: Some(foreign),
        proposed: Vec::new(),
        newest_ts: 0,
        term: 0,
        block: None,
        credential: None,
    };
    promise_file::save(&file, &rec, true).unwrap();
    let e = start_in(dir.path(), 1).await.unwrap_err();
    assert!(
        matches!(
            e,
            NodeError::Promise {
                error: EngineError::ForeignPromise { .. },
                ..
            }
        ),
        "{e}"
    );

    // A corrupt record.
    std::fs::write(&file, b"\x0a\xff\xff").unwrap();
    let e = start_in(dir.path(), 1).await.unwrap_err();
    assert!(matches!(e, NodeError::PromiseFile(_)), "{e}");
    assert!(e.to_string().contains(&file.display().to_string()), "{e}");
}
