//! The engine driver: the one task that owns the commit engine.
//!
//! It feeds the engine its inputs (the [`EngineInbox`], a clock tick, the
//! engine's own scheduled timeouts, block sync's apply reports) and
//! carries out its outputs: block building from the mempool, execution and
//! atomic commits through the store's writer thread (awaited in order, so
//! a commit always lands on the state its block was executed on), the
//! promise record before every vote or proposal, and network sends through
//! the [`Outbox`] (a slow peer never stalls the engine). It owns the
//! commit waiters of `broadcast_tx` and publishes the node's state
//! ([`NodeState`]) after every round of inputs.

use crate::context::{Shared, to_i64};
use crate::mailbox::{EngineInputs, LeaderRequest, MAX_COMMIT_WAITERS, Waiter};
use crate::outbound::Outbox;
use crate::p2p::PeerId;
use crate::peers::Peers;
use crate::state::NodeState;
use crate::sync::Progress;
use crate::sync::apply::{Applied, SyncWriter};
use crate::sync::fetch::Fetcher;
use kite_app::{BlockError, Executed, SigsChecked};
use kite_blockstore::StoreError;
use kite_consensus::{Engine, ExecError, Input, Output, Target};
use kite_protocols::blkprop::ResetInfo;
use kite_protocols::{ack, blkann, blkprop, term};
use kite_types::{Block, CommitInfo, Hash, Promise, Tx};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// How often the engine gets a clock tick (and the leader a mempool status).
pub const TICK: Duration = Duration::from_millis(25);
/// Most executed-but-uncommitted blocks kept.
pub const MAX_STAGED: usize = 16;
/// Most txs in one block the leader builds, whatever
/// `consensus.max_block_txs` says.
pub const MAX_BLOCK_TXS: usize = 100_000;
/// Most inputs taken in one round (then the state is published).
const ROUND_INPUTS: usize = 1024;

/// What the driver is started with.
pub struct Parts {
    /// The node.
    pub shared: Arc<Shared>,
    /// The engine, restored from its promise record.
    pub engine: Engine,
    /// The engine's input queues.
    pub inputs: EngineInputs,
    /// Commit-waiter registrations.
    pub waiters: mpsc::Receiver<Waiter>,
    /// Operators' hand-overs (the admin listener).
    pub leader_requests: mpsc::Receiver<LeaderRequest>,
    /// Where the node state is published.
    pub state: watch::Sender<NodeState>,
    /// The peer table (for "send to all").
    pub peers: Peers,
    /// Network sends.
    pub outbox: Outbox,
    /// Block sync's range requests.
    pub fetcher: Fetcher,
}

struct Driver {
    shared: Arc<Shared>,
    /// Executed blocks waiting for their commit, by block hash.
    staged: HashMap<Hash, (u64, Executed)>,
    /// Leader: when each proposal was sent, for the round-time metric.
    proposed_at: HashMap<Hash, Instant>,
    /// The last committed block (announces send it).
    last_block: Option<Block>,
    /// Next scheduled engine timeout, unix ms.
    wake_at: Option<u64>,
    /// Block sync's writes.
    sync: SyncWriter,
    progress: Progress,
    /// `broadcast_tx` calls waiting for their tx to commit.
    waiters: Waiters,
    waiters_rx: mpsc::Receiver<Waiter>,
    state: watch::Sender<NodeState>,
    last_commit: Option<Instant>,
    peers: Peers,
    outbox: Outbox,
    fetcher: Fetcher,
    /// A promise record could not be written: the node stops, and no
    /// output after it is carried out (the vote or proposal it promised
    /// must not leave).
    broken_promise: bool,
}

/// Runs the engine until the node stops or the engine halts; then lets
/// block sync's writes finish and makes them durable.
pub async fn run(parts: Parts) {
    let Parts {
        shared,
        mut engine,
        inputs: mut rx,
        waiters,
        mut leader_requests,
        state,
        peers,
        outbox,
        fetcher,
    } = parts;
    let (sync, mut applied_rx) = SyncWriter::start(shared.clone());
    let mut d = Driver {
        progress: Progress::new(shared.config.sync.log_interval),
        shared: shared.clone(),
        staged: HashMap::new(),
        proposed_at: HashMap::new(),
        last_block: None,
        wake_at: None,
        sync,
        waiters: Waiters::default(),
        waiters_rx: waiters,
        state,
        last_commit: None,
        peers,
        outbox,
        fetcher,
        broken_promise: false,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut queue: VecDeque<Input> = VecDeque::new();
    loop {
        let wake = d.wake_at.map(|at| {
            tokio::time::Instant::now()
                + Duration::from_millis(at.saturating_sub(shared.clock.now_ms()))
        });
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            got = rx.recv() => match got {
                Some(i) => queue.push_back(i),
                None => break,
            },
            Some(w) = d.waiters_rx.recv() => d.waiters.add(w, Instant::now()),
            Some((to, force, reply)) = leader_requests.recv() => {
                // A call that timed out was told it failed: nothing is done.
                if !reply.is_closed() {
                    let plan = engine.plan_hand_over(&to, force);
                    match &plan {
                        Ok(p) => {
                            tracing::info!(to = %to, force, plan = ?p, "operator hand-over");
                            queue.push_back(Input::HandOver { to, force });
                        }
                        Err(e) => {
                            tracing::info!(to = %to, error = %e, "operator hand-over refused");
                        }
                    }
                    let _ = reply.send(plan);
                }
            }
            Some(done) = applied_rx.recv() => {
                let input = d.applied(done).await;
                queue.push_back(input);
            }
            _ = tick.tick() => {
                // Every validator: the leader builds from it, the others
                // expect the leader to propose what it holds.
                if let Some(m) = shared.mempool.as_ref() {
                    queue.push_back(Input::MempoolStatus { txs: m.len(), bytes: m.bytes() as u64 });
                }
                queue.push_back(Input::Tick { now_ms: shared.clock.now_ms() });
            }
            _ = sleep_until_opt(wake) => {
                d.wake_at = None;
                queue.push_back(Input::Tick { now_ms: shared.clock.now_ms() });
            }
        }
        // Take what else is waiting, so a burst is handled in one go.
        while queue.len() < ROUND_INPUTS {
            match rx.try_recv() {
                Some(i) => queue.push_back(i),
                None => break,
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
        let syncing = d.publish(&engine);
        d.sync.maybe_flush(syncing);
        if let Some(reason) = engine.halted() {
            tracing::error!(%reason, "the commit engine halted; the node stops so it never forks");
            shared.stop.halt(reason);
            break;
        }
    }
    d.sync.close().await;
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    /// Mirrors the engine's status into the node state and metrics;
    /// returns whether the node syncs.
    fn publish(&mut self, engine: &Engine) -> bool {
        let st = engine.status();
        let mut next = NodeState::of(&st);
        next.last_commit = self.last_commit;
        let syncing = next.syncing;
        self.state.send_if_modified(|s| {
            let changed = *s != next;
            *s = next;
            changed
        });
        let m = &self.shared.metrics;
        m.height.set(to_i64(st.committed_height));
        m.syncing.set(i64::from(syncing));
        m.sync_target.set(to_i64(st.sync_target));
        if syncing {
            self.progress.syncing(
                st.committed_height,
                st.sync_target,
                st.step.as_str(),
                st.sync_in_flight,
            );
        }
        syncing
    }

    async fn carry_out(&mut self, out: Output, queue: &mut VecDeque<Input>) {
        match out {
            Output::Persist { promise } => self.persist(promise).await,
            Output::BuildBlock { max_bytes } => {
                // Only a leader builds, and a leader always has a mempool.
                let Some(m) = self.shared.mempool.clone() else {
                    queue.push_back(Input::BlockBuilt { txs: Vec::new() });
                    return;
                };
                let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
                let max_txs =
                    (self.shared.config.consensus.max_block_txs as usize).clamp(1, MAX_BLOCK_TXS);
                match tokio::task::spawn_blocking(move || m.build_block(max, max_txs)).await {
                    Ok(txs) => queue.push_back(Input::BlockBuilt { txs }),
                    // A bug, not an empty mempool: proposing an empty block
                    // would hide it.
                    Err(e) => self
                        .shared
                        .stop
                        .halt(format!("the mempool could not build a block: {e}")),
                }
            }
            Output::SendProposal {
                to,
                block,
                term,
                credential,
            } => {
                // A resend keeps the first send time: the round time counts
                // from the first proposal.
                self.proposed_at
                    .entry(block.hash())
                    .or_insert_with(Instant::now);
                if self.proposed_at.len() > 64 {
                    self.proposed_at.clear();
                }
                let (block, cred) = (Arc::new(block), Arc::new(credential));
                for peer in to.iter().filter_map(crate::p2p::keys::peer_id_of) {
                    let (block, cred) = (block.clone(), cred.clone());
                    self.outbox.send(peer, blkprop::PROTOCOL, move |s| {
                        let (block, cred) = (block.clone(), cred.clone());
                        async move { blkprop::propose(s, &block, term, cred.as_ref().as_ref()).await }
                    });
                }
            }
            Output::SendTermChange { to, change, block } => {
                tracing::info!(
                    term = change.term,
                    height = change.height,
                    acked = ?change.acked.map(|a| a.block_hash.short()),
                    "leaving the term: no progress from its leader"
                );
                let (change, block) = (Arc::new(change), Arc::new(block));
                for peer in to.iter().filter_map(crate::p2p::keys::peer_id_of) {
                    let (change, block) = (change.clone(), block.clone());
                    self.outbox.send(peer, term::PROTOCOL, move |s| {
                        let (change, block) = (change.clone(), block.clone());
                        async move { term::send(s, &change, block.as_ref().as_ref()).await }
                    });
                }
            }
            Output::ExecuteBlock { block } => {
                let height = block.height();
                let hash = block.hash();
                // Signatures this node verified already: all of the leader's
                // own block (built from its mempool), else the txs its
                // mempool holds (admitted, so verified; the tx hash covers
                // the signature). Only the others are verified here.
                let checked = if block.header().proposer == self.shared.public {
                    SigsChecked::All
                } else {
                    match &self.shared.mempool {
                        Some(m) => {
                            SigsChecked::These(m.contains_each(block.txs().iter().map(Tx::hash)))
                        }
                        None => SigsChecked::None,
                    }
                };
                let result = match self.shared.store.execute_block(block, checked).await {
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
                let (vote, best) = (Arc::new(vote), Arc::new(best_header));
                self.outbox.send(peer, ack::PROTOCOL, move |s| {
                    let (vote, best) = (vote.clone(), best.clone());
                    async move { ack::send_vote(s, &vote, best.as_ref().as_ref()).await }
                });
            }
            Output::Commit { block, commit_info } => self.commit(block, commit_info, queue).await,
            Output::ApplyBlocks { blocks } => {
                if let Err(e) = self.sync.apply(blocks) {
                    // Cannot happen (the engine keeps fewer in flight);
                    // stopping is safer than losing a batch.
                    self.shared.stop.halt(e.to_string());
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
                        .shared
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
                    let (block, ci) = (block.clone(), ci.clone());
                    self.outbox.send(peer, blkann::PROTOCOL, move |s| {
                        let (block, ci) = (block.clone(), ci.clone());
                        async move { blkann::announce(s, &block, &ci).await }
                    });
                }
            }
            Output::SendReset {
                term,
                height,
                block_hash,
                leader_sig,
                reason,
                to,
            } => {
                self.staged.remove(&block_hash);
                let info = Arc::new(ResetInfo {
                    term,
                    height,
                    block_hash,
                    reason,
                    leader_sig,
                });
                for peer in self.targets(&to) {
                    let info = info.clone();
                    self.outbox.send(peer, blkprop::PROTOCOL, move |s| {
                        let info = info.clone();
                        async move { blkprop::reset(s, &info).await }
                    });
                }
            }
            Output::DropTxs { hashes } => {
                if let Some(m) = &self.shared.mempool {
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
                self.fetcher.request(from_height, to_height, peer);
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
        let path = self.shared.promise_file.clone();
        let durable = self.shared.config.store.durable;
        // The record says which height this node reached: the blocks below
        // it must be durable first, or a crash could leave the record ahead
        // of the store (and the node would refuse to start).
        if durable && let Err(e) = self.sync.make_durable().await {
            self.break_promise(format!(
                "cannot make synced blocks durable before recording a promise: {e}; the node \
                 stops"
            ));
            return;
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
        self.shared
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
            Err(e) => self.break_promise(format!(
                "{e}: the vote or proposal it records is not sent; the node stops so it never \
                 signs what it could not record"
            )),
        }
    }

    fn break_promise(&mut self, reason: String) {
        tracing::error!(%reason);
        self.shared.stop.halt(reason);
        self.broken_promise = true;
    }

    /// Commits a block atomically with its state changes, then tells the
    /// mempool, the commit waiters, the metrics and the engine.
    async fn commit(&mut self, block: Block, ci: CommitInfo, queue: &mut VecDeque<Input>) {
        let hash = block.hash();
        let height = block.height();
        let store = &self.shared.store;
        let result = match self.staged.remove(&hash) {
            Some((_, ex)) if ex.app_hash == ci.app_hash => {
                store.commit(block.clone(), ci.clone(), ex.changes).await
            }
            _ => {
                // A block from a commit announce or unchecked sync. While
                // syncing, its fsync is grouped with the next ones.
                let syncing = self.state.borrow().syncing;
                let r = store
                    .apply_block_opts(block.clone(), ci.clone(), false, !syncing)
                    .await
                    .map(|_| ());
                if syncing && r.is_ok() {
                    self.sync.committed_unflushed(1);
                }
                r
            }
        };
        if let Err(e) = result {
            let reason = format!("cannot commit block {height} ({}): {e}", hash.short());
            tracing::error!(%reason);
            self.shared.stop.halt(reason);
            return;
        }
        self.staged.retain(|_, (h, _)| *h > height);
        let ntx = block.txs().len() as u64;
        self.committed_effects(std::slice::from_ref(&block)).await;
        let round = self.proposed_at.remove(&hash).map(|t| t.elapsed());
        if let Some(r) = round {
            self.shared
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
            && let Some(m) = self.shared.mempool.as_ref().filter(|m| !m.is_empty())
        {
            let txs: Vec<kite_types::Tx> = blocks.iter().flat_map(|b| b.txs().to_vec()).collect();
            let (m, accounts) = (m.clone(), self.shared.accounts());
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
        // Every registration queued before these txs were admitted is in
        // the mailbox by now: take them before answering.
        while let Ok(w) = self.waiters_rx.try_recv() {
            self.waiters.add(w, Instant::now());
        }
        self.waiters.committed(blocks);
        self.shared.metrics.committed_txs.inc_by(ntx);
        self.progress.txs(ntx);
        self.last_commit = Some(Instant::now());
    }

    /// What the applier reports for a batch of block sync: effects of the
    /// committed blocks, and the engine's input.
    async fn applied(&mut self, done: Applied) -> Input {
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
        }
        self.sync.committed_unflushed(blocks.len());
        self.committed_effects(&blocks).await;
        self.last_block = blocks.into_iter().last().or(self.last_block.take());
        let failed = out
            .failed
            .map(|(b, e)| (b.height(), b.hash(), e.to_string()));
        Input::BlocksApplied { applied, failed }
    }

    fn targets(&self, to: &Target) -> Vec<PeerId> {
        match to {
            Target::All => self.peers.ids(None),
            Target::Peers(keys) => keys
                .iter()
                .filter_map(crate::p2p::keys::peer_id_of)
                .collect(),
        }
    }
}

/// How often, at most, the waiters of calls that gave up are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// `broadcast_tx` calls waiting for their tx to commit, by tx hash; at
/// most [`MAX_COMMIT_WAITERS`]. A call that gave up (dropped its
/// receiver) leaves a closed sender, pruned every [`PRUNE_EVERY`] and
/// whenever the table is full.
#[derive(Default)]
struct Waiters {
    by_tx: HashMap<Hash, Vec<oneshot::Sender<u64>>>,
    count: usize,
    pruned_at: Option<Instant>,
}

impl Waiters {
    /// Registers a waiter; when the table stays full after pruning, the
    /// waiter is dropped (its call answers "busy").
    fn add(&mut self, (hash, w): Waiter, now: Instant) {
        let due = self
            .pruned_at
            .is_none_or(|t| now.duration_since(t) >= PRUNE_EVERY);
        if self.count >= MAX_COMMIT_WAITERS || due {
            self.prune(now);
            if self.count >= MAX_COMMIT_WAITERS {
                return;
            }
        }
        self.by_tx.entry(hash).or_default().push(w);
        self.count += 1;
    }

    fn prune(&mut self, now: Instant) {
        self.by_tx.retain(|_, ws| {
            ws.retain(|w| !w.is_closed());
            !ws.is_empty()
        });
        self.count = self.by_tx.values().map(Vec::len).sum();
        self.pruned_at = Some(now);
    }

    /// Answers the waiters of these committed blocks' txs.
    fn committed(&mut self, blocks: &[Block]) {
        if self.by_tx.is_empty() {
            return;
        }
        for b in blocks {
            for t in b.txs() {
                for w in self.by_tx.remove(&t.hash()).unwrap_or_default() {
                    self.count -= 1;
                    let _ = w.send(b.height());
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use kite_types::block::{BLOCK_VERSION, BlockHeader};
    use kite_types::{NodeKey, Payload, PublicKey, Tx};

    fn block_with_txs(height: u64, n: u64) -> Block {
        let user = NodeKey::from_seed([2; 32]);
        let txs = (1..=n)
            .map(|nonce| Tx::sign(&user, "kite-test", nonce, Payload::Delete { key: vec![1] }))
            .collect();
        let header = BlockHeader {
            version: BLOCK_VERSION,
            chain_id: "kite-test".into(),
            height,
            prev_hash: Hash::ZERO,
            prev_app_hash: Hash::ZERO,
            timestamp_ms: 0,
            tx_root: Hash::ZERO,
            validator_set_hash: Hash::ZERO,
            proposer: PublicKey([0; 32]),
            term: 0,
        };
        Block::new_signed(header, txs, &NodeKey::from_seed([1; 32]))
    }

    #[test]
    fn waiters_get_the_height_and_a_full_table_refuses_after_pruning() {
        let block = block_with_txs(7, 3);
        let (h0, h1) = (block.txs()[0].hash(), block.txs()[1].hash());
        let now = Instant::now();
        let mut w = Waiters::default();
        let (a, mut ra) = oneshot::channel();
        let (b, mut rb) = oneshot::channel();
        let (c, rc) = oneshot::channel();
        w.add((h0, a), now);
        w.add((h0, b), now);
        w.add((h1, c), now);
        // The call waiting on h1 gives up.
        drop(rc);
        w.committed(std::slice::from_ref(&block));
        assert_eq!(ra.try_recv(), Ok(7));
        assert_eq!(rb.try_recv(), Ok(7));
        assert_eq!(w.count, 0);

        // Fill the table; one call gives up; the next one takes its place,
        // and the one after is refused.
        let mut keep = Vec::new();
        for i in 0..MAX_COMMIT_WAITERS as u64 {
            let (tx, rx) = oneshot::channel();
            w.add((Hash::digest(&i.to_le_bytes()), tx), now);
            keep.push(rx);
        }
        assert_eq!(w.count, MAX_COMMIT_WAITERS);
        drop(keep.pop());
        let (tx, mut taken) = oneshot::channel();
        w.add((h0, tx), now);
        let (tx, mut refused) = oneshot::channel();
        w.add((h1, tx), now);
        assert_eq!(w.count, MAX_COMMIT_WAITERS);
        assert!(
            refused
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
        );
        assert!(
            taken
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
    }
}
