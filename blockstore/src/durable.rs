//! Making a sled commit durable against power loss.
//!
//! sled 0.34 keeps its log and page cache in `<dir>/db`, large values in
//! `<dir>/blobs/<lsn>`, its storage parameters in `<dir>/conf` and
//! snapshots in `<dir>/snap.*`. Its `flush()` writes the log buffers with
//! `pwrite` and, on Linux, calls `sync_file_range(WAIT_BEFORE | WRITE |
//! WAIT_AFTER)`: the data pages reach the device queue, but neither the
//! file's metadata (its size, block map) nor the device's volatile write
//! cache are flushed, so a power loss can still lose an "flushed" write.
//! Blob files are written with no sync at all.
//!
//! [`Syncer::sync`] therefore, after `flush()`:
//!
//! 1. `fdatasync`s `<dir>/db` through a file handle of our own (it acts on
//!    the inode, so it covers what sled wrote through its own handle,
//!    including the file size, and it issues the device cache flush);
//! 2. `fdatasync`s every blob file it has not synced yet, then `fsync`s
//!    `<dir>/blobs` when a blob appeared (so the new directory entries are
//!    durable);
//! 3. `fsync`s `<dir>` itself when a name appeared in it since the last
//!    sync (a new or renamed snapshot file). Listing a directory is cheap;
//!    a directory fsync per commit is not.
//!
//! At open, [`Syncer::new`] also syncs `conf` and the parent directory of
//! `<dir>`, so a freshly created store survives a power loss as a whole.

use crate::StoreError;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Flushes sled and fsyncs its files (see the module docs).
pub struct Syncer {
    dir: PathBuf,
    db_file: File,
    synced_blobs: HashSet<OsString>,
    synced_names: HashSet<OsString>,
}

fn err(what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Durability(format!("{what} {}: {e}", path.display()))
}

fn fsync_path(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| err("fsync", path, e))
}

impl Syncer {
    /// Opens the handles and makes the store's files and directory entry
    /// durable once.
    pub fn new(dir: &Path) -> Result<Syncer, StoreError> {
        let db_path = dir.join("db");
        let db_file = File::open(&db_path).map_err(|e| err("open", &db_path, e))?;
        let mut s = Syncer {
            dir: dir.to_owned(),
            db_file,
            synced_blobs: HashSet::new(),
            synced_names: HashSet::new(),
        };
        let conf = dir.join("conf");
        if conf.exists() {
            fsync_path(&conf)?;
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_path(parent)?;
        }
        s.sync_files()?;
        Ok(s)
    }

    /// `db.flush()` then the fsyncs of the module docs.
    pub fn sync(&mut self, db: &sled::Db) -> Result<(), StoreError> {
        let flushed = db.flush();
        // The flush seals write buffers on this thread.
        crate::store::release_retired();
        flushed.map_err(|e| StoreError::Durability(format!("sled flush: {e}")))?;
        self.sync_files()
    }

    fn sync_files(&mut self) -> Result<(), StoreError> {
        self.db_file
            .sync_data()
            .map_err(|e| err("fsync", &self.dir.join("db"), e))?;
        let blobs = self.dir.join("blobs");
        if blobs.is_dir() {
            let mut present = HashSet::new();
            let mut new_entry = false;
            let entries = std::fs::read_dir(&blobs).map_err(|e| err("list", &blobs, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| err("list", &blobs, e))?;
                let name = entry.file_name();
                if !self.synced_blobs.contains(&name) {
                    match File::open(entry.path()) {
                        Ok(f) => f.sync_data().map_err(|e| err("fsync", &entry.path(), e))?,
                        // Garbage-collected by sled meanwhile.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(err("open", &entry.path(), e)),
                    }
                    new_entry = true;
                }
                present.insert(name);
            }
            // Forget blobs sled removed: the set stays as small as the directory.
            self.synced_blobs = present;
            if new_entry {
                fsync_path(&blobs)?;
            }
        }
        let mut names = HashSet::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| err("list", &self.dir, e))?;
        for entry in entries {
            names.insert(entry.map_err(|e| err("list", &self.dir, e))?.file_name());
        }
        if names.iter().any(|n| !self.synced_names.contains(n)) {
            fsync_path(&self.dir)?;
        }
        self.synced_names = names;
        Ok(())
    }
}
