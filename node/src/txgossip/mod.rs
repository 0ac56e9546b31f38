//! Tx gossip's one home. One task owns the gossip state: which txs are
//! being fetched from whom (with other announcers as fallbacks), and which
//! peer first sent each tx (a tx is never announced back to its sender).
//! Every [`ANNOUNCE_INTERVAL`] it hands on newly admitted txs: the txs
//! this node's own clients submitted are pushed whole to the leader of the
//! node's term (`/kite/txpush`, one flight: only the leader needs a tx
//! before its block) and announced to every other peer; txs that came
//! from a peer are announced to every peer but that one. Every
//! `p2p.reannounce_interval` it re-announces the oldest unconfirmed txs to
//! every peer, the leader included (a push that failed is announced at
//! once).
//!
//! The inbound side ([`TxPeer`]) serves `/kite/tx` (a tx by hash),
//! `/kite/txann` (announces: it asks the owner which hashes it wants, then
//! admits the delivered txs in one batch verification) and `/kite/txpush`
//! (pushed txs, admitted the same way). A tx from a peer whose signature
//! does not verify is that peer's forgery (honest nodes hand on only txs
//! they admitted) and is reported. Nothing here runs on a blocks-only
//! node: it has no mempool. The announce and push streams themselves run
//! in [`announce`], within each receiver's stream share.

pub mod announce;

pub use announce::MAX_ANNOUNCE_STREAMS;

use announce::Batch;

use crate::context::Shared;
use crate::outbound::exchange;
use crate::p2p::PeerId;
use crate::peers::Peers;
use crate::state::StateRx;
use async_trait::async_trait;
use kite_mempool::{Mempool, MempoolError};
use kite_protocols::budget::ByteBudget;
use kite_protocols::limits::MAX_ANNOUNCE_HASHES;
use kite_protocols::tx::{self, TxSource};
use kite_protocols::txann::TxSink;
use kite_protocols::txpush::MAX_PUSH_TXS;
use kite_types::{Hash, Tx};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

/// How often new txs are announced.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(20);
/// Most tx fetches (one stream each) at once; a fetch beyond it waits for
/// the next announce of that tx.
pub const MAX_FETCHES: usize = 256;
/// After this long an in-flight tx fetch is forgotten and may be retried.
pub const INFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most txs being fetched at once.
pub const MAX_INFLIGHT: usize = 50_000;
/// Most remembered tx origins (for "never announce back to the sender").
pub const MAX_ORIGINS: usize = 200_000;
/// Capacity of the gossip task's mailbox.
pub const MAILBOX: usize = 1024;
/// Most announce batches waiting for a stream.
const BATCHES: usize = 1024;

/// A tx being fetched after an announce, and who else announced it.
#[derive(Debug, Clone)]
struct InFlight {
    from: PeerId,
    since: Instant,
    others: Vec<PeerId>,
}

/// Which announced txs are being fetched from whom, with the other peers
/// that announced them as fallbacks (bounded by [`MAX_INFLIGHT`]; an entry
/// older than [`INFLIGHT_TIMEOUT`] may be fetched again).
#[derive(Debug, Default)]
struct Fetches {
    inflight: HashMap<Hash, InFlight>,
}

impl Fetches {
    /// For each announced hash: fetch it from `peer`? Not when `known`
    /// (already in the mempool) or fetched from another peer already
    /// (then `peer` becomes a fallback).
    fn want(
        &mut self,
        peer: PeerId,
        hashes: &[Hash],
        now: Instant,
        known: impl Fn(&Hash) -> bool,
    ) -> Vec<bool> {
        // At the bound, stale entries make room (a full table of stale
        // entries would otherwise stop gossip for good).
        if self.inflight.len() >= MAX_INFLIGHT {
            self.inflight
                .retain(|_, f| now.duration_since(f.since) < INFLIGHT_TIMEOUT);
        }
        hashes
            .iter()
            .map(|h| {
                if known(h) {
                    return false;
                }
                if let Some(f) = self.inflight.get_mut(h)
                    && now.duration_since(f.since) < INFLIGHT_TIMEOUT
                {
                    if f.from != peer && f.others.len() < MAX_FALLBACKS {
                        f.others.push(peer);
                    }
                    return false;
                }
                if self.inflight.len() >= MAX_INFLIGHT {
                    return false;
                }
                self.inflight.insert(
                    *h,
                    InFlight {
                        from: peer,
                        since: now,
                        others: Vec::new(),
                    },
                );
                true
            })
            .collect()
    }

    /// These txs arrived (or their fetch failed).
    fn done(&mut self, hashes: &[Hash]) {
        for h in hashes {
            self.inflight.remove(h);
        }
    }

    /// `peer`'s announce stream ended: what it promised and did not
    /// deliver moves to the next announcer, at most `room` of them,
    /// returned as (hash, peer) to fetch. The others (no fallback left, or
    /// beyond `room`) leave the table, so the next announce fetches them.
    fn reassign(
        &mut self,
        peer: PeerId,
        now: Instant,
        room: usize,
        known: impl Fn(&Hash) -> bool,
    ) -> Vec<(Hash, PeerId)> {
        let mut retry = Vec::new();
        self.inflight.retain(|h, f| {
            if f.from != peer {
                return true;
            }
            if known(h) || retry.len() >= room {
                return false;
            }
            match f.others.pop() {
                Some(next) => {
                    retry.push((*h, next));
                    f.from = next;
                    f.since = now;
                    true
                }
                None => false,
            }
        });
        retry
    }

    fn len(&self) -> usize {
        self.inflight.len()
    }
}

/// Most fallback announcers remembered per tx.
const MAX_FALLBACKS: usize = 8;

enum Msg {
    /// Which of these announced hashes to fetch from `peer`.
    Want {
        peer: PeerId,
        hashes: Vec<Hash>,
        reply: oneshot::Sender<Vec<bool>>,
    },
    /// `peer` delivered these txs (about to be admitted): it is their
    /// origin.
    Received { peer: PeerId, hashes: Vec<Hash> },
    /// These txs went through admission (or their fetch failed): no longer
    /// in flight.
    Done { hashes: Vec<Hash> },
    /// An announce stream from `peer` ended: fetch what it did not deliver
    /// from another announcer.
    StreamEnded { peer: PeerId },
    /// How many txs are being fetched.
    InFlight { reply: oneshot::Sender<usize> },
}

/// Reaches the gossip task.
#[derive(Clone)]
pub struct TxGossip {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    mempool: Arc<Mempool>,
}

impl TxGossip {
    /// Starts the gossip task (a node with a mempool only); `state` tells
    /// it the leader to push to.
    pub fn start(
        shared: Arc<Shared>,
        mempool: Arc<Mempool>,
        peers: Peers,
        state: StateRx,
    ) -> TxGossip {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let gossip = TxGossip {
            tx,
            shared: shared.clone(),
            mempool,
        };
        let (batch_tx, batch_rx) = mpsc::channel(BATCHES);
        let table = peers.table();
        let owner = Owner {
            gossip: gossip.clone(),
            peers,
            state,
            fetching: Fetches::default(),
            origins: Origins::default(),
            batches: batch_tx,
            fetches: Arc::new(Semaphore::new(MAX_FETCHES)),
        };
        shared.stop.spawn(owner.run(rx));
        shared
            .stop
            .spawn(announce::run(gossip.clone(), table, batch_rx));
        gossip
    }

    /// Admits txs received from `from` (None: local) off the executor, in
    /// one batch verification; the admitted ones are announced, never back
    /// to `from`. A tx from a peer whose signature does not verify gets
    /// that peer reported. The txs of a peer over its rate of tx signature
    /// checks (`p2p.max_tx_checks_per_peer`, counting the txs not yet in
    /// the mempool) are dropped unchecked, without blame.
    pub async fn admit(&self, txs: Vec<Tx>, from: Option<PeerId>) {
        let hashes: Vec<Hash> = txs.iter().map(Tx::hash).collect();
        if let Some(peer) = from {
            let fresh = hashes.iter().filter(|h| !self.mempool.contains(h)).count();
            if fresh > 0 && !self.shared.tx_checks.allow(peer, fresh) {
                tracing::debug!(%peer, txs = fresh, "over its rate of tx signature checks: txs dropped");
                let _ = self.tx.send(Msg::Done { hashes }).await;
                return;
            }
        }
        if let Some(peer) = from {
            // Before admission, so the announce that follows knows the
            // origin.
            let msg = Msg::Received {
                peer,
                hashes: hashes.clone(),
            };
            let _ = self.tx.send(msg).await;
        }
        let (m, accounts) = (self.mempool.clone(), self.shared.accounts());
        let now = self.shared.clock.now_ms();
        let results = tokio::task::spawn_blocking(move || m.admit_batch(txs, &accounts, now))
            .await
            .unwrap_or_default();
        if let Some(peer) = from {
            let forged = results
                .iter()
                .zip(&hashes)
                .filter(|(r, _)| matches!(r, Err(MempoolError::BadSignature)))
                .map(|(_, h)| *h)
                .collect::<Vec<Hash>>();
            if let Some(first) = forged.first() {
                tracing::debug!(%peer, forged = forged.len(), "tx gossip: txs with bad signatures");
                self.shared.host.report(
                    peer,
                    kite_protocols::score::INVALID,
                    &format!(
                        "tx gossip: {} txs whose signature does not verify (first {})",
                        forged.len(),
                        first.short()
                    ),
                );
            }
            let _ = self.tx.send(Msg::Done { hashes }).await;
        }
    }

    /// How many announced txs are being fetched (0 once the node stops).
    pub async fn in_flight(&self) -> usize {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Msg::InFlight { reply }).await.is_err() {
            return 0;
        }
        answer.await.unwrap_or(0)
    }

    /// The inbound side for one peer.
    pub fn peer(&self, peer: PeerId) -> TxPeer {
        TxPeer {
            gossip: self.clone(),
            peer,
        }
    }
}

struct Owner {
    gossip: TxGossip,
    peers: Peers,
    state: StateRx,
    fetching: Fetches,
    origins: Origins,
    batches: mpsc::Sender<(PeerId, Batch)>,
    fetches: Arc<Semaphore>,
}

/// Who sent each tx received from a peer: such a tx is never announced
/// back to its sender, and only a node's own txs are pushed to the leader.
/// At most [`MAX_ORIGINS`] entries; an entry lives while its tx is in the
/// pool (or being admitted).
#[derive(Default)]
struct Origins {
    map: HashMap<Hash, (PeerId, u64)>,
    /// Bumped by each prune; an entry carries the generation it was
    /// noted in.
    generation: u64,
}

/// Hashes checked against the pool under one lock while pruning.
const PRUNE_CHUNK: usize = 4096;

impl Origins {
    /// Notes `peer` as the sender of `hashes`, before their admission (so
    /// the announce that carries them finds it). At the bound the table is
    /// pruned, and cleared unless that freed half of it: forgetting an
    /// origin costs an announce back to the sender, never a tx, and the
    /// work stays linear in the entries noted.
    fn note(&mut self, peer: PeerId, hashes: Vec<Hash>, mempool: &Mempool) {
        if self.map.len() + hashes.len() > MAX_ORIGINS {
            self.prune(mempool);
            if self.map.len() + hashes.len() > MAX_ORIGINS / 2 {
                self.map.clear();
            }
        }
        for h in hashes {
            self.map.insert(h, (peer, self.generation));
        }
    }

    /// The sender of `h`, when a peer sent it. Kept after the tx's
    /// announce: the pool can hand a hash out again (after a gap in its
    /// sender's nonces is filled).
    fn get(&self, h: &Hash) -> Option<PeerId> {
        self.map.get(h).map(|(peer, _)| *peer)
    }

    /// Forgets the origins of txs the pool does not hold (refused at
    /// admission, committed, evicted) and noted before the previous prune,
    /// so that a tx still being admitted keeps its origin; then gives back
    /// the table's capacity once it is mostly empty (a table that once
    /// held [`MAX_ORIGINS`] entries kept their memory, 15 MiB seen after a
    /// load). Runs at each re-announce; checks the pool a chunk at a time.
    fn prune(&mut self, mempool: &Mempool) {
        let old: Vec<Hash> = self
            .map
            .iter()
            .filter(|(_, (_, g))| *g < self.generation)
            .map(|(h, _)| *h)
            .collect();
        for chunk in old.chunks(PRUNE_CHUNK) {
            let held = mempool.contains_each(chunk.iter().copied());
            for (h, held) in chunk.iter().zip(held) {
                if !held {
                    self.map.remove(h);
                }
            }
        }
        self.generation += 1;
        let len = self.map.len();
        if self.map.capacity() > 4 * len.max(1024) {
            self.map.shrink_to(2 * len);
        }
    }
}

impl Owner {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let stop = self.gossip.shared.stop.clone();
        let mut every = tokio::time::interval(ANNOUNCE_INTERVAL);
        let re_ms = u64::try_from(
            self.gossip
                .shared
                .config
                .p2p
                .reannounce_interval
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let clock = self.gossip.shared.clock;
        let mut next_re = clock.now_ms() + re_ms;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m),
                    None => return,
                },
                _ = every.tick() => {
                    // Origins noted before admission are taken in before
                    // the announce that may carry their txs.
                    while let Ok(m) = rx.try_recv() {
                        self.handle(m);
                    }
                    let now = clock.now_ms();
                    let re = now >= next_re;
                    if re {
                        next_re = now + re_ms;
                        self.origins.prune(&self.gossip.mempool);
                    }
                    self.announce(now, re.then_some(re_ms));
                }
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Want {
                peer,
                hashes,
                reply,
            } => {
                let m = &self.gossip.mempool;
                let want = self
                    .fetching
                    .want(peer, &hashes, Instant::now(), |h| m.contains(h));
                let _ = reply.send(want);
            }
            Msg::Received { peer, hashes } => {
                self.origins.note(peer, hashes, &self.gossip.mempool);
            }
            Msg::Done { hashes } => self.fetching.done(&hashes),
            Msg::StreamEnded { peer } => self.retry_from_others(peer),
            Msg::InFlight { reply } => {
                let _ = reply.send(self.fetching.len());
            }
        }
    }

    /// Txs `peer` promised but did not deliver are fetched from another
    /// peer that announced them.
    fn retry_from_others(&mut self, peer: PeerId) {
        let m = self.gossip.mempool.clone();
        let room = self.fetches.available_permits();
        let retry = self
            .fetching
            .reassign(peer, Instant::now(), room, |h| m.contains(h));
        for (hash, from) in retry {
            let Ok(permit) = self.fetches.clone().try_acquire_owned() else {
                // Cannot happen (`room` permits were free); the entry times
                // out and a later announce fetches it.
                break;
            };
            let g = self.gossip.clone();
            self.gossip.shared.stop.spawn(async move {
                fetch(&g, from, hash).await;
                drop(permit);
            });
        }
    }

    /// The leader of this node's term, when it is another peer that takes
    /// txs (connected, not blocks-only): the one fresh local txs are
    /// pushed to.
    fn push_target(&self, peers: &[PeerId]) -> Option<PeerId> {
        let leader = self.state.borrow().leader;
        if leader == self.gossip.shared.public {
            return None;
        }
        crate::p2p::keys::peer_id_of(&leader).filter(|p| peers.contains(p))
    }

    /// Hands this round's batches to the announcer: fresh txs of this
    /// node's clients pushed to the leader and announced to the other
    /// peers, fresh txs from a peer announced to every peer but that one,
    /// and, when `reannounce` is set, the oldest unconfirmed txs announced
    /// to every peer.
    fn announce(&mut self, now: u64, reannounce: Option<u64>) {
        let peers: Vec<PeerId> = self
            .peers
            .table()
            .borrow()
            .iter()
            .filter(|(_, s)| !s.blocks_only)
            .map(|(p, _)| *p)
            .collect();
        let mempool = &self.gossip.mempool;
        // Backpressure: while the announcer is behind, fresh txs wait in the
        // mempool for a later round rather than be taken and dropped.
        if self.batches.capacity() < BATCHES / 2 {
            return;
        }
        let fresh = mempool.take_announcements(MAX_ANNOUNCE_HASHES * 8);
        let leader = self.push_target(&peers);
        let mut pushes = Vec::new();
        // Ordered by peer: the same announces open streams in the same
        // order (repeatable runs on the test network).
        let mut batches: std::collections::BTreeMap<PeerId, Vec<Hash>> =
            std::collections::BTreeMap::new();
        for h in fresh {
            let origin = self.origins.get(&h);
            let push_to = leader.filter(|_| origin.is_none());
            if push_to.is_some() {
                pushes.push(h);
            }
            for p in &peers {
                if Some(*p) != origin && Some(*p) != push_to {
                    batches.entry(*p).or_default().push(h);
                }
            }
        }
        if let Some(leader) = leader {
            for chunk in pushes.chunks(MAX_PUSH_TXS) {
                // A full queue drops the batch: the txs are re-announced.
                let _ = self.batches.try_send((leader, Batch::push(chunk.to_vec())));
            }
        }
        if let Some(older_than) = reannounce {
            let old = mempool.reannounce(now, older_than);
            for p in &peers {
                batches.entry(*p).or_default().extend(old.iter().copied());
            }
        }
        for (peer, hashes) in batches {
            for chunk in hashes.chunks(MAX_ANNOUNCE_HASHES) {
                // A full queue drops the batch: the txs are re-announced.
                let _ = self
                    .batches
                    .try_send((peer, Batch::announce(chunk.to_vec())));
            }
        }
    }
}

/// Fetches one tx with `/kite/tx/1.0.0` and admits it.
async fn fetch(g: &TxGossip, peer: PeerId, hash: Hash) {
    let max = g.mempool.config().max_tx_bytes;
    if let Ok(Some(t)) =
        exchange(&g.shared, peer, tx::PROTOCOL, |s| tx::request(s, hash, max)).await
    {
        g.admit(vec![t], Some(peer)).await;
    } else {
        let _ = g.tx.send(Msg::Done { hashes: vec![hash] }).await;
    }
}

/// One peer's view of tx gossip, for the `/kite/tx` and `/kite/txann`
/// handlers.
pub struct TxPeer {
    gossip: TxGossip,
    peer: PeerId,
}

impl TxPeer {
    /// After an announce stream ends: what this peer promised but did not
    /// deliver is fetched from another announcer.
    pub async fn stream_ended(&self) {
        let _ = self
            .gossip
            .tx
            .send(Msg::StreamEnded { peer: self.peer })
            .await;
    }
}

#[async_trait]
impl TxSource for TxPeer {
    async fn get_tx(&self, hash: &Hash) -> Option<Tx> {
        self.gossip.mempool.get(hash)
    }
}

#[async_trait]
impl TxSink for TxPeer {
    async fn want(&self, hashes: &[Hash]) -> Vec<bool> {
        let (reply, answer) = oneshot::channel();
        let msg = Msg::Want {
            peer: self.peer,
            hashes: hashes.to_vec(),
            reply,
        };
        if self.gossip.tx.send(msg).await.is_err() {
            return vec![false; hashes.len()];
        }
        answer.await.unwrap_or_else(|_| vec![false; hashes.len()])
    }

    async fn receive(&self, txs: Vec<Tx>) {
        self.gossip.admit(txs, Some(self.peer)).await;
    }

    fn budget(&self) -> Option<ByteBudget> {
        Some(self.gossip.shared.tx_budgets.for_peer(self.peer))
    }

    fn max_tx_bytes(&self) -> usize {
        self.gossip.mempool.config().max_tx_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(n: u8) -> Vec<Hash> {
        (0..n).map(|i| Hash::digest(&[i])).collect()
    }

    #[test]
    fn a_tx_is_fetched_once_and_other_announcers_are_fallbacks() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let hs = hashes(3);
        let now = Instant::now();
        let mut f = Fetches::default();
        // hs[2] is in the mempool already.
        let known = |h: &Hash| *h == hs[2];
        assert_eq!(f.want(a, &hs, now, known), [true, true, false]);
        assert_eq!(f.want(b, &hs, now, known), [false, false, false]);
        assert_eq!(f.want(c, &hs[..1], now, known), [false]);
        assert_eq!(f.len(), 2);
        // a delivered hs[1] only; its stream ended: hs[0] moves to the last
        // announcer, then to the one before.
        f.done(&hs[1..2]);
        assert_eq!(f.reassign(a, now, 10, known), [(hs[0], c)]);
        assert_eq!(f.reassign(c, now, 10, known), [(hs[0], b)]);
        // No fallback left: the entry goes, and a new announce fetches it.
        assert_eq!(f.reassign(b, now, 10, known), []);
        assert_eq!(f.len(), 0);
        assert_eq!(f.want(c, &hs[..1], now, known), [true]);
        // Without room to fetch from the fallback, the entry goes too, so
        // the next announce fetches it at once.
        assert_eq!(f.want(b, &hs[..1], now, known), [false]);
        assert_eq!(f.reassign(c, now, 0, known), []);
        assert_eq!(f.want(a, &hs[..1], now, known), [true]);
    }

    #[test]
    fn origins_live_while_their_tx_may_be_in_the_pool_and_give_back_memory() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let key = kite_types::NodeKey::from_seed([3; 32]);
        let tx = Tx::sign(
            &key,
            "kite-test",
            1,
            kite_types::Payload::Delete { key: b"k".to_vec() },
        );
        let mempool = Mempool::new("kite-test", kite_mempool::MempoolConfig::default());
        let funded: HashMap<kite_types::PublicKey, kite_types::Account> = [(
            key.public(),
            kite_types::Account {
                balance: 1,
                nonce: 0,
            },
        )]
        .into();
        let mut o = Origins::default();
        let many: Vec<Hash> = (0..20_000u32)
            .map(|i| Hash::digest(&i.to_le_bytes()))
            .collect();
        o.note(a, many.clone(), &mempool);
        o.note(b, vec![tx.hash()], &mempool);
        assert_eq!(o.get(&many[7]), Some(a));
        assert_eq!(o.get(&many[7]), Some(a), "kept after an announce");
        let peak = o.map.capacity();
        // Noted since the last prune: still being admitted, all kept.
        o.prune(&mempool);
        assert_eq!(o.map.len(), 20_001);
        mempool.admit(tx.clone(), &funded, 0).unwrap();
        // A prune later, only the origin of the tx the pool holds is left.
        o.prune(&mempool);
        assert_eq!(o.map.len(), 1);
        assert_eq!(o.get(&tx.hash()), Some(b));
        assert!(
            o.map.capacity() <= 4 * 1024,
            "kept {} of {peak}",
            o.map.capacity()
        );
        // At the bound: pruned, then cleared unless half of it is free.
        let full: Vec<Hash> = (0..MAX_ORIGINS as u32)
            .map(|i| Hash::digest(&i.to_be_bytes()))
            .collect();
        o.note(a, full, &mempool);
        assert_eq!(o.map.len(), MAX_ORIGINS);
        o.note(b, hashes(3), &mempool);
        assert_eq!(o.map.len(), 3);
        assert_eq!(o.get(&hashes(3)[2]), Some(b));
    }

    #[test]
    fn a_stale_fetch_is_retried_and_the_table_is_bounded() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let now = Instant::now();
        let mut f = Fetches::default();
        let h = hashes(1);
        assert_eq!(f.want(a, &h, now, |_| false), [true]);
        let later = now + INFLIGHT_TIMEOUT;
        assert_eq!(f.want(b, &h, later, |_| false), [true], "timed out");
        // At the bound, nothing more is fetched until entries time out.
        let many: Vec<Hash> = (0..MAX_INFLIGHT as u32 + 10)
            .map(|i| Hash::digest(&i.to_le_bytes()))
            .collect();
        let got = f.want(a, &many, later, |_| false);
        assert_eq!(f.len(), MAX_INFLIGHT);
        assert_eq!(got.iter().filter(|w| **w).count(), MAX_INFLIGHT - 1);
        let much_later = later + INFLIGHT_TIMEOUT;
        assert_eq!(f.want(b, &h, much_later, |_| false), [true]);
        assert_eq!(f.len(), 1, "the stale entries were dropped");
    }
}
