//! Every node's commit path: verified commit announces, the commit of the
//! open height once its block is executed, and what follows a commit.

use super::*;

impl Engine {
    pub(super) fn on_announce(
        &mut self,
        from: Option<PublicKey>,
        header: BlockHeader,
        sig: Signature,
        ci: CommitInfo,
        out: &mut Vec<Output>,
    ) {
        if header.chain_id != self.cfg.chain_id {
            return;
        }
        let hash = header.hash();
        let height = header.height;
        if height < self.h.height {
            if height == self.committed.height
                && hash != self.committed.block_hash
                && self.commit_proof_ok(&header, &hash, &sig, &ci)
            {
                self.halt(conflict(height, &self.committed.block_hash, &hash), out);
            }
            return;
        }
        if self.h.commit.as_ref().is_some_and(|k| k.block_hash == hash) {
            return;
        }
        if !self.commit_proof_ok(&header, &hash, &sig, &ci) {
            return;
        }
        match from {
            Some(p) => self.sync.peer_height(p, height),
            None => self.sync.hint_height(height),
        }
        if height == self.h.height {
            self.learn_term(ci.term(), out);
            self.learn_commit(
                KnownCommit {
                    block_hash: hash,
                    header,
                    leader_sig: sig,
                    commit_info: ci,
                },
                out,
            );
            self.try_commit(out);
        }
    }

    /// Records a verified commit for the current height; halts on conflict.
    pub(super) fn learn_commit(&mut self, kc: KnownCommit, out: &mut Vec<Output>) {
        if let Some(k) = &self.h.commit {
            if k.block_hash != kc.block_hash {
                let msg = conflict(self.h.height, &k.block_hash, &kc.block_hash);
                self.halt(msg, out);
            }
            return;
        }
        if self.h.resets.contains_key(&kc.block_hash) && kc.commit_info.term() == self.term {
            self.halt(
                format!(
                    "block {} at height {} was reset by the leader and then committed: the \
                     leader key is misbehaving; stop the network and investigate",
                    kc.block_hash, self.h.height
                ),
                out,
            );
            return;
        }
        self.h.commit = Some(kc);
    }

    pub(super) fn commit_proof_ok(
        &self,
        header: &BlockHeader,
        hash: &Hash,
        sig: &Signature,
        ci: &CommitInfo,
    ) -> bool {
        header.chain_id == self.cfg.chain_id
            && header.validator_set_hash == self.valset_hash
            && ci.term() >= header.term
            && verify_header_sig(
                &header.proposer,
                hash,
                sig,
                &self.cfg.schedule.leader(header.term),
            )
            && ci
                .verify(
                    &self.cfg.chain_id,
                    header.height,
                    hash,
                    &self.cfg.validators,
                    self.cfg.quorum,
                )
                .is_ok()
    }

    /// Commits the known commit of this height once its block is executed
    /// (executing or fetching it first).
    pub(super) fn try_commit(&mut self, out: &mut Vec<Output>) {
        if self.committing.is_some() || self.halted.is_some() {
            return;
        }
        let Some(kc) = self.h.commit.clone() else {
            return;
        };
        let Some(block) = self.h.blocks.get(&kc.block_hash).cloned() else {
            // The block will come from block sync (the planner knows the
            // height exists).
            self.sync.hint_height(self.h.height);
            return;
        };
        match self.h.exec.get(&kc.block_hash) {
            None => {
                self.h.exec.insert(kc.block_hash, Exec::Pending);
                out.push(Output::ExecuteBlock { block });
            }
            Some(Exec::Pending) => {}
            Some(Exec::Done(Ok(app))) if *app == kc.commit_info.app_hash => {
                self.committing = Some(kc.block_hash);
                out.push(Output::Commit {
                    block,
                    commit_info: kc.commit_info,
                });
            }
            Some(Exec::Done(Ok(app))) => {
                let msg = format!(
                    "app hash mismatch at height {}: this node computed {} for block {} but a quorum \
                     of validators committed {}; this node's state or software differs from the \
                     network's: it stops rather than fork (re-sync it from a trusted peer after \
                     finding the cause)",
                    self.h.height, app, kc.block_hash, kc.commit_info.app_hash
                );
                self.halt(msg, out);
            }
            Some(Exec::Done(Err(e))) => {
                let msg = format!(
                    "block {} at height {} was committed by a quorum but is invalid here ({}); this \
                     node's state or software differs from the network's: it stops rather than fork",
                    kc.block_hash, self.h.height, e.reason
                );
                self.halt(msg, out);
            }
        }
    }

    pub(super) fn on_committed(
        &mut self,
        height: u64,
        hash: Hash,
        app: Hash,
        out: &mut Vec<Output>,
    ) {
        if self.committing != Some(hash) || height != self.h.height {
            return;
        }
        let Some(kc) = self.h.commit.take() else {
            return;
        };
        if self.record_commit(height, hash, app, kc, out) {
            self.committing = None;
            self.after_commit(out);
        }
    }

    /// Moves the committed tip to the block `kc` the store committed at
    /// `height` with app hash `app`, and opens the next height. Halts (and
    /// answers false) when `app` is not the quorum's.
    pub(super) fn record_commit(
        &mut self,
        height: u64,
        hash: Hash,
        app: Hash,
        kc: KnownCommit,
        out: &mut Vec<Output>,
    ) -> bool {
        if app != kc.commit_info.app_hash {
            let msg = format!(
                "the store committed app hash {app} at height {height}, the quorum's is {}; stopping",
                kc.commit_info.app_hash
            );
            self.halt(msg, out);
            return false;
        }
        self.committed = CommittedState {
            height,
            block_hash: hash,
            app_hash: app,
            last: Some(LastCommit {
                header: kc.header,
                leader_sig: kc.leader_sig,
                commit_info: kc.commit_info,
            }),
        };
        let term = self
            .committed
            .last
            .as_ref()
            .map_or(0, |l| l.commit_info.term());
        self.h = HeightState::new(height.saturating_add(1));
        self.sync.advance(self.h.height);
        self.learn_term(term, out);
        self.quiet_terms = 0;
        self.progress_ms = self.now;
        true
    }

    /// What follows a commit once nothing is being committed: the leader's
    /// announce and new height, a proposal kept for this height, fetched
    /// blocks.
    pub(super) fn after_commit(&mut self, out: &mut Vec<Output>) {
        if self.is_leader() {
            // Recorded before the announce, so a store that loses this
            // commit (not durable) is refused at restart instead of
            // re-proposing a height the validators committed.
            out.push(Output::Persist {
                promise: self.promise(),
            });
            self.announce(Target::All, out);
            self.ld.height_open_ms = self.now;
            self.ld.rebuild_now = false;
            self.ld.round = 0;
            // Txs still waiting have waited since the last proposal (set
            // when it was built): under steady load the next block goes
            // out at this commit once `propose_timeout` has passed since
            // then, rather than a full timeout after it. (Before, every
            // round idled a propose timeout after its commit: 100 ms of
            // each round at 5,000 tx/s.)
            self.ld.txs_since = if self.ld.mempool_txs > 0 {
                self.ld.txs_since.or(Some(self.now))
            } else {
                None
            };
        }
        if let Some((from, b, term, cred)) = self.pending_proposal.take() {
            if b.height() == self.h.height {
                self.on_proposal(from, b, term, cred, out);
            } else if b.height() > self.h.height {
                self.pending_proposal = Some((from, b, term, cred));
            }
        }
        self.process_fetched(out);
    }
}
