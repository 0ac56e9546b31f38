//! What peers may cost the node: bytes it holds for them, and signature
//! checks it runs for them.
//!
//! The bytes the node holds for its peers come from two pools, each a
//! node-wide budget with a share per peer (a quarter of it), so one peer
//! cannot take it all: served blocks wait to be written under one
//! (`p2p.peer_buffer`), received tx batches wait to be admitted under the
//! other (half as large), so that a flood of tx batches never stops the
//! node from serving blocks (see [`kite_protocols::budget`]). What does not
//! fit is declined without blame: the asker tries again later or
//! elsewhere.

use governor::{DefaultKeyedRateLimiter, Quota};
use kite_protocols::budget::ByteBudget;
use libp2p::PeerId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

/// Peers tracked before the idle ones are dropped.
const TRACKED: usize = 1024;

/// One pool: the node-wide budget and the peers' shares of it.
#[derive(Debug)]
pub struct PeerBudgets {
    all: ByteBudget,
    per_peer: usize,
    peers: Mutex<HashMap<PeerId, ByteBudget>>,
}

impl PeerBudgets {
    /// A budget of `total` bytes; each peer may hold a quarter of it, and
    /// never less than `one_answer` (the largest single answer, a block
    /// with its commit: block sync must always get a block through), the
    /// whole budget growing to that if it is smaller.
    pub fn new(total: usize, one_answer: usize) -> PeerBudgets {
        let per_peer = (total / 4).max(one_answer).max(1);
        PeerBudgets {
            all: ByteBudget::new(total.max(per_peer)),
            per_peer,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// The node-wide budget (for metrics and tests).
    pub fn all(&self) -> &ByteBudget {
        &self.all
    }

    /// `peer`'s share (inside the node-wide budget).
    pub fn for_peer(&self, peer: PeerId) -> ByteBudget {
        let mut peers = self.peers.lock();
        if peers.len() >= TRACKED && !peers.contains_key(&peer) {
            // Shares that hold nothing are recreated on demand.
            peers.retain(|_, b| b.in_use() > 0);
        }
        peers
            .entry(peer)
            .or_insert_with(|| self.all.child(self.per_peer))
            .clone()
    }
}

/// A per-peer rate of signature checks (`p2p.max_sig_checks_per_peer`
/// per second, the same as a burst): a commit announce costs one check per
/// signature it carries, a proposal, a reset or a vote one. What is over
/// the rate is dropped before it is checked, without blame (an honest peer
/// re-sends), and counted.
pub struct SigChecks {
    limiter: DefaultKeyedRateLimiter<PeerId>,
    burst: u32,
    calls: AtomicU64,
    limited: AtomicU64,
}

impl std::fmt::Debug for SigChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigChecks")
            .field("limited", &self.limited())
            .finish_non_exhaustive()
    }
}

impl SigChecks {
    /// `per_second` checks per peer (at least 1).
    pub fn new(per_second: u32) -> SigChecks {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        Self::with_quota(Quota::per_second(rate))
    }

    fn with_quota(quota: Quota) -> SigChecks {
        SigChecks {
            burst: quota.burst_size().get(),
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            calls: AtomicU64::new(0),
            limited: AtomicU64::new(0),
        }
    }

    /// Whether `peer` may have `n` more signatures checked now (taken from
    /// its allowance when it may). An input that needs more than a whole
    /// burst (a commit of a large validator set under a low rate) takes a
    /// whole burst: it is never refused for good.
    pub fn allow(&self, peer: PeerId, n: usize) -> bool {
        // Peers idle for a whole second hold nothing worth keeping.
        if self.calls.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX).min(self.burst);
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let ok = matches!(self.limiter.check_key_n(&peer, n), Ok(Ok(())));
        if !ok {
            self.limited.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Inputs dropped so far for going over the rate.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_peer_gets_a_quarter_and_all_peers_the_whole() {
        let b = PeerBudgets::new(400, 10);
        let (p1, p2) = (PeerId::random(), PeerId::random());
        let r1 = b.for_peer(p1).try_reserve(100).unwrap();
        assert!(
            b.for_peer(p1).try_reserve(1).is_none(),
            "p1 holds its share"
        );
        let _r2 = b.for_peer(p2).try_reserve(100).unwrap();
        assert_eq!(b.all().in_use(), 200);
        drop(r1);
        assert!(b.for_peer(p1).try_reserve(100).is_some());
        let held: Vec<_> = (0..4)
            .filter_map(|_| b.for_peer(PeerId::random()).try_reserve(100))
            .collect();
        assert_eq!(held.len(), 3, "the node-wide budget caps them all");
    }

    #[test]
    fn one_answer_always_fits() {
        let b = PeerBudgets::new(400, 300);
        assert!(b.for_peer(PeerId::random()).try_reserve(300).is_some());
        let tiny = PeerBudgets::new(100, 300);
        assert_eq!(tiny.all().total(), 300);
        assert!(tiny.for_peer(PeerId::random()).try_reserve(300).is_some());
    }

    #[test]
    fn signature_checks_are_rate_limited_per_peer() {
        // Ten an hour: nothing comes back while the test runs, however slow.
        let checks = SigChecks::with_quota(Quota::per_hour(NonZeroU32::new(10).unwrap()));
        let (p1, p2) = (PeerId::random(), PeerId::random());
        assert!(checks.allow(p1, 4));
        assert!(checks.allow(p1, 6));
        assert!(!checks.allow(p1, 1), "p1 spent its second");
        assert!(checks.allow(p2, 10), "p2 has its own allowance");
        assert!(!checks.allow(p1, 100), "p1 has nothing left");
        assert!(
            checks.allow(PeerId::random(), 100),
            "more than a burst takes a whole burst"
        );
        assert_eq!(checks.limited(), 2);
    }

    #[test]
    fn idle_shares_are_dropped_past_the_tracked_peers() {
        let b = PeerBudgets::new(4000, 10);
        let busy = PeerId::random();
        let _held = b.for_peer(busy).try_reserve(10).unwrap();
        for _ in 0..TRACKED + 10 {
            b.for_peer(PeerId::random());
        }
        let peers = b.peers.lock();
        assert!(peers.len() <= TRACKED + 1 && peers.contains_key(&busy));
    }
}
