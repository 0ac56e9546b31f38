//! Streams of the node's protocols over libp2p connections: open one with
//! a peer, accept those a peer opens. Every protocol of `kite_protocols`
//! runs on a stream of its own.
//!
//! This replaces libp2p-stream (0.5.0-alpha), which the first wave used,
//! for two of its limits measured under load (issue 17):
//! - its inbound channel per protocol held one stream: the second of two
//!   streams arriving before the accept loop ran was dropped, so a burst of
//!   announces from a few peers lost most of its streams;
//! - each connection opened one outbound stream at a time, each waiting its
//!   protocol negotiation, so one connection opened at most one stream per
//!   round trip (10 a second at 50 ms one-way).
//!
//! Here:
//! - inbound streams of a protocol wait in a channel of
//!   [`Control::accept`]'s `buffer`; a stream beyond is reset at once and
//!   counted as refused on the protocol's [`Counters`];
//! - a connection negotiates any number of outbound streams at once (the
//!   muxer bounds them); requests wait in a channel of
//!   [`OPEN_QUEUE_PER_CONNECTION`];
//! - opening with a peer that has no connection dials it (the addresses
//!   come from the other behaviours: the peer store, identify); at most
//!   [`MAX_PENDING_PER_PEER`] opens wait for one peer's connection and
//!   [`MAX_PENDING_PEERS`] peers are waited for, beyond which an open fails
//!   at once. A failed dial fails the opens waiting for it.
//!
//! The opener picks the negotiation: [`super::host`] sets libp2p's lazy
//! variant, so a stream's first message leaves with its protocol name and
//! an exchange costs one round trip, not two.

use super::net::Counters;
use futures::channel::mpsc as fmpsc;
use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::{InboundUpgrade, OutboundUpgrade, UpgradeInfo};
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId,
    DialError, DialFailure, FromSwarm, NetworkBehaviour, Stream, StreamProtocol,
    StreamUpgradeError, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};

/// Open requests waiting for one connection to start their negotiation.
pub const OPEN_QUEUE_PER_CONNECTION: usize = 256;
/// Opens waiting for one peer's connection (while it is dialed).
pub const MAX_PENDING_PER_PEER: usize = 256;
/// Peers with opens waiting for their connection.
pub const MAX_PENDING_PEERS: usize = 256;
/// Dial requests waiting for the swarm task.
const DIAL_QUEUE: usize = 256;

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The peer does not speak the protocol.
    #[error("the peer does not support the protocol")]
    UnsupportedProtocol,
    /// The connection or the dial failed, or the negotiation timed out.
    #[error("{0}")]
    Io(String),
    /// Too many opens wait already (see the module docs).
    #[error("too many streams waiting to open: {0}")]
    Busy(&'static str),
}

/// The inbound streams of one protocol: who opened it, and the stream.
pub type IncomingStreams = fmpsc::Receiver<(PeerId, Stream)>;

/// A request to open a stream, on its way to a connection.
#[derive(Debug)]
pub struct Open {
    protocol: StreamProtocol,
    reply: oneshot::Sender<Result<Stream, OpenError>>,
}

/// Where an accepted protocol's streams go.
struct Inbound {
    sender: fmpsc::Sender<(PeerId, Stream)>,
    counters: Arc<Counters>,
}

/// State shared by the behaviour, its connection handlers and the
/// [`Control`]s (short critical sections, never held across an await).
#[derive(Default)]
struct Shared {
    inbound: HashMap<StreamProtocol, Inbound>,
    /// The open queue of every connection, by peer.
    connections: HashMap<PeerId, Vec<(ConnectionId, mpsc::Sender<Open>)>>,
    /// Opens waiting for a peer's connection.
    pending: HashMap<PeerId, Vec<Open>>,
    /// Round-robin position over a peer's connections.
    next: usize,
}

impl Shared {
    fn protocols(&self) -> Vec<StreamProtocol> {
        self.inbound
            .iter()
            .filter(|(_, i)| !i.sender.is_closed())
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn deliver(&mut self, peer: PeerId, stream: Stream, protocol: StreamProtocol) {
        let Some(inbound) = self.inbound.get_mut(&protocol) else {
            tracing::debug!(%peer, %protocol, "inbound stream of a protocol no longer accepted: reset");
            return;
        };
        match inbound.sender.try_send((peer, stream)) {
            Ok(()) => {}
            Err(e) if e.is_full() => {
                Counters::inc(&inbound.counters.refused);
                tracing::debug!(%peer, %protocol, "inbound streams of this protocol at their bound: reset");
            }
            Err(_) => {
                self.inbound.remove(&protocol);
                tracing::debug!(%peer, %protocol, "nobody accepts this protocol any more: reset");
            }
        }
    }

    /// Sends `open` to one of `peer`'s connections, or gives it back when
    /// the peer has none. Connections whose handler is gone (closing, not
    /// yet reported closed) are dropped here and the next one is tried;
    /// when every queue is full the open fails as busy.
    fn route(&mut self, peer: PeerId, mut open: Open) -> Result<(), Open> {
        let Some(conns) = self.connections.get_mut(&peer) else {
            return Err(open);
        };
        conns.retain(|(_, queue)| !queue.is_closed());
        if conns.is_empty() {
            self.connections.remove(&peer);
            return Err(open);
        }
        self.next = self.next.wrapping_add(1);
        let n = conns.len();
        for i in 0..n {
            let (_, queue) = &conns[self.next.wrapping_add(i) % n];
            match queue.try_send(open) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(o) | mpsc::error::TrySendError::Closed(o)) => {
                    open = o;
                }
            }
        }
        let _ = open
            .reply
            .send(Err(OpenError::Busy("the connections' open queues")));
        Ok(())
    }

    /// Hands the opens waiting for `peer` to its connections, if it has
    /// one.
    fn route_pending(&mut self, peer: PeerId) {
        let Some(waiting) = self.pending.remove(&peer) else {
            return;
        };
        let mut left = Vec::new();
        for open in waiting.into_iter().filter(|o| !o.reply.is_closed()) {
            if let Err(open) = self.route(peer, open) {
                left.push(open);
            }
        }
        if !left.is_empty() {
            self.pending.insert(peer, left);
        }
    }
}

/// Opens and accepts streams; cheap to clone.
#[derive(Clone)]
pub struct Control {
    shared: Arc<Mutex<Shared>>,
    dials: mpsc::Sender<PeerId>,
}

impl Control {
    /// Opens a stream of `protocol` with `peer`, dialing it when it has no
    /// connection. The caller bounds the wait.
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: StreamProtocol,
    ) -> Result<Stream, OpenError> {
        let (reply, answer) = oneshot::channel();
        let open = Open { protocol, reply };
        let dial = {
            let mut shared = self.shared.lock();
            match shared.route(peer, open) {
                Ok(()) => false,
                Err(open) => {
                    if shared.pending.len() >= MAX_PENDING_PEERS {
                        // Opens whose callers gave up leave first.
                        shared.pending.retain(|_, q| {
                            q.retain(|o| !o.reply.is_closed());
                            !q.is_empty()
                        });
                    }
                    let waiting = shared.pending.len();
                    let queue = shared.pending.entry(peer).or_default();
                    // Opens whose callers gave up leave.
                    queue.retain(|o| !o.reply.is_closed());
                    if queue.len() >= MAX_PENDING_PER_PEER
                        || (queue.is_empty() && waiting >= MAX_PENDING_PEERS)
                    {
                        if queue.is_empty() {
                            shared.pending.remove(&peer);
                        }
                        return Err(OpenError::Busy("opens waiting for a connection"));
                    }
                    queue.push(open);
                    true
                }
            }
        };
        // Every waiting open asks for a dial: the swarm dials a peer once
        // at a time, and a request lost to a full queue is made again by
        // the next open.
        if dial && self.dials.try_send(peer).is_err() {
            tracing::debug!(%peer, "dial queue full");
        }
        answer
            .await
            .unwrap_or_else(|_| Err(OpenError::Io("the connection closed".into())))
    }

    /// The inbound streams of `protocol`, at most `buffer` waiting (more
    /// are reset and counted on `counters.refused`). None if someone
    /// accepts it already.
    pub fn accept(
        &self,
        protocol: StreamProtocol,
        buffer: usize,
        counters: Arc<Counters>,
    ) -> Option<IncomingStreams> {
        let mut shared = self.shared.lock();
        if shared
            .inbound
            .get(&protocol)
            .is_some_and(|i| !i.sender.is_closed())
        {
            return None;
        }
        // A futures channel holds `buffer` plus one per sender (one here).
        let (sender, receiver) = fmpsc::channel(buffer.saturating_sub(1));
        shared
            .inbound
            .insert(protocol, Inbound { sender, counters });
        Some(receiver)
    }
}

/// The behaviour: one [`Handler`] per connection.
pub struct Behaviour {
    shared: Arc<Mutex<Shared>>,
    dials: mpsc::Receiver<PeerId>,
    control: Control,
}

impl Behaviour {
    /// A behaviour and the [`Control`] that drives it.
    pub fn new() -> Behaviour {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (dial_tx, dials) = mpsc::channel(DIAL_QUEUE);
        Behaviour {
            control: Control {
                shared: shared.clone(),
                dials: dial_tx,
            },
            shared,
            dials,
        }
    }

    /// A control over this behaviour.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    fn handler(&self, peer: PeerId, connection: ConnectionId) -> Handler {
        let (queue, opens) = mpsc::channel(OPEN_QUEUE_PER_CONNECTION);
        let mut shared = self.shared.lock();
        shared
            .connections
            .entry(peer)
            .or_default()
            .push((connection, queue));
        // Opens that waited for this peer go to its connections.
        shared.route_pending(peer);
        Handler {
            peer,
            shared: self.shared.clone(),
            opens,
        }
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour::new()
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer, connection))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer, connection))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                let mut shared = self.shared.lock();
                if let Some(conns) = shared.connections.get_mut(&peer_id) {
                    conns.retain(|(id, _)| *id != connection_id);
                    if conns.is_empty() {
                        shared.connections.remove(&peer_id);
                    }
                }
                // Opens that found only this (closing) connection and
                // waited: the peer's other connections take them.
                shared.route_pending(peer_id);
            }
            FromSwarm::DialFailure(DialFailure {
                peer_id: Some(peer),
                error,
                ..
            }) => {
                // Another dial of the same peer may still be under way.
                if matches!(error, DialError::DialPeerConditionFalse(_)) {
                    return;
                }
                let waiting = self.shared.lock().pending.remove(&peer);
                for open in waiting.unwrap_or_default() {
                    let _ = open
                        .reply
                        .send(Err(OpenError::Io(format!("dialing the peer: {error}"))));
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        match self.dials.poll_recv(cx) {
            Poll::Ready(Some(peer)) => Poll::Ready(ToSwarm::Dial {
                opts: DialOpts::peer_id(peer)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
            }),
            _ => Poll::Pending,
        }
    }
}

/// One connection's streams.
pub struct Handler {
    peer: PeerId,
    shared: Arc<Mutex<Shared>>,
    opens: mpsc::Receiver<Open>,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = Protocols;
    type OutboundProtocol = Protocols;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = oneshot::Sender<Result<Stream, OpenError>>;

    fn listen_protocol(&self) -> SubstreamProtocol<Protocols> {
        SubstreamProtocol::new(Protocols(self.shared.lock().protocols()), ())
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Protocols, Self::OutboundOpenInfo, Infallible>> {
        loop {
            match self.opens.poll_recv(cx) {
                // Its caller gave up (the open deadline): no stream for it.
                Poll::Ready(Some(open)) if open.reply.is_closed() => {}
                Poll::Ready(Some(open)) => {
                    return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                        protocol: SubstreamProtocol::new(
                            Protocols(vec![open.protocol]),
                            open.reply,
                        ),
                    });
                }
                _ => return Poll::Pending,
            }
        }
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Protocols, Protocols, (), Self::OutboundOpenInfo>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, protocol),
                ..
            }) => self.shared.lock().deliver(self.peer, stream, protocol),
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: (stream, _),
                info: reply,
            }) => {
                let _ = reply.send(Ok(stream));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info: reply, error }) => {
                let error = match error {
                    StreamUpgradeError::NegotiationFailed => OpenError::UnsupportedProtocol,
                    StreamUpgradeError::Timeout => OpenError::Io("negotiation timed out".into()),
                    StreamUpgradeError::Io(e) => OpenError::Io(e.to_string()),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                let _ = reply.send(Err(error));
            }
            _ => {}
        }
    }
}

/// The protocols a stream may speak; the upgrade hands the stream over as
/// it is, with the protocol chosen.
#[derive(Debug, Clone)]
pub struct Protocols(Vec<StreamProtocol>);

impl UpgradeInfo for Protocols {
    type Info = StreamProtocol;
    type InfoIter = std::vec::IntoIter<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone().into_iter()
    }
}

impl InboundUpgrade<Stream> for Protocols {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;

    fn upgrade_inbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        ready(Ok((stream, protocol)))
    }
}

impl OutboundUpgrade<Stream> for Protocols {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;

    fn upgrade_outbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        ready(Ok((stream, protocol)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (Open, oneshot::Receiver<Result<Stream, OpenError>>) {
        let (reply, answer) = oneshot::channel();
        let protocol = StreamProtocol::new("/kite/test/1.0.0");
        (Open { protocol, reply }, answer)
    }

    /// A connection whose handler is gone (closing, not yet reported
    /// closed) is passed over: the open goes to the peer's other
    /// connection instead of waiting for a dial that never comes.
    #[test]
    fn an_open_skips_a_closing_connection() {
        let peer = PeerId::random();
        let mut shared = Shared::default();
        let (gone, gone_rx) = mpsc::channel(4);
        drop(gone_rx);
        let (live, mut live_rx) = mpsc::channel(4);
        shared.connections.insert(
            peer,
            vec![
                (ConnectionId::new_unchecked(1), gone),
                (ConnectionId::new_unchecked(2), live),
            ],
        );
        for _ in 0..3 {
            let (o, _answer) = open();
            assert!(shared.route(peer, o).is_ok());
            assert!(live_rx.try_recv().is_ok());
        }
        assert_eq!(shared.connections[&peer].len(), 1);
        // With no live connection left, the open comes back to wait.
        drop(live_rx);
        let (o, _answer) = open();
        assert!(shared.route(peer, o).is_err());
        assert!(!shared.connections.contains_key(&peer));
    }

    /// Opens waiting for a peer go to a connection when one is there;
    /// those whose callers gave up are dropped, not sent.
    #[test]
    fn waiting_opens_go_to_a_connection_and_abandoned_ones_leave() {
        let peer = PeerId::random();
        let mut shared = Shared::default();
        let (kept, _kept_answer) = open();
        let (abandoned, abandoned_answer) = open();
        drop(abandoned_answer);
        shared.pending.insert(peer, vec![kept, abandoned]);
        // No connection yet: they stay.
        shared.route_pending(peer);
        assert_eq!(shared.pending[&peer].len(), 1);
        let (queue, mut rx) = mpsc::channel(4);
        shared
            .connections
            .insert(peer, vec![(ConnectionId::new_unchecked(1), queue)]);
        shared.route_pending(peer);
        assert!(!shared.pending.contains_key(&peer));
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
    }
}
