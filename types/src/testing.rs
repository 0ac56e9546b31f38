//! Test helpers: signatures and txs that the verification rule of
//! [`crate::sign`] must judge the same way on every path (single, batch,
//! any batch composition). Built with the signer's secret scalar, as only
//! a key's owner (or, for a mutation, anyone) could build them.
//!
//! Compiled for this crate's tests and, for other crates' tests and
//! benches, with the `test-vectors` feature. Not for production code.

use crate::{Hash, NodeKey, Payload, PublicKey, Signature, Tx, TxBody, proto, sign};
use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use ed25519_dalek::hazmat::ExpandedSecretKey;
use prost::Message;
use sha2::{Digest, Sha512};

/// The kinds of signature the rule is tested on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    /// A plain RFC 8032 signature by the key's owner. Valid.
    Honest,
    /// The owner signs with `R = [r]B + T`, `T` of order 2, computing `s`
    /// for that `R`. Valid under the rule (ZIP-215); strict RFC 8032
    /// refuses it.
    MixedOrderR,
    /// An honest signature whose `R` someone changed to `R + T`, keeping
    /// `s`. Invalid.
    MutatedR,
    /// The signer key is `A + T` (mixed order); the owner of `A` signs
    /// for it. Refused by the key rule (the cofactored equation holds).
    MixedOrderKey,
    /// The signer key is the identity, a small-order point; the equation
    /// holds for any message. Refused by the key rule.
    SmallOrderKey,
    /// The signer key is the non-canonical encoding `y = p` (sign bit 0)
    /// of the order-4 point `(√-1, 0)`; the equation holds. Refused by the
    /// key rule.
    NonCanonicalKey,
    /// The owner signs with `R` = the identity encoded non-canonically
    /// (`y = p + 1`) and `s = k·a`. Valid under the rule (ZIP-215 accepts
    /// non-canonical `R`); strict RFC 8032 refuses it.
    NonCanonicalR,
    /// An honest signature with `s + ℓ` in place of `s` (not below ℓ).
    /// Invalid.
    HighS,
}

impl Forge {
    /// Every kind.
    pub const ALL: [Forge; 8] = [
        Forge::Honest,
        Forge::MixedOrderR,
        Forge::MutatedR,
        Forge::MixedOrderKey,
        Forge::SmallOrderKey,
        Forge::NonCanonicalKey,
        Forge::NonCanonicalR,
        Forge::HighS,
    ];

    /// The verdict of the rule on this kind.
    pub fn valid(self) -> bool {
        matches!(
            self,
            Forge::Honest | Forge::MixedOrderR | Forge::NonCanonicalR
        )
    }
}

/// The group order ℓ, little-endian.
pub const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// The point of order 2, `(0, -1)`.
pub fn order_two() -> EdwardsPoint {
    let mut found = EIGHT_TORSION[4];
    for p in EIGHT_TORSION {
        if !p.is_identity() && (p + p).is_identity() {
            found = p;
        }
    }
    found
}

/// The signer key a forged signature of `kind` by `key` is made under.
pub fn forged_key(key: &NodeKey, kind: Forge) -> PublicKey {
    match kind {
        Forge::MixedOrderKey => {
            let a = ExpandedSecretKey::from(&key.seed()).scalar;
            PublicKey(
                (ED25519_BASEPOINT_POINT * a + order_two())
                    .compress()
                    .to_bytes(),
            )
        }
        Forge::SmallOrderKey => {
            let mut b = [0u8; 32];
            b[0] = 1;
            PublicKey(b)
        }
        Forge::NonCanonicalKey => PublicKey(pow255_minus(19)),
        _ => key.public(),
    }
}

/// A signature of `kind` by `key` over `digest`, under
/// [`forged_key`]`(key, kind)`.
pub fn forged_sig(key: &NodeKey, kind: Forge, digest: &Hash) -> Signature {
    let signer = forged_key(key, kind);
    let esk = ExpandedSecretKey::from(&key.seed());
    let a = esk.scalar;
    match kind {
        Forge::Honest => key.sign_digest(digest),
        Forge::MixedOrderR => {
            let r = nonce(&esk, digest, 0);
            let big_r = (ED25519_BASEPOINT_POINT * r + order_two()).compress();
            let k = challenge(big_r.as_bytes(), &signer.0, digest);
            join(big_r.as_bytes(), &(r + k * a))
        }
        Forge::MutatedR => {
            let mut sig = key.sign_digest(digest);
            let mut r = [0u8; 32];
            r.copy_from_slice(&sig.0[..32]);
            if let Some(p) = CompressedEdwardsY(r).decompress() {
                sig.0[..32].copy_from_slice((p + order_two()).compress().as_bytes());
            }
            sig
        }
        Forge::MixedOrderKey => {
            // A `k` that is odd, so that strict (cofactorless) single
            // verification refuses it: R + [k](A + T) = R + [k]A + T.
            let mut i = 0u8;
            loop {
                let r = nonce(&esk, digest, i);
                let big_r = (ED25519_BASEPOINT_POINT * r).compress();
                let k = challenge(big_r.as_bytes(), &signer.0, digest);
                if k.as_bytes()[0] & 1 == 1 || i == u8::MAX {
                    return join(big_r.as_bytes(), &(r + k * a));
                }
                i += 1;
            }
        }
        Forge::SmallOrderKey | Forge::NonCanonicalKey => {
            // [8][s]B = [8]R + [8][k]A holds for R = [s]B, A of small order.
            let r = nonce(&esk, digest, 0);
            join((ED25519_BASEPOINT_POINT * r).compress().as_bytes(), &r)
        }
        Forge::NonCanonicalR => {
            let big_r = pow255_minus(18);
            let k = challenge(&big_r, &signer.0, digest);
            join(&big_r, &(k * a))
        }
        Forge::HighS => {
            let mut sig = key.sign_digest(digest);
            let mut carry = 0u16;
            for (b, l) in sig.0[32..].iter_mut().zip(ELL) {
                let v = u16::from(*b) + u16::from(l) + carry;
                *b = (v & 0xff) as u8;
                carry = v >> 8;
            }
            sig
        }
    }
}

/// Test signer number `i`: a key of its own for each `i`.
pub fn signer(i: u32) -> NodeKey {
    let mut seed = [0x33u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    NodeKey::from_seed(seed)
}

/// A put of signer `i` (nonce 1) on `chain_id`, signed as `kind` says
/// (see [`forged_tx`]).
pub fn put_by(i: u32, kind: Forge, chain_id: &str) -> Tx {
    let payload = Payload::Put {
        key: b"k".to_vec(),
        value: i.to_le_bytes().to_vec(),
    };
    forged_tx(&signer(i), kind, chain_id, 1, payload)
}

/// A tx signed as `kind` says: sender [`forged_key`]`(key, kind)`, the
/// signature [`forged_sig`] over its digest.
pub fn forged_tx(key: &NodeKey, kind: Forge, chain_id: &str, nonce: u64, payload: Payload) -> Tx {
    let body = TxBody {
        chain_id: chain_id.to_owned(),
        sender: forged_key(key, kind),
        nonce,
        payload,
    };
    let body_bytes = body.to_proto().encode_to_vec();
    let sig = forged_sig(key, kind, &sign::tx_digest(&body_bytes));
    let wire = proto::Transaction {
        body: body_bytes,
        signature: sig.0.to_vec(),
    };
    match Tx::from_proto(wire) {
        Ok(tx) => tx,
        // The body was encoded by prost and the signature is 64 bytes.
        Err(e) => unreachable_tx(e),
    }
}

#[allow(clippy::panic)]
fn unreachable_tx(e: crate::DecodeError) -> Tx {
    panic!("a forged tx does not decode: {e}")
}

/// `SHA-512(R ‖ A ‖ digest) mod ℓ`.
fn challenge(r: &[u8; 32], a: &[u8; 32], digest: &Hash) -> Scalar {
    let h: [u8; 64] = Sha512::new()
        .chain_update(r)
        .chain_update(a)
        .chain_update(digest.as_bytes())
        .finalize()
        .into();
    Scalar::from_bytes_mod_order_wide(&h)
}

/// A deterministic secret nonce for the forged signatures.
fn nonce(esk: &ExpandedSecretKey, digest: &Hash, i: u8) -> Scalar {
    let h: [u8; 64] = Sha512::new()
        .chain_update(esk.hash_prefix)
        .chain_update(b"kite/testing")
        .chain_update([i])
        .chain_update(digest.as_bytes())
        .finalize()
        .into();
    Scalar::from_bytes_mod_order_wide(&h)
}

fn join(r: &[u8; 32], s: &Scalar) -> Signature {
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(r);
    sig[32..].copy_from_slice(s.as_bytes());
    Signature(sig)
}

/// Little-endian bytes of 2^255 - `k` (0 < `k` < 256); p = 2^255 - 19.
pub fn pow255_minus(k: u8) -> [u8; 32] {
    let mut b = [0xffu8; 32];
    b[31] = 0x7f;
    b[0] = 0u8.wrapping_sub(k);
    b
}
