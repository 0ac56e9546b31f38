//! The signature rule on the mempool's two admission paths (issue 13):
//! `admit` (one tx, single verification: RPC `broadcast_tx`) and
//! `admit_batch` (announced txs from peers, batch verification) give every
//! tx the same verdict, whatever else the batch holds: a mixed-order-R tx
//! signed by its sender's key is admitted everywhere, a tx signed under a
//! mixed-order key (or a mutated R, a non-canonical s, a small-order key)
//! is refused everywhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use kite_mempool::{Mempool, MempoolConfig, MempoolError};
use kite_types::testing::{Forge, put_by};
use kite_types::{Account, Hash, PublicKey, Tx};
use std::collections::HashMap;

const CHAIN: &str = "kite-sigrule";

fn tx(signer: u32, kind: Forge) -> Tx {
    put_by(signer, kind, CHAIN)
}

/// Every sender of `txs` funded, so only the signature decides.
fn funded(txs: &[Tx]) -> HashMap<PublicKey, Account> {
    txs.iter()
        .map(|t| {
            let acct = Account {
                balance: 1 << 40,
                nonce: 0,
            };
            (t.sender(), acct)
        })
        .collect()
}

fn verdict(kind: Forge, t: &Tx) -> Result<Hash, MempoolError> {
    if kind.valid() {
        Ok(t.hash())
    } else {
        Err(MempoolError::BadSignature)
    }
}

fn honest(n: u32, from: u32) -> Vec<Tx> {
    (from..from + n).map(|i| tx(i, Forge::Honest)).collect()
}

/// The batch compositions: the tx alone, among 63 honest txs at the
/// start, middle and end, and among several bad txs and honest ones. Each
/// tx with its kind; and where `t` is.
fn compositions(t: &Tx, kind: Forge) -> Vec<(Vec<(Tx, Forge)>, usize)> {
    let honest = |n: u32, from: u32| -> Vec<(Tx, Forge)> {
        (from..from + n)
            .map(|i| (tx(i, Forge::Honest), Forge::Honest))
            .collect()
    };
    let mut out = vec![(vec![(t.clone(), kind)], 0)];
    for at in [0, 31, 63] {
        let mut txs = honest(63, 1000);
        txs.insert(at, (t.clone(), kind));
        out.push((txs, at));
    }
    for at in [0, 5, 14] {
        let mut txs = honest(10, 2000);
        for (i, k) in [
            Forge::MixedOrderKey,
            Forge::MutatedR,
            Forge::MixedOrderR,
            Forge::HighS,
        ]
        .into_iter()
        .enumerate()
        {
            txs.insert(2 * i + 2, (tx(3000 + i as u32, k), k));
        }
        txs.insert(at, (t.clone(), kind));
        out.push((txs, at));
    }
    out
}

#[test]
fn single_and_batch_admission_agree_on_every_kind_of_signature() {
    for kind in Forge::ALL {
        // New signers each round: other digests, other batch coefficients.
        for round in 0..12u32 {
            let t = tx(round, kind);
            let want = verdict(kind, &t);
            let mp = Mempool::new(CHAIN, MempoolConfig::default());
            let src = funded(std::slice::from_ref(&t));
            assert_eq!(mp.admit(t.clone(), &src, 0), want, "{kind:?} single");
            for (items, at) in compositions(&t, kind) {
                let txs: Vec<Tx> = items.iter().map(|(t, _)| t.clone()).collect();
                let mp = Mempool::new(CHAIN, MempoolConfig::default());
                let src = funded(&txs);
                let got = mp.admit_batch(txs.clone(), &src, 0);
                assert_eq!(got[at], want, "{kind:?} batch of {} at {at}", txs.len());
                for (i, (r, (other, k))) in got.iter().zip(&items).enumerate() {
                    assert_eq!(*r, verdict(*k, other), "{kind:?}: item {i} ({k:?})");
                }
            }
        }
    }
}

#[test]
fn the_wire_form_gets_the_same_verdicts() {
    // The same through the byte entry points (decode, then admit).
    for kind in [Forge::MixedOrderR, Forge::MixedOrderKey] {
        for round in 0..8u32 {
            let t = tx(100 + round, kind);
            let want = verdict(kind, &t);
            let mp = Mempool::new(CHAIN, MempoolConfig::default());
            let src = funded(std::slice::from_ref(&t));
            assert_eq!(mp.admit_bytes(&t.encode(), &src, 0), want, "{kind:?}");
            let mut txs = honest(63, 5000);
            txs.insert(17, t.clone());
            let bytes: Vec<Vec<u8>> = txs.iter().map(Tx::encode).collect();
            let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
            let mp = Mempool::new(CHAIN, MempoolConfig::default());
            let src = funded(&txs);
            let got = mp.admit_bytes_batch(&refs, &src, 0);
            assert_eq!(got[17], want, "{kind:?} in a batch");
            assert_eq!(
                got.iter().filter(|r| r.is_ok()).count(),
                63 + usize::from(kind.valid())
            );
        }
    }
}
