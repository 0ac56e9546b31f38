//! The accept loop of one protocol: drain the inbound streams, run a handler
//! task per stream, at most `max_concurrent` at once.
//!
//! Inbound streams wait in the protocol's buffer
//! ([`super::handle::ACCEPT_BUFFER`]); a stream arriving when it is full is
//! reset by the host and counted as refused. The loop never awaits anything
//! but the next stream: when every permit is taken the new stream is
//! dropped at once (the peer sees a reset) and counted as refused too.
//! Initiators therefore treat a stream that fails early as retryable.

use super::HostError;
use super::net::{Counters, Network, Stream};
use futures::StreamExt;
use libp2p::PeerId;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// How many of a protocol's `max_concurrent` handlers one peer may hold: a
/// quarter (at least 2), so a peer that opens idle streams cannot lock the
/// protocol for others. Senders keep their streams to one peer within it
/// too (tx announces), so the receiver never resets them for being over.
pub fn per_peer_share(max_concurrent: usize) -> usize {
    (max_concurrent.max(1) / 4).max(2)
}

/// Accepts the inbound streams of `protocol` and runs `handler` on each in
/// its own task, at most `max_concurrent` (at least 1) at once, each within
/// the host's stream deadline ([`super::HostConfig::stream_timeout`]).
/// A handler error or a deadline overrun is counted and logged; the handler
/// itself reports misbehaviour through [`Network::report`] when it
/// applies. The loop ends when the host shuts down.
pub fn spawn_accept_loop<F, Fut, E>(
    handle: &dyn Network,
    protocol: &'static str,
    max_concurrent: usize,
    handler: F,
) -> Result<JoinHandle<()>, HostError>
where
    F: Fn(PeerId, Stream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let mut incoming = handle.accept(protocol)?;
    let counters = handle.counters(protocol);
    let deadline = handle.stream_timeout();
    let permits = Arc::new(Semaphore::new(max_concurrent.max(1)));
    let per_peer = per_peer_share(max_concurrent);
    let by_peer: Arc<std::sync::Mutex<std::collections::HashMap<PeerId, usize>>> = Arc::default();
    let handler = Arc::new(handler);
    let mut closed = handle.closed();
    Ok(tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = incoming.next() => next,
                _ = closed.wait_for(|c| *c) => None,
            };
            let Some((peer, stream)) = next else {
                break;
            };
            let Some(slot) = PeerSlot::take(&by_peer, peer, per_peer) else {
                Counters::inc(&counters.refused);
                tracing::debug!(%peer, protocol, per_peer, "peer holds its share of handlers: inbound stream reset");
                drop(stream);
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                Counters::inc(&counters.refused);
                tracing::debug!(%peer, protocol, "all handlers busy: inbound stream reset");
                drop(stream);
                continue;
            };
            Counters::inc(&counters.accepted);
            let fut = handler(peer, stream);
            let counters = counters.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _slot = slot;
                match tokio::time::timeout(deadline, fut).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        Counters::inc(&counters.handler_errors);
                        tracing::debug!(%peer, protocol, error = %e, "inbound stream failed");
                    }
                    Err(_) => {
                        Counters::inc(&counters.handler_errors);
                        tracing::debug!(%peer, protocol, ?deadline, "inbound stream handler too slow: reset");
                    }
                }
            });
        }
        tracing::debug!(protocol, "accept loop ended");
    }))
}

/// One of a peer's handler slots on a protocol; released on drop.
struct PeerSlot {
    map: Arc<std::sync::Mutex<std::collections::HashMap<PeerId, usize>>>,
    peer: PeerId,
}

impl PeerSlot {
    fn take(
        map: &Arc<std::sync::Mutex<std::collections::HashMap<PeerId, usize>>>,
        peer: PeerId,
        max: usize,
    ) -> Option<PeerSlot> {
        let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(peer).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            map: map.clone(),
            peer,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.peer);
            }
        }
    }
}
