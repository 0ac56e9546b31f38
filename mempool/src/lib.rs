//! Kite mempool: admission, per-sender nonce order, limits, block building, recheck.

#![forbid(unsafe_code)]
