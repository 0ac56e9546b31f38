#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Issue 17: `kite bench net` completes on a small run, with its nodes
//! behind delay lines, and prints sane figures (no timing goal is
//! asserted: figures are for the benchmark's table, docs/PERFORMANCE.md),
//! and stops every node it started.

mod procs;

use procs::{assert_no_node_under, kite, ok};
use serde_json::Value;

#[test]
fn bench_net_small_run_prints_sane_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = kite(&[
        "bench",
        "net",
        "--quick",
        "--txs",
        "1000",
        "--senders",
        "16",
        "--rates",
        "200",
        "--rate-secs",
        "2",
        // The nodes talk through the delay lines (a superset of the
        // direct path: the same network, its peers rewritten).
        "--delay",
        "10ms",
        "--dir",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    let text = ok(&out);
    let b: Value = serde_json::from_str(&text).expect("--json prints JSON alone");
    let f = |v: &Value| v.as_f64().unwrap_or(-1.0);
    // The limits.
    for k in ["verify", "verify_small_batch", "verify_batch", "sha256"] {
        assert!(f(&b["limits"][k]["one"]) > 0.0, "{k}: {b}");
        assert!(f(&b["limits"][k]["two"]) > 0.0, "{k}: {b}");
    }
    assert!(f(&b["limits"]["durable_writes"]) > 0.0, "{b}");
    // The nodes' traffic crossed the delay lines.
    assert_eq!(b["delay_ms"], 10, "{b}");
    assert!(b["delayed_bytes"].as_u64().unwrap() > 0, "{b}");
    // Every tx accepted was committed, at some positive rate.
    let s = &b["saturation"];
    assert_eq!(s["submitted"], s["committed"], "{b}");
    assert!(s["committed"].as_u64().unwrap() > 0, "{b}");
    assert!(f(&s["committed_tps"]) > 0.0, "{b}");
    let ratio = f(&b["saturation_ratio"]);
    assert!(ratio > 0.0 && ratio < 10.0, "{b}");
    assert!(s["latency_ms"]["p50"].as_u64().unwrap() > 0, "{b}");
    let r = &b["rates"][0];
    assert_eq!(r["rate"], 200, "{b}");
    assert_eq!(r["submitted"], r["committed"], "{b}");
    // Every node used CPU and memory, and figures per tx are finite.
    let nodes = b["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    for n in nodes {
        assert!(f(&n["cpu_s"]) > 0.0, "{n}");
        assert!(f(&n["cpu_us_per_tx"]).is_finite(), "{n}");
        assert!(f(&n["rss_peak_mib"]) > 1.0, "{n}");
        assert!(f(&n["rss_idle_mib"]) > 1.0, "{n}");
        // The nodes' allocator figures reach the metrics.
        assert!(f(&n["heap_idle_mib"]) > 0.1, "{n}");
        assert!(f(&n["heap_after_mib"]) > 0.1, "{n}");
    }
    assert_no_node_under(dir.path());
}
