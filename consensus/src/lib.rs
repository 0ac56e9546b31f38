//! Kite's commit engine: the leader/validator protocol as a pure state
//! machine, its vote keeper and the block sync planner.
//!
//! - [`Engine`]: `handle(Input) -> Vec<Output>`. The node feeds it what
//!   happens (time, proposals, votes, executions, announces, fetched blocks)
//!   and carries out what it returns (build, execute, send, commit, fetch,
//!   schedule a tick, halt). No clock, no I/O, no threads here.
//! - [`votekeeper`]: the power-weighted ACK/NACK tally of one block.
//! - [`sync`]: which heights to fetch from which peer.
//! - [`check`]: the stateless proof checks of fetched blocks (one batch
//!   verification per range), run by the node off the engine.
//! - [`config`]: the engine's configuration and starting state.
//!
//! The protocol of one height, the roles and the safety argument are in
//! `docs/CONSENSUS.md`.

#![forbid(unsafe_code)]

pub mod check;
pub mod config;
pub mod engine;
pub mod io;
pub mod sync;
pub mod votekeeper;

pub use check::{ProofChecker, RangeCheck};
pub use config::{BLOCK_RESERVE_BYTES, CommittedState, EngineConfig, LastCommit, Role};
pub use engine::{Engine, EngineError, EngineStatus, HandOver, HandOverError, Step};
pub use io::{ExecError, Input, Output, Target, TimeoutKind};
pub use sync::SyncPlanner;
pub use votekeeper::{AddVote, VoteKeeper};
