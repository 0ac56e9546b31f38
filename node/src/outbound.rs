//! Talking to one peer: [`exchange`] opens an outbound stream and runs one
//! exchange on it, with one quick retry on a transport failure;
//! [`Outbox`] runs exchanges in the background within a per-peer budget.
//!
//! A healthy peer may still reset a stream: its accept buffer for the
//! protocol can be full (see [`crate::p2p::streams`]), or a connection can
//! close under the stream. Such transport failures carry no misbehaviour
//! score and are retried once after [`RETRY_AFTER`]; failures that do
//! (garbage, forged data, timeouts) are not retried and are reported to
//! the host.

use crate::context::Shared;
use crate::p2p::{PeerId, Stream};
use crate::peers::table::{MAX_OUTBOUND_PER_PEER, PeerTable};
use kite_protocols::ProtocolError;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// Pause before the one retry of a transport failure.
pub const RETRY_AFTER: Duration = Duration::from_millis(20);

/// Reports a protocol error's misbehaviour to the host.
pub fn report(shared: &Shared, peer: PeerId, protocol: &str, e: &ProtocolError) {
    if let Some(points) = e.misbehaviour() {
        shared
            .host
            .report(peer, points, &format!("{protocol}: {e}"));
    }
}

/// Runs `exchange` on a new stream of `protocol` to `peer`; counts the
/// outcome in the metrics and reports misbehaviour. Gives up when the node
/// stops.
pub async fn exchange<T, F, Fut>(
    shared: &Shared,
    peer: PeerId,
    protocol: &'static str,
    exchange: F,
) -> Result<T, ProtocolError>
where
    F: Fn(Stream) -> Fut,
    Fut: Future<Output = Result<T, ProtocolError>>,
{
    let attempts = async {
        let mut attempt = 0;
        loop {
            let r = match shared.host.open_stream(peer, protocol).await {
                Ok(s) => exchange(s).await,
                Err(e) => Err(ProtocolError::Refused(e.to_string())),
            };
            match &r {
                Err(e) if e.misbehaviour().is_none() && attempt == 0 => {
                    attempt += 1;
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                _ => break r,
            }
        }
    };
    let result = tokio::select! {
        r = attempts => r,
        _ = shared.stop.cancelled() => Err(ProtocolError::Refused("the node is stopping".into())),
    };
    match &result {
        Ok(_) => shared.metrics.stream(protocol, false, "ok"),
        Err(e) => {
            shared.metrics.stream(protocol, false, "error");
            tracing::debug!(%peer, protocol, error = %e, "outbound exchange failed");
            report(shared, peer, protocol, e);
        }
    }
    result
}

/// Runs exchanges in the background, each as a tracked task, at most
/// [`MAX_OUTBOUND_PER_PEER`] at once toward one peer. The genesis
/// validators have budgets of their own for the node's lifetime (a
/// validator that is down and being dialed never takes another's); other
/// peers' budgets live in the peer table, and peers not in it yet share
/// one. A send beyond the budget is dropped and counted.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
    table: watch::Receiver<PeerTable>,
    validators: Arc<HashMap<PeerId, Arc<Semaphore>>>,
    unknown: Arc<Semaphore>,
}

impl Outbox {
    /// An outbox over the peers task's table.
    pub fn new(shared: Arc<Shared>, table: watch::Receiver<PeerTable>) -> Outbox {
        let budget = || Arc::new(Semaphore::new(MAX_OUTBOUND_PER_PEER));
        let validators = shared
            .genesis
            .validators
            .iter()
            .filter_map(|v| crate::p2p::keys::peer_id_of(&v.pub_key))
            .map(|p| (p, budget()))
            .collect();
        Outbox {
            shared,
            table,
            validators: Arc::new(validators),
            unknown: budget(),
        }
    }

    /// Runs `exchange` toward `peer` in the background, or drops it when
    /// the peer's budget is spent. Returns whether it was started.
    pub fn send<T, F, Fut>(&self, peer: PeerId, protocol: &'static str, exchange: F) -> bool
    where
        T: Send + 'static,
        F: Fn(Stream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, ProtocolError>> + Send + 'static,
    {
        let budget = match self.validators.get(&peer) {
            Some(b) => b.clone(),
            None => self
                .table
                .borrow()
                .get(&peer)
                .map_or_else(|| self.unknown.clone(), |p| p.outbound.clone()),
        };
        let Ok(permit) = budget.try_acquire_owned() else {
            self.shared.metrics.outbound_dropped.inc();
            tracing::debug!(%peer, protocol, "outbound budget spent; send dropped");
            return false;
        };
        let shared = self.shared.clone();
        self.shared.stop.spawn(async move {
            let _ = self::exchange(&shared, peer, protocol, exchange).await;
            drop(permit);
        });
        true
    }
}
