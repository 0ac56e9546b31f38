//! The block sync planner: which heights to request from which peer.
//!
//! Pure bookkeeping, no I/O. The engine tells it the heights peers claim
//! (status, announces, votes), what arrived and what failed; [`SyncPlanner::plan`]
//! answers with requests:
//! - at most `window` heights ahead of the next height to commit are in
//!   flight, at most `per_peer` of them on one peer, each peer gets heights it
//!   claims to hold, the least loaded peer first (ties: fewest failures, then
//!   key order, so plans are deterministic);
//! - a request unanswered after `timeout_ms`, or failed in any way, is
//!   taken back, its peer is penalised (a back-off that grows with its
//!   failures; failures during a back-off count once) and the height is
//!   given to another peer; after [`MAX_FAILURES`] the peer's claimed height
//!   is forgotten until it reports again, so a peer that lies about its
//!   height cannot stall sync;
//! - the next height to commit holds everything behind it: when it has
//!   waited on one peer for a fifth of `timeout_ms` ([`SyncPlanner::stall_ms`])
//!   while another peer could serve it, that peer's requests are taken back
//!   early (penalised like a timeout) and planned elsewhere, so one staller
//!   costs sync a fraction of the timeout, not all of it;
//! - a height known only from a source with no peer (`hint_height`) is
//!   requested from "any peer" (`peer: None`).

use kite_types::PublicKey;
use std::collections::{BTreeMap, BTreeSet};

/// Most peers tracked; beyond, the peer with the lowest claimed height is
/// evicted for a higher one.
pub const MAX_PEERS: usize = 256;
/// Failures after which a peer's claimed height is forgotten.
pub const MAX_FAILURES: u32 = 3;
/// Most consecutive heights asked of one peer in one request: a peer keeps
/// the next height while its request is shorter, so ranges are fetched in
/// one stream each and checked in one batch each.
pub const MAX_REQUEST: u64 = 32;

/// A range of heights to fetch from one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The peer to ask; `None`: any peer.
    pub peer: Option<PublicKey>,
    /// First height.
    pub from_height: u64,
    /// Last height (inclusive).
    pub to_height: u64,
}

#[derive(Debug, Clone, Default)]
struct PeerState {
    height: u64,
    failures: u32,
    banned_until: u64,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    peer: Option<PublicKey>,
    /// When it was requested.
    sent: u64,
    deadline: u64,
}

/// The planner.
#[derive(Debug, Clone)]
pub struct SyncPlanner {
    window: u64,
    /// The configured window; `window` may be less (see
    /// [`SyncPlanner::block_size`]).
    max_window: u64,
    buffer_bytes: u64,
    /// Running average of fetched block sizes, bytes.
    avg_block: u64,
    per_peer: u64,
    timeout_ms: u64,
    peers: BTreeMap<PublicKey, PeerState>,
    hint: u64,
    in_flight: BTreeMap<u64, InFlight>,
    have: BTreeSet<u64>,
    next: u64,
}

impl SyncPlanner {
    /// A planner keeping `window` heights in flight, `per_peer` per peer,
    /// each for at most `timeout_ms`.
    pub fn new(window: u64, per_peer: u64, timeout_ms: u64) -> Self {
        SyncPlanner {
            window: window.max(1),
            max_window: window.max(1),
            buffer_bytes: u64::MAX,
            avg_block: 0,
            per_peer: per_peer.max(1),
            timeout_ms: timeout_ms.max(1),
            peers: BTreeMap::new(),
            hint: 0,
            in_flight: BTreeMap::new(),
            have: BTreeSet::new(),
            next: 0,
        }
    }

    /// Keeps the fetched blocks within about `bytes`: the window becomes
    /// `bytes / average block size` heights, between [`MAX_REQUEST`] and
    /// the configured window.
    pub fn with_buffer(mut self, bytes: u64) -> Self {
        self.buffer_bytes = bytes.max(1);
        self
    }

    /// A fetched block weighed `bytes`: updates the average block size and
    /// the window.
    pub fn block_size(&mut self, bytes: u64) {
        self.avg_block = if self.avg_block == 0 {
            bytes
        } else {
            (self.avg_block.saturating_mul(15).saturating_add(bytes)) / 16
        };
        let fits = self.buffer_bytes / self.avg_block.max(1);
        self.window = fits.clamp(MAX_REQUEST.min(self.max_window), self.max_window);
    }

    /// How long the next height to commit may wait on one peer while
    /// another could serve it: a fifth of the request timeout.
    pub fn stall_ms(&self) -> u64 {
        (self.timeout_ms / 5).max(1)
    }

    /// The peer holding up the next height to commit, and since when it
    /// may be passed over, when another peer could serve that height.
    fn head_stall(&self, now: u64) -> Option<(PublicKey, u64)> {
        let f = self.in_flight.get(&self.next)?;
        let slow = f.peer?;
        let others = self
            .peers
            .iter()
            .any(|(k, p)| *k != slow && p.height >= self.next && now >= p.banned_until);
        others.then_some((slow, f.sent.saturating_add(self.stall_ms())))
    }

    /// Heights planned ahead now.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// `peer` claims to hold every height up to `height`.
    pub fn peer_height(&mut self, peer: PublicKey, height: u64) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.height = p.height.max(height);
            return;
        }
        if self.peers.len() >= MAX_PEERS {
            let lowest = self
                .peers
                .iter()
                .min_by_key(|(k, p)| (p.height, **k))
                .map(|(k, p)| (*k, p.height));
            match lowest {
                Some((k, h)) if h < height => {
                    self.peers.remove(&k);
                }
                _ => return,
            }
        }
        self.peers.insert(
            peer,
            PeerState {
                height,
                ..PeerState::default()
            },
        );
    }

    /// Some source (no peer known) says `height` exists.
    pub fn hint_height(&mut self, height: u64) {
        self.hint = self.hint.max(height);
    }

    /// The highest height known to exist.
    pub fn target(&self) -> u64 {
        self.peers
            .values()
            .map(|p| p.height)
            .max()
            .unwrap_or(0)
            .max(self.hint)
    }

    /// The claimed height of `peer`, if tracked.
    pub fn height_of(&self, peer: &PublicKey) -> Option<u64> {
        self.peers.get(peer).map(|p| p.height)
    }

    /// The block of `height` arrived (it is kept by the caller until used).
    pub fn received(&mut self, height: u64) {
        self.in_flight.remove(&height);
        if height >= self.next {
            self.have.insert(height);
        }
    }

    /// The block of `height` from `peer` was bad or missing: plan it again,
    /// elsewhere first.
    pub fn failed(&mut self, height: u64, peer: Option<PublicKey>, now: u64) {
        self.in_flight.remove(&height);
        self.have.remove(&height);
        if let Some(p) = peer {
            self.penalise(&p, now);
        }
    }

    /// One failure of `peer`: a back-off of `timeout_ms` times its
    /// failures. Failures while it is already backing off are the same
    /// incident (the other heights of a failed range, requests sent before
    /// the first failure), so they do not count again.
    fn penalise(&mut self, peer: &PublicKey, now: u64) {
        let forget = match self.peers.get_mut(peer) {
            Some(p) if p.banned_until > now => false,
            Some(p) => {
                p.failures = p.failures.saturating_add(1);
                p.banned_until =
                    now.saturating_add(self.timeout_ms.saturating_mul(u64::from(p.failures)));
                p.failures >= MAX_FAILURES
            }
            None => false,
        };
        if forget {
            self.peers.remove(peer);
        }
    }

    /// Everything below `next` is committed: forget it.
    pub fn advance(&mut self, next: u64) {
        self.next = self.next.max(next);
        let keep_flight = self.in_flight.split_off(&self.next);
        self.in_flight = keep_flight;
        let keep = self.have.split_off(&self.next);
        self.have = keep;
    }

    /// Heights currently requested.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether heights above `committed` are known to exist.
    pub fn is_behind(&self, committed: u64) -> bool {
        self.target() > committed
    }

    /// When [`SyncPlanner::plan`] has something to do next, if anything.
    pub fn next_deadline(&self, now: u64) -> Option<u64> {
        let head = self.head_stall(now).map(|(_, at)| at);
        let flight = self
            .in_flight
            .values()
            .map(|f| f.deadline)
            .chain(head)
            .min();
        let ban = self
            .peers
            .values()
            .filter(|p| p.banned_until > now)
            .map(|p| p.banned_until)
            .min();
        match (flight, ban) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Expires overdue requests and plans new ones from `next` (the next
    /// height to commit).
    pub fn plan(&mut self, now: u64, next: u64) -> Vec<Request> {
        self.advance(next);
        let overdue: Vec<(u64, Option<PublicKey>)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(h, f)| (*h, f.peer))
            .collect();
        for (h, peer) in overdue {
            self.in_flight.remove(&h);
            if let Some(p) = peer {
                self.penalise(&p, now);
            }
        }
        if let Some((slow, at)) = self.head_stall(now)
            && now >= at
        {
            self.in_flight.retain(|_, f| f.peer != Some(slow));
            self.penalise(&slow, now);
        }
        let target = self.target();
        if target < self.next {
            return Vec::new();
        }
        let last = target.min(self.next.saturating_add(self.window - 1));
        let mut load: BTreeMap<Option<PublicKey>, u64> = BTreeMap::new();
        for f in self.in_flight.values() {
            *load.entry(f.peer).or_insert(0) += 1;
        }
        let mut out: Vec<Request> = Vec::new();
        for h in self.next..=last {
            if self.in_flight.contains_key(&h) || self.have.contains(&h) {
                continue;
            }
            let holders: Vec<(&PublicKey, &PeerState)> =
                self.peers.iter().filter(|(_, p)| p.height >= h).collect();
            let eligible = |k: &PublicKey, p: &PeerState| {
                p.height >= h
                    && now >= p.banned_until
                    && load.get(&Some(*k)).copied().unwrap_or(0) < self.per_peer
            };
            // Extend the request just planned, while it is short enough.
            let extend = out.last().and_then(|r| {
                let short = r.to_height + 1 == h && r.to_height - r.from_height + 1 < MAX_REQUEST;
                let ok = match &r.peer {
                    Some(k) => self.peers.get(k).is_some_and(|p| eligible(k, p)),
                    None => {
                        holders.is_empty()
                            && self.hint >= h
                            && load.get(&None).copied().unwrap_or(0) < self.per_peer
                    }
                };
                (short && ok).then_some(r.peer)
            });
            let pick = extend.or_else(|| {
                holders
                    .iter()
                    .filter(|(k, p)| {
                        now >= p.banned_until
                            && load.get(&Some(**k)).copied().unwrap_or(0) < self.per_peer
                    })
                    .min_by_key(|(k, p)| {
                        (load.get(&Some(**k)).copied().unwrap_or(0), p.failures, **k)
                    })
                    .map(|(k, _)| Some(**k))
            });
            let peer = match pick {
                Some(p) => p,
                None if holders.is_empty()
                    && self.hint >= h
                    && load.get(&None).copied().unwrap_or(0) < self.per_peer =>
                {
                    None
                }
                None => continue,
            };
            *load.entry(peer).or_insert(0) += 1;
            self.in_flight.insert(
                h,
                InFlight {
                    peer,
                    sent: now,
                    deadline: now.saturating_add(self.timeout_ms),
                },
            );
            match out.last_mut() {
                Some(r)
                    if r.peer == peer
                        && r.to_height + 1 == h
                        && r.to_height - r.from_height + 1 < MAX_REQUEST =>
                {
                    r.to_height = h
                }
                _ => out.push(Request {
                    peer,
                    from_height: h,
                    to_height: h,
                }),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(i: u8) -> PublicKey {
        PublicKey([i; 32])
    }

    fn req(peer: Option<u8>, from: u64, to: u64) -> Request {
        Request {
            peer: peer.map(pk),
            from_height: from,
            to_height: to,
        }
    }

    #[test]
    fn nothing_to_do_when_up_to_date() {
        let mut s = SyncPlanner::new(8, 4, 1000);
        s.peer_height(pk(1), 10);
        assert!(s.plan(0, 11).is_empty());
        assert!(!s.is_behind(10));
        assert!(s.is_behind(9));
    }

    #[test]
    fn spreads_over_peers_within_window_and_share() {
        let mut s = SyncPlanner::new(8, 3, 1000);
        s.peer_height(pk(1), 100);
        s.peer_height(pk(2), 100);
        s.peer_height(pk(3), 4);
        let r = s.plan(0, 1);
        // Least loaded first, ties by key; a peer keeps consecutive heights
        // up to its share; peer 3 holds only up to 4, so it gets nothing.
        assert_eq!(r, vec![req(Some(1), 1, 3), req(Some(2), 4, 6)]);
        assert_eq!(
            s.in_flight(),
            6,
            "heights 7 and 8 wait: peers 1 and 2 are full"
        );
        // Nothing new until something arrives.
        assert!(s.plan(10, 1).is_empty());
        s.received(1);
        s.received(2);
        // Height 1 committed: the window moves to 2..=9; peer 1 has room
        // for two more.
        let r = s.plan(20, 2);
        assert_eq!(r, vec![req(Some(1), 7, 8)]);
    }

    #[test]
    fn requests_are_ranges_of_at_most_max_request_heights() {
        let mut s = SyncPlanner::new(100, 100, 1000);
        s.peer_height(pk(1), 1000);
        s.peer_height(pk(2), 1000);
        let m = MAX_REQUEST;
        assert_eq!(
            s.plan(0, 1),
            vec![
                req(Some(1), 1, m),
                req(Some(2), m + 1, 2 * m),
                req(Some(1), 2 * m + 1, 3 * m),
                req(Some(2), 3 * m + 1, 100),
            ]
        );
    }

    #[test]
    fn one_peer_gets_ranges_of_at_most_max_request_heights_too() {
        let mut s = SyncPlanner::new(100, 100, 1000);
        s.peer_height(pk(1), 1000);
        let m = MAX_REQUEST;
        assert_eq!(
            s.plan(0, 1),
            vec![
                req(Some(1), 1, m),
                req(Some(1), m + 1, 2 * m),
                req(Some(1), 2 * m + 1, 3 * m),
                req(Some(1), 3 * m + 1, 100),
            ]
        );
    }

    #[test]
    fn a_failed_range_is_one_failure_and_its_heights_go_elsewhere() {
        let mut s = SyncPlanner::new(4, 4, 100);
        s.peer_height(pk(1), 10);
        s.peer_height(pk(2), 10);
        assert_eq!(s.plan(0, 1), vec![req(Some(1), 1, 4)]);
        // Peer 1's stream is refused at once: each height of its range
        // fails, and it counts as one failure.
        for h in 1..=4 {
            s.failed(h, Some(pk(1)), 1);
        }
        // Its heights go to peer 2 (not straight back to peer 1, which
        // would fail the same way again and again).
        assert_eq!(s.plan(1, 1), vec![req(Some(2), 1, 4)]);
        assert_eq!(s.height_of(&pk(1)), Some(10), "one failure, not four");
    }

    #[test]
    fn the_window_shrinks_to_the_buffer_for_large_blocks() {
        let mut s = SyncPlanner::new(512, 512, 1000).with_buffer(64 << 20);
        assert_eq!(s.window(), 512);
        s.block_size(1024);
        assert_eq!(s.window(), 512, "small blocks: the configured window");
        for _ in 0..200 {
            s.block_size(4 << 20);
        }
        assert_eq!(s.window(), 16.max(MAX_REQUEST), "4 MiB blocks in 64 MiB");
        s.peer_height(pk(1), 10_000);
        let planned: u64 = s
            .plan(0, 1)
            .iter()
            .map(|r| r.to_height - r.from_height + 1)
            .sum();
        assert_eq!(planned, s.window());
    }

    #[test]
    fn overdue_requests_move_to_another_peer() {
        let mut s = SyncPlanner::new(8, 4, 100);
        s.peer_height(pk(1), 10);
        s.peer_height(pk(2), 10);
        let r = s.plan(0, 1);
        assert_eq!(r, vec![req(Some(1), 1, 4), req(Some(2), 5, 8)]);
        // Peer 1 holds the head: passed over after a fifth of the timeout.
        assert_eq!(s.next_deadline(0), Some(20));
        s.received(1);
        s.received(2);
        // It answered part: the head is now 3 (1 and 2 committed), still
        // on peer 1 since 0, which has room for the new heights 9 and 10.
        assert_eq!(s.plan(19, 3), vec![req(Some(1), 9, 10)]);
        // Peer 2 delivers; peer 1 stalls: at 20 its heights move to peer 2.
        for h in 5..=8 {
            s.received(h);
        }
        assert_eq!(s.plan(20, 3), vec![req(Some(2), 3, 4), req(Some(2), 9, 10)]);
        // Peer 1 is penalised: banned until 20 + 100, so a peer that joins
        // gets the next heights, not peer 1.
        s.received(3);
        s.received(4);
        s.peer_height(pk(3), 20);
        assert_eq!(s.plan(21, 5), vec![req(Some(3), 11, 12)]);
    }

    #[test]
    fn a_lone_slow_peer_keeps_its_request_until_the_timeout() {
        let mut s = SyncPlanner::new(4, 4, 100);
        s.peer_height(pk(1), 10);
        let r = s.plan(0, 1);
        assert_eq!(r, vec![req(Some(1), 1, 4)]);
        // Nobody else could serve the head: no early take-back.
        assert_eq!(s.next_deadline(0), Some(100));
        assert!(s.plan(50, 1).is_empty());
        // A peer that holds only lower heights does not count either.
        s.peer_height(pk(2), 0);
        assert!(s.plan(60, 1).is_empty());
        // One that holds it does: the head moves at once (waited 60 > 20).
        s.peer_height(pk(2), 10);
        assert_eq!(s.plan(61, 1), vec![req(Some(2), 1, 4)]);
        // Peer 1 never answers and has nothing left in flight; at 100
        // nothing of its is overdue any more.
        assert_eq!(s.in_flight(), 4);
    }

    #[test]
    fn bad_peer_is_penalised_then_forgotten() {
        let mut s = SyncPlanner::new(1, 1, 100);
        s.peer_height(pk(1), 50);
        s.peer_height(pk(2), 5);
        assert_eq!(s.plan(0, 1), vec![req(Some(1), 1, 1)]);
        s.failed(1, Some(pk(1)), 0);
        // Peer 1 is banned for a while: peer 2 gets the height.
        assert_eq!(s.plan(0, 1), vec![req(Some(2), 1, 1)]);
        s.failed(1, Some(pk(2)), 0);
        assert!(s.plan(50, 1).is_empty(), "both banned");
        assert_eq!(s.plan(100, 1), vec![req(Some(1), 1, 1)]);
        s.failed(1, Some(pk(1)), 100);
        // A second failure while it backs off (until 300) is the same
        // incident.
        s.failed(1, Some(pk(1)), 100);
        assert_eq!(s.height_of(&pk(1)), Some(50));
        s.failed(1, Some(pk(1)), 300);
        // Three failures: peer 1's claim of height 50 is forgotten.
        assert_eq!(s.height_of(&pk(1)), None);
        assert_eq!(s.target(), 5);
    }

    #[test]
    fn hints_without_peers_ask_anyone() {
        let mut s = SyncPlanner::new(4, 2, 100);
        s.hint_height(3);
        assert_eq!(s.plan(0, 1), vec![req(None, 1, 2)]);
        assert!(s.plan(0, 1).is_empty(), "the share of 'any peer' is full");
        s.received(1);
        assert_eq!(s.plan(0, 1), vec![req(None, 3, 3)]);
        s.advance(4);
        assert!(s.plan(0, 4).is_empty());
    }

    #[test]
    fn peer_table_is_bounded() {
        let mut s = SyncPlanner::new(4, 2, 100);
        for i in 0..MAX_PEERS {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_be_bytes());
            s.peer_height(PublicKey(k), 10);
        }
        s.peer_height(pk(0xee), 5);
        assert_eq!(
            s.height_of(&pk(0xee)),
            None,
            "lower than everyone: not kept"
        );
        s.peer_height(pk(0xff), 20);
        assert_eq!(s.height_of(&pk(0xff)), Some(20));
        assert_eq!(s.target(), 20);
    }
}
