#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Issue 16, operator hand-over: `leader_handover` on the admin listener
//! (what `kite admin leader --to` sends) on an in-process network of four
//! validators. Automatic failover is off (`consensus.leader_timeout = 0`),
//! so only the hand-over can move leadership: asked of a live leader, it
//! hands over cleanly and the named validator leads the next blocks; asked
//! of the validators while the leader is down, they name the next leader
//! and the chain commits again.

use kite_node::admin::{ActingAs, AdminClient, AdminClientError, LeaderResult};
use kite_node::testkit::{NetSpec, TestNet, Topology, wait_for};
use kite_types::PublicKey;
use std::sync::Arc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);

fn spec(seed: u64) -> NetSpec {
    let mut spec = NetSpec::new(4);
    spec.chain_id = "kite-handover".into();
    spec.seed = seed;
    spec.topology = Topology::Mesh;
    spec.empty_block_timeout = Duration::from_millis(200);
    spec.edit = Some(Arc::new(|_, c| {
        c.admin.listen = "unix:admin.sock".into();
        c.consensus.leader_timeout = Duration::ZERO;
        // A validator refuses to leave a leader that made progress within
        // a round timeout (failover off): long, so the refusal below holds
        // on a slow machine.
        c.consensus.round_timeout = Duration::from_secs(60);
    }));
    spec
}

fn admin(net: &TestNet, i: usize) -> AdminClient {
    let at = net.node(i).unwrap().admin_addr.clone().unwrap();
    AdminClient::new(at, Duration::from_secs(10))
}

async fn hand_over(net: &TestNet, on: usize, to: &str) -> Result<LeaderResult, AdminClientError> {
    admin(net, on).leader_handover(to, false).await
}

/// Waits until every running node is in `term`, settled, led by `leader`,
/// and at height `from` or above; the block at `from` is of that term and
/// proposed by `leader`.
async fn wait_led(net: &TestNet, term: u64, leader: PublicKey, from: u64) {
    for i in net.running() {
        wait_for(
            &format!("node {i} to commit in term {term}"),
            DEADLINE,
            || async {
                let st = net.node(i)?.state();
                (st.term == term && st.term_settled && st.leader == leader && st.height >= from)
                    .then_some(())
            },
        )
        .await
        .unwrap();
    }
    // The blocks of the new term are the named validator's.
    let store = &net.shared(net.running()[0]).unwrap().store;
    let b = store.block_by_height(from).await.unwrap().unwrap();
    assert_eq!(b.header().term, term);
    assert_eq!(b.header().proposer, leader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_leader_hands_over_and_the_named_validator_leads() {
    kite_node::testkit::init_log();
    let net = TestNet::start(spec(16)).await.unwrap();
    net.wait_height(2, DEADLINE).await.unwrap();
    let schedule = net.genesis.leader_schedule();
    let to = net.keys[2].public();
    let term = schedule.next_term_of(0, &to).unwrap();

    // Refusals, each with its reason, change nothing.
    let e = hand_over(&net, 0, "node9").await.unwrap_err();
    assert!(e.to_string().contains("neither"), "{e}");
    let e = hand_over(&net, 0, "node0").await.unwrap_err();
    assert!(e.to_string().contains("already leads term 0"), "{e}");

    let r = hand_over(&net, 0, "node2").await.unwrap();
    assert_eq!(
        (r.to, r.name.as_str(), r.acting_as, r.from_term, r.to_term),
        (to, "node2", ActingAs::Leader, 0, term)
    );
    let h = net.node(0).unwrap().height();
    wait_led(&net, term, to, h + 2).await;
    let e = hand_over(&net, 1, &to.to_string()).await.unwrap_err();
    assert!(e.to_string().contains("already leads"), "{e}");
    let tip = net.min_height();
    net.check_same_chain(tip).await.unwrap();
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_name_the_next_leader_while_the_leader_is_down() {
    kite_node::testkit::init_log();
    let mut net = TestNet::start(spec(17)).await.unwrap();
    net.wait_height(2, DEADLINE).await.unwrap();
    net.stop_node(0).await.unwrap().unwrap();
    let to = net.keys[3].public();
    let term = net.genesis.leader_schedule().next_term_of(0, &to).unwrap();
    let h = net
        .running()
        .iter()
        .map(|i| net.node(*i).unwrap().height())
        .max()
        .unwrap();
    // The leader made progress moments ago: a validator does not leave it
    // unless the operator says it knows the leader is down.
    let e = hand_over(&net, 1, "node3").await.unwrap_err();
    assert!(e.to_string().contains("made progress"), "{e}");
    // The first forced call moves node 1, whose term change may reach
    // the others before the operator asks them (on a busy machine): they
    // then answer that node3 leads, or is about to lead, that very term.
    let r = admin(&net, 1).leader_handover("node3", true).await.unwrap();
    assert_eq!(
        (r.acting_as, r.to_term),
        (ActingAs::Validator, term),
        "{r:?}"
    );
    for i in 2..4 {
        match admin(&net, i).leader_handover("node3", true).await {
            Ok(r) => assert_eq!(
                (r.acting_as, r.to_term),
                (ActingAs::Validator, term),
                "{r:?}"
            ),
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains(&format!("already leads term {term}"))
                        || e.contains(&format!("already in term {term}")),
                    "node {i}: {e}"
                );
            }
        }
    }
    wait_led(&net, term, to, h + 2).await;
    let tip = net.min_height();
    net.check_same_chain(tip).await.unwrap();
    net.stop().await;
}
