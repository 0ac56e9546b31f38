//! The one error type of every exchange, and how much each error says about
//! the peer's behaviour.

use kite_types::DecodeError;
use std::time::Duration;

/// Why an exchange failed.
///
/// Every variant except [`ProtocolError::Io`], [`ProtocolError::Closed`] and
/// [`ProtocolError::Refused`] blames the peer; see
/// [`ProtocolError::misbehaviour`].
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The stream failed (connection reset, transport error).
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer did not deliver (or accept) a message within its deadline.
    #[error("timed out after {deadline:?} on {what}")]
    Timeout {
        /// The message being read or written.
        what: &'static str,
        /// The deadline that expired.
        deadline: Duration,
    },
    /// A length prefix announced more bytes than the message may have.
    #[error("{what} is {size} bytes, the maximum is {max}")]
    TooLarge {
        /// The message kind.
        what: &'static str,
        /// The announced size.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid message (bad length prefix, bad protobuf,
    /// a field of the wrong size).
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    /// The message decodes but its content is forged or does not match the
    /// exchange (wrong hash, tx root mismatch, too many items, ...).
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// The message kind.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The exchange was declined explicitly (for the host's use, e.g. when
    /// it does not serve a protocol in its role or is overloaded).
    #[error("refused: {0}")]
    Refused(String),
    /// The peer closed the stream cleanly where a message should start.
    #[error("peer closed the stream before sending {what}")]
    Closed {
        /// The message expected.
        what: &'static str,
    },
    /// The peer closed the stream in the middle of a message.
    #[error("peer closed the stream in the middle of {what}")]
    Truncated {
        /// The message being read.
        what: &'static str,
    },
}

/// Penalty scores of [`ProtocolError::misbehaviour`]. A host that bans at
/// [`score::BAN`] bans on the first forged message, on the second oversized
/// or garbage message, and after ten timeouts.
pub mod score {
    /// Score at which the host should ban a peer.
    pub const BAN: u32 = 100;
    /// Forged or mismatched content.
    pub const INVALID: u32 = 100;
    /// Oversized or undecodable message.
    pub const GARBAGE: u32 = 50;
    /// Message cut short by a clean close.
    pub const TRUNCATED: u32 = 20;
    /// Message not delivered or not accepted in time.
    pub const TIMEOUT: u32 = 10;
}

// One forged message is enough to ban.
const _: () = assert!(score::INVALID >= score::BAN);

impl ProtocolError {
    /// Shorthand for [`ProtocolError::Invalid`].
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> ProtocolError {
        ProtocolError::Invalid {
            what,
            detail: detail.into(),
        }
    }

    /// The penalty this error earns the peer, if it is the peer's fault.
    ///
    /// A slow peer (timeout), a peer that sends too much, garbage or a
    /// truncated message, and above all a peer that sends forged content get
    /// points ([`score`]); a transport error, a clean close between messages
    /// or an explicit refusal get none.
    pub fn misbehaviour(&self) -> Option<u32> {
        match self {
            ProtocolError::Invalid { .. } => Some(score::INVALID),
            ProtocolError::TooLarge { .. } | ProtocolError::Decode(_) => Some(score::GARBAGE),
            ProtocolError::Truncated { .. } => Some(score::TRUNCATED),
            ProtocolError::Timeout { .. } => Some(score::TIMEOUT),
            ProtocolError::Io(_) | ProtocolError::Refused(_) | ProtocolError::Closed { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores() {
        assert_eq!(
            ProtocolError::invalid("x", "forged").misbehaviour(),
            Some(score::INVALID)
        );
        assert_eq!(ProtocolError::Refused("busy".into()).misbehaviour(), None);
        assert_eq!(ProtocolError::Closed { what: "x" }.misbehaviour(), None);
        assert_eq!(
            ProtocolError::Io(std::io::Error::other("reset")).misbehaviour(),
            None
        );
        assert_eq!(
            ProtocolError::Timeout {
                what: "x",
                deadline: Duration::from_secs(1)
            }
            .misbehaviour(),
            Some(score::TIMEOUT)
        );
        let garbage = ProtocolError::Decode(DecodeError::invalid("x", "y"));
        assert_eq!(garbage.misbehaviour(), Some(score::GARBAGE));
    }
}
