//! Blocks: the header, its hash, the leader's signature, the tx list.
//!
//! Block hash = sha256 of the prost encoding of the header. The leader signs
//! `sha256("kite/block" || block_hash)`.

use crate::codec::{self, DecodeError};
use crate::merkle::merkle_root;
use crate::{Hash, NodeKey, PublicKey, Signature, Tx, proto, sign};
use prost::Message;

/// The only header version this build writes and accepts.
pub const BLOCK_VERSION: u32 = 1;

/// A block header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    /// Format version ([`BLOCK_VERSION`]).
    pub version: u32,
    /// The chain.
    pub chain_id: String,
    /// Height of this block.
    pub height: u64,
    /// Hash of the block at `height - 1` (zero for the first block).
    pub prev_hash: Hash,
    /// App hash after `height - 1`.
    pub prev_app_hash: Hash,
    /// Leader's clock, unix milliseconds.
    pub timestamp_ms: u64,
    /// Merkle root of the tx hashes ([`crate::merkle`]).
    pub tx_root: Hash,
    /// Hash of the validator set that votes on this block.
    pub validator_set_hash: Hash,
    /// The key of the leader that proposed it: the schedule's leader of
    /// `term` ([`crate::term::LeaderSchedule`]).
    pub proposer: PublicKey,
    /// The term the block was first proposed in. A later leader that
    /// re-proposes it keeps it (and so the hash).
    pub term: u64,
}

impl BlockHeader {
    /// The wire form.
    pub fn to_proto(&self) -> proto::BlockHeader {
        proto::BlockHeader {
            version: self.version,
            chain_id: self.chain_id.clone(),
            height: self.height,
            prev_hash: self.prev_hash.0.to_vec(),
            prev_app_hash: self.prev_app_hash.0.to_vec(),
            timestamp_ms: self.timestamp_ms,
            tx_root: self.tx_root.0.to_vec(),
            validator_set_hash: self.validator_set_hash.0.to_vec(),
            proposer: self.proposer.0.to_vec(),
            term: self.term,
        }
    }

    /// Validates the wire form.
    pub fn from_proto(p: &proto::BlockHeader) -> Result<BlockHeader, DecodeError> {
        const W: &str = "block header";
        if p.version != BLOCK_VERSION {
            return Err(DecodeError::invalid(
                W,
                format!("version {} (this node knows {BLOCK_VERSION})", p.version),
            ));
        }
        if p.chain_id.len() > crate::MAX_CHAIN_ID_LEN {
            return Err(DecodeError::invalid(W, "chain id too long"));
        }
        Ok(BlockHeader {
            version: p.version,
            chain_id: p.chain_id.clone(),
            height: p.height,
            prev_hash: codec::hash_field(W, "prev_hash", &p.prev_hash)?,
            prev_app_hash: codec::hash_field(W, "prev_app_hash", &p.prev_app_hash)?,
            timestamp_ms: p.timestamp_ms,
            tx_root: codec::hash_field(W, "tx_root", &p.tx_root)?,
            validator_set_hash: codec::hash_field(W, "validator_set_hash", &p.validator_set_hash)?,
            proposer: codec::key_field(W, "proposer", &p.proposer)?,
            term: p.term,
        })
    }

    /// The block hash: sha256 of the encoded header.
    pub fn hash(&self) -> Hash {
        Hash::digest(&self.to_proto().encode_to_vec())
    }
}

/// A block: header, txs and the leader's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    header: BlockHeader,
    txs: Vec<Tx>,
    leader_sig: Signature,
    hash: Hash,
}

impl Block {
    /// Builds and signs a block. `header.tx_root` is set from `txs`.
    pub fn new_signed(mut header: BlockHeader, txs: Vec<Tx>, leader: &NodeKey) -> Block {
        header.tx_root = Self::tx_root_of(&txs);
        header.proposer = leader.public();
        let hash = header.hash();
        let leader_sig = leader.sign_digest(&sign::block_digest(&hash));
        Block {
            header,
            txs,
            leader_sig,
            hash,
        }
    }

    /// Assembles a block from parts without checking anything (the checks
    /// are [`Block::check_tx_root`] and [`Block::verify_leader`]).
    pub fn from_parts(header: BlockHeader, txs: Vec<Tx>, leader_sig: Signature) -> Block {
        let hash = header.hash();
        Block {
            header,
            txs,
            leader_sig,
            hash,
        }
    }

    /// The Merkle root of the hashes of `txs`.
    pub fn tx_root_of(txs: &[Tx]) -> Hash {
        let hashes: Vec<Hash> = txs.iter().map(Tx::hash).collect();
        merkle_root(&hashes)
    }

    /// Decodes an encoded `Block` of at most `max` bytes. Checks structure
    /// only (field sizes, tx encodings), not signatures or the tx root.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Block, DecodeError> {
        let p: proto::Block = codec::decode("block", bytes, max)?;
        Self::from_proto(p)
    }

    /// Validates the wire form (structure only).
    pub fn from_proto(p: proto::Block) -> Result<Block, DecodeError> {
        const W: &str = "block";
        let header = p
            .header
            .as_ref()
            .ok_or_else(|| DecodeError::invalid(W, "no header"))?;
        let header = BlockHeader::from_proto(header)?;
        let leader_sig = codec::sig_field(W, "leader_sig", &p.leader_sig)?;
        let txs = p
            .txs
            .into_iter()
            .map(Tx::from_proto)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_parts(header, txs, leader_sig))
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::Block {
        proto::Block {
            header: Some(self.header.to_proto()),
            txs: self.txs.iter().map(Tx::to_proto).collect(),
            leader_sig: self.leader_sig.0.to_vec(),
        }
    }

    /// The encoded block.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// The header.
    pub fn header(&self) -> &BlockHeader {
        &self.header
    }

    /// The height.
    pub fn height(&self) -> u64 {
        self.header.height
    }

    /// The block hash (hash of the header).
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// The txs in block order.
    pub fn txs(&self) -> &[Tx] {
        &self.txs
    }

    /// The leader's signature over the block hash.
    pub fn leader_sig(&self) -> &Signature {
        &self.leader_sig
    }

    /// Whether the header's tx root matches the txs.
    pub fn check_tx_root(&self) -> bool {
        Self::tx_root_of(&self.txs) == self.header.tx_root
    }

    /// Whether `leader` signed this block (and is its proposer).
    pub fn verify_leader(&self, leader: &PublicKey) -> bool {
        verify_header_sig(&self.header.proposer, &self.hash, &self.leader_sig, leader)
    }

    /// The leader's signature over this block, for a batch check (the
    /// caller also checks that the proposer is the leader).
    pub fn leader_sig_item(&self) -> sign::SigItem<'_> {
        sign::SigItem {
            key: &self.header.proposer,
            digest: sign::block_digest(&self.hash),
            sig: &self.leader_sig,
        }
    }
}

/// Checks a leader signature over a block hash: the proposer must be the
/// expected leader and the signature must verify.
pub fn verify_header_sig(
    proposer: &PublicKey,
    block_hash: &Hash,
    sig: &Signature,
    leader: &PublicKey,
) -> bool {
    proposer == leader && sign::verify(leader, &sign::block_digest(block_hash), sig)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Payload;

    pub(crate) fn header(height: u64) -> BlockHeader {
        BlockHeader {
            version: BLOCK_VERSION,
            chain_id: "kite-test".into(),
            height,
            prev_hash: Hash::ZERO,
            prev_app_hash: Hash::ZERO,
            timestamp_ms: 1_700_000_000_000,
            tx_root: Hash::ZERO,
            validator_set_hash: Hash::digest(b"vals"),
            proposer: PublicKey([0; 32]),
            term: 0,
        }
    }

    #[test]
    fn sign_and_verify_block() {
        let leader = NodeKey::from_seed([1; 32]);
        let user = NodeKey::from_seed([2; 32]);
        let txs = vec![Tx::sign(
            &user,
            "kite-test",
            1,
            Payload::Delete { key: vec![1] },
        )];
        let b = Block::new_signed(header(1), txs, &leader);
        assert!(b.check_tx_root());
        assert!(b.verify_leader(&leader.public()));
        assert!(!b.verify_leader(&user.public()));
        let back = Block::decode(&b.encode(), 1 << 20).unwrap();
        assert_eq!(back, b);
        assert!(back.verify_leader(&leader.public()));
        // Changing any header field changes the hash and breaks the signature.
        let mut h = b.header().clone();
        h.height = 2;
        let forged = Block::from_parts(h, b.txs().to_vec(), *b.leader_sig());
        assert!(!forged.verify_leader(&leader.public()));
        // Dropping a tx breaks the tx root.
        let cut = Block::from_parts(b.header().clone(), vec![], *b.leader_sig());
        assert!(!cut.check_tx_root());
    }

    #[test]
    fn bad_version_and_missing_header() {
        let leader = NodeKey::from_seed([1; 32]);
        let b = Block::new_signed(header(1), vec![], &leader);
        let mut p = b.to_proto();
        if let Some(h) = p.header.as_mut() {
            h.version = 2;
        }
        assert!(Block::from_proto(p).is_err());
        let mut p = b.to_proto();
        p.header = None;
        assert!(Block::from_proto(p).is_err());
    }
}
