//! 32-byte SHA-256 hashes and their hex text form.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// A SHA-256 digest: block hashes, tx hashes, app hashes, Merkle roots.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

/// A hex string that is not a 32-byte value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: expected {expected} hex characters, got {got:?}")]
pub struct ParseHexError {
    /// What was being parsed ("hash", "public key", ...).
    pub what: &'static str,
    /// Number of hex characters expected.
    pub expected: usize,
    /// The offending input (cut to 80 characters).
    pub got: String,
}

/// Parses exactly `N` bytes of hex (an optional `0x` prefix is accepted).
pub(crate) fn parse_hex_array<const N: usize>(
    s: &str,
    what: &'static str,
) -> Result<[u8; N], ParseHexError> {
    let t = s.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    let mut out = [0u8; N];
    hex::decode_to_slice(t, &mut out).map_err(|_| ParseHexError {
        what,
        expected: N * 2,
        got: s.chars().take(80).collect(),
    })?;
    Ok(out)
}

impl Hash {
    /// The all-zero hash: previous hash of the first block, empty tx root.
    pub const ZERO: Hash = Hash([0u8; 32]);

    /// SHA-256 of `data`.
    pub fn digest(data: &[u8]) -> Hash {
        Hash(Sha256::digest(data).into())
    }

    /// SHA-256 of the concatenation of `parts`.
    pub fn digest_parts(parts: &[&[u8]]) -> Hash {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Hash(h.finalize().into())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Builds a hash from a byte slice that must be exactly 32 bytes long.
    pub fn from_slice(b: &[u8]) -> Option<Hash> {
        <[u8; 32]>::try_from(b).ok().map(Hash)
    }

    /// The first 8 hex characters, for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self)
    }
}

impl FromStr for Hash {
    type Err = ParseHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex_array::<32>(s, "hash").map(Hash)
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_vector() {
        // FIPS 180-2 test vector.
        assert_eq!(
            Hash::digest(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Hash::digest_parts(&[b"a", b"bc"]), Hash::digest(b"abc"));
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let h = Hash::digest(b"x");
        assert_eq!(h.to_string().parse::<Hash>(), Ok(h));
        assert_eq!(format!("0x{h}").parse::<Hash>(), Ok(h));
        assert!("abcd".parse::<Hash>().is_err());
        assert!("zz".repeat(32).parse::<Hash>().is_err());
        let json = serde_json::to_string(&h).unwrap_or_default();
        assert_eq!(json, format!("\"{h}\""));
        let back: Hash = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, h);
        assert!(serde_json::from_str::<Hash>("\"00\"").is_err());
    }
}
