//! `/kite/blkann/1.0.0`: announce a committed block; push it if wanted.
//!
//! 1. Announcer sends `BlockAnnounce{height, hash, header, leader_sig,
//!    commit_info}`.
//! 2. Receiver checks the announcement, answers `Want{want}`.
//! 3. If `want` is false, both sides are done (the announcer closes).
//!    Otherwise the announcer sends the encoded `Block` and closes.
//! 4. The receiver checks the block is the announced one and hands it over.
//!
//! Checked here: the header decodes and hashes to `hash`, its height is
//! `height`, the signature and commit info are well formed; the block that
//! follows has the announced hash and leader signature and a tx root that
//! matches its txs. Checked by the node (in [`AnnounceSink::check`], before
//! wanting the block): the leader signature over the hash, the commit info
//! (a quorum of valid ACKs for this block), and whether the block is needed
//! at all (a validator that executed the same proposal only needs the
//! commit info).

use crate::blk::read_announced_block;
use crate::framing::{close, read_msg, write_msg};
use crate::limits::{BLOCK_ANNOUNCE_MAX, CONTROL_DEADLINE, CONTROL_MAX, transfer_deadline};
use crate::{ProtocolError, proto};
use async_trait::async_trait;
use futures::io::{AsyncRead, AsyncWrite};
use kite_types::codec::{hash_field, sig_field};
use kite_types::genesis::MAX_VALIDATORS;
use kite_types::{Block, BlockHeader, CommitInfo, DecodeError, Hash, Signature};

/// The protocol id.
pub const PROTOCOL: &str = "/kite/blkann/1.0.0";

/// A decoded committed-block announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceInfo {
    /// The block height (equals `header.height`).
    pub height: u64,
    /// The block hash (the hash of `header`).
    pub hash: Hash,
    /// The block header.
    pub header: BlockHeader,
    /// The leader's signature over the block hash.
    pub leader_sig: Signature,
    /// The app hash and the ACKs that committed the block.
    pub commit_info: CommitInfo,
}

impl AnnounceInfo {
    /// The announcement of a committed block.
    pub fn of(block: &Block, commit_info: &CommitInfo) -> AnnounceInfo {
        AnnounceInfo {
            height: block.height(),
            hash: block.hash(),
            header: block.header().clone(),
            leader_sig: *block.leader_sig(),
            commit_info: commit_info.clone(),
        }
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::BlockAnnounce {
        proto::BlockAnnounce {
            height: self.height,
            hash: self.hash.0.to_vec(),
            header: Some(self.header.to_proto()),
            leader_sig: self.leader_sig.0.to_vec(),
            commit_info: Some(self.commit_info.to_proto()),
        }
    }

    /// Decodes and checks the wire form (header hash and height match).
    pub fn from_proto(p: &proto::BlockAnnounce) -> Result<AnnounceInfo, ProtocolError> {
        const W: &str = "BlockAnnounce";
        let (header, hash) = checked_header(W, p.header.as_ref(), p.height, &p.hash)?;
        let ci = p
            .commit_info
            .as_ref()
            .ok_or_else(|| DecodeError::invalid(W, "no commit info"))?;
        Ok(AnnounceInfo {
            height: p.height,
            hash,
            header,
            leader_sig: sig_field(W, "leader_sig", &p.leader_sig)?,
            commit_info: CommitInfo::from_proto(ci, MAX_VALIDATORS)?,
        })
    }
}

/// Decodes an announced header and checks it hashes to `hash` and sits at
/// `height`.
pub(crate) fn checked_header(
    what: &'static str,
    header: Option<&kite_types::proto::BlockHeader>,
    height: u64,
    hash: &[u8],
) -> Result<(BlockHeader, Hash), ProtocolError> {
    let header = header.ok_or_else(|| DecodeError::invalid(what, "no header"))?;
    let header = BlockHeader::from_proto(header)?;
    let hash = hash_field(what, "hash", hash)?;
    if header.hash() != hash {
        return Err(ProtocolError::invalid(
            what,
            format!(
                "header hashes to {}, announced {}",
                header.hash().short(),
                hash.short()
            ),
        ));
    }
    if header.height != height {
        return Err(ProtocolError::invalid(
            what,
            format!("header is at height {}, announced {height}", header.height),
        ));
    }
    Ok((header, hash))
}

/// What happened to an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceOutcome {
    /// The peer wanted the block and it was sent.
    Sent,
    /// The peer did not want the block.
    NotWanted,
}

/// What the node provides to receive committed-block announcements.
#[async_trait]
pub trait AnnounceSink: Send + Sync {
    /// Verifies the announcement (leader signature, commit info) and says
    /// whether the block itself is wanted. An announcement that fails the
    /// node's checks should also answer `false` (and the node may penalise
    /// the peer).
    async fn check(&self, info: &AnnounceInfo) -> bool;
    /// The wanted block arrived (it is the announced one).
    async fn receive(&self, info: AnnounceInfo, block: Block);
}

/// Announces a committed block and sends it if wanted.
pub async fn announce<S>(
    mut stream: S,
    block: &Block,
    commit_info: &CommitInfo,
) -> Result<AnnounceOutcome, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let ann = AnnounceInfo::of(block, commit_info).to_proto();
    write_msg(&mut stream, &ann, transfer_deadline(BLOCK_ANNOUNCE_MAX)).await?;
    let outcome = send_if_wanted(&mut stream, block).await?;
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    Ok(outcome)
}

/// Reads a `Want` and sends the block if wanted.
pub(crate) async fn send_if_wanted<S>(
    stream: &mut S,
    block: &Block,
) -> Result<AnnounceOutcome, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let want: proto::Want = read_msg(stream, CONTROL_MAX, CONTROL_DEADLINE).await?;
    if !want.want {
        return Ok(AnnounceOutcome::NotWanted);
    }
    let p = block.to_proto();
    let size = prost::Message::encoded_len(&p);
    write_msg(stream, &p, transfer_deadline(size)).await?;
    Ok(AnnounceOutcome::Sent)
}

/// Receives one announcement. `max_block_bytes` is the genesis limit.
pub async fn serve<S>(
    mut stream: S,
    sink: &impl AnnounceSink,
    max_block_bytes: usize,
) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let p: proto::BlockAnnounce = read_msg(
        &mut stream,
        BLOCK_ANNOUNCE_MAX,
        transfer_deadline(BLOCK_ANNOUNCE_MAX),
    )
    .await?;
    let info = AnnounceInfo::from_proto(&p)?;
    let want = sink.check(&info).await;
    write_msg(&mut stream, &proto::Want { want }, CONTROL_DEADLINE).await?;
    if !want {
        return close(&mut stream, CONTROL_DEADLINE).await;
    }
    let block =
        read_announced_block(&mut stream, max_block_bytes, &info.hash, &info.leader_sig).await?;
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    sink.receive(info, block).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::sync::Mutex;

    const MAX_BLOCK: usize = 1 << 20;

    /// Wants blocks at heights above `have`; records what it receives.
    struct Sink {
        have: u64,
        checked: Mutex<Vec<AnnounceInfo>>,
        got: Mutex<Vec<Block>>,
    }

    impl Sink {
        fn new(have: u64) -> Sink {
            Sink {
                have,
                checked: Mutex::new(Vec::new()),
                got: Mutex::new(Vec::new()),
            }
        }
    }

    #[async_trait]
    impl AnnounceSink for Sink {
        async fn check(&self, info: &AnnounceInfo) -> bool {
            self.checked.lock().unwrap().push(info.clone());
            info.height > self.have
        }
        async fn receive(&self, _info: AnnounceInfo, block: Block) {
            self.got.lock().unwrap().push(block);
        }
    }

    #[tokio::test]
    async fn wanted_and_not_wanted() {
        let b = block(4, 3);
        let ci = commit_info(&b);
        let sink = Sink::new(3);
        let (x, y) = pipe();
        let (out, served) = tokio::join!(announce(x, &b, &ci), serve(y, &sink, MAX_BLOCK));
        served.unwrap();
        assert_eq!(out.unwrap(), AnnounceOutcome::Sent);
        assert_eq!(sink.got.lock().unwrap().clone(), vec![b.clone()]);
        assert_eq!(sink.checked.lock().unwrap()[0], AnnounceInfo::of(&b, &ci));
        let sink = Sink::new(4);
        let (x, y) = pipe();
        let (out, served) = tokio::join!(announce(x, &b, &ci), serve(y, &sink, MAX_BLOCK));
        served.unwrap();
        assert_eq!(out.unwrap(), AnnounceOutcome::NotWanted);
        assert!(sink.got.lock().unwrap().is_empty());
        assert_eq!(sink.checked.lock().unwrap().len(), 1);
    }

    fn ann(b: &Block) -> proto::BlockAnnounce {
        AnnounceInfo::of(b, &commit_info(b)).to_proto()
    }

    async fn serve_script(script: Vec<u8>, close: bool) -> Result<Vec<Block>, ProtocolError> {
        let sink = Sink::new(0);
        with_script(script, close, |s| async {
            serve(s, &sink, MAX_BLOCK).await
        })
        .await?;
        Ok(sink.got.into_inner().unwrap())
    }

    #[tokio::test]
    async fn forged_announcements() {
        let b = block(4, 3);
        let ok = serve_script(frames(&[frame(&ann(&b)), frame(&b.to_proto())]), true).await;
        assert_eq!(ok.unwrap(), vec![b.clone()]);
        // Announced hash is not the header's hash.
        let mut p = ann(&b);
        p.hash = block(5, 0).hash().0.to_vec();
        let r = serve_script(frame(&p), true).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // Announced height is not the header's.
        let mut p = ann(&b);
        p.height = 5;
        let r = serve_script(frame(&p), true).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // Another block than announced follows.
        let other = block(4, 2);
        let r = serve_script(frames(&[frame(&ann(&b)), frame(&other.to_proto())]), true).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // The announced block with a txs list cut short (tx root mismatch).
        let cut_txs = Block::from_parts(b.header().clone(), b.txs()[..2].to_vec(), *b.leader_sig());
        let r = serve_script(frames(&[frame(&ann(&b)), frame(&cut_txs.to_proto())]), true).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // The announced block with another leader signature.
        let mut p = b.to_proto();
        p.leader_sig = vec![9; 64];
        let r = serve_script(frames(&[frame(&ann(&b)), frame(&p)]), true).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // Missing parts.
        let mut p = ann(&b);
        p.commit_info = None;
        let r = serve_script(frame(&p), true).await;
        assert_err!(r, ProtocolError::Decode(_));
        let mut p = ann(&b);
        p.leader_sig = vec![1; 10];
        let r = serve_script(frame(&p), true).await;
        assert_err!(r, ProtocolError::Decode(_));
    }

    #[tokio::test]
    async fn bad_bytes() {
        let b = block(4, 3);
        let r = serve_script(prefix(BLOCK_ANNOUNCE_MAX as u64 + 1), false).await;
        assert_err!(r, ProtocolError::TooLarge { .. });
        let r = serve_script(
            frames(&[frame(&ann(&b)), prefix(MAX_BLOCK as u64 + 1)]),
            false,
        )
        .await;
        assert_err!(r, ProtocolError::TooLarge { .. });
        let r = serve_script(garbage_frame(), true).await;
        assert_err!(r, ProtocolError::Decode(_));
        let r = serve_script(frames(&[frame(&ann(&b)), garbage_frame()]), true).await;
        assert_err!(r, ProtocolError::Decode(_));
        let f = frame(&b.to_proto());
        let n = f.len() / 2;
        let r = serve_script(frames(&[frame(&ann(&b)), cut(f, n)]), true).await;
        assert_err!(r, ProtocolError::Truncated { .. });
        // Announcer side.
        let ci = commit_info(&b);
        let run = |script: Vec<u8>, close: bool| {
            let (b, ci) = (&b, &ci);
            async move { with_script(script, close, |s| async move { announce(s, b, ci).await }).await }
        };
        let r = run(garbage_frame(), true).await;
        assert_err!(r, ProtocolError::Decode(_));
        let r = run(prefix(CONTROL_MAX as u64 + 1), false).await;
        assert_err!(r, ProtocolError::TooLarge { .. });
        let r = run(vec![0x82], true).await;
        assert_err!(r, ProtocolError::Truncated { .. });
        let r = run(Vec::new(), true).await;
        assert_err!(r, ProtocolError::Closed { .. });
        let r = run(frame(&proto::Want { want: true }), true).await;
        assert_eq!(r.unwrap(), AnnounceOutcome::Sent);
    }

    #[tokio::test(start_paused = true)]
    async fn drip_fed() {
        let b = block(4, 3);
        let sink = Sink::new(0);
        let r = with_drip(frame(&ann(&b)), frame(&b.to_proto()), |s| async {
            serve(s, &sink, MAX_BLOCK).await
        })
        .await;
        assert_err!(r, ProtocolError::Timeout { .. });
        assert!(sink.got.lock().unwrap().is_empty());
        let ci = commit_info(&b);
        let r = with_drip(
            Vec::new(),
            padded_frame(&proto::Want { want: true }, 20),
            |s| async { announce(s, &b, &ci).await },
        )
        .await;
        assert_err!(r, ProtocolError::Timeout { .. });
    }
}
