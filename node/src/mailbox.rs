//! The engine driver's ingress: the bounded mailboxes through which other
//! tasks reach the one task that owns the commit engine (see
//! [`crate::driver`]).
//!
//! - [`EngineInbox`]: inputs for the engine, in two queues (the genesis
//!   signers' first). Handlers never wait on it: [`EngineInbox::feed_from`]
//!   drops an input when its queue is full (the protocols re-send votes,
//!   proposals and announces) and counts the drop.
//!   Block sync, which must not lose a fetched range, waits for room with
//!   [`EngineInbox::send`].
//! - [`CommitWaiters`]: `broadcast_tx` calls that wait for their tx to
//!   commit register here; the driver answers them when it commits.
//! - [`LeaderRequests`]: an operator's hand-over (`kite admin leader`),
//!   answered with what the engine will do.

use crate::p2p::PeerId;
use kite_consensus::{HandOver, HandOverError, Input};
use kite_types::{Hash, PublicKey};
use prometheus_client::metrics::counter::Counter;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Capacity of the engine's input queue.
pub const ENGINE_INPUTS: usize = 4096;
/// Capacity of the commit-waiter registration queue.
pub const WAITER_QUEUE: usize = 4096;
/// Most `broadcast_tx` calls waiting for a commit at once (the driver's
/// table; a registration beyond it is refused).
pub const MAX_COMMIT_WAITERS: usize = 100_000;

/// The sending side of the engine's input queues. There are two, of
/// [`ENGINE_INPUTS`] each: one for what the genesis leader and validators
/// send (proposals, votes, resets, announces), one for everything else.
/// The driver empties the first before it reads the second, so a flood
/// from other peers never crowds out the consensus messages of the
/// validators.
#[derive(Clone, Debug)]
pub struct EngineInbox {
    priority: mpsc::Sender<Input>,
    general: mpsc::Sender<Input>,
    signers: Arc<HashSet<PeerId>>,
    dropped: Counter,
}

/// The driver's side of the engine's input queues.
#[derive(Debug)]
pub struct EngineInputs {
    priority: mpsc::Receiver<Input>,
    general: mpsc::Receiver<Input>,
}

impl EngineInputs {
    /// The next input, the priority queue first; None once every sender
    /// is gone.
    pub async fn recv(&mut self) -> Option<Input> {
        tokio::select! {
            biased;
            Some(i) = self.priority.recv() => Some(i),
            Some(i) = self.general.recv() => Some(i),
            else => None,
        }
    }

    /// An input that is waiting, the priority queue first.
    pub fn try_recv(&mut self) -> Option<Input> {
        self.priority
            .try_recv()
            .or_else(|_| self.general.try_recv())
            .ok()
    }
}

/// The engine's queue is closed: the driver stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the engine driver stopped")]
pub struct DriverGone;

impl EngineInbox {
    /// New queues; `signers` are the peers whose inputs go first (the
    /// genesis leader and validators); drops are counted in `dropped`
    /// (the `kite_engine_inputs_dropped_total` metric).
    pub fn new(signers: HashSet<PeerId>, dropped: Counter) -> (EngineInbox, EngineInputs) {
        let (ptx, prx) = mpsc::channel(ENGINE_INPUTS);
        let (gtx, grx) = mpsc::channel(ENGINE_INPUTS);
        (
            EngineInbox {
                priority: ptx,
                general: gtx,
                signers: Arc::new(signers),
                dropped,
            },
            EngineInputs {
                priority: prx,
                general: grx,
            },
        )
    }

    /// Feeds the engine what `peer` sent, without waiting; a full queue
    /// drops the input.
    pub fn feed_from(&self, peer: PeerId, input: Input) {
        let queue = if self.signers.contains(&peer) {
            &self.priority
        } else {
            &self.general
        };
        if queue.try_send(input).is_err() {
            self.dropped.inc();
        }
    }

    /// Feeds the engine this node's own input (a status result) without
    /// waiting; a full queue drops it.
    pub fn feed(&self, input: Input) {
        if self.general.try_send(input).is_err() {
            self.dropped.inc();
        }
    }

    /// Feeds the engine, waiting for room (backpressure for block sync).
    pub async fn send(&self, input: Input) -> Result<(), DriverGone> {
        self.general.send(input).await.map_err(|_| DriverGone)
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

/// Capacity of the hand-over queue; the admin listener serves at most as
/// many requests at once.
pub const LEADER_QUEUE: usize = 8;

/// One hand-over request: the validator to lead, whether to force it (see
/// [`HandOverError::LeaderAlive`]), and where the driver answers with the
/// engine's plan.
pub type LeaderRequest = (
    PublicKey,
    bool,
    oneshot::Sender<Result<HandOver, HandOverError>>,
);

/// Sends an operator's hand-over to the driver.
#[derive(Clone, Debug)]
pub struct LeaderRequests {
    tx: mpsc::Sender<LeaderRequest>,
}

impl LeaderRequests {
    /// A new queue of [`LEADER_QUEUE`].
    pub fn new() -> (LeaderRequests, mpsc::Receiver<LeaderRequest>) {
        let (tx, rx) = mpsc::channel(LEADER_QUEUE);
        (LeaderRequests { tx }, rx)
    }

    /// Asks the driver for `to` to lead; answers what the engine will do
    /// (it feeds itself [`Input::HandOver`] when it accepts), or why not.
    pub async fn hand_over(
        &self,
        to: PublicKey,
        force: bool,
    ) -> Result<Result<HandOver, HandOverError>, DriverGone> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((to, force, reply))
            .await
            .map_err(|_| DriverGone)?;
        answer.await.map_err(|_| DriverGone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_from_strangers_never_crowds_out_a_validator() {
        let validator = PeerId::random();
        let dropped = Counter::default();
        let (inbox, mut inputs) = EngineInbox::new([validator].into(), dropped.clone());
        let stranger = PeerId::random();
        for t in 0..ENGINE_INPUTS as u64 + 100 {
            inbox.feed_from(stranger, Input::Tick { now_ms: t });
        }
        assert_eq!(dropped.get(), 100, "the stranger's queue is full");
        inbox.feed_from(validator, Input::Tick { now_ms: u64::MAX });
        assert_eq!(dropped.get(), 100, "the validator's input got in");
        // And it is read first.
        assert!(matches!(
            inputs.recv().await,
            Some(Input::Tick { now_ms: u64::MAX })
        ));
        assert!(matches!(inputs.try_recv(), Some(Input::Tick { now_ms: 0 })));
    }
}
