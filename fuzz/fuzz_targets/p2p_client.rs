//! The asking side of every p2p protocol: the first byte picks the
//! request, the rest is the peer's answer. Checks: no panic, and an answer
//! that is accepted is the one asked for (the tx or block with the asked
//! hash, blocks at the asked heights with matching tx roots, no more peers
//! or blocks than asked for).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    kite_fuzz::block_on(kite_fuzz::ask(which, kite_fuzz::Script::new(rest)));
});
