//! Opening a store: sled with its lock wait, a new store's genesis
//! records, and the checks of an existing one (format, chain id, genesis
//! hash, and that the best record agrees with the best block, its commit
//! info and its index entries).

use super::schema::{
    Best, FORMAT, FORMAT_2, META_BEST, META_CHAIN, META_FORMAT, META_GENESIS, META_TX_INDEXED,
    META_TX_RUNS, Table, Trees, be64,
};
use super::txruns::Runs;
use super::{BlockStore, StoreConfig};
use crate::durable::Syncer;
use crate::error::StoreError;
use kite_app::App;
use kite_types::{Genesis, Hash};
use parking_lot::{Mutex, RwLock};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Runs `f`, turning a panic inside sled (it has some on malformed files)
/// into an error.
fn no_panic<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "sled panicked".into())),
    }
}

impl BlockStore {
    /// Opens (or creates) the store at `path` for `genesis`'s chain, with
    /// the default config (durable commits).
    pub fn open(path: &Path, genesis: &Genesis) -> Result<BlockStore, StoreError> {
        Self::open_with(path, genesis, StoreConfig::default())
    }

    /// Opens (or creates) the store at `path`. A new store gets the genesis
    /// state and meta record in one atomic batch. An existing one must hold
    /// the same chain id and genesis hash and a consistent best record.
    pub fn open_with(
        path: &Path,
        genesis: &Genesis,
        config: StoreConfig,
    ) -> Result<BlockStore, StoreError> {
        let open_err = |detail: String| StoreError::Open {
            path: path.to_owned(),
            detail,
        };
        genesis.validate().map_err(|e| open_err(e.to_string()))?;
        std::fs::create_dir_all(path).map_err(|e| open_err(e.to_string()))?;
        let (db, t) = no_panic(|| {
            let db = open_sled(path, config.cache_capacity)?;
            let all = db.open_tree("kite").map_err(|e| e.to_string())?;
            let table = |prefix: u8| Table {
                tree: all.clone(),
                prefix,
            };
            let t = Trees {
                meta: table(0),
                blocks: table(1),
                commits: table(2),
                height_hash: table(3),
                hash_height: table(4),
                tx_index: table(5),
                state: table(6),
                tx_runs: table(7),
                all,
            };
            Ok((db, t))
        })
        .map_err(open_err)?;
        let syncer = if config.durable {
            Some(Syncer::new(path)?)
        } else {
            None
        };
        let store = BlockStore {
            path: path.to_owned(),
            db,
            t,
            app: App::new(genesis),
            genesis: genesis.clone(),
            config,
            commits: Mutex::new(()),
            syncer: Mutex::new(syncer),
            indexed: AtomicU64::new(0),
            runs: RwLock::new(std::sync::Arc::new(Runs::default())),
            runs_generation: AtomicU64::new(0),
            compacting: Mutex::new(()),
        };
        store.init_or_check()?;
        Ok(store)
    }

    fn init_or_check(&self) -> Result<(), StoreError> {
        let legacy = ["meta", "blocks", "state"].iter().any(|n| {
            self.db
                .tree_names()
                .iter()
                .any(|t| t.as_ref() == n.as_bytes())
        });
        if legacy {
            return Err(self.corrupt(
                "a store of an older Kite format (kite-blockstore/1); this build reads \
                 kite-blockstore/2 and /3: re-sync the node into a fresh home",
            ));
        }
        match self.t.meta.get(META_FORMAT)? {
            None => self.init(),
            Some(f) if f.as_ref() == FORMAT => self.check(),
            Some(f) if f.as_ref() == FORMAT_2 => {
                self.check()?;
                // Format 3 only adds the tx index's runs; the per-tx
                // records of format 2 are still read.
                let mut b = sled::Batch::default();
                self.t.meta.put(&mut b, META_FORMAT, FORMAT);
                self.t.apply(b)?;
                self.make_durable()?;
                tracing::info!(path = %self.path.display(), "store upgraded from format 2 to 3");
                Ok(())
            }
            Some(f) => Err(self.corrupt(format!(
                "format {:?}, this build reads {:?}",
                String::from_utf8_lossy(&f),
                String::from_utf8_lossy(FORMAT)
            ))),
        }
    }

    /// Writes the genesis state and meta record into an empty store.
    fn init(&self) -> Result<(), StoreError> {
        if self.t.all.iter().next().is_some() {
            return Err(self.corrupt("data without a format record (not a Kite store?)"));
        }
        let best = Best {
            height: self.genesis.initial_height.saturating_sub(1),
            block_hash: Hash::ZERO,
            app_hash: self.app.genesis_app_hash(),
        };
        let changes = self.app.genesis_changes();
        let chain = self.genesis.chain_id.as_bytes();
        let ghash = self.genesis.hash();
        let mut b = sled::Batch::default();
        for (k, v) in changes.iter() {
            if let Some(v) = v {
                self.t.state.put(&mut b, k.as_bytes(), v.as_slice());
            }
        }
        self.t.meta.put(&mut b, META_CHAIN, chain);
        self.t.meta.put(&mut b, META_GENESIS, ghash.as_bytes());
        self.t.meta.put(&mut b, META_BEST, best.encode());
        self.t
            .meta
            .put(&mut b, META_TX_INDEXED, &best.height.to_be_bytes());
        self.t.meta.put(&mut b, META_FORMAT, FORMAT);
        // One atomic batch: all of it or nothing.
        self.t.apply(b)?;
        self.make_durable()?;
        self.indexed.store(best.height, Ordering::SeqCst);
        tracing::info!(path = %self.path.display(), chain = %self.genesis.chain_id, "created block store");
        Ok(())
    }

    /// Checks chain, genesis and the best record of an existing store.
    fn check(&self) -> Result<(), StoreError> {
        let chain = self
            .t
            .meta
            .get(META_CHAIN)?
            .ok_or_else(|| self.corrupt("no chain id record"))?;
        if chain.as_ref() != self.genesis.chain_id.as_bytes() {
            return Err(StoreError::WrongChain {
                path: self.path.clone(),
                expected: self.genesis.chain_id.clone(),
                found: String::from_utf8_lossy(&chain).into_owned(),
            });
        }
        let found = self
            .t
            .meta
            .get(META_GENESIS)?
            .and_then(|g| Hash::from_slice(&g))
            .ok_or_else(|| self.corrupt("no valid genesis hash record"))?;
        let expected = self.genesis.hash();
        if found != expected {
            return Err(StoreError::WrongGenesis {
                path: self.path.clone(),
                expected,
                found,
            });
        }
        let best = self.best()?;
        // Stores written before the index could lag have no record: their
        // index was always complete.
        let indexed = match self.t.meta.get(META_TX_INDEXED)? {
            None => best.height,
            Some(raw) => {
                be64(&raw).ok_or_else(|| self.corrupt("tx_indexed record is malformed"))?
            }
        };
        if indexed > best.height {
            return Err(self.corrupt(format!(
                "the tx index claims height {indexed}, past the best block {}",
                best.height
            )));
        }
        self.indexed.store(indexed, Ordering::SeqCst);
        let list = self.t.meta.get(META_TX_RUNS)?;
        if let Some(raw) = &list {
            *self.runs.write() = std::sync::Arc::new(
                Runs::decode(raw).ok_or_else(|| self.corrupt("tx_runs record is malformed"))?,
            );
        }
        self.remove_orphan_runs(list.is_some())?;
        let base = self.genesis.initial_height.saturating_sub(1);
        if best.height < base {
            return Err(self.corrupt(format!(
                "best height {} is below the genesis height {base}",
                best.height
            )));
        }
        if best.height == base {
            if best.block_hash != Hash::ZERO || best.app_hash != self.app.genesis_app_hash() {
                return Err(self.corrupt("best record at genesis does not match the genesis"));
            }
            return Ok(());
        }
        let block = self
            .block_by_height(best.height)?
            .ok_or_else(|| self.corrupt(format!("best block {} is missing", best.height)))?;
        if block.hash() != best.block_hash || block.height() != best.height {
            return Err(self.corrupt(format!(
                "block at height {} hashes to {}, the best record says {}",
                best.height,
                block.hash(),
                best.block_hash
            )));
        }
        let ci = self
            .commit_info(best.height)?
            .ok_or_else(|| self.corrupt(format!("commit info {} is missing", best.height)))?;
        if ci.app_hash != best.app_hash {
            return Err(self.corrupt(format!(
                "commit info at height {} says app hash {}, the best record says {}",
                best.height, ci.app_hash, best.app_hash
            )));
        }
        if self
            .t
            .hash_height
            .get(best.block_hash.as_bytes())?
            .as_deref()
            != Some(&best.height.to_be_bytes()[..])
        {
            return Err(self.corrupt("hash index does not hold the best block"));
        }
        tracing::info!(path = %self.path.display(), height = best.height, hash = %best.block_hash.short(), tx_indexed = indexed, "opened block store");
        Ok(())
    }
}

/// How long [`open_sled`] waits for the database lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// sled's log segment size. sled writes any page image over a quarter of a
/// segment (less a header) to a blob file of its own; with the default
/// 512 KiB, leaf pages holding a few blocks of 100 txs cross it and every
/// rewrite of them costs a file creation. 8 MiB keeps them in the log.
/// Fixed when a store is created: sled refuses to open a store made with
/// another size.
const SEGMENT_SIZE: usize = 8 * 1024 * 1024;

/// Opens sled, waiting up to [`LOCK_WAIT`] for its file lock: sled's
/// background threads release it a little after the previous `Db` of the
/// same path in this process is dropped.
fn open_sled(path: &Path, cache_capacity: u64) -> Result<sled::Db, String> {
    let start = std::time::Instant::now();
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .segment_size(SEGMENT_SIZE)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(e) => {
                let msg = e.to_string();
                if !msg.contains("could not acquire lock") {
                    return Err(msg);
                }
                if start.elapsed() >= LOCK_WAIT {
                    return Err(format!(
                        "{msg} (is another Kite node using this directory?)"
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}
