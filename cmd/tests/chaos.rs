//! The chaos harness on real processes: a 4-validator testnet on
//! 127.0.0.1 under load, the leader killed and validators killed or paused
//! (`kite testnet chaos`, fixed seed, short run); it must end with one
//! chain on every node holding every tx seen committed. The long runs are
//! in docs/RELIABILITY.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod procs;

use procs::{Net, free_base_port, ok};
use std::time::Duration;

#[test]
fn chaos_short_fixed_seed() {
    let net = Net {
        dir: tempfile::tempdir().unwrap(),
        base: free_base_port(4),
        // Failover in about a second, so a short run holds several.
        env: vec![("KITE_CONSENSUS_LEADER_TIMEOUT", "1s")],
    };
    let base = net.base.to_string();
    ok(&net.script(
        "up.sh",
        &[
            "--validators",
            "4",
            "--sentries",
            "0",
            "--archival",
            "0",
            "--base-port",
            &base,
        ],
    ));
    let dir = net.dir.path().to_str().unwrap();
    let out = net.kite(&[
        "testnet",
        "chaos",
        "--net",
        dir,
        "--seed",
        "3",
        "--duration",
        "25",
        "--fault-every",
        "3",
        "--rate",
        "50",
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary: serde_json::Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no summary: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(out.status.success(), "violations: {summary}");
    let faults: u64 = summary["faults"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(faults >= 3, "{summary}");
    assert!(summary["txs_committed"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["violations"].as_array().unwrap().is_empty());
    // Every process the harness restarted is recorded, so down.sh stops
    // them all.
    let pids = net.pids();
    drop(net);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let alive = |p: &u32| std::path::Path::new(&format!("/proc/{p}")).exists();
    while pids.iter().any(alive) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in &pids {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "process {p} still runs"
        );
    }
}
