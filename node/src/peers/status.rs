//! Status polling: asks a peer for its status (`/kite/status`) and decides
//! whether it counts. A peer of another genesis is dropped (and may stop
//! this node, see [`crate::chaincheck`]); a peer that claims a height above
//! ours must prove it; a peer must be on this node's chain before its
//! status counts. A status that counts goes to the peer table and to the
//! engine (which starts block sync when the peer is ahead).

use super::{Ctx, Note, OTHER_CHAIN_GRACE};
use crate::chaincheck::{Finding, fork_vote};
use crate::context::Shared;
use crate::outbound::exchange;
use crate::p2p::PeerId;
use crate::state::NodeState;
use kite_consensus::Input;
use kite_protocols::status::{self, RoundInfo, StatusInfo};
use kite_protocols::{blk, score};
use kite_types::Hash;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// This node's status as the status protocol sends it.
pub fn info(shared: &Shared, s: &NodeState) -> StatusInfo {
    StatusInfo {
        chain_id: shared.genesis.chain_id.clone(),
        best_height: s.height,
        best_hash: s.block_hash,
        app_hash: s.app_hash,
        role: shared.config.role.into(),
        round: Some(RoundInfo {
            height: s.height + 1,
            round: s.round,
            step: s.step.as_str().to_string(),
            proposal_hash: s.proposal,
        }),
        genesis_hash: shared.genesis_hash,
        blocks_only: shared.config.blocks_only,
        syncing: s.syncing,
        sync_target: s.sync_target,
    }
}

/// Asks one peer for its status and takes in what counts.
pub async fn ask(ctx: &Arc<Ctx>, peer: PeerId) {
    let shared = &ctx.shared;
    let Ok(info) = exchange(shared, peer, status::PROTOCOL, status::request).await else {
        return;
    };
    if info.genesis_hash != shared.genesis_hash || info.chain_id != shared.genesis.chain_id {
        tracing::warn!(
            %peer,
            their_genesis = %info.genesis_hash.short(),
            ours = %shared.genesis_hash.short(),
            "peer runs another genesis; disconnecting it"
        );
        let chain: String = info.chain_id.chars().take(64).collect();
        let what = format!(
            "runs chain {chain:?} of genesis {}",
            info.genesis_hash.short()
        );
        ctx.chain.tell(Finding::OtherGenesis { peer, what }).await;
        drop_later(ctx, peer, "another genesis").await;
        return;
    }
    ctx.chain.tell(Finding::SameGenesis(peer)).await;
    // A status is not signed, and a height above ours makes the engine
    // sync before it proposes or votes again: a peer that merely claims a
    // far height would stall the chain for as long as it stays connected.
    // So the claim counts only once the peer has served its claimed best
    // block with a valid commit.
    let ours = ctx.state.borrow().height;
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
    // In the table before the engine hears of it: block sync picks its
    // peers there.
    ctx.peers
        .tell(Note::Status {
            peer,
            height: info.best_height,
            hash: info.best_hash,
            blocks_only: info.blocks_only,
        })
        .await;
    if let Some(key) = crate::p2p::keys::public_key_of(&peer) {
        ctx.engine.feed(Input::PeerStatus {
            peer: key,
            height: info.best_height,
            hash: info.best_hash,
        });
    }
}

/// Whether `peer` holds the block this node holds at `height`: by its
/// status (`claimed`, its best block, at `height`), or else by the block it
/// serves there (asked once per connection). A peer that proves another
/// block there (the genesis leader's signature and a quorum commit) casts
/// two valid commits at one height, and this node stops (see
/// [`crate::chaincheck`]). A forged proof is reported, and so is a status
/// that names another block than the peer then serves.
async fn same_block_here(ctx: &Arc<Ctx>, peer: PeerId, height: u64, claimed: Option<Hash>) -> bool {
    let shared = &ctx.shared;
    if height < shared.genesis.initial_height {
        return true;
    }
    let linked = ctx.peers.get(&peer).is_some_and(|p| p.linked);
    if claimed.is_none() && linked {
        return true;
    }
    // A peer at this node's height (the usual case, every status poll)
    // is compared with the tip in memory; a lower height needs a store read.
    let tip = {
        let s = ctx.state.borrow();
        (s.height == height).then_some(s.block_hash)
    };
    let ours = match tip {
        Some(h) => h,
        None => match shared.store.hash_at(height).await {
            Ok(Some(h)) => h,
            // Not stored (yet): nothing to compare.
            Ok(None) | Err(_) => return true,
        },
    };
    if claimed == Some(ours) {
        ctx.chain.tell(Finding::SameBlock(peer)).await;
        return true;
    }
    let Some(theirs) = proved_block(ctx, peer, height).await else {
        return false;
    };
    if theirs == ours {
        if claimed.is_some() {
            shared.host.report(
                peer,
                score::INVALID,
                "status: names another best block than it serves",
            );
            return false;
        }
        ctx.peers.tell(Note::Linked(peer)).await;
        ctx.chain.tell(Finding::SameBlock(peer)).await;
        return true;
    }
    let vote = fork_vote(height, &ours, &theirs);
    tracing::error!(%peer, %vote, "a peer proved another commit at a height this node holds");
    ctx.chain.tell(Finding::OtherBlock { peer, vote }).await;
    false
}

/// Forgets `peer` now and bans it after [`OTHER_CHAIN_GRACE`], so that it
/// can still read this node's status and find out what is wrong too.
async fn drop_later(ctx: &Arc<Ctx>, peer: PeerId, why: &'static str) {
    ctx.peers.tell(Note::Forget(peer)).await;
    let shared = ctx.shared.clone();
    ctx.shared.stop.spawn(async move {
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tokio::time::sleep(OTHER_CHAIN_GRACE) => {}
        }
        shared.host.report(peer, 1000, why);
        let _ = shared.host.disconnect(peer).await;
    });
}

/// After a peer failed to prove a height it claimed, how long its claims
/// above this node's height are ignored (not fetched).
pub const UNPROVEN_BACKOFF: Duration = Duration::from_secs(30);

/// What a claimed height the peer then does not serve costs it: a few such
/// lies in a row get it banned (scores decay over time).
pub const UNPROVEN_PENALTY: u32 = 25;

/// Whether `peer` holds `height`: it has proved it before, or it serves
/// that block now, signed by the leader with a commit info that reaches the
/// quorum. A forged proof is reported. A claim is checked at most once per
/// [`UNPROVEN_BACKOFF`] after one that failed, and a claimed best block the
/// peer then does not serve costs it [`UNPROVEN_PENALTY`]: claiming costs
/// the claimer, not only this node.
async fn proves_height(ctx: &Arc<Ctx>, peer: PeerId, height: u64) -> bool {
    let state = ctx.peers.get(&peer);
    if state.as_ref().is_some_and(|p| p.proven >= height) {
        return true;
    }
    let now = Instant::now();
    if state
        .and_then(|p| p.unproven_until)
        .is_some_and(|t| now < t)
    {
        return false;
    }
    let proof = proved_block_or_missing(ctx, peer, height).await;
    if proof == Proof::Missing {
        // A failed exchange (a busy or slow peer) is tried again at the
        // next poll; a forged proof got the peer banned.
        ctx.shared.host.report(
            peer,
            UNPROVEN_PENALTY,
            "status: does not serve the best block it claims",
        );
        let until = now + UNPROVEN_BACKOFF;
        ctx.peers.tell(Note::Unproven { peer, until }).await;
    }
    proof == Proof::Valid
}

/// How a proof went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    /// The block came, signed and committed.
    Valid,
    /// The peer answered that it does not hold the block.
    Missing,
    /// The exchange failed, or the proof was forged (and reported).
    Failed,
}

async fn proved_block_or_missing(ctx: &Arc<Ctx>, peer: PeerId, height: u64) -> Proof {
    match fetch_proof(ctx, peer, height).await {
        Ok(Some(_)) => Proof::Valid,
        Ok(None) => Proof::Missing,
        Err(()) => Proof::Failed,
    }
}

/// The hash of the block `peer` serves at `height`, when the genesis
/// leader signed it and its commit info reaches the quorum; None when the
/// peer does not serve it (or the exchange fails). A forged proof is
/// reported.
async fn proved_block(ctx: &Arc<Ctx>, peer: PeerId, height: u64) -> Option<Hash> {
    fetch_proof(ctx, peer, height).await.ok().flatten()
}

/// [`proved_block`], telling apart a peer that says it lacks the block
/// (`Ok(None)`) from a failed exchange or a forged proof (`Err`).
async fn fetch_proof(ctx: &Arc<Ctx>, peer: PeerId, height: u64) -> Result<Option<Hash>, ()> {
    let shared = &ctx.shared;
    let max = shared.max_block_bytes();
    let query = blk::BlockQuery::Height(height);
    let reply = exchange(shared, peer, blk::PROTOCOL, |s| blk::request(s, query, max))
        .await
        .map_err(|_| ())?;
    let Some((block, ci)) = reply.block else {
        return Ok(None);
    };
    let g = shared.genesis.clone();
    let schedule = shared.schedule.clone();
    let checked = crate::blocking::blocking_check("status block check", move || {
        let hash = block.hash();
        let valid = block.height() == height
            && block.verify_leader(&schedule.leader(block.header().term))
            && ci.term() >= block.header().term
            && ci
                .verify(&g.chain_id, height, &hash, &g.validator_set(), g.quorum)
                .is_ok();
        valid.then_some(hash)
    })
    .await;
    let Some(checked) = checked else {
        return Err(());
    };
    let Some(hash) = checked else {
        shared.host.report(
            peer,
            score::INVALID,
            "status: forged block for its claimed height",
        );
        return Err(());
    };
    ctx.peers.tell(Note::Proven { peer, height }).await;
    Ok(Some(hash))
}
