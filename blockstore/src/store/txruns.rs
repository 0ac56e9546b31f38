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
//! newer holds at least half as many entries as the older. Run sizes then
//! at least double from the newest back, so there are at most about
//! log2(txs) runs, and each entry is rewritten about log2(txs / block
//! size) times, in bulk. A lookup reads one chunk per run (one sled range
//! read each: about 20 for a chain of a million txs, 30 for a billion).
//!
//! A merge streams: it reads both runs a chunk at a time (checking their
//! order and counts) and writes the merged run under a fresh id in
//! batches of [`MERGE_BATCH_CHUNKS`] chunks, invisible until a last batch
//! holding only the new run list publishes it; only then are the old
//! runs' chunks deleted, in batches. Its memory is a few batches whatever
//! the runs' sizes. The fresh id is taken in memory (the list on disk
//! records the new `next id` with its next change). A crash, or a failed
//! delete, leaves at most the chunks of runs the list does not name (an
//! unpublished merge, or the two old runs); [`BlockStore::open`] deletes
//! them before anything else is written, so an id is never reused while
//! its old chunks remain. The node runs merges in the background, off the commit path;
//! until they run, lookups read more runs but find the same entries.
//!
//! ## Concurrency
//! The run list lives in memory as an `Arc` behind a read-write lock, and
//! is written to sled with every change. A lookup clones the `Arc` and
//! reads without a lock. A commit, an index step or a merge's last batch
//! holds the write lock while it applies its batch and swaps the list, so
//! no change is lost. Chunks of a listed run are deleted only by a merge,
//! after it published the list without them and moved the generation
//! counter on: a lookup that found nothing reads the counter again and,
//! if a merge was published meanwhile, looks again in the new list.
//! (Open and a failed merge delete only runs no list names.) Merges are
//! one at a time.
//!
//! ## Older stores
//! Stores of format `kite-blockstore/2` hold one record per tx in the
//! `tx_index` table; lookups read it first, and nothing new is written to
//! it.

use super::BlockStore;
use super::schema::{META_TX_RUNS, TxLocation, be64};
use crate::error::StoreError;
use kite_types::{Block, Hash};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Most entries in one stored chunk of a run (44 KiB).
pub const CHUNK_ENTRIES: usize = 1024;
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
    /// not below `next_id`, an id twice. (Ids are not in order: a merged
    /// run takes a new id at the place of the older run it replaces.)
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
    /// entries.
    pub(super) fn next_merge(&self) -> Option<usize> {
        (0..self.live.len().saturating_sub(1)).rev().find(|&i| {
            let (older, newer) = (self.live[i].entries, self.live[i + 1].entries);
            newer.saturating_mul(2) >= older
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

/// A run sorted and encoded, not yet stored (built outside any lock).
pub(super) struct NewRun {
    /// Each chunk's first hash and its encoding.
    chunks: Vec<([u8; 32], Vec<u8>)>,
    entries: u64,
}

/// Sorts and encodes `entries` as a run; `None` when there are none.
pub(super) fn new_run(mut entries: Vec<Entry>) -> Option<NewRun> {
    if entries.is_empty() {
        return None;
    }
    entries.sort_unstable_by_key(|e| e.0);
    Some(NewRun {
        chunks: entries
            .chunks(CHUNK_ENTRIES)
            .map(|c| (c[0].0, encode_chunk(c)))
            .collect(),
        entries: entries.len() as u64,
    })
}

/// Reads a stored run in hash order, a chunk at a time.
struct RunReader {
    chunks: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>>,
    chunk: sled::IVec,
    at: usize,
    read: u64,
    /// The last hash read: a run is in hash order.
    last: Option<[u8; 32]>,
}

impl RunReader {
    /// The next entry, or a description of what is wrong with the run.
    fn next(&mut self) -> Result<Option<Entry>, String> {
        while self.at >= self.chunk.len() {
            match self.chunks.next() {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok((_, chunk))) => {
                    if !chunk_ok(&chunk) {
                        return Err("a malformed chunk".into());
                    }
                    self.chunk = chunk;
                    self.at = 0;
                }
            }
        }
        let e = decode_entry(&self.chunk[self.at..self.at + ENTRY_BYTES])
            .ok_or_else(|| "a malformed entry".to_owned())?;
        if self.last.is_some_and(|last| last > e.0) {
            return Err("entries out of hash order".into());
        }
        self.last = Some(e.0);
        self.at += ENTRY_BYTES;
        self.read += 1;
        Ok(Some(e))
    }
}

/// Chunks a merge writes per batch before its last one (about 2.8 MiB).
pub const MERGE_BATCH_CHUNKS: usize = 64;

impl BlockStore {
    /// Adds `run` to a batch with the run list `runs` plus it; returns
    /// that list. The caller holds the write lock of `self.runs`, applies
    /// the batch and then stores the list there.
    pub(super) fn put_new_run(&self, b: &mut sled::Batch, run: NewRun, runs: &Runs) -> Runs {
        let mut next = runs.clone();
        let id = next.push(run.entries);
        for (first, chunk) in run.chunks {
            self.t.tx_runs.put(b, &chunk_key(id, &first), chunk);
        }
        self.t.meta.put(b, META_TX_RUNS, next.encode());
        next
    }

    fn reader(&self, run: Run) -> RunReader {
        RunReader {
            chunks: Box::new(self.t.tx_runs.scan(&run.id.to_be_bytes())),
            chunk: sled::IVec::default(),
            at: 0,
            read: 0,
            last: None,
        }
    }

    /// Where the tx with this hash is, by the runs (newest first).
    pub(super) fn run_lookup(&self, hash: &Hash) -> Result<Option<TxLocation>, StoreError> {
        let h = hash.as_bytes();
        loop {
            let generation = self.runs_generation.load(Ordering::SeqCst);
            let runs = Arc::clone(&self.runs.read());
            for run in runs.live.iter().rev() {
                let found = self
                    .t
                    .tx_runs
                    .last_in(&chunk_key(run.id, &[0; 32]), &chunk_key(run.id, h))?;
                let Some((_, chunk)) = found else { continue };
                if !chunk_ok(&chunk) {
                    return Err(
                        self.corrupt(format!("tx index run {} has a malformed chunk", run.id))
                    );
                }
                if let Some(loc) = find_in_chunk(&chunk, h) {
                    return Ok(Some(loc));
                }
            }
            // A merge published meanwhile may have deleted a chunk this
            // read: look again in the new list.
            if self.runs_generation.load(Ordering::SeqCst) == generation {
                return Ok(None);
            }
        }
    }

    /// How many runs the tx index has (see [`BlockStore::compact_tx_index`]).
    pub fn tx_index_runs(&self) -> usize {
        self.runs.read().live.len()
    }

    /// Deletes the chunks of runs the list does not name (left by a crash
    /// in a merge) and refuses chunks without a list; at open.
    pub(super) fn remove_orphan_runs(&self, listed: bool) -> Result<(), StoreError> {
        let runs = Arc::clone(&self.runs.read());
        let mut from = 0u64;
        loop {
            let first = self.t.tx_runs.first_from(&chunk_key(from, &[0; 32]))?;
            let Some((key, _)) = first else { return Ok(()) };
            let id = key
                .get(..8)
                .and_then(be64)
                .ok_or_else(|| self.corrupt("a tx index chunk with a malformed key"))?;
            if !listed {
                return Err(self.corrupt("tx index chunks without a tx_runs record"));
            }
            if !runs.live.iter().any(|r| r.id == id) {
                let removed = self.delete_run_chunks(id)?;
                tracing::info!(
                    run = id,
                    chunks = removed,
                    "removed the chunks of an unlisted tx index run"
                );
            }
            match id.checked_add(1) {
                Some(next) => from = next,
                None => return Ok(()),
            }
        }
    }

    /// Deletes a run's chunks in batches; returns how many.
    fn delete_run_chunks(&self, id: u64) -> Result<usize, StoreError> {
        let mut removed = 0;
        loop {
            let keys: Vec<sled::IVec> = self
                .t
                .tx_runs
                .scan(&id.to_be_bytes())
                .take(MERGE_BATCH_CHUNKS * 16)
                .map(|r| r.map(|(k, _)| k))
                .collect::<sled::Result<_>>()?;
            if keys.is_empty() {
                return Ok(removed);
            }
            let mut batch = sled::Batch::default();
            for k in &keys {
                self.t.tx_runs.del(&mut batch, k);
            }
            self.t.apply(batch)?;
            removed += keys.len();
        }
    }

    /// One compaction step of the tx index: merges the next two runs due
    /// (see the [`crate::store`] docs on the tx index), streaming, and
    /// publishes the merged run in one atomic batch. Returns whether it
    /// merged; `false` when nothing is due. Takes no commit lock: commits
    /// go on meanwhile, and only hold off while the last batch is applied.
    pub fn compact_tx_index(&self) -> Result<bool, StoreError> {
        let _one_at_a_time = self.compacting.lock();
        let (older, newer, id) = {
            let mut runs = self.runs.write();
            let Some(i) = runs.next_merge() else {
                return Ok(false);
            };
            let (older, newer) = (runs.live[i], runs.live[i + 1]);
            // Take an id now, so that a commit meanwhile takes another;
            // the list on disk records it with the next change.
            let mut next = (**runs).clone();
            let id = next.next_id;
            next.next_id = next.next_id.saturating_add(1);
            *runs = Arc::new(next);
            (older, newer, id)
        };
        match self.merge_into(older, newer, id) {
            Ok(()) => {}
            Err(e) => {
                // Nothing was published: the chunks written so far name a
                // run the list does not; remove them now (or at the next
                // open).
                let _ = self.delete_run_chunks(id);
                return Err(e);
            }
        }
        // The old runs are out of every list a lookup can take from now
        // on; lookups that took an older one look again (generation).
        self.delete_run_chunks(older.id)?;
        self.delete_run_chunks(newer.id)?;
        tracing::debug!(
            older = older.entries,
            newer = newer.entries,
            runs = self.tx_index_runs(),
            "merged tx index runs"
        );
        Ok(true)
    }

    /// Writes the merge of `older` and `newer` as run `id` and publishes
    /// it in place of both.
    fn merge_into(&self, older: Run, newer: Run, id: u64) -> Result<(), StoreError> {
        let corrupt =
            |run: Run, what: String| self.corrupt(format!("tx index run {}: {what}", run.id));
        let (mut ra, mut rb) = (self.reader(older), self.reader(newer));
        let mut a = ra.next().map_err(|e| corrupt(older, e))?;
        let mut b = rb.next().map_err(|e| corrupt(newer, e))?;
        let mut chunk: Vec<Entry> = Vec::with_capacity(CHUNK_ENTRIES);
        let mut batch = sled::Batch::default();
        let mut in_batch = 0usize;
        let mut written = 0u64;
        loop {
            let take_a = match (&a, &b) {
                (Some(x), Some(y)) => x.0 <= y.0,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let e = if take_a {
                std::mem::replace(&mut a, ra.next().map_err(|e| corrupt(older, e))?)
            } else {
                std::mem::replace(&mut b, rb.next().map_err(|e| corrupt(newer, e))?)
            };
            chunk.extend(e);
            if ra.read > older.entries || rb.read > newer.entries {
                break;
            }
            if chunk.len() == CHUNK_ENTRIES {
                self.t.tx_runs.put(
                    &mut batch,
                    &chunk_key(id, &chunk[0].0),
                    encode_chunk(&chunk),
                );
                written += chunk.len() as u64;
                chunk.clear();
                in_batch += 1;
                if in_batch == MERGE_BATCH_CHUNKS {
                    // Not in any list yet: invisible to lookups.
                    self.t.apply(std::mem::take(&mut batch))?;
                    in_batch = 0;
                }
            }
        }
        for (run, read) in [(older, ra.read), (newer, rb.read)] {
            if read != run.entries {
                return Err(corrupt(
                    run,
                    format!(
                        "holds {read} entries or more, its list says {}",
                        run.entries
                    ),
                ));
            }
        }
        if !chunk.is_empty() {
            self.t.tx_runs.put(
                &mut batch,
                &chunk_key(id, &chunk[0].0),
                encode_chunk(&chunk),
            );
            written += chunk.len() as u64;
        }
        // Every chunk is written before the list names the run: the last
        // batch is the list alone, one insert.
        self.t.apply(std::mem::take(&mut batch))?;
        let mut runs = self.runs.write();
        // Commits only append runs, and merges are one at a time, so both
        // are still listed, side by side.
        let mut next = (**runs).clone();
        next.live.retain(|r| r.id != newer.id);
        let Some(slot) = next.live.iter_mut().find(|r| r.id == older.id) else {
            return Err(corrupt(older, "vanished from the list".into()));
        };
        *slot = Run {
            id,
            entries: written,
        };
        self.t.meta.put(&mut batch, META_TX_RUNS, next.encode());
        self.t.apply(batch)?;
        *runs = Arc::new(next);
        self.runs_generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
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
    /// each: the entries are all kept, and the runs stay within about
    /// log2 of the entries.
    #[test]
    fn merges_keep_every_entry_and_the_runs_logarithmic() {
        let mut r = Runs::default();
        let mut total = 0u64;
        for block in 0..20_000u64 {
            // Empty blocks add no run; the rest 1 to 6,000 txs.
            let txs = (block * 7919) % 6_001;
            if txs > 0 {
                r.push(txs);
            }
            total += txs;
            while let Some(i) = r.next_merge() {
                let merged = r.live[i].entries + r.live[i + 1].entries;
                r.live.remove(i + 1);
                r.live[i].entries = merged;
            }
            assert_eq!(r.live.iter().map(|x| x.entries).sum::<u64>(), total);
            // Sizes more than double from the newest back.
            assert!(
                r.live.windows(2).all(|w| w[0].entries > 2 * w[1].entries),
                "{r:?}"
            );
            let bound = 64 - total.max(1).leading_zeros() as usize + 1;
            assert!(
                r.live.len() <= bound,
                "{} runs for {total} entries",
                r.live.len()
            );
        }
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

    /// A store to write synthetic runs into (no blocks: the runs are
    /// only read through lookups and merges here).
    fn store(dir: &std::path::Path) -> BlockStore {
        let key = kite_types::NodeKey::from_seed([9; 32]);
        let g = kite_types::Genesis::single("kite-runs", key.public(), key.public(), 0);
        let config = crate::StoreConfig {
            durable: false,
            ..crate::StoreConfig::default()
        };
        BlockStore::open_with(dir, &g, config).unwrap()
    }

    fn add_run(s: &BlockStore, entries: Vec<Entry>) {
        let run = new_run(entries).unwrap();
        let mut b = sled::Batch::default();
        let mut runs = s.runs.write();
        let next = s.put_new_run(&mut b, run, &runs);
        s.t.all.apply_batch(b).unwrap();
        *runs = Arc::new(next);
    }

    /// Chunks in the table by run id, and what the list says they
    /// should be.
    fn chunks(s: &BlockStore) -> (Vec<u64>, Vec<u64>) {
        let stored: Vec<u64> =
            s.t.tx_runs
                .iter()
                .map(|r| be64(&r.unwrap().0[..8]).unwrap())
                .collect();
        let listed: Vec<u64> = s
            .runs
            .read()
            .live
            .iter()
            .flat_map(|r| std::iter::repeat_n(r.id, (r.entries as usize).div_ceil(CHUNK_ENTRIES)))
            .collect();
        let mut stored = stored;
        let mut listed = listed;
        stored.sort_unstable();
        listed.sort_unstable();
        (stored, listed)
    }

    /// Runs big enough that merges write several batches: every entry is
    /// found after each merge, no chunk is left behind, and the chunks of
    /// an unlisted run (a crash in a merge) go at the next open.
    #[test]
    fn large_merges_stream_in_batches_and_leave_no_chunk_behind() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let per_run = MERGE_BATCH_CHUNKS * CHUNK_ENTRIES + 123;
        let mut all = Vec::new();
        for r in 0..4u64 {
            let es: Vec<Entry> = (0..per_run as u64)
                .map(|i| entry(r * 1_000_000 + i))
                .collect();
            all.extend(es.iter().copied());
            add_run(&s, es);
        }
        let found = |s: &BlockStore| {
            for (h, loc) in all.iter().step_by(97) {
                assert_eq!(
                    s.run_lookup(&Hash::from_slice(h).unwrap()).unwrap(),
                    Some(*loc)
                );
            }
            assert_eq!(s.run_lookup(&Hash::digest(b"absent")).unwrap(), None);
        };
        found(&s);
        let mut merges = 0;
        while s.compact_tx_index().unwrap() {
            merges += 1;
            found(&s);
            let (stored, listed) = chunks(&s);
            assert_eq!(stored, listed, "chunks left behind after merge {merges}");
        }
        assert_eq!(merges, 3);
        assert_eq!(s.tx_index_runs(), 1);
        // A merge that never published: chunks under an id the list does
        // not name.
        let orphan = s.runs.read().next_id + 5;
        s.t.tx_runs
            .tree
            .insert(
                s.t.tx_runs.key(&chunk_key(orphan, &[1; 32])),
                encode_chunk(&[entry(1)]),
            )
            .unwrap();
        s.flush().unwrap();
        drop(s);
        let s = store(dir.path());
        let (stored, listed) = chunks(&s);
        assert_eq!(stored, listed, "the orphan chunk is still there");
        found(&s);
    }

    /// Chunks but no run list: refused, not silently read as empty.
    #[test]
    fn chunks_without_a_run_list_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        add_run(&s, (0..10).map(entry).collect());
        s.t.meta.tree.remove(s.t.meta.key(META_TX_RUNS)).unwrap();
        s.flush().unwrap();
        drop(s);
        let key = kite_types::NodeKey::from_seed([9; 32]);
        let g = kite_types::Genesis::single("kite-runs", key.public(), key.public(), 0);
        let e = BlockStore::open(dir.path(), &g).unwrap_err();
        assert!(e.to_string().contains("tx_runs"), "{e}");
    }
}
