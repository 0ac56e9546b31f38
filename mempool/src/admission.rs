//! Admission: everything a tx goes through before it reaches the
//! per-sender queues. Decoding with the size cap, the stateless checks
//! (size, chain id, key and value lengths), signature verification (one
//! at a time, or batched over scoped threads for bursts), then the
//! account read outside the lock and the insertion under it
//! ([`crate::senders`] decides nonce, affordability and limits).

use crate::{AccountError, AccountSource, Mempool, MempoolError};
use kite_types::sign::KeyCache;
use kite_types::{Account, Hash, MAX_KEY_LEN, MAX_VALUE_LEN, Payload, PublicKey, Tx};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// How many times an admission re-reads account state when a commit
/// happened during its read; after that it proceeds (the next commit's
/// recheck corrects any stale decision).
pub const ACCOUNT_RETRIES: usize = 3;

/// Smallest share of a batch worth a thread of its own.
const MIN_VERIFY_CHUNK: usize = 64;

/// Batch-verifies the txs' signatures, splitting the work over up to
/// `threads` scoped threads (the caller's thread takes one share). One
/// verdict per tx, in order; `kite_types::sign::verify_batch` semantics.
fn verify_parallel(txs: &[&Tx], threads: usize, cache: &KeyCache) -> Vec<bool> {
    verify_shared(txs, threads, &|part| Tx::verify_batch_cached(part, cache))
}

/// [`verify_parallel`] over any batch verifier `verify`. A share whose
/// thread cannot be started, or panics, is verified again on the calling
/// thread: a verdict of `false` means a bad signature, and a tx from a
/// peer with one gets the peer reported, so our own failure must never
/// read as one. A panic on the calling thread propagates (the caller
/// gets no verdicts at all).
fn verify_shared(
    txs: &[&Tx],
    threads: usize,
    verify: &(dyn Fn(&[&Tx]) -> Vec<bool> + Sync),
) -> Vec<bool> {
    let shares = threads.min(txs.len() / MIN_VERIFY_CHUNK).max(1);
    if shares == 1 {
        return verify(txs);
    }
    let chunk = txs.len().div_ceil(shares);
    let mut parts = txs.chunks(chunk);
    let first = parts.next().unwrap_or_default();
    std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .map(|p| {
                let spawned = std::thread::Builder::new()
                    .name("kite-verify".into())
                    .spawn_scoped(s, move || verify(p));
                (p, spawned)
            })
            .collect();
        let mut out = verify(first);
        for (p, spawned) in handles {
            match spawned.map(|h| h.join()) {
                Ok(Ok(verdicts)) => out.extend(verdicts),
                Ok(Err(_)) | Err(_) => {
                    tracing::error!(
                        txs = p.len(),
                        "a signature verifier thread failed; verifying its share again"
                    );
                    out.extend(verify(p));
                }
            }
        }
        out
    })
}

/// What a tx costs its sender: the amount of a transfer; Put and Delete
/// cost nothing (this chain has no fees).
pub fn tx_cost(tx: &Tx) -> u64 {
    match &tx.body().payload {
        Payload::Transfer { amount, .. } => *amount,
        Payload::Put { .. } | Payload::Delete { .. } => 0,
    }
}

/// A tx that passed the stateless checks, with its cost.
pub(crate) struct Checked {
    pub(crate) tx: Arc<Tx>,
    pub(crate) cost: u64,
}

impl Mempool {
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
    /// signature-checked tx under one lock. A tx whose sender's account
    /// cannot be read is refused with [`MempoolError::StateUnavailable`].
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
            let accounts: HashMap<PublicKey, Result<Account, AccountError>> =
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
                    let acct = match accounts.get(&c.tx.sender()) {
                        Some(Ok(acct)) => *acct,
                        // Unknown state is not an empty account: refuse
                        // with the reason, not as a nonce or funds problem.
                        Some(Err(e)) => {
                            return Err(MempoolError::StateUnavailable(e.reason().to_string()));
                        }
                        None => Account::default(),
                    };
                    g.insert(c, acct, fresh, &self.config, now_ms)
                })
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::{forged, key, transfer};
    use kite_types::NodeKey;

    /// `n` transfers from `senders` keys in turn, those at `forge` forged.
    fn batch(senders: u8, n: usize, forge: &[usize]) -> Vec<Tx> {
        let keys: Vec<NodeKey> = (1..=senders).map(key).collect();
        let k = usize::from(senders);
        let mut txs: Vec<Tx> = (0..n)
            .map(|i| transfer(&keys[i % k], 1 + (i / k) as u64, 1))
            .collect();
        for &i in forge {
            txs[i] = forged(&txs[i]);
        }
        txs
    }

    #[test]
    fn a_failed_verifier_thread_is_no_bad_signature() {
        let txs = batch(3, 256, &[200]);
        let refs: Vec<&Tx> = txs.iter().collect();
        let main = std::thread::current().id();
        let panicked = std::sync::atomic::AtomicUsize::new(0);
        // Every verifier thread but the caller's panics once.
        let flaky = |part: &[&Tx]| {
            if std::thread::current().id() != main {
                panicked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                panic!("verifier thread fails");
            }
            Tx::verify_batch(part)
        };
        let got = verify_shared(&refs, 4, &flaky);
        assert_eq!(panicked.load(std::sync::atomic::Ordering::SeqCst), 3);
        let want: Vec<bool> = (0..256).map(|i| i != 200).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn parallel_verification_keeps_order() {
        let txs = batch(5, 300, &[0, 77, 150, 299]);
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
}
