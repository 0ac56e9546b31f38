//! The bytes the node holds for its peers: one node-wide budget
//! (`p2p.peer_buffer`) and, inside it, a share per peer (a quarter of it),
//! so one peer cannot take it all. The block handler holds served blocks
//! under it until they are written, the tx gossip handler holds received
//! batches under it until they are handed to the mempool (see
//! [`kite_protocols::budget`]). What does not fit is declined without
//! blame: the asker tries again later or elsewhere.

use kite_protocols::budget::ByteBudget;
use libp2p::PeerId;
use parking_lot::Mutex;
use std::collections::HashMap;

/// Peers tracked before the idle ones are dropped.
const TRACKED: usize = 1024;

/// The node-wide budget and the peers' shares of it.
#[derive(Debug)]
pub struct PeerBudgets {
    all: ByteBudget,
    per_peer: usize,
    peers: Mutex<HashMap<PeerId, ByteBudget>>,
}

impl PeerBudgets {
    /// A budget of `total` bytes; each peer may hold a quarter of it.
    pub fn new(total: usize) -> PeerBudgets {
        PeerBudgets {
            all: ByteBudget::new(total),
            per_peer: (total / 4).max(1),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_peer_gets_a_quarter_and_all_peers_the_whole() {
        let b = PeerBudgets::new(400);
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
    fn idle_shares_are_dropped_past_the_tracked_peers() {
        let b = PeerBudgets::new(4000);
        let busy = PeerId::random();
        let _held = b.for_peer(busy).try_reserve(10).unwrap();
        for _ in 0..TRACKED + 10 {
            b.for_peer(PeerId::random());
        }
        let peers = b.peers.lock();
        assert!(peers.len() <= TRACKED + 1 && peers.contains_key(&busy));
    }
}
