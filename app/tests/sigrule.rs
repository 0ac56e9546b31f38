#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The signature rule on the validator's block check (issue 13): the app
//! verifies every tx of a proposed block (one batch) and must give each
//! the verdict of single verification, whatever else the block holds. A
//! mixed-order-R tx signed by its sender executes; a tx under a
//! mixed-order key (or with a mutated R) fails the block as a bad
//! signature, at its index.

use kite_app::{App, BlockError, MemState, TxError};
use kite_types::genesis::Allocation;
use kite_types::testing::{Forge, forged_key, put_by, signer as key};
use kite_types::{BLOCK_VERSION, Block, BlockHeader, Genesis, Hash, Tx};

const CHAIN: &str = "kite-sigrule";

fn tx(signer: u32, kind: Forge) -> Tx {
    put_by(signer, kind, CHAIN)
}

/// Signers 0..400 funded under every forged key of theirs.
fn app() -> (App, MemState, Hash) {
    let leader = key(9999).public();
    let mut g = Genesis::single(CHAIN, leader, leader, 0);
    g.allocations = (0..400)
        .flat_map(|i| {
            [Forge::Honest, Forge::MixedOrderKey].map(|k| Allocation {
                account: forged_key(&key(i), k),
                balance: 1 << 40,
            })
        })
        .collect();
    let app = App::new(&g);
    let mut s = MemState::new();
    s.apply(&app.genesis_changes());
    let h = app.genesis_app_hash();
    (app, s, h)
}

fn block(prev_app_hash: Hash, txs: Vec<Tx>) -> Block {
    let header = BlockHeader {
        version: BLOCK_VERSION,
        chain_id: CHAIN.into(),
        height: 1,
        prev_hash: Hash::ZERO,
        prev_app_hash,
        timestamp_ms: 0,
        tx_root: Hash::ZERO,
        validator_set_hash: Hash::ZERO,
        proposer: key(9999).public(),
        term: 0,
    };
    Block::new_signed(header, txs, &key(9999))
}

#[test]
fn block_execution_gives_each_tx_the_single_verdict() {
    let (app, s, h) = app();
    for kind in [Forge::MixedOrderR, Forge::MixedOrderKey, Forge::MutatedR] {
        for round in 0..12u32 {
            let t = tx(round, kind);
            assert_eq!(t.verify_signature(), kind.valid(), "{kind:?} single");
            // Alone, and among 63 honest txs at the start, middle, end.
            let mut cases = vec![(vec![t.clone()], 0)];
            for at in [0, 31, 63] {
                let mut txs: Vec<Tx> = (100..163).map(|i| tx(i, Forge::Honest)).collect();
                txs.insert(at, t.clone());
                cases.push((txs, at));
            }
            for (txs, at) in cases {
                let n = txs.len();
                let got = app.execute_block(&s, h, &block(h, txs), false);
                match (kind.valid(), got) {
                    (true, Ok(_)) => {}
                    (false, Err(BlockError::Tx { index, error, .. })) => {
                        assert_eq!((index, error), (at, TxError::BadSignature), "{kind:?}");
                    }
                    (_, other) => panic!("{kind:?} at {at} of {n}: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn a_block_with_several_bad_txs_fails_at_the_first() {
    let (app, s, h) = app();
    for round in 0..12u32 {
        let mut txs: Vec<Tx> = (200..230).map(|i| tx(i, Forge::Honest)).collect();
        txs.insert(5, tx(300 + round, Forge::MixedOrderR));
        txs.insert(9, tx(320 + round, Forge::MixedOrderKey));
        txs.insert(20, tx(340 + round, Forge::MutatedR));
        txs.insert(25, tx(360 + round, Forge::HighS));
        match app.execute_block(&s, h, &block(h, txs), false) {
            Err(BlockError::Tx { index, error, .. }) => {
                assert_eq!((index, error), (9, TxError::BadSignature));
            }
            other => panic!("{other:?}"),
        }
    }
}
