//! Time: what each tick re-sends or times out, and the next deadline the
//! node must wake the engine at.

use super::*;

impl Engine {
    pub(super) fn on_tick(&mut self, out: &mut Vec<Output>) {
        let now = self.now;
        let resend = self.cfg.vote_resend_interval_ms;
        if self.is_leader()
            && self.committing.is_none()
            && let Some(hash) = self.h.proposal
        {
            if now >= self.h.proposed_ms.saturating_add(self.cfg.round_timeout_ms)
                && !self.carrying()
            {
                self.leader_reset("round timeout", out);
            } else if now >= self.h.resent_ms.saturating_add(resend) {
                self.h.resent_ms = now;
                let non_voters: Vec<PublicKey> = match &self.h.keeper {
                    Some(k) => k
                        .non_voters()
                        .into_iter()
                        .filter(|p| Some(*p) != self.me)
                        .collect(),
                    None => Vec::new(),
                };
                if !non_voters.is_empty() {
                    let height = self.h.height;
                    // The newest resets: those of its latest proposals.
                    let newest: Vec<(Hash, Signature)> = self
                        .h
                        .proposed
                        .iter()
                        .rev()
                        .filter_map(|bh| self.h.resets.get(bh).map(|s| (*bh, *s)))
                        .take(RESETS_RESENT)
                        .collect();
                    for (bh, sig) in newest {
                        out.push(Output::SendReset {
                            term: self.term,
                            height,
                            block_hash: bh,
                            leader_sig: sig,
                            reason: "superseded".into(),
                            to: Target::Peers(non_voters.clone()),
                        });
                    }
                    if let Some(block) = self.h.blocks.get(&hash).cloned() {
                        self.send_proposal(non_voters, block, out);
                    }
                }
            }
        }
        if self.is_validator()
            && let Some(v) = &self.h.my_vote
            && now >= self.h.vote_sent_ms.saturating_add(resend)
        {
            self.h.vote_sent_ms = now;
            out.push(Output::SendVote {
                to: self.term_leader(),
                vote: v.clone(),
                best_header: None,
            });
        }
        self.term_tick(out);
    }

    pub(super) fn next_deadline(&self) -> Option<(u64, TimeoutKind)> {
        let mut best: Option<(u64, TimeoutKind)> = None;
        let mut consider = |t: u64, k: TimeoutKind| {
            if best.is_none_or(|(b, _)| t < b) {
                best = Some((t, k));
            }
        };
        let resend = self.cfg.vote_resend_interval_ms;
        if self.is_leader() && self.committing.is_none() {
            if self.h.proposal.is_some() {
                consider(
                    self.h.resent_ms.saturating_add(resend),
                    TimeoutKind::ResendProposal,
                );
                if !self.carrying() {
                    consider(
                        self.h.proposed_ms.saturating_add(self.cfg.round_timeout_ms),
                        TimeoutKind::Round,
                    );
                }
            } else if self.can_propose() {
                if let Some(t) = self.ld.txs_since {
                    consider(
                        t.saturating_add(self.cfg.propose_timeout_ms),
                        TimeoutKind::Propose,
                    );
                }
                if self.cfg.empty_block_timeout_ms > 0 {
                    consider(
                        self.ld
                            .height_open_ms
                            .saturating_add(self.cfg.empty_block_timeout_ms),
                        TimeoutKind::Propose,
                    );
                }
            }
        }
        if self.is_validator() && self.h.my_vote.is_some() {
            consider(
                self.h.vote_sent_ms.saturating_add(resend),
                TimeoutKind::ResendVote,
            );
        }
        if let Some(t) = self.suspect_at() {
            consider(t, TimeoutKind::Leader);
        }
        if let Some(t) = self.handover_deadline() {
            // A busy leader's hand-over goes ahead anyway then (a commit in
            // flight ends with an input that carries it out).
            consider(t, TimeoutKind::Leader);
        }
        if self.is_member() && self.term > 0 && !self.settled() {
            consider(
                self.h
                    .change_sent_ms
                    .saturating_add(resend)
                    .max(self.now.saturating_add(1)),
                TimeoutKind::ResendTermChange,
            );
        }
        if let Some(t) = self.sync.next_deadline(self.now) {
            consider(t, TimeoutKind::Sync);
        }
        best
    }

    pub(super) fn schedule(&mut self, out: &mut Vec<Output>) {
        let Some((t, kind)) = self.next_deadline() else {
            return;
        };
        let at = t.max(self.now.saturating_add(1));
        let due = self.scheduled.is_none_or(|s| s <= self.now || at < s);
        if due {
            self.scheduled = Some(at);
            out.push(Output::ScheduleTimeout { at_ms: at, kind });
        }
    }
}
