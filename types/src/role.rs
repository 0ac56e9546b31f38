//! What a node does in the network: the one role type the engine, the
//! node's configuration and its command line share.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a node does in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The genesis leader: proposes blocks, counts votes, commits on a
    /// quorum of ACKs, announces.
    #[default]
    Leader,
    /// A genesis validator: checks and executes proposals, votes ACK/NACK.
    Validator,
    /// A non-voting node (sentry, archive): follows committed blocks.
    Sentry,
}

impl Role {
    /// The lowercase name (config files, flags, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Validator => "validator",
            Role::Sentry => "sentry",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "leader" => Ok(Role::Leader),
            "validator" => Ok(Role::Validator),
            "sentry" => Ok(Role::Sentry),
            other => Err(format!(
                "unknown role {other:?}: expected leader, validator or sentry"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in [Role::Leader, Role::Validator, Role::Sentry] {
            assert_eq!(r.to_string().parse::<Role>(), Ok(r));
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        assert!(
            "archive"
                .parse::<Role>()
                .unwrap_err()
                .contains("expected leader")
        );
    }
}
