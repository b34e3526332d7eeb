//! The sender's pipeline.
//!
//! ```text
//! reader thread:  read chunk into a pooled frame buffer -> BLAKE3 (file, leaf)
//!                 -> numbered job, to a worker if it is to be compressed,
//!                 else straight to the queue
//! zstd workers:   compress at the chosen level (one per core) -> numbered frame
//! async task:     put frames back in order -> seal -> socket, while no more
//!                 than the window of bytes is unacknowledged
//! ack reader:     Ack / Done / Abort from the receiver
//! ```
//!
//! Reading and hashing run on one blocking thread and compression on as many
//! workers as there are cores; sealing and writing run on the async runtime.
//! Every frame lives in one of `FRAME_BUFFERS` recycled buffers, so memory
//! is O(buffers × chunk) whatever the file size. Acks are cumulative and only
//! bound how far the sender may run ahead (the window); nothing waits for a
//! reply per chunk.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use tallow_crypto::file_hash::{chunk_digest, ChunkDigest, FileHasher};
use tallow_crypto::merkle::{leaf_hash, MerkleBuilder};
use tallow_crypto::{FRAME_HEADER_LEN, TAG_LEN};
use tokio::sync::mpsc;

pub use crate::compression::Compression;
use crate::compression::{compress_into, ChunkCompression, FIXED_LEVEL};
use crate::notice::tell_peer_about;
use crate::source::SourceTree;
use crate::{zeros, FailedFile, Progress, TransferError};
use tallow_protocol::limits::{
    Deadlines, ABORT_NOTICE_TIMEOUT, CHUNK_HEADER_LEN, KEEPALIVE_INTERVAL, SEND_QUEUE_FRAMES,
};
use tallow_protocol::machine::{Decision, PeerMisbehaved, Reply, SendMachine};
use tallow_protocol::message::{AbortKind, ChunkHeader, FileRuns, Message, ResumePoint};
use tallow_protocol::transport::{FrameSink, FrameSource, TransportError};
use tallow_protocol::wire::Decode;
use tallow_protocol::Role;

/// How to send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Chunk compression policy.
    pub compression: Compression,
    /// Most plaintext bytes sent but not yet acknowledged.
    pub window: u64,
    /// A person stopping the transfer: the receiver is told, then it ends.
    pub cancel: crate::cancel::CancelSignal,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            compression: Compression::Auto,
            window: tallow_protocol::limits::DEFAULT_WINDOW,
            cancel: Default::default(),
        }
    }
}

/// Frame buffers in circulation (reader, workers, queue, socket). Bounds
/// the sender's memory to about this many chunks.
const FRAME_BUFFERS: usize = SEND_QUEUE_FRAMES + 4;

/// A frame for the socket: its place in the stream and the plaintext bytes
/// it carries.
struct QueuedFrame {
    seq: u64,
    buf: Vec<u8>,
    data_len: u64,
    /// `TransferComplete`: nothing follows.
    last: bool,
}

/// A chunk for a compression worker: the frame as read, with the header
/// still to be written.
struct CompressJob {
    frame: QueuedFrame,
    header: ChunkHeader,
    header_at: usize,
    /// The first chunk of a file of several: compressibility is judged
    /// afresh. Files of one chunk share what was learnt (ten thousand
    /// small random files are not each tried).
    fresh_file: bool,
}

/// Offer, wait for the decision, stream every file, and wait for the
/// receiver's confirmation that everything verified. The rules the
/// receiver's replies must follow, and the window, are [`SendMachine`]'s.
pub async fn send_transfer<W: FrameSink, R: FrameSource + 'static>(
    tree: SourceTree,
    mut writer: W,
    mut reader: R,
    deadlines: &Deadlines,
    options: SendOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Vec<FailedFile>, TransferError> {
    let mut frame = Message::Offer(tree.manifest().offer_header()).to_frame();
    writer.send_frame(&mut frame, deadlines.idle).await?;
    // Millions of entries take a while to send: a Ctrl-C meanwhile is told.
    for page in tree.manifest().offer_pages() {
        if options.cancel.is_cancelled() {
            return Err(tell_cancelled(&mut writer).await);
        }
        Message::OfferPage(page).encode_frame(&mut frame);
        writer.send_frame(&mut frame, deadlines.idle).await?;
    }

    let mut buf = Vec::new();
    tokio::select! {
        got = reader.recv_frame(&mut buf, Some(deadlines.decision)) => got?,
        _ = options.cancel.cancelled() => return Err(tell_cancelled(&mut writer).await),
    }
    let manifest = tree.manifest();
    let total = manifest.total_size();
    let now = Instant::now();
    let mut rules = SendMachine::new(total, options.window, now);
    let (resume, skip) = match rules
        .on_decision(manifest, decode(&buf)?, now)
        .map_err(broke)?
    {
        Decision::Accepted { resume, skip } => (resume, skip),
        Decision::Declined(reason) => return Err(TransferError::Declined(reason.to_owned())),
        Decision::Aborted { kind, detail } => return Err(aborted(kind, detail)),
    };

    progress(Progress::Accepted);
    let resumed = resume.bytes(manifest);
    if resumed > 0 || resume.files_done > 0 {
        progress(Progress::Resumed {
            bytes: resumed,
            total,
        });
    }
    if !skip.is_empty() {
        progress(Progress::Skipped {
            files: skip.count(),
            bytes: skip.bytes(manifest),
        });
    }
    // Replies are read by a task of their own (a read is not cancel-safe)
    // and judged here, in order, by the machine.
    let (reply_tx, mut reply_rx) = mpsc::channel(REPLY_QUEUE);
    let replies = tokio::spawn(forward_replies(reader, reply_tx));
    let _stop_replies = AbortOnDrop(replies);

    let (queue_tx, mut queue_rx) = mpsc::channel::<QueuedFrame>(SEND_QUEUE_FRAMES);
    let (pool_tx, pool_rx) = std_mpsc::sync_channel::<Vec<u8>>(FRAME_BUFFERS);
    for _ in 0..FRAME_BUFFERS {
        let _ = pool_tx.send(Vec::new());
    }
    let compression = options.compression;
    let tree = std::sync::Arc::new(tree);
    let producer = tokio::task::spawn_blocking({
        let tree = tree.clone();
        move || produce(&tree, compression, resume, &skip, queue_tx, &pool_rx)
    });
    // Workers finish out of order; frames go out by sequence number.
    let mut next_seq = 0u64;
    let mut reorder: std::collections::BTreeMap<u64, QueuedFrame> = Default::default();

    // Both counts include what the receiver already had.
    progress(Progress::Bytes {
        done: rules.acked(),
        total,
    });
    // The receiver may be silent while we may send; once we wait on it,
    // for `idle` after it last said anything.
    let silent = |rules: &SendMachine| {
        let deadline = rules.reply_deadline(deadlines.idle);
        async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        }
    };
    let mut done_early = false;
    // Chunks the receiver asked for again (it may ask as soon as the
    // stream ends, before this loop has seen the end).
    let mut asked = None;
    let streamed: Result<(), TransferError> = loop {
        let window_open = rules.window_open();
        tokio::select! {
            biased;
            // First: with frames and acks always ready, a later arm would
            // never be polled on a slow link.
            _ = options.cancel.cancelled() => {
                break Err(tell_cancelled(&mut writer).await);
            }
            reply = reply_rx.recv() => match hear(&mut rules, reply) {
                Ok(Heard::Acked(acked)) => progress(Progress::Bytes { done: acked, total }),
                // Done after our last frame: the receiver was quicker than
                // this loop at noticing the end.
                Ok(Heard::Done) => {
                    progress(Progress::Bytes { done: total, total });
                    done_early = true;
                    break Ok(());
                }
                Ok(Heard::Refetch(range)) => {
                    asked = Some(range);
                    break Ok(());
                }
                Err(e) => break Err(e),
            },
            queued = queue_rx.recv(), if window_open => {
                let Some(queued) = queued else { break Ok(()) };
                reorder.insert(queued.seq, queued);
                let mut failed = None;
                while let Some(mut frame) = reorder.remove(&next_seq) {
                    // Small frames (small files) wait to go out together
                    // while more are queued behind them.
                    if let Err(e) = writer.send_frame_batched(&mut frame.buf, deadlines.idle).await {
                        failed = Some(e);
                        break;
                    }
                    next_seq += 1;
                    rules.on_sent(frame.data_len, frame.last, Instant::now());
                    // The reader thread may have finished; a closed pool is fine.
                    let _ = pool_tx.send(frame.buf);
                }
                if failed.is_none() && (queue_rx.is_empty() || !rules.window_open()) {
                    failed = writer.flush(deadlines.idle).await.err();
                }
                if let Some(e) = failed {
                    break Err(reason_for_failed_write(&mut rules, &mut reply_rx, e).await);
                }
            }
            _ = silent(&rules) => {
                break Err(TransportError::ReadTimeout { peer: Role::Receiver, waited: deadlines.idle }.into());
            }
        }
    };
    drop(queue_rx);
    // On failure the reader thread stops at its next queued frame; a read
    // stuck on a hung filesystem must not keep us here, so it is not awaited.
    streamed?;
    writer.flush(deadlines.idle).await?;
    let produced = producer.await.unwrap_or_else(|e| {
        Err(TransferError::Internal {
            what: "the file reader",
            detail: e.to_string(),
        })
    });
    let failed = match produced {
        Ok(failed) => failed,
        Err(e) => {
            tell_peer_about(&mut writer, &e).await;
            return Err(e);
        }
    };
    if done_early {
        return Ok(failed);
    }

    // Everything is sent; the receiver writes the rest of the window,
    // verifies, syncs and renames. Each ack restarts the deadline. It may
    // ask for chunks again first: they are read and sent from here.
    let mut refetching = asked.map(|range| start_refetch(&tree, range, compression, progress));
    loop {
        tokio::select! {
            biased;
            _ = options.cancel.cancelled() => {
                return Err(tell_cancelled(&mut writer).await);
            }
            reply = reply_rx.recv() => match hear(&mut rules, reply)? {
                Heard::Acked(acked) => progress(Progress::Bytes { done: acked, total }),
                Heard::Done => {
                    progress(Progress::Bytes { done: total, total });
                    return Ok(failed);
                }
                Heard::Refetch(range) => {
                    refetching = Some(start_refetch(&tree, range, compression, progress));
                }
            },
            frame = async {
                match &mut refetching {
                    Some(r) => r.frames.recv().await,
                    None => std::future::pending().await,
                }
            }, if refetching.is_some() => match frame {
                Some(mut frame) => {
                    if let Err(e) = writer.send_frame(&mut frame, deadlines.idle).await {
                        return Err(reason_for_failed_write(&mut rules, &mut reply_rx, e).await);
                    }
                }
                // All read, or the reading failed: then the receiver is told.
                None => {
                    let Some(done) = refetching.take() else { continue };
                    let read = done.reader.await.unwrap_or_else(|e| Err(TransferError::Internal {
                        what: "the file reader",
                        detail: e.to_string(),
                    }));
                    if let Err(e) = read {
                        tell_peer_about(&mut writer, &e).await;
                        return Err(e);
                    }
                }
            },
            // Everything is sent, so the deadline is set (the fallback
            // only keeps a broken producer from waiting forever).
            _ = tokio::time::sleep_until(rules.reply_deadline(deadlines.idle).unwrap_or_else(|| Instant::now() + deadlines.idle).into()) => {
                return Err(TransportError::ReadTimeout { peer: Role::Receiver, waited: deadlines.idle }.into());
            }
        }
    }
}

/// Replies waiting to be judged (acks come every 50 ms; a few suffice).
const REPLY_QUEUE: usize = 16;

/// Ends a task when dropped (the reply reader, on every way out).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a reply from the receiver means once data flows.
enum Heard {
    /// It has written this many bytes.
    Acked(u64),
    /// Everything is verified.
    Done,
    /// Send these chunks again: (file, first, count).
    Refetch((u32, u64, u64)),
}

/// Read the receiver's frames and pass them on, until the first failure
/// (passed on too) or until nobody listens.
async fn forward_replies<R: FrameSource>(
    mut reader: R,
    out: mpsc::Sender<Result<Vec<u8>, TransportError>>,
) {
    loop {
        let mut buf = Vec::new();
        let got = reader.recv_frame(&mut buf, None).await;
        let failed = got.is_err();
        if out.send(got.map(|()| buf)).await.is_err() || failed {
            return;
        }
    }
}

/// Judge one reply (or the reader's failure) by the rules.
fn hear(
    rules: &mut SendMachine,
    got: Option<Result<Vec<u8>, TransportError>>,
) -> Result<Heard, TransferError> {
    let frame = match got {
        Some(Ok(frame)) => frame,
        Some(Err(e)) => return Err(e.into()),
        None => {
            return Err(TransferError::Internal {
                what: "the reply reader",
                detail: "it ended without a reason".into(),
            })
        }
    };
    match rules
        .on_reply(decode(&frame)?, Instant::now())
        .map_err(broke)?
    {
        Reply::Acked(bytes) => Ok(Heard::Acked(bytes)),
        Reply::Done => Ok(Heard::Done),
        Reply::Refetch { file, first, count } => Ok(Heard::Refetch((file, first, count))),
        Reply::Aborted { kind, detail } => Err(aborted(kind, detail)),
    }
}

/// Chunks asked for again, being read: their frames, in order, and the
/// reader's result.
struct Refetching {
    frames: mpsc::Receiver<Vec<u8>>,
    reader: tokio::task::JoinHandle<Result<(), TransferError>>,
}

/// Start reading chunks `first..first + count` of `file` again, and tell
/// the user.
fn start_refetch(
    tree: &std::sync::Arc<SourceTree>,
    (file, first, count): (u32, u64, u64),
    compression: Compression,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Refetching {
    let manifest = tree.manifest();
    let size = manifest.files.at(file as usize).size;
    progress(Progress::Refetching {
        index: file as usize,
        bytes: manifest.chunks_len(size, first..first + count),
    });
    let (tx, frames) = mpsc::channel(SEND_QUEUE_FRAMES);
    let tree = tree.clone();
    let reader = tokio::task::spawn_blocking(move || {
        read_again(&tree, file, first..first + count, compression, tx)
    });
    Refetching { frames, reader }
}

/// Read chunks `range` of `file` again, as framed `Chunk`s (compressed
/// when that helps and compression is on), stopping early if nobody
/// takes them.
fn read_again(
    tree: &SourceTree,
    file: u32,
    range: std::ops::Range<u64>,
    compression: Compression,
    out: mpsc::Sender<Vec<u8>>,
) -> Result<(), TransferError> {
    let manifest = tree.manifest();
    let size = manifest.files.at(file as usize).size;
    let chunks = manifest.chunk_count(size);
    let source = tree.source(file as usize);
    let mut reader = tree.open(file as usize)?;
    reader
        .seek(SeekFrom::Start(
            range.start * u64::from(manifest.chunk_size),
        ))
        .map_err(|e| read_error(&source, e))?;
    let mut compressor = match compression {
        Compression::None => None,
        _ => Some(
            zstd::bulk::Compressor::new(FIXED_LEVEL)
                .map_err(|e| unsendable_io("the compressor could not start", e))?,
        ),
    };
    let (mut data, mut packed) = (Vec::new(), Vec::new());
    for index in range {
        data.resize(manifest.chunk_len(size, index) as usize, 0);
        reader
            .read_exact(&mut data)
            .map_err(|e| chunk_read_error(&source, e))?;
        let digest = chunk_digest(chunks, manifest.chunk_size, index, &data);
        let compressed = compressor
            .as_mut()
            .is_some_and(|c| compress_into(c, &data, &mut packed));
        let header = ChunkHeader {
            file,
            index,
            compressed,
            leaf: leaf_hash(file, index, &digest),
        };
        let data = if compressed { &packed } else { &data };
        if out
            .blocking_send(Message::Chunk { header, data }.to_frame())
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// A write failed: a receiver that stopped (disk full, say) sends its
/// reason and closes, and that reason beats "connection reset".
async fn reason_for_failed_write(
    rules: &mut SendMachine,
    replies: &mut mpsc::Receiver<Result<Vec<u8>, TransportError>>,
    failed: TransportError,
) -> TransferError {
    let waiting = tokio::time::sleep(ABORT_NOTICE_TIMEOUT);
    tokio::pin!(waiting);
    loop {
        tokio::select! {
            reply = replies.recv() => match hear(rules, reply) {
                Ok(_) => continue,
                Err(reason @ TransferError::PeerAborted { .. }) => return reason,
                Err(_) => return failed.into(),
            },
            _ = &mut waiting => return failed.into(),
        }
    }
}

/// Tell the receiver that the user stopped the transfer.
async fn tell_cancelled<W: FrameSink>(writer: &mut W) -> TransferError {
    tell_peer_about(writer, &TransferError::Cancelled).await;
    TransferError::Cancelled
}

/// Send a text message instead of files, and wait for the receiver's `Done`.
pub async fn send_text<W: FrameSink, R: FrameSource>(
    text: &str,
    mut writer: W,
    mut reader: R,
    deadlines: &Deadlines,
) -> Result<(), TransferError> {
    let mut frame = Message::Text { text }.to_frame();
    writer.send_frame(&mut frame, deadlines.idle).await?;
    let mut buf = Vec::new();
    reader.recv_frame(&mut buf, Some(deadlines.idle)).await?;
    match decode(&buf)? {
        Message::Done => Ok(()),
        Message::Abort { kind, detail } => Err(aborted(kind, detail)),
        other => Err(broke(PeerMisbehaved::Unexpected {
            got: other.name(),
            expected: "Done",
        })),
    }
}

fn decode(buf: &[u8]) -> Result<Message<'_>, TransferError> {
    Message::decode_all(buf).map_err(|source| TransferError::BadMessage {
        peer: Role::Receiver,
        source,
    })
}

fn broke(rule: PeerMisbehaved) -> TransferError {
    TransferError::broke(Role::Receiver, rule)
}

fn aborted(kind: AbortKind, detail: &str) -> TransferError {
    TransferError::PeerAborted {
        peer: Role::Receiver,
        kind,
        detail: detail.to_owned(),
    }
}

/// The reader thread: every file's chunks from the resume point on, each
/// file's hash, then the root, numbered in stream order. Chunks to be
/// compressed go through the compression workers, the rest straight to the
/// socket's queue. What the receiver
/// already has is hashed by a thread of its own ([`hash_prefix`]) while
/// the new data goes out: the root and the resumed file's hash need it,
/// the first new chunk does not. Returns early without error if the async
/// side has gone (it reports why).
fn produce(
    tree: &SourceTree,
    compression: Compression,
    resume: ResumePoint,
    skip: &FileRuns,
    queue: mpsc::Sender<QueuedFrame>,
    pool: &std_mpsc::Receiver<Vec<u8>>,
) -> Result<Vec<FailedFile>, TransferError> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let prefix = (resume != ResumePoint::default())
            .then(|| scope.spawn(|| hash_prefix(tree, resume, &stop)));
        let result = produce_from_point(tree, compression, resume, skip, queue, pool, prefix);
        // Stopped early: the prefix is not needed any more.
        stop.store(true, Ordering::Relaxed);
        result
    })
}

/// What the receiver already has, hashed: the Merkle tree over every chunk
/// before the resume point, and the resumed file's hash state.
struct Prefix {
    merkle: MerkleBuilder,
    resumed: FileHasher,
}

/// Read and hash every chunk before `resume` (only the files that were
/// listed, as when sending them), until done or `stop`.
fn hash_prefix(
    tree: &SourceTree,
    resume: ResumePoint,
    stop: &AtomicBool,
) -> Result<Prefix, TransferError> {
    let manifest = tree.manifest();
    let mut prefix = Prefix {
        merkle: MerkleBuilder::new(),
        resumed: FileHasher::new(),
    };
    let mut buf = Vec::new();
    for (index, entry) in manifest.files.iter().enumerate() {
        let file_index = index as u32;
        let chunks = manifest.chunk_count(entry.size);
        let upto = match file_index.cmp(&resume.files_done) {
            std::cmp::Ordering::Less => chunks,
            std::cmp::Ordering::Equal => resume.chunks_done,
            std::cmp::Ordering::Greater => break,
        };
        if file_index == resume.files_done && upto == 0 {
            break;
        }
        let source = &tree.source(index);
        let mut file = tree.open(index)?;
        let mut hasher = FileHasher::new();
        for chunk_index in 0..upto {
            if stop.load(Ordering::Relaxed) {
                return Ok(prefix);
            }
            buf.resize(manifest.chunk_len(entry.size, chunk_index) as usize, 0);
            file.read_exact(&mut buf)
                .map_err(|e| chunk_read_error(source, e))?;
            let digest = chunk_digest(chunks, manifest.chunk_size, chunk_index, &buf);
            hasher.push(digest);
            prefix
                .merkle
                .push(leaf_hash(file_index, chunk_index, &digest));
        }
        if upto == chunks {
            ensure_ended(&mut file, source)?;
        }
        if file_index == resume.files_done {
            prefix.resumed = hasher;
        }
    }
    Ok(prefix)
}

/// The root and the hash of the file in progress, while the prefix may
/// still be hashed: leaves and digests wait until it is, then join it.
struct Hashes<'s> {
    prefix: Option<ScopedJoinHandle<'s, Result<Prefix, TransferError>>>,
    merkle: MerkleBuilder,
    /// Leaves made before the prefix was joined, in order.
    pending: Vec<[u8; 32]>,
    /// The hash of the file being read.
    file: FileHasher,
    /// The resumed file's new digests, until the prefix's digests (which
    /// come first) are there.
    tail: Vec<ChunkDigest>,
}

impl Hashes<'_> {
    /// The next chunk's leaf and digest; `resumed` in the resumed file.
    fn add(&mut self, leaf: [u8; 32], digest: ChunkDigest, resumed: bool) {
        if self.prefix.is_none() {
            self.merkle.push(leaf);
            self.file.push(digest);
            return;
        }
        self.pending.push(leaf);
        if resumed {
            self.tail.push(digest);
        } else {
            self.file.push(digest);
        }
    }

    /// Join the prefix if it is done, or `now` (waiting for it, with a
    /// keepalive to the receiver every few seconds so it does not take the
    /// silence for a stall). `false` if the async side has gone. The file
    /// being read is `resumed` when it is the one the prefix ends in.
    fn join(
        &mut self,
        now: bool,
        resumed: bool,
        seq: &mut u64,
        pool: &std_mpsc::Receiver<Vec<u8>>,
        queue: &mpsc::Sender<QueuedFrame>,
    ) -> Result<bool, TransferError> {
        let Some(handle) = self.prefix.take_if(|h| now || h.is_finished()) else {
            return Ok(true);
        };
        let mut said = Instant::now();
        while !handle.is_finished() {
            std::thread::sleep(PREFIX_POLL);
            if said.elapsed() >= KEEPALIVE_INTERVAL {
                said = Instant::now();
                if !queue_control(&Message::KeepAlive, seq, false, pool, queue) {
                    return Ok(false);
                }
            }
        }
        let prefix = handle.join().unwrap_or_else(|_| {
            Err(TransferError::Internal {
                what: "the resumed part's hashing",
                detail: "it panicked".into(),
            })
        })?;
        self.merkle = prefix.merkle;
        self.pending.drain(..).for_each(|l| self.merkle.push(l));
        if resumed {
            self.file = prefix.resumed;
            self.tail.drain(..).for_each(|d| self.file.push(d));
        }
        Ok(true)
    }
}

/// How often a reader waiting for the prefix looks again.
const PREFIX_POLL: Duration = Duration::from_millis(20);

fn produce_from_point<'s>(
    tree: &SourceTree,
    compression: Compression,
    resume: ResumePoint,
    skip: &FileRuns,
    queue: mpsc::Sender<QueuedFrame>,
    pool: &std_mpsc::Receiver<Vec<u8>>,
    prefix: Option<ScopedJoinHandle<'s, Result<Prefix, TransferError>>>,
) -> Result<Vec<FailedFile>, TransferError> {
    let manifest = tree.manifest();
    let chunk_size = manifest.chunk_size as usize;
    let frame_capacity = FRAME_HEADER_LEN + CHUNK_HEADER_LEN + chunk_size + TAG_LEN;
    // A closed pool means the async side has stopped. Buffers keep their
    // old length and bytes: resizing a recycled chunk frame down is free,
    // where clearing it would zero a whole chunk again before each read.
    let take_buffer = || {
        pool.recv().ok().map(|mut buf| {
            buf.reserve(frame_capacity.saturating_sub(buf.len()));
            buf
        })
    };

    let workers = CompressionWorkers::start(compression, chunk_size, &queue)?;
    let mut seq = 0u64;
    let mut hashes = Hashes {
        prefix,
        merkle: MerkleBuilder::new(),
        pending: Vec::new(),
        file: FileHasher::new(),
        tail: Vec::new(),
    };
    let mut failed = Vec::new();
    for (index, entry) in manifest
        .files
        .iter()
        .enumerate()
        .skip(resume.files_done as usize)
    {
        let file_index = index as u32;
        // Not wanted: not read, not sent, not in the Merkle root.
        if skip.contains(file_index) {
            continue;
        }
        let chunks = manifest.chunk_count(entry.size);
        // The receiver has the first chunks of the resumed file: start
        // after them (the prefix thread hashes them).
        let resumed = file_index == resume.files_done && resume.chunks_done > 0;
        let first = if resumed { resume.chunks_done } else { 0 };
        let mut next = first;
        let mut spare = None;
        hashes.file = FileHasher::new();
        // Reading the file can fail for this file alone (`Stop::File`);
        // anything else ends the transfer.
        let mut send_file = || -> Result<bool, Stop> {
            let source = &tree.source(index);
            // Only the file that was listed: a link, FIFO or other file
            // put in its place since the scan, or a change to it, stops
            // here.
            let mut file = tree.open(index).map_err(Stop::File)?;
            // Fewer blocks than bytes: it may have holes, not read or sent.
            let sparse = file
                .metadata()
                .is_ok_and(|m| m.blocks().saturating_mul(512) < m.len());
            let mut data_seen = false;
            if first > 0 {
                file.seek(SeekFrom::Start(first * u64::from(manifest.chunk_size)))
                    .map_err(|e| Stop::File(read_error(source, e)))?;
                if first == chunks {
                    ensure_ended(&mut file, source).map_err(Stop::File)?;
                }
            }
            let header_at = FRAME_HEADER_LEN;
            let data_at = header_at + CHUNK_HEADER_LEN;
            while next < chunks {
                let chunk_index = next;
                let len = manifest.chunk_len(entry.size, chunk_index) as usize;
                let Some(mut buf) = take_buffer() else {
                    return Ok(false);
                };
                let at = Chunk {
                    offset: chunk_index * u64::from(manifest.chunk_size),
                    len,
                    last: chunk_index + 1 == chunks,
                };
                let hole = match read_chunk(&mut file, source, &mut buf, data_at, at, sparse) {
                    Ok(hole) => hole,
                    Err(e) => {
                        // The buffer carries the news of the failure instead.
                        spare = Some(buf);
                        return Err(Stop::File(e));
                    }
                };
                let data = if hole { zeros(len) } else { &buf[data_at..] };
                let digest = chunk_digest(chunks, manifest.chunk_size, chunk_index, data);
                let leaf = leaf_hash(file_index, chunk_index, &digest);
                hashes.add(leaf, digest, resumed);
                next += 1;
                if !hashes
                    .join(false, resumed, &mut seq, pool, &queue)
                    .map_err(Stop::Transfer)?
                {
                    return Ok(false);
                }
                if hole {
                    let hole = Message::Zeros {
                        file: file_index,
                        index: chunk_index,
                        leaf,
                    };
                    if !queue_frame(&hole, buf, &mut seq, len as u64, false, &queue) {
                        return Ok(false);
                    }
                    continue;
                }
                let header = ChunkHeader {
                    file: file_index,
                    index: chunk_index,
                    compressed: false,
                    leaf,
                };
                let frame = QueuedFrame {
                    seq,
                    buf,
                    data_len: len as u64,
                    last: false,
                };
                seq += 1;
                let job = CompressJob {
                    frame,
                    header,
                    header_at,
                    fresh_file: !std::mem::replace(&mut data_seen, true) && chunks > 1,
                };
                let delivered = match &workers {
                    Some(w) => w.dispatch(job),
                    None => queue.blocking_send(finish_raw(job)).is_ok(),
                };
                if !delivered {
                    return Ok(false);
                }
            }
            if chunks == 0 {
                ensure_ended(&mut file, source).map_err(Stop::File)?;
            }
            // The resumed file's hash covers the prefix.
            if !hashes
                .join(resumed, resumed, &mut seq, pool, &queue)
                .map_err(Stop::Transfer)?
            {
                return Ok(false);
            }
            let end = Message::FileEnd {
                file: file_index,
                hash: hashes.file.finalize(),
            };
            Ok(queue_control(&end, &mut seq, false, pool, &queue))
        };
        match send_file() {
            Ok(true) => {}
            Ok(false) => return Ok(failed),
            // This file alone: the receiver drops what it has of it, and
            // the others still go. Its bytes not sent count as sent, on
            // both sides, so the window and the acks stay in step.
            Err(Stop::File(e)) if e.fails_one_file() => {
                hashes.tail.clear();
                let sent = manifest.chunks_len(entry.size, 0..next);
                let reason = e.peer_detail();
                let notice = Message::FileFailed {
                    file: file_index,
                    reason: &reason,
                };
                let buf = match spare.take() {
                    Some(buf) => buf,
                    None => match pool.recv() {
                        Ok(buf) => buf,
                        Err(_) => return Ok(failed),
                    },
                };
                if !queue_frame(&notice, buf, &mut seq, entry.size - sent, false, &queue) {
                    return Ok(failed);
                }
                failed.push(FailedFile {
                    path: entry.path.to_owned(),
                    size: entry.size,
                    reason: e.to_string(),
                });
            }
            Err(Stop::File(e) | Stop::Transfer(e)) => return Err(e),
        }
    }
    // The root covers everything.
    if !hashes.join(true, false, &mut seq, pool, &queue)? {
        return Ok(failed);
    }
    let complete = Message::TransferComplete {
        merkle_root: hashes.merkle.root(),
    };
    queue_control(&complete, &mut seq, true, pool, &queue);
    if let Some(w) = workers {
        w.join();
    }
    Ok(failed)
}

/// Why a file's sending stopped: that file alone (if the error says so),
/// or the whole transfer.
enum Stop {
    File(TransferError),
    Transfer(TransferError),
}

/// Where a chunk lies in its file.
#[derive(Clone, Copy)]
struct Chunk {
    offset: u64,
    len: usize,
    last: bool,
}

/// Read chunk `at` into `buf[data_at..]`, or find it is a hole in a
/// `sparse` file (then nothing is read); `true` for a hole. The last chunk
/// also checks that the file did not grow.
fn read_chunk(
    file: &mut File,
    source: &Path,
    buf: &mut Vec<u8>,
    data_at: usize,
    at: Chunk,
    sparse: bool,
) -> Result<bool, TransferError> {
    let hole = sparse
        && skip_hole(file, at.offset, at.len as u64).map_err(|e| chunk_read_error(source, e))?;
    if !hole {
        buf.resize(data_at + at.len, 0);
        file.read_exact(&mut buf[data_at..])
            .map_err(|e| chunk_read_error(source, e))?;
    }
    if at.last {
        ensure_ended(file, source)?;
    }
    Ok(hole)
}

/// Whether the `len` bytes at `offset` of `file` are a hole (no data on
/// disk: all zeros). If so the file is left at the end of the range, else
/// at `offset`. A file system that cannot tell says no hole; a file now
/// shorter than the range is an unexpected end, as a read would say.
fn skip_hole(file: &mut File, offset: u64, len: u64) -> std::io::Result<bool> {
    let hole = match rustix::fs::seek(&*file, rustix::fs::SeekFrom::Data(offset)) {
        Ok(data) => data >= offset + len,
        // No data at or after `offset`: a hole up to the end of the file,
        // which must still reach past the range (it may have shrunk).
        Err(rustix::io::Errno::NXIO) => {
            if file.metadata()?.len() < offset + len {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            true
        }
        Err(_) => false,
    };
    file.seek(SeekFrom::Start(if hole { offset + len } else { offset }))?;
    Ok(hole)
}

/// A short read means the file shrank since it was offered.
fn chunk_read_error(source: &Path, e: std::io::Error) -> TransferError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        TransferError::SourceChanged {
            path: source.to_path_buf(),
        }
    } else {
        read_error(source, e)
    }
}

/// Queue a control message in stream order; `false` once the async side
/// has gone.
fn queue_control(
    msg: &Message<'_>,
    seq: &mut u64,
    last: bool,
    pool: &std_mpsc::Receiver<Vec<u8>>,
    queue: &mpsc::Sender<QueuedFrame>,
) -> bool {
    let Ok(buf) = pool.recv() else {
        return false;
    };
    queue_frame(msg, buf, seq, 0, last, queue)
}

/// Queue `msg` in `buf`, counting as `data_len` plaintext bytes sent.
fn queue_frame(
    msg: &Message<'_>,
    mut buf: Vec<u8>,
    seq: &mut u64,
    data_len: u64,
    last: bool,
    queue: &mpsc::Sender<QueuedFrame>,
) -> bool {
    msg.encode_frame(&mut buf);
    let frame = QueuedFrame {
        seq: *seq,
        buf,
        data_len,
        last,
    };
    *seq += 1;
    queue.blocking_send(frame).is_ok()
}

/// A file that grew since it was offered would arrive truncated.
fn ensure_ended(file: &mut File, source: &Path) -> Result<(), TransferError> {
    let mut probe = [0u8; 1];
    if file.read(&mut probe).map_err(|e| read_error(source, e))? != 0 {
        return Err(TransferError::SourceChanged {
            path: source.to_path_buf(),
        });
    }
    Ok(())
}

/// Write the header of a chunk sent as read.
fn finish_raw(mut job: CompressJob) -> QueuedFrame {
    let data_at = job.header_at + CHUNK_HEADER_LEN;
    job.header.write(&mut job.frame.buf[job.header_at..data_at]);
    job.frame
}

/// Threads that compress chunks in parallel, one per core.
struct CompressionWorkers {
    /// Chunks to compress, and at which level.
    jobs: std_mpsc::SyncSender<(CompressJob, i32)>,
    threads: Vec<std::thread::JoinHandle<()>>,
    control: std::sync::Arc<std::sync::Mutex<ChunkCompression>>,
    queue: mpsc::Sender<QueuedFrame>,
}

impl CompressionWorkers {
    fn start(
        mode: Compression,
        chunk_size: usize,
        queue: &mpsc::Sender<QueuedFrame>,
    ) -> Result<Option<Self>, TransferError> {
        if mode == Compression::None {
            return Ok(None);
        }
        let count = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        let (jobs, receiver) = std_mpsc::sync_channel::<(CompressJob, i32)>(count);
        let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
        let control = std::sync::Arc::new(std::sync::Mutex::new(ChunkCompression::new(mode)));
        let mut threads = Vec::with_capacity(count);
        for _ in 0..count {
            let mut compressor = zstd::bulk::Compressor::new(FIXED_LEVEL)
                .map_err(|e| unsendable_io("the compressor could not start", e))?;
            let mut compressor_level = FIXED_LEVEL;
            let (receiver, queue, control) = (receiver.clone(), queue.clone(), control.clone());
            threads.push(std::thread::spawn(move || {
                let mut scratch = Vec::with_capacity(chunk_size);
                loop {
                    // The lock is held only to take the next job.
                    let job = match receiver.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok((mut job, level)) = job else { return };
                    if level != compressor_level && compressor.set_compression_level(level).is_ok()
                    {
                        compressor_level = level;
                    }
                    let data_at = job.header_at + CHUNK_HEADER_LEN;
                    let helped =
                        compress_into(&mut compressor, &job.frame.buf[data_at..], &mut scratch);
                    if let Ok(mut c) = control.lock() {
                        c.record(helped);
                    }
                    if helped {
                        job.frame.buf.truncate(data_at);
                        job.frame.buf.extend_from_slice(&scratch);
                        job.header.compressed = true;
                    }
                    if queue.blocking_send(finish_raw(job)).is_err() {
                        return;
                    }
                }
            }));
        }
        Ok(Some(CompressionWorkers {
            jobs,
            threads,
            control,
            queue: queue.clone(),
        }))
    }

    /// Hand `job` to a worker, or, if it is not to be compressed (the link
    /// does not need it, or the data did not compress lately), straight to
    /// the socket's queue. How full that queue is tells whether the link or
    /// the CPU is the bottleneck ([`ChunkCompression`]). `false`: the
    /// other side has gone.
    fn dispatch(&self, job: CompressJob) -> bool {
        let bytes = (job.frame.buf.len() - job.header_at - CHUNK_HEADER_LEN) as u64;
        let waiting = self.queue.max_capacity() - self.queue.capacity();
        let level = self.control.lock().ok().and_then(|mut c| {
            c.decide(
                job.fresh_file,
                bytes,
                waiting,
                self.queue.max_capacity(),
                Instant::now(),
            )
        });
        match level {
            Some(level) => self.jobs.send((job, level)).is_ok(),
            None => self.queue.blocking_send(finish_raw(job)).is_ok(),
        }
    }

    /// Let the workers drain their last jobs and stop.
    fn join(self) {
        drop(self.jobs);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn read_error(path: &Path, source: std::io::Error) -> TransferError {
    TransferError::ReadSource {
        path: path.to_path_buf(),
        source,
    }
}

fn unsendable_io(what: &str, e: std::io::Error) -> TransferError {
    TransferError::Unsendable {
        path: Default::default(),
        reason: format!("{what} ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_that_grows_or_shrinks_while_it_is_sent_is_reported_as_changed() {
        // Opened as listed, then written to by someone else (same inode):
        // the reader notices at the end of the file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"12345678").unwrap();
        let tree = SourceTree::scan(std::slice::from_ref(&path), 4096).unwrap();

        let mut file = tree.open(0).unwrap();
        let mut buf = [0u8; 8];
        file.read_exact(&mut buf).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"more")
            .unwrap();
        let err = ensure_ended(&mut file, &path).unwrap_err();
        assert!(
            matches!(err, TransferError::SourceChanged { path: ref p } if *p == path),
            "{err:?}"
        );
        assert!(err.to_string().contains("changed while it was being sent"));

        std::fs::write(&path, b"12345678").unwrap();
        let tree = SourceTree::scan(std::slice::from_ref(&path), 4096).unwrap();
        let mut file = tree.open(0).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(3)
            .unwrap();
        let short = file.read_exact(&mut buf).unwrap_err();
        let err = chunk_read_error(&path, short);
        assert!(
            matches!(err, TransferError::SourceChanged { path: ref p } if *p == path),
            "{err:?}"
        );
    }

    #[test]
    fn holes_are_found_skipped_and_a_shrunken_file_is_not_taken_for_one() {
        // tmpfs keeps holes and reports them.
        let dir = if Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm").unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let path = dir.path().join("image");
        let mut f = File::create(&path).unwrap();
        f.set_len(1 << 20).unwrap();
        f.seek(SeekFrom::Start(256 << 10)).unwrap();
        f.write_all(&[7; 4096]).unwrap();
        drop(f);
        let mut f = File::open(&path).unwrap();
        if f.metadata().unwrap().blocks() * 512 >= 1 << 20 {
            panic!("the temporary folder's file system keeps no holes; run on ext4, xfs, btrfs or tmpfs");
        }
        let chunk = 128 << 10;
        // A hole: skipped, the file left after it.
        assert!(skip_hole(&mut f, 0, chunk).unwrap());
        assert_eq!(f.stream_position().unwrap(), chunk);
        // Data in the range: not a hole, the file left at its start.
        assert!(!skip_hole(&mut f, 2 * chunk, chunk).unwrap());
        assert_eq!(f.stream_position().unwrap(), 2 * chunk);
        // The hole at the end.
        assert!(skip_hole(&mut f, 7 * chunk, chunk).unwrap());
        // Past the end of a file that shrank: an unexpected end, as a read
        // would say, never a hole of zeros.
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(512 << 10)
            .unwrap();
        let e = skip_hole(&mut f, 7 * chunk, chunk).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
