//! The node key as a libp2p identity.
//!
//! `kite-types` exposes its key through `libp2p-identity` 0.2 while libp2p
//! 0.57 uses `libp2p-identity` 0.3: the types differ, the bytes do not. These
//! helpers rebuild the 0.3 keypair from the node's ed25519 seed and convert
//! public keys to the peer ids libp2p 0.57 uses.

use libp2p::PeerId;
use libp2p::identity::{DecodingError, Keypair};

/// The libp2p keypair of an ed25519 seed.
///
/// Only a seed of the wrong length is refused, so with 32 bytes this does not
/// fail; the error is kept rather than hidden.
pub fn keypair_from_seed(seed: [u8; 32]) -> Result<Keypair, DecodingError> {
    let mut seed = seed;
    Keypair::ed25519_from_bytes(&mut seed)
}

/// The libp2p keypair of the node key (the node's libp2p identity).
pub fn keypair(key: &kite_types::NodeKey) -> Result<Keypair, DecodingError> {
    keypair_from_seed(key.seed())
}

/// The libp2p peer id of the node key.
pub fn local_peer_id(key: &kite_types::NodeKey) -> Result<PeerId, DecodingError> {
    Ok(keypair(key)?.public().to_peer_id())
}

/// The peer id of the node holding `pk` (a validator), when it is a valid key.
pub fn peer_id_of(pk: &kite_types::PublicKey) -> Option<PeerId> {
    let ed = libp2p::identity::ed25519::PublicKey::try_from_bytes(pk.as_bytes()).ok()?;
    Some(libp2p::identity::PublicKey::from(ed).to_peer_id())
}

/// The ed25519 public key inside a peer id (Kite peer ids embed the key:
/// an identity multihash of the protobuf-encoded public key). `None` for a
/// peer id of another key type.
pub fn public_key_of(peer: &PeerId) -> Option<kite_types::PublicKey> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let pk = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    let ed = pk.try_into_ed25519().ok()?;
    Some(kite_types::PublicKey(ed.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_identity_as_kite_types() {
        let key = kite_types::NodeKey::from_seed([3; 32]);
        let ours = local_peer_id(&key).unwrap();
        // kite-types' peer id (identity 0.2) has the same bytes.
        assert_eq!(ours.to_bytes(), key.peer_id().to_bytes());
        assert_eq!(peer_id_of(&key.public()), Some(ours));
        assert_eq!(public_key_of(&ours), Some(key.public()));
        assert_ne!(
            local_peer_id(&kite_types::NodeKey::from_seed([4; 32])).unwrap(),
            ours
        );
    }
}
