//! The announcer: runs the announce and push streams of tx gossip, fair
//! to every peer and within what each receiver accepts.
//!
//! A receiver serves a peer at most [`crate::p2p::per_peer_share`] of its
//! `/kite/txann` handlers at once and resets the streams beyond. Before
//! this queue, a burst opened up to [`MAX_ANNOUNCE_STREAMS`] streams to one
//! peer; most were reset and their txs waited for the re-announce
//! (`p2p.reannounce_interval`, 10 s). Now [`AnnounceQueue`]:
//! - keeps each peer's batches in its own queue, at most
//!   [`MAX_WAITING_PER_PEER`]; a batch beyond is dropped (that peer gets
//!   its txs from the re-announce or from another peer), so one slow peer
//!   never holds the others up;
//! - takes no more batches from the gossip owner while [`MAX_WAITING`]
//!   wait in all (several peers behind at once): the owner then leaves
//!   fresh txs in the mempool for a later round;
//! - serves the peers in turn, at most `share` streams to one peer and
//!   [`MAX_ANNOUNCE_STREAMS`] in all;
//! - tries a failed batch again, [`TRIES`] times in all, while its peer is
//!   connected; the batches of a peer that left are dropped;
//! - announces at once, to the same peer, what a push did not deliver (the
//!   push failed, or its txs did not fit one push).

use super::TxGossip;
use crate::outbound::exchange;
use crate::p2p::PeerId;
use crate::peers::table::PeerTable;
use kite_protocols::{txann, txpush};
use kite_types::Hash;
use std::collections::{HashMap, VecDeque};
use tokio::sync::{mpsc, watch};

/// Most outbound announce streams at once.
pub const MAX_ANNOUNCE_STREAMS: usize = 64;
/// Most batches waiting for one peer; more are dropped.
pub const MAX_WAITING_PER_PEER: usize = 256;
/// Tries of one batch, the first included.
pub const TRIES: u8 = 3;
/// Most batches waiting in the queue, every peer together; beyond it the
/// announcer stops taking batches from the gossip owner.
pub const MAX_WAITING: usize = 1024;

/// One batch of hashes for one peer, and how often it was tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The hashes.
    pub hashes: Vec<Hash>,
    /// Tries so far.
    pub tries: u8,
    /// Push the txs whole (`/kite/txpush`) rather than announce them.
    pub push: bool,
}

impl Batch {
    /// Txs to announce.
    pub fn announce(hashes: Vec<Hash>) -> Batch {
        Batch {
            hashes,
            tries: 0,
            push: false,
        }
    }

    /// Txs to push.
    pub fn push(hashes: Vec<Hash>) -> Batch {
        Batch {
            hashes,
            tries: 0,
            push: true,
        }
    }
}

/// Which announce batches wait for which peer, and how many streams each
/// peer holds (see the module docs). Pure bookkeeping: the task in
/// [`run`] opens the streams.
#[derive(Debug)]
pub struct AnnounceQueue {
    share: usize,
    total: usize,
    waiting: HashMap<PeerId, VecDeque<Batch>>,
    /// Peers with waiting batches, in the order they are served.
    turn: VecDeque<PeerId>,
    active: HashMap<PeerId, usize>,
    running: usize,
    dropped: u64,
}

impl AnnounceQueue {
    /// A queue that holds at most `share` streams to one peer and `total`
    /// in all.
    pub fn new(share: usize, total: usize) -> AnnounceQueue {
        AnnounceQueue {
            share: share.max(1),
            total: total.max(1),
            waiting: HashMap::new(),
            turn: VecDeque::new(),
            active: HashMap::new(),
            running: 0,
            dropped: 0,
        }
    }

    /// Queues `batch` for `peer`; false when its queue is full (the batch
    /// is dropped and counted).
    pub fn push(&mut self, peer: PeerId, batch: Batch) -> bool {
        self.enqueue(peer, batch, false)
    }

    fn enqueue(&mut self, peer: PeerId, batch: Batch, front: bool) -> bool {
        let q = self.waiting.entry(peer).or_default();
        if q.len() >= MAX_WAITING_PER_PEER {
            self.dropped += 1;
            return false;
        }
        if q.is_empty() {
            self.turn.push_back(peer);
        }
        if front {
            q.push_front(batch);
        } else {
            q.push_back(batch);
        }
        true
    }

    /// The next batch to send and its peer, if a stream is free: peers in
    /// turn, skipping those at their share. `connected` says whether a
    /// peer is still worth sending to; the batches of one that is not are
    /// dropped.
    pub fn next(&mut self, connected: impl Fn(&PeerId) -> bool) -> Option<(PeerId, Batch)> {
        if self.running >= self.total {
            return None;
        }
        for _ in 0..self.turn.len() {
            let peer = self.turn.pop_front()?;
            if !connected(&peer) {
                if let Some(q) = self.waiting.remove(&peer) {
                    self.dropped += q.len() as u64;
                }
                continue;
            }
            let active = self.active.get(&peer).copied().unwrap_or(0);
            if active >= self.share {
                self.turn.push_back(peer);
                continue;
            }
            let Some(q) = self.waiting.get_mut(&peer) else {
                continue;
            };
            let Some(mut batch) = q.pop_front() else {
                self.waiting.remove(&peer);
                continue;
            };
            if q.is_empty() {
                self.waiting.remove(&peer);
            } else {
                self.turn.push_back(peer);
            }
            batch.tries += 1;
            *self.active.entry(peer).or_insert(0) += 1;
            self.running += 1;
            return Some((peer, batch));
        }
        None
    }

    /// A stream to `peer` ended; a failed `batch` is queued again (first
    /// in its peer's queue) while it has tries left and the peer is
    /// `connected`. A failed push is queued as an announce of the same
    /// hashes (for a push that delivered part of its txs, `batch` holds
    /// the rest).
    pub fn done(&mut self, peer: PeerId, batch: Batch, ok: bool, connected: bool) {
        self.running = self.running.saturating_sub(1);
        if let Some(n) = self.active.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.active.remove(&peer);
            }
        }
        if !ok {
            if connected && batch.push {
                self.enqueue(peer, Batch::announce(batch.hashes), true);
            } else if connected && batch.tries < TRIES {
                self.enqueue(peer, batch, true);
            } else {
                self.dropped += 1;
            }
        }
    }

    /// Batches waiting, for every peer.
    pub fn waiting(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }

    /// Streams running.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Batches dropped so far (queue full, peer gone, tries spent).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// A stream's end, reported to the announcer.
struct Ended {
    peer: PeerId,
    batch: Batch,
    ok: bool,
}

/// Sends its [`Ended`] when dropped (the stream task finished, panicked
/// or was cancelled).
struct EndGuard {
    tx: mpsc::Sender<Ended>,
    end: Option<Ended>,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if let Some(e) = self.end.take() {
            // The channel has room for every running stream.
            let _ = self.tx.try_send(e);
        }
    }
}

/// Runs announce streams from `batches` through an [`AnnounceQueue`]
/// until the node stops.
pub(super) async fn run(
    g: TxGossip,
    table: watch::Receiver<PeerTable>,
    mut batches: mpsc::Receiver<(PeerId, Batch)>,
) {
    let stop = g.shared.stop.clone();
    let max = g.shared.config.p2p.max_streams_per_protocol as usize;
    // One below the receiver's share: the receiver holds its slot until it
    // has admitted the batch, a moment after this side sees the stream end.
    let share = crate::p2p::per_peer_share(max).saturating_sub(1).max(1);
    let mut queue = AnnounceQueue::new(share, MAX_ANNOUNCE_STREAMS);
    // Every running stream holds a slot of this channel's capacity, so
    // an end is never lost.
    let (ended_tx, mut ended) = mpsc::channel::<Ended>(MAX_ANNOUNCE_STREAMS);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            // Batches stay in the channel while the queue is full, so the
            // gossip owner sees it and leaves fresh txs in the mempool.
            b = batches.recv(), if queue.waiting() < MAX_WAITING => match b {
                Some((peer, batch)) => {
                    queue.push(peer, batch);
                }
                None => return,
            },
            Some(e) = ended.recv() => {
                let connected = table.borrow().contains_key(&e.peer);
                queue.done(e.peer, e.batch, e.ok, connected);
            }
        }
        while let Some((peer, batch)) = queue.next(|p| table.borrow().contains_key(p)) {
            let (g, ended_tx) = (g.clone(), ended_tx.clone());
            stop.spawn(async move {
                // Reports the end even if the exchange panics, so the
                // stream's slot is never lost.
                let mut end = EndGuard {
                    tx: ended_tx,
                    end: Some(Ended {
                        peer,
                        batch,
                        ok: false,
                    }),
                };
                let Some(e) = end.end.as_mut() else {
                    return;
                };
                e.ok = if e.batch.push {
                    push(&g, peer, &mut e.batch).await
                } else {
                    let (m, hashes) = (g.mempool.clone(), e.batch.hashes.clone());
                    exchange(&g.shared, peer, txann::PROTOCOL, |s| {
                        txann::announce(s, &hashes, |h| m.get(h))
                    })
                    .await
                    .is_ok()
                };
            });
        }
    }
}

/// Pushes the txs of `batch` that are still pending to `peer`; true when
/// they all went. Otherwise `batch` keeps the hashes that did not go (the
/// push failed, or they did not fit one push) and false is returned: they
/// are announced instead.
async fn push(g: &TxGossip, peer: PeerId, batch: &mut Batch) -> bool {
    let txs: Vec<kite_types::Tx> = batch
        .hashes
        .iter()
        .filter_map(|h| g.mempool.get(h))
        .collect();
    if txs.is_empty() {
        // All committed or evicted since: nothing to hand on.
        return true;
    }
    let sent = exchange(&g.shared, peer, txpush::PROTOCOL, |s| txpush::push(s, &txs))
        .await
        .unwrap_or(0);
    if sent == txs.len() {
        return true;
    }
    batch.hashes = txs
        .get(sent..)
        .unwrap_or_default()
        .iter()
        .map(kite_types::Tx::hash)
        .collect();
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u8) -> Vec<Hash> {
        vec![Hash::digest(&[n])]
    }

    #[test]
    fn one_peer_gets_at_most_its_share_and_others_are_served_in_turn() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut q = AnnounceQueue::new(2, 64);
        for i in 0..10 {
            assert!(q.push(a, Batch::announce(batch(i))));
        }
        q.push(b, Batch::announce(batch(100)));
        let all = |_: &PeerId| true;
        let first: Vec<PeerId> = std::iter::from_fn(|| q.next(all).map(|(p, _)| p)).collect();
        assert_eq!(first.iter().filter(|p| **p == a).count(), 2, "{first:?}");
        assert_eq!(first.iter().filter(|p| **p == b).count(), 1);
        assert_eq!(q.waiting(), 8);
        // One of a's streams ends: one more of a's batches may go.
        let (p, bt) = (
            a,
            Batch {
                hashes: batch(0),
                tries: 1,
                push: false,
            },
        );
        q.done(p, bt, true, true);
        assert_eq!(q.next(all).map(|(p, _)| p), Some(a));
        assert!(q.next(all).is_none());
    }

    #[test]
    fn the_total_bounds_the_streams_and_a_full_peer_queue_drops() {
        let mut q = AnnounceQueue::new(100, 3);
        let peers: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        for p in &peers {
            q.push(*p, Batch::announce(batch(1)));
        }
        let all = |_: &PeerId| true;
        let got = std::iter::from_fn(|| q.next(all)).count();
        assert_eq!(got, 3);
        assert_eq!(q.running(), 3);
        let p = peers[0];
        let mut q = AnnounceQueue::new(1, 1);
        for i in 0..MAX_WAITING_PER_PEER {
            assert!(q.push(p, Batch::announce(batch(i as u8))));
        }
        assert!(!q.push(p, Batch::announce(batch(0))));
        assert_eq!(q.dropped(), 1);
    }

    #[test]
    fn a_failed_batch_is_tried_again_first_until_its_tries_are_spent() {
        let a = PeerId::random();
        let mut q = AnnounceQueue::new(1, 8);
        q.push(a, Batch::announce(batch(1)));
        q.push(a, Batch::announce(batch(2)));
        let all = |_: &PeerId| true;
        for try_no in 1..=TRIES {
            let (p, b) = q.next(all).unwrap();
            assert_eq!((p, b.hashes.clone(), b.tries), (a, batch(1), try_no));
            q.done(p, b, false, true);
        }
        // Spent: batch 2 is next, batch 1 is dropped.
        assert_eq!(q.dropped(), 1);
        assert_eq!(q.next(all).unwrap().1.hashes, batch(2));
    }

    #[test]
    fn a_failed_push_becomes_an_announce_first_in_line() {
        let a = PeerId::random();
        let mut q = AnnounceQueue::new(1, 8);
        q.push(a, Batch::push(batch(1)));
        q.push(a, Batch::announce(batch(2)));
        let all = |_: &PeerId| true;
        let (p, b) = q.next(all).unwrap();
        assert!(b.push);
        q.done(p, b, false, true);
        let (p, b) = q.next(all).unwrap();
        assert_eq!((&b.hashes, b.push, b.tries), (&batch(1), false, 1));
        q.done(p, b, true, true);
        // A push to a peer that left is dropped like any batch.
        q.push(a, Batch::push(batch(3)));
        let (p, b) = q.next(all).unwrap();
        assert_eq!(b.hashes, batch(2), "the older announce first");
        q.done(p, b, true, true);
        let (p, b) = q.next(all).unwrap();
        q.done(p, b, false, false);
        assert_eq!(q.waiting(), 0);
    }

    #[test]
    fn a_gone_peers_batches_are_dropped_and_free_the_queue() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut q = AnnounceQueue::new(1, 1);
        for i in 0..5 {
            q.push(a, Batch::announce(batch(i)));
        }
        q.push(b, Batch::announce(batch(9)));
        // a left the table: its batches go, b is served.
        let (p, bt) = q.next(|p| *p != a).unwrap();
        assert_eq!(p, b);
        assert_eq!(q.waiting(), 0);
        assert_eq!(q.dropped(), 5);
        // A failed batch of a peer that left is not tried again.
        q.done(p, bt, false, false);
        assert_eq!(q.waiting(), 0);
        assert_eq!(q.dropped(), 6);
    }
}
