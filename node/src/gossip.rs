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
            HostEvent::OtherChain {
                peer,
                protocol_version,
            } => {
                other_chain(
                    &ctx,
                    peer,
                    format!("identify protocol {protocol_version:?}"),
                );
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

pub use crate::p2p::OTHER_CHAIN_GRACE;

/// Asks one peer for its status. A peer of another genesis is dropped (and
/// may stop this node, see [`crate::chaincheck`]); a peer that claims a
/// height above ours must prove it; a peer must be on this node's chain
/// (see `same_block_here`) before its status counts.
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
        let chain: String = info.chain_id.chars().take(64).collect();
        let what = format!(
            "runs chain {chain:?} of genesis {}",
            info.genesis_hash.short()
        );
        if !other_chain(ctx, peer, what) {
            drop_later(ctx, peer, "another genesis");
        }
        return;
    }
    ctx.genesis_votes.lock().agree(peer);
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
    // A peer must be on this node's chain: its best block, or when it is
    // ahead its block at this node's height (asked once), must be ours.
    let at = info.best_height.min(ours);
    let claimed = (info.best_height <= ours).then_some(info.best_hash);
    if !same_block_here(ctx, peer, at, claimed).await {
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

/// Notes that `peer` runs another chain (`what`); stops this node when
/// that makes a majority of its `p2p.peers` (see [`crate::chaincheck`]).
/// Returns whether it stopped.
pub fn other_chain(ctx: &Ctx, peer: PeerId, what: String) -> bool {
    let Some(case) = ctx.genesis_votes.lock().disagree(peer, what) else {
        return false;
    };
    let why = crate::chaincheck::genesis_message(&case);
    tracing::error!(%why, "this node's genesis is not its peers'; it stops");
    ctx.halt(why);
    true
}

/// Whether `peer` holds the block this node holds at `height`: by its
/// status (`claimed`, its best block, at `height`), or else by the block it
/// serves there (asked once per connection). A peer that proves another
/// block there (the genesis leader's signature and a quorum commit) casts
/// two valid commits at one height, and this node stops (see
/// [`crate::chaincheck`] for the messages). A forged proof is reported, and
/// so is a status that names another block than the peer then serves.
async fn same_block_here(ctx: &Arc<Ctx>, peer: PeerId, height: u64, claimed: Option<Hash>) -> bool {
    if height < ctx.genesis.initial_height {
        return true;
    }
    let linked = ctx.peers.read().get(&peer).is_some_and(|p| p.linked);
    if claimed.is_none() && linked {
        return true;
    }
    // A peer at this node's height (the usual case, every status poll)
    // is compared with the tip in memory; a lower height needs a store read.
    let tip = {
        let s = ctx.state.read();
        (s.height == height).then_some(s.block_hash)
    };
    let ours = match tip {
        Some(h) => h,
        None => match ctx.store.hash_at(height).await {
            Ok(Some(h)) => h,
            // Not stored (yet): nothing to compare.
            Ok(None) | Err(_) => return true,
        },
    };
    if claimed == Some(ours) {
        ctx.fork_votes.lock().agree(peer);
        return true;
    }
    let Some(theirs) = proved_block(ctx, peer, height).await else {
        return false;
    };
    if theirs == ours {
        if claimed.is_some() {
            ctx.host.report(
                peer,
                kite_protocols::score::INVALID,
                "status: names another best block than it serves",
            );
            return false;
        }
        if let Some(p) = ctx.peers.write().get_mut(&peer) {
            p.linked = true;
        }
        ctx.fork_votes.lock().agree(peer);
        return true;
    }
    // Two valid commits at one height: this node never keeps running on
    // one of them. When most of its p2p.peers proved the other, its store
    // is the odd one out (another run of the chain); else it cannot tell.
    let vote = crate::chaincheck::fork_vote(height, &ours, &theirs);
    let case = ctx.fork_votes.lock().disagree(peer, vote.clone());
    let why = match case {
        Some(case) => crate::chaincheck::fork_message(&case),
        None => crate::chaincheck::conflict_message(&peer, &vote),
    };
    tracing::error!(%why, "a peer proved another commit at a height this node holds; it stops");
    ctx.halt(why);
    false
}

/// Forgets `peer` now and bans it after [`OTHER_CHAIN_GRACE`], so that it
/// can still read this node's status and find out what is wrong too.
fn drop_later(ctx: &Arc<Ctx>, peer: PeerId, why: &'static str) {
    ctx.peers.write().remove(&peer);
    let c = ctx.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = c.cancel.cancelled() => {}
            _ = tokio::time::sleep(OTHER_CHAIN_GRACE) => {}
        }
        c.host.report(peer, 1000, why);
        let _ = c.host.disconnect(peer).await;
    });
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
    proved_block(ctx, peer, height).await.is_some()
}

/// The hash of the block `peer` serves at `height`, when the genesis
/// leader signed it and its commit info reaches the quorum; None when the
/// peer does not serve it (or the exchange fails). A forged proof is
/// reported.
async fn proved_block(ctx: &Arc<Ctx>, peer: PeerId, height: u64) -> Option<Hash> {
    let max = ctx.max_block_bytes();
    let query = blk::BlockQuery::Height(height);
    let reply = exchange(ctx, peer, blk::PROTOCOL, |s| blk::request(s, query, max))
        .await
        .ok()?;
    let (block, ci) = reply.block?;
    let g = ctx.genesis.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let hash = block.hash();
        let valid = block.height() == height
            && block.verify_leader(&g.leader)
            && ci
                .verify(&g.chain_id, height, &hash, &g.validator_set(), g.quorum)
                .is_ok();
        valid.then_some(hash)
    })
    .await
    .ok()
    .flatten();
    let Some(hash) = checked else {
        ctx.host.report(
            peer,
            kite_protocols::score::INVALID,
            "status: forged block for its claimed height",
        );
        return None;
    };
    if let Some(p) = ctx.peers.write().get_mut(&peer) {
        p.proven = p.proven.max(height);
    }
    Some(hash)
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
