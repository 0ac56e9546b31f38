//! ed25519 verification limit of this machine: single vs batch, the
//! reference figure other benches compare against.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kite_types::sign::{self, SigItem};
use kite_types::{Hash, NodeKey, PublicKey, Signature};

fn bench(c: &mut Criterion) {
    let n = 1024;
    let keys: Vec<NodeKey> = (0..n)
        .map(|i| NodeKey::from_seed([(i % 251) as u8; 32]))
        .collect();
    let pubs: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
    let digests: Vec<Hash> = (0..n)
        .map(|i| sign::tx_digest(&(i as u64).to_be_bytes()))
        .collect();
    let sigs: Vec<Signature> = keys
        .iter()
        .zip(&digests)
        .map(|(k, d)| k.sign_digest(d))
        .collect();
    let items: Vec<SigItem> = (0..n)
        .map(|i| SigItem {
            key: &pubs[i],
            digest: digests[i],
            sig: &sigs[i],
        })
        .collect();
    let mut g = c.benchmark_group("ed25519");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("single_1024", |b| {
        b.iter(|| {
            items
                .iter()
                .all(|it| sign::verify(it.key, &it.digest, it.sig))
        })
    });
    g.bench_function("batch_1024", |b| b.iter(|| sign::verify_all(&items)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
