//! The machine's limits for what a Kite node does per tx and per block,
//! measured now, on this machine (`kite bench limits`, and the first part
//! of `kite bench net`): what Kite's own figures are compared with.
//!
//! - ed25519 verification of transfer txs, one at a time and in batches of
//!   [`SMALL_BATCH`] and [`BATCH`] (as the mempool and block execution check
//!   them), on 1 and 2 threads;
//! - the sha256 of a transfer tx's bytes (its hash), on 1 and 2 threads;
//! - a durable write: 4 KiB appended to a file then `fdatasync`, one thread
//!   (every durable commit of the store pays at least one).
//!
//! Each figure runs for a fixed time (`--quick` shortens it) and reports
//! operations per second. The machines this runs on are shared and noisy:
//! compare Kite's figures with the limits measured in the same run.

use anyhow::Context;
use kite_types::{Hash, NodeKey, Payload, Tx};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Signatures per small batch verification (a batch of gossiped txs).
pub const SMALL_BATCH: usize = 64;
/// Signatures per large batch verification (a block's txs).
pub const BATCH: usize = 1024;
/// Distinct signed txs the measures cycle through.
const TXS: usize = 2048;

/// Arguments of `kite bench limits`.
#[derive(clap::Args, Debug, Clone)]
pub struct LimitsArgs {
    /// Measure each figure for 0.3 s instead of 2 s.
    #[arg(long)]
    pub quick: bool,
    /// Where the durable-write file goes (the system's temporary folder by
    /// default): put it on the disk the nodes' stores use.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One figure on 1 and 2 threads, per second.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PerThreads {
    /// On one thread.
    pub one: f64,
    /// On two threads.
    pub two: f64,
}

/// The machine's limits.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Bytes of the transfer tx measured.
    pub tx_bytes: usize,
    /// ed25519 verifications of single txs per second.
    pub verify: PerThreads,
    /// ed25519 verifications per second in batches of [`SMALL_BATCH`].
    pub verify_small_batch: PerThreads,
    /// ed25519 verifications per second in batches of [`BATCH`].
    pub verify_batch: PerThreads,
    /// sha256 hashes of a tx per second.
    pub sha256: PerThreads,
    /// 4 KiB durable writes (write + fdatasync) per second.
    pub durable_writes: f64,
    /// Cores this process may use.
    pub cores: usize,
}

impl Limits {
    /// Committed tx/s the batch verification allows when each of `nodes`
    /// nodes, sharing this machine, checks every tx once.
    pub fn verify_bound(&self, nodes: usize) -> f64 {
        self.verify_batch.two / nodes.max(1) as f64
    }
}

/// Transfer txs of distinct senders, signed.
fn txs() -> Vec<Tx> {
    (0..TXS)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let key = NodeKey::from_seed(seed);
            let to = NodeKey::from_seed([9; 32]).public();
            Tx::sign(
                &key,
                "kite-bench",
                1 + i as u64,
                Payload::Transfer { to, amount: 5 },
            )
        })
        .collect()
}

/// Runs `work` (which does some operations and returns how many) for
/// `window` on `threads` threads; operations per second over all.
fn rate(threads: usize, window: Duration, work: impl Fn(usize) -> u64 + Sync) -> f64 {
    let start = Instant::now();
    let done: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let work = &work;
                s.spawn(move || {
                    let mut n = 0u64;
                    let mut round = t;
                    while start.elapsed() < window {
                        n += work(round);
                        round += threads;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    done as f64 / start.elapsed().as_secs_f64().max(f64::MIN_POSITIVE)
}

/// Both thread counts.
fn per_threads(window: Duration, work: impl Fn(usize) -> u64 + Sync) -> PerThreads {
    PerThreads {
        one: rate(1, window, &work),
        two: rate(2, window, &work),
    }
}

/// Durable 4 KiB writes per second in `dir` for `window`.
fn durable_writes(dir: &Path, window: Duration) -> anyhow::Result<f64> {
    let path = dir.join(format!(".kite-limits-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let page = [0x5au8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    let r = (|| {
        while start.elapsed() < window {
            f.write_all(&page)?;
            f.sync_data()?;
            n += 1;
        }
        Ok::<_, std::io::Error>(())
    })();
    let _ = std::fs::remove_file(&path);
    r.with_context(|| format!("writing {}", path.display()))?;
    Ok(n as f64 / start.elapsed().as_secs_f64().max(f64::MIN_POSITIVE))
}

/// Measures every limit (about 13 s, or 2 s with `quick`).
pub fn measure(quick: bool, dir: &Path) -> anyhow::Result<Limits> {
    let window = if quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    };
    let txs = txs();
    let refs: Vec<&Tx> = txs.iter().collect();
    let tx_bytes = txs.first().map_or(0, |t| t.encode().len());
    let verify = per_threads(window, |i| u64::from(txs[i % TXS].verify_signature()));
    let batched = |size: usize| {
        let batches = TXS / size;
        per_threads(window, |i| {
            let k = (i % batches) * size;
            let ok = Tx::verify_batch(&refs[k..k + size]);
            ok.iter().filter(|v| **v).count() as u64
        })
    };
    let verify_small_batch = batched(SMALL_BATCH);
    let verify_batch = batched(BATCH);
    let bytes: Vec<Vec<u8>> = txs.iter().map(Tx::encode).collect();
    let sha256 = per_threads(window, |i| {
        std::hint::black_box(Hash::digest(&bytes[i % TXS]));
        1
    });
    let durable_writes = durable_writes(dir, window)?;
    Ok(Limits {
        tx_bytes,
        verify,
        verify_small_batch,
        verify_batch,
        sha256,
        durable_writes,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

/// Prints the limits as a table.
pub fn print(l: &Limits) {
    println!(
        "hardware limits, measured now ({} cores, transfer tx of {} bytes):",
        l.cores, l.tx_bytes
    );
    println!("| limit | 1 thread | 2 threads |");
    println!("|---|---|---|");
    let row = |what: &str, p: &PerThreads| {
        println!("| {what} | {:.0}/s | {:.0}/s |", p.one, p.two);
    };
    row("ed25519 verify, one tx at a time", &l.verify);
    row(
        &format!("ed25519 verify, batches of {SMALL_BATCH}"),
        &l.verify_small_batch,
    );
    row(
        &format!("ed25519 verify, batches of {BATCH}"),
        &l.verify_batch,
    );
    row("sha256 of a tx", &l.sha256);
    println!(
        "| durable write (4 KiB + fdatasync) | {:.0}/s | |",
        l.durable_writes
    );
    println!(
        "every tx verified once on each of 4 nodes sharing this machine: at most {:.0} tx/s",
        l.verify_bound(4)
    );
}

/// `kite bench limits`.
pub fn limits(a: &LimitsArgs) -> anyhow::Result<()> {
    let dir = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let l = measure(a.quick, &dir)?;
    if a.json {
        println!("{}", serde_json::to_string(&l)?);
    } else {
        print(&l);
    }
    Ok(())
}
