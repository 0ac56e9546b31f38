//! `/kite/blk/1.0.0`: fetch one committed block with its commit info, by
//! height or by hash (block sync).
//!
//! 1. Initiator sends `BlockRequest{height | hash}`.
//! 2. Handler answers `BlockResponse{found, block, commit_info, best_height}`
//!    (`best_height` is its highest committed height, sent also when the
//!    block is not found) and closes.
//! 3. Initiator checks the reply and closes.
//!
//! Range variant (block sync): `BlockRequest{height, count}` is answered
//! with up to `count` (at most [`MAX_RANGE`]) `BlockResponse`s for
//! consecutive heights, one message each, ending early with `found = false`
//! at a height the handler lacks or after [`RANGE_BYTES`] (the requester
//! reads no further than that either); see [`request_range`].
//!
//! Checked here: the block decodes, is at most `max_block_bytes`, is the one
//! asked for (height or hash), its tx root matches its txs, and the commit
//! info decodes (at most [`MAX_VALIDATORS`] votes). Checked by the node: the
//! leader signature, the commit info (quorum of valid ACKs for this block),
//! the prev-hash chain, and execution.

use crate::budget::ByteBudget;
use crate::framing::{close, read_msg, write_msg};
use crate::limits::{CONTROL_DEADLINE, CONTROL_MAX, block_response_max, transfer_deadline};
use crate::{ProtocolError, proto};
use async_trait::async_trait;
use futures::io::{AsyncRead, AsyncWrite};
use kite_types::codec::hash_field;
use kite_types::genesis::MAX_VALIDATORS;
use kite_types::{Block, CommitInfo, DecodeError, Hash, Signature};
use prost::Message;

/// The protocol id.
pub const PROTOCOL: &str = "/kite/blk/1.0.0";

/// Which block to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockQuery {
    /// The committed block at this height.
    Height(u64),
    /// The committed block with this hash.
    Hash(Hash),
}

/// The answer to a block request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockReply {
    /// The block and its commit info, if the peer has it.
    pub block: Option<(Block, CommitInfo)>,
    /// The peer's highest committed height.
    pub best_height: u64,
}

/// What the node provides to serve block requests.
#[async_trait]
pub trait BlockSource: Send + Sync {
    /// The committed block matching `query`, and the best height.
    async fn block(&self, query: BlockQuery) -> BlockReply;

    /// The bytes served blocks may take while they wait to be written (see
    /// [`serve`]). `None`: only [`RANGE_BYTES`] bounds a range answer.
    fn budget(&self) -> Option<ByteBudget> {
        None
    }

    /// The committed blocks from height `from` on, consecutive, at most
    /// `count`, stopping at the first missing one and once they weigh
    /// `max_bytes` or more; and the best height. The default asks
    /// [`BlockSource::block`] for each; a store should read them at once.
    async fn range(&self, from: u64, count: u32, max_bytes: usize) -> RangeReply {
        let mut out = RangeReply {
            blocks: Vec::new(),
            best_height: 0,
        };
        let mut bytes = 0usize;
        for i in 0..u64::from(count) {
            let reply = self.block(BlockQuery::Height(from.saturating_add(i))).await;
            out.best_height = out.best_height.max(reply.best_height);
            let Some((b, ci)) = reply.block else {
                break;
            };
            let size: usize = b.txs().iter().map(|t| t.size()).sum();
            bytes = bytes.saturating_add(size.saturating_add(512));
            out.blocks.push((b, ci));
            if bytes >= max_bytes {
                break;
            }
        }
        out
    }
}

/// Most blocks one range request asks for.
pub const MAX_RANGE: u32 = 64;
/// Bytes after which a handler ends a range answer.
pub const RANGE_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of blocks a handler reads (and holds) at a time while it answers
/// a range: a piece is written before the next is read.
pub const RANGE_PIECE_BYTES: usize = 1024 * 1024;

/// The answer to a range request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeReply {
    /// The blocks, consecutive from the first height asked.
    pub blocks: Vec<(Block, CommitInfo)>,
    /// The peer's highest committed height (0 when it sent no answer).
    pub best_height: u64,
}

/// Asks the peer for the blocks `from .. from + count` over one stream
/// (block sync). Returns those it sent, in order; fewer than asked when it
/// ran out or hit its byte budget.
pub async fn request_range<S>(
    mut stream: S,
    from: u64,
    count: u32,
    max_block_bytes: usize,
) -> Result<RangeReply, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    const W: &str = "BlockResponse";
    let count = count.clamp(1, MAX_RANGE);
    let req = proto::BlockRequest {
        query: Some(proto::block_request::Query::Height(from)),
        count,
    };
    write_msg(&mut stream, &req, CONTROL_DEADLINE).await?;
    let max = block_response_max(max_block_bytes);
    let mut out = RangeReply {
        blocks: Vec::new(),
        best_height: 0,
    };
    // What the answers weigh: a handler ends its answer once they reach
    // RANGE_BYTES, so nothing past that is read (a peer that ignores the cap
    // cannot make this node hold more than RANGE_BYTES plus one block).
    let mut received = 0usize;
    for i in 0..u64::from(count) {
        if received >= RANGE_BYTES {
            break;
        }
        let resp: proto::BlockResponse =
            match read_msg(&mut stream, max, transfer_deadline(max)).await {
                Ok(r) => r,
                // A clean end after at least one answer: the peer stopped.
                Err(ProtocolError::Closed { .. }) if i > 0 => break,
                Err(e) => return Err(e),
            };
        received = received.saturating_add(resp.encoded_len());
        out.best_height = out.best_height.max(resp.best_height);
        if !resp.found {
            break;
        }
        let (Some(p), Some(ci)) = (resp.block, resp.commit_info) else {
            return Err(ProtocolError::invalid(
                W,
                "found but no block or no commit info",
            ));
        };
        let block = decode_block(p, max_block_bytes)?;
        let ci = CommitInfo::from_proto(&ci, MAX_VALIDATORS)?;
        let want = from.saturating_add(i);
        if block.height() != want {
            return Err(ProtocolError::invalid(
                W,
                format!("asked for height {want}, got height {}", block.height()),
            ));
        }
        check_tx_root(&block)?;
        out.best_height = out.best_height.max(block.height());
        out.blocks.push((block, ci));
    }
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    Ok(out)
}

/// Asks the peer for a block. `max_block_bytes` is the genesis limit.
pub async fn request<S>(
    mut stream: S,
    query: BlockQuery,
    max_block_bytes: usize,
) -> Result<BlockReply, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    use proto::block_request::Query;
    let q = match query {
        BlockQuery::Height(h) => Query::Height(h),
        BlockQuery::Hash(h) => Query::Hash(h.0.to_vec()),
    };
    let req = proto::BlockRequest {
        query: Some(q),
        count: 0,
    };
    write_msg(&mut stream, &req, CONTROL_DEADLINE).await?;
    let max = block_response_max(max_block_bytes);
    let resp: proto::BlockResponse = read_msg(&mut stream, max, transfer_deadline(max)).await?;
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    const W: &str = "BlockResponse";
    if !resp.found {
        return Ok(BlockReply {
            block: None,
            best_height: resp.best_height,
        });
    }
    let (Some(p), Some(ci)) = (resp.block, resp.commit_info) else {
        return Err(ProtocolError::invalid(
            W,
            "found but no block or no commit info",
        ));
    };
    let block = decode_block(p, max_block_bytes)?;
    let ci = CommitInfo::from_proto(&ci, MAX_VALIDATORS)?;
    let matches = match query {
        BlockQuery::Height(h) => block.height() == h,
        BlockQuery::Hash(h) => block.hash() == h,
    };
    if !matches {
        return Err(ProtocolError::invalid(
            W,
            format!(
                "asked for {query:?}, got block {} at height {}",
                block.hash().short(),
                block.height()
            ),
        ));
    }
    check_tx_root(&block)?;
    Ok(BlockReply {
        best_height: resp.best_height.max(block.height()),
        block: Some((block, ci)),
    })
}

/// Answers one block request: a block by hash, a block by height, or a
/// range by height. A range is read and written a piece
/// ([`RANGE_PIECE_BYTES`]) at a time, each piece held under the source's
/// [`BlockSource::budget`] until it is written: when the budget is spent
/// the answer ends there (or, before anything was sent, the request is
/// declined with [`ProtocolError::Refused`]).
pub async fn serve<S>(mut stream: S, source: &impl BlockSource) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    use proto::block_request::Query;
    const W: &str = "BlockRequest";
    let req: proto::BlockRequest = read_msg(&mut stream, CONTROL_MAX, CONTROL_DEADLINE).await?;
    let query = match req.query {
        Some(Query::Height(h)) => BlockQuery::Height(h),
        Some(Query::Hash(h)) => BlockQuery::Hash(hash_field(W, "hash", &h)?),
        None => return Err(DecodeError::invalid(W, "no height and no hash").into()),
    };
    let count = match query {
        BlockQuery::Height(_) => req.count.clamp(1, MAX_RANGE),
        BlockQuery::Hash(_) => 1,
    };
    let budget = source.budget();
    let mut left = count;
    let mut sent = 0usize;
    loop {
        // The next piece: the one block asked for, or consecutive blocks
        // up to RANGE_PIECE_BYTES.
        let (blocks, best_height) = match query {
            BlockQuery::Height(from) if count > 1 => {
                let next = from.saturating_add(u64::from(count - left));
                let want = RANGE_PIECE_BYTES.min(RANGE_BYTES - sent);
                let r = source.range(next, left, want).await;
                (r.blocks, r.best_height)
            }
            q => {
                let r = source.block(q).await;
                (r.block.into_iter().collect(), r.best_height)
            }
        };
        let mut found = blocks.len().min(left as usize);
        let mut piece: Vec<proto::BlockResponse> = blocks
            .into_iter()
            .take(found)
            .map(|(b, ci)| proto::BlockResponse {
                found: true,
                block: Some(b.to_proto()),
                commit_info: Some(ci.to_proto()),
                best_height,
            })
            .collect();
        // The whole piece, or else as many of its first blocks as fit
        // (halving), at least one; the answer ends after a cut piece.
        let mut cut = false;
        let _held = match &budget {
            Some(b) => {
                let mut held = None;
                let mut fit = piece.len();
                while fit > 0 && held.is_none() {
                    let bytes: usize = piece[..fit].iter().map(Message::encoded_len).sum();
                    held = b.try_reserve(bytes);
                    if held.is_none() {
                        fit /= 2;
                    }
                }
                if held.is_none() && !piece.is_empty() {
                    if sent == 0 {
                        return Err(ProtocolError::Refused(
                            "busy: no room to serve blocks".into(),
                        ));
                    }
                    break;
                }
                cut = fit < piece.len();
                piece.truncate(fit);
                found = found.min(fit);
                held
            }
            None => None,
        };
        for resp in piece {
            let len = resp.encoded_len();
            write_msg(&mut stream, &resp, transfer_deadline(len)).await?;
            sent += len;
        }
        left -= found as u32;
        if left == 0 || sent >= RANGE_BYTES || cut {
            break;
        }
        if found == 0 {
            // The range (or the one block) ends here.
            let resp = proto::BlockResponse {
                found: false,
                block: None,
                commit_info: None,
                best_height,
            };
            write_msg(&mut stream, &resp, CONTROL_DEADLINE).await?;
            break;
        }
    }
    close(&mut stream, CONTROL_DEADLINE).await
}

/// Decodes a block of at most `max_block_bytes` (structure only).
pub(crate) fn decode_block(
    p: kite_types::proto::Block,
    max_block_bytes: usize,
) -> Result<Block, ProtocolError> {
    let size = p.encoded_len();
    if size > max_block_bytes {
        return Err(ProtocolError::TooLarge {
            what: "Block",
            size: size as u64,
            max: max_block_bytes,
        });
    }
    Ok(Block::from_proto(p)?)
}

fn check_tx_root(block: &Block) -> Result<(), ProtocolError> {
    if block.check_tx_root() {
        Ok(())
    } else {
        Err(ProtocolError::invalid(
            "Block",
            format!(
                "tx root of block {} does not match its txs",
                block.hash().short()
            ),
        ))
    }
}

/// Reads the `Block` that follows a `Want{true}` (blkann, blkprop) and
/// checks it is the announced one: same hash (so same header), same leader
/// signature, tx root matching its txs.
pub(crate) async fn read_announced_block<S>(
    stream: &mut S,
    max_block_bytes: usize,
    hash: &Hash,
    leader_sig: &Signature,
) -> Result<Block, ProtocolError>
where
    S: AsyncRead + Unpin + Send,
{
    let p: kite_types::proto::Block =
        read_msg(stream, max_block_bytes, transfer_deadline(max_block_bytes)).await?;
    let block = decode_block(p, max_block_bytes)?;
    if block.hash() != *hash {
        return Err(ProtocolError::invalid(
            "Block",
            format!("announced {}, sent {}", hash.short(), block.hash().short()),
        ));
    }
    if block.leader_sig() != leader_sig {
        return Err(ProtocolError::invalid(
            "Block",
            "leader signature differs from the announced one",
        ));
    }
    check_tx_root(&block)?;
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use futures::io::AsyncWriteExt;
    use kite_types::{Payload, Tx};

    const MAX_BLOCK: usize = 1 << 20;

    /// A chain of blocks 1..=5.
    struct Chain(Vec<(Block, CommitInfo)>);

    #[async_trait]
    impl BlockSource for Chain {
        async fn block(&self, query: BlockQuery) -> BlockReply {
            let found = self.0.iter().find(|(b, _)| match query {
                BlockQuery::Height(h) => b.height() == h,
                BlockQuery::Hash(h) => b.hash() == h,
            });
            BlockReply {
                block: found.cloned(),
                best_height: self.0.len() as u64,
            }
        }
    }

    /// A chain whose answers are held under a budget.
    struct Budgeted(Chain, ByteBudget);

    #[async_trait]
    impl BlockSource for Budgeted {
        async fn block(&self, query: BlockQuery) -> BlockReply {
            self.0.block(query).await
        }
        fn budget(&self) -> Option<ByteBudget> {
            Some(self.1.clone())
        }
    }

    /// Blocks 1..=3 of about 420 KB each.
    fn big_chain() -> Chain {
        let key = key(201);
        Chain(
            (1..=3u64)
                .map(|h| {
                    let txs = (0..7u64)
                        .map(|i| {
                            let payload = Payload::Put {
                                key: i.to_be_bytes().to_vec(),
                                value: vec![7; 60_000],
                            };
                            Tx::sign(&key, CHAIN, h * 10 + i, payload)
                        })
                        .collect();
                    let b = Block::new_signed(header(h), txs, &leader());
                    let ci = commit_info(&b);
                    (b, ci)
                })
                .collect(),
        )
    }

    /// A budget with room for one block but not the whole piece: the
    /// answer is cut to what fits, never refused outright.
    #[tokio::test]
    async fn a_piece_too_large_for_the_budget_is_cut_not_refused() {
        let budget = ByteBudget::new(1024 * 1024);
        let src = Budgeted(big_chain(), budget.clone());
        let (a, b) = pipe_with_buffer(4 << 20);
        let (got, served) = tokio::join!(request_range(a, 1, 3, MAX_BLOCK), serve(b, &src));
        served.unwrap();
        let got = got.unwrap();
        assert_eq!(
            got.blocks.len(),
            1,
            "the first block fits, the piece does not"
        );
        assert_eq!(got.blocks[0].0.height(), 1);
        assert_eq!(budget.in_use(), 0);
    }

    /// Peers that ask for ranges and never read the answers make the
    /// handlers hold at most the budget: a request that does not fit is
    /// declined (no penalty), and the bytes come back when the stream goes.
    #[tokio::test]
    async fn a_peer_that_never_reads_holds_at_most_the_budget() {
        // Room for the whole range once, not for one more block.
        let budget = ByteBudget::new(1_500_000);
        let src = std::sync::Arc::new(Budgeted(big_chain(), budget.clone()));
        let ask = frame(&proto::BlockRequest {
            query: Some(proto::block_request::Query::Height(1)),
            count: 3,
        });
        // The first asker never reads: its handler holds the whole range.
        let (mut a1, b1) = pipe_with_buffer(64 * 1024);
        a1.write_all(&ask).await.unwrap();
        let s = src.clone();
        let first = tokio::spawn(async move { serve(b1, s.as_ref()).await });
        while budget.in_use() == 0 {
            tokio::task::yield_now().await;
        }
        let held = budget.in_use();
        assert!(held > 1024 * 1024, "the range is held: {held}");
        // The second one does not fit: declined at once, without blame.
        let (mut a2, b2) = pipe_with_buffer(64 * 1024);
        a2.write_all(&ask).await.unwrap();
        let e = serve(b2, src.as_ref()).await.unwrap_err();
        assert!(matches!(e, ProtocolError::Refused(_)), "{e:?}");
        assert_eq!(e.misbehaviour(), None);
        assert_eq!(budget.in_use(), held);
        assert!(
            budget.refused() >= 1,
            "the whole piece, then its first block, were refused"
        );
        assert!(budget.peak() <= budget.total());
        // The first asker goes away: its bytes come back.
        drop(a1);
        assert!(first.await.unwrap().is_err());
        assert_eq!(budget.in_use(), 0);
        // With room again, a reader gets the whole range.
        let (a3, b3) = pipe_with_buffer(1 << 20);
        let (got, served) =
            tokio::join!(request_range(a3, 1, 3, MAX_BLOCK), serve(b3, src.as_ref()));
        served.unwrap();
        assert_eq!(got.unwrap().blocks.len(), 3);
        assert_eq!(budget.in_use(), 0);
    }

    fn chain() -> Chain {
        Chain(
            (1..=5)
                .map(|h| {
                    let b = block(h, h % 3);
                    let ci = commit_info(&b);
                    (b, ci)
                })
                .collect(),
        )
    }

    async fn fetch(chain: &Chain, q: BlockQuery) -> BlockReply {
        let (a, b) = pipe();
        let (got, served) = tokio::join!(request(a, q, MAX_BLOCK), serve(b, chain));
        served.unwrap();
        got.unwrap()
    }

    #[tokio::test]
    async fn by_height_by_hash_and_missing() {
        let c = chain();
        let r = fetch(&c, BlockQuery::Height(2)).await;
        assert_eq!(r.block.as_ref(), Some(&c.0[1]));
        assert_eq!(r.best_height, 5);
        let r = fetch(&c, BlockQuery::Hash(c.0[4].0.hash())).await;
        assert_eq!(r.block.as_ref(), Some(&c.0[4]));
        let r = fetch(&c, BlockQuery::Height(9)).await;
        assert_eq!(
            r,
            BlockReply {
                block: None,
                best_height: 5
            }
        );
        let r = fetch(&c, BlockQuery::Hash(Hash::digest(b"nope"))).await;
        assert_eq!(r.block, None);
    }

    #[tokio::test]
    async fn ranges_stop_at_the_tip_and_check_heights() {
        let c = chain();
        let range = |from: u64, count: u32| {
            let c = &c;
            async move {
                let (a, b) = pipe_with_buffer(1 << 20);
                let (got, served) =
                    tokio::join!(request_range(a, from, count, MAX_BLOCK), serve(b, c));
                served.unwrap();
                got.unwrap()
            }
        };
        let r = range(2, 3).await;
        let heights: Vec<u64> = r.blocks.iter().map(|(b, _)| b.height()).collect();
        assert_eq!(heights, [2, 3, 4]);
        assert_eq!(r.blocks[0], c.0[1]);
        // Past the tip: what exists, then the handler stops.
        let r = range(4, 10).await;
        assert_eq!(r.blocks.len(), 2);
        assert_eq!(r.best_height, 5);
        let r = range(7, 5).await;
        assert!(r.blocks.is_empty());
        assert_eq!(r.best_height, 5);
        // A peer that sends a height out of order is caught.
        let b2 = block(2, 0);
        let b4 = block(4, 0);
        let mut script = response(&b2, 5);
        script.extend(response(&b4, 5));
        let r = with_script(script, true, |s| request_range(s, 2, 3, MAX_BLOCK)).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // A handler that answers one block only (no range support) is a
        // short, valid range.
        let r = with_script(response(&b2, 5), true, |s| {
            request_range(s, 2, 3, MAX_BLOCK)
        })
        .await
        .unwrap();
        assert_eq!(r.blocks.len(), 1);
    }

    #[tokio::test]
    async fn a_range_reply_past_the_byte_cap_is_not_read() {
        // A peer that ignores RANGE_BYTES and sends 24 blocks of ~0.9 MiB
        // (22 MiB): the requester keeps what reaches the cap and stops
        // reading, so a ~100-byte request never costs more than the cap
        // plus one block.
        let txs: Vec<Tx> = (1..=55)
            .map(|n| {
                Tx::sign(
                    &key(200),
                    CHAIN,
                    n,
                    Payload::Put {
                        key: n.to_be_bytes().to_vec(),
                        value: vec![7; kite_types::MAX_VALUE_LEN],
                    },
                )
            })
            .collect();
        let mut script = Vec::new();
        for h in 2..26 {
            let b = Block::new_signed(header(h), txs.clone(), &leader());
            script.extend(response(&b, 30));
        }
        let r = with_script(script, true, |s| request_range(s, 2, 24, MAX_BLOCK))
            .await
            .unwrap();
        let took: usize = r
            .blocks
            .iter()
            .map(|(b, _)| b.to_proto().encoded_len())
            .sum();
        assert!(r.blocks.len() < 24, "read all {} blocks", r.blocks.len());
        assert!(took >= RANGE_BYTES, "stopped early at {took}");
        assert!(took < RANGE_BYTES + MAX_BLOCK, "read {took} bytes");
    }

    fn response(b: &Block, best: u64) -> Vec<u8> {
        frame(&proto::BlockResponse {
            found: true,
            block: Some(b.to_proto()),
            commit_info: Some(commit_info(b).to_proto()),
            best_height: best,
        })
    }

    async fn ask(script: Vec<u8>, close: bool, q: BlockQuery) -> Result<BlockReply, ProtocolError> {
        with_script(script, close, |s| request(s, q, MAX_BLOCK)).await
    }

    #[tokio::test]
    async fn forged_replies_are_invalid() {
        let b3 = block(3, 2);
        // The right block passes through the same path.
        let ok = ask(response(&b3, 3), true, BlockQuery::Height(3))
            .await
            .unwrap();
        assert_eq!(ok.block.map(|x| x.0), Some(b3.clone()));
        // Another height than asked.
        let r = ask(response(&b3, 3), true, BlockQuery::Height(4)).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // Another hash than asked.
        let r = ask(response(&b3, 3), true, BlockQuery::Hash(block(3, 1).hash())).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // Txs that do not match the tx root.
        let cut_txs = Block::from_parts(
            b3.header().clone(),
            b3.txs()[..1].to_vec(),
            *b3.leader_sig(),
        );
        let r = ask(response(&cut_txs, 3), true, BlockQuery::Height(3)).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // found without the block.
        let f = frame(&proto::BlockResponse {
            found: true,
            best_height: 3,
            ..Default::default()
        });
        let r = ask(f, true, BlockQuery::Height(3)).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // A block larger than the limit, inside a frame that fits.
        let big = block(3, 40);
        let r = with_script(response(&big, 3), true, |s| {
            request(s, BlockQuery::Height(3), 2000)
        })
        .await;
        assert_err!(r, ProtocolError::TooLarge { what: "Block", .. });
    }

    #[tokio::test]
    async fn bad_bytes() {
        let q = BlockQuery::Height(3);
        let r = ask(cut(response(&block(3, 2), 3), 100), true, q).await;
        assert_err!(r, ProtocolError::Truncated { .. });
        let r = ask(prefix(block_response_max(MAX_BLOCK) as u64 + 1), false, q).await;
        assert_err!(r, ProtocolError::TooLarge { .. });
        let r = ask(garbage_frame(), true, q).await;
        assert_err!(r, ProtocolError::Decode(_));
        let r = ask(Vec::new(), true, q).await;
        assert_err!(r, ProtocolError::Closed { .. });
        // Requests.
        let c = chain();
        let serve_script = |script: Vec<u8>, close: bool| {
            let c = &c;
            async move { with_script(script, close, |s| async move { serve(s, c).await }).await }
        };
        let r = serve_script(
            frame(&proto::BlockRequest {
                query: None,
                count: 0,
            }),
            true,
        )
        .await;
        assert_err!(r, ProtocolError::Decode(_));
        let bad_hash = proto::BlockRequest {
            count: 0,
            query: Some(proto::block_request::Query::Hash(vec![1; 3])),
        };
        let r = serve_script(frame(&bad_hash), true).await;
        assert_err!(r, ProtocolError::Decode(_));
        let r = serve_script(prefix(CONTROL_MAX as u64 + 1), false).await;
        assert_err!(r, ProtocolError::TooLarge { .. });
        let r = serve_script(garbage_frame(), true).await;
        assert_err!(r, ProtocolError::Decode(_));
        let r = serve_script(vec![0x85], true).await;
        assert_err!(r, ProtocolError::Truncated { .. });
    }

    #[tokio::test(start_paused = true)]
    async fn drip_fed() {
        let q = BlockQuery::Height(3);
        let r = with_drip(Vec::new(), response(&block(3, 2), 3), |s| {
            request(s, q, MAX_BLOCK)
        })
        .await;
        assert_err!(r, ProtocolError::Timeout { .. });
        let c = chain();
        let req = frame(&proto::BlockRequest {
            count: 0,
            query: Some(proto::block_request::Query::Hash(vec![1; 32])),
        });
        let r = with_drip(Vec::new(), req, |s| async { serve(s, &c).await }).await;
        assert_err!(r, ProtocolError::Timeout { .. });
    }
}
