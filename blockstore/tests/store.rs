#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Block store behaviour: commits, reads, refusals, reopen checks,
//! determinism across stores, and the async handle.

mod common;

use common::Rng;
use common::*;
use kite_app::{BlockError, ChangeSet, StateKey, TxError};
use kite_blockstore::{BlockStore, StoreConfig, StoreError, StoreHandle};
use kite_types::{Block, CommitInfo, Hash, Payload, Tx};
use proptest::prelude::*;

fn fast() -> StoreConfig {
    StoreConfig {
        durable: false,
        ..StoreConfig::default()
    }
}

#[test]
fn fresh_store_holds_genesis() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis(3, 1000);
    let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
    let best = store.best().unwrap();
    assert_eq!(best.height, 0);
    assert_eq!(best.block_hash, Hash::ZERO);
    assert_eq!(best.app_hash, store.app().genesis_app_hash());
    assert_eq!(store.account(&user(1).public()).unwrap().balance, 1000);
    assert_eq!(store.account(&user(9).public()).unwrap().balance, 0);
    assert!(store.block_by_height(1).unwrap().is_none());
    let mut v = Verifier::new(store.app(), 1);
    v.check(&store);
}

#[test]
fn commit_read_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis(5, 10_000);
    let mut rng = Rng::new(1);
    let mut blocks = Vec::new();
    {
        // Durable on: the real path, fsync included.
        let store = BlockStore::open(dir.path(), &g).unwrap();
        for i in 0..12 {
            let (b, _) = commit_next(&store, &mut rng, 5, i % 5, i == 7);
            blocks.push(b);
        }
        let best = store.best().unwrap();
        assert_eq!(best.height, 12);
        assert_eq!(best.block_hash, blocks[11].hash());
        // Reads.
        assert_eq!(store.block_by_height(3).unwrap().as_ref(), Some(&blocks[2]));
        assert_eq!(
            store.block_by_hash(&blocks[4].hash()).unwrap().as_ref(),
            Some(&blocks[4])
        );
        assert!(store.block_by_hash(&Hash::digest(b"no")).unwrap().is_none());
        let r = store.blocks_range(2, 6, usize::MAX).unwrap();
        assert_eq!(r, blocks[1..6].to_vec());
        // The range stops at the best block and at max_bytes (at least one).
        assert_eq!(store.blocks_range(10, 99, usize::MAX).unwrap().len(), 3);
        assert_eq!(
            store.blocks_range(2, 6, 1).unwrap(),
            vec![blocks[1].clone()]
        );
        let two = blocks[1].encode().len() + blocks[2].encode().len();
        assert_eq!(store.blocks_range(2, 6, two).unwrap().len(), 2);
        assert!(store.blocks_range(6, 2, usize::MAX).unwrap().is_empty());
        let tx = &blocks[3].txs()[2];
        let (found, loc) = store.tx_by_hash(&tx.hash()).unwrap().unwrap();
        assert_eq!(&found, tx);
        assert_eq!((loc.height, loc.index), (4, 2));
        assert!(store.tx_by_hash(&Hash::digest(b"none")).unwrap().is_none());
        let ci = store.commit_info(4).unwrap().unwrap();
        assert_eq!(ci.votes.len(), 1);
    }
    // Reopen: same best, same everything.
    let store = BlockStore::open(dir.path(), &g).unwrap();
    assert_eq!(store.best().unwrap().block_hash, blocks[11].hash());
    let mut v = Verifier::new(store.app(), 1);
    v.check(&store);
    // And it keeps going.
    commit_next(&store, &mut rng, 5, 3, false);
    v.check(&store);
}

#[test]
fn commit_refusals_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis(3, 1000);
    let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
    let mut rng = Rng::new(2);
    commit_next(&store, &mut rng, 3, 2, false);
    let best = store.best().unwrap();
    let txs = random_txs(store.app(), &store, &mut rng, 3, 3, false);
    let good = make_block(&best, txs, 5);
    let ex = store.execute_block(&good, false).unwrap();
    let ci = commit_info(&good, ex.app_hash);

    // Wrong height.
    let mut b2 = best;
    b2.height += 1;
    let far = make_block(&b2, vec![], 5);
    assert!(matches!(
        store.commit(&far, &ci, &ex.changes),
        Err(StoreError::NotNext {
            expected: 2,
            got: 3
        })
    ));
    // Wrong prev hash.
    let mut b3 = best;
    b3.block_hash = Hash::digest(b"fork");
    let fork = make_block(&b3, vec![], 5);
    assert!(matches!(
        store.commit(&fork, &ci, &ex.changes),
        Err(StoreError::PrevHash { .. })
    ));
    // Wrong prev app hash.
    let mut b4 = best;
    b4.app_hash = Hash::digest(b"other state");
    let other = make_block(&b4, vec![], 5);
    assert!(matches!(
        store.commit(&other, &ci, &ex.changes),
        Err(StoreError::PrevAppHash { .. })
    ));
    // Changes that do not give the commit info's app hash.
    let mut tampered = ex.changes.clone();
    tampered.set(StateKey::account(&user(0).public()), vec![0; 16]);
    assert!(matches!(
        store.commit(&good, &ci, &tampered),
        Err(StoreError::AppHashMismatch { height: 2, .. })
    ));
    assert!(matches!(
        store.commit(&good, &commit_info(&good, Hash::ZERO), &ex.changes),
        Err(StoreError::AppHashMismatch { .. })
    ));
    // Nothing of the refused commits is visible.
    assert_eq!(store.best().unwrap(), best);
    assert!(store.block_by_height(2).unwrap().is_none());
    assert!(store.tx_location(&good.txs()[0].hash()).unwrap().is_none());
    // The good one goes in, once.
    store.commit(&good, &ci, &ex.changes).unwrap();
    assert!(matches!(
        store.commit(&good, &ci, &ex.changes),
        Err(StoreError::NotNext { .. })
    ));
    let mut v = Verifier::new(store.app(), 1);
    v.check(&store);
}

#[test]
fn invalid_blocks_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis(2, 100);
    let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
    let best = store.best().unwrap();
    let k = user(0);
    let cases: Vec<(Tx, TxError)> = vec![
        (
            Tx::sign(&k, CHAIN, 3, Payload::Delete { key: b"a".to_vec() }),
            TxError::BadNonce {
                expected: 1,
                got: 3,
            },
        ),
        (
            Tx::sign(
                &k,
                CHAIN,
                1,
                Payload::Transfer {
                    to: user(1).public(),
                    amount: 101,
                },
            ),
            TxError::InsufficientFunds {
                need: 101,
                balance: 100,
            },
        ),
        (
            Tx::sign(&k, "other", 1, Payload::Delete { key: b"a".to_vec() }),
            TxError::WrongChain {
                expected: CHAIN.into(),
                got: "other".into(),
            },
        ),
        (
            Tx::sign(&k, CHAIN, 1, Payload::Delete { key: vec![1; 257] }),
            TxError::KeyTooLong { len: 257, max: 256 },
        ),
    ];
    for (tx, want) in cases {
        let b = make_block(&best, vec![tx], 1);
        match store.execute_block(&b, false) {
            Err(StoreError::InvalidBlock(BlockError::Tx {
                index: 0, error, ..
            })) => {
                assert_eq!(error, want)
            }
            other => panic!("expected {want:?}, got {other:?}"),
        }
    }
    // apply_block refuses a commit info whose app hash is not the execution's.
    let b = make_block(&best, vec![], 1);
    assert!(matches!(
        store.apply_block(&b, &commit_info(&b, Hash::ZERO), false),
        Err(StoreError::AppHashMismatch { .. })
    ));
    assert_eq!(store.best().unwrap(), best);
}

#[test]
fn wrong_chain_genesis_and_corruption_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis(2, 100);
    {
        let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
        let mut rng = Rng::new(3);
        commit_next(&store, &mut rng, 2, 2, false);
        store.flush().unwrap();
    }
    let mut other_chain = g.clone();
    other_chain.chain_id = "kite-other".into();
    let e = BlockStore::open_with(dir.path(), &other_chain, fast()).unwrap_err();
    assert!(matches!(e, StoreError::WrongChain { .. }), "{e}");
    assert!(e.to_string().contains("kite-other"), "{e}");
    let mut other_genesis = g.clone();
    other_genesis.allocations[0].balance += 1;
    let e = BlockStore::open_with(dir.path(), &other_genesis, fast()).unwrap_err();
    assert!(matches!(e, StoreError::WrongGenesis { .. }), "{e}");

    // A damaged best record.
    {
        let db = raw_sled(dir.path());
        db.open_tree("kite")
            .unwrap()
            .insert(b"\x00best", &b"garbage"[..])
            .unwrap();
        db.flush().unwrap();
    }
    let e = BlockStore::open_with(dir.path(), &g, fast()).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("best record"), "{e}");

    // A best record pointing at a block that is not there.
    {
        let db = raw_sled(dir.path());
        let mut rec = 5u64.to_be_bytes().to_vec();
        rec.extend_from_slice(&[1; 64]);
        db.open_tree("kite")
            .unwrap()
            .insert(b"\x00best", rec)
            .unwrap();
        db.flush().unwrap();
    }
    let e = BlockStore::open_with(dir.path(), &g, fast()).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");

    // Files that are not a sled database at all.
    let junk = tempfile::tempdir().unwrap();
    std::fs::write(junk.path().join("conf"), b"\xff\xfe not a config").unwrap();
    std::fs::write(junk.path().join("db"), vec![0xAB; 4096]).unwrap();
    let e = BlockStore::open_with(junk.path(), &g, fast()).unwrap_err();
    assert!(
        matches!(e, StoreError::Open { .. } | StoreError::Corrupt { .. }),
        "{e}"
    );

    // A sled database that is not a Kite store.
    let foreign = tempfile::tempdir().unwrap();
    {
        let db = raw_sled(foreign.path());
        db.open_tree("state").unwrap().insert("x", "y").unwrap();
        db.flush().unwrap();
    }
    let e = BlockStore::open_with(foreign.path(), &g, fast()).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    // Data in Kite's tree but no format record.
    let foreign = tempfile::tempdir().unwrap();
    {
        let db = raw_sled(foreign.path());
        db.open_tree("kite").unwrap().insert("x", "y").unwrap();
        db.flush().unwrap();
    }
    let e = BlockStore::open_with(foreign.path(), &g, fast()).unwrap_err();
    assert!(e.to_string().contains("without a format record"), "{e}");
}

/// The store's sled database opened directly, as the store opens it.
fn raw_sled(path: &std::path::Path) -> sled::Db {
    sled::Config::new()
        .path(path)
        .segment_size(8 * 1024 * 1024)
        .open()
        .unwrap()
}

#[test]
fn the_store_is_a_state_reader() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis(2, 100);
    let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
    let best = store.best().unwrap();
    let k = user(0);
    let txs = vec![
        Tx::sign(
            &k,
            CHAIN,
            1,
            Payload::Put {
                key: b"name".to_vec(),
                value: b"kite".to_vec(),
            },
        ),
        Tx::sign(
            &k,
            CHAIN,
            2,
            Payload::Transfer {
                to: user(5).public(),
                amount: 30,
            },
        ),
    ];
    let b = make_block(&best, txs, 1);
    let ci_hash = store.execute_block(&b, false).unwrap().app_hash;
    let ex = store
        .apply_block(&b, &commit_info(&b, ci_hash), false)
        .unwrap();
    assert_eq!(ex.tx_count, 2);
    assert_eq!(
        store.kv_get(&k.public(), b"name").unwrap(),
        Some(b"kite".to_vec())
    );
    assert_eq!(store.kv_get(&user(1).public(), b"name").unwrap(), None);
    let a = store.account(&k.public()).unwrap();
    assert_eq!((a.balance, a.nonce), (70, 2));
    assert_eq!(
        kite_app::account(&store, &user(5).public())
            .unwrap()
            .balance,
        30
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// The same block sequence committed into two stores gives identical
    /// app hashes, states and block hashes, equal to an in-memory replay.
    #[test]
    fn two_stores_same_app_hashes(seed in any::<u64>(), sizes in proptest::collection::vec(0usize..12, 1..8)) {
        let g = genesis(4, 500);
        let da = tempfile::tempdir().unwrap();
        let db = tempfile::tempdir().unwrap();
        let a = BlockStore::open_with(da.path(), &g, fast()).unwrap();
        let b = BlockStore::open_with(db.path(), &g, fast()).unwrap();
        let mut rng = Rng::new(seed);
        for n in sizes {
            let (block, ex) = commit_next(&a, &mut rng, 4, n, false);
            // b gets the block as bytes and executes it itself.
            let wire = kite_types::Block::decode(&block.encode(), 1 << 24).unwrap();
            let exb = b.apply_block(&wire, &commit_info(&wire, ex.app_hash), false).unwrap();
            prop_assert_eq!(&exb, &ex);
        }
        prop_assert_eq!(a.best().unwrap(), b.best().unwrap());
        prop_assert_eq!(a.state_entries().unwrap(), b.state_entries().unwrap());
        let mut v = Verifier::new(a.app(), 1);
        v.check(&a);
        let mut w = Verifier::new(b.app(), 1);
        w.check(&b);
    }
}

#[test]
fn empty_changes_still_chain_the_app_hash() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis(1, 1);
    let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
    let best = store.best().unwrap();
    let b = make_block(&best, vec![], 1);
    let ex = store.execute_block(&b, false).unwrap();
    assert_eq!(ex.changes, ChangeSet::new());
    assert_ne!(ex.app_hash, best.app_hash);
    store
        .commit(&b, &commit_info(&b, ex.app_hash), &ex.changes)
        .unwrap();
    assert_eq!(store.best().unwrap().app_hash, ex.app_hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_handle_commits_and_reads_off_the_executor() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis(3, 1000);
    let h = StoreHandle::open(dir.path(), &g, StoreConfig::default())
        .await
        .unwrap();
    let mut rng = Rng::new(9);
    let mut last = None;
    for _ in 0..5 {
        let best = h.best().await.unwrap();
        let store = h.store().clone();
        let txs = tokio::task::spawn_blocking(move || {
            random_txs(
                store.app(),
                &*store,
                &mut Rng::new(best.height),
                3,
                4,
                false,
            )
        })
        .await
        .unwrap();
        let _ = rng.next_u64();
        let b = make_block(&best, txs, 1);
        let ex = h.execute_block(b.clone(), false).await.unwrap();
        h.commit(b.clone(), commit_info(&b, ex.app_hash), ex.changes)
            .await
            .unwrap();
        last = Some(b);
    }
    let last = last.unwrap();
    assert_eq!(h.best().await.unwrap().height, 5);
    assert_eq!(h.block_by_height(5).await.unwrap().as_ref(), Some(&last));
    assert_eq!(
        h.block_by_hash(last.hash()).await.unwrap().as_ref(),
        Some(&last)
    );
    assert_eq!(h.blocks_range(1, 5, usize::MAX).await.unwrap().len(), 5);
    assert!(h.commit_info(5).await.unwrap().is_some());
    let tx = last.txs()[0].clone();
    assert_eq!(h.tx_location(tx.hash()).await.unwrap().unwrap().height, 5);
    assert_eq!(h.tx_by_hash(tx.hash()).await.unwrap().unwrap().0, tx);
    let _ = h.account(user(0).public()).await.unwrap();
    let _ = h.kv_get(user(0).public(), b"k1".to_vec()).await.unwrap();
    // A refused commit comes back as a typed error through the handle.
    let stale = make_block(
        &kite_blockstore::Best {
            height: 0,
            block_hash: Hash::ZERO,
            app_hash: Hash::ZERO,
        },
        vec![],
        1,
    );
    let e = h
        .commit(
            stale.clone(),
            commit_info(&stale, Hash::ZERO),
            ChangeSet::new(),
        )
        .await;
    assert!(matches!(e, Err(StoreError::NotNext { .. })));
    // Many handles commit concurrently: exactly one wins each height.
    let best = h.best().await.unwrap();
    let b = make_block(&best, vec![], 2);
    let ex = h.execute_block(b.clone(), false).await.unwrap();
    let mut joins = Vec::new();
    for _ in 0..4 {
        let h = h.clone();
        let (b, ci, ch) = (b.clone(), commit_info(&b, ex.app_hash), ex.changes.clone());
        joins.push(tokio::spawn(
            async move { h.commit(b, ci, ch).await.is_ok() },
        ));
    }
    let mut ok = 0;
    for j in joins {
        ok += usize::from(j.await.unwrap());
    }
    assert_eq!(ok, 1);
    let mut v = Verifier::new(h.store().app(), 1);
    v.check(h.store());
}

#[test]
fn a_store_in_use_is_refused_and_free_again_after_drop() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis(1, 1);
    let first = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
    let e = BlockStore::open_with(dir.path(), &g, fast()).unwrap_err();
    assert!(matches!(e, StoreError::Open { .. }), "{e}");
    assert!(e.to_string().contains("another Kite node"), "{e}");
    drop(first);
    // Reopening right after the drop works (sled releases its lock a
    // little later; open waits for it).
    for _ in 0..5 {
        let s = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
        assert_eq!(s.best().unwrap().height, 0);
    }
}

#[test]
fn chain_starting_at_a_later_height() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = genesis(2, 100);
    g.initial_height = 10;
    let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
    assert_eq!(store.best().unwrap().height, 9);
    let mut rng = Rng::new(4);
    let (b, _) = commit_next(&store, &mut rng, 2, 2, false);
    assert_eq!(b.height(), 10);
    let mut v = Verifier::new(store.app(), 10);
    assert_eq!(v.check(&store).height, 10);
    // An invalid genesis is refused with its reason.
    let mut bad = g.clone();
    bad.validators.clear();
    let e = BlockStore::open_with(tempfile::tempdir().unwrap().path(), &bad, fast()).unwrap_err();
    assert!(e.to_string().contains("no validators"), "{e}");
}

#[test]
fn apply_blocks_commits_in_order_and_stops_at_the_first_bad_one() {
    let g = genesis(5, 10_000);
    let src_dir = tempfile::tempdir().unwrap();
    let src = BlockStore::open_with(src_dir.path(), &g, fast()).unwrap();
    let mut rng = Rng::new(7);
    for i in 0..10 {
        commit_next(&src, &mut rng, 5, i % 4, false);
    }
    let chain: Vec<(Block, CommitInfo)> = (1..=10)
        .map(|h| {
            (
                src.block_by_height(h).unwrap().unwrap(),
                src.commit_info(h).unwrap().unwrap(),
            )
        })
        .collect();
    // All good: one call commits all ten, durably.
    let dir = tempfile::tempdir().unwrap();
    let store = BlockStore::open(dir.path(), &g).unwrap();
    let out = store.apply_blocks(chain.clone(), true);
    assert!(out.failed.is_none(), "{:?}", out.failed);
    assert_eq!(out.applied, chain);
    assert_eq!(store.best().unwrap(), src.best().unwrap());
    // The same state as block-by-block commits; the tx index is left for
    // later (see the next test).
    assert_eq!(store.state_entries().unwrap(), src.state_entries().unwrap());
    assert_eq!(store.tx_indexed(), 0);
    // Block 6 carries another app hash: 1..=5 are committed, 6 is the
    // failure, nothing after it is tried.
    let mut bad = chain.clone();
    bad[5].1.app_hash = Hash::digest(b"not the state");
    let dir = tempfile::tempdir().unwrap();
    let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
    let out = store.apply_blocks(bad, false);
    assert_eq!(out.applied.len(), 5);
    let (block, err) = out.failed.unwrap();
    assert_eq!(block.height(), 6);
    assert!(
        matches!(err, StoreError::AppHashMismatch { height: 6, .. }),
        "{err}"
    );
    assert_eq!(store.best().unwrap().height, 5);
    // Applying past the tip is refused, and writes nothing.
    let out = store.apply_blocks(chain[7..].to_vec(), false);
    assert!(out.applied.is_empty());
    assert!(matches!(
        out.failed.unwrap().1,
        StoreError::NotNext { .. } | StoreError::InvalidBlock(_)
    ));
    assert_eq!(store.best().unwrap().height, 5);
}

/// Sync's batch applies leave the tx index behind; a commit while it lags
/// does not index its block out of order; `index_txs` catches up in
/// bounded, atomic steps that survive a reopen; once caught up, commits
/// index their own txs again. The result equals block-by-block commits.
#[test]
fn the_tx_index_lags_batch_applies_and_catches_up_in_steps() {
    let g = genesis(6, 1_000_000);
    let src_dir = tempfile::tempdir().unwrap();
    let src = BlockStore::open_with(src_dir.path(), &g, fast()).unwrap();
    let mut rng = Rng::new(11);
    for _ in 0..30 {
        commit_next(&src, &mut rng, 6, 5, false);
    }
    assert_eq!(src.tx_indexed(), 30, "commits index inline");
    let chain: Vec<(Block, CommitInfo)> = (1..=30)
        .map(|h| {
            (
                src.block_by_height(h).unwrap().unwrap(),
                src.commit_info(h).unwrap().unwrap(),
            )
        })
        .collect();
    let all_txs = |upto: u64| -> Vec<Tx> {
        chain[..upto as usize]
            .iter()
            .flat_map(|(b, _)| b.txs().to_vec())
            .collect()
    };
    let txs = all_txs(30);
    assert!(txs.len() > 60, "the chain has txs to index");

    let dir = tempfile::tempdir().unwrap();
    {
        let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
        // Sync applies 1..=25: nothing indexed.
        let out = store.apply_blocks(chain[..25].to_vec(), false);
        assert!(out.failed.is_none());
        assert_eq!(store.tx_indexed(), 0);
        assert!(
            txs.iter()
                .all(|t| store.tx_location(&t.hash()).unwrap().is_none())
        );
        // A single commit on top (a follower after sync) does not index
        // block 26 ahead of 1..=25.
        let (b26, ci26) = chain[25].clone();
        store.apply_block(&b26, &ci26, false).unwrap();
        assert_eq!(store.tx_indexed(), 0);
        // Steps of at most 4 blocks, or until 7 txs.
        let p = store.index_txs(4, 1_000).unwrap();
        assert_eq!((p.indexed, p.best), (4, 26));
        assert!(!p.caught_up());
        assert_eq!(p.txs, all_txs(4).len());
        let p = store.index_txs(100, 7).unwrap();
        assert!(p.indexed > 4 && p.txs >= 7, "{p:?}");
        // The last block of the step took it to 7 txs or more, the one
        // before had not.
        let before = all_txs(p.indexed - 1).len() - all_txs(4).len();
        assert!(before < 7, "{p:?}");
        assert_eq!(store.tx_indexed(), p.indexed);
        // Indexed txs are found, the rest not yet.
        let done = all_txs(p.indexed);
        for t in &txs {
            let found = store.tx_location(&t.hash()).unwrap();
            if done.contains(t) {
                assert_eq!(found, src.tx_location(&t.hash()).unwrap());
            } else {
                assert_eq!(found, None);
            }
        }
    }
    // Reopened, it resumes where the last step ended and catches up.
    let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
    assert!(store.tx_indexed() > 4 && store.tx_indexed() < 26);
    let mut steps = 0;
    while !store.index_txs(3, 1_000).unwrap().caught_up() {
        steps += 1;
        assert!(steps < 20, "the index does not catch up");
    }
    assert_eq!(store.tx_indexed(), 26);
    // Caught up: nothing more to do, and commits index inline again.
    let p = store.index_txs(3, 1_000).unwrap();
    assert_eq!((p.indexed, p.txs), (26, 0));
    for (b, ci) in &chain[26..] {
        store.apply_block(b, ci, false).unwrap();
    }
    assert_eq!(store.tx_indexed(), 30);
    for t in &txs {
        assert_eq!(
            store.tx_location(&t.hash()).unwrap(),
            src.tx_location(&t.hash()).unwrap()
        );
    }
    assert_eq!(store.state_entries().unwrap(), src.state_entries().unwrap());
}

/// Every committed tx and its location, by hash.
fn locations(store: &BlockStore) -> Vec<(Hash, u64, u32)> {
    let best = store.best().unwrap().height;
    (1..=best)
        .flat_map(|h| {
            let b = store.block_by_height(h).unwrap().unwrap();
            b.txs()
                .iter()
                .enumerate()
                .map(|(i, t)| (t.hash(), h, i as u32))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn assert_all_found(store: &BlockStore, want: &[(Hash, u64, u32)]) {
    for (hash, height, index) in want {
        let loc = store
            .tx_location(hash)
            .unwrap()
            .unwrap_or_else(|| panic!("tx {hash} of block {height} not found"));
        assert_eq!((loc.height, loc.index), (*height, *index));
    }
    assert!(
        store
            .tx_location(&Hash::digest(b"never"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn the_tx_index_finds_every_tx_through_merges_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis(40, 1_000_000);
    let mut rng = Rng::new(21);
    let want = {
        let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
        // Blocks of 0 to 400 txs: runs of one chunk and of several.
        for i in 0..36usize {
            commit_next(&store, &mut rng, 40, (i * 97) % 401, false);
        }
        let want = locations(&store);
        assert!(want.len() > 5_000, "{} txs", want.len());
        // One run per block that had txs, none merged yet.
        let blocks_with_txs = (1..=36)
            .filter(|h| !store.block_by_height(*h).unwrap().unwrap().txs().is_empty())
            .count();
        assert_eq!(store.tx_index_runs(), blocks_with_txs);
        assert_all_found(&store, &want);
        let mut merges = 0;
        while store.compact_tx_index().unwrap() {
            merges += 1;
            assert!(merges < 100, "merging does not end");
            assert_all_found(&store, &want);
        }
        assert!(merges > 10, "{merges} merges");
        let runs = store.tx_index_runs();
        assert!(runs < blocks_with_txs / 3, "{runs} runs left");
        // More blocks on top of merged runs.
        for _ in 0..3 {
            commit_next(&store, &mut rng, 40, 150, false);
        }
        assert_eq!(store.tx_index_runs(), runs + 3);
        locations(&store)
    };
    // Reopened: the run list and the runs are as they were.
    let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
    assert_all_found(&store, &want);
    while store.compact_tx_index().unwrap() {}
    assert_all_found(&store, &want);
    let mut v = Verifier::new(store.app(), 1);
    v.check(&store);
}

/// Lookups, commits and merges at the same time: a lookup never misses a
/// tx that was committed before it started, though a merge deletes the
/// runs it read.
#[test]
fn lookups_never_miss_while_runs_merge_and_blocks_commit() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis(30, 1_000_000);
    let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
    let mut rng = Rng::new(22);
    for _ in 0..24 {
        commit_next(&store, &mut rng, 30, 60, false);
    }
    let want = locations(&store);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let merger = s.spawn(|| {
            let mut merges = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if store.compact_tx_index().unwrap() {
                    merges += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            merges
        });
        let reader = s.spawn(|| {
            let mut rounds = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) || rounds < 3 {
                assert_all_found(&store, &want);
                rounds += 1;
            }
            rounds
        });
        for _ in 0..24 {
            commit_next(&store, &mut rng, 30, 60, false);
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(merger.join().unwrap() > 0, "no merge ran");
        assert!(reader.join().unwrap() >= 3);
    });
    while store.compact_tx_index().unwrap() {}
    let want = locations(&store);
    assert_all_found(&store, &want);
    // The list on disk is the one in memory.
    let runs = store.tx_index_runs();
    drop(store);
    let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
    assert_eq!(store.tx_index_runs(), runs);
    assert_all_found(&store, &want);
}

/// A format 2 store opens, is marked as format 3, and its per-tx index
/// records are still read.
#[test]
fn a_format_2_store_is_upgraded_and_its_tx_records_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis(5, 10_000);
    let mut rng = Rng::new(23);
    let want = {
        let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
        for _ in 0..3 {
            commit_next(&store, &mut rng, 5, 4, false);
        }
        store.flush().unwrap();
        locations(&store)
    };
    // As a format 2 build wrote it: the format record, and a per-tx
    // record (table 5) for a tx of block 2.
    let legacy = Hash::digest(b"a format 2 tx");
    {
        let db = raw_sled(dir.path());
        let t = db.open_tree("kite").unwrap();
        t.insert(b"\x00format", &b"kite-blockstore/2"[..]).unwrap();
        let mut key = vec![5u8];
        key.extend_from_slice(legacy.as_bytes());
        let mut loc = 2u64.to_be_bytes().to_vec();
        loc.extend_from_slice(&1u32.to_be_bytes());
        t.insert(key, loc).unwrap();
        db.flush().unwrap();
    }
    {
        let store = BlockStore::open_with(dir.path(), &g, fast()).unwrap();
        let loc = store.tx_location(&legacy).unwrap().unwrap();
        assert_eq!((loc.height, loc.index), (2, 1));
        assert_all_found(&store, &want);
        store.flush().unwrap();
    }
    let db = raw_sled(dir.path());
    let format = db.open_tree("kite").unwrap().get(b"\x00format").unwrap();
    assert_eq!(format.as_deref(), Some(&b"kite-blockstore/3"[..]));
}
