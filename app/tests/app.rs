#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Execution rules, typed rejections and determinism of the app hash.

use kite_app::{
    App, BlockError, ChangeSet, Executed, MemState, Overlay, SigsChecked, StateReader, TxError,
    account, kv_get,
};
use kite_types::genesis::Allocation;
use kite_types::{
    BLOCK_VERSION, Block, BlockHeader, Genesis, Hash, MAX_KEY_LEN, MAX_VALUE_LEN, NodeKey, Payload,
    Tx,
};
use proptest::prelude::*;

const CHAIN: &str = "kite-test";

fn key(i: u8) -> NodeKey {
    NodeKey::from_seed([i; 32])
}

fn genesis(funded: &[(u8, u64)]) -> Genesis {
    let mut g = Genesis::single(CHAIN, key(100).public(), key(1).public(), 0);
    g.allocations = funded
        .iter()
        .map(|&(i, balance)| Allocation {
            account: key(i).public(),
            balance,
        })
        .collect();
    g
}

fn block(height: u64, prev_app_hash: Hash, txs: Vec<Tx>) -> Block {
    let header = BlockHeader {
        version: BLOCK_VERSION,
        chain_id: CHAIN.into(),
        height,
        prev_hash: Hash::ZERO,
        prev_app_hash,
        timestamp_ms: 0,
        tx_root: Hash::ZERO,
        validator_set_hash: Hash::ZERO,
        proposer: key(100).public(),
        term: 0,
    };
    Block::new_signed(header, txs, &key(100))
}

fn transfer(from: u8, nonce: u64, to: u8, amount: u64) -> Tx {
    Tx::sign(
        &key(from),
        CHAIN,
        nonce,
        Payload::Transfer {
            to: key(to).public(),
            amount,
        },
    )
}

fn put(from: u8, nonce: u64, k: &[u8], v: &[u8]) -> Tx {
    Tx::sign(
        &key(from),
        CHAIN,
        nonce,
        Payload::Put {
            key: k.to_vec(),
            value: v.to_vec(),
        },
    )
}

/// A state at genesis and its app hash.
fn start(app: &App) -> (MemState, Hash) {
    let mut s = MemState::new();
    s.apply(&app.genesis_changes());
    (s, app.genesis_app_hash())
}

fn exec(app: &App, s: &MemState, h: Hash, txs: Vec<Tx>) -> Result<Executed, BlockError> {
    app.execute_block(s, h, &block(1, h, txs), false)
}

fn tx_error(r: Result<Executed, BlockError>) -> (usize, TxError) {
    match r {
        Err(BlockError::Tx { index, error, .. }) => (index, error),
        other => panic!("expected a tx error, got {other:?}"),
    }
}

#[test]
fn genesis_hash_is_defined() {
    let app = App::new(&genesis(&[(1, 10), (2, 20)]));
    let ch = app.genesis_changes();
    assert_eq!(ch.len(), 2);
    assert_eq!(
        app.genesis_app_hash(),
        Hash::digest_parts(&[Hash::ZERO.as_bytes(), ch.digest().as_bytes()])
    );
    let (s, _) = start(&app);
    assert_eq!(account(&s, &key(2).public()).unwrap().balance, 20);
    assert_eq!(account(&s, &key(3).public()).unwrap().balance, 0);
}

#[test]
fn transfers_puts_and_deletes_apply_in_order() {
    let app = App::new(&genesis(&[(1, 100)]));
    let (mut s, h0) = start(&app);
    // The second tx spends what the first one received: later txs see
    // earlier ones.
    let txs = vec![
        transfer(1, 1, 2, 60),
        transfer(2, 1, 3, 50),
        put(1, 2, b"color", b"blue"),
        put(3, 1, b"color", b"red"),
        Tx::sign(
            &key(3),
            CHAIN,
            2,
            Payload::Delete {
                key: b"color".to_vec(),
            },
        ),
        transfer(1, 3, 1, 40), // to oneself
    ];
    let ex = exec(&app, &s, h0, txs).unwrap();
    assert_eq!(ex.tx_count, 6);
    assert_eq!(ex.app_hash, App::next_app_hash(h0, &ex.changes));
    // Nothing written yet.
    assert_eq!(account(&s, &key(1).public()).unwrap().balance, 100);
    s.apply(&ex.changes);
    let a1 = account(&s, &key(1).public()).unwrap();
    assert_eq!((a1.balance, a1.nonce), (40, 3));
    let a2 = account(&s, &key(2).public()).unwrap();
    assert_eq!((a2.balance, a2.nonce), (10, 1));
    let a3 = account(&s, &key(3).public()).unwrap();
    assert_eq!((a3.balance, a3.nonce), (50, 2));
    assert_eq!(
        kv_get(&s, &key(1).public(), b"color").unwrap(),
        Some(b"blue".to_vec())
    );
    // Namespaces are per owner: 3's delete did not touch 1's key.
    assert_eq!(kv_get(&s, &key(3).public(), b"color").unwrap(), None);
}

#[test]
fn rejections_are_typed() {
    let app = App::new(&genesis(&[(1, 100)]));
    let (s, h) = start(&app);

    // Bad nonce: the account expects 1.
    let (i, e) = tx_error(exec(&app, &s, h, vec![transfer(1, 2, 2, 1)]));
    assert_eq!(
        (i, e.clone()),
        (
            0,
            TxError::BadNonce {
                expected: 1,
                got: 2
            }
        )
    );
    assert_eq!(e.to_string(), "bad nonce: have 2, account expects 1");
    // A replay in the same block.
    let t = transfer(1, 1, 2, 1);
    let (i, e) = tx_error(exec(&app, &s, h, vec![t.clone(), t]));
    assert_eq!(
        (i, e),
        (
            1,
            TxError::BadNonce {
                expected: 2,
                got: 1
            }
        )
    );

    // Bad signature: a tx whose signature is from another key.
    let good = transfer(1, 1, 2, 1);
    let mut p = good.to_proto();
    p.signature = key(9)
        .sign_digest(&kite_types::sign::tx_digest(&p.body))
        .0
        .to_vec();
    let forged = Tx::from_proto(p).unwrap();
    assert_eq!(app.check_tx(&forged), Err(TxError::BadSignature));
    let (i, e) = tx_error(exec(
        &app,
        &s,
        h,
        vec![transfer(1, 1, 2, 1), forged.clone()],
    ));
    assert_eq!((i, e), (1, TxError::BadSignature));
    // With sigs_verified the caller vouches for signatures.
    assert!(
        app.execute_block(&s, h, &block(1, h, vec![forged.clone()]), true)
            .is_ok()
    );
    // Per tx: only the txs not marked checked are verified (a validator
    // marks those its mempool admitted). The forged tx, unmarked, is
    // caught at its index; marked, the caller vouches for it.
    let good = transfer(1, 1, 2, 1);
    let both = block(1, h, vec![good.clone(), forged.clone()]);
    let err = app
        .execute_block(&s, h, &both, SigsChecked::These(vec![true, false]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            BlockError::Tx {
                index: 1,
                error: TxError::BadSignature,
                ..
            }
        ),
        "{err:?}"
    );
    let alone = block(1, h, vec![forged.clone()]);
    assert!(
        app.execute_block(&s, h, &alone, SigsChecked::These(vec![true]))
            .is_ok()
    );
    // A mask shorter than the block checks the rest.
    assert!(
        app.execute_block(&s, h, &alone, SigsChecked::These(Vec::new()))
            .is_err()
    );
    assert_eq!(
        SigsChecked::These(vec![true]).verify(&[good, forged]),
        vec![true, false]
    );

    // Wrong chain.
    let other = Tx::sign(
        &key(1),
        "other-chain",
        1,
        Payload::Delete { key: b"k".to_vec() },
    );
    let want = TxError::WrongChain {
        expected: CHAIN.into(),
        got: "other-chain".into(),
    };
    assert_eq!(app.check_tx(&other), Err(want.clone()));
    assert_eq!(tx_error(exec(&app, &s, h, vec![other])), (0, want));

    // Overspend.
    let (_, e) = tx_error(exec(&app, &s, h, vec![transfer(1, 1, 2, 101)]));
    assert_eq!(
        e,
        TxError::InsufficientFunds {
            need: 101,
            balance: 100
        }
    );
    let (_, e) = tx_error(exec(&app, &s, h, vec![transfer(5, 1, 2, 1)]));
    assert_eq!(
        e,
        TxError::InsufficientFunds {
            need: 1,
            balance: 0
        }
    );

    // Oversized key and value, empty key.
    let long_key = vec![b'k'; MAX_KEY_LEN + 1];
    let t = put(1, 1, &long_key, b"v");
    let want = TxError::KeyTooLong {
        len: MAX_KEY_LEN + 1,
        max: MAX_KEY_LEN,
    };
    assert_eq!(app.check_tx(&t), Err(want.clone()));
    assert_eq!(tx_error(exec(&app, &s, h, vec![t])).1, want);
    assert!(
        app.check_tx(&put(1, 1, &vec![b'k'; MAX_KEY_LEN], b"v"))
            .is_ok()
    );
    let t = put(1, 1, b"k", &vec![0; MAX_VALUE_LEN + 1]);
    let want = TxError::ValueTooLong {
        len: MAX_VALUE_LEN + 1,
        max: MAX_VALUE_LEN,
    };
    assert_eq!(app.check_tx(&t), Err(want.clone()));
    assert_eq!(tx_error(exec(&app, &s, h, vec![t])).1, want);
    assert!(
        app.check_tx(&put(1, 1, b"k", &vec![0; MAX_VALUE_LEN]))
            .is_ok()
    );
    assert_eq!(app.check_tx(&put(1, 1, b"", b"v")), Err(TxError::EmptyKey));
    let del = Tx::sign(&key(1), CHAIN, 1, Payload::Delete { key: Vec::new() });
    assert_eq!(app.check_tx(&del), Err(TxError::EmptyKey));

    // Larger than the genesis max_tx_bytes.
    let mut g = genesis(&[(1, 100)]);
    g.max_tx_bytes = 200;
    let small = App::new(&g);
    let t = put(1, 1, b"k", &[0; 300]);
    assert!(matches!(
        small.check_tx(&t),
        Err(TxError::TooLarge { max: 200, .. })
    ));

    // Balance overflow of the receiver.
    let app = App::new(&genesis(&[(1, 100), (2, u64::MAX)]));
    let (s, h) = start(&app);
    let (_, e) = tx_error(exec(&app, &s, h, vec![transfer(1, 1, 2, 1)]));
    assert_eq!(e, TxError::BalanceOverflow);
}

#[test]
fn block_level_rejections() {
    let app = App::new(&genesis(&[(1, 100)]));
    let (s, h) = start(&app);
    let b = block(1, Hash::digest(b"elsewhere"), vec![]);
    assert!(matches!(
        app.execute_block(&s, h, &b, false),
        Err(BlockError::PrevAppHash { .. })
    ));
    let mut g = genesis(&[(1, 100)]);
    g.chain_id = "other".into();
    let other = App::new(&g);
    let err = other
        .execute_block(&s, h, &block(1, h, vec![]), false)
        .unwrap_err();
    assert!(matches!(err, BlockError::WrongChain { .. }));
    assert!(err.is_invalid_block());
    // The error names the tx.
    let t = transfer(1, 5, 2, 1);
    let err = exec(&app, &s, h, vec![t.clone()]).unwrap_err();
    assert!(err.to_string().contains(&t.hash().to_string()), "{err}");
    assert!(err.to_string().contains("bad nonce"), "{err}");
}

#[test]
fn staged_execution_is_discardable_and_chains() {
    let app = App::new(&genesis(&[(1, 100)]));
    let (s, h0) = start(&app);
    let before = s.clone();
    let b1 = block(1, h0, vec![transfer(1, 1, 2, 10)]);
    let ex1 = app.execute_block(&s, h0, &b1, false).unwrap();
    // Discarded: the state is untouched; executing again gives the same.
    drop(ex1.clone());
    assert_eq!(s, before);
    assert_eq!(app.execute_block(&s, h0, &b1, false).unwrap(), ex1);
    // Execute the next block on top of the staged one.
    let staged = Overlay::with_changes(&s, ex1.changes.clone());
    let b2 = block(2, ex1.app_hash, vec![transfer(1, 2, 2, 10)]);
    let ex2 = app
        .execute_block(&staged, ex1.app_hash, &b2, false)
        .unwrap();
    assert_eq!(account(&staged, &key(2).public()).unwrap().balance, 10);
    let mut s2 = s.clone();
    s2.apply(&ex1.changes);
    s2.apply(&ex2.changes);
    assert_eq!(account(&s2, &key(2).public()).unwrap().balance, 20);
    assert_eq!(account(&s2, &key(1).public()).unwrap().nonce, 2);
}

/// A generated operation: sender index, kind, amount or key/value.
#[derive(Debug, Clone)]
enum Op {
    Transfer {
        from: u8,
        to: u8,
        amount: u64,
    },
    Put {
        from: u8,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        from: u8,
        key: Vec<u8>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let k = proptest::collection::vec(0u8..4, 1..3);
    prop_oneof![
        (1u8..5, 1u8..7, 0u64..400).prop_map(|(from, to, amount)| Op::Transfer {
            from,
            to,
            amount
        }),
        (
            1u8..5,
            k.clone(),
            proptest::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(from, key, value)| Op::Put { from, key, value }),
        (1u8..5, k).prop_map(|(from, key)| Op::Delete { from, key }),
    ]
}

/// Turns ops into valid txs against `state`: right nonces, and transfers
/// cut to what the sender holds at that point.
fn valid_txs(app: &App, state: &dyn StateReader, ops: &[Op]) -> Vec<Tx> {
    let mut overlay = Overlay::new(state);
    let mut txs = Vec::new();
    for o in ops {
        let (from, payload) = match o {
            Op::Transfer { from, to, amount } => {
                let bal = account(&overlay, &key(*from).public()).unwrap().balance;
                let amount = amount % (bal + 1);
                (
                    *from,
                    Payload::Transfer {
                        to: key(*to).public(),
                        amount,
                    },
                )
            }
            Op::Put { from, key, value } => (
                *from,
                Payload::Put {
                    key: key.clone(),
                    value: value.clone(),
                },
            ),
            Op::Delete { from, key } => (*from, Payload::Delete { key: key.clone() }),
        };
        let nonce = account(&overlay, &key(from).public()).unwrap().nonce + 1;
        let tx = Tx::sign(&key(from), CHAIN, nonce, payload);
        app.apply_tx(&mut overlay, &tx).unwrap().unwrap();
        txs.push(tx);
    }
    txs
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random valid tx sequences, cut into blocks at random points, give
    /// the same app hashes on two independent states, and the state and
    /// final hash do not depend on how the txs were cut into blocks... only
    /// the hash chain does, which both replicas share.
    #[test]
    fn same_blocks_same_app_hashes(
        ops in proptest::collection::vec(op(), 0..40),
        cuts in proptest::collection::vec(0usize..40, 0..5),
    ) {
        let app = App::new(&genesis(&[(1, 500), (2, 300), (3, 1), (4, 0)]));
        let (mut a, mut ha) = start(&app);
        let (mut b, mut hb) = start(&app);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(ops.len())).collect();
        cuts.push(0);
        cuts.push(ops.len());
        cuts.sort_unstable();
        cuts.dedup();
        let mut total = 0u64;
        for (height, w) in cuts.windows(2).enumerate() {
            let txs = valid_txs(&app, &a, &ops[w[0]..w[1]]);
            let blk = block(height as u64 + 1, ha, txs);
            let ea = app.execute_block(&a, ha, &blk, false).unwrap();
            // Replica b gets the block through the wire encoding.
            let wire = Block::decode(&blk.encode(), 1 << 24).unwrap();
            let eb = app.execute_block(&b, hb, &wire, false).unwrap();
            prop_assert_eq!(&ea, &eb);
            // Re-execution on the same state is identical.
            prop_assert_eq!(&app.execute_block(&a, ha, &blk, true).unwrap(), &ea);
            a.apply(&ea.changes);
            b.apply(&eb.changes);
            ha = ea.app_hash;
            hb = eb.app_hash;
            total += ea.tx_count as u64;
        }
        prop_assert_eq!(ha, hb);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(total, ops.len() as u64);
        // Money is conserved.
        let sum: u64 = (1u8..7).map(|i| account(&a, &key(i).public()).unwrap().balance).sum();
        prop_assert_eq!(sum, 801);
        // A changed history gives another app hash.
        if !ops.is_empty() {
            let mut tweaked = ChangeSet::new();
            tweaked.extend(app.genesis_changes());
            prop_assert_ne!(App::next_app_hash(ha, &tweaked), ha);
        }
    }
}
