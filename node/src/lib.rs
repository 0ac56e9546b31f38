//! Kite node: libp2p host, stream handlers, task wiring, block sync, peer exchange, JSON-RPC, metrics, config.

#![forbid(unsafe_code)]
pub mod admin;
pub mod admission;
pub mod backend;
pub mod blocking;
pub mod budget;
pub mod chaincheck;
pub mod config;
pub mod context;
pub mod driver;
pub mod handlers;
pub mod mailbox;
pub mod metrics;
pub mod node;
pub mod outbound;
pub mod p2p;
pub mod peers;
pub mod promise_file;
pub mod rpc;
pub mod state;
pub mod stop;
pub mod sync;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod txgossip;
