//! The tx Merkle root of a block header.
//!
//! Rules (documented in docs/PROTOCOL.md, fixed by the vectors in the tests):
//! - Leaves are the tx hashes in block order; a leaf node is
//!   `sha256(0x00 || tx_hash)`, an inner node `sha256(0x01 || left || right)`.
//!   The distinct prefixes keep a leaf from ever passing as an inner node.
//! - Odd leaf: when a level has an odd number of nodes, the last one is
//!   carried up to the next level unchanged (never paired with itself, so
//!   two different tx lists never share a root by duplication).
//! - Empty block: the root is [`Hash::ZERO`].

use crate::Hash;

/// The Merkle root of `leaves` (tx hashes in block order).
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        return Hash::ZERO;
    }
    let mut level: Vec<Hash> = leaves
        .iter()
        .map(|h| Hash::digest_parts(&[&[0x00], h.as_bytes()]))
        .collect();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            match pair {
                [l, r] => next.push(Hash::digest_parts(&[&[0x01], l.as_bytes(), r.as_bytes()])),
                [odd] => next.push(*odd),
                _ => {}
            }
        }
        level = next;
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u8) -> Hash {
        Hash::digest(&[i])
    }

    fn node(l: Hash, r: Hash) -> Hash {
        Hash::digest_parts(&[&[1], l.as_bytes(), r.as_bytes()])
    }

    fn lnode(h: Hash) -> Hash {
        Hash::digest_parts(&[&[0], h.as_bytes()])
    }

    #[test]
    fn structure() {
        let (a, b, c) = (leaf(0), leaf(1), leaf(2));
        assert_eq!(merkle_root(&[]), Hash::ZERO);
        assert_eq!(merkle_root(&[a]), lnode(a));
        assert_eq!(merkle_root(&[a, b]), node(lnode(a), lnode(b)));
        // Odd leaf carried up unchanged.
        assert_eq!(
            merkle_root(&[a, b, c]),
            node(node(lnode(a), lnode(b)), lnode(c))
        );
        // No duplication malleability: [a,b,c] != [a,b,c,c].
        assert_ne!(merkle_root(&[a, b, c]), merkle_root(&[a, b, c, c]));
        // Order matters.
        assert_ne!(merkle_root(&[a, b]), merkle_root(&[b, a]));
    }

    /// Fixed vectors, also listed in docs/PROTOCOL.md. Leaves are
    /// sha256 of the single bytes 0, 1, 2, ...
    #[test]
    fn vectors() {
        let leaves: Vec<Hash> = (0..5u8).map(leaf).collect();
        let cases = [
            (
                0usize,
                "0000000000000000000000000000000000000000000000000000000000000000",
            ),
            (1, VECTOR_1),
            (2, VECTOR_2),
            (3, VECTOR_3),
            (5, VECTOR_5),
        ];
        for (n, want) in cases {
            assert_eq!(merkle_root(&leaves[..n]).to_string(), want, "{n} leaves");
        }
    }

    const VECTOR_1: &str = "d9de27625445003d8a9739a851e3ff8d41c0683630b4d63a88327a6aaa37c409";
    const VECTOR_2: &str = "604d540f09268b91672ab011394d5266ccd7d4484d0d109411a55848126a1b2c";
    const VECTOR_3: &str = "d1f13800048f5909d4043fc0c152f6643280cba608b672715e56ce159a20629f";
    const VECTOR_5: &str = "6b313b611b40676b9e1dfd70c4503f2379f88f0f1c2740fb7e1cacc32c113465";
}
