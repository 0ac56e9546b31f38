//! The libp2p host of a Kite node.
//!
//! Bird's-eye view:
//! - [`Host::spawn`] builds a swarm (TCP + Noise + Yamux, QUIC as an option,
//!   DNS) whose identity is the node's ed25519 key, with identify (protocol
//!   version `/kite/<chain_id>`: peers of another chain are dropped and
//!   banned), ping, connection limits, a gate for bans and private mode, and
//!   [`streams`] for Kite's own protocols. The swarm runs in its own task.
//! - The rest of the node talks to it through a cloneable [`HostHandle`]
//!   (bounded command channel; streams are opened directly through the
//!   [`streams::Control`], with a deadline) and receives [`HostEvent`]s
//!   on a bounded channel that drops (and counts) events rather than block
//!   the swarm.
//! - [`spawn_accept_loop`] drains the inbound streams of one protocol and
//!   runs a handler task per stream, at most `max_concurrent` at once: a
//!   stream beyond that is reset at once and counted, as is a stream beyond
//!   the protocol's inbound buffer ([`streams`]).
//! - Misbehaviour: [`HostHandle::report`] adds a penalty to the peer's
//!   score; past [`HostConfig::ban_threshold`] the peer is disconnected and
//!   banned for [`HostConfig::ban_duration`]: the gate refuses it.
//! - Peer discovery: the [`store::PeerStore`] (persisted as JSON in the
//!   home) keeps addresses, dial backoff and bans; the host dials known peers
//!   while it has fewer than [`HostConfig::target_peers`] connections.
//!   [`HostHandle::known_peers`] and [`HostHandle::add_discovered`] are what
//!   the `/kite/discover/1.0.0` exchange needs.

mod accept;
pub mod addr;
mod gate;
mod handle;
mod host;
pub mod keys;
pub mod net;
pub mod store;
pub mod streams;

pub use accept::{per_peer_share, spawn_accept_loop};
pub use handle::{HostHandle, OperatorOp, OperatorOutcome};
pub use host::Host;
pub use libp2p::{Multiaddr, PeerId};
pub use net::{Counters, Incoming, NetStream, Network, ProtocolCounters, Stream, StreamStats};

use std::path::PathBuf;
use std::time::Duration;

/// Name of the peer store file in the node's home.
pub const PEER_STORE_FILE: &str = "peers.json";

/// How long a peer of another chain (or genesis, or run of the chain)
/// stays connected after this node found out, so that it can read this
/// node's identify and status and find out too; it is banned then.
pub const OTHER_CHAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Configuration of the host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Chain id: identify announces `/kite/<chain_id>` and drops peers of
    /// another chain.
    pub chain_id: String,
    /// Addresses to listen on (`/ip4/0.0.0.0/tcp/26656`, port 0 for tests).
    pub listen: Vec<Multiaddr>,
    /// Peers dialed at start and kept in the store for good: multiaddrs
    /// ending in `/p2p/<peer id>` (addresses without an id are dialed at
    /// start and when the node has no connection at all).
    pub bootstrap: Vec<Multiaddr>,
    /// Most established connections.
    pub max_connections: u32,
    /// Of those, how many only this host's own dials may take (inbound
    /// peers get at most `max_connections - outbound_slots`, at least 1).
    pub outbound_slots: u32,
    /// Process memory (resident bytes) above which no new connection is
    /// taken or made; None: 90% of the machine's memory.
    pub max_memory: Option<u64>,
    /// Most inbound connections from one IP address (0: no limit); the
    /// genesis validators, bootstrap peers and whitelisted peers are not
    /// counted.
    pub max_inbound_per_ip: u32,
    /// Most inbound connections from one /24 (IPv4) or /48 (IPv6) network
    /// (0: no limit); the same peers are not counted.
    pub max_inbound_per_subnet: u32,
    /// Most established connections with one peer.
    pub max_per_peer: u32,
    /// Most connections being set up at once, each way.
    pub max_pending: u32,
    /// Connections the host tries to keep by dialing known peers.
    pub target_peers: u32,
    /// Also listen on QUIC (`/udp/<port>/quic-v1` beside the first TCP address).
    pub enable_quic: bool,
    /// Peer exchange: when off, [`HostHandle::known_peers`] hands out
    /// nothing and [`HostHandle::add_discovered`] ignores what it is given.
    pub pex: bool,
    /// Store, dial and hand out loopback and private addresses (local testnets).
    pub allow_private_addrs: bool,
    /// Private mode: connect only with `whitelist`, `validators` and
    /// `bootstrap` peers.
    pub private_mode: bool,
    /// Peers always allowed in private mode.
    pub whitelist: Vec<PeerId>,
    /// Validators' peer ids (allowed in private mode).
    pub validators: Vec<PeerId>,
    /// Misbehaviour score at which a peer is disconnected and banned.
    pub ban_threshold: u32,
    /// How long a ban lasts.
    pub ban_duration: Duration,
    /// Misbehaviour points forgiven per minute.
    pub score_decay_per_minute: u32,
    /// The peer store file (in the node's home); `None` keeps it in memory.
    pub peer_store_path: Option<PathBuf>,
    /// Most peers kept in the store (capped at [`store::MAX_PEERS`]).
    pub peer_store_capacity: usize,
    /// How often the peer store is saved when it changed.
    pub save_interval: Duration,
    /// A connection with no stream open for this long is closed.
    pub idle_timeout: Duration,
    /// Deadline to open an outbound stream (connect included).
    pub open_timeout: Duration,
    /// Longest an inbound stream handler may run (see [`spawn_accept_loop`]).
    pub stream_timeout: Duration,
    /// A peer that has not identified itself this long after connecting is dropped.
    pub identify_timeout: Duration,
    /// How often the host checks its connections, dials toward the target
    /// and forgives scores.
    pub maintenance_interval: Duration,
    /// First dial backoff of a failing peer; it doubles on every failure.
    pub dial_backoff: Duration,
    /// Longest dial backoff.
    pub max_dial_backoff: Duration,
    /// Capacity of the [`HostEvents`] channel.
    pub event_buffer: usize,
    /// Capacity of the handle's command channel.
    pub command_buffer: usize,
}

impl HostConfig {
    /// The defaults for chain `chain_id`, listening on nothing.
    pub fn new(chain_id: impl Into<String>) -> HostConfig {
        HostConfig {
            chain_id: chain_id.into(),
            listen: Vec::new(),
            bootstrap: Vec::new(),
            max_connections: 64,
            outbound_slots: 16,
            max_inbound_per_ip: 8,
            max_inbound_per_subnet: 16,
            max_memory: None,
            max_per_peer: 2,
            max_pending: 16,
            target_peers: 16,
            enable_quic: false,
            pex: true,
            allow_private_addrs: false,
            private_mode: false,
            whitelist: Vec::new(),
            validators: Vec::new(),
            ban_threshold: 100,
            ban_duration: Duration::from_secs(600),
            score_decay_per_minute: 10,
            peer_store_path: None,
            peer_store_capacity: store::MAX_PEERS,
            save_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(3600),
            open_timeout: Duration::from_secs(10),
            stream_timeout: Duration::from_secs(60),
            identify_timeout: Duration::from_secs(15),
            maintenance_interval: Duration::from_secs(5),
            dial_backoff: Duration::from_secs(2),
            max_dial_backoff: Duration::from_secs(600),
            event_buffer: 1024,
            command_buffer: 1024,
        }
    }

    /// The host configuration of the node's `[p2p]` config section.
    /// `validators` are the genesis validators' peer ids (see
    /// [`keys::peer_id_of`]); `peer_store_path` is usually
    /// `<home>/`[`PEER_STORE_FILE`]. Errors name the key that does not parse.
    pub fn from_node_config(
        p2p: &crate::config::P2pConfig,
        chain_id: &str,
        validators: Vec<PeerId>,
        peer_store_path: Option<PathBuf>,
    ) -> Result<HostConfig, HostError> {
        fn addrs(key: &str, list: &[String]) -> Result<Vec<Multiaddr>, HostError> {
            list.iter()
                .map(|s| {
                    s.parse().map_err(|e| {
                        HostError::InvalidConfig(format!(
                            "p2p.{key}: {s:?} is not a multiaddr: {e}"
                        ))
                    })
                })
                .collect()
        }
        let whitelist = p2p
            .whitelist
            .iter()
            .map(|s| {
                s.parse().map_err(|e| {
                    HostError::InvalidConfig(format!("p2p.whitelist: {s:?} is not a peer id: {e}"))
                })
            })
            .collect::<Result<Vec<PeerId>, HostError>>()?;
        let mut c = HostConfig::new(chain_id);
        c.listen = addrs("listen", &p2p.listen)?;
        c.bootstrap = addrs("peers", &p2p.peers)?;
        c.pex = p2p.pex;
        c.allow_private_addrs = p2p.allow_private_addrs;
        c.private_mode = p2p.private;
        c.whitelist = whitelist;
        c.validators = validators;
        c.enable_quic = p2p.quic;
        c.max_connections = p2p.max_connections;
        c.outbound_slots = p2p.outbound_slots;
        c.max_inbound_per_ip = p2p.max_inbound_per_ip;
        c.max_inbound_per_subnet = p2p.max_inbound_per_subnet;
        c.max_memory = (p2p.max_memory.as_u64() > 0).then(|| p2p.max_memory.as_u64());
        c.max_per_peer = p2p.max_connections_per_peer;
        c.max_pending = p2p.max_pending_connections;
        c.target_peers = p2p.target_peers;
        c.ban_threshold = p2p.ban_threshold;
        c.ban_duration = p2p.ban_duration;
        c.peer_store_path = peer_store_path;
        Ok(c)
    }

    /// The identify protocol version of this chain: `/kite/<chain_id>`.
    pub fn protocol_version(&self) -> String {
        format!("/kite/{}", self.chain_id)
    }
}

/// Errors of the host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The node key could not be turned into a libp2p identity.
    #[error("node key is not a valid libp2p identity: {0}")]
    Identity(String),
    /// The configuration is unusable.
    #[error("invalid p2p config: {0}")]
    InvalidConfig(String),
    /// A transport could not be built.
    #[error("building the p2p transport failed: {0}")]
    Transport(String),
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {reason} (is the port taken or the address wrong?)")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// What went wrong.
        reason: String,
    },
    /// The host has shut down.
    #[error("the p2p host has shut down")]
    Closed,
    /// Something did not finish before its deadline (retryable).
    #[error("timed out {0}")]
    Timeout(String),
    /// A stream could not be opened (retryable, possibly with another peer).
    #[error("opening {protocol} with {peer} failed: {reason}")]
    OpenStream {
        /// The peer.
        peer: PeerId,
        /// The protocol.
        protocol: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The peer does not speak the protocol.
    #[error("{peer} does not support {protocol}")]
    UnsupportedProtocol {
        /// The peer.
        peer: PeerId,
        /// The protocol.
        protocol: &'static str,
    },
    /// A protocol id that is not `/`-prefixed.
    #[error("invalid protocol id {0:?}: it must start with '/'")]
    InvalidProtocol(String),
    /// Inbound streams of this protocol are already being accepted.
    #[error("inbound streams of {0} are already accepted elsewhere")]
    AlreadyAccepting(&'static str),
    /// Dialing an address failed at once.
    #[error("cannot dial {addr}: {reason}")]
    Dial {
        /// The address.
        addr: Multiaddr,
        /// What went wrong.
        reason: String,
    },
}

impl HostError {
    /// Whether trying again (later, or with another peer) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            HostError::Timeout(_) | HostError::OpenStream { .. } | HostError::Dial { .. }
        )
    }
}

/// What the host tells the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    /// The first connection with a peer is up.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// Its address on this connection.
        addr: Multiaddr,
    },
    /// The last connection with a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A peer of our chain identified itself (once per connection period).
    PeerIdentified {
        /// The peer.
        peer: PeerId,
        /// Its identify protocol version (`/kite/<chain_id>`).
        protocol_version: String,
        /// The addresses it listens on, as it says.
        listen_addrs: Vec<Multiaddr>,
    },
    /// A peer identified itself as a node of another chain (identify
    /// protocol version); the host bans it after [`OTHER_CHAIN_GRACE`].
    OtherChain {
        /// The peer.
        peer: PeerId,
        /// The protocol version it sent (truncated).
        protocol_version: String,
    },
}

/// The receiving end of [`HostEvent`]s.
pub type HostEvents = tokio::sync::mpsc::Receiver<HostEvent>;

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The peer dialed us.
    Inbound,
    /// We dialed the peer.
    Outbound,
}

/// A connected peer, for the `peers` RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its id.
    pub peer: PeerId,
    /// The remote address of each open connection.
    pub addrs: Vec<Multiaddr>,
    /// Direction of the first connection.
    pub direction: Direction,
    /// Its current misbehaviour score.
    pub score: u32,
    /// Its identify agent version, once identified.
    pub agent: Option<String>,
    /// Its identify protocol version, once identified.
    pub protocol_version: Option<String>,
    /// Last ping round trip.
    pub rtt: Option<Duration>,
    /// How long it has been connected.
    pub connected_for: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_node_config_parses_and_names_bad_keys() {
        let mut p2p = crate::config::P2pConfig::default();
        let id = keys::keypair_from_seed([1; 32])
            .unwrap()
            .public()
            .to_peer_id();
        p2p.peers = vec![format!("/ip4/10.0.0.1/tcp/26656/p2p/{id}")];
        p2p.whitelist = vec![id.to_string()];
        p2p.private = true;
        let c = HostConfig::from_node_config(&p2p, "c1", vec![id], None).unwrap();
        assert_eq!(c.bootstrap.len(), 1);
        assert_eq!(c.whitelist, vec![id]);
        assert!(c.private_mode);
        assert_eq!(c.protocol_version(), "/kite/c1");
        assert_eq!(c.max_per_peer, p2p.max_connections_per_peer);

        p2p.listen = vec!["not an addr".into()];
        let e = HostConfig::from_node_config(&p2p, "c1", vec![], None).unwrap_err();
        assert!(e.to_string().contains("p2p.listen"), "{e}");
        p2p.listen = vec![];
        p2p.whitelist = vec!["nope".into()];
        let e = HostConfig::from_node_config(&p2p, "c1", vec![], None).unwrap_err();
        assert!(e.to_string().contains("p2p.whitelist"), "{e}");
    }
}
