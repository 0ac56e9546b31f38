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

/// Answers one block request.
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
    if let (BlockQuery::Height(from), true) = (query, count > 1) {
        // One read of the whole range; each block in a message of its own,
        // then "not found" if the range ended before `count`.
        let range = source.range(from, count, RANGE_BYTES).await;
        let n = range.blocks.len();
        let mut sent = 0usize;
        for (b, ci) in range.blocks {
            let resp = proto::BlockResponse {
                found: true,
                block: Some(b.to_proto()),
                commit_info: Some(ci.to_proto()),
                best_height: range.best_height,
            };
            let len = resp.encoded_len();
            write_msg(&mut stream, &resp, transfer_deadline(len)).await?;
            sent += len;
        }
        if n < count as usize && sent < RANGE_BYTES {
            let resp = proto::BlockResponse {
                found: false,
                block: None,
                commit_info: None,
                best_height: range.best_height,
            };
            write_msg(&mut stream, &resp, CONTROL_DEADLINE).await?;
        }
        return close(&mut stream, CONTROL_DEADLINE).await;
    }
    let mut sent = 0usize;
    for i in 0..count {
        let q = match query {
            BlockQuery::Height(h) => BlockQuery::Height(h.saturating_add(u64::from(i))),
            other => other,
        };
        let reply = source.block(q).await;
        let (block, commit_info) = match reply.block {
            Some((b, ci)) => (Some(b.to_proto()), Some(ci.to_proto())),
            None => (None, None),
        };
        let resp = proto::BlockResponse {
            found: block.is_some(),
            block,
            commit_info,
            best_height: reply.best_height,
        };
        let len = resp.encoded_len();
        write_msg(&mut stream, &resp, transfer_deadline(len)).await?;
        sent += len;
        if !resp.found || sent >= RANGE_BYTES {
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
