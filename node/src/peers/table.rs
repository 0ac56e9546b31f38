//! The node's peer table: what this node knows of each connected peer's
//! chain. Written only by the peers task ([`super::run`]); everyone else
//! reads the snapshot it publishes ([`super::Peers::table`]).

use crate::p2p::{Multiaddr, PeerId};
use kite_types::Hash;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Most exchanges this node runs toward one peer at once (proposals,
/// votes, announces, status asks, sync ranges); beyond it, a send is
/// dropped (and counted in `kite_outbound_dropped_total`): every such
/// message is re-sent or re-derived later.
pub const MAX_OUTBOUND_PER_PEER: usize = 64;

/// What is known of a connected peer.
#[derive(Debug, Clone)]
pub struct PeerState {
    /// Best height it reported.
    pub height: Option<u64>,
    /// Its best hash.
    pub hash: Option<Hash>,
    /// Whether it runs blocks-only.
    pub blocks_only: bool,
    /// Highest height it proved it holds (served that block with a valid
    /// commit); its status claims up to there are believed as they come.
    pub proven: u64,
    /// It served the block this node holds at some height: it is on this
    /// node's chain.
    pub linked: bool,
    /// It claimed a height it did not prove: its claims above this node's
    /// height are ignored (not fetched) until then.
    pub unproven_until: Option<tokio::time::Instant>,
    /// The addresses it listens on, as it said in identify.
    pub listen_addrs: Vec<Multiaddr>,
    /// Outbound exchanges toward it ([`MAX_OUTBOUND_PER_PEER`]).
    pub outbound: Arc<Semaphore>,
}

impl Default for PeerState {
    fn default() -> PeerState {
        PeerState {
            height: None,
            hash: None,
            blocks_only: false,
            proven: 0,
            linked: false,
            unproven_until: None,
            listen_addrs: Vec::new(),
            outbound: Arc::new(Semaphore::new(MAX_OUTBOUND_PER_PEER)),
        }
    }
}

/// Connected peers by id.
pub type PeerTable = HashMap<PeerId, PeerState>;
