//! Mempool throughput: admission of 10k signed transfers from 100 senders
//! one by one (single signature verification) and in batches of 256 (batch
//! verification, from one thread and from two threads), block building over
//! 10k pending txs, and the raw ed25519 batch-verify limit of this machine
//! measured in the same run (plus the bare dalek batch equation: the
//! ceiling of any verification shortcut). After criterion's figures a
//! summary prints tx/s for each and the ratio batched admission /
//! batch-verify limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use kite_mempool::{Mempool, MempoolConfig};
use kite_types::sign::{self, SigItem};
use kite_types::{Account, NodeKey, Payload, PublicKey, Tx};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

const CHAIN: &str = "kite-bench";
const SENDERS: usize = 100;
const PER_SENDER: usize = 100;
const N: usize = SENDERS * PER_SENDER;
const BATCH: usize = 256;
const VERIFY_N: usize = 1024;

struct Fixture {
    /// Arrival order: round-robin over senders, each in nonce order.
    txs: Vec<Tx>,
    accounts: HashMap<PublicKey, Account>,
}

fn fixture() -> Fixture {
    let keys: Vec<NodeKey> = (0..SENDERS)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            NodeKey::from_seed(seed)
        })
        .collect();
    let mut txs = Vec::with_capacity(N);
    for nonce in 1..=PER_SENDER as u64 {
        for (i, k) in keys.iter().enumerate() {
            txs.push(Tx::sign(
                k,
                CHAIN,
                nonce,
                Payload::Transfer {
                    to: keys[(i + 1) % SENDERS].public(),
                    amount: 1 + nonce,
                },
            ));
        }
    }
    let accounts = keys
        .iter()
        .map(|k| {
            (
                k.public(),
                Account {
                    balance: 1_000_000,
                    nonce: 0,
                },
            )
        })
        .collect();
    Fixture { txs, accounts }
}

/// `verify_threads`: 0 = one per core, 1 = the calling thread only.
fn pool(verify_threads: usize) -> Mempool {
    Mempool::new(
        CHAIN,
        MempoolConfig {
            verify_threads,
            ..MempoolConfig::default()
        },
    )
}

fn admit_single(f: &Fixture, txs: Vec<Tx>) -> Mempool {
    let mp = pool(1);
    for tx in txs {
        mp.admit(tx, &f.accounts, 0).unwrap();
    }
    mp
}

fn batches(txs: &[Tx]) -> Vec<Vec<Tx>> {
    txs.chunks(BATCH).map(|c| c.to_vec()).collect()
}

fn admit_batched(f: &Fixture, batches: Vec<Vec<Tx>>, verify_threads: usize) -> Mempool {
    let mp = pool(verify_threads);
    for b in batches {
        for r in mp.admit_batch(b, &f.accounts, 0) {
            r.unwrap();
        }
    }
    mp
}

/// Two callers (say the p2p handler and the RPC) admit alternate batches
/// concurrently, each verifying on its own thread. Each sender's txs are
/// split by nonce between batches, so some arrive ahead of their
/// predecessor and wait in the gap queue.
fn admit_batched_2callers(f: &Fixture, batches: Vec<Vec<Tx>>) -> Mempool {
    let mp = pool(1);
    let (even, odd): (Vec<_>, Vec<_>) = batches
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    std::thread::scope(|s| {
        for part in [even, odd] {
            let mp = &mp;
            s.spawn(move || {
                for (_, b) in part {
                    let _ = mp.admit_batch(b, &f.accounts, 0);
                }
            });
        }
    });
    mp
}

fn sig_items(txs: &[Tx]) -> Vec<SigItem<'_>> {
    txs.iter().take(VERIFY_N).map(|t| t.sig_item()).collect()
}

/// The raw batch-verify limit on `threads` cores: each thread verifies its
/// own 1024 signatures.
fn verify_on(items: &[SigItem<'_>], threads: usize) -> bool {
    std::thread::scope(|s| {
        let hs: Vec<_> = (1..threads)
            .map(|_| s.spawn(|| sign::verify_all(items)))
            .collect();
        let mine = sign::verify_all(items);
        hs.into_iter().all(|h| h.join().unwrap()) && mine
    })
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    let mut g = c.benchmark_group("mempool");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("admit_single_10k", |b| {
        b.iter_batched(
            || f.txs.clone(),
            |txs| admit_single(&f, txs),
            BatchSize::PerIteration,
        )
    });
    for (name, threads) in [
        ("admit_batch256_10k_1thread", 1),
        ("admit_batch256_10k_allcores", 0),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || batches(&f.txs),
                |bs| admit_batched(&f, bs, threads),
                BatchSize::PerIteration,
            )
        });
    }
    g.bench_function("admit_batch256_10k_2callers", |b| {
        b.iter_batched(
            || batches(&f.txs),
            |bs| admit_batched_2callers(&f, bs),
            BatchSize::PerIteration,
        )
    });
    let full = admit_batched(&f, batches(&f.txs), 0);
    assert_eq!(full.len(), N);
    g.bench_function("build_block_10k", |b| {
        b.iter(|| black_box(full.build_block(usize::MAX, N)))
    });
    g.finish();

    let items = sig_items(&f.txs);
    let mut g = c.benchmark_group("ed25519");
    g.throughput(Throughput::Elements(VERIFY_N as u64));
    g.bench_function("batch_verify_1024", |b| {
        b.iter(|| assert!(sign::verify_all(black_box(&items))))
    });
    g.throughput(Throughput::Elements(2 * VERIFY_N as u64));
    g.bench_function("batch_verify_1024_x2threads", |b| {
        b.iter(|| assert!(verify_on(black_box(&items), 2)))
    });
    g.finish();
}

/// Median of `reps` timings of `run`, each after a fresh `setup`.
fn time<S, R>(reps: usize, mut setup: impl FnMut() -> S, mut run: impl FnMut(S) -> R) -> Duration {
    let mut ts: Vec<Duration> = (0..reps)
        .map(|_| {
            let input = setup();
            let t = Instant::now();
            black_box(run(input));
            t.elapsed()
        })
        .collect();
    ts.sort();
    ts[ts.len() / 2]
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Plain-timed figures (median of a few runs) printed as one table.
fn summary() {
    let f = fixture();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let items = sig_items(&f.txs);
    let single_verify = rate(
        VERIFY_N,
        time(
            5,
            || (),
            |_| {
                items
                    .iter()
                    .all(|it| sign::verify(it.key, &it.digest, it.sig))
            },
        ),
    );
    let verify256 = rate(
        BATCH * 4,
        time(21, || (), |_| items.chunks(BATCH).all(sign::verify_all)),
    );
    let verify = rate(VERIFY_N, time(21, || (), |_| sign::verify_all(&items)));
    let vks: Vec<ed25519_dalek::VerifyingKey> = items
        .iter()
        .map(|it| it.key.verifying_key().unwrap())
        .collect();
    let msgs: Vec<&[u8]> = items.iter().map(|it| &it.digest.0[..]).collect();
    let dsigs: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|it| ed25519_dalek::Signature::from_bytes(it.sig.as_bytes()))
        .collect();
    let raw = rate(
        VERIFY_N,
        time(
            21,
            || (),
            |_| ed25519_dalek::verify_batch(&msgs, &dsigs, &vks).is_ok(),
        ),
    );
    let verify_cores = rate(
        VERIFY_N * cores,
        time(21, || (), |_| verify_on(&items, cores)),
    );
    let single = rate(N, time(3, || f.txs.clone(), |t| admit_single(&f, t)));
    let batched1 = rate(N, time(5, || batches(&f.txs), |b| admit_batched(&f, b, 1)));
    let batched = rate(N, time(5, || batches(&f.txs), |b| admit_batched(&f, b, 0)));
    let callers = rate(
        N,
        time(5, || batches(&f.txs), |b| admit_batched_2callers(&f, b)),
    );
    let full = admit_batched(&f, batches(&f.txs), 0);
    let build = rate(N, time(11, || (), |_| full.build_block(usize::MAX, N)));
    println!();
    println!("== kite-mempool summary ({cores} cores, {N} transfers from {SENDERS} senders) ==");
    println!("ed25519 single verify, 1 thread           {single_verify:>10.0} sig/s");
    println!("ed25519 batch verify x{BATCH}, 1 thread       {verify256:>10.0} sig/s");
    println!(
        "ed25519 batch verify x{VERIFY_N}, 1 thread      {verify:>10.0} sig/s   <- 1-core limit"
    );
    println!(
        "ed25519 batch verify x{VERIFY_N}, {cores} threads     {verify_cores:>10.0} sig/s   <- {cores}-core limit"
    );
    println!(
        "dalek batch equation x{VERIFY_N} only          {raw:>10.0} sig/s   (no key decode, no R re-check)"
    );
    println!("admit one by one (single verify)          {single:>10.0} tx/s");
    println!(
        "admit_batch x{BATCH}, verify on 1 thread      {batched1:>10.0} tx/s   = {:.2} x 1-core limit",
        batched1 / verify
    );
    println!(
        "admit_batch x{BATCH}, verify on {cores} threads     {batched:>10.0} tx/s   = {:.2} x {cores}-core limit",
        batched / verify_cores
    );
    println!(
        "admit_batch x{BATCH}, 2 callers x 1 thread    {callers:>10.0} tx/s   = {:.2} x {cores}-core limit",
        callers / verify_cores
    );
    println!(
        "build_block over 10k                      {build:>10.0} tx/s   ({:.2} ms per block)",
        1e3 * N as f64 / build
    );
    println!("target: batched admission >= 40000 tx/s on 2 cores");
}

criterion_group!(benches, bench);

fn main() {
    benches();
    summary();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
