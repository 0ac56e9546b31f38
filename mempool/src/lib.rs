//! Kite mempool: where every tx waits until the leader puts it in a block.
//!
//! - **Admission** ([`Mempool::admit`], [`Mempool::admit_bytes`],
//!   [`Mempool::admit_batch`]): decode with a size cap, size, chain id,
//!   key/value lengths, signature (batch verification for bursts), then
//!   nonce against the sender's committed nonce plus its pending txs,
//!   affordability (pending transfers <= balance; incoming pending
//!   transfers do not count) and the limits. Every refusal is a typed
//!   [`MempoolError`] with a stable [`MempoolError::code`]. When the
//!   sender's account cannot be read ([`AccountSource`] returns an
//!   [`AccountError`]), the tx is refused as
//!   [`MempoolError::StateUnavailable`], never judged against an empty
//!   account.
//! - **Order**: per sender strictly by nonce; across senders by arrival.
//! - **Gaps are queued**: a tx whose nonce is ahead of the sender's next
//!   nonce waits as *queued* (at most [`MempoolConfig::max_queued_per_sender`]
//!   per sender, and at most `max_per_sender` nonces ahead) until the gap
//!   fills; it is then promoted to *pending*, announced and eligible for
//!   blocks. Queued txs are never put in a block nor announced. With
//!   `max_queued_per_sender = 0` every gap is refused
//!   ([`MempoolError::NonceGap`]).
//! - **Limits** ([`MempoolConfig`]): total count and bytes (pending and
//!   queued together), tx size, pending and queued per sender. A full pool
//!   refuses new txs ([`MempoolError::Full`]); nothing is evicted, so a
//!   flood cannot push out txs that were already accepted.
//! - **Block building** ([`Mempool::build_block`]): arrival order, each
//!   sender's contiguous nonce prefix, within a byte and count budget.
//! - **After a commit** ([`Mempool::on_commit`]): remove the block's txs,
//!   recheck every sender against the new state, drop what became invalid.
//!   A sender whose account cannot be read keeps its txs unchecked; the
//!   [`Recheck`] result names it with the error.
//! - **Gossip**: [`Mempool::take_announcements`] (new pending hashes) and
//!   [`Mempool::reannounce`] (oldest unconfirmed, rate-limited per tx);
//!   [`Mempool::contains`] and [`Mempool::get`] in O(1).
//!
//! Where things are: `pool.rs` (the [`Mempool`] API: lookups, block
//! building, commit and recheck, removal, gossip), `account.rs` (the
//! [`AccountSource`] it reads committed state through, and its
//! [`AccountError`]), `admission.rs` (decoding,
//! stateless checks, batch signature verification, the `admit*` entry
//! points), `senders.rs` (per-sender nonce queues, the global index and
//! arrival order, and their invariant check), `error.rs` and `config.rs`.
//!
//! Concurrency: `Mempool` is `Send + Sync`; share it in an `Arc`. All work
//! that does not need the pool's state (decoding, signatures, account
//! reads) runs outside its single `parking_lot::Mutex`, which guards short
//! map updates only. There is no async here, so no lock is ever held
//! across an await.

#![forbid(unsafe_code)]

mod account;
mod admission;
mod config;
mod error;
mod pool;
mod senders;

pub use account::{AccountError, AccountSource};
pub use admission::{ACCOUNT_RETRIES, tx_cost};
pub use config::{MIB, MempoolConfig};
pub use error::MempoolError;
pub use pool::{Mempool, MempoolStats, Recheck};
