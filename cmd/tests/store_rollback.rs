//! With real processes on 127.0.0.1: a leader restarted from an older copy
//! of its block store refuses to start (exit status 1, one `error:` line
//! that names the store's height, the height its promise file holds and
//! the way out), because its promise file, kept beside the node key and
//! not in the store, says it already proposed higher. A normal restart
//! from its own store starts. Every process the test starts is killed by a
//! guard, also when an assertion fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod procs;

use kite_types::Promise;
use procs::{DEADLINE, Proc, free_port, kite};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `kite start` on loopback, RPC on `rpc_port`, its output to `log`.
fn start(home: &Path, rpc_port: u16, log: &Path) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    let rpc = format!("127.0.0.1:{rpc_port}");
    Proc(
        Command::new(env!("CARGO_BIN_EXE_kite"))
            .args([
                "start",
                "--home",
                home.to_str().unwrap(),
                "--p2p.listen",
                "/ip4/127.0.0.1/tcp/0",
                "--p2p.allow_private_addrs",
                "true",
                "--rpc.listen",
                &rpc,
            ])
            .env_remove("KITE_HOME")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// The node's height from `kite status`, once it answers.
fn height(rpc_port: u16) -> Option<u64> {
    let out = kite(&[
        "status",
        "--rpc",
        &format!("http://127.0.0.1:{rpc_port}"),
        "--json",
    ]);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["height"].as_u64()
}

/// Waits until the node commits `at_least`, then returns its height.
fn wait_height(node: &mut Proc, rpc_port: u16, at_least: u64, log: &Path) -> u64 {
    let t0 = Instant::now();
    loop {
        if let Some(h) = height(rpc_port).filter(|h| *h >= at_least) {
            return h;
        }
        assert!(
            node.0.try_wait().unwrap().is_none(),
            "the node exited: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        assert!(t0.elapsed() < DEADLINE, "the node never reached {at_least}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for the process to exit by itself.
fn wait_exit(node: &mut Proc, log: &Path) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = node.0.try_wait().unwrap() {
            return s;
        }
        assert!(
            t0.elapsed() < DEADLINE,
            "the node did not exit: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops the node cleanly (SIGTERM to exactly this process) and waits.
fn stop(mut node: Proc, log: &Path) {
    let pid = node.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let status = wait_exit(&mut node, log);
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn a_leader_restarted_from_an_older_copy_of_its_store_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = kite(&[
        "init",
        "--home",
        home.to_str().unwrap(),
        "--chain-id",
        "kite-rb",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Empty blocks every 100 ms, so the heights move fast.
    let genesis = home.join("genesis.json");
    let mut g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&genesis).unwrap()).unwrap();
    g["empty_block_timeout"] = "100ms".into();
    std::fs::write(&genesis, serde_json::to_string_pretty(&g).unwrap()).unwrap();
    let (data, old) = (home.join("data"), dir.path().join("data-old"));

    // First run, then an older copy of its store, taken while it is stopped.
    let (port, log) = (free_port(), dir.path().join("run1.log"));
    let mut node = start(&home, port, &log);
    wait_height(&mut node, port, 3, &log);
    stop(node, &log);
    copy_dir(&data, &old);

    // Second run from its own store and record: it starts, and goes on.
    let (port, log) = (free_port(), dir.path().join("run2.log"));
    let mut node = start(&home, port, &log);
    let h = wait_height(&mut node, port, 1, &log);
    wait_height(&mut node, port, h + 3, &log);
    stop(node, &log);
    let promise = std::fs::read(home.join("promise")).unwrap();
    let promised = Promise::decode(&promise).unwrap().height;

    // The older copy back in place.
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&old, &data);
    let (port, log) = (free_port(), dir.path().join("run3.log"));
    let mut node = start(&home, port, &log);
    let status = wait_exit(&mut node, &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {text}"));
    eprintln!("the refusal: {line}");
    assert!(
        line.starts_with("error: this node's store ends at height "),
        "{line}"
    );
    let tip: u64 = line["error: this node's store ends at height ".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(tip >= 3 && tip + 1 < promised, "{tip} {promised}: {line}");
    assert!(
        line.contains(&format!("already proposed at height {promised}")),
        "{line}"
    );
    assert!(line.contains("fresh home"), "{line}");
    assert!(
        line.contains(&format!("height {} or later", promised - 1)),
        "{line}"
    );
    let file = home.join("promise").display().to_string();
    assert!(line.contains(&format!("(promise file {file})")), "{line}");
    assert!(!text.contains("panicked"), "{text}");
    // The refusal comes before the node starts anything.
    assert!(!text.contains("node started"), "{text}");
}
