//! The genesis file (`genesis.json`): the chain's identity, leader,
//! validators, initial balances and consensus parameters. Loaded with a size
//! cap and validated, with an error that names the problem.

use crate::{Hash, PublicKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Largest genesis file accepted.
pub const MAX_GENESIS_BYTES: u64 = 64 * 1024 * 1024;
/// Most validators a chain may have.
pub const MAX_VALIDATORS: usize = 1000;

/// One validator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validator {
    /// Its ed25519 key (also its libp2p identity).
    pub pub_key: PublicKey,
    /// Voting power, at least 1.
    pub power: u64,
    /// A name for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// An initial balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    /// The account.
    pub account: PublicKey,
    /// Its balance at genesis.
    pub balance: u64,
}

/// The share of voting power that commits a block: strictly more than
/// `num/den` of the total. Written as `"1/2"` in JSON. Between 1/2 and 1
/// (exclusive), so two different blocks never both reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    /// Numerator.
    pub num: u64,
    /// Denominator.
    pub den: u64,
}

impl Default for Quorum {
    fn default() -> Self {
        Quorum { num: 1, den: 2 }
    }
}

impl Quorum {
    /// Whether `power` out of `total` is strictly more than the fraction.
    pub fn reached(&self, power: u64, total: u64) -> bool {
        u128::from(power) * u128::from(self.den) > u128::from(total) * u128::from(self.num)
    }

    fn validate(&self) -> Result<(), String> {
        if self.den == 0 || self.num * 2 < self.den || self.num >= self.den {
            return Err(format!(
                "quorum {self} must be a fraction from 1/2 up to (not including) 1"
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

impl FromStr for Quorum {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (n, d) = s
            .split_once('/')
            .ok_or_else(|| format!("quorum {s:?} is not a fraction like \"2/3\""))?;
        let num = n
            .trim()
            .parse()
            .map_err(|_| format!("quorum {s:?}: bad numerator"))?;
        let den = d
            .trim()
            .parse()
            .map_err(|_| format!("quorum {s:?}: bad denominator"))?;
        Ok(Quorum { num, den })
    }
}

impl Serialize for Quorum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Quorum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Serde for durations as human text ("1s", "500ms").
pub mod human_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes "1s", "250ms", ...
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads "1s", "250ms", "0s", ...
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("bad duration {s:?}: {e}")))
    }
}

/// The validator set, sorted by key, with fast lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    total: u64,
}

impl ValidatorSet {
    /// Builds a set (sorted by key). Duplicates are the caller's to refuse.
    pub fn new(mut validators: Vec<Validator>) -> ValidatorSet {
        validators.sort_by_key(|v| v.pub_key);
        let total = validators
            .iter()
            .fold(0u64, |t, v| t.saturating_add(v.power));
        ValidatorSet { validators, total }
    }

    /// The validators, sorted by key.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.validators.len()
    }

    /// Whether there is no validator.
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// Sum of the voting power.
    pub fn total_power(&self) -> u64 {
        self.total
    }

    /// The voting power of `key`, if it is a validator.
    pub fn power_of(&self, key: &PublicKey) -> Option<u64> {
        self.validators
            .binary_search_by(|v| v.pub_key.cmp(key))
            .ok()
            .map(|i| self.validators[i].power)
    }

    /// Whether `key` is a validator.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.power_of(key).is_some()
    }

    /// Checks that `signers` are distinct validators whose power reaches
    /// `quorum` (the structure of a commit info or a credential; `what`
    /// names the signed items in errors, e.g. "votes").
    pub fn check_quorum<'a>(
        &self,
        signers: impl Iterator<Item = &'a PublicKey>,
        quorum: Quorum,
        what: &str,
    ) -> Result<(), String> {
        let mut seen = HashSet::new();
        let mut power: u64 = 0;
        for k in signers {
            let Some(p) = self.power_of(k) else {
                return Err(format!("{} is not a validator", k.short()));
            };
            if !seen.insert(*k) {
                return Err(format!("two {what} from {}", k.short()));
            }
            power = power.saturating_add(p);
        }
        if !quorum.reached(power, self.total_power()) {
            return Err(format!(
                "{what} carry power {power} of {}, short of the quorum {quorum}",
                self.total_power()
            ));
        }
        Ok(())
    }

    /// `sha256("kite/valset" || for each validator sorted by key: key || be64(power))`.
    pub fn hash(&self) -> Hash {
        let mut parts: Vec<Vec<u8>> = vec![b"kite/valset".to_vec()];
        for v in &self.validators {
            let mut p = v.pub_key.0.to_vec();
            p.extend_from_slice(&v.power.to_be_bytes());
            parts.push(p);
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        Hash::digest_parts(&refs)
    }
}

/// The genesis document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// The chain id: 1-50 characters of `[A-Za-z0-9._-]`.
    pub chain_id: String,
    /// Height of the first block (usually 1).
    #[serde(default = "one")]
    pub initial_height: u64,
    /// Genesis time, unix milliseconds.
    #[serde(default)]
    pub genesis_time_ms: u64,
    /// The leader: the only key whose proposals count.
    pub leader: PublicKey,
    /// The validators and their voting power.
    pub validators: Vec<Validator>,
    /// Initial balances.
    #[serde(default)]
    pub allocations: Vec<Allocation>,
    /// Largest encoded block.
    #[serde(default = "default_max_block_bytes")]
    pub max_block_bytes: u64,
    /// Largest encoded tx.
    #[serde(default = "default_max_tx_bytes")]
    pub max_tx_bytes: u64,
    /// Share of voting power that commits a block.
    #[serde(default)]
    pub quorum: Quorum,
    /// How long the leader waits with txs pending before proposing a
    /// block that is not full (counted from the previous proposal while
    /// txs keep coming: a block is never proposed more often than this
    /// unless full, and under steady load it goes out at the previous
    /// block's commit once this has passed since its proposal).
    #[serde(with = "human_duration", default = "default_propose_timeout")]
    pub propose_timeout: Duration,
    /// How long the leader waits with no tx before proposing an empty
    /// block; "0s" means never (no empty blocks).
    #[serde(with = "human_duration", default = "default_empty_block_timeout")]
    pub empty_block_timeout: Duration,
}

fn one() -> u64 {
    1
}
fn default_max_block_bytes() -> u64 {
    4 * 1024 * 1024
}
fn default_max_tx_bytes() -> u64 {
    64 * 1024
}
fn default_propose_timeout() -> Duration {
    Duration::from_millis(200)
}
fn default_empty_block_timeout() -> Duration {
    Duration::from_secs(1)
}

/// Why a genesis file was refused.
#[derive(Debug, thiserror::Error)]
pub enum GenesisError {
    /// The file could not be read or written.
    #[error("genesis file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_GENESIS_BYTES`].
    #[error("genesis file {path} is {size} bytes, the maximum is {MAX_GENESIS_BYTES}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Not valid JSON for a genesis.
    #[error("genesis file {path} is not valid: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde's message (with line and column).
        detail: String,
    },
    /// Parsed but inconsistent.
    #[error("invalid genesis: {0}")]
    Invalid(String),
}

impl Genesis {
    /// A single-validator genesis where `leader` is leader and only
    /// validator, and `funded` holds `balance`.
    pub fn single(chain_id: &str, leader: PublicKey, funded: PublicKey, balance: u64) -> Genesis {
        Genesis {
            chain_id: chain_id.to_owned(),
            initial_height: 1,
            genesis_time_ms: 0,
            leader,
            validators: vec![Validator {
                pub_key: leader,
                power: 1,
                name: "node0".into(),
            }],
            allocations: vec![Allocation {
                account: funded,
                balance,
            }],
            max_block_bytes: default_max_block_bytes(),
            max_tx_bytes: default_max_tx_bytes(),
            quorum: Quorum::default(),
            propose_timeout: default_propose_timeout(),
            empty_block_timeout: default_empty_block_timeout(),
        }
    }

    /// Checks every rule; the error names the first broken one.
    pub fn validate(&self) -> Result<(), GenesisError> {
        let bad = |m: String| Err(GenesisError::Invalid(m));
        if let Err(e) = crate::validate_chain_id(&self.chain_id) {
            return bad(e);
        }
        if self.initial_height == 0 {
            return bad("initial_height must be at least 1".into());
        }
        if self.validators.is_empty() {
            return bad("no validators".into());
        }
        if self.validators.len() > MAX_VALIDATORS {
            return bad(format!(
                "{} validators, at most {MAX_VALIDATORS} are supported",
                self.validators.len()
            ));
        }
        let mut seen = HashSet::new();
        let mut total: u64 = 0;
        for v in &self.validators {
            if v.power == 0 {
                return bad(format!("validator {} has zero voting power", v.pub_key));
            }
            if crate::sign::key_allowed(v.pub_key.as_bytes()).is_none() {
                return bad(format!(
                    "validator {} is not a valid ed25519 key under the signature rule (a \
                     canonical point of the prime-order subgroup, not the identity): its votes \
                     could never verify",
                    v.pub_key
                ));
            }
            if !seen.insert(v.pub_key) {
                return bad(format!("validator {} is listed twice", v.pub_key));
            }
            total = total
                .checked_add(v.power)
                .ok_or_else(|| GenesisError::Invalid("total voting power overflows".into()))?;
        }
        if !seen.contains(&self.leader) {
            return bad(format!("leader {} is not a validator", self.leader));
        }
        let mut accounts = HashSet::new();
        for a in &self.allocations {
            if !accounts.insert(a.account) {
                return bad(format!("account {} is allocated twice", a.account));
            }
        }
        if self.max_tx_bytes == 0 || self.max_block_bytes < self.max_tx_bytes {
            return bad(format!(
                "max_tx_bytes ({}) must be at least 1 and at most max_block_bytes ({})",
                self.max_tx_bytes, self.max_block_bytes
            ));
        }
        if self.max_block_bytes > 64 * 1024 * 1024 {
            return bad(format!(
                "max_block_bytes {} is above the 64 MiB protocol limit",
                self.max_block_bytes
            ));
        }
        self.quorum.validate().map_err(GenesisError::Invalid)?;
        Ok(())
    }

    /// Reads and validates a genesis file.
    pub fn load(path: &Path) -> Result<Genesis, GenesisError> {
        let io = |source| GenesisError::Io {
            path: path.to_owned(),
            source,
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_GENESIS_BYTES {
            return Err(GenesisError::TooLarge {
                path: path.to_owned(),
                size,
            });
        }
        let text = std::fs::read(path).map_err(io)?;
        Self::from_json(&text).map_err(|e| match e {
            GenesisError::Parse { detail, .. } => GenesisError::Parse {
                path: path.to_owned(),
                detail,
            },
            other => other,
        })
    }

    /// Parses and validates genesis JSON.
    pub fn from_json(text: &[u8]) -> Result<Genesis, GenesisError> {
        let g: Genesis = serde_json::from_slice(text).map_err(|e| GenesisError::Parse {
            path: PathBuf::new(),
            detail: e.to_string(),
        })?;
        g.validate()?;
        Ok(g)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes the file.
    pub fn save(&self, path: &Path) -> Result<(), GenesisError> {
        std::fs::write(path, self.to_json() + "\n").map_err(|source| GenesisError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// The genesis hash: sha256 of the compact JSON encoding of this
    /// document (fields in declaration order). Nodes compare it in status
    /// exchanges to refuse peers of another genesis.
    pub fn hash(&self) -> Hash {
        Hash::digest(&serde_json::to_vec(self).unwrap_or_default())
    }

    /// The validator set.
    pub fn validator_set(&self) -> ValidatorSet {
        ValidatorSet::new(self.validators.clone())
    }

    /// Who leads each term: the validators in key order from the genesis
    /// leader ([`crate::LeaderSchedule`]).
    pub fn leader_schedule(&self) -> crate::LeaderSchedule {
        crate::LeaderSchedule::new(&self.validator_set(), self.leader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeKey;

    fn key(i: u8) -> PublicKey {
        NodeKey::from_seed([i; 32]).public()
    }

    fn good() -> Genesis {
        let mut g = Genesis::single("kite-test", key(1), key(9), 1_000);
        g.validators.push(Validator {
            pub_key: key(2),
            power: 2,
            name: "node1".into(),
        });
        g
    }

    #[test]
    fn json_round_trip() {
        let g = good();
        let back = Genesis::from_json(g.to_json().as_bytes()).unwrap();
        assert_eq!(back, g);
        assert_eq!(back.hash(), g.hash());
        assert!(g.to_json().contains("\"quorum\": \"1/2\""));
        assert!(g.to_json().contains("\"propose_timeout\": \"200ms\""));
    }

    fn err_of(g: &Genesis) -> String {
        g.validate().unwrap_err().to_string()
    }

    #[test]
    fn validation_errors() {
        let mut g = good();
        g.validators.push(g.validators[0].clone());
        assert!(err_of(&g).contains("listed twice"));

        let mut g = good();
        g.validators[1].power = 0;
        assert!(err_of(&g).contains("zero voting power"));

        let mut g = good();
        g.leader = key(5);
        assert!(err_of(&g).contains("not a validator"));

        // Keys the signature rule refuses: votes under them never verify.
        for kind in [
            crate::testing::Forge::MixedOrderKey,
            crate::testing::Forge::SmallOrderKey,
            crate::testing::Forge::NonCanonicalKey,
        ] {
            let mut g = good();
            let k = crate::NodeKey::from_seed([7; 32]);
            g.validators[1].pub_key = crate::testing::forged_key(&k, kind);
            assert!(err_of(&g).contains("signature rule"), "{kind:?}");
        }

        let mut g = good();
        g.chain_id = "bad id!".into();
        assert!(err_of(&g).contains("chain id"));

        let mut g = good();
        g.chain_id = String::new();
        assert!(err_of(&g).contains("empty"));

        let mut g = good();
        g.quorum = Quorum { num: 1, den: 3 };
        assert!(err_of(&g).contains("quorum"));

        let mut g = good();
        g.validators.clear();
        assert!(err_of(&g).contains("no validators"));

        let mut g = good();
        g.allocations.push(g.allocations[0].clone());
        assert!(err_of(&g).contains("allocated twice"));

        let mut g = good();
        g.max_tx_bytes = g.max_block_bytes + 1;
        assert!(err_of(&g).contains("max_tx_bytes"));
    }

    #[test]
    fn parse_errors_are_clear() {
        let e = Genesis::from_json(b"{").unwrap_err().to_string();
        assert!(e.contains("not valid"), "{e}");
        let mut v: serde_json::Value = serde_json::from_str(&good().to_json()).unwrap();
        v["surprise"] = serde_json::json!(1);
        let e = Genesis::from_json(v.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("surprise"), "{e}");
        v = serde_json::from_str(&good().to_json()).unwrap();
        v["leader"] = serde_json::json!("nothex");
        let e = Genesis::from_json(v.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("public key"), "{e}");
    }

    #[test]
    fn load_caps_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("genesis.json");
        good().save(&p).unwrap();
        assert_eq!(Genesis::load(&p).unwrap(), good());
        std::fs::write(&p, "[]").unwrap();
        let e = Genesis::load(&p).unwrap_err().to_string();
        assert!(e.contains("genesis.json"), "{e}");
    }

    #[test]
    fn quorum_math() {
        let q = Quorum::default();
        assert!(!q.reached(2, 4));
        assert!(q.reached(3, 4));
        assert!(q.reached(1, 1));
        let q: Quorum = "2/3".parse().unwrap();
        assert!(!q.reached(2, 3));
        assert!(q.reached(3, 4));
        assert!("x".parse::<Quorum>().is_err());
    }

    #[test]
    fn validator_set_lookup_and_hash() {
        let g = good();
        let set = g.validator_set();
        assert_eq!(set.total_power(), 3);
        assert_eq!(set.power_of(&key(2)), Some(2));
        assert_eq!(set.power_of(&key(3)), None);
        // Order of the genesis list does not change the hash.
        let mut g2 = g.clone();
        g2.validators.reverse();
        assert_eq!(g2.validator_set().hash(), set.hash());
        let mut g3 = g.clone();
        g3.validators[1].power = 3;
        assert_ne!(g3.validator_set().hash(), set.hash());
    }
}
