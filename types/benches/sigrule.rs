//! The signature rule's cost, in one run: signatures per second of
//! - the old rule: ed25519-dalek `verify_strict` alone, and ed25519-dalek's
//!   cofactorless batch (batches of 64) as the old `verify_batch` ran it;
//! - the rule now in `kite_types::sign` (ZIP-215 by ed25519-zebra with
//!   the key rule, keys cached): `sign::verify` alone and `sign::verify_batch` in batches of 64;
//! - the same ZIP-215 rule by ed25519-consensus (its own curve crate,
//!   curve25519-dalek-ng, serial backend), single and batch;
//! - the alternative not chosen, strict RFC 8032 batch confirmed per item:
//!   ed25519-dalek's batch plus a torsion check of every R (the keys'
//!   torsion check cached, as it would be).
//!
//! Run: `cargo bench -p kite-types --bench sigrule`. Prints a table; each
//! figure is the median of 5 rounds of at least 0.5 s.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use curve25519_dalek::edwards::CompressedEdwardsY;
use kite_types::sign::{self, SigItem};
use kite_types::{Hash, NodeKey, PublicKey, Signature};

const N: usize = 1024;
const BATCH: usize = 64;

/// Signatures per second of `f`, which checks `N` signatures per call.
fn rate(mut f: impl FnMut() -> bool) -> f64 {
    assert!(f(), "every signature is good");
    let mut rates = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed() < Duration::from_millis(500) {
            assert!(black_box(f()));
            calls += 1;
        }
        rates.push((calls * N as u64) as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    rates[2]
}

fn main() {
    // Distinct signers, as txs from many senders.
    let keys: Vec<NodeKey> = (0..N)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            NodeKey::from_seed(seed)
        })
        .collect();
    let pubs: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
    let digests: Vec<Hash> = (0..N)
        .map(|i| sign::tx_digest(&(i as u64).to_be_bytes()))
        .collect();
    let sigs: Vec<Signature> = keys
        .iter()
        .zip(&digests)
        .map(|(k, d)| k.sign_digest(d))
        .collect();
    let items: Vec<SigItem> = (0..N)
        .map(|i| SigItem {
            key: &pubs[i],
            digest: digests[i],
            sig: &sigs[i],
        })
        .collect();
    let dsigs: Vec<ed25519_dalek::Signature> = sigs
        .iter()
        .map(|s| ed25519_dalek::Signature::from_bytes(&s.0))
        .collect();
    // The old KeyCache held decoded keys; the old single path decoded
    // each time.
    let vks: Vec<ed25519_dalek::VerifyingKey> =
        pubs.iter().map(|p| p.verifying_key().unwrap()).collect();
    let msgs: Vec<&[u8]> = digests.iter().map(|d| &d.0[..]).collect();

    let old_single = rate(|| {
        (0..N).all(|i| {
            pubs[i]
                .verifying_key()
                .is_some_and(|vk| vk.verify_strict(msgs[i], &dsigs[i]).is_ok())
        })
    });
    let old_batch = rate(|| {
        (0..N).step_by(BATCH).all(|i| {
            let j = i + BATCH;
            vks[i..j].iter().all(|vk| !vk.is_weak())
                && ed25519_dalek::verify_batch(&msgs[i..j], &dsigs[i..j], &vks[i..j]).is_ok()
        })
    });
    let new_single = rate(|| {
        items
            .iter()
            .all(|it| sign::verify(it.key, &it.digest, it.sig))
    });
    let new_batch = rate(|| items.chunks(BATCH).all(sign::verify_all));
    let new_single_uncached = rate(|| {
        items.iter().all(|it| {
            sign::key_allowed(&it.key.0).is_some_and(|vk| {
                vk.verify(
                    &ed25519_zebra::Signature::from_bytes(&it.sig.0),
                    it.digest.as_bytes(),
                )
                .is_ok()
            })
        })
    });
    // Every signer seen for the first time (a fresh cache per batch): the
    // key rule's torsion check is paid per signer.
    let new_batch_fresh_keys = rate(|| {
        items.chunks(BATCH).all(|c| {
            sign::KeyCache::default()
                .verify_batch(c)
                .iter()
                .all(|ok| *ok)
        })
    });
    // The same rule by ed25519-consensus (curve25519-dalek-ng, serial
    // backend): the crate first tried.
    let consensus_keys: Vec<ed25519_consensus::VerificationKey> = pubs
        .iter()
        .map(|p| ed25519_consensus::VerificationKey::try_from(p.0).unwrap())
        .collect();
    let consensus_single = rate(|| {
        items.iter().zip(&consensus_keys).all(|(it, vk)| {
            vk.verify(
                &ed25519_consensus::Signature::from(it.sig.0),
                it.digest.as_bytes(),
            )
            .is_ok()
        })
    });
    let consensus_batch = rate(|| {
        items.chunks(BATCH).all(|c| {
            let mut b = ed25519_consensus::batch::Verifier::new();
            for it in c {
                b.queue((
                    ed25519_consensus::VerificationKeyBytes::from(it.key.0),
                    ed25519_consensus::Signature::from(it.sig.0),
                    &it.digest.0[..],
                ));
            }
            b.verify(rand_core_06::OsRng).is_ok()
        })
    });
    let confirmed_batch = rate(|| {
        (0..N).step_by(BATCH).all(|i| {
            let j = i + BATCH;
            ed25519_dalek::verify_batch(&msgs[i..j], &dsigs[i..j], &vks[i..j]).is_ok()
                && sigs[i..j].iter().all(|s| {
                    let mut r = [0u8; 32];
                    r.copy_from_slice(&s.0[..32]);
                    CompressedEdwardsY(r)
                        .decompress()
                        .is_some_and(|p| p.is_torsion_free() && !p.is_small_order())
                })
        })
    });

    // Few signers, many signatures each (votes of a validator set over a
    // synced range): the ZIP-215 batch adds up each key's coefficients.
    let few: Vec<SigItem> = (0..N)
        .map(|i| SigItem {
            key: &pubs[i % 16],
            digest: digests[i],
            sig: &sigs[i],
        })
        .collect();
    let few_sigs: Vec<ed25519_dalek::Signature> = (0..N)
        .map(|i| ed25519_dalek::Signature::from_bytes(&keys[i % 16].sign_digest(&digests[i]).0))
        .collect();
    let few_owned: Vec<Signature> = few_sigs.iter().map(|s| Signature(s.to_bytes())).collect();
    let few: Vec<SigItem> = few
        .iter()
        .zip(&few_owned)
        .map(|(it, s)| SigItem { sig: s, ..*it })
        .collect();
    let few_vks: Vec<ed25519_dalek::VerifyingKey> = (0..N).map(|i| vks[i % 16]).collect();
    let old_batch_few = rate(|| {
        (0..N).step_by(BATCH).all(|i| {
            let j = i + BATCH;
            ed25519_dalek::verify_batch(&msgs[i..j], &few_sigs[i..j], &few_vks[i..j]).is_ok()
        })
    });
    let new_batch_few = rate(|| few.chunks(BATCH).all(sign::verify_all));

    println!("ed25519, {N} signatures by {N} signers, batches of {BATCH}:");
    let row = |what: &str, r: f64| println!("  {what:<62} {:>9.0} sig/s", r);
    row(
        "old single   (dalek verify_strict, key decoded per call)",
        old_single,
    );
    row(
        "old batch    (dalek cofactorless batch, keys decoded once)",
        old_batch,
    );
    row(
        "new single   (sign::verify: ZIP-215, key rule cached)",
        new_single,
    );
    row(
        "new batch    (sign::verify_batch: ZIP-215 batch)",
        new_batch,
    );
    row(
        "new single, key rule not cached (first sight of a key)",
        new_single_uncached,
    );
    row(
        "(b) strict batch + torsion check of every R",
        confirmed_batch,
    );
    row(
        "new batch, every key first seen (key rule not cached)",
        new_batch_fresh_keys,
    );
    row(
        "same rule by ed25519-consensus (dalek-ng, serial): single",
        consensus_single,
    );
    row(
        "same rule by ed25519-consensus (dalek-ng, serial): batch",
        consensus_batch,
    );
    println!("the same {N} digests signed by 16 signers (votes), batches of {BATCH}:");
    row("old batch    (dalek cofactorless batch)", old_batch_few);
    row(
        "new batch    (sign::verify_batch: ZIP-215 batch)",
        new_batch_few,
    );
}
