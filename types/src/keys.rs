//! Node keys: the ed25519 key that signs txs, blocks and votes and is also
//! the node's libp2p identity.
//!
//! Key file format: the 32-byte ed25519 seed as 64 hex characters and a
//! newline, file mode 0600. Nothing else is accepted.

use crate::hash::{ParseHexError, parse_hex_array};
use ed25519_dalek::Signer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// An ed25519 public key: an account id and a validator id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

/// Errors of key handling.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The key file does not hold a hex seed.
    #[error(
        "key file {path} is not a Kite key: expected 64 hex characters (an ed25519 seed), {detail}"
    )]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The key file is readable by other users.
    #[error(
        "key file {path} has mode {mode:o}; it must not be readable by others (chmod 600 {path})"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// The file's mode bits.
        mode: u32,
    },
    /// The file exists and overwriting was not asked for.
    #[error("key file {0} already exists (use --force to overwrite it)")]
    Exists(PathBuf),
}

impl PublicKey {
    /// Builds a key from a slice that must be exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Option<PublicKey> {
        <[u8; 32]>::try_from(b).ok().map(PublicKey)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The dalek verifying key, if these bytes are a valid curve point.
    pub fn verifying_key(&self) -> Option<ed25519_dalek::VerifyingKey> {
        ed25519_dalek::VerifyingKey::from_bytes(&self.0).ok()
    }

    /// The libp2p peer id of the node holding this key, when it is a valid key.
    pub fn peer_id(&self) -> Option<libp2p_identity::PeerId> {
        let pk = libp2p_identity::ed25519::PublicKey::try_from_bytes(&self.0).ok()?;
        Some(libp2p_identity::PublicKey::from(pk).to_peer_id())
    }

    /// The first 8 hex characters, for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl Signature {
    /// Builds a signature from a slice that must be exactly 64 bytes.
    pub fn from_slice(b: &[u8]) -> Option<Signature> {
        <[u8; 64]>::try_from(b).ok().map(Signature)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

impl FromStr for PublicKey {
    type Err = ParseHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex_array::<32>(s, "public key").map(PublicKey)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The node's ed25519 key pair.
#[derive(Clone)]
pub struct NodeKey {
    signing: ed25519_dalek::SigningKey,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({})", self.public())
    }
}

impl NodeKey {
    /// A new random key from the operating system's RNG.
    pub fn generate() -> NodeKey {
        let mut seed = [0u8; 32];
        rand::fill(&mut seed);
        NodeKey::from_seed(seed)
    }

    /// The key of a 32-byte seed (deterministic; tests and tools).
    pub fn from_seed(seed: [u8; 32]) -> NodeKey {
        NodeKey {
            signing: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The 32-byte seed.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// Signs a 32-byte digest (see [`crate::sign`] for what is hashed).
    pub fn sign_digest(&self, digest: &crate::Hash) -> Signature {
        Signature(self.signing.sign(digest.as_bytes()).to_bytes())
    }

    /// The libp2p identity of this key.
    pub fn libp2p_keypair(&self) -> libp2p_identity::Keypair {
        let mut seed = self.seed();
        match libp2p_identity::Keypair::ed25519_from_bytes(&mut seed) {
            Ok(k) => k,
            // Only a seed of the wrong length is refused; ours is 32 bytes.
            Err(_) => unreachable_keypair(),
        }
    }

    /// The libp2p peer id of this key.
    pub fn peer_id(&self) -> libp2p_identity::PeerId {
        self.libp2p_keypair().public().to_peer_id()
    }

    /// Reads a key file (64 hex characters). Refuses files readable by other users.
    pub fn load(path: &Path) -> Result<NodeKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > 1024 {
            return Err(KeyError::BadKeyFile {
                path: path.to_owned(),
                detail: format!("the file is {} bytes long", meta.len()),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let key = Self::from_hex(&text).map_err(|detail| KeyError::BadKeyFile {
            path: path.to_owned(),
            detail,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        Ok(key)
    }

    /// Parses the key file text.
    fn from_hex(text: &str) -> Result<NodeKey, String> {
        let t = text.trim();
        if t.len() != 64 {
            return Err(format!("found {} characters", t.len()));
        }
        let mut seed = [0u8; 32];
        hex::decode_to_slice(t, &mut seed).map_err(|e| format!("bad hex: {e}"))?;
        Ok(NodeKey::from_seed(seed))
    }

    /// Writes the key file with mode 0600. Refuses to replace an existing
    /// file unless `force`.
    pub fn save(&self, path: &Path, force: bool) -> Result<(), KeyError> {
        if path.exists() && !force {
            return Err(KeyError::Exists(path.to_owned()));
        }
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let text = format!("{}\n", hex::encode(self.seed()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(io)?;
        #[cfg(unix)]
        {
            // `mode` only applies on creation: tighten an existing file too.
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        use std::io::Write;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(())
    }
}

#[cold]
fn unreachable_keypair() -> libp2p_identity::Keypair {
    libp2p_identity::Keypair::generate_ed25519()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node_key");
        let key = NodeKey::generate();
        key.save(&path, false).unwrap();
        let loaded = NodeKey::load(&path).unwrap();
        assert_eq!(loaded.public(), key.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // No overwrite without force.
        assert!(matches!(
            NodeKey::generate().save(&path, false),
            Err(KeyError::Exists(_))
        ));
        let other = NodeKey::generate();
        other.save(&path, true).unwrap();
        assert_eq!(NodeKey::load(&path).unwrap().public(), other.public());
    }

    #[test]
    fn bad_key_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        for bad in ["", "abcd", &"zz".repeat(32), &"00".repeat(33)] {
            std::fs::write(&path, bad).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            let err = NodeKey::load(&path).unwrap_err();
            assert!(matches!(err, KeyError::BadKeyFile { .. }), "{bad:?}: {err}");
            assert!(err.to_string().contains("64 hex characters"));
        }
        assert!(matches!(
            NodeKey::load(&dir.path().join("missing")),
            Err(KeyError::Io { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        NodeKey::generate().save(&path, false).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            NodeKey::load(&path),
            Err(KeyError::Permissions { mode: 0o644, .. })
        ));
    }

    #[test]
    fn peer_id_matches_public_key() {
        let key = NodeKey::from_seed([7; 32]);
        assert_eq!(key.public().peer_id(), Some(key.peer_id()));
        // The libp2p key is the same ed25519 key.
        let lp = key.libp2p_keypair();
        let pk = lp.public().try_into_ed25519().unwrap();
        assert_eq!(pk.to_bytes(), key.public().0);
    }
}
