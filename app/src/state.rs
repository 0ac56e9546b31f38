//! The application state as a sorted byte map, and how to read it.
//!
//! Key layout ([`StateKey`]):
//!
//! | what | key | value |
//! |------|-----|-------|
//! | account | `b"a/" \|\| pubkey (32 bytes)` | `be64(balance) \|\| be64(nonce)` (16 bytes) |
//! | kv entry | `b"k/" \|\| owner pubkey (32 bytes) \|\| key` | the value bytes |
//!
//! An account that is absent reads as `Account::default()` (balance 0,
//! nonce 0). A kv key is 1 to [`kite_types::MAX_KEY_LEN`] bytes, so the
//! owner part of a kv key has a fixed length and keys never collide.

use crate::changes::ChangeSet;
use kite_types::{Account, PublicKey};
use std::collections::BTreeMap;
use std::fmt;

/// Prefix of account keys.
pub const ACCOUNT_PREFIX: &[u8] = b"a/";
/// Prefix of key-value keys.
pub const KV_PREFIX: &[u8] = b"k/";
/// Length of an encoded account value.
pub const ACCOUNT_VALUE_LEN: usize = 16;

/// A canonical state key (see the module docs for the layout).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateKey(Vec<u8>);

impl StateKey {
    /// The key of an account.
    pub fn account(pk: &PublicKey) -> StateKey {
        let mut k = Vec::with_capacity(ACCOUNT_PREFIX.len() + 32);
        k.extend_from_slice(ACCOUNT_PREFIX);
        k.extend_from_slice(pk.as_bytes());
        StateKey(k)
    }

    /// The key of `key` in `owner`'s namespace.
    pub fn kv(owner: &PublicKey, key: &[u8]) -> StateKey {
        let mut k = Vec::with_capacity(KV_PREFIX.len() + 32 + key.len());
        k.extend_from_slice(KV_PREFIX);
        k.extend_from_slice(owner.as_bytes());
        k.extend_from_slice(key);
        StateKey(k)
    }

    /// Wraps raw key bytes (as read back from storage).
    pub fn from_bytes(bytes: Vec<u8>) -> StateKey {
        StateKey(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The raw bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The 2-byte prefix is ASCII; the rest is binary.
        match self.0.get(..2).map(|p| (p, &self.0[2..])) {
            Some((p, rest)) if p.is_ascii() => {
                write!(f, "StateKey({}{})", String::from_utf8_lossy(p), hex(rest))
            }
            _ => write!(f, "StateKey({})", hex(&self.0)),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A state read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The storage under the state failed (I/O, closed database).
    #[error("state storage failed: {0}")]
    Storage(String),
    /// A stored value does not have the expected form.
    #[error("state is corrupt at {key:?}: {detail}")]
    Corrupt {
        /// The key.
        key: StateKey,
        /// What is wrong.
        detail: String,
    },
}

/// Read access to a state (committed or staged).
pub trait StateReader {
    /// The value stored under `key`, if any.
    fn get(&self, key: &StateKey) -> Result<Option<Vec<u8>>, StateError>;
}

/// Encodes an account value: `be64(balance) || be64(nonce)`.
pub fn encode_account(a: &Account) -> Vec<u8> {
    let mut v = Vec::with_capacity(ACCOUNT_VALUE_LEN);
    v.extend_from_slice(&a.balance.to_be_bytes());
    v.extend_from_slice(&a.nonce.to_be_bytes());
    v
}

/// Decodes an account value; `None` if it is not 16 bytes.
pub fn decode_account(v: &[u8]) -> Option<Account> {
    let b: [u8; ACCOUNT_VALUE_LEN] = v.try_into().ok()?;
    let mut bal = [0u8; 8];
    let mut non = [0u8; 8];
    bal.copy_from_slice(&b[..8]);
    non.copy_from_slice(&b[8..]);
    Some(Account {
        balance: u64::from_be_bytes(bal),
        nonce: u64::from_be_bytes(non),
    })
}

/// The account of `pk` (default when absent).
pub fn account(state: &dyn StateReader, pk: &PublicKey) -> Result<Account, StateError> {
    let key = StateKey::account(pk);
    match state.get(&key)? {
        None => Ok(Account::default()),
        Some(v) => decode_account(&v).ok_or_else(|| StateError::Corrupt {
            detail: format!(
                "account value is {} bytes, expected {ACCOUNT_VALUE_LEN}",
                v.len()
            ),
            key,
        }),
    }
}

/// The value of `key` in `owner`'s namespace.
pub fn kv_get(
    state: &dyn StateReader,
    owner: &PublicKey,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StateError> {
    state.get(&StateKey::kv(owner, key))
}

/// An in-memory state: tests, tools and the consensus simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemState {
    map: BTreeMap<StateKey, Vec<u8>>,
}

impl MemState {
    /// An empty state.
    pub fn new() -> MemState {
        MemState::default()
    }

    /// Applies committed changes (sets and deletes).
    pub fn apply(&mut self, changes: &ChangeSet) {
        for (k, v) in changes.iter() {
            match v {
                Some(v) => {
                    self.map.insert(k.clone(), v.clone());
                }
                None => {
                    self.map.remove(k);
                }
            }
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the state holds no key.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// All entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&StateKey, &Vec<u8>)> {
        self.map.iter()
    }
}

impl StateReader for MemState {
    fn get(&self, key: &StateKey) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.map.get(key).cloned())
    }
}

/// A staged state: `changes` on top of `base`. Reads see the staged
/// changes first. Nothing reaches `base`: take the changes with
/// [`Overlay::into_changes`] to commit them, or drop the overlay to roll
/// back.
pub struct Overlay<'a> {
    base: &'a dyn StateReader,
    changes: ChangeSet,
}

impl<'a> Overlay<'a> {
    /// An overlay with no change yet.
    pub fn new(base: &'a dyn StateReader) -> Overlay<'a> {
        Overlay {
            base,
            changes: ChangeSet::new(),
        }
    }

    /// An overlay holding `changes` already (e.g. a staged block, to
    /// execute the next one on top of it).
    pub fn with_changes(base: &'a dyn StateReader, changes: ChangeSet) -> Overlay<'a> {
        Overlay { base, changes }
    }

    /// Stages `key = value`.
    pub fn set(&mut self, key: StateKey, value: Vec<u8>) {
        self.changes.set(key, value);
    }

    /// Stages the removal of `key`.
    pub fn delete(&mut self, key: StateKey) {
        self.changes.delete(key);
    }

    /// The staged changes so far.
    pub fn changes(&self) -> &ChangeSet {
        &self.changes
    }

    /// Consumes the overlay, returning its changes.
    pub fn into_changes(self) -> ChangeSet {
        self.changes
    }
}

impl StateReader for Overlay<'_> {
    fn get(&self, key: &StateKey) -> Result<Option<Vec<u8>>, StateError> {
        match self.changes.get(key) {
            Some(staged) => Ok(staged.clone()),
            None => self.base.get(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_accounts() {
        let pk = PublicKey([7; 32]);
        let a = StateKey::account(&pk);
        assert_eq!(&a.as_bytes()[..2], b"a/");
        assert_eq!(a.as_bytes().len(), 34);
        let k = StateKey::kv(&pk, b"x");
        assert_eq!(k.as_bytes().len(), 35);
        assert!(format!("{k:?}").starts_with("StateKey(k/0707"));
        let acc = Account {
            balance: 5,
            nonce: 9,
        };
        let v = encode_account(&acc);
        assert_eq!(v.len(), 16);
        assert_eq!(decode_account(&v), Some(acc));
        assert_eq!(decode_account(&v[1..]), None);
    }

    #[test]
    fn overlay_reads_staged_first_and_corrupt_account_is_an_error() {
        let pk = PublicKey([1; 32]);
        let mut base = MemState::new();
        let mut cs = ChangeSet::new();
        cs.set(StateKey::kv(&pk, b"a"), b"1".to_vec());
        cs.set(StateKey::account(&pk), vec![1, 2, 3]);
        base.apply(&cs);
        assert!(matches!(
            account(&base, &pk),
            Err(StateError::Corrupt { .. })
        ));
        let mut o = Overlay::new(&base);
        o.delete(StateKey::kv(&pk, b"a"));
        o.set(
            StateKey::account(&pk),
            encode_account(&Account {
                balance: 3,
                nonce: 1,
            }),
        );
        assert_eq!(kv_get(&o, &pk, b"a").unwrap(), None);
        assert_eq!(kv_get(&base, &pk, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(account(&o, &pk).unwrap().balance, 3);
        let changes = o.into_changes();
        assert_eq!(changes.len(), 2);
        base.apply(&changes);
        assert_eq!(kv_get(&base, &pk, b"a").unwrap(), None);
        assert_eq!(base.len(), 1);
    }
}
