//! With real processes on 127.0.0.1: a node started with another genesis
//! than the peer it is told to join (`--p2p.peers`) exits by itself with
//! a failure status and one clear line that names the mismatch and what to
//! check; the peer keeps running. Its log, written to a file, has no
//! colour codes. Every process the test starts is killed
//! by a guard, also when an assertion fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod procs;

use procs::{DEADLINE, Proc, free_port};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `kite`, which must succeed; returns its standard output.
fn kite(args: &[&str]) -> String {
    let out = procs::kite(args);
    assert!(
        out.status.success(),
        "kite {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kite start` on loopback with no RPC, its output to `log`.
fn start(home: &Path, listen: &str, peers: &str, log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    let mut args = vec![
        "start",
        "--home",
        home.to_str().unwrap(),
        "--p2p.listen",
        listen,
        "--p2p.allow_private_addrs",
        "true",
        "--rpc.listen",
        "",
    ];
    if !peers.is_empty() {
        args.extend(["--p2p.peers", peers]);
    }
    Proc(
        Command::new(env!("CARGO_BIN_EXE_kite"))
            .args(&args)
            .env_remove("KITE_HOME")
            // Colour or not must follow from the output being a file alone.
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

#[test]
fn a_node_with_another_genesis_than_its_peers_exits_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // Same chain id, another genesis: each home has its own leader key.
    for h in [&a, &b] {
        kite(&[
            "init",
            "--home",
            h.to_str().unwrap(),
            "--chain-id",
            "kite-g",
        ]);
    }
    let shown = kite(&[
        "key",
        "show",
        "--key",
        a.join("node_key").to_str().unwrap(),
        "--json",
    ]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let a_id = shown["peer_id"].as_str().unwrap().to_owned();

    let port = free_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut node_a = start(&a, &listen, "", &dir.path().join("a.log"));
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < DEADLINE, "node a never listened");
        assert!(node_a.0.try_wait().unwrap().is_none(), "node a exited");
        std::thread::sleep(Duration::from_millis(50));
    }

    let b_log = dir.path().join("b.log");
    let peers = format!("{listen}/p2p/{a_id}");
    let mut node_b = start(&b, "/ip4/127.0.0.1/tcp/0", &peers, &b_log);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = node_b.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < DEADLINE,
            "node b did not stop: {}",
            std::fs::read_to_string(&b_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&b_log).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    let line = log
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {log}"));
    assert!(
        line.starts_with("error: halted: genesis mismatch: 1 of the 1 peers in p2p.peers ("),
        "{line}"
    );
    assert!(line.contains(&a_id), "{line}");
    assert!(line.contains("genesis.json"), "{line}");
    assert!(!log.contains("panicked"), "{log}");
    // A log written to a file carries no ANSI colour codes.
    assert!(log.contains("INFO"), "no log lines: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log file: {log:?}"
    );
    // The node it tried to join is unharmed.
    assert!(node_a.0.try_wait().unwrap().is_none(), "node a stopped too");
}
