#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Crash test: a child process (this test binary, re-executed in child
//! mode) commits blocks in a loop with durable commits and prints each
//! acknowledged height; the parent SIGKILLs it at seeded random moments,
//! many times. After every kill the parent reopens the store and checks
//! that no acknowledged block is missing, that the acknowledged hashes are
//! the stored ones, and (through `common::Verifier`) the height and hash
//! indexes, the hash chain, the tx index, every commit info's app hash
//! against a replay from genesis, the best record and the full state.

mod common;

use common::{Rng, Verifier, commit_next, genesis};
use kite_blockstore::{BlockStore, StoreConfig};
use kite_types::Hash;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CHILD_ENV: &str = "KITE_CRASH_CHILD_DIR";
const USERS: u32 = 6;
const KILLS: usize = 25;

/// Child mode: commits blocks until killed. A no-op in a normal test run.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = BlockStore::open(std::path::Path::new(&dir), &genesis(USERS, 1_000_000)).unwrap();
    let out = std::io::stdout();
    loop {
        let height = store.best().unwrap().height + 1;
        // The block content depends on the height only: a restarted child
        // goes on where the store is.
        let mut rng = Rng::new(height.wrapping_mul(0x5851_F42D_4C95_7F2D));
        let n = rng.range(0, 12) as usize;
        // Every 5th block carries values up to 16 KiB: large sled values
        // (blob files) are exercised too.
        let (block, _) = commit_next(&store, &mut rng, USERS, n, height.is_multiple_of(5));
        let mut o = out.lock();
        writeln!(o, "ACK {} {}", block.height(), block.hash()).unwrap();
        o.flush().unwrap();
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_block() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let g = genesis(USERS, 1_000_000);
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::new(0x00C0_FFEE);
    let mut verifier = None;
    let mut acked_total = 0usize;
    let mut acked: Vec<(u64, Hash)> = Vec::new();
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let seen: Arc<Mutex<Vec<(u64, Hash)>>> = Arc::default();
        let sink = Arc::clone(&seen);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace();
                if parts.next() != Some("ACK") {
                    continue;
                }
                let h: u64 = parts.next().unwrap().parse().unwrap();
                let hash: Hash = parts.next().unwrap().parse().unwrap();
                sink.lock().unwrap().push((h, hash));
            }
        });
        // Kill at a random moment: sometimes during startup and open (the
        // very first round may die while writing the genesis), mostly in
        // the middle of commits.
        std::thread::sleep(Duration::from_millis(rng.range(5, 400)));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        reader.join().unwrap();
        let round_acks = std::mem::take(&mut *seen.lock().unwrap());
        acked_total += round_acks.len();
        acked.extend(round_acks);

        let store = BlockStore::open_with(
            dir.path(),
            &g,
            StoreConfig {
                durable: false,
                ..StoreConfig::default()
            },
        )
        .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        let v = verifier.get_or_insert_with(|| Verifier::new(store.app(), g.initial_height));
        let best = v.check(&store);
        if let Some(&(last, _)) = acked.last() {
            assert!(
                best.height >= last,
                "round {round}: acknowledged height {last} is missing (best {})",
                best.height
            );
        }
        for (h, hash) in &acked {
            assert_eq!(
                store.hash_at(*h).unwrap(),
                Some(*hash),
                "round {round}: acknowledged block {h} differs"
            );
        }
        eprintln!(
            "round {round}: best height {} (acknowledged {})",
            best.height,
            acked.last().map_or(0, |a| a.0)
        );
    }
    // The test must have exercised something.
    assert!(acked_total > 50, "only {acked_total} blocks acknowledged");
}
