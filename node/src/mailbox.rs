//! The engine driver's ingress: the bounded mailboxes through which other
//! tasks reach the one task that owns the commit engine (see
//! [`crate::driver`]).
//!
//! - [`EngineInbox`]: inputs for the engine. Handlers never wait on it:
//!   [`EngineInbox::feed`] drops an input when the queue is full (the
//!   protocols re-send votes, proposals and announces) and counts the drop.
//!   Block sync, which must not lose a fetched range, waits for room with
//!   [`EngineInbox::send`].
//! - [`CommitWaiters`]: `broadcast_tx` calls that wait for their tx to
//!   commit register here; the driver answers them when it commits.

use kite_consensus::Input;
use kite_types::Hash;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

/// Capacity of the engine's input queue.
pub const ENGINE_INPUTS: usize = 4096;
/// Capacity of the commit-waiter registration queue.
pub const WAITER_QUEUE: usize = 4096;
/// Most `broadcast_tx` calls waiting for a commit at once (the driver's
/// table; a registration beyond it is refused).
pub const MAX_COMMIT_WAITERS: usize = 100_000;

/// The sending side of the engine's input queue.
#[derive(Clone, Debug)]
pub struct EngineInbox {
    tx: mpsc::Sender<Input>,
    dropped: Counter,
}

/// The engine's queue is closed: the driver stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the engine driver stopped")]
pub struct DriverGone;

impl EngineInbox {
    /// A new queue of [`ENGINE_INPUTS`] inputs; drops are counted in
    /// `dropped` (the `kite_engine_inputs_dropped_total` metric).
    pub fn new(dropped: Counter) -> (EngineInbox, mpsc::Receiver<Input>) {
        let (tx, rx) = mpsc::channel(ENGINE_INPUTS);
        (EngineInbox { tx, dropped }, rx)
    }

    /// Feeds the engine without waiting; a full queue drops the input.
    pub fn feed(&self, input: Input) {
        if self.tx.try_send(input).is_err() {
            self.dropped.inc();
        }
    }

    /// Feeds the engine, waiting for room (backpressure for block sync).
    pub async fn send(&self, input: Input) -> Result<(), DriverGone> {
        self.tx.send(input).await.map_err(|_| DriverGone)
    }

    /// Inputs dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

/// One `broadcast_tx` waiting for its tx: the driver sends the height.
pub type Waiter = (Hash, oneshot::Sender<u64>);

/// Registers commit waiters with the driver.
#[derive(Clone, Debug)]
pub struct CommitWaiters {
    tx: mpsc::Sender<Waiter>,
}

/// Too many calls wait for a commit already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many broadcast_tx calls waiting for a commit")]
pub struct TooManyWaiters;

impl CommitWaiters {
    /// A new registration queue of [`WAITER_QUEUE`].
    pub fn new() -> (CommitWaiters, mpsc::Receiver<Waiter>) {
        let (tx, rx) = mpsc::channel(WAITER_QUEUE);
        (CommitWaiters { tx }, rx)
    }

    /// Registers a wait for `hash`. Register before the tx can commit (that
    /// is, before admitting it): the driver reads every registration queued
    /// before it announces a commit. The receiver gets the commit height,
    /// or an error when the driver's table is full or the node stops;
    /// dropping it cancels the wait.
    pub fn wait_for(&self, hash: Hash) -> Result<oneshot::Receiver<u64>, TooManyWaiters> {
        let (tx, rx) = oneshot::channel();
        self.tx.try_send((hash, tx)).map_err(|_| TooManyWaiters)?;
        Ok(rx)
    }
}
