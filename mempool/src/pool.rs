//! The pool itself: [`Mempool`], its state under one short-held lock, and
//! the [`AccountSource`] through which it reads committed account state.
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
//!
//! # Locking
//!
//! Decoding, stateless checks, signature verification and account reads
//! run outside the lock; the lock (a `parking_lot::Mutex`, never held
//! across an await: this crate has no async) only guards map updates.
//! Account reads are tagged with the pool's *epoch* (bumped by every
//! [`Mempool::on_commit`]); an admission whose read raced a commit reads
//! again (up to [`ACCOUNT_RETRIES`] times).

use crate::{MempoolConfig, MempoolError};
use kite_types::sign::KeyCache;
use kite_types::{Account, Hash, MAX_KEY_LEN, MAX_VALUE_LEN, Payload, PublicKey, Tx};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// How many times an admission re-reads account state when a commit
/// happened during its read; after that it proceeds (the next commit's
/// recheck corrects any stale decision).
pub const ACCOUNT_RETRIES: usize = 3;

/// Senders rechecked per lock acquisition after a commit.
const RECHECK_CHUNK: usize = 512;

/// Smallest share of a batch worth a thread of its own.
const MIN_VERIFY_CHUNK: usize = 64;

/// Batch-verifies the txs' signatures, splitting the work over up to
/// `threads` scoped threads (the caller's thread takes one share). One
/// verdict per tx, in order; `kite_types::sign::verify_batch` semantics.
fn verify_parallel(txs: &[&Tx], threads: usize, cache: &KeyCache) -> Vec<bool> {
    let shares = threads.min(txs.len() / MIN_VERIFY_CHUNK).max(1);
    if shares == 1 {
        return Tx::verify_batch_cached(txs, cache);
    }
    let chunk = txs.len().div_ceil(shares);
    let mut parts = txs.chunks(chunk);
    let first = parts.next().unwrap_or_default();
    std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .map(|p| s.spawn(move || Tx::verify_batch_cached(p, cache)))
            .collect();
        let mut out = Tx::verify_batch_cached(first, cache);
        for (h, len) in handles
            .into_iter()
            .zip(txs.chunks(chunk).skip(1).map(<[_]>::len))
        {
            // A panicking verifier thread counts as "not verified".
            out.extend(h.join().unwrap_or_else(|_| vec![false; len]));
        }
        out
    })
}

/// Committed account state, as the pool needs it. The node implements it
/// over the app's committed state.
pub trait AccountSource: Send + Sync {
    /// The committed balance and nonce of `who` (`Account::default()` for
    /// an unknown account).
    fn account(&self, who: &PublicKey) -> Account;
}

impl AccountSource for HashMap<PublicKey, Account> {
    fn account(&self, who: &PublicKey) -> Account {
        self.get(who).copied().unwrap_or_default()
    }
}

/// What a tx costs its sender: the amount of a transfer; Put and Delete
/// cost nothing (this chain has no fees).
pub fn tx_cost(tx: &Tx) -> u64 {
    match &tx.body().payload {
        Payload::Transfer { amount, .. } => *amount,
        Payload::Put { .. } | Payload::Delete { .. } => 0,
    }
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

#[derive(Debug)]
struct Entry {
    tx: Arc<Tx>,
    cost: u64,
    /// Arrival number while pending; `None` while queued.
    seq: Option<u64>,
    /// When it was last announced (admission or promotion counts).
    last_announce_ms: u64,
}

#[derive(Debug, Default)]
struct Sender {
    /// Committed nonce as last seen.
    base: u64,
    /// Committed balance as last seen.
    balance: u64,
    txs: BTreeMap<u64, Entry>,
    /// Number of pending txs: nonces `base+1 ..= base+ready`.
    ready: u64,
    /// Sum of the pending txs' costs (<= balance).
    ready_cost: u64,
}

#[derive(Debug, Default)]
struct Inner {
    senders: HashMap<PublicKey, Sender>,
    /// Every held tx: hash -> (sender, nonce).
    index: HashMap<Hash, (PublicKey, u64)>,
    /// Pending txs by arrival number.
    order: BTreeMap<u64, (PublicKey, u64)>,
    next_seq: u64,
    count: usize,
    bytes: usize,
    /// Newly pending hashes not yet handed out for announcement (bounded
    /// by `max_txs`; the oldest fall out and are re-announced later).
    announce: VecDeque<Hash>,
    /// Bumped by every commit.
    epoch: u64,
    /// Latest time seen (ms), for promotions outside an admission.
    now_ms: u64,
}

/// The transaction pool. Share it as `Arc<Mempool>`: every method takes
/// `&self` and locks internally for short map updates only.
#[derive(Debug)]
pub struct Mempool {
    chain_id: String,
    config: MempoolConfig,
    /// Signature-verification threads per batch (resolved from config).
    verify_threads: usize,
    /// Decoded keys of recent senders.
    keys: KeyCache,
    inner: Mutex<Inner>,
}

/// A tx that passed the stateless checks, with its cost.
struct Checked {
    tx: Arc<Tx>,
    cost: u64,
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

    // ----- admission -------------------------------------------------

    /// Checks everything that needs no pool state nor signature: size,
    /// chain id, key and value lengths.
    fn stateless(&self, tx: &Tx) -> Result<u64, MempoolError> {
        if tx.size() > self.config.max_tx_bytes {
            return Err(MempoolError::TooLarge {
                size: tx.size(),
                max: self.config.max_tx_bytes,
            });
        }
        let body = tx.body();
        if body.chain_id != self.chain_id {
            return Err(MempoolError::WrongChain {
                expected: self.chain_id.clone(),
                got: body.chain_id.clone(),
            });
        }
        let key = match &body.payload {
            Payload::Transfer { .. } => None,
            Payload::Put { key, value } => {
                if value.len() > MAX_VALUE_LEN {
                    return Err(MempoolError::ValueTooLong {
                        len: value.len(),
                        max: MAX_VALUE_LEN,
                    });
                }
                Some(key)
            }
            Payload::Delete { key } => Some(key),
        };
        if let Some(key) = key {
            if key.is_empty() {
                return Err(MempoolError::EmptyKey);
            }
            if key.len() > MAX_KEY_LEN {
                return Err(MempoolError::KeyTooLong {
                    len: key.len(),
                    max: MAX_KEY_LEN,
                });
            }
        }
        Ok(tx_cost(tx))
    }

    /// Decodes bytes (at most `max_tx_bytes`) into a tx.
    fn decode(&self, bytes: &[u8]) -> Result<Tx, MempoolError> {
        let max = self.config.max_tx_bytes;
        if bytes.len() > max {
            return Err(MempoolError::TooLarge {
                size: bytes.len(),
                max,
            });
        }
        Tx::decode(bytes, max).map_err(|e| match e {
            kite_types::DecodeError::TooLarge { size, max, .. } => {
                MempoolError::TooLarge { size, max }
            }
            other => MempoolError::Decode(other.to_string()),
        })
    }

    /// Admits one tx: stateless checks, signature (single verification),
    /// then nonce, affordability and limits against `src` and the pool.
    /// Returns the tx hash. `now_ms` is the caller's clock (for
    /// re-announcement timing).
    pub fn admit(
        &self,
        tx: Tx,
        src: &dyn AccountSource,
        now_ms: u64,
    ) -> Result<Hash, MempoolError> {
        let cost = self.stateless(&tx)?;
        if self.contains(&tx.hash()) {
            return Err(MempoolError::AlreadyKnown);
        }
        if !tx.verify_signature() {
            return Err(MempoolError::BadSignature);
        }
        let checked = Checked {
            tx: Arc::new(tx),
            cost,
        };
        let mut out = self.insert_verified(vec![checked], src, now_ms);
        out.pop().unwrap_or(Err(MempoolError::AlreadyKnown))
    }

    /// Decodes (with the `max_tx_bytes` cap) and admits one tx.
    pub fn admit_bytes(
        &self,
        bytes: &[u8],
        src: &dyn AccountSource,
        now_ms: u64,
    ) -> Result<Hash, MempoolError> {
        let tx = self.decode(bytes)?;
        self.admit(tx, src, now_ms)
    }

    /// Admits many txs at once (a burst of announced txs or RPC calls):
    /// batch signature verification (spread over `verify_threads` scoped
    /// threads for large batches), one account read per sender, one
    /// lock for all insertions. One result per tx, in order. Txs are
    /// inserted in the given order; a sender's out-of-order nonces are
    /// queued (if queueing is on) and promoted when the gap fills.
    pub fn admit_batch(
        &self,
        txs: Vec<Tx>,
        src: &dyn AccountSource,
        now_ms: u64,
    ) -> Vec<Result<Hash, MempoolError>> {
        let mut results: Vec<Option<Result<Hash, MempoolError>>> = Vec::with_capacity(txs.len());
        let mut candidates: Vec<(usize, Checked)> = Vec::with_capacity(txs.len());
        for (i, tx) in txs.into_iter().enumerate() {
            match self.stateless(&tx) {
                Err(e) => results.push(Some(Err(e))),
                Ok(cost) => {
                    results.push(None);
                    candidates.push((
                        i,
                        Checked {
                            tx: Arc::new(tx),
                            cost,
                        },
                    ));
                }
            }
        }
        // Skip what is already known before paying for its signature.
        {
            let g = self.inner.lock();
            candidates.retain(|(i, c)| {
                let known = g.index.contains_key(&c.tx.hash());
                if known && let Some(slot) = results.get_mut(*i) {
                    *slot = Some(Err(MempoolError::AlreadyKnown));
                }
                !known
            });
        }
        let verdicts = {
            let refs: Vec<&Tx> = candidates.iter().map(|(_, c)| c.tx.as_ref()).collect();
            verify_parallel(&refs, self.verify_threads, &self.keys)
        };
        let mut good_idx = Vec::with_capacity(candidates.len());
        let mut good = Vec::with_capacity(candidates.len());
        for ((i, c), ok) in candidates.into_iter().zip(verdicts) {
            if ok {
                good_idx.push(i);
                good.push(c);
            } else if let Some(slot) = results.get_mut(i) {
                *slot = Some(Err(MempoolError::BadSignature));
            }
        }
        let inserted = self.insert_verified(good, src, now_ms);
        for (i, r) in good_idx.into_iter().zip(inserted) {
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(r);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(MempoolError::AlreadyKnown)))
            .collect()
    }

    /// Decodes each item (with the size cap) and admits the good ones as a
    /// batch. One result per item, in order.
    pub fn admit_bytes_batch(
        &self,
        items: &[&[u8]],
        src: &dyn AccountSource,
        now_ms: u64,
    ) -> Vec<Result<Hash, MempoolError>> {
        let mut results: Vec<Option<Result<Hash, MempoolError>>> = Vec::with_capacity(items.len());
        let mut txs = Vec::with_capacity(items.len());
        let mut idx = Vec::with_capacity(items.len());
        for (i, b) in items.iter().enumerate() {
            match self.decode(b) {
                Ok(tx) => {
                    results.push(None);
                    idx.push(i);
                    txs.push(tx);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        for (i, r) in idx.into_iter().zip(self.admit_batch(txs, src, now_ms)) {
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(r);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(MempoolError::AlreadyKnown)))
            .collect()
    }

    /// Reads the senders' accounts (outside the lock), then inserts every
    /// signature-checked tx under one lock.
    fn insert_verified(
        &self,
        txs: Vec<Checked>,
        src: &dyn AccountSource,
        now_ms: u64,
    ) -> Vec<Result<Hash, MempoolError>> {
        if txs.is_empty() {
            return Vec::new();
        }
        let mut senders: Vec<PublicKey> = Vec::new();
        {
            let mut seen = HashSet::with_capacity(txs.len());
            for c in &txs {
                if seen.insert(c.tx.sender()) {
                    senders.push(c.tx.sender());
                }
            }
        }
        let mut epoch = self.inner.lock().epoch;
        let mut attempt = 0;
        loop {
            let accounts: HashMap<PublicKey, Account> =
                senders.iter().map(|pk| (*pk, src.account(pk))).collect();
            let mut g = self.inner.lock();
            attempt += 1;
            if g.epoch != epoch && attempt < ACCOUNT_RETRIES {
                epoch = g.epoch;
                continue;
            }
            let fresh = g.epoch == epoch;
            g.now_ms = g.now_ms.max(now_ms);
            return txs
                .into_iter()
                .map(|c| {
                    let acct = accounts.get(&c.tx.sender()).copied().unwrap_or_default();
                    g.insert(c, acct, fresh, &self.config, now_ms)
                })
                .collect();
        }
    }

    // ----- lookups ---------------------------------------------------

    /// Whether the pool holds this tx (pending or queued). O(1).
    pub fn contains(&self, hash: &Hash) -> bool {
        self.inner.lock().index.contains_key(hash)
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
    pub fn on_commit(&self, committed: &[Tx], src: &dyn AccountSource) -> Vec<Tx> {
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
            (g.epoch, g.senders.keys().copied().collect::<Vec<_>>())
        };
        for chunk in senders.chunks(RECHECK_CHUNK) {
            let accounts: Vec<Account> = chunk.iter().map(|pk| src.account(pk)).collect();
            let mut g = self.inner.lock();
            if g.epoch != epoch {
                // A later commit rechecks with newer state.
                break;
            }
            for (pk, acct) in chunk.iter().zip(accounts) {
                if g.senders.contains_key(pk) {
                    g.resync(pk, acct.nonce, acct.balance, &self.config, &mut dropped);
                }
            }
        }
        dropped.into_iter().map(Arc::unwrap_or_clone).collect()
    }

    /// Rechecks every sender against `src` without a commit (e.g. after a
    /// restart or a state sync). Returns the dropped txs.
    pub fn recheck(&self, src: &dyn AccountSource) -> Vec<Tx> {
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

impl Inner {
    fn is_pending(&self, h: &Hash) -> bool {
        self.index
            .get(h)
            .and_then(|(pk, n)| self.senders.get(pk)?.txs.get(n))
            .is_some_and(|e| e.seq.is_some())
    }

    /// Inserts a verified tx given the sender's account as read (`fresh`:
    /// read after the latest commit).
    fn insert(
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
    fn unlink_hash(&mut self, h: &Hash) -> Option<Entry> {
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
    fn resync(
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

    fn check(&self, cfg: &MempoolConfig) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use kite_types::NodeKey;

    const CHAIN: &str = "kite-test";

    fn key(i: u8) -> NodeKey {
        NodeKey::from_seed([i; 32])
    }

    fn transfer(k: &NodeKey, nonce: u64, amount: u64) -> Tx {
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

    fn forged(tx: &Tx) -> Tx {
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
        let dropped = mp.on_commit(&block, &src);
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
        let dropped = mp.recheck(&src);
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
        assert!(mp.on_commit(std::slice::from_ref(&a1), &src).is_empty());
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
    fn parallel_verification_keeps_order() {
        let keys: Vec<NodeKey> = (1..=5).map(key).collect();
        let mut txs: Vec<Tx> = (0..300)
            .map(|i| transfer(&keys[i % 5], 1 + i as u64 / 5, 1))
            .collect();
        for i in [0, 77, 150, 299] {
            txs[i] = forged(&txs[i]);
        }
        let refs: Vec<&Tx> = txs.iter().collect();
        let want: Vec<bool> = (0..300).map(|i| ![0, 77, 150, 299].contains(&i)).collect();
        for threads in [1, 2, 3, 8] {
            let cache = KeyCache::default();
            assert_eq!(
                verify_parallel(&refs, threads, &cache),
                want,
                "{threads} threads"
            );
        }
        assert!(verify_parallel(&[], 4, &KeyCache::default()).is_empty());
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
