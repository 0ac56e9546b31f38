//! Catching up: fetched blocks (one at a time, or checked ranges applied
//! in batches), proven peer heights, and the block sync requests.

use super::*;

impl Engine {
    /// Keeps a fetched block until its height comes (within the window).
    pub(super) fn keep_fetched(
        &mut self,
        from: Option<PublicKey>,
        block: Block,
        ci: CommitInfo,
        checked: bool,
    ) {
        let height = block.height();
        // The planner asks for up to a window past what is committed or
        // being applied; anything further was not asked for.
        let next = self.next_to_apply();
        let limit = next.saturating_add(self.cfg.sync_window.max(1));
        if height < next || height > limit || self.fetched.contains_key(&height) {
            return;
        }
        let bytes: usize = block.txs().iter().map(|t| t.size()).sum();
        self.sync
            .block_size(u64::try_from(bytes).unwrap_or(u64::MAX).saturating_add(512));
        self.sync.received(height);
        self.fetched.insert(
            height,
            Fetched {
                block,
                ci,
                from,
                checked,
            },
        );
    }

    /// The next height not yet committed nor being applied.
    pub(super) fn next_to_apply(&self) -> u64 {
        self.applying
            .back()
            .map_or(self.h.height, |k| k.header.height.saturating_add(1))
    }

    /// Block sync's fast path: sends the checked fetched blocks that extend
    /// the committed tip (or the blocks already being applied) to the store
    /// in one [`Output::ApplyBlocks`], at most [`APPLY_BATCH`] blocks or
    /// [`APPLY_BATCH_TXS`] txs, with at most [`MAX_APPLYING`] in flight.
    /// Not while this height's block is executed or committed the slow way
    /// (a validator's proposal).
    pub(super) fn queue_applies(&mut self, out: &mut Vec<Output>) {
        if self.halted.is_some() || (self.applying.is_empty() && self.committing.is_some()) {
            return;
        }
        let (mut height, mut hash, mut app) = match self.applying.back() {
            Some(k) => (k.header.height, k.block_hash, k.commit_info.app_hash),
            None => {
                if !self.h.exec.is_empty() {
                    return;
                }
                (
                    self.committed.height,
                    self.committed.block_hash,
                    self.committed.app_hash,
                )
            }
        };
        let mut batch: Vec<(Block, CommitInfo)> = Vec::new();
        let mut txs = 0usize;
        // In flight: at most MAX_APPLYING blocks and at most the planner's
        // window (which shrinks for large blocks), so applying and fetched
        // blocks together stay within about twice the sync buffer.
        let in_flight = MAX_APPLYING.min(usize::try_from(self.sync.window()).unwrap_or(usize::MAX));
        while self.applying.len() < in_flight && batch.len() < APPLY_BATCH && txs < APPLY_BATCH_TXS
        {
            let next = height.saturating_add(1);
            if !self.fetched.get(&next).is_some_and(|f| f.checked) {
                break;
            }
            let Some(f) = self.fetched.remove(&next) else {
                break;
            };
            let hd = f.block.header();
            if hd.prev_hash != hash || hd.prev_app_hash != app {
                // A quorum committed this block on top of another block
                // (or state) than the one this node has or applies.
                let msg = format!(
                    "the network committed block {} at height {next} on top of block {} (app hash \
                     {}), but this node holds block {hash} (app hash {app}) at height {height}: \
                     this node is on another chain; it stops",
                    f.block.hash(),
                    hd.prev_hash,
                    hd.prev_app_hash
                );
                self.halt(msg, out);
                return;
            }
            let kc = KnownCommit {
                block_hash: f.block.hash(),
                header: hd.clone(),
                leader_sig: *f.block.leader_sig(),
                commit_info: f.ci.clone(),
            };
            if next == self.h.height {
                self.learn_commit(kc.clone(), out);
                if self.halted.is_some() {
                    return;
                }
            }
            (height, hash, app) = (next, kc.block_hash, kc.commit_info.app_hash);
            txs = txs.saturating_add(f.block.txs().len());
            self.applying.push_back(kc);
            batch.push((f.block, f.ci));
        }
        if batch.is_empty() {
            return;
        }
        self.committing = self.applying.front().map(|k| k.block_hash);
        out.push(Output::ApplyBlocks { blocks: batch });
    }

    /// The store applied (executed, checked against the commit info and
    /// committed) the first blocks of `applying`; `failed` is the block
    /// it could not.
    pub(super) fn on_applied(
        &mut self,
        applied: Vec<(u64, Hash, Hash)>,
        failed: Option<(u64, Hash, String)>,
        out: &mut Vec<Output>,
    ) {
        let mut moved = false;
        for (height, hash, app) in applied {
            let matches = self
                .applying
                .front()
                .is_some_and(|k| k.header.height == height && k.block_hash == hash);
            if !matches || height != self.h.height {
                break;
            }
            let Some(kc) = self.applying.pop_front() else {
                break;
            };
            if !self.record_commit(height, hash, app, kc, out) {
                return;
            }
            moved = true;
        }
        // The next block being applied is this height's commit.
        if let Some(next) = self.applying.front() {
            self.committing = Some(next.block_hash);
            self.h.commit = Some(next.clone());
        } else if moved {
            self.committing = None;
            self.after_commit(out);
        }
        if let Some((height, hash, reason)) = failed
            && self.applying.front().is_some_and(|k| k.block_hash == hash)
        {
            let msg = format!(
                "block {hash} at height {height} was committed by a quorum but is invalid here \
                 ({reason}); this node's state or software differs from the network's: it stops \
                 rather than fork"
            );
            self.halt(msg, out);
        }
    }

    /// Uses the fetched block of the current height, if there is one.
    pub(super) fn process_fetched(&mut self, out: &mut Vec<Output>) {
        self.queue_applies(out);
        while self.committing.is_none() && self.halted.is_none() {
            let next = self.h.height;
            let stale = self.fetched.split_off(&next);
            self.fetched = stale;
            let Some(Fetched {
                block, ci, from, ..
            }) = self.fetched.remove(&next)
            else {
                return;
            };
            let hash = block.hash();
            let hd = block.header();
            // A commit already verified for this very header needs no
            // second check of its signatures.
            let known = self
                .h
                .commit
                .as_ref()
                .is_some_and(|k| k.block_hash == hash && k.leader_sig == *block.leader_sig());
            let proof = hd.height == next
                && block.check_tx_root()
                && (known || self.commit_proof_ok(hd, &hash, block.leader_sig(), &ci));
            if !proof {
                self.sync.failed(next, from, self.now);
                continue;
            }
            if hd.prev_hash != self.committed.block_hash {
                let msg = format!(
                    "the network committed block {hash} at height {next} on top of {}, but this \
                     node committed {} at height {}: this node is on another chain; it stops",
                    hd.prev_hash, self.committed.block_hash, self.committed.height
                );
                self.halt(msg, out);
                return;
            }
            if hd.prev_app_hash != self.committed.app_hash {
                let msg = format!(
                    "app hash mismatch at height {}: this node has {} but the network built height \
                     {next} on {}; it stops rather than fork",
                    self.committed.height, self.committed.app_hash, hd.prev_app_hash
                );
                self.halt(msg, out);
                return;
            }
            let kc = KnownCommit {
                block_hash: hash,
                header: hd.clone(),
                leader_sig: *block.leader_sig(),
                commit_info: ci,
            };
            self.h.blocks.insert(hash, block);
            self.learn_commit(kc, out);
            self.try_commit(out);
            return;
        }
    }

    pub(super) fn on_peer_status(&mut self, peer: PublicKey, height: u64, out: &mut Vec<Output>) {
        if Some(peer) == self.me {
            return;
        }
        self.sync.peer_height(peer, height);
        if self.is_leader()
            && self.behind()
            && self.h.proposal.is_some()
            && self.committing.is_none()
        {
            // A proven height above this leader's (the node checks a status
            // claim before it feeds it): its proposal cannot commit; catch
            // up first.
            self.leader_reset("behind the network: catching up", out);
        }
        if height < self.committed.height {
            self.reannounce_to(peer, out);
        }
    }

    pub(super) fn drive_sync(&mut self, out: &mut Vec<Output>) {
        if self.committing.is_some() && self.applying.is_empty() {
            return;
        }
        let mut next = self.next_to_apply();
        // This height's block, held and committed the slow way, needs no
        // fetch (when batches are being applied, `next` is past it).
        if self.applying.is_empty()
            && self
                .h
                .commit
                .as_ref()
                .is_some_and(|k| self.h.blocks.contains_key(&k.block_hash))
        {
            next = next.saturating_add(1);
        }
        for r in self.sync.plan(self.now, next) {
            out.push(Output::RequestBlocks {
                from_height: r.from_height,
                to_height: r.to_height,
                peer: r.peer,
            });
        }
    }
}
