//! Kite application: the deterministic state machine (accounts, transfers, key-value) and its app hash.

#![forbid(unsafe_code)]
