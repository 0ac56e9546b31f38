//! Kite node: libp2p host, stream handlers, task wiring, block sync, peer exchange, JSON-RPC, metrics, config.

#![forbid(unsafe_code)]
pub mod config;
pub mod metrics;
pub mod p2p;
pub mod rpc;
