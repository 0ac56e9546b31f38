//! Test helpers: in-memory pipes, scripted and drip-feeding peers, and
//! fixtures (signed txs, blocks, commit info).

#![allow(dead_code)]

use crate::ProtocolError;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use kite_types::{BLOCK_VERSION, Block, BlockHeader, CommitInfo, Hash, NodeKey, Payload, Tx, Vote};
use std::future::Future;
use std::time::Duration;
use tokio::io::DuplexStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// One end of an in-memory pipe, as a futures-io stream.
pub type Pipe = Compat<DuplexStream>;

/// The chain id of the fixtures.
pub const CHAIN: &str = "kite-test";

/// A connected pair with 64 KiB of buffer each way.
pub fn pipe() -> (Pipe, Pipe) {
    pipe_with_buffer(64 * 1024)
}

/// A connected pair with `buf` bytes of buffer each way.
pub fn pipe_with_buffer(buf: usize) -> (Pipe, Pipe) {
    let (a, b) = tokio::io::duplex(buf);
    (a.compat(), b.compat())
}

/// Writes `bytes` one at a time, sleeping `every` after each, then keeps
/// the stream open (drains it) until the other side goes away.
pub async fn drip(mut s: Pipe, bytes: Vec<u8>, every: Duration) {
    for b in bytes {
        if s.write_all(&[b]).await.is_err() || s.flush().await.is_err() {
            return;
        }
        tokio::time::sleep(every).await;
    }
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink).await;
}

/// Runs `f` against a peer that writes `script` at once, then closes its
/// write side if `close` (else leaves it open and silent), and drains
/// whatever `f` writes.
pub async fn with_script<T, F, Fut>(script: Vec<u8>, close: bool, f: F) -> Result<T, ProtocolError>
where
    F: FnOnce(Pipe) -> Fut,
    Fut: Future<Output = Result<T, ProtocolError>>,
{
    let (a, mut b) = pipe_with_buffer(1 << 20);
    let peer = tokio::spawn(async move {
        let _ = b.write_all(&script).await;
        if close {
            let _ = b.close().await;
        }
        let mut sink = Vec::new();
        let _ = b.read_to_end(&mut sink).await;
        // Keep the stream alive until aborted, so nothing `f` writes fails.
        std::future::pending::<()>().await;
    });
    let r = f(a).await;
    peer.abort();
    r
}

/// Runs `f` against a peer that writes `fast` at once, then drip-feeds
/// `slow`, one byte per second.
pub async fn with_drip<T, F, Fut>(fast: Vec<u8>, slow: Vec<u8>, f: F) -> Result<T, ProtocolError>
where
    F: FnOnce(Pipe) -> Fut,
    Fut: Future<Output = Result<T, ProtocolError>>,
{
    let (a, mut b) = pipe_with_buffer(1 << 20);
    let peer = tokio::spawn(async move {
        if b.write_all(&fast).await.is_ok() {
            drip(b, slow, Duration::from_secs(1)).await;
        }
    });
    let r = f(a).await;
    peer.abort();
    r
}

/// The frame of a message.
pub fn frame<M: prost::Message>(m: &M) -> Vec<u8> {
    crate::framing::encode_frame(m)
}

/// Concatenated frames.
pub fn frames(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// A length prefix announcing `len` bytes, with no body.
pub fn prefix(len: u64) -> Vec<u8> {
    let mut v = Vec::new();
    prost::encoding::encode_varint(len, &mut v);
    v
}

/// Bytes that are a complete frame but not protobuf.
pub fn garbage_frame() -> Vec<u8> {
    vec![6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
}

/// The first `keep` bytes of a frame.
pub fn cut(mut f: Vec<u8>, keep: usize) -> Vec<u8> {
    f.truncate(keep);
    f
}

/// A deterministic key.
pub fn key(seed: u8) -> NodeKey {
    NodeKey::from_seed([seed; 32])
}

/// A signed tx of the fixture user.
pub fn tx(nonce: u64) -> Tx {
    Tx::sign(
        &key(200),
        CHAIN,
        nonce,
        Payload::Put {
            key: nonce.to_be_bytes().to_vec(),
            value: vec![7; 40],
        },
    )
}

/// The leader key of the fixtures.
pub fn leader() -> NodeKey {
    key(1)
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

/// A signed block at `height` with `ntx` txs.
pub fn block(height: u64, ntx: u64) -> Block {
    let txs = (1..=ntx).map(tx).collect();
    Block::new_signed(header(height), txs, &leader())
}

/// Commit info for `b`: ACKs from three validators.
pub fn commit_info(b: &Block) -> CommitInfo {
    let app = Hash::digest(b"app-after");
    CommitInfo {
        app_hash: app,
        votes: (1..=3)
            .map(|i| Vote::ack(&key(i), CHAIN, b.height(), b.hash(), app))
            .collect(),
    }
}

/// Asserts that `r` is an error matching `pat`, with a readable message.
macro_rules! assert_err {
    ($r:expr, $pat:pat) => {
        match $r {
            Err(e @ $pat) => {
                let _ = e;
            }
            other => panic!("expected {}, got {other:?}", stringify!($pat)),
        }
    };
}
pub(crate) use assert_err;

/// The frame of `m` followed by an unknown field of `pad` (< 128) bytes:
/// still a valid `M`, but long enough to take `pad` seconds when dripped.
pub fn padded_frame<M: prost::Message>(m: &M, pad: u8) -> Vec<u8> {
    let mut body = m.encode_to_vec();
    body.extend_from_slice(&[0x7a, pad]);
    body.extend(std::iter::repeat_n(0u8, usize::from(pad)));
    let mut f = prefix(body.len() as u64);
    f.extend(body);
    f
}

/// A tx sink for the tx exchanges' tests: wants the hashes it does not
/// hold, records what it receives, with an optional byte budget and
/// largest tx.
#[derive(Default)]
pub struct Sink {
    pub have: std::collections::HashSet<Hash>,
    pub got: std::sync::Mutex<Vec<Tx>>,
    pub budget: Option<crate::budget::ByteBudget>,
    pub max_tx: Option<usize>,
}

#[async_trait::async_trait]
impl crate::txann::TxSink for Sink {
    async fn want(&self, hashes: &[Hash]) -> Vec<bool> {
        hashes.iter().map(|h| !self.have.contains(h)).collect()
    }
    async fn receive(&self, txs: Vec<Tx>) {
        self.got.lock().unwrap().extend(txs);
    }
    fn budget(&self) -> Option<crate::budget::ByteBudget> {
        self.budget.clone()
    }
    fn max_tx_bytes(&self) -> usize {
        self.max_tx.unwrap_or(crate::limits::TX_BATCH_MAX)
    }
}
