//! `/kite/status/1.0.0`: a peer's chain, height, role and round state.
//!
//! 1. Initiator sends `StatusRequest{}` (an empty message: the frame is the
//!    single byte `0x00`).
//! 2. Handler answers `Status{...}` and closes.
//! 3. Initiator checks the fields and closes.
//!
//! Checked here: the chain id is valid, hashes are 32 bytes (the proposal
//! hash 0 or 32), the step name is cut to [`MAX_STEP_LEN`]. Checked by the
//! node: that the chain id and genesis hash are its own (else it drops the
//! peer), and what to do with the heights (start block sync).

use crate::framing::{close, read_msg, write_msg};
use crate::limits::{CONTROL_DEADLINE, CONTROL_MAX, MAX_STEP_LEN, truncate};
use crate::{ProtocolError, proto};
use async_trait::async_trait;
use futures::io::{AsyncRead, AsyncWrite};
use kite_types::Hash;
use kite_types::codec::hash_field;

/// The protocol id.
pub const PROTOCOL: &str = "/kite/status/1.0.0";

/// A role as a peer states it on the wire ([`kite_types::Role`] plus
/// `Unknown` for a role not said or not known to this build).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Role {
    /// Not said, or a role this build does not know.
    #[default]
    Unknown,
    /// The leader.
    Leader,
    /// A voting validator.
    Validator,
    /// A non-voting full node (sentry, archival).
    Sentry,
}

impl From<kite_types::Role> for Role {
    /// What a node says of its own role.
    fn from(r: kite_types::Role) -> Role {
        match r {
            kite_types::Role::Leader => Role::Leader,
            kite_types::Role::Validator => Role::Validator,
            kite_types::Role::Sentry => Role::Sentry,
        }
    }
}

impl Role {
    fn to_proto(self) -> proto::Role {
        match self {
            Role::Unknown => proto::Role::Unspecified,
            Role::Leader => proto::Role::Leader,
            Role::Validator => proto::Role::Validator,
            Role::Sentry => proto::Role::Sentry,
        }
    }

    fn from_i32(v: i32) -> Role {
        match proto::Role::try_from(v) {
            Ok(proto::Role::Leader) => Role::Leader,
            Ok(proto::Role::Validator) => Role::Validator,
            Ok(proto::Role::Sentry) => Role::Sentry,
            _ => Role::Unknown,
        }
    }
}

/// The consensus round state at the height being decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundInfo {
    /// Height being decided.
    pub height: u64,
    /// Proposals made at this height.
    pub round: u32,
    /// Step name, e.g. "idle", "proposed", "committing".
    pub step: String,
    /// The block being voted on, if any.
    pub proposal_hash: Option<Hash>,
}

/// A node's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusInfo {
    /// The chain.
    pub chain_id: String,
    /// Highest committed height (0 before the first block).
    pub best_height: u64,
    /// Its block hash (zero before the first block).
    pub best_hash: Hash,
    /// App hash after the best block.
    pub app_hash: Hash,
    /// The node's role.
    pub role: Role,
    /// The round state, if the node takes part in consensus.
    pub round: Option<RoundInfo>,
    /// Hash of the genesis document.
    pub genesis_hash: Hash,
    /// Whether the node runs blocks-only.
    pub blocks_only: bool,
    /// Whether the node is catching up by block sync.
    pub syncing: bool,
    /// The height block sync aims at (0 when not syncing).
    pub sync_target: u64,
}

impl StatusInfo {
    /// The wire form.
    pub fn to_proto(&self) -> proto::Status {
        proto::Status {
            chain_id: self.chain_id.clone(),
            best_height: self.best_height,
            best_hash: self.best_hash.0.to_vec(),
            app_hash: self.app_hash.0.to_vec(),
            role: self.role.to_proto() as i32,
            round: self.round.as_ref().map(|r| proto::RoundState {
                height: r.height,
                round: r.round,
                step: truncate(&r.step, MAX_STEP_LEN),
                proposal_hash: r.proposal_hash.map(|h| h.0.to_vec()).unwrap_or_default(),
            }),
            genesis_hash: self.genesis_hash.0.to_vec(),
            blocks_only: self.blocks_only,
            syncing: self.syncing,
            sync_target: self.sync_target,
        }
    }

    /// Decodes and checks the wire form.
    pub fn from_proto(p: &proto::Status) -> Result<StatusInfo, ProtocolError> {
        const W: &str = "Status";
        kite_types::validate_chain_id(&p.chain_id).map_err(|d| ProtocolError::invalid(W, d))?;
        let round = match &p.round {
            None => None,
            Some(r) => Some(RoundInfo {
                height: r.height,
                round: r.round,
                step: truncate(&r.step, MAX_STEP_LEN),
                proposal_hash: if r.proposal_hash.is_empty() {
                    None
                } else {
                    Some(hash_field(W, "round.proposal_hash", &r.proposal_hash)?)
                },
            }),
        };
        Ok(StatusInfo {
            chain_id: p.chain_id.clone(),
            best_height: p.best_height,
            best_hash: hash_field(W, "best_hash", &p.best_hash)?,
            app_hash: hash_field(W, "app_hash", &p.app_hash)?,
            role: Role::from_i32(p.role),
            round,
            genesis_hash: hash_field(W, "genesis_hash", &p.genesis_hash)?,
            blocks_only: p.blocks_only,
            syncing: p.syncing,
            sync_target: p.sync_target,
        })
    }
}

/// What the node provides to serve status requests.
#[async_trait]
pub trait StatusSource: Send + Sync {
    /// The node's current status.
    async fn status(&self) -> StatusInfo;
}

/// Asks the peer for its status.
pub async fn request<S>(mut stream: S) -> Result<StatusInfo, ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    write_msg(&mut stream, &proto::StatusRequest {}, CONTROL_DEADLINE).await?;
    let p: proto::Status = read_msg(&mut stream, CONTROL_MAX, CONTROL_DEADLINE).await?;
    let _ = close(&mut stream, CONTROL_DEADLINE).await;
    StatusInfo::from_proto(&p)
}

/// Answers one status request.
pub async fn serve<S>(mut stream: S, source: &impl StatusSource) -> Result<(), ProtocolError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let _: proto::StatusRequest = read_msg(&mut stream, CONTROL_MAX, CONTROL_DEADLINE).await?;
    let status = source.status().await;
    write_msg(&mut stream, &status.to_proto(), CONTROL_DEADLINE).await?;
    close(&mut stream, CONTROL_DEADLINE).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    struct Node(StatusInfo);

    #[async_trait]
    impl StatusSource for Node {
        async fn status(&self) -> StatusInfo {
            self.0.clone()
        }
    }

    fn status() -> StatusInfo {
        StatusInfo {
            chain_id: CHAIN.into(),
            best_height: 42,
            best_hash: Hash::digest(b"best"),
            app_hash: Hash::digest(b"app"),
            role: Role::Validator,
            round: Some(RoundInfo {
                height: 43,
                round: 2,
                step: "proposed".into(),
                proposal_hash: Some(Hash::digest(b"p")),
            }),
            genesis_hash: Hash::digest(b"genesis"),
            blocks_only: false,
            syncing: true,
            sync_target: 50,
        }
    }

    #[tokio::test]
    async fn round_trip() {
        for s in [
            status(),
            StatusInfo {
                chain_id: CHAIN.into(),
                role: Role::Sentry,
                blocks_only: true,
                ..Default::default()
            },
        ] {
            let node = Node(s.clone());
            let (a, b) = pipe();
            let (got, served) = tokio::join!(request(a), serve(b, &node));
            served.unwrap();
            assert_eq!(got.unwrap(), s);
        }
    }

    async fn ask(script: Vec<u8>, close: bool) -> Result<StatusInfo, ProtocolError> {
        with_script(script, close, request).await
    }

    #[tokio::test]
    async fn forged_and_malformed_statuses() {
        let mut p = status().to_proto();
        p.chain_id = "bad chain!".into();
        assert_err!(ask(frame(&p), true).await, ProtocolError::Invalid { .. });
        let mut p = status().to_proto();
        p.best_hash = vec![1; 31];
        assert_err!(ask(frame(&p), true).await, ProtocolError::Decode(_));
        let mut p = status().to_proto();
        if let Some(r) = p.round.as_mut() {
            r.proposal_hash = vec![1; 3];
            r.step = "x".repeat(1000);
        }
        assert_err!(ask(frame(&p), true).await, ProtocolError::Decode(_));
        // Unknown roles and long steps are tolerated.
        let mut p = status().to_proto();
        p.role = 77;
        if let Some(r) = p.round.as_mut() {
            r.step = "x".repeat(1000);
        }
        let s = ask(frame(&p), true).await.unwrap();
        assert_eq!(s.role, Role::Unknown);
        assert_eq!(s.round.map(|r| r.step.len()), Some(MAX_STEP_LEN));
    }

    #[tokio::test]
    async fn bad_bytes() {
        assert_err!(
            ask(prefix(5000), false).await,
            ProtocolError::TooLarge { .. }
        );
        assert_err!(ask(garbage_frame(), true).await, ProtocolError::Decode(_));
        assert_err!(
            ask(cut(frame(&status().to_proto()), 30), true).await,
            ProtocolError::Truncated { .. }
        );
        assert_err!(ask(Vec::new(), true).await, ProtocolError::Closed { .. });
        let node = Node(status());
        let serve_script = |script: Vec<u8>, close: bool| {
            let node = &node;
            async move { with_script(script, close, |s| async move { serve(s, node).await }).await }
        };
        assert_err!(
            serve_script(prefix(5000), false).await,
            ProtocolError::TooLarge { .. }
        );
        assert_err!(
            serve_script(garbage_frame(), true).await,
            ProtocolError::Decode(_)
        );
        assert_err!(
            serve_script(vec![0x03, 0x08], true).await,
            ProtocolError::Truncated { .. }
        );
        assert!(serve_script(vec![0x00], true).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn drip_fed() {
        let r = with_drip(Vec::new(), frame(&status().to_proto()), request).await;
        assert_err!(r, ProtocolError::Timeout { .. });
        let node = Node(status());
        let slow = padded_frame(&proto::StatusRequest {}, 20);
        let r = with_drip(Vec::new(), slow, |s| async { serve(s, &node).await }).await;
        assert_err!(r, ProtocolError::Timeout { .. });
    }
}
