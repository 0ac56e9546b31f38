//! Why a tx was refused: one typed error per reason, with a message the RPC
//! returns as is and a stable short [`MempoolError::code`].

use crate::config::MIB;

/// Why the mempool refused a tx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    /// The bytes are not a valid transaction.
    #[error("invalid transaction encoding: {0}")]
    Decode(String),
    /// The encoded tx is larger than allowed.
    #[error("transaction is {size} bytes, the maximum is {max}")]
    TooLarge {
        /// Its encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The tx was signed for another chain.
    #[error("wrong chain: this node runs {expected:?}, the tx is for {got:?}")]
    WrongChain {
        /// This node's chain id.
        expected: String,
        /// The tx's chain id.
        got: String,
    },
    /// The signature does not verify against the sender's key.
    #[error("bad signature: the tx is not signed by its sender")]
    BadSignature,
    /// The nonce is already committed.
    #[error("nonce too low: have {have}, account at {account}")]
    NonceTooLow {
        /// The tx's nonce.
        have: u64,
        /// The sender's last committed nonce.
        account: u64,
    },
    /// Another tx of this sender with this nonce is already in the pool.
    #[error("nonce {nonce} is already used by another tx of this sender in the mempool")]
    NonceInUse {
        /// The tx's nonce.
        nonce: u64,
    },
    /// The nonce leaves a gap that the pool does not queue (queueing
    /// disabled, or the nonce is too far ahead).
    #[error("nonce gap: have {have}, expected {expected}")]
    NonceGap {
        /// The tx's nonce.
        have: u64,
        /// The next nonce the sender must use.
        expected: u64,
    },
    /// The sender already has the most queued (gapped) txs allowed.
    #[error("too many queued txs for this sender (max {max}): send the missing nonces first")]
    QueueFull {
        /// The limit.
        max: usize,
    },
    /// This exact tx is already in the pool.
    #[error("transaction already known")]
    AlreadyKnown,
    /// The sender's pending transfers would exceed its balance.
    #[error("insufficient funds: pending transfers need {need}, balance is {balance}")]
    InsufficientFunds {
        /// Sum of the sender's pending transfer amounts with this tx.
        need: u64,
        /// The sender's committed balance.
        balance: u64,
    },
    /// The sender already has the most pending txs allowed.
    #[error("too many pending txs for this sender (max {max}): wait for some to commit")]
    SenderFull {
        /// The limit.
        max: usize,
    },
    /// The pool is at its count or byte limit.
    #[error("mempool full: {max_txs} txs / {}", fmt_bytes(*max_bytes))]
    Full {
        /// The count limit.
        max_txs: usize,
        /// The byte limit.
        max_bytes: usize,
    },
    /// A Put or Delete with an empty key.
    #[error("empty key")]
    EmptyKey,
    /// A key longer than [`kite_types::MAX_KEY_LEN`].
    #[error("key is {len} bytes, the maximum is {max}")]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value longer than [`kite_types::MAX_VALUE_LEN`].
    #[error("value is {len} bytes, the maximum is {max}")]
    ValueTooLong {
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The sender's committed account could not be read (a storage
    /// error): the tx is refused without judging its nonce or funds, and
    /// may be sent again.
    #[error("account state unavailable: {0}")]
    StateUnavailable(String),
}

fn fmt_bytes(n: usize) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} bytes")
    }
}

impl MempoolError {
    /// A stable short code for this error (the RPC's `data.code`).
    pub fn code(&self) -> &'static str {
        match self {
            MempoolError::Decode(_) => "decode",
            MempoolError::TooLarge { .. } => "too_large",
            MempoolError::WrongChain { .. } => "wrong_chain",
            MempoolError::BadSignature => "bad_signature",
            MempoolError::NonceTooLow { .. } => "nonce_too_low",
            MempoolError::NonceInUse { .. } => "nonce_in_use",
            MempoolError::NonceGap { .. } => "nonce_gap",
            MempoolError::QueueFull { .. } => "queue_full",
            MempoolError::AlreadyKnown => "already_known",
            MempoolError::InsufficientFunds { .. } => "insufficient_funds",
            MempoolError::SenderFull { .. } => "sender_full",
            MempoolError::Full { .. } => "mempool_full",
            MempoolError::EmptyKey => "empty_key",
            MempoolError::KeyTooLong { .. } => "key_too_long",
            MempoolError::ValueTooLong { .. } => "value_too_long",
            MempoolError::StateUnavailable(_) => "state_unavailable",
        }
    }

    /// Whether the same tx may be accepted later without change (the pool
    /// or the sender's slot was full, a nonce gap may fill): a hint for
    /// the RPC and for gossip peer scoring.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MempoolError::NonceGap { .. }
                | MempoolError::QueueFull { .. }
                | MempoolError::InsufficientFunds { .. }
                | MempoolError::SenderFull { .. }
                | MempoolError::Full { .. }
                | MempoolError::StateUnavailable(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_codes() {
        let e = MempoolError::NonceTooLow {
            have: 7,
            account: 9,
        };
        assert_eq!(e.to_string(), "nonce too low: have 7, account at 9");
        assert_eq!(e.code(), "nonce_too_low");
        let e = MempoolError::Full {
            max_txs: 50_000,
            max_bytes: 200 * MIB,
        };
        assert_eq!(e.to_string(), "mempool full: 50000 txs / 200 MiB");
        let e = MempoolError::Full {
            max_txs: 3,
            max_bytes: 1000,
        };
        assert_eq!(e.to_string(), "mempool full: 3 txs / 1000 bytes");
        assert!(e.is_transient());
        assert!(!MempoolError::BadSignature.is_transient());
        let e = MempoolError::StateUnavailable("store read failed".into());
        assert_eq!(
            e.to_string(),
            "account state unavailable: store read failed"
        );
        assert_eq!(e.code(), "state_unavailable");
        assert!(e.is_transient());
    }
}
