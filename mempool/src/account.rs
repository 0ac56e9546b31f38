//! What the pool reads from the committed state: the [`AccountSource`]
//! trait the node implements over its store, and the [`AccountError`] a
//! read returns when the state cannot be read (a storage error is not an
//! empty account).

use kite_types::{Account, PublicKey};
use std::collections::HashMap;

/// Committed account state, as the pool needs it. The node implements it
/// over the app's committed state.
pub trait AccountSource: Send + Sync {
    /// The committed balance and nonce of `who` (`Account::default()` for
    /// an unknown account), or why it could not be read. A read error
    /// must be an `Err`, never a default account: the pool would take it
    /// for an empty account and refuse or drop the sender's txs.
    fn account(&self, who: &PublicKey) -> Result<Account, AccountError>;
}

impl AccountSource for HashMap<PublicKey, Account> {
    fn account(&self, who: &PublicKey) -> Result<Account, AccountError> {
        Ok(self.get(who).copied().unwrap_or_default())
    }
}

/// Why an [`AccountSource`] could not read an account (storage error,
/// corrupt record...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("account state unavailable: {reason}")]
pub struct AccountError {
    reason: String,
}

impl AccountError {
    /// An error with this reason (e.g. the store error's message).
    pub fn new(reason: impl Into<String>) -> AccountError {
        AccountError {
            reason: reason.into(),
        }
    }

    /// Why the read failed.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}
