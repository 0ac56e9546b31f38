//! RPC tx admission in groups: every `broadcast_tx` hands its decoded tx
//! to one admission task, which admits whatever is waiting in one
//! [`Mempool::admit_batch`] call, with one batch signature verification.
//!
//! Nothing waits on a timer to fill a group: the task takes what queued
//! while the previous group was admitted, so a lone request goes at once
//! and a burst (the items of a JSON-RPC batch, many clients) shares the
//! cost of one verification. A group holds at most [`GROUP`] txs; at most
//! [`QUEUE`] requests wait, and a caller beyond waits for room (the callers
//! are bounded by the RPC's `max_concurrent` requests of at most
//! `MAX_BATCH` items each).
//!
//! A forged tx in a group costs the group a fallback to single
//! verification (the mempool finds which signature failed); the forger's
//! request is refused, the others are admitted.

use crate::context::Shared;
use kite_mempool::{Mempool, MempoolError};
use kite_types::{Hash, Tx};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most txs admitted in one group.
pub const GROUP: usize = 1024;
/// Most requests waiting for the admission task.
pub const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<Hash, MempoolError>>;

/// Reaches the admission task.
#[derive(Clone, Debug)]
pub struct Admission {
    tx: mpsc::Sender<(Tx, Reply)>,
}

fn stopped() -> MempoolError {
    MempoolError::StateUnavailable("the node is stopping: admission has ended".into())
}

impl Admission {
    /// Starts the admission task of `mempool` (a tracked task; it ends
    /// when the node stops).
    pub fn start(shared: Arc<Shared>, mempool: Arc<Mempool>) -> Admission {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stop = shared.stop.clone();
        stop.spawn(run(shared, mempool, rx));
        Admission { tx }
    }

    /// Admits `tx` with whatever other txs wait; returns its hash or why
    /// it was refused.
    pub async fn admit(&self, tx: Tx) -> Result<Hash, MempoolError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((tx, reply)).await.map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

async fn run(shared: Arc<Shared>, mempool: Arc<Mempool>, mut rx: mpsc::Receiver<(Tx, Reply)>) {
    let stop = shared.stop.clone();
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            got = rx.recv() => match got {
                Some(r) => r,
                None => return,
            },
        };
        let mut txs = vec![first.0];
        let mut replies = vec![first.1];
        while txs.len() < GROUP {
            match rx.try_recv() {
                Ok((t, r)) => {
                    txs.push(t);
                    replies.push(r);
                }
                Err(_) => break,
            }
        }
        let (m, accounts, now) = (mempool.clone(), shared.accounts(), shared.clock.now_ms());
        let results = tokio::task::spawn_blocking(move || m.admit_batch(txs, &accounts, now)).await;
        match results {
            Ok(results) => {
                let mut results = results.into_iter();
                for reply in replies {
                    // A missing result is a bug in the mempool, not an
                    // admission: say it failed.
                    let r = results.next().unwrap_or_else(|| {
                        Err(MempoolError::StateUnavailable(
                            "admission returned no result for this tx".into(),
                        ))
                    });
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                // A panic in the mempool: some txs of the group may have
                // gone in before it; they are reported failed all the same
                // (a retry finds them `AlreadyKnown`, which is accepted).
                tracing::error!(error = %e, "tx admission failed");
                for reply in replies {
                    let _ = reply.send(Err(MempoolError::StateUnavailable(format!(
                        "admission failed: {e}"
                    ))));
                }
            }
        }
    }
}
