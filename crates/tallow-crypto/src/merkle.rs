//! The transfer's Merkle tree over chunk hashes.
//!
//! Leaves are BLAKE3 hashes of each chunk's digest
//! ([`crate::file_hash::chunk_digest`], which commits to the plaintext and
//! its offset), domain-separated and bound to their file and chunk index,
//! so a chunk moved to another place yields another leaf; the data itself
//! is hashed once, for the digest. The tree has the RFC 6962 shape (the left subtree of
//! `n` leaves holds the largest power of two below `n`), which
//! [`MerkleBuilder`] computes incrementally in O(log n) memory as leaves
//! stream past, in order. Interior nodes and the empty tree have contexts of
//! their own, so a leaf can never be confused with a node.

const LEAF_CONTEXT: &str = "tallow 2026-12 merkle leaf of a chunk digest v2";
use crate::file_hash::ChunkDigest;

const NODE_CONTEXT: &str = "tallow 2026-11 merkle node v1";
const EMPTY_CONTEXT: &str = "tallow 2026-11 merkle empty tree v1";

/// The leaf for chunk `chunk` of file `file`, whose plaintext has
/// `digest`.
pub fn leaf_hash(file: u32, chunk: u64, digest: &ChunkDigest) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(LEAF_CONTEXT);
    h.update(&file.to_be_bytes());
    h.update(&chunk.to_be_bytes());
    h.update(digest);
    *h.finalize().as_bytes()
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(NODE_CONTEXT);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// The root of a tree with no leaves (a transfer of empty files only).
pub fn empty_root() -> [u8; 32] {
    blake3::derive_key(EMPTY_CONTEXT, b"")
}

/// Builds the root from leaves pushed in order.
#[derive(Debug, Default, Clone)]
pub struct MerkleBuilder {
    /// Roots of complete subtrees, largest first, with their leaf counts.
    stack: Vec<(u64, [u8; 32])>,
    leaves: u64,
}

impl MerkleBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append the next leaf.
    pub fn push(&mut self, leaf: [u8; 32]) {
        self.leaves += 1;
        let mut node = (1u64, leaf);
        while let Some(&(size, left)) = self.stack.last() {
            if size != node.0 {
                break;
            }
            self.stack.pop();
            node = (size * 2, node_hash(&left, &node.1));
        }
        self.stack.push(node);
    }

    /// Leaves pushed so far.
    pub fn len(&self) -> u64 {
        self.leaves
    }

    /// Whether no leaf was pushed.
    pub fn is_empty(&self) -> bool {
        self.leaves == 0
    }

    /// The root over every leaf pushed.
    pub fn root(&self) -> [u8; 32] {
        let mut nodes = self.stack.iter().rev();
        let Some(&(_, mut acc)) = nodes.next() else {
            return empty_root();
        };
        // Fold the smaller right-hand subtrees into the larger left ones.
        for (_, left) in nodes {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962 recursion, straight from the definition.
    fn reference_root(leaves: &[[u8; 32]]) -> [u8; 32] {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn leaves(n: u64) -> Vec<[u8; 32]> {
        (0..n)
            .map(|i| leaf_hash(0, i, blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect()
    }

    fn built(leaves: &[[u8; 32]]) -> [u8; 32] {
        let mut b = MerkleBuilder::new();
        leaves.iter().for_each(|l| b.push(*l));
        assert_eq!(b.len(), leaves.len() as u64);
        b.root()
    }

    #[test]
    fn incremental_root_matches_the_definition_for_0_1_2_3_and_1000_leaves() {
        for n in [0, 1, 2, 3, 4, 5, 7, 8, 9, 1000] {
            let l = leaves(n);
            assert_eq!(built(&l), reference_root(&l), "{n} leaves");
        }
        assert_eq!(built(&[]), empty_root());
        let one = leaves(1);
        assert_eq!(built(&one), one[0]);
        let two = leaves(2);
        assert_eq!(built(&two), node_hash(&two[0], &two[1]));
        let three = leaves(3);
        assert_eq!(
            built(&three),
            node_hash(&node_hash(&three[0], &three[1]), &three[2])
        );
    }

    #[test]
    fn a_single_mismatching_leaf_anywhere_changes_the_root() {
        let good = leaves(1000);
        let root = built(&good);
        for i in [0, 1, 499, 511, 512, 998, 999] {
            let mut bad = good.clone();
            bad[i][0] ^= 1;
            assert_ne!(built(&bad), root, "leaf {i}");
        }
        // Swapping two chunks changes the root too.
        let mut swapped = good.clone();
        swapped.swap(3, 4);
        assert_ne!(built(&swapped), root);
    }

    #[test]
    fn leaves_are_bound_to_file_and_chunk_index() {
        let digest = blake3::hash(b"same bytes").as_bytes().to_owned();
        assert_ne!(leaf_hash(0, 0, &digest), leaf_hash(0, 1, &digest));
        assert_ne!(leaf_hash(0, 0, &digest), leaf_hash(1, 0, &digest));
        assert_ne!(leaf_hash(0, 0, &digest), digest);
    }
}
