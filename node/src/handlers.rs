//! The inbound side of every stream protocol: one accept loop per protocol
//! (bounded by a semaphore), and [`PeerSink`], which implements each
//! protocol's handler trait for one peer's stream.
//!
//! Handlers never block on the node: they read the store and mempool,
//! and hand consensus messages to the engine driver with a non-blocking
//! `try_send`. A peer whose stream breaks a limit or carries forged data
//! is reported to the host with the protocol error's misbehaviour score.

use crate::node::{Ctx, InFlight};
use crate::p2p::{self, PeerId, Stream};
use async_trait::async_trait;
use kite_consensus::Input;
use kite_protocols::ProtocolError;
use kite_protocols::ack::{self, VoteReceipt, VoteSink};
use kite_protocols::blk::{self, BlockQuery, BlockReply, BlockSource, RangeReply};
use kite_protocols::blkann::{self, AnnounceInfo, AnnounceSink};
use kite_protocols::blkprop::{self, ProposalInfo, ProposalSink, ResetInfo};
use kite_protocols::discover::{self, PeerEntry, PeerSource};
use kite_protocols::status::{self, RoundInfo, StatusInfo, StatusSource};
use kite_protocols::tx::{self, TxSource};
use kite_protocols::txann::{self, TxSink};
use kite_types::{BlockHeader, Hash, Tx, Vote};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// After this long an in-flight tx fetch is forgotten and may be retried.
pub const INFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most txs being fetched at once.
pub const MAX_INFLIGHT: usize = 50_000;

/// One peer's view of the node, handed to the protocol handlers.
pub struct PeerSink {
    ctx: Arc<Ctx>,
    peer: PeerId,
}

/// Reports a protocol error's misbehaviour to the host.
pub fn report(ctx: &Ctx, peer: PeerId, protocol: &str, e: &ProtocolError) {
    if let Some(points) = e.misbehaviour() {
        ctx.host.report(peer, points, &format!("{protocol}: {e}"));
    }
}

/// Starts one accept loop per protocol.
pub fn spawn_accept_loops(ctx: &Arc<Ctx>) -> Result<Vec<JoinHandle<()>>, String> {
    let max = ctx.config.p2p.max_streams_per_protocol.max(1) as usize;
    let mut tasks = Vec::new();
    macro_rules! serve {
        ($proto:expr, |$sink:ident, $stream:ident| $body:expr) => {{
            let c = ctx.clone();
            let t = p2p::spawn_accept_loop(
                &ctx.host,
                $proto,
                max,
                move |peer: PeerId, $stream: Stream| {
                    let c = c.clone();
                    async move {
                        let $sink = PeerSink {
                            ctx: c.clone(),
                            peer,
                        };
                        let r: Result<(), ProtocolError> = $body.await;
                        let outcome = if r.is_ok() { "ok" } else { "error" };
                        c.metrics.stream($proto, true, outcome);
                        if let Err(e) = &r {
                            report(&c, peer, $proto, e);
                        }
                        r
                    }
                },
            )
            .map_err(|e| e.to_string())?;
            tasks.push(t);
        }};
    }
    serve!(tx::PROTOCOL, |s, st| tx::serve(st, &s));
    serve!(txann::PROTOCOL, |s, st| async move {
        let r = txann::serve(st, &s).await;
        s.after_announce();
        r
    });
    serve!(blk::PROTOCOL, |s, st| blk::serve(st, &s));
    let mbb = ctx.max_block_bytes();
    serve!(blkann::PROTOCOL, |s, st| blkann::serve(st, &s, mbb));
    serve!(blkprop::PROTOCOL, |s, st| blkprop::serve(st, &s, mbb));
    serve!(ack::PROTOCOL, |s, st| ack::serve(st, &s));
    serve!(discover::PROTOCOL, |s, st| discover::serve(st, &s));
    serve!(status::PROTOCOL, |s, st| status::serve(st, &s));
    Ok(tasks)
}

impl PeerSink {
    /// The peer's public key (a Kite peer id is its ed25519 key).
    fn peer_key(&self) -> Option<kite_types::PublicKey> {
        p2p::keys::public_key_of(&self.peer)
    }

    /// After a txann stream ends: txs this peer promised but did not
    /// deliver are fetched from another peer that announced them.
    fn after_announce(&self) {
        let Some(mempool) = &self.ctx.mempool else {
            return;
        };
        let mut retry: Vec<(Hash, PeerId)> = Vec::new();
        {
            let mut inflight = self.ctx.inflight.lock();
            inflight.retain(|h, f| {
                if f.from != self.peer {
                    return true;
                }
                if mempool.contains(h) {
                    return false;
                }
                match f.others.pop() {
                    Some(next) => {
                        retry.push((*h, next));
                        f.from = next;
                        f.since = Instant::now();
                        true
                    }
                    None => false,
                }
            });
        }
        for (hash, peer) in retry {
            let ctx = self.ctx.clone();
            tokio::spawn(async move { fetch_tx(ctx, peer, hash).await });
        }
    }
}

/// Fetches one tx with `/kite/tx/1.0.0` and admits it.
pub async fn fetch_tx(ctx: Arc<Ctx>, peer: PeerId, hash: Hash) {
    let Some(mempool) = ctx.mempool.clone() else {
        return;
    };
    let max = mempool.config().max_tx_bytes;
    if let Ok(Some(t)) =
        crate::outbound::exchange(&ctx, peer, tx::PROTOCOL, |s| tx::request(s, hash, max)).await
    {
        admit(&ctx, vec![t], Some(peer)).await;
    }
    ctx.inflight.lock().remove(&hash);
}

/// Admits txs received from `from` (None: the RPC) off the executor; the
/// admitted ones are announced by the gossip task, never back to `from`.
pub async fn admit(ctx: &Arc<Ctx>, txs: Vec<Tx>, from: Option<PeerId>) {
    let Some(mempool) = ctx.mempool.clone() else {
        return;
    };
    if let Some(p) = from {
        let mut origins = ctx.origins.lock();
        if origins.len() + txs.len() > crate::node::MAX_ORIGINS {
            origins.clear();
        }
        for t in &txs {
            origins.insert(t.hash(), p);
        }
    }
    let accounts = ctx.accounts();
    let now = crate::node::now_ms();
    let _ = tokio::task::spawn_blocking(move || mempool.admit_batch(txs, &accounts, now)).await;
}

#[async_trait]
impl TxSource for PeerSink {
    async fn get_tx(&self, hash: &Hash) -> Option<Tx> {
        self.ctx.mempool.as_ref()?.get(hash)
    }
}

#[async_trait]
impl TxSink for PeerSink {
    async fn want(&self, hashes: &[Hash]) -> Vec<bool> {
        let Some(mempool) = &self.ctx.mempool else {
            // Blocks-only: no mempool, no tx gossip.
            return vec![false; hashes.len()];
        };
        let mut inflight = self.ctx.inflight.lock();
        let now = Instant::now();
        if inflight.len() > MAX_INFLIGHT {
            inflight.retain(|_, f| now.duration_since(f.since) < INFLIGHT_TIMEOUT);
        }
        hashes
            .iter()
            .map(|h| {
                if mempool.contains(h) {
                    return false;
                }
                if let Some(f) = inflight.get_mut(h)
                    && now.duration_since(f.since) < INFLIGHT_TIMEOUT
                {
                    // Someone else is fetching it: remember this peer as a
                    // fallback, do not fetch twice.
                    if f.from != self.peer && f.others.len() < 8 {
                        f.others.push(self.peer);
                    }
                    return false;
                }
                if inflight.len() >= MAX_INFLIGHT {
                    return false;
                }
                inflight.insert(
                    *h,
                    InFlight {
                        from: self.peer,
                        since: now,
                        others: Vec::new(),
                    },
                );
                true
            })
            .collect()
    }

    async fn receive(&self, txs: Vec<Tx>) {
        let hashes: Vec<Hash> = txs.iter().map(Tx::hash).collect();
        admit(&self.ctx, txs, Some(self.peer)).await;
        let mut inflight = self.ctx.inflight.lock();
        for h in hashes {
            inflight.remove(&h);
        }
    }
}

#[async_trait]
impl BlockSource for PeerSink {
    async fn block(&self, query: BlockQuery) -> BlockReply {
        let store = &self.ctx.store;
        let best_height = self.ctx.state.read().height;
        let block = match query {
            BlockQuery::Height(h) => store.block_by_height(h).await.ok().flatten(),
            BlockQuery::Hash(h) => store.block_by_hash(h).await.ok().flatten(),
        };
        let block = match block {
            Some(b) => store
                .commit_info(b.height())
                .await
                .ok()
                .flatten()
                .map(|ci| (b, ci)),
            None => None,
        };
        BlockReply { block, best_height }
    }

    async fn range(&self, from: u64, count: u32, max_bytes: usize) -> RangeReply {
        let best_height = self.ctx.state.read().height;
        let blocks = self
            .ctx
            .store
            .blocks_with_commits(from, u64::from(count), max_bytes)
            .await
            .unwrap_or_default();
        RangeReply {
            blocks,
            best_height,
        }
    }
}

#[async_trait]
impl AnnounceSink for PeerSink {
    async fn check(&self, info: &AnnounceInfo) -> bool {
        let (height, staged) = {
            let s = self.ctx.state.read();
            (s.height, s.proposal == Some(info.hash))
        };
        if let Some(p) = self.ctx.peers.write().get_mut(&self.peer)
            && p.height.is_none_or(|h| h < info.height)
        {
            p.height = Some(info.height);
            p.hash = Some(info.hash);
        }
        if info.height <= height {
            return false;
        }
        // Let the engine see the announce: it commits a staged block,
        // or starts block sync when the announce is ahead of it.
        self.ctx.feed(Input::CommitAnnounced {
            from: self.peer_key(),
            header: info.header.clone(),
            leader_sig: info.leader_sig,
            commit_info: info.commit_info.clone(),
        });
        // Fetch the block only when it is the next one and this node did
        // not execute it as a proposal.
        info.height == height + 1 && !staged
    }

    async fn receive(&self, info: AnnounceInfo, block: kite_types::Block) {
        self.ctx.feed(Input::BlockFetched {
            from: self.peer_key(),
            block,
            commit_info: info.commit_info,
        });
    }
}

#[async_trait]
impl ProposalSink for PeerSink {
    async fn check(&self, p: &ProposalInfo) -> bool {
        if self.ctx.config.role != crate::config::Role::Validator {
            // Sentries, archives and the leader itself take no proposal.
            return false;
        }
        let height = self.ctx.state.read().height;
        // Cheap filter before the block is sent: the next height (or the
        // one after: the leader proposes as soon as it commits, often
        // before this node has committed the same block from its announce;
        // the engine keeps such a proposal until then), signed by the
        // genesis leader. The engine checks everything again.
        (p.height == height + 1 || p.height == height + 2)
            && kite_types::block::verify_header_sig(
                &p.header.proposer,
                &p.hash,
                &p.leader_sig,
                &self.ctx.genesis.leader,
            )
    }

    async fn receive(&self, _p: ProposalInfo, block: kite_types::Block) {
        if let Some(from) = self.peer_key() {
            self.ctx.feed(Input::ProposalReceived { from, block });
        }
    }

    async fn reset(&self, r: ResetInfo) -> VoteReceipt {
        if self.ctx.config.role != crate::config::Role::Validator {
            return VoteReceipt::refused("this node does not vote");
        }
        self.ctx.feed(Input::ResetReceived {
            height: r.height,
            block_hash: r.block_hash,
            leader_sig: r.leader_sig,
        });
        VoteReceipt::accepted()
    }
}

#[async_trait]
impl VoteSink for PeerSink {
    async fn vote(&self, vote: Vote, best_header: Option<BlockHeader>) -> VoteReceipt {
        if self.ctx.config.role != crate::config::Role::Leader {
            return VoteReceipt::refused("this node is not the leader");
        }
        // Validators send their own votes: the sender's key is what the
        // engine checks the voter against.
        let Some(from) = crate::p2p::keys::public_key_of(&self.peer) else {
            return VoteReceipt::refused("votes come from their signer's own peer id");
        };
        self.ctx.feed(Input::VoteReceived {
            from: Some(from),
            vote,
            best_header,
        });
        VoteReceipt::accepted()
    }
}

#[async_trait]
impl PeerSource for PeerSink {
    async fn peers(&self, max: usize) -> Vec<PeerEntry> {
        let allow = self.ctx.config.p2p.allow_private_addrs;
        self.ctx
            .host
            .known_peers(max, allow)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|(id, _)| *id != self.peer)
            .map(|(id, addrs)| PeerEntry {
                id: id.to_bytes(),
                addrs: addrs.iter().map(|a| a.to_vec()).collect(),
            })
            .collect()
    }
}

#[async_trait]
impl StatusSource for PeerSink {
    async fn status(&self) -> StatusInfo {
        status_info(&self.ctx)
    }
}

/// This node's status as the status protocol sends it.
pub fn status_info(ctx: &Ctx) -> StatusInfo {
    let s = ctx.state.read();
    StatusInfo {
        chain_id: ctx.genesis.chain_id.clone(),
        best_height: s.height,
        best_hash: s.block_hash,
        app_hash: s.app_hash,
        role: ctx.config.role.into(),
        round: Some(RoundInfo {
            height: s.height + 1,
            round: s.round,
            step: s.step.clone(),
            proposal_hash: s.proposal,
        }),
        genesis_hash: ctx.genesis_hash,
        blocks_only: ctx.config.blocks_only,
        syncing: s.syncing,
        sync_target: s.sync_target,
    }
}
