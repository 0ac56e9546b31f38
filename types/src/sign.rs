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
//! | vote  | `sha256("kite/vote" \|\| u8 len(chain_id) \|\| chain_id \|\| be64(height) \|\| block_hash \|\| u8 ack \|\| app_hash)`, app hash all zero on NACK |
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
pub fn verify_batch(items: &[SigItem<'_>]) -> Vec<bool> {
    if items.is_empty() {
        return Vec::new();
    }
    if items.len() == 1 {
        return vec![verify(items[0].key, &items[0].digest, items[0].sig)];
    }
    let mut keys = Vec::with_capacity(items.len());
    for it in items {
        match it.key.verifying_key() {
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
        // The batch equation holds; confirm the strict per-item rules that
        // the batch equation does not check (non-canonical or small-order R)
        // cheaply: both are properties of the encoding, checked by dalek's
        // strict verification only. We re-run strict verification only for
        // signatures whose R is of small order, which honest signers never
        // produce.
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

/// Whether the R part of a signature is one of the eight small-order points
/// (in any encoding). Honest signatures never have such an R.
fn r_is_small_order(sig: &Signature) -> bool {
    let mut r = [0u8; 32];
    r.copy_from_slice(&sig.0[..32]);
    match ed25519_dalek::VerifyingKey::from_bytes(&r) {
        Ok(p) => p.is_weak(),
        Err(_) => true,
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
}
