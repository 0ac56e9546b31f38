#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Commit throughput with durable commits on (flush + fsync per block), for
//! blocks of 1, 100 and 5,000 transfer txs.
//!
//! - `commit/N`: `BlockStore::commit` alone (the block is built and
//!   executed outside the timed part): the storage cost of a block.
//! - `execute_commit/N`: execution with batch signature verification plus
//!   commit: what a validator that receives the block pays.
//!
//! Run: `cargo bench -p kite-blockstore -- --warm-up-time 1 --measurement-time 3`.
//! Besides criterion's figures (time per block, tx/s as "thrpt"), each
//! bench prints a `commits/s` and `tx/s` summary line.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{CHAIN, commit_info, genesis, make_block, user};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use kite_blockstore::BlockStore;
use kite_types::{Block, NodeKey, Payload, Tx};
use std::time::{Duration, Instant};

const USERS: u32 = 10_000;

struct Bench {
    _dir: tempfile::TempDir,
    store: BlockStore,
    keys: Vec<NodeKey>,
    nonces: Vec<u64>,
    cursor: usize,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let store = BlockStore::open(dir.path(), &genesis(USERS, 1 << 40)).unwrap();
        assert!(store.config().durable);
        Bench {
            _dir: dir,
            store,
            keys: (0..USERS).map(user).collect(),
            nonces: vec![0; USERS as usize],
            cursor: 0,
        }
    }

    /// The next block: `n` transfers from distinct senders (round robin).
    fn next_block(&mut self, n: usize) -> Block {
        let best = self.store.best().unwrap();
        let txs: Vec<Tx> = (0..n)
            .map(|_| {
                let i = self.cursor;
                self.cursor = (self.cursor + 1) % self.keys.len();
                self.nonces[i] += 1;
                let to = self.keys[(i + 1) % self.keys.len()].public();
                Tx::sign(
                    &self.keys[i],
                    CHAIN,
                    self.nonces[i],
                    Payload::Transfer { to, amount: 1 },
                )
            })
            .collect();
        make_block(&best, txs, best.height)
    }
}

fn summary(name: &str, n: usize, blocks: u64, spent: Duration) {
    let secs = spent.as_secs_f64().max(f64::MIN_POSITIVE);
    let cps = blocks as f64 / secs;
    eprintln!(
        "SUMMARY {name}/{n}: {blocks} blocks in {secs:.2}s: {cps:.1} commits/s, {:.0} tx/s",
        cps * n as f64
    );
}

fn benches(c: &mut Criterion) {
    let mut bench = Bench::new();
    for (group_name, execute_timed) in [("commit", false), ("execute_commit", true)] {
        let mut group = c.benchmark_group(group_name);
        group.sample_size(10);
        group.sampling_mode(SamplingMode::Flat);
        for n in [1usize, 100, 5000] {
            group.throughput(Throughput::Elements(n as u64));
            let mut blocks = 0u64;
            let mut spent = Duration::ZERO;
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let block = bench.next_block(n);
                        let t0 = Instant::now();
                        let ex = bench.store.execute_block(&block, !execute_timed).unwrap();
                        let t1 = Instant::now();
                        let ci = commit_info(&block, ex.app_hash);
                        bench.store.commit(&block, &ci, &ex.changes).unwrap();
                        timed += if execute_timed {
                            t0.elapsed()
                        } else {
                            t1.elapsed()
                        };
                    }
                    blocks += iters;
                    spent += timed;
                    timed
                });
            });
            summary(group_name, n, blocks, spent);
        }
        group.finish();
    }
}

criterion_group!(commit_benches, benches);
criterion_main!(commit_benches);
