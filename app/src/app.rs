//! [`App`]: tx rules and block execution.
//!
//! Rules of a tx (checked in this order; the first broken one is the
//! error):
//!
//! 1. its chain id is this chain's ([`TxError::WrongChain`]);
//! 2. its encoded size is at most the genesis `max_tx_bytes`
//!    ([`TxError::TooLarge`]);
//! 3. a Put or Delete key is 1 to [`MAX_KEY_LEN`] (256) bytes
//!    ([`TxError::EmptyKey`], [`TxError::KeyTooLong`]) and a Put value is
//!    at most [`MAX_VALUE_LEN`] (16 KiB) bytes ([`TxError::ValueTooLong`]);
//!    an empty value is allowed;
//! 4. its signature verifies ([`TxError::BadSignature`]);
//! 5. (against the state) its nonce is exactly the sender's nonce + 1
//!    ([`TxError::BadNonce`]);
//! 6. (against the state) a Transfer's amount is at most the sender's
//!    balance ([`TxError::InsufficientFunds`]) and the receiver's balance
//!    does not overflow ([`TxError::BalanceOverflow`]).
//!
//! Rules 1-4 are stateless ([`App::check_tx`]). There are no fees: a Put
//! or Delete costs nothing but a nonce. A valid tx increments the sender's
//! nonce; a Transfer moves `amount` (a transfer to oneself only bumps the
//! nonce); a Put sets `key` in the sender's namespace; a Delete removes it
//! (deleting a missing key is valid and records a delete).
//!
//! A block is valid when its chain id is ours, its `prev_app_hash` is the
//! app hash it is executed on, and every tx is valid in order, each on the
//! state left by the txs before it. One invalid tx makes the whole block
//! invalid ([`BlockError::Tx`] says which and why): a validator NACKs it.

use crate::changes::ChangeSet;
use crate::state::{Overlay, StateError, StateKey, StateReader, account, encode_account};
use kite_types::{Account, Block, Genesis, Hash, MAX_KEY_LEN, MAX_VALUE_LEN, Payload, Tx};

/// Why a tx is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The tx was signed for another chain.
    #[error("wrong chain: the tx is for {got:?}, this chain is {expected:?}")]
    WrongChain {
        /// This chain.
        expected: String,
        /// The tx's chain id.
        got: String,
    },
    /// The signature does not verify for the sender.
    #[error("bad signature: the tx is not signed by its sender")]
    BadSignature,
    /// The nonce is not the account's nonce + 1.
    #[error("bad nonce: have {got}, account expects {expected}")]
    BadNonce {
        /// The nonce the account expects (its nonce + 1).
        expected: u64,
        /// The tx's nonce.
        got: u64,
    },
    /// The sender cannot pay the amount.
    #[error("insufficient funds: the tx moves {need}, the account holds {balance}")]
    InsufficientFunds {
        /// The amount to pay.
        need: u64,
        /// The sender's balance.
        balance: u64,
    },
    /// A Put or Delete key is too long.
    #[error("key is {len} bytes, the maximum is {max}")]
    KeyTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A Put value is too long.
    #[error("value is {len} bytes, the maximum is {max}")]
    ValueTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A Put or Delete key is empty.
    #[error("key is empty")]
    EmptyKey,
    /// The encoded tx is larger than the genesis `max_tx_bytes`.
    #[error("tx is {size} bytes, the maximum is {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The receiver's balance would overflow u64.
    #[error("the receiver's balance would overflow")]
    BalanceOverflow,
}

/// Why a block is invalid (or could not be executed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// A tx of the block is invalid.
    #[error("tx {index} ({hash}) is invalid: {error}")]
    Tx {
        /// Position of the tx in the block.
        index: usize,
        /// Its hash.
        hash: Hash,
        /// What is wrong with it.
        #[source]
        error: TxError,
    },
    /// The block header names another chain.
    #[error("the block is for chain {got:?}, this chain is {expected:?}")]
    WrongChain {
        /// This chain.
        expected: String,
        /// The header's chain id.
        got: String,
    },
    /// The header's `prev_app_hash` is not the state the block is executed on.
    #[error("the block builds on app hash {got}, the state here is at {expected}")]
    PrevAppHash {
        /// The app hash of the state executed on.
        expected: Hash,
        /// The header's `prev_app_hash`.
        got: Hash,
    },
    /// Reading the state failed (not the block's fault).
    #[error(transparent)]
    State(#[from] StateError),
}

impl BlockError {
    /// Whether the block itself is at fault (NACK it), as opposed to a
    /// local storage failure (do not vote; report the error).
    pub fn is_invalid_block(&self) -> bool {
        !matches!(self, BlockError::State(_))
    }
}

/// The result of executing a block on a staged state: nothing is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// The state changes of the block.
    pub changes: ChangeSet,
    /// The app hash after the block.
    pub app_hash: Hash,
    /// Number of txs executed.
    pub tx_count: usize,
}

/// The application of one chain (built from its genesis).
#[derive(Debug, Clone)]
pub struct App {
    chain_id: String,
    max_tx_bytes: usize,
    genesis_changes: ChangeSet,
    genesis_app_hash: Hash,
}

impl App {
    /// The application of `genesis`'s chain.
    pub fn new(genesis: &Genesis) -> App {
        let mut genesis_changes = ChangeSet::new();
        for a in &genesis.allocations {
            genesis_changes.set(
                StateKey::account(&a.account),
                encode_account(&Account {
                    balance: a.balance,
                    nonce: 0,
                }),
            );
        }
        let genesis_app_hash = Self::next_app_hash(Hash::ZERO, &genesis_changes);
        App {
            chain_id: genesis.chain_id.clone(),
            max_tx_bytes: usize::try_from(genesis.max_tx_bytes).unwrap_or(usize::MAX),
            genesis_changes,
            genesis_app_hash,
        }
    }

    /// The chain id.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// The genesis state: one account per allocation (its balance, nonce 0).
    pub fn genesis_changes(&self) -> ChangeSet {
        self.genesis_changes.clone()
    }

    /// The app hash before the first block:
    /// `sha256(Hash::ZERO || genesis_changes().digest())`.
    pub fn genesis_app_hash(&self) -> Hash {
        self.genesis_app_hash
    }

    /// The app hash after a block: `sha256(prev || changes.digest())`.
    pub fn next_app_hash(prev: Hash, changes: &ChangeSet) -> Hash {
        Hash::digest_parts(&[prev.as_bytes(), changes.digest().as_bytes()])
    }

    /// The stateless rules of a tx (1-4 in the module docs), signature
    /// included: what the mempool checks on admission.
    pub fn check_tx(&self, tx: &Tx) -> Result<(), TxError> {
        self.check_rules(tx)?;
        if !tx.verify_signature() {
            return Err(TxError::BadSignature);
        }
        Ok(())
    }

    /// Rules 1-3: chain, size, key and value limits.
    fn check_rules(&self, tx: &Tx) -> Result<(), TxError> {
        let body = tx.body();
        if body.chain_id != self.chain_id {
            return Err(TxError::WrongChain {
                expected: self.chain_id.clone(),
                got: body.chain_id.clone(),
            });
        }
        if tx.size() > self.max_tx_bytes {
            return Err(TxError::TooLarge {
                size: tx.size(),
                max: self.max_tx_bytes,
            });
        }
        match &body.payload {
            Payload::Transfer { .. } => Ok(()),
            Payload::Put { key, value } => {
                check_key(key)?;
                if value.len() > MAX_VALUE_LEN {
                    return Err(TxError::ValueTooLong {
                        len: value.len(),
                        max: MAX_VALUE_LEN,
                    });
                }
                Ok(())
            }
            Payload::Delete { key } => check_key(key),
        }
    }

    /// Applies one tx to a staged state: the stateful rules (5-6) and the
    /// effects. Does not check the stateless rules; on error nothing is
    /// staged. Outer `Err` is a storage failure.
    pub fn apply_tx(
        &self,
        state: &mut Overlay<'_>,
        tx: &Tx,
    ) -> Result<Result<(), TxError>, StateError> {
        let body = tx.body();
        let sender = account(state, &body.sender)?;
        let expected = sender.nonce.saturating_add(1);
        if body.nonce != expected || sender.nonce == u64::MAX {
            return Ok(Err(TxError::BadNonce {
                expected,
                got: body.nonce,
            }));
        }
        let mut sender_after = Account {
            balance: sender.balance,
            nonce: body.nonce,
        };
        match &body.payload {
            Payload::Transfer { to, amount } => {
                if *amount > sender.balance {
                    return Ok(Err(TxError::InsufficientFunds {
                        need: *amount,
                        balance: sender.balance,
                    }));
                }
                if *to == body.sender {
                    state.set(
                        StateKey::account(&body.sender),
                        encode_account(&sender_after),
                    );
                } else {
                    let receiver = account(state, to)?;
                    let Some(credited) = receiver.balance.checked_add(*amount) else {
                        return Ok(Err(TxError::BalanceOverflow));
                    };
                    sender_after.balance = sender.balance - amount;
                    state.set(
                        StateKey::account(&body.sender),
                        encode_account(&sender_after),
                    );
                    state.set(
                        StateKey::account(to),
                        encode_account(&Account {
                            balance: credited,
                            nonce: receiver.nonce,
                        }),
                    );
                }
            }
            Payload::Put { key, value } => {
                state.set(
                    StateKey::account(&body.sender),
                    encode_account(&sender_after),
                );
                state.set(StateKey::kv(&body.sender, key), value.clone());
            }
            Payload::Delete { key } => {
                state.set(
                    StateKey::account(&body.sender),
                    encode_account(&sender_after),
                );
                state.delete(StateKey::kv(&body.sender, key));
            }
        }
        Ok(Ok(()))
    }

    /// Executes `block` on `state` (whose app hash is `prev_app_hash`)
    /// without writing anything. The tx signatures the caller has not
    /// checked already (`checked`, see [`SigsChecked`]; `true` for all,
    /// `false` for none) are verified here in one batch. Re-executing the
    /// same block on the same state always gives the same [`Executed`].
    pub fn execute_block(
        &self,
        state: &dyn StateReader,
        prev_app_hash: Hash,
        block: &Block,
        checked: impl Into<SigsChecked>,
    ) -> Result<Executed, BlockError> {
        let checked = checked.into();
        let header = block.header();
        if header.chain_id != self.chain_id {
            return Err(BlockError::WrongChain {
                expected: self.chain_id.clone(),
                got: header.chain_id.clone(),
            });
        }
        if header.prev_app_hash != prev_app_hash {
            return Err(BlockError::PrevAppHash {
                expected: prev_app_hash,
                got: header.prev_app_hash,
            });
        }
        let txs = block.txs();
        let sig_ok = checked.verify(txs);
        let mut overlay = Overlay::new(state);
        for (index, tx) in txs.iter().enumerate() {
            let fail = |error| BlockError::Tx {
                index,
                hash: tx.hash(),
                error,
            };
            self.check_rules(tx).map_err(fail)?;
            if !sig_ok.get(index).copied().unwrap_or(false) {
                return Err(fail(TxError::BadSignature));
            }
            self.apply_tx(&mut overlay, tx)?.map_err(fail)?;
        }
        let changes = overlay.into_changes();
        let app_hash = Self::next_app_hash(prev_app_hash, &changes);
        Ok(Executed {
            changes,
            app_hash,
            tx_count: txs.len(),
        })
    }
}

fn check_key(key: &[u8]) -> Result<(), TxError> {
    if key.is_empty() {
        return Err(TxError::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(TxError::KeyTooLong {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

/// Which tx signatures of a block the caller of [`App::execute_block`] has
/// checked already; the others are verified there, in one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigsChecked {
    /// None: every signature is verified.
    None,
    /// All: the leader's own block (built from its mempool), or a range
    /// whose proofs and signatures were checked before.
    All,
    /// Those marked `true`, by tx index (a missing entry is `false`): the
    /// txs this node admitted to its mempool, which verified their
    /// signatures. A tx's hash is the sha256 of its whole encoding,
    /// signature included, so a tx of the block with the hash of an
    /// admitted tx is that same signed tx.
    These(Vec<bool>),
}

impl From<bool> for SigsChecked {
    fn from(all: bool) -> SigsChecked {
        if all {
            SigsChecked::All
        } else {
            SigsChecked::None
        }
    }
}

impl SigsChecked {
    /// Whether each of `txs` has a good signature: the checked ones are
    /// taken as good, the others verified in one batch.
    pub fn verify(&self, txs: &[Tx]) -> Vec<bool> {
        let known = |i: usize| match self {
            SigsChecked::None => false,
            SigsChecked::All => true,
            SigsChecked::These(mask) => mask.get(i).copied().unwrap_or(false),
        };
        let todo: Vec<usize> = (0..txs.len()).filter(|i| !known(*i)).collect();
        let mut ok = vec![true; txs.len()];
        if todo.is_empty() {
            return ok;
        }
        let refs: Vec<&Tx> = todo.iter().map(|i| &txs[*i]).collect();
        for (i, good) in todo.iter().zip(Tx::verify_batch(&refs)) {
            ok[*i] = good;
        }
        ok
    }
}
