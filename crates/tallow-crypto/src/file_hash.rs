//! A file's BLAKE3 hash composed from its chunks, so each byte is hashed
//! once: the digest of a chunk is what its Merkle leaf commits to, what
//! the receiver's checkpoint records, and what the file's hash is built
//! from, without hashing the data a second time or reading it again on
//! resume.
//!
//! BLAKE3 is itself a tree over 1 KiB chunks. A transfer chunk of a power
//! of two times 1 KiB, at a multiple of its size into the file, is a whole
//! subtree of that tree, so its chaining value (`blake3::hazmat`, computed
//! with the chunk's offset) can stand for it. [`FileHasher`] merges them in
//! the order BLAKE3 does (a stack of complete subtrees, the last merge
//! flagged as the root), which gives exactly `blake3::hash(file)`; the
//! tests check that against the plain hash for every size boundary. A file
//! of a single chunk has no parent node: its digest is the root hash
//! itself.

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};

/// The digest of one chunk: the chaining value of its subtree, or the
/// file's root hash when the file is this one chunk.
pub type ChunkDigest = [u8; 32];

/// Whether `chunk_size` can be a subtree of BLAKE3's tree: a power of two,
/// at least BLAKE3's own 1 KiB chunk.
pub fn valid_chunk_size(chunk_size: u32) -> bool {
    chunk_size.is_power_of_two() && chunk_size as usize >= blake3::CHUNK_LEN
}

/// The digest of chunk `index` (of `chunk_size` bytes, the last one
/// shorter) of a file of `chunks` chunks. `chunk_size` must satisfy
/// [`valid_chunk_size`] (the manifest checks it).
pub fn chunk_digest(chunks: u64, chunk_size: u32, index: u64, data: &[u8]) -> ChunkDigest {
    if chunks == 1 {
        return *blake3::hash(data).as_bytes();
    }
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * u64::from(chunk_size));
    hasher.update(data);
    hasher.finalize_non_root()
}

/// Builds a file's BLAKE3 hash from its chunk digests, pushed in order, in
/// O(log n) memory.
#[derive(Debug, Clone, Default)]
pub struct FileHasher {
    /// Chaining values of complete subtrees, largest (leftmost) first.
    stack: Vec<ChunkDigest>,
    /// The latest digest: not merged until another follows, as only the
    /// very last merge is the root.
    last: Option<ChunkDigest>,
    /// Digests pushed.
    pushed: u64,
}

impl FileHasher {
    /// Nothing pushed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append the next chunk's digest.
    pub fn push(&mut self, digest: ChunkDigest) {
        if let Some(mut cv) = self.last.take() {
            // `cv` closes subtree number `pushed` (counting from 1): merge
            // it with each complete left neighbour of its size.
            let mut done = self.pushed;
            while done & 1 == 0 {
                let Some(left) = self.stack.pop() else {
                    break;
                };
                cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
                done >>= 1;
            }
            self.stack.push(cv);
        }
        self.last = Some(digest);
        self.pushed += 1;
    }

    /// Digests pushed so far.
    pub fn len(&self) -> u64 {
        self.pushed
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.pushed == 0
    }

    /// The file's BLAKE3 hash, once every chunk's digest is pushed.
    pub fn finalize(&self) -> [u8; 32] {
        let Some(mut acc) = self.last else {
            return *blake3::hash(&[]).as_bytes();
        };
        let mut lefts = self.stack.iter().rev().peekable();
        while let Some(left) = lefts.next() {
            if lefts.peek().is_none() {
                return *merge_subtrees_root(left, &acc, Mode::Hash).as_bytes();
            }
            acc = merge_subtrees_non_root(left, &acc, Mode::Hash);
        }
        // A single chunk: its digest is the root hash already.
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn composed(bytes: &[u8], chunk_size: u32) -> [u8; 32] {
        let chunks = bytes.len().div_ceil(chunk_size as usize) as u64;
        let mut hasher = FileHasher::new();
        for (index, chunk) in bytes.chunks(chunk_size as usize).enumerate() {
            hasher.push(chunk_digest(chunks, chunk_size, index as u64, chunk));
        }
        assert_eq!(hasher.len(), chunks);
        hasher.finalize()
    }

    #[test]
    fn composed_hashes_equal_blake3_of_the_whole_file_at_every_boundary() {
        for chunk_size in [1024u32, 4096, 16384] {
            let c = chunk_size as usize;
            for chunks in [0usize, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33] {
                for extra in [0isize, 1, -1, 500] {
                    let len = (chunks * c) as isize + extra;
                    if len < 0 {
                        continue;
                    }
                    let bytes = data(len as usize);
                    assert_eq!(
                        composed(&bytes, chunk_size),
                        *blake3::hash(&bytes).as_bytes(),
                        "chunk size {chunk_size}, {len} bytes"
                    );
                }
            }
        }
    }

    #[test]
    fn a_changed_byte_or_a_moved_chunk_changes_the_digests_and_the_hash() {
        let c = 4096u32;
        let bytes = data(5 * c as usize + 7);
        let whole = composed(&bytes, c);
        let mut changed = bytes.clone();
        changed[3 * c as usize + 1] ^= 1;
        assert_ne!(composed(&changed, c), whole);
        // The same bytes at another offset are another subtree.
        let piece = &bytes[..c as usize];
        assert_ne!(chunk_digest(6, c, 0, piece), chunk_digest(6, c, 1, piece));
        // A single-chunk file's digest is its plain hash; a chunk of a
        // longer file is never a root.
        assert_eq!(
            chunk_digest(1, c, 0, piece),
            *blake3::hash(piece).as_bytes()
        );
        assert_ne!(
            chunk_digest(2, c, 0, piece),
            *blake3::hash(piece).as_bytes()
        );
    }

    #[test]
    fn only_powers_of_two_from_1_kib_can_be_chunk_sizes() {
        assert!(valid_chunk_size(1024) && valid_chunk_size(1 << 20) && valid_chunk_size(4 << 20));
        assert!(!valid_chunk_size(512) && !valid_chunk_size(3 << 20) && !valid_chunk_size(0));
    }
}
