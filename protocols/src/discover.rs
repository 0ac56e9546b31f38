//! `/kite/discover/1.0.0`: peer exchange.
//!
//! 1. Initiator sends `PeersRequest{max}`.
//! 2. Handler answers `PeersResponse{peers}`: at most `min(max,`
//!    [`MAX_PEERS`]`)` entries, each a libp2p `PeerId` (bytes, 1 to
//!    [`MAX_PEER_ID_LEN`]) and 0 to [`MAX_ADDRS_PER_PEER`] multiaddrs
//!    (bytes, 1 to [`MAX_ADDR_LEN`] each), and closes.
//! 3. Initiator checks the counts and lengths ([`ProtocolError::Invalid`]
//!    otherwise) and closes.
//!
//! Checked here: counts and lengths. Checked by the node: that ids and
//! addresses parse, are dialable and not itself; a handler that holds
//! entries over the limits leaves them out (or cuts their address lists).

use crate::framing::{close, read_msg, write_msg};
use crate::limits::{
    CONTROL_DEADLINE, CONTROL_MAX, MAX_ADDR_LEN, MAX_ADDRS_PER_PEER, MAX_PEER_ID_LEN, MAX_PEERS,
    PEERS_RESPONSE_MAX, transfer_deadline,
};
use crate::{ProtocolError, proto};
use async_trait::async_trait;
use futures::io::{AsyncRead, AsyncWrite};

/// The protocol id.
pub const PROTOCOL: &str = "/kite/discover/1.0.0";

/// A known peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    /// The libp2p `PeerId`, as bytes.
    pub id: Vec<u8>,
    /// Its multiaddrs, as bytes.
    pub addrs: Vec<Vec<u8>>,
}

impl PeerEntry {
    /// Whether the entry is within the limits.
    fn check(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > MAX_PEER_ID_LEN {
            return Err(format!("peer id of {} bytes", self.id.len()));
        }
        if self.addrs.len() > MAX_ADDRS_PER_PEER {
            return Err(format!("{} addresses for one peer", self.addrs.len()));
        }
        if let Some(a) = self
            .addrs
            .iter()
            .find(|a| a.is_empty() || a.len() > MAX_ADDR_LEN)
        {
            return Err(format!("address of {} bytes", a.len()));
        }
        Ok(())
    }
}

/// What the node provides to serve peer exchange.
#[async_trait]
pub trait PeerSource: Send + Sync {
    /// Up to `max` peers worth sharing (dialable, not banned).
    async fn peers(&self, max: usize) -> Vec<PeerEntry>;
}

/// Asks the peer for up to `max` (at most [`MAX_PEERS`]) peers.
pub async fn request<S>(mut stream: S, max: u32) -> Result<Vec<PeerEntry>, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    const W: &str = "PeersResponse";
    let max = max.min(MAX_PEERS as u32);
    write_msg(&mut stream, &proto::PeersRequest { max }, CONTROL_DEADLINE).await?;
    let resp: proto::PeersResponse = read_msg(
        &mut stream,
        PEERS_RESPONSE_MAX,
        transfer_deadline(PEERS_RESPONSE_MAX),
    )
    .await?;
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    if resp.peers.len() > max as usize {
        return Err(ProtocolError::invalid(
            W,
            format!("{} peers, asked for at most {max}", resp.peers.len()),
        ));
    }
    resp.peers
        .into_iter()
        .map(|p| {
            let e = PeerEntry {
                id: p.id,
                addrs: p.addrs,
            };
            e.check().map_err(|d| ProtocolError::invalid(W, d))?;
            Ok(e)
        })
        .collect()
}

/// Answers one peer request.
pub async fn serve<S>(mut stream: S, source: &impl PeerSource) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let req: proto::PeersRequest = read_msg(&mut stream, CONTROL_MAX, CONTROL_DEADLINE).await?;
    let max = (req.max as usize).min(MAX_PEERS);
    let peers = if max == 0 {
        Vec::new()
    } else {
        source.peers(max).await
    };
    let peers: Vec<proto::PeerInfo> = peers
        .into_iter()
        .map(|mut e| {
            e.addrs.retain(|a| !a.is_empty() && a.len() <= MAX_ADDR_LEN);
            e.addrs.truncate(MAX_ADDRS_PER_PEER);
            e
        })
        .filter(|e| e.check().is_ok())
        .take(max)
        .map(|e| proto::PeerInfo {
            id: e.id,
            addrs: e.addrs,
        })
        .collect();
    let resp = proto::PeersResponse { peers };
    write_msg(&mut stream, &resp, transfer_deadline(PEERS_RESPONSE_MAX)).await?;
    close(&mut stream, CONTROL_DEADLINE).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    /// Knows `n` peers, some of them over the limits.
    struct Book(Vec<PeerEntry>);

    #[async_trait]
    impl PeerSource for Book {
        async fn peers(&self, max: usize) -> Vec<PeerEntry> {
            // Ignores `max` on purpose: serve must cut.
            let _ = max;
            self.0.clone()
        }
    }

    fn entry(i: u8, naddrs: usize) -> PeerEntry {
        PeerEntry {
            id: vec![i; 38],
            addrs: (0..naddrs).map(|j| vec![i, j as u8, 1, 2]).collect(),
        }
    }

    #[tokio::test]
    async fn exchange_respects_limits() {
        let mut peers: Vec<PeerEntry> = (1..=100).map(|i| entry(i, 2)).collect();
        peers[0].id = vec![0; 100]; // dropped: id too long
        peers[1].addrs = vec![vec![1; 20]; 20]; // cut to 8 addresses
        peers[2].addrs.push(vec![5; 500]); // oversized address dropped
        let book = Book(peers);
        let (a, b) = pipe();
        let (got, served) = tokio::join!(request(a, 10), serve(b, &book));
        served.unwrap();
        let got = got.unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(got[0].id, vec![2; 38]);
        assert_eq!(got[0].addrs.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(got[1], entry(3, 2));
        let (a, b) = pipe();
        let (got, served) = tokio::join!(request(a, 1000), serve(b, &book));
        served.unwrap();
        assert_eq!(got.unwrap().len(), MAX_PEERS);
        let (a, b) = pipe();
        let (got, served) = tokio::join!(request(a, 0), serve(b, &book));
        served.unwrap();
        assert!(got.unwrap().is_empty());
    }

    fn resp(peers: Vec<PeerEntry>) -> Vec<u8> {
        frame(&proto::PeersResponse {
            peers: peers
                .into_iter()
                .map(|e| proto::PeerInfo {
                    id: e.id,
                    addrs: e.addrs,
                })
                .collect(),
        })
    }

    async fn ask(script: Vec<u8>, close: bool, max: u32) -> Result<Vec<PeerEntry>, ProtocolError> {
        with_script(script, close, |s| request(s, max)).await
    }

    #[tokio::test]
    async fn forged_responses() {
        let ok = ask(resp(vec![entry(1, 1), entry(2, 0)]), true, 5).await;
        assert_eq!(ok.unwrap().len(), 2);
        let r = ask(resp(vec![entry(1, 1), entry(2, 0)]), true, 1).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        let r = ask(resp(vec![entry(1, 9)]), true, 5).await;
        assert_err!(r, ProtocolError::Invalid { .. });
        let mut e = entry(1, 1);
        e.id.clear();
        assert_err!(
            ask(resp(vec![e]), true, 5).await,
            ProtocolError::Invalid { .. }
        );
        let mut e = entry(1, 1);
        e.addrs[0] = vec![1; MAX_ADDR_LEN + 1];
        assert_err!(
            ask(resp(vec![e]), true, 5).await,
            ProtocolError::Invalid { .. }
        );
    }

    #[tokio::test]
    async fn bad_bytes() {
        let r = ask(prefix(PEERS_RESPONSE_MAX as u64 + 1), false, 5).await;
        assert_err!(r, ProtocolError::TooLarge { .. });
        assert_err!(
            ask(garbage_frame(), true, 5).await,
            ProtocolError::Decode(_)
        );
        let f = resp(vec![entry(1, 3)]);
        assert_err!(
            ask(cut(f, 30), true, 5).await,
            ProtocolError::Truncated { .. }
        );
        let book = Book(vec![entry(1, 1)]);
        let serve_script = |script: Vec<u8>, close: bool| {
            let book = &book;
            async move { with_script(script, close, |s| async move { serve(s, book).await }).await }
        };
        assert_err!(
            serve_script(prefix(5000), false).await,
            ProtocolError::TooLarge { .. }
        );
        assert_err!(
            serve_script(garbage_frame(), true).await,
            ProtocolError::Decode(_)
        );
        assert_err!(
            serve_script(vec![0x02, 0x08], true).await,
            ProtocolError::Truncated { .. }
        );
        assert_err!(
            serve_script(Vec::new(), true).await,
            ProtocolError::Closed { .. }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn drip_fed() {
        let f = resp((1..=3).map(|i| entry(i, 2)).collect());
        let r = with_drip(Vec::new(), f, |s| request(s, 5)).await;
        assert_err!(r, ProtocolError::Timeout { .. });
        let book = Book(vec![]);
        let slow = padded_frame(&proto::PeersRequest { max: 3 }, 20);
        let r = with_drip(Vec::new(), slow, |s| async { serve(s, &book).await }).await;
        assert_err!(r, ProtocolError::Timeout { .. });
    }
}
