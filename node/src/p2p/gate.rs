//! The gate: a small behaviour that refuses connections with banned peers,
//! in private mode with peers outside the allowed set, and inbound
//! connections past the per-IP limit; and that supplies stored addresses
//! when the swarm dials a peer by id.
//!
//! It owns the [`PeerStore`]; the swarm task reaches it through
//! `swarm.behaviour_mut().gate`. Its connection handler is the dummy one:
//! it adds no protocol.

use super::addr::subnet_of;
use super::store::{PeerStore, now_ms};
use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};
use std::time::Instant;

/// Most bans kept in memory (the store persists them too).
pub const MAX_BANS: usize = 4096;

/// Why the gate refused a connection.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The peer is banned.
    #[error("peer is banned")]
    Banned,
    /// Private mode and the peer is neither whitelisted nor a validator.
    #[error("private mode: peer is not whitelisted")]
    NotAllowed,
    /// Its address already has as many inbound connections as allowed.
    #[error("{ip} already has {max} inbound connections (p2p.max_inbound_per_ip)")]
    TooManyFromIp {
        /// The address.
        ip: IpAddr,
        /// The limit.
        max: u32,
    },
    /// Its /24 (or /48) network already has as many inbound connections
    /// as allowed.
    #[error(
        "{subnet}/24 (or /48) already has {max} inbound connections (p2p.max_inbound_per_subnet)"
    )]
    TooManyFromSubnet {
        /// The network.
        subnet: IpAddr,
        /// The limit.
        max: u32,
    },
}

/// Connection gate and address book.
pub struct Gate {
    /// Known peers.
    pub store: PeerStore,
    bans: HashMap<PeerId, Instant>,
    allowed: Option<HashSet<PeerId>>,
    /// Most inbound connections per IP (0: no limit), and the peers not
    /// counted.
    per_ip_max: u32,
    /// Most inbound connections per /24 or /48 (0: no limit).
    per_subnet_max: u32,
    trusted: HashSet<PeerId>,
    /// Inbound connections counted, by connection and by address.
    inbound: HashMap<ConnectionId, IpAddr>,
    per_ip: HashMap<IpAddr, u32>,
    per_subnet: HashMap<IpAddr, u32>,
}

impl Gate {
    /// A gate over `store`; `allowed` is `Some` in private mode.
    pub fn new(store: PeerStore, allowed: Option<HashSet<PeerId>>) -> Gate {
        Gate {
            store,
            bans: HashMap::new(),
            allowed,
            per_ip_max: 0,
            per_subnet_max: 0,
            trusted: HashSet::new(),
            inbound: HashMap::new(),
            per_ip: HashMap::new(),
            per_subnet: HashMap::new(),
        }
    }

    /// Limits inbound connections per IP address to `max` (0: no limit),
    /// not counting `trusted` peers.
    pub fn with_inbound_per_ip(mut self, max: u32, trusted: HashSet<PeerId>) -> Gate {
        self.per_ip_max = max;
        self.trusted = trusted;
        self
    }

    /// Limits inbound connections per /24 (IPv4) or /48 (IPv6) network to
    /// `max` (0: no limit), not counting the trusted peers.
    pub fn with_inbound_per_subnet(mut self, max: u32) -> Gate {
        self.per_subnet_max = max;
        self
    }

    /// The address of an inbound connection that counts toward the per-IP
    /// and per-subnet limits (None: no limit, a trusted peer, or no IP in
    /// the address).
    fn counted_ip(&self, peer: &PeerId, remote: &Multiaddr) -> Option<IpAddr> {
        if (self.per_ip_max == 0 && self.per_subnet_max == 0) || self.trusted.contains(peer) {
            return None;
        }
        remote.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
            Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        })
    }

    /// Whether `peer` may connect in private mode (always true otherwise).
    pub fn is_allowed(&self, peer: &PeerId) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.contains(peer))
    }

    /// Whether private mode is on.
    pub fn is_private(&self) -> bool {
        self.allowed.is_some()
    }

    /// Whether `peer` is banned now.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.bans.get(peer).is_some_and(|t| *t > Instant::now())
            || self.store.is_banned(peer, now_ms())
    }

    /// Bans `peer` until `until` (in memory and in the store).
    pub fn ban(&mut self, peer: PeerId, until: Instant, until_ms: u64) {
        let now = Instant::now();
        self.bans.retain(|_, t| *t > now);
        if self.bans.len() >= MAX_BANS && !self.bans.contains_key(&peer) {
            // Make room by dropping the ban that ends first.
            if let Some(first) = self.bans.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p) {
                self.bans.remove(&first);
            }
        }
        self.bans.insert(peer, until);
        self.store.ban(peer, until_ms);
    }

    /// Exempts `peer` from the per-IP inbound limit (a peer the operator
    /// added).
    pub fn trust(&mut self, peer: PeerId) {
        self.trusted.insert(peer);
    }

    /// Lifts a ban (in memory and in the store); returns whether `peer`
    /// was banned.
    pub fn unban(&mut self, peer: &PeerId) -> bool {
        let was = self.is_banned(peer);
        self.bans.remove(peer);
        self.store.unban(peer, now_ms());
        was
    }

    fn check(&self, peer: &PeerId) -> Result<(), ConnectionDenied> {
        if self.is_banned(peer) {
            return Err(ConnectionDenied::new(Refused::Banned));
        }
        if !self.is_allowed(peer) {
            return Err(ConnectionDenied::new(Refused::NotAllowed));
        }
        Ok(())
    }
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(&peer)?;
        if let Some(ip) = self.counted_ip(&peer, remote_addr) {
            let full = |max: u32, n: Option<&u32>| max > 0 && n.copied().unwrap_or(0) >= max;
            if full(self.per_ip_max, self.per_ip.get(&ip)) {
                return Err(ConnectionDenied::new(Refused::TooManyFromIp {
                    ip,
                    max: self.per_ip_max,
                }));
            }
            let subnet = subnet_of(ip);
            if full(self.per_subnet_max, self.per_subnet.get(&subnet)) {
                return Err(ConnectionDenied::new(Refused::TooManyFromSubnet {
                    subnet,
                    max: self.per_subnet_max,
                }));
            }
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let Some(peer) = maybe_peer else {
            return Ok(Vec::new());
        };
        self.check(&peer)?;
        Ok(self.store.addrs(&peer).to_vec())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(&peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(c) => {
                if let ConnectedPoint::Listener { send_back_addr, .. } = c.endpoint
                    && let Some(ip) = self.counted_ip(&c.peer_id, send_back_addr)
                {
                    self.inbound.insert(c.connection_id, ip);
                    *self.per_ip.entry(ip).or_default() += 1;
                    *self.per_subnet.entry(subnet_of(ip)).or_default() += 1;
                }
            }
            FromSwarm::ConnectionClosed(c) => {
                if let Some(ip) = self.inbound.remove(&c.connection_id) {
                    release(&mut self.per_ip, ip);
                    release(&mut self.per_subnet, subnet_of(ip));
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// Counts one connection less for `key`.
fn release(counts: &mut HashMap<IpAddr, u32>, key: IpAddr) {
    if let Some(n) = counts.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&key);
        }
    }
}
