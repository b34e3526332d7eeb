//! Messages exchanged inside the encrypted channel after the handshake.
//!
//! Each message is the plaintext of exactly one frame: a type byte, then
//! fields. Chunk data is borrowed from the frame buffer, so decoding a chunk
//! copies nothing.

use crate::limits::{CHUNK_HEADER_LEN, MAX_REASON_LEN};
use crate::manifest::ManifestError;
use crate::offer::{OfferHeader, OfferPage};
use crate::wire::{floor_char_boundary, Decode, DecodeError, Encode, WireReader, WireWrite};

const OFFER: u8 = 1;
const ACCEPT: u8 = 2;
const DECLINE: u8 = 3;
const CHUNK: u8 = 4;
const FILE_END: u8 = 5;
const TRANSFER_COMPLETE: u8 = 6;
const DONE: u8 = 7;
const ABORT: u8 = 8;
const ACK: u8 = 9;
const KEEP_ALIVE: u8 = 10;
const TEXT: u8 = 11;
const FILE_FAILED: u8 = 12;
const ZEROS: u8 = 13;
const OFFER_PAGE: u8 = 14;
const REFETCH: u8 = 15;

/// Chunk flag: `data` is a zstd frame of the chunk's plaintext.
const FLAG_ZSTD: u8 = 1;

/// The class of failure an `Abort` reports; each maps to a user message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortKind {
    /// The sender could not read a file, or the receiver could not write one.
    Io,
    /// Received data did not verify.
    Integrity,
    /// The other side broke the protocol.
    Protocol,
    /// A person stopped the transfer.
    Cancelled,
}

impl AbortKind {
    fn to_byte(self) -> u8 {
        match self {
            AbortKind::Io => 1,
            AbortKind::Integrity => 2,
            AbortKind::Protocol => 3,
            AbortKind::Cancelled => 4,
        }
    }

    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            1 => AbortKind::Io,
            2 => AbortKind::Integrity,
            3 => AbortKind::Protocol,
            4 => AbortKind::Cancelled,
            _ => return Err(DecodeError::Invalid("abort kind")),
        })
    }
}

/// One message. `'a` borrows from the frame it was decoded from.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Sender → receiver: what is offered; the entries follow in
    /// [`Message::OfferPage`]s.
    Offer(OfferHeader),
    /// Sender → receiver, right after the offer: some of its entries.
    OfferPage(OfferPage<'a>),
    /// Receiver → sender: go ahead, starting after what is already here
    /// (from an interrupted earlier transfer of the same files).
    Accept {
        /// Where to start.
        resume: ResumePoint,
        /// Files after that point not to send at all: they exist at the
        /// receiver and its user chose to keep them.
        skip: FileRuns,
    },
    /// Receiver → sender: no, with a reason for the sender's user.
    Decline {
        /// Why.
        reason: &'a str,
    },
    /// Sender → receiver: `data` is chunk `index` of file `file`.
    Chunk {
        /// Which chunk, how it is encoded, and its Merkle leaf.
        header: ChunkHeader,
        /// Plaintext bytes, or a zstd frame of them.
        data: &'a [u8],
    },
    /// Sender → receiver: chunk `index` of `file` is all zeros (a hole in
    /// the sender's sparse file): no data travels, and the receiver leaves
    /// a hole too.
    Zeros {
        /// Index into the manifest's files.
        file: u32,
        /// Chunk number within the file.
        index: u64,
        /// The chunk's Merkle leaf, as for any chunk.
        leaf: [u8; 32],
    },
    /// Sender → receiver: every chunk of `file` was sent; its BLAKE3 hash.
    FileEnd {
        /// Index into the manifest's files.
        file: u32,
        /// BLAKE3 of the whole file.
        hash: [u8; 32],
    },
    /// Sender → receiver: `file` cannot be sent after all (it changed while
    /// it was read, or could not be read): nothing more of it comes, and
    /// the stream goes on with the next file.
    FileFailed {
        /// Index into the manifest's files.
        file: u32,
        /// One sentence for the other side's user (never a local path).
        reason: &'a str,
    },
    /// Sender → receiver: nothing more follows; the Merkle root over every
    /// chunk's leaf, in order.
    TransferComplete {
        /// Root of [`tallow_crypto::merkle`] over all leaves.
        merkle_root: [u8; 32],
    },
    /// Receiver → sender, after `TransferComplete` and instead of `Done`:
    /// chunks `first..first + count` of `file`, which an earlier run
    /// received, no longer match their records on its disk (the prefix of
    /// the resumed file, checked while the rest arrived). The sender sends
    /// them again as `Chunk`s, in order; then the receiver answers `Done`.
    Refetch {
        /// Index into the manifest's files.
        file: u32,
        /// The first chunk to send again.
        first: u64,
        /// How many.
        count: u64,
    },
    /// Receiver → sender: every file is verified and in place.
    Done,
    /// Sender → receiver, instead of an offer: a text message to show
    /// (`tallow send --text`); the receiver answers `Done`.
    Text {
        /// The text, at most [`MAX_TEXT_LEN`] bytes of UTF-8.
        text: &'a str,
    },
    /// Sender → receiver: still here (sent while the sender re-reads what
    /// the receiver already has, which can take minutes).
    KeepAlive,
    /// Receiver → sender: this many plaintext bytes have been written
    /// (cumulative; for the sender's window and progress).
    Ack {
        /// Bytes written so far in this transfer.
        bytes: u64,
    },
    /// Either way: the transfer failed; `detail` is for the other user.
    Abort {
        /// What kind of failure.
        kind: AbortKind,
        /// One sentence for the other side's user.
        detail: &'a str,
    },
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    /// Field-level decoding failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

impl Encode for Message<'_> {
    /// The type byte, then the fields.
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::Offer(header) => {
                out.put_u8(OFFER);
                header.encode(out);
            }
            Message::OfferPage(page) => {
                out.put_u8(OFFER_PAGE);
                page.encode(out);
            }
            Message::Accept { resume, skip } => {
                out.put_u8(ACCEPT);
                resume.encode(out);
                skip.encode(out);
            }
            Message::Decline { reason } => {
                out.put_u8(DECLINE);
                out.put_string(reason, MAX_REASON_LEN);
            }
            Message::Chunk { header, data } => {
                header.encode(out);
                out.put_bytes(data);
            }
            Message::FileEnd { file, hash } => {
                out.put_u8(FILE_END);
                out.put_u32(*file);
                out.put_bytes(hash);
            }
            Message::Zeros { file, index, leaf } => {
                out.put_u8(ZEROS);
                out.put_u32(*file);
                out.put_u64(*index);
                out.put_bytes(leaf);
            }
            Message::FileFailed { file, reason } => {
                out.put_u8(FILE_FAILED);
                out.put_u32(*file);
                out.put_string(reason, MAX_REASON_LEN);
            }
            Message::TransferComplete { merkle_root } => {
                out.put_u8(TRANSFER_COMPLETE);
                out.put_bytes(merkle_root);
            }
            Message::Refetch { file, first, count } => {
                out.put_u8(REFETCH);
                out.put_u32(*file);
                out.put_u64(*first);
                out.put_u64(*count);
            }
            Message::Done => out.put_u8(DONE),
            Message::KeepAlive => out.put_u8(KEEP_ALIVE),
            Message::Text { text } => {
                out.put_u8(TEXT);
                let end = floor_char_boundary(text, MAX_TEXT_LEN);
                out.put_u32(end as u32);
                out.put_bytes(&text.as_bytes()[..end]);
            }
            Message::Ack { bytes } => {
                out.put_u8(ACK);
                out.put_u64(*bytes);
            }
            Message::Abort { kind, detail } => {
                out.put_u8(ABORT);
                out.put_u8(kind.to_byte());
                out.put_string(detail, MAX_REASON_LEN);
            }
        }
    }
}

impl<'a> Decode<'a> for Message<'a> {
    type Error = MessageError;

    /// One message; a frame holds exactly one (see
    /// [`decode_all`](Decode::decode_all)).
    fn decode(r: &mut WireReader<'a>) -> Result<Self, MessageError> {
        let msg = match r.u8("message type")? {
            OFFER => Message::Offer(OfferHeader::decode(r)?),
            OFFER_PAGE => Message::OfferPage(OfferPage::decode(r)?),
            ACCEPT => Message::Accept {
                resume: ResumePoint::decode(r)?,
                skip: FileRuns::decode(r)?,
            },
            DECLINE => Message::Decline {
                reason: r.string(MAX_REASON_LEN, "decline reason")?,
            },
            CHUNK => Message::Chunk {
                header: ChunkHeader::decode_fields(r)?,
                data: r.rest(),
            },
            FILE_END => Message::FileEnd {
                file: r.u32("file index")?,
                hash: r.array("file hash")?,
            },
            TRANSFER_COMPLETE => Message::TransferComplete {
                merkle_root: r.array("Merkle root")?,
            },
            REFETCH => Message::Refetch {
                file: r.u32("file index")?,
                first: r.u64("first chunk")?,
                count: r.u64("chunk count")?,
            },
            DONE => Message::Done,
            KEEP_ALIVE => Message::KeepAlive,
            TEXT => {
                let len = r.u32("text length")? as usize;
                if len > MAX_TEXT_LEN {
                    return Err(DecodeError::TooLarge {
                        what: "text",
                        got: len as u64,
                        max: MAX_TEXT_LEN as u64,
                    }
                    .into());
                }
                let bytes = r.bytes(len, "text")?;
                Message::Text {
                    text: std::str::from_utf8(bytes).map_err(|_| DecodeError::Invalid("text"))?,
                }
            }
            ACK => Message::Ack {
                bytes: r.u64("acknowledged bytes")?,
            },
            ABORT => Message::Abort {
                kind: AbortKind::from_byte(r.u8("abort kind")?)?,
                detail: r.string(MAX_REASON_LEN, "abort detail")?,
            },
            ZEROS => Message::Zeros {
                file: r.u32("file index")?,
                index: r.u64("chunk index")?,
                leaf: r.array("chunk hash")?,
            },
            FILE_FAILED => Message::FileFailed {
                file: r.u32("file index")?,
                reason: r.string(MAX_REASON_LEN, "failure reason")?,
            },
            other => return Err(DecodeError::UnknownType(other).into()),
        };
        Ok(msg)
    }
}

impl<'a> Message<'a> {
    /// This message as a frame for
    /// [`FrameSink::send_frame`](crate::transport::FrameSink::send_frame):
    /// room for the frame header, then the encoding, in `frame`'s
    /// allocation. The one place that lays a message into a frame.
    pub fn encode_frame(&self, frame: &mut Vec<u8>) {
        frame.clear();
        frame.resize(tallow_crypto::FRAME_HEADER_LEN, 0);
        self.encode(frame);
    }

    /// [`encode_frame`](Self::encode_frame) into a new buffer.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut frame = Vec::new();
        self.encode_frame(&mut frame);
        frame
    }

    /// A short name for error messages ("unexpected Chunk").
    pub fn name(&self) -> &'static str {
        match self {
            Message::Offer(_) => "Offer",
            Message::OfferPage(_) => "OfferPage",
            Message::Accept { .. } => "Accept",
            Message::Decline { .. } => "Decline",
            Message::Chunk { .. } => "Chunk",
            Message::FileEnd { .. } => "FileEnd",
            Message::FileFailed { .. } => "FileFailed",
            Message::Zeros { .. } => "Zeros",
            Message::TransferComplete { .. } => "TransferComplete",
            Message::Refetch { .. } => "Refetch",
            Message::Done => "Done",
            Message::KeepAlive => "KeepAlive",
            Message::Text { .. } => "Text",
            Message::Ack { .. } => "Ack",
            Message::Abort { .. } => "Abort",
        }
    }
}

/// Longest text message, in bytes.
pub const MAX_TEXT_LEN: usize = 64 * 1024;

/// How much of the transfer the receiver already has: files `0..files_done`
/// complete, and chunks `0..chunks_done` of file `files_done`. The receiver
/// writes in stream order, so its progress is always this one range; it is
/// the run-length form of "which chunks are here", 12 bytes whatever the
/// size of the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResumePoint {
    /// Files complete and in place.
    pub files_done: u32,
    /// Chunks durable in the next file's partial file.
    pub chunks_done: u64,
}

impl ResumePoint {
    /// Whether the point lies within `manifest`.
    pub fn fits(&self, manifest: &crate::manifest::Manifest) -> bool {
        let files = manifest.files.len();
        let f = self.files_done as usize;
        f < files && self.chunks_done <= manifest.chunk_count(manifest.files.at(f).size)
            || f == files && self.chunks_done == 0
    }

    /// The first file nothing of which is here yet: only files from there
    /// on may be skipped.
    pub fn first_unstarted(&self) -> u32 {
        self.files_done
            .saturating_add(u32::from(self.chunks_done > 0))
    }

    /// Plaintext bytes before the point.
    pub fn bytes(&self, manifest: &crate::manifest::Manifest) -> u64 {
        let f = (self.files_done as usize).min(manifest.files.len());
        let whole: u64 = manifest.files.sizes()[..f].iter().sum();
        let part = manifest
            .files
            .get(f)
            .map_or(0, |e| manifest.chunks_len(e.size, 0..self.chunks_done));
        whole + part
    }
}

impl Encode for ResumePoint {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(self.files_done);
        out.put_u64(self.chunks_done);
    }
}

impl Decode<'_> for ResumePoint {
    type Error = DecodeError;

    /// Any point decodes; whether it fits the offer is
    /// [`fits`](ResumePoint::fits).
    fn decode(r: &mut WireReader<'_>) -> Result<Self, DecodeError> {
        Ok(ResumePoint {
            files_done: r.u32("resumed files")?,
            chunks_done: r.u64("resumed chunks")?,
        })
    }
}

/// A set of file indices as sorted, disjoint runs `(first, count)`: the
/// files a receiver skips, however many, in a few bytes when they are
/// neighbours (a whole folder it already has).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileRuns {
    runs: Vec<(u32, u32)>,
}

/// Bytes one run takes on the wire.
const RUN_LEN: usize = 8;

impl FileRuns {
    /// The set of `files`, given in increasing order (repeats are ignored).
    pub fn from_sorted(files: impl IntoIterator<Item = u32>) -> Self {
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for file in files {
            match runs.last_mut() {
                Some((first, count))
                    if u64::from(*first) + u64::from(*count) == u64::from(file) =>
                {
                    *count += 1
                }
                Some((first, count)) if u64::from(*first) + u64::from(*count) > u64::from(file) => {
                }
                _ => runs.push((file, 1)),
            }
        }
        FileRuns { runs }
    }

    /// Whether `file` is in the set.
    pub fn contains(&self, file: u32) -> bool {
        let i = self.runs.partition_point(|(first, _)| *first <= file);
        i > 0 && {
            let (first, count) = self.runs[i - 1];
            u64::from(file) < u64::from(first) + u64::from(count)
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The files, in order.
    pub fn files(&self) -> impl Iterator<Item = u32> + '_ {
        self.runs
            .iter()
            .flat_map(|&(first, count)| (0..count).map(move |i| first + i))
    }

    /// How many files.
    pub fn count(&self) -> u64 {
        self.runs.iter().map(|&(_, count)| u64::from(count)).sum()
    }

    /// Bytes of the skipped files of `manifest`.
    pub fn bytes(&self, manifest: &crate::manifest::Manifest) -> u64 {
        self.files()
            .filter_map(|f| manifest.files.get(f as usize))
            .map(|f| f.size)
            .sum()
    }

    /// Whether every file lies in `from..to`.
    pub fn within(&self, from: u32, to: usize) -> bool {
        self.runs.iter().all(|&(first, count)| {
            first >= from && (u64::from(first) + u64::from(count)) <= to as u64
        })
    }
}

impl Encode for FileRuns {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(self.runs.len() as u32);
        for &(first, count) in &self.runs {
            out.put_u32(first);
            out.put_u32(count);
        }
    }
}

impl Decode<'_> for FileRuns {
    type Error = DecodeError;

    /// Runs must be non-empty, in order, apart and not overflow; their
    /// number is checked against the bytes present before allocating.
    fn decode(r: &mut WireReader<'_>) -> Result<Self, DecodeError> {
        let len = r.u32("skipped runs")? as usize;
        if len > r.remaining() / RUN_LEN {
            return Err(DecodeError::Truncated("skipped runs"));
        }
        let mut runs = Vec::with_capacity(len);
        let mut end = 0u64;
        for _ in 0..len {
            let first = r.u32("skipped file")?;
            let count = r.u32("skipped count")?;
            if count == 0 || (!runs.is_empty() && u64::from(first) <= end) {
                return Err(DecodeError::Invalid("skipped runs"));
            }
            end = u64::from(first) + u64::from(count);
            if end > u64::from(u32::MAX) {
                return Err(DecodeError::Invalid("skipped runs"));
            }
            runs.push((first, count));
        }
        Ok(FileRuns { runs })
    }
}

/// The fixed part of a chunk message, written in front of the data once the
/// data has been read (and perhaps compressed) in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Index into the manifest's files.
    pub file: u32,
    /// Chunk number within the file.
    pub index: u64,
    /// Whether the data is a zstd frame.
    pub compressed: bool,
    /// [`tallow_crypto::merkle::leaf_hash`] of the plaintext.
    pub leaf: [u8; 32],
}

impl ChunkHeader {
    /// Write the message type and header into `out[..CHUNK_HEADER_LEN]`
    /// (the room left in front of data read in place); the same bytes as
    /// [`Encode`].
    pub fn write(&self, out: &mut [u8]) {
        out[0] = CHUNK;
        out[1..5].copy_from_slice(&self.file.to_be_bytes());
        out[5..13].copy_from_slice(&self.index.to_be_bytes());
        out[13] = if self.compressed { FLAG_ZSTD } else { 0 };
        out[14..CHUNK_HEADER_LEN].copy_from_slice(&self.leaf);
    }

    /// The fields after the type byte.
    fn decode_fields(r: &mut WireReader<'_>) -> Result<Self, DecodeError> {
        Ok(ChunkHeader {
            file: r.u32("file index")?,
            index: r.u64("chunk index")?,
            compressed: match r.u8("chunk flags")? {
                0 => false,
                FLAG_ZSTD => true,
                _ => return Err(DecodeError::Invalid("chunk flags")),
            },
            leaf: r.array("chunk hash")?,
        })
    }
}

impl Encode for ChunkHeader {
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + CHUNK_HEADER_LEN, 0);
        self.write(&mut out[start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_list::FileList;
    use crate::manifest::{FileEntry, Manifest};

    fn all_messages() -> Vec<Message<'static>> {
        let one_file: &'static Manifest = Box::leak(Box::new(Manifest {
            chunk_size: 65536,
            dirs: vec![],
            files: FileList::from_entries([FileEntry {
                path: "a b/ç.txt".into(),
                size: 7,
                mode: 0o600,
                mtime: Default::default(),
            }])
            .unwrap(),
            left_out: Default::default(),
        }));
        vec![
            Message::Offer(one_file.offer_header()),
            Message::OfferPage(one_file.offer_pages().next().unwrap()),
            Message::Accept {
                resume: ResumePoint::default(),
                skip: FileRuns::default(),
            },
            Message::Accept {
                resume: ResumePoint {
                    files_done: 3,
                    chunks_done: 1 << 40,
                },
                skip: FileRuns::from_sorted([4, 5, 6, 9, u32::MAX - 1]),
            },
            Message::Decline {
                reason: "no thanks",
            },
            Message::Chunk {
                header: ChunkHeader {
                    file: 3,
                    index: 1 << 40,
                    compressed: true,
                    leaf: [4; 32],
                },
                data: b"payload",
            },
            Message::Chunk {
                header: ChunkHeader {
                    file: 0,
                    index: 0,
                    compressed: false,
                    leaf: [0; 32],
                },
                data: b"",
            },
            Message::FileEnd {
                file: 9,
                hash: [7; 32],
            },
            Message::TransferComplete {
                merkle_root: [1; 32],
            },
            Message::FileFailed {
                file: 7,
                reason: "it changed while it was being sent",
            },
            Message::Zeros {
                file: 2,
                index: 1 << 33,
                leaf: [9; 32],
            },
            Message::Refetch {
                file: 3,
                first: 1 << 33,
                count: 5,
            },
            Message::Done,
            Message::KeepAlive,
            Message::Text {
                text: "hello\nwörld",
            },
            Message::Ack { bytes: 1 << 33 },
            Message::Abort {
                kind: AbortKind::Integrity,
                detail: "hash mismatch",
            },
        ]
    }

    #[test]
    fn reasons_and_texts_hold_their_limits_at_the_boundary() {
        let mut at_limit = vec![DECLINE];
        at_limit.extend_from_slice(&(MAX_REASON_LEN as u16).to_be_bytes());
        at_limit.extend_from_slice(&vec![b'x'; MAX_REASON_LEN]);
        assert!(Message::decode_all(&at_limit).is_ok());
        let mut over = vec![DECLINE];
        over.extend_from_slice(&(MAX_REASON_LEN as u16 + 1).to_be_bytes());
        over.extend_from_slice(&vec![b'x'; MAX_REASON_LEN + 1]);
        assert!(matches!(
            Message::decode_all(&over),
            Err(MessageError::Decode(DecodeError::TooLarge { .. }))
        ));
        let mut text = vec![TEXT];
        text.extend_from_slice(&(MAX_TEXT_LEN as u32 + 1).to_be_bytes());
        assert!(matches!(
            Message::decode_all(&text),
            Err(MessageError::Decode(DecodeError::TooLarge { .. }))
        ));
    }

    #[test]
    fn every_message_round_trips() {
        for m in all_messages() {
            let mut buf = Vec::new();
            m.encode(&mut buf);
            assert_eq!(Message::decode_all(&buf).unwrap(), m);
        }
    }

    #[test]
    fn truncations_trailing_bytes_and_unknown_types_are_errors() {
        for m in all_messages() {
            let mut buf = Vec::new();
            m.encode(&mut buf);
            if !matches!(m, Message::Chunk { .. }) {
                let mut long = buf.clone();
                long.push(0);
                assert!(Message::decode_all(&long).is_err(), "{}", m.name());
            }
            for len in 0..buf.len() {
                let cut = Message::decode_all(&buf[..len]);
                // A chunk cut after its header is a shorter valid chunk; the
                // receive pipeline checks its length against the manifest.
                if matches!(m, Message::Chunk { .. }) && len >= CHUNK_HEADER_LEN {
                    continue;
                }
                assert!(cut.is_err(), "{} cut to {len}", m.name());
            }
        }
        assert_eq!(
            Message::decode_all(&[200]),
            Err(MessageError::Decode(DecodeError::UnknownType(200)))
        );
        let mut bad_flags = Vec::new();
        Message::Chunk {
            header: ChunkHeader {
                file: 0,
                index: 0,
                compressed: false,
                leaf: [0; 32],
            },
            data: b"x",
        }
        .encode(&mut bad_flags);
        bad_flags[13] = 0x80;
        assert!(Message::decode_all(&bad_flags).is_err());
    }

    #[test]
    fn skipped_files_are_runs_and_only_canonical_runs_decode() {
        let set = FileRuns::from_sorted([2, 3, 4, 4, 7, 8, 20]);
        assert_eq!(set.runs, [(2, 3), (7, 2), (20, 1)]);
        assert_eq!(set.files().collect::<Vec<_>>(), [2, 3, 4, 7, 8, 20]);
        assert!(set.contains(2) && set.contains(4) && set.contains(20));
        assert!(!set.contains(1) && !set.contains(5) && !set.contains(21));
        assert!(set.within(2, 21) && !set.within(3, 21) && !set.within(2, 20));
        assert!(FileRuns::default().is_empty() && !FileRuns::default().contains(0));
        let runs = |runs: &[(u32, u32)]| {
            let mut buf = Vec::new();
            FileRuns {
                runs: runs.to_vec(),
            }
            .encode(&mut buf);
            FileRuns::decode_all(&buf)
        };
        assert!(runs(&[(0, 1), (5, 2)]).is_ok());
        // Empty, touching, overlapping, out of order, past u32.
        for bad in [
            &[(0, 0)][..],
            &[(0, 2), (2, 1)],
            &[(0, 3), (1, 1)],
            &[(5, 1), (1, 1)],
            &[(u32::MAX, 2)],
        ] {
            assert!(runs(bad).is_err(), "{bad:?}");
        }
        // A count the bytes cannot hold is refused before allocating.
        let mut huge = u32::MAX.to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 8]);
        assert_eq!(
            FileRuns::decode_all(&huge),
            Err(DecodeError::Truncated("skipped runs"))
        );
    }
}
