//! The sender's pipeline.
//!
//! ```text
//! reader thread: read chunk into frame buffer -> BLAKE3 (file, leaf) -> zstd?
//!                -> queue (bounded)
//! async task:    queue -> seal -> socket, while no more than the window of
//!                bytes is unacknowledged
//! ack reader:    Ack / Done / Abort from the receiver
//! ```
//!
//! Reading, hashing and compressing run on a blocking thread; sealing and
//! writing on the async runtime, so two cores work at once. The queue holds
//! at most [`SEND_QUEUE_FRAMES`] frames and buffers are recycled, so memory
//! is O(queue × chunk) whatever the file size. Acks are cumulative and only
//! bound how far the sender may run ahead (the window); nothing waits for a
//! reply per chunk.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tallow_crypto::merkle::{leaf_hash, MerkleBuilder};
use tallow_crypto::FRAME_HEADER_LEN;
use tokio::sync::{mpsc, watch};

use crate::limits::{Deadlines, CHUNK_HEADER_LEN, SEND_QUEUE_FRAMES};
use crate::message::{AbortKind, ChunkHeader, Message};
use crate::source::SourceTree;
use crate::transport::{FrameSink, FrameSource, TransportError};
use crate::{Progress, Role, TransferError};

/// Deadline for telling the peer why we stop.
const ABORT_NOTICE_TIMEOUT: Duration = Duration::from_secs(5);
/// zstd level: fast, and most of the gain on text and logs.
const ZSTD_LEVEL: i32 = 3;
/// A compressed chunk is sent only if it saves at least 1/16 of the bytes.
const MIN_SAVING_DIVISOR: usize = 16;
/// In `auto` mode, after an incompressible chunk, skip trying for up to this
/// many chunks (doubling from 1), so random data costs almost nothing.
const MAX_COMPRESSION_BACKOFF: u64 = 64;

/// Whether to compress chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Try zstd, and back off on data that does not compress.
    Auto,
    /// Try zstd on every chunk.
    Zstd,
    /// Send every chunk raw.
    None,
}

/// How to send.
#[derive(Debug, Clone, Copy)]
pub struct SendOptions {
    /// Chunk compression policy.
    pub compression: Compression,
    /// Most plaintext bytes sent but not yet acknowledged.
    pub window: u64,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            compression: Compression::Auto,
            window: crate::limits::DEFAULT_WINDOW,
        }
    }
}

/// A frame queued for the socket, with the plaintext bytes it carries.
struct QueuedFrame {
    buf: Vec<u8>,
    data_len: u64,
}

/// Offer, wait for the decision, stream every file, and wait for the
/// receiver's confirmation that everything verified.
pub async fn send_transfer<W: FrameSink, R: FrameSource + 'static>(
    tree: SourceTree,
    mut writer: W,
    mut reader: R,
    deadlines: &Deadlines,
    options: SendOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(), TransferError> {
    let mut frame = vec![0u8; FRAME_HEADER_LEN];
    Message::Offer(tree.manifest().clone()).encode(&mut frame);
    writer.send_frame(&mut frame, deadlines.idle).await?;

    let mut buf = Vec::new();
    reader
        .recv_frame(&mut buf, Some(deadlines.decision))
        .await?;
    match decode(&buf)? {
        Message::Accept => {}
        Message::Decline { reason } => return Err(TransferError::Declined(reason.to_owned())),
        other => return Err(unexpected(other, "Accept or Decline")),
    }

    let total = tree.manifest().total_size();
    let (acked_tx, mut acked_rx) = watch::channel(0u64);
    let mut replies = tokio::spawn(read_replies(reader, acked_tx, total));

    let (queue_tx, mut queue_rx) = mpsc::channel::<QueuedFrame>(SEND_QUEUE_FRAMES);
    let (pool_tx, pool_rx) = std_mpsc::channel::<Vec<u8>>();
    let compression = options.compression;
    let producer =
        tokio::task::spawn_blocking(move || produce(&tree, compression, &queue_tx, &pool_rx));

    let mut sent = 0u64;
    let mut acked = 0u64;
    progress(Progress::Bytes { done: 0, total });
    let streamed: Result<(), TransferError> = loop {
        let window_open = sent.saturating_sub(acked) <= options.window;
        tokio::select! {
            biased;
            joined = &mut replies => break Err(early_reply(joined)),
            changed = acked_rx.changed() => {
                if changed.is_ok() {
                    acked = *acked_rx.borrow_and_update();
                    progress(Progress::Bytes { done: acked, total });
                }
            }
            queued = queue_rx.recv(), if window_open => {
                let Some(mut queued) = queued else { break Ok(()) };
                if let Err(e) = writer.send_frame(&mut queued.buf, deadlines.idle).await {
                    break Err(e.into());
                }
                sent += queued.data_len;
                // The reader thread may have finished; a closed pool is fine.
                let _ = pool_tx.send(queued.buf);
            }
            _ = tokio::time::sleep(deadlines.idle), if !window_open => {
                break Err(TransportError::ReadTimeout { peer: Role::Receiver, waited: deadlines.idle }.into());
            }
        }
    };
    drop(queue_rx);
    if let Err(e) = streamed {
        // The reader thread stops at its next queued frame; a read stuck on
        // a hung filesystem must not keep us here, so it is not awaited.
        replies.abort();
        return Err(e);
    }
    let produced = producer.await.unwrap_or_else(|e| {
        Err(TransferError::Unsendable {
            path: Default::default(),
            reason: format!("the file reader stopped unexpectedly ({e})"),
        })
    });
    if let Err(e) = produced {
        replies.abort();
        notify_peer(&mut writer, &e).await;
        return Err(e);
    }

    // Everything is sent; the receiver writes the rest of the window,
    // verifies, syncs and renames. Each ack restarts the deadline.
    loop {
        tokio::select! {
            biased;
            joined = &mut replies => {
                joined.unwrap_or_else(|e| Err(reader_stopped(e)))?;
                // Done: everything is written and verified.
                progress(Progress::Bytes { done: total, total });
                return Ok(());
            }
            changed = acked_rx.changed() => {
                if changed.is_ok() {
                    acked = *acked_rx.borrow_and_update();
                    progress(Progress::Bytes { done: acked, total });
                }
            }
            _ = tokio::time::sleep(deadlines.idle) => {
                replies.abort();
                return Err(TransportError::ReadTimeout { peer: Role::Receiver, waited: deadlines.idle }.into());
            }
        }
    }
}

/// Read the receiver's messages until `Done` (`Ok`) or a failure.
async fn read_replies<R: FrameSource>(
    mut reader: R,
    acked: watch::Sender<u64>,
    total: u64,
) -> Result<(), TransferError> {
    let mut buf = Vec::new();
    let mut last = 0u64;
    loop {
        reader.recv_frame(&mut buf, None).await?;
        match decode(&buf)? {
            Message::Ack { bytes } => {
                if bytes < last || bytes > total {
                    return Err(TransferError::Protocol {
                        peer: Role::Receiver,
                        detail: format!("it acknowledged {bytes} bytes after {last}, of {total}"),
                    });
                }
                last = bytes;
                let _ = acked.send(bytes);
            }
            Message::Done => return Ok(()),
            other => return Err(unexpected(other, "Ack or Done")),
        }
    }
}

/// The receiver's reader ended before we finished sending.
fn early_reply(joined: Result<Result<(), TransferError>, tokio::task::JoinError>) -> TransferError {
    match joined {
        Ok(Err(e)) => e,
        Ok(Ok(())) => TransferError::Protocol {
            peer: Role::Receiver,
            detail: "it said Done before the transfer was complete".into(),
        },
        Err(e) => reader_stopped(e),
    }
}

fn reader_stopped(e: tokio::task::JoinError) -> TransferError {
    TransferError::Protocol {
        peer: Role::Receiver,
        detail: format!("the reply reader stopped unexpectedly ({e})"),
    }
}

fn decode(buf: &[u8]) -> Result<Message<'_>, TransferError> {
    Message::decode(buf).map_err(|source| TransferError::BadMessage {
        peer: Role::Receiver,
        source,
    })
}

/// An `Abort` from the receiver becomes its error; anything else is a
/// protocol violation.
fn unexpected(msg: Message<'_>, expected: &str) -> TransferError {
    match msg {
        Message::Abort { kind, detail } => TransferError::PeerAborted {
            peer: Role::Receiver,
            kind,
            detail: detail.to_owned(),
        },
        other => TransferError::Protocol {
            peer: Role::Receiver,
            detail: format!("it sent {} where {expected} was expected", other.name()),
        },
    }
}

/// Best effort: tell the receiver why we stop, so its user sees our reason.
async fn notify_peer<W: FrameSink>(writer: &mut W, error: &TransferError) {
    let mut frame = vec![0u8; FRAME_HEADER_LEN];
    let detail = error.to_string();
    Message::Abort {
        kind: AbortKind::Io,
        detail: &detail,
    }
    .encode(&mut frame);
    let _ = writer.send_frame(&mut frame, ABORT_NOTICE_TIMEOUT).await;
}

/// When to try compressing the next chunk of a file.
struct CompressionPolicy {
    mode: Compression,
    skip: u64,
    backoff: u64,
}

impl CompressionPolicy {
    fn new(mode: Compression) -> Self {
        CompressionPolicy {
            mode,
            skip: 0,
            backoff: 1,
        }
    }

    fn should_try(&mut self) -> bool {
        match self.mode {
            Compression::None => false,
            Compression::Zstd => true,
            Compression::Auto if self.skip > 0 => {
                self.skip -= 1;
                false
            }
            Compression::Auto => true,
        }
    }

    fn record(&mut self, helped: bool) {
        if helped {
            self.backoff = 1;
        } else {
            self.skip = self.backoff;
            self.backoff = (self.backoff * 2).min(MAX_COMPRESSION_BACKOFF);
        }
    }
}

/// Compress `data` into `out` if that saves enough; `false` means send the
/// chunk raw.
fn compress_into(
    compressor: &mut zstd::bulk::Compressor<'_>,
    data: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let limit = data.len() - data.len() / MIN_SAVING_DIVISOR;
    if limit == 0 {
        return false;
    }
    out.clear();
    out.reserve(limit);
    // zstd writes into the spare capacity and fails rather than grow the
    // buffer, so a result that would not fit is "it did not help".
    match compressor.compress_to_buffer(data, out) {
        Ok(n) => n < limit,
        Err(_) => false,
    }
}

/// The reader thread: every file's chunks, each file's hash, then the root.
/// Returns early without error if the async side has gone (it reports why).
fn produce(
    tree: &SourceTree,
    compression: Compression,
    queue: &mpsc::Sender<QueuedFrame>,
    pool: &std_mpsc::Receiver<Vec<u8>>,
) -> Result<(), TransferError> {
    let manifest = tree.manifest();
    let chunk_size = manifest.chunk_size as usize;
    let frame_capacity = FRAME_HEADER_LEN + CHUNK_HEADER_LEN + chunk_size + 16;
    let take_buffer = || {
        let mut buf = pool
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(frame_capacity));
        buf.clear();
        buf.resize(FRAME_HEADER_LEN, 0);
        buf
    };
    let mut compressor = match compression {
        Compression::None => None,
        _ => Some(
            zstd::bulk::Compressor::new(ZSTD_LEVEL)
                .map_err(|e| unsendable_io("the compressor could not start", e))?,
        ),
    };
    let mut compressed = Vec::with_capacity(chunk_size);
    let mut merkle = MerkleBuilder::new();
    for (index, entry) in manifest.files.iter().enumerate() {
        let file_index = index as u32;
        let source = tree.source(index);
        let mut file = open_regular(source, entry.size)?;
        let mut hasher = blake3::Hasher::new();
        let mut policy = CompressionPolicy::new(compression);
        for chunk_index in 0..manifest.chunk_count(entry.size) {
            let len = manifest.chunk_len(entry.size, chunk_index) as usize;
            let mut buf = take_buffer();
            let header_at = buf.len();
            let data_at = header_at + CHUNK_HEADER_LEN;
            buf.resize(data_at + len, 0);
            file.read_exact(&mut buf[data_at..]).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    TransferError::SourceChanged {
                        path: source.to_path_buf(),
                    }
                } else {
                    read_error(source, e)
                }
            })?;
            let data = &buf[data_at..];
            hasher.update(data);
            let leaf = leaf_hash(file_index, chunk_index, data);
            merkle.push(leaf);
            let mut is_compressed = false;
            if let Some(c) = compressor.as_mut().filter(|_| policy.should_try()) {
                is_compressed = compress_into(c, data, &mut compressed);
                policy.record(is_compressed);
            }
            if is_compressed {
                buf.truncate(data_at);
                buf.extend_from_slice(&compressed);
            }
            ChunkHeader {
                file: file_index,
                index: chunk_index,
                compressed: is_compressed,
                leaf,
            }
            .write(&mut buf[header_at..data_at]);
            let queued = QueuedFrame {
                buf,
                data_len: len as u64,
            };
            if queue.blocking_send(queued).is_err() {
                return Ok(());
            }
        }
        // A file that grew since it was offered would arrive truncated.
        let mut probe = [0u8; 1];
        if file.read(&mut probe).map_err(|e| read_error(source, e))? != 0 {
            return Err(TransferError::SourceChanged {
                path: source.to_path_buf(),
            });
        }
        let mut buf = take_buffer();
        Message::FileEnd {
            file: file_index,
            hash: *hasher.finalize().as_bytes(),
        }
        .encode(&mut buf);
        if queue
            .blocking_send(QueuedFrame { buf, data_len: 0 })
            .is_err()
        {
            return Ok(());
        }
    }
    let mut buf = take_buffer();
    Message::TransferComplete {
        merkle_root: merkle.root(),
    }
    .encode(&mut buf);
    let _ = queue.blocking_send(QueuedFrame { buf, data_len: 0 });
    Ok(())
}

/// Open a source file, refusing anything that is no longer the regular file
/// of the offered size (a FIFO swapped in would block the reader forever;
/// `O_NONBLOCK` makes opening one return at once).
fn open_regular(path: &Path, size: u64) -> Result<File, TransferError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| read_error(path, e))?;
    let meta = file.metadata().map_err(|e| read_error(path, e))?;
    if !meta.is_file() || meta.len() != size {
        return Err(TransferError::SourceChanged {
            path: path.to_path_buf(),
        });
    }
    Ok(file)
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

    #[test]
    fn auto_compression_backs_off_on_incompressible_data() {
        let mut p = CompressionPolicy::new(Compression::Auto);
        let mut tries = 0;
        for _ in 0..1000 {
            if p.should_try() {
                tries += 1;
                p.record(false);
            }
        }
        assert!(tries < 1000 / 16 + 10, "tried {tries} times");
        let mut p = CompressionPolicy::new(Compression::Auto);
        for _ in 0..100 {
            assert!(p.should_try());
            p.record(true);
        }
        let mut p = CompressionPolicy::new(Compression::None);
        assert!(!p.should_try());
    }

    #[test]
    fn compression_is_used_only_when_it_saves_enough() {
        let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL).unwrap();
        let mut out = Vec::new();
        let text = b"all work and no play makes jack a dull boy ".repeat(1000);
        assert!(compress_into(&mut c, &text, &mut out));
        assert!(out.len() < text.len() / 10);
        assert_eq!(zstd::bulk::decompress(&out, text.len()).unwrap(), text);
        let mut state = 1u64;
        let noise: Vec<u8> = (0..65536)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        assert!(!compress_into(&mut c, &noise, &mut out));
        assert!(!compress_into(&mut c, b"", &mut out));
    }
}
