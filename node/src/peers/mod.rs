//! The peers task: the one owner of the node's peer table ([`table`]).
//!
//! It follows the host's events (a peer connects, identifies, leaves, runs
//! another chain), takes notes from other tasks through its bounded
//! mailbox ([`Peers::note`]: a status answer, a height seen in an
//! announce or a sync reply, a proof), publishes the table through a
//! `watch` channel, and runs the periodic exchanges that keep it fresh:
//! status polling ([`status`]) and peer exchange ([`pex`]).

pub mod pex;
pub mod status;
pub mod table;

use crate::chaincheck::{ChainCheck, Finding};
use crate::context::{Shared, to_i64};
use crate::mailbox::EngineInbox;
use crate::p2p::{HostEvent, HostEvents, PeerId};
use crate::state::StateRx;
use kite_types::Hash;
use std::sync::Arc;
use std::time::Duration;
use table::{PeerState, PeerTable};
use tokio::sync::{mpsc, watch};

/// How often connected peers are asked for their status.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(2);
/// How often peers are asked for more peers.
pub const PEX_INTERVAL: Duration = Duration::from_secs(30);
/// Capacity of the peers task's mailbox.
pub const NOTES: usize = 1024;

pub use crate::p2p::OTHER_CHAIN_GRACE;

/// What other tasks tell the peers task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A status answer that counts (same chain, proven height).
    Status {
        /// The peer.
        peer: PeerId,
        /// Its best height.
        height: u64,
        /// Its best hash.
        hash: Hash,
        /// Whether it runs blocks-only.
        blocks_only: bool,
    },
    /// The peer showed it has `height` (an announce, a sync reply): its
    /// height only goes up.
    Height {
        /// The peer.
        peer: PeerId,
        /// The height.
        height: u64,
        /// The block hash there, when known.
        hash: Option<Hash>,
    },
    /// The peer served a valid commit at `height`.
    Proven {
        /// The peer.
        peer: PeerId,
        /// The height.
        height: u64,
    },
    /// The peer claimed a height it did not prove: its claims above this
    /// node's height are not checked again before `until`.
    Unproven {
        /// The peer.
        peer: PeerId,
        /// Until when.
        until: tokio::time::Instant,
    },
    /// The peer served the block this node holds at some height.
    Linked(PeerId),
    /// Forget the peer (it runs another chain; the host bans it later).
    Forget(PeerId),
}

/// Reaches the peers task and reads its table.
#[derive(Clone, Debug)]
pub struct Peers {
    notes: mpsc::Sender<Note>,
    table: watch::Receiver<PeerTable>,
}

impl Peers {
    /// A mailbox and a table, for [`run`].
    pub fn new() -> (Peers, mpsc::Receiver<Note>, watch::Sender<PeerTable>) {
        let (notes, rx) = mpsc::channel(NOTES);
        let (table_tx, table) = watch::channel(PeerTable::new());
        (Peers { notes, table }, rx, table_tx)
    }

    /// Tells the peers task something without waiting (for handlers); when
    /// its mailbox is full the note is dropped (heights are refreshed by
    /// the next status poll).
    pub fn note(&self, note: Note) {
        let _ = self.notes.try_send(note);
    }

    /// Tells the peers task something, waiting for room: for what must
    /// not be lost (a status that counts, a proof, forgetting a peer).
    pub async fn tell(&self, note: Note) {
        let _ = self.notes.send(note).await;
    }

    /// The table, as the peers task last published it.
    pub fn table(&self) -> watch::Receiver<PeerTable> {
        self.table.clone()
    }

    /// Connected peers, except `but`.
    pub fn ids(&self, but: Option<PeerId>) -> Vec<PeerId> {
        self.table
            .borrow()
            .keys()
            .filter(|p| Some(**p) != but)
            .copied()
            .collect()
    }

    /// One connected peer's state.
    pub fn get(&self, peer: &PeerId) -> Option<PeerState> {
        self.table.borrow().get(peer).cloned()
    }

    /// How many peers are connected.
    pub fn len(&self) -> usize {
        self.table.borrow().len()
    }

    /// Whether no peer is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the status and peer-exchange tasks need.
pub struct Ctx {
    /// The node.
    pub shared: Arc<Shared>,
    /// The peers task itself (notes, table).
    pub peers: Peers,
    /// Findings about the chain go there.
    pub chain: ChainCheck,
    /// The node's state.
    pub state: StateRx,
    /// Proven statuses go to the engine.
    pub engine: EngineInbox,
}

fn apply(table: &mut PeerTable, note: Note) {
    match note {
        Note::Status {
            peer,
            height,
            hash,
            blocks_only,
        } => {
            if let Some(p) = table.get_mut(&peer) {
                p.height = Some(height);
                p.hash = Some(hash);
                p.blocks_only = blocks_only;
            }
        }
        Note::Height { peer, height, hash } => {
            if let Some(p) = table.get_mut(&peer)
                && p.height.is_none_or(|h| h < height)
            {
                p.height = Some(height);
                if hash.is_some() {
                    p.hash = hash;
                }
            }
        }
        Note::Proven { peer, height } => {
            if let Some(p) = table.get_mut(&peer) {
                p.proven = p.proven.max(height);
            }
        }
        Note::Unproven { peer, until } => {
            if let Some(p) = table.get_mut(&peer) {
                p.unproven_until = Some(until);
            }
        }
        Note::Linked(peer) => {
            if let Some(p) = table.get_mut(&peer) {
                p.linked = true;
            }
        }
        Note::Forget(peer) => {
            table.remove(&peer);
        }
    }
}

/// Runs the peers task until the node stops.
pub async fn run(
    ctx: Arc<Ctx>,
    mut events: HostEvents,
    mut notes: mpsc::Receiver<Note>,
    table: watch::Sender<PeerTable>,
) {
    let shared = &ctx.shared;
    let mut poll = tokio::time::interval(STATUS_INTERVAL);
    let mut pex = tokio::time::interval(PEX_INTERVAL);
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            ev = events.recv() => match ev {
                Some(ev) => on_event(&ctx, &table, ev).await,
                None => return,
            },
            Some(note) = notes.recv() => {
                table.send_modify(|t| apply(t, note));
            }
            _ = poll.tick() => {
                for peer in ctx.peers.ids(None) {
                    let c = ctx.clone();
                    shared.stop.spawn(async move { status::ask(&c, peer).await });
                }
            }
            _ = pex.tick(), if shared.config.p2p.pex => {
                let c = ctx.clone();
                shared.stop.spawn(async move { pex::round(&c).await });
            }
        }
        shared
            .metrics
            .peers
            .set(to_i64(table.borrow().len() as u64));
    }
}

async fn on_event(ctx: &Arc<Ctx>, table: &watch::Sender<PeerTable>, ev: HostEvent) {
    let stop = &ctx.shared.stop;
    match ev {
        HostEvent::PeerConnected { peer, .. } => {
            table.send_modify(|t| {
                t.entry(peer).or_default();
            });
            let c = ctx.clone();
            stop.spawn(async move { status::ask(&c, peer).await });
        }
        HostEvent::PeerDisconnected { peer } => {
            table.send_modify(|t| {
                t.remove(&peer);
            });
        }
        HostEvent::OtherChain {
            peer,
            protocol_version,
        } => {
            ctx.chain
                .tell(Finding::OtherGenesis {
                    peer,
                    what: format!("identify protocol {protocol_version:?}"),
                })
                .await;
        }
        HostEvent::PeerIdentified {
            peer, listen_addrs, ..
        } => {
            table.send_modify(|t| {
                if let Some(p) = t.get_mut(&peer) {
                    p.listen_addrs = listen_addrs;
                }
            });
            if ctx.shared.config.p2p.pex {
                let c = ctx.clone();
                stop.spawn(async move { pex::ask(&c, peer).await });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_only_touch_connected_peers_and_heights_only_go_up() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut t = PeerTable::new();
        t.insert(a, PeerState::default());
        let h = Hash::digest(b"x");
        apply(
            &mut t,
            Note::Height {
                peer: a,
                height: 9,
                hash: Some(h),
            },
        );
        apply(
            &mut t,
            Note::Height {
                peer: a,
                height: 4,
                hash: None,
            },
        );
        apply(
            &mut t,
            Note::Height {
                peer: b,
                height: 4,
                hash: None,
            },
        );
        assert_eq!(t[&a].height, Some(9));
        assert_eq!(t[&a].hash, Some(h));
        assert!(!t.contains_key(&b), "a note never adds a peer");
        apply(&mut t, Note::Proven { peer: a, height: 7 });
        apply(&mut t, Note::Proven { peer: a, height: 3 });
        apply(&mut t, Note::Linked(a));
        assert_eq!(t[&a].proven, 7);
        assert!(t[&a].linked);
        apply(&mut t, Note::Forget(a));
        assert!(t.is_empty());
    }
}
