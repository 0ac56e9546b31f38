//! An in-memory network for the node's deterministic tests: every node's
//! [`Network`] is a [`MemHost`] of one [`MemNet`], streams are in-memory
//! pipes, and faults come from a seeded generator.
//!
//! What it models, the way the consensus simulator does for the engine:
//! - **delay**: the first message to reach each end of a stream takes a
//!   delay drawn from [`Faults::delay`] (its one-way latency; the end is
//!   held meanwhile, as a handler slot is);
//! - **drops**: an open fails with probability [`Faults::drop`] (the
//!   opener sees a retryable error, as with a reset libp2p stream);
//! - **partitions**: [`MemNet::partition`] splits the nodes into groups,
//!   [`MemNet::heal`] joins them; peers across a cut see each other
//!   disconnect, and streams across it fail;
//! - **crashes**: a node that stops leaves the network; when it starts
//!   again it joins with the same peer id.
//!
//! Under tokio's paused time (`#[tokio::test(start_paused = true)]`) the
//! delays take no wall time. Runs are repeatable for a seed up to the order
//! in which blocking tasks (the store's writes, admission) finish and the
//! order of maps the node iterates. Not modelled: a cut does not reset
//! streams already open (they finish, like messages in flight), and peer
//! exchange finds nobody (every node is connected to every other).
//!
//! Peers that misbehave are reported as with libp2p: [`MemNet::reports`]
//! lists them, and a peer past [`BAN_THRESHOLD`] points is cut off.

use crate::p2p::{
    HostError, HostEvent, HostEvents, Incoming, Multiaddr, Network, OperatorOp, OperatorOutcome,
    PeerId, PeerInfo, ProtocolCounters, Stream, StreamStats,
};
use async_trait::async_trait;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// Bytes buffered in each direction of a stream.
const PIPE_BYTES: usize = 64 * 1024;
/// Inbound streams waiting for a protocol's accept loop; more are dropped
/// (the opener sees its stream fail), as the real host does at its
/// accept buffer.
const ACCEPT_QUEUE: usize = 64;
/// Peer events waiting for a node; more are dropped.
const EVENT_QUEUE: usize = 1024;
/// Points of misbehaviour past which a peer is cut off, as the libp2p
/// host's default ban threshold.
pub const BAN_THRESHOLD: u32 = 100;
/// Longest an inbound handler may run.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// The faults of a run.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Seed of every random draw.
    pub seed: u64,
    /// Probability that opening a stream fails.
    pub drop: f64,
    /// One-way delay of the first message each way on a stream, drawn
    /// uniformly from this range.
    pub delay: (Duration, Duration),
}

impl Faults {
    /// No drops, 1 to 5 ms of delay.
    pub fn calm(seed: u64) -> Faults {
        Faults {
            seed,
            drop: 0.0,
            delay: (Duration::from_millis(1), Duration::from_millis(5)),
        }
    }
}

/// A misbehaviour report one node made of another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Who reported.
    pub by: PeerId,
    /// Whom.
    pub peer: PeerId,
    /// Points.
    pub penalty: u32,
    /// Why.
    pub why: String,
}

struct Member {
    index: usize,
    accept: HashMap<&'static str, mpsc::Sender<(PeerId, Stream)>>,
    events: mpsc::Sender<HostEvent>,
    closed: watch::Sender<bool>,
}

struct Inner {
    faults: Faults,
    rng: StdRng,
    protocol_version: String,
    /// Nodes on the network now, by peer id (ordered: repeatable events).
    up: BTreeMap<PeerId, Member>,
    /// Each node's group; nodes of different groups cannot talk.
    group: HashMap<PeerId, usize>,
    /// Pairs cut off by a ban (smaller id first).
    banned: BTreeSet<(PeerId, PeerId)>,
    scores: HashMap<(PeerId, PeerId), u32>,
    reports: Vec<Report>,
    joined: usize,
}

impl Inner {
    fn linked(&self, a: &PeerId, b: &PeerId) -> bool {
        a != b
            && self.up.contains_key(a)
            && self.up.contains_key(b)
            && self.group.get(a).copied().unwrap_or(0) == self.group.get(b).copied().unwrap_or(0)
            && !self.banned.contains(&pair(*a, *b))
    }

    fn addr(&self, p: &PeerId) -> Multiaddr {
        let i = self.up.get(p).map_or(0, |m| m.index);
        memory_addr(i)
    }

    /// Tells `to` that `peer` connected and identified.
    fn tell_up(&self, to: &PeerId, peer: PeerId) {
        if let Some(m) = self.up.get(to) {
            let addr = self.addr(&peer);
            let _ = m.events.try_send(HostEvent::PeerConnected {
                peer,
                addr: addr.clone(),
            });
            let _ = m.events.try_send(HostEvent::PeerIdentified {
                peer,
                protocol_version: self.protocol_version.clone(),
                listen_addrs: vec![addr],
            });
        }
    }

    fn tell_down(&self, to: &PeerId, peer: PeerId) {
        if let Some(m) = self.up.get(to) {
            let _ = m.events.try_send(HostEvent::PeerDisconnected { peer });
        }
    }

    /// Runs `change`, then tells every node of the links it made or cut.
    fn relink(&mut self, change: impl FnOnce(&mut Inner)) {
        let ids: Vec<PeerId> = self.up.keys().copied().collect();
        let before: BTreeSet<(PeerId, PeerId)> = links(self, &ids);
        change(self);
        let ids: Vec<PeerId> = self.up.keys().copied().collect();
        let after = links(self, &ids);
        for (a, b) in before.difference(&after) {
            self.tell_down(a, *b);
            self.tell_down(b, *a);
        }
        for (a, b) in after.difference(&before) {
            self.tell_up(a, *b);
            self.tell_up(b, *a);
        }
    }
}

fn links(inner: &Inner, ids: &[PeerId]) -> BTreeSet<(PeerId, PeerId)> {
    let mut out = BTreeSet::new();
    for a in ids {
        for b in ids {
            if a < b && inner.linked(a, b) {
                out.insert((*a, *b));
            }
        }
    }
    out
}

fn pair(a: PeerId, b: PeerId) -> (PeerId, PeerId) {
    if a < b { (a, b) } else { (b, a) }
}

/// The address a node `i` of the in-memory network is known by.
pub fn memory_addr(i: usize) -> Multiaddr {
    Multiaddr::empty().with(libp2p::multiaddr::Protocol::Memory(i as u64))
}

/// One in-memory network; cheap to clone.
#[derive(Clone)]
pub struct MemNet {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for MemNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemNet({} up)", self.inner.lock().up.len())
    }
}

impl MemNet {
    /// An empty network of chain `chain_id` (what its peers identify as).
    pub fn new(chain_id: &str, faults: Faults) -> MemNet {
        MemNet {
            inner: Arc::new(Mutex::new(Inner {
                faults,
                rng: StdRng::seed_from_u64(faults.seed),
                protocol_version: format!("/kite/{chain_id}"),
                up: BTreeMap::new(),
                group: HashMap::new(),
                banned: BTreeSet::new(),
                scores: HashMap::new(),
                reports: Vec::new(),
                joined: 0,
            })),
        }
    }

    /// Puts node `me` on the network, connected to every node it can
    /// reach; returns its host and its peer events.
    pub fn join(&self, me: PeerId) -> (Arc<MemHost>, HostEvents) {
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (closed_tx, closed) = watch::channel(false);
        let mut inner = self.inner.lock();
        let index = inner.joined;
        inner.joined += 1;
        inner.relink(|i| {
            i.up.insert(
                me,
                Member {
                    index,
                    accept: HashMap::new(),
                    events: events_tx,
                    closed: closed_tx,
                },
            );
        });
        let host = Arc::new(MemHost {
            net: self.clone(),
            me,
            index,
            counters: ProtocolCounters::default(),
            closed,
        });
        (host, events)
    }

    /// Takes `me` off the network (its host closes; its peers see it
    /// leave).
    pub fn leave(&self, me: PeerId) {
        self.leave_as(me, None);
    }

    /// Takes `me` off the network if it is the member that joined as
    /// `index` (a late shutdown of an earlier run of the node must not take
    /// its restarted run off).
    fn leave_as(&self, me: PeerId, index: Option<usize>) {
        let mut inner = self.inner.lock();
        if let Some(i) = index
            && inner.up.get(&me).is_some_and(|m| m.index != i)
        {
            return;
        }
        let mut gone = None;
        inner.relink(|i| gone = i.up.remove(&me));
        if let Some(m) = gone {
            let _ = m.closed.send(true);
        }
    }

    /// Splits the network: nodes in different `groups` cannot talk; nodes
    /// in no group form one more group together.
    pub fn partition(&self, groups: &[Vec<PeerId>]) {
        self.inner.lock().relink(|i| {
            i.group.clear();
            for (g, members) in groups.iter().enumerate() {
                for p in members {
                    i.group.insert(*p, g + 1);
                }
            }
        });
    }

    /// Ends every partition.
    pub fn heal(&self) {
        self.inner.lock().relink(|i| i.group.clear());
    }

    /// Every misbehaviour report made so far.
    pub fn reports(&self) -> Vec<Report> {
        self.inner.lock().reports.clone()
    }

    /// Whether `a` and `b` can talk now.
    pub fn linked(&self, a: PeerId, b: PeerId) -> bool {
        self.inner.lock().linked(&a, &b)
    }
}

/// One node's end of a [`MemNet`].
pub struct MemHost {
    net: MemNet,
    me: PeerId,
    index: usize,
    counters: ProtocolCounters,
    closed: watch::Receiver<bool>,
}

impl std::fmt::Debug for MemHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemHost({})", self.me)
    }
}

impl MemHost {
    fn open_error(&self, peer: PeerId, protocol: &'static str, why: &str) -> HostError {
        HostError::OpenStream {
            peer,
            protocol,
            reason: why.into(),
        }
    }

    async fn open(&self, peer: PeerId, protocol: &'static str) -> Result<Stream, HostError> {
        let (there, back) = {
            let mut inner = self.net.inner.lock();
            if !inner.linked(&self.me, &peer) {
                return Err(self.open_error(peer, protocol, "no connection"));
            }
            let f = inner.faults;
            if f.drop > 0.0 && inner.rng.random_bool(f.drop.min(1.0)) {
                return Err(self.open_error(peer, protocol, "dropped (fault)"));
            }
            (draw(&mut inner), draw(&mut inner))
        };
        let accept = {
            let inner = self.net.inner.lock();
            if !inner.linked(&self.me, &peer) {
                return Err(self.open_error(peer, protocol, "connection lost"));
            }
            inner
                .up
                .get(&peer)
                .and_then(|m| m.accept.get(protocol).cloned())
        };
        let Some(accept) = accept else {
            return Err(HostError::UnsupportedProtocol { peer, protocol });
        };
        let (mine, theirs) = tokio::io::duplex(PIPE_BYTES);
        accept
            .try_send((self.me, Box::new(Delayed::new(theirs.compat(), there))))
            .map_err(|_| self.open_error(peer, protocol, "accept queue full"))?;
        Ok(Box::new(Delayed::new(mine.compat(), back)))
    }
}

#[async_trait]
impl Network for MemHost {
    fn local_peer_id(&self) -> PeerId {
        self.me
    }

    fn stream_timeout(&self) -> Duration {
        STREAM_TIMEOUT
    }

    fn closed(&self) -> watch::Receiver<bool> {
        self.closed.clone()
    }

    fn counters(&self, protocol: &'static str) -> Arc<crate::p2p::Counters> {
        self.counters.get(protocol)
    }

    fn stream_stats(&self) -> Vec<(&'static str, StreamStats)> {
        self.counters.stats()
    }

    async fn open_stream(&self, peer: PeerId, protocol: &'static str) -> Result<Stream, HostError> {
        let c = self.counters.get(protocol);
        let r = self.open(peer, protocol).await;
        crate::p2p::Counters::inc(if r.is_ok() { &c.opened } else { &c.open_failed });
        r
    }

    fn accept(&self, protocol: &'static str) -> Result<Incoming, HostError> {
        use futures::StreamExt;
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let mut inner = self.net.inner.lock();
        let m = inner.up.get_mut(&self.me).ok_or(HostError::Closed)?;
        if m.accept.contains_key(protocol) {
            return Err(HostError::AlreadyAccepting(protocol));
        }
        m.accept.insert(protocol, tx);
        Ok(tokio_stream_of(rx).boxed())
    }

    async fn dial(&self, _addr: Multiaddr) -> Result<(), HostError> {
        Ok(())
    }

    async fn connected_peers(&self) -> Result<Vec<PeerId>, HostError> {
        let inner = self.net.inner.lock();
        Ok(inner
            .up
            .keys()
            .filter(|p| inner.linked(&self.me, p))
            .copied()
            .collect())
    }

    async fn peer_info(&self) -> Result<Vec<PeerInfo>, HostError> {
        let inner = self.net.inner.lock();
        let version = inner.protocol_version.clone();
        Ok(inner
            .up
            .keys()
            .filter(|p| inner.linked(&self.me, p))
            .map(|p| PeerInfo {
                peer: *p,
                addrs: vec![inner.addr(p)],
                direction: crate::p2p::Direction::Outbound,
                score: inner.scores.get(&(self.me, *p)).copied().unwrap_or(0),
                agent: Some("memnet".into()),
                protocol_version: Some(version.clone()),
                rtt: None,
                connected_for: Duration::ZERO,
            })
            .collect())
    }

    async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, HostError> {
        Ok(vec![memory_addr(self.index)])
    }

    async fn is_banned(&self, peer: PeerId) -> Result<bool, HostError> {
        Ok(self.net.inner.lock().banned.contains(&pair(self.me, peer)))
    }

    fn report(&self, peer: PeerId, penalty: u32, why: &str) {
        let me = self.me;
        let mut inner = self.net.inner.lock();
        inner.reports.push(Report {
            by: me,
            peer,
            penalty,
            why: why.into(),
        });
        let score = inner.scores.entry((me, peer)).or_insert(0);
        *score = score.saturating_add(penalty);
        if *score >= BAN_THRESHOLD {
            inner.relink(|i| {
                i.banned.insert(pair(me, peer));
            });
        }
    }

    fn reported_points(&self) -> u64 {
        let inner = self.net.inner.lock();
        inner
            .reports
            .iter()
            .filter(|r| r.by == self.me)
            .map(|r| u64::from(r.penalty))
            .sum()
    }

    async fn disconnect(&self, peer: PeerId) -> Result<(), HostError> {
        // The libp2p host redials a peer it was told to drop; here the
        // link stays, and the peers see it go and come back.
        let inner = self.net.inner.lock();
        if inner.linked(&self.me, &peer) {
            inner.tell_down(&self.me, peer);
            inner.tell_down(&peer, self.me);
            inner.tell_up(&self.me, peer);
            inner.tell_up(&peer, self.me);
        }
        Ok(())
    }

    async fn known_peers(
        &self,
        _max: usize,
        _allow_private: bool,
    ) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, HostError> {
        Ok(Vec::new())
    }

    async fn add_discovered(
        &self,
        _peers: Vec<(PeerId, Vec<Multiaddr>)>,
    ) -> Result<usize, HostError> {
        Ok(0)
    }

    async fn operator(&self, op: OperatorOp) -> Result<OperatorOutcome, HostError> {
        Err(HostError::InvalidConfig(format!(
            "the in-memory network has no operator controls ({op:?})"
        )))
    }

    async fn shutdown(&self) -> Result<(), HostError> {
        self.net.leave_as(self.me, Some(self.index));
        Ok(())
    }
}

/// A delay drawn from the faults' range.
fn draw(inner: &mut Inner) -> Duration {
    let f = inner.faults;
    let (lo, hi) = (f.delay.0.as_micros(), f.delay.1.as_micros());
    let us = if hi > lo {
        inner.rng.random_range(lo..=hi)
    } else {
        lo
    };
    Duration::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
}

/// One end of a stream whose first read waits `delay`: the one-way
/// latency of the first message that reaches this end (the end is held,
/// as a peer's handler slot is, while it waits).
struct Delayed<S> {
    inner: S,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Delayed<S> {
    fn new(inner: S, delay: Duration) -> Delayed<S> {
        Delayed {
            inner,
            wait: Some(Box::pin(tokio::time::sleep(delay))),
        }
    }
}

impl<S: futures::AsyncRead + Unpin> futures::AsyncRead for Delayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(w) = self.wait.as_mut() {
            if w.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: futures::AsyncWrite + Unpin> futures::AsyncWrite for Delayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A `Stream` over an mpsc receiver.
fn tokio_stream_of<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}
