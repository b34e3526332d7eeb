//! The sender's pipeline.
//!
//! ```text
//! reader thread: read chunk into frame buffer -> BLAKE3 -> queue (bounded)
//! async task:    queue -> seal -> socket          (reader of acks runs beside it)
//! ```
//!
//! File reading and hashing run on a blocking thread; sealing and writing on
//! the async runtime, so two cores work at once. The queue holds at most
//! [`SEND_QUEUE_FRAMES`] frames and buffers are recycled, so memory stays
//! O(queue × chunk) whatever the file size. Nothing waits for a per-chunk
//! reply: TCP's flow control is the only brake.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tallow_crypto::FRAME_HEADER_LEN;
use tokio::sync::mpsc;

use crate::limits::{Deadlines, CHUNK_HEADER_LEN, SEND_QUEUE_FRAMES};
use crate::manifest::{FileEntry, Manifest};
use crate::message::{encode_chunk_header, AbortKind, Message};
use crate::transport::{FrameSink, FrameSource, TransportError};
use crate::{Progress, Role, TransferError};

/// Deadline for telling the peer why we stop.
const ABORT_NOTICE_TIMEOUT: Duration = Duration::from_secs(5);

/// Files ready to offer: the manifest and where each entry is on disk.
#[derive(Debug)]
pub struct OutgoingTransfer {
    manifest: Manifest,
    sources: Vec<PathBuf>,
}

impl OutgoingTransfer {
    /// Stat each path (regular files only) and build the manifest. Entries are
    /// named by their file name; two files with one name are an error.
    pub fn from_paths(paths: &[PathBuf], chunk_size: u32) -> Result<Self, TransferError> {
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let meta = std::fs::metadata(path).map_err(|source| TransferError::ReadSource {
                path: path.clone(),
                source,
            })?;
            if !meta.is_file() {
                return Err(TransferError::Unsendable {
                    path: path.clone(),
                    reason: "only regular files can be sent by this version of tallow".into(),
                });
            }
            let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                TransferError::Unsendable {
                    path: path.clone(),
                    reason: "its name is not valid UTF-8".into(),
                }
            })?;
            files.push(FileEntry {
                path: name.to_owned(),
                size: meta.len(),
            });
        }
        let manifest = Manifest { chunk_size, files };
        manifest.validate().map_err(|e| TransferError::Unsendable {
            path: paths.first().cloned().unwrap_or_default(),
            reason: e.to_string(),
        })?;
        Ok(OutgoingTransfer {
            manifest,
            sources: paths.to_vec(),
        })
    }

    /// What will be offered.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

/// A frame queued for the socket, with the file bytes it carries.
struct QueuedFrame {
    buf: Vec<u8>,
    data_len: u64,
}

/// Offer, wait for the decision, stream every file, and wait for the
/// receiver's confirmation that everything verified.
pub async fn send_transfer<W: FrameSink, R: FrameSource + 'static>(
    transfer: OutgoingTransfer,
    mut writer: W,
    mut reader: R,
    deadlines: &Deadlines,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(), TransferError> {
    let mut frame = vec![0u8; FRAME_HEADER_LEN];
    Message::Offer(transfer.manifest.clone()).encode(&mut frame);
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

    // The receiver says nothing until the end unless it fails, so its next
    // frame is awaited in a task of its own, raced against the streaming.
    let mut reply = tokio::spawn(async move {
        let result = reader.recv_frame(&mut buf, None).await;
        (result, buf)
    });

    let total = transfer.manifest.total_size();
    let (queue_tx, mut queue_rx) = mpsc::channel::<QueuedFrame>(SEND_QUEUE_FRAMES);
    let (pool_tx, pool_rx) = std_mpsc::channel::<Vec<u8>>();
    let chunk_size = transfer.manifest.chunk_size;
    let producer =
        tokio::task::spawn_blocking(move || produce(&transfer, chunk_size, &queue_tx, &pool_rx));

    let mut done = 0u64;
    progress(Progress::Bytes { done, total });
    let streamed: Result<(), TransferError> = loop {
        tokio::select! {
            queued = queue_rx.recv() => {
                let Some(mut queued) = queued else { break Ok(()) };
                if let Err(e) = writer.send_frame(&mut queued.buf, deadlines.idle).await {
                    break Err(e.into());
                }
                if queued.data_len > 0 {
                    done += queued.data_len;
                    progress(Progress::Bytes { done, total });
                }
                // The reader thread may have finished; a closed pool is fine.
                let _ = pool_tx.send(queued.buf);
            }
            joined = &mut reply => {
                break Err(early_reply(joined));
            }
        }
    };
    drop(queue_rx);
    let produced = producer.await.unwrap_or_else(|e| {
        Err(TransferError::Unsendable {
            path: PathBuf::new(),
            reason: format!("the file reader stopped unexpectedly ({e})"),
        })
    });
    if let Err(e) = streamed {
        reply.abort();
        return Err(e);
    }
    if let Err(e) = produced {
        reply.abort();
        notify_peer(&mut writer, &e).await;
        return Err(e);
    }

    // Everything is sent; the receiver now verifies, syncs and renames.
    let joined = match tokio::time::timeout(deadlines.idle, &mut reply).await {
        Ok(joined) => joined,
        Err(_) => {
            reply.abort();
            return Err(TransportError::ReadTimeout {
                peer: Role::Receiver,
                waited: deadlines.idle,
            }
            .into());
        }
    };
    let (result, buf) = joined.map_err(|e| TransferError::Protocol {
        peer: Role::Receiver,
        detail: format!("the reply reader stopped unexpectedly ({e})"),
    })?;
    result?;
    match decode(&buf)? {
        Message::Done => Ok(()),
        other => Err(unexpected(other, "Done")),
    }
}

/// The receiver spoke before the end: it can only be to stop us.
fn early_reply(
    joined: Result<(Result<(), TransportError>, Vec<u8>), tokio::task::JoinError>,
) -> TransferError {
    match joined {
        Ok((Err(e), _)) => e.into(),
        Ok((Ok(()), buf)) => match decode(&buf) {
            Ok(other) => unexpected(other, "nothing before the end of the transfer"),
            Err(e) => e,
        },
        Err(e) => TransferError::Protocol {
            peer: Role::Receiver,
            detail: format!("the reply reader stopped unexpectedly ({e})"),
        },
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
        kind: match error {
            TransferError::ReadSource { .. }
            | TransferError::SourceChanged { .. }
            | TransferError::Unsendable { .. } => AbortKind::Io,
            other => other.abort_kind(),
        },
        detail: &detail,
    }
    .encode(&mut frame);
    let _ = writer.send_frame(&mut frame, ABORT_NOTICE_TIMEOUT).await;
}

/// The reader thread: every file's chunks, each file's hash, then the end.
/// Returns early without error if the async side has gone (it reports why).
fn produce(
    transfer: &OutgoingTransfer,
    chunk_size: u32,
    queue: &mpsc::Sender<QueuedFrame>,
    pool: &std_mpsc::Receiver<Vec<u8>>,
) -> Result<(), TransferError> {
    let frame_capacity = FRAME_HEADER_LEN + CHUNK_HEADER_LEN + chunk_size as usize + 16;
    let take_buffer = || {
        let mut buf = pool
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(frame_capacity));
        buf.clear();
        buf.resize(FRAME_HEADER_LEN, 0);
        buf
    };
    for (index, (entry, source)) in transfer
        .manifest
        .files
        .iter()
        .zip(&transfer.sources)
        .enumerate()
    {
        let file_index = index as u32;
        let mut file = File::open(source).map_err(|e| read_error(source, e))?;
        let mut hasher = blake3::Hasher::new();
        let mut remaining = entry.size;
        for chunk_index in 0..transfer.manifest.chunk_count(entry.size) {
            let len = remaining.min(u64::from(chunk_size)) as usize;
            let mut buf = take_buffer();
            encode_chunk_header(&mut buf, file_index, chunk_index);
            let start = buf.len();
            buf.resize(start + len, 0);
            file.read_exact(&mut buf[start..]).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    TransferError::SourceChanged {
                        path: source.clone(),
                    }
                } else {
                    read_error(source, e)
                }
            })?;
            hasher.update(&buf[start..]);
            remaining -= len as u64;
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
                path: source.clone(),
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
    Message::TransferComplete.encode(&mut buf);
    let _ = queue.blocking_send(QueuedFrame { buf, data_len: 0 });
    Ok(())
}

fn read_error(path: &Path, source: std::io::Error) -> TransferError {
    TransferError::ReadSource {
        path: path.to_path_buf(),
        source,
    }
}
