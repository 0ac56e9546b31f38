//! Shared pieces of the fuzz targets: a stream that replays the fuzzer's
//! bytes as what a peer sent, a runtime to drive the async decoders, the
//! fixtures the seeds are built from, and sinks that accept everything so
//! the decoders run as deep as the bytes allow.

use async_trait::async_trait;
use futures::io::{AsyncRead, AsyncWrite};
use kite_protocols::ack::{VoteReceipt, VoteSink};
use kite_protocols::blk::{BlockQuery, BlockReply, BlockSource};
use kite_protocols::blkann::{AnnounceInfo, AnnounceSink};
use kite_protocols::blkprop::{ProposalInfo, ProposalSink, ResetInfo};
use kite_protocols::discover::{PeerEntry, PeerSource};
use kite_protocols::status::{StatusInfo, StatusSource};
use kite_protocols::term::TermSink;
use kite_protocols::tx::TxSource;
use kite_protocols::txann::TxSink;
use kite_protocols::{ack, blk, blkann, blkprop, discover, status, term, txann, txpush};
use kite_types::{
    Acked, BLOCK_VERSION, Block, BlockHeader, CommitInfo, Hash, NodeKey, Payload, TermChange, Tx,
    Vote,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

/// The chain id of the fixtures.
pub const CHAIN: &str = "kite-fuzz";

/// Largest block the fuzzed decoders accept (small, so the fuzzer spends
/// its time on structure, not on size).
pub const MAX_BLOCK: usize = 256 * 1024;

/// Largest tx the fuzzed decoders accept.
pub const MAX_TX: usize = 64 * 1024;

/// A peer that sends `input` and then closes its side, and takes
/// (discards) everything written to it. Reads come in pieces of varying
/// size, so the readers' partial-read paths run too.
pub struct Script<'a> {
    input: &'a [u8],
    step: usize,
}

impl<'a> Script<'a> {
    /// A peer that sends `input`.
    pub fn new(input: &'a [u8]) -> Script<'a> {
        Script { input, step: 0 }
    }
}

impl AsyncRead for Script<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        // 1, 2, 3, ... 7 bytes, then the rest of the buffer, in turn.
        self.step = (self.step + 1) % 8;
        let piece = if self.step == 0 { buf.len() } else { self.step };
        let n = piece.min(buf.len()).min(self.input.len());
        let (head, tail) = self.input.split_at(n);
        buf[..n].copy_from_slice(head);
        self.input = tail;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Script<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
}

/// Runs `f` to completion on a current-thread runtime with paused time (a
/// deadline that is reached resolves at once instead of waiting).
pub fn block_on<F: Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(f))
}

/// A deterministic key.
pub fn key(seed: u8) -> NodeKey {
    NodeKey::from_seed([seed; 32])
}

/// The leader of the fixtures.
pub fn leader() -> NodeKey {
    key(1)
}

/// A signed put of the fixture user.
pub fn tx(nonce: u64) -> Tx {
    Tx::sign(
        &key(200),
        CHAIN,
        nonce,
        Payload::Put {
            key: nonce.to_be_bytes().to_vec(),
            value: vec![7; 16],
        },
    )
}

/// A header at `height`.
pub fn header(height: u64) -> BlockHeader {
    BlockHeader {
        version: BLOCK_VERSION,
        chain_id: CHAIN.into(),
        height,
        prev_hash: Hash::digest(&height.to_be_bytes()),
        prev_app_hash: Hash::digest(b"app"),
        timestamp_ms: 1_700_000_000_000 + height,
        tx_root: Hash::ZERO,
        validator_set_hash: Hash::digest(b"vals"),
        proposer: leader().public(),
        term: 0,
    }
}

/// A block at `height` with `ntx` txs, signed by the leader.
pub fn block(height: u64, ntx: u64) -> Block {
    Block::new_signed(header(height), (1..=ntx).map(tx).collect(), &leader())
}

/// Commit info for `b`: ACKs from three validators.
pub fn commit_info(b: &Block) -> CommitInfo {
    let app = Hash::digest(b"app-after");
    CommitInfo {
        app_hash: app,
        votes: (2..=4)
            .map(|i| Vote::ack(&key(i), CHAIN, b.height(), b.hash(), app))
            .collect(),
    }
}

/// The frame (length prefix, then body) of a message.
pub fn frame<M: prost::Message>(m: &M) -> Vec<u8> {
    let body = m.encode_to_vec();
    let mut f = Vec::with_capacity(body.len() + 10);
    prost::encoding::encode_varint(body.len() as u64, &mut f);
    f.extend(body);
    f
}

/// Accepts everything; remembers the tx hashes it said it wanted.
#[derive(Default)]
pub struct Everything {
    wanted: Mutex<Vec<Hash>>,
}

#[async_trait]
impl TxSource for Everything {
    async fn get_tx(&self, _hash: &Hash) -> Option<Tx> {
        Some(tx(1))
    }
}

#[async_trait]
impl TxSink for Everything {
    async fn want(&self, hashes: &[Hash]) -> Vec<bool> {
        if let Ok(mut w) = self.wanted.lock() {
            w.extend_from_slice(hashes);
        }
        vec![true; hashes.len()]
    }
    async fn receive(&self, txs: Vec<Tx>) {
        let wanted = self.wanted.lock().map(|w| w.clone()).unwrap_or_default();
        for t in &txs {
            assert!(
                wanted.contains(&t.hash()),
                "a tx nobody announced was handed on"
            );
        }
    }
}

#[async_trait]
impl BlockSource for Everything {
    async fn block(&self, query: BlockQuery) -> BlockReply {
        let height = match query {
            BlockQuery::Height(h) => h.clamp(1, 3),
            BlockQuery::Hash(_) => 1,
        };
        let b = block(height, 2);
        let ci = commit_info(&b);
        BlockReply {
            block: Some((b, ci)),
            best_height: 3,
        }
    }
}

fn check_block(hash: &Hash, b: &Block) {
    assert_eq!(
        b.hash(),
        *hash,
        "a block other than the announced one was handed on"
    );
    assert!(
        b.check_tx_root(),
        "a block whose txs do not match its root was handed on"
    );
}

#[async_trait]
impl AnnounceSink for Everything {
    async fn check(&self, _info: &AnnounceInfo) -> bool {
        true
    }
    async fn receive(&self, info: AnnounceInfo, b: Block) {
        check_block(&info.hash, &b);
    }
}

#[async_trait]
impl ProposalSink for Everything {
    async fn check(&self, _p: &ProposalInfo) -> bool {
        true
    }
    async fn receive(&self, p: ProposalInfo, b: Block) {
        check_block(&p.hash, &b);
    }
    async fn reset(&self, _reset: ResetInfo) -> VoteReceipt {
        VoteReceipt::accepted()
    }
}

#[async_trait]
impl VoteSink for Everything {
    async fn vote(&self, _vote: Vote, _best: Option<BlockHeader>) -> VoteReceipt {
        VoteReceipt::accepted()
    }
}

#[async_trait]
impl TermSink for Everything {
    async fn want_block(&self, _change: &TermChange) -> bool {
        true
    }
    async fn receive(&self, change: TermChange, block: Option<Block>) {
        if let (Some(b), Some(a)) = (block, change.acked) {
            check_block(&a.block_hash, &b);
        }
    }
}

#[async_trait]
impl PeerSource for Everything {
    async fn peers(&self, max: usize) -> Vec<PeerEntry> {
        (0..max.min(4) as u8)
            .map(|i| PeerEntry {
                id: vec![0, 36, 8, 1, 18, 32, i],
                addrs: vec![vec![4, 127, 0, 0, 1, 6, 0x1f, 0x90]],
            })
            .collect()
    }
}

#[async_trait]
impl StatusSource for Everything {
    async fn status(&self) -> StatusInfo {
        StatusInfo {
            chain_id: CHAIN.into(),
            best_height: 3,
            ..StatusInfo::default()
        }
    }
}

/// Number of requests [`ask`] knows.
pub const ASKS: u8 = 13;

/// Sends request number `which % ASKS` (each protocol's asking side) over
/// `s` and checks that an accepted answer is the one asked for.
pub async fn ask<S>(which: u8, s: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    match which % ASKS {
        0 => {
            let want = tx(1).hash();
            if let Ok(Some(t)) = kite_protocols::tx::request(s, want, MAX_TX).await {
                assert_eq!(t.hash(), want);
            }
        }
        1 => {
            let txs: Vec<_> = (1..=3).map(tx).collect();
            let hashes: Vec<Hash> = txs.iter().map(|t| t.hash()).collect();
            let lookup = move |h: &Hash| txs.iter().find(|t| t.hash() == *h).cloned();
            if let Ok(out) = txann::announce(s, &hashes, lookup).await {
                assert!(out.sent <= out.wanted && out.wanted <= out.announced);
                assert!(out.announced <= hashes.len());
            }
        }
        2 => {
            if let Ok(r) = blk::request(s, BlockQuery::Height(2), MAX_BLOCK).await
                && let Some((b, _)) = r.block
            {
                assert_eq!(b.height(), 2);
                assert!(b.check_tx_root());
            }
        }
        3 => {
            let want = block(2, 2).hash();
            if let Ok(r) = blk::request(s, BlockQuery::Hash(want), MAX_BLOCK).await
                && let Some((b, _)) = r.block
            {
                assert_eq!(b.hash(), want);
                assert!(b.check_tx_root());
            }
        }
        4 => {
            if let Ok(r) = blk::request_range(s, 2, 4, MAX_BLOCK).await {
                assert!(r.blocks.len() <= 4);
                for (i, (b, _)) in r.blocks.iter().enumerate() {
                    assert_eq!(b.height(), 2 + i as u64);
                    assert!(b.check_tx_root());
                }
            }
        }
        5 => {
            let b = block(2, 2);
            let _ = blkann::announce(s, &b, &commit_info(&b)).await;
        }
        6 => {
            let _ = blkprop::propose(s, &block(2, 2), 0, None).await;
        }
        7 => {
            let r = ResetInfo::new_signed(&leader(), CHAIN, 0, 2, block(2, 2).hash(), "fuzz");
            let _ = blkprop::reset(s, &r).await;
        }
        8 => {
            let b = block(2, 2);
            let v = Vote::ack(&key(2), CHAIN, 2, b.hash(), Hash::digest(b"app"));
            let _ = ack::send_vote(s, &v, Some(b.header())).await;
        }
        10 => {
            let b = block(2, 2);
            let acked = Acked {
                block_hash: b.hash(),
                term: 0,
                timestamp_ms: b.header().timestamp_ms,
            };
            let c = TermChange::new(&key(2), CHAIN, 1, 2, Some(acked));
            let _ = term::send(s, &c, Some(&b)).await;
        }
        11 => {
            let txs: Vec<_> = (1..=3).map(tx).collect();
            if let Ok(sent) = txpush::push(s, &txs).await {
                assert_eq!(sent, txs.len());
            }
        }
        9 => {
            if let Ok(peers) = discover::request(s, 5).await {
                assert!(peers.len() <= 5);
            }
        }
        _ => {
            let _ = status::request(s).await;
        }
    }
}

/// Number of protocols [`serve`] knows.
pub const SERVES: u8 = 10;

/// Serves protocol number `which % SERVES` over `s` into `sink`.
pub async fn serve<S>(which: u8, s: S, sink: &Everything)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let _ = match which % SERVES {
        0 => kite_protocols::tx::serve(s, sink).await,
        1 => txann::serve(s, sink).await,
        2 => blk::serve(s, sink).await,
        3 => blkann::serve(s, sink, MAX_BLOCK).await,
        4 => blkprop::serve(s, sink, MAX_BLOCK).await,
        5 => ack::serve(s, sink).await,
        6 => discover::serve(s, sink).await,
        7 => term::serve(s, sink, MAX_BLOCK).await,
        8 => txpush::serve(s, sink).await,
        _ => status::serve(s, sink).await,
    };
}
