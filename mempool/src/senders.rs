//! Per-sender bookkeeping: each sender's txs by nonce, its pending prefix
//! and queued gaps, the global index and arrival order, and the check of
//! every invariant they keep.
//!
//! # Layout
//!
//! Per sender, txs live in a `BTreeMap<nonce, Entry>`. The first `ready`
//! of them, nonces `base+1 ..= base+ready` (`base` = the sender's committed
//! nonce as last seen), are *pending*: executable in order, affordable
//! together, indexed in the global arrival order and announced. The
//! others are *queued*: their nonce leaves a gap; they wait (at most
//! `max_queued_per_sender` per sender) until the gap fills, then are
//! promoted, given a fresh arrival number and announced.
//!
//! Because a promoted tx gets a fresh arrival number, a sender's pending
//! txs appear in the arrival order in nonce order. Block building walks
//! the arrival order once and so gets every sender's contiguous nonce
//! prefix, across senders by arrival.

use crate::admission::Checked;
use crate::{MempoolConfig, MempoolError};
use kite_types::{Account, Hash, PublicKey, Tx};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// One held tx.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) tx: Arc<Tx>,
    pub(crate) cost: u64,
    /// Arrival number while pending; `None` while queued.
    pub(crate) seq: Option<u64>,
    /// When it was last announced (admission or promotion counts).
    pub(crate) last_announce_ms: u64,
}

/// One sender's txs and what the pool last saw of its account.
#[derive(Debug, Default)]
pub(crate) struct Sender {
    /// Committed nonce as last seen.
    pub(crate) base: u64,
    /// Committed balance as last seen.
    pub(crate) balance: u64,
    pub(crate) txs: BTreeMap<u64, Entry>,
    /// Number of pending txs: nonces `base+1 ..= base+ready`.
    pub(crate) ready: u64,
    /// Sum of the pending txs' costs (<= balance).
    pub(crate) ready_cost: u64,
}

/// The pool's state, behind [`crate::Mempool`]'s lock.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) senders: HashMap<PublicKey, Sender>,
    /// Every held tx: hash -> (sender, nonce).
    pub(crate) index: HashMap<Hash, (PublicKey, u64)>,
    /// Pending txs by arrival number.
    pub(crate) order: BTreeMap<u64, (PublicKey, u64)>,
    pub(crate) next_seq: u64,
    pub(crate) count: usize,
    pub(crate) bytes: usize,
    /// Newly pending hashes not yet handed out for announcement (bounded
    /// by `max_txs`; the oldest fall out and are re-announced later).
    pub(crate) announce: VecDeque<Hash>,
    /// Bumped by every commit.
    pub(crate) epoch: u64,
    /// Latest time seen (ms), for promotions outside an admission.
    pub(crate) now_ms: u64,
}

/// Tables whose capacity exceeds this many times their length (and
/// [`SHRINK_FLOOR`]) are shrunk after a commit.
const SHRINK_RATIO: usize = 4;
/// A table whose length is below this is shrunk only once its capacity
/// exceeds [`SHRINK_RATIO`] times this.
const SHRINK_FLOOR: usize = 1024;

impl Inner {
    /// Gives back what the tables grew to under load and no longer need:
    /// hash maps and deques keep their peak capacity when emptied, so
    /// without this a pool that once held `max_txs` kept their memory
    /// (several MiB at 100,000 txs) after its txs were committed. Called
    /// after each commit; a shrink rehashes the remaining entries, at
    /// most once per fourfold drop.
    pub(crate) fn shrink(&mut self) {
        fn sparse(len: usize, capacity: usize) -> bool {
            capacity > SHRINK_RATIO * len.max(SHRINK_FLOOR)
        }
        if sparse(self.index.len(), self.index.capacity()) {
            self.index.shrink_to(2 * self.index.len());
        }
        if sparse(self.senders.len(), self.senders.capacity()) {
            self.senders.shrink_to(2 * self.senders.len());
        }
        if sparse(self.announce.len(), self.announce.capacity()) {
            self.announce.shrink_to(2 * self.announce.len());
        }
    }

    pub(crate) fn is_pending(&self, h: &Hash) -> bool {
        self.index
            .get(h)
            .and_then(|(pk, n)| self.senders.get(pk)?.txs.get(n))
            .is_some_and(|e| e.seq.is_some())
    }

    /// Inserts a verified tx given the sender's account as read (`fresh`:
    /// read after the latest commit).
    pub(crate) fn insert(
        &mut self,
        c: Checked,
        acct: Account,
        fresh: bool,
        cfg: &MempoolConfig,
        now_ms: u64,
    ) -> Result<Hash, MempoolError> {
        let hash = c.tx.hash();
        if self.index.contains_key(&hash) {
            return Err(MempoolError::AlreadyKnown);
        }
        let pk = c.tx.sender();
        let nonce = c.tx.nonce();
        // Bring a known sender up to a fresh read (the state may have moved
        // before on_commit told us). Txs dropped here are committed or
        // invalid; on_commit would drop them too.
        if fresh
            && let Some(s) = self.senders.get(&pk)
            && (acct.nonce > s.base || (acct.nonce == s.base && acct.balance != s.balance))
        {
            let mut gone = Vec::new();
            self.resync(&pk, acct.nonce, acct.balance, cfg, &mut gone);
        }
        let (base, balance, ready, ready_cost, queued, taken) = match self.senders.get(&pk) {
            Some(s) => (
                s.base,
                s.balance,
                s.ready,
                s.ready_cost,
                s.txs.len() as u64 - s.ready,
                s.txs.contains_key(&nonce),
            ),
            None => (acct.nonce, acct.balance, 0, 0, 0, false),
        };
        if nonce <= base {
            return Err(MempoolError::NonceTooLow {
                have: nonce,
                account: base,
            });
        }
        let expected = base + ready + 1;
        if taken || nonce < expected {
            return Err(MempoolError::NonceInUse { nonce });
        }
        let need = ready_cost.checked_add(c.cost);
        let affordable = need.is_some_and(|n| n <= balance);
        if nonce == expected {
            if ready >= cfg.max_per_sender as u64 {
                return Err(MempoolError::SenderFull {
                    max: cfg.max_per_sender,
                });
            }
        } else {
            // nonce > expected: a gap.
            if cfg.max_queued_per_sender == 0 || nonce - expected >= cfg.max_per_sender as u64 {
                return Err(MempoolError::NonceGap {
                    have: nonce,
                    expected,
                });
            }
            if queued >= cfg.max_queued_per_sender as u64 {
                return Err(MempoolError::QueueFull {
                    max: cfg.max_queued_per_sender,
                });
            }
        }
        if !affordable {
            return Err(MempoolError::InsufficientFunds {
                need: need.unwrap_or(u64::MAX),
                balance,
            });
        }
        if self.count + 1 > cfg.max_txs || self.bytes + c.tx.size() > cfg.max_bytes {
            return Err(MempoolError::Full {
                max_txs: cfg.max_txs,
                max_bytes: cfg.max_bytes,
            });
        }
        self.count += 1;
        self.bytes += c.tx.size();
        self.index.insert(hash, (pk, nonce));
        let s = self.senders.entry(pk).or_insert_with(|| Sender {
            base,
            balance,
            ..Sender::default()
        });
        s.txs.insert(
            nonce,
            Entry {
                tx: c.tx,
                cost: c.cost,
                seq: None,
                last_announce_ms: now_ms,
            },
        );
        if nonce == expected {
            let mut dropped = Vec::new();
            self.extend(&pk, cfg, &mut dropped);
        }
        Ok(hash)
    }

    /// Removes the tx with this hash from every structure except the
    /// sender's `ready` bookkeeping (callers resync the sender after).
    pub(crate) fn unlink_hash(&mut self, h: &Hash) -> Option<Entry> {
        let (pk, nonce) = self.index.remove(h)?;
        let s = self.senders.get_mut(&pk)?;
        let e = s.txs.remove(&nonce)?;
        if let Some(seq) = e.seq {
            self.order.remove(&seq);
        }
        self.count -= 1;
        self.bytes -= e.tx.size();
        Some(e)
    }

    /// Unlinks a removed entry (already taken out of its sender's map).
    fn forget(&mut self, e: &Entry) {
        self.index.remove(&e.tx.hash());
        if let Some(seq) = e.seq {
            self.order.remove(&seq);
        }
        self.count -= 1;
        self.bytes -= e.tx.size();
    }

    /// Promotes the sender's txs after its pending prefix while they are
    /// contiguous, affordable and under the per-sender bound. The first
    /// unaffordable one is dropped with every later tx of the sender.
    fn extend(&mut self, pk: &PublicKey, cfg: &MempoolConfig, dropped: &mut Vec<Arc<Tx>>) {
        let now = self.now_ms;
        let Some(s) = self.senders.get_mut(pk) else {
            return;
        };
        let mut cut = None;
        while s.ready < cfg.max_per_sender as u64 {
            let n = s.base + s.ready + 1;
            let Some(e) = s.txs.get_mut(&n) else {
                break;
            };
            match s.ready_cost.checked_add(e.cost).filter(|c| *c <= s.balance) {
                Some(c) => {
                    s.ready_cost = c;
                    s.ready += 1;
                    if e.seq.is_none() {
                        let seq = self.next_seq;
                        self.next_seq += 1;
                        e.seq = Some(seq);
                        e.last_announce_ms = e.last_announce_ms.max(now);
                        self.order.insert(seq, (*pk, n));
                        self.announce.push_back(e.tx.hash());
                        if self.announce.len() > cfg.max_txs {
                            self.announce.pop_front();
                        }
                    }
                }
                None => {
                    cut = Some(n);
                    break;
                }
            }
        }
        if let Some(n) = cut {
            let tail = s.txs.split_off(&n);
            for e in tail.into_values() {
                self.forget(&e);
                dropped.push(e.tx);
            }
        }
        self.tidy(pk, cfg, dropped);
    }

    /// Sets the sender's committed nonce and balance, drops txs with a
    /// committed nonce, recomputes its pending prefix (dropping an
    /// unaffordable tx and its successors), demotes pending txs cut off by
    /// a gap to queued and enforces the queue bound.
    pub(crate) fn resync(
        &mut self,
        pk: &PublicKey,
        base: u64,
        balance: u64,
        cfg: &MempoolConfig,
        dropped: &mut Vec<Arc<Tx>>,
    ) {
        let Some(s) = self.senders.get_mut(pk) else {
            return;
        };
        s.base = base;
        s.balance = balance;
        s.ready = 0;
        s.ready_cost = 0;
        let keep = s.txs.split_off(&base.saturating_add(1));
        let old = std::mem::replace(&mut s.txs, keep);
        for e in old.into_values() {
            self.forget(&e);
            dropped.push(e.tx);
        }
        // Demote everything, then re-extend: txs still pending keep their
        // arrival number (extend only numbers txs without one).
        let mut demote = Vec::new();
        if let Some(s) = self.senders.get_mut(pk) {
            // Pending txs that will stay pending form a prefix; only the
            // ones beyond it lose their number, after extend below.
            for (n, e) in s.txs.iter() {
                if e.seq.is_some() {
                    demote.push(*n);
                }
            }
        }
        self.extend(pk, cfg, dropped);
        let Some(s) = self.senders.get_mut(pk) else {
            return;
        };
        let limit = s.base + s.ready;
        for n in demote {
            if n > limit
                && let Some(e) = s.txs.get_mut(&n)
                && let Some(seq) = e.seq.take()
            {
                self.order.remove(&seq);
            }
        }
        self.tidy(pk, cfg, dropped);
    }

    /// Enforces the queue bound (dropping the highest nonces) and forgets
    /// a sender with no txs.
    fn tidy(&mut self, pk: &PublicKey, cfg: &MempoolConfig, dropped: &mut Vec<Arc<Tx>>) {
        let Some(s) = self.senders.get_mut(pk) else {
            return;
        };
        let mut gone = Vec::new();
        while s.txs.len() as u64 - s.ready > cfg.max_queued_per_sender as u64 {
            match s.txs.pop_last() {
                Some((_, e)) => gone.push(e),
                None => break,
            }
        }
        let empty = s.txs.is_empty();
        for e in gone {
            self.forget(&e);
            dropped.push(e.tx);
        }
        if empty {
            self.senders.remove(pk);
        }
    }

    pub(crate) fn check(&self, cfg: &MempoolConfig) -> Result<(), String> {
        let mut count = 0usize;
        let mut bytes = 0usize;
        let mut pending = 0usize;
        for (pk, s) in &self.senders {
            if s.txs.is_empty() {
                return Err(format!("sender {} kept with no txs", pk.short()));
            }
            let mut cost = 0u64;
            let mut last_seq = None;
            for n in s.base + 1..=s.base + s.ready {
                let e = s
                    .txs
                    .get(&n)
                    .ok_or_else(|| format!("sender {}: pending nonce {n} missing", pk.short()))?;
                let seq = e.seq.ok_or_else(|| {
                    format!("sender {}: pending nonce {n} unnumbered", pk.short())
                })?;
                if last_seq.is_some_and(|l| l >= seq) {
                    return Err(format!(
                        "sender {}: arrival order breaks nonce order at {n}",
                        pk.short()
                    ));
                }
                last_seq = Some(seq);
                if self.order.get(&seq) != Some(&(*pk, n)) {
                    return Err(format!(
                        "sender {}: nonce {n} not in arrival order",
                        pk.short()
                    ));
                }
                cost = cost
                    .checked_add(e.cost)
                    .ok_or_else(|| "cost overflow".to_string())?;
            }
            if cost != s.ready_cost || cost > s.balance {
                return Err(format!(
                    "sender {}: pending cost {cost} (kept {}) vs balance {}",
                    pk.short(),
                    s.ready_cost,
                    s.balance
                ));
            }
            if s.ready > cfg.max_per_sender as u64 {
                return Err(format!("sender {}: {} pending", pk.short(), s.ready));
            }
            let queued = s.txs.len() as u64 - s.ready;
            if queued > cfg.max_queued_per_sender as u64 {
                return Err(format!("sender {}: {queued} queued", pk.short()));
            }
            for (n, e) in &s.txs {
                if *n <= s.base {
                    return Err(format!(
                        "sender {}: nonce {n} <= base {}",
                        pk.short(),
                        s.base
                    ));
                }
                if *n > s.base + s.ready && e.seq.is_some() {
                    return Err(format!("sender {}: queued nonce {n} numbered", pk.short()));
                }
                if e.tx.sender() != *pk || e.tx.nonce() != *n {
                    return Err(format!("sender {}: entry {n} misfiled", pk.short()));
                }
                if self.index.get(&e.tx.hash()) != Some(&(*pk, *n)) {
                    return Err(format!("sender {}: nonce {n} not indexed", pk.short()));
                }
                count += 1;
                bytes += e.tx.size();
            }
            pending += s.ready as usize;
        }
        if count != self.count || bytes != self.bytes || count != self.index.len() {
            return Err(format!(
                "counters: {count} txs / {bytes} bytes counted, kept {} / {}, index {}",
                self.count,
                self.bytes,
                self.index.len()
            ));
        }
        if pending != self.order.len() {
            return Err(format!(
                "{pending} pending but {} in order",
                self.order.len()
            ));
        }
        if count > cfg.max_txs || bytes > cfg.max_bytes {
            return Err(format!("limits exceeded: {count} txs, {bytes} bytes"));
        }
        if self.announce.len() > cfg.max_txs {
            return Err("announcement buffer over its bound".into());
        }
        Ok(())
    }
}
