//! Is this node on the network's chain? Two mistakes leave a node on a
//! chain of its own, and both stop it with a clear error instead of
//! letting it sit there, connected to nobody useful, for ever:
//!
//! - **Another genesis** (a wrong `genesis.json`, or another chain id).
//! - **A store the network does not hold** (a home left from another run
//!   of a chain with the same genesis): a peer proves, with a block the
//!   genesis leader signed and a commit info that reaches the quorum, that
//!   the network committed another block at a height this node holds.
//!
//! Who is "the network"? For another genesis, the peers the operator told
//! the node to join: those named with their peer id in `p2p.peers`. The
//! node stops when a majority of them disagree with it and no peer has
//! agreed with it; a stranger of another genesis is dropped and banned.
//!
//! Another commit at a height this node holds is different: it is proof
//! (leader signature, quorum commit) that the keys signed two blocks at one
//! height, whoever shows it, so the node always stops. When a majority of
//! its `p2p.peers` proved it, the message says this node's store is the
//! odd one out; otherwise it says it cannot tell which store is. Blocks the
//! network commits above this node's tip are checked against its chain by
//! block sync, which stops the node the same way when they do not extend
//! it.

use crate::p2p::PeerId;
use crate::stop::Stopper;
use kite_types::Hash;
use std::collections::{BTreeMap, HashSet};
use tokio::sync::mpsc;

/// Capacity of the chain check's mailbox.
pub const FINDINGS: usize = 256;

/// What a peer showed of its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// It runs this node's genesis.
    SameGenesis(PeerId),
    /// It runs another genesis (`what` says which).
    OtherGenesis {
        /// The peer.
        peer: PeerId,
        /// What it runs, for the message.
        what: String,
    },
    /// It holds this node's block at a height this node holds.
    SameBlock(PeerId),
    /// It proved another commit at a height this node holds (`vote` from
    /// [`fork_vote`]).
    OtherBlock {
        /// The peer.
        peer: PeerId,
        /// What it proved.
        vote: String,
    },
}

/// The owner of both questions' votes: judges each finding, and says why
/// the node must stop when it must.
#[derive(Debug)]
pub struct Judge {
    genesis: ChainVotes,
    forks: ChainVotes,
}

impl Judge {
    /// A judge over the peers of `p2p.peers` (their ids).
    pub fn new(bootstrap: Vec<PeerId>) -> Judge {
        Judge {
            genesis: ChainVotes::new(bootstrap.iter().copied()),
            forks: ChainVotes::new(bootstrap),
        }
    }

    /// Takes a finding into account; returns why the node stops, if it
    /// must.
    pub fn judge(&mut self, finding: Finding) -> Option<String> {
        match finding {
            Finding::SameGenesis(peer) => {
                self.genesis.agree(peer);
                None
            }
            Finding::OtherGenesis { peer, what } => self
                .genesis
                .disagree(peer, what)
                .map(|case| genesis_message(&case)),
            Finding::SameBlock(peer) => {
                self.forks.agree(peer);
                None
            }
            // Two valid commits at one height: this node never keeps
            // running on one of them. When most of its p2p.peers proved
            // the other, its store is the odd one out; else it cannot tell.
            Finding::OtherBlock { peer, vote } => {
                Some(match self.forks.disagree(peer, vote.clone()) {
                    Some(case) => fork_message(&case),
                    None => conflict_message(&peer, &vote),
                })
            }
        }
    }
}

/// Reports findings to the chain check task.
#[derive(Clone, Debug)]
pub struct ChainCheck {
    tx: mpsc::Sender<Finding>,
}

impl ChainCheck {
    /// A mailbox of [`FINDINGS`].
    pub fn new() -> (ChainCheck, mpsc::Receiver<Finding>) {
        let (tx, rx) = mpsc::channel(FINDINGS);
        (ChainCheck { tx }, rx)
    }

    /// Reports a finding (waits for room: a finding that stops the node
    /// must not be lost).
    pub async fn tell(&self, finding: Finding) {
        let _ = self.tx.send(finding).await;
    }
}

/// The chain check task: judges findings until the node stops, and stops
/// it when a judgement says so.
pub async fn run(stop: Stopper, mut judge: Judge, mut findings: mpsc::Receiver<Finding>) {
    loop {
        // Findings first: one that was sent before a stop still counts
        // (a node that proved two commits exits halted, not cleanly).
        let finding = tokio::select! {
            biased;
            f = findings.recv() => match f { Some(f) => f, None => return },
            _ = stop.cancelled() => return,
        };
        if let Some(why) = judge.judge(finding) {
            tracing::error!(%why, "this node is not on its network's chain; it stops");
            stop.halt(why);
            return;
        }
    }
}

/// What the peers named in `p2p.peers` (bootstrap peers) said on one
/// question (their genesis, or their blocks at heights this node holds),
/// and whether any peer agreed with this node. Pure bookkeeping: the
/// caller stops the node.
#[derive(Debug, Default)]
pub struct ChainVotes {
    /// Peer ids from `p2p.peers`.
    bootstrap: HashSet<PeerId>,
    /// Bootstrap peers that disagree, with what they hold.
    others: BTreeMap<PeerId, String>,
    /// Some peer agreed with this node.
    agreed: bool,
}

impl ChainVotes {
    /// Votes over these bootstrap peers (the ids of `p2p.peers`).
    pub fn new(bootstrap: impl IntoIterator<Item = PeerId>) -> ChainVotes {
        ChainVotes {
            bootstrap: bootstrap.into_iter().collect(),
            ..ChainVotes::default()
        }
    }

    /// Whether `peer` is one of `p2p.peers`.
    pub fn is_bootstrap(&self, peer: &PeerId) -> bool {
        self.bootstrap.contains(peer)
    }

    /// `peer` agrees with this node: from now on the node never stops on
    /// this question (some network shares its chain).
    pub fn agree(&mut self, peer: PeerId) {
        self.agreed = true;
        self.others.remove(&peer);
    }

    /// `peer` disagrees (`what` says how). Once a majority of the
    /// bootstrap peers disagree and no peer agreed, returns the case for
    /// stopping, as "N of the M peers in p2p.peers (PEER WHAT; ...)".
    pub fn disagree(&mut self, peer: PeerId, what: String) -> Option<String> {
        if !self.bootstrap.contains(&peer) {
            return None;
        }
        self.others.insert(peer, what);
        let (n, of) = (self.others.len(), self.bootstrap.len());
        if self.agreed || n <= of / 2 {
            return None;
        }
        let listed: Vec<String> = self
            .others
            .iter()
            .map(|(p, w)| format!("{p} {w}"))
            .collect();
        Some(format!(
            "{n} of the {of} peers in p2p.peers ({})",
            listed.join("; ")
        ))
    }
}

/// Why a node stops whose bootstrap peers run another genesis (`case`
/// from [`ChainVotes::disagree`]).
pub fn genesis_message(case: &str) -> String {
    format!(
        "genesis mismatch: {case} run another chain and no peer runs this node's; every node of a \
         chain needs the same genesis.json: check this node's (and its store, which was made \
         from it)"
    )
}

/// What a peer proved that conflicts with this node's store: the network
/// committed `theirs` at `height`, where this node holds `ours`.
pub fn fork_vote(height: u64, ours: &Hash, theirs: &Hash) -> String {
    format!("proved block {theirs} at height {height}, where this node holds {ours}")
}

/// Why a node stops when `peer` proved another commit at a height it holds
/// (`vote` from [`fork_vote`]), short of a majority of its `p2p.peers`.
pub fn conflict_message(peer: &PeerId, vote: &str) -> String {
    format!(
        "two valid commits at one height: peer {peer} {vote}, each signed by the genesis leader \
         with a quorum commit. Either one of the two stores is from another run of this chain \
         (same genesis and keys): start that node from a fresh home (or move its data/ away) to \
         sync the network's chain; or the leader's and a quorum of validators' keys signed two \
         blocks at one height: stop the network and investigate the keys. This node stops rather \
         than pick one"
    )
}

/// Why a node stops whose bootstrap peers proved other blocks at heights
/// it holds (`case` from [`ChainVotes::disagree`] over [`fork_vote`]s).
pub fn fork_message(case: &str) -> String {
    format!(
        "this node's store is not the network's chain: {case}, each with the genesis leader's \
         signature and a quorum commit; the store is from another run of this chain. Start this \
         node from a fresh home (or move its data/ away) to sync the network's chain"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn a_majority_of_bootstrap_peers_disagreeing_is_a_case() {
        let p = peers(3);
        let mut c = ChainVotes::new(p.clone());
        assert_eq!(c.disagree(p[0], "runs genesis aa".into()), None, "1 of 3");
        let case = c.disagree(p[1], "runs chain x".into()).expect("2 of 3");
        assert!(
            case.starts_with("2 of the 3 peers in p2p.peers ("),
            "{case}"
        );
        assert!(
            case.contains("genesis aa") && case.contains("chain x"),
            "{case}"
        );
        assert!(case.contains(&format!("{} runs chain x", p[1])), "{case}");
    }

    #[test]
    fn one_bootstrap_peer_is_a_majority_of_one() {
        let p = peers(1);
        let mut c = ChainVotes::new(p.clone());
        assert!(c.disagree(p[0], "runs genesis aa".into()).is_some());
    }

    #[test]
    fn half_is_not_a_majority() {
        let p = peers(4);
        let mut c = ChainVotes::new(p.clone());
        assert_eq!(c.disagree(p[0], "a".into()), None);
        assert_eq!(c.disagree(p[1], "b".into()), None);
        // The same peer twice counts once.
        assert_eq!(c.disagree(p[1], "b".into()), None);
        assert!(c.disagree(p[2], "c".into()).is_some(), "3 of 4");
    }

    #[test]
    fn a_peer_that_agreed_means_never_a_case() {
        let p = peers(3);
        let mut c = ChainVotes::new(p.clone());
        c.agree(PeerId::random());
        for q in &p {
            assert_eq!(c.disagree(*q, "runs genesis aa".into()), None);
        }
    }

    #[test]
    fn strangers_outside_p2p_peers_do_not_count() {
        let p = peers(1);
        let mut c = ChainVotes::new(p.clone());
        assert!(c.is_bootstrap(&p[0]));
        for _ in 0..10 {
            let stranger = PeerId::random();
            assert!(!c.is_bootstrap(&stranger));
            assert_eq!(c.disagree(stranger, "runs genesis aa".into()), None);
        }
        // A node with no bootstrap peers (the one others dial) never stops.
        let mut lone = ChainVotes::new([]);
        assert_eq!(
            lone.disagree(PeerId::random(), "runs genesis aa".into()),
            None
        );
    }

    #[test]
    fn the_judge_halts_on_any_other_commit_and_on_a_genesis_majority() {
        let p = peers(2);
        let mut j = Judge::new(p.clone());
        let other = |peer| Finding::OtherGenesis {
            peer,
            what: "runs genesis aa".into(),
        };
        assert_eq!(j.judge(other(p[0])), None, "1 of 2 is not a majority");
        let why = j.judge(other(p[1])).expect("2 of 2");
        assert!(why.starts_with("genesis mismatch"), "{why}");
        // Another commit stops the node even when a stranger proves it.
        let vote = fork_vote(3, &Hash::digest(b"a"), &Hash::digest(b"b"));
        let mut j = Judge::new(p.clone());
        assert_eq!(j.judge(Finding::SameBlock(p[0])), None);
        let why = j
            .judge(Finding::OtherBlock {
                peer: PeerId::random(),
                vote: vote.clone(),
            })
            .expect("two commits at one height");
        assert!(why.starts_with("two valid commits"), "{why}");
        // A majority of p2p.peers proving it says the store is the odd one.
        let mut j = Judge::new(vec![p[0]]);
        let why = j
            .judge(Finding::OtherBlock { peer: p[0], vote })
            .expect("1 of 1");
        assert!(why.contains("store is not the network's chain"), "{why}");
    }

    #[test]
    fn messages_are_one_line_and_say_what_to_do() {
        let (a, b) = (Hash::digest(b"a"), Hash::digest(b"b"));
        let vote = fork_vote(7, &a, &b);
        assert!(vote.contains(&format!("block {b} at height 7")), "{vote}");
        assert!(vote.contains(&format!("holds {a}")), "{vote}");
        let p = peers(1);
        let mut c = ChainVotes::new(p.clone());
        let case = c.disagree(p[0], vote.clone()).expect("1 of 1");
        for m in [fork_message(&case), genesis_message(&case)] {
            assert!(!m.contains("  ") && !m.contains('\n'), "one line: {m}");
            assert!(m.contains(&case), "{m}");
        }
        let m = conflict_message(&p[0], &vote);
        assert!(!m.contains("  ") && !m.contains('\n'), "one line: {m}");
        assert!(
            m.contains(&vote) && m.contains("fresh home") && m.contains("stops"),
            "{m}"
        );
        assert!(fork_message(&case).contains("fresh home"));
        assert!(genesis_message(&case).contains("genesis.json"));
    }
}
