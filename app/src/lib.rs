//! Kite application: the deterministic state machine (accounts, transfers,
//! key-value) and its app hash.
//!
//! Bird's-eye view:
//!
//! - [`state`]: the state is a sorted map of canonical byte keys
//!   ([`StateKey`]) to byte values, read through the [`StateReader`] trait.
//!   [`MemState`] is an in-memory state (tests, simulator); the block store
//!   implements [`StateReader`] over its committed state. [`Overlay`] is a
//!   staged state: pending changes on top of a base.
//! - [`changes`]: a [`ChangeSet`] is what a block does to the state, with a
//!   documented canonical encoding and digest.
//! - [`app`]: [`App`] checks txs ([`App::check_tx`]) and executes blocks
//!   ([`App::execute_block`]) into a [`ChangeSet`] and the next app hash,
//!   writing nothing: the caller commits the changes (block store) or drops
//!   them (rollback).
//!
//! App hash after a block: `sha256(previous app hash || changes.digest())`;
//! before the first block: `sha256(Hash::ZERO || genesis_changes.digest())`.
//! Everything here is pure: no I/O, no clock, no randomness, no map whose
//! iteration order depends on the machine, so every validator computes the
//! same app hash.

#![forbid(unsafe_code)]

pub mod app;
pub mod changes;
pub mod state;

pub use app::{App, BlockError, Executed, SigsChecked, TxError};
pub use changes::ChangeSet;
pub use state::{
    MemState, Overlay, StateError, StateKey, StateReader, account, decode_account, encode_account,
    kv_get,
};
