//! What is signed, and the one signature verification rule.
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
//! | term change | `sha256("kite/term" \|\| u8 len(chain_id) \|\| chain_id \|\| be64(term) \|\| be64(height) \|\| u8 0)`, or with an ACK: `... \|\| u8 1 \|\| block_hash \|\| be64(ack term) \|\| be64(header time))` |
//!
//! Votes and resets of a term above 0 append `be64(term)` to the digest
//! above; in term 0 (the genesis leader's) the digest is the one shown, so a
//! chain whose leader never changed signs what it always signed. The
//! fixed-length tail keeps the two forms apart (a NACK's tail is a multiple
//! of 32 bytes; with a term, 8 more).
//!
//! The chain id is at most 50 bytes, so its length fits one byte and the
//! concatenation is unambiguous.
//!
//! # The verification rule
//!
//! One rule decides every signature, whether it is checked alone
//! ([`verify`]) or in a batch ([`verify_batch`], [`KeyCache::verify_batch`]),
//! and whatever else is in the batch (docs/PROTOCOL.md section 4 states it
//! for other implementations; section 8 has test vectors):
//!
//! - **Equation: ZIP-215** (as the `ed25519-zebra` crate implements it, on
//!   the same curve25519-dalek as ed25519-dalek):
//!   `s` (the signature's last 32 bytes, little-endian) must be below the
//!   group order ℓ; `R` (its first 32 bytes) and the key `A` must decode to
//!   curve points, non-canonical encodings (y ≥ p) included; with
//!   `k = SHA-512(R ‖ A ‖ digest) mod ℓ`, over the bytes as sent, the
//!   signature is valid when `[8][s]B = [8]R + [8][k]A`. The cofactored
//!   equation ignores the small-order part of `R` and `A`, which is what
//!   makes single and random-linear-combination batch verification agree:
//!   a batch passes exactly when (but for a 2^-128 chance) every item
//!   passes alone, so a failing batch is re-checked item by item.
//! - **Key rule**: the signer key `A` must be the canonical encoding of a
//!   point of the prime-order subgroup other than the identity: small-order
//!   keys and mixed-order keys (a subgroup point plus a torsion point) are
//!   refused, whatever the signature. Every honest key passes. The rule
//!   depends on the key alone, so it is checked once per key and cached
//!   ([`KeyCache`]; single verification uses one process-wide cache).
//!
//! The tests pin the rule with the vectors of docs/PROTOCOL.md section 8,
//! alone and in many batch compositions, and cross-check them against a
//! second ZIP-215 implementation (`ed25519-consensus`) and against strict
//! RFC 8032.
//!
//! Consequences, the same on every path: an `R` with a small-order
//! component (a "mixed-order R") is **valid** when the key's owner computed
//! `s` for that very `R` (only the owner can: `R` enters the hash); an `R`
//! changed by anyone else (say `R + T` with the old `s`) changes `k` and is
//! refused. RFC 8032 "strict" verification (cofactorless, ed25519-dalek's
//! `verify_strict`) is not used: its batch form cannot agree with its
//! single form on such signatures without a per-item torsion check that
//! costs about one more verification per signature.

use crate::{Hash, PublicKey, Signature};

/// Domain tag of transaction signatures.
pub const TX_DOMAIN: &[u8] = b"kite/tx";
/// Domain tag of block signatures.
pub const BLOCK_DOMAIN: &[u8] = b"kite/block";
/// Domain tag of vote signatures.
pub const VOTE_DOMAIN: &[u8] = b"kite/vote";
/// Domain tag of reset signatures.
pub const RESET_DOMAIN: &[u8] = b"kite/reset";
/// Domain tag of term-change signatures.
pub const TERM_DOMAIN: &[u8] = b"kite/term";

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

/// `be64(term)` when `term` is above 0, else nothing.
fn term_tail(term: u64) -> Vec<u8> {
    if term == 0 {
        Vec::new()
    } else {
        term.to_be_bytes().to_vec()
    }
}

/// The digest a vote signature covers, in term 0. `app_hash` is ignored
/// for a NACK.
pub fn vote_digest(
    chain_id: &str,
    height: u64,
    block_hash: &Hash,
    ack: bool,
    app_hash: &Hash,
) -> Hash {
    vote_digest_in(chain_id, 0, height, block_hash, ack, app_hash)
}

/// The digest a vote signature covers in `term`. `app_hash` is ignored for
/// a NACK.
pub fn vote_digest_in(
    chain_id: &str,
    term: u64,
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
        &term_tail(term),
    ])
}

/// The digest a NACK's signature covers: [`vote_digest`] of a NACK
/// followed by the number of bad txs it names and their hashes, so the
/// txs a validator blames are signed. At most 255 hashes are covered
/// (votes carry at most [`crate::vote::MAX_BAD_TXS`]).
pub fn nack_digest(chain_id: &str, height: u64, block_hash: &Hash, bad_txs: &[Hash]) -> Hash {
    nack_digest_in(chain_id, 0, height, block_hash, bad_txs)
}

/// [`nack_digest`] of a NACK cast in `term`.
pub fn nack_digest_in(
    chain_id: &str,
    term: u64,
    height: u64,
    block_hash: &Hash,
    bad_txs: &[Hash],
) -> Hash {
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
    let tail = term_tail(term);
    parts.push(&tail);
    Hash::digest_parts(&parts)
}

/// The digest a reset signature covers: the leader of `term` abandons its
/// block `block_hash` at `height`.
pub fn reset_digest(chain_id: &str, term: u64, height: u64, block_hash: &Hash) -> Hash {
    Hash::digest_parts(&[
        RESET_DOMAIN,
        &chain_prefix(chain_id),
        chain_id.as_bytes(),
        &height.to_be_bytes(),
        block_hash.as_bytes(),
        &term_tail(term),
    ])
}

/// The digest a term change's signature covers: `acked` is the signer's
/// ACK at `height` (block hash, the term of the ACK, the block's header
/// time), if any.
pub fn term_change_digest(
    chain_id: &str,
    term: u64,
    height: u64,
    acked: Option<(&Hash, u64, u64)>,
) -> Hash {
    let head = [
        TERM_DOMAIN,
        &chain_prefix(chain_id),
        chain_id.as_bytes(),
        &term.to_be_bytes(),
        &height.to_be_bytes(),
    ];
    match acked {
        None => {
            let mut parts = head.to_vec();
            parts.push(&[0u8]);
            Hash::digest_parts(&parts)
        }
        Some((hash, ack_term, ts)) => {
            let (t, s) = (ack_term.to_be_bytes(), ts.to_be_bytes());
            let mut parts = head.to_vec();
            parts.extend([&[1u8][..], hash.as_bytes(), &t, &s]);
            Hash::digest_parts(&parts)
        }
    }
}

/// Verifies one signature over a digest, under the rule of this module.
/// The signer's key is checked against the key rule once and kept in a
/// process-wide cache.
pub fn verify(key: &PublicKey, digest: &Hash, sig: &Signature) -> bool {
    match shared_keys().get(key) {
        Some(vk) => verify_one(&vk, digest, sig),
        None => false,
    }
}

/// The equation for one signature whose key passed the key rule.
fn verify_one(vk: &ed25519_zebra::VerificationKey, digest: &Hash, sig: &Signature) -> bool {
    vk.verify(
        &ed25519_zebra::Signature::from_bytes(&sig.0),
        digest.as_bytes(),
    )
    .is_ok()
}

/// The key rule: `bytes` must be the canonical encoding of a curve point
/// of the prime-order subgroup other than the identity. Returns the key
/// ready for verification when it passes.
pub fn key_allowed(bytes: &[u8; 32]) -> Option<ed25519_zebra::VerificationKey> {
    let point = curve25519_dalek::edwards::CompressedEdwardsY(*bytes).decompress()?;
    let canonical = point.compress().to_bytes() == *bytes;
    if !canonical || point.is_small_order() || !point.is_torsion_free() {
        return None;
    }
    ed25519_zebra::VerificationKey::try_from(*bytes).ok()
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

/// Verifies many signatures. Returns one verdict per item, in order: the
/// verdicts of [`verify`] on each item, whatever the batch holds.
///
/// Runs one ZIP-215 batch verification (much faster per signature than
/// single verification) over the items whose key passes the key rule;
/// if the batch fails, each of them is checked alone so the caller learns
/// exactly which are bad. Uses the process-wide key cache of [`verify`];
/// [`KeyCache::verify_batch`] is the same with a cache of the caller's.
pub fn verify_batch(items: &[SigItem<'_>]) -> Vec<bool> {
    shared_keys().verify_batch(items)
}

/// The batch check behind [`KeyCache::verify_batch`]; `keys` holds each
/// item's key after the key rule (`None`: refused), in order.
fn batch_with(items: &[SigItem<'_>], keys: &[Option<ed25519_zebra::VerificationKey>]) -> Vec<bool> {
    let mut verdicts = vec![false; items.len()];
    // The items the batch equation decides: key allowed.
    let mut queued: Vec<(usize, &ed25519_zebra::VerificationKey)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if let Some(vk) = key {
            queued.push((i, vk));
        }
    }
    let single = |(i, vk): &(usize, &ed25519_zebra::VerificationKey)| {
        items
            .get(*i)
            .is_some_and(|it| verify_one(vk, &it.digest, it.sig))
    };
    let batch_ok = queued.len() >= 2 && {
        let mut batch = ed25519_zebra::batch::Verifier::new();
        for (i, vk) in &queued {
            if let Some(it) = items.get(*i) {
                batch.queue((
                    ed25519_zebra::VerificationKeyBytes::from(**vk),
                    ed25519_zebra::Signature::from_bytes(&it.sig.0),
                    &it.digest.0[..],
                ));
            }
        }
        batch.verify(rand::rng()).is_ok()
    };
    for q in &queued {
        if let Some(v) = verdicts.get_mut(q.0) {
            // A passing batch means every queued item passes alone.
            *v = batch_ok || single(q);
        }
    }
    verdicts
}

/// The process-wide key cache of [`verify`] and [`verify_batch`].
fn shared_keys() -> &'static KeyCache {
    static KEYS: std::sync::OnceLock<KeyCache> = std::sync::OnceLock::new();
    KEYS.get_or_init(KeyCache::default)
}

/// Signer keys after the key rule, so a signer seen again (a validator's
/// vote, a busy sender's tx) is neither decompressed nor torsion-checked
/// again: the key rule costs about one signature verification, the
/// decompression about a fifth of a batch verification per signature.
/// Bounded: emptied when it holds [`KeyCache::MAX_KEYS`]. Verdicts are
/// exactly those of [`verify`] and [`verify_batch`].
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: std::sync::Mutex<
        std::collections::HashMap<PublicKey, Option<ed25519_zebra::VerificationKey>>,
    >,
}

impl KeyCache {
    /// Most keys kept.
    pub const MAX_KEYS: usize = 65_536;

    /// [`verify_batch`], checking each signer's key at most once while
    /// cached.
    pub fn verify_batch(&self, items: &[SigItem<'_>]) -> Vec<bool> {
        let keys = self.get_all(items.iter().map(|it| it.key));
        batch_with(items, &keys)
    }

    /// `who`'s key if it passes the key rule.
    pub fn get(&self, who: &PublicKey) -> Option<ed25519_zebra::VerificationKey> {
        self.get_all(std::iter::once(who)).pop().flatten()
    }

    /// The keys of `who` after the key rule, in order; checks the missing
    /// ones outside the lock.
    fn get_all<'a>(
        &self,
        who: impl Iterator<Item = &'a PublicKey>,
    ) -> Vec<Option<ed25519_zebra::VerificationKey>> {
        let who: Vec<&PublicKey> = who.collect();
        let mut out: Vec<Option<Option<ed25519_zebra::VerificationKey>>> = {
            let g = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            who.iter().map(|pk| g.get(*pk).copied()).collect()
        };
        let mut fresh: std::collections::HashMap<
            PublicKey,
            Option<ed25519_zebra::VerificationKey>,
        > = std::collections::HashMap::new();
        for (slot, pk) in out.iter_mut().zip(&who) {
            if slot.is_none() {
                // The same new key twice in one call is checked once.
                *slot = Some(*fresh.entry(**pk).or_insert_with(|| key_allowed(&pk.0)));
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
        assert_ne!(
            reset_digest("c", 0, 1, &h),
            vote_digest("c", 1, &h, false, &h)
        );
        // Term 0 signs what a chain without terms signed; any other term
        // signs something else, and so does every other term.
        assert_eq!(
            vote_digest_in("c", 0, 1, &h, true, &h),
            vote_digest("c", 1, &h, true, &h)
        );
        assert_ne!(
            vote_digest_in("c", 1, 1, &h, true, &h),
            vote_digest_in("c", 2, 1, &h, true, &h)
        );
        assert_ne!(
            nack_digest_in("c", 1, 1, &h, &[]),
            nack_digest("c", 1, &h, &[])
        );
        assert_ne!(reset_digest("c", 1, 1, &h), reset_digest("c", 0, 1, &h));
        assert_ne!(
            term_change_digest("c", 1, 1, None),
            term_change_digest("c", 2, 1, None)
        );
        assert_ne!(
            term_change_digest("c", 1, 1, None),
            term_change_digest("c", 1, 1, Some((&h, 0, 0)))
        );
        assert_ne!(
            term_change_digest("c", 1, 1, Some((&h, 0, 1))),
            term_change_digest("c", 1, 1, Some((&h, 1, 0)))
        );
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

    /// The digest of docs/PROTOCOL.md section 8's signature vectors:
    /// `tx_digest(b"kite signature rule")`.
    const VECTOR_DIGEST: &str = "728c035d52224e3e28fd066a8a88e9015d2f4c29cd11c59d4ebc6f499f887a3c";

    /// docs/PROTOCOL.md section 8: (case, key, signature, valid), in the
    /// order of [`Forge::ALL`] (key seed: 32 bytes of 0x01).
    const VECTORS: [(&str, &str, &str, bool); 8] = [
        (
            "honest",
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
            "2e4829107eda2d2d715b554c033f0291fc163a8fcbfc0895454b476099d6714ace4208858d3aff499c5e8d7c2517dd8d630df3da97758f05088cf4594109ed0f",
            true,
        ),
        (
            "mixed-order R",
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
            "3da00e9772a53f668a365974717d6ce54f851571a8f86d9b1995c43de91a3608f7e9b471e8e5d87961532f559502eb6bc613672a50079625012f9b5e9cb7c507",
            true,
        ),
        (
            "mutated R (R + T, old s)",
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
            "bfb7d6ef8125d2d28ea4aab3fcc0fd6e03e9c5703403f76abab4b89f66298eb5ce4208858d3aff499c5e8d7c2517dd8d630df3da97758f05088cf4594109ed0f",
            false,
        ),
        (
            "mixed-order key",
            "63771c228bf60e6a02ad24d2c345a28d3598f640e26bede40c8b77fe4bf090a3",
            "0ecda9762f840fb9c21715983f1b500003c1bfa61b8a35410adc30937822864c9b2964601b3d057e5cfa263f0aa00a569b8c17b885a6d13b71a2cc535108350e",
            false,
        ),
        (
            "small-order key",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "b05ff1688d5ac09975c9a68b8e82931ab07aea8e57079264e66a3bc216e5c9f7286049872f6aba98ca1772c73554e0977275e5986f913c33744d919a272dca0b",
            false,
        ),
        (
            "non-canonical key",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "b05ff1688d5ac09975c9a68b8e82931ab07aea8e57079264e66a3bc216e5c9f7286049872f6aba98ca1772c73554e0977275e5986f913c33744d919a272dca0b",
            false,
        ),
        (
            "non-canonical R",
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7fa7cef0e982351ca04a76f66ea39c9ae899147c8d1b96f79c5b5b79673db5600c",
            true,
        ),
        (
            "s + l (s not below l)",
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
            "2e4829107eda2d2d715b554c033f0291fc163a8fcbfc0895454b476099d6714abb16fee1a79d11a272fb841f0411bca2630df3da97758f05088cf4594109ed1f",
            false,
        ),
    ];

    fn vector(i: usize) -> (PublicKey, Signature, bool) {
        let (_, k, s, valid) = VECTORS[i];
        let key = PublicKey(hex::decode(k).unwrap().try_into().unwrap());
        let sig = Signature(hex::decode(s).unwrap().try_into().unwrap());
        (key, sig, valid)
    }

    #[test]
    fn the_vectors_are_what_the_test_helpers_make() {
        use crate::testing::{Forge, forged_key, forged_sig};
        let k = NodeKey::from_seed([1; 32]);
        let d = tx_digest(b"kite signature rule");
        assert_eq!(hex::encode(d.0), VECTOR_DIGEST);
        for (i, f) in Forge::ALL.into_iter().enumerate() {
            let (key, sig, valid) = vector(i);
            assert_eq!(forged_key(&k, f), key, "{f:?}");
            assert_eq!(forged_sig(&k, f, &d), sig, "{f:?}");
            assert_eq!(f.valid(), valid, "{f:?}");
        }
        // docs/PROTOCOL.md section 8 shows the same vectors.
        let doc = include_str!("../../docs/PROTOCOL.md");
        assert!(doc.contains(VECTOR_DIGEST));
        for (case, key, sig, valid) in VECTORS {
            let verdict = if valid { "yes" } else { "no" };
            let row = format!(
                "| {verdict} | `{key}` | `{}` `{}` |",
                &sig[..64],
                &sig[64..]
            );
            assert!(doc.contains(&row), "{case}: {row}");
        }
    }

    /// Honest signatures by `n` signers over digests of `tag`.
    fn honest(n: usize, tag: u8) -> Vec<(PublicKey, Hash, Signature)> {
        (0..n)
            .map(|i| {
                let k = NodeKey::from_seed([
                    tag, i as u8, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
                    7, 7, 7, 7, 7, 7, 7, 7,
                ]);
                let d = tx_digest(&[tag, i as u8]);
                (k.public(), d, k.sign_digest(&d))
            })
            .collect()
    }

    /// Single verification, the process-wide batch and a fresh cache's
    /// batch on `all`; checks every verdict against `want`.
    fn check_all(all: &[(PublicKey, Hash, Signature)], want: &[bool], what: &str) {
        let items: Vec<SigItem> = all
            .iter()
            .map(|(k, d, s)| SigItem {
                key: k,
                digest: *d,
                sig: s,
            })
            .collect();
        let single: Vec<bool> = items
            .iter()
            .map(|it| verify(it.key, &it.digest, it.sig))
            .collect();
        assert_eq!(single, want, "{what}: single");
        assert_eq!(verify_batch(&items), want, "{what}: batch");
        assert_eq!(
            KeyCache::default().verify_batch(&items),
            want,
            "{what}: fresh cache"
        );
        assert_eq!(verify_all(&items), want.iter().all(|ok| *ok), "{what}: all");
    }

    #[test]
    fn the_vectors_get_their_verdict_single_and_in_every_batch() {
        let d = Hash(hex::decode(VECTOR_DIGEST).unwrap().try_into().unwrap());
        // Random batch coefficients: repeat so a verdict that depends on
        // them shows.
        for round in 0..16u8 {
            for (i, (case, ..)) in VECTORS.iter().enumerate() {
                let (key, sig, valid) = vector(i);
                check_all(&[(key, d, sig)], &[valid], case);
                for at in [0, 31, 63] {
                    let mut all = honest(63, round);
                    all.insert(at, (key, d, sig));
                    let mut want = vec![true; 64];
                    want[at] = valid;
                    check_all(&all, &want, &format!("{case} at {at} of 64"));
                }
            }
            // All the vectors together among honest signatures, in
            // several orders.
            for shift in [0usize, 3, 5] {
                let mut all = honest(20, round.wrapping_add(100));
                let mut want = vec![true; 20];
                for i in 0..VECTORS.len() {
                    let j = (i + shift) % VECTORS.len();
                    let (key, sig, valid) = vector(j);
                    let at = (3 * i + shift) % (all.len() + 1);
                    all.insert(at, (key, d, sig));
                    want.insert(at, valid);
                }
                check_all(&all, &want, &format!("every vector, shift {shift}"));
            }
        }
    }

    #[test]
    fn the_key_rule() {
        use crate::testing::{Forge, forged_key, order_two, pow255_minus};
        for i in 0..32u8 {
            assert!(key_allowed(&NodeKey::from_seed([i; 32]).public().0).is_some());
        }
        let k = NodeKey::from_seed([9; 32]);
        for f in [
            Forge::MixedOrderKey,
            Forge::SmallOrderKey,
            Forge::NonCanonicalKey,
        ] {
            assert!(key_allowed(&forged_key(&k, f).0).is_none(), "{f:?}");
        }
        let a = curve25519_dalek::edwards::CompressedEdwardsY(k.public().0)
            .decompress()
            .unwrap();
        for t in curve25519_dalek::constants::EIGHT_TORSION {
            // Every small-order key, and every mixed-order one of A.
            assert!(key_allowed(&t.compress().to_bytes()).is_none());
            let mixed = (a + t).compress().to_bytes();
            assert_eq!(key_allowed(&mixed).is_some(), mixed == k.public().0);
        }
        assert!(key_allowed(&(a + order_two()).compress().to_bytes()).is_none());
        // Non-canonical encodings (y = p + δ, either sign), and bytes that
        // are no point.
        for delta in 0..19u8 {
            for sign in [0u8, 0x80] {
                let mut e = pow255_minus(19 - delta);
                e[31] |= sign;
                assert!(key_allowed(&e).is_none(), "{}", hex::encode(e));
            }
        }
        assert!(key_allowed(&[0xff; 32]).is_none());
        // A canonical x = 0 point with the sign bit set.
        let mut one = [0u8; 32];
        one[0] = 1;
        one[31] = 0x80;
        assert!(key_allowed(&one).is_none());
    }

    #[test]
    fn a_non_canonical_s_is_refused() {
        use crate::testing::ELL;
        let k = NodeKey::from_seed([3; 32]);
        let d = tx_digest(b"s");
        let good = k.sign_digest(&d);
        assert!(verify(&k.public(), &d, &good));
        // s = ℓ, and the high bit set: both no canonical scalar.
        let mut sig = good;
        sig.0[32..].copy_from_slice(&ELL);
        assert!(!verify(&k.public(), &d, &sig));
        let mut sig = good;
        sig.0[63] |= 0x80;
        assert!(!verify(&k.public(), &d, &sig));
    }

    /// What the vectors show: the key rule refuses keys whose equation
    /// holds, and RFC 8032 strict verification (the old rule) refuses the
    /// mixed-order and non-canonical R that this rule accepts.
    #[test]
    fn the_vectors_against_plain_zip215_and_strict_rfc8032() {
        let d = Hash(hex::decode(VECTOR_DIGEST).unwrap().try_into().unwrap());
        for (i, (case, ..)) in VECTORS.iter().enumerate() {
            let (key, sig, valid) = vector(i);
            let zip215 = ed25519_consensus::VerificationKey::try_from(key.0).is_ok_and(|vk| {
                vk.verify(&ed25519_consensus::Signature::from(sig.0), &d.0)
                    .is_ok()
            });
            let strict = key.verifying_key().is_some_and(|vk| {
                vk.verify_strict(&d.0, &ed25519_dalek::Signature::from_bytes(&sig.0))
                    .is_ok()
            });
            let (want_zip215, want_strict) = match *case {
                "honest" => (true, true),
                "mixed-order R" | "non-canonical R" => (true, false),
                "mixed-order key" | "small-order key" | "non-canonical key" => (true, false),
                _ => (false, false),
            };
            assert_eq!((zip215, strict), (want_zip215, want_strict), "{case}");
            assert_eq!(valid, zip215 && key_allowed(&key.0).is_some(), "{case}");
        }
    }
}
