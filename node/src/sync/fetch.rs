//! Fetching block ranges: one `/kite/blk/1.0.0` range stream at a time per
//! request (from the peer the planner chose, or a peer known to have the
//! heights), proofs checked on a blocking thread, good blocks fed to the
//! engine, which verifies and commits strictly in height order.
//!
//! A transport failure (stream refused or reset, which a host does to
//! inbound streams beyond its accept buffer) is retried once and then reported with
//! no peer, so it never counts against the peer; a peer that times out,
//! sends bad data or does not have the heights it claimed is named in
//! `FetchFailed` and penalised by the planner.

use crate::context::Shared;
use crate::mailbox::EngineInbox;
use crate::outbound::exchange;
use crate::p2p::PeerId;
use crate::peers::{Note, Peers};
use kite_consensus::check::Bad;
use kite_consensus::{Input, ProofChecker};
use kite_protocols::blk;
use kite_types::{Block, CommitInfo, PublicKey};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

/// Runs the engine's range requests. Cheap to clone.
#[derive(Clone)]
pub struct Fetcher {
    shared: Arc<Shared>,
    engine: EngineInbox,
    peers: Peers,
    /// Checks the proofs of fetched ranges, with its cache of decoded keys.
    checker: Arc<ProofChecker>,
    /// Range checks running at once: one per core. (Sync's serial stage,
    /// the store's writer, is light enough to share them since it leaves
    /// the tx index for later; see [`super::index`].)
    checks: Arc<Semaphore>,
    /// Range requests running at once (`sync.window`).
    fetches: Arc<Semaphore>,
}

impl Fetcher {
    /// A fetcher with `window` requests at once.
    pub fn new(
        shared: Arc<Shared>,
        engine: EngineInbox,
        peers: Peers,
        checker: ProofChecker,
        window: usize,
    ) -> Fetcher {
        Fetcher {
            shared,
            engine,
            peers,
            checker: Arc::new(checker),
            checks: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
            fetches: Arc::new(Semaphore::new(window.max(1))),
        }
    }

    /// Fetches heights `from..=to` in a tracked task.
    pub fn request(&self, from: u64, to: u64, peer: Option<PublicKey>) {
        let f = self.clone();
        self.shared
            .stop
            .spawn(async move { f.fetch(from, to, peer).await });
    }

    async fn fetch(&self, from: u64, to: u64, peer: Option<PublicKey>) {
        let shared = &self.shared;
        let max = shared.max_block_bytes();
        let Ok(_permit) = self.fetches.clone().acquire_owned().await else {
            return;
        };
        let mut next = from;
        while next <= to {
            let count = u32::try_from(to - next + 1)
                .unwrap_or(u32::MAX)
                .min(blk::MAX_RANGE);
            let target = match peer.as_ref().and_then(crate::p2p::keys::peer_id_of) {
                Some(p) => Some(p),
                None => self.pick_peer(next),
            };
            let Some(target) = target else {
                self.fail(None, next, to).await;
                return;
            };
            let from_key = crate::p2p::keys::public_key_of(&target);
            let asked = Instant::now();
            let got = exchange(shared, target, blk::PROTOCOL, |s| {
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
            let Ok(reply) = got else {
                // Whatever the error (a refused or reset stream is no
                // misbehaviour for the host's score), the planner backs off
                // from this peer, or it would hand it the same heights
                // again at once.
                self.fail(from_key, next, to).await;
                return;
            };
            self.peers.note(Note::Height {
                peer: target,
                height: reply.best_height,
                hash: None,
            });
            if reply.blocks.is_empty() {
                // It claimed heights it cannot serve.
                self.fail(from_key, next, to).await;
                return;
            }
            let n = reply.blocks.len() as u64;
            let (good, bad) = self.check(next, reply.blocks).await;
            let got = good.len() as u64;
            shared.metrics.synced_blocks.inc_by(got);
            if got > 0 {
                next += got;
                let input = Input::RangeFetched {
                    from: from_key,
                    blocks: good,
                };
                // Backpressure: sync waits for the engine rather than
                // drop blocks.
                if self.engine.send(input).await.is_err() {
                    return;
                }
            }
            match bad {
                Some(Bad::Peer(why)) => {
                    tracing::warn!(peer = %target, %why, "block sync: a peer served a bad block");
                    shared.host.report(
                        target,
                        kite_protocols::score::INVALID,
                        "served a bad block",
                    );
                    self.fail(from_key, next, to).await;
                    return;
                }
                Some(Bad::Committed(why)) => {
                    // A quorum committed this block: the peer is honest and
                    // this node's rule is not the network's. Halt rather
                    // than refuse the chain (a fork) or ban honest peers
                    // one after another.
                    let reason = committed_but_refused(&why);
                    tracing::error!(peer = %target, %reason, "block sync: halting");
                    shared.stop.halt(reason);
                    return;
                }
                None => {}
            }
            if got < n {
                // Cannot happen (the check covers every block).
                self.fail(from_key, next, to).await;
                return;
            }
        }
    }

    /// Checks the proofs of a fetched range on a blocking thread (see
    /// [`ProofChecker::check_range`]): returns the good leading blocks and
    /// why the next one is bad, if one is. When the node is stopping or the
    /// check itself fails, returns no block and no fault (no peer is to
    /// blame).
    async fn check(
        &self,
        first: u64,
        mut blocks: Vec<(Block, CommitInfo)>,
    ) -> (Vec<(Block, CommitInfo)>, Option<Bad>) {
        // At most one check per core: more would only queue on the
        // blocking pool, holding their blocks in memory.
        let Ok(_permit) = self.checks.clone().acquire_owned().await else {
            return (Vec::new(), None);
        };
        let checker = self.checker.clone();
        crate::blocking::blocking_check("block sync proof check", move || {
            let c = checker.check_range(first, &blocks);
            blocks.truncate(c.good);
            (blocks, c.bad)
        })
        .await
        .unwrap_or_default()
    }

    async fn fail(&self, from: Option<PublicKey>, first: u64, last: u64) {
        for height in first..=last {
            if self
                .engine
                .send(Input::FetchFailed { from, height })
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// A connected peer that says it has `height`, chosen at random among
    /// them.
    fn pick_peer(&self, height: u64) -> Option<PeerId> {
        let able: Vec<PeerId> = self
            .peers
            .table()
            .borrow()
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

fn rand_index() -> usize {
    let mut b = [0u8; 8];
    rand::fill(&mut b);
    usize::from_le_bytes(b)
}
