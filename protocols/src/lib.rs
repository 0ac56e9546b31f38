//! Kite p2p stream protocols: framing, protocol ids, and one initiator/handler pair per protocol.

#![forbid(unsafe_code)]
