//! Kite commit engine: leader/validator state machine (Input -> Vec<Output>), vote keeper, sync planner.

#![forbid(unsafe_code)]
