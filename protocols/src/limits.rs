//! Size caps and deadlines of every message.
//!
//! Each read is refused as soon as its length prefix exceeds the cap (before
//! anything is allocated) and must complete, prefix and body, within its
//! deadline. Control messages are small and get [`CONTROL_MAX`] /
//! [`CONTROL_DEADLINE`]; messages that carry txs or blocks get a deadline
//! scaled by their cap ([`transfer_deadline`]: [`CONTROL_DEADLINE`] plus the
//! time to move the cap at [`MIN_THROUGHPUT`]). Block caps derive from the
//! genesis `max_block_bytes` that the caller passes in.
//!
//! | message | cap | deadline |
//! |---|---|---|
//! | TxRequest, TxWant, Want, BlockRequest, VoteMessage, VoteReceipt, TermMessage, PeersRequest, StatusRequest, Status | [`CONTROL_MAX`] (4 KiB) | [`CONTROL_DEADLINE`] (10 s) |
//! | LeaderMessage (a proposal with its term's credential) | [`CONTROL_MAX`] + [`CREDENTIAL_MAX`] (516 KiB) | 10 s |
//! | TxAnnounce (at most [`MAX_ANNOUNCE_HASHES`] hashes) | [`TX_ANNOUNCE_MAX`] (16 KiB) | 10 s |
//! | TxResponse | `max_tx_bytes` + [`TX_RESPONSE_OVERHEAD`] | scaled |
//! | TxBatch | [`TX_BATCH_MAX`] (4 MiB) | scaled (26 s) |
//! | BlockAnnounce | [`BLOCK_ANNOUNCE_MAX`] (516 KiB) | scaled (12 s) |
//! | Block (after Want) | `max_block_bytes` | scaled (26 s at 4 MiB) |
//! | BlockResponse | [`block_response_max`] | scaled |
//! | PeersResponse (at most [`MAX_PEERS`] peers) | [`PEERS_RESPONSE_MAX`] (128 KiB) | scaled (10.5 s) |

use std::time::Duration;

/// Cap of small control messages.
pub const CONTROL_MAX: usize = 4 * 1024;
/// Deadline of small control messages, and the base of every deadline.
pub const CONTROL_DEADLINE: Duration = Duration::from_secs(10);
/// Slowest transfer rate tolerated for large messages, bytes per second.
pub const MIN_THROUGHPUT: u64 = 256 * 1024;

/// Most tx hashes in one `TxAnnounce`.
pub const MAX_ANNOUNCE_HASHES: usize = 256;
/// Cap of `TxAnnounce`: 256 hashes of 34 bytes each fit with room to spare.
pub const TX_ANNOUNCE_MAX: usize = 16 * 1024;
/// Cap of `TxBatch`. An announcer never sends more: wanted txs that do not
/// fit are left out (the receiver can fetch them with `/kite/tx`).
pub const TX_BATCH_MAX: usize = 4 * 1024 * 1024;
/// Bytes a `TxResponse` may carry beyond the tx itself.
pub const TX_RESPONSE_OVERHEAD: usize = 64;

/// Cap of an encoded `CommitInfo`: up to 1000 ACK votes of about 450 bytes.
pub const COMMIT_INFO_MAX: usize = 512 * 1024;
/// Largest credential (a quorum of term changes, about 150 bytes each for
/// up to 1000 validators) in a proposal.
pub const CREDENTIAL_MAX: usize = 512 * 1024;
/// Cap of `BlockAnnounce`: header, signature and commit info.
pub const BLOCK_ANNOUNCE_MAX: usize = COMMIT_INFO_MAX + CONTROL_MAX;
/// Bytes a `BlockResponse` may carry beyond the block and commit info.
pub const BLOCK_RESPONSE_OVERHEAD: usize = 64;

/// Longest reason string kept (VoteReceipt, Reset); longer ones are cut.
pub const MAX_REASON_LEN: usize = 256;

/// Most peers in one `PeersResponse`.
pub const MAX_PEERS: usize = 64;
/// Most addresses per peer in a `PeersResponse`.
pub const MAX_ADDRS_PER_PEER: usize = 8;
/// Longest peer id (libp2p `PeerId` bytes; ed25519 ids are 38 bytes).
pub const MAX_PEER_ID_LEN: usize = 64;
/// Longest multiaddr (bytes).
pub const MAX_ADDR_LEN: usize = 128;
/// Cap of `PeersResponse`.
pub const PEERS_RESPONSE_MAX: usize = 128 * 1024;

/// Longest round step name in a `Status`.
pub const MAX_STEP_LEN: usize = 64;

/// Deadline of a message of at most `max_bytes`: [`CONTROL_DEADLINE`] plus
/// the time to transfer `max_bytes` at [`MIN_THROUGHPUT`].
pub fn transfer_deadline(max_bytes: usize) -> Duration {
    let bytes = u64::try_from(max_bytes).unwrap_or(u64::MAX);
    CONTROL_DEADLINE + Duration::from_millis(bytes.saturating_mul(1000) / MIN_THROUGHPUT)
}

/// Cap of a `TxResponse` for txs of at most `max_tx_bytes`.
pub fn tx_response_max(max_tx_bytes: usize) -> usize {
    max_tx_bytes.saturating_add(TX_RESPONSE_OVERHEAD)
}

/// Cap of a `BlockResponse` for blocks of at most `max_block_bytes`.
pub fn block_response_max(max_block_bytes: usize) -> usize {
    max_block_bytes
        .saturating_add(COMMIT_INFO_MAX)
        .saturating_add(BLOCK_RESPONSE_OVERHEAD)
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_scale() {
        assert_eq!(transfer_deadline(0), CONTROL_DEADLINE);
        assert_eq!(transfer_deadline(4 * 1024 * 1024), Duration::from_secs(26));
        assert!(transfer_deadline(usize::MAX) > Duration::from_secs(1_000_000));
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 5), "abc");
    }

    #[test]
    fn caps_hold_their_contents() {
        // 256 hashes of 32 bytes, each with a 2-byte tag+length.
        let ann = crate::proto::TxAnnounce {
            hashes: vec![vec![0xff; 32]; MAX_ANNOUNCE_HASHES],
        };
        assert!(prost::Message::encoded_len(&ann) < TX_ANNOUNCE_MAX);
        // The largest validator set, each vote with the longest reason.
        let k = kite_types::NodeKey::from_seed([1; 32]);
        let h = kite_types::Hash([0xff; 32]);
        let mut v = kite_types::Vote::ack(&k, "c", u64::MAX, h, h);
        v.nack_reason = "x".repeat(kite_types::vote::MAX_NACK_REASON);
        let ci = kite_types::proto::CommitInfo {
            app_hash: h.0.to_vec(),
            votes: vec![v.to_proto(); kite_types::genesis::MAX_VALIDATORS],
        };
        assert!(prost::Message::encoded_len(&ci) < COMMIT_INFO_MAX);
        let peers = crate::proto::PeersResponse {
            peers: vec![
                crate::proto::PeerInfo {
                    id: vec![1; MAX_PEER_ID_LEN],
                    addrs: vec![vec![2; MAX_ADDR_LEN]; MAX_ADDRS_PER_PEER],
                };
                MAX_PEERS
            ],
        };
        assert!(prost::Message::encoded_len(&peers) < PEERS_RESPONSE_MAX);
    }
}
