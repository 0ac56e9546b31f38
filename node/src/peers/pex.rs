//! Peer exchange: asks connected peers for the peers they know and hands
//! them to the host, which dials toward its target peer count. A newly
//! identified peer is asked at once, so a node that starts with one
//! bootstrap peer learns the network in seconds rather than after a whole
//! [`super::PEX_INTERVAL`].

use super::Ctx;
use crate::outbound::exchange;
use crate::p2p::{Multiaddr, PeerId};
use kite_protocols::discover;
use std::sync::Arc;

/// Asks up to three connected peers.
pub async fn round(ctx: &Arc<Ctx>) {
    for peer in ctx.peers.ids(None).into_iter().take(3) {
        ask(ctx, peer).await;
    }
}

/// Asks one peer for the peers it knows and hands them to the host.
pub async fn ask(ctx: &Arc<Ctx>, peer: PeerId) {
    let got = exchange(&ctx.shared, peer, discover::PROTOCOL, |s| {
        discover::request(s, kite_protocols::limits::MAX_PEERS as u32)
    })
    .await;
    if let Ok(entries) = got {
        let found: Vec<(PeerId, Vec<Multiaddr>)> = entries
            .into_iter()
            .filter_map(|e| {
                let id = PeerId::from_bytes(&e.id).ok()?;
                let addrs = e
                    .addrs
                    .into_iter()
                    .filter_map(|a| Multiaddr::try_from(a).ok())
                    .collect();
                Some((id, addrs))
            })
            .collect();
        let _ = ctx.shared.host.add_discovered(found).await;
    }
}
