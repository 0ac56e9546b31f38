//! A validator's side of a height: checking the leader's proposals
//! (newest first, replays ignored), executing, voting (recorded first),
//! locks and the resets that release them.

use super::*;

impl Engine {
    /// Structural checks of a leader-signed block at the next height.
    pub(super) fn check_block(&self, block: &Block) -> Result<(), String> {
        let hd = block.header();
        if hd.prev_hash != self.committed.block_hash {
            return Err(format!(
                "prev hash {} is not this node's block {} at height {}",
                hd.prev_hash.short(),
                self.committed.block_hash.short(),
                self.committed.height
            ));
        }
        if hd.prev_app_hash != self.committed.app_hash {
            return Err(format!(
                "prev app hash {} is not this node's {}",
                hd.prev_app_hash.short(),
                self.committed.app_hash.short()
            ));
        }
        if !block.check_tx_root() {
            return Err("tx root does not match the txs".into());
        }
        let bytes = block
            .txs()
            .iter()
            .fold(0u64, |t, x| t.saturating_add(x.size() as u64));
        if bytes > self.cfg.max_tx_bytes_per_block() {
            return Err(format!(
                "txs weigh {bytes} bytes, at most {} fit a block",
                self.cfg.max_tx_bytes_per_block()
            ));
        }
        if let Some(last) = self.committed.last_header()
            && hd.timestamp_ms < last.timestamp_ms
        {
            return Err("timestamp before the previous block's".into());
        }
        Ok(())
    }

    /// Whether a block is signed by the schedule's leader of its term, for
    /// this chain and set.
    pub(super) fn leader_signed(&self, block: &Block) -> bool {
        let hd = block.header();
        hd.chain_id == self.cfg.chain_id
            && hd.validator_set_hash == self.valset_hash
            && block.verify_leader(&self.cfg.schedule.leader(hd.term))
    }

    /// Validator: votes at the open height: the vote is recorded durably
    /// ([`Output::Persist`]) before it is sent.
    pub(super) fn vote(&mut self, vote: Vote, out: &mut Vec<Output>) {
        self.h.my_vote = Some(vote.clone());
        self.h.vote_sent_ms = self.now;
        out.push(Output::Persist {
            promise: self.promise(),
        });
        self.send_vote(vote, None, out);
    }

    pub(super) fn send_vote(
        &mut self,
        vote: Vote,
        best_header: Option<BlockHeader>,
        out: &mut Vec<Output>,
    ) {
        out.push(Output::SendVote {
            to: self.term_leader(),
            vote,
            best_header,
        });
    }

    pub(super) fn on_proposal(
        &mut self,
        from: PublicKey,
        block: Block,
        term: u64,
        cred: Option<Credential>,
        out: &mut Vec<Output>,
    ) {
        if !self.is_member() || self.me == Some(from) {
            return;
        }
        let Some(key) = self.cfg.key.clone() else {
            return;
        };
        if term < self.term {
            // A leader of a term this node left.
            return;
        }
        let hash = block.hash();
        let height = block.height();
        if self
            .h
            .waiting
            .as_ref()
            .is_some_and(|(_, b)| b.hash() == hash)
        {
            // Kept aside already (a re-send or a replay): the vote this
            // node is locked on is re-sent on its own timer.
            return;
        }
        if let Some(v) = self.h.my_vote.clone()
            && v.block_hash == hash
            && v.term == term
            && term == self.term
            && height == self.h.height
            && !self.h.blocks.contains_key(&hash)
        {
            // Refused before it ran (a NACK on its structure): answer again
            // with that vote, at most once per resend interval.
            let due = self
                .h
                .vote_sent_ms
                .saturating_add(self.cfg.vote_resend_interval_ms);
            if self.now >= due {
                self.h.vote_sent_ms = self.now;
                self.send_vote(v, None, out);
            }
            return;
        }
        if term == self.term
            && height == self.h.height
            && self.h.blocks.contains_key(&hash)
            && self.settled()
        {
            // Not progress: anyone can replay a known proposal.
            match self.h.my_vote.clone() {
                // A re-send: the leader has not got our vote.
                Some(v) if v.block_hash == hash && v.term == self.term => {
                    self.h.vote_sent_ms = self.now;
                    self.send_vote(v, None, out);
                }
                // Executed while this node was locked on another block,
                // since released; or voted in an earlier term.
                _ => {
                    if self.proposal_allowed(&block, term) {
                        self.execute_or_vote(hash, block, out);
                    }
                }
            }
            return;
        }
        if !self.leader_signed(&block) {
            return;
        }
        if height <= self.committed.height {
            // Already committed here: tell a lagging leader where we are.
            let v = Vote::nack_in(
                &key,
                &self.cfg.chain_id,
                term,
                height,
                hash,
                "height already committed",
                &[],
            );
            let best = self.committed.last_header().cloned();
            out.push(Output::SendVote {
                to: self.cfg.schedule.leader(term),
                vote: v,
                best_header: best,
            });
            return;
        }
        if height > self.h.height {
            // The leader is ahead: catch up first, keep the proposal.
            self.sync.peer_height(from, height - 1);
            if self
                .pending_proposal
                .as_ref()
                .is_none_or(|(_, p, _, _)| p.height() <= height)
            {
                self.pending_proposal = Some((from, block, term, cred));
            }
            return;
        }
        // The term: a later one, or this one before it settled, needs the
        // credential of a quorum.
        if (term > self.term || !self.settled()) && !self.accept_credential(term, cred, out) {
            return;
        }
        if !self.proposal_allowed(&block, term) {
            return;
        }
        if self.committing.is_some() || self.h.resets.contains_key(&hash) {
            return;
        }
        // The leader's proposals in one term at a height have increasing
        // header times: an older one is a replay of a block it abandoned.
        let ts = block.header().timestamp_ms;
        let first = if block.header().term == term {
            if self.h.newest_ts.is_some_and(|n| ts < n) {
                return;
            }
            let first = self.h.newest_ts.is_none();
            self.h.newest_ts = Some(ts);
            first
        } else {
            !self.h.blocks.contains_key(&hash)
        };
        if first {
            // The leader's first block at this height in this term: a sign
            // of life. Re-proposals at the same height are not (a leader
            // that cannot get its blocks committed is given up on), nor
            // are replays, which anyone can send.
            self.progress_ms = self.now;
        }
        if let Some(locked) = self.locked_on()
            && locked != hash
            && let Some(v) = self.h.my_vote.clone()
        {
            // Locked on another block of this term without a reset for
            // it: answer with that vote; the leader resets it, and this
            // proposal (the newest) is taken up then.
            self.h.waiting = Some((from, block));
            self.h.vote_sent_ms = self.now;
            self.send_vote(v, None, out);
            return;
        }
        if self.behind() {
            self.pending_proposal = Some((from, block, term, self.cred.clone()));
            return;
        }
        if let Err(reason) = self.check_block(&block) {
            let v = Vote::nack_in(
                &key,
                &self.cfg.chain_id,
                self.term,
                height,
                hash,
                &reason,
                &[],
            );
            self.vote(v, out);
            return;
        }
        self.execute_or_vote(hash, block, out);
    }

    /// Whether `block` may be proposed in `term` at the open height: a
    /// block of that term by its leader, or, at the height of the term's
    /// credential, exactly the block the credential carries (and nothing
    /// else while it carries one).
    pub(super) fn proposal_allowed(&self, block: &Block, term: u64) -> bool {
        let hd = block.header();
        if term != self.term || hd.height != self.h.height {
            return false;
        }
        let carried = self
            .cred
            .as_ref()
            .filter(|c| c.term == term && c.height == hd.height)
            .and_then(Credential::carried);
        match carried {
            Some(a) => a.block_hash == block.hash(),
            None => hd.term == term,
        }
    }

    /// Keeps `block` and executes it, or votes at once when it already ran.
    fn execute_or_vote(&mut self, hash: Hash, block: Block, out: &mut Vec<Output>) {
        if self.h.exec.contains_key(&hash) {
            self.h.blocks.entry(hash).or_insert(block);
            self.vote_if_free(hash, out);
            return;
        }
        if self.h.blocks.len() >= MAX_BLOCKS_PER_HEIGHT {
            // Make room for the newest: drop the oldest block that is
            // neither locked nor committed.
            let keep = [
                self.locked_on(),
                self.h.my_vote.as_ref().map(|v| v.block_hash),
                self.h.commit.as_ref().map(|k| k.block_hash),
            ];
            let oldest = self
                .h
                .blocks
                .iter()
                .filter(|(h, _)| !keep.contains(&Some(**h)))
                .min_by_key(|(_, b)| b.header().timestamp_ms)
                .map(|(h, _)| *h);
            if let Some(old) = oldest {
                self.h.blocks.remove(&old);
                self.h.exec.remove(&old);
            }
        }
        self.h.blocks.insert(hash, block.clone());
        self.h.exec.insert(hash, Exec::Pending);
        out.push(Output::ExecuteBlock { block });
    }

    pub(super) fn on_reset(
        &mut self,
        term: u64,
        height: u64,
        hash: Hash,
        sig: Signature,
        out: &mut Vec<Output>,
    ) {
        if term != self.term
            || !self.settled()
            || height != self.h.height
            || self.h.resets.contains_key(&hash)
        {
            return;
        }
        let digest = sign::reset_digest(&self.cfg.chain_id, term, height, &hash);
        if !sign::verify(&self.term_leader(), &digest, &sig) {
            return;
        }
        if self.h.commit.as_ref().is_some_and(|k| k.block_hash == hash) {
            self.halt(
                format!(
                    "the leader signed a reset for block {hash} at height {height}, which a quorum \
                     committed: the leader key is misbehaving; stop the network and investigate"
                ),
                out,
            );
            return;
        }
        self.h.add_reset(hash, sig);
        if self
            .h
            .waiting
            .as_ref()
            .is_some_and(|(_, b)| b.hash() == hash)
        {
            self.h.waiting = None;
        }
        if self
            .h
            .my_vote
            .as_ref()
            .is_some_and(|v| v.block_hash == hash)
        {
            // Released (the record keeps the old vote until the next one:
            // after a restart the node is locked again until the leader
            // re-sends this reset, which is only safe-side). Take up the
            // newest proposal: the one kept aside, or else the newest
            // block already executed or being executed.
            self.h.my_vote = None;
            if let Some((from, block)) = self.h.waiting.take() {
                let (term, cred) = (self.term, self.cred.clone());
                self.on_proposal(from, block, term, cred, out);
            } else if let Some(newest) = self
                .h
                .blocks
                .iter()
                .max_by_key(|(_, b)| b.header().timestamp_ms)
                .map(|(h, _)| *h)
            {
                self.vote_if_free(newest, out);
            }
        }
    }

    /// Validator: votes on `hash` once it is executed, unless the height
    /// has a commit, the block was reset, this node is locked on another
    /// block or already voted for this one.
    pub(super) fn vote_if_free(&mut self, hash: Hash, out: &mut Vec<Output>) {
        let Some(Exec::Done(result)) = self.h.exec.get(&hash).cloned() else {
            return;
        };
        let height = self.h.height;
        let term = self.term;
        let allowed = self
            .h
            .blocks
            .get(&hash)
            .is_some_and(|b| self.proposal_allowed(b, term));
        if self.is_validator()
            && self.settled()
            && allowed
            && self.h.commit.is_none()
            && !self.h.resets.contains_key(&hash)
            && self.locked_on().is_none_or(|l| l == hash)
            && self
                .h
                .my_vote
                .as_ref()
                .is_none_or(|v| v.block_hash != hash || v.term != term)
            && let Some(key) = &self.cfg.key
        {
            let chain = &self.cfg.chain_id;
            let vote = match &result {
                Ok(app) => Vote::ack_in(key, chain, term, height, hash, *app),
                Err(e) => Vote::nack_in(key, chain, term, height, hash, &e.reason, &e.bad_txs),
            };
            self.vote(vote, out);
        }
    }

    pub(super) fn on_executed(
        &mut self,
        height: u64,
        hash: Hash,
        result: Result<Hash, ExecError>,
        out: &mut Vec<Output>,
    ) {
        if height != self.h.height || !matches!(self.h.exec.get(&hash), Some(Exec::Pending)) {
            return;
        }
        self.h.exec.insert(hash, Exec::Done(result.clone()));
        if self.is_leader() && self.h.proposal == Some(hash) {
            match result {
                Ok(app) => {
                    if let Some(key) = &self.cfg.key {
                        let own =
                            Vote::ack_in(key, &self.cfg.chain_id, self.term, height, hash, app);
                        if let Some(k) = self.h.keeper.as_mut() {
                            k.add(own);
                        }
                    }
                    self.leader_check_quorum(out);
                }
                Err(e) => {
                    if !e.bad_txs.is_empty() {
                        out.push(Output::DropTxs {
                            hashes: e.bad_txs.clone(),
                        });
                    }
                    self.leader_reset(&format!("invalid block: {}", e.reason), out);
                }
            }
            return;
        }
        self.vote_if_free(hash, out);
        self.try_commit(out);
    }
}
