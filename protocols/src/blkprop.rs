//! `/kite/blkprop/3.0.0`: the leader sends a proposal (or a reset) to a
//! validator. 2.0.0 added terms: a proposal names its term and, above term
//! 0, carries the credential of that term; a reset names its term. 3.0.0
//! sends the block with the proposal, without waiting for the validator's
//! `Want`: a round costs one network flight from leader to validator
//! instead of three (the `Want` round trip cost 100 ms a round at 50 ms of
//! one-way delay; a validator wants nearly every proposal it gets).
//!
//! The leader opens the stream with a `LeaderMessage`:
//!
//! - `Proposal{height, hash, header, leader_sig, term, credential}`,
//!   followed at once by the encoded `Block`. The validator checks the
//!   proposal; if it wants it, it reads and checks the block, takes it and
//!   answers `Want{true}`; if not, it answers `Want{false}` at once and
//!   reads past the block's frame without decoding or keeping it (within
//!   `max_block_bytes` and the transfer deadline). Both sides then close. The validator executes
//!   the block and votes over `/kite/ack` (a separate stream).
//! - `Reset{height, block_hash, reason, leader_sig}`: the leader abandons
//!   that block (NACK quorum or timeout). The validator answers a
//!   `VoteReceipt` and closes.
//!
//! Checked here: the header decodes and hashes to `hash` at `height`;
//! signatures are 64 bytes; the block that follows has the proposed hash and
//! leader signature and a tx root matching its txs. Checked by the node (in
//! [`ProposalSink::check`] / [`ProposalSink::reset`]): the leader signature
//! (the proposer must be the schedule's leader of the header's term; the
//! credential a quorum's; [`ResetInfo::verify`]), the
//! height (its height + 1), prev hash, and then every tx by execution.
//! Blocks-only and sentry nodes answer `Want{false}` to proposals and a
//! refusing receipt to resets (or do not serve the protocol).

use crate::ack::VoteReceipt;
use crate::blk::read_announced_block;
use crate::blkann::{AnnounceOutcome, checked_header};
use crate::framing::{close, read_msg, skip_frame, write_msg};
use crate::limits::{
    CONTROL_DEADLINE, CONTROL_MAX, CREDENTIAL_MAX, MAX_REASON_LEN, transfer_deadline, truncate,
};
use crate::{ProtocolError, proto};
use async_trait::async_trait;
use futures::io::{AsyncRead, AsyncWrite};
use kite_types::codec::{hash_field, sig_field};
use kite_types::genesis::MAX_VALIDATORS;
use kite_types::{
    Block, BlockHeader, Credential, DecodeError, Hash, NodeKey, PublicKey, Signature, sign,
};

/// The protocol id.
pub const PROTOCOL: &str = "/kite/blkprop/3.0.0";

/// Largest `LeaderMessage`: a proposal with the credential of its term.
pub const LEADER_MESSAGE_MAX: usize = CONTROL_MAX + CREDENTIAL_MAX;

/// What happened to a proposal: [`AnnounceOutcome::Sent`] or
/// [`AnnounceOutcome::NotWanted`].
pub type ProposeOutcome = AnnounceOutcome;

/// A decoded proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalInfo {
    /// The proposed height (equals `header.height`).
    pub height: u64,
    /// The block hash (the hash of `header`).
    pub hash: Hash,
    /// The block header.
    pub header: BlockHeader,
    /// The leader's signature over the block hash.
    pub leader_sig: Signature,
    /// The term it is proposed in (at least the header's).
    pub term: u64,
    /// Above term 0: the credential of `term` (not verified here).
    pub credential: Option<Credential>,
}

impl ProposalInfo {
    /// The proposal of a block in the block's own term.
    pub fn of(block: &Block) -> ProposalInfo {
        ProposalInfo::in_term(block, block.header().term, None)
    }

    /// The proposal of a block in `term`, with that term's credential.
    pub fn in_term(block: &Block, term: u64, credential: Option<Credential>) -> ProposalInfo {
        ProposalInfo {
            height: block.height(),
            hash: block.hash(),
            header: block.header().clone(),
            leader_sig: *block.leader_sig(),
            term,
            credential,
        }
    }

    /// Whether `leader` signed this proposal and is its proposer.
    pub fn verify_leader(&self, leader: &PublicKey) -> bool {
        kite_types::block::verify_header_sig(
            &self.header.proposer,
            &self.hash,
            &self.leader_sig,
            leader,
        )
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::Proposal {
        proto::Proposal {
            height: self.height,
            hash: self.hash.0.to_vec(),
            header: Some(self.header.to_proto()),
            leader_sig: self.leader_sig.0.to_vec(),
            term: self.term,
            credential: self.credential.as_ref().map(Credential::to_proto),
        }
    }

    /// Decodes and checks the wire form (header hash and height match).
    pub fn from_proto(p: &proto::Proposal) -> Result<ProposalInfo, ProtocolError> {
        const W: &str = "Proposal";
        let (header, hash) = checked_header(W, p.header.as_ref(), p.height, &p.hash)?;
        if p.term < header.term {
            return Err(ProtocolError::invalid(
                W,
                format!(
                    "proposed in term {}, before the block's own term {}",
                    p.term, header.term
                ),
            ));
        }
        let credential = p
            .credential
            .as_ref()
            .map(|c| Credential::from_proto(c, MAX_VALIDATORS))
            .transpose()?;
        if credential.as_ref().is_some_and(|c| c.term != p.term) {
            return Err(ProtocolError::invalid(
                W,
                "the credential is for another term",
            ));
        }
        Ok(ProposalInfo {
            height: p.height,
            hash,
            header,
            leader_sig: sig_field(W, "leader_sig", &p.leader_sig)?,
            term: p.term,
            credential,
        })
    }
}

/// A signed reset: the leader of `term` abandons `block_hash` at `height`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetInfo {
    /// The term of the leader that signed it.
    pub term: u64,
    /// The height being reset.
    pub height: u64,
    /// The abandoned block.
    pub block_hash: Hash,
    /// Why (not signed; at most [`MAX_REASON_LEN`] bytes).
    pub reason: String,
    /// The leader's signature over [`sign::reset_digest`].
    pub leader_sig: Signature,
}

impl ResetInfo {
    /// A reset signed by `leader`.
    pub fn new_signed(
        leader: &NodeKey,
        chain_id: &str,
        term: u64,
        height: u64,
        block_hash: Hash,
        reason: &str,
    ) -> ResetInfo {
        ResetInfo {
            term,
            height,
            block_hash,
            reason: truncate(reason, MAX_REASON_LEN),
            leader_sig: leader.sign_digest(&sign::reset_digest(
                chain_id,
                term,
                height,
                &block_hash,
            )),
        }
    }

    /// Whether `leader` (the leader of the reset's term) signed this reset
    /// on `chain_id`.
    pub fn verify(&self, chain_id: &str, leader: &PublicKey) -> bool {
        sign::verify(
            leader,
            &sign::reset_digest(chain_id, self.term, self.height, &self.block_hash),
            &self.leader_sig,
        )
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::Reset {
        proto::Reset {
            height: self.height,
            block_hash: self.block_hash.0.to_vec(),
            reason: truncate(&self.reason, MAX_REASON_LEN),
            leader_sig: self.leader_sig.0.to_vec(),
            term: self.term,
        }
    }

    /// Decodes the wire form (structure; the reason is cut).
    pub fn from_proto(p: &proto::Reset) -> Result<ResetInfo, DecodeError> {
        const W: &str = "Reset";
        Ok(ResetInfo {
            term: p.term,
            height: p.height,
            block_hash: hash_field(W, "block_hash", &p.block_hash)?,
            reason: truncate(&p.reason, MAX_REASON_LEN),
            leader_sig: sig_field(W, "leader_sig", &p.leader_sig)?,
        })
    }
}

/// What a validator's node provides to receive proposals and resets.
#[async_trait]
pub trait ProposalSink: Send + Sync {
    /// Verifies the proposal (leader, height, prev hash) and says whether
    /// the block is wanted. Blocks-only and sentry nodes answer `false`.
    async fn check(&self, proposal: &ProposalInfo) -> bool;
    /// The wanted block arrived (it is the proposed one).
    async fn receive(&self, proposal: ProposalInfo, block: Block);
    /// A reset arrived (signature not yet checked: [`ResetInfo::verify`]).
    async fn reset(&self, reset: ResetInfo) -> VoteReceipt;
}

/// Proposes `block` to a validator in `term` (with the credential of
/// `term` above term 0), sends it in the same flight and reads whether the
/// validator took it.
pub async fn propose<S>(
    mut stream: S,
    block: &Block,
    term: u64,
    credential: Option<&Credential>,
) -> Result<ProposeOutcome, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    use proto::leader_message::Msg;
    let info = ProposalInfo::in_term(block, term, credential.cloned());
    let msg = proto::LeaderMessage {
        msg: Some(Msg::Proposal(info.to_proto())),
    };
    write_msg(&mut stream, &msg, CONTROL_DEADLINE).await?;
    let p = block.to_proto();
    let size = prost::Message::encoded_len(&p);
    write_msg(&mut stream, &p, transfer_deadline(size)).await?;
    drop(p);
    // The block may still be on its way when the write returns (muxer
    // window, socket buffers): the answer gets the block's own allowance.
    let want: proto::Want = read_msg(&mut stream, CONTROL_MAX, transfer_deadline(size)).await?;
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    Ok(if want.want {
        ProposeOutcome::Sent
    } else {
        ProposeOutcome::NotWanted
    })
}

/// Sends a reset to a validator and returns its receipt.
pub async fn reset<S>(mut stream: S, reset: &ResetInfo) -> Result<VoteReceipt, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    use proto::leader_message::Msg;
    let msg = proto::LeaderMessage {
        msg: Some(Msg::Reset(reset.to_proto())),
    };
    write_msg(&mut stream, &msg, CONTROL_DEADLINE).await?;
    let r: proto::VoteReceipt = read_msg(&mut stream, CONTROL_MAX, CONTROL_DEADLINE).await?;
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    Ok(VoteReceipt::from_proto(&r))
}

/// Receives one leader message. `max_block_bytes` is the genesis limit.
pub async fn serve<S>(
    mut stream: S,
    sink: &impl ProposalSink,
    max_block_bytes: usize,
) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    use proto::leader_message::Msg;
    let msg: proto::LeaderMessage =
        read_msg(&mut stream, LEADER_MESSAGE_MAX, CONTROL_DEADLINE).await?;
    match msg.msg {
        Some(Msg::Proposal(p)) => {
            let info = ProposalInfo::from_proto(&p)?;
            let want = sink.check(&info).await;
            if !want {
                // The block follows anyway: say no at once, then read past
                // it undecoded and unkept, so that a stream of forged
                // proposals costs no memory. (A proposal not signed by its
                // term's leader is reported by the node's `check`.)
                write_msg(&mut stream, &proto::Want { want }, CONTROL_DEADLINE).await?;
                let deadline = transfer_deadline(max_block_bytes);
                skip_frame(&mut stream, max_block_bytes, "Block", deadline).await?;
                return close(&mut stream, CONTROL_DEADLINE).await;
            }
            let block =
                read_announced_block(&mut stream, max_block_bytes, &info.hash, &info.leader_sig)
                    .await?;
            // Answer before handing the block over, so that a busy engine
            // never holds the leader's stream past its deadline.
            write_msg(&mut stream, &proto::Want { want }, CONTROL_DEADLINE).await?;
            let _ = close(&mut stream, CONTROL_DEADLINE).await;
            sink.receive(info, block).await;
            Ok(())
        }
        Some(Msg::Reset(r)) => {
            let info = ResetInfo::from_proto(&r)?;
            let receipt = sink.reset(info).await;
            write_msg(&mut stream, &receipt.to_proto(), CONTROL_DEADLINE).await?;
            close(&mut stream, CONTROL_DEADLINE).await
        }
        None => Err(DecodeError::invalid("LeaderMessage", "neither proposal nor reset").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::sync::Mutex;

    const MAX_BLOCK: usize = 1 << 20;

    /// A validator at height `at` that follows `leader`; a sentry wants
    /// nothing.
    struct Validator {
        at: u64,
        sentry: bool,
        got: Mutex<Vec<Block>>,
        resets: Mutex<Vec<ResetInfo>>,
    }

    impl Validator {
        fn new(at: u64, sentry: bool) -> Validator {
            Validator {
                at,
                sentry,
                got: Mutex::new(Vec::new()),
                resets: Mutex::new(Vec::new()),
            }
        }
    }

    #[async_trait]
    impl ProposalSink for Validator {
        async fn check(&self, p: &ProposalInfo) -> bool {
            !self.sentry && p.height == self.at + 1 && p.verify_leader(&leader().public())
        }
        async fn receive(&self, _p: ProposalInfo, block: Block) {
            self.got.lock().unwrap().push(block);
        }
        async fn reset(&self, r: ResetInfo) -> VoteReceipt {
            if self.sentry {
                return VoteReceipt::refused("sentry nodes do not vote");
            }
            let ok = r.verify(CHAIN, &leader().public());
            self.resets.lock().unwrap().push(r);
            if ok {
                VoteReceipt::accepted()
            } else {
                VoteReceipt::refused("bad signature")
            }
        }
    }

    #[tokio::test]
    async fn proposal_wanted_not_wanted_and_sentry() {
        let b = block(6, 4);
        for (v, want) in [
            (Validator::new(5, false), true),
            (Validator::new(6, false), false),
            (Validator::new(5, true), false),
        ] {
            let (x, y) = pipe();
            let (out, served) = tokio::join!(propose(x, &b, 0, None), serve(y, &v, MAX_BLOCK));
            served.unwrap();
            let expect = if want {
                ProposeOutcome::Sent
            } else {
                ProposeOutcome::NotWanted
            };
            assert_eq!(out.unwrap(), expect);
            assert_eq!(v.got.lock().unwrap().len(), usize::from(want));
        }
        // Signed by another key: the node's check says no.
        let forged = Block::new_signed(header(6), vec![], &key(9));
        let v = Validator::new(5, false);
        let (x, y) = pipe();
        let (out, served) = tokio::join!(propose(x, &forged, 0, None), serve(y, &v, MAX_BLOCK));
        served.unwrap();
        assert_eq!(out.unwrap(), ProposeOutcome::NotWanted);
    }

    /// The block leaves with the proposal: a validator that answers only
    /// once it holds both gets its answer in. (Under 2.0.0 the leader
    /// waited for `Want` before the block, and this validator starved it.)
    #[tokio::test(start_paused = true)]
    async fn block_follows_the_proposal_without_waiting() {
        let b = block(6, 4);
        let (x, mut y) = pipe();
        let validator = async {
            let m: proto::LeaderMessage = read_msg(&mut y, LEADER_MESSAGE_MAX, CONTROL_DEADLINE)
                .await
                .unwrap();
            assert!(matches!(
                m.msg,
                Some(proto::leader_message::Msg::Proposal(_))
            ));
            let got: kite_types::proto::Block =
                read_msg(&mut y, MAX_BLOCK, CONTROL_DEADLINE).await.unwrap();
            assert_eq!(got, b.to_proto());
            write_msg(&mut y, &proto::Want { want: true }, CONTROL_DEADLINE)
                .await
                .unwrap();
            close(&mut y, CONTROL_DEADLINE).await.unwrap();
        };
        let (out, ()) = tokio::join!(propose(x, &b, 0, None), validator);
        assert_eq!(out.unwrap(), ProposeOutcome::Sent);
    }

    /// A validator that does not want the block still reads past it (the
    /// stream stays in step) and says no.
    #[tokio::test]
    async fn unwanted_block_is_read_past_not_decoded() {
        let b = block(6, 3);
        // Already at height 6: proposal 6 is not wanted.
        let v = Validator::new(6, false);
        let run = |script: Vec<u8>| {
            let v = &v;
            async move {
                with_script(
                    script,
                    true,
                    |s| async move { serve(s, v, MAX_BLOCK).await },
                )
                .await
            }
        };
        // A frame that is not a block is read past, not decoded.
        let not_a_block = frames(&[prop(&b), garbage_frame()]);
        run(not_a_block).await.unwrap();
        // But it must be there, and within the block bound.
        assert_err!(run(prop(&b)).await, ProtocolError::Closed { .. });
        let too_big = frames(&[prop(&b), prefix(MAX_BLOCK as u64 + 1)]);
        assert_err!(run(too_big).await, ProtocolError::TooLarge { .. });
        assert!(v.got.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn resets() {
        let bh = block(6, 1).hash();
        let good = ResetInfo::new_signed(&leader(), CHAIN, 0, 6, bh, &"timeout ".repeat(100));
        assert_eq!(good.reason.len(), MAX_REASON_LEN);
        assert!(good.verify(CHAIN, &leader().public()));
        assert!(!good.verify("other", &leader().public()));
        let bad = ResetInfo::new_signed(&key(9), CHAIN, 0, 6, bh, "x");
        let v = Validator::new(5, false);
        for (r, accepted) in [(&good, true), (&bad, false)] {
            let (x, y) = pipe();
            let (out, served) = tokio::join!(reset(x, r), serve(y, &v, MAX_BLOCK));
            served.unwrap();
            assert_eq!(out.unwrap().accepted, accepted);
        }
        assert_eq!(v.resets.lock().unwrap().clone(), vec![good.clone(), bad]);
        let sentry = Validator::new(5, true);
        let (x, y) = pipe();
        let (out, served) = tokio::join!(reset(x, &good), serve(y, &sentry, MAX_BLOCK));
        served.unwrap();
        assert!(!out.unwrap().accepted);
    }

    fn prop(b: &Block) -> Vec<u8> {
        frame(&proto::LeaderMessage {
            msg: Some(proto::leader_message::Msg::Proposal(
                ProposalInfo::of(b).to_proto(),
            )),
        })
    }

    async fn serve_script(script: Vec<u8>, close: bool) -> Result<Vec<Block>, ProtocolError> {
        let v = Validator::new(5, false);
        with_script(script, close, |s| async { serve(s, &v, MAX_BLOCK).await }).await?;
        Ok(v.got.into_inner().unwrap())
    }

    #[tokio::test]
    async fn forged_proposals() {
        let b = block(6, 3);
        let ok = serve_script(frames(&[prop(&b), frame(&b.to_proto())]), true).await;
        assert_eq!(ok.unwrap(), vec![b.clone()]);
        // Header does not hash to the proposed hash.
        let mut p = ProposalInfo::of(&b).to_proto();
        p.hash = vec![3; 32];
        let m = proto::LeaderMessage {
            msg: Some(proto::leader_message::Msg::Proposal(p)),
        };
        assert_err!(
            serve_script(frame(&m), true).await,
            ProtocolError::Invalid { .. }
        );
        // Another block follows.
        let other = block(6, 2);
        let r = serve_script(frames(&[prop(&b), frame(&other.to_proto())]), true).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // Tx list tampered with.
        let mut txs = b.txs().to_vec();
        txs.swap(0, 1);
        let swapped = Block::from_parts(b.header().clone(), txs, *b.leader_sig());
        let r = serve_script(frames(&[prop(&b), frame(&swapped.to_proto())]), true).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // Empty leader message; malformed reset.
        let r = serve_script(frame(&proto::LeaderMessage { msg: None }), true).await;
        assert_err!(r, ProtocolError::Decode(_));
        let m = proto::LeaderMessage {
            msg: Some(proto::leader_message::Msg::Reset(proto::Reset {
                term: 0,
                height: 6,
                block_hash: vec![1; 32],
                reason: String::new(),
                leader_sig: vec![1; 5],
            })),
        };
        assert_err!(
            serve_script(frame(&m), true).await,
            ProtocolError::Decode(_)
        );
    }

    #[tokio::test]
    async fn bad_bytes() {
        let b = block(6, 3);
        assert_err!(
            serve_script(prefix(LEADER_MESSAGE_MAX as u64 + 1), false).await,
            ProtocolError::TooLarge { .. }
        );
        let r = serve_script(frames(&[prop(&b), prefix(MAX_BLOCK as u64 + 1)]), false).await;
        assert_err!(r, ProtocolError::TooLarge { .. });
        assert_err!(
            serve_script(garbage_frame(), true).await,
            ProtocolError::Decode(_)
        );
        let f = frame(&b.to_proto());
        let n = f.len() - 1;
        let r = serve_script(frames(&[prop(&b), cut(f, n)]), true).await;
        assert_err!(r, ProtocolError::Truncated { .. });
        // Leader side.
        let run = |script: Vec<u8>, close: bool| {
            let b = &b;
            async move {
                with_script(
                    script,
                    close,
                    |s| async move { propose(s, b, 0, None).await },
                )
                .await
            }
        };
        assert_err!(run(garbage_frame(), true).await, ProtocolError::Decode(_));
        assert_err!(
            run(prefix(5000), false).await,
            ProtocolError::TooLarge { .. }
        );
        assert_err!(run(Vec::new(), true).await, ProtocolError::Closed { .. });
        let r = ResetInfo::new_signed(&leader(), CHAIN, 0, 6, b.hash(), "t");
        let out = with_script(garbage_frame(), true, |s| async { reset(s, &r).await }).await;
        assert_err!(out, ProtocolError::Decode(_));
    }

    #[tokio::test(start_paused = true)]
    async fn drip_fed() {
        let b = block(6, 3);
        let v = Validator::new(5, false);
        let r = with_drip(prop(&b), frame(&b.to_proto()), |s| async {
            serve(s, &v, MAX_BLOCK).await
        })
        .await;
        assert_err!(r, ProtocolError::Timeout { .. });
        assert!(v.got.lock().unwrap().is_empty());
        let r = with_drip(Vec::new(), prop(&b), |s| async {
            serve(s, &v, MAX_BLOCK).await
        })
        .await;
        assert_err!(r, ProtocolError::Timeout { .. });
        let slow = padded_frame(&proto::Want { want: true }, 20);
        let r = with_drip(Vec::new(), slow, |s| async {
            propose(s, &b, 0, None).await
        })
        .await;
        assert_err!(r, ProtocolError::Timeout { .. });
    }
}
