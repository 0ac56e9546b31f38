//! The node's `config.toml`: every key, its default, its documentation.
//!
//! Every key is optional (a missing key takes its default); an unknown key
//! is an error naming it. Durations are human text (`"1s"`, `"250ms"`),
//! sizes too (`"64KiB"`, `"200MiB"`). [`Config::to_documented_toml`]
//! renders a config with a comment above every key: `kite init` writes it,
//! and [`KEYS`] is also the list the `kite start` flags are made from
//! (`--p2p.listen`, env `KITE_P2P_LISTEN`, ...).

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// Largest config file accepted.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

pub use kite_types::Role;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// leader | validator | sentry; must agree with the genesis.
    pub role: Role,
    /// Archival mode: no mempool, no tx gossip, no votes.
    pub blocks_only: bool,
    /// Peer-to-peer networking.
    pub p2p: P2pConfig,
    /// JSON-RPC server.
    pub rpc: RpcConfig,
    /// Operator-only listener.
    pub admin: AdminConfig,
    /// Mempool limits.
    pub mempool: MempoolConfig,
    /// Commit engine timing.
    pub consensus: ConsensusConfig,
    /// Block sync.
    pub sync: SyncConfig,
    /// Storage.
    pub store: StoreConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[p2p]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct P2pConfig {
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Peers to connect to at start: multiaddrs ending in /p2p/<peer id>.
    pub peers: Vec<String>,
    /// Peer exchange on /kite/discover/1.0.0.
    pub pex: bool,
    /// Hand out and dial loopback and private addresses (local testnets).
    pub allow_private_addrs: bool,
    /// Private mode: accept only `whitelist` peers and validators.
    pub private: bool,
    /// Peer ids always allowed in private mode.
    pub whitelist: Vec<String>,
    /// Also listen on QUIC (the UDP port of the first TCP listen address).
    pub quic: bool,
    /// Most open connections.
    pub max_connections: u32,
    /// Most connections with one peer.
    pub max_connections_per_peer: u32,
    /// Most connections being set up at once.
    pub max_pending_connections: u32,
    /// Connections only this node's own dials may take.
    pub outbound_slots: u32,
    /// Most inbound connections from one IP address (0: no limit).
    pub max_inbound_per_ip: u32,
    /// Most inbound connections from one /24 or /48 network (0: no limit).
    pub max_inbound_per_subnet: u32,
    /// Process memory above which no new connection is taken or made
    /// (0: 90% of the machine's memory).
    pub max_memory: ByteSize,
    /// Bytes of served blocks held for peers at once (received tx batches
    /// get half as much again); one peer may hold a quarter. See
    /// [`crate::budget`].
    pub peer_buffer: ByteSize,
    /// Signature checks per second one peer may cost the node.
    pub max_sig_checks_per_peer: u32,
    /// Tx signature checks per second one peer may cost the node (txs
    /// it pushes, delivers after an announce or serves on a fetch).
    pub max_tx_checks_per_peer: u32,
    /// Connections the node tries to keep by dialing known peers.
    pub target_peers: u32,
    /// Most concurrent inbound streams per protocol.
    pub max_streams_per_protocol: u32,
    /// Misbehaviour score that gets a peer banned.
    pub ban_threshold: u32,
    /// How long a banned peer stays banned.
    #[serde(with = "humantime_serde")]
    pub ban_duration: Duration,
    /// How often unconfirmed txs are announced again.
    #[serde(with = "humantime_serde")]
    pub reannounce_interval: Duration,
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/26656".into()],
            peers: Vec::new(),
            pex: true,
            allow_private_addrs: false,
            private: false,
            whitelist: Vec::new(),
            quic: false,
            max_connections: 64,
            max_connections_per_peer: 2,
            max_pending_connections: 16,
            outbound_slots: 16,
            max_inbound_per_ip: 8,
            max_inbound_per_subnet: 16,
            max_memory: ByteSize::b(0),
            peer_buffer: ByteSize::mib(64),
            max_sig_checks_per_peer: 5000,
            max_tx_checks_per_peer: 20_000,
            target_peers: 16,
            max_streams_per_protocol: 64,
            ban_threshold: 100,
            ban_duration: Duration::from_secs(600),
            reannounce_interval: Duration::from_secs(10),
        }
    }
}

/// `[rpc]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcConfig {
    /// HOST:PORT of the JSON-RPC server; empty disables it.
    pub listen: String,
    /// Largest request body.
    pub max_body_size: ByteSize,
    /// Most concurrent requests.
    pub max_concurrent: u32,
    /// Longest a request may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest `broadcast_tx` with `wait: "commit"` waits.
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
    /// More `Host` values the server answers to (`name`, `name:port`), or
    /// `["*"]` for any; see [`crate::rpc::access`].
    #[serde(deserialize_with = "host_list")]
    pub allowed_hosts: Vec<String>,
    /// Origins of the web pages allowed to call the server
    /// (`scheme://host[:port]`, or `"*"`); empty: none.
    #[serde(deserialize_with = "origin_list")]
    pub cors_origins: Vec<String>,
}

/// `rpc.allowed_hosts`, each entry checked.
fn host_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    for entry in &list {
        crate::rpc::access::check_host_entry(entry).map_err(serde::de::Error::custom)?;
    }
    Ok(list)
}

/// `rpc.cors_origins`, each entry checked.
fn origin_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    for entry in &list {
        crate::rpc::access::check_origin_entry(entry).map_err(serde::de::Error::custom)?;
    }
    Ok(list)
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            listen: "127.0.0.1:26657".into(),
            max_body_size: ByteSize::mib(1),
            max_concurrent: 256,
            request_timeout: Duration::from_secs(10),
            commit_timeout: Duration::from_secs(30),
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where the operator-only JSON-RPC methods listen: `unix:PATH`
    /// (relative to the home), a loopback `IP:PORT`, or empty (off, the
    /// default). See [`crate::admin`].
    pub listen: String,
}

/// `[mempool]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolConfig {
    /// Most txs held.
    pub max_txs: u32,
    /// Most bytes of txs held.
    pub max_bytes: ByteSize,
    /// Largest tx admitted (never above the genesis max_tx_bytes).
    pub max_tx_bytes: ByteSize,
    /// Most pending txs of one sender.
    pub max_per_sender: u32,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_txs: 50_000,
            max_bytes: ByteSize::mib(200),
            max_tx_bytes: ByteSize::kib(64),
            max_per_sender: 1_000,
        }
    }
}

/// `[consensus]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusConfig {
    /// Leader: how long a proposal may wait for a quorum before a reset.
    #[serde(with = "humantime_serde")]
    pub round_timeout: Duration,
    /// How often a vote, a proposal, a term change or a commit announce is
    /// sent again to peers that have not answered.
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
    /// Validator: how long it waits for progress from the leader of its
    /// term (beyond the genesis propose and empty-block timeouts) before
    /// it moves to the next term; 0 never fails over.
    #[serde(with = "humantime_serde")]
    pub leader_timeout: Duration,
    /// The most the leader timeout doubles to while terms pass without a
    /// commit.
    #[serde(with = "humantime_serde")]
    pub leader_timeout_max: Duration,
    /// Leader: most txs in one block (besides the genesis byte bound), so
    /// that a round stays short under saturation.
    pub max_block_txs: u32,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        ConsensusConfig {
            round_timeout: Duration::from_secs(5),
            resend_interval: Duration::from_secs(1),
            leader_timeout: Duration::from_secs(3),
            leader_timeout_max: Duration::from_secs(30),
            max_block_txs: 6_000,
        }
    }
}

/// `[sync]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Heights fetched ahead of the committed one.
    pub window: u32,
    /// Bytes of fetched blocks held at most, about (the window shrinks for
    /// large blocks).
    pub buffer: ByteSize,
    /// Longest a block request may take before it goes to another peer.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How often sync progress is logged.
    #[serde(with = "humantime_serde")]
    pub log_interval: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            window: 512,
            buffer: ByteSize::mib(256),
            request_timeout: Duration::from_secs(10),
            log_interval: Duration::from_secs(5),
        }
    }
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Folder of the block store, relative to the home.
    pub dir: String,
    /// fsync every commit (survives power loss). Turning it off only
    /// survives a process crash.
    pub durable: bool,
    /// The store's page cache (sled), in memory.
    pub cache: ByteSize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            dir: "data".into(),
            durable: true,
            cache: ByteSize::mib(256),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Level or filter: error, warn, info, debug, trace, or a tracing
    /// filter such as "info,kite_node=debug".
    pub level: String,
    /// text | json
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Every key of the file: (section, key, what it means). The empty section
/// is the top level. Flags and env vars are made from this list.
pub const KEYS: &[(&str, &str, &str)] = &[
    (
        "",
        "role",
        "Role of this node: \"leader\", \"validator\" or \"sentry\". Must agree with genesis.json.",
    ),
    (
        "",
        "blocks_only",
        "Archival mode: no mempool and no tx gossip; only sync, verify and store blocks.",
    ),
    ("p2p", "listen", "Multiaddrs to listen on."),
    (
        "p2p",
        "peers",
        "Peers to connect to at start: multiaddrs ending in /p2p/<peer id>.",
    ),
    (
        "p2p",
        "pex",
        "Peer exchange (/kite/discover/1.0.0): learn and share peers.",
    ),
    (
        "p2p",
        "allow_private_addrs",
        "Share and dial loopback and private addresses (needed for local testnets).",
    ),
    (
        "p2p",
        "private",
        "Private mode: accept only the whitelist and the validators.",
    ),
    (
        "p2p",
        "whitelist",
        "Peer ids always allowed in private mode.",
    ),
    (
        "p2p",
        "quic",
        "Also listen on QUIC, on the UDP port of the first TCP listen address.",
    ),
    ("p2p", "max_connections", "Most open connections."),
    (
        "p2p",
        "max_connections_per_peer",
        "Most connections with one peer.",
    ),
    (
        "p2p",
        "max_pending_connections",
        "Most connections being set up at once.",
    ),
    (
        "p2p",
        "max_inbound_per_ip",
        "Most inbound connections from one IP address, 0 for no limit (validators, p2p.peers and the whitelist are not counted).",
    ),
    (
        "p2p",
        "max_inbound_per_subnet",
        "Most inbound connections from one /24 (IPv4) or /48 (IPv6) network, 0 for no limit (validators, p2p.peers and the whitelist are not counted).",
    ),
    (
        "p2p",
        "max_memory",
        "Process memory above which the node takes and makes no new connection (existing ones stay); \"0\" means 90% of the machine's memory.",
    ),
    (
        "p2p",
        "peer_buffer",
        "Bytes of blocks the node holds for its peers at once, until they are written (tx batches it receives get a separate pool of half this). One peer may hold a quarter, and always at least one block (the budget grows to one block if it is smaller). Beyond it, block answers end early and tx batches are declined (no penalty: the peer retries).",
    ),
    (
        "p2p",
        "max_sig_checks_per_peer",
        "Signature checks per second (and at once) one peer may cost the node: a commit announce costs one per signature, a proposal, reset or vote one. Beyond it they are dropped unchecked, without penalty (honest peers re-send).",
    ),
    (
        "p2p",
        "max_tx_checks_per_peer",
        "Tx signature checks per second one peer may cost the node: each tx it pushes, delivers after an announce or serves on a fetch that is not already in the mempool costs one (a batch larger than this takes the whole allowance). Beyond it the txs are dropped unchecked, without penalty: they come back with the next announce of another peer or the re-announce.",
    ),
    (
        "p2p",
        "outbound_slots",
        "Of max_connections, how many only this node's own dials may take (inbound peers cannot fill them).",
    ),
    (
        "p2p",
        "target_peers",
        "Connections the node keeps by dialing known peers.",
    ),
    (
        "p2p",
        "max_streams_per_protocol",
        "Most concurrent inbound streams per protocol; more are reset.",
    ),
    (
        "p2p",
        "ban_threshold",
        "Misbehaviour score at which a peer is disconnected and banned.",
    ),
    (
        "p2p",
        "ban_duration",
        "How long a banned peer stays banned.",
    ),
    (
        "p2p",
        "reannounce_interval",
        "How often unconfirmed txs are announced again.",
    ),
    (
        "rpc",
        "listen",
        "HOST:PORT of the JSON-RPC server (POST /rpc/v1, GET /health, GET /metrics); empty disables it.",
    ),
    ("rpc", "max_body_size", "Largest request body."),
    (
        "rpc",
        "max_concurrent",
        "Most requests served at once, /health and /metrics included; more get HTTP 503.",
    ),
    (
        "rpc",
        "request_timeout",
        "Longest a request may take, counted from its start: reading its body, /health, /metrics, and every call of a batch.",
    ),
    (
        "rpc",
        "commit_timeout",
        "Longest broadcast_tx with wait \"commit\" waits for the commit, counted from the start of the request (the batch too).",
    ),
    (
        "rpc",
        "allowed_hosts",
        "Host header values answered besides localhost, 127.0.0.1, [::1] and the listen address (any IP when listening on 0.0.0.0): \"name\" (any port) or \"name:port\"; [\"*\"] turns the check against DNS rebinding off.",
    ),
    (
        "rpc",
        "cors_origins",
        "Web page origins (\"https://wallet.example\") allowed to call the RPC from a browser; requests from any other origin get 403. \"*\" allows every page.",
    ),
    (
        "admin",
        "listen",
        "Where the operator-only methods (kite peers ban|unban|add|remove) listen: unix:PATH (relative to the home, mode 0600) or a loopback IP:PORT such as 127.0.0.1:26659; empty (the default) turns them off. Never reachable from other machines.",
    ),
    (
        "mempool",
        "max_txs",
        "Most txs held; when full, new txs are refused.",
    ),
    (
        "mempool",
        "max_bytes",
        "Most bytes of txs held; when full, new txs are refused.",
    ),
    (
        "mempool",
        "max_tx_bytes",
        "Largest tx admitted (the genesis max_tx_bytes caps it too).",
    ),
    (
        "mempool",
        "max_per_sender",
        "Most pending txs of one sender.",
    ),
    (
        "consensus",
        "round_timeout",
        "Leader: how long a proposal may wait for a quorum before it is reset and proposed again.",
    ),
    (
        "consensus",
        "resend_interval",
        "How often a vote, proposal, term change or commit announce is re-sent to peers that have not answered.",
    ),
    (
        "consensus",
        "leader_timeout",
        "Validator: how long it waits for progress from the leader (after the genesis empty-block timeout) before it moves to the next term and the next leader of the schedule; doubles while terms pass without a commit; 0 never fails over.",
    ),
    (
        "consensus",
        "leader_timeout_max",
        "The most the doubled leader timeout grows to.",
    ),
    (
        "consensus",
        "max_block_txs",
        "Leader: most txs in one block (the genesis max_block_bytes bounds it too), so a round stays short under saturation; 1 to 100000.",
    ),
    (
        "sync",
        "window",
        "Heights fetched ahead of the committed one during block sync (in requests of up to 32 consecutive heights, at most half of them from one peer).",
    ),
    (
        "sync",
        "buffer",
        "Bytes of fetched blocks block sync holds, about (up to twice this with the blocks being applied): the window shrinks when blocks are large.",
    ),
    (
        "sync",
        "request_timeout",
        "Longest a block request may take before it is asked of another peer (the next height to commit moves after a fifth of it when another peer holds it).",
    ),
    ("sync", "log_interval", "How often sync progress is logged."),
    (
        "store",
        "dir",
        "Folder of the block store, relative to the home.",
    ),
    (
        "store",
        "durable",
        "fsync every commit so a committed block survives power loss (false: survives a crash only).",
    ),
    (
        "store",
        "cache",
        "The store's page cache in memory (sled); part of the node's resident memory under load.",
    ),
    (
        "log",
        "level",
        "Log level or filter: error, warn, info, debug, trace, or e.g. \"info,kite_node=debug\".",
    ),
    ("log", "format", "Log format: \"text\" or \"json\"."),
];

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading the file failed.
    #[error("config file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Too large a file.
    #[error("config file {path} is {size} bytes, the maximum is {MAX_CONFIG_BYTES}")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
    },
    /// Not valid TOML for this config (toml names the key and line).
    #[error("config file {path}: {detail}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A `--section.key=value` override that does not fit.
    #[error("setting {key}: {detail}")]
    Override {
        /// The key.
        key: String,
        /// What is wrong.
        detail: String,
    },
}

impl Config {
    /// Reads `config.toml`; unknown keys are errors.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let size = std::fs::metadata(path)
            .map_err(|source| ConfigError::Io {
                path: p.clone(),
                source,
            })?
            .len();
        if size > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge { path: p, size });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|detail| ConfigError::Parse { path: p, detail })
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())
    }

    /// Sets one key from its text form (`"p2p.listen"`, `"/ip4/..."`), as
    /// a flag or env var does. Lists are comma-separated; the value is read
    /// as TOML when it parses as such (numbers, booleans), else as a string.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let err = |detail: String| ConfigError::Override {
            key: key.to_owned(),
            detail,
        };
        let (section, name) = key.split_once('.').unwrap_or(("", key));
        if !KEYS.iter().any(|(s, k, _)| *s == section && *k == name) {
            return Err(err("no such configuration key".into()));
        }
        let mut table = toml::Table::try_from(&*self).map_err(|e| err(e.to_string()))?;
        let slot = if section.is_empty() {
            &mut table
        } else {
            match table.get_mut(section).and_then(toml::Value::as_table_mut) {
                Some(t) => t,
                None => return Err(err("no such section".into())),
            }
        };
        let is_list = matches!(slot.get(name), Some(toml::Value::Array(_)));
        let parsed = if is_list {
            toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            )
        } else {
            scalar(value)
        };
        slot.insert(name.to_owned(), parsed);
        *self = table
            .try_into()
            .map_err(|e: toml::de::Error| err(e.to_string()))?;
        Ok(())
    }

    /// The config as TOML with every key documented above its value.
    pub fn to_documented_toml(&self) -> String {
        let table = toml::Table::try_from(self).unwrap_or_default();
        let mut out = String::from(
            "# Kite node configuration.\n\
             # Every key is optional: a missing key takes the default written by `kite init`.\n\
             # Unknown keys are an error. Durations: \"1s\", \"250ms\"; sizes: \"64KiB\", \"200MiB\".\n\
             # Each key can be overridden at start by a flag (--p2p.listen) or an env var\n\
             # (KITE_P2P_LISTEN).\n",
        );
        let mut current = None;
        for (section, key, doc) in KEYS {
            if current != Some(*section) {
                current = Some(*section);
                if !section.is_empty() {
                    out.push_str(&format!("\n[{section}]\n"));
                }
            }
            let value = if section.is_empty() {
                table.get(*key)
            } else {
                table
                    .get(*section)
                    .and_then(toml::Value::as_table)
                    .and_then(|t| t.get(*key))
            };
            if let Some(v) = value {
                out.push_str(&format!("\n# {doc}\n{key} = {v}\n"));
            }
        }
        out
    }
}

fn scalar(value: &str) -> toml::Value {
    let probe = format!("v = {value}");
    match toml::from_str::<toml::Table>(&probe) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_owned())),
        Err(_) => toml::Value::String(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_toml_round_trips() {
        let c = Config::default();
        let text = c.to_documented_toml();
        assert_eq!(Config::parse(&text).unwrap(), c);
        assert!(text.contains("ban_duration = \"10m\""), "{text}");
        assert!(
            text.contains("max_bytes = \"200.0 MiB\"") || text.contains("max_bytes = \"200 MiB\""),
            "{text}"
        );
        let mut other = Config {
            role: Role::Validator,
            ..Config::default()
        };
        other.p2p.peers = vec!["/ip4/127.0.0.1/tcp/1/p2p/x".into()];
        other.p2p.ban_duration = Duration::from_millis(1500);
        assert_eq!(Config::parse(&other.to_documented_toml()).unwrap(), other);
    }

    #[test]
    fn every_key_is_documented_and_every_documented_key_exists() {
        let table = toml::Table::try_from(Config::default()).unwrap();
        let mut n = 0;
        for (k, v) in &table {
            match v {
                toml::Value::Table(t) => {
                    for key in t.keys() {
                        n += 1;
                        assert!(
                            KEYS.iter().any(|(s, kk, _)| s == k && kk == key),
                            "{k}.{key} undocumented"
                        );
                    }
                }
                _ => {
                    n += 1;
                    assert!(
                        KEYS.iter().any(|(s, kk, _)| s.is_empty() && kk == k),
                        "{k} undocumented"
                    );
                }
            }
        }
        assert_eq!(n, KEYS.len());
    }

    /// docs/OPERATING.md documents every key with its flag and env var.
    #[test]
    fn operating_guide_lists_every_key() {
        let doc = include_str!("../../docs/OPERATING.md");
        for (section, key, _) in KEYS {
            let (flag, env) = if section.is_empty() {
                (
                    format!("--{}", key.replace('_', "-")),
                    format!("KITE_{}", key.to_uppercase()),
                )
            } else {
                (
                    format!("--{section}.{key}"),
                    format!("KITE_{}_{}", section.to_uppercase(), key.to_uppercase()),
                )
            };
            assert!(
                doc.contains(&format!("`{flag}`")),
                "OPERATING.md misses {flag}"
            );
            assert!(
                doc.contains(&format!("`{env}`")),
                "OPERATING.md misses {env}"
            );
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[p2p]\nlisten_addr = []\n").unwrap_err();
        assert!(e.contains("listen_addr"), "{e}");
        let e = Config::parse("colour = 1\n").unwrap_err();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn human_units() {
        let c =
            Config::parse("[mempool]\nmax_bytes = \"10MiB\"\n[rpc]\nrequest_timeout = \"250ms\"\n")
                .unwrap();
        assert_eq!(c.mempool.max_bytes, ByteSize::mib(10));
        assert_eq!(c.rpc.request_timeout, Duration::from_millis(250));
        assert!(Config::parse("[rpc]\nrequest_timeout = \"soon\"\n").is_err());
    }

    #[test]
    fn rpc_access_keys() {
        let c = Config::parse(
            "[rpc]\nallowed_hosts = [\"node.example\", \"10.0.0.5:26657\", \"[::1]:9\"]\ncors_origins = [\"https://wallet.example\"]\n",
        )
        .unwrap();
        assert_eq!(c.rpc.allowed_hosts.len(), 3);
        assert_eq!(c.rpc.cors_origins, ["https://wallet.example"]);
        let e = Config::parse("[rpc]\nallowed_hosts = [\"http://node.example\"]\n").unwrap_err();
        assert!(
            e.contains("rpc.allowed_hosts") && e.contains("http://node.example"),
            "{e}"
        );
        let e = Config::parse("[rpc]\ncors_origins = [\"wallet.example\"]\n").unwrap_err();
        assert!(
            e.contains("rpc.cors_origins") && e.contains("scheme://"),
            "{e}"
        );

        let mut c = Config::default();
        c.set("rpc.allowed_hosts", "*").unwrap();
        assert_eq!(c.rpc.allowed_hosts, ["*"]);
        c.set("rpc.allowed_hosts", "a.example, b.example:80")
            .unwrap();
        assert_eq!(c.rpc.allowed_hosts, ["a.example", "b.example:80"]);
        c.set("rpc.cors_origins", "http://localhost:3000").unwrap();
        assert_eq!(c.rpc.cors_origins, ["http://localhost:3000"]);
        let e = c.set("rpc.allowed_hosts", "a b").unwrap_err().to_string();
        assert!(e.contains("rpc.allowed_hosts"), "{e}");
        assert_eq!(Config::parse(&c.to_documented_toml()).unwrap(), c);
    }

    #[test]
    fn overrides() {
        let mut c = Config::default();
        c.set("role", "validator").unwrap();
        c.set("p2p.pex", "false").unwrap();
        c.set("p2p.peers", "/ip4/1.2.3.4/tcp/1, /ip4/1.2.3.5/tcp/2")
            .unwrap();
        c.set("rpc.listen", "127.0.0.1:9").unwrap();
        c.set("mempool.max_bytes", "1MiB").unwrap();
        c.set("consensus.round_timeout", "2s").unwrap();
        c.set("blocks_only", "true").unwrap();
        assert_eq!(c.role, Role::Validator);
        assert!(!c.p2p.pex && c.blocks_only);
        assert_eq!(c.p2p.peers.len(), 2);
        assert_eq!(c.rpc.listen, "127.0.0.1:9");
        assert_eq!(c.mempool.max_bytes, ByteSize::mib(1));
        assert_eq!(c.consensus.round_timeout, Duration::from_secs(2));
        assert!(c.set("p2p.nope", "1").is_err());
        assert!(c.set("role", "king").is_err());
        assert!(c.set("p2p.max_connections", "many").is_err());
    }
}
