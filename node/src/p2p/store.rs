//! The peer store: peers the node knows, their addresses, how dialing them
//! went and whether they are banned; persisted as JSON in the node's home.
//!
//! The store is bounded ([`MAX_PEERS`] peers, [`MAX_ADDRS_PER_PEER`]
//! addresses each). A full store evicts its least useful entry (never
//! connected or failing, oldest first) and refuses a newcomer rather than
//! evict a peer that is known good. Failing peers get an exponential dial
//! backoff. Time is passed in as unix milliseconds so the logic is testable;
//! the file is written to a temporary name and renamed, so a crash never
//! leaves half a file. A file that cannot be read or parsed is logged and
//! ignored: the store starts empty rather than stop the node.

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most peers kept.
pub const MAX_PEERS: usize = 1000;
/// Most addresses kept per peer.
pub const MAX_ADDRS_PER_PEER: usize = 8;
/// Largest peer store file read.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Version written in the file.
const FILE_VERSION: u32 = 1;

/// What the store knows about one peer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerRecord {
    /// Dialable addresses, without `/p2p/<id>`; most recent first.
    pub addrs: Vec<Multiaddr>,
    /// Last time a connection with the peer was up (unix ms, 0 = never).
    pub last_seen_ms: u64,
    /// Consecutive failed dials.
    pub failures: u32,
    /// Do not dial before this time (unix ms).
    pub next_dial_ms: u64,
    /// Banned until this time (unix ms, 0 = not banned).
    pub banned_until_ms: u64,
    /// Configured peer (bootstrap): never evicted. Not persisted.
    pub persistent: bool,
}

/// A peer not connected for this long (unix ms) is no longer "good": it
/// can be evicted, and it ranks after the peers seen since.
pub const STALE_MS: u64 = 7 * 24 * 3600 * 1000;

/// Most peers of one network group (/16, /32 or DNS name, see
/// [`super::addr::netgroup`]) in the first picks of a ranking: a peer
/// exchange answer or a round of dials reaches other groups before a
/// second pair from the same one.
pub const PER_GROUP_FIRST: usize = 2;

impl PeerRecord {
    /// Connected recently (by this node's own dial), no failure since.
    fn is_good(&self, now_ms: u64) -> bool {
        self.last_seen_ms > 0
            && self.failures == 0
            && now_ms.saturating_sub(self.last_seen_ms) < STALE_MS
    }
}

/// The first `max` of `ranked` (best first), taking at most
/// [`PER_GROUP_FIRST`] peers of a network group before every group had its
/// turn: a group full of sybils cannot push the other groups out.
fn spread(ranked: Vec<(PeerId, Vec<Multiaddr>)>, max: usize) -> Vec<(PeerId, Vec<Multiaddr>)> {
    let mut taken: HashMap<String, usize> = HashMap::new();
    let (mut first, mut later) = (Vec::new(), Vec::new());
    for (id, addrs) in ranked {
        let group = addrs.first().map(super::addr::netgroup).unwrap_or_default();
        let n = taken.entry(group).or_default();
        *n += 1;
        if *n <= PER_GROUP_FIRST {
            first.push((id, addrs));
        } else {
            later.push((id, addrs));
        }
    }
    first.extend(later);
    first.truncate(max);
    first
}

/// Errors reading or writing the peer store file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be read or written.
    #[error("peer store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is too large to be a peer store.
    #[error("peer store {path} is {size} bytes, more than the {max} allowed; delete it")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The file is not a peer store.
    #[error("peer store {path} is not valid JSON of version {FILE_VERSION}: {detail}; delete it")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

#[derive(Serialize, Deserialize)]
struct FileRepr {
    version: u32,
    peers: Vec<FilePeer>,
}

#[derive(Serialize, Deserialize)]
struct FilePeer {
    id: String,
    #[serde(default)]
    addrs: Vec<String>,
    #[serde(default)]
    last_seen_ms: u64,
    #[serde(default)]
    failures: u32,
    #[serde(default)]
    next_dial_ms: u64,
    #[serde(default)]
    banned_until_ms: u64,
}

/// The current time in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The bounded set of known peers.
#[derive(Debug, Clone)]
pub struct PeerStore {
    peers: HashMap<PeerId, PeerRecord>,
    capacity: usize,
    backoff_base: Duration,
    backoff_max: Duration,
    dirty: bool,
}

impl PeerStore {
    /// An empty store holding at most `capacity` peers (capped at
    /// [`MAX_PEERS`]), with a dial backoff starting at `backoff_base` and
    /// doubling up to `backoff_max`.
    pub fn new(capacity: usize, backoff_base: Duration, backoff_max: Duration) -> PeerStore {
        PeerStore {
            peers: HashMap::new(),
            capacity: capacity.clamp(1, MAX_PEERS),
            backoff_base,
            backoff_max,
            dirty: false,
        }
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The record of a peer.
    pub fn get(&self, peer: &PeerId) -> Option<&PeerRecord> {
        self.peers.get(peer)
    }

    /// Whether something changed since the last [`PeerStore::mark_saved`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Records that the current content was saved.
    pub fn mark_saved(&mut self) {
        self.dirty = false;
    }

    /// The record of `peer`, inserted when missing and room can be made.
    fn entry(&mut self, peer: PeerId) -> Option<&mut PeerRecord> {
        if !self.peers.contains_key(&peer) {
            if self.peers.len() >= self.capacity && !self.evict_one() {
                return None;
            }
            self.peers.insert(peer, PeerRecord::default());
        }
        self.dirty = true;
        self.peers.get_mut(&peer)
    }

    /// Drops the least useful entry; false when every entry is worth keeping.
    fn evict_one(&mut self) -> bool {
        let now = now_ms();
        let victim = self
            .peers
            .iter()
            .filter(|(_, r)| !r.persistent && !r.is_good(now) && r.banned_until_ms <= now)
            .min_by_key(|(id, r)| (std::cmp::Reverse(r.failures), r.last_seen_ms, id.to_bytes()))
            .map(|(id, _)| *id);
        match victim {
            Some(id) => {
                self.peers.remove(&id);
                true
            }
            None => false,
        }
    }

    /// Adds addresses of `peer` (most recent first, duplicates merged, at
    /// most [`MAX_ADDRS_PER_PEER`]). Returns whether the peer is in the store.
    pub fn add_addrs(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>) -> bool {
        let new: Vec<Multiaddr> = addrs.into_iter().take(MAX_ADDRS_PER_PEER).collect();
        if new.is_empty() && !self.peers.contains_key(&peer) {
            return false;
        }
        let Some(rec) = self.entry(peer) else {
            return false;
        };
        let mut merged = new;
        for a in rec.addrs.drain(..) {
            if !merged.contains(&a) {
                merged.push(a);
            }
        }
        merged.dedup();
        merged.truncate(MAX_ADDRS_PER_PEER);
        rec.addrs = merged;
        true
    }

    /// Marks a configured peer that is never evicted.
    pub fn set_persistent(&mut self, peer: PeerId) {
        if let Some(rec) = self.entry(peer) {
            rec.persistent = true;
        }
    }

    /// A connection with `peer` is up.
    pub fn on_connected(&mut self, peer: PeerId, now_ms: u64) {
        if let Some(rec) = self.peers.get_mut(&peer) {
            rec.last_seen_ms = now_ms;
            rec.failures = 0;
            rec.next_dial_ms = 0;
            self.dirty = true;
        }
    }

    /// Dialing `peer` failed: back off exponentially.
    pub fn on_dial_failure(&mut self, peer: PeerId, now_ms: u64) {
        let (base, max) = (ms(self.backoff_base), ms(self.backoff_max));
        if let Some(rec) = self.peers.get_mut(&peer) {
            rec.failures = rec.failures.saturating_add(1);
            let shift = rec.failures.saturating_sub(1).min(30);
            let delay = base.saturating_mul(1u64 << shift).min(max);
            rec.next_dial_ms = now_ms.saturating_add(delay);
            self.dirty = true;
        }
    }

    /// Bans `peer` until `until_ms`.
    pub fn ban(&mut self, peer: PeerId, until_ms: u64) {
        if let Some(rec) = self.entry(peer) {
            rec.banned_until_ms = until_ms;
        }
    }

    /// Lifts a ban on `peer`; returns whether it was banned at `now_ms`.
    pub fn unban(&mut self, peer: &PeerId, now_ms: u64) -> bool {
        match self.peers.get_mut(peer) {
            Some(rec) if rec.banned_until_ms > now_ms => {
                rec.banned_until_ms = 0;
                rec.failures = 0;
                rec.next_dial_ms = 0;
                self.dirty = true;
                true
            }
            _ => false,
        }
    }

    /// Forgets what is known of `peer` (addresses, history), but not a ban
    /// still running: that stays until it ends. Returns whether it was
    /// known.
    pub fn forget(&mut self, peer: &PeerId) -> bool {
        let now = now_ms();
        let known = match self.peers.get_mut(peer) {
            Some(r) if r.banned_until_ms > now => {
                *r = PeerRecord {
                    banned_until_ms: r.banned_until_ms,
                    ..PeerRecord::default()
                };
                true
            }
            Some(_) => self.peers.remove(peer).is_some(),
            None => false,
        };
        self.dirty |= known;
        known
    }

    /// Whether `peer` is banned at `now_ms`.
    pub fn is_banned(&self, peer: &PeerId, now_ms: u64) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|r| r.banned_until_ms > now_ms)
    }

    /// Peers banned at `now_ms` and until when.
    pub fn bans(&self, now_ms: u64) -> Vec<(PeerId, u64)> {
        self.peers
            .iter()
            .filter(|(_, r)| r.banned_until_ms > now_ms)
            .map(|(id, r)| (*id, r.banned_until_ms))
            .collect()
    }

    /// The stored addresses of `peer`.
    pub fn addrs(&self, peer: &PeerId) -> &[Multiaddr] {
        self.peers
            .get(peer)
            .map(|r| r.addrs.as_slice())
            .unwrap_or(&[])
    }

    /// Peers sorted best first (fewest failures, most recently seen, then id),
    /// not banned, not `skip`ped, each with its addresses that pass `keep`
    /// (peers left with none are left out); at most `max`.
    fn ranked(
        &self,
        now_ms: u64,
        max: usize,
        skip: impl Fn(&PeerId, &PeerRecord) -> bool,
        keep: impl Fn(&Multiaddr) -> bool,
    ) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut list: Vec<(&PeerId, &PeerRecord)> = self
            .peers
            .iter()
            .filter(|(id, r)| r.banned_until_ms <= now_ms && !skip(id, r))
            .collect();
        list.sort_by_key(|(id, r)| (r.failures, std::cmp::Reverse(r.last_seen_ms), id.to_bytes()));
        let ranked: Vec<(PeerId, Vec<Multiaddr>)> = list
            .into_iter()
            .filter_map(|(id, r)| {
                let addrs: Vec<Multiaddr> = r.addrs.iter().filter(|a| keep(a)).cloned().collect();
                (!addrs.is_empty()).then_some((*id, addrs))
            })
            .collect();
        spread(ranked, max.min(MAX_PEERS))
    }

    /// Peers to hand out to others: never banned ones, best first, with the
    /// addresses `allow_private` permits; at most `max`.
    pub fn known_peers(
        &self,
        max: usize,
        allow_private: bool,
        now_ms: u64,
    ) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.ranked(
            now_ms,
            max,
            |_, _| false,
            |a| super::addr::is_acceptable(a, allow_private),
        )
    }

    /// Peers worth dialing now (backoff over, not banned, not `skip`ped),
    /// best first; at most `max`.
    pub fn dial_candidates(
        &self,
        now_ms: u64,
        max: usize,
        skip: impl Fn(&PeerId) -> bool,
    ) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.ranked(
            now_ms,
            max,
            |id, r| r.next_dial_ms > now_ms || skip(id),
            |_| true,
        )
    }

    /// The JSON file content.
    pub fn to_json(&self) -> Vec<u8> {
        let mut peers: Vec<FilePeer> = self
            .peers
            .iter()
            .map(|(id, r)| FilePeer {
                id: id.to_string(),
                addrs: r.addrs.iter().map(|a| a.to_string()).collect(),
                last_seen_ms: r.last_seen_ms,
                failures: r.failures,
                next_dial_ms: r.next_dial_ms,
                banned_until_ms: r.banned_until_ms,
            })
            .collect();
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        let file = FileRepr {
            version: FILE_VERSION,
            peers,
        };
        serde_json::to_vec_pretty(&file).unwrap_or_default()
    }

    /// Parses a store file's content; unparsable ids and addresses are
    /// skipped, peers beyond the capacity are dropped.
    pub fn from_json(
        bytes: &[u8],
        capacity: usize,
        backoff_base: Duration,
        backoff_max: Duration,
    ) -> Result<PeerStore, String> {
        let file: FileRepr = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if file.version != FILE_VERSION {
            return Err(format!("unknown version {}", file.version));
        }
        let mut store = PeerStore::new(capacity, backoff_base, backoff_max);
        for p in file.peers {
            if store.peers.len() >= store.capacity {
                break;
            }
            let Ok(id) = p.id.parse::<PeerId>() else {
                continue;
            };
            let addrs: Vec<Multiaddr> = p
                .addrs
                .iter()
                .filter_map(|a| a.parse().ok())
                .take(MAX_ADDRS_PER_PEER)
                .collect();
            if addrs.is_empty() && p.banned_until_ms == 0 {
                continue;
            }
            store.peers.insert(
                id,
                PeerRecord {
                    addrs,
                    last_seen_ms: p.last_seen_ms,
                    failures: p.failures,
                    next_dial_ms: p.next_dial_ms,
                    banned_until_ms: p.banned_until_ms,
                    persistent: false,
                },
            );
        }
        Ok(store)
    }

    /// Reads the store file; a missing file is an empty store.
    pub fn load(
        path: &Path,
        capacity: usize,
        backoff_base: Duration,
        backoff_max: Duration,
    ) -> Result<PeerStore, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(PeerStore::new(capacity, backoff_base, backoff_max));
            }
            Err(e) => return Err(io(e)),
        };
        if meta.len() > MAX_FILE_BYTES {
            return Err(StoreError::TooLarge {
                path: path.to_owned(),
                size: meta.len(),
                max: MAX_FILE_BYTES,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        PeerStore::from_json(&bytes, capacity, backoff_base, backoff_max).map_err(|detail| {
            StoreError::Invalid {
                path: path.to_owned(),
                detail,
            }
        })
    }

    /// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
    /// Blocking: call it off the async executor.
    pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: u8) -> PeerId {
        crate::p2p::keys::keypair_from_seed([n; 32])
            .unwrap()
            .public()
            .to_peer_id()
    }

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    fn store(cap: usize) -> PeerStore {
        PeerStore::new(cap, Duration::from_secs(1), Duration::from_secs(60))
    }

    fn public_addr(a: u8, b: u8, n: u8) -> Multiaddr {
        format!("/ip4/{a}.{b}.0.{n}/tcp/26656").parse().unwrap()
    }

    /// Sybils of one /16 seen most recently do not push the other groups
    /// out of a peer-exchange answer or a round of dials.
    #[test]
    fn answers_and_dials_reach_every_group_first() {
        let mut s = store(100);
        let now = now_ms();
        // Ten sybils in 45.1.0.0/16, seen just now.
        for n in 0..10 {
            s.add_addrs(pid(n + 1), [public_addr(45, 1, n)]);
            s.on_connected(pid(n + 1), now);
        }
        // Two peers of other groups, seen an hour ago.
        s.add_addrs(pid(50), [public_addr(80, 7, 1)]);
        s.on_connected(pid(50), now - 3_600_000);
        s.add_addrs(pid(51), [public_addr(91, 3, 1)]);
        s.on_connected(pid(51), now - 3_600_000);
        for list in [
            s.known_peers(4, false, now),
            s.dial_candidates(now, 4, |_| false),
        ] {
            let ids: Vec<PeerId> = list.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids.len(), 4);
            assert!(ids.contains(&pid(50)) && ids.contains(&pid(51)), "{ids:?}");
        }
        // Asked for everything, nobody is left out.
        assert_eq!(s.known_peers(100, false, now).len(), 12);
    }

    /// A running ban outlives eviction and `forget`.
    #[test]
    fn bans_are_kept_until_they_end() {
        let mut s = store(2);
        let now = now_ms();
        s.add_addrs(pid(1), [addr(1)]);
        s.ban(pid(1), now + 60_000);
        assert!(s.forget(&pid(1)));
        assert!(s.is_banned(&pid(1), now), "forget keeps a running ban");
        assert!(s.addrs(&pid(1)).is_empty());
        s.add_addrs(pid(2), [addr(2)]);
        assert!(!s.add_addrs(pid(3), [addr(3)]) || s.is_banned(&pid(1), now));
        assert!(s.is_banned(&pid(1), now), "a banned record is not evicted");
    }

    /// A peer not seen for a week is no longer worth keeping over a new one.
    #[test]
    fn stale_peers_can_be_evicted() {
        let mut s = store(2);
        let now = now_ms();
        s.add_addrs(pid(1), [addr(1)]);
        s.on_connected(pid(1), now - STALE_MS - 1);
        s.add_addrs(pid(2), [addr(2)]);
        s.on_connected(pid(2), now);
        assert!(s.add_addrs(pid(3), [addr(3)]), "the stale peer makes room");
        assert!(s.get(&pid(1)).is_none());
        assert!(s.get(&pid(2)).is_some(), "a fresh good peer stays");
        s.on_connected(pid(3), now);
        assert!(!s.add_addrs(pid(4), [addr(4)]), "two fresh good peers stay");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut s = store(10);
        s.add_addrs(pid(1), [addr(1)]);
        let now = 1_000_000;
        let mut delays = Vec::new();
        for _ in 0..9 {
            s.on_dial_failure(pid(1), now);
            delays.push(s.get(&pid(1)).unwrap().next_dial_ms - now);
        }
        assert_eq!(
            delays,
            [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
        );
        assert!(s.dial_candidates(now, 10, |_| false).is_empty());
        assert_eq!(s.dial_candidates(now + 60_000, 10, |_| false).len(), 1);
        s.on_connected(pid(1), now);
        let r = s.get(&pid(1)).unwrap();
        assert_eq!((r.failures, r.next_dial_ms, r.last_seen_ms), (0, 0, now));
    }

    #[test]
    fn banned_peers_are_never_handed_out_or_dialed() {
        let mut s = store(10);
        s.add_addrs(pid(1), [addr(1)]);
        s.add_addrs(pid(2), [addr(2)]);
        s.ban(pid(1), 5000);
        assert!(s.is_banned(&pid(1), 4999));
        let out: Vec<PeerId> = s
            .known_peers(10, true, 1000)
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(out, vec![pid(2)]);
        assert_eq!(s.dial_candidates(1000, 10, |_| false).len(), 1);
        assert!(!s.is_banned(&pid(1), 5000));
        assert_eq!(s.known_peers(10, true, 5000).len(), 2);
    }

    #[test]
    fn private_addresses_filtered_when_not_allowed() {
        let mut s = store(10);
        let public: Multiaddr = "/ip4/8.8.4.4/tcp/1".parse().unwrap();
        s.add_addrs(pid(1), [addr(1), public.clone()]);
        s.add_addrs(pid(2), [addr(2)]);
        assert_eq!(s.known_peers(10, false, 0), vec![(pid(1), vec![public])]);
        assert_eq!(s.known_peers(10, true, 0).len(), 2);
        assert_eq!(s.known_peers(1, true, 0).len(), 1);
    }

    #[test]
    fn full_store_evicts_worst_and_keeps_good_and_persistent() {
        let mut s = store(3);
        let now = now_ms();
        s.add_addrs(pid(1), [addr(1)]);
        s.on_connected(pid(1), now); // good
        s.set_persistent(pid(2));
        s.add_addrs(pid(2), [addr(2)]);
        s.add_addrs(pid(3), [addr(3)]);
        s.on_dial_failure(pid(3), now); // worst
        assert!(s.add_addrs(pid(4), [addr(4)]));
        assert_eq!(s.len(), 3);
        assert!(s.get(&pid(3)).is_none());
        // 4 (never seen) is evictable, 1 and 2 are not.
        assert!(s.add_addrs(pid(5), [addr(5)]));
        assert!(s.get(&pid(4)).is_none());
        s.on_connected(pid(5), now + 1);
        // Everything is worth keeping now: the newcomer is refused.
        assert!(!s.add_addrs(pid(6), [addr(6)]));
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn addresses_are_bounded_and_merged() {
        let mut s = store(3);
        s.add_addrs(pid(1), (1..=20).map(addr));
        assert_eq!(s.addrs(&pid(1)).len(), MAX_ADDRS_PER_PEER);
        s.add_addrs(pid(1), [addr(100), addr(1)]);
        let a = s.addrs(&pid(1));
        assert_eq!(a.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(a[0], addr(100));
        assert_eq!(a[1], addr(1));
        assert!(!s.add_addrs(pid(2), []));
    }

    #[test]
    fn json_roundtrip_and_garbage() {
        let mut s = store(10);
        s.add_addrs(pid(1), [addr(1), addr(2)]);
        s.on_connected(pid(1), 77);
        s.add_addrs(pid(2), [addr(3)]);
        s.on_dial_failure(pid(2), 100);
        s.ban(pid(3), 9999);
        let bytes = s.to_json();
        let back =
            PeerStore::from_json(&bytes, 10, Duration::from_secs(1), Duration::from_secs(60))
                .unwrap();
        assert_eq!(back.len(), 3);
        for p in [pid(1), pid(2), pid(3)] {
            assert_eq!(back.get(&p), s.get(&p));
        }
        // Bad ids and addresses are skipped, not fatal.
        let text = br#"{"version":1,"peers":[{"id":"nope","addrs":["/ip4/1.2.3.4/tcp/1"]},
            {"id":"12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA","addrs":["garbage"]}]}"#;
        let b = PeerStore::from_json(text, 10, Duration::ZERO, Duration::ZERO).unwrap();
        assert!(b.is_empty());
        assert!(PeerStore::from_json(b"{", 10, Duration::ZERO, Duration::ZERO).is_err());
        assert!(
            PeerStore::from_json(
                br#"{"version":9,"peers":[]}"#,
                10,
                Duration::ZERO,
                Duration::ZERO
            )
            .is_err()
        );
    }

    #[test]
    fn file_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        let empty = PeerStore::load(&path, 10, Duration::ZERO, Duration::ZERO).unwrap();
        assert!(empty.is_empty());
        let mut s = store(10);
        s.add_addrs(pid(1), [addr(1)]);
        PeerStore::write_file(&path, &s.to_json()).unwrap();
        let back = PeerStore::load(&path, 10, Duration::ZERO, Duration::ZERO).unwrap();
        assert_eq!(back.addrs(&pid(1)), &[addr(1)]);
        std::fs::write(&path, b"not json").unwrap();
        assert!(matches!(
            PeerStore::load(&path, 10, Duration::ZERO, Duration::ZERO),
            Err(StoreError::Invalid { .. })
        ));
    }
}
