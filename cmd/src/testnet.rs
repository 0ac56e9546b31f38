//! `kite testnet init`: the homes of a local network on 127.0.0.1.
//!
//! Node i listens p2p on base-port + 2i and JSON-RPC on base-port + 2i + 1.
//! `node0` is the leader; then come the other validators, the sentries and
//! the archival (blocks-only) nodes. One genesis is shared; a faucet key
//! holding the funds is written to `DIR/faucet.key`; `DIR/testnet.json`
//! lists every node for scripts.
//!
//! With `--hosts` the nodes listen on 0.0.0.0 and are reachable from the
//! network: `init` says so loudly on stderr ([`exposure_warning`]).

use anyhow::{Context, bail};
use kite_node::config::{Config, Role};
use kite_types::genesis::{Allocation, Validator};
use kite_types::{Genesis, NodeKey};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Balance of the faucet account.
pub const FAUCET_BALANCE: u64 = 1_000_000_000_000_000;

/// Arguments of `kite testnet init`.
#[derive(clap::Args, Debug)]
pub struct TestnetInitArgs {
    /// Print nothing on success (callers that print JSON).
    #[arg(skip)]
    pub quiet: bool,
    /// Folder to write the node homes into.
    #[arg(long, env = "KITE_TESTNET_OUT")]
    pub out: PathBuf,
    /// Validators, the leader (node0) included.
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Sentry nodes (follow, do not vote).
    #[arg(long, default_value_t = 1)]
    pub sentries: usize,
    /// Archival blocks-only nodes.
    #[arg(long, default_value_t = 1)]
    pub archival: usize,
    /// First port: node i uses base+2i (p2p) and base+2i+1 (rpc).
    #[arg(long, default_value_t = 26600)]
    pub base_port: u16,
    /// Chain id.
    #[arg(long, default_value = "kite-testnet")]
    pub chain_id: String,
    /// Replace an existing testnet folder.
    #[arg(long)]
    pub force: bool,
    /// Spread the nodes over these hosts (comma-separated DNS names or IPv4
    /// addresses; node i goes to host i mod n). Peers and RPC URLs use
    /// them. A node on a host name listens on 0.0.0.0, and
    /// DIR/docker-compose.yml runs one container per node (hostname = its
    /// host): the nodes are then reachable from the network, so run them on
    /// a private network or behind a firewall. A node on an IPv4 address
    /// listens on that address only (e.g. inside a network namespace).
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
}

/// One node of `testnet.json`.
#[derive(Debug, Serialize)]
pub struct NodeEntry {
    /// node0, node1, ...
    pub name: String,
    /// leader | validator | sentry | archival
    pub role: String,
    /// Its home folder.
    pub home: String,
    /// Its p2p multiaddr with /p2p/<peer id>.
    pub p2p: String,
    /// Its RPC URL.
    pub rpc: String,
    /// Its libp2p peer id.
    pub peer_id: String,
}

/// `testnet.json`.
#[derive(Debug, Serialize)]
pub struct TestnetFile {
    /// Chain id.
    pub chain_id: String,
    /// Every node.
    pub nodes: Vec<NodeEntry>,
}

/// Writes the testnet.
pub fn init(a: &TestnetInitArgs) -> anyhow::Result<()> {
    kite_types::validate_chain_id(&a.chain_id).map_err(anyhow::Error::msg)?;
    if a.validators == 0 {
        bail!("--validators must be at least 1 (node0 is the leader)");
    }
    let total = a.validators + a.sentries + a.archival;
    if total > 100 {
        bail!("{total} nodes is more than the 100 a local testnet supports");
    }
    let last_port = u32::from(a.base_port) + 2 * total as u32 - 1;
    if last_port > u32::from(u16::MAX) {
        bail!(
            "--base-port {} leaves no room for {total} nodes",
            a.base_port
        );
    }
    if a.out.join("testnet.json").exists() && !a.force {
        bail!(
            "{} already holds a testnet; use --force to replace it",
            a.out.display()
        );
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let out = std::fs::canonicalize(&a.out)?;
    // --force: the old homes go, stores included (a store belongs to the
    // genesis it was created with).
    for entry in std::fs::read_dir(&out)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_home = name
            .strip_prefix("node")
            .is_some_and(|n| n.parse::<u32>().is_ok());
        if is_home && entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing the old home {}", entry.path().display()))?;
        }
    }

    let keys: Vec<NodeKey> = (0..total).map(|_| NodeKey::generate()).collect();
    let faucet = NodeKey::generate();
    faucet.save(&out.join("faucet.key"), true)?;

    let mut genesis = Genesis::single(
        &a.chain_id,
        keys[0].public(),
        faucet.public(),
        FAUCET_BALANCE,
    );
    genesis.genesis_time_ms = now_ms();
    genesis.validators = keys[..a.validators]
        .iter()
        .enumerate()
        .map(|(i, k)| Validator {
            pub_key: k.public(),
            power: 1,
            name: format!("node{i}"),
        })
        .collect();
    genesis.allocations = vec![Allocation {
        account: faucet.public(),
        balance: FAUCET_BALANCE,
    }];
    genesis.validate()?;

    for h in &a.hosts {
        if h.is_empty()
            || !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            bail!("--hosts: {h:?} is not a host name");
        }
    }
    let port = |i: usize, off: usize| a.base_port as usize + 2 * i + off;
    let host_of = |i: usize| -> Option<&str> {
        (!a.hosts.is_empty()).then(|| a.hosts[i % a.hosts.len()].as_str())
    };
    let is_ip = |h: &str| h.parse::<std::net::Ipv4Addr>().is_ok();
    let p2p_addr = |i: usize| match host_of(i) {
        Some(h) if is_ip(h) => format!("/ip4/{h}/tcp/{}/p2p/{}", port(i, 0), keys[i].peer_id()),
        Some(h) => format!("/dns4/{h}/tcp/{}/p2p/{}", port(i, 0), keys[i].peer_id()),
        None => format!(
            "/ip4/127.0.0.1/tcp/{}/p2p/{}",
            port(i, 0),
            keys[i].peer_id()
        ),
    };
    // An IPv4 host is the node's own address (say, in a network namespace):
    // it listens there only. A host name listens on every interface.
    let bind_ip = |i: usize| match host_of(i) {
        None => "127.0.0.1",
        Some(h) if is_ip(h) => h,
        Some(_) => "0.0.0.0",
    };
    let mut nodes = Vec::with_capacity(total);
    for (i, key) in keys.iter().enumerate() {
        let (role, blocks_only, label) = if i == 0 {
            (Role::Leader, false, "leader")
        } else if i < a.validators {
            (Role::Validator, false, "validator")
        } else if i < a.validators + a.sentries {
            (Role::Sentry, false, "sentry")
        } else {
            (Role::Sentry, true, "archival")
        };
        let home = out.join(format!("node{i}"));
        write_home(&home, key, &genesis, |c| {
            c.role = role;
            c.blocks_only = blocks_only;
            c.p2p.listen = vec![format!("/ip4/{}/tcp/{}", bind_ip(i), port(i, 0))];
            c.p2p.peers = (0..total).filter(|j| *j != i).map(p2p_addr).collect();
            c.p2p.allow_private_addrs = true;
            c.rpc.listen = format!("{}:{}", bind_ip(i), port(i, 1));
            // `kite admin leader`, `kite peers ban` with --home.
            c.admin.listen = "unix:admin.sock".into();
            // testnet.json gives the RPC URL by host name: let it pass
            // the Host check.
            if let Some(h) = host_of(i) {
                c.rpc.allowed_hosts = vec![h.to_owned()];
            }
        })?;
        nodes.push(NodeEntry {
            name: format!("node{i}"),
            role: label.to_owned(),
            home: home.display().to_string(),
            p2p: p2p_addr(i),
            rpc: format!(
                "http://{}:{}",
                host_of(i).unwrap_or("127.0.0.1"),
                port(i, 1)
            ),
            peer_id: key.peer_id().to_string(),
        });
    }
    let file = TestnetFile {
        chain_id: a.chain_id.clone(),
        nodes,
    };
    std::fs::write(
        out.join("testnet.json"),
        serde_json::to_string_pretty(&file)? + "\n",
    )?;
    let names: Vec<String> = a.hosts.iter().filter(|h| !is_ip(h)).cloned().collect();
    if !names.is_empty() {
        std::fs::write(out.join("docker-compose.yml"), compose(&file, a.base_port))?;
    }
    if let Some(w) = exposure_warning(&names, a.base_port, total) {
        eprintln!("{w}");
    }
    if a.quiet {
        return Ok(());
    }
    println!(
        "testnet {} in {}: {} validators (node0 leads), {} sentries, {} archival; faucet key {}",
        a.chain_id,
        out.display(),
        a.validators,
        a.sentries,
        a.archival,
        out.join("faucet.key").display()
    );
    Ok(())
}

/// The warning `init` prints on stderr when `--hosts` makes the nodes
/// listen on every interface; `None` for a testnet on 127.0.0.1.
pub fn exposure_warning(hosts: &[String], base_port: u16, total: usize) -> Option<String> {
    if hosts.is_empty() {
        return None;
    }
    let last = u32::from(base_port) + 2 * total as u32 - 1;
    Some(format!(
        "WARNING: with --hosts every node listens on 0.0.0.0, all network interfaces: p2p \
         and JSON-RPC on TCP ports {base_port}-{last}, and docker-compose.yml publishes \
         them on every interface of each host. Anyone who can reach these hosts can call \
         the RPC (submit txs, read all state) and connect to the nodes. Run this testnet \
         on a private network only, or firewall ports {base_port}-{last} to the machines \
         that need them (docs/OPERATING.md, \"Across machines\")."
    ))
}

/// Writes one home: node_key, genesis.json, config.toml (defaults changed by `edit`).
pub fn write_home(
    home: &Path,
    key: &NodeKey,
    genesis: &Genesis,
    edit: impl FnOnce(&mut Config),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    key.save(&home.join("node_key"), true)?;
    genesis.save(&home.join("genesis.json"))?;
    let mut config = Config::default();
    edit(&mut config);
    std::fs::write(home.join("config.toml"), config.to_documented_toml())
        .with_context(|| format!("writing {}", home.join("config.toml").display()))?;
    Ok(())
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Arguments of `kite testnet status` / `kite testnet wait`.
#[derive(clap::Args, Debug)]
pub struct NetArgs {
    /// The testnet folder (holding testnet.json).
    #[arg(long, env = "KITE_TESTNET_OUT")]
    pub net: PathBuf,
    /// `wait`: the height every node must reach with the same block hash.
    #[arg(long, default_value_t = 2)]
    pub height: u64,
    /// `wait`: give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Print nothing on success (callers that print JSON).
    #[arg(skip)]
    pub quiet: bool,
}

#[derive(Debug, serde::Deserialize)]
struct NodeFileEntry {
    name: String,
    role: String,
    rpc: String,
    p2p: String,
}

#[derive(Debug, serde::Deserialize)]
struct NetFile {
    chain_id: String,
    nodes: Vec<NodeFileEntry>,
}

fn read_net(dir: &Path) -> anyhow::Result<NetFile> {
    let p = dir.join("testnet.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a testnet file", p.display()))
}

/// One node's height and the hash of its block at the probed height.
async fn probe(
    n: &NodeFileEntry,
    at: u64,
) -> anyhow::Result<(kite_node::rpc::StatusView, Option<kite_types::Hash>)> {
    let c = crate::client::Client::new(&n.rpc, std::time::Duration::from_secs(3))?;
    let s: kite_node::rpc::StatusView = c.call("status", serde_json::json!({})).await?;
    let hash = if s.height >= at {
        let b: kite_node::rpc::BlockView =
            c.call("block", serde_json::json!({"height": at})).await?;
        Some(b.hash)
    } else {
        None
    };
    Ok((s, hash))
}

/// `kite testnet status`: a table of the nodes and their heights.
pub async fn status(a: &NetArgs) -> anyhow::Result<()> {
    let net = read_net(&a.net)?;
    println!("testnet {}", net.chain_id);
    println!(
        "{:<7} {:<10} {:>8} {:>6} {:<24} p2p",
        "name", "role", "height", "peers", "rpc"
    );
    for n in &net.nodes {
        match probe(n, u64::MAX).await {
            Ok((s, _)) => println!(
                "{:<7} {:<10} {:>8} {:>6} {:<24} {}",
                n.name, n.role, s.height, s.peers, n.rpc, n.p2p
            ),
            Err(e) => println!(
                "{:<7} {:<10} {:>8} {:>6} {:<24} ({e:#})",
                n.name, n.role, "-", "-", n.rpc
            ),
        }
    }
    Ok(())
}

/// `kite testnet wait`: waits until every node holds the same block at
/// `--height`; fails after `--timeout` seconds naming the nodes behind.
pub async fn wait(a: &NetArgs) -> anyhow::Result<()> {
    let net = read_net(&a.net)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(a.timeout);
    loop {
        let mut hashes = Vec::new();
        let mut behind = Vec::new();
        for n in &net.nodes {
            match probe(n, a.height).await {
                Ok((_, Some(h))) => hashes.push(h),
                Ok((s, None)) => behind.push(format!("{} at height {}", n.name, s.height)),
                Err(e) => behind.push(format!("{}: {e:#}", n.name)),
            }
        }
        if behind.is_empty() {
            if hashes.windows(2).all(|w| w[0] == w[1]) {
                if a.quiet {
                    return Ok(());
                }
                println!(
                    "all {} nodes hold block {} at height {}",
                    net.nodes.len(),
                    hashes.first().map(|h| h.short()).unwrap_or_default(),
                    a.height
                );
                return Ok(());
            }
            bail!(
                "nodes hold different blocks at height {}: {hashes:?}",
                a.height
            );
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "not every node reached height {} within {}s: {}",
                a.height,
                a.timeout,
                behind.join("; ")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// A docker-compose file running every node of `net` in its own container,
/// each with the hostname of its host and its home mounted from the
/// testnet folder. The image (`KITE_IMAGE`, default `kite:latest`) is built
/// from the repository's Dockerfile.
pub fn compose(net: &TestnetFile, base_port: u16) -> String {
    let mut y = String::from(
        "# Generated by `kite testnet init --hosts ...`. Build the image first:\n\
         #   docker build -t kite:latest .\n\
         # then: docker compose up -d (from this folder).\n\
         services:\n",
    );
    for (i, n) in net.nodes.iter().enumerate() {
        let host = n
            .rpc
            .trim_start_matches("http://")
            .split(':')
            .next()
            .unwrap_or("localhost")
            .to_owned();
        let rpc_port = base_port as usize + 2 * i + 1;
        let p2p_port = base_port as usize + 2 * i;
        y.push_str(&format!(
            "  {name}:\n    image: ${{KITE_IMAGE:-kite:latest}}\n    hostname: {host}\n    \
             command: [\"kite\", \"start\", \"--home\", \"/kite/{name}\"]\n    \
             volumes:\n      - ./{name}:/kite/{name}\n    \
             ports:\n      - \"{p2p_port}:{p2p_port}\"\n      - \"{rpc_port}:{rpc_port}\"\n    \
             networks: [kite]\n    restart: unless-stopped\n",
            name = n.name,
        ));
    }
    y.push_str("networks:\n  kite: {}\n");
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_warn_that_the_nodes_are_reachable_from_the_network() {
        assert_eq!(exposure_warning(&[], 26600, 6), None);
        let w = exposure_warning(&["alpha".into(), "beta".into()], 26600, 2).unwrap_or_default();
        for needed in [
            "WARNING",
            "0.0.0.0",
            "26600-26603",
            "firewall",
            "private network",
        ] {
            assert!(w.contains(needed), "{needed:?} missing from: {w}");
        }
    }
}
