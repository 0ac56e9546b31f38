//! The engine driver: the one task that owns the commit engine.
//!
//! It feeds the engine its inputs (from the handlers' channel, a clock tick
//! and the engine's own scheduled timeouts) and carries out its outputs:
//! block building from the mempool, execution and atomic commits through
//! the store's writer thread (awaited in order, so a commit always lands on
//! the state its block was executed on), and network sends, each in its
//! own task with the host's deadlines so a slow peer never stalls the
//! engine.

use crate::node::{Ctx, now_ms};
use crate::outbound::exchange;
use crate::p2p::PeerId;
use kite_app::{BlockError, Executed};
use kite_blockstore::{ApplyOutcome, StoreError};
use kite_consensus::check::Bad;
use kite_consensus::{Engine, ExecError, Input, Output, Step, Target};
use kite_protocols::blkprop::ResetInfo;
use kite_protocols::{ack, blk, blkann, blkprop};
use kite_types::{Block, CommitInfo, Hash, Promise, PublicKey};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};

/// How often the engine gets a clock tick (and the leader a mempool status).
pub const TICK: Duration = Duration::from_millis(25);
/// Most executed-but-uncommitted blocks kept.
pub const MAX_STAGED: usize = 16;
/// Most txs in one block the leader builds.
pub const MAX_BLOCK_TXS: usize = 100_000;
/// During block sync, commits are fsynced together: after this many
/// blocks...
pub const SYNC_FLUSH_BLOCKS: u32 = 256;
/// ...or this long, whichever comes first, and when sync ends.
pub const SYNC_FLUSH_EVERY: Duration = Duration::from_millis(500);

struct Driver {
    ctx: Arc<Ctx>,
    /// Executed blocks waiting for their commit, by block hash.
    staged: HashMap<Hash, (u64, Executed)>,
    /// Leader: when each proposal was sent, for the round-time metric.
    proposed_at: HashMap<Hash, Instant>,
    /// The last committed block (announces send it).
    last_block: Option<Block>,
    /// Next scheduled engine timeout, unix ms.
    wake_at: Option<u64>,
    /// Bounds the block fetches of block sync.
    fetch_permits: Arc<Semaphore>,
    sync: SyncProgress,
    /// Sync commits not yet fsynced, and since when.
    unflushed: u32,
    unflushed_since: Option<Instant>,
    /// Blocks were committed without an fsync (block sync's grouped
    /// flushes) and no flush this driver waited for has finished since: a
    /// promise record must not become durable before them.
    not_durable: bool,
    /// Block sync's batches for the applier task, in order.
    apply_tx: mpsc::Sender<Vec<(Block, CommitInfo)>>,
    /// Group flush requests for the flusher task.
    flush_tx: mpsc::Sender<()>,
    /// A promise record could not be written: the node stops, and no
    /// output after it is carried out (the vote or proposal it promised
    /// must not leave).
    broken_promise: bool,
}

/// Block sync's flusher: makes group-committed blocks durable off the
/// driver and off the store's writer thread, so commits go on meanwhile.
async fn flusher(ctx: Arc<Ctx>, mut requests: mpsc::Receiver<()>) {
    while requests.recv().await.is_some() {
        if let Err(e) = ctx.store.flush().await {
            let reason = format!("cannot make synced blocks durable: {e}");
            tracing::error!(%reason);
            ctx.halt(reason);
            return;
        }
    }
}

/// Most [`Output::ApplyBlocks`] batches queued for the applier; the engine
/// keeps fewer blocks than this in flight, so sending never waits.
const APPLY_QUEUE: usize = kite_consensus::engine::MAX_APPLYING;

/// Block sync's applier: hands the engine's batches to the store's writer
/// thread one after the other, in order, and passes what happened back to
/// the driver. Ends when the driver drops its sender.
async fn applier(
    ctx: Arc<Ctx>,
    mut batches: mpsc::Receiver<Vec<(Block, CommitInfo)>>,
    done: mpsc::Sender<Result<ApplyOutcome, StoreError>>,
) {
    while let Some(blocks) = batches.recv().await {
        let out = ctx.store.apply_blocks(blocks, false).await;
        if done.send(out).await.is_err() {
            return;
        }
    }
}

#[derive(Default)]
struct SyncProgress {
    last_log: Option<Instant>,
    height_at_log: u64,
    txs_since_log: u64,
}

/// Runs the engine until the node stops or the engine halts.
pub async fn run(ctx: Arc<Ctx>, mut engine: Engine, mut rx: mpsc::Receiver<Input>) {
    let window = ctx.config.sync.window.max(1) as usize;
    let (apply_tx, apply_rx) = mpsc::channel(APPLY_QUEUE);
    let (done_tx, mut done_rx) = mpsc::channel(APPLY_QUEUE);
    let applier_task = tokio::spawn(applier(ctx.clone(), apply_rx, done_tx));
    let (flush_tx, flush_rx) = mpsc::channel(1);
    let flusher_task = tokio::spawn(flusher(ctx.clone(), flush_rx));
    let mut d = Driver {
        ctx: ctx.clone(),
        staged: HashMap::new(),
        proposed_at: HashMap::new(),
        last_block: None,
        wake_at: None,
        fetch_permits: Arc::new(Semaphore::new(window)),
        sync: SyncProgress::default(),
        unflushed: 0,
        unflushed_since: None,
        not_durable: false,
        apply_tx,
        flush_tx,
        broken_promise: false,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut queue: VecDeque<Input> = VecDeque::new();
    loop {
        let wake = d.wake_at.map(|at| {
            let now = now_ms();
            tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now))
        });
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            got = rx.recv() => match got {
                Some(i) => queue.push_back(i),
                None => break,
            },
            Some(done) = done_rx.recv() => {
                let input = d.applied(done).await;
                queue.push_back(input);
            }
            _ = tick.tick() => {
                if let Some(m) = &ctx.mempool
                    && ctx.config.role == crate::config::Role::Leader
                {
                    queue.push_back(Input::MempoolStatus { txs: m.len(), bytes: m.bytes() as u64 });
                }
                queue.push_back(Input::Tick { now_ms: now_ms() });
            }
            _ = sleep_until_opt(wake) => {
                d.wake_at = None;
                queue.push_back(Input::Tick { now_ms: now_ms() });
            }
        }
        // Drain what else is waiting, so a burst is handled in one go.
        while queue.len() < 1024 {
            match rx.try_recv() {
                Ok(i) => queue.push_back(i),
                Err(_) => break,
            }
        }
        'inputs: while let Some(input) = queue.pop_front() {
            for out in engine.handle(input) {
                d.carry_out(out, &mut queue).await;
                if d.broken_promise {
                    break 'inputs;
                }
            }
        }
        if d.broken_promise {
            break;
        }
        d.publish(&engine);
        if d.unflushed > 0
            && (!ctx.state.read().syncing
                || d.unflushed >= SYNC_FLUSH_BLOCKS
                || d.unflushed_since
                    .is_some_and(|t| t.elapsed() >= SYNC_FLUSH_EVERY))
        {
            d.flush();
        }
        if let Some(reason) = engine.halted() {
            tracing::error!(%reason, "the commit engine halted; the node stops so it never forks");
            ctx.halt(reason);
            break;
        }
    }
    // Let the applier finish what the store was given, then make it all
    // durable.
    drop(d.apply_tx);
    drop(d.flush_tx);
    let _ = applier_task.await;
    let _ = flusher_task.await;
    if let Err(e) = ctx.store.flush().await {
        tracing::error!(error = %e, "cannot make the last synced blocks durable");
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    /// Has the flusher make the group-committed sync blocks durable; a
    /// request already waiting covers these blocks too.
    fn flush(&mut self) {
        let _ = self.flush_tx.try_send(());
        self.unflushed = 0;
        self.unflushed_since = None;
    }

    /// Mirrors the engine's status into the node state and metrics.
    fn publish(&mut self, engine: &Engine) {
        let st = engine.status();
        let syncing = st.sync_target > st.committed_height + 1 || st.step == Step::Syncing;
        {
            let mut s = self.ctx.state.write();
            s.height = st.committed_height;
            s.block_hash = st.committed_hash;
            s.app_hash = st.app_hash;
            s.syncing = syncing;
            s.sync_target = st.sync_target.max(st.committed_height);
            s.step = st.step.to_string();
            s.round = st.round;
            s.proposal = st.proposal.or(st.locked_on);
            s.halted = st.halted.clone();
        }
        let m = &self.ctx.metrics;
        m.height.set(to_i64(st.committed_height));
        m.syncing.set(i64::from(syncing));
        m.sync_target.set(to_i64(st.sync_target));
        if syncing {
            self.log_sync(
                st.committed_height,
                st.sync_target,
                st.step.as_str(),
                st.sync_in_flight,
            );
        }
    }

    fn log_sync(&mut self, height: u64, target: u64, step: &str, in_flight: usize) {
        let every = self.ctx.config.sync.log_interval;
        let now = Instant::now();
        let Some(last) = self.sync.last_log else {
            self.sync.last_log = Some(now);
            self.sync.height_at_log = height;
            self.sync.txs_since_log = 0;
            tracing::info!(height, target, "block sync started");
            return;
        };
        let secs = now.duration_since(last).as_secs_f64();
        if secs < every.as_secs_f64() {
            return;
        }
        let blocks = height.saturating_sub(self.sync.height_at_log);
        let bps = blocks as f64 / secs;
        let tps = self.sync.txs_since_log as f64 / secs;
        let eta = if bps > 0.0 {
            format!("{:.0}s", target.saturating_sub(height) as f64 / bps)
        } else {
            "unknown".into()
        };
        tracing::info!(height, target, blocks_per_s = format!("{bps:.0}"), tx_per_s = format!("{tps:.0}"), %eta, step, in_flight, "block sync");
        self.sync.last_log = Some(now);
        self.sync.height_at_log = height;
        self.sync.txs_since_log = 0;
    }

    async fn carry_out(&mut self, out: Output, queue: &mut VecDeque<Input>) {
        match out {
            Output::Persist { promise } => self.persist(promise).await,
            Output::BuildBlock { max_bytes } => {
                let txs = match &self.ctx.mempool {
                    Some(m) => {
                        let m = m.clone();
                        let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
                        match tokio::task::spawn_blocking(move || m.build_block(max, MAX_BLOCK_TXS))
                            .await
                        {
                            Ok(txs) => txs,
                            Err(e) => {
                                // A bug, not an empty mempool: proposing an
                                // empty block would hide it.
                                self.ctx
                                    .halt(format!("the mempool could not build a block: {e}"));
                                return;
                            }
                        }
                    }
                    // Only a leader builds, and a leader always has a mempool.
                    None => Vec::new(),
                };
                queue.push_back(Input::BlockBuilt { txs });
            }
            Output::SendProposal { to, block } => {
                // A resend keeps the first send time: the round time
                // counts from the first proposal.
                self.proposed_at
                    .entry(block.hash())
                    .or_insert_with(Instant::now);
                if self.proposed_at.len() > 64 {
                    self.proposed_at.clear();
                }
                let block = Arc::new(block);
                for peer in to.iter().filter_map(crate::p2p::keys::peer_id_of) {
                    let (ctx, block) = (self.ctx.clone(), block.clone());
                    tokio::spawn(async move {
                        let _ = exchange(&ctx, peer, blkprop::PROTOCOL, |s| {
                            blkprop::propose(s, &block)
                        })
                        .await;
                    });
                }
            }
            Output::ExecuteBlock { block } => {
                let height = block.height();
                let hash = block.hash();
                // The leader's own block holds mempool txs whose signatures
                // were verified at admission.
                let verified = block.header().proposer == self.ctx.public
                    && self.ctx.config.role == crate::config::Role::Leader;
                let result = match self.ctx.store.execute_block(block, verified).await {
                    Ok(ex) => {
                        let app = ex.app_hash;
                        if self.staged.len() >= MAX_STAGED {
                            self.staged.clear();
                        }
                        self.staged.insert(hash, (height, ex));
                        Ok(app)
                    }
                    Err(StoreError::InvalidBlock(e)) => Err(exec_error(&e)),
                    Err(e) => Err(ExecError {
                        bad_txs: Vec::new(),
                        reason: e.to_string(),
                    }),
                };
                queue.push_back(Input::BlockExecuted {
                    height,
                    block_hash: hash,
                    result,
                });
            }
            Output::SendVote {
                to,
                vote,
                best_header,
            } => {
                let Some(peer) = crate::p2p::keys::peer_id_of(&to) else {
                    return;
                };
                let ctx = self.ctx.clone();
                tokio::spawn(async move {
                    let _ = exchange(&ctx, peer, ack::PROTOCOL, |s| {
                        ack::send_vote(s, &vote, best_header.as_ref())
                    })
                    .await;
                });
            }
            Output::Commit { block, commit_info } => self.commit(block, commit_info, queue).await,
            Output::ApplyBlocks { blocks } => {
                if self.apply_tx.try_send(blocks).is_err() {
                    // Cannot happen (the engine keeps fewer in flight);
                    // stopping is safer than losing a batch.
                    self.ctx.halt("block sync's apply queue is full");
                }
            }
            Output::Announce {
                header,
                leader_sig: _,
                commit_info,
                to,
            } => {
                let block = match &self.last_block {
                    Some(b) if b.hash() == header.hash() => Some(b.clone()),
                    _ => self
                        .ctx
                        .store
                        .block_by_height(header.height)
                        .await
                        .ok()
                        .flatten(),
                };
                let Some(block) = block else {
                    return;
                };
                let (block, ci) = (Arc::new(block), Arc::new(commit_info));
                for peer in self.targets(&to) {
                    let (ctx, block, ci) = (self.ctx.clone(), block.clone(), ci.clone());
                    tokio::spawn(async move {
                        let _ = exchange(&ctx, peer, blkann::PROTOCOL, |s| {
                            blkann::announce(s, &block, &ci)
                        })
                        .await;
                    });
                }
            }
            Output::SendReset {
                height,
                block_hash,
                leader_sig,
                reason,
                to,
            } => {
                self.staged.remove(&block_hash);
                let info = Arc::new(ResetInfo {
                    height,
                    block_hash,
                    reason,
                    leader_sig,
                });
                for peer in self.targets(&to) {
                    let (ctx, info) = (self.ctx.clone(), info.clone());
                    tokio::spawn(async move {
                        let _ =
                            exchange(&ctx, peer, blkprop::PROTOCOL, |s| blkprop::reset(s, &info))
                                .await;
                    });
                }
            }
            Output::DropTxs { hashes } => {
                if let Some(m) = &self.ctx.mempool {
                    let dropped = m.remove(&hashes);
                    tracing::info!(
                        count = dropped.len(),
                        "dropped txs that made a block invalid"
                    );
                }
            }
            Output::RequestBlocks {
                from_height,
                to_height,
                peer,
            } => {
                tracing::trace!(from_height, to_height, peer = ?peer.map(|p| p.short()), "block sync: plan");
                let ctx = self.ctx.clone();
                let permits = self.fetch_permits.clone();
                tokio::spawn(fetch_blocks(ctx, permits, from_height, to_height, peer));
            }
            Output::ScheduleTimeout { at_ms, .. } => {
                self.wake_at = Some(self.wake_at.map_or(at_ms, |w| w.min(at_ms)));
            }
            Output::Halt { reason } => {
                tracing::error!(%reason, "halt");
            }
        }
    }

    /// Writes the engine's promise record durably (on a blocking thread,
    /// awaited: the outputs after it wait for it). If it cannot be
    /// written, the node stops and [`Driver::broken_promise`] drops the
    /// outputs after it.
    async fn persist(&mut self, promise: Promise) {
        let path = self.ctx.promise_file.clone();
        let durable = self.ctx.config.store.durable;
        // The record says which height this node reached: the blocks below
        // it must be durable first, or a crash could leave the record ahead
        // of the store (and the node would refuse to start).
        if durable && self.not_durable {
            if let Err(e) = self.ctx.store.flush().await {
                let reason = format!(
                    "cannot make synced blocks durable before recording a promise: {e}; the \
                     node stops"
                );
                tracing::error!(%reason);
                self.ctx.halt(reason);
                self.broken_promise = true;
                return;
            }
            self.not_durable = false;
        }
        let (height, voted, proposed) = (
            promise.height,
            promise.vote.is_some(),
            promise.proposed.len(),
        );
        let started = Instant::now();
        let written = tokio::task::spawn_blocking(move || {
            crate::promise_file::save(&path, &promise, durable).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("the promise write task failed: {e}")));
        let took = started.elapsed();
        self.ctx
            .metrics
            .promise_write_seconds
            .observe(took.as_secs_f64());
        match written {
            Ok(()) => tracing::debug!(
                height,
                voted,
                proposed,
                us = took.as_micros() as u64,
                "promise record written"
            ),
            Err(e) => {
                let reason = format!(
                    "{e}: the vote or proposal it records is not sent; the node stops so it \
                     never signs what it could not record"
                );
                tracing::error!(%reason);
                self.ctx.halt(reason);
                self.broken_promise = true;
            }
        }
    }

    /// Commits a block atomically with its state changes, then tells the
    /// mempool, the commit waiters, the metrics and the engine.
    async fn commit(&mut self, block: Block, ci: CommitInfo, queue: &mut VecDeque<Input>) {
        let hash = block.hash();
        let height = block.height();
        let staged = self.staged.remove(&hash);
        let result = match staged {
            Some((_, ex)) if ex.app_hash == ci.app_hash => {
                self.ctx
                    .store
                    .commit(block.clone(), ci.clone(), ex.changes)
                    .await
            }
            _ => {
                // A block from a commit announce or unchecked sync. While
                // syncing, its fsync is grouped with the next ones (see
                // SYNC_FLUSH_BLOCKS).
                let syncing = self.ctx.state.read().syncing;
                let r = self
                    .ctx
                    .store
                    .apply_block_opts(block.clone(), ci.clone(), false, !syncing)
                    .await
                    .map(|_| ());
                if syncing && r.is_ok() {
                    self.unflushed += 1;
                    self.unflushed_since.get_or_insert_with(Instant::now);
                    self.not_durable = true;
                }
                r
            }
        };
        if let Err(e) = result {
            let reason = format!("cannot commit block {height} ({}): {e}", hash.short());
            tracing::error!(%reason);
            self.ctx.halt(reason);
            return;
        }
        self.staged.retain(|_, (h, _)| *h > height);
        let ntx = block.txs().len() as u64;
        self.committed_effects(std::slice::from_ref(&block)).await;
        let round = self.proposed_at.remove(&hash).map(|t| t.elapsed());
        if let Some(r) = round {
            self.ctx
                .metrics
                .commit_round_seconds
                .observe(r.as_secs_f64());
        }
        tracing::info!(
            height,
            hash = %hash.short(),
            txs = ntx,
            round_ms = round.map(|r| r.as_millis() as u64),
            "committed"
        );
        self.last_block = Some(block);
        queue.push_back(Input::Committed {
            height,
            block_hash: hash,
            app_hash: ci.app_hash,
        });
    }

    /// What follows committed blocks, in order: their txs leave the mempool,
    /// commit waiters are answered, metrics and sync progress move.
    async fn committed_effects(&mut self, blocks: &[Block]) {
        let ntx: u64 = blocks.iter().map(|b| b.txs().len() as u64).sum();
        if ntx > 0
            && let Some(m) = self.ctx.mempool.as_ref().filter(|m| !m.is_empty())
        {
            let txs: Vec<kite_types::Tx> = blocks.iter().flat_map(|b| b.txs().to_vec()).collect();
            let (m, accounts) = (m.clone(), self.ctx.accounts());
            if let Ok(r) = tokio::task::spawn_blocking(move || m.on_commit(&txs, &accounts)).await
                && let Some((who, e)) = r.unread.first()
            {
                // Their txs stay, unchecked, until a read works again.
                tracing::warn!(
                    senders = r.unread.len(),
                    first = %who.short(),
                    error = %e,
                    "mempool recheck after a commit could not read some accounts"
                );
            }
        }
        {
            let mut waiters = self.ctx.waiters.lock();
            if !waiters.is_empty() {
                for b in blocks {
                    for t in b.txs() {
                        if let Some(ws) = waiters.remove(&t.hash()) {
                            for w in ws {
                                let _ = w.send(b.height());
                            }
                        }
                    }
                }
            }
        }
        self.ctx.metrics.committed_txs.inc_by(ntx);
        self.sync.txs_since_log += ntx;
        self.ctx.state.write().last_commit = Some(Instant::now());
    }

    /// What the applier reports for a batch of block sync: effects of the
    /// committed blocks, and the engine's input.
    async fn applied(&mut self, done: Result<ApplyOutcome, StoreError>) -> Input {
        let out = match done {
            Ok(out) => out,
            Err(e) => {
                // The store is gone (the node is stopping).
                return Input::BlocksApplied {
                    applied: Vec::new(),
                    failed: Some((0, Hash::ZERO, e.to_string())),
                };
            }
        };
        let applied: Vec<(u64, Hash, Hash)> = out
            .applied
            .iter()
            .map(|(b, ci)| (b.height(), b.hash(), ci.app_hash))
            .collect();
        let blocks: Vec<Block> = out.applied.into_iter().map(|(b, _)| b).collect();
        if let (Some(first), Some(last)) = (blocks.first(), blocks.last()) {
            tracing::debug!(
                from = first.height(),
                to = last.height(),
                "committed synced blocks"
            );
            self.unflushed = self
                .unflushed
                .saturating_add(u32::try_from(blocks.len()).unwrap_or(u32::MAX));
            self.unflushed_since.get_or_insert_with(Instant::now);
            self.not_durable = true;
        }
        self.committed_effects(&blocks).await;
        self.last_block = blocks.into_iter().last().or(self.last_block.take());
        let failed = out
            .failed
            .map(|(b, e)| (b.height(), b.hash(), e.to_string()));
        Input::BlocksApplied { applied, failed }
    }

    fn targets(&self, to: &Target) -> Vec<PeerId> {
        match to {
            Target::All => self.ctx.peer_ids(None),
            Target::Peers(keys) => keys
                .iter()
                .filter_map(crate::p2p::keys::peer_id_of)
                .collect(),
        }
    }
}

fn exec_error(e: &BlockError) -> ExecError {
    let bad_txs = match e {
        BlockError::Tx { hash, .. } => vec![*hash],
        _ => Vec::new(),
    };
    ExecError {
        bad_txs,
        reason: e.to_string(),
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Block sync: fetches heights `from..=to` over one `/kite/blk/1.0.0`
/// range stream (from `peer`, or a peer known to have them) and feeds the
/// blocks to the engine, which verifies and commits strictly in height
/// order. A transport failure (stream refused or reset, which libp2p-stream
/// does to inbound streams under load) is retried once and then reported
/// with no peer, so it never counts against the peer; a peer that times
/// out, sends bad data or does not have the heights it claimed is named
/// in `FetchFailed` and penalised by the planner.
async fn fetch_blocks(
    ctx: Arc<Ctx>,
    permits: Arc<Semaphore>,
    from: u64,
    to: u64,
    peer: Option<PublicKey>,
) {
    let max = ctx.max_block_bytes();
    let Ok(_permit) = permits.acquire_owned().await else {
        return;
    };
    let mut next = from;
    while next <= to {
        let count = u32::try_from(to - next + 1)
            .unwrap_or(u32::MAX)
            .min(blk::MAX_RANGE);
        let target = match peer.as_ref().and_then(crate::p2p::keys::peer_id_of) {
            Some(p) => Some(p),
            None => pick_peer(&ctx, next),
        };
        let Some(target) = target else {
            fail_range(&ctx, None, next, to).await;
            return;
        };
        let from_key = crate::p2p::keys::public_key_of(&target);
        let asked = Instant::now();
        let got = exchange(&ctx, target, blk::PROTOCOL, |s| {
            blk::request_range(s, next, count, max)
        })
        .await;
        tracing::debug!(
            peer = %target,
            from = next,
            count,
            ms = asked.elapsed().as_millis() as u64,
            outcome = match &got {
                Ok(r) => format!("{} blocks", r.blocks.len()),
                Err(e) => e.to_string(),
            },
            "block sync: range request"
        );
        match got {
            Ok(reply) => {
                if let Some(p) = ctx.peers.write().get_mut(&target) {
                    p.height = Some(p.height.unwrap_or(0).max(reply.best_height));
                }
                if reply.blocks.is_empty() {
                    // It claimed heights it cannot serve.
                    fail_range(&ctx, from_key, next, to).await;
                    return;
                }
                let n = reply.blocks.len() as u64;
                let (good, bad) = check_range(&ctx, next, reply.blocks).await;
                let got = good.len() as u64;
                ctx.metrics.synced_blocks.inc_by(got);
                if got > 0 {
                    next += got;
                    let input = Input::RangeFetched {
                        from: from_key,
                        blocks: good,
                    };
                    // Backpressure: sync waits for the engine rather than
                    // drop blocks.
                    if ctx.inputs.send(input).await.is_err() {
                        return;
                    }
                }
                match bad {
                    Some(Bad::Peer(why)) => {
                        tracing::warn!(peer = %target, %why, "block sync: a peer served a bad block");
                        ctx.host.report(
                            target,
                            kite_protocols::score::INVALID,
                            "served a bad block",
                        );
                        fail_range(&ctx, from_key, next, to).await;
                        return;
                    }
                    Some(Bad::Committed(why)) => {
                        // A quorum committed this block: the peer is honest
                        // and this node's rule is not the network's. Halt
                        // rather than refuse the chain (a fork) or ban
                        // honest peers one after another.
                        let reason = committed_but_refused(&why);
                        tracing::error!(peer = %target, %reason, "block sync: halting");
                        ctx.halt(reason);
                        return;
                    }
                    None => {}
                }
                if got < n {
                    // Cannot happen (the check covers every block).
                    fail_range(&ctx, from_key, next, to).await;
                    return;
                }
            }
            Err(_) => {
                // Whatever the error (a refused or reset stream is no
                // misbehaviour for the host's score), the planner backs off
                // from this peer, or it would hand it the same heights again
                // at once.
                fail_range(&ctx, from_key, next, to).await;
                return;
            }
        }
    }
}

/// Checks the proofs of a fetched range on a blocking thread (see
/// [`kite_consensus::ProofChecker::check_range`]): returns the good
/// leading blocks and why the next one is bad, if one is. When the node
/// is stopping or the check itself fails, returns no block and no fault
/// (no peer is to blame).
async fn check_range(
    ctx: &Arc<Ctx>,
    first: u64,
    mut blocks: Vec<(Block, CommitInfo)>,
) -> (Vec<(Block, CommitInfo)>, Option<Bad>) {
    // At most one check per core: more would only queue on the blocking
    // pool, holding their blocks in memory.
    let Ok(_permit) = ctx.check_permits.clone().acquire_owned().await else {
        return (Vec::new(), None);
    };
    let checker = ctx.checker.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let c = checker.check_range(first, &blocks);
        blocks.truncate(c.good);
        (blocks, c.bad)
    })
    .await;
    checked.unwrap_or_else(|e| {
        tracing::error!(error = %e, "block sync: the proof check task failed");
        (Vec::new(), None)
    })
}

/// The halt message of block sync when a committed block fails this
/// node's checks (`why` names the block and what failed).
fn committed_but_refused(why: &str) -> String {
    format!(
        "{why}; the network committed it, so this node's signature verification rule or \
         software differs from the network's, and it stops rather than fork: run the \
         network's Kite version (docs/PROTOCOL.md section 4) and restart"
    )
}

async fn fail_range(ctx: &Ctx, from: Option<PublicKey>, first: u64, last: u64) {
    for height in first..=last {
        if ctx
            .inputs
            .send(Input::FetchFailed { from, height })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A connected peer that says it has `height`, chosen at random among them.
fn pick_peer(ctx: &Ctx, height: u64) -> Option<PeerId> {
    let peers = ctx.peers.read();
    let able: Vec<PeerId> = peers
        .iter()
        .filter(|(_, s)| s.height.is_some_and(|h| h >= height))
        .map(|(p, _)| *p)
        .collect();
    if able.is_empty() {
        return None;
    }
    let i = (height as usize).wrapping_add(rand_index()) % able.len();
    Some(able[i])
}

fn rand_index() -> usize {
    let mut b = [0u8; 8];
    rand::fill(&mut b);
    usize::from_le_bytes(b)
}
