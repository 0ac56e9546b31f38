//! The inbound side of every stream protocol: one accept loop per protocol
//! (bounded by a semaphore), and [`PeerSink`], which implements the
//! handler traits of the block, proposal, vote, term-change, discovery and
//! status protocols for one peer's stream (tx gossip's handlers live in
//! [`crate::txgossip`]).
//!
//! Handlers never block on the node: they read the store, the published
//! node state and the peer table, and hand consensus messages to the
//! engine driver with a non-blocking [`EngineInbox::feed`]. A peer whose
//! stream breaks a limit or carries forged data is reported to the host
//! with the protocol error's misbehaviour score.

use crate::config::Role;
use crate::context::Shared;
use crate::mailbox::EngineInbox;
use crate::outbound::report;
use crate::p2p::{self, PeerId, Stream};
use crate::peers::{Note, Peers};
use crate::state::StateRx;
use crate::txgossip::TxGossip;
use async_trait::async_trait;
use kite_consensus::Input;
use kite_protocols::ProtocolError;
use kite_protocols::ack::{self, VoteReceipt, VoteSink};
use kite_protocols::blk::{self, BlockQuery, BlockReply, BlockSource, RangeReply};
use kite_protocols::blkann::{self, AnnounceInfo, AnnounceSink};
use kite_protocols::blkprop::{self, ProposalInfo, ProposalSink, ResetInfo};
use kite_protocols::budget::ByteBudget;
use kite_protocols::discover::{self, PeerEntry, PeerSource};
use kite_protocols::status::{self, StatusInfo, StatusSource};
use kite_protocols::term::{self, TermSink};
use kite_protocols::{tx, txann, txpush};
use kite_types::{Block, BlockHeader, TermChange, Vote};
use std::sync::Arc;

/// What the handlers read and feed.
pub struct Handlers {
    /// The node.
    pub shared: Arc<Shared>,
    /// The engine's input queue.
    pub engine: EngineInbox,
    /// The node's state.
    pub state: StateRx,
    /// The peers task.
    pub peers: Peers,
    /// Tx gossip (None on a blocks-only node).
    pub gossip: Option<TxGossip>,
}

/// One peer's view of the node, handed to the protocol handlers.
pub struct PeerSink {
    h: Arc<Handlers>,
    peer: PeerId,
}

/// Starts one accept loop per protocol, as tracked tasks.
pub fn spawn_accept_loops(h: &Arc<Handlers>) -> Result<(), p2p::HostError> {
    let shared = &h.shared;
    let max = shared.config.p2p.max_streams_per_protocol.max(1) as usize;
    macro_rules! serve {
        ($proto:expr, |$sink:ident, $stream:ident| $body:expr) => {{
            let c = h.clone();
            let t = p2p::spawn_accept_loop(
                shared.host.as_ref(),
                $proto,
                max,
                move |peer: PeerId, $stream: Stream| {
                    let c = c.clone();
                    async move {
                        let $sink = PeerSink { h: c.clone(), peer };
                        let r: Result<(), ProtocolError> = $body.await;
                        let outcome = if r.is_ok() { "ok" } else { "error" };
                        c.shared.metrics.stream($proto, true, outcome);
                        if let Err(e) = &r {
                            report(&c.shared, peer, $proto, e);
                        }
                        r
                    }
                },
            )?;
            let stop = shared.stop.clone();
            shared.stop.spawn(async move {
                stop.cancelled().await;
                t.abort();
            });
        }};
    }
    serve!(tx::PROTOCOL, |s, st| async move {
        match &s.h.gossip {
            Some(g) => tx::serve(st, &g.peer(s.peer)).await,
            None => tx::serve(st, &NoTxs).await,
        }
    });
    serve!(txann::PROTOCOL, |s, st| async move {
        match &s.h.gossip {
            Some(g) => {
                let p = g.peer(s.peer);
                let r = txann::serve(st, &p).await;
                p.stream_ended().await;
                r
            }
            None => txann::serve(st, &NoTxs).await,
        }
    });
    serve!(txpush::PROTOCOL, |s, st| async move {
        match &s.h.gossip {
            Some(g) => txpush::serve(st, &g.peer(s.peer)).await,
            // Refused unread: the push may be megabytes this node would
            // only drop (honest nodes push to the leader only).
            None => {
                drop(st);
                Err(ProtocolError::Refused(
                    "a blocks-only node takes no pushed txs".into(),
                ))
            }
        }
    });
    serve!(blk::PROTOCOL, |s, st| blk::serve(st, &s));
    let mbb = shared.max_block_bytes();
    serve!(blkann::PROTOCOL, |s, st| blkann::serve(st, &s, mbb));
    serve!(blkprop::PROTOCOL, |s, st| blkprop::serve(st, &s, mbb));
    serve!(ack::PROTOCOL, |s, st| ack::serve(st, &s));
    serve!(term::PROTOCOL, |s, st| term::serve(st, &s, mbb));
    serve!(discover::PROTOCOL, |s, st| discover::serve(st, &s));
    serve!(status::PROTOCOL, |s, st| status::serve(st, &s));
    Ok(())
}

/// The tx protocols of a blocks-only node: no mempool, no tx gossip (it
/// wants no announced tx; pushes are refused unread).
struct NoTxs;

#[async_trait]
impl tx::TxSource for NoTxs {
    async fn get_tx(&self, _hash: &kite_types::Hash) -> Option<kite_types::Tx> {
        None
    }
}

#[async_trait]
impl txann::TxSink for NoTxs {
    async fn want(&self, hashes: &[kite_types::Hash]) -> Vec<bool> {
        vec![false; hashes.len()]
    }

    async fn receive(&self, _txs: Vec<kite_types::Tx>) {}
}

impl PeerSink {
    /// The peer's public key (a Kite peer id is its ed25519 key).
    fn peer_key(&self) -> Option<kite_types::PublicKey> {
        p2p::keys::public_key_of(&self.peer)
    }

    /// Whether this peer may cost `n` more signature checks now
    /// (`p2p.max_sig_checks_per_peer`); over its rate the input is dropped
    /// unchecked, without blame.
    fn may_check(&self, n: usize) -> bool {
        let ok = self.h.shared.sig_checks.allow(self.peer, n);
        if !ok {
            tracing::debug!(peer = %self.peer, n, "over its rate of signature checks: input dropped");
        }
        ok
    }

    /// Checks a validator's own signed message (a vote, a term change):
    /// sent by its signer's own peer, a validator, within the peer's rate of
    /// signature checks, with a good signature (checked on a blocking
    /// thread). `Err(None)`: over the rate, dropped without blame;
    /// `Err(Some(why))`: a forgery the sender is reported for.
    async fn check_own_signed(
        &self,
        signer: kite_types::PublicKey,
        verify: impl FnOnce(&str) -> bool + Send + 'static,
    ) -> Result<(), Option<&'static str>> {
        let shared = &self.h.shared;
        if self.peer_key() != Some(signer) {
            return Err(Some("it comes from another peer than its signer"));
        }
        if !shared
            .genesis
            .validators
            .iter()
            .any(|v| v.pub_key == signer)
        {
            return Err(Some("its signer is not in the validator set"));
        }
        if !self.may_check(1) {
            return Err(None);
        }
        let chain = shared.genesis.chain_id.clone();
        match crate::blocking::blocking_check("signature check", move || verify(&chain)).await {
            Some(true) => Ok(()),
            Some(false) => Err(Some("its signature does not verify")),
            None => Err(None),
        }
    }

    /// Whether this node votes (a validator with the leader or validator
    /// role): it takes proposals, resets, votes and term changes.
    fn votes(&self) -> bool {
        let shared = &self.h.shared;
        shared.config.role != Role::Sentry
            && shared
                .genesis
                .validators
                .iter()
                .any(|v| v.pub_key == shared.public)
    }

    /// Whether an announce carries the signature of the leader of its
    /// term over its hash and a commit info of that term or later that
    /// reaches the quorum for it (checked on a blocking thread; `None`
    /// when the check could not run).
    async fn verify_announce(&self, info: &AnnounceInfo) -> Option<bool> {
        let g = self.h.shared.genesis.clone();
        let schedule = self.h.shared.schedule.clone();
        let info = info.clone();
        crate::blocking::blocking_check("announce check", move || {
            schedule.signed_by_leader(&info.header, &info.hash, &info.leader_sig)
                && info.commit_info.term() >= info.header.term
                && info
                    .commit_info
                    .verify(
                        &g.chain_id,
                        info.height,
                        &info.hash,
                        &g.validator_set(),
                        g.quorum,
                    )
                    .is_ok()
        })
        .await
    }
}

#[async_trait]
impl BlockSource for PeerSink {
    fn budget(&self) -> Option<ByteBudget> {
        Some(self.h.shared.budgets.for_peer(self.peer))
    }

    async fn block(&self, query: BlockQuery) -> BlockReply {
        let store = &self.h.shared.store;
        let best_height = self.h.state.borrow().height;
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
        let best_height = self.h.state.borrow().height;
        let blocks = self
            .h
            .shared
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
            let s = self.h.state.borrow();
            (s.height, s.proposal == Some(info.hash))
        };
        self.h.peers.note(Note::Height {
            peer: self.peer,
            height: info.height,
            hash: Some(info.hash),
        });
        if info.height <= height {
            return false;
        }
        // Checked before anything is wanted or queued (PROTOCOL.md 5.4): a
        // peer without the keys cannot make this node buffer a block or
        // spend the engine's time; the forger is reported. The checks
        // count against the peer's rate first.
        if !self.may_check(1 + info.commit_info.votes.len()) {
            return false;
        }
        let Some(valid) = self.verify_announce(info).await else {
            return false;
        };
        if !valid {
            self.h.shared.host.report(
                self.peer,
                kite_protocols::score::INVALID,
                "blkann: forged leader signature or commit info",
            );
            return false;
        }
        // Let the engine see the announce: it commits a staged block,
        // or starts block sync when the announce is ahead of it.
        self.h.engine.feed_from(
            self.peer,
            Input::CommitAnnounced {
                from: self.peer_key(),
                header: info.header.clone(),
                leader_sig: info.leader_sig,
                commit_info: info.commit_info.clone(),
            },
        );
        // Fetch the block only when it is the next one and this node did
        // not execute it as a proposal.
        info.height == height + 1 && !staged
    }

    async fn receive(&self, info: AnnounceInfo, block: kite_types::Block) {
        self.h.engine.feed_from(
            self.peer,
            Input::BlockFetched {
                from: self.peer_key(),
                block,
                commit_info: info.commit_info,
            },
        );
    }
}

#[async_trait]
impl ProposalSink for PeerSink {
    async fn check(&self, p: &ProposalInfo) -> bool {
        let shared = &self.h.shared;
        if !self.votes() {
            // Sentries and archives take no proposal.
            return false;
        }
        let (height, term, settled) = {
            let s = self.h.state.borrow();
            (s.height, s.term, s.term_settled)
        };
        // The engine reads a credential only for a term it is not settled
        // in yet; in its settled term the credential is ignored unchecked
        // (it was verified once, when the term settled here).
        let cred = p
            .credential
            .as_ref()
            .filter(|_| p.term > term || (p.term == term && !settled));
        // Cheap filter before the block is sent: the next height (or the
        // one after: the leader proposes as soon as it commits, often
        // before this node has committed the same block from its announce;
        // the engine keeps such a proposal until then), not of a term this
        // node left, signed by the leader of the block's term. A credential
        // (of a term not settled here) is checked here too, so a forged one
        // costs its sender and not the engine. The engine checks everything
        // again.
        let checks = 1 + cred.map_or(0, |c| c.changes.len());
        if !((p.height == height + 1 || p.height == height + 2)
            && p.term >= term
            && self.may_check(checks))
        {
            return false;
        }
        if !shared
            .schedule
            .signed_by_leader(&p.header, &p.hash, &p.leader_sig)
        {
            // The leader of a term signs its proposals: anything else is
            // forged, and its sender pays for it.
            shared.host.report(
                self.peer,
                kite_protocols::score::INVALID,
                "blkprop: proposal not signed by its term's leader",
            );
            return false;
        }
        let Some(cred) = cred.cloned() else {
            return true;
        };
        let g = shared.genesis.clone();
        let Some(valid) = crate::blocking::blocking_check("credential check", move || {
            cred.verify(&g.chain_id, &g.validator_set(), g.quorum)
                .is_ok()
        })
        .await
        else {
            return false;
        };
        if !valid {
            shared.host.report(
                self.peer,
                kite_protocols::score::INVALID,
                "blkprop: forged credential",
            );
        }
        valid
    }

    async fn receive(&self, p: ProposalInfo, block: kite_types::Block) {
        if let Some(from) = self.peer_key() {
            self.h.engine.feed_from(
                self.peer,
                Input::ProposalReceived {
                    from,
                    block,
                    term: p.term,
                    credential: p.credential,
                },
            );
        }
    }

    async fn reset(&self, r: ResetInfo) -> VoteReceipt {
        let shared = &self.h.shared;
        if !self.votes() {
            return VoteReceipt::refused("this node does not vote");
        }
        if !self.may_check(1) {
            return VoteReceipt::refused("busy: too many signature checks from this peer");
        }
        // Only the leader of the reset's term resets its proposals; a
        // forgery costs the sender (checked here, off the engine's task).
        let (info, chain, leader) = (
            r.clone(),
            shared.genesis.chain_id.clone(),
            shared.schedule.leader(r.term),
        );
        let Some(valid) =
            crate::blocking::blocking_check("reset check", move || info.verify(&chain, &leader))
                .await
        else {
            return VoteReceipt::refused("busy: the signature check could not run");
        };
        if !valid {
            shared.host.report(
                self.peer,
                kite_protocols::score::INVALID,
                "blkprop: reset not signed by the leader of its term",
            );
            return VoteReceipt::refused("the reset is not signed by the leader of its term");
        }
        self.h.engine.feed_from(
            self.peer,
            Input::ResetReceived {
                term: r.term,
                height: r.height,
                block_hash: r.block_hash,
                leader_sig: r.leader_sig,
            },
        );
        VoteReceipt::accepted()
    }
}

#[async_trait]
impl VoteSink for PeerSink {
    async fn vote(&self, vote: Vote, best_header: Option<BlockHeader>) -> VoteReceipt {
        if !self.votes() {
            return VoteReceipt::refused("this node is not a validator");
        }
        // Validators send their own votes: the sender's key is what the
        // engine checks the voter against. A vote that is not the sender's
        // own, from a peer outside the validator set, or with a bad
        // signature costs the sender (checked here, off the engine's task).
        let shared = &self.h.shared;
        let from = self.peer_key();
        let v = vote.clone();
        let why = match self
            .check_own_signed(vote.validator, move |c| v.verify(c))
            .await
        {
            Ok(()) => None,
            Err(None) => {
                return VoteReceipt::refused("busy: too many signature checks from this peer");
            }
            Err(Some(why)) => Some(why),
        };
        if let Some(why) = why {
            shared.host.report(
                self.peer,
                kite_protocols::score::INVALID,
                &format!("ack: {why}"),
            );
            return VoteReceipt::refused(why);
        }
        self.h.engine.feed_from(
            self.peer,
            Input::VoteReceived {
                from,
                vote,
                best_header,
            },
        );
        VoteReceipt::accepted()
    }
}

#[async_trait]
impl TermSink for PeerSink {
    async fn want_block(&self, change: &TermChange) -> bool {
        // Only the leader of the new term proposes the ACKed block again,
        // and only a validator's own change may bring it one (the block is
        // checked against the change and its leader's signature; a forged
        // change is reported once it is read).
        self.votes()
            && self.h.shared.schedule.leader(change.term) == self.h.shared.public
            && self.peer_key() == Some(change.validator)
    }

    async fn receive(&self, change: TermChange, block: Option<Block>) {
        if !self.votes() {
            return;
        }
        // Validators send their own changes; one from another peer, from
        // outside the validator set or with a bad signature costs the
        // sender (checked here, off the engine's task).
        let shared = &self.h.shared;
        let from = self.peer_key();
        let c = change.clone();
        let why = match self
            .check_own_signed(change.validator, move |ch| c.verify(ch))
            .await
        {
            Ok(()) => None,
            Err(None) => return,
            Err(Some(why)) => Some(why),
        };
        if let Some(why) = why {
            shared.host.report(
                self.peer,
                kite_protocols::score::INVALID,
                &format!("term: {why}"),
            );
            return;
        }
        self.h.engine.feed_from(
            self.peer,
            Input::TermChangeReceived {
                from,
                change,
                block,
            },
        );
    }
}

#[async_trait]
impl PeerSource for PeerSink {
    async fn peers(&self, max: usize) -> Vec<PeerEntry> {
        let shared = &self.h.shared;
        let allow = shared.config.p2p.allow_private_addrs;
        shared
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
        let s = self.h.state.borrow().clone();
        crate::peers::status::info(&self.h.shared, &s)
    }
}
