//! The network as the node's tasks see it: the [`Network`] trait, the one
//! seam between the node and its transport, and the per-protocol stream
//! counters every transport keeps.
//!
//! In production the libp2p [`super::HostHandle`] implements it; the test
//! kit's in-memory network (`testkit::memnet`) implements it too, so the
//! node's own tasks (driver, handlers, tx gossip, block sync, peers) run
//! under a seeded schedule with paused time. The node holds it as
//! `Arc<dyn Network>` in [`crate::context::Shared`]; nothing else in the
//! node names the libp2p host.

use super::{HostError, OperatorOp, OperatorOutcome, PeerInfo};
use async_trait::async_trait;
use libp2p::{Multiaddr, PeerId};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A bidirectional byte stream of one protocol exchange (the protocols of
/// `kite_protocols` are generic over it).
pub trait NetStream: futures::AsyncRead + futures::AsyncWrite + Send + Unpin + 'static {}
impl<T: futures::AsyncRead + futures::AsyncWrite + Send + Unpin + 'static> NetStream for T {}

/// A stream, whatever the transport.
pub type Stream = Box<dyn NetStream>;

/// The inbound streams of one protocol: who opened it, and the stream.
pub type Incoming = futures::stream::BoxStream<'static, (PeerId, Stream)>;

/// Most distinct protocols counted; more share the `"other"` counters.
const MAX_COUNTED_PROTOCOLS: usize = 64;

/// What the node asks of its transport. Every method is bounded in time by
/// the transport (libp2p: the open deadline, the command channel) and never
/// panics on a peer's input.
#[async_trait]
pub trait Network: std::fmt::Debug + Send + Sync + 'static {
    /// This node's peer id.
    fn local_peer_id(&self) -> PeerId;
    /// Longest an inbound stream handler may run.
    fn stream_timeout(&self) -> Duration;
    /// Turns true once the transport has closed.
    fn closed(&self) -> tokio::sync::watch::Receiver<bool>;
    /// The counters of `protocol`'s streams.
    fn counters(&self, protocol: &'static str) -> Arc<Counters>;
    /// The stream counters of every protocol used so far.
    fn stream_stats(&self) -> Vec<(&'static str, StreamStats)>;
    /// The stream counters of one protocol.
    fn protocol_stats(&self, protocol: &'static str) -> StreamStats {
        self.stream_stats()
            .into_iter()
            .find(|(p, _)| *p == protocol)
            .map(|(_, s)| s)
            .unwrap_or_default()
    }
    /// Opens a stream of `protocol` with `peer`, dialing it if needed.
    async fn open_stream(&self, peer: PeerId, protocol: &'static str) -> Result<Stream, HostError>;
    /// The inbound streams of `protocol` (one receiver per protocol; drain
    /// it promptly, see [`super::spawn_accept_loop`]).
    fn accept(&self, protocol: &'static str) -> Result<Incoming, HostError>;
    /// Dials an address.
    async fn dial(&self, addr: Multiaddr) -> Result<(), HostError>;
    /// Peers with an open connection.
    async fn connected_peers(&self) -> Result<Vec<PeerId>, HostError>;
    /// What the transport knows of each connected peer.
    async fn peer_info(&self) -> Result<Vec<PeerInfo>, HostError>;
    /// Where this node listens.
    async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, HostError>;
    /// Whether `peer` is banned now.
    async fn is_banned(&self, peer: PeerId) -> Result<bool, HostError>;
    /// Adds `penalty` to `peer`'s misbehaviour score (never waits; dropped
    /// and counted when the transport is busy).
    fn report(&self, peer: PeerId, penalty: u32, why: &str);
    /// Misbehaviour points this node reported so far, every peer together
    /// (still readable once the transport has closed).
    fn reported_points(&self) -> u64;
    /// Closes every connection with `peer`.
    async fn disconnect(&self, peer: PeerId) -> Result<(), HostError>;
    /// Peers worth telling others about, at most `max`.
    async fn known_peers(
        &self,
        max: usize,
        allow_private: bool,
    ) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, HostError>;
    /// Peers learnt from another peer; returns how many were new.
    async fn add_discovered(
        &self,
        peers: Vec<(PeerId, Vec<Multiaddr>)>,
    ) -> Result<usize, HostError>;
    /// An operator's request (ban, unban, add, remove).
    async fn operator(&self, op: OperatorOp) -> Result<OperatorOutcome, HostError>;
    /// Closes the transport: every connection, every accept loop.
    async fn shutdown(&self) -> Result<(), HostError>;
}

/// Counters of one protocol.
#[derive(Debug, Default)]
pub struct Counters {
    /// Outbound streams opened.
    pub opened: AtomicU64,
    /// Outbound streams that failed to open.
    pub open_failed: AtomicU64,
    /// Inbound streams handed to a handler.
    pub accepted: AtomicU64,
    /// Inbound streams reset (handlers busy, peer over its share).
    pub refused: AtomicU64,
    /// Inbound handlers that failed or ran past their deadline.
    pub handler_errors: AtomicU64,
}

impl Counters {
    /// Adds one.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of one protocol's stream counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Outbound streams opened.
    pub opened: u64,
    /// Outbound streams that failed to open (timeout, refused, no connection).
    pub open_failed: u64,
    /// Inbound streams handed to a handler.
    pub accepted: u64,
    /// Inbound streams reset because the protocol's handlers were all busy
    /// or the peer held its share of them.
    pub refused: u64,
    /// Inbound handlers that failed or ran past their deadline.
    pub handler_errors: u64,
}

/// The counters of every protocol of one transport, at most
/// `MAX_COUNTED_PROTOCOLS` (64) of them; more share `"other"`.
#[derive(Debug, Default)]
pub struct ProtocolCounters(Mutex<HashMap<&'static str, Arc<Counters>>>);

impl ProtocolCounters {
    /// The counters of `protocol`.
    pub fn get(&self, protocol: &'static str) -> Arc<Counters> {
        let mut map = self.0.lock();
        let key = if map.len() >= MAX_COUNTED_PROTOCOLS && !map.contains_key(protocol) {
            "other"
        } else {
            protocol
        };
        map.entry(key).or_default().clone()
    }

    /// A snapshot of every protocol's counters, by protocol.
    pub fn stats(&self) -> Vec<(&'static str, StreamStats)> {
        let map = self.0.lock();
        let mut out: Vec<(&'static str, StreamStats)> = map
            .iter()
            .map(|(p, c)| {
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
                (
                    *p,
                    StreamStats {
                        opened: get(&c.opened),
                        open_failed: get(&c.open_failed),
                        accepted: get(&c.accepted),
                        refused: get(&c.refused),
                        handler_errors: get(&c.handler_errors),
                    },
                )
            })
            .collect();
        out.sort_by_key(|(p, _)| *p);
        out
    }
}
