//! Opening an outbound stream and running one exchange on it, with one
//! quick retry on a transport failure.
//!
//! libp2p-stream resets an inbound stream when its accept channel is busy
//! at that instant (it has no buffer), so under load a healthy peer may
//! drop a stream now and then. Such failures carry no misbehaviour score
//! and are retried once after [`RETRY_AFTER`]; failures that do (garbage,
//! forged data, timeouts) are not retried and are reported to the host.

use crate::handlers::report;
use crate::node::Ctx;
use crate::p2p::{PeerId, Stream};
use kite_protocols::ProtocolError;
use std::future::Future;
use std::time::Duration;

/// Pause before the one retry of a transport failure.
pub const RETRY_AFTER: Duration = Duration::from_millis(20);

/// Runs `exchange` on a new stream of `protocol` to `peer`; counts the
/// outcome in the metrics and reports misbehaviour.
pub async fn exchange<T, F, Fut>(
    ctx: &Ctx,
    peer: PeerId,
    protocol: &'static str,
    exchange: F,
) -> Result<T, ProtocolError>
where
    F: Fn(Stream) -> Fut,
    Fut: Future<Output = Result<T, ProtocolError>>,
{
    let mut attempt = 0;
    let result = loop {
        let r = match ctx.host.open_stream(peer, protocol).await {
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
    };
    match &result {
        Ok(_) => ctx.metrics.stream(protocol, false, "ok"),
        Err(e) => {
            ctx.metrics.stream(protocol, false, "error");
            tracing::debug!(%peer, protocol, error = %e, "outbound exchange failed");
            report(ctx, peer, protocol, e);
        }
    }
    result
}
