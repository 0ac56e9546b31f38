//! The leader's side of a height: when to build a block, proposing it
//! (recorded first), counting votes, committing on a quorum, resetting a
//! proposal that cannot commit, and what a validator's vote may cost.

use super::*;

impl Engine {
    pub(super) fn on_mempool(&mut self, txs: usize, bytes: u64) {
        self.ld.mempool_txs = txs;
        self.ld.mempool_bytes = bytes;
        if txs == 0 {
            self.ld.txs_since = None;
        } else if self.ld.txs_since.is_none() {
            self.ld.txs_since = Some(self.now);
        }
    }

    pub(super) fn empty_block_due(&self) -> bool {
        self.cfg.empty_block_timeout_ms > 0
            && self.now
                >= self
                    .ld
                    .height_open_ms
                    .saturating_add(self.cfg.empty_block_timeout_ms)
    }

    pub(super) fn can_propose(&self) -> bool {
        self.is_leader()
            && self.started_ms.is_some()
            && !self.ld.building
            && self.h.proposal.is_none()
            && self.committing.is_none()
            && !self.behind()
    }

    pub(super) fn leader_maybe_propose(&mut self, out: &mut Vec<Output>) {
        if !self.can_propose() {
            return;
        }
        let max = self.cfg.max_tx_bytes_per_block();
        let full = self.ld.mempool_txs > 0 && self.ld.mempool_bytes >= max;
        let waited = self
            .ld
            .txs_since
            .is_some_and(|t| self.now >= t.saturating_add(self.cfg.propose_timeout_ms));
        if self.ld.rebuild_now || full || waited || self.empty_block_due() {
            self.ld.rebuild_now = false;
            self.ld.building = true;
            out.push(Output::BuildBlock { max_bytes: max });
        }
    }

    pub(super) fn on_block_built(&mut self, mut txs: Vec<Tx>, out: &mut Vec<Output>) {
        if !self.is_leader() || !self.ld.building {
            return;
        }
        self.ld.building = false;
        let Some(key) = self.cfg.key.clone() else {
            return;
        };
        if self.carrying() {
            return;
        }
        // Never trust the mempool with the budget.
        let max = self.cfg.max_tx_bytes_per_block();
        let mut used: u64 = 0;
        let keep = txs
            .iter()
            .take_while(|t| {
                used = used.saturating_add(t.size() as u64);
                used <= max
            })
            .count();
        txs.truncate(keep);
        if txs.is_empty() {
            // The mempool has nothing to give: do not ask again until it
            // reports new txs.
            self.ld.mempool_txs = 0;
            self.ld.mempool_bytes = 0;
            self.ld.txs_since = None;
            if !self.empty_block_due() {
                return;
            }
        }
        let last_ts = self.committed.last_header().map_or(0, |h| h.timestamp_ms);
        // Strictly later than this height's earlier proposals: validators
        // ignore older ones.
        let after = self.h.newest_ts.map_or(0, |t| t.saturating_add(1));
        let mut ts = self.now.max(last_ts).max(after);
        let mut block = None;
        for _ in 0..8 {
            let header = BlockHeader {
                version: BLOCK_VERSION,
                chain_id: self.cfg.chain_id.clone(),
                height: self.h.height,
                prev_hash: self.committed.block_hash,
                prev_app_hash: self.committed.app_hash,
                timestamp_ms: ts,
                tx_root: Hash::ZERO,
                validator_set_hash: self.valset_hash,
                proposer: key.public(),
                term: self.term,
            };
            let b = Block::new_signed(header, txs.clone(), &key);
            // Never propose a block twice (same txs, same time).
            if !self.h.proposed.contains(&b.hash()) && !self.h.resets.contains_key(&b.hash()) {
                block = Some(b);
                break;
            }
            ts = ts.saturating_add(1);
        }
        let Some(block) = block else {
            return;
        };
        let hash = block.hash();
        if !block.txs().is_empty() {
            // What arrives from now on waits for the next block; the
            // mempool's count still holds this block's txs until it
            // commits, so `on_mempool` would not restart the wait.
            self.ld.txs_since = Some(self.now);
        }
        self.ld.round = self.ld.round.saturating_add(1);
        if self.h.proposed.len() >= MAX_PROPOSED {
            // The record keeps the newest proposals: a validator still
            // locked on the oldest is not released at this height.
            self.h.proposed.remove(0);
        }
        self.h.proposed.push(hash);
        self.h.newest_ts = Some(block.header().timestamp_ms);
        out.push(Output::Persist {
            promise: self.promise(),
        });
        self.start_proposal(block, out);
    }

    /// Leader: makes `block` the proposal of the open height (recorded
    /// before), executes it and sends it to the other validators.
    pub(super) fn start_proposal(&mut self, block: Block, out: &mut Vec<Output>) {
        let hash = block.hash();
        self.h.blocks.clear();
        self.h.blocks.insert(hash, block.clone());
        let executed = self.h.exec.remove(&hash);
        self.h.exec.clear();
        self.h.proposal = Some(hash);
        self.h.keeper = Some(VoteKeeper::new(
            self.cfg.validators.clone(),
            self.cfg.quorum,
            self.h.height,
            hash,
        ));
        self.h.proposed_ms = self.now;
        self.h.resent_ms = self.now;
        match executed {
            Some(Exec::Done(result)) => {
                self.h.exec.insert(hash, Exec::Pending);
                self.on_executed(self.h.height, hash, result, out);
            }
            _ => {
                self.h.exec.insert(hash, Exec::Pending);
                out.push(Output::ExecuteBlock {
                    block: block.clone(),
                });
            }
        }
        self.send_proposal(self.others(), block, out);
    }

    /// Sends `block` as this term's proposal to `to`.
    pub(super) fn send_proposal(&self, to: Vec<PublicKey>, block: Block, out: &mut Vec<Output>) {
        if to.is_empty() {
            return;
        }
        out.push(Output::SendProposal {
            to,
            block,
            term: self.term,
            credential: self.cred.clone(),
        });
    }

    /// Leader: its proposal is the block its credential carries; it is
    /// never reset (it may have committed in an earlier term).
    pub(super) fn carrying(&self) -> bool {
        self.is_leader()
            && self.h.proposal.is_some()
            && self.cred.as_ref().is_some_and(|c| {
                c.height == self.h.height && c.carried().map(|a| a.block_hash) == self.h.proposal
            })
    }

    /// Leader: a vote. One validator's votes cost bounded work per height:
    /// a vote for a committed height costs a rate-limited re-announce and
    /// no signature check; a vote for a later height is a claim and is
    /// ignored (heights are learned only from proven commits); at the open
    /// height, one signature check per vote for the proposal until the
    /// voter is counted, and a vote for a block this leader proposed
    /// earlier costs one reset per resend interval (a reset is public and
    /// harmless, so it is sent without a signature check). Votes for any
    /// other block are ignored: the leader signs resets only for blocks it
    /// proposed. The unsigned `best_header` hint is never acted on. A vote
    /// relayed by another peer than its signer is ignored unchecked, and
    /// after [`MAX_BAD_VOTES_PER_HEIGHT`] bad signatures so are the
    /// validator's further votes at this height.
    pub(super) fn on_vote(
        &mut self,
        from: Option<PublicKey>,
        vote: Vote,
        _best: Option<BlockHeader>,
        out: &mut Vec<Output>,
    ) {
        if !self.is_leader()
            || !self.cfg.validators.contains(&vote.validator)
            || from.is_some_and(|f| f != vote.validator)
        {
            return;
        }
        let voter = vote.validator;
        if vote.height < self.h.height {
            // The voter lags: answering costs one rate-limited announce of
            // public data, so the vote is not worth a signature check.
            self.reannounce_to(voter, out);
            return;
        }
        if vote.height > self.h.height || vote.term != self.term {
            // Another term's vote: the voter left this term, or has not
            // joined it yet (it will, from the proposal's credential).
            return;
        }
        if Some(vote.block_hash) == self.h.proposal {
            let bad = self.h.bad_votes.get(&voter).copied().unwrap_or(0);
            if bad >= MAX_BAD_VOTES_PER_HEIGHT
                || self
                    .h
                    .keeper
                    .as_ref()
                    .is_some_and(|k| k.voted(&vote.validator))
            {
                return;
            }
            if !vote.verify(&self.cfg.chain_id) {
                self.h.bad_votes.insert(voter, bad.saturating_add(1));
                return;
            }
            if let Some(k) = self.h.keeper.as_mut() {
                k.add(vote);
            }
            self.leader_check_quorum(out);
            return;
        }
        // A vote for a block this leader proposed at this height and
        // abandoned (before a restart, or reset): the voter is locked on
        // it; send the reset that releases it. Not while this leader may
        // be behind the network.
        let bh = vote.block_hash;
        if self.behind() || !self.h.proposed.contains(&bh) {
            return;
        }
        if let Some(t) = self.h.reset_sent.get(&voter)
            && self.now < t.saturating_add(self.cfg.vote_resend_interval_ms)
        {
            return;
        }
        let sig = match self.h.resets.get(&bh) {
            Some(s) => *s,
            None => {
                let Some(key) = &self.cfg.key else {
                    return;
                };
                let s = key.sign_digest(&sign::reset_digest(
                    &self.cfg.chain_id,
                    self.term,
                    vote.height,
                    &bh,
                ));
                self.h.add_reset(bh, s);
                s
            }
        };
        self.h.reset_sent.insert(voter, self.now);
        out.push(Output::SendReset {
            term: self.term,
            height: vote.height,
            block_hash: bh,
            leader_sig: sig,
            reason: "superseded".into(),
            to: Target::Peers(vec![voter]),
        });
    }

    pub(super) fn leader_check_quorum(&mut self, out: &mut Vec<Output>) {
        if self.committing.is_some() {
            return;
        }
        let Some(hash) = self.h.proposal else {
            return;
        };
        let Some(Exec::Done(Ok(app))) = self.h.exec.get(&hash) else {
            return;
        };
        let app = *app;
        let Some(keeper) = &self.h.keeper else {
            return;
        };
        if let Some(ci) = keeper.commit_info(&app) {
            let Some(block) = self.h.blocks.get(&hash).cloned() else {
                return;
            };
            self.h.commit = Some(KnownCommit {
                block_hash: hash,
                header: block.header().clone(),
                leader_sig: *block.leader_sig(),
                commit_info: ci.clone(),
            });
            self.committing = Some(hash);
            out.push(Output::Commit {
                block,
                commit_info: ci,
            });
            return;
        }
        if (keeper.quorum_nack(&app) || keeper.ack_impossible(&app)) && !self.carrying() {
            let in_block: Vec<Hash> = self
                .h
                .blocks
                .get(&hash)
                .map(|b| b.txs().iter().map(Tx::hash).collect())
                .unwrap_or_default();
            let mut drop: Vec<Hash> = keeper
                .nacks()
                .flat_map(|v| v.bad_txs.iter().copied())
                .filter(|h| in_block.contains(h))
                .collect();
            drop.sort();
            drop.dedup();
            if !drop.is_empty() {
                out.push(Output::DropTxs { hashes: drop });
            }
            self.leader_reset("the validators refused the block", out);
        }
    }

    /// Leader: abandons the current proposal with a signed reset and
    /// proposes the height again.
    pub(super) fn leader_reset(&mut self, reason: &str, out: &mut Vec<Output>) {
        let Some(hash) = self.h.proposal else {
            return;
        };
        if self.carrying() {
            // Never abandoned: the next term takes over if it cannot commit.
            return;
        }
        let Some(key) = self.cfg.key.clone() else {
            return;
        };
        let height = self.h.height;
        let sig = key.sign_digest(&sign::reset_digest(
            &self.cfg.chain_id,
            self.term,
            height,
            &hash,
        ));
        self.h.add_reset(hash, sig);
        self.h.proposal = None;
        self.h.keeper = None;
        self.ld.rebuild_now = true;
        let to = self.others();
        if !to.is_empty() {
            out.push(Output::SendReset {
                term: self.term,
                height,
                block_hash: hash,
                leader_sig: sig,
                reason: reason.to_owned(),
                to: Target::Peers(to),
            });
        }
    }
}
