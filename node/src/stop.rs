//! The node's one shutdown path: a cancellation token every task selects
//! on, a tracker of every task the node spawns, and the first reason given
//! for stopping.
//!
//! Any task may stop the node ([`Stopper::stop`], [`Stopper::halt`]); the
//! first reason wins. [`crate::node::RunningNode::wait`] then closes the
//! tracker and waits for every task to finish (the engine driver's last
//! flush included) instead of aborting them.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// Why a node stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// It was asked to (`RunningNode::stop`, a signal): a clean stop.
    Requested(&'static str),
    /// It must not go on (the engine halted, a write failed, its chain is
    /// not its network's...): the process exits with an error.
    Halted(String),
}

/// Stops the node and tracks its tasks. Cheap to clone; every clone stops
/// the same node.
#[derive(Clone, Debug, Default)]
pub struct Stopper {
    cancel: CancellationToken,
    tasks: TaskTracker,
    reason: Arc<OnceLock<StopReason>>,
}

impl Stopper {
    /// A stopper for a new node.
    pub fn new() -> Stopper {
        Stopper::default()
    }

    /// Stops the node, keeping the first reason given.
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.cancel.cancel();
    }

    /// Stops the node because it must not go on (`why`, one line): the
    /// process then exits with `error: halted: WHY`.
    pub fn halt(&self, why: impl Into<String>) {
        self.stop(StopReason::Halted(why.into()));
    }

    /// Resolves once the node is stopping.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Whether the node is stopping.
    pub fn is_stopping(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The first reason given, once the node is stopping.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason.get().cloned()
    }

    /// Spawns a task the node waits for when it stops. The task must end
    /// soon after [`Stopper::cancelled`] resolves.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Waits up to `deadline` for every tracked task to finish (no task
    /// can be spawned after this is called). Returns how many were still
    /// running at the deadline.
    pub async fn wait_tasks(&self, deadline: Duration) -> usize {
        self.tasks.close();
        match tokio::time::timeout(deadline, self.tasks.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tasks.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_first_reason_wins_and_wait_waits_for_every_task() {
        let s = Stopper::new();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s2, d2) = (s.clone(), done.clone());
        s.spawn(async move {
            s2.cancelled().await;
            // Work after the stop (a last flush) is waited for.
            tokio::time::sleep(Duration::from_secs(3)).await;
            d2.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        s.halt("disk gone");
        s.stop(StopReason::Requested("signal"));
        assert_eq!(s.reason(), Some(StopReason::Halted("disk gone".into())));
        assert_eq!(s.wait_tasks(Duration::from_secs(10)).await, 0);
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_the_stop_is_counted_at_the_deadline() {
        let s = Stopper::new();
        s.spawn(std::future::pending::<()>());
        s.stop(StopReason::Requested("test"));
        assert_eq!(s.wait_tasks(Duration::from_secs(1)).await, 1);
    }
}
