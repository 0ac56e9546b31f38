//! What a node promised at one height: the record the commit engine has the
//! node write durably *before* the message that makes the promise leaves
//! (a validator's vote, a leader's proposal), so that a restart never makes
//! it break the promise (vote for a second block at a height, propose again
//! at a height it already proposed) and a store that went back in time is
//! noticed.
//!
//! Node-local, never sent: the node keeps it in a file of its own beside
//! its key (`<home>/promise`), not in the block store, so that restoring an
//! older copy of the store does not restore an older record with it. The
//! encoding is the prost message `Promise` of `proto/kite/types.proto`.

use crate::codec::{self, DecodeError};
use crate::{Block, Credential, Hash, Vote, proto};
use prost::Message;

/// Most proposed block hashes kept for one height (the leader re-proposes a
/// height at most this many times before it stops resetting).
pub const MAX_PROPOSED: usize = 256;
/// Largest encoded record accepted when reading it back: the largest
/// block the protocol allows (64 MiB) and 64 KiB for the rest.
pub const MAX_PROMISE_BYTES: usize = 64 * 1024 * 1024 + 64 * 1024;

/// What this node promised at `height`, the highest height it promised
/// anything at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Promise {
    /// The height the promises are about.
    pub height: u64,
    /// Validator: its latest vote at `height` (an ACK locks it on that
    /// block until the leader's signed reset releases it).
    pub vote: Option<Vote>,
    /// Leader: the blocks it proposed at `height`, oldest first (at most
    /// [`MAX_PROPOSED`]); the last one is its current proposal.
    pub proposed: Vec<Hash>,
    /// Leader: the header time of its newest proposal at `height` (its
    /// next proposal there must be later, even if its clock went back).
    pub newest_ts: u64,
    /// The highest term this node joined, at any height: it never votes,
    /// proposes or resets in a lower term again.
    pub term: u64,
    /// Validator: the block its ACK at `height` is for, so that after a
    /// restart it can still hand that block to the leader of a later term
    /// (which must propose it again: it may have committed).
    pub block: Option<Block>,
    /// The credential of `term` this node verified (a quorum's term
    /// changes), so that after a restart it takes the term's proposals
    /// again without waiting for the credential to come back.
    pub credential: Option<Credential>,
}

impl Promise {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        proto::Promise {
            height: self.height,
            vote: self.vote.as_ref().map(Vote::to_proto),
            proposed: self.proposed.iter().map(|h| h.0.to_vec()).collect(),
            newest_ts: self.newest_ts,
            term: self.term,
            block: self.block.as_ref().map(Block::to_proto),
            credential: self.credential.as_ref().map(Credential::to_proto),
        }
        .encode_to_vec()
    }

    /// Reads the stored form back, checking every field.
    pub fn decode(bytes: &[u8]) -> Result<Promise, DecodeError> {
        const W: &str = "promise record";
        let p: proto::Promise = codec::decode(W, bytes, MAX_PROMISE_BYTES)?;
        if p.proposed.len() > MAX_PROPOSED {
            return Err(DecodeError::invalid(
                W,
                format!(
                    "{} proposed blocks, at most {MAX_PROPOSED}",
                    p.proposed.len()
                ),
            ));
        }
        let vote = p.vote.as_ref().map(Vote::from_proto).transpose()?;
        if let Some(v) = &vote
            && v.term > p.term
        {
            return Err(DecodeError::invalid(
                W,
                format!("its vote is of term {}, above its term {}", v.term, p.term),
            ));
        }
        if let Some(v) = &vote
            && v.height != p.height
        {
            return Err(DecodeError::invalid(
                W,
                format!("its vote is for height {}, not {}", v.height, p.height),
            ));
        }
        let block = p.block.map(Block::from_proto).transpose()?;
        let credential = p
            .credential
            .as_ref()
            .map(|c| Credential::from_proto(c, crate::genesis::MAX_VALIDATORS))
            .transpose()?;
        if credential.as_ref().is_some_and(|c| c.term != p.term) {
            return Err(DecodeError::invalid(W, "its credential is of another term"));
        }
        if let Some(b) = &block
            && vote
                .as_ref()
                .is_none_or(|v| !v.ack || v.block_hash != b.hash())
        {
            return Err(DecodeError::invalid(
                W,
                "it keeps a block that is not the one its ACK is for",
            ));
        }
        Ok(Promise {
            height: p.height,
            vote,
            proposed: p
                .proposed
                .iter()
                .map(|b| codec::hash_field(W, "proposed", b))
                .collect::<Result<Vec<_>, _>>()?,
            newest_ts: p.newest_ts,
            term: p.term,
            block,
            credential,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeKey;

    #[test]
    fn round_trip_and_bounds() {
        let k = NodeKey::from_seed([3; 32]);
        let p = Promise {
            height: 9,
            vote: Some(Vote::ack(
                &k,
                "c",
                9,
                Hash::digest(b"b"),
                Hash::digest(b"a"),
            )),
            proposed: vec![Hash::digest(b"x"), Hash::digest(b"y")],
            newest_ts: 1_700_000_000_123,
            term: 2,
            block: None,
            credential: None,
        };
        assert_eq!(Promise::decode(&p.encode()).unwrap(), p);
        assert_eq!(
            Promise::decode(&Promise::default().encode()).unwrap(),
            Promise::default()
        );
        let mut wrong = p.clone();
        wrong.height = 10;
        assert!(Promise::decode(&wrong.encode()).is_err());
        let mut wrong = p.clone();
        wrong.vote = wrong.vote.map(|mut v| {
            v.term = 3;
            v
        });
        assert!(Promise::decode(&wrong.encode()).is_err());
        let mut many = p.clone();
        many.vote = None;
        many.proposed = vec![Hash::ZERO; MAX_PROPOSED + 1];
        assert!(Promise::decode(&many.encode()).is_err());
        assert!(Promise::decode(&[0xff, 0xff, 0xff]).is_err());
        assert!(Promise::decode(&vec![0u8; MAX_PROMISE_BYTES + 1]).is_err());
    }
}
