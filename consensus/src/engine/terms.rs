//! Terms (leader failover): when a validator gives up on the leader of its
//! term, the term changes it signs and sends, joining a later term that a
//! quorum can no longer be formed without, and the new leader taking over
//! with a quorum's credential (docs/CONSENSUS.md, "Terms and leader
//! failover").

use super::*;

/// The most a leader timeout doubles to, as a power of two.
const MAX_DOUBLINGS: u32 = 16;

/// What an operator's hand-over ([`Input::HandOver`]) does on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOver {
    /// This node leads term `from`: it leaves it for term `to` as soon as
    /// no proposal of its is out (at once when idle; after the current
    /// height commits otherwise; after one leader timeout at the latest),
    /// and the other validators follow it at once.
    Leader {
        /// The term it leads.
        from: u64,
        /// The term it hands over to.
        to: u64,
    },
    /// This validator leaves term `from` for term `to` at once, as when its
    /// leader timeout passes: the way to name the next leader when the
    /// current one is down. The new leader takes over once validators
    /// holding a quorum have left (each does when its own leader timeout
    /// passes, or at once when asked the same).
    Validator {
        /// The term it is in.
        from: u64,
        /// The term it moves to.
        to: u64,
    },
}

/// Why a hand-over is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandOverError {
    /// The named key is not a genesis validator.
    #[error("{0} is not a genesis validator: only a validator can lead")]
    NotValidator(PublicKey),
    /// This node does not vote (a sentry or an archive).
    #[error(
        "this node is not a validator: only validators choose the leader (ask the current \
         leader, or the validators when it is down)"
    )]
    NotMember,
    /// The named validator leads this node's term already.
    #[error("{who} already leads term {term}")]
    AlreadyLeads {
        /// The validator.
        who: PublicKey,
        /// The term.
        term: u64,
    },
    /// This node is in a term the named validator leads, not settled yet.
    #[error(
        "this node is already in term {term}, which {who} leads once validators holding a \
         quorum have joined it"
    )]
    Underway {
        /// The validator.
        who: PublicKey,
        /// The term.
        term: u64,
    },
    /// Asked of a validator, without `force`, while the leader of its term
    /// made progress within a leader timeout (a round timeout with failover
    /// off): a validator that left a live leader's term would only stop
    /// voting there.
    #[error(
        "the leader {leader} of term {term} made progress {ago_ms} ms ago: ask the leader for a \
         clean hand-over; if it is down, wait until it has been silent for {wait_ms} ms or force \
         it (--force)"
    )]
    LeaderAlive {
        /// The leader of the term.
        leader: PublicKey,
        /// The term.
        term: u64,
        /// Since its last sign of life.
        ago_ms: u64,
        /// How long it must be silent.
        wait_ms: u64,
    },
    /// The engine stopped.
    #[error("the engine halted: {0}")]
    Halted(String),
}

impl Engine {
    /// What [`Input::HandOver`] for `to` would do now, or why it is
    /// refused (the node answers the operator with it). `force`: see
    /// [`HandOverError::LeaderAlive`].
    pub fn plan_hand_over(&self, to: &PublicKey, force: bool) -> Result<HandOver, HandOverError> {
        if let Some(h) = &self.halted {
            return Err(HandOverError::Halted(h.clone()));
        }
        if !self.cfg.validators.contains(to) {
            return Err(HandOverError::NotValidator(*to));
        }
        if !self.is_member() {
            return Err(HandOverError::NotMember);
        }
        if self.term_leader() == *to {
            return Err(if self.settled() {
                HandOverError::AlreadyLeads {
                    who: *to,
                    term: self.term,
                }
            } else {
                HandOverError::Underway {
                    who: *to,
                    term: self.term,
                }
            });
        }
        let target = self
            .cfg
            .schedule
            .next_term_of(self.term, to)
            .filter(|t| *t > self.term)
            .ok_or(HandOverError::NotValidator(*to))?;
        let ago = self.now.saturating_sub(self.progress_ms);
        // Silent for a leader timeout (a round timeout with failover off).
        let wait = if self.cfg.leader_timeout_ms > 0 {
            self.leader_timeout()
        } else {
            self.cfg.round_timeout_ms
        };
        if !force && !self.is_leader() && self.settled() && ago < wait {
            return Err(HandOverError::LeaderAlive {
                leader: self.term_leader(),
                term: self.term,
                ago_ms: ago,
                wait_ms: wait,
            });
        }
        Ok(if self.is_leader() {
            HandOver::Leader {
                from: self.term,
                to: target,
            }
        } else {
            HandOver::Validator {
                from: self.term,
                to: target,
            }
        })
    }

    /// How long a busy leader's hand-over waits for its proposal to
    /// commit: the longer of the leader and round timeouts (so also with
    /// failover off).
    fn handover_wait(&self) -> u64 {
        self.leader_timeout().max(self.cfg.round_timeout_ms)
    }

    /// An operator's hand-over: remembered for the term it was asked in,
    /// carried out by [`Engine::maybe_hand_over`] after every input. Asked
    /// again for the same target, the first request's time holds.
    pub(super) fn on_hand_over(&mut self, to: PublicKey, force: bool) {
        let target = match self.plan_hand_over(&to, force) {
            Ok(HandOver::Leader { to, .. } | HandOver::Validator { to, .. }) => to,
            Err(_) => return,
        };
        let asked = match self.handover {
            Some(h) if h.target == target && h.from == self.term => h.asked_ms,
            _ => self.now,
        };
        self.handover = Some(PendingHandOver {
            target,
            from: self.term,
            asked_ms: asked,
        });
    }

    /// Carries out a pending hand-over: never while a commit is being
    /// written (as for any term change); the leader only once no proposal
    /// of its is out or building, or when the hand-over has waited one
    /// leader timeout (leaving a term with a proposal out is the failover
    /// path: validators that ACKed it carry it to the next leader).
    pub(super) fn maybe_hand_over(&mut self, out: &mut Vec<Output>) {
        let Some(h) = self.handover else {
            return;
        };
        if h.from != self.term {
            // Another term change got there first: the request was about
            // a term this node left.
            self.handover = None;
            return;
        }
        if self.committing.is_some() {
            return;
        }
        let busy = self.h.proposal.is_some() || self.ld.building;
        if self.is_leader() && busy && self.now < h.asked_ms.saturating_add(self.handover_wait()) {
            return;
        }
        self.handover = None;
        self.enter_term(h.target, true, out);
    }

    /// When a pending hand-over of a busy leader goes ahead anyway.
    pub(super) fn handover_deadline(&self) -> Option<u64> {
        let h = self.handover?;
        (self.committing.is_none()).then(|| h.asked_ms.saturating_add(self.handover_wait()))
    }

    /// The leader timeout now: doubled for each term in a row without a
    /// commit, up to the configured maximum.
    pub(super) fn leader_timeout(&self) -> u64 {
        let base = self.cfg.leader_timeout_ms;
        let grown = base.saturating_mul(1u64 << self.quiet_terms.min(MAX_DOUBLINGS));
        grown.min(self.cfg.leader_timeout_max_ms.max(base))
    }

    /// When this validator gives up on the leader of its term: the leader
    /// timeout after its last sign of life (a block or reset not seen
    /// before, a commit, the start of the term), plus the time the leader
    /// may take to propose. `None` while nothing is expected of the leader
    /// (it is this node, the node is behind or committing, or the chain is
    /// idle with no empty blocks).
    pub(super) fn suspect_at(&self) -> Option<u64> {
        if !self.is_validator()
            || self.cfg.leader_timeout_ms == 0
            || self.started_ms.is_none()
            || self.committing.is_some()
            || self.behind()
        {
            return None;
        }
        let expecting = self.cfg.empty_block_timeout_ms > 0
            || self.h.my_vote.is_some()
            || !self.h.blocks.is_empty()
            || self.ld.mempool_txs > 0
            || !self.settled();
        if !expecting {
            return None;
        }
        let propose = if self.settled() {
            self.cfg
                .empty_block_timeout_ms
                .max(self.cfg.propose_timeout_ms)
        } else {
            0
        };
        Some(
            self.progress_ms
                .saturating_add(propose)
                .saturating_add(self.leader_timeout()),
        )
    }

    /// On every tick: gives up on a silent leader, and re-sends this
    /// node's term change while its term has no settled leader.
    pub(super) fn term_tick(&mut self, out: &mut Vec<Output>) {
        if self.suspect_at().is_some_and(|at| self.now >= at) {
            // The next term, or the highest a validator already moved to:
            // a validator that ran ahead alone (cut off, paused) is joined,
            // not chased.
            let reach = self.term.saturating_add(self.cfg.schedule.len() as u64);
            let ahead = self
                .h
                .changes
                .values()
                .map(|c| c.term)
                .filter(|t| *t <= reach)
                .max()
                .unwrap_or(0);
            let next = self.term.saturating_add(1).max(ahead);
            self.enter_term(next, true, out);
            return;
        }
        if self.change_due() {
            self.send_term_change(out);
        }
    }

    /// Whether this node's term change is due: its term has no settled
    /// leader and the change was not sent at this height, or not for a
    /// resend interval.
    pub(super) fn change_due(&self) -> bool {
        self.is_member()
            && self.term > 0
            && !self.settled()
            && (self.h.my_change.is_none()
                || self.now
                    >= self
                        .h
                        .change_sent_ms
                        .saturating_add(self.cfg.vote_resend_interval_ms))
    }

    /// Moves to `term`, above the current one: leaves the leader's state of
    /// the old term, persists the term before anything can reveal it, and
    /// when `send`, signs and sends a term change.
    pub(super) fn enter_term(&mut self, term: u64, send: bool, out: &mut Vec<Output>) {
        if term <= self.term {
            return;
        }
        self.term = term;
        self.cred = None;
        self.quiet_terms = self.quiet_terms.saturating_add(1);
        self.progress_ms = self.now;
        self.h.proposal = None;
        self.h.keeper = None;
        self.h.proposed.clear();
        self.h.reset_sent.clear();
        self.h.resets.clear();
        self.h.newest_ts = None;
        self.h.waiting = None;
        self.h.bad_votes.clear();
        self.h.my_change = None;
        self.h.changes.retain(|_, c| c.term >= term);
        self.ld.building = false;
        self.ld.rebuild_now = false;
        self.ld.round = 0;
        if self.is_member() {
            out.push(Output::Persist {
                promise: self.promise(),
            });
            if send {
                self.send_term_change(out);
            }
        }
    }

    /// Signs (once per term, height and ACK) and sends this node's term
    /// change: with the block of its ACK to the leader of the term, without
    /// it to the other validators.
    pub(super) fn send_term_change(&mut self, out: &mut Vec<Output>) {
        let Some(key) = self.cfg.key.clone() else {
            return;
        };
        if !self.is_member() || self.term == 0 || self.settled() {
            return;
        }
        let acked = self.h.acked();
        if acked.is_some_and(|a| a.term >= self.term) {
            // An ACK of this very term: this node took part in it, so it
            // has nothing to leave (it waits for the term's proposals).
            return;
        }
        let change = match &self.h.my_change {
            Some(c) if c.term == self.term && c.height == self.h.height && c.acked == acked => {
                c.clone()
            }
            _ => TermChange::new(&key, &self.cfg.chain_id, self.term, self.h.height, acked),
        };
        self.h.my_change = Some(change.clone());
        self.h.changes.insert(change.validator, change.clone());
        self.h.change_sent_ms = self.now;
        let leader = self.term_leader();
        if Some(leader) != self.me {
            let block = acked.and_then(|a| self.h.blocks.get(&a.block_hash).cloned());
            out.push(Output::SendTermChange {
                to: vec![leader],
                change: change.clone(),
                block,
            });
        }
        let others: Vec<PublicKey> = self.others().into_iter().filter(|k| *k != leader).collect();
        if !others.is_empty() {
            out.push(Output::SendTermChange {
                to: others,
                change,
                block: None,
            });
        }
    }

    /// A validator's term change. Bounded work: one signature check per
    /// validator per higher term at the open height; a change of a lower
    /// height costs a rate-limited re-announce, of a higher height nothing
    /// (the sender re-announces to this node when it sees its changes).
    pub(super) fn on_term_change(
        &mut self,
        from: Option<PublicKey>,
        change: TermChange,
        block: Option<Block>,
        out: &mut Vec<Output>,
    ) {
        let v = change.validator;
        if !self.cfg.validators.contains(&v)
            || from.is_some_and(|f| f != v)
            || Some(v) == self.me
            || !self.is_member()
        {
            return;
        }
        if change.height < self.h.height {
            // The sender lags: the last commit lets it catch up.
            self.reannounce_to(v, out);
            return;
        }
        if change.height > self.h.height || change.term < self.term {
            return;
        }
        let known = self.h.changes.get(&v);
        if known.is_some_and(|c| c.term > change.term) {
            return;
        }
        if known != Some(&change) {
            if !change.verify(&self.cfg.chain_id) {
                return;
            }
            self.h.changes.insert(v, change.clone());
        }
        if let (Some(b), Some(a)) = (block, change.acked)
            && !self.h.blocks.contains_key(&a.block_hash)
            && b.hash() == a.block_hash
            && b.height() == self.h.height
            && self.leader_signed(&b)
            && self.h.blocks.len() < MAX_BLOCKS_PER_HEIGHT
        {
            self.h.blocks.insert(a.block_hash, b);
            // It may be the block of this height's commit, known from an
            // announce that left the block to sync: block sync skips a
            // height whose committed block is held, so commit it here or
            // nothing ever will.
            self.try_commit(out);
        }
        self.maybe_join(out);
    }

    /// Joins the highest term that validators holding enough power have
    /// moved to that the lower terms can no longer reach a quorum.
    pub(super) fn maybe_join(&mut self, out: &mut Vec<Output>) {
        if self.committing.is_some() {
            // A commit in flight ends this height first: a leader whose
            // commit is being written must not leave its term at the
            // height it commits (its own ACK is part of that quorum).
            return;
        }
        // The leader of this term left it for another validator's term (an
        // operator's hand-over, a restarted leader resigning, or a leader
        // that gave up on getting a quorum): follow it at once. Only to a
        // term it does not lead, within one turn of the schedule, and
        // without restarting the leader timeout: a leader cannot keep the
        // validators moving, nor push the terms out of reach.
        let leader = self.term_leader();
        let reach = self.term.saturating_add(self.cfg.schedule.len() as u64);
        if Some(leader) != self.me
            && let Some(c) = self.h.changes.get(&leader)
            && c.term > self.term
            && c.term < reach
            && self.cfg.schedule.leader(c.term) != leader
        {
            let (term, progress) = (c.term, self.progress_ms);
            self.enter_term(term, true, out);
            self.progress_ms = progress;
            return;
        }
        let total = self.cfg.validators.total_power();
        let mut ahead: Vec<(u64, u64)> = self
            .h
            .changes
            .values()
            .filter(|c| c.term > self.term)
            .map(|c| {
                let p = self.cfg.validators.power_of(&c.validator).unwrap_or(0);
                (c.term, p)
            })
            .collect();
        ahead.sort_by_key(|a| std::cmp::Reverse(a.0));
        let mut gone: u64 = 0;
        for (term, power) in ahead {
            gone = gone.saturating_add(power);
            if !self.cfg.quorum.reached(total.saturating_sub(gone), total) {
                self.enter_term(term, true, out);
                return;
            }
        }
    }

    /// A proposal of a later term (or of this term before it settled)
    /// comes with the credential of that term: verified, it settles the
    /// term here (joined and persisted first). Answers whether it did.
    pub(super) fn accept_credential(
        &mut self,
        term: u64,
        cred: Option<Credential>,
        out: &mut Vec<Output>,
    ) -> bool {
        let Some(cred) = cred else {
            return false;
        };
        if self.committing.is_some() {
            // Taken up when the leader re-sends it, after this commit.
            return false;
        }
        if term == 0
            || cred.term != term
            || cred.height > self.h.height
            || cred
                .verify(&self.cfg.chain_id, &self.cfg.validators, self.cfg.quorum)
                .is_err()
        {
            return false;
        }
        if term > self.term {
            self.enter_term(term, false, out);
        }
        self.cred = Some(cred);
        self.progress_ms = self.now;
        true
    }

    /// A proven commit of a later term: that term settled (its leader
    /// held a credential); this node joins it and waits for its leader's
    /// proposals, which carry the credential.
    pub(super) fn learn_term(&mut self, term: u64, out: &mut Vec<Output>) {
        if term > self.term {
            self.enter_term(term, false, out);
        }
    }

    /// The leader of this node's term takes over once it holds term
    /// changes from a quorum at its open height: it proposes first the
    /// block their newest ACK is for, unchanged (waiting for that block if
    /// it does not hold it yet), or, when none ACKed anything, a block of
    /// its own.
    pub(super) fn take_over(&mut self, out: &mut Vec<Output>) {
        if self.term == 0
            || self.settled()
            || !self.is_member()
            || self.me != Some(self.term_leader())
            || self.resigned == Some(self.term)
            || self.committing.is_some()
            || self.behind()
        {
            return;
        }
        let changes: Vec<TermChange> = self
            .h
            .changes
            .values()
            .filter(|c| c.term == self.term && c.height == self.h.height)
            .cloned()
            .collect();
        let power = changes.iter().fold(0u64, |p, c| {
            p.saturating_add(self.cfg.validators.power_of(&c.validator).unwrap_or(0))
        });
        if !self
            .cfg
            .quorum
            .reached(power, self.cfg.validators.total_power())
        {
            return;
        }
        let cred = Credential {
            term: self.term,
            height: self.h.height,
            changes,
        };
        let carried = match cred.carried() {
            Some(a) => match self.h.blocks.get(&a.block_hash) {
                Some(b) => Some(b.clone()),
                // Its holders attach it to the changes they re-send.
                None => return,
            },
            None => None,
        };
        self.cred = Some(cred);
        self.progress_ms = self.now;
        self.ld.height_open_ms = self.now;
        self.h.newest_ts = None;
        match carried {
            Some(block) => self.start_proposal(block, out),
            None => self.ld.rebuild_now = true,
        }
    }
}
