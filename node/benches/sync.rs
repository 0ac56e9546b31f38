#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Block sync speed (issue 7), all in this process on 127.0.0.1: a chain
//! is prepared directly in a store (leader-signed blocks, commit infos of 3
//! of 4 validators' votes), copied to 3 serving nodes, and one fresh node
//! syncs it from them; time from its start until it committed the tip.
//! Two chains: empty blocks, and blocks of 100 transfers from 300 funded
//! senders. Printed beside them: the ed25519 batch-verify limit measured
//! in the same run (`kite_types::sign::verify_batch` over 1,024 signatures,
//! on 1 and on 2 threads) and the replay rate as a share of it. The
//! syncing node runs the default config (durable store, window 512).
//! Also printed: the CPU the whole process used during the sync, in cores
//! (the 3 serving nodes run in it too), to tell a CPU-bound run from one
//! that waits.
//! Also printed per chain: the per-block cost of each serial stage of a
//! replay (proof checks, tx signature checks, execute + commit) measured
//! on its first 1,000 blocks without network, and the rate one serial
//! pipeline of them would reach.
//! Prints figures, asserts no timing.
//!
//! `cargo bench -p kite-node --bench sync`
//! (`KITE_SYNC_BENCH_EMPTY=N` empty blocks, default 10,000;
//! `KITE_SYNC_BENCH_BLOCKS=N` transfer blocks, default 10,000;
//! `KITE_SYNC_BENCH_TXS=N` transfers per block, default 100;
//! `KITE_SYNC_BENCH_DURABLE=0` syncs into a store without fsync;
//! `KITE_SYNC_BENCH_WINDOW=N` sets `sync.window`;
//! `KITE_SYNC_BENCH_BLOCKS_ONLY=1` syncs as an archive (no mempool). Without
//! `--bench`, as under `cargo test --benches`, it runs a quick small case.)

#[path = "../tests/sync_support/mod.rs"]
mod sync_support;

use kite_node::config::{Role, SyncConfig};
use kite_types::{NodeKey, Payload, Tx};
use std::time::{Duration, Instant};
use sync_support::*;
use tempfile::TempDir;

/// Longest a sync may take before the bench gives up.
const SYNC_DEADLINE: Duration = Duration::from_secs(900);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// ed25519 batch verification throughput (signatures/s) over batches of
/// 1,024 distinct signers, on `threads` threads at once, for ~`secs`.
fn verify_limit(threads: usize, secs: f64) -> f64 {
    let txs: Vec<Tx> = (0..1024u32)
        .map(|i| {
            let mut seed = [0x42u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            let k = NodeKey::from_seed(seed);
            Tx::sign(
                &k,
                "kite-bench",
                1,
                Payload::Transfer {
                    to: k.public(),
                    amount: 1,
                },
            )
        })
        .collect();
    let items: Vec<_> = txs.iter().map(Tx::sig_item).collect();
    assert!(kite_types::sign::verify_batch(&items).iter().all(|ok| *ok));
    let t0 = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while t0.elapsed().as_secs_f64() < secs {
                        let ok = kite_types::sign::verify_batch(&items);
                        assert!(ok.iter().all(|v| *v));
                        n += items.len() as u64;
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64 / t0.elapsed().as_secs_f64()
}

/// Per-block costs of the serial parts of a replay, on the first `n`
/// blocks of the prepared store at `src`, into a fresh store at `dst`
/// (no network, one thread): proof checks (leader signature, commit info),
/// tx signature batch checks, and execute + commit without fsync.
fn stage_costs(
    src: &std::path::Path,
    dst: &std::path::Path,
    genesis: &kite_types::Genesis,
    n: u64,
) -> String {
    use kite_blockstore::{BlockStore, StoreConfig};
    let cfg = StoreConfig {
        durable: false,
        ..StoreConfig::default()
    };
    let from = BlockStore::open_with(src, genesis, cfg).unwrap();
    let entries: Vec<_> = (1..=n)
        .map(|h| {
            (
                from.block_by_height(h).unwrap().unwrap(),
                from.commit_info(h).unwrap().unwrap(),
            )
        })
        .collect();
    drop(from);
    let txs: u64 = entries.iter().map(|(b, _)| b.txs().len() as u64).sum();
    let valset = genesis.validator_set();
    let t = Instant::now();
    for (b, ci) in &entries {
        assert!(b.verify_leader(&genesis.leader));
        ci.verify(
            &genesis.chain_id,
            b.height(),
            &b.hash(),
            &valset,
            genesis.quorum,
        )
        .unwrap();
    }
    let proofs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (b, _) in &entries {
        let refs: Vec<&Tx> = b.txs().iter().collect();
        assert!(Tx::verify_batch(&refs).iter().all(|ok| *ok));
    }
    let sigs = t.elapsed().as_secs_f64();
    let to = BlockStore::open_with(dst, genesis, cfg).unwrap();
    let t = Instant::now();
    for (b, ci) in &entries {
        to.apply_block_opts(b, ci, true, false).unwrap();
    }
    let apply = t.elapsed().as_secs_f64();
    let per = |secs: f64| secs * 1e6 / n as f64;
    let total = proofs + sigs + apply;
    format!(
        "per block over {n} blocks: proofs {:.0} us, tx sigs {:.0} us, execute+commit {:.0} us; one serial pipeline: {:.0} blocks/s, {:.0} tx/s",
        per(proofs),
        per(sigs),
        per(apply),
        n as f64 / total,
        txs as f64 / total
    )
}

struct Figures {
    blocks: u64,
    txs: u64,
    secs: f64,
    /// From reaching the tip until the tx index caught up.
    index_secs: f64,
}

/// CPU time this process used so far, seconds (utime + stime from
/// `/proc/self/stat`, in USER_HZ = 100 ticks per second on Linux).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 12 and 13 here.
    (tick(11) + tick(12)) / 100.0
}

impl Figures {
    fn blocks_per_s(&self) -> f64 {
        self.blocks as f64 / self.secs
    }
    fn txs_per_s(&self) -> f64 {
        self.txs as f64 / self.secs
    }
}

/// Prepares a chain of `blocks` blocks of `per_block` transfers, serves it
/// from 3 nodes and times a fresh node's sync of it.
async fn run_case(name: &str, seed: u8, blocks: u64, per_block: usize) -> Figures {
    let keys = Keys::new(seed, 4, 300);
    let genesis = genesis(
        &format!("kite-bench-sync-{name}"),
        &keys,
        Duration::from_secs(1),
    );
    let tmp = TempDir::new().unwrap();
    let homes: Vec<_> = (0..4).map(|i| tmp.path().join(format!("n{i}"))).collect();

    let t = Instant::now();
    let built = {
        let (dir, g, k) = (homes[0].join("data"), genesis.clone(), keys.clone());
        tokio::task::spawn_blocking(move || {
            build_chain_opts(&dir, &g, &k, blocks, &|_| per_block, 2, false)
        })
        .await
        .unwrap()
    };
    let build_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for h in &homes[1..3] {
        copy_dir(&homes[0].join("data"), &h.join("data"));
    }
    println!(
        "[{name}] prepared {} blocks, {} txs in {build_secs:.1}s (+{:.1}s to copy the store twice)",
        built.height,
        built.txs,
        t.elapsed().as_secs_f64()
    );

    let stages = {
        let (src, dst, g) = (
            homes[0].join("data"),
            tmp.path().join("stages"),
            genesis.clone(),
        );
        let n = blocks.min(1000);
        tokio::task::spawn_blocking(move || stage_costs(&src, &dst, &g, n))
            .await
            .unwrap()
    };
    println!("[{name}] {stages}");

    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for (i, home) in homes[..3].iter().enumerate() {
        let n = start_node(home, config(Role::Sentry, &[]), &genesis, &keys.other(i)).await;
        assert_eq!(n.height(), blocks);
        addrs.push(node_addr(&n).await);
        servers.push(n);
    }
    // The syncing node: default sync settings, durable store.
    let mut cfg = config(Role::Sentry, &addrs);
    cfg.sync = SyncConfig::default();
    cfg.store.durable = env_u64("KITE_SYNC_BENCH_DURABLE", 1) != 0;
    cfg.blocks_only = env_u64("KITE_SYNC_BENCH_BLOCKS_ONLY", 0) != 0;
    if let Some(w) = std::env::var("KITE_SYNC_BENCH_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.sync.window = w;
    }
    let t0 = Instant::now();
    let cpu0 = cpu_secs();
    let node = start_node(&homes[3], cfg, &genesis, &keys.other(9)).await;
    let mut first_block = None;
    let mut last_print = Instant::now();
    loop {
        let h = node.height();
        if h > 0 && first_block.is_none() {
            first_block = Some(t0.elapsed());
        }
        if h >= blocks {
            break;
        }
        assert!(
            t0.elapsed() < SYNC_DEADLINE,
            "[{name}] sync stuck at {h} of {blocks}"
        );
        if last_print.elapsed() >= Duration::from_secs(5) {
            println!(
                "[{name}]   ... {h} of {blocks} after {:.1}s",
                t0.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cores = (cpu_secs() - cpu0) / secs;
    // Sync leaves the tx index for later: time it catching up.
    let t1 = Instant::now();
    while node.shared().store.tx_indexed() < blocks {
        assert!(
            t1.elapsed() < SYNC_DEADLINE,
            "[{name}] tx index stuck at {} of {blocks}",
            node.shared().store.tx_indexed()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let index_secs = t1.elapsed().as_secs_f64();
    // Spot check: the synced chain is the served one, and its txs are
    // indexed where the servers have them.
    for h in [1, (blocks / 2).max(1), blocks] {
        assert_eq!(stored_hash(&node, h), stored_hash(&servers[0], h));
        let served = servers[0]
            .shared()
            .store
            .store()
            .block_by_height(h)
            .unwrap();
        for tx in served.unwrap().txs().iter().take(3) {
            let loc = node.shared().store.store().tx_location(&tx.hash()).unwrap();
            assert!(loc.is_some(), "[{name}] tx {} not indexed", tx.hash());
            let served = servers[0]
                .shared()
                .store
                .store()
                .tx_location(&tx.hash())
                .unwrap();
            assert_eq!(loc, served);
        }
    }
    let f = Figures {
        blocks,
        txs: built.txs,
        secs,
        index_secs,
    };
    println!(
        "[{name}] synced {} blocks ({} txs) from 3 peers in {secs:.2}s (first block after {:.0} ms): {:.0} blocks/s, {:.0} tx/s, using {cores:.2} cores",
        f.blocks,
        f.txs,
        first_block.unwrap_or_default().as_secs_f64() * 1000.0,
        f.blocks_per_s(),
        f.txs_per_s()
    );
    println!(
        "[{name}] tx index caught up {index_secs:.2}s after the tip ({:.0} tx/s indexed); sync and index together: {:.0} tx/s",
        f.txs as f64 / index_secs.max(1e-9),
        f.txs as f64 / (secs + index_secs)
    );
    stop(node).await;
    for s in servers {
        stop(s).await;
    }
    f
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (empty, blocks, per_block) = if full {
        (
            env_u64("KITE_SYNC_BENCH_EMPTY", 10_000),
            env_u64("KITE_SYNC_BENCH_BLOCKS", 10_000),
            env_u64("KITE_SYNC_BENCH_TXS", 100) as usize,
        )
    } else {
        (300, 100, 20)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "block sync bench: {} cpus, 2 tokio workers, load average {}{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load().split(' ').take(3).collect::<Vec<_>>().join(" "),
        if full {
            ""
        } else {
            " (quick run: pass --bench for the full one)"
        }
    );
    let verify_secs = if full { 2.0 } else { 0.2 };
    let v1 = verify_limit(1, verify_secs);
    let v2 = verify_limit(2, verify_secs);
    println!(
        "ed25519 batch verify (1,024 sigs per batch): {v1:.0} sigs/s on 1 thread, {v2:.0} sigs/s on 2 threads"
    );
    let (e, t) = rt.block_on(async {
        let e = run_case("empty", 1, empty.max(1), 0).await;
        let t = run_case("transfers", 2, blocks.max(1), per_block).await;
        (e, t)
    });
    println!();
    println!(
        "load average at the end: {} (other processes share these cores)",
        load().split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    println!("| chain | blocks | txs | seconds | blocks/s | tx/s | target |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| empty blocks | {} | 0 | {:.2} | {:.0} | - | >= 5,000 blocks/s: {} |",
        e.blocks,
        e.secs,
        e.blocks_per_s(),
        if e.blocks_per_s() >= 5000.0 {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "| {per_block} transfers/block | {} | {} | {:.2} | {:.0} | {:.0} | >= 50,000 tx/s: {} |",
        t.blocks,
        t.txs,
        t.secs,
        t.blocks_per_s(),
        t.txs_per_s(),
        if t.txs_per_s() >= 50_000.0 {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "replay at {:.2}x the 1-thread and {:.2}x the 2-thread batch-verify limit",
        t.txs_per_s() / v1,
        t.txs_per_s() / v2
    );
    println!(
        "the tx index, left by sync, caught up {:.2}s after the tip: {:.0} tx/s for sync and index together",
        t.index_secs,
        t.txs as f64 / (t.secs + t.index_secs)
    );
}
