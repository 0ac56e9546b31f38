//! The `kite` binary as a user runs it: key and init commands, and errors
//! as one clear line with a non-zero exit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::{Command, Output};

fn kite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kite"))
        .args(args)
        .env_remove("KITE_HOME")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_lists_every_command() {
    let out = kite(&["--help"]);
    assert!(out.status.success());
    let s = text(&out.stdout);
    for cmd in [
        "init", "key", "start", "testnet", "tx", "status", "block", "peers", "bench",
    ] {
        assert!(s.contains(cmd), "help misses {cmd}: {s}");
    }
}

#[test]
fn key_gen_and_show_agree() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let k = key.to_str().unwrap();
    let out = kite(&["key", "gen", "--out", k]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let public = text(&out.stdout).trim().to_owned();
    assert_eq!(public.len(), 64);
    let out = kite(&["key", "show", "--key", k, "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["public_key"], public.as_str());
    assert!(v["peer_id"].as_str().unwrap().starts_with("12D3KooW"));
    // A second gen refuses to overwrite.
    let out = kite(&["key", "gen", "--out", k]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("already exists"));
}

#[test]
fn bad_key_file_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, "not a key").unwrap();
    let out = kite(&["key", "show", "--key", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("64 hex characters"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"));
}

#[test]
fn init_writes_a_valid_home_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let h = home.to_str().unwrap();
    let out = kite(&["init", "--home", h, "--chain-id", "kite-t1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let genesis = kite_types::Genesis::load(&home.join("genesis.json")).unwrap();
    let key = kite_types::NodeKey::load(&home.join("node_key")).unwrap();
    assert_eq!(genesis.chain_id, "kite-t1");
    assert_eq!(genesis.leader, key.public());
    assert_eq!(genesis.validators.len(), 1);
    assert!(
        genesis
            .allocations
            .iter()
            .any(|a| a.account == key.public() && a.balance > 0)
    );
    let config = kite_node::config::Config::load(&home.join("config.toml")).unwrap();
    assert_eq!(config.role, kite_node::config::Role::Leader);

    let out = kite(&["init", "--home", h]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--force"));
    // The key did not change.
    assert_eq!(
        kite_types::NodeKey::load(&home.join("node_key"))
            .unwrap()
            .public(),
        key.public()
    );

    let out = kite(&["init", "--home", h, "--force"]);
    assert!(out.status.success());
    assert_ne!(
        kite_types::NodeKey::load(&home.join("node_key"))
            .unwrap()
            .public(),
        key.public()
    );

    let out = kite(&["init", "--home", h, "--force", "--chain-id", "bad id"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("chain id"));
}

#[test]
fn testnet_init_lays_out_homes_ports_and_compose() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("net");
    let o = out.to_str().unwrap();
    let r = kite(&[
        "testnet",
        "init",
        "--out",
        o,
        "--validators",
        "3",
        "--sentries",
        "1",
        "--archival",
        "1",
        "--base-port",
        "31000",
    ]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("testnet.json")).unwrap()).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 5);
    let roles: Vec<&str> = nodes.iter().map(|n| n["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        ["leader", "validator", "validator", "sentry", "archival"]
    );
    assert_eq!(nodes[2]["rpc"], "http://127.0.0.1:31005");
    assert!(
        nodes[2]["p2p"]
            .as_str()
            .unwrap()
            .starts_with("/ip4/127.0.0.1/tcp/31004/p2p/12D3KooW")
    );
    let genesis = kite_types::Genesis::load(&out.join("node4/genesis.json")).unwrap();
    assert_eq!(genesis.validators.len(), 3);
    let faucet = kite_types::NodeKey::load(&out.join("faucet.key")).unwrap();
    assert!(
        genesis
            .allocations
            .iter()
            .any(|a| a.account == faucet.public())
    );
    let c4 = kite_node::config::Config::load(&out.join("node4/config.toml")).unwrap();
    assert!(c4.blocks_only);
    assert_eq!(c4.role, kite_node::config::Role::Sentry);
    assert_eq!(c4.p2p.peers.len(), 4);
    // Replacing needs --force, and replaces the old homes with their stores.
    assert!(!kite(&["testnet", "init", "--out", o]).status.success());
    std::fs::create_dir_all(out.join("node4/data")).unwrap();
    let r = kite(&[
        "testnet",
        "init",
        "--out",
        o,
        "--force",
        "--validators",
        "2",
        "--sentries",
        "0",
        "--archival",
        "0",
        "--hosts",
        "alpha,beta",
    ]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let compose = std::fs::read_to_string(out.join("docker-compose.yml")).unwrap();
    assert!(compose.contains("hostname: alpha") && compose.contains("hostname: beta"));
    assert!(!out.join("node4").exists(), "old homes are removed");
    let c1 = kite_node::config::Config::load(&out.join("node1/config.toml")).unwrap();
    assert_eq!(c1.rpc.listen, "0.0.0.0:26603");
    assert!(c1.p2p.peers[0].starts_with("/dns4/alpha/tcp/26600/p2p/"));
}
