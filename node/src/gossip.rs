//! Background exchanges with peers: host events, status polling (which
//! also triggers block sync), tx announcement and re-announcement, and
//! peer exchange.

use crate::handlers::status_info;
use crate::node::{Ctx, now_ms};
use crate::outbound::exchange;
use crate::p2p::{HostEvent, HostEvents, Multiaddr, PeerId};
use kite_consensus::Input;
use kite_protocols::{blk, discover, status, txann};
use kite_types::Hash;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often connected peers are asked for their status.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(2);
/// How often new txs are announced.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(20);
/// How often peers are asked for more peers.
pub const PEX_INTERVAL: Duration = Duration::from_secs(30);
/// Most outbound announce streams at once.
pub const MAX_ANNOUNCE_STREAMS: usize = 64;

/// Follows the host's events: keeps the peer table and asks new peers for
/// their status.
pub async fn run_events(ctx: Arc<Ctx>, mut events: HostEvents) {
    loop {
        let ev = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            ev = events.recv() => match ev { Some(e) => e, None => return },
        };
        match ev {
            HostEvent::PeerConnected { peer, addr } => {
                ctx.peers.write().entry(peer).or_default().addrs = vec![addr];
                ctx.metrics.peers.set(ctx.peers.read().len() as i64);
                let c = ctx.clone();
                tokio::spawn(async move { ask_status(&c, peer).await });
            }
            HostEvent::PeerDisconnected { peer } => {
                ctx.peers.write().remove(&peer);
                ctx.metrics.peers.set(ctx.peers.read().len() as i64);
            }
            HostEvent::PeerIdentified {
                peer, listen_addrs, ..
            } => {
                if let Some(p) = ctx.peers.write().get_mut(&peer) {
                    p.addrs = listen_addrs;
                }
                if ctx.config.p2p.pex {
                    let c = ctx.clone();
                    tokio::spawn(async move { exchange_peers(&c, peer).await });
                }
            }
        }
    }
}

/// Asks one peer for its status; a peer of another genesis is dropped.
pub async fn ask_status(ctx: &Arc<Ctx>, peer: PeerId) {
    let Ok(info) = exchange(ctx, peer, status::PROTOCOL, status::request).await else {
        return;
    };
    if info.genesis_hash != ctx.genesis_hash || info.chain_id != ctx.genesis.chain_id {
        tracing::warn!(
            %peer,
            their_genesis = %info.genesis_hash.short(),
            ours = %ctx.genesis_hash.short(),
            "peer runs another genesis; disconnecting it"
        );
        ctx.host.report(peer, 1000, "another genesis");
        let _ = ctx.host.disconnect(peer).await;
        return;
    }
    // A status is not signed, and a height above ours makes the engine
    // sync before it proposes or votes again: a peer that merely claims a
    // far height would stall the chain for as long as it stays connected.
    // So the claim counts only once the peer has served its claimed best
    // block with a valid commit.
    let ours = ctx.state.read().height;
    if info.best_height > ours && !proves_height(ctx, peer, info.best_height).await {
        tracing::debug!(%peer, claimed = info.best_height, ours, "peer did not prove its height; status ignored");
        return;
    }
    {
        let mut peers = ctx.peers.write();
        let p = peers.entry(peer).or_default();
        p.height = Some(info.best_height);
        p.hash = Some(info.best_hash);
        p.blocks_only = info.blocks_only;
    }
    if let Some(key) = crate::p2p::keys::public_key_of(&peer) {
        ctx.feed(Input::PeerStatus {
            peer: key,
            height: info.best_height,
            hash: info.best_hash,
        });
    }
}

/// Whether `peer` holds `height`: it has proved it before, or it serves
/// that block now, signed by the leader with a commit info that reaches the
/// quorum. A forged proof is reported.
async fn proves_height(ctx: &Arc<Ctx>, peer: PeerId, height: u64) -> bool {
    if ctx
        .peers
        .read()
        .get(&peer)
        .is_some_and(|p| p.proven >= height)
    {
        return true;
    }
    let max = ctx.max_block_bytes();
    let query = blk::BlockQuery::Height(height);
    let Ok(reply) = exchange(ctx, peer, blk::PROTOCOL, |s| blk::request(s, query, max)).await
    else {
        return false;
    };
    let Some((block, ci)) = reply.block else {
        return false;
    };
    let g = ctx.genesis.clone();
    let valid = tokio::task::spawn_blocking(move || {
        block.verify_leader(&g.leader)
            && ci
                .verify(
                    &g.chain_id,
                    height,
                    &block.hash(),
                    &g.validator_set(),
                    g.quorum,
                )
                .is_ok()
    })
    .await
    .unwrap_or(false);
    if !valid {
        ctx.host.report(
            peer,
            kite_protocols::score::INVALID,
            "status: forged block for its claimed height",
        );
        return false;
    }
    if let Some(p) = ctx.peers.write().get_mut(&peer) {
        p.proven = p.proven.max(height);
    }
    true
}

/// Asks every connected peer for its status, every [`STATUS_INTERVAL`].
pub async fn run_status_poll(ctx: Arc<Ctx>) {
    let mut every = tokio::time::interval(STATUS_INTERVAL);
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        for peer in ctx.peer_ids(None) {
            let c = ctx.clone();
            tokio::spawn(async move { ask_status(&c, peer).await });
        }
        // Keep the status answer of this node in the metrics too.
        let _ = status_info(&ctx);
    }
}

/// Announces newly admitted txs to every peer except the one that sent
/// them, and re-announces the oldest unconfirmed ones every
/// `p2p.reannounce_interval`.
pub async fn run_tx_gossip(ctx: Arc<Ctx>) {
    let Some(mempool) = ctx.mempool.clone() else {
        return;
    };
    let streams = Arc::new(tokio::sync::Semaphore::new(MAX_ANNOUNCE_STREAMS));
    let mut every = tokio::time::interval(ANNOUNCE_INTERVAL);
    let re_ms = u64::try_from(ctx.config.p2p.reannounce_interval.as_millis()).unwrap_or(u64::MAX);
    let mut next_re = now_ms() + re_ms;
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        let peers: Vec<PeerId> = ctx
            .peers
            .read()
            .iter()
            .filter(|(_, s)| !s.blocks_only)
            .map(|(p, _)| *p)
            .collect();
        let fresh = mempool.take_announcements(kite_protocols::limits::MAX_ANNOUNCE_HASHES * 8);
        let mut batches: HashMap<PeerId, Vec<Hash>> = HashMap::new();
        if !fresh.is_empty() {
            let origins = ctx.origins.lock();
            for h in fresh {
                let origin = origins.get(&h).copied();
                for p in &peers {
                    if Some(*p) != origin {
                        batches.entry(*p).or_default().push(h);
                    }
                }
            }
        }
        let now = now_ms();
        if now >= next_re {
            next_re = now + re_ms;
            let old = mempool.reannounce(now, re_ms);
            for p in &peers {
                batches.entry(*p).or_default().extend(old.iter().copied());
            }
        }
        for (peer, hashes) in batches {
            for chunk in hashes.chunks(kite_protocols::limits::MAX_ANNOUNCE_HASHES) {
                let Ok(permit) = streams.clone().acquire_owned().await else {
                    return;
                };
                let (ctx, m, chunk) = (ctx.clone(), mempool.clone(), chunk.to_vec());
                tokio::spawn(async move {
                    let _ = exchange(&ctx, peer, txann::PROTOCOL, |s| {
                        txann::announce(s, &chunk, |h| m.get(h))
                    })
                    .await;
                    drop(permit);
                });
            }
        }
    }
}

/// Peer exchange: asks a few connected peers for the peers they know and
/// hands them to the host, which dials toward its target peer count. A
/// newly identified peer is also asked at once (see [`run_events`]), so a
/// node that starts with one bootstrap peer learns the network in seconds
/// rather than after a whole [`PEX_INTERVAL`].
pub async fn run_pex(ctx: Arc<Ctx>) {
    let mut every = tokio::time::interval(PEX_INTERVAL);
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        for peer in ctx.peer_ids(None).into_iter().take(3) {
            exchange_peers(&ctx, peer).await;
        }
    }
}

/// Asks one peer for the peers it knows and hands them to the host.
pub async fn exchange_peers(ctx: &Arc<Ctx>, peer: PeerId) {
    let got = exchange(ctx, peer, discover::PROTOCOL, |s| {
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
        let _ = ctx.host.add_discovered(found).await;
    }
}
