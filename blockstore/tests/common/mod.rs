#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    dead_code
)]
//! Shared helpers of the block store tests and bench: a seeded RNG, a test
//! chain and valid random blocks.

use kite_app::{App, Executed, MemState, Overlay, StateReader, account};
use kite_blockstore::{Best, BlockStore};
use kite_types::genesis::Allocation;
use kite_types::{
    BLOCK_VERSION, Block, BlockHeader, CommitInfo, Genesis, Hash, MAX_VALUE_LEN, NodeKey, Payload,
    Tx, Vote,
};

pub const CHAIN: &str = "kite-test";

/// SplitMix64: small, seeded, the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi` (hi > lo).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

pub fn leader() -> NodeKey {
    NodeKey::from_seed([200; 32])
}

pub fn user(i: u32) -> NodeKey {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    NodeKey::from_seed(seed)
}

/// A single-validator chain whose `users` first users hold `balance`.
pub fn genesis(users: u32, balance: u64) -> Genesis {
    let mut g = Genesis::single(CHAIN, leader().public(), user(0).public(), 0);
    g.allocations = (0..users)
        .map(|i| Allocation {
            account: user(i).public(),
            balance,
        })
        .collect();
    g
}

/// A signed block at `best.height + 1` on top of `best`.
pub fn make_block(best: &Best, txs: Vec<Tx>, ts: u64) -> Block {
    let header = BlockHeader {
        version: BLOCK_VERSION,
        chain_id: CHAIN.into(),
        height: best.height + 1,
        prev_hash: best.block_hash,
        prev_app_hash: best.app_hash,
        timestamp_ms: ts,
        tx_root: Hash::ZERO,
        validator_set_hash: Hash::ZERO,
        proposer: leader().public(),
        term: 0,
    };
    Block::new_signed(header, txs, &leader())
}

/// The leader's ACK as the block's commit info.
pub fn commit_info(block: &Block, app_hash: Hash) -> CommitInfo {
    CommitInfo {
        app_hash,
        votes: vec![Vote::ack(
            &leader(),
            CHAIN,
            block.height(),
            block.hash(),
            app_hash,
        )],
    }
}

/// `n` valid random txs (transfers, puts, deletes) of `users` users on
/// top of `state`. `big_values` makes puts carry values up to 16 KiB.
pub fn random_txs(
    app: &App,
    state: &dyn StateReader,
    rng: &mut Rng,
    users: u32,
    n: usize,
    big_values: bool,
) -> Vec<Tx> {
    let mut overlay = Overlay::new(state);
    let mut txs = Vec::with_capacity(n);
    for _ in 0..n {
        let from = rng.range(0, users as u64) as u32;
        let k = user(from);
        let acc = account(&overlay, &k.public()).unwrap();
        let payload = match rng.range(0, 10) {
            0..=5 => Payload::Transfer {
                to: user(rng.range(0, users as u64 + 3) as u32).public(),
                amount: rng.range(0, acc.balance / 4 + 2).min(acc.balance),
            },
            6..=8 => {
                let len = if big_values {
                    rng.range(0, MAX_VALUE_LEN as u64 + 1) as usize
                } else {
                    rng.range(0, 40) as usize
                };
                Payload::Put {
                    key: vec![b'k', rng.range(0, 8) as u8],
                    value: vec![rng.range(0, 256) as u8; len],
                }
            }
            _ => Payload::Delete {
                key: vec![b'k', rng.range(0, 8) as u8],
            },
        };
        let tx = Tx::sign(&k, CHAIN, acc.nonce + 1, payload);
        app.apply_tx(&mut overlay, &tx).unwrap().unwrap();
        txs.push(tx);
    }
    txs
}

/// Builds, executes and commits the next block of `n` random txs.
pub fn commit_next(
    store: &BlockStore,
    rng: &mut Rng,
    users: u32,
    n: usize,
    big_values: bool,
) -> (Block, Executed) {
    let best = store.best().unwrap();
    let txs = random_txs(store.app(), store, rng, users, n, big_values);
    let block = make_block(&best, txs, best.height * 1000);
    let ex = store.execute_block(&block, false).unwrap();
    store
        .commit(&block, &commit_info(&block, ex.app_hash), &ex.changes)
        .unwrap();
    (block, ex)
}

/// A state at genesis.
pub fn genesis_state(app: &App) -> MemState {
    let mut s = MemState::new();
    s.apply(&app.genesis_changes());
    s
}

/// Checks the whole store against itself and a replay from genesis:
/// height index, hash index, prev-hash chain, tx index, commit info app
/// hashes, best record and the full state. `replay` carries the replayed
/// state and height across calls so only new blocks are re-executed.
pub struct Verifier {
    pub state: MemState,
    pub height: u64,
    pub app_hash: Hash,
    pub hashes: Vec<Hash>,
}

impl Verifier {
    pub fn new(app: &App, initial_height: u64) -> Verifier {
        Verifier {
            state: genesis_state(app),
            height: initial_height - 1,
            app_hash: app.genesis_app_hash(),
            hashes: Vec::new(),
        }
    }

    pub fn check(&mut self, store: &BlockStore) -> Best {
        let best = store.best().unwrap();
        assert!(
            best.height >= self.height,
            "best height {} went below the verified height {}",
            best.height,
            self.height
        );
        let base = store.genesis().initial_height;
        // Old blocks are unchanged.
        for (i, h) in self.hashes.iter().enumerate() {
            let height = base + i as u64;
            assert_eq!(store.hash_at(height).unwrap(), Some(*h), "height {height}");
            assert_eq!(store.height_of(h).unwrap(), Some(height));
        }
        let mut prev = self.hashes.last().copied().unwrap_or(Hash::ZERO);
        for height in self.height + 1..=best.height {
            let b = store
                .block_by_height(height)
                .unwrap()
                .unwrap_or_else(|| panic!("block {height} missing below best {}", best.height));
            assert_eq!(b.height(), height);
            assert_eq!(b.header().prev_hash, prev, "hash chain broken at {height}");
            assert_eq!(b.header().prev_app_hash, self.app_hash);
            assert!(b.check_tx_root());
            assert!(b.verify_leader(&leader().public()));
            assert_eq!(store.hash_at(height).unwrap(), Some(b.hash()));
            assert_eq!(store.height_of(&b.hash()).unwrap(), Some(height));
            assert_eq!(store.block_by_hash(&b.hash()).unwrap().as_ref(), Some(&b));
            for (i, tx) in b.txs().iter().enumerate() {
                let loc = store.tx_location(&tx.hash()).unwrap().unwrap();
                assert_eq!((loc.height, loc.index as usize), (height, i));
            }
            let ex = store
                .app()
                .execute_block(&self.state, self.app_hash, &b, true)
                .unwrap();
            let ci = store.commit_info(height).unwrap().unwrap();
            assert_eq!(
                ci.app_hash, ex.app_hash,
                "app hash differs from replay at {height}"
            );
            assert!(
                ci.verify(
                    CHAIN,
                    height,
                    &b.hash(),
                    &store.genesis().validator_set(),
                    store.genesis().quorum
                )
                .is_ok()
            );
            self.state.apply(&ex.changes);
            self.app_hash = ex.app_hash;
            self.hashes.push(b.hash());
            prev = b.hash();
        }
        self.height = best.height;
        assert_eq!(
            best.app_hash, self.app_hash,
            "best app hash differs from replay"
        );
        assert_eq!(best.block_hash, prev);
        assert!(store.block_by_height(best.height + 1).unwrap().is_none());
        assert!(store.commit_info(best.height + 1).unwrap().is_none());
        let entries = store.state_entries().unwrap();
        let replayed: Vec<_> = self
            .state
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(entries, replayed, "state differs from replay");
        best
    }
}
