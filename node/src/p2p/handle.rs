//! The handle the rest of the node uses to talk to the swarm task; it
//! implements [`Network`] for the node's tasks.

use super::net::{Counters, Network, ProtocolCounters, StreamStats};
use super::streams::{Control, IncomingStreams, OpenError};
use super::{HostError, PeerInfo};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Longest `why` kept from a report.
const MAX_REASON_LEN: usize = 200;
/// Inbound streams of one protocol waiting for its accept loop; more are
/// reset. The loop takes them at once (and resets those beyond its own
/// bounds), so this only absorbs a burst that arrives between two of its
/// turns.
pub const ACCEPT_BUFFER: usize = 256;
/// Most peers taken from one `add_discovered` call.
pub const MAX_DISCOVERED_PER_CALL: usize = 256;

/// Requests to the swarm task.
pub(crate) enum Command {
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), HostError>>,
    },
    ConnectedPeers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    PeerInfo {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Report {
        peer: PeerId,
        penalty: u32,
        why: String,
    },
    IsBanned {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    KnownPeers {
        max: usize,
        allow_private: bool,
        reply: oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>,
    },
    AddDiscovered {
        peers: Vec<(PeerId, Vec<Multiaddr>)>,
        reply: oneshot::Sender<usize>,
    },
    Disconnect {
        peer: PeerId,
    },
    Operator {
        op: OperatorOp,
        reply: oneshot::Sender<Result<OperatorOutcome, HostError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// What an operator asks of the host (the admin listener's `peers_*`
/// methods).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorOp {
    /// Disconnect `peer` and refuse it for `duration`.
    Ban {
        /// The peer.
        peer: PeerId,
        /// How long.
        duration: Duration,
    },
    /// Lift a ban.
    Unban {
        /// The peer.
        peer: PeerId,
    },
    /// Remember `addr` (which names its peer with `/p2p/<id>`) as a peer
    /// to keep connected, like an entry of `p2p.peers`, and dial it now.
    /// Until the node restarts: to keep it, add it to `p2p.peers`.
    Add {
        /// The address, ending in `/p2p/<id>`.
        addr: Multiaddr,
    },
    /// Stop keeping `peer` connected, forget what the peer store knows of
    /// it and disconnect it (it may connect again; ban it to refuse it).
    Remove {
        /// The peer.
        peer: PeerId,
    },
}

/// What an [`OperatorOp`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorOutcome {
    /// Whether the op changed anything (`false`: unban of a peer that was
    /// not banned, remove of an unknown peer, add of a peer already kept).
    pub changed: bool,
    /// Whether the peer was connected when the op ran.
    pub was_connected: bool,
}

/// State shared by all clones of a handle.
pub(crate) struct Shared {
    pub local_peer_id: PeerId,
    /// Turns true when the swarm task ends.
    pub closed: tokio::sync::watch::Receiver<bool>,
    pub open_timeout: Duration,
    pub stream_timeout: Duration,
    pub counters: ProtocolCounters,
    pub dropped_events: AtomicU64,
    pub dropped_reports: AtomicU64,
    /// Misbehaviour points reported so far, every peer together.
    pub reported_points: AtomicU64,
}

/// A cloneable handle to the host.
#[derive(Clone)]
pub struct HostHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) control: Control,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for HostHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostHandle({})", self.shared.local_peer_id)
    }
}

fn protocol_id(protocol: &'static str) -> Result<StreamProtocol, HostError> {
    StreamProtocol::try_from_owned(protocol.to_owned())
        .map_err(|_| HostError::InvalidProtocol(protocol.to_owned()))
}

impl HostHandle {
    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.shared.local_peer_id
    }

    /// Longest an inbound stream handler may run.
    pub fn stream_timeout(&self) -> Duration {
        self.shared.stream_timeout
    }

    pub(crate) fn counters(&self, protocol: &'static str) -> Arc<Counters> {
        self.shared.counters.get(protocol)
    }

    /// The stream counters of every protocol used so far.
    pub fn stream_stats(&self) -> Vec<(&'static str, StreamStats)> {
        self.shared.counters.stats()
    }

    /// The stream counters of one protocol.
    pub fn protocol_stats(&self, protocol: &'static str) -> StreamStats {
        Network::protocol_stats(self, protocol)
    }

    /// Events dropped because the [`super::HostEvents`] receiver was slow.
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped_events.load(Ordering::Relaxed)
    }

    /// Reports dropped because the command channel was full.
    pub fn dropped_reports(&self) -> u64 {
        self.shared.dropped_reports.load(Ordering::Relaxed)
    }

    /// Opens a stream of `protocol` with `peer`, dialing it if needed (from
    /// the stored addresses), within the configured open deadline. Failures
    /// other than [`HostError::UnsupportedProtocol`] are retryable.
    ///
    /// The protocol is negotiated lazily: the stream is returned before the
    /// peer confirmed the protocol, and the first bytes written carry the
    /// proposal. A peer that does not speak the protocol therefore shows as
    /// an I/O error on the first read of the stream, not here.
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: &'static str,
    ) -> Result<Stream, HostError> {
        let proto = protocol_id(protocol)?;
        if self.commands.is_closed() {
            return Err(HostError::Closed);
        }
        let counters = self.counters(protocol);
        let result = match tokio::time::timeout(
            self.shared.open_timeout,
            self.control.open_stream(peer, proto),
        )
        .await
        {
            Err(_) => Err(HostError::Timeout(format!(
                "opening {protocol} with {peer} after {:?}",
                self.shared.open_timeout
            ))),
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(OpenError::UnsupportedProtocol)) => {
                Err(HostError::UnsupportedProtocol { peer, protocol })
            }
            Ok(Err(e)) => Err(HostError::OpenStream {
                peer,
                protocol,
                reason: e.to_string(),
            }),
        };
        match &result {
            Ok(_) => Counters::inc(&counters.opened),
            Err(_) => Counters::inc(&counters.open_failed),
        }
        result
    }

    /// The inbound streams of `protocol`. Only one receiver per protocol may
    /// exist; it must be drained promptly (use [`super::spawn_accept_loop`]):
    /// at most [`ACCEPT_BUFFER`] streams wait, more are reset and counted
    /// as refused.
    pub fn accept(&self, protocol: &'static str) -> Result<IncomingStreams, HostError> {
        let proto = protocol_id(protocol)?;
        self.control
            .accept(proto, ACCEPT_BUFFER, self.counters(protocol))
            .ok_or(HostError::AlreadyAccepting(protocol))
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, HostError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| HostError::Closed)?;
        rx.await.map_err(|_| HostError::Closed)
    }

    /// Dials an address (with or without `/p2p/<id>`). Returns once the dial
    /// started; the outcome arrives as a [`super::HostEvent::PeerConnected`].
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), HostError> {
        self.request(|reply| Command::Dial { addr, reply }).await?
    }

    /// Peers with at least one open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, HostError> {
        self.request(|reply| Command::ConnectedPeers { reply })
            .await
    }

    /// Details of every connected peer.
    pub async fn peer_info(&self) -> Result<Vec<PeerInfo>, HostError> {
        self.request(|reply| Command::PeerInfo { reply }).await
    }

    /// The addresses the host listens on (filled in as listeners start).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, HostError> {
        self.request(|reply| Command::ListenAddrs { reply }).await
    }

    /// Whether `peer` is banned now.
    pub async fn is_banned(&self, peer: PeerId) -> Result<bool, HostError> {
        self.request(|reply| Command::IsBanned { peer, reply })
            .await
    }

    /// Reports misbehaviour of `peer` (oversized, late, undecodable or
    /// forged data): adds `penalty` to its score; past the ban threshold the
    /// peer is disconnected and banned. Never blocks: when the host is
    /// overloaded the report is dropped and counted.
    pub fn report(&self, peer: PeerId, penalty: u32, why: &str) {
        let mut why = why.to_owned();
        if why.len() > MAX_REASON_LEN {
            let mut cut = MAX_REASON_LEN;
            while !why.is_char_boundary(cut) {
                cut -= 1;
            }
            why.truncate(cut);
        }
        self.shared
            .reported_points
            .fetch_add(u64::from(penalty), Ordering::Relaxed);
        let cmd = Command::Report { peer, penalty, why };
        if self.commands.try_send(cmd).is_err() {
            self.shared.dropped_reports.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Closes every connection with `peer` (no ban).
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), HostError> {
        self.commands
            .send(Command::Disconnect { peer })
            .await
            .map_err(|_| HostError::Closed)
    }

    /// Peers to hand out in `/kite/discover/1.0.0` answers: never banned
    /// ones, best first, with the addresses `allow_private` permits; at most
    /// `max`. Empty when peer exchange is off or in private mode.
    pub async fn known_peers(
        &self,
        max: usize,
        allow_private: bool,
    ) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, HostError> {
        self.request(|reply| Command::KnownPeers {
            max,
            allow_private,
            reply,
        })
        .await
    }

    /// Adds peers learnt from another peer (at most
    /// [`MAX_DISCOVERED_PER_CALL`] are considered); addresses are filtered by
    /// the host's private-address policy, banned peers, ourselves and (in
    /// private mode) peers not allowed are skipped. Returns how many peers
    /// were stored. Ignored when peer exchange is off.
    pub async fn add_discovered(
        &self,
        mut peers: Vec<(PeerId, Vec<Multiaddr>)>,
    ) -> Result<usize, HostError> {
        peers.truncate(MAX_DISCOVERED_PER_CALL);
        self.request(|reply| Command::AddDiscovered { peers, reply })
            .await
    }

    /// Runs an operator's request (ban, unban, add, remove a peer).
    pub async fn operator(&self, op: OperatorOp) -> Result<OperatorOutcome, HostError> {
        self.request(|reply| Command::Operator { op, reply })
            .await?
    }

    /// Stops the host: saves the peer store, closes every connection and
    /// ends the swarm task. Later calls return [`HostError::Closed`].
    pub async fn shutdown(&self) -> Result<(), HostError> {
        self.request(|reply| Command::Shutdown { reply }).await
    }
}

#[async_trait::async_trait]
impl Network for HostHandle {
    fn local_peer_id(&self) -> PeerId {
        HostHandle::local_peer_id(self)
    }
    fn stream_timeout(&self) -> Duration {
        HostHandle::stream_timeout(self)
    }
    fn closed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.closed.clone()
    }
    fn counters(&self, protocol: &'static str) -> Arc<Counters> {
        HostHandle::counters(self, protocol)
    }
    fn stream_stats(&self) -> Vec<(&'static str, StreamStats)> {
        HostHandle::stream_stats(self)
    }
    async fn open_stream(
        &self,
        peer: PeerId,
        protocol: &'static str,
    ) -> Result<super::net::Stream, HostError> {
        let s = HostHandle::open_stream(self, peer, protocol).await?;
        Ok(Box::new(s))
    }
    fn accept(&self, protocol: &'static str) -> Result<super::net::Incoming, HostError> {
        use futures::StreamExt;
        let incoming = HostHandle::accept(self, protocol)?;
        Ok(incoming
            .map(|(peer, s)| (peer, Box::new(s) as super::net::Stream))
            .boxed())
    }
    async fn dial(&self, addr: Multiaddr) -> Result<(), HostError> {
        HostHandle::dial(self, addr).await
    }
    async fn connected_peers(&self) -> Result<Vec<PeerId>, HostError> {
        HostHandle::connected_peers(self).await
    }
    async fn peer_info(&self) -> Result<Vec<PeerInfo>, HostError> {
        HostHandle::peer_info(self).await
    }
    async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, HostError> {
        HostHandle::listen_addrs(self).await
    }
    async fn is_banned(&self, peer: PeerId) -> Result<bool, HostError> {
        HostHandle::is_banned(self, peer).await
    }
    fn report(&self, peer: PeerId, penalty: u32, why: &str) {
        HostHandle::report(self, peer, penalty, why);
    }
    fn reported_points(&self) -> u64 {
        self.shared.reported_points.load(Ordering::Relaxed)
    }
    async fn disconnect(&self, peer: PeerId) -> Result<(), HostError> {
        HostHandle::disconnect(self, peer).await
    }
    async fn known_peers(
        &self,
        max: usize,
        allow_private: bool,
    ) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, HostError> {
        HostHandle::known_peers(self, max, allow_private).await
    }
    async fn add_discovered(
        &self,
        peers: Vec<(PeerId, Vec<Multiaddr>)>,
    ) -> Result<usize, HostError> {
        HostHandle::add_discovered(self, peers).await
    }
    async fn operator(&self, op: OperatorOp) -> Result<OperatorOutcome, HostError> {
        HostHandle::operator(self, op).await
    }
    async fn shutdown(&self) -> Result<(), HostError> {
        HostHandle::shutdown(self).await
    }
}
