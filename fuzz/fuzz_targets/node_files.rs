//! The node's own files, read back at start (and possibly damaged by a
//! crash, a full disk or a hand edit): the promise record and the peer
//! store. The first byte picks which. Checks: no panic, bounds hold, and
//! what loads saves and loads back the same.

#![no_main]

use kite_node::p2p::store::PeerStore;
use kite_types::promise::Promise;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

const CAPACITY: usize = 16;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(p) = Promise::decode(rest) {
            let again = Promise::decode(&p.encode()).expect("a saved promise loads");
            assert_eq!(again, p);
        }
    } else {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        if let Ok(store) = PeerStore::from_json(rest, CAPACITY, base, max) {
            assert!(
                store.len() <= CAPACITY,
                "the store holds more than its capacity"
            );
            let again = PeerStore::from_json(&store.to_json(), CAPACITY, base, max)
                .expect("a saved peer store loads");
            assert_eq!(again.len(), store.len());
        }
    }
});
