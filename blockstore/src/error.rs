//! [`StoreError`]: everything the block store can refuse or fail at.

use kite_app::{BlockError, StateError};
use kite_types::Hash;
use std::path::PathBuf;

/// Why a block store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened (I/O, lock held by another
    /// process, unreadable files).
    #[error("cannot open the block store at {path}: {detail}")]
    Open {
        /// The store directory.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The store belongs to another chain.
    #[error(
        "the block store at {path} belongs to chain {found:?}, not {expected:?}: \
         use another home directory or the right genesis file"
    )]
    WrongChain {
        /// The store directory.
        path: PathBuf,
        /// The chain id of the genesis given.
        expected: String,
        /// The chain id recorded in the store.
        found: String,
    },
    /// The store was created from another genesis of the same chain id.
    #[error(
        "the block store at {path} was created from genesis {found}, the genesis given hashes to \
         {expected}: use the genesis file this store was created with"
    )]
    WrongGenesis {
        /// The store directory.
        path: PathBuf,
        /// Hash of the genesis given.
        expected: Hash,
        /// Genesis hash recorded in the store.
        found: Hash,
    },
    /// The store's content is inconsistent or undecodable.
    #[error("the block store at {path} is corrupt: {detail}")]
    Corrupt {
        /// The store directory.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A storage operation failed (sled or file system).
    #[error("block store I/O failed: {0}")]
    Storage(String),
    /// Making a commit durable (flush + fsync) failed. The block may or may
    /// not survive a power loss: stop the node and check the disk.
    #[error("block store could not make the commit durable (fsync failed): {0}")]
    Durability(String),
    /// The block is not at the next height.
    #[error("cannot commit block at height {got}: the next height is {expected}")]
    NotNext {
        /// best height + 1.
        expected: u64,
        /// The block's height.
        got: u64,
    },
    /// The block does not extend the best block.
    #[error("cannot commit block {block}: its prev_hash {got} is not the best block {expected}")]
    PrevHash {
        /// The block.
        block: Hash,
        /// The best block hash.
        expected: Hash,
        /// The block's prev_hash.
        got: Hash,
    },
    /// The block does not build on the committed app hash.
    #[error(
        "cannot commit block {block}: its prev_app_hash {got} is not the committed app hash {expected}"
    )]
    PrevAppHash {
        /// The block.
        block: Hash,
        /// The committed app hash.
        expected: Hash,
        /// The header's prev_app_hash.
        got: Hash,
    },
    /// The block's header names another chain.
    #[error("cannot commit block for chain {got:?} into a store of chain {expected:?}")]
    BlockChain {
        /// The store's chain.
        expected: String,
        /// The header's chain id.
        got: String,
    },
    /// The commit info's app hash is not the one the changes produce.
    #[error(
        "cannot commit block at height {height}: the changes give app hash {computed}, \
         the commit info says {committed}"
    )]
    AppHashMismatch {
        /// The block height.
        height: u64,
        /// sha256(best app hash || changes digest).
        computed: Hash,
        /// The commit info's app hash.
        committed: Hash,
    },
    /// The block is invalid on the committed state.
    #[error("invalid block: {0}")]
    InvalidBlock(#[source] BlockError),
    /// The store's writer thread is gone (shut down or crashed).
    #[error("the block store is closed")]
    Closed,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}

impl From<BlockError> for StoreError {
    fn from(e: BlockError) -> Self {
        match e {
            BlockError::State(s) => StoreError::Storage(s.to_string()),
            other => StoreError::InvalidBlock(other),
        }
    }
}

impl From<StoreError> for StateError {
    fn from(e: StoreError) -> Self {
        StateError::Storage(e.to_string())
    }
}
