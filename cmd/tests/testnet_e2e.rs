//! End to end, with real processes on 127.0.0.1: `testnet/up.sh` starts a
//! leader, 3 validators, a sentry and an archival node; txs go in through
//! the CLI at different nodes; every node (the archival one included) ends
//! up with the same block at every height; `testnet/down.sh` leaves no
//! process behind (a guard runs it even when an assertion fails).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod procs;

use procs::{Net, free_base_port, ok};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const NODES: u16 = 6;

fn kite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kite"))
        .args(args)
        .output()
        .unwrap()
}

/// One JSON-RPC call over a plain HTTP/1.1 connection.
fn rpc(url: &str, method: &str, params: Value) -> Value {
    let addr = url.trim_start_matches("http://");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /rpc/v1 HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let json_start = resp.find("\r\n\r\n").unwrap() + 4;
    serde_json::from_str(&resp[json_start..]).unwrap()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

#[test]
fn testnet_up_txs_everywhere_down() {
    let net = Net {
        dir: tempfile::tempdir().unwrap(),
        base: free_base_port(NODES),
        env: Vec::new(),
    };
    let base = net.base.to_string();
    let up = net.script(
        "up.sh",
        &[
            "--validators",
            "4",
            "--sentries",
            "1",
            "--archival",
            "1",
            "--base-port",
            &base,
        ],
    );
    ok(&up);
    let pids = net.pids();
    assert_eq!(pids.len(), NODES as usize);
    let faucet = net.dir.path().join("faucet.key");
    let faucet = faucet.to_str().unwrap();
    let rcpt = tempfile::NamedTempFile::new().unwrap();
    let to = ok(&kite(&[
        "key",
        "gen",
        "--force",
        "--out",
        rcpt.path().to_str().unwrap(),
    ]));
    let to = to.trim();

    // Txs through a validator, the sentry and the leader, waited for.
    let mut last_height = 0;
    for (i, node) in [1u16, 4, 0].iter().enumerate() {
        let out = ok(&kite(&[
            "tx",
            "transfer",
            "--rpc",
            &net.rpc_url(*node),
            "--key",
            faucet,
            "--to",
            to,
            "--amount",
            &(10 + i).to_string(),
            "--wait",
        ]));
        let h: u64 = out.split_whitespace().last().unwrap().parse().unwrap();
        last_height = last_height.max(h);
    }
    // An operator hands leadership to node2 through the leader's admin
    // listener; node2 leads the next blocks (the put below commits there).
    let node0 = net.dir.path().join("node0");
    let out = ok(&kite(&[
        "admin",
        "leader",
        "--to",
        "node2",
        "--home",
        node0.to_str().unwrap(),
    ]));
    assert!(out.contains("hands over to node2"), "{out}");
    let node2 = ok(&kite(&[
        "key",
        "show",
        "--key",
        net.dir.path().join("node2/node_key").to_str().unwrap(),
        "--json",
    ]));
    let node2: Value = serde_json::from_str(&node2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = rpc(&net.rpc_url(1), "status", json!({}))["result"].clone();
        if st["term"].as_u64() > Some(0)
            && st["term_settled"] == true
            && st["leader"] == node2["public_key"]
        {
            break;
        }
        assert!(Instant::now() < deadline, "node2 does not lead: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = ok(&kite(&[
        "tx",
        "put",
        "--rpc",
        &net.rpc_url(2),
        "--key",
        faucet,
        "color",
        "blue",
        "--wait",
    ]));
    last_height = last_height.max(out.split_whitespace().last().unwrap().parse().unwrap());

    // The archival node refuses txs with a clear error.
    let out = kite(&[
        "tx",
        "transfer",
        "--rpc",
        &net.rpc_url(5),
        "--key",
        faucet,
        "--to",
        to,
        "--amount",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("blocks-only"));

    // Every node reaches the last tx's height with the same block there.
    ok(&Command::new(env!("CARGO_BIN_EXE_kite"))
        .args([
            "testnet",
            "wait",
            "--net",
            net.dir.path().to_str().unwrap(),
            "--height",
            &last_height.to_string(),
            "--timeout",
            "60",
        ])
        .output()
        .unwrap());

    // Identical block hashes at every height on every node, and the same
    // state: the receiver's balance and the key-value entry.
    let faucet_pk = ok(&kite(&["key", "show", "--key", faucet, "--json"]));
    let faucet_pk: Value = serde_json::from_str(&faucet_pk).unwrap();
    for h in 1..=last_height {
        let reference =
            rpc(&net.rpc_url(0), "block", json!({"height": h}))["result"]["hash"].clone();
        assert!(reference.is_string(), "leader has no block {h}");
        for i in 1..NODES {
            let got = rpc(&net.rpc_url(i), "block", json!({"height": h}))["result"]["hash"].clone();
            assert_eq!(got, reference, "node{i} differs at height {h}");
        }
    }
    for i in 0..NODES {
        let acct = rpc(&net.rpc_url(i), "account", json!({"id": to}));
        assert_eq!(acct["result"]["balance"], 10 + 11 + 12, "node{i}: {acct}");
        let kv = rpc(
            &net.rpc_url(i),
            "kv_get",
            json!({"owner": faucet_pk["public_key"], "key": "color"}),
        );
        assert_eq!(kv["result"]["value"], "blue", "node{i}: {kv}");
    }
    // The archival node holds no mempool.
    let st = rpc(&net.rpc_url(5), "status", json!({}));
    assert_eq!(st["result"]["blocks_only"], true);
    assert_eq!(st["result"]["mempool"]["txs"], 0);

    // down.sh stops exactly the recorded processes.
    ok(&net.script("down.sh", &[]));
    let deadline = Instant::now() + Duration::from_secs(15);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in &pids {
        assert!(!alive(*p), "process {p} still runs after down.sh");
    }
}
