//! Size-bounded protobuf decoding with typed errors.
//!
//! Every decoder in Kite goes through [`decode`]: the size is checked before
//! a single byte is parsed, and prost's own errors never panic.

use prost::Message;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is larger than allowed for this message.
    #[error("{what} is {size} bytes, the maximum is {max}")]
    TooLarge {
        /// The message kind.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid protobuf encoding of the message.
    #[error("{what} is not a valid encoding: {detail}")]
    Malformed {
        /// The message kind.
        what: &'static str,
        /// prost's description.
        detail: String,
    },
    /// The encoding is valid but a field is wrong (length, missing, range).
    #[error("{what}: {detail}")]
    Invalid {
        /// The message kind.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
}

impl DecodeError {
    /// Shorthand for [`DecodeError::Invalid`].
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            what,
            detail: detail.into(),
        }
    }
}

/// Decodes `bytes` as `M` if it is at most `max` bytes long.
pub fn decode<M: Message + Default>(
    what: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<M, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            what,
            size: bytes.len(),
            max,
        });
    }
    M::decode(bytes).map_err(|e| DecodeError::Malformed {
        what,
        detail: e.to_string(),
    })
}

/// Reads a 32-byte hash field.
pub fn hash_field(what: &'static str, field: &str, b: &[u8]) -> Result<crate::Hash, DecodeError> {
    crate::Hash::from_slice(b).ok_or_else(|| {
        DecodeError::invalid(what, format!("{field} is {} bytes, expected 32", b.len()))
    })
}

/// Reads a 32-byte public key field.
pub fn key_field(
    what: &'static str,
    field: &str,
    b: &[u8],
) -> Result<crate::PublicKey, DecodeError> {
    crate::PublicKey::from_slice(b).ok_or_else(|| {
        DecodeError::invalid(what, format!("{field} is {} bytes, expected 32", b.len()))
    })
}

/// Reads a 64-byte signature field.
pub fn sig_field(
    what: &'static str,
    field: &str,
    b: &[u8],
) -> Result<crate::Signature, DecodeError> {
    crate::Signature::from_slice(b).ok_or_else(|| {
        DecodeError::invalid(what, format!("{field} is {} bytes, expected 64", b.len()))
    })
}
