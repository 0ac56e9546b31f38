//! Property tests of the data codecs: every message round-trips, and
//! truncated, oversized and random bytes are refused without a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use kite_types::codec::{self, DecodeError};
use kite_types::{
    Block, BlockHeader, CommitInfo, Hash, NodeKey, Payload, PublicKey, Tx, Vote, proto,
};
use proptest::prelude::*;
use prost::Message;

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        (any::<[u8; 32]>(), any::<u64>()).prop_map(|(to, amount)| Payload::Transfer {
            to: PublicKey(to),
            amount
        }),
        (
            proptest::collection::vec(any::<u8>(), 1..64),
            proptest::collection::vec(any::<u8>(), 0..256)
        )
            .prop_map(|(key, value)| Payload::Put { key, value }),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(|key| Payload::Delete { key }),
    ]
}

fn tx() -> impl Strategy<Value = Tx> {
    (
        any::<[u8; 32]>(),
        "[a-z0-9-]{1,20}",
        any::<u64>(),
        payload(),
    )
        .prop_map(|(seed, chain, nonce, p)| Tx::sign(&NodeKey::from_seed(seed), &chain, nonce, p))
}

fn hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

fn header() -> impl Strategy<Value = BlockHeader> {
    (
        "[a-z0-9-]{1,20}",
        any::<u64>(),
        hash(),
        hash(),
        any::<u64>(),
        hash(),
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(chain_id, height, prev_hash, prev_app_hash, ts, vs, p)| BlockHeader {
                version: kite_types::BLOCK_VERSION,
                chain_id,
                height,
                prev_hash,
                prev_app_hash,
                timestamp_ms: ts,
                tx_root: Hash::ZERO,
                validator_set_hash: vs,
                proposer: PublicKey(p),
                term: 0,
            },
        )
}

fn vote() -> impl Strategy<Value = Vote> {
    (
        any::<[u8; 32]>(),
        any::<u64>(),
        hash(),
        any::<bool>(),
        hash(),
        ".{0,40}",
    )
        .prop_map(|(seed, h, bh, ack, ah, reason)| {
            let k = NodeKey::from_seed(seed);
            if ack {
                Vote::ack(&k, "c", h, bh, ah)
            } else {
                Vote::nack(&k, "c", h, bh, &reason, &[])
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn tx_round_trip(t in tx()) {
        let bytes = t.encode();
        let back = Tx::decode(&bytes, bytes.len()).unwrap();
        prop_assert_eq!(&back, &t);
        prop_assert!(back.verify_signature());
        // One byte too few allowed: refused as too large, before parsing.
        let too_large = matches!(Tx::decode(&bytes, bytes.len() - 1), Err(DecodeError::TooLarge { .. }));
        prop_assert!(too_large);
    }

    #[test]
    fn block_round_trip(h in header(), txs in proptest::collection::vec(tx(), 0..4), seed in any::<[u8; 32]>()) {
        let key = NodeKey::from_seed(seed);
        let b = Block::new_signed(h, txs, &key);
        let bytes = b.encode();
        let back = Block::decode(&bytes, bytes.len()).unwrap();
        prop_assert_eq!(&back, &b);
        prop_assert!(back.check_tx_root());
        prop_assert!(back.verify_leader(&key.public()));
        let hp = BlockHeader::from_proto(&b.header().to_proto()).unwrap();
        prop_assert_eq!(hp.hash(), b.hash());
    }

    #[test]
    fn vote_and_commit_info_round_trip(votes in proptest::collection::vec(vote(), 0..5), ah in hash()) {
        for v in &votes {
            let bytes = v.to_proto().encode_to_vec();
            let p: proto::Vote = codec::decode("vote", &bytes, 1024).unwrap();
            prop_assert_eq!(&Vote::from_proto(&p).unwrap(), v);
            prop_assert!(v.verify("c"));
        }
        let ci = CommitInfo { app_hash: ah, votes };
        let bytes = ci.to_proto().encode_to_vec();
        let p: proto::CommitInfo = codec::decode("commit info", &bytes, 1 << 16).unwrap();
        prop_assert_eq!(CommitInfo::from_proto(&p, 100).unwrap(), ci);
    }

    #[test]
    fn truncated_encodings_never_decode_to_the_same(t in tx(), cut in 1usize..64) {
        let bytes = t.encode();
        let cut = cut.min(bytes.len());
        let short = &bytes[..bytes.len() - cut];
        // Either an error, or (never) the original tx.
        if let Ok(other) = Tx::decode(short, 1 << 16) {
            prop_assert_ne!(other, t);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Tx::decode(&bytes, 1 << 16);
        let _ = Block::decode(&bytes, 1 << 16);
        if let Ok(p) = codec::decode::<proto::Vote>("vote", &bytes, 1 << 16) {
            let _ = Vote::from_proto(&p);
        }
        if let Ok(p) = codec::decode::<proto::CommitInfo>("commit info", &bytes, 1 << 16) {
            let _ = CommitInfo::from_proto(&p, 100);
        }
        if let Ok(p) = codec::decode::<proto::BlockHeader>("header", &bytes, 1 << 16) {
            let _ = BlockHeader::from_proto(&p);
        }
    }
}

#[test]
fn truncated_block_is_refused() {
    let key = NodeKey::from_seed([1; 32]);
    let t = Tx::sign(&key, "c", 1, Payload::Delete { key: vec![1] });
    let h = BlockHeader {
        version: kite_types::BLOCK_VERSION,
        chain_id: "c".into(),
        height: 1,
        prev_hash: Hash::ZERO,
        prev_app_hash: Hash::ZERO,
        timestamp_ms: 1,
        tx_root: Hash::ZERO,
        validator_set_hash: Hash::ZERO,
        proposer: key.public(),
        term: 0,
    };
    let b = Block::new_signed(h, vec![t], &key);
    let bytes = b.encode();
    let mut refused = 0;
    for cut in 1..bytes.len() {
        match Block::decode(&bytes[..cut], 1 << 20) {
            Err(_) => refused += 1,
            Ok(other) => assert_ne!(other, b, "a prefix of {cut} bytes decoded to the block"),
        }
    }
    // Almost every prefix fails to parse; the rest decode to something else.
    assert!(refused > bytes.len() / 2, "{refused} of {}", bytes.len());
    assert!(matches!(
        Block::decode(&bytes, bytes.len() - 1),
        Err(DecodeError::TooLarge { .. })
    ));
}
