//! Cost of the wire layer: framing a block-sized message, and whole
//! exchanges (block fetch, tx announce of 256 hashes) over an in-memory
//! pipe. The figures exclude the network and signature checks.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::io::Cursor;
use kite_protocols::framing::{read_msg, write_msg};
use kite_protocols::{blk, proto, txann};
use kite_types::{Block, BlockHeader, CommitInfo, Hash, NodeKey, Payload, Tx, Vote};
use std::time::Duration;
use tokio_util::compat::TokioAsyncReadCompatExt;

const D: Duration = Duration::from_secs(60);
const MAX_BLOCK: usize = 8 << 20;

fn txs(n: u64) -> Vec<Tx> {
    let k = NodeKey::from_seed([3; 32]);
    (1..=n)
        .map(|i| {
            Tx::sign(
                &k,
                "bench",
                i,
                Payload::Put {
                    key: i.to_be_bytes().to_vec(),
                    value: vec![1; 100],
                },
            )
        })
        .collect()
}

fn block(n: u64) -> (Block, CommitInfo) {
    let k = NodeKey::from_seed([1; 32]);
    let h = BlockHeader {
        version: kite_types::BLOCK_VERSION,
        chain_id: "bench".into(),
        height: 7,
        prev_hash: Hash::ZERO,
        prev_app_hash: Hash::ZERO,
        timestamp_ms: 1,
        tx_root: Hash::ZERO,
        validator_set_hash: Hash::ZERO,
        proposer: k.public(),
        term: 0,
    };
    let b = Block::new_signed(h, txs(n), &k);
    let app = Hash::digest(b"app");
    let ci = CommitInfo {
        app_hash: app,
        votes: (0..4u8)
            .map(|i| Vote::ack(&NodeKey::from_seed([i; 32]), "bench", 7, b.hash(), app))
            .collect(),
    };
    (b, ci)
}

struct Chain(Block, CommitInfo);

#[async_trait]
impl blk::BlockSource for Chain {
    async fn block(&self, _: blk::BlockQuery) -> blk::BlockReply {
        blk::BlockReply {
            block: Some((self.0.clone(), self.1.clone())),
            best_height: 7,
        }
    }
}

struct WantAll;

#[async_trait]
impl txann::TxSink for WantAll {
    async fn want(&self, hashes: &[Hash]) -> Vec<bool> {
        vec![true; hashes.len()]
    }
    async fn receive(&self, _: Vec<Tx>) {}
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let (b, ci) = block(5000);
    let resp = proto::BlockResponse {
        found: true,
        block: Some(b.to_proto()),
        commit_info: Some(ci.to_proto()),
        best_height: 7,
    };
    let size = prost::Message::encoded_len(&resp);
    println!("block of 5000 txs: {size} bytes");

    let mut g = c.benchmark_group("framing");
    g.throughput(Throughput::Bytes(size as u64));
    g.bench_function("write+read BlockResponse (5000 txs)", |bn| {
        bn.iter(|| {
            rt.block_on(async {
                let mut out = Cursor::new(Vec::with_capacity(size + 8));
                write_msg(&mut out, &resp, D).await.unwrap();
                let mut r = Cursor::new(out.into_inner());
                let back: proto::BlockResponse = read_msg(&mut r, MAX_BLOCK, D).await.unwrap();
                back
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("exchange");
    g.throughput(Throughput::Elements(5000));
    let chain = Chain(b.clone(), ci.clone());
    g.bench_function(
        "blk request+serve (5000 txs, decoded, tx root checked)",
        |bn| {
            bn.iter(|| {
                rt.block_on(async {
                    let (x, y) = tokio::io::duplex(1 << 20);
                    let (r, s) = tokio::join!(
                        blk::request(x.compat(), blk::BlockQuery::Height(7), MAX_BLOCK),
                        blk::serve(y.compat(), &chain)
                    );
                    s.unwrap();
                    r.unwrap()
                })
            })
        },
    );
    let all = txs(256);
    let hashes: Vec<Hash> = all.iter().map(Tx::hash).collect();
    let lookup: std::collections::HashMap<Hash, Tx> =
        all.iter().map(|t| (t.hash(), t.clone())).collect();
    g.throughput(Throughput::Elements(256));
    g.bench_function("txann announce+serve (256 txs, all wanted)", |bn| {
        bn.iter(|| {
            rt.block_on(async {
                let (x, y) = tokio::io::duplex(1 << 20);
                let (r, s) = tokio::join!(
                    txann::announce(x.compat(), &hashes, |h: &Hash| lookup.get(h).cloned()),
                    txann::serve(y.compat(), &WantAll)
                );
                s.unwrap();
                r.unwrap()
            })
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
