//! The receiver's pipeline.
//!
//! ```text
//! async task:    socket -> open (AEAD) -> decode -> check order and length -> queue
//! writer thread: queue -> write to NAME.tallow-partial -> BLAKE3
//!                -> on FileEnd: compare hash (constant time) -> fsync -> rename
//! ```
//!
//! A file appears under its final name only after its hash matched, and
//! never over an existing file unless the user allowed it. Parent folders are
//! created one component at a time and an existing symlink on the way is
//! refused, so nothing lands outside the output folder. On any failure the
//! partial file of the file in progress is removed; files already verified
//! stay.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tallow_crypto::FRAME_HEADER_LEN;
use tokio::sync::mpsc;

use crate::limits::{Deadlines, SEND_QUEUE_FRAMES};
use crate::manifest::Manifest;
use crate::message::Message;
use crate::path::PARTIAL_SUFFIX;
use crate::transport::{FrameSink, FrameSource};
use crate::{Progress, Role, TransferError};

const ABORT_NOTICE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    /// The output folder (created if missing).
    pub out_dir: PathBuf,
    /// Replace files that already exist.
    pub overwrite: bool,
}

/// An offer received and not yet answered.
pub struct IncomingOffer<W, R> {
    manifest: Manifest,
    writer: W,
    reader: R,
}

/// Wait for the sender's offer (the first message after the handshake).
pub async fn receive_offer<W: FrameSink, R: FrameSource>(
    mut writer: W,
    mut reader: R,
    deadlines: &Deadlines,
) -> Result<IncomingOffer<W, R>, TransferError> {
    let mut buf = Vec::new();
    reader.recv_frame(&mut buf, Some(deadlines.idle)).await?;
    let decoded = decode(&buf);
    match decoded {
        Ok(Message::Offer(manifest)) => Ok(IncomingOffer {
            manifest,
            writer,
            reader,
        }),
        Ok(other) => Err(unexpected(other, "Offer")),
        Err(e) => {
            notify_peer(&mut writer, &e).await;
            Err(e)
        }
    }
}

impl<W: FrameSink, R: FrameSource> IncomingOffer<W, R> {
    /// What the sender offers.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Refuse if a file would replace an existing one (without `overwrite`)
    /// or would be written through a symlink or a non-folder.
    pub fn check_destination(&self, options: &ReceiveOptions) -> Result<(), TransferError> {
        for entry in &self.manifest.files {
            let target = options.out_dir.join(&entry.path);
            check_parents(&options.out_dir, &entry.path, false)?;
            match fs::symlink_metadata(&target) {
                Ok(meta) if meta.is_dir() => {
                    return Err(TransferError::UnsafeDestination { path: target })
                }
                Ok(_) if !options.overwrite => {
                    return Err(TransferError::DestinationExists { path: target })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Say no, telling the sender why.
    pub async fn decline(
        mut self,
        reason: &str,
        deadlines: &Deadlines,
    ) -> Result<(), TransferError> {
        let mut frame = vec![0u8; FRAME_HEADER_LEN];
        Message::Decline { reason }.encode(&mut frame);
        self.writer.send_frame(&mut frame, deadlines.idle).await?;
        Ok(())
    }

    /// Accept and receive every file. Returns once all are verified and in
    /// place and the sender has been told.
    pub async fn accept(
        mut self,
        options: &ReceiveOptions,
        deadlines: &Deadlines,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), TransferError> {
        let result = self.run(options, deadlines, progress).await;
        if let Err(e) = &result {
            if e.should_notify_peer() {
                notify_peer(&mut self.writer, e).await;
            }
        }
        result
    }

    async fn run(
        &mut self,
        options: &ReceiveOptions,
        deadlines: &Deadlines,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), TransferError> {
        fs::create_dir_all(&options.out_dir).map_err(|source| TransferError::WriteOutput {
            path: options.out_dir.clone(),
            source,
        })?;
        self.check_destination(options)?;
        let mut frame = vec![0u8; FRAME_HEADER_LEN];
        Message::Accept.encode(&mut frame);
        self.writer.send_frame(&mut frame, deadlines.idle).await?;

        let (work_tx, work_rx) = mpsc::channel::<Work>(SEND_QUEUE_FRAMES);
        let (pool_tx, pool_rx) = std_mpsc::channel::<Vec<u8>>();
        let disk = FileWriter {
            manifest: self.manifest.clone(),
            options: options.clone(),
            current: None,
        };
        let writer_thread = tokio::task::spawn_blocking(move || disk.run(work_rx, &pool_tx));

        let streamed = self.stream(&work_tx, &pool_rx, deadlines, progress).await;
        drop(work_tx);
        let written = writer_thread.await.unwrap_or_else(|e| {
            Err(TransferError::WriteOutput {
                path: options.out_dir.clone(),
                source: std::io::Error::other(format!("the file writer stopped ({e})")),
            })
        });
        // A disk error explains a closed queue better than the queue does.
        written?;
        streamed?;
        let mut frame = vec![0u8; FRAME_HEADER_LEN];
        Message::Done.encode(&mut frame);
        self.writer.send_frame(&mut frame, deadlines.idle).await?;
        Ok(())
    }

    /// Read frames, check them against the manifest, hand them to the writer.
    async fn stream(
        &mut self,
        work: &mpsc::Sender<Work>,
        pool: &std_mpsc::Receiver<Vec<u8>>,
        deadlines: &Deadlines,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), TransferError> {
        let total = self.manifest.total_size();
        let mut done = 0u64;
        progress(Progress::Bytes { done, total });
        let mut file = 0usize;
        let mut next_chunk = 0u64;
        loop {
            let mut buf = pool.try_recv().unwrap_or_default();
            self.reader
                .recv_frame(&mut buf, Some(deadlines.idle))
                .await?;
            let item = match decode(&buf)? {
                Message::Chunk {
                    file: f,
                    index,
                    data,
                } => {
                    let entry = self.manifest.files.get(file).ok_or_else(|| {
                        protocol("it sent a chunk after the last file".to_owned())
                    })?;
                    if f as usize != file
                        || index != next_chunk
                        || index >= self.manifest.chunk_count(entry.size)
                    {
                        return Err(protocol(format!(
                            "it sent chunk {index} of file {f} where chunk {next_chunk} of file {file} was expected"
                        )));
                    }
                    // index < chunk_count, so offset < size.
                    let offset = index * u64::from(self.manifest.chunk_size);
                    let expected = (entry.size - offset).min(u64::from(self.manifest.chunk_size));
                    if data.len() as u64 != expected {
                        return Err(protocol(format!(
                            "chunk {index} of {:?} has {} bytes, expected {expected}",
                            entry.path,
                            data.len()
                        )));
                    }
                    next_chunk += 1;
                    done += expected;
                    let start = buf.len() - data.len();
                    Work::Chunk { buf, start }
                }
                Message::FileEnd { file: f, hash } => {
                    let entry =
                        self.manifest.files.get(file).ok_or_else(|| {
                            protocol("it ended a file after the last one".to_owned())
                        })?;
                    if f as usize != file || next_chunk != self.manifest.chunk_count(entry.size) {
                        return Err(protocol(format!(
                            "it ended file {f} after {next_chunk} chunks, while file {file} has {}",
                            self.manifest.chunk_count(entry.size)
                        )));
                    }
                    file += 1;
                    next_chunk = 0;
                    Work::FileEnd { hash }
                }
                Message::TransferComplete => {
                    if file != self.manifest.files.len() {
                        return Err(protocol(format!(
                            "it declared the transfer complete after {file} of {} files",
                            self.manifest.files.len()
                        )));
                    }
                    return Ok(());
                }
                other => return Err(unexpected(other, "Chunk, FileEnd or TransferComplete")),
            };
            let ended = matches!(item, Work::FileEnd { .. });
            if work.send(item).await.is_err() {
                // The writer failed; its error is reported by the caller.
                return Ok(());
            }
            progress(Progress::Bytes { done, total });
            if ended {
                progress(Progress::FileComplete { index: file - 1 });
            }
        }
    }
}

fn protocol(detail: String) -> TransferError {
    TransferError::Protocol {
        peer: Role::Sender,
        detail,
    }
}

fn decode(buf: &[u8]) -> Result<Message<'_>, TransferError> {
    Message::decode(buf).map_err(|source| TransferError::BadMessage {
        peer: Role::Sender,
        source,
    })
}

fn unexpected(msg: Message<'_>, expected: &str) -> TransferError {
    match msg {
        Message::Abort { kind, detail } => TransferError::PeerAborted {
            peer: Role::Sender,
            kind,
            detail: detail.to_owned(),
        },
        other => protocol(format!(
            "it sent {} where {expected} was expected",
            other.name()
        )),
    }
}

async fn notify_peer<W: FrameSink>(writer: &mut W, error: &TransferError) {
    let mut frame = vec![0u8; FRAME_HEADER_LEN];
    let detail = error.to_string();
    Message::Abort {
        kind: error.abort_kind(),
        detail: &detail,
    }
    .encode(&mut frame);
    let _ = writer.send_frame(&mut frame, ABORT_NOTICE_TIMEOUT).await;
}

/// Work for the writer thread, in stream order.
enum Work {
    /// Chunk data is `buf[start..]`; the buffer goes back to the pool.
    Chunk { buf: Vec<u8>, start: usize },
    /// The current file is complete; verify it against `hash`.
    FileEnd { hash: [u8; 32] },
}

struct OpenPartial {
    file: File,
    partial: PathBuf,
    hasher: blake3::Hasher,
}

/// Owns the files on disk; runs on a blocking thread.
struct FileWriter {
    manifest: Manifest,
    options: ReceiveOptions,
    current: Option<OpenPartial>,
}

impl FileWriter {
    fn run(
        mut self,
        mut work: mpsc::Receiver<Work>,
        pool: &std_mpsc::Sender<Vec<u8>>,
    ) -> Result<(), TransferError> {
        let result = self.write_all(&mut work, pool);
        // Whatever stopped us, an unverified file must not linger.
        if let Some(open) = self.current.take() {
            drop(open.file);
            let _ = fs::remove_file(&open.partial);
        }
        result
    }

    fn write_all(
        &mut self,
        work: &mut mpsc::Receiver<Work>,
        pool: &std_mpsc::Sender<Vec<u8>>,
    ) -> Result<(), TransferError> {
        let mut index = 0usize;
        while let Some(item) = work.blocking_recv() {
            match item {
                Work::Chunk { buf, start } => {
                    let open = self.open(index)?;
                    open.file.write_all(&buf[start..]).map_err(|source| {
                        TransferError::WriteOutput {
                            path: open.partial.clone(),
                            source,
                        }
                    })?;
                    open.hasher.update(&buf[start..]);
                    let _ = pool.send(buf);
                }
                Work::FileEnd { hash } => {
                    self.open(index)?;
                    self.finish(index, &hash)?;
                    index += 1;
                }
            }
        }
        Ok(())
    }

    /// The partial file for entry `index`, created on first use.
    fn open(&mut self, index: usize) -> Result<&mut OpenPartial, TransferError> {
        if self.current.is_none() {
            let rel = &self.manifest.files[index].path;
            check_parents(&self.options.out_dir, rel, true)?;
            let partial = self.options.out_dir.join(format!("{rel}{PARTIAL_SUFFIX}"));
            // A stale partial (or a symlink planted under its name) is
            // removed, and create_new never follows a symlink.
            match fs::remove_file(&partial) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(TransferError::WriteOutput {
                        path: partial,
                        source,
                    })
                }
            }
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&partial)
                .map_err(|source| TransferError::WriteOutput {
                    path: partial.clone(),
                    source,
                })?;
            self.current = Some(OpenPartial {
                file,
                partial,
                hasher: blake3::Hasher::new(),
            });
        }
        // Just set above if it was empty.
        self.current
            .as_mut()
            .ok_or_else(|| TransferError::WriteOutput {
                path: self.options.out_dir.clone(),
                source: std::io::Error::other("no open file"),
            })
    }

    /// Verify, sync and rename the current file into place.
    fn finish(&mut self, index: usize, expected: &[u8; 32]) -> Result<(), TransferError> {
        let Some(open) = self.current.take() else {
            return Ok(());
        };
        let entry = &self.manifest.files[index];
        let write_err = |path: &Path, source| TransferError::WriteOutput {
            path: path.to_path_buf(),
            source,
        };
        let actual = open.hasher.finalize();
        if !bool::from(actual.as_bytes().ct_eq(expected)) {
            drop(open.file);
            let _ = fs::remove_file(&open.partial);
            return Err(TransferError::Integrity {
                path: entry.path.clone(),
            });
        }
        if let Err(e) = open.file.sync_all() {
            let _ = fs::remove_file(&open.partial);
            return Err(write_err(&open.partial, e));
        }
        drop(open.file);
        let target = self.options.out_dir.join(&entry.path);
        if !self.options.overwrite && fs::symlink_metadata(&target).is_ok() {
            let _ = fs::remove_file(&open.partial);
            return Err(TransferError::DestinationExists { path: target });
        }
        fs::rename(&open.partial, &target).map_err(|e| {
            let _ = fs::remove_file(&open.partial);
            write_err(&target, e)
        })?;
        if let Some(parent) = target.parent() {
            // Make the rename itself durable.
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| write_err(parent, e))?;
        }
        Ok(())
    }
}

/// Check (and with `create`, make) each folder between `out_dir` and the
/// file. A symlink or a non-folder on the way is refused.
fn check_parents(out_dir: &Path, rel: &str, create: bool) -> Result<(), TransferError> {
    let mut dir = out_dir.to_path_buf();
    let mut components: Vec<&str> = rel.split('/').collect();
    components.pop();
    for component in components {
        dir.push(component);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(TransferError::UnsafeDestination { path: dir }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Ok(());
                }
                fs::create_dir(&dir).map_err(|source| TransferError::WriteOutput {
                    path: dir.clone(),
                    source,
                })?;
            }
            Err(source) => return Err(TransferError::WriteOutput { path: dir, source }),
        }
    }
    Ok(())
}
