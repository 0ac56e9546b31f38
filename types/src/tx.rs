//! Transactions: the signed [`Tx`] and its decoded [`TxBody`].
//!
//! A tx on the wire is `Transaction { body, signature }` where `body` is the
//! exact encoding of a `TxBody`. The body bytes are kept as received: the
//! signature covers `sha256("kite/tx" || body)` and nothing is re-encoded
//! before verification. Decoding insists on the canonical encoding of the
//! body (what prost itself would write), so one tx has exactly one hash.

use crate::codec::{self, DecodeError};
use crate::sign::{self, SigItem};
use crate::{Hash, NodeKey, PublicKey, Signature, proto};
use prost::Message;

/// Longest key of a Put or Delete, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Longest value of a Put, in bytes.
pub const MAX_VALUE_LEN: usize = 16 * 1024;

/// What a tx does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Move `amount` from the sender to `to`.
    Transfer {
        /// Receiver.
        to: PublicKey,
        /// Amount moved.
        amount: u64,
    },
    /// Set `key` to `value` in the sender's namespace.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key` from the sender's namespace.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// The signed content of a tx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxBody {
    /// The chain this tx is for.
    pub chain_id: String,
    /// The account that signs and pays.
    pub sender: PublicKey,
    /// Must be the sender's account nonce + 1.
    pub nonce: u64,
    /// What the tx does.
    pub payload: Payload,
}

impl TxBody {
    /// The wire form.
    pub fn to_proto(&self) -> proto::TxBody {
        use proto::tx_body::Payload as P;
        let payload = match &self.payload {
            Payload::Transfer { to, amount } => P::Transfer(proto::Transfer {
                to: to.0.to_vec(),
                amount: *amount,
            }),
            Payload::Put { key, value } => P::Put(proto::Put {
                key: key.clone(),
                value: value.clone(),
            }),
            Payload::Delete { key } => P::Delete(proto::Delete { key: key.clone() }),
        };
        proto::TxBody {
            chain_id: self.chain_id.clone(),
            sender: self.sender.0.to_vec(),
            nonce: self.nonce,
            payload: Some(payload),
        }
    }

    /// Validates the wire form.
    pub fn from_proto(p: proto::TxBody) -> Result<TxBody, DecodeError> {
        use proto::tx_body::Payload as P;
        const W: &str = "tx body";
        let sender = codec::key_field(W, "sender", &p.sender)?;
        let payload = match p.payload {
            Some(P::Transfer(t)) => Payload::Transfer {
                to: codec::key_field(W, "transfer.to", &t.to)?,
                amount: t.amount,
            },
            Some(P::Put(x)) => Payload::Put {
                key: x.key,
                value: x.value,
            },
            Some(P::Delete(x)) => Payload::Delete { key: x.key },
            None => return Err(DecodeError::invalid(W, "no payload")),
        };
        if p.chain_id.len() > crate::MAX_CHAIN_ID_LEN {
            return Err(DecodeError::invalid(W, "chain id too long"));
        }
        Ok(TxBody {
            chain_id: p.chain_id,
            sender,
            nonce: p.nonce,
            payload,
        })
    }
}

/// A decoded, structurally valid transaction. The signature is *not*
/// checked by decoding: call [`Tx::verify_signature`] or batch-verify
/// [`Tx::sig_item`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tx {
    body: TxBody,
    body_bytes: Vec<u8>,
    signature: Signature,
    hash: Hash,
    size: usize,
}

impl Tx {
    /// Builds and signs a tx.
    pub fn sign(key: &NodeKey, chain_id: &str, nonce: u64, payload: Payload) -> Tx {
        let body = TxBody {
            chain_id: chain_id.to_owned(),
            sender: key.public(),
            nonce,
            payload,
        };
        let body_bytes = body.to_proto().encode_to_vec();
        let signature = key.sign_digest(&sign::tx_digest(&body_bytes));
        Self::assemble(body, body_bytes, signature)
    }

    fn assemble(body: TxBody, body_bytes: Vec<u8>, signature: Signature) -> Tx {
        let wire = proto::Transaction {
            body: body_bytes.clone(),
            signature: signature.0.to_vec(),
        };
        let encoded = wire.encode_to_vec();
        Tx {
            body,
            body_bytes,
            signature,
            hash: Hash::digest(&encoded),
            size: encoded.len(),
        }
    }

    /// Decodes an encoded `Transaction` of at most `max` bytes.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Tx, DecodeError> {
        let p: proto::Transaction = codec::decode("transaction", bytes, max)?;
        Self::from_proto(p)
    }

    /// Validates the wire form.
    pub fn from_proto(p: proto::Transaction) -> Result<Tx, DecodeError> {
        const W: &str = "transaction";
        let signature = codec::sig_field(W, "signature", &p.signature)?;
        let body_proto =
            proto::TxBody::decode(p.body.as_slice()).map_err(|e| DecodeError::Malformed {
                what: "tx body",
                detail: e.to_string(),
            })?;
        if body_proto.encoded_len() != p.body.len() || body_proto.encode_to_vec() != p.body {
            return Err(DecodeError::invalid(W, "body is not canonically encoded"));
        }
        let body = TxBody::from_proto(body_proto)?;
        Ok(Self::assemble(body, p.body, signature))
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::Transaction {
        proto::Transaction {
            body: self.body_bytes.clone(),
            signature: self.signature.0.to_vec(),
        }
    }

    /// The encoded `Transaction`.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// sha256 of the encoded `Transaction`.
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// Size of the encoded `Transaction` in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The decoded body.
    pub fn body(&self) -> &TxBody {
        &self.body
    }

    /// The sender.
    pub fn sender(&self) -> PublicKey {
        self.body.sender
    }

    /// The nonce.
    pub fn nonce(&self) -> u64 {
        self.body.nonce
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The signature check of this tx, for batch verification.
    pub fn sig_item(&self) -> SigItem<'_> {
        SigItem {
            key: &self.body.sender,
            digest: sign::tx_digest(&self.body_bytes),
            sig: &self.signature,
        }
    }

    /// Checks the sender's signature.
    pub fn verify_signature(&self) -> bool {
        let it = self.sig_item();
        sign::verify(it.key, &it.digest, it.sig)
    }

    /// Checks the signatures of many txs at once (batch verification);
    /// one verdict per tx.
    pub fn verify_batch(txs: &[&Tx]) -> Vec<bool> {
        let items: Vec<SigItem<'_>> = txs.iter().map(|t| t.sig_item()).collect();
        sign::verify_batch(&items)
    }

    /// [`Tx::verify_batch`] with the senders' decoded keys kept in `cache`.
    pub fn verify_batch_cached(txs: &[&Tx], cache: &sign::KeyCache) -> Vec<bool> {
        let items: Vec<SigItem<'_>> = txs.iter().map(|t| t.sig_item()).collect();
        cache.verify_batch(&items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> NodeKey {
        NodeKey::from_seed([3; 32])
    }

    #[test]
    fn sign_encode_decode() {
        let tx = Tx::sign(
            &key(),
            "kite-test",
            1,
            Payload::Transfer {
                to: PublicKey([9; 32]),
                amount: 5,
            },
        );
        assert!(tx.verify_signature());
        let bytes = tx.encode();
        assert_eq!(bytes.len(), tx.size());
        assert_eq!(Hash::digest(&bytes), tx.hash());
        let back = Tx::decode(&bytes, 1024).unwrap();
        assert_eq!(back, tx);
        assert!(matches!(
            Tx::decode(&bytes, 10),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let tx = Tx::sign(
            &key(),
            "kite-test",
            1,
            Payload::Delete { key: b"k".to_vec() },
        );
        // Same body, other chain: a different body, so the signature fails.
        let mut body = tx.body().to_proto();
        body.chain_id = "other".into();
        let forged = proto::Transaction {
            body: body.encode_to_vec(),
            signature: tx.signature().0.to_vec(),
        };
        let forged = Tx::from_proto(forged).unwrap();
        assert!(!forged.verify_signature());
        // A signature by another key.
        let other = NodeKey::from_seed([4; 32]);
        let mut p = tx.to_proto();
        p.signature = other.sign_digest(&sign::tx_digest(&p.body)).0.to_vec();
        assert!(!Tx::from_proto(p).unwrap().verify_signature());
    }

    #[test]
    fn non_canonical_body_is_refused() {
        let tx = Tx::sign(&key(), "c", 1, Payload::Delete { key: b"k".to_vec() });
        let mut p = tx.to_proto();
        // Append an explicit default field (nonce = 0 encoded again is a
        // different field order; use an unknown field instead).
        p.body.extend_from_slice(&[0x78, 0x01]); // field 15, varint 1
        assert!(matches!(
            Tx::from_proto(p),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn structural_errors() {
        let tx = Tx::sign(&key(), "c", 1, Payload::Delete { key: b"k".to_vec() });
        let mut p = tx.to_proto();
        p.signature.pop();
        assert!(Tx::from_proto(p).is_err());
        let mut body = tx.body().to_proto();
        body.payload = None;
        let p = proto::Transaction {
            body: body.encode_to_vec(),
            signature: vec![0; 64],
        };
        assert!(Tx::from_proto(p).is_err());
        let mut body = tx.body().to_proto();
        body.sender = vec![1; 31];
        let p = proto::Transaction {
            body: body.encode_to_vec(),
            signature: vec![0; 64],
        };
        assert!(Tx::from_proto(p).is_err());
    }

    #[test]
    fn batch_of_txs() {
        let txs: Vec<Tx> = (1..=10)
            .map(|n| Tx::sign(&key(), "c", n, Payload::Delete { key: vec![n as u8] }))
            .collect();
        let refs: Vec<&Tx> = txs.iter().collect();
        assert!(Tx::verify_batch(&refs).iter().all(|&b| b));
    }
}
