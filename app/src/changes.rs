//! [`ChangeSet`]: the state changes of a block, sorted by key, with a
//! canonical encoding and digest.
//!
//! Canonical encoding (all integers big-endian):
//!
//! ```text
//! be64(number of entries)
//! for each entry in ascending byte order of its key:
//!     be32(key length) || key
//!     0x00                              (delete)
//!   | 0x01 || be32(value length) || value   (set)
//! ```
//!
//! `digest() = sha256(encoding)`. The encoding is prefix-free (every field
//! is length-prefixed or fixed-size), so two different change sets never
//! share a digest unless sha256 collides. Map order never matters: the
//! entries are kept in a `BTreeMap`.

use crate::state::StateKey;
use kite_types::Hash;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Sorted state changes: `Some(value)` sets a key, `None` deletes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    map: BTreeMap<StateKey, Option<Vec<u8>>>,
}

impl ChangeSet {
    /// An empty change set.
    pub fn new() -> ChangeSet {
        ChangeSet::default()
    }

    /// Records `key = value` (replaces an earlier change of `key`).
    pub fn set(&mut self, key: StateKey, value: Vec<u8>) {
        self.map.insert(key, Some(value));
    }

    /// Records the removal of `key` (replaces an earlier change of `key`).
    pub fn delete(&mut self, key: StateKey) {
        self.map.insert(key, None);
    }

    /// The change recorded for `key`: `None` if untouched, `Some(None)` if
    /// deleted, `Some(Some(v))` if set.
    pub fn get(&self, key: &StateKey) -> Option<&Option<Vec<u8>>> {
        self.map.get(key)
    }

    /// Number of changed keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The changes in ascending key order.
    pub fn iter(&self) -> impl Iterator<Item = (&StateKey, &Option<Vec<u8>>)> {
        self.map.iter()
    }

    /// Adds `later` on top of `self` (a later change of a key wins).
    pub fn extend(&mut self, later: ChangeSet) {
        self.map.extend(later.map);
    }

    /// The canonical encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut |b: &[u8]| out.extend_from_slice(b));
        out
    }

    /// sha256 of the canonical encoding, computed without building it.
    pub fn digest(&self) -> Hash {
        let mut h = Sha256::new();
        self.write_to(&mut |b: &[u8]| h.update(b));
        Hash(h.finalize().into())
    }

    fn write_to(&self, out: &mut dyn FnMut(&[u8])) {
        out(&(self.map.len() as u64).to_be_bytes());
        for (k, v) in &self.map {
            out(&len32(k.as_bytes().len()));
            out(k.as_bytes());
            match v {
                None => out(&[0]),
                Some(v) => {
                    out(&[1]);
                    out(&len32(v.len()));
                    out(v);
                }
            }
        }
    }
}

/// A length as be32. Keys and values are far below 4 GiB (a block is at
/// most 64 MiB); a longer one is clamped, which still changes the digest.
fn len32(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kite_types::PublicKey;

    #[test]
    fn encoding_is_documented_and_order_free() {
        let pk = PublicKey([2; 32]);
        let mut a = ChangeSet::new();
        a.set(StateKey::kv(&pk, b"b"), b"v".to_vec());
        a.delete(StateKey::kv(&pk, b"a"));
        let mut b = ChangeSet::new();
        b.delete(StateKey::kv(&pk, b"a"));
        b.set(StateKey::kv(&pk, b"b"), b"v".to_vec());
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest(), Hash::digest(&a.encode()));

        let enc = a.encode();
        let mut want = 2u64.to_be_bytes().to_vec();
        // "k/" + pk + "a" deleted first (sorted), then the set of "b".
        want.extend_from_slice(&35u32.to_be_bytes());
        want.extend_from_slice(StateKey::kv(&pk, b"a").as_bytes());
        want.push(0);
        want.extend_from_slice(&35u32.to_be_bytes());
        want.extend_from_slice(StateKey::kv(&pk, b"b").as_bytes());
        want.push(1);
        want.extend_from_slice(&1u32.to_be_bytes());
        want.push(b'v');
        assert_eq!(enc, want);

        // Set vs delete, and an empty value vs a delete, differ.
        let mut c = ChangeSet::new();
        c.set(StateKey::kv(&pk, b"a"), Vec::new());
        c.set(StateKey::kv(&pk, b"b"), b"v".to_vec());
        assert_ne!(c.digest(), a.digest());
        assert_ne!(ChangeSet::new().digest(), c.digest());
    }

    #[test]
    fn later_change_wins() {
        let k = StateKey::from_bytes(b"x".to_vec());
        let mut a = ChangeSet::new();
        a.set(k.clone(), b"1".to_vec());
        let mut b = ChangeSet::new();
        b.delete(k.clone());
        a.extend(b);
        assert_eq!(a.get(&k), Some(&None));
        assert_eq!(a.len(), 1);
    }
}
