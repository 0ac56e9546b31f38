//! The promise file, `<home>/promise`: what this node promised at its
//! highest height (a validator's vote, a leader's proposals), the record of
//! the commit engine's `Output::Persist`.
//!
//! It lives beside the node key, outside the block store, on purpose: a
//! store restored from an older copy must not bring an older record back
//! with it, or the rollback would go unnoticed (see
//! `kite_consensus::Engine::restore`). The node reads it once at start and
//! rewrites it before every vote or proposal it sends.
//!
//! A write replaces the whole file atomically: the record goes to
//! `promise.tmp` in the same folder, is fsynced, renamed over `promise`,
//! and the folder is fsynced, so after a crash or power loss the file holds
//! the old record or the new one, never a mix (the fsyncs are skipped with
//! `durable = false`, the store's `store.durable`: then it survives a
//! process crash only). The file is the prost encoding of
//! [`kite_types::Promise`]; reading it is bounded by
//! [`MAX_PROMISE_BYTES`] and checks every field. A missing file is no
//! promise (a fresh home); an unreadable, empty, oversized or corrupt one
//! is an error, never ignored: the node refuses to start until the operator
//! has looked at it.

use kite_types::Promise;
use kite_types::promise::MAX_PROMISE_BYTES;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The file's name in the node's home.
pub const PROMISE_FILE: &str = "promise";
/// The temporary file a write goes through, in the same folder.
pub const PROMISE_TMP_FILE: &str = "promise.tmp";

/// What to tell the operator about a promise file that cannot be read.
const INVESTIGATE: &str = "the node does not start without knowing what it signed last: \
    investigate; move the file away only if this node's key surely never signed at a height \
    above its store's tip, otherwise start from a fresh home and let it sync";

/// Why the promise file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PromiseFileError {
    /// The OS refused a read.
    #[error("cannot read the promise file {path}: {source}; {INVESTIGATE}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is larger than any record.
    #[error(
        "the promise file {path} holds more than {MAX_PROMISE_BYTES} bytes: it is not a promise \
         record; {INVESTIGATE}"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file does not hold a valid record.
    #[error("the promise file {path} is corrupt ({why}); {INVESTIGATE}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A write (or its fsync or rename) failed.
    #[error("cannot write the promise file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The promise file of a home.
pub fn path_in(home: &Path) -> PathBuf {
    home.join(PROMISE_FILE)
}

/// Reads the record back: `None` when there is no file.
pub fn load(path: &Path) -> Result<Option<Promise>, PromiseFileError> {
    let read_err = |source| PromiseFileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(PromiseFileError::Corrupt {
            path: path.to_owned(),
            why: "not a regular file".into(),
        });
    }
    if meta.len() > MAX_PROMISE_BYTES as u64 {
        return Err(PromiseFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    // Bounded again while reading, in case the file grows meanwhile.
    let mut bytes = Vec::new();
    file.take(MAX_PROMISE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() > MAX_PROMISE_BYTES {
        return Err(PromiseFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    if bytes.is_empty() {
        // No record is empty (its height is at least 1).
        return Err(PromiseFileError::Corrupt {
            path: path.to_owned(),
            why: "it is empty".into(),
        });
    }
    Promise::decode(&bytes)
        .map(Some)
        .map_err(|e| PromiseFileError::Corrupt {
            path: path.to_owned(),
            why: e.to_string(),
        })
}

/// Replaces the record atomically (see the module docs); with `durable`,
/// returns once it survives power loss.
pub fn save(path: &Path, promise: &Promise, durable: bool) -> Result<(), PromiseFileError> {
    let write_err = |source| PromiseFileError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(PROMISE_TMP_FILE);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(write_err)?;
    f.write_all(&promise.encode()).map_err(write_err)?;
    if durable {
        f.sync_all().map_err(write_err)?;
    }
    drop(f);
    std::fs::rename(&tmp, path).map_err(write_err)?;
    if durable {
        sync_dir(&dir).map_err(write_err)?;
    }
    Ok(())
}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows cannot open a folder as a file; its renames are journaled.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use kite_types::{Hash, NodeKey, Vote};

    fn voted(height: u64) -> Promise {
        let k = NodeKey::from_seed([5; 32]);
        Promise {
            height,
            vote: Some(Vote::ack(
                &k,
                "kite-t",
                height,
                Hash::digest(&height.to_le_bytes()),
                Hash::digest(b"app"),
            )),
            proposed: Vec::new(),
            newest_ts: 0,
            term: 0,
            block: None,
            credential: None,
        }
    }

    #[test]
    fn missing_file_is_no_promise() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&path_in(dir.path())).unwrap().is_none());
    }

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        for durable in [true, false] {
            let first = voted(7);
            save(&path, &first, durable).unwrap();
            assert_eq!(load(&path).unwrap(), Some(first));
            let second = Promise {
                height: 8,
                vote: None,
                proposed: vec![Hash::digest(b"a"), Hash::digest(b"b")],
                newest_ts: 0,
                term: 0,
                block: None,
                credential: None,
            };
            save(&path, &second, durable).unwrap();
            assert_eq!(load(&path).unwrap(), Some(second));
            // The temporary file is gone and nothing else was left behind.
            let names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names, vec![PROMISE_FILE.to_owned()]);
        }
    }

    #[test]
    fn a_leftover_temporary_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        save(&path, &voted(3), true).unwrap();
        // A crash between the write of the temporary file and the rename.
        std::fs::write(dir.path().join(PROMISE_TMP_FILE), b"half a rec").unwrap();
        assert_eq!(load(&path).unwrap(), Some(voted(3)));
        save(&path, &voted(4), true).unwrap();
        assert_eq!(load(&path).unwrap(), Some(voted(4)));
        assert!(!dir.path().join(PROMISE_TMP_FILE).exists());
    }

    #[test]
    fn corrupt_or_empty_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let mut bytes = voted(9).encode();
        bytes.truncate(bytes.len() / 2);
        for bad in [bytes, vec![0xff; 16], Vec::new()] {
            std::fs::write(&path, &bad).unwrap();
            let e = load(&path).unwrap_err();
            assert!(matches!(e, PromiseFileError::Corrupt { .. }), "{e}");
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("fresh home"), "{msg}");
        }
    }

    #[test]
    fn oversized_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        std::fs::write(&path, vec![0u8; MAX_PROMISE_BYTES + 1]).unwrap();
        let e = load(&path).unwrap_err();
        assert!(matches!(e, PromiseFileError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn a_folder_in_its_place_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        std::fs::create_dir(&path).unwrap();
        assert!(load(&path).is_err());
        assert!(matches!(
            save(&path, &voted(1), true),
            Err(PromiseFileError::Write { .. })
        ));
    }

    /// The cost of one durable write on this machine:
    /// `cargo test -p kite-node --lib promise_file::tests::durable_write_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn durable_write_cost() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        for durable in [true, false] {
            let mut us: Vec<u128> = (0..200u64)
                .map(|h| {
                    let p = voted(h + 1);
                    let t = std::time::Instant::now();
                    save(&path, &p, durable).unwrap();
                    t.elapsed().as_micros()
                })
                .collect();
            us.sort_unstable();
            println!(
                "promise write (durable = {durable}, {} bytes): median {} us, p90 {} us, max {} us over {} writes",
                voted(1).encode().len(),
                us[us.len() / 2],
                us[us.len() * 9 / 10],
                us[us.len() - 1],
                us.len()
            );
        }
    }
}
