//! The rules of a transfer once the offer is out, as two sans-IO state
//! machines: no sockets, no files, no clock.
//!
//! * [`ReceiveMachine`] is the receiver's view of the sender's stream: fed
//!   each decoded message, it says what to do with it (write this chunk of
//!   this length, verify this file, check the root) or which rule the sender
//!   broke: chunks in order and of their declared length, `FileEnd` after a
//!   file's last chunk, `TransferComplete` after the last file, nothing for
//!   a skipped file.
//! * [`SendMachine`] is the sender's view of the receiver's replies: whether
//!   an `Accept` fits the offer, acks that only grow and stay within the
//!   offer, `Done` only after the whole stream went out, the window of
//!   bytes that may be in flight, and how long the receiver may stay silent
//!   ([`SendMachine::reply_deadline`]).
//! * [`AckSchedule`] is when the receiver tells the sender how far it got:
//!   on every change, and as a keepalive while the disk is slow but alive.
//!
//! Time is passed in (`Instant`s the caller reads from its clock, or a
//! simulated one: `tallow-testkit`'s `sim` drives whole transfers through
//! these machines on a link with latency and a clock it advances). The
//! async pipelines (`tallow-transfer`'s `send` and `receive`) own the I/O
//! and feed these machines; the rules are unit-tested below and fuzzed
//! (`fuzz/fuzz_targets/transfer_machines.rs`) without a socket.

use std::time::{Duration, Instant};

use crate::manifest::Manifest;
use crate::message::{AbortKind, ChunkHeader, FileRuns, Message, ResumePoint};

/// A rule of the protocol the other side broke. Each names what arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerMisbehaved {
    /// A message of a type that has no place here.
    #[error("it sent {got} where {expected} was expected")]
    Unexpected {
        /// What arrived.
        got: &'static str,
        /// What could have.
        expected: &'static str,
    },
    /// A chunk other than the next one.
    #[error("it sent chunk {index} of file {file} where chunk {expected_index} of file {expected_file} was expected")]
    ChunkOutOfOrder {
        /// The chunk's file.
        file: u32,
        /// The chunk's index.
        index: u64,
        /// The file expected.
        expected_file: u32,
        /// The chunk expected.
        expected_index: u64,
    },
    /// A chunk or `FileEnd` after every file was complete.
    #[error("it sent {0} after the last file")]
    AfterLastFile(&'static str),
    /// A chunk whose data cannot be the declared plaintext length.
    #[error("chunk {index} of {path:?} carries {got} bytes for {expected} bytes of data")]
    ChunkLength {
        /// The file, as named in the offer.
        path: String,
        /// The chunk.
        index: u64,
        /// Bytes of data in the message.
        got: usize,
        /// Plaintext bytes the chunk holds.
        expected: u64,
    },
    /// A compressed chunk that does not inflate to its declared length.
    #[error("chunk {index} of {path:?} does not decompress to its declared {expected} bytes")]
    Decompression {
        /// The file, as named in the offer.
        path: String,
        /// The chunk.
        index: u64,
        /// Plaintext bytes the chunk holds.
        expected: usize,
    },
    /// `FileEnd` for another file, or before the file's last chunk.
    #[error("it ended file {file} after {chunks} chunks, while file {expected_file} has {expected_chunks}")]
    FileEndEarly {
        /// The file it ended.
        file: u32,
        /// Chunks of the current file received.
        chunks: u64,
        /// The file in progress.
        expected_file: u32,
        /// Its chunk count.
        expected_chunks: u64,
    },
    /// `FileFailed` for a file other than the one in progress.
    #[error("it gave up on file {file} while file {expected_file} was in progress")]
    FailedOutOfOrder {
        /// The file it gave up on.
        file: u32,
        /// The file in progress.
        expected_file: u32,
    },
    /// `TransferComplete` before the last file.
    #[error("it declared the transfer complete after {files_done} of {files} files")]
    CompleteEarly {
        /// Files complete.
        files_done: usize,
        /// Files offered.
        files: usize,
    },
    /// An `Accept` whose resume point or skipped files lie outside the offer.
    #[error("it asked to resume from file {files_done}, chunk {chunks_done}, or to skip files outside the offer")]
    AcceptOutsideOffer {
        /// The resume point's file.
        files_done: u32,
        /// The resume point's chunk.
        chunks_done: u64,
    },
    /// An ack that went backwards or beyond the offer.
    #[error("it acknowledged {got} bytes after {last}, of {total}")]
    AckOutOfRange {
        /// The ack.
        got: u64,
        /// The ack before.
        last: u64,
        /// Bytes in the offer.
        total: u64,
    },
    /// `Done` before the whole stream was sent.
    #[error("it said Done before the transfer was complete")]
    DoneEarly,
    /// A receiver asked for chunks again that it did not have before this
    /// run, or asked twice, or before the stream ended.
    #[error("it asked for {count} chunks of file {file} from chunk {first} again, which are not the part of the resumed file it had before this run")]
    RefetchOutsideResumed {
        /// The file it named.
        file: u32,
        /// Its first chunk.
        first: u64,
        /// How many.
        count: u64,
    },
}

/// What the receiver does with a message from the sender's stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// Write chunk `header.index` of file `header.file`: `data` as sent,
    /// which holds `len` plaintext bytes once decoded.
    Chunk {
        /// The chunk header (file, index, compression, leaf).
        header: ChunkHeader,
        /// The data as it arrived.
        data: &'a [u8],
        /// Plaintext bytes it decodes to.
        len: usize,
    },
    /// Chunk `header.index` of file `header.file` is `len` zero bytes (a
    /// hole on the sender's disk): skip over it rather than write it.
    Zeros {
        /// The chunk header (file, index, leaf).
        header: ChunkHeader,
        /// Plaintext bytes it stands for.
        len: usize,
    },
    /// The file in progress is complete: verify it against `hash`.
    FileEnd {
        /// Index of the file in the offer.
        file: u32,
        /// The sender's BLAKE3 of the whole file.
        hash: [u8; 32],
    },
    /// The sender gave up on the file in progress: drop what arrived of
    /// it. `missing` plaintext bytes of it will not come.
    FileFailed {
        /// Index of the file in the offer.
        file: u32,
        /// The sender's sentence.
        reason: &'a str,
        /// Bytes of the file that were not sent.
        missing: u64,
    },
    /// Every file is complete: verify the root and finish.
    Complete {
        /// The sender's Merkle root.
        merkle_root: [u8; 32],
    },
    /// A chunk asked for again ([`ReceiveMachine::expect_refetch`]):
    /// write it in place of the damaged one, once it matches its record.
    Refetched {
        /// The chunk header (file, index, compression).
        header: ChunkHeader,
        /// The data as it arrived.
        data: &'a [u8],
        /// Plaintext bytes it decodes to.
        len: usize,
        /// It is the last one asked for: the transfer can end.
        last: bool,
    },
    /// Nothing to do (a keepalive).
    Nothing,
    /// The sender stopped, saying why.
    Aborted {
        /// Its class of failure.
        kind: AbortKind,
        /// Its sentence.
        detail: &'a str,
    },
}

/// The receiver's rules for the stream, from the resume point on.
#[derive(Debug, Clone)]
pub struct ReceiveMachine<'m> {
    manifest: &'m Manifest,
    skip: FileRuns,
    /// The file whose chunks come next.
    file: usize,
    next_chunk: u64,
    complete: bool,
    /// After `complete`: the file and the chunks asked for again, still to
    /// come (next, end).
    refetch: Option<(u32, u64, u64)>,
}

impl<'m> ReceiveMachine<'m> {
    /// The stream of `manifest` from `start`, without the files in `skip`.
    pub fn new(manifest: &'m Manifest, start: ResumePoint, skip: FileRuns) -> Self {
        let mut machine = ReceiveMachine {
            manifest,
            skip,
            file: start.files_done as usize,
            next_chunk: start.chunks_done,
            complete: false,
            refetch: None,
        };
        machine.pass_skipped();
        machine
    }

    /// Whether `TransferComplete` has arrived (nothing may follow but
    /// the chunks asked for again).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// After `TransferComplete`, we asked for chunks `first..first + count`
    /// of `file` again (`Refetch`): those, in order, are what may come now.
    /// Ignored before the stream is complete or for no chunks.
    pub fn expect_refetch(&mut self, file: u32, first: u64, count: u64) {
        if self.complete && count > 0 {
            self.refetch = Some((file, first, first.saturating_add(count)));
        }
    }

    /// Whether chunk data fits the chunk it claims to be, of `expected`
    /// plaintext bytes: compressed data must be shorter than that.
    fn check_length(
        &self,
        file: u32,
        header: &ChunkHeader,
        data: &[u8],
        expected: u64,
    ) -> Result<(), PeerMisbehaved> {
        let fits = if header.compressed {
            !data.is_empty() && (data.len() as u64) < expected
        } else {
            data.len() as u64 == expected
        };
        if fits {
            return Ok(());
        }
        Err(PeerMisbehaved::ChunkLength {
            path: self.manifest.files.at(file as usize).path.to_owned(),
            index: header.index,
            got: data.len(),
            expected,
        })
    }

    /// A message after `TransferComplete`: only a chunk asked for again.
    fn on_refetched<'a>(&mut self, msg: Message<'a>) -> Result<Incoming<'a>, PeerMisbehaved> {
        let Some((file, next, end)) = self.refetch else {
            return Err(unexpected(&msg, "nothing after TransferComplete"));
        };
        match msg {
            Message::Chunk { header, data } => {
                let size = self.manifest.files.get(file as usize).map_or(0, |f| f.size);
                if header.file != file
                    || header.index != next
                    || header.index >= self.manifest.chunk_count(size)
                {
                    return Err(PeerMisbehaved::ChunkOutOfOrder {
                        file: header.file,
                        index: header.index,
                        expected_file: file,
                        expected_index: next,
                    });
                }
                let expected = self.manifest.chunk_len(size, header.index);
                self.check_length(file, &header, data, expected)?;
                let last = next + 1 == end;
                self.refetch = (!last).then_some((file, next + 1, end));
                Ok(Incoming::Refetched {
                    header,
                    data,
                    len: expected as usize,
                    last,
                })
            }
            Message::KeepAlive => Ok(Incoming::Nothing),
            Message::Abort { kind, detail } => Ok(Incoming::Aborted { kind, detail }),
            other => Err(unexpected(&other, "the Chunks asked for again")),
        }
    }

    /// Nothing comes for a skipped file: step over them.
    fn pass_skipped(&mut self) {
        if self.next_chunk == 0 {
            while self.skip.contains(self.file as u32) {
                self.file += 1;
            }
        }
    }

    /// The plaintext length of the chunk `header` names, if it is the next
    /// one.
    fn next_chunk_len(&self, header: &ChunkHeader) -> Result<u64, PeerMisbehaved> {
        let entry = self
            .manifest
            .files
            .get(self.file)
            .ok_or(PeerMisbehaved::AfterLastFile("a chunk"))?;
        let count = self.manifest.chunk_count(entry.size);
        if header.file as usize != self.file
            || header.index != self.next_chunk
            || header.index >= count
        {
            return Err(PeerMisbehaved::ChunkOutOfOrder {
                file: header.file,
                index: header.index,
                expected_file: self.file as u32,
                expected_index: self.next_chunk,
            });
        }
        Ok(self.manifest.chunk_len(entry.size, header.index))
    }

    /// Check `msg` against the rules and say what to do with it.
    pub fn on_message<'a>(&mut self, msg: Message<'a>) -> Result<Incoming<'a>, PeerMisbehaved> {
        if self.complete {
            return self.on_refetched(msg);
        }
        match msg {
            Message::Zeros { file, index, leaf } => {
                let header = ChunkHeader {
                    file,
                    index,
                    compressed: false,
                    leaf,
                };
                let expected = self.next_chunk_len(&header)?;
                self.next_chunk += 1;
                Ok(Incoming::Zeros {
                    header,
                    len: expected as usize,
                })
            }
            Message::Chunk { header, data } => {
                let expected = self.next_chunk_len(&header)?;
                self.check_length(self.file as u32, &header, data, expected)?;
                self.next_chunk += 1;
                Ok(Incoming::Chunk {
                    header,
                    data,
                    len: expected as usize,
                })
            }
            Message::FileEnd { file, hash } => {
                let entry = self
                    .manifest
                    .files
                    .get(self.file)
                    .ok_or(PeerMisbehaved::AfterLastFile("FileEnd"))?;
                let chunks = self.manifest.chunk_count(entry.size);
                if file as usize != self.file || self.next_chunk != chunks {
                    return Err(PeerMisbehaved::FileEndEarly {
                        file,
                        chunks: self.next_chunk,
                        expected_file: self.file as u32,
                        expected_chunks: chunks,
                    });
                }
                self.file += 1;
                self.next_chunk = 0;
                self.pass_skipped();
                Ok(Incoming::FileEnd { file, hash })
            }
            Message::FileFailed { file, reason } => {
                let entry = self
                    .manifest
                    .files
                    .get(self.file)
                    .ok_or(PeerMisbehaved::AfterLastFile("FileFailed"))?;
                if file as usize != self.file {
                    return Err(PeerMisbehaved::FailedOutOfOrder {
                        file,
                        expected_file: self.file as u32,
                    });
                }
                let received = self.manifest.chunks_len(entry.size, 0..self.next_chunk);
                self.file += 1;
                self.next_chunk = 0;
                self.pass_skipped();
                Ok(Incoming::FileFailed {
                    file,
                    reason,
                    missing: entry.size - received,
                })
            }
            Message::TransferComplete { merkle_root } => {
                if self.file != self.manifest.files.len() {
                    return Err(PeerMisbehaved::CompleteEarly {
                        files_done: self.file,
                        files: self.manifest.files.len(),
                    });
                }
                self.complete = true;
                Ok(Incoming::Complete { merkle_root })
            }
            Message::KeepAlive => Ok(Incoming::Nothing),
            Message::Abort { kind, detail } => Ok(Incoming::Aborted { kind, detail }),
            other => Err(unexpected(
                &other,
                "Chunk, FileEnd, FileFailed or TransferComplete",
            )),
        }
    }
}

/// The receiver's answer to the offer, checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Go ahead from `resume`, without the files in `skip`.
    Accepted {
        /// Where to start.
        resume: ResumePoint,
        /// Files not to send.
        skip: FileRuns,
    },
    /// No, with the receiver's reason.
    Declined(&'a str),
    /// The receiver stopped.
    Aborted {
        /// Its class of failure.
        kind: AbortKind,
        /// Its sentence.
        detail: &'a str,
    },
}

/// What the sender does with a reply once data flows.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// The receiver has written this many bytes (progress; the window
    /// moves).
    Acked(u64),
    /// Everything is written and verified: the transfer succeeded.
    Done,
    /// Send chunks `first..first + count` of `file` again (the receiver
    /// found them damaged on its disk, from an earlier run), then wait for
    /// `Done`.
    Refetch {
        /// Index into the manifest's files.
        file: u32,
        /// The first chunk.
        first: u64,
        /// How many.
        count: u64,
    },
    /// The receiver stopped.
    Aborted {
        /// Its class of failure.
        kind: AbortKind,
        /// Its sentence.
        detail: &'a str,
    },
}

/// The sender's rules for the receiver's replies, and its window.
#[derive(Debug, Clone)]
pub struct SendMachine {
    total: u64,
    window: u64,
    /// Plaintext bytes sent (or already at the receiver).
    sent: u64,
    /// Bytes the receiver acknowledged (or already had).
    acked: u64,
    /// The last ack, to keep acks growing.
    last_ack: u64,
    /// `TransferComplete` went out: a `Done` is now the end.
    complete_sent: bool,
    /// Where the receiver's earlier run ended: only chunks before it may be
    /// asked for again, once.
    resume: ResumePoint,
    refetched: bool,
    /// When the receiver last said anything.
    last_heard: Instant,
    /// When we last began to wait on the receiver (the window filled, or
    /// everything went out).
    waiting_since: Instant,
}

impl SendMachine {
    /// For an offer of `total` bytes, with at most `window` bytes sent and
    /// not acknowledged; the offer went out at `now`.
    pub fn new(total: u64, window: u64, now: Instant) -> Self {
        SendMachine {
            total,
            window,
            sent: 0,
            acked: 0,
            last_ack: 0,
            complete_sent: false,
            resume: ResumePoint::default(),
            refetched: false,
            last_heard: now,
            waiting_since: now,
        }
    }

    /// Whether we wait on the receiver: the window is full, or everything
    /// is sent.
    fn waiting(&self) -> bool {
        !self.window_open() || self.complete_sent
    }

    /// When the receiver's silence becomes a failure: `idle` after it last
    /// said anything or after we began to wait on it (the window filled, or
    /// everything was sent), whichever is later. `None` while we may send:
    /// its acks are not needed yet (we may have been busy longer than that,
    /// hashing what it already has, say).
    pub fn reply_deadline(&self, idle: Duration) -> Option<Instant> {
        self.waiting()
            .then(|| self.last_heard.max(self.waiting_since) + idle)
    }

    /// Check the receiver's answer to `manifest`; an accepted transfer
    /// starts with the bytes the receiver already has (resumed or skipped)
    /// counted as sent and acknowledged.
    pub fn on_decision<'a>(
        &mut self,
        manifest: &Manifest,
        msg: Message<'a>,
        now: Instant,
    ) -> Result<Decision<'a>, PeerMisbehaved> {
        self.last_heard = now;
        match msg {
            Message::Accept { resume, skip } => {
                if !resume.fits(manifest)
                    || !skip.within(resume.first_unstarted(), manifest.files.len())
                {
                    return Err(PeerMisbehaved::AcceptOutsideOffer {
                        files_done: resume.files_done,
                        chunks_done: resume.chunks_done,
                    });
                }
                let there = resume.bytes(manifest) + skip.bytes(manifest);
                self.sent = there;
                self.acked = there;
                self.resume = resume;
                Ok(Decision::Accepted { resume, skip })
            }
            Message::Decline { reason } => Ok(Decision::Declined(reason)),
            Message::Abort { kind, detail } => Ok(Decision::Aborted { kind, detail }),
            other => Err(unexpected(&other, "Accept or Decline")),
        }
    }

    /// Check a reply that arrived at `now` while data flows.
    pub fn on_reply<'a>(
        &mut self,
        msg: Message<'a>,
        now: Instant,
    ) -> Result<Reply<'a>, PeerMisbehaved> {
        self.last_heard = now;
        match msg {
            Message::Ack { bytes } => {
                if bytes < self.last_ack || bytes > self.total {
                    return Err(PeerMisbehaved::AckOutOfRange {
                        got: bytes,
                        last: self.last_ack,
                        total: self.total,
                    });
                }
                self.last_ack = bytes;
                self.acked = self.acked.max(bytes);
                Ok(Reply::Acked(self.acked))
            }
            Message::Done if self.complete_sent => Ok(Reply::Done),
            // The resumed file's kept chunks, once, after the stream.
            Message::Refetch { file, first, count } => {
                let within = first
                    .checked_add(count)
                    .is_some_and(|end| end <= self.resume.chunks_done);
                if !self.complete_sent
                    || self.refetched
                    || file != self.resume.files_done
                    || count == 0
                    || !within
                {
                    return Err(PeerMisbehaved::RefetchOutsideResumed { file, first, count });
                }
                self.refetched = true;
                Ok(Reply::Refetch { file, first, count })
            }
            Message::Done => Err(PeerMisbehaved::DoneEarly),
            Message::Abort { kind, detail } => Ok(Reply::Aborted { kind, detail }),
            other => Err(unexpected(&other, "Ack, Refetch or Done")),
        }
    }

    /// A frame carrying `data_len` plaintext bytes went out at `now`;
    /// `last` for `TransferComplete`.
    pub fn on_sent(&mut self, data_len: u64, last: bool, now: Instant) {
        let waiting = self.waiting();
        self.sent += data_len;
        self.complete_sent |= last;
        if !waiting && self.waiting() {
            self.waiting_since = now;
        }
    }

    /// Whether another frame may go out: no more than the window is sent
    /// and not yet acknowledged.
    pub fn window_open(&self) -> bool {
        self.sent.saturating_sub(self.acked) <= self.window
    }

    /// Bytes acknowledged so far (including what the receiver had).
    pub fn acked(&self) -> u64 {
        self.acked
    }
}

/// When the receiver acknowledges what it wrote: at each tick (every
/// [`ACK_INTERVAL`](crate::limits::ACK_INTERVAL)) if the count changed, and
/// every `keepalive` even if it did not, as long as the disk did something
/// within `stall_limit` (a long sync, or checking a resumed partial, is not
/// a hung disk, but a hung disk is not hidden from the sender either).
#[derive(Debug, Clone)]
pub struct AckSchedule {
    keepalive: Duration,
    stall_limit: Duration,
    /// The count last acknowledged.
    acked: u64,
    /// When the last ack went out.
    last_sent: Instant,
    /// The disk's activity count at the last tick, and when it last moved.
    activity: u64,
    last_change: Instant,
}

impl AckSchedule {
    /// Starting at `now`, with nothing acknowledged yet.
    pub fn new(now: Instant, keepalive: Duration, stall_limit: Duration) -> Self {
        AckSchedule {
            keepalive,
            stall_limit,
            acked: 0,
            last_sent: now,
            activity: 0,
            last_change: now,
        }
    }

    /// A tick at `now` with `written` bytes written and `activity` (any
    /// count that grows while the disk works: written plus checked bytes):
    /// the ack to send, if one is due.
    pub fn on_tick(
        &mut self,
        now: Instant,
        written: u64,
        activity: u64,
    ) -> Option<Message<'static>> {
        let changed = written != self.acked;
        if changed || activity != self.activity {
            self.activity = activity;
            self.last_change = now;
        }
        let keepalive = now.saturating_duration_since(self.last_sent) >= self.keepalive
            && now.saturating_duration_since(self.last_change) < self.stall_limit;
        if !changed && !keepalive {
            return None;
        }
        self.acked = written;
        self.last_sent = now;
        Some(Message::Ack { bytes: written })
    }
}

fn unexpected(msg: &Message<'_>, expected: &'static str) -> PeerMisbehaved {
    PeerMisbehaved::Unexpected {
        got: msg.name(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_list::FileList;
    use crate::manifest::{FileEntry, LeftOut, Timestamp};

    const CHUNK: u32 = 4096;

    /// Files of these sizes, chunked at 4 KiB.
    fn offer(sizes: &[u64]) -> Manifest {
        Manifest {
            chunk_size: CHUNK,
            dirs: vec![],
            files: FileList::from_entries(sizes.iter().enumerate().map(|(i, &size)| FileEntry {
                path: format!("f{i}"),
                size,
                mode: 0o644,
                mtime: Timestamp::default(),
            }))
            .unwrap(),
            left_out: LeftOut::default(),
        }
    }

    fn chunk(file: u32, index: u64, compressed: bool) -> ChunkHeader {
        ChunkHeader {
            file,
            index,
            compressed,
            leaf: [0; 32],
        }
    }

    /// A message as a test writes it: `C(F, I, LEN)` (raw chunk), `Z(…)`
    /// (compressed), `E F` (FileEnd), TransferComplete, KeepAlive, and two
    /// of the receiver's messages.
    #[derive(Clone, Copy, Debug)]
    enum M {
        C(u32, u64, usize),
        Z(u32, u64, usize),
        E(u32),
        Complete,
        Keep,
        Accept,
        Ack(u64),
    }

    static DATA: [u8; 2 * CHUNK as usize] = [7; 2 * CHUNK as usize];

    fn message(m: M) -> Message<'static> {
        match m {
            M::C(f, i, len) => Message::Chunk {
                header: chunk(f, i, false),
                data: &DATA[..len],
            },
            M::Z(f, i, len) => Message::Chunk {
                header: chunk(f, i, true),
                data: &DATA[..len],
            },
            M::E(file) => Message::FileEnd {
                file,
                hash: [0; 32],
            },
            M::Complete => Message::TransferComplete {
                merkle_root: [0; 32],
            },
            M::Keep => Message::KeepAlive,
            M::Accept => Message::Accept {
                resume: ResumePoint::default(),
                skip: FileRuns::default(),
            },
            M::Ack(bytes) => Message::Ack { bytes },
        }
    }

    /// Feed `stream`; the index of the first message refused and why, or
    /// `None` if every one was accepted.
    fn run(
        m: &Manifest,
        start: ResumePoint,
        skip: &[u32],
        stream: &[M],
    ) -> Option<(usize, PeerMisbehaved)> {
        let mut machine =
            ReceiveMachine::new(m, start, FileRuns::from_sorted(skip.iter().copied()));
        stream
            .iter()
            .enumerate()
            .find_map(|(i, &msg)| machine.on_message(message(msg)).err().map(|e| (i, e)))
    }

    const C: usize = CHUNK as usize;

    #[test]
    fn a_well_formed_stream_is_accepted_at_every_size_boundary() {
        // 0, 1, chunk-1, chunk, chunk+1, many chunks.
        let m = offer(&[0, 1, C as u64 - 1, C as u64, C as u64 + 1, 3 * C as u64]);
        let stream = [
            M::E(0),
            M::C(1, 0, 1),
            M::E(1),
            M::C(2, 0, C - 1),
            M::E(2),
            M::C(3, 0, C),
            M::E(3),
            M::C(4, 0, C),
            M::Keep,
            M::Z(4, 1, 1),
            M::E(4),
            M::C(5, 0, C),
            M::C(5, 1, C),
            M::C(5, 2, C),
            M::E(5),
            M::Complete,
        ];
        // Chunk 1 of file 4 holds one byte: a compressed form of it cannot
        // be shorter, so it is refused; raw it passes.
        let refused = run(&m, ResumePoint::default(), &[], &stream);
        assert!(
            matches!(refused, Some((9, PeerMisbehaved::ChunkLength { .. }))),
            "{refused:?}"
        );
        let mut fixed = stream;
        fixed[9] = M::C(4, 1, 1);
        assert_eq!(run(&m, ResumePoint::default(), &[], &fixed), None);
        let mut machine = ReceiveMachine::new(&m, ResumePoint::default(), FileRuns::default());
        let chunk = machine.on_message(message(M::E(0))).unwrap();
        assert_eq!(
            chunk,
            Incoming::FileEnd {
                file: 0,
                hash: [0; 32]
            }
        );
        assert!(!machine.is_complete());
    }

    /// The malicious-sender cases, one row each: what the stream holds and
    /// the rule it breaks (the real-process suite keeps a few of them end
    /// to end in `tallow/tests/hostile_peer.rs`).
    #[test]
    fn a_sender_breaking_a_rule_is_stopped_at_that_message() {
        let m = offer(&[2 * C as u64, 10]);
        let start = ResumePoint::default();
        type Check = fn(&PeerMisbehaved) -> bool;
        let cases: &[(&str, &[M], usize, Check)] = &[
            ("chunk of the wrong file", &[M::C(1, 0, 10)], 0, |e| {
                matches!(
                    e,
                    PeerMisbehaved::ChunkOutOfOrder {
                        expected_file: 0,
                        ..
                    }
                )
            }),
            ("chunk out of order", &[M::C(0, 1, C)], 0, |e| {
                matches!(
                    e,
                    PeerMisbehaved::ChunkOutOfOrder {
                        index: 1,
                        expected_index: 0,
                        ..
                    }
                )
            }),
            ("chunk replayed", &[M::C(0, 0, C), M::C(0, 0, C)], 1, |e| {
                matches!(e, PeerMisbehaved::ChunkOutOfOrder { .. })
            }),
            (
                "chunk past the file's end",
                &[M::C(0, 0, C), M::C(0, 1, C), M::C(0, 2, C)],
                2,
                |e| matches!(e, PeerMisbehaved::ChunkOutOfOrder { index: 2, .. }),
            ),
            (
                "chunk one byte short",
                &[M::C(0, 0, C - 1)],
                0,
                |e| matches!(e, PeerMisbehaved::ChunkLength { got, expected: 4096, .. } if *got == C - 1),
            ),
            ("chunk one byte long", &[M::C(0, 0, C + 1)], 0, |e| {
                matches!(e, PeerMisbehaved::ChunkLength { .. })
            }),
            (
                "compressed chunk as long as its plaintext",
                &[M::Z(0, 0, C)],
                0,
                |e| matches!(e, PeerMisbehaved::ChunkLength { .. }),
            ),
            ("empty compressed chunk", &[M::Z(0, 0, 0)], 0, |e| {
                matches!(e, PeerMisbehaved::ChunkLength { .. })
            }),
            ("file ended early", &[M::C(0, 0, C), M::E(0)], 1, |e| {
                matches!(
                    e,
                    PeerMisbehaved::FileEndEarly {
                        chunks: 1,
                        expected_chunks: 2,
                        ..
                    }
                )
            }),
            (
                "another file ended",
                &[M::C(0, 0, C), M::C(0, 1, C), M::E(1)],
                2,
                |e| {
                    matches!(
                        e,
                        PeerMisbehaved::FileEndEarly {
                            file: 1,
                            expected_file: 0,
                            ..
                        }
                    )
                },
            ),
            (
                "complete before the last file",
                &[M::C(0, 0, C), M::C(0, 1, C), M::E(0), M::Complete],
                3,
                |e| {
                    matches!(
                        e,
                        PeerMisbehaved::CompleteEarly {
                            files_done: 1,
                            files: 2
                        }
                    )
                },
            ),
            (
                "chunk after the last file",
                &[
                    M::C(0, 0, C),
                    M::C(0, 1, C),
                    M::E(0),
                    M::C(1, 0, 10),
                    M::E(1),
                    M::C(2, 0, 1),
                ],
                5,
                |e| matches!(e, PeerMisbehaved::AfterLastFile(_)),
            ),
            (
                "anything after complete",
                &[
                    M::C(0, 0, C),
                    M::C(0, 1, C),
                    M::E(0),
                    M::C(1, 0, 10),
                    M::E(1),
                    M::Complete,
                    M::Keep,
                ],
                6,
                |e| matches!(e, PeerMisbehaved::Unexpected { .. }),
            ),
            ("a receiver's message", &[M::Accept], 0, |e| {
                matches!(e, PeerMisbehaved::Unexpected { got: "Accept", .. })
            }),
            ("an ack from the sender", &[M::Ack(5)], 0, |e| {
                matches!(e, PeerMisbehaved::Unexpected { got: "Ack", .. })
            }),
        ];
        for (what, stream, at, check) in cases {
            match run(&m, start, &[], stream) {
                Some((i, e)) => assert!(i == *at && check(&e), "{what}: refused at {i} with {e:?}"),
                None => panic!("{what}: accepted"),
            }
        }
    }

    #[test]
    fn resumed_and_skipped_files_get_nothing() {
        let m = offer(&[2 * C as u64, 10, 20, 30]);
        // Resumed at chunk 1 of file 0, files 1 and 3 skipped.
        let start = ResumePoint {
            files_done: 0,
            chunks_done: 1,
        };
        let good = [M::C(0, 1, C), M::E(0), M::C(2, 0, 20), M::E(2), M::Complete];
        assert_eq!(run(&m, start, &[1, 3], &good), None);
        // Chunk 0 again, or a skipped file's chunk or end: refused.
        assert!(run(&m, start, &[1, 3], &[M::C(0, 0, C)]).is_some());
        let skipped_chunk = [M::C(0, 1, C), M::E(0), M::C(1, 0, 10)];
        assert!(matches!(
            run(&m, start, &[1, 3], &skipped_chunk),
            Some((
                2,
                PeerMisbehaved::ChunkOutOfOrder {
                    expected_file: 2,
                    ..
                }
            ))
        ));
        let skipped_end = [M::C(0, 1, C), M::E(0), M::C(2, 0, 20), M::E(2), M::E(3)];
        assert!(matches!(
            run(&m, start, &[1, 3], &skipped_end),
            Some((4, PeerMisbehaved::AfterLastFile(_)))
        ));
        // Everything skipped from the start: complete at once.
        assert_eq!(
            run(&m, ResumePoint::default(), &[0, 1, 2, 3], &[M::Complete]),
            None
        );
    }

    #[test]
    fn the_sender_checks_the_decision_acks_done_and_its_window() {
        let m = offer(&[3 * C as u64, 100]);
        let total = m.total_size();
        let t0 = Instant::now();
        let mut s = SendMachine::new(total, 2 * C as u64, t0);
        let bad = |resume: ResumePoint, skip: &[u32]| {
            let mut s = SendMachine::new(total, 0, t0);
            s.on_decision(
                &m,
                Message::Accept {
                    resume,
                    skip: FileRuns::from_sorted(skip.iter().copied()),
                },
                t0,
            )
        };
        let point = |files_done, chunks_done| ResumePoint {
            files_done,
            chunks_done,
        };
        for (resume, skip) in [
            (point(3, 0), &[][..]),
            (point(0, 4), &[]),
            (point(2, 1), &[]),
            (point(0, 1), &[0]),
            (point(0, 0), &[2]),
        ] {
            assert!(
                matches!(
                    bad(resume, skip),
                    Err(PeerMisbehaved::AcceptOutsideOffer { .. })
                ),
                "{resume:?} {skip:?}"
            );
        }
        assert_eq!(
            bad(point(2, 0), &[]).unwrap(),
            Decision::Accepted {
                resume: point(2, 0),
                skip: FileRuns::default()
            }
        );
        assert!(matches!(
            s.on_decision(&m, Message::Ack { bytes: 0 }, t0),
            Err(PeerMisbehaved::Unexpected { got: "Ack", .. })
        ));
        assert_eq!(
            s.on_decision(&m, Message::Decline { reason: "no" }, t0)
                .unwrap(),
            Decision::Declined("no")
        );
        // Resumed after chunk 1 of file 0, file 1 skipped: those bytes are
        // there from the start.
        s.on_decision(
            &m,
            Message::Accept {
                resume: point(0, 1),
                skip: FileRuns::from_sorted([1]),
            },
            t0,
        )
        .unwrap();
        assert_eq!(s.acked(), C as u64 + 100);
        // The window: two chunks may be unacknowledged, not more.
        s.on_sent(C as u64, false, t0);
        s.on_sent(C as u64, false, t0);
        assert!(s.window_open());
        s.on_sent(1, false, t0);
        assert!(!s.window_open());
        assert_eq!(
            s.on_reply(
                Message::Ack {
                    bytes: 2 * C as u64
                },
                t0
            )
            .unwrap(),
            Reply::Acked(2 * C as u64)
        );
        assert!(s.window_open());
        // Acks only grow and stay within the offer.
        assert!(matches!(
            s.on_reply(Message::Ack { bytes: C as u64 }, t0),
            Err(PeerMisbehaved::AckOutOfRange { .. })
        ));
        assert!(matches!(
            s.on_reply(Message::Ack { bytes: total + 1 }, t0),
            Err(PeerMisbehaved::AckOutOfRange { .. })
        ));
        // Done only once the whole stream went out.
        assert_eq!(
            s.on_reply(Message::Done, t0),
            Err(PeerMisbehaved::DoneEarly)
        );
        s.on_sent(0, true, t0);
        assert_eq!(s.on_reply(Message::Done, t0), Ok(Reply::Done));
        assert!(matches!(
            s.on_reply(Message::KeepAlive, t0),
            Err(PeerMisbehaved::Unexpected {
                got: "KeepAlive",
                ..
            })
        ));
    }

    #[test]
    fn a_file_the_sender_gives_up_on_ends_there_and_the_stream_goes_on() {
        let m = offer(&[3 * C as u64, 10, 20]);
        let mut r = ReceiveMachine::new(&m, ResumePoint::default(), FileRuns::default());
        let failed = |file| Message::FileFailed {
            file,
            reason: "it changed",
        };
        r.on_message(message(M::C(0, 0, C))).unwrap();
        // Given up after one of its three chunks: the rest never comes.
        assert_eq!(
            r.on_message(failed(0)),
            Ok(Incoming::FileFailed {
                file: 0,
                reason: "it changed",
                missing: 2 * C as u64
            })
        );
        // Not for a file other than the one in progress, nor twice.
        assert_eq!(
            r.clone().on_message(failed(2)),
            Err(PeerMisbehaved::FailedOutOfOrder {
                file: 2,
                expected_file: 1
            })
        );
        assert!(r.clone().on_message(failed(0)).is_err());
        // Before its first chunk, it is the whole file.
        assert_eq!(
            r.on_message(failed(1)),
            Ok(Incoming::FileFailed {
                file: 1,
                reason: "it changed",
                missing: 10
            })
        );
        r.on_message(message(M::C(2, 0, 20))).unwrap();
        r.on_message(message(M::E(2))).unwrap();
        assert!(r.on_message(failed(3)).is_err(), "after the last file");
        assert!(matches!(
            r.on_message(message(M::Complete)),
            Ok(Incoming::Complete { .. })
        ));
    }

    #[test]
    fn after_the_stream_only_the_chunks_asked_for_again_may_come_in_order() {
        let m = offer(&[4 * C as u64 + 5, 10]);
        // Resumed at chunk 3 of file 0: chunks 0..3 were there before.
        let start = ResumePoint {
            files_done: 0,
            chunks_done: 3,
        };
        let mut r = ReceiveMachine::new(&m, start, FileRuns::default());
        for msg in [M::C(0, 3, C), M::C(0, 4, 5), M::E(0), M::C(1, 0, 10)] {
            r.on_message(message(msg)).unwrap();
        }
        r.on_message(message(M::E(1))).unwrap();
        r.on_message(message(M::Complete)).unwrap();
        // Nothing asked for: nothing may come.
        assert!(matches!(
            r.clone().on_message(message(M::C(0, 1, C))),
            Err(PeerMisbehaved::Unexpected { got: "Chunk", .. })
        ));
        r.expect_refetch(0, 1, 2);
        for refused in [M::C(0, 2, C), M::C(1, 1, C), M::C(0, 1, C - 1), M::E(0)] {
            assert!(
                r.clone().on_message(message(refused)).is_err(),
                "{refused:?}"
            );
        }
        assert!(matches!(
            r.on_message(message(M::Z(0, 1, 100))),
            Ok(Incoming::Refetched {
                len: C,
                last: false,
                ..
            })
        ));
        assert_eq!(r.on_message(message(M::Keep)), Ok(Incoming::Nothing));
        assert!(matches!(
            r.on_message(message(M::C(0, 2, C))),
            Ok(Incoming::Refetched { last: true, .. })
        ));
        assert!(r.on_message(message(M::C(0, 3, C))).is_err(), "only those");
    }

    #[test]
    fn the_sender_sends_again_only_what_the_receiver_had_before_and_once() {
        let m = offer(&[4 * C as u64, 100]);
        let t0 = Instant::now();
        let refetch = |file, first, count| Message::Refetch { file, first, count };
        let mut s = SendMachine::new(m.total_size(), 1 << 20, t0);
        let resume = ResumePoint {
            files_done: 0,
            chunks_done: 3,
        };
        let skip = FileRuns::default();
        s.on_decision(&m, Message::Accept { resume, skip }, t0)
            .unwrap();
        assert!(
            s.clone().on_reply(refetch(0, 0, 1), t0).is_err(),
            "before the stream ended"
        );
        s.on_sent(C as u64 + 100, true, t0);
        for (file, first, count) in [(1, 0, 1), (0, 2, 2), (0, 0, 0), (0, u64::MAX, 2)] {
            assert!(
                matches!(
                    s.clone().on_reply(refetch(file, first, count), t0),
                    Err(PeerMisbehaved::RefetchOutsideResumed { .. })
                ),
                "{file} {first} {count}"
            );
        }
        assert_eq!(
            s.on_reply(refetch(0, 1, 2), t0),
            Ok(Reply::Refetch {
                file: 0,
                first: 1,
                count: 2
            })
        );
        assert!(s.on_reply(refetch(0, 1, 2), t0).is_err(), "once");
        assert_eq!(s.on_reply(Message::Done, t0), Ok(Reply::Done));
    }

    #[test]
    fn a_hole_is_a_chunk_without_data_and_follows_the_same_order() {
        let m = offer(&[2 * C as u64 + 5]);
        let mut r = ReceiveMachine::new(&m, ResumePoint::default(), FileRuns::default());
        let zeros = |index| Message::Zeros {
            file: 0,
            index,
            leaf: [0; 32],
        };
        assert!(matches!(
            r.clone().on_message(zeros(1)),
            Err(PeerMisbehaved::ChunkOutOfOrder { index: 1, .. })
        ));
        assert!(matches!(
            r.on_message(zeros(0)),
            Ok(Incoming::Zeros { len, .. }) if len == C
        ));
        r.on_message(message(M::C(0, 1, C))).unwrap();
        assert!(matches!(
            r.on_message(zeros(2)),
            Ok(Incoming::Zeros { len: 5, .. })
        ));
        assert!(r.on_message(zeros(3)).is_err(), "past the file's end");
        r.on_message(message(M::E(0))).unwrap();
    }

    #[test]
    fn the_receiver_may_stay_silent_only_while_the_sender_may_send() {
        let m = offer(&[4 * C as u64]);
        let t0 = Instant::now();
        let idle = Duration::from_secs(60);
        let mut s = SendMachine::new(m.total_size(), C as u64, t0);
        let accept = Message::Accept {
            resume: ResumePoint::default(),
            skip: FileRuns::default(),
        };
        let later = |secs| t0 + Duration::from_secs(secs);
        s.on_decision(&m, accept, later(1)).unwrap();
        assert_eq!(s.reply_deadline(idle), None, "the window is open");
        s.on_sent(2 * C as u64, false, later(2));
        assert_eq!(s.reply_deadline(idle), Some(later(2) + idle));
        // Any reply, even one that does not open the window, is a sign of
        // life and moves the deadline.
        s.on_reply(Message::Ack { bytes: 0 }, later(30)).unwrap();
        assert_eq!(s.reply_deadline(idle), Some(later(30) + idle));
        s.on_reply(Message::Ack { bytes: C as u64 }, later(31))
            .unwrap();
        assert_eq!(s.reply_deadline(idle), None);
        s.on_sent(2 * C as u64, true, later(31));
        s.on_reply(
            Message::Ack {
                bytes: 4 * C as u64,
            },
            later(32),
        )
        .unwrap();
        assert_eq!(
            s.reply_deadline(idle),
            Some(later(32) + idle),
            "everything sent: Done is awaited"
        );
        // A sender busy for longer than idle before it waits (hashing what
        // the receiver has, say) gives the receiver a whole idle period
        // from then, not from its last ack.
        let mut s = SendMachine::new(m.total_size(), C as u64, t0);
        s.on_decision(
            &m,
            Message::Accept {
                resume: ResumePoint::default(),
                skip: FileRuns::default(),
            },
            later(1),
        )
        .unwrap();
        s.on_sent(4 * C as u64, true, later(900));
        assert_eq!(s.reply_deadline(idle), Some(later(900) + idle));
    }

    #[test]
    fn acks_follow_changes_and_keep_alive_only_while_the_disk_moves() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut acks = AckSchedule::new(t0, Duration::from_secs(5), Duration::from_secs(20));
        let ack = |bytes| Some(Message::Ack { bytes });
        assert_eq!(acks.on_tick(at(50), 0, 0), None, "nothing to say yet");
        assert_eq!(acks.on_tick(at(100), 10, 10), ack(10));
        assert_eq!(acks.on_tick(at(150), 10, 10), None);
        assert_eq!(acks.on_tick(at(200), 30, 30), ack(30));
        // A long sync: nothing changes, a keepalive every 5 s.
        assert_eq!(acks.on_tick(at(5_150), 30, 30), None);
        assert_eq!(acks.on_tick(at(5_200), 30, 30), ack(30));
        assert_eq!(acks.on_tick(at(10_200), 30, 30), ack(30));
        assert_eq!(acks.on_tick(at(15_200), 30, 30), ack(30));
        // Nothing written for 20 s: the disk looks hung, the sender is not
        // told otherwise, until it moves again.
        assert_eq!(acks.on_tick(at(20_200), 30, 30), None);
        assert_eq!(acks.on_tick(at(60_000), 30, 30), None);
        assert_eq!(acks.on_tick(at(60_050), 31, 31), ack(31));
        // Checking a resumed partial is activity too: it keeps the
        // keepalives going (of the bytes written, not of those checked).
        assert_eq!(acks.on_tick(at(62_000), 31, 500), None);
        assert_eq!(acks.on_tick(at(65_100), 31, 600), ack(31));
        assert_eq!(acks.on_tick(at(90_000), 31, 600), None);
    }
}
