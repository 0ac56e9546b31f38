//! Helpers for the tests that run real `kite` processes on 127.0.0.1: the
//! binary with a clean environment, a free port, and a guard that kills and
//! reaps exactly the process it holds, also when an assertion fails.
#![allow(dead_code)]

use std::process::{Child, Command, Output};
use std::time::Duration;

/// How long a process test waits for any one event.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Kills and reaps its process when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the `kite` binary with `args`, without `KITE_*` settings of the
/// environment that would change what it does.
pub fn kite(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kite"))
        .args(args)
        .env_remove("KITE_HOME")
        .env_remove("KITE_RPC")
        .output()
        .unwrap()
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The repository root.
pub fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Asserts the command succeeded; returns its stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A base port whose `2 * nodes` ports (p2p and RPC of each node) are free
/// on 127.0.0.1 right now.
pub fn free_base_port(nodes: u16) -> u16 {
    let mut seed = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    for _ in 0..50 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let base = 20_000 + (seed >> 33) as u16 % 30_000;
        let all_free = (0..2 * nodes).all(|i| {
            std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", base + i)).is_ok()
        });
        if all_free {
            return base;
        }
    }
    panic!("no free port range found");
}

/// A local testnet run by `testnet/up.sh` in a temporary folder; dropping it
/// runs `testnet/down.sh`, which stops exactly the processes it recorded.
pub struct Net {
    /// The testnet folder.
    pub dir: tempfile::TempDir,
    /// Its base port.
    pub base: u16,
    /// Settings given to the scripts and so to every node they start.
    pub env: Vec<(&'static str, &'static str)>,
}

impl Net {
    /// Runs `testnet/<name>` on this testnet.
    pub fn script(&self, name: &str, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(repo().join("testnet").join(name))
            .args(args)
            .env("KITE_BIN", env!("CARGO_BIN_EXE_kite"))
            .env("KITE_TESTNET_DIR", self.dir.path())
            .env("KITE_TESTNET_WAIT", "90")
            .envs(self.env.iter().copied())
            .output()
            .unwrap()
    }

    /// The `kite` binary with this testnet's settings.
    pub fn kite(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kite"))
            .args(args)
            .envs(self.env.iter().copied())
            .output()
            .unwrap()
    }

    /// Node `i`'s RPC URL.
    pub fn rpc_url(&self, i: u16) -> String {
        format!("http://127.0.0.1:{}", self.base + 2 * i + 1)
    }

    /// The pids `up.sh` (and restarts) recorded.
    pub fn pids(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(self.dir.path().join("pids")).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = self.script("down.sh", &[]);
    }
}

/// Asserts no process runs `kite start` on a home under `dir` (compared
/// by canonical path, as the testnet files hold it).
pub fn assert_no_node_under(dir: &std::path::Path) {
    let dir = std::fs::canonicalize(dir).unwrap();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        assert!(
            !cmd.contains(&format!("start --home {}", dir.display())),
            "a node still runs: {cmd}"
        );
    }
}
