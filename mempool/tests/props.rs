//! Property test: random interleavings of admit / admit_batch / build /
//! commit / external commit / remove / recheck / gossip against a reference
//! account model. After every step the pool's invariants hold, limits hold,
//! nothing committed stays, and every built block executes on the model
//! without a nonce error or an overspend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use kite_mempool::{Mempool, MempoolConfig, MempoolError};
use kite_types::{Account, Hash, NodeKey, Payload, PublicKey, Tx};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

/// Outcome counts over a whole run, to prove the run covers every path.
type Coverage = Mutex<BTreeMap<&'static str, usize>>;

fn note(cov: &Coverage, what: &'static str) {
    *cov.lock().unwrap().entry(what).or_default() += 1;
}

const CHAIN: &str = "kite-prop";
const SENDERS: usize = 4;

#[derive(Debug, Clone)]
struct TxSpec {
    sender: usize,
    /// Nonce = committed nonce + offset (0 is too low).
    offset: u64,
    /// Transfer amount, or a Put when `None`.
    amount: Option<u64>,
    /// Receiver index (transfers).
    to: usize,
    forged: bool,
    /// Value length of a Put (varies sizes).
    len: usize,
}

#[derive(Debug, Clone)]
enum Op {
    Admit(TxSpec),
    Batch(Vec<TxSpec>),
    Build {
        max_bytes: usize,
        max_txs: usize,
    },
    /// Commit the first `n` txs of the last built block.
    Commit {
        n: usize,
    },
    /// A tx from elsewhere (same nonce as the pool's next, other content)
    /// commits.
    External {
        sender: usize,
        amount: u64,
    },
    /// Remove the `i`-th tx of the last built block.
    Remove {
        i: usize,
    },
    Recheck,
    Gossip {
        now: u64,
    },
}

fn tx_spec() -> impl Strategy<Value = TxSpec> {
    (
        0..SENDERS,
        0u64..7,
        prop_oneof![3 => (0u64..60).prop_map(Some), 1 => Just(None)],
        0..SENDERS,
        prop::bool::weighted(0.05),
        0usize..200,
    )
        .prop_map(|(sender, offset, amount, to, forged, len)| TxSpec {
            sender,
            offset,
            amount,
            to,
            forged,
            len,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => tx_spec().prop_map(Op::Admit),
        3 => prop::collection::vec(tx_spec(), 1..8).prop_map(Op::Batch),
        3 => (0usize..2500, 0usize..10).prop_map(|(max_bytes, max_txs)| Op::Build { max_bytes, max_txs }),
        3 => (0usize..10).prop_map(|n| Op::Commit { n }),
        1 => (0..SENDERS, 0u64..150).prop_map(|(sender, amount)| Op::External { sender, amount }),
        1 => (0usize..10).prop_map(|i| Op::Remove { i }),
        1 => Just(Op::Recheck),
        1 => (0u64..5000).prop_map(|now| Op::Gossip { now }),
    ]
}

struct Model {
    keys: Vec<NodeKey>,
    state: HashMap<PublicKey, Account>,
    last_block: Vec<Tx>,
    external_salt: u64,
}

impl Model {
    fn make(&mut self, s: &TxSpec) -> Tx {
        let k = &self.keys[s.sender];
        let nonce = self.state[&k.public()].nonce + s.offset;
        let payload = match s.amount {
            Some(amount) => Payload::Transfer {
                to: self.keys[s.to].public(),
                amount,
            },
            None => Payload::Put {
                key: b"k".to_vec(),
                value: vec![1; s.len],
            },
        };
        let tx = Tx::sign(k, CHAIN, nonce, payload);
        if s.forged {
            let mut p = tx.to_proto();
            p.signature[10] ^= 0x40;
            Tx::from_proto(p).unwrap()
        } else {
            tx
        }
    }

    /// Executes txs in order on a copy of the state; Err on a nonce error or
    /// an overspend.
    fn execute(&self, txs: &[Tx]) -> Result<HashMap<PublicKey, Account>, String> {
        let mut st = self.state.clone();
        let mut seen = HashSet::new();
        for tx in txs {
            if !seen.insert(tx.hash()) {
                return Err(format!("duplicate tx {}", tx.hash()));
            }
            let a = st.entry(tx.sender()).or_default();
            if tx.nonce() != a.nonce + 1 {
                return Err(format!("nonce {} but account at {}", tx.nonce(), a.nonce));
            }
            a.nonce += 1;
            if let Payload::Transfer { to, amount } = tx.body().payload {
                if amount > a.balance {
                    return Err(format!("overspend {amount} > {}", a.balance));
                }
                a.balance -= amount;
                st.entry(to).or_default().balance += amount;
            }
        }
        Ok(st)
    }
}

fn check_result(
    model: &Model,
    tx: &Tx,
    spec: &TxSpec,
    r: &Result<Hash, MempoolError>,
    cov: &Coverage,
) {
    note(cov, r.as_ref().map_or_else(|e| e.code(), |_| "admitted"));
    let acct = model.state[&tx.sender()];
    if spec.forged {
        assert!(
            matches!(
                r,
                Err(MempoolError::BadSignature) | Err(MempoolError::AlreadyKnown)
            ),
            "forged tx: {r:?}"
        );
        return;
    }
    if tx.nonce() <= acct.nonce {
        assert_eq!(
            r,
            &Err(MempoolError::NonceTooLow {
                have: tx.nonce(),
                account: acct.nonce
            })
        );
    }
    if let Ok(h) = r {
        assert_eq!(*h, tx.hash());
        assert!(tx.nonce() > acct.nonce);
        if let Some(amount) = spec.amount {
            assert!(amount <= acct.balance);
        }
    }
}

fn check_pool(mp: &Mempool, model: &Model, cfg: &MempoolConfig) {
    mp.check_invariants().unwrap();
    assert!(mp.len() <= cfg.max_txs);
    assert!(mp.bytes() <= cfg.max_bytes);
    // Everything pending executes right now, in block order.
    let all = mp.build_block(usize::MAX, usize::MAX);
    model.execute(&all).unwrap();
    for k in &model.keys {
        let pk = k.public();
        let committed = model.state[&pk].nonce;
        let pending = mp.pending_of(&pk);
        for (i, t) in pending.iter().enumerate() {
            assert_eq!(t.nonce(), committed + 1 + i as u64);
        }
        assert_eq!(mp.pending_nonce(&pk), pending.last().map(|t| t.nonce()));
        // Queued txs: beyond the pending prefix with a gap or unaffordable
        // head, bounded, never a committed nonce.
        let queued = mp.queued_of(&pk);
        assert!(queued.len() <= cfg.max_queued_per_sender);
        let next = committed + 1 + pending.len() as u64;
        for t in &queued {
            assert!(t.nonce() >= next, "queued nonce {} below {next}", t.nonce());
        }
    }
}

type Snapshot = HashMap<PublicKey, Vec<Tx>>;

fn snapshot(mp: &Mempool, model: &Model) -> Snapshot {
    model
        .keys
        .iter()
        .map(|k| (k.public(), mp.pending_of(&k.public())))
        .collect()
}

/// After a commit or recheck: every previously pending tx that is still
/// valid (nonce after the committed one, contiguous, affordable in order)
/// must still be pending: the pool drops only what became invalid.
fn check_kept(mp: &Mempool, model: &Model, before: &Snapshot) {
    for (pk, txs) in before {
        let acct = model.state[pk];
        let mut expect = Vec::new();
        let mut cost = 0u64;
        for t in txs.iter().filter(|t| t.nonce() > acct.nonce) {
            if t.nonce() != acct.nonce + 1 + expect.len() as u64 {
                break;
            }
            cost += kite_mempool::tx_cost(t);
            if cost > acct.balance {
                break;
            }
            expect.push(t.clone());
        }
        let now = mp.pending_of(pk);
        assert!(
            now.len() >= expect.len() && now[..expect.len()] == expect[..],
            "valid pending txs lost: expected prefix {:?}, have {:?}",
            expect.iter().map(|t| t.nonce()).collect::<Vec<_>>(),
            now.iter().map(|t| t.nonce()).collect::<Vec<_>>()
        );
    }
}

fn run(ops: Vec<Op>, keys: &[NodeKey], cov: &Coverage) -> Result<(), TestCaseError> {
    let cfg = MempoolConfig {
        max_txs: 14,
        max_bytes: 2600,
        max_tx_bytes: 400,
        max_per_sender: 4,
        max_queued_per_sender: 2,
        reannounce_max_txs: 3,
        reannounce_max_bytes: 600,
        verify_threads: 2,
    };
    let mp = Mempool::new(CHAIN, cfg.clone());
    let mut model = Model {
        keys: keys.to_vec(),
        state: keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                (
                    k.public(),
                    Account {
                        balance: 40 + 30 * i as u64,
                        nonce: i as u64,
                    },
                )
            })
            .collect(),
        last_block: Vec::new(),
        external_salt: 0,
    };
    let mut now = 0u64;
    for op in ops {
        now += 10;
        match op {
            Op::Admit(spec) => {
                let tx = model.make(&spec);
                let r = mp.admit(tx.clone(), &model.state, now);
                check_result(&model, &tx, &spec, &r, cov);
                if r.is_ok() {
                    assert!(mp.contains(&tx.hash()));
                    assert_eq!(mp.get(&tx.hash()), Some(tx));
                }
            }
            Op::Batch(specs) => {
                let txs: Vec<Tx> = specs.iter().map(|s| model.make(s)).collect();
                let rs = mp.admit_batch(txs.clone(), &model.state, now);
                assert_eq!(rs.len(), txs.len());
                for ((tx, spec), r) in txs.iter().zip(&specs).zip(&rs) {
                    check_result(&model, tx, spec, r, cov);
                }
            }
            Op::Build { max_bytes, max_txs } => {
                let block = mp.build_block(max_bytes, max_txs);
                assert!(block.len() <= max_txs);
                assert!(block.iter().map(|t| t.size()).sum::<usize>() <= max_bytes);
                model.execute(&block).unwrap();
                if !block.is_empty() && block.len() < mp.stats().pending {
                    note(cov, "partial block");
                }
                for t in &block {
                    assert!(mp.contains(&t.hash()));
                }
                model.last_block = block;
            }
            Op::Commit { n } => {
                let n = n.min(model.last_block.len());
                let part: Vec<Tx> = model.last_block[..n].to_vec();
                // The block was valid when built; later commits may have
                // made it stale: commit only what still executes.
                if let Ok(st) = model.execute(&part) {
                    note(cov, if n > 0 { "commit" } else { "empty commit" });
                    let before = snapshot(&mp, &model);
                    model.state = st;
                    let dropped = mp.on_commit(&part, &model.state).dropped;
                    for t in &part {
                        assert!(!mp.contains(&t.hash()));
                    }
                    for t in &dropped {
                        assert!(!mp.contains(&t.hash()));
                    }
                    check_kept(&mp, &model, &before);
                    model.last_block.clear();
                }
            }
            Op::External { sender, amount } => {
                let k = &model.keys[sender];
                let acct = model.state[&k.public()];
                model.external_salt += 1;
                let tx = Tx::sign(
                    k,
                    CHAIN,
                    acct.nonce + 1,
                    Payload::Transfer {
                        to: PublicKey([model.external_salt as u8; 32]),
                        amount: amount.min(acct.balance),
                    },
                );
                let st = model.execute(std::slice::from_ref(&tx)).unwrap();
                let before = snapshot(&mp, &model);
                let later: u64 = before[&k.public()]
                    .iter()
                    .filter(|t| t.nonce() > acct.nonce + 1)
                    .map(kite_mempool::tx_cost)
                    .sum();
                if later > st[&k.public()].balance {
                    note(cov, "external commit overspends later pending");
                }
                model.state = st;
                let dropped = mp
                    .on_commit(std::slice::from_ref(&tx), &model.state)
                    .dropped;
                if !dropped.is_empty() {
                    note(cov, "external commit dropped txs");
                }
                check_kept(&mp, &model, &before);
            }
            Op::Remove { i } => {
                if let Some(t) = model.last_block.get(i).cloned() {
                    note(cov, "remove");
                    let gone = mp.remove(&[t.hash()]);
                    assert!(!mp.contains(&t.hash()));
                    assert!(gone.iter().all(|g| !mp.contains(&g.hash())));
                    model.last_block.clear();
                }
            }
            Op::Recheck => {
                let before = snapshot(&mp, &model);
                assert!(mp.recheck(&model.state).dropped.is_empty());
                check_kept(&mp, &model, &before);
            }
            Op::Gossip { now: t } => {
                let anns = mp.take_announcements(5);
                assert!(anns.len() <= 5);
                for h in &anns {
                    assert!(mp.contains(h));
                }
                let re = mp.reannounce(now + t, 100);
                if !re.is_empty() {
                    note(cov, "reannounce");
                }
                assert!(re.len() <= cfg.reannounce_max_txs);
                let bytes: usize = re.iter().map(|h| mp.get(h).unwrap().size()).sum();
                assert!(bytes <= cfg.reannounce_max_bytes);
                // Nothing is due again within the interval.
                let again = mp.reannounce(now + t, 100);
                assert!(again.iter().all(|h| !re.contains(h)));
            }
        }
        check_pool(&mp, &model, &cfg);
    }
    Ok(())
}

#[test]
fn random_interleavings_keep_invariants() {
    let keys: Vec<NodeKey> = (0..SENDERS)
        .map(|i| NodeKey::from_seed([i as u8 + 1; 32]))
        .collect();
    let config = Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let cov = Coverage::default();
    runner
        .run(&prop::collection::vec(op(), 1..60), |ops| {
            run(ops, &keys, &cov)
        })
        .unwrap();
    let cov = cov.into_inner().unwrap();
    eprintln!("coverage: {cov:?}");
    for what in [
        "admitted",
        "already_known",
        "bad_signature",
        "nonce_too_low",
        "nonce_in_use",
        "nonce_gap",
        "queue_full",
        "insufficient_funds",
        "sender_full",
        "mempool_full",
        "commit",
        "external commit dropped txs",
        "partial block",
        "remove",
        "reannounce",
    ] {
        assert!(
            cov.get(what).copied().unwrap_or(0) > 0,
            "no case covered {what:?}"
        );
    }
}

/// Many txs from few senders against a tight pool: the queue and the
/// limits are exercised on every step.
#[test]
fn queue_heavy_interleavings() {
    let keys: Vec<NodeKey> = (0..SENDERS)
        .map(|i| NodeKey::from_seed([i as u8 + 50; 32]))
        .collect();
    let config = Config {
        cases: 100,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[9; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let cov = Coverage::default();
    let heavy = prop_oneof![
        4 => prop::collection::vec(tx_spec(), 4..12).prop_map(Op::Batch),
        2 => (0usize..2500, 1usize..10).prop_map(|(max_bytes, max_txs)| Op::Build { max_bytes, max_txs }),
        2 => (1usize..10).prop_map(|n| Op::Commit { n }),
        1 => (0..SENDERS, 0u64..150).prop_map(|(sender, amount)| Op::External { sender, amount }),
    ];
    runner
        .run(&prop::collection::vec(heavy, 1..40), |ops| {
            run(ops, &keys, &cov)
        })
        .unwrap();
    let cov = cov.into_inner().unwrap();
    eprintln!("coverage: {cov:?}");
    assert!(cov["admitted"] > 500 && cov["queue_full"] > 0 && cov["commit"] > 50);
}
