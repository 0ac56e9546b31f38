//! The tx and block decoders (what the RPC, the mempool, block sync and
//! the store read). The first byte picks tx or block. Checks: no panic;
//! a decoded value re-encodes to bytes that decode to the same value with
//! the same hash; signature and root checks run without panicking.

#![no_main]

use kite_fuzz::{MAX_BLOCK, MAX_TX, leader};
use kite_types::{Block, Tx};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(t) = Tx::decode(rest, MAX_TX) {
            let again = Tx::decode(&t.encode(), MAX_TX).expect("a decoded tx re-encodes");
            assert_eq!(again, t);
            assert_eq!(again.hash(), t.hash());
            let _ = t.verify_signature();
            let _ = Tx::verify_batch(&[&t, &again]);
        }
    } else if let Ok(b) = Block::decode(rest, MAX_BLOCK) {
        let again = Block::decode(&b.encode(), MAX_BLOCK).expect("a decoded block re-encodes");
        assert_eq!(again.hash(), b.hash());
        assert_eq!(again.txs(), b.txs());
        let _ = b.check_tx_root();
        let _ = b.verify_leader(&leader().public());
    }
});
