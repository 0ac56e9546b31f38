//! Kite node: libp2p host, stream handlers, task wiring, block sync, peer exchange, JSON-RPC, metrics, config.

#![forbid(unsafe_code)]
pub mod backend;
pub mod chaincheck;
pub mod config;
pub mod driver;
pub mod gossip;
pub mod handlers;
pub mod indexer;
pub mod metrics;
pub mod node;
pub mod outbound;
pub mod p2p;
pub mod promise_file;
pub mod rpc;
pub mod testkit;
