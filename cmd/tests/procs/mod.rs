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
