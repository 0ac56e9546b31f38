//! `/kite/tx/1.0.0`: fetch one tx by hash.
//!
//! 1. Initiator sends `TxRequest{hash}` (32 bytes).
//! 2. Handler answers `TxResponse{found, tx}` (`tx` set iff `found`) and
//!    closes its write side.
//! 3. Initiator checks that the tx decodes and hashes to the requested hash
//!    ([`ProtocolError::Invalid`] otherwise), then closes.
//!
//! Checked here: structure, canonical body encoding, hash. Checked by the
//! node: the tx signature, chain id, nonce and everything stateful.

use crate::framing::{close, read_msg, write_msg};
use crate::limits::{CONTROL_DEADLINE, CONTROL_MAX, transfer_deadline, tx_response_max};
use crate::{ProtocolError, proto};
use async_trait::async_trait;
use futures::io::{AsyncRead, AsyncWrite};
use kite_types::codec::hash_field;
use kite_types::{Hash, Tx};

/// The protocol id.
pub const PROTOCOL: &str = "/kite/tx/1.0.0";

/// What the node provides to serve tx requests.
#[async_trait]
pub trait TxSource: Send + Sync {
    /// The tx with this hash, from the mempool or the chain.
    async fn get_tx(&self, hash: &Hash) -> Option<Tx>;
}

/// Asks the peer for the tx `hash`. `max_tx_bytes` is the genesis limit.
pub async fn request<S>(
    mut stream: S,
    hash: Hash,
    max_tx_bytes: usize,
) -> Result<Option<Tx>, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let req = proto::TxRequest {
        hash: hash.0.to_vec(),
    };
    write_msg(&mut stream, &req, CONTROL_DEADLINE).await?;
    let max = tx_response_max(max_tx_bytes);
    let resp: proto::TxResponse = read_msg(&mut stream, max, transfer_deadline(max)).await?;
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    if !resp.found {
        return Ok(None);
    }
    let Some(p) = resp.tx else {
        return Err(ProtocolError::invalid("TxResponse", "found but no tx"));
    };
    let tx = Tx::from_proto(p)?;
    if tx.hash() != hash {
        return Err(ProtocolError::invalid(
            "TxResponse",
            format!("asked for tx {}, got {}", hash.short(), tx.hash().short()),
        ));
    }
    Ok(Some(tx))
}

/// Answers one tx request.
pub async fn serve<S>(mut stream: S, source: &impl TxSource) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let req: proto::TxRequest = read_msg(&mut stream, CONTROL_MAX, CONTROL_DEADLINE).await?;
    let hash = hash_field("TxRequest", "hash", &req.hash)?;
    let tx = source.get_tx(&hash).await;
    let resp = proto::TxResponse {
        found: tx.is_some(),
        tx: tx.as_ref().map(Tx::to_proto),
    };
    let size = tx.as_ref().map_or(0, Tx::size);
    write_msg(&mut stream, &resp, transfer_deadline(size)).await?;
    close(&mut stream, CONTROL_DEADLINE).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::collections::HashMap;

    const MAX_TX: usize = 64 * 1024;

    struct Pool(HashMap<Hash, Tx>);

    #[async_trait]
    impl TxSource for Pool {
        async fn get_tx(&self, hash: &Hash) -> Option<Tx> {
            self.0.get(hash).cloned()
        }
    }

    fn pool() -> Pool {
        Pool((1..=3).map(tx).map(|t| (t.hash(), t)).collect())
    }

    #[tokio::test]
    async fn found_and_not_found() {
        let want = tx(2);
        let pool = pool();
        let (a, b) = pipe();
        let (got, served) = tokio::join!(request(a, want.hash(), MAX_TX), serve(b, &pool));
        served.unwrap();
        assert_eq!(got.unwrap(), Some(want));
        let (a, b) = pipe();
        let (got, served) = tokio::join!(request(a, tx(9).hash(), MAX_TX), serve(b, &pool));
        served.unwrap();
        assert_eq!(got.unwrap(), None);
    }

    fn response(t: &Tx) -> Vec<u8> {
        frame(&proto::TxResponse {
            found: true,
            tx: Some(t.to_proto()),
        })
    }

    #[tokio::test]
    async fn forged_tx_is_invalid() {
        // The peer answers with another tx than the one asked for.
        let r = with_script(response(&tx(1)), true, |s| request(s, tx(2).hash(), MAX_TX)).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // found without a tx.
        let r = with_script(
            frame(&proto::TxResponse {
                found: true,
                tx: None,
            }),
            true,
            |s| request(s, tx(2).hash(), MAX_TX),
        )
        .await;
        assert_err!(r, ProtocolError::Invalid { .. });
        // A tx whose body is not canonical.
        let mut p = tx(1).to_proto();
        p.body.extend_from_slice(&[0x78, 0x01]);
        let f = frame(&proto::TxResponse {
            found: true,
            tx: Some(p),
        });
        let r = with_script(f, true, |s| request(s, tx(1).hash(), MAX_TX)).await;
        assert_err!(r, ProtocolError::Decode(_));
    }

    #[tokio::test]
    async fn bad_responses() {
        let h = tx(1).hash();
        let r = with_script(cut(response(&tx(1)), 20), true, |s| request(s, h, MAX_TX)).await;
        assert_err!(r, ProtocolError::Truncated { .. });
        let r = with_script(prefix(1 << 30), false, |s| request(s, h, MAX_TX)).await;
        assert_err!(r, ProtocolError::TooLarge { .. });
        let r = with_script(response(&tx(1)), true, |s| request(s, h, 50)).await;
        assert_err!(r, ProtocolError::TooLarge { .. });
        let r = with_script(garbage_frame(), true, |s| request(s, h, MAX_TX)).await;
        assert_err!(r, ProtocolError::Decode(_));
        let r = with_script(Vec::new(), true, |s| request(s, h, MAX_TX)).await;
        assert_err!(r, ProtocolError::Closed { .. });
    }

    #[tokio::test(start_paused = true)]
    async fn slow_responder_and_slow_requester() {
        let h = tx(1).hash();
        let r = with_drip(Vec::new(), response(&tx(1)), |s| request(s, h, MAX_TX)).await;
        assert_err!(r, ProtocolError::Timeout { .. });
        // Silent peer.
        let r = with_script(Vec::new(), false, |s| request(s, h, MAX_TX)).await;
        assert_err!(r, ProtocolError::Timeout { .. });
        let req = frame(&proto::TxRequest { hash: h.0.to_vec() });
        let r = with_drip(Vec::new(), req, |s| async move { serve(s, &pool()).await }).await;
        assert_err!(r, ProtocolError::Timeout { .. });
    }

    #[tokio::test]
    async fn bad_requests() {
        let serve_script = |script: Vec<u8>, close: bool| async move {
            with_script(script, close, |s| async move { serve(s, &pool()).await }).await
        };
        let r = serve_script(frame(&proto::TxRequest { hash: vec![1; 31] }), true).await;
        assert_err!(r, ProtocolError::Decode(_));
        let r = serve_script(prefix(5000), false).await;
        assert_err!(r, ProtocolError::TooLarge { .. });
        let r = serve_script(garbage_frame(), true).await;
        assert_err!(r, ProtocolError::Decode(_));
        let r = serve_script(
            cut(frame(&proto::TxRequest { hash: vec![1; 32] }), 10),
            true,
        )
        .await;
        assert_err!(r, ProtocolError::Truncated { .. });
    }
}
