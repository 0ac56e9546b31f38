//! Params, results and errors of the JSON-RPC methods (the RPC contract;
//! docs/OPERATING.md shows each with curl).

use kite_types::{Hash, PublicKey};
use serde::{Deserialize, Serialize};

/// JSON-RPC: not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: no such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: bad params.
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC: internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// Kite: the tx was refused (mempool or app reason in `data`).
pub const TX_REFUSED: i64 = -32000;
/// Kite: not found.
pub const NOT_FOUND: i64 = -32004;
/// Kite: the node does not do that (blocks-only node and tx submission).
pub const UNSUPPORTED: i64 = -32005;
/// Kite: deadline passed.
pub const TIMEOUT: i64 = -32006;
/// Kite: too busy.
pub const BUSY: i64 = -32007;
/// Kite: the caller may not use this node (its Host or Origin is not
/// allowed; HTTP 403).
pub const FORBIDDEN: i64 = -32008;

/// An error as the RPC returns it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RpcError {
    /// JSON-RPC error code.
    pub code: i64,
    /// Stable short name ("nonce_too_low", "not_found", ...), in `data.code`.
    pub kind: String,
    /// The reason, for people.
    pub message: String,
}

impl RpcError {
    /// Any error.
    pub fn new(code: i64, kind: &str, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            kind: kind.to_owned(),
            message: message.into(),
        }
    }
    /// Bad params.
    pub fn invalid_params(m: impl Into<String>) -> RpcError {
        Self::new(INVALID_PARAMS, "invalid_params", m)
    }
    /// Internal failure.
    pub fn internal(m: impl Into<String>) -> RpcError {
        Self::new(INTERNAL_ERROR, "internal", m)
    }
    /// Not found.
    pub fn not_found(m: impl Into<String>) -> RpcError {
        Self::new(NOT_FOUND, "not_found", m)
    }
    /// Too busy.
    pub fn busy(m: impl Into<String>) -> RpcError {
        Self::new(BUSY, "busy", m)
    }
    /// A refused tx with the refusal's stable code.
    pub fn tx_refused(kind: &str, m: impl Into<String>) -> RpcError {
        Self::new(TX_REFUSED, kind, m)
    }
}

/// How long `broadcast_tx` waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WaitFor {
    /// Until the mempool accepted the tx.
    #[default]
    Accept,
    /// Until the tx is committed (or the commit timeout passes).
    Commit,
}

/// `broadcast_tx` params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastParams {
    /// The encoded `Transaction`, hex.
    pub tx: String,
    /// accept | commit
    #[serde(default)]
    pub wait: WaitFor,
}

/// `broadcast_tx` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastResult {
    /// The tx hash.
    pub hash: Hash,
    /// Height it was committed at (wait = commit).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub height: Option<u64>,
}

/// Params made of one hash.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashParams {
    /// The hash, hex.
    pub hash: Hash,
}

/// `tx_query` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxStatus {
    /// pending | committed | unknown | indexing (not in the mempool, and
    /// not in the tx index so far, which has not reached the tip yet:
    /// the tx may be in a block it has still to index)
    pub status: String,
    /// Height of the block holding it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub height: Option<u64>,
    /// Index in that block.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub index: Option<u32>,
}

/// `block` params: exactly one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockParams {
    /// Height.
    pub height: Option<u64>,
    /// Hash, hex.
    pub hash: Option<Hash>,
}

/// A block query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockQuery {
    /// By height.
    Height(u64),
    /// By hash.
    Hash(Hash),
}

/// A block header as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderView {
    /// Format version.
    pub version: u32,
    /// Chain id.
    pub chain_id: String,
    /// Height.
    pub height: u64,
    /// Previous block hash.
    pub prev_hash: Hash,
    /// App hash after the previous block.
    pub prev_app_hash: Hash,
    /// Leader's timestamp, unix ms.
    pub timestamp_ms: u64,
    /// Merkle root of the tx hashes.
    pub tx_root: Hash,
    /// Validator set hash.
    pub validator_set_hash: Hash,
    /// Leader key.
    pub proposer: PublicKey,
}

impl From<&kite_types::BlockHeader> for HeaderView {
    fn from(h: &kite_types::BlockHeader) -> Self {
        HeaderView {
            version: h.version,
            chain_id: h.chain_id.clone(),
            height: h.height,
            prev_hash: h.prev_hash,
            prev_app_hash: h.prev_app_hash,
            timestamp_ms: h.timestamp_ms,
            tx_root: h.tx_root,
            validator_set_hash: h.validator_set_hash,
            proposer: h.proposer,
        }
    }
}

/// One vote of a commit info.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteView {
    /// Voter.
    pub validator: PublicKey,
    /// App hash voted for.
    pub app_hash: Hash,
    /// Signature, hex.
    pub signature: String,
}

/// Commit info as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfoView {
    /// App hash after the block.
    pub app_hash: Hash,
    /// The ACKs that committed it.
    pub votes: Vec<VoteView>,
}

impl From<&kite_types::CommitInfo> for CommitInfoView {
    fn from(c: &kite_types::CommitInfo) -> Self {
        CommitInfoView {
            app_hash: c.app_hash,
            votes: c
                .votes
                .iter()
                .map(|v| VoteView {
                    validator: v.validator,
                    app_hash: v.app_hash,
                    signature: hex::encode(v.signature.0),
                })
                .collect(),
        }
    }
}

/// `block` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockView {
    /// Block hash.
    pub hash: Hash,
    /// Header.
    pub header: HeaderView,
    /// Tx hashes in block order.
    pub txs: Vec<Hash>,
    /// Commit info.
    pub commit_info: CommitInfoView,
}

impl BlockView {
    /// The view of a stored block.
    pub fn of(block: &kite_types::Block, ci: &kite_types::CommitInfo) -> BlockView {
        BlockView {
            hash: block.hash(),
            header: block.header().into(),
            txs: block.txs().iter().map(|t| t.hash()).collect(),
            commit_info: ci.into(),
        }
    }
}

/// Mempool figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MempoolView {
    /// Txs held.
    pub txs: u64,
    /// Bytes held.
    pub bytes: u64,
}

/// `status` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    /// Chain id.
    pub chain_id: String,
    /// This node's libp2p peer id.
    pub peer_id: String,
    /// leader | validator | sentry
    pub role: String,
    /// Archival mode.
    pub blocks_only: bool,
    /// Last committed height.
    pub height: u64,
    /// Its block hash.
    pub block_hash: Hash,
    /// App hash after it.
    pub app_hash: Hash,
    /// Whether block sync is running.
    pub syncing: bool,
    /// Height sync is heading for.
    pub sync_target: u64,
    /// Height up to which every committed tx is in the tx index (below
    /// `height` for a while after block sync, which leaves indexing for
    /// later).
    #[serde(default)]
    pub tx_indexed: u64,
    /// Connected peers.
    pub peers: u64,
    /// Mempool figures.
    pub mempool: MempoolView,
    /// The term this node is in (0: the genesis leader's).
    #[serde(default)]
    pub term: u64,
    /// The schedule's leader of that term.
    #[serde(default)]
    pub leader: Option<PublicKey>,
    /// Whether that leader holds a quorum's credential (always in term 0):
    /// false while the validators change terms.
    #[serde(default)]
    pub term_settled: bool,
}

/// One peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// libp2p peer id.
    pub peer_id: String,
    /// Known addresses.
    pub addrs: Vec<String>,
    /// Best height it reported, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub height: Option<u64>,
}

/// One validator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorView {
    /// Key.
    pub pub_key: PublicKey,
    /// Voting power.
    pub power: u64,
    /// Name.
    pub name: String,
    /// Whether it leads the term this node is in.
    pub leader: bool,
}

/// `validators` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorsView {
    /// The set.
    pub validators: Vec<ValidatorView>,
    /// Total voting power.
    pub total_power: u64,
    /// Commit quorum ("more than num/den of the power").
    pub quorum: String,
}

/// `account` params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountParams {
    /// Account key, hex.
    pub id: PublicKey,
}

/// `account` result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountView {
    /// Committed balance.
    pub balance: u64,
    /// Nonce of the last committed tx.
    pub nonce: u64,
    /// Nonce the next tx of this account should carry (counts pending txs).
    pub next_nonce: u64,
}

/// `kv_get` params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvParams {
    /// Owner key, hex.
    pub owner: PublicKey,
    /// The key (UTF-8 text).
    pub key: String,
}

/// `kv_get` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvView {
    /// Whether the key exists.
    pub found: bool,
    /// The value as UTF-8 text (lossy).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<String>,
    /// The value, hex.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value_hex: Option<String>,
}

/// `health` result and `GET /health` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    /// Synced and committing.
    pub healthy: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub reason: String,
    /// Last committed height.
    pub height: u64,
}

/// No params.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}
