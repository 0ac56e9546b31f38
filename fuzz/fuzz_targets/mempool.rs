//! Mempool admission, block building, commits and removals, driven by a
//! sequence of operations on a few senders (txs properly signed, others
//! signed for another chain, and raw bytes). Checks after every step: the
//! pool's own invariants hold, and a block it builds gives every sender a
//! contiguous run of nonces starting right after its committed nonce that
//! its balance can pay for.

#![no_main]

use arbitrary::Arbitrary;
use kite_fuzz::{CHAIN, key};
use kite_mempool::{Mempool, MempoolConfig, tx_cost};
use kite_types::{Account, Hash, NodeKey, Payload, PublicKey, Tx};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

const SENDERS: u8 = 4;

#[derive(Arbitrary, Debug)]
struct Spec {
    sender: u8,
    nonce: u8,
    transfer: Option<u16>,
    value_len: u8,
    other_chain: bool,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Admit(Spec),
    Batch(Vec<Spec>),
    Bytes(Vec<u8>),
    /// Build a block and commit its first `n` txs.
    Commit {
        max_txs: u8,
        n: u8,
    },
    /// Remove the txs of the last built block (an invalid block).
    RemoveBuilt {
        max_txs: u8,
    },
    Recheck,
}

#[derive(Arbitrary, Debug)]
struct Input {
    balances: [u16; SENDERS as usize],
    queueing: bool,
    ops: Vec<Op>,
}

fn keys() -> Vec<NodeKey> {
    (0..SENDERS).map(|i| key(100 + i)).collect()
}

fn make(keys: &[NodeKey], s: &Spec) -> Tx {
    let k = &keys[usize::from(s.sender % SENDERS)];
    let payload = match s.transfer {
        Some(amount) => Payload::Transfer {
            to: keys[0].public(),
            amount: u64::from(amount),
        },
        None => Payload::Put {
            key: vec![s.nonce],
            value: vec![1; usize::from(s.value_len)],
        },
    };
    let chain = if s.other_chain {
        "another-chain"
    } else {
        CHAIN
    };
    Tx::sign(k, chain, u64::from(s.nonce), payload)
}

fn check_block(block: &[Tx], accounts: &HashMap<PublicKey, Account>) {
    let mut next: HashMap<PublicKey, (u64, u64)> = HashMap::new();
    for t in block {
        let a = accounts.get(&t.sender()).copied().unwrap_or_default();
        let (nonce, spent) = next.entry(t.sender()).or_insert((a.nonce, 0));
        assert_eq!(t.nonce(), *nonce + 1, "a block skips or repeats a nonce");
        *nonce += 1;
        *spent += tx_cost(t);
        assert!(*spent <= a.balance, "a block spends more than a sender has");
    }
}

fuzz_target!(|input: Input| {
    let keys = keys();
    let config = MempoolConfig {
        max_txs: 64,
        max_bytes: 16 * 1024,
        max_per_sender: 16,
        max_queued_per_sender: if input.queueing { 8 } else { 0 },
        verify_threads: 1,
        ..MempoolConfig::default()
    };
    let pool = Mempool::new(CHAIN, config);
    let mut accounts: HashMap<PublicKey, Account> = keys
        .iter()
        .zip(input.balances)
        .map(|(k, b)| {
            (
                k.public(),
                Account {
                    balance: u64::from(b),
                    nonce: 0,
                },
            )
        })
        .collect();
    let mut now = 0u64;
    for op in input.ops.iter().take(64) {
        now += 10;
        match op {
            Op::Admit(s) => {
                let _ = pool.admit(make(&keys, s), &accounts, now);
            }
            Op::Batch(specs) => {
                let txs: Vec<Tx> = specs.iter().take(32).map(|s| make(&keys, s)).collect();
                let n = txs.len();
                assert_eq!(pool.admit_batch(txs, &accounts, now).len(), n);
            }
            Op::Bytes(b) => {
                let _ = pool.admit_bytes(b, &accounts, now);
            }
            Op::Commit { max_txs, n } => {
                let block = pool.build_block(usize::MAX, usize::from(*max_txs));
                check_block(&block, &accounts);
                let committed = &block[..block.len().min(usize::from(*n))];
                for t in committed {
                    let Some(a) = accounts.get_mut(&t.sender()) else {
                        panic!("a tx of an unknown sender was built into a block");
                    };
                    a.nonce = t.nonce();
                    a.balance -= tx_cost(t);
                    if let Payload::Transfer { to, amount } = &t.body().payload
                        && let Some(r) = accounts.get_mut(to)
                    {
                        r.balance += amount;
                    }
                }
                let _ = pool.on_commit(committed, &accounts);
                let hashes: Vec<Hash> = committed.iter().map(|t| t.hash()).collect();
                assert!(
                    hashes.iter().all(|h| !pool.contains(h)),
                    "a committed tx stayed"
                );
            }
            Op::RemoveBuilt { max_txs } => {
                let block = pool.build_block(usize::MAX, usize::from(*max_txs));
                let hashes: Vec<Hash> = block.iter().map(|t| t.hash()).collect();
                let _ = pool.remove(&hashes);
                assert!(
                    hashes.iter().all(|h| !pool.contains(h)),
                    "a removed tx stayed"
                );
            }
            Op::Recheck => {
                let _ = pool.recheck(&accounts);
            }
        }
        if let Err(e) = pool.check_invariants() {
            panic!("mempool invariant broken after {op:?}: {e}");
        }
        assert!(
            pool.bytes() <= 16 * 1024 && pool.len() <= 64,
            "a bound was passed"
        );
    }
});
