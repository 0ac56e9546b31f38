//! The serving side of every p2p protocol: the first byte picks the
//! protocol, the rest is what a peer sends. Sinks accept everything, so
//! the handler reads as far as the bytes allow. Checks: no panic, and what
//! a handler hands on is what it promised to check (a block matches the
//! announced hash and its tx root, a tx batch holds only txs whose hash
//! was announced).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let sink = kite_fuzz::Everything::default();
    kite_fuzz::block_on(kite_fuzz::serve(which, kite_fuzz::Script::new(rest), &sink));
});
