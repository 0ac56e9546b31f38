//! `/kite/ack/3.0.0`: a validator sends its vote (ACK or NACK) to the
//! leader of its term (3.0.0: votes carry their term, signed when above
//! 0).
//!
//! 1. Validator sends `VoteMessage{vote, best_header?}`. `best_header` is an
//!    unsigned hint: a validator that has already committed past the voted
//!    height sends its best header so a lagging leader learns it must sync.
//! 2. Leader answers `VoteReceipt{accepted, reason}` (promptly: the receipt
//!    says the vote was taken in, or why not) and closes.
//! 3. The validator closes.
//!
//! Checked here: the vote and header are well formed (field sizes, header
//! version). Checked by the node: the vote signature (with the chain id),
//! that the voter is a validator, the height and block hash.

use crate::framing::{close, read_msg, write_msg};
use crate::limits::{CONTROL_DEADLINE, CONTROL_MAX, MAX_REASON_LEN, truncate};
use crate::{ProtocolError, proto};
use async_trait::async_trait;
use futures::io::{AsyncRead, AsyncWrite};
use kite_types::{BlockHeader, DecodeError, Vote};

/// The protocol id.
pub const PROTOCOL: &str = "/kite/ack/3.0.0";

/// The leader's answer to a vote (and a validator's answer to a reset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteReceipt {
    /// Whether the message was taken in.
    pub accepted: bool,
    /// Why not (at most [`MAX_REASON_LEN`] bytes; empty when accepted).
    pub reason: String,
}

impl VoteReceipt {
    /// An accepting receipt.
    pub fn accepted() -> VoteReceipt {
        VoteReceipt {
            accepted: true,
            reason: String::new(),
        }
    }

    /// A refusing receipt; `reason` is cut to [`MAX_REASON_LEN`] bytes.
    pub fn refused(reason: &str) -> VoteReceipt {
        VoteReceipt {
            accepted: false,
            reason: truncate(reason, MAX_REASON_LEN),
        }
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::VoteReceipt {
        proto::VoteReceipt {
            accepted: self.accepted,
            reason: truncate(&self.reason, MAX_REASON_LEN),
        }
    }

    /// From the wire form (the reason is cut to [`MAX_REASON_LEN`] bytes).
    pub fn from_proto(p: &proto::VoteReceipt) -> VoteReceipt {
        VoteReceipt {
            accepted: p.accepted,
            reason: truncate(&p.reason, MAX_REASON_LEN),
        }
    }
}

/// What the leader's node provides to receive votes.
#[async_trait]
pub trait VoteSink: Send + Sync {
    /// Takes a vote in (signature not yet checked) and answers at once.
    async fn vote(&self, vote: Vote, best_header: Option<BlockHeader>) -> VoteReceipt;
}

/// Sends a vote to the leader and returns its receipt.
pub async fn send_vote<S>(
    mut stream: S,
    vote: &Vote,
    best_header: Option<&BlockHeader>,
) -> Result<VoteReceipt, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let msg = proto::VoteMessage {
        vote: Some(vote.to_proto()),
        best_header: best_header.map(BlockHeader::to_proto),
    };
    write_msg(&mut stream, &msg, CONTROL_DEADLINE).await?;
    let r: proto::VoteReceipt = read_msg(&mut stream, CONTROL_MAX, CONTROL_DEADLINE).await?;
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    Ok(VoteReceipt::from_proto(&r))
}

/// Receives one vote.
pub async fn serve<S>(mut stream: S, sink: &impl VoteSink) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    const W: &str = "VoteMessage";
    let msg: proto::VoteMessage = read_msg(&mut stream, CONTROL_MAX, CONTROL_DEADLINE).await?;
    let vote = msg
        .vote
        .as_ref()
        .ok_or_else(|| DecodeError::invalid(W, "no vote"))?;
    let vote = Vote::from_proto(vote)?;
    let best_header = msg
        .best_header
        .as_ref()
        .map(BlockHeader::from_proto)
        .transpose()?;
    let receipt = sink.vote(vote, best_header).await;
    write_msg(&mut stream, &receipt.to_proto(), CONTROL_DEADLINE).await?;
    close(&mut stream, CONTROL_DEADLINE).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use kite_types::Hash;
    use std::sync::Mutex;

    /// Accepts votes at height 5 only; records them.
    #[derive(Default)]
    struct Leader {
        got: Mutex<Vec<(Vote, Option<BlockHeader>)>>,
    }

    #[async_trait]
    impl VoteSink for Leader {
        async fn vote(&self, vote: Vote, best_header: Option<BlockHeader>) -> VoteReceipt {
            let ok = vote.height == 5;
            self.got.lock().unwrap().push((vote, best_header));
            if ok {
                VoteReceipt::accepted()
            } else {
                VoteReceipt::refused(&"wrong height ".repeat(100))
            }
        }
    }

    fn vote(height: u64) -> Vote {
        Vote::ack(
            &key(2),
            CHAIN,
            height,
            Hash::digest(b"b"),
            Hash::digest(b"a"),
        )
    }

    #[tokio::test]
    async fn votes_and_receipts() {
        let leader = Leader::default();
        let v5 = vote(5);
        let (a, b) = pipe();
        let (r, served) = tokio::join!(send_vote(a, &v5, None), serve(b, &leader));
        served.unwrap();
        assert_eq!(r.unwrap(), VoteReceipt::accepted());
        let h = header(7);
        let nack = Vote::nack(&key(3), CHAIN, 4, Hash::digest(b"b"), "bad tx", &[]);
        let (a, b) = pipe();
        let (r, served) = tokio::join!(send_vote(a, &nack, Some(&h)), serve(b, &leader));
        served.unwrap();
        let r = r.unwrap();
        assert!(!r.accepted);
        assert_eq!(r.reason.len(), MAX_REASON_LEN);
        let got = leader.got.lock().unwrap().clone();
        assert_eq!(got, vec![(vote(5), None), (nack, Some(h))]);
        assert!(got[1].0.verify(CHAIN));
    }

    async fn serve_script(script: Vec<u8>, close: bool) -> Result<usize, ProtocolError> {
        let leader = Leader::default();
        with_script(script, close, |s| async { serve(s, &leader).await }).await?;
        Ok(leader.got.lock().unwrap().len())
    }

    #[tokio::test]
    async fn bad_votes() {
        let good = proto::VoteMessage {
            vote: Some(vote(5).to_proto()),
            best_header: None,
        };
        assert_eq!(serve_script(frame(&good), true).await.unwrap(), 1);
        let mut p = good.clone();
        p.vote = None;
        assert_err!(
            serve_script(frame(&p), true).await,
            ProtocolError::Decode(_)
        );
        let mut p = good.clone();
        if let Some(v) = p.vote.as_mut() {
            v.signature.truncate(63);
        }
        assert_err!(
            serve_script(frame(&p), true).await,
            ProtocolError::Decode(_)
        );
        let mut p = good.clone();
        let mut h = header(3).to_proto();
        h.version = 99;
        p.best_header = Some(h);
        assert_err!(
            serve_script(frame(&p), true).await,
            ProtocolError::Decode(_)
        );
        assert_err!(
            serve_script(prefix(5000), false).await,
            ProtocolError::TooLarge { .. }
        );
        assert_err!(
            serve_script(garbage_frame(), true).await,
            ProtocolError::Decode(_)
        );
        assert_err!(
            serve_script(cut(frame(&good), 40), true).await,
            ProtocolError::Truncated { .. }
        );
        assert_err!(
            serve_script(Vec::new(), true).await,
            ProtocolError::Closed { .. }
        );
    }

    #[tokio::test]
    async fn bad_receipts() {
        let v = vote(5);
        let run = |script: Vec<u8>, close: bool| {
            let v = &v;
            async move {
                with_script(
                    script,
                    close,
                    |s| async move { send_vote(s, v, None).await },
                )
                .await
            }
        };
        assert_err!(
            run(prefix(5000), false).await,
            ProtocolError::TooLarge { .. }
        );
        assert_err!(run(garbage_frame(), true).await, ProtocolError::Decode(_));
        assert_err!(
            run(vec![0x05, 0x08], true).await,
            ProtocolError::Truncated { .. }
        );
        let long = proto::VoteReceipt {
            accepted: false,
            reason: "é".repeat(1000),
        };
        let r = run(frame(&long), true).await.unwrap();
        assert!(r.reason.len() <= MAX_REASON_LEN && !r.accepted);
    }

    #[tokio::test(start_paused = true)]
    async fn drip_fed() {
        let leader = Leader::default();
        let msg = proto::VoteMessage {
            vote: Some(vote(5).to_proto()),
            best_header: None,
        };
        let r = with_drip(Vec::new(), frame(&msg), |s| async {
            serve(s, &leader).await
        })
        .await;
        assert_err!(r, ProtocolError::Timeout { .. });
        assert!(leader.got.lock().unwrap().is_empty());
        let v = vote(5);
        let slow = padded_frame(
            &proto::VoteReceipt {
                accepted: true,
                reason: String::new(),
            },
            30,
        );
        let r = with_drip(Vec::new(), slow, |s| async { send_vote(s, &v, None).await }).await;
        assert_err!(r, ProtocolError::Timeout { .. });
    }
}
