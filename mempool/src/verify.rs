//! Batch signature verification with a cache of decoded sender keys.
//!
//! `kite_types::sign::verify_batch` decodes (decompresses) every signer's
//! public key on every call; a busy sender's key is decoded once per tx.
//! Point decompression is a large share of verification time, so the pool
//! keeps the decoded keys of recent senders. The verdicts are exactly those
//! of `kite_types::sign::verify_batch`: the same batch equation
//! (`ed25519_dalek::verify_batch`), the same strict per-item re-check of
//! signatures whose R is of small order, and the same fallback to strict
//! single verification (`kite_types::sign::verify`) for weak or invalid
//! keys and failed batches. A test compares both on good, forged and
//! weak-key txs.

use ed25519_dalek::VerifyingKey;
use kite_types::sign::{self, SigItem};
use kite_types::{PublicKey, Signature, Tx};
use parking_lot::Mutex;
use std::collections::HashMap;

/// Most decoded keys kept; the cache is emptied when it is full.
pub(crate) const MAX_CACHED_KEYS: usize = 65_536;

/// Decoded keys of recent senders (`None`: not a valid point).
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    keys: Mutex<HashMap<PublicKey, Option<VerifyingKey>>>,
}

impl KeyCache {
    /// The decoded keys of `who`, in order; decodes the missing ones
    /// outside the lock.
    fn get_all(&self, who: &[&PublicKey]) -> Vec<Option<VerifyingKey>> {
        let mut out: Vec<Option<Option<VerifyingKey>>> = {
            let g = self.keys.lock();
            who.iter().map(|pk| g.get(*pk).copied()).collect()
        };
        let mut fresh = Vec::new();
        for (slot, pk) in out.iter_mut().zip(who) {
            if slot.is_none() {
                let vk = pk.verifying_key();
                *slot = Some(vk);
                fresh.push((**pk, vk));
            }
        }
        if !fresh.is_empty() {
            let mut g = self.keys.lock();
            if g.len() + fresh.len() > MAX_CACHED_KEYS {
                g.clear();
            }
            g.extend(fresh);
        }
        out.into_iter().map(Option::flatten).collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.lock().len()
    }
}

/// Whether R (the first half of a signature) is a small-order point in
/// any encoding, or no point at all (as `kite_types::sign` decides it).
fn r_is_small_order(sig: &Signature) -> bool {
    let mut r = [0u8; 32];
    r.copy_from_slice(&sig.0[..32]);
    match VerifyingKey::from_bytes(&r) {
        Ok(p) => p.is_weak(),
        Err(_) => true,
    }
}

fn verify_each(items: &[SigItem<'_>]) -> Vec<bool> {
    items
        .iter()
        .map(|it| sign::verify(it.key, &it.digest, it.sig))
        .collect()
}

/// One verdict per tx, in order: `kite_types::sign::verify_batch`
/// semantics with cached key decoding.
pub(crate) fn verify_batch_cached(txs: &[&Tx], cache: &KeyCache) -> Vec<bool> {
    let items: Vec<SigItem<'_>> = txs.iter().map(|t| t.sig_item()).collect();
    if items.len() < 2 {
        return verify_each(&items);
    }
    let who: Vec<&PublicKey> = items.iter().map(|it| it.key).collect();
    let mut keys = Vec::with_capacity(items.len());
    for vk in cache.get_all(&who) {
        match vk {
            Some(vk) if !vk.is_weak() => keys.push(vk),
            _ => return verify_each(&items),
        }
    }
    let msgs: Vec<&[u8]> = items.iter().map(|it| &it.digest.0[..]).collect();
    let sigs: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|it| ed25519_dalek::Signature::from_bytes(it.sig.as_bytes()))
        .collect();
    if ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok() {
        items
            .iter()
            .map(|it| !r_is_small_order(it.sig) || sign::verify(it.key, &it.digest, it.sig))
            .collect()
    } else {
        verify_each(&items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kite_types::{NodeKey, Payload};

    /// The same tx with its sender replaced by the identity point (a weak
    /// key); the signature no longer matters. Patches the 32 sender bytes
    /// in place, so the body stays canonically encoded.
    fn with_weak_sender(tx: &Tx) -> Tx {
        let mut p = tx.to_proto();
        let pk = tx.sender().0;
        let at = p.body.windows(32).position(|w| w == pk).unwrap();
        let mut weak = [0u8; 32];
        weak[0] = 1;
        p.body[at..at + 32].copy_from_slice(&weak);
        let out = Tx::from_proto(p).unwrap();
        assert_eq!(out.sender(), PublicKey(weak));
        out
    }

    #[test]
    fn same_verdicts_as_kite_types() {
        let keys: Vec<NodeKey> = (1..=6).map(|i| NodeKey::from_seed([i; 32])).collect();
        let mut txs: Vec<Tx> = (0..40u64)
            .map(|i| {
                Tx::sign(
                    &keys[(i % 6) as usize],
                    "c",
                    i + 1,
                    Payload::Delete { key: vec![1] },
                )
            })
            .collect();
        let cache = KeyCache::default();
        let check = |txs: &[Tx]| {
            let refs: Vec<&Tx> = txs.iter().collect();
            let want = Tx::verify_batch(&refs);
            assert_eq!(verify_batch_cached(&refs, &cache), want);
            // Again, from the cache.
            assert_eq!(verify_batch_cached(&refs, &cache), want);
            want
        };
        assert!(check(&txs).iter().all(|&b| b));
        assert_eq!(cache.len(), 6);
        // Forged signatures.
        for i in [3, 17] {
            let mut p = txs[i].to_proto();
            p.signature[40] ^= 1;
            txs[i] = Tx::from_proto(p).unwrap();
        }
        let v = check(&txs);
        assert_eq!(v.iter().filter(|&&b| !b).count(), 2);
        // A weak sender key.
        txs[5] = with_weak_sender(&txs[5]);
        let v = check(&txs);
        assert!(!v[5]);
        assert!(check(&txs[..1]).len() == 1);
        assert!(check(&[]).is_empty());
    }
}
