//! `/kite/term/1.0.0`: a validator sends its term change to another
//! validator (docs/CONSENSUS.md, "Terms and leader failover").
//!
//! 1. The sender writes `TermMessage{change, leader_sig}`. `leader_sig` is
//!    set only when the change ACKed a block and the sender offers that
//!    block (it does so to the leader of the new term, which must propose
//!    it again).
//! 2. The receiver answers `Want{want}`: whether it wants the offered
//!    block. A change that offers nothing gets `Want{false}`.
//! 3. If wanted, the sender writes the encoded `Block`; the receiver checks
//!    it is the ACKed block with that leader signature.
//! 4. Both close.
//!
//! Checked here: the change decodes (term above 0, an ACK of an earlier
//! term); the block is the offered one. Checked by the node: the change's
//! signature, that the signer is a validator and sent it itself, and the
//! block's leader signature against the schedule.

use crate::blk::read_announced_block;
use crate::blkann::{AnnounceOutcome, send_if_wanted};
use crate::framing::{close, read_msg, write_msg};
use crate::limits::{CONTROL_DEADLINE, CONTROL_MAX};
use crate::{ProtocolError, proto};
use async_trait::async_trait;
use futures::io::{AsyncRead, AsyncWrite};
use kite_types::codec::sig_field;
use kite_types::{Block, DecodeError, Signature, TermChange};

/// The protocol id.
pub const PROTOCOL: &str = "/kite/term/1.0.0";

/// What a validator's node provides to receive term changes.
#[async_trait]
pub trait TermSink: Send + Sync {
    /// Whether the block the change ACKed (offered with `leader_sig`) is
    /// wanted. Called only when a block is offered.
    async fn want_block(&self, change: &TermChange) -> bool;
    /// The change (signature not yet checked), with the offered block if
    /// it was wanted and came.
    async fn receive(&self, change: TermChange, block: Option<Block>);
}

/// Sends `change` to a validator, offering `block` (the block it ACKed)
/// when given; the block goes only if the receiver wants it.
pub async fn send<S>(
    mut stream: S,
    change: &TermChange,
    block: Option<&Block>,
) -> Result<AnnounceOutcome, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let block = block.filter(|b| change.acked.is_some_and(|a| a.block_hash == b.hash()));
    let msg = proto::TermMessage {
        change: Some(change.to_proto()),
        leader_sig: block.map(|b| b.leader_sig().0.to_vec()).unwrap_or_default(),
    };
    write_msg(&mut stream, &msg, CONTROL_DEADLINE).await?;
    let outcome = match block {
        Some(b) => send_if_wanted(&mut stream, b).await?,
        None => {
            let _: proto::Want = read_msg(&mut stream, CONTROL_MAX, CONTROL_DEADLINE).await?;
            AnnounceOutcome::NotWanted
        }
    };
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    Ok(outcome)
}

/// Receives one term change. `max_block_bytes` is the genesis limit.
pub async fn serve<S>(
    mut stream: S,
    sink: &impl TermSink,
    max_block_bytes: usize,
) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    const W: &str = "TermMessage";
    let msg: proto::TermMessage = read_msg(&mut stream, CONTROL_MAX, CONTROL_DEADLINE).await?;
    let change = msg
        .change
        .as_ref()
        .ok_or_else(|| DecodeError::invalid(W, "no change"))?;
    let change = TermChange::from_proto(change)?;
    let offered: Option<Signature> = if msg.leader_sig.is_empty() {
        None
    } else {
        Some(sig_field(W, "leader_sig", &msg.leader_sig)?)
    };
    let offered = match (offered, change.acked) {
        (Some(sig), Some(a)) => Some((sig, a.block_hash)),
        (Some(_), None) => {
            return Err(DecodeError::invalid(W, "offers a block but ACKed none").into());
        }
        _ => None,
    };
    let want = match &offered {
        Some(_) => sink.want_block(&change).await,
        None => false,
    };
    write_msg(&mut stream, &proto::Want { want }, CONTROL_DEADLINE).await?;
    let block = match offered {
        Some((sig, hash)) if want => {
            Some(read_announced_block(&mut stream, max_block_bytes, &hash, &sig).await?)
        }
        _ => None,
    };
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    sink.receive(change, block).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use kite_types::Acked;
    use std::sync::Mutex;

    const MAX_BLOCK: usize = 1 << 20;

    struct Leader {
        want: bool,
        got: Mutex<Vec<(TermChange, Option<Block>)>>,
    }

    #[async_trait]
    impl TermSink for Leader {
        async fn want_block(&self, _: &TermChange) -> bool {
            self.want
        }
        async fn receive(&self, change: TermChange, block: Option<Block>) {
            self.got.lock().unwrap().push((change, block));
        }
    }

    fn leader(want: bool) -> Leader {
        Leader {
            want,
            got: Mutex::new(Vec::new()),
        }
    }

    fn change(acked: Option<&Block>) -> TermChange {
        let acked = acked.map(|b| Acked {
            block_hash: b.hash(),
            term: 0,
            timestamp_ms: b.header().timestamp_ms,
        });
        TermChange::new(&key(2), CHAIN, 1, 6, acked)
    }

    #[tokio::test]
    async fn changes_with_and_without_the_acked_block() {
        let b = block(6, 3);
        for (offer, want, sent) in [
            (true, true, AnnounceOutcome::Sent),
            (true, false, AnnounceOutcome::NotWanted),
            (false, true, AnnounceOutcome::NotWanted),
        ] {
            let l = leader(want);
            let c = change(Some(&b));
            let (x, y) = pipe();
            let (r, served) =
                tokio::join!(send(x, &c, offer.then_some(&b)), serve(y, &l, MAX_BLOCK));
            served.unwrap();
            assert_eq!(r.unwrap(), sent);
            let got = l.got.lock().unwrap().clone();
            let block = (sent == AnnounceOutcome::Sent).then(|| b.clone());
            assert_eq!(got, vec![(c.clone(), block)]);
            assert!(got[0].0.verify(CHAIN));
        }
        // A block that is not the ACKed one is never offered.
        let l = leader(true);
        let c = change(None);
        let (x, y) = pipe();
        let (r, served) = tokio::join!(send(x, &c, Some(&b)), serve(y, &l, MAX_BLOCK));
        served.unwrap();
        assert_eq!(r.unwrap(), AnnounceOutcome::NotWanted);
    }

    async fn serve_script(script: Vec<u8>) -> Result<usize, ProtocolError> {
        let l = leader(true);
        with_script(script, true, |s| async { serve(s, &l, MAX_BLOCK).await }).await?;
        Ok(l.got.lock().unwrap().len())
    }

    #[tokio::test]
    async fn bad_messages() {
        let b = block(6, 3);
        let good = proto::TermMessage {
            change: Some(change(None).to_proto()),
            leader_sig: Vec::new(),
        };
        assert_eq!(serve_script(frame(&good)).await.unwrap(), 1);
        let mut p = good.clone();
        p.change = None;
        assert_err!(serve_script(frame(&p)).await, ProtocolError::Decode(_));
        // A block offered for a change that ACKed none.
        let mut p = good.clone();
        p.leader_sig = b.leader_sig().0.to_vec();
        assert_err!(serve_script(frame(&p)).await, ProtocolError::Decode(_));
        // Term 0 is no change.
        let mut p = good.clone();
        if let Some(c) = p.change.as_mut() {
            c.term = 0;
        }
        assert_err!(serve_script(frame(&p)).await, ProtocolError::Decode(_));
        // Another block than the offered one.
        let offered = proto::TermMessage {
            change: Some(change(Some(&b)).to_proto()),
            leader_sig: b.leader_sig().0.to_vec(),
        };
        let mut script = frame(&offered);
        script.extend(frame(&block(6, 4).to_proto()));
        assert!(serve_script(script).await.is_err());
        assert_err!(
            serve_script(vec![0xff, 0xff, 0xff, 0x7f]).await,
            ProtocolError::Decode(_) | ProtocolError::TooLarge { .. }
        );
        assert_err!(
            serve_script(vec![0x05, 1]).await,
            ProtocolError::Truncated { .. }
        );
    }
}
