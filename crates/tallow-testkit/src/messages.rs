//! Messages as a scripted peer sends them: encoded plaintext frames, with
//! honest hashes unless a test changes them.

use tallow_crypto::file_hash::chunk_digest;
use tallow_crypto::merkle::{leaf_hash, MerkleBuilder};
use tallow_protocol::file_list::FileList;
use tallow_protocol::manifest::{FileEntry, LeftOut, Manifest, Timestamp};
use tallow_protocol::message::{ChunkHeader, Message};
use tallow_protocol::wire::Encode;

/// The plaintext of `m`, as it goes into one frame.
pub fn encode(m: Message<'_>) -> Vec<u8> {
    m.to_bytes()
}

/// The offer of `m` as a sender sends it: the header, then every page.
/// (Any manifest, valid or not: the receiver is the one to check.)
pub fn offer(m: &Manifest) -> Vec<Vec<u8>> {
    std::iter::once(encode(Message::Offer(m.offer_header())))
        .chain(m.offer_pages().map(|page| encode(Message::OfferPage(page))))
        .collect()
}

/// A file of `size` bytes named `path` (mode 0644, time 0).
pub fn entry(path: &str, size: u64) -> FileEntry {
    FileEntry {
        path: path.into(),
        size,
        mode: 0o644,
        mtime: Timestamp::default(),
    }
}

/// An offer of `files` in chunks of `chunk_size`, with no folders.
pub fn manifest(chunk_size: u32, files: Vec<FileEntry>) -> Manifest {
    Manifest {
        chunk_size,
        dirs: vec![],
        files: FileList::from_entries(files).expect("a test's files fit in an offer"),
        left_out: LeftOut::default(),
    }
}

/// The honest leaf of chunk `index` of file `file` of `m`, holding `data`.
pub fn leaf(m: &Manifest, file: u32, index: u64, data: &[u8]) -> [u8; 32] {
    let chunks = m
        .files
        .get(file as usize)
        .map_or(1, |f| m.chunk_count(f.size));
    leaf_hash(
        file,
        index,
        &chunk_digest(chunks, m.chunk_size, index, data),
    )
}

/// Chunk `index` of file `file` of `m`, sent raw with its right leaf.
pub fn chunk(m: &Manifest, file: u32, index: u64, data: &[u8]) -> Vec<u8> {
    encode(Message::Chunk {
        header: ChunkHeader {
            file,
            index,
            compressed: false,
            leaf: leaf(m, file, index, data),
        },
        data,
    })
}

/// `FileEnd` for `file` whose whole content is `data`.
pub fn file_end(file: u32, data: &[u8]) -> Vec<u8> {
    encode(Message::FileEnd {
        file,
        hash: *blake3::hash(data).as_bytes(),
    })
}

/// The Merkle root over these chunks `(file, index, data)` of `m`, in order.
pub fn merkle_root(m: &Manifest, chunks: &[(u32, u64, &[u8])]) -> [u8; 32] {
    let mut b = MerkleBuilder::new();
    for (f, i, d) in chunks {
        b.push(leaf(m, *f, *i, d));
    }
    b.root()
}

/// `TransferComplete` with the honest root over `chunks` of `m`.
pub fn complete(m: &Manifest, chunks: &[(u32, u64, &[u8])]) -> Vec<u8> {
    encode(Message::TransferComplete {
        merkle_root: merkle_root(m, chunks),
    })
}

/// Send each plaintext in `frames` as one frame, as a scripted peer does;
/// stops at the first that cannot be sent (the other side gave up).
pub async fn send_plaintexts<W: tallow_protocol::transport::FrameSink>(
    sink: &mut W,
    frames: &[Vec<u8>],
    timeout: std::time::Duration,
) -> Result<(), tallow_protocol::transport::TransportError> {
    for plaintext in frames {
        let mut frame = vec![0u8; tallow_crypto::FRAME_HEADER_LEN];
        frame.extend_from_slice(plaintext);
        sink.send_frame(&mut frame, timeout).await?;
    }
    Ok(())
}
