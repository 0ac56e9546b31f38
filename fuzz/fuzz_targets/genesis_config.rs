//! The genesis loader and the node's config parser (files an operator
//! may copy from anywhere). The first byte picks which. Checks: no panic;
//! a genesis that loads, once saved, loads back the same with the same hash; a config that
//! parses prints as TOML that parses back to the same text.

#![no_main]

use kite_node::config::Config;
use kite_types::Genesis;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(g) = Genesis::from_json(rest) {
            let again = Genesis::from_json(g.to_json().as_bytes()).expect("a saved genesis loads");
            assert_eq!(again, g);
            assert_eq!(again.hash(), g.hash());
        }
    } else if let Ok(text) = std::str::from_utf8(rest)
        && let Ok(c) = Config::parse(text)
    {
        let printed = c.to_documented_toml();
        let again = Config::parse(&printed).expect("a printed config parses");
        assert_eq!(again.to_documented_toml(), printed);
    }
});
