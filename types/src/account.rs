//! An account's committed state: balance and nonce.

use serde::{Deserialize, Serialize};

/// Balance and nonce of an account. An account that never received funds
/// nor sent a tx is `Account::default()` (zero balance, nonce 0); its first
/// tx carries nonce 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Account {
    /// Spendable balance.
    pub balance: u64,
    /// Nonce of the last committed tx of this account (0: none yet).
    pub nonce: u64,
}
