//! The pool itself: [`Mempool`], its state under one short-held lock, and
//! what a recheck against the committed state did ([`Recheck`]).
//!
//! The pool's code is in three places: this module (the [`Mempool`] API:
//! construction, lookups, block building, commit and recheck, removal,
//! gossip), [`crate::admission`] (decoding, stateless checks, signature
//! verification, the `admit*` entry points) and [`crate::senders`] (the
//! per-sender nonce queues and their invariant check).
//!
//! # Locking
//!
//! Decoding, stateless checks, signature verification and account reads
//! run outside the lock; the lock (a `parking_lot::Mutex`, never held
//! across an await: this crate has no async) only guards map updates.
//! Account reads are tagged with the pool's *epoch* (bumped by every
//! [`Mempool::on_commit`]); an admission whose read raced a commit reads
//! again (up to [`ACCOUNT_RETRIES`](crate::ACCOUNT_RETRIES) times).

use crate::senders::Inner;
use crate::{AccountError, AccountSource, MempoolConfig};
use kite_types::sign::KeyCache;
use kite_types::{Account, Hash, PublicKey, Tx};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Senders rechecked per lock acquisition after a commit.
const RECHECK_CHUNK: usize = 512;

/// What [`Mempool::on_commit`] and [`Mempool::recheck`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recheck {
    /// Txs dropped because they became invalid (not the committed ones).
    pub dropped: Vec<Tx>,
    /// Senders whose committed account could not be read, with why. Their
    /// txs were kept as they were, not rechecked: a read error is not an
    /// empty account. The next commit's recheck (or the admission of one
    /// of their txs, which reads the account again) checks them.
    pub unread: Vec<(PublicKey, AccountError)>,
}

/// Counters for metrics and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MempoolStats {
    /// Txs held (pending + queued).
    pub txs: usize,
    /// Encoded bytes held.
    pub bytes: usize,
    /// Pending (executable) txs.
    pub pending: usize,
    /// Queued (gapped) txs.
    pub queued: usize,
    /// Senders with at least one tx.
    pub senders: usize,
    /// Hashes waiting in the announcement buffer.
    pub announce_backlog: usize,
}

/// The transaction pool. Share it as `Arc<Mempool>`: every method takes
/// `&self` and locks internally for short map updates only.
#[derive(Debug)]
pub struct Mempool {
    pub(crate) chain_id: String,
    pub(crate) config: MempoolConfig,
    /// Signature-verification threads per batch (resolved from config).
    pub(crate) verify_threads: usize,
    /// Decoded keys of recent senders.
    pub(crate) keys: KeyCache,
    pub(crate) inner: Mutex<Inner>,
}

impl Mempool {
    /// An empty pool for `chain_id` with `config`'s limits.
    pub fn new(chain_id: impl Into<String>, config: MempoolConfig) -> Mempool {
        let verify_threads = match config.verify_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Mempool {
            chain_id: chain_id.into(),
            config,
            verify_threads,
            keys: KeyCache::default(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The limits.
    pub fn config(&self) -> &MempoolConfig {
        &self.config
    }

    /// The chain id txs must carry.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    // ----- admission: see crate::admission -------------------------

    // ----- lookups ---------------------------------------------------

    /// Whether the pool holds this tx (pending or queued). O(1).
    pub fn contains(&self, hash: &Hash) -> bool {
        self.inner.lock().index.contains_key(hash)
    }

    /// Whether the pool holds each of `hashes` (one lock for all).
    pub fn contains_each(&self, hashes: impl IntoIterator<Item = Hash>) -> Vec<bool> {
        let g = self.inner.lock();
        hashes
            .into_iter()
            .map(|h| g.index.contains_key(&h))
            .collect()
    }

    /// The tx with this hash, pending or queued. O(1) (the clone happens
    /// outside the lock).
    pub fn get(&self, hash: &Hash) -> Option<Tx> {
        let tx = {
            let g = self.inner.lock();
            let (pk, nonce) = g.index.get(hash)?;
            g.senders.get(pk)?.txs.get(nonce)?.tx.clone()
        };
        Some(Arc::unwrap_or_clone(tx))
    }

    /// Number of txs held (pending + queued).
    pub fn len(&self) -> usize {
        self.inner.lock().count
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encoded bytes held (pending + queued).
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    /// Counters.
    pub fn stats(&self) -> MempoolStats {
        let g = self.inner.lock();
        MempoolStats {
            txs: g.count,
            bytes: g.bytes,
            pending: g.order.len(),
            queued: g.count - g.order.len(),
            senders: g.senders.len(),
            announce_backlog: g.announce.len(),
        }
    }

    /// The highest pending nonce of `who`, if it has pending txs: its next
    /// tx must carry this + 1 (otherwise the account's nonce + 1).
    pub fn pending_nonce(&self, who: &PublicKey) -> Option<u64> {
        let g = self.inner.lock();
        let s = g.senders.get(who)?;
        (s.ready > 0).then(|| s.base + s.ready)
    }

    /// The pending txs of `who`, in nonce order.
    pub fn pending_of(&self, who: &PublicKey) -> Vec<Tx> {
        self.txs_of(who, false)
    }

    /// The queued (gapped) txs of `who`, in nonce order.
    pub fn queued_of(&self, who: &PublicKey) -> Vec<Tx> {
        self.txs_of(who, true)
    }

    /// The queued or the pending txs of `who`, in nonce order.
    fn txs_of(&self, who: &PublicKey, queued: bool) -> Vec<Tx> {
        let arcs: Vec<Arc<Tx>> = {
            let g = self.inner.lock();
            match g.senders.get(who) {
                Some(s) => s
                    .txs
                    .values()
                    .filter(|e| e.seq.is_none() == queued)
                    .map(|e| e.tx.clone())
                    .collect(),
                None => Vec::new(),
            }
        };
        arcs.into_iter().map(Arc::unwrap_or_clone).collect()
    }

    // ----- block building --------------------------------------------

    /// The txs of the next block: pending txs in arrival order, at most
    /// `max_txs` of them and at most `max_bytes` in total (sum of
    /// `Tx::size`). Every sender contributes a contiguous nonce prefix
    /// starting at its committed nonce + 1: once one of its txs does not
    /// fit, its later txs are skipped. The txs stay in the pool until
    /// [`Mempool::on_commit`] (or [`Mempool::remove`]).
    pub fn build_block(&self, max_bytes: usize, max_txs: usize) -> Vec<Tx> {
        let picked: Vec<Arc<Tx>> = {
            let g = self.inner.lock();
            let mut out = Vec::new();
            let mut left = max_bytes;
            let mut blocked: HashSet<PublicKey> = HashSet::new();
            for (pk, nonce) in g.order.values() {
                if out.len() >= max_txs || left == 0 {
                    break;
                }
                if blocked.contains(pk) {
                    continue;
                }
                let Some(e) = g.senders.get(pk).and_then(|s| s.txs.get(nonce)) else {
                    continue;
                };
                if e.tx.size() > left {
                    blocked.insert(*pk);
                    continue;
                }
                left -= e.tx.size();
                out.push(e.tx.clone());
            }
            out
        };
        picked.into_iter().map(Arc::unwrap_or_clone).collect()
    }

    // ----- commit, recheck, removal ----------------------------------

    /// After a block commits (and `src` shows the new state): removes the
    /// block's txs, then rechecks every remaining sender against its new
    /// nonce and balance, dropping what became invalid (a nonce now
    /// committed, a transfer no longer affordable and the sender's later
    /// txs). Returns the dropped txs (not the committed ones).
    ///
    /// The removal happens under one lock; the recheck reads accounts
    /// outside the lock and applies them in chunks.
    ///
    /// A sender whose account `src` cannot read is not rechecked: its txs
    /// stay as they are and the error is in [`Recheck::unread`] (the
    /// block's own txs are still removed).
    pub fn on_commit(&self, committed: &[Tx], src: &dyn AccountSource) -> Recheck {
        let mut unread = Vec::new();
        let mut dropped = Vec::new();
        let (epoch, senders) = {
            let mut g = self.inner.lock();
            g.epoch += 1;
            // Highest committed nonce and own removed cost per sender.
            let mut seen: HashMap<PublicKey, (u64, u64)> = HashMap::new();
            for tx in committed {
                let pk = tx.sender();
                let slot = seen.entry(pk).or_insert((0, 0));
                slot.0 = slot.0.max(tx.nonce());
                if let Some(e) = g.unlink_hash(&tx.hash()) {
                    slot.1 = slot.1.saturating_add(e.cost);
                }
            }
            for (pk, (max_nonce, removed_cost)) in seen {
                if let Some(s) = g.senders.get(&pk) {
                    let base = s.base.max(max_nonce);
                    let balance = s.balance.saturating_sub(removed_cost);
                    g.resync(&pk, base, balance, &self.config, &mut dropped);
                }
            }
            g.shrink();
            (g.epoch, g.senders.keys().copied().collect::<Vec<_>>())
        };
        for chunk in senders.chunks(RECHECK_CHUNK) {
            let accounts: Vec<Result<Account, AccountError>> =
                chunk.iter().map(|pk| src.account(pk)).collect();
            let mut g = self.inner.lock();
            if g.epoch != epoch {
                // A later commit rechecks with newer state.
                break;
            }
            for (pk, acct) in chunk.iter().zip(accounts) {
                if !g.senders.contains_key(pk) {
                    continue;
                }
                match acct {
                    Ok(acct) => g.resync(pk, acct.nonce, acct.balance, &self.config, &mut dropped),
                    // Keep its txs: the state is unknown, not empty.
                    Err(e) => unread.push((*pk, e)),
                }
            }
        }
        Recheck {
            dropped: dropped.into_iter().map(Arc::unwrap_or_clone).collect(),
            unread,
        }
    }

    /// Rechecks every sender against `src` without a commit (e.g. after a
    /// restart or a state sync). Returns the dropped txs and the senders
    /// whose account could not be read (kept unchecked, as in
    /// [`Mempool::on_commit`]).
    pub fn recheck(&self, src: &dyn AccountSource) -> Recheck {
        self.on_commit(&[], src)
    }

    /// Removes txs by hash (the engine drops txs that made a block
    /// invalid). A removed tx's later-nonce siblings become queued (they
    /// wait for the nonce to be filled again; the queue bound still
    /// applies). Returns every tx that left the pool.
    pub fn remove(&self, hashes: &[Hash]) -> Vec<Tx> {
        let mut out = Vec::new();
        {
            let mut g = self.inner.lock();
            let mut touched = Vec::new();
            for h in hashes {
                if let Some((pk, _)) = g.index.get(h).copied()
                    && let Some(e) = g.unlink_hash(h)
                {
                    out.push(e.tx);
                    touched.push(pk);
                }
            }
            for pk in touched {
                if let Some(s) = g.senders.get(&pk) {
                    let (base, balance) = (s.base, s.balance);
                    g.resync(&pk, base, balance, &self.config, &mut out);
                }
            }
        }
        out.into_iter().map(Arc::unwrap_or_clone).collect()
    }

    // ----- gossip ----------------------------------------------------

    /// Up to `max` hashes of newly pending txs not yet handed out, oldest
    /// first. Each hash is handed out once (re-announcement is
    /// [`Mempool::reannounce`]'s job).
    pub fn take_announcements(&self, max: usize) -> Vec<Hash> {
        let mut g = self.inner.lock();
        let mut out = Vec::with_capacity(max.min(g.announce.len()));
        while out.len() < max {
            let Some(h) = g.announce.pop_front() else {
                break;
            };
            if g.is_pending(&h) {
                out.push(h);
            }
        }
        out
    }

    /// The oldest pending txs whose last announcement is at least
    /// `interval_ms` old, at most `reannounce_max_txs` of them covering at
    /// most `reannounce_max_bytes`; marks them announced at `now_ms`.
    pub fn reannounce(&self, now_ms: u64, interval_ms: u64) -> Vec<Hash> {
        let mut g = self.inner.lock();
        g.now_ms = g.now_ms.max(now_ms);
        let Inner { senders, order, .. } = &mut *g;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (pk, nonce) in order.values() {
            if out.len() >= self.config.reannounce_max_txs {
                break;
            }
            let Some(e) = senders.get_mut(pk).and_then(|s| s.txs.get_mut(nonce)) else {
                continue;
            };
            if e.last_announce_ms.saturating_add(interval_ms) > now_ms {
                continue;
            }
            if bytes + e.tx.size() > self.config.reannounce_max_bytes {
                break;
            }
            bytes += e.tx.size();
            e.last_announce_ms = now_ms;
            out.push(e.tx.hash());
        }
        out
    }

    // ----- self-check ------------------------------------------------

    /// Checks every internal invariant (for tests and debugging; O(n)):
    /// index, arrival order, per-sender contiguous pending prefix in
    /// arrival order, affordability, counters and limits.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.inner.lock().check(&self.config)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::MempoolError;
    use kite_types::{MAX_VALUE_LEN, NodeKey, Payload};

    const CHAIN: &str = "kite-test";

    pub(crate) fn key(i: u8) -> NodeKey {
        NodeKey::from_seed([i; 32])
    }

    pub(crate) fn transfer(k: &NodeKey, nonce: u64, amount: u64) -> Tx {
        Tx::sign(
            k,
            CHAIN,
            nonce,
            Payload::Transfer {
                to: PublicKey([0xee; 32]),
                amount,
            },
        )
    }

    fn put(k: &NodeKey, nonce: u64, len: usize) -> Tx {
        Tx::sign(
            k,
            CHAIN,
            nonce,
            Payload::Put {
                key: b"k".to_vec(),
                value: vec![7; len],
            },
        )
    }

    fn funded(keys: &[&NodeKey], balance: u64) -> HashMap<PublicKey, Account> {
        keys.iter()
            .map(|k| (k.public(), Account { balance, nonce: 0 }))
            .collect()
    }

    fn pool() -> Mempool {
        Mempool::new(CHAIN, MempoolConfig::default())
    }

    pub(crate) fn forged(tx: &Tx) -> Tx {
        let mut p = tx.to_proto();
        p.signature[3] ^= 1;
        Tx::from_proto(p).unwrap()
    }

    #[test]
    fn admit_and_look_up() {
        let (a, b) = (key(1), key(2));
        let src = funded(&[&a, &b], 100);
        let mp = pool();
        let t1 = transfer(&a, 1, 10);
        let h1 = mp.admit(t1.clone(), &src, 0).unwrap();
        assert_eq!(h1, t1.hash());
        assert!(mp.contains(&h1));
        assert_eq!(mp.get(&h1), Some(t1.clone()));
        assert_eq!(mp.len(), 1);
        assert_eq!(mp.bytes(), t1.size());
        assert_eq!(mp.pending_nonce(&a.public()), Some(1));
        assert_eq!(mp.pending_nonce(&b.public()), None);
        let h2 = mp.admit_bytes(&put(&b, 1, 3).encode(), &src, 0).unwrap();
        let t3 = transfer(&a, 2, 10);
        let h3 = mp.admit(t3, &src, 0).unwrap();
        assert_eq!(mp.pending_nonce(&a.public()), Some(2));
        assert_eq!(mp.take_announcements(2), vec![h1, h2]);
        assert_eq!(mp.take_announcements(10), vec![h3]);
        assert!(mp.take_announcements(10).is_empty());
        assert_eq!(mp.pending_of(&a.public()).len(), 2);
        mp.check_invariants().unwrap();
    }

    #[test]
    fn tables_give_back_their_peak_capacity_after_a_commit() {
        let keys: Vec<NodeKey> = (0..50u8).map(key).collect();
        let mut src = funded(&keys.iter().collect::<Vec<_>>(), 1_000_000);
        let mp = pool();
        let mut txs = Vec::new();
        for k in &keys {
            for n in 1..=100 {
                txs.push(transfer(k, n, 1));
            }
        }
        for tx in &txs {
            mp.admit(tx.clone(), &src, 0).unwrap();
        }
        let peak = mp.inner.lock().index.capacity();
        assert!(peak >= 5000, "{peak}");
        // As the gossip task does every 20 ms.
        assert_eq!(mp.take_announcements(10_000).len(), 5000);
        for k in &keys {
            src.get_mut(&k.public()).unwrap().nonce = 100;
        }
        mp.on_commit(&txs, &src);
        assert_eq!(mp.len(), 0);
        let g = mp.inner.lock();
        assert!(
            g.index.capacity() <= 4 * 1024,
            "index kept {} of its peak {peak}",
            g.index.capacity()
        );
        assert!(
            g.announce.capacity() <= 4 * 1024,
            "{}",
            g.announce.capacity()
        );
        drop(g);
        mp.check_invariants().unwrap();
    }

    #[test]
    fn refusals_are_typed() {
        let a = key(1);
        let mut src = funded(&[&a], 100);
        let cfg = MempoolConfig {
            max_tx_bytes: 400,
            max_per_sender: 3,
            ..MempoolConfig::default()
        };
        let mp = Mempool::new(CHAIN, cfg);
        let other = Tx::sign(&a, "other", 1, Payload::Delete { key: b"k".to_vec() });
        assert_eq!(
            mp.admit(other, &src, 0),
            Err(MempoolError::WrongChain {
                expected: CHAIN.into(),
                got: "other".into()
            })
        );
        let big = put(&a, 1, 500);
        assert!(matches!(
            mp.admit(big.clone(), &src, 0),
            Err(MempoolError::TooLarge { max: 400, .. })
        ));
        assert!(matches!(
            mp.admit_bytes(&big.encode(), &src, 0),
            Err(MempoolError::TooLarge { max: 400, .. })
        ));
        assert!(matches!(
            mp.admit_bytes(&[0xff, 0xff, 0x01], &src, 0),
            Err(MempoolError::Decode(_))
        ));
        assert_eq!(
            mp.admit(forged(&transfer(&a, 1, 1)), &src, 0),
            Err(MempoolError::BadSignature)
        );
        let empty = Tx::sign(&a, CHAIN, 1, Payload::Delete { key: vec![] });
        assert_eq!(mp.admit(empty, &src, 0), Err(MempoolError::EmptyKey));
        let long = Tx::sign(&a, CHAIN, 1, Payload::Delete { key: vec![1; 257] });
        assert_eq!(
            mp.admit(long, &src, 0),
            Err(MempoolError::KeyTooLong { len: 257, max: 256 })
        );
        let mp_big = Mempool::new(CHAIN, MempoolConfig::default());
        let value = put(&a, 1, MAX_VALUE_LEN + 1);
        assert_eq!(
            mp_big.admit(value, &src, 0),
            Err(MempoolError::ValueTooLong {
                len: MAX_VALUE_LEN + 1,
                max: MAX_VALUE_LEN
            })
        );

        src.insert(
            a.public(),
            Account {
                balance: 100,
                nonce: 9,
            },
        );
        let low = transfer(&a, 7, 1);
        let e = mp.admit(low, &src, 0).unwrap_err();
        assert_eq!(e.to_string(), "nonce too low: have 7, account at 9");
        assert_eq!(
            mp.admit(transfer(&a, 10, 101), &src, 0),
            Err(MempoolError::InsufficientFunds {
                need: 101,
                balance: 100
            })
        );
        let t10 = transfer(&a, 10, 60);
        mp.admit(t10.clone(), &src, 0).unwrap();
        assert_eq!(mp.admit(t10, &src, 0), Err(MempoolError::AlreadyKnown));
        assert_eq!(
            mp.admit(transfer(&a, 10, 61), &src, 0),
            Err(MempoolError::NonceInUse { nonce: 10 })
        );
        assert_eq!(
            mp.admit(transfer(&a, 11, 41), &src, 0),
            Err(MempoolError::InsufficientFunds {
                need: 101,
                balance: 100
            })
        );
        mp.admit(transfer(&a, 11, 40), &src, 0).unwrap();
        mp.admit(put(&a, 12, 1), &src, 0).unwrap();
        assert_eq!(
            mp.admit(put(&a, 13, 1), &src, 0),
            Err(MempoolError::SenderFull { max: 3 })
        );
        // Gap too far ahead to queue.
        assert_eq!(
            mp.admit(put(&a, 20, 1), &src, 0),
            Err(MempoolError::NonceGap {
                have: 20,
                expected: 13
            })
        );
        mp.check_invariants().unwrap();
    }

    #[test]
    fn full_pool_refuses_by_count_and_bytes() {
        let keys: Vec<NodeKey> = (1..=4).map(key).collect();
        let src = funded(&keys.iter().collect::<Vec<_>>(), 100);
        let one = put(&keys[0], 1, 10).size();
        let cfg = MempoolConfig {
            max_txs: 3,
            max_bytes: one * 10,
            ..MempoolConfig::default()
        };
        let mp = Mempool::new(CHAIN, cfg.clone());
        for k in &keys[..3] {
            mp.admit(put(k, 1, 10), &src, 0).unwrap();
        }
        let e = mp.admit(put(&keys[3], 1, 10), &src, 0).unwrap_err();
        assert_eq!(
            e,
            MempoolError::Full {
                max_txs: 3,
                max_bytes: one * 10
            }
        );
        assert_eq!(e.code(), "mempool_full");
        // By bytes.
        let mp = Mempool::new(
            CHAIN,
            MempoolConfig {
                max_bytes: one * 2 + 5,
                ..cfg
            },
        );
        mp.admit(put(&keys[0], 1, 10), &src, 0).unwrap();
        mp.admit(put(&keys[1], 1, 10), &src, 0).unwrap();
        assert!(matches!(
            mp.admit(put(&keys[2], 1, 10), &src, 0),
            Err(MempoolError::Full { .. })
        ));
        assert!(mp.bytes() <= one * 2 + 5);
        mp.check_invariants().unwrap();
    }

    #[test]
    fn gaps_are_queued_then_promoted() {
        let a = key(1);
        let src = funded(&[&a], 100);
        let cfg = MempoolConfig {
            max_queued_per_sender: 2,
            ..MempoolConfig::default()
        };
        let mp = Mempool::new(CHAIN, cfg);
        let t3 = transfer(&a, 3, 1);
        let t4 = transfer(&a, 4, 1);
        mp.admit(t3.clone(), &src, 0).unwrap();
        mp.admit(t4.clone(), &src, 0).unwrap();
        assert_eq!(
            mp.admit(transfer(&a, 5, 1), &src, 0),
            Err(MempoolError::QueueFull { max: 2 })
        );
        // Queued txs are known but neither pending, announced nor built.
        assert!(mp.contains(&t3.hash()));
        assert_eq!(mp.pending_nonce(&a.public()), None);
        assert!(mp.take_announcements(10).is_empty());
        assert!(mp.build_block(1 << 20, 100).is_empty());
        assert_eq!(mp.stats().queued, 2);
        mp.admit(transfer(&a, 1, 1), &src, 0).unwrap();
        assert_eq!(mp.pending_nonce(&a.public()), Some(1));
        let t2 = transfer(&a, 2, 1);
        mp.admit(t2.clone(), &src, 0).unwrap();
        assert_eq!(mp.pending_nonce(&a.public()), Some(4));
        let block = mp.build_block(1 << 20, 100);
        let nonces: Vec<u64> = block.iter().map(|t| t.nonce()).collect();
        assert_eq!(nonces, vec![1, 2, 3, 4]);
        assert_eq!(mp.take_announcements(10).len(), 4);
        mp.check_invariants().unwrap();

        // Queueing off: gaps refused.
        let mp = Mempool::new(
            CHAIN,
            MempoolConfig {
                max_queued_per_sender: 0,
                ..MempoolConfig::default()
            },
        );
        assert_eq!(
            mp.admit(transfer(&a, 2, 1), &src, 0),
            Err(MempoolError::NonceGap {
                have: 2,
                expected: 1
            })
        );
    }

    #[test]
    fn promotion_drops_an_unaffordable_queued_tx_and_its_successors() {
        let a = key(1);
        let src = funded(&[&a], 10);
        let mp = pool();
        mp.admit(transfer(&a, 2, 5), &src, 0).unwrap();
        mp.admit(transfer(&a, 3, 1), &src, 0).unwrap();
        mp.admit(transfer(&a, 1, 6), &src, 0).unwrap();
        // 6 + 5 > 10: nonce 2 and 3 are dropped.
        assert_eq!(mp.len(), 1);
        assert_eq!(mp.pending_nonce(&a.public()), Some(1));
        mp.check_invariants().unwrap();
    }

    #[test]
    fn block_building_keeps_nonce_order_and_arrival() {
        let (a, b, c) = (key(1), key(2), key(3));
        let src = funded(&[&a, &b, &c], 1000);
        let mp = pool();
        let a1 = put(&a, 1, 10);
        let b1 = put(&b, 1, 10);
        let a2 = put(&a, 2, 500);
        let c1 = put(&c, 1, 10);
        let a3 = put(&a, 3, 10);
        let b2 = put(&b, 2, 10);
        for t in [&a1, &b1, &a2, &c1, &a3, &b2] {
            mp.admit(t.clone(), &src, 0).unwrap();
        }
        let all = mp.build_block(1 << 20, 100);
        assert_eq!(
            all,
            vec![
                a1.clone(),
                b1.clone(),
                a2.clone(),
                c1.clone(),
                a3.clone(),
                b2.clone()
            ]
        );
        // a2 does not fit: a3 must be skipped too, the others still go in.
        let budget = a1.size() + b1.size() + c1.size() + a3.size() + b2.size();
        let part = mp.build_block(budget, 100);
        assert_eq!(part, vec![a1.clone(), b1.clone(), c1.clone(), b2.clone()]);
        assert!(part.iter().map(|t| t.size()).sum::<usize>() <= budget);
        assert_eq!(mp.build_block(1 << 20, 2), vec![a1, b1]);
        assert!(mp.build_block(0, 100).is_empty());
        // Building leaves the pool unchanged.
        assert_eq!(mp.len(), 6);
    }

    #[test]
    fn commit_removes_and_rechecks() {
        let (a, b) = (key(1), key(2));
        let mut src = funded(&[&a, &b], 100);
        let mp = pool();
        let a1 = transfer(&a, 1, 30);
        let a2 = transfer(&a, 2, 30);
        let a3 = transfer(&a, 3, 30);
        let b1 = transfer(&b, 1, 50);
        let b2 = transfer(&b, 2, 50);
        for t in [&a1, &a2, &a3, &b1, &b2] {
            mp.admit(t.clone(), &src, 0).unwrap();
        }
        let block = vec![a1.clone(), b1.clone()];
        // Apply the block, and b loses money by another route: an
        // external tx b2' (nonce 2) committed in the same block.
        src.insert(
            a.public(),
            Account {
                balance: 70,
                nonce: 1,
            },
        );
        src.insert(
            b.public(),
            Account {
                balance: 40,
                nonce: 2,
            },
        );
        let dropped = mp.on_commit(&block, &src).dropped;
        assert_eq!(dropped, vec![b2.clone()]);
        assert!(!mp.contains(&a1.hash()));
        assert!(!mp.contains(&b1.hash()));
        assert!(mp.contains(&a2.hash()) && mp.contains(&a3.hash()));
        assert_eq!(mp.pending_nonce(&a.public()), Some(3));
        mp.check_invariants().unwrap();
        // Another node's tx with a's nonce 2 committed and spent 50: our a2
        // is dropped (its nonce is taken), a3 (30) no longer fits in 20.
        src.insert(
            a.public(),
            Account {
                balance: 20,
                nonce: 2,
            },
        );
        let dropped = mp.recheck(&src).dropped;
        assert_eq!(dropped.len(), 2, "{dropped:?}");
        assert!(mp.is_empty());
        assert_eq!(mp.stats().senders, 0);
        mp.check_invariants().unwrap();
    }

    #[test]
    fn admission_catches_up_before_on_commit() {
        let a = key(1);
        let mut src = funded(&[&a], 100);
        let mp = pool();
        let a1 = transfer(&a, 1, 10);
        mp.admit(a1.clone(), &src, 0).unwrap();
        // The state moved (a1 committed) but on_commit has not run yet.
        src.insert(
            a.public(),
            Account {
                balance: 90,
                nonce: 1,
            },
        );
        mp.admit(transfer(&a, 2, 90), &src, 0).unwrap();
        assert!(!mp.contains(&a1.hash()));
        assert!(
            mp.on_commit(std::slice::from_ref(&a1), &src)
                .dropped
                .is_empty()
        );
        assert_eq!(mp.pending_nonce(&a.public()), Some(2));
        mp.check_invariants().unwrap();
    }

    /// Committed state whose reads fail for the senders in `down`.
    struct Flaky {
        state: HashMap<PublicKey, Account>,
        down: HashSet<PublicKey>,
    }

    impl AccountSource for Flaky {
        fn account(&self, who: &PublicKey) -> Result<Account, AccountError> {
            if self.down.contains(who) {
                return Err(AccountError::new("store read failed"));
            }
            self.state.account(who)
        }
    }

    fn unavailable() -> MempoolError {
        MempoolError::StateUnavailable("store read failed".into())
    }

    #[test]
    fn admission_refuses_when_the_account_cannot_be_read() {
        let (a, b) = (key(1), key(2));
        let state = funded(&[&a, &b], 100);
        let down = Flaky {
            state: state.clone(),
            down: HashSet::from([a.public()]),
        };
        let mp = pool();
        let a1 = transfer(&a, 1, 10);
        // Not "insufficient funds" against an empty account: the reason.
        let e = mp.admit(a1.clone(), &down, 0).unwrap_err();
        assert_eq!(e, unavailable());
        assert_eq!(e.code(), "state_unavailable");
        assert!(e.is_transient());
        assert_eq!(mp.admit_bytes(&a1.encode(), &down, 0), Err(unavailable()));
        let b1 = transfer(&b, 1, 10);
        assert_eq!(
            mp.admit_batch(vec![a1.clone(), b1.clone()], &down, 0),
            vec![Err(unavailable()), Ok(b1.hash())]
        );
        assert_eq!(
            mp.admit_bytes_batch(&[&a1.encode()], &down, 0),
            vec![Err(unavailable())]
        );
        assert!(!mp.contains(&a1.hash()));
        assert_eq!(mp.len(), 1);
        // A sender the pool knows is refused the same way, and keeps what
        // it has.
        mp.admit(a1.clone(), &state, 0).unwrap();
        assert_eq!(mp.admit(transfer(&a, 2, 10), &down, 0), Err(unavailable()));
        assert_eq!(mp.pending_nonce(&a.public()), Some(1));
        // Readable again: admitted.
        mp.admit(transfer(&a, 2, 10), &state, 0).unwrap();
        mp.check_invariants().unwrap();
    }

    #[test]
    fn recheck_keeps_the_txs_of_unreadable_senders() {
        let (a, b) = (key(1), key(2));
        let mut state = funded(&[&a, &b], 100);
        let mp = pool();
        let a1 = transfer(&a, 1, 30);
        let a2 = transfer(&a, 2, 30);
        let b1 = transfer(&b, 1, 50);
        let b2 = transfer(&b, 2, 50);
        for t in [&a1, &a2, &b1, &b2] {
            mp.admit(t.clone(), &state, 0).unwrap();
        }
        // The block commits a1 and b1, and b's nonce 2 by another tx: b2
        // is invalid now, but b's account cannot be read.
        state.insert(
            a.public(),
            Account {
                balance: 70,
                nonce: 1,
            },
        );
        state.insert(
            b.public(),
            Account {
                balance: 0,
                nonce: 2,
            },
        );
        let b_down = Flaky {
            state: state.clone(),
            down: HashSet::from([b.public()]),
        };
        let r = mp.on_commit(&[a1.clone(), b1.clone()], &b_down);
        assert!(r.dropped.is_empty(), "{:?}", r.dropped);
        assert_eq!(
            r.unread,
            vec![(b.public(), AccountError::new("store read failed"))]
        );
        assert!(!mp.contains(&a1.hash()) && !mp.contains(&b1.hash()));
        assert!(mp.contains(&a2.hash()) && mp.contains(&b2.hash()));
        mp.check_invariants().unwrap();
        // Nothing readable: nothing dropped, both senders reported.
        let all_down = Flaky {
            state: state.clone(),
            down: HashSet::from([a.public(), b.public()]),
        };
        let r = mp.recheck(&all_down);
        assert!(r.dropped.is_empty());
        let mut unread: Vec<PublicKey> = r.unread.iter().map(|(pk, _)| *pk).collect();
        unread.sort_by_key(|pk| pk.0);
        let mut want = vec![a.public(), b.public()];
        want.sort_by_key(|pk| pk.0);
        assert_eq!(unread, want);
        assert_eq!(mp.len(), 2);
        // Readable again: the recheck drops b2.
        let r = mp.recheck(&state);
        assert_eq!(r.dropped, vec![b2]);
        assert!(r.unread.is_empty());
        assert_eq!(mp.pending_nonce(&a.public()), Some(2));
        mp.check_invariants().unwrap();
    }

    #[test]
    fn remove_demotes_later_nonces() {
        let a = key(1);
        let src = funded(&[&a], 100);
        let mp = pool();
        let txs: Vec<Tx> = (1..=4).map(|n| transfer(&a, n, 1)).collect();
        for t in &txs {
            mp.admit(t.clone(), &src, 0).unwrap();
        }
        let gone = mp.remove(&[txs[1].hash(), Hash::ZERO]);
        assert_eq!(gone, vec![txs[1].clone()]);
        assert_eq!(mp.pending_nonce(&a.public()), Some(1));
        assert_eq!(mp.stats().queued, 2);
        assert_eq!(mp.build_block(1 << 20, 10), vec![txs[0].clone()]);
        mp.check_invariants().unwrap();
        mp.admit(txs[1].clone(), &src, 0).unwrap();
        assert_eq!(mp.build_block(1 << 20, 10), txs);
        mp.check_invariants().unwrap();
    }

    #[test]
    fn reannounce_is_bounded_and_rate_limited() {
        let keys: Vec<NodeKey> = (1..=5).map(key).collect();
        let src = funded(&keys.iter().collect::<Vec<_>>(), 100);
        let size = put(&keys[0], 1, 10).size();
        let mp = Mempool::new(
            CHAIN,
            MempoolConfig {
                reannounce_max_txs: 3,
                reannounce_max_bytes: size * 2,
                ..MempoolConfig::default()
            },
        );
        let hashes: Vec<Hash> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| mp.admit(put(k, 1, 10), &src, i as u64).unwrap())
            .collect();
        // Not due yet.
        assert!(mp.reannounce(500, 1000).is_empty());
        // Due: oldest first, byte bound 2.
        assert_eq!(mp.reannounce(1002, 1000), hashes[..2].to_vec());
        assert_eq!(mp.reannounce(1003, 1000), hashes[2..4].to_vec());
        assert_eq!(mp.reannounce(1004, 1000), hashes[4..].to_vec());
        assert!(mp.reannounce(1500, 1000).is_empty());
        assert_eq!(mp.reannounce(2002, 1000), hashes[..2].to_vec());
    }

    #[test]
    fn batch_gives_per_tx_verdicts() {
        let keys: Vec<NodeKey> = (1..=3).map(key).collect();
        let src = funded(&keys.iter().collect::<Vec<_>>(), 100);
        let mp = pool();
        let good1 = transfer(&keys[0], 1, 1);
        let bad = forged(&transfer(&keys[1], 1, 1));
        let good2 = transfer(&keys[0], 2, 1);
        let wrong = Tx::sign(&keys[2], "x", 1, Payload::Delete { key: b"k".to_vec() });
        let out = mp.admit_batch(
            vec![good1.clone(), bad, good2.clone(), wrong, good1.clone()],
            &src,
            0,
        );
        assert_eq!(out[0], Ok(good1.hash()));
        assert_eq!(out[1], Err(MempoolError::BadSignature));
        assert_eq!(out[2], Ok(good2.hash()));
        assert_eq!(out[3].as_ref().map_err(|e| e.code()), Err("wrong_chain"));
        assert_eq!(out[4], Err(MempoolError::AlreadyKnown));
        let again = mp.admit_bytes_batch(
            &[&good1.encode(), b"junk", &transfer(&keys[2], 1, 1).encode()],
            &src,
            0,
        );
        assert_eq!(again[0], Err(MempoolError::AlreadyKnown));
        assert!(matches!(again[1], Err(MempoolError::Decode(_))));
        assert!(again[2].is_ok());
        assert_eq!(mp.len(), 3);
        mp.check_invariants().unwrap();
    }

    #[test]
    fn concurrent_use_keeps_invariants() {
        let keys: Vec<NodeKey> = (1..=8).map(key).collect();
        let src = funded(&keys.iter().collect::<Vec<_>>(), 1_000_000);
        let mp = Arc::new(Mempool::new(
            CHAIN,
            MempoolConfig {
                max_txs: 150,
                ..MempoolConfig::default()
            },
        ));
        let txs: Vec<Vec<Tx>> = keys
            .iter()
            .map(|k| (1..=40).map(|n| transfer(k, n, n)).collect())
            .collect();
        std::thread::scope(|s| {
            for chunk in txs.chunks(2) {
                let mp = mp.clone();
                let src = &src;
                s.spawn(move || {
                    for (a, b) in chunk[0].iter().zip(&chunk[1]) {
                        let _ = mp.admit_batch(vec![a.clone(), b.clone()], src, 0);
                    }
                });
            }
            let mp2 = mp.clone();
            s.spawn(move || {
                for _ in 0..50 {
                    let block = mp2.build_block(4096, 1000);
                    let mut next: HashMap<PublicKey, u64> = HashMap::new();
                    for t in &block {
                        let n = next.entry(t.sender()).or_insert(1);
                        assert_eq!(t.nonce(), *n);
                        *n += 1;
                    }
                    mp2.check_invariants().unwrap();
                }
            });
        });
        assert_eq!(mp.len(), 150);
        mp.check_invariants().unwrap();
    }
}
