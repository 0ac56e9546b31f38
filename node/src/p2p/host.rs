//! Building the swarm and the swarm task: the one owner of the swarm, fed
//! by the handle's commands, turning swarm events into [`HostEvent`]s,
//! scoring and banning peers, dialing toward the target and saving the
//! peer store.

use super::addr::{is_acceptable, split_peer_id};
use super::gate::Gate;
use super::handle::{Command, HostHandle, OperatorOp, OperatorOutcome, Shared};
use super::store::{PeerStore, now_ms};
use super::{Direction, HostConfig, HostError, HostEvent, HostEvents, PeerInfo, keys};
use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, connection_limits, identify, memory_connection_limits, ping,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Most peers of another chain waiting out their grace; past it they are
/// banned at once.
const MAX_OTHER_CHAIN: usize = 256;
/// Most misbehaviour scores tracked (connected or recently seen peers).
const MAX_SCORES: usize = 4096;
/// An in-flight dial with no outcome after this long is forgotten.
const DIAL_EXPIRY: Duration = Duration::from_secs(60);
/// Id-less bootstrap addresses are re-dialed at most this often.
const BOOTSTRAP_REDIAL: Duration = Duration::from_secs(30);
/// While the host has other connections, its bootstrap peers named by id
/// are dialed again every this many `dial_backoff`s (10 s by default).
const BOOTSTRAP_REDIAL_EVERY: u32 = 5;

/// The composed behaviour. Order matters: limits and gate refuse a
/// connection before the others set anything up for it.
#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    memory: memory_connection_limits::Behaviour,
    gate: Gate,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: super::streams::Behaviour,
}

/// The libp2p host. See [`Host::spawn`].
#[derive(Debug)]
pub struct Host;

impl Host {
    /// Builds the swarm with `key` as identity, starts listening, dials the
    /// bootstrap peers and spawns the swarm task (call it inside a tokio
    /// runtime). Returns the handle and the event receiver.
    pub fn spawn(
        key: &kite_types::NodeKey,
        config: HostConfig,
    ) -> Result<(HostHandle, HostEvents), HostError> {
        if config.chain_id.is_empty() {
            return Err(HostError::InvalidConfig("chain_id is empty".into()));
        }
        let keypair = keys::keypair(key).map_err(|e| HostError::Identity(e.to_string()))?;
        let local = keypair.public().to_peer_id();

        let mut store = load_store(&config);
        let mut id_less_bootstrap = Vec::new();
        let mut bootstrap_ids = HashSet::new();
        for addr in &config.bootstrap {
            match split_peer_id(addr) {
                (base, Some(peer)) if peer != local => {
                    store.set_persistent(peer);
                    store.add_addrs(peer, [base]);
                    bootstrap_ids.insert(peer);
                }
                (_, Some(_)) => {}
                (base, None) => id_less_bootstrap.push(base),
            }
        }
        // The genesis validators are re-dialed like p2p.peers whenever the
        // store knows an address of theirs (from peer exchange or identify).
        for v in &config.validators {
            if *v != local {
                store.set_persistent(*v);
                bootstrap_ids.insert(*v);
            }
        }
        let trusted: HashSet<PeerId> = config
            .whitelist
            .iter()
            .chain(config.validators.iter())
            .chain(bootstrap_ids.iter())
            .copied()
            .collect();
        let allowed = config.private_mode.then(|| trusted.clone());

        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_established_incoming(Some(
                config
                    .max_connections
                    .saturating_sub(config.outbound_slots)
                    .max(1),
            ))
            .with_max_established_per_peer(Some(config.max_per_peer.max(1)))
            .with_max_pending_incoming(Some(config.max_pending.max(1)))
            .with_max_pending_outgoing(Some(config.max_pending.max(1)));
        let identify = identify::Behaviour::new(
            identify::Config::new(config.protocol_version(), keypair.public())
                .with_agent_version(format!("kite/{}", env!("CARGO_PKG_VERSION"))),
        );
        let behaviour = Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            memory: match config.max_memory {
                Some(bytes) => memory_connection_limits::Behaviour::with_max_bytes(
                    usize::try_from(bytes).unwrap_or(usize::MAX),
                ),
                None => memory_connection_limits::Behaviour::with_max_percentage(0.9),
            },
            gate: Gate::new(store, allowed)
                .with_inbound_per_ip(config.max_inbound_per_ip, trusted)
                .with_inbound_per_subnet(config.max_inbound_per_subnet),
            identify,
            ping: ping::Behaviour::new(ping::Config::new()),
            stream: super::streams::Behaviour::new(),
        };
        let mut swarm = build_swarm(keypair, behaviour, &config)?;

        for addr in listen_addrs(&config) {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| HostError::Listen {
                    addr,
                    reason: e.to_string(),
                })?;
        }

        let control = swarm.behaviour().stream.control();
        let (cmd_tx, cmd_rx) = mpsc::channel(config.command_buffer.max(1));
        let (ev_tx, ev_rx) = mpsc::channel(config.event_buffer.max(1));
        let (closed_tx, closed_rx) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            local_peer_id: local,
            closed: closed_rx,
            open_timeout: config.open_timeout,
            stream_timeout: config.stream_timeout,
            counters: Default::default(),
            dropped_events: Default::default(),
            dropped_reports: Default::default(),
            reported_points: Default::default(),
        });
        let handle = HostHandle {
            commands: cmd_tx,
            control,
            shared: shared.clone(),
        };
        let mut task = Task {
            swarm,
            config,
            local,
            events: ev_tx,
            shared,
            peers: HashMap::new(),
            scores: HashMap::new(),
            dialing: HashMap::new(),
            listen: Vec::new(),
            bootstrap_ids: bootstrap_ids.into_iter().collect(),
            id_less_bootstrap,
            last_bootstrap: None,
            last_decay: Instant::now(),
            other_chain: HashMap::new(),
            saving: None,
            closed: closed_tx,
        };
        task.dial_bootstrap();
        task.dial_toward_target();
        tokio::spawn(task.run(cmd_rx));
        Ok((handle, ev_rx))
    }
}

fn load_store(config: &HostConfig) -> PeerStore {
    let (cap, base, max) = (
        config.peer_store_capacity,
        config.dial_backoff,
        config.max_dial_backoff,
    );
    match &config.peer_store_path {
        None => PeerStore::new(cap, base, max),
        Some(path) => match PeerStore::load(path, cap, base, max) {
            Ok(s) => {
                tracing::info!(path = %path.display(), peers = s.len(), "peer store loaded");
                s
            }
            Err(e) => {
                tracing::warn!(error = %e, "peer store unreadable: starting with an empty one");
                PeerStore::new(cap, base, max)
            }
        },
    }
}

/// The configured listen addresses plus, with QUIC on, the QUIC twin of the
/// first TCP address.
fn listen_addrs(config: &HostConfig) -> Vec<Multiaddr> {
    let mut out = config.listen.clone();
    if config.enable_quic {
        let has_quic = out
            .iter()
            .any(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)));
        let first_tcp = out
            .iter()
            .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))))
            .cloned();
        if let (false, Some(tcp)) = (has_quic, first_tcp) {
            let quic: Multiaddr = tcp
                .iter()
                .flat_map(|p| match p {
                    Protocol::Tcp(port) => vec![Protocol::Udp(port), Protocol::QuicV1],
                    other => vec![other],
                })
                .collect();
            out.push(quic);
        }
    }
    out
}

/// Builds the swarm: TCP + Noise + Yamux, QUIC when enabled, DNS when the
/// system resolver configuration is readable.
fn build_swarm(
    keypair: libp2p::identity::Keypair,
    behaviour: Behaviour,
    config: &HostConfig,
) -> Result<Swarm<Behaviour>, HostError> {
    let idle = config.idle_timeout;
    // The builder is typed by its phase: one chain per combination.
    macro_rules! tcp {
        ($kp:expr) => {
            libp2p::SwarmBuilder::with_existing_identity($kp)
                .with_tokio()
                .with_tcp(
                    libp2p::tcp::Config::default().nodelay(true),
                    libp2p::noise::Config::new,
                    libp2p::yamux::Config::default,
                )
                .map_err(|e| HostError::Transport(e.to_string()))?
        };
    }
    macro_rules! finish {
        ($b:expr) => {
            $b.with_behaviour(|_| behaviour)
                .map_err(|e: std::convert::Infallible| match e {})?
                .with_swarm_config(|c| {
                    c.with_idle_connection_timeout(idle)
                        .with_substream_upgrade_protocol_override(
                            libp2p::core::upgrade::Version::V1Lazy,
                        )
                })
                .build()
        };
    }
    let no_dns = |e: std::io::Error| {
        tracing::warn!(error = %e, "no system DNS configuration: /dns addresses will not resolve");
    };
    let swarm = if config.enable_quic {
        match tcp!(keypair.clone()).with_quic().with_dns() {
            Ok(b) => finish!(b),
            Err(e) => {
                no_dns(e);
                finish!(tcp!(keypair).with_quic())
            }
        }
    } else {
        match tcp!(keypair.clone()).with_dns() {
            Ok(b) => finish!(b),
            Err(e) => {
                no_dns(e);
                finish!(tcp!(keypair))
            }
        }
    };
    Ok(swarm)
}

/// What the task knows about a connected peer.
struct PeerState {
    conns: Vec<(ConnectionId, Multiaddr, Direction)>,
    /// This node dialed it (an outbound connection came up) since it
    /// connected: only then does the peer store count it as seen.
    dialed: bool,
    connected_at: Instant,
    identified: bool,
    agent: Option<String>,
    protocol_version: Option<String>,
    rtt: Option<Duration>,
    /// It was banned (by its score or the operator) or removed by the
    /// operator, and its connections are closing:
    /// nothing that still arrives on them (a late identify) puts the peer
    /// back in the store.
    dropped: bool,
}

/// Longest identify string kept.
const MAX_IDENTIFY_STRING: usize = 128;
/// Most listen addresses tracked.
const MAX_LISTEN_ADDRS: usize = 64;

/// Why a dial failed at once, with the cause when this host refused it
/// (its own limits: memory, connections).
fn dial_reason(e: &DialError) -> String {
    match e {
        DialError::Denied { cause } => match std::error::Error::source(cause) {
            Some(why) => format!("refused by this host: {why}"),
            None => format!("refused by this host: {cause}"),
        },
        e => e.to_string(),
    }
}

fn truncated(s: &str) -> String {
    s.chars().take(MAX_IDENTIFY_STRING).collect()
}

/// The swarm task: sole owner of the swarm.
struct Task {
    swarm: Swarm<Behaviour>,
    config: HostConfig,
    local: PeerId,
    events: mpsc::Sender<HostEvent>,
    shared: Arc<Shared>,
    peers: HashMap<PeerId, PeerState>,
    scores: HashMap<PeerId, u32>,
    dialing: HashMap<PeerId, Instant>,
    listen: Vec<Multiaddr>,
    bootstrap_ids: Vec<PeerId>,
    id_less_bootstrap: Vec<Multiaddr>,
    last_bootstrap: Option<Instant>,
    last_decay: Instant,
    /// Peers of another chain (identify), with when this host found out:
    /// banned once [`super::OTHER_CHAIN_GRACE`] has passed, so that they
    /// can read this node's identify and status and find out too.
    other_chain: HashMap<PeerId, Instant>,
    saving: Option<tokio::task::JoinHandle<()>>,
    closed: tokio::sync::watch::Sender<bool>,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(
            self.config
                .maintenance_interval
                .max(Duration::from_millis(10)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut save =
            tokio::time::interval(self.config.save_interval.max(Duration::from_millis(100)));
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reply = loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(cmd) => self.on_command(cmd),
                    None => break None,
                },
                _ = tick.tick() => self.maintain(),
                _ = save.tick() => self.start_save(),
            }
        };
        tracing::info!("p2p host shutting down");
        let _ = self.closed.send(true);
        self.final_save().await;
        drop(self.swarm);
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
    }

    fn emit(&self, ev: HostEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.events.try_send(ev) {
            self.shared.dropped_events.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn gate(&mut self) -> &mut Gate {
        &mut self.swarm.behaviour_mut().gate
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { addr, reply } => {
                let r = self.dial(addr);
                let _ = reply.send(r);
            }
            Command::ConnectedPeers { reply } => {
                let mut v: Vec<PeerId> = self.peers.keys().copied().collect();
                v.sort();
                let _ = reply.send(v);
            }
            Command::PeerInfo { reply } => {
                let _ = reply.send(self.peer_info());
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.listen.clone());
            }
            Command::Report { peer, penalty, why } => self.report(peer, penalty, &why),
            Command::IsBanned { peer, reply } => {
                let _ = reply.send(self.swarm.behaviour().gate.is_banned(&peer));
            }
            Command::KnownPeers {
                max,
                allow_private,
                reply,
            } => {
                let gate = &self.swarm.behaviour().gate;
                let peers = if self.config.pex && !gate.is_private() {
                    gate.store.known_peers(max, allow_private, now_ms())
                } else {
                    Vec::new()
                };
                let _ = reply.send(peers);
            }
            Command::AddDiscovered { peers, reply } => {
                let n = self.add_discovered(peers);
                let _ = reply.send(n);
            }
            Command::Disconnect { peer } => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Operator { op, reply } => {
                let _ = reply.send(self.operator(op));
            }
            Command::Shutdown { reply } => {
                // Handled by the loop; unreachable here but harmless.
                let _ = reply.send(());
            }
        }
    }

    /// An operator's request (admin listener).
    fn operator(&mut self, op: OperatorOp) -> Result<OperatorOutcome, HostError> {
        let invalid = |reason: &str| HostError::InvalidConfig(reason.to_owned());
        let peer = match &op {
            OperatorOp::Ban { peer, .. }
            | OperatorOp::Unban { peer }
            | OperatorOp::Remove { peer } => *peer,
            OperatorOp::Add { addr } => match split_peer_id(addr) {
                (_, Some(peer)) => peer,
                (_, None) => return Err(invalid("the address must end in /p2p/<peer id>")),
            },
        };
        if peer == self.local {
            return Err(invalid("that is this node"));
        }
        let was_connected = self.peers.contains_key(&peer);
        let changed = match op {
            OperatorOp::Ban { duration, .. } => {
                self.ban_for(peer, duration, "by the operator");
                true
            }
            OperatorOp::Unban { .. } => {
                let was = self.gate().unban(&peer);
                self.scores.remove(&peer);
                tracing::info!(%peer, was_banned = was, "peer unbanned by the operator");
                was
            }
            OperatorOp::Add { addr } => {
                // Nothing is kept unless the dial could start (not banned,
                // allowed in private mode).
                self.dial(addr.clone())?;
                let new = !self.bootstrap_ids.contains(&peer);
                if new {
                    self.bootstrap_ids.push(peer);
                }
                let gate = self.gate();
                gate.trust(peer);
                gate.store.set_persistent(peer);
                tracing::info!(%addr, "peer added by the operator");
                new
            }
            OperatorOp::Remove { .. } => {
                let kept = self.bootstrap_ids.len();
                self.bootstrap_ids.retain(|p| *p != peer);
                let known = self.gate().store.forget(&peer);
                self.dialing.remove(&peer);
                self.drop_connections(peer);
                tracing::info!(%peer, "peer removed by the operator");
                known || kept != self.bootstrap_ids.len() || was_connected
            }
        };
        Ok(OperatorOutcome {
            changed,
            was_connected,
        })
    }

    /// Closes every connection to `peer` for good: what still arrives on
    /// them until they are closed is not learnt from.
    fn drop_connections(&mut self, peer: PeerId) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.dropped = true;
        }
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn dial(&mut self, addr: Multiaddr) -> Result<(), HostError> {
        let dial_err = |addr: &Multiaddr, reason: String| HostError::Dial {
            addr: addr.clone(),
            reason,
        };
        match split_peer_id(&addr) {
            (_, Some(peer)) if peer == self.local => {
                Err(dial_err(&addr, "that is this node".into()))
            }
            (base, Some(peer)) => {
                let gate = self.gate();
                if gate.is_banned(&peer) {
                    return Err(dial_err(&addr, "peer is banned".into()));
                }
                if !gate.is_allowed(&peer) {
                    return Err(dial_err(&addr, "private mode: peer not allowed".into()));
                }
                gate.store.add_addrs(peer, [base.clone()]);
                let opts = DialOpts::peer_id(peer)
                    .addresses(vec![base])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dialing.insert(peer, Instant::now());
                        Ok(())
                    }
                    Err(DialError::DialPeerConditionFalse(_)) => Ok(()),
                    Err(e) => Err(dial_err(&addr, dial_reason(&e))),
                }
            }
            (base, None) => self
                .swarm
                .dial(base)
                .map_err(|e| dial_err(&addr, dial_reason(&e))),
        }
    }

    fn peer_info(&self) -> Vec<PeerInfo> {
        let now = Instant::now();
        let mut out: Vec<PeerInfo> = self
            .peers
            .iter()
            .map(|(peer, s)| PeerInfo {
                peer: *peer,
                addrs: s.conns.iter().map(|c| c.1.clone()).collect(),
                direction: s.conns.first().map(|c| c.2).unwrap_or(Direction::Inbound),
                score: self.scores.get(peer).copied().unwrap_or(0),
                agent: s.agent.clone(),
                protocol_version: s.protocol_version.clone(),
                rtt: s.rtt,
                connected_for: now.saturating_duration_since(s.connected_at),
            })
            .collect();
        out.sort_by_key(|p| p.peer);
        out
    }

    fn report(&mut self, peer: PeerId, penalty: u32, why: &str) {
        if peer == self.local || penalty == 0 {
            return;
        }
        if self.scores.len() >= MAX_SCORES
            && !self.scores.contains_key(&peer)
            && let Some(low) = self.scores.iter().min_by_key(|(_, s)| **s).map(|(p, _)| *p)
        {
            self.scores.remove(&low);
        }
        let score = self.scores.entry(peer).or_insert(0);
        *score = score.saturating_add(penalty);
        let score = *score;
        tracing::warn!(%peer, penalty, score, why, "peer misbehaved");
        if score >= self.config.ban_threshold {
            self.ban(
                peer,
                &format!(
                    "misbehaviour score {score} reached {}: {why}",
                    self.config.ban_threshold
                ),
            );
        }
    }

    fn ban(&mut self, peer: PeerId, why: &str) {
        self.ban_for(peer, self.config.ban_duration, why);
    }

    /// Bans `peer` for `d` and closes its connections.
    fn ban_for(&mut self, peer: PeerId, d: Duration, why: &str) {
        let until = Instant::now() + d;
        let until_ms = now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        tracing::warn!(%peer, ?d, why, "peer banned");
        self.gate().ban(peer, until, until_ms);
        self.scores.remove(&peer);
        self.dialing.remove(&peer);
        self.drop_connections(peer);
    }

    fn add_discovered(&mut self, peers: Vec<(PeerId, Vec<Multiaddr>)>) -> usize {
        if !self.config.pex {
            return 0;
        }
        let allow_private = self.config.allow_private_addrs;
        let local = self.local;
        let gate = self.gate();
        let mut added = 0;
        for (peer, addrs) in peers {
            if peer == local || gate.is_banned(&peer) || !gate.is_allowed(&peer) {
                continue;
            }
            // What peer exchange says of a configured peer or a validator
            // never replaces addresses the node already has for it (from
            // its config, its own dial or the peer's own identify).
            let kept = gate
                .store
                .get(&peer)
                .is_some_and(|r| r.persistent && !r.addrs.is_empty());
            if kept {
                continue;
            }
            let addrs: Vec<Multiaddr> = addrs
                .iter()
                .take(super::store::MAX_ADDRS_PER_PEER * 2)
                .filter_map(|a| match split_peer_id(a) {
                    (base, None) => Some(base),
                    (base, Some(id)) if id == peer => Some(base),
                    _ => None,
                })
                .filter(|a| is_acceptable(a, allow_private))
                .collect();
            if !addrs.is_empty() && gate.store.add_addrs(peer, addrs) {
                added += 1;
            }
        }
        added
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identified(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result,
            })) => match result {
                Ok(rtt) => {
                    if let Some(s) = self.peers.get_mut(&peer) {
                        s.rtt = Some(rtt);
                    }
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "ping failed: closing the connection");
                    self.swarm.close_connection(connection);
                }
            },
            SwarmEvent::Behaviour(_) => {}
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.on_established(peer_id, connection_id, endpoint, num_established.get()),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, ?cause, "connection closed");
                if let Some(s) = self.peers.get_mut(&peer_id) {
                    s.conns.retain(|c| c.0 != connection_id);
                }
                if num_established == 0 {
                    let dialed = self.peers.remove(&peer_id).is_some_and(|s| s.dialed);
                    if dialed {
                        let now = now_ms();
                        self.gate().store.on_connected(peer_id, now);
                    }
                    self.emit(HostEvent::PeerDisconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                self.dialing.remove(&peer);
                tracing::debug!(%peer, error = %error, "dial failed");
                let failed = matches!(
                    error,
                    DialError::Transport(_)
                        | DialError::WrongPeerId { .. }
                        | DialError::NoAddresses
                        | DialError::Aborted
                );
                if failed && !self.swarm.is_connected(&peer) {
                    let now = now_ms();
                    self.gate().store.on_dial_failure(peer, now);
                }
            }
            SwarmEvent::IncomingConnectionError {
                peer_id,
                error,
                send_back_addr,
                ..
            } => {
                let why = match &error {
                    libp2p::swarm::ListenError::Denied { cause } => {
                        std::error::Error::source(cause)
                            .map_or(cause.to_string(), |w| w.to_string())
                    }
                    e => e.to_string(),
                };
                tracing::debug!(peer = ?peer_id, from = %send_back_addr, why, "inbound connection refused or failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "p2p listening");
                if !self.listen.contains(&address) && self.listen.len() < MAX_LISTEN_ADDRS {
                    self.listen.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen.retain(|a| *a != address);
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(error = %error, "p2p listener error");
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                tracing::warn!(?addresses, ?reason, "p2p listener closed");
                self.listen.retain(|a| !addresses.contains(a));
            }
            _ => {}
        }
    }

    fn on_established(
        &mut self,
        peer: PeerId,
        conn: ConnectionId,
        endpoint: ConnectedPoint,
        num_established: u32,
    ) {
        self.dialing.remove(&peer);
        let (addr, direction) = match &endpoint {
            ConnectedPoint::Dialer { address, .. } => (address.clone(), Direction::Outbound),
            ConnectedPoint::Listener { send_back_addr, .. } => {
                (send_back_addr.clone(), Direction::Inbound)
            }
        };
        tracing::debug!(%peer, %addr, ?direction, "connection established");
        let state = self.peers.entry(peer).or_insert_with(|| PeerState {
            conns: Vec::new(),
            dialed: false,
            connected_at: Instant::now(),
            identified: false,
            agent: None,
            protocol_version: None,
            rtt: None,
            dropped: false,
        });
        state.dialed |= direction == Direction::Outbound;
        state.conns.push((conn, addr.clone(), direction));
        let dropped = state.dropped;
        let allow_private = self.config.allow_private_addrs;
        let now = now_ms();
        let gate = self.gate();
        if direction == Direction::Outbound && !dropped {
            // An address we dialed successfully is worth keeping, and the
            // peer counts as seen. An inbound connection proves nothing
            // about the addresses a peer claims: it does not make the peer
            // rank first in dials and peer-exchange answers.
            let (base, _) = split_peer_id(&addr);
            if is_acceptable(&base, allow_private) {
                gate.store.add_addrs(peer, [base]);
            }
            gate.store.on_connected(peer, now);
        }
        if num_established == 1 {
            self.emit(HostEvent::PeerConnected { peer, addr });
        }
    }

    fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        let expected = self.config.protocol_version();
        if info.protocol_version != expected {
            let why = format!(
                "identify protocol version {:?}, expected {expected:?} (another chain)",
                truncated(&info.protocol_version)
            );
            self.emit(HostEvent::OtherChain {
                peer,
                protocol_version: truncated(&info.protocol_version),
            });
            if self.other_chain.len() >= MAX_OTHER_CHAIN {
                self.ban(peer, &why);
            } else {
                tracing::info!(%peer, why, "peer of another chain: banned after a grace");
                self.other_chain.entry(peer).or_insert_with(Instant::now);
            }
            return;
        }
        let allow_private = self.config.allow_private_addrs;
        let addrs: Vec<Multiaddr> = info
            .listen_addrs
            .iter()
            .filter_map(|a| match split_peer_id(a) {
                (base, None) => Some(base),
                (base, Some(id)) if id == peer => Some(base),
                _ => None,
            })
            .filter(|a| is_acceptable(a, allow_private))
            .take(super::store::MAX_ADDRS_PER_PEER)
            .collect();
        let Some(state) = self.peers.get_mut(&peer).filter(|s| !s.dropped) else {
            return;
        };
        let dialed = state.dialed;
        let first = !state.identified;
        state.identified = true;
        state.agent = Some(truncated(&info.agent_version));
        state.protocol_version = Some(truncated(&info.protocol_version));
        let now = now_ms();
        let gate = self.gate();
        if gate.is_allowed(&peer) && !addrs.is_empty() {
            gate.store.add_addrs(peer, addrs.clone());
            if dialed {
                gate.store.on_connected(peer, now);
            }
        }
        if first {
            self.emit(HostEvent::PeerIdentified {
                peer,
                protocol_version: expected,
                listen_addrs: addrs,
            });
        }
    }

    fn maintain(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .other_chain
            .iter()
            .filter(|(p, t)| {
                now.saturating_duration_since(**t) >= super::OTHER_CHAIN_GRACE
                    || !self.peers.contains_key(p)
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            self.other_chain.remove(&peer);
            self.ban(peer, "identify: a node of another chain");
        }
        let late: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, s)| {
                !s.identified
                    && now.saturating_duration_since(s.connected_at) > self.config.identify_timeout
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in late {
            tracing::debug!(%peer, "peer did not identify in time: disconnecting");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        self.dialing
            .retain(|_, t| now.saturating_duration_since(*t) < DIAL_EXPIRY);
        if now.saturating_duration_since(self.last_decay) >= Duration::from_secs(60) {
            self.last_decay = now;
            let forgive = self.config.score_decay_per_minute;
            for s in self.scores.values_mut() {
                *s = s.saturating_sub(forgive);
            }
            self.scores.retain(|_, s| *s > 0);
        }
        self.dial_toward_target();
        if self.peers.is_empty() {
            self.dial_bootstrap();
        } else {
            self.redial_bootstrap_ids();
        }
    }

    /// Dials again the bootstrap peers named by id (`p2p.peers`) that are
    /// not connected, whatever the number of connections, every
    /// [`BOOTSTRAP_REDIAL_EVERY`] dial backoffs.
    fn redial_bootstrap_ids(&mut self) {
        let now = Instant::now();
        let every = self.config.dial_backoff * BOOTSTRAP_REDIAL_EVERY;
        if self
            .last_bootstrap
            .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return;
        }
        self.last_bootstrap = Some(now);
        self.dial_bootstrap_ids(now);
    }

    /// Dials the bootstrap peers (rate-limited).
    fn dial_bootstrap(&mut self) {
        let now = Instant::now();
        if self
            .last_bootstrap
            .is_some_and(|t| now.saturating_duration_since(t) < BOOTSTRAP_REDIAL)
        {
            return;
        }
        self.last_bootstrap = Some(now);
        for addr in self.id_less_bootstrap.clone() {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "bootstrap dial failed");
            }
        }
        self.dial_bootstrap_ids(now);
    }

    fn dial_bootstrap_ids(&mut self, now: Instant) {
        for peer in self.bootstrap_ids.clone() {
            if self.peers.contains_key(&peer) || self.dialing.contains_key(&peer) {
                continue;
            }
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if self.swarm.dial(opts).is_ok() {
                self.dialing.insert(peer, now);
            }
        }
    }

    /// Dials known peers while below the target number of connections.
    fn dial_toward_target(&mut self) {
        let target = self.config.target_peers as usize;
        let have = self.peers.len() + self.dialing.len();
        if have >= target {
            return;
        }
        let room = (target - have).min(self.config.max_pending.max(1) as usize);
        let gate = &self.swarm.behaviour().gate;
        let (peers, dialing, local) = (&self.peers, &self.dialing, self.local);
        let candidates = gate.store.dial_candidates(now_ms(), room, |p| {
            *p == local
                || peers.contains_key(p)
                || dialing.contains_key(p)
                || !gate.is_allowed(p)
                || gate.is_banned(p)
        });
        let now = Instant::now();
        for (peer, _) in candidates {
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    tracing::debug!(%peer, "dialing toward the peer target");
                    self.dialing.insert(peer, now);
                }
                Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "dial refused");
                    let t = now_ms();
                    self.gate().store.on_dial_failure(peer, t);
                }
            }
        }
    }

    /// Writes the peer store in the background when it changed.
    fn start_save(&mut self) {
        let Some(path) = self.config.peer_store_path.clone() else {
            return;
        };
        if self.saving.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let store = &mut self.swarm.behaviour_mut().gate.store;
        if !store.is_dirty() {
            return;
        }
        let bytes = store.to_json();
        store.mark_saved();
        self.saving = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = PeerStore::write_file(&path, &bytes) {
                tracing::warn!(error = %e, "saving the peer store failed");
            }
        }));
    }

    /// Waits for a save in progress, then saves what changed since.
    async fn final_save(&mut self) {
        if let Some(h) = self.saving.take() {
            let _ = h.await;
        }
        self.start_save();
        if let Some(h) = self.saving.take() {
            let _ = h.await;
        }
    }
}
