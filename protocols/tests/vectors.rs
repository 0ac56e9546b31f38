#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The test vectors printed in docs/PROTOCOL.md ("Test vectors"). If one of
//! these changes, the wire format changed: update the doc and think twice.

use kite_protocols::framing::encode_frame;
use kite_protocols::proto::TxRequest;
use kite_types::{Block, BlockHeader, Hash, NodeKey, Payload, PublicKey, Tx, sign};

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn documented_vectors() {
    let k = NodeKey::from_seed([1; 32]);
    assert_eq!(
        hex_of(&k.public().0),
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
    );
    let tx = Tx::sign(
        &k,
        "kite-test",
        1,
        Payload::Transfer {
            to: PublicKey([2; 32]),
            amount: 5,
        },
    );
    let body = tx.to_proto().body;
    assert_eq!(
        hex_of(&body),
        "0a096b6974652d7465737412208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c\
         180122240a2002020202020202020202020202020202020202020202020202020202020202021005"
    );
    assert_eq!(
        sign::tx_digest(&body).to_string(),
        "50ad5896b1a1faab03c45271aed42feb43e1f97952f6e54b519a74a1731a7e63"
    );
    assert_eq!(
        hex_of(&tx.encode()),
        "0a550a096b6974652d7465737412208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c\
         180122240a20020202020202020202020202020202020202020202020202020202020202020210051240\
         dbc5585ed3636d48a4d5bdea4f749fa688a50207a837bea6ec797b60f9bd34b9\
         5a42e681037a3a45f9fe483e025f5b099972095f3a42be75ac7c9deb4e61be07"
    );
    assert_eq!(
        tx.hash().to_string(),
        "d20e6ff801c636f9aabd71b2d00002066de7ca141374d6e938bc2823ab752e3a"
    );
    assert_eq!(
        hex_of(&encode_frame(&TxRequest {
            hash: tx.hash().0.to_vec()
        })),
        "220a20d20e6ff801c636f9aabd71b2d00002066de7ca141374d6e938bc2823ab752e3a"
    );

    let header = BlockHeader {
        version: 1,
        chain_id: "kite-test".into(),
        height: 1,
        prev_hash: Hash::ZERO,
        prev_app_hash: Hash::ZERO,
        timestamp_ms: 1_700_000_000_000,
        tx_root: Hash::ZERO,
        validator_set_hash: Hash::ZERO,
        proposer: k.public(),
        term: 0,
    };
    let b = Block::new_signed(header, vec![tx], &k);
    assert_eq!(
        b.header().tx_root.to_string(),
        "c1970a7eba80a54a282774e07d0b783a0b31629421dd273497d14e15d2a8385e"
    );
    assert_eq!(
        hex_of(&prost::Message::encode_to_vec(&b.header().to_proto())),
        "080112096b6974652d74657374180122200000000000000000000000000000000000000000000000000000000000000000\
         2a200000000000000000000000000000000000000000000000000000000000000000\
         3080d095ffbc31\
         3a20c1970a7eba80a54a282774e07d0b783a0b31629421dd273497d14e15d2a8385e\
         42200000000000000000000000000000000000000000000000000000000000000000\
         4a208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
    );
    assert_eq!(
        b.hash().to_string(),
        "6e6295fa43b0004cbdc57b55571ceeafb687bb677baab34ffb732a3da79a7990"
    );
    assert_eq!(
        sign::block_digest(&b.hash()).to_string(),
        "6a5fdfb14f21bbef4cb9ea3079fe61b361d9bcf949c219bd480b581c8525f0a7"
    );
    let app = Hash::digest(b"app");
    assert_eq!(
        app.to_string(),
        "a172cedcae47474b615c54d510a5d84a8dea3032e958587430b413538be3f333"
    );
    assert_eq!(
        sign::vote_digest("kite-test", 1, &b.hash(), true, &app).to_string(),
        "f72c85c61ac9f665eca7d08b90879f8beddbd88cd3154ed144e0cbe561f001bb"
    );
    // A NACK signs the bad txs it names: here the tx above.
    assert_eq!(
        sign::nack_digest("kite-test", 1, &b.hash(), &[b.txs()[0].hash()]).to_string(),
        "aa4a1837df6e22f306e48d9c335f340b43bfafc4fce3045413c8cb0691cc75fc"
    );
    assert_eq!(
        sign::reset_digest("kite-test", 0, 1, &b.hash()).to_string(),
        "383a6052dc658152f16a389b2d333a52cf8fc91ab33ba4de084e7f229ddf211c"
    );
}
