//! `kite testnet chaos`: faults on a local testnet under a steady tx load,
//! then the checks that matter (docs/RELIABILITY.md):
//!
//! - every node holds the same block at every height;
//! - every block the watcher saw committed during the run (at each height,
//!   on the first validator that reported it) is the final chain's block
//!   there, and every tx in it is in the final chain (each tx of the load
//!   is unique, so a tx sent again after a lost nonce does not hide a lost
//!   one);
//! - every node reaches the highest height seen within `--settle` seconds
//!   once the faults stop;
//! - the load funded its senders and ran to the end.
//!
//! Two ways to run it:
//!
//! - on a testnet `testnet/up.sh` started on 127.0.0.1 (`--net DIR`);
//! - with `--netns`: the harness builds its own network of namespaces
//!   ([`crate::netns`]; root only), writes a fresh testnet of
//!   `--validators` into `--net DIR` with one address per node, starts the
//!   nodes there, runs itself in the bridge's namespace, and at the end
//!   stops the nodes and removes the namespaces. Only this mode can cut
//!   the network.
//!
//! Faults, one at a time (the validators keep a quorum: with 4 of them, one
//! may be down; the recovery of `stale-store` pauses a second one for the
//! time of a copy), every kind once per round in an order drawn from the
//! seed (how many rounds fit in `--duration` depends on the machine):
//!
//! - `kill-leader`: SIGKILL the node that leads, restart it a few seconds
//!   later;
//! - `kill`: SIGKILL a validator, restart it;
//! - `pause`: SIGSTOP a validator, leader included, SIGCONT it later;
//! - `stale-store`: SIGKILL a validator, keep a copy of its store, restart
//!   it; later SIGKILL it again and start it on the older copy, its promise
//!   file kept. It must refuse to start ("the store went back in time")
//!   exactly when its promise record is above the copy's tip + 1, and start
//!   otherwise; after a refusal the harness gives it a newer copy of the
//!   chain (the store of the live validator furthest ahead, copied while
//!   that one is stopped: what a crash would leave) and it must start;
//! - `partition` (`--netns` only): cut an island of validators (a
//!   minority; the leader in it half the time) off from the rest, heal it
//!   later.
//!
//! Restarted nodes are recorded in the testnet's `pids` file so
//! `testnet/down.sh` stops them too.
//!
//! It prints a summary (faults, txs, longest stall, time from each leader
//! kill to the first commit of a later term) and exits non-zero on any
//! violation.

use crate::client::Client;
use anyhow::{Context, bail};
use kite_node::rpc::{AccountView, BlockView, BroadcastResult, StatusView};
use kite_types::{Hash, NodeKey, Payload, PublicKey, Tx};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

use crate::netns::Lab;

/// Arguments of `kite testnet chaos`.
#[derive(clap::Args, Debug)]
pub struct ChaosArgs {
    /// The testnet folder (holding testnet.json and the homes).
    #[arg(long, env = "KITE_TESTNET_OUT")]
    pub net: PathBuf,
    /// Seed of the fault schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long faults are applied, seconds.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Mean time between two faults, seconds.
    #[arg(long, default_value_t = 8)]
    pub fault_every: u64,
    /// Faults to draw from: kill-leader, kill, pause, stale-store,
    /// partition (--netns only). Default: all that apply.
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// Build a network of namespaces and a fresh testnet in --net (root
    /// only; see the module docs).
    #[arg(long)]
    pub netns: bool,
    /// With --netns: the validators of the fresh testnet.
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Internal: the namespaces of a --netns run, for the harness that
    /// runs inside them.
    #[arg(long, hide = true)]
    pub in_lab: Option<String>,
    /// Offered load, tx/s (0: none).
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Longest wait for every node to reach the tip after the faults, s.
    #[arg(long, default_value_t = 120)]
    pub settle: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Deserialize)]
struct Entry {
    name: String,
    role: String,
    home: String,
    rpc: String,
}

#[derive(Debug, serde::Deserialize)]
struct NetFile {
    nodes: Vec<Entry>,
}

/// One node of the testnet, as the harness drives it.
struct Node {
    name: String,
    home: PathBuf,
    client: Client,
    key: PublicKey,
    validator: bool,
    /// A process the harness started (reaped when it dies).
    child: Option<Child>,
    /// The network namespace it runs in (`--netns`).
    ns: Option<String>,
}

impl Node {
    fn pid(&self) -> Option<u32> {
        if let Some(c) = &self.child {
            return Some(c.id());
        }
        std::fs::read_to_string(self.home.join("node.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the node's process runs: a process the harness started
    /// until it exits (its command line is the harness's own until it
    /// execs, so it is not read), else the recorded pid while it is a live
    /// `kite start` of this node's home.
    fn runs(&mut self) -> bool {
        if let Some(c) = &mut self.child {
            if matches!(c.try_wait(), Ok(None)) {
                return true;
            }
            self.child = None;
            return false;
        }
        let Some(pid) = self.pid() else {
            return false;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        cmd.contains(&format!("start --home {}", self.home.display())) && !stat.contains(") Z ")
    }

    fn signal(&mut self, sig: &str) -> anyhow::Result<()> {
        if !self.runs() {
            bail!("{} does not run", self.name);
        }
        let pid = self.pid().context("no pid")?;
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .context("running kill")?
            .success();
        if !ok {
            bail!("kill {sig} {pid} failed");
        }
        Ok(())
    }

    /// Starts the node again, recording its pid where `down.sh` finds it.
    /// It runs this very binary (`/proc/self/exe`: the one running, even if
    /// the file was rebuilt meanwhile).
    fn restart(&mut self, net: &Path) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.join("node.log"))?;
        let mut cmd = match &self.ns {
            Some(ns) => {
                // `ip netns exec` runs the program by path: this process's
                // binary by its pid (/proc/self/exe would be `ip` then).
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns])
                    .arg(format!("/proc/{}/exe", std::process::id()));
                c
            }
            None => Command::new("/proc/self/exe"),
        };
        let child = cmd
            .args(["start", "--home"])
            .arg(&self.home)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("restarting {}", self.name))?;
        let pid = child.id();
        std::fs::write(self.home.join("node.pid"), format!("{pid}\n"))?;
        let mut pids = std::fs::OpenOptions::new()
            .append(true)
            .open(net.join("pids"))?;
        writeln!(pids, "{pid} {}", self.home.display())?;
        self.child = Some(child);
        Ok(())
    }
}

/// What the watcher saw.
#[derive(Default)]
struct Seen {
    /// Highest height any node reported, and when it first did.
    tip: u64,
    tip_at: Option<Instant>,
    /// Longest time without a new height, ms.
    longest_stall_ms: u64,
    /// Leader kill not yet followed by a commit of a later term: when, the
    /// term and height then.
    pending_kill: Option<(Instant, u64, u64)>,
    failovers_ms: Vec<u64>,
    /// Txs seen in committed blocks during the run.
    committed: HashSet<Hash>,
    /// The block seen committed at each height during the run (the final
    /// chain must hold the same).
    hashes: BTreeMap<u64, Hash>,
    scanned: u64,
}

/// The fault kinds of a run: those asked for (checked), or every one that
/// applies.
fn fault_kinds(a: &ChaosArgs) -> anyhow::Result<Vec<String>> {
    const ALL: [&str; 5] = ["kill-leader", "kill", "pause", "stale-store", "partition"];
    let netns = a.netns || a.in_lab.is_some();
    if a.faults.is_empty() {
        return Ok(ALL
            .iter()
            .filter(|f| netns || **f != "partition")
            .map(|f| f.to_string())
            .collect());
    }
    for f in &a.faults {
        if !ALL.contains(&f.as_str()) {
            bail!("unknown fault {f:?}: expected one of {}", ALL.join(", "));
        }
        if f == "partition" && !netns {
            bail!("the partition fault needs --netns (the nodes in network namespaces)");
        }
    }
    Ok(a.faults.clone())
}

/// `--netns`, outside: builds the namespaces, runs the harness inside the
/// bridge's namespace, then stops whatever node is still recorded and
/// removes the namespaces (also when the run failed).
async fn run_in_lab(a: &ChaosArgs) -> anyhow::Result<()> {
    Lab::available()?;
    if a.validators < 3 {
        bail!("chaos needs at least 3 validators (a quorum must survive one fault)");
    }
    let lab = Lab::create(a.validators)?;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.push("--in-lab".into());
    args.push(lab.tag().into());
    let mut inner = tokio::process::Command::new("ip")
        .args(["netns", "exec", &lab.harness_ns()])
        .arg(format!("/proc/{}/exe", std::process::id()))
        .args(args)
        .spawn()
        .context("running the harness in its namespace")?;
    // Ctrl-C or SIGTERM: the harness inside stops, then the nodes and the
    // namespaces go as after a run.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let interrupted = tokio::select! {
        status = inner.wait() => match status {
            Ok(s) if s.success() => None,
            Ok(_) => Some("the chaos run failed (see above)"),
            Err(_) => Some("the chaos run could not be waited for"),
        },
        _ = tokio::signal::ctrl_c() => Some("interrupted"),
        _ = term.recv() => Some("terminated"),
    };
    if let Some(pid) = inner.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let _ = tokio::time::timeout(Duration::from_secs(15), inner.wait()).await;
        let _ = inner.kill().await;
    }
    stop_recorded(&a.net).await;
    drop(lab);
    match interrupted {
        Some(why) => bail!("{why}"),
        None => Ok(()),
    }
}

/// `--netns`, inside: a fresh testnet of `--validators` in `--net`, one
/// address per node, started in the nodes' namespaces.
async fn lay_out(a: &ChaosArgs, lab: &Lab) -> anyhow::Result<()> {
    let pids = std::fs::read_to_string(a.net.join("pids")).unwrap_or_default();
    if !pids.trim().is_empty() {
        bail!(
            "{} holds a testnet that may be running (its pids file is not empty): stop it with \
             testnet/down.sh, or give --netns another folder",
            a.net.display()
        );
    }
    crate::testnet::init(&crate::testnet::TestnetInitArgs {
        quiet: false,
        out: a.net.clone(),
        validators: a.validators,
        sentries: 0,
        archival: 0,
        base_port: 26600,
        chain_id: "kite-chaos".into(),
        force: true,
        hosts: (0..a.validators).map(|i| lab.ip(i)).collect(),
    })?;
    std::fs::write(a.net.join("pids"), "")?;
    Ok(())
}

/// Stops every process recorded in `net`'s `pids` file that still runs
/// `kite start` on its home: SIGTERM, then SIGKILL after 10 s.
async fn stop_recorded(net: &Path) {
    let text = std::fs::read_to_string(net.join("pids")).unwrap_or_default();
    let ours = |pid: &str, home: &str| {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .contains(&format!("start --home {home}"))
            && !stat.contains(") Z ")
    };
    let running: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(p, h)| ours(p, h))
        .map(|(p, h)| (p.to_owned(), h.to_owned()))
        .collect();
    for (pid, _) in &running {
        let _ = Command::new("kill").args(["-TERM", pid]).status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.iter().any(|(p, h)| ours(p, h)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (pid, home) in &running {
        if ours(pid, home) {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    // Stopped: nothing recorded runs any more (as after testnet/down.sh).
    let _ = std::fs::write(net.join("pids"), "");
}

/// Copies the folder `from` to `to` (which must not exist).
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Waits (at most 10 s) until node `n`'s killed process is gone.
async fn reaped(n: &mut Node) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while n.runs() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `stale-store`, first half: SIGKILL, keep a copy of the store, restart.
async fn stale_begin(n: &mut Node, net: &Path) -> anyhow::Result<()> {
    n.signal("-KILL")?;
    reaped(n).await;
    let snap = n.home.join("data.stale");
    if snap.exists() {
        std::fs::remove_dir_all(&snap)?;
    }
    copy_dir(&n.home.join("data"), &snap)?;
    n.restart(net)
}

/// How a node took the older copy of its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stale {
    /// It refused to start, and started on a live validator's store.
    Refused,
    /// It started on it (it had promised nothing above it).
    Accepted,
}

/// `stale-store`, second half: SIGKILL node `t` and start it on the copy
/// kept by [`stale_begin`], its promise file kept. It must refuse exactly
/// when it promised anything above the copy (the promise record's height
/// above the copy's tip + 1); then it gets a copy of the store of the live
/// validator that is furthest ahead (taken while that one is stopped, so
/// the copy is what a crash would leave) and must start on it.
async fn stale_end(nodes: &mut [Node], t: usize, net: &Path) -> anyhow::Result<Stale> {
    nodes[t].signal("-KILL")?;
    reaped(&mut nodes[t]).await;
    let home = nodes[t].home.clone();
    let data = home.join("data");
    let snap = home.join("data.stale");
    let genesis = kite_types::Genesis::load(&home.join("genesis.json"))?;
    let copy_tip = {
        let store = kite_blockstore::BlockStore::open(&snap, &genesis)
            .context("opening the older copy of the store")?;
        store.best()?.height
    };
    let promised = kite_node::promise_file::load(&kite_node::promise_file::path_in(&home))?
        .map_or(0, |p| p.height);
    let must_refuse = promised > copy_tip + 1;
    std::fs::remove_dir_all(&data)?;
    std::fs::rename(&snap, &data)?;
    let refused = start_and_watch(&mut nodes[t], net).await?;
    let name = nodes[t].name.clone();
    match (must_refuse, refused) {
        (false, None) => return Ok(Stale::Accepted),
        (false, Some(why)) => bail!(
            "{name} refused a store at height {copy_tip} though it promised nothing above height \
             {promised}: {why}"
        ),
        (true, None) => bail!(
            "{name} started on a store at height {copy_tip} though it promised height {promised}: \
             it could contradict what it signed"
        ),
        (true, Some(why)) if !why.contains("the store went back in time") => bail!(
            "{name} stopped on an older copy of its store without saying the store went back in \
             time: {why}"
        ),
        (true, Some(_)) => {}
    }
    // The operator's way out: a newer copy of the chain.
    let mut donor: Option<(usize, u64)> = None;
    for (i, n) in nodes.iter_mut().enumerate() {
        if i == t || !n.validator || !n.runs() {
            continue;
        }
        if let Ok(st) = n.client.call::<_, StatusView>("status", json!({})).await
            && donor.is_none_or(|(_, h)| st.height > h)
        {
            donor = Some((i, st.height));
        }
    }
    let (d, height) = donor.context("no live validator to copy a store from")?;
    if height + 1 < promised {
        bail!(
            "no live validator holds height {} to copy to {name}",
            promised - 1
        );
    }
    nodes[d].signal("-STOP")?;
    let copied = async {
        wait_stopped(nodes[d].pid().context("no pid")?).await;
        std::fs::remove_dir_all(&data)?;
        copy_dir(&nodes[d].home.join("data"), &data)
    }
    .await;
    nodes[d].signal("-CONT")?;
    copied?;
    if let Some(why) = start_and_watch(&mut nodes[t], net).await? {
        bail!(
            "{name} did not start on a copy of {}'s store: {why}",
            nodes[d].name
        );
    }
    Ok(Stale::Refused)
}

/// Starts node `n` and watches it for 10 s: None when it still runs, else
/// what it wrote to its log since the start.
async fn start_and_watch(n: &mut Node, net: &Path) -> anyhow::Result<Option<String>> {
    let log = n.home.join("node.log");
    let from = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
    n.restart(net)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while n.runs() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if n.runs() {
        return Ok(None);
    }
    let text = std::fs::read(&log).unwrap_or_default();
    let since = text.get(from..).unwrap_or_default();
    let tail = &since[since.len().saturating_sub(2048)..];
    Ok(Some(String::from_utf8_lossy(tail).into_owned()))
}

/// Waits (at most 2 s) until every thread of `pid` is stopped (SIGSTOP
/// returns before they all are).
async fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
        let all = tasks.map(|d| {
            d.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat"))
                    .ok()
                    .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('T')))
                    .unwrap_or(true)
            })
        });
        if all.unwrap_or(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `partition`: an island of validators, a minority, with the leader in it
/// half the time.
fn island(nodes: &[Node], leader: Option<usize>, rng: &mut StdRng) -> Vec<usize> {
    let vals: Vec<usize> = (0..nodes.len()).filter(|i| nodes[*i].validator).collect();
    let most = (vals.len() - 1) / 2;
    let size = rng.random_range(1..=most.max(1));
    let mut pool = vals.clone();
    let mut out = Vec::new();
    if let Some(l) = leader
        && rng.random_bool(0.5)
    {
        out.push(l);
        pool.retain(|i| *i != l);
    }
    while out.len() < size && !pool.is_empty() {
        let k = rng.random_range(0..pool.len());
        out.push(pool.swap_remove(k));
    }
    out
}

/// `kite testnet chaos`.
pub async fn chaos(a: &ChaosArgs) -> anyhow::Result<()> {
    let faults = fault_kinds(a)?;
    if a.netns && a.in_lab.is_none() {
        return run_in_lab(a).await;
    }
    let lab = a.in_lab.as_deref().map(|t| Lab::attach(t, a.validators));
    if let Some(lab) = &lab {
        lay_out(a, lab).await?;
    }
    let text = std::fs::read_to_string(a.net.join("testnet.json"))
        .with_context(|| format!("no testnet in {}: run testnet/up.sh", a.net.display()))?;
    let file: NetFile = serde_json::from_str(&text).context("reading testnet.json")?;
    let mut nodes = Vec::new();
    for e in file.nodes {
        let home = PathBuf::from(&e.home);
        let key = NodeKey::load(&home.join("node_key"))
            .with_context(|| format!("{}: reading its node key", e.name))?
            .public();
        nodes.push(Node {
            name: e.name,
            client: Client::new(&e.rpc, Duration::from_secs(3))?,
            home,
            key,
            validator: e.role == "leader" || e.role == "validator",
            child: None,
            ns: lab.as_ref().map(|l| l.node_ns(nodes.len())),
        });
    }
    if lab.is_some() {
        for n in nodes.iter_mut() {
            n.restart(&a.net)?;
        }
        crate::testnet::wait(&crate::testnet::NetArgs {
            net: a.net.clone(),
            height: 2,
            timeout: 90,
            quiet: false,
        })
        .await
        .context("the testnet in the namespaces did not come up")?;
    }
    let validators = nodes.iter().filter(|n| n.validator).count();
    if validators < 3 {
        bail!("chaos needs at least 3 validators (a quorum must survive one fault)");
    }
    let clients: Vec<Client> = nodes
        .iter()
        .filter(|n| n.validator)
        .map(|n| n.client.clone())
        .collect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let submitted = Arc::new(AtomicU64::new(0));
    let funded = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load_task(
        a.net.join("faucet.key"),
        clients.clone(),
        a.rate,
        stop.clone(),
        submitted.clone(),
        funded.clone(),
    ));
    let watcher = tokio::spawn(watch_task(clients.clone(), seen.clone(), stop.clone()));

    let mut rng = StdRng::seed_from_u64(a.seed);
    let mut applied: BTreeMap<String, u64> = BTreeMap::new();
    let mut stale: BTreeMap<String, u64> = BTreeMap::new();
    let start = Instant::now();
    let end = start + Duration::from_secs(a.duration);
    let mut violations: Vec<String> = Vec::new();
    // The load's senders are funded before the first fault.
    let fund_deadline = Instant::now() + Duration::from_secs(90);
    while !funded.load(Ordering::Relaxed) && !load.is_finished() {
        if Instant::now() > fund_deadline {
            violations.push("the load did not fund its senders within 90 s".into());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every kind once per round, in an order drawn from the seed (so a
    // run long enough for one round applies each kind).
    let mut round: Vec<String> = Vec::new();
    while violations.is_empty() && !load.is_finished() && Instant::now() < end {
        if round.is_empty() {
            round = faults.clone();
            for i in (1..round.len()).rev() {
                round.swap(i, rng.random_range(0..=i));
            }
        }
        let Some(kind) = round.pop() else {
            break;
        };
        let hold = Duration::from_millis(rng.random_range(1_000..6_000));
        let target = match kind.as_str() {
            "kill-leader" => leader_index(&nodes).await,
            // The island is drawn below.
            "partition" => Some(0),
            _ => {
                let vals: Vec<usize> = (0..nodes.len()).filter(|i| nodes[*i].validator).collect();
                Some(vals[rng.random_range(0..vals.len())])
            }
        };
        let Some(t) = target else {
            // No leader right now: the same kind again shortly.
            round.push(kind);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut name = nodes[t].name.clone();
        let r = match (kind.as_str(), &lab) {
            ("pause", _) => nodes[t].signal("-STOP"),
            ("stale-store", _) => stale_begin(&mut nodes[t], &a.net).await,
            ("partition", Some(lab)) => {
                let leader = leader_index(&nodes).await;
                let cut = island(&nodes, leader, &mut rng);
                name = cut
                    .iter()
                    .map(|i| nodes[*i].name.as_str())
                    .collect::<Vec<_>>()
                    .join("+");
                lab.partition(&cut)
            }
            _ => {
                let status = nodes[t]
                    .client
                    .call::<_, StatusView>("status", json!({}))
                    .await;
                let r = nodes[t].signal("-KILL");
                if kind == "kill-leader"
                    && r.is_ok()
                    && let Ok(st) = status
                {
                    seen.lock().await.pending_kill = Some((Instant::now(), st.term, st.height));
                }
                r
            }
        };
        if let Err(e) = r {
            violations.push(format!("{kind} {name}: {e}"));
            break;
        }
        *applied.entry(kind.clone()).or_default() += 1;
        eprintln!(
            "{} chaos: {kind} {name} for {} ms",
            crate::testnet::now_ms(),
            hold.as_millis()
        );
        tokio::time::sleep(hold).await;
        let healed = match (kind.as_str(), &lab) {
            ("pause", _) => nodes[t].signal("-CONT"),
            ("partition", Some(lab)) => lab.heal(),
            ("stale-store", _) => stale_end(&mut nodes, t, &a.net).await.map(|s| {
                eprintln!("chaos: {name} on an older store: {s:?}");
                *stale.entry(format!("{s:?}").to_lowercase()).or_default() += 1;
            }),
            _ => {
                // Reap the killed process before starting it again.
                reaped(&mut nodes[t]).await;
                nodes[t].restart(&a.net)
            }
        };
        if let Err(e) = healed {
            violations.push(format!("healing {kind} of {name}: {e}"));
            break;
        }
        let gap = a.fault_every.max(1) * 1000;
        let gap = rng.random_range(gap / 2..=gap * 3 / 2);
        tokio::time::sleep(Duration::from_millis(gap)).await;
    }
    let fault_secs = start.elapsed().as_secs_f64();

    // Settle: every node at one tip, with the same blocks.
    stop.store(true, Ordering::Relaxed);
    match load.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => violations.push(format!("the load failed: {e:#}")),
        Err(e) => violations.push(format!("the load task failed: {e}")),
    }
    let _ = watcher.await;
    for n in nodes.iter_mut() {
        if !n.runs() {
            violations.push(format!("{} is not running at the end", n.name));
        }
    }
    // Settle: every node at or above the highest height any node reports
    // now (blocks may still come) and the highest the watcher saw.
    let settle_start = Instant::now();
    let seen_tip = seen.lock().await.tip;
    let target = heights(&nodes)
        .await
        .into_iter()
        .max()
        .unwrap_or(0)
        .max(seen_tip)
        .max(1);
    let tip = loop {
        let heights = heights(&nodes).await;
        let min = heights.iter().copied().min().unwrap_or(0);
        if min >= target {
            break Some(min);
        }
        if settle_start.elapsed() > Duration::from_secs(a.settle) {
            violations.push(format!(
                "the nodes did not reach one tip in {} s: heights {heights:?}",
                a.settle
            ));
            break None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let settle_ms = settle_start.elapsed().as_millis() as u64;
    let mut final_txs: HashSet<Hash> = HashSet::new();
    if let Some(tip) = tip {
        for h in 1..=tip {
            let mut reference: Option<BlockView> = None;
            for n in &nodes {
                match n
                    .client
                    .call::<_, BlockView>("block", json!({"height": h}))
                    .await
                {
                    Ok(b) => match &reference {
                        None => reference = Some(b),
                        Some(r) if r.hash != b.hash => violations.push(format!(
                            "{} holds block {} at height {h}, {} holds {}",
                            n.name, b.hash, nodes[0].name, r.hash
                        )),
                        Some(_) => {}
                    },
                    Err(e) => violations.push(format!("{}: no block {h}: {e}", n.name)),
                }
            }
            if let Some(r) = reference {
                if let Some(was) = seen.lock().await.hashes.get(&h)
                    && *was != r.hash
                {
                    violations.push(format!(
                        "height {h}: block {was} was seen committed during the run, the final \
                         chain holds {}",
                        r.hash
                    ));
                }
                final_txs.extend(r.txs);
            }
        }
    }
    let s = seen.lock().await;
    let lost = s.committed.difference(&final_txs).count();
    if tip.is_some() && lost > 0 {
        violations.push(format!(
            "{lost} txs seen committed during the run are not in the final chain"
        ));
    }
    let mut fo = s.failovers_ms.clone();
    fo.sort_unstable();
    let kills = applied.get("kill-leader").copied().unwrap_or(0);
    let summary = json!({
        "seed": a.seed,
        "fault_secs": fault_secs,
        "faults": applied,
        "txs_submitted": submitted.load(Ordering::Relaxed),
        "txs_committed": s.committed.len(),
        "committed_tps": s.committed.len() as f64 / fault_secs.max(1e-9),
        "tip": tip,
        "longest_stall_ms": s.longest_stall_ms,
        "settle_ms": settle_ms,
        "leader_kills": kills,
        "stale_store": stale,
        "failover_ms": {
            "count": fo.len(),
            "p50": fo.get(fo.len() / 2),
            "max": fo.last(),
        },
        "violations": violations,
    });
    if a.json {
        println!("{summary}");
    } else {
        println!(
            "chaos, seed {}: {fault_secs:.0} s of faults {applied:?}",
            a.seed
        );
        println!(
            "txs: {} submitted, {} committed ({:.0} tx/s); tip {tip:?}, all nodes equal after {settle_ms} ms",
            submitted.load(Ordering::Relaxed),
            s.committed.len(),
            s.committed.len() as f64 / fault_secs.max(1e-9)
        );
        println!(
            "longest stall (no new height anywhere): {} ms",
            s.longest_stall_ms
        );
        println!(
            "leader kills: {kills}; kill to first commit of a later term: {} measured, p50 {:?} ms, max {:?} ms",
            fo.len(),
            fo.get(fo.len() / 2),
            fo.last()
        );
        for v in &violations {
            println!("VIOLATION: {v}");
        }
    }
    if lab.is_some() {
        // The nodes were started here: they stop here.
        stop_recorded(&a.net).await;
    }
    if !violations.is_empty() {
        bail!("{} violation(s)", violations.len());
    }
    Ok(())
}

/// The node that leads now: the leader named by the validators in the
/// highest settled term they report (asked with a short deadline; a paused
/// node does not answer).
async fn leader_index(nodes: &[Node]) -> Option<usize> {
    let mut best: Option<(u64, PublicKey)> = None;
    for n in nodes.iter().filter(|n| n.validator) {
        if let Ok(st) = n.client.call::<_, StatusView>("status", json!({})).await
            && st.term_settled
            && let Some(l) = st.leader
            && best.is_none_or(|(t, _)| st.term > t)
        {
            best = Some((st.term, l));
        }
    }
    let (_, key) = best?;
    nodes.iter().position(|n| n.key == key)
}

async fn heights(nodes: &[Node]) -> Vec<u64> {
    let mut out = Vec::new();
    for n in nodes {
        let h = n
            .client
            .call::<_, StatusView>("status", json!({}))
            .await
            .map_or(0, |s| s.height);
        out.push(h);
    }
    out
}

/// Follows the tip over every validator; notes stalls, failovers and the
/// txs of each new block.
async fn watch_task(clients: Vec<Client>, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        for c in &clients {
            let Ok(st) = c.call::<_, StatusView>("status", json!({})).await else {
                continue;
            };
            let mut s = seen.lock().await;
            let now = Instant::now();
            if st.height > s.tip {
                if let Some(at) = s.tip_at {
                    let gap = now.duration_since(at).as_millis() as u64;
                    s.longest_stall_ms = s.longest_stall_ms.max(gap);
                }
                s.tip = st.height;
                s.tip_at = Some(now);
            }
            if let Some((at, term, height)) = s.pending_kill
                && st.term > term
                && st.height > height
            {
                s.failovers_ms
                    .push(now.duration_since(at).as_millis() as u64);
                s.pending_kill = None;
            }
            // The txs of the blocks this node has and the watcher has not
            // scanned yet.
            while s.scanned < st.height {
                let h = s.scanned + 1;
                drop(s);
                let b = c.call::<_, BlockView>("block", json!({"height": h})).await;
                s = seen.lock().await;
                match b {
                    Ok(b) => {
                        s.committed.extend(b.txs);
                        s.hashes.insert(h, b.hash);
                        s.scanned = s.scanned.max(h);
                    }
                    Err(_) => break,
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Funds senders, then offers `rate` transfers per second to random
/// validators until stopped (refusals and unreachable nodes are skipped).
async fn load_task(
    faucet: PathBuf,
    clients: Vec<Client>,
    rate: u64,
    stop: Arc<AtomicBool>,
    submitted: Arc<AtomicU64>,
    funded: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    if rate == 0 {
        funded.store(true, Ordering::Relaxed);
        return Ok(());
    }
    let faucet = NodeKey::load(&faucet)?;
    let senders: Vec<NodeKey> = (0..16).map(|_| NodeKey::generate()).collect();
    // Funded through whichever validator answers (no fault runs yet).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0usize;
    let chain = loop {
        let c = &clients[attempt % clients.len()];
        attempt += 1;
        let tried = async {
            let st: StatusView = c.call("status", json!({})).await?;
            crate::bench::fund(c, &faucet, &st.chain_id, &senders, 1_000_000_000).await?;
            Ok::<_, anyhow::Error>(st.chain_id)
        };
        match tried.await {
            Ok(chain) => break chain,
            Err(e) if Instant::now() > deadline => {
                return Err(e.context("funding the load's senders"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    funded.store(true, Ordering::Relaxed);
    // Each tx unique (a random amount): a tx re-sent after its nonce was
    // lost is a new tx, so a committed tx that disappears is noticed.
    let mut amounts = StdRng::seed_from_u64(rand::random());
    let sink = NodeKey::generate().public();
    let mut nonces = vec![1u64; senders.len()];
    // Per sender: its last committed nonce and since when. A tx accepted by
    // a node that is then killed may be lost with its mempool, leaving a
    // nonce gap: a sender whose committed nonce has not moved for a while
    // starts again after it.
    let mut progress: Vec<(u64, Instant)> = vec![(0, Instant::now()); senders.len()];
    let mut resync_at = Instant::now() + Duration::from_secs(2);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut next = tokio::time::Instant::now();
    let mut k = 0usize;
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= resync_at {
            resync_at = Instant::now() + Duration::from_secs(2);
            for (i, s) in senders.iter().enumerate() {
                let c = &clients[(k + i) % clients.len()];
                let Ok(acct) = c
                    .call::<_, AccountView>("account", json!({"id": s.public()}))
                    .await
                else {
                    continue;
                };
                if acct.nonce != progress[i].0 {
                    progress[i] = (acct.nonce, Instant::now());
                } else if nonces[i] > acct.nonce + 1
                    && progress[i].1.elapsed() > Duration::from_secs(6)
                {
                    nonces[i] = acct.nonce + 1;
                    progress[i].1 = Instant::now();
                }
            }
            next = tokio::time::Instant::now();
        }
        tokio::time::sleep_until(next).await;
        next += interval;
        let i = k % senders.len();
        k += 1;
        let tx = Tx::sign(
            &senders[i],
            &chain,
            nonces[i],
            Payload::Transfer {
                to: sink,
                amount: amounts.random_range(1..=1_000),
            },
        );
        let c = &clients[k % clients.len()];
        let body = json!({"tx": hex::encode(tx.encode())});
        // A node that is down or paused refuses or times out: the same
        // nonce is tried on the next node.
        if c.call::<_, BroadcastResult>("broadcast_tx", body)
            .await
            .is_ok()
        {
            nonces[i] += 1;
            submitted.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}
