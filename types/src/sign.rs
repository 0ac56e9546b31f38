//! What is signed, and verification.
//!
//! Every signature covers a SHA-256 digest that starts with a domain tag, so
//! a signature made for one kind of message never verifies as another kind,
//! and every consensus message carries the chain id, so it never verifies on
//! another chain (a tx body and a block header carry the chain id inside):
//!
//! | kind  | signed digest |
//! |-------|---------------|
//! | tx    | `sha256("kite/tx" \|\| body)` |
//! | block | `sha256("kite/block" \|\| block_hash)` (the header holds the chain id) |
//! | vote (ACK) | `sha256("kite/vote" \|\| u8 len(chain_id) \|\| chain_id \|\| be64(height) \|\| block_hash \|\| u8 1 \|\| app_hash)` |
//! | vote (NACK) | `sha256("kite/vote" \|\| u8 len(chain_id) \|\| chain_id \|\| be64(height) \|\| block_hash \|\| u8 0 \|\| 32 zero bytes \|\| u8 n \|\| n bad tx hashes)` |
//! | reset | `sha256("kite/reset" \|\| u8 len(chain_id) \|\| chain_id \|\| be64(height) \|\| block_hash)` |
//!
//! The chain id is at most 50 bytes, so its length fits one byte and the
//! concatenation is unambiguous.
//!
//! Verification is plain ed25519 (RFC 8032) as ed25519-dalek implements it;
//! [`verify_batch`] checks many signatures at once and, when the batch
//! fails, tells which ones are bad by checking each alone, so batch and
//! single verification always give the same verdict per signature.

use crate::{Hash, PublicKey, Signature};

/// Domain tag of transaction signatures.
pub const TX_DOMAIN: &[u8] = b"kite/tx";
/// Domain tag of block signatures.
pub const BLOCK_DOMAIN: &[u8] = b"kite/block";
/// Domain tag of vote signatures.
pub const VOTE_DOMAIN: &[u8] = b"kite/vote";
/// Domain tag of reset signatures.
pub const RESET_DOMAIN: &[u8] = b"kite/reset";

/// The digest a tx signature covers.
pub fn tx_digest(body: &[u8]) -> Hash {
    Hash::digest_parts(&[TX_DOMAIN, body])
}

/// The digest a block signature covers.
pub fn block_digest(block_hash: &Hash) -> Hash {
    Hash::digest_parts(&[BLOCK_DOMAIN, block_hash.as_bytes()])
}

fn chain_prefix(chain_id: &str) -> [u8; 1] {
    // Chain ids are validated to at most 50 bytes; clamp defensively.
    [u8::try_from(chain_id.len()).unwrap_or(u8::MAX)]
}

/// The digest a vote signature covers. `app_hash` is ignored for a NACK.
pub fn vote_digest(
    chain_id: &str,
    height: u64,
    block_hash: &Hash,
    ack: bool,
    app_hash: &Hash,
) -> Hash {
    let app = if ack { *app_hash } else { Hash::ZERO };
    Hash::digest_parts(&[
        VOTE_DOMAIN,
        &chain_prefix(chain_id),
        chain_id.as_bytes(),
        &height.to_be_bytes(),
        block_hash.as_bytes(),
        &[u8::from(ack)],
        app.as_bytes(),
    ])
}

/// The digest a NACK's signature covers: [`vote_digest`] of a NACK
/// followed by the number of bad txs it names and their hashes, so the
/// txs a validator blames are signed. At most 255 hashes are covered
/// (votes carry at most [`crate::vote::MAX_BAD_TXS`]).
pub fn nack_digest(chain_id: &str, height: u64, block_hash: &Hash, bad_txs: &[Hash]) -> Hash {
    let bad = &bad_txs[..bad_txs.len().min(usize::from(u8::MAX))];
    let prefix = chain_prefix(chain_id);
    let h = height.to_be_bytes();
    let count = [u8::try_from(bad.len()).unwrap_or(u8::MAX)];
    let mut parts: Vec<&[u8]> = vec![
        VOTE_DOMAIN,
        &prefix,
        chain_id.as_bytes(),
        &h,
        block_hash.as_bytes(),
        &[0u8],
        Hash::ZERO.as_bytes(),
        &count,
    ];
    parts.extend(bad.iter().map(|t| &t.as_bytes()[..]));
    Hash::digest_parts(&parts)
}

/// The digest a reset signature covers.
pub fn reset_digest(chain_id: &str, height: u64, block_hash: &Hash) -> Hash {
    Hash::digest_parts(&[
        RESET_DOMAIN,
        &chain_prefix(chain_id),
        chain_id.as_bytes(),
        &height.to_be_bytes(),
        block_hash.as_bytes(),
    ])
}

/// Verifies one signature over a digest.
pub fn verify(key: &PublicKey, digest: &Hash, sig: &Signature) -> bool {
    let Some(vk) = key.verifying_key() else {
        return false;
    };
    let sig = ed25519_dalek::Signature::from_bytes(sig.as_bytes());
    vk.verify_strict(digest.as_bytes(), &sig).is_ok()
}

/// One signature to check in a batch.
#[derive(Debug, Clone, Copy)]
pub struct SigItem<'a> {
    /// The signer.
    pub key: &'a PublicKey,
    /// The signed digest.
    pub digest: Hash,
    /// The signature.
    pub sig: &'a Signature,
}

/// Verifies many signatures. Returns one verdict per item, in order.
///
/// Runs one ed25519 batch verification (much faster per signature than
/// single verification); if the batch fails, or an item is malformed, each
/// item is checked alone so the caller learns exactly which are bad.
/// [`KeyCache::verify_batch`] is the same with the signers' decoded keys
/// kept between calls.
pub fn verify_batch(items: &[SigItem<'_>]) -> Vec<bool> {
    batch_with(items, |pk| pk.verifying_key())
}

/// The batch check behind [`verify_batch`], with `decode` giving each
/// signer's decoded key.
fn batch_with(
    items: &[SigItem<'_>],
    mut decode: impl FnMut(&PublicKey) -> Option<ed25519_dalek::VerifyingKey>,
) -> Vec<bool> {
    if items.len() < 2 {
        return verify_each(items);
    }
    let mut keys = Vec::with_capacity(items.len());
    for it in items {
        match decode(it.key) {
            // Weak (small-order) keys are refused by strict single
            // verification; keep both paths in agreement.
            Some(vk) if !vk.is_weak() => keys.push(vk),
            _ => return verify_each(items),
        }
    }
    let msgs: Vec<&[u8]> = items.iter().map(|it| &it.digest.0[..]).collect();
    let sigs: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|it| ed25519_dalek::Signature::from_bytes(it.sig.as_bytes()))
        .collect();
    if ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok() {
        // The batch equation holds; confirm the strict per-item rule that
        // the batch equation does not check (an R of small order) by
        // re-running strict verification for those signatures only, which
        // honest signers never produce.
        items
            .iter()
            .map(|it| !r_is_small_order(it.sig) || verify(it.key, &it.digest, it.sig))
            .collect()
    } else {
        verify_each(items)
    }
}

fn verify_each(items: &[SigItem<'_>]) -> Vec<bool> {
    items
        .iter()
        .map(|it| verify(it.key, &it.digest, it.sig))
        .collect()
}

/// The 14 encodings of the eight small-order points: the canonical ones
/// and the non-canonical ones (x = 0 with the sign bit set; y = p and
/// y = p + 1, which reduce to 0 and 1, with either sign bit). A point
/// encoding decodes to a small-order point exactly when it is one of them
/// (a test checks this against decompression).
fn small_order_encodings() -> &'static [[u8; 32]] {
    static SET: std::sync::OnceLock<Vec<[u8; 32]>> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        let mut set: Vec<[u8; 32]> = curve25519_dalek::constants::EIGHT_TORSION
            .iter()
            .map(|p| p.compress().to_bytes())
            .collect();
        let mut one = [0u8; 32];
        one[0] = 1;
        let with_sign = |mut e: [u8; 32]| {
            e[31] |= 0x80;
            e
        };
        // x = 0 with the sign bit set: y = 1, and y = -1 = p - 1.
        set.push(with_sign(one));
        set.push(with_sign(pow255_minus(20)));
        // y = p and y = p + 1 (non-canonical 0 and 1), either sign.
        for y in [pow255_minus(19), pow255_minus(18)] {
            set.push(y);
            set.push(with_sign(y));
        }
        set.sort_unstable();
        set.dedup();
        set
    })
}

/// Little-endian bytes of 2^255 - `k` (0 < `k` < 256); p = 2^255 - 19.
fn pow255_minus(k: u8) -> [u8; 32] {
    let mut b = [0xffu8; 32];
    b[31] = 0x7f;
    b[0] = 0u8.wrapping_sub(k);
    b
}

/// Whether the R part of a signature is one of the eight small-order points
/// (in any encoding). Honest signatures never have such an R. A plain
/// comparison against the 14 encodings, instead of a point decompression
/// per signature.
fn r_is_small_order(sig: &Signature) -> bool {
    let r = &sig.0[..32];
    small_order_encodings().iter().any(|e| e[..] == *r)
}

/// The decoded public keys of recent signers, so a signer seen again (a
/// validator's vote, a busy sender's tx) is not decompressed again: point
/// decompression is about a fifth of a signature's batch-verification
/// cost. Bounded: emptied when it holds [`KeyCache::MAX_KEYS`]. Verdicts
/// are exactly those of [`verify_batch`].
#[derive(Debug, Default)]
pub struct KeyCache {
    keys:
        std::sync::Mutex<std::collections::HashMap<PublicKey, Option<ed25519_dalek::VerifyingKey>>>,
}

impl KeyCache {
    /// Most decoded keys kept.
    pub const MAX_KEYS: usize = 65_536;

    /// [`verify_batch`], decoding each signer at most once while cached.
    pub fn verify_batch(&self, items: &[SigItem<'_>]) -> Vec<bool> {
        let decoded = self.get_all(items.iter().map(|it| it.key));
        let mut it = decoded.into_iter();
        batch_with(items, |_| it.next().flatten())
    }

    /// The decoded keys of `who`, in order; decodes the missing ones
    /// outside the lock.
    fn get_all<'a>(
        &self,
        who: impl Iterator<Item = &'a PublicKey>,
    ) -> Vec<Option<ed25519_dalek::VerifyingKey>> {
        let who: Vec<&PublicKey> = who.collect();
        let mut out: Vec<Option<Option<ed25519_dalek::VerifyingKey>>> = {
            let g = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            who.iter().map(|pk| g.get(*pk).copied()).collect()
        };
        let mut fresh = Vec::new();
        for (slot, pk) in out.iter_mut().zip(&who) {
            if slot.is_none() {
                let vk = pk.verifying_key();
                *slot = Some(vk);
                fresh.push((**pk, vk));
            }
        }
        if !fresh.is_empty() {
            let mut g = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            if g.len() + fresh.len() > Self::MAX_KEYS {
                g.clear();
            }
            g.extend(fresh);
        }
        out.into_iter().map(Option::flatten).collect()
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Verifies many signatures and answers whether all are good.
pub fn verify_all(items: &[SigItem<'_>]) -> bool {
    verify_batch(items).into_iter().all(|ok| ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeKey;

    #[test]
    fn domains_are_separated() {
        let h = Hash::digest(b"block");
        assert_ne!(block_digest(&h), tx_digest(h.as_bytes()));
        assert_ne!(
            vote_digest("c", 1, &h, true, &h),
            vote_digest("c", 1, &h, false, &h)
        );
        assert_ne!(
            vote_digest("c", 1, &h, true, &h),
            vote_digest("d", 1, &h, true, &h)
        );
        assert_ne!(
            vote_digest("c", 1, &h, true, &h),
            vote_digest("c", 2, &h, true, &h)
        );
        // NACKs do not depend on the app hash.
        assert_eq!(
            vote_digest("c", 1, &h, false, &h),
            vote_digest("c", 1, &h, false, &Hash::ZERO)
        );
        assert_ne!(reset_digest("c", 1, &h), vote_digest("c", 1, &h, false, &h));
    }

    #[test]
    fn verify_wrong_key_and_wrong_digest() {
        let k = NodeKey::from_seed([1; 32]);
        let other = NodeKey::from_seed([2; 32]);
        let d = tx_digest(b"body");
        let s = k.sign_digest(&d);
        assert!(verify(&k.public(), &d, &s));
        assert!(!verify(&other.public(), &d, &s));
        assert!(!verify(&k.public(), &tx_digest(b"bodz"), &s));
        assert!(!verify(&k.public(), &block_digest(&d), &s));
        assert!(!verify(&PublicKey([0xff; 32]), &d, &s));
    }

    #[test]
    fn batch_finds_the_bad_ones() {
        let keys: Vec<NodeKey> = (0..20u8).map(|i| NodeKey::from_seed([i; 32])).collect();
        let pubs: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
        let digests: Vec<Hash> = (0..20u8).map(|i| tx_digest(&[i])).collect();
        let mut sigs: Vec<Signature> = keys
            .iter()
            .zip(&digests)
            .map(|(k, d)| k.sign_digest(d))
            .collect();
        let items = |sigs: &[Signature]| -> Vec<bool> {
            let it: Vec<SigItem> = (0..20)
                .map(|i| SigItem {
                    key: &pubs[i],
                    digest: digests[i],
                    sig: &sigs[i],
                })
                .collect();
            verify_batch(&it)
        };
        assert!(items(&sigs).iter().all(|&b| b));
        sigs[3].0[5] ^= 1;
        sigs[17] = keys[0].sign_digest(&digests[17]);
        let v = items(&sigs);
        for (i, ok) in v.iter().enumerate() {
            assert_eq!(*ok, i != 3 && i != 17, "item {i}");
        }
        assert!(verify_batch(&[]).is_empty());
    }

    /// The decompressing check the encoding list replaces.
    fn r_is_small_order_slow(r: &[u8; 32]) -> bool {
        match ed25519_dalek::VerifyingKey::from_bytes(r) {
            Ok(p) => p.is_weak(),
            Err(_) => true,
        }
    }

    #[test]
    fn small_order_encodings_match_decompression() {
        let set = small_order_encodings();
        assert_eq!(set.len(), 14);
        let mut candidates: Vec<[u8; 32]> = set.to_vec();
        for k in 0..=255u8 {
            let mut low = [0u8; 32];
            low[0] = k;
            candidates.push(low);
            if k > 0 {
                candidates.push(pow255_minus(k));
            }
        }
        let keys: Vec<NodeKey> = (0..64u8).map(|i| NodeKey::from_seed([i; 32])).collect();
        for (i, k) in keys.iter().enumerate() {
            let sig = k.sign_digest(&tx_digest(&[i as u8]));
            let mut r = [0u8; 32];
            r.copy_from_slice(&sig.0[..32]);
            candidates.push(r);
            candidates.push(k.public().0);
        }
        let mut signed = Vec::new();
        for c in &candidates {
            for sign in [0u8, 0x80] {
                let mut e = *c;
                e[31] = (e[31] & 0x7f) | sign;
                signed.push(e);
            }
        }
        let mut small = 0;
        for r in &signed {
            let mut sig = Signature([0u8; 64]);
            sig.0[..32].copy_from_slice(r);
            let slow = r_is_small_order_slow(r);
            // Not a point at all: the batch equation fails on it anyway.
            if ed25519_dalek::VerifyingKey::from_bytes(r).is_err() {
                continue;
            }
            assert_eq!(r_is_small_order(&sig), slow, "{}", hex::encode(r));
            small += usize::from(slow);
        }
        assert!(small >= 14, "every small-order encoding was tried");
    }

    #[test]
    fn key_cache_gives_the_same_verdicts() {
        let keys: Vec<NodeKey> = (1..=6u8).map(|i| NodeKey::from_seed([i; 32])).collect();
        let mut pubs: Vec<PublicKey> = (0..40).map(|i| keys[i % 6].public()).collect();
        let digests: Vec<Hash> = (0..40u8).map(|i| tx_digest(&[i])).collect();
        let mut sigs: Vec<Signature> = (0..40)
            .map(|i| keys[i % 6].sign_digest(&digests[i]))
            .collect();
        let cache = KeyCache::default();
        let check = |pubs: &[PublicKey], sigs: &[Signature]| -> Vec<bool> {
            let it: Vec<SigItem> = (0..pubs.len())
                .map(|i| SigItem {
                    key: &pubs[i],
                    digest: digests[i],
                    sig: &sigs[i],
                })
                .collect();
            let want = verify_batch(&it);
            assert_eq!(cache.verify_batch(&it), want);
            // Again, from the cache.
            assert_eq!(cache.verify_batch(&it), want);
            want
        };
        assert!(check(&pubs, &sigs).iter().all(|&b| b));
        assert_eq!(cache.len(), 6);
        sigs[3].0[40] ^= 1;
        sigs[17] = keys[0].sign_digest(&digests[16]);
        let v = check(&pubs, &sigs);
        assert_eq!(v.iter().filter(|&&b| !b).count(), 2);
        assert!(!v[3] && !v[17]);
        // A weak (small-order) signer key and one that is no point.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        pubs[5] = PublicKey(weak);
        pubs[9] = PublicKey([0xff; 32]);
        let v = check(&pubs, &sigs);
        assert!(!v[5] && !v[9] && v[4]);
        assert_eq!(check(&pubs[..1], &sigs[..1]).len(), 1);
        assert!(check(&[], &[]).is_empty());
    }
}
