//! The tx index as sorted runs: the map from a tx hash to where the tx is
//! (height and position), written as a few large records per block
//! instead of one record per tx.
//!
//! ## Why
//! A sled insert costs about 9 µs whatever its size, and a tx hash is a
//! random key, so an index with one record per tx made up two thirds of
//! the commit of a 5,000-tx block (`cargo bench -p kite-blockstore --bench
//! commit`), the largest single cost of a validator under load. Here a
//! block's index entries cost a sort and one insert per [`CHUNK_ENTRIES`]
//! entries.
//!
//! ## Layout
//! - A **run** is a set of index entries sorted by tx hash. It is stored
//!   in the `tx_runs` table as chunks of at most [`CHUNK_ENTRIES`]
//!   entries, under the key `be64(run id) || first tx hash of the chunk`,
//!   so the chunk that may hold a hash is the last one whose key is not
//!   above `be64(run id) || hash`: one range read. An entry is `tx hash ||
//!   be64(height) || be32(index in block)` ([`ENTRY_BYTES`] bytes).
//! - The `meta/tx_runs` record lists the live runs, oldest first:
//!   `be64(next run id)` then `be64(id) || be64(entries)` per run.
//! - A commit that indexes its block adds the block's run and the new
//!   list in its own atomic batch; an index catch-up step
//!   ([`BlockStore::index_txs`]) adds one run for all the blocks it takes.
//!
//! ## Compaction
//! [`BlockStore::compact_tx_index`] merges two adjacent runs when the
//! newer holds at least half as many entries as the older and the merged
//! run stays within [`MAX_RUN_ENTRIES`]. Below that bound the run sizes
//! then fall off geometrically, so there are O(log n) runs and each entry
//! is rewritten O(log n) times, in bulk; above it, there is one run per
//! [`MAX_RUN_ENTRIES`] txs of the chain. A lookup reads one chunk per run
//! (about 20 runs for a chain of 4 million txs). A merge is one atomic
//! batch (the merged run written, both old runs deleted, the new list);
//! its memory is bounded by [`MAX_RUN_ENTRIES`] entries (12 MiB). The node
//! runs it in the background, off the commit path; until it does, lookups
//! read more runs but find the same entries.
//!
//! ## Concurrency
//! The run list lives in memory behind a read-write lock and is written
//! to sled with every change. Lookups hold the read lock for their reads;
//! a commit, an index step or a merge holds the write lock while it
//! applies its batch and swaps the list, so no lookup reads a run a merge
//! has just deleted. Merges are one at a time, and only merges remove
//! runs, so the two runs a merge read are still live when it applies.
//!
//! ## Older stores
//! Stores of format `kite-blockstore/2` hold one record per tx in the
//! `tx_index` table; lookups read it first, and nothing new is written to
//! it.

use super::BlockStore;
use super::schema::{META_TX_RUNS, TxLocation, be64};
use crate::error::StoreError;
use kite_types::{Block, Hash};

/// Most entries in one stored chunk of a run (45 KiB).
pub const CHUNK_ENTRIES: usize = 1024;
/// Most entries of a run a merge makes; larger runs are left as they are.
pub const MAX_RUN_ENTRIES: u64 = 262_144;
/// Bytes of one stored entry.
pub const ENTRY_BYTES: usize = 44;

/// One index entry: a tx hash and where its tx is.
pub(super) type Entry = ([u8; 32], TxLocation);

/// A live run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) id: u64,
    pub(super) entries: u64,
}

/// The live runs, oldest first, and the id the next run gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Runs {
    pub(super) next_id: u64,
    pub(super) live: Vec<Run>,
}

impl Runs {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + 16 * self.live.len());
        v.extend_from_slice(&self.next_id.to_be_bytes());
        for r in &self.live {
            v.extend_from_slice(&r.id.to_be_bytes());
            v.extend_from_slice(&r.entries.to_be_bytes());
        }
        v
    }

    /// `None` for a record that is not a run list: a wrong length, an id
    /// not below `next_id`, ids out of order.
    pub(super) fn decode(b: &[u8]) -> Option<Runs> {
        if b.len() < 8 || !(b.len() - 8).is_multiple_of(16) {
            return None;
        }
        let next_id = be64(&b[..8])?;
        let mut live: Vec<Run> = Vec::with_capacity((b.len() - 8) / 16);
        for r in b[8..].chunks_exact(16) {
            let run = Run {
                id: be64(&r[..8])?,
                entries: be64(&r[8..])?,
            };
            // Ids grow with age except where a merge took an older slot,
            // so they need not be ordered; they must be distinct and
            // allocated.
            if run.id >= next_id || live.iter().any(|l| l.id == run.id) {
                return None;
            }
            live.push(run);
        }
        Some(Runs { next_id, live })
    }

    /// Appends a run of `entries`; returns its id.
    fn push(&mut self, entries: u64) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        self.live.push(Run { id, entries });
        id
    }

    /// The position of the older of the next two adjacent runs to merge:
    /// the newest pair where the newer holds at least half the older's
    /// entries and the merge stays within [`MAX_RUN_ENTRIES`].
    pub(super) fn next_merge(&self) -> Option<usize> {
        (0..self.live.len().saturating_sub(1)).rev().find(|&i| {
            let (older, newer) = (self.live[i].entries, self.live[i + 1].entries);
            newer.saturating_mul(2) >= older && older.saturating_add(newer) <= MAX_RUN_ENTRIES
        })
    }
}

/// A block's index entries, unsorted.
pub(super) fn block_entries(block: &Block, into: &mut Vec<Entry>) {
    let height = block.height();
    into.extend(block.txs().iter().enumerate().map(|(i, tx)| {
        (
            *tx.hash().as_bytes(),
            TxLocation {
                height,
                index: u32::try_from(i).unwrap_or(u32::MAX),
            },
        )
    }));
}

fn chunk_key(run: u64, first: &[u8; 32]) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&run.to_be_bytes());
    k[8..].copy_from_slice(first);
    k
}

fn encode_chunk(entries: &[Entry]) -> Vec<u8> {
    let mut v = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for (hash, loc) in entries {
        v.extend_from_slice(hash);
        v.extend_from_slice(&loc.height.to_be_bytes());
        v.extend_from_slice(&loc.index.to_be_bytes());
    }
    v
}

fn decode_entry(e: &[u8]) -> Option<Entry> {
    let hash = <[u8; 32]>::try_from(e.get(..32)?).ok()?;
    let height = be64(e.get(32..40)?)?;
    let index = u32::from_be_bytes(<[u8; 4]>::try_from(e.get(40..44)?).ok()?);
    Some((hash, TxLocation { height, index }))
}

/// Whether a stored chunk is well formed: whole entries, at least one.
fn chunk_ok(chunk: &[u8]) -> bool {
    !chunk.is_empty() && chunk.len().is_multiple_of(ENTRY_BYTES)
}

/// Binary search of a well-formed chunk.
fn find_in_chunk(chunk: &[u8], hash: &[u8; 32]) -> Option<TxLocation> {
    let n = chunk.len() / ENTRY_BYTES;
    let at = |i: usize| &chunk[i * ENTRY_BYTES..(i + 1) * ENTRY_BYTES];
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match at(mid)[..32].cmp(hash) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return decode_entry(at(mid)).map(|(_, loc)| loc),
        }
    }
    None
}

/// Two sorted runs as one.
fn merge(a: Vec<Entry>, b: Vec<Entry>) -> Vec<Entry> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.0 <= y.0,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        out.extend(if take_a { a.next() } else { b.next() });
    }
}

impl BlockStore {
    /// Adds a run of `entries` (any order) to a batch, with the run list
    /// `runs` plus it; returns that list (`None` when there are no
    /// entries: nothing is written). The caller applies the batch under
    /// the write lock of `self.runs` and then stores the list there.
    pub(super) fn put_run(
        &self,
        b: &mut sled::Batch,
        mut entries: Vec<Entry>,
        runs: &Runs,
    ) -> Option<Runs> {
        if entries.is_empty() {
            return None;
        }
        entries.sort_unstable_by_key(|e| e.0);
        let mut next = runs.clone();
        let id = next.push(entries.len() as u64);
        self.put_chunks(b, id, &entries);
        self.t.meta.put(b, META_TX_RUNS, next.encode());
        Some(next)
    }

    fn put_chunks(&self, b: &mut sled::Batch, id: u64, sorted: &[Entry]) {
        for chunk in sorted.chunks(CHUNK_ENTRIES) {
            self.t
                .tx_runs
                .put(b, &chunk_key(id, &chunk[0].0), encode_chunk(chunk));
        }
    }

    /// A run's entries in hash order, and its chunk keys.
    fn read_run(&self, run: Run) -> Result<(Vec<Entry>, Vec<sled::IVec>), StoreError> {
        let mut entries = Vec::with_capacity(usize::try_from(run.entries).unwrap_or(0));
        let mut keys = Vec::new();
        for r in self.t.tx_runs.scan(&run.id.to_be_bytes()) {
            let (k, chunk) = r?;
            if !chunk_ok(&chunk) {
                return Err(self.corrupt(format!("tx index run {} has a malformed chunk", run.id)));
            }
            for e in chunk.chunks_exact(ENTRY_BYTES) {
                entries.extend(decode_entry(e));
            }
            keys.push(k);
        }
        if entries.len() as u64 != run.entries {
            return Err(self.corrupt(format!(
                "tx index run {} holds {} entries, its list says {}",
                run.id,
                entries.len(),
                run.entries
            )));
        }
        Ok((entries, keys))
    }

    /// Where the tx with this hash is, by the runs (newest first).
    pub(super) fn run_lookup(&self, hash: &Hash) -> Result<Option<TxLocation>, StoreError> {
        let h = hash.as_bytes();
        let runs = self.runs.read();
        for run in runs.live.iter().rev() {
            let found = self
                .t
                .tx_runs
                .last_in(&chunk_key(run.id, &[0; 32]), &chunk_key(run.id, h))?;
            let Some((_, chunk)) = found else { continue };
            if !chunk_ok(&chunk) {
                return Err(self.corrupt(format!("tx index run {} has a malformed chunk", run.id)));
            }
            if let Some(loc) = find_in_chunk(&chunk, h) {
                return Ok(Some(loc));
            }
        }
        Ok(None)
    }

    /// How many runs the tx index has (see [`BlockStore::compact_tx_index`]).
    pub fn tx_index_runs(&self) -> usize {
        self.runs.read().live.len()
    }

    /// One compaction step of the tx index: merges the next two runs due
    /// (see the [`crate::store`] docs on the tx index) in one atomic
    /// batch. Returns whether it merged; `false` when nothing is due.
    /// Takes no commit lock: commits go on meanwhile, and only hold off
    /// while the batch is applied.
    pub fn compact_tx_index(&self) -> Result<bool, StoreError> {
        let _one_at_a_time = self.compacting.lock();
        let (older, newer) = {
            let runs = self.runs.read();
            match runs.next_merge() {
                Some(i) => (runs.live[i], runs.live[i + 1]),
                None => return Ok(false),
            }
        };
        let (a, a_keys) = self.read_run(older)?;
        let (b, b_keys) = self.read_run(newer)?;
        let merged = merge(a, b);
        let mut runs = self.runs.write();
        // Commits only append runs and merges are one at a time, so both
        // are still live and still adjacent.
        let mut next = runs.clone();
        let id = next.next_id;
        next.next_id = next.next_id.saturating_add(1);
        next.live.retain(|r| r.id != newer.id);
        let Some(slot) = next.live.iter_mut().find(|r| r.id == older.id) else {
            return Err(self.corrupt(format!("tx index run {} vanished", older.id)));
        };
        *slot = Run {
            id,
            entries: merged.len() as u64,
        };
        let mut batch = sled::Batch::default();
        for k in a_keys.iter().chain(&b_keys) {
            self.t.tx_runs.del(&mut batch, k);
        }
        self.put_chunks(&mut batch, id, &merged);
        self.t.meta.put(&mut batch, META_TX_RUNS, next.encode());
        self.t.all.apply_batch(batch)?;
        *runs = next;
        drop(runs);
        tracing::debug!(
            older = older.entries,
            newer = newer.entries,
            runs = self.tx_index_runs(),
            "merged tx index runs"
        );
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seed: u64) -> Entry {
        let h = Hash::digest(&seed.to_be_bytes());
        (
            *h.as_bytes(),
            TxLocation {
                height: seed,
                index: (seed % 7) as u32,
            },
        )
    }

    #[test]
    fn run_lists_round_trip_and_refuse_what_is_not_one() {
        let mut r = Runs::default();
        r.push(5);
        r.push(7);
        assert_eq!(Runs::decode(&r.encode()), Some(r.clone()));
        let mut bad = r.encode();
        bad.push(0);
        assert_eq!(Runs::decode(&bad), None);
        // An id that was never handed out.
        let mut unallocated = r.clone();
        unallocated.live[1].id = 9;
        assert_eq!(Runs::decode(&unallocated.encode()), None);
        // The same id twice.
        let mut twice = r.clone();
        twice.live[1].id = twice.live[0].id;
        assert_eq!(Runs::decode(&twice.encode()), None);
        assert_eq!(Runs::decode(&[1, 2, 3]), None);
    }

    /// Simulates the runs of many blocks of varying size with merges after
    /// each: the entries are all kept, and the runs below the size cap
    /// stay few.
    #[test]
    fn merges_keep_every_entry_and_the_runs_few() {
        let mut r = Runs::default();
        let mut total = 0u64;
        for block in 0..5_000u64 {
            let txs = 1 + (block * 7919) % 6_000;
            r.push(txs);
            total += txs;
            while let Some(i) = r.next_merge() {
                let merged = r.live[i].entries + r.live[i + 1].entries;
                r.live.remove(i + 1);
                r.live[i].entries = merged;
            }
            assert_eq!(r.live.iter().map(|x| x.entries).sum::<u64>(), total);
            let small = r
                .live
                .iter()
                .filter(|x| x.entries * 2 <= MAX_RUN_ENTRIES)
                .count();
            // Sizes below half the cap at least double every two runs
            // from the newest back, and the newest is at least 1.
            assert!(small <= 40, "{small} small runs at block {block}: {r:?}");
        }
        let full = r.live.len() as u64;
        // About one run per cap's worth of entries.
        assert!(
            full <= 2 * total / MAX_RUN_ENTRIES + 40,
            "{full} runs for {total} entries"
        );
    }

    #[test]
    fn chunks_find_every_entry_and_nothing_else() {
        let mut es: Vec<Entry> = (0..500).map(entry).collect();
        es.sort_unstable_by_key(|e| e.0);
        let chunk = encode_chunk(&es);
        assert!(chunk_ok(&chunk));
        for e in &es {
            assert_eq!(find_in_chunk(&chunk, &e.0), Some(e.1));
        }
        assert_eq!(find_in_chunk(&chunk, &entry(10_000).0), None);
        assert!(!chunk_ok(&chunk[..chunk.len() - 1]));
        assert!(!chunk_ok(&[]));
    }

    #[test]
    fn merging_two_sorted_runs_gives_one_sorted_run() {
        let mut a: Vec<Entry> = (0..300).map(entry).collect();
        let mut b: Vec<Entry> = (300..350).map(entry).collect();
        a.sort_unstable_by_key(|e| e.0);
        b.sort_unstable_by_key(|e| e.0);
        let m = merge(a, b);
        assert_eq!(m.len(), 350);
        assert!(m.windows(2).all(|w| w[0].0 <= w[1].0));
    }
}
