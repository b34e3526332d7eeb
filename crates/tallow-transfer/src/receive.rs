//! The receiver's pipeline.
//!
//! ```text
//! async task:    socket -> open (AEAD) -> decode -> check order and lengths -> queue
//! writer thread: queue -> big chunk to a worker, small one checked here
//! chunk workers: unzstd (capped at the chunk size) -> BLAKE3 -> check leaf
//!                -> write NAME.tallow-partial at the chunk's offset
//! writer thread: results in stream order -> file hash, Merkle tree, records
//!                -> on FileEnd: compare hash (constant time), set mode and
//!                   mtime, make durable, rename into place
//!                -> on TransferComplete: compare Merkle root (constant time),
//!                   set folder modes and mtimes
//! ack task:      every 50 ms, the bytes written so far -> Ack
//! ```
//!
//! A file appears under its final name only after its hash matched, and
//! never over an existing file unless the user allowed it. Everything is
//! reached through handles from the output folder ([`crate::placement`]):
//! a symlink below it is refused, never followed, so nothing lands outside
//! it. Partial files are private (0600) until verified; the sender's modes,
//! masked by the receiver's umask and without setuid, setgid or sticky bits,
//! are applied when a verified file takes its name, and to folders only if
//! this transfer made them: what existed before keeps its mode and times. Small files are made
//! durable in batches (one `syncfs` per batch instead of one `fsync` per
//! file) before they are renamed, so 10,000 small files do not cost 10,000
//! disk flushes; large files are synced one by one. Every 16 MiB, and
//! whenever files are renamed, what is durable is recorded in the
//! checkpoint ([`crate::checkpoint`]) so an interrupted transfer resumes. If
//! the transfer fails, verified files stay, the file in progress stays as a
//! partial file, and a partial that failed verification is deleted.

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tallow_crypto::file_hash::{chunk_digest, ChunkDigest, FileHasher};
use tallow_crypto::merkle::MerkleBuilder;
use tokio::sync::mpsc;

use crate::checkpoint::{self, CheckpointLog, LocalKey, Record};
use crate::chunk_writer::{
    ChunkChecker, ChunkDone, ChunkJob, ChunkOutcome, ChunkWorkers, InflateError, PARALLEL_MIN_BYTES,
};
use crate::notice::{tell_peer, tell_peer_about};
use crate::placement::{split_parent, Existing, Folder, OutputDir};
use crate::resume::{self, OurFiles, ResumePlan};
use crate::{FailedFile, Progress, TransferError};
use tallow_protocol::limits::{Deadlines, ACK_INTERVAL, KEEPALIVE_INTERVAL, SEND_QUEUE_FRAMES};
use tallow_protocol::machine::{AckSchedule, Incoming, PeerMisbehaved, ReceiveMachine};
use tallow_protocol::manifest::{Manifest, ManifestError, Timestamp};
use tallow_protocol::message::{AbortKind, ChunkHeader, FileRuns, Message, ResumePoint};
use tallow_protocol::offer::OfferAssembly;
use tallow_protocol::path::PARTIAL_SUFFIX;
use tallow_protocol::transport::{FrameSink, FrameSource};
use tallow_protocol::wire::Decode;
use tallow_protocol::Role;

/// How often progress is reported.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// What the writer thread has done so far, read by the ack task and the
/// progress reporter.
#[derive(Default)]
struct Counters {
    /// Plaintext bytes written to partial files.
    bytes: AtomicU64,
    /// Files verified and in place (a count; batched small files may be
    /// placed after a later large one).
    files: AtomicUsize,
    /// Bytes of a resumed partial checked against the checkpoint so far,
    /// or written again in place of damaged ones: not progress, but a sign
    /// the disk is alive.
    checked: AtomicU64,
    /// Bytes of the resumed file asked for again (found damaged on disk).
    refetching: AtomicU64,
}

impl Counters {
    /// Anything the disk did: written or checked bytes.
    fn activity(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed) + self.checked.load(Ordering::Relaxed)
    }
}

/// The check, in a thread of its own, that a resumed partial still holds
/// the chunks its checkpoint records (they were taken from the records so
/// the transfer could start at once). The file is placed only once it
/// checks out, or once what did not is fetched again ([`Refetch`]).
struct PrefixCheck {
    /// The resumed file's index.
    file: usize,
    /// The recorded digests of its kept chunks.
    digests: Arc<Vec<ChunkDigest>>,
    /// How many of them the disk still holds, once the thread is done.
    running: Option<std::thread::JoinHandle<usize>>,
    stop: Arc<AtomicBool>,
}

impl PrefixCheck {
    /// Start reading `partial` (opened for reading).
    fn start(&mut self, partial: File, manifest: Arc<Manifest>, counters: Arc<Counters>) {
        let (digests, stop, file) = (self.digests.clone(), self.stop.clone(), self.file);
        self.running = Some(std::thread::spawn(move || {
            resume::intact_prefix(partial, &manifest, file, &digests, &mut |bytes| {
                counters.checked.fetch_add(bytes, Ordering::Relaxed);
                !stop.load(Ordering::Relaxed)
            })
        }));
    }

    /// Wait for the result: `None` if every kept chunk checked out, else
    /// the first that did not.
    fn first_damaged(&mut self) -> Option<u64> {
        let intact = self.running.take().map_or(0, |t| t.join().unwrap_or(0));
        (intact < self.digests.len()).then_some(intact as u64)
    }
}

impl Drop for PrefixCheck {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The resumed file, verified by its hash but with chunks of its earlier
/// part damaged on disk: held back until the stream is complete, then
/// those chunks are asked for again (`Refetch`), checked against their
/// records, written in place, and only then is the file placed.
struct Refetch {
    open: OpenPartial,
    /// Its index in the manifest.
    file: usize,
    /// The recorded digests of its earlier chunks (0..).
    digests: Arc<Vec<ChunkDigest>>,
    /// The first damaged chunk (the rest come in order, as the stream's
    /// rules make sure).
    first: u64,
}

fn report(
    counters: &Counters,
    reported: &mut Reported,
    total: u64,
    progress: &mut (dyn FnMut(Progress) + Send),
) {
    let refetching = counters.refetching.load(Ordering::Relaxed);
    if refetching > 0 && !reported.refetch {
        reported.refetch = true;
        progress(Progress::Refetching {
            index: reported.resumed_file,
            bytes: refetching,
        });
    }
    let reported_files = &mut reported.files;
    progress(Progress::Bytes {
        done: counters.bytes.load(Ordering::Relaxed),
        total,
    });
    let files = counters.files.load(Ordering::Relaxed);
    while *reported_files < files {
        progress(Progress::FileComplete {
            index: *reported_files,
        });
        *reported_files += 1;
    }
}

/// What the progress callback has heard.
struct Reported {
    files: usize,
    /// The file a refetch is about (the resumed one), and whether it was
    /// told.
    resumed_file: usize,
    refetch: bool,
}

/// Files at least this big are synced on their own; smaller ones in batches.
const BATCH_FILE_LIMIT: u64 = 8 * 1024 * 1024;
/// A batch is flushed when it holds this many bytes…
const BATCH_BYTES: u64 = 64 * 1024 * 1024;
/// …or this many files…
const BATCH_FILES: usize = 1024;
/// …or its files are in this many folders (each held open until then).
const BATCH_FOLDERS: usize = 64;

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    /// The output folder (created if missing).
    pub out_dir: PathBuf,
    /// Replace files that already exist.
    pub overwrite: bool,
    /// Keep files that already exist and have the sender skip them (the
    /// sender learns which); `overwrite` wins.
    pub skip_existing: bool,
    /// Continue an interrupted transfer of the same files (default); false
    /// starts over.
    pub resume: bool,
    /// The receiving user's umask: permission bits it clears from the
    /// sender's modes (as tar does for a user who is not root).
    pub umask: u32,
    /// The user's secret that authenticates checkpoints.
    pub local_key: LocalKey,
    /// A person stopping the transfer: the sender is told, then it ends;
    /// what is durable stays for the next run.
    pub cancel: crate::cancel::CancelSignal,
}

impl ReceiveOptions {
    /// The permission bits a received file or folder gets: the sender's
    /// rwx bits less the umask; never setuid, setgid or sticky.
    pub fn mode_for(&self, sent: u32) -> u32 {
        sent & 0o777 & !self.umask
    }
}

/// Where an offer would put things that the user should see before saying
/// yes, however long the offer is: entries that would go into folders that
/// already exist here, and hidden (dot) names at the top level.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Top-level folders of the offer that exist in the output folder and
    /// were not made by an earlier run of this transfer.
    pub existing_folders: Vec<ExistingFolder>,
    /// Top-level names starting with `.`.
    pub hidden: Vec<String>,
}

/// One existing folder an offer would add to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingFolder {
    /// The folder's name (top level of the output folder).
    pub name: String,
    /// Files and folders the offer would put inside it.
    pub entries: usize,
    /// The first few of them, relative to the output folder.
    pub examples: Vec<String>,
}

/// Names listed per existing folder in a [`Placement`].
const PLACEMENT_EXAMPLES: usize = 5;

impl Placement {
    /// Nothing that needs the user's explicit consent.
    pub fn is_plain(&self) -> bool {
        self.existing_folders.is_empty() && self.hidden.is_empty()
    }
}

/// An offer received and not yet answered.
pub struct IncomingOffer<W, R> {
    manifest: Arc<Manifest>,
    /// The manifest's identity (checked against it on arrival).
    identity: [u8; 32],
    writer: W,
    reader: R,
}

/// What the sender offers: files, or a text message (already received).
pub enum Offered<W, R> {
    /// Files and folders, to accept or decline.
    Files(IncomingOffer<W, R>),
    /// A text message (`tallow send --text`), received and acknowledged.
    Text(String),
}

/// Wait for the sender's offer (the first message after the handshake).
/// A text message is acknowledged at once and returned.
pub async fn receive_offer<W: FrameSink, R: FrameSource>(
    mut writer: W,
    mut reader: R,
    deadlines: &Deadlines,
) -> Result<Offered<W, R>, TransferError> {
    let mut buf = Vec::new();
    // The sender's user may be comparing verification strings first.
    reader
        .recv_frame(&mut buf, Some(deadlines.decision))
        .await?;
    match decode(&buf) {
        Ok(Message::Offer(header)) => {
            match read_offer_pages(OfferAssembly::new(header), &mut reader, deadlines).await {
                Ok((manifest, identity)) => Ok(Offered::Files(IncomingOffer {
                    manifest: Arc::new(manifest),
                    identity,
                    writer,
                    reader,
                })),
                Err(e) => {
                    tell_peer_about(&mut writer, &e).await;
                    Err(e)
                }
            }
        }
        Ok(Message::Text { text }) => {
            let text = text.to_owned();
            let mut frame = Message::Done.to_frame();
            writer.send_frame(&mut frame, deadlines.idle).await?;
            Ok(Offered::Text(text))
        }
        Ok(Message::Abort { kind, detail }) => Err(TransferError::PeerAborted {
            peer: Role::Sender,
            kind,
            detail: detail.to_owned(),
        }),
        Ok(other) => Err(broke(PeerMisbehaved::Unexpected {
            got: other.name(),
            expected: "Offer",
        })),
        Err(e) => {
            tell_peer_about(&mut writer, &e).await;
            Err(e)
        }
    }
}

/// The offer's entries, page by page (each follows at once: the idle
/// deadline applies), checked as they come and as a whole at the end; with
/// the identity they were checked to have.
async fn read_offer_pages<R: FrameSource>(
    mut offer: OfferAssembly,
    reader: &mut R,
    deadlines: &Deadlines,
) -> Result<(Manifest, [u8; 32]), TransferError> {
    let mut buf = Vec::new();
    while !offer.is_complete() {
        reader.recv_frame(&mut buf, Some(deadlines.idle)).await?;
        match decode(&buf)? {
            Message::OfferPage(page) => offer.add(page).map_err(bad_offer)?,
            Message::Abort { kind, detail } => {
                return Err(TransferError::PeerAborted {
                    peer: Role::Sender,
                    kind,
                    detail: detail.to_owned(),
                })
            }
            other => {
                return Err(broke(PeerMisbehaved::Unexpected {
                    got: other.name(),
                    expected: "OfferPage",
                }))
            }
        }
    }
    let identity = offer.identity();
    let manifest = offer.finish().map_err(bad_offer)?;
    Ok((manifest, identity))
}

impl<W: FrameSink + 'static, R: FrameSource + 'static> IncomingOffer<W, R> {
    /// What the sender offers (shared, not copied: it can be large).
    pub fn manifest(&self) -> &Arc<Manifest> {
        &self.manifest
    }

    /// The connection from the sender, to notice it stop while the user
    /// is asked (read only an `Abort` from it: the sender sends nothing
    /// else before the answer).
    pub fn reader_mut(&mut self) -> &mut R {
        &mut self.reader
    }

    /// How much of the offer is already here from an interrupted transfer
    /// (reads the checkpoint and the partial file; writes nothing).
    pub fn plan(&self, options: &ReceiveOptions) -> ResumePlan {
        resume::plan(
            &self.manifest,
            &self.identity,
            &options.out_dir,
            options.resume,
            &options.local_key,
            resume::VERIFY_BEFORE_ACCEPT,
        )
    }

    /// What in this offer needs the user's explicit consent (see
    /// [`Placement`]). Folders earlier runs of this transfer made do not.
    pub fn placement(&self, options: &ReceiveOptions, plan: &ResumePlan) -> Placement {
        placement(&self.manifest, options, plan)
    }

    /// Refuse if a file would replace an existing one (without `overwrite`
    /// or `skip_existing`), or anything would be written through a symlink
    /// or over a non-folder. Returns the files to skip.
    pub fn check_destination(
        &self,
        options: &ReceiveOptions,
        plan: &ResumePlan,
    ) -> Result<FileRuns, TransferError> {
        check_destination(&self.manifest, options, plan)
    }

    /// Tell the sender, waiting for the answer, why we stop (say Ctrl-C
    /// at the question): it reads our reason, not "connection closed".
    pub async fn tell_peer(&mut self, error: &TransferError) {
        crate::notice::tell_peer_about(&mut self.writer, error).await;
    }

    /// Say no, telling the sender why.
    pub async fn decline(
        mut self,
        reason: &str,
        deadlines: &Deadlines,
    ) -> Result<(), TransferError> {
        let mut frame = Message::Decline { reason }.to_frame();
        self.writer.send_frame(&mut frame, deadlines.idle).await?;
        Ok(())
    }

    /// Accept and receive everything. Returns once all is verified and in
    /// place and the sender has been told.
    pub async fn accept(
        self,
        options: &ReceiveOptions,
        plan: ResumePlan,
        deadlines: &Deadlines,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<Vec<FailedFile>, TransferError> {
        let IncomingOffer {
            manifest,
            mut writer,
            reader,
            ..
        } = self;
        let mut plan = plan;
        let prepared = prepare(&manifest, options, &mut plan);
        let (disk, skip) = match prepared {
            Ok((out, log, made, skip)) => {
                let skipped_bytes = skip.bytes(&manifest);
                let disk = FileWriter::new(
                    manifest.clone(),
                    options.clone(),
                    out,
                    plan,
                    log,
                    made,
                    skipped_bytes,
                );
                (disk, skip)
            }
            Err(e) => {
                tell_peer_about(&mut writer, &e).await;
                return Err(e);
            }
        };
        let point = disk.point;
        let mut frame = Message::Accept {
            resume: point,
            skip: skip.clone(),
        }
        .to_frame();
        writer.send_frame(&mut frame, deadlines.idle).await?;

        let counters = disk.counters.clone();
        let (outcome_tx, outcome_rx) = tokio::sync::oneshot::channel();
        // A refetch goes from the writer to the stream reader (which then
        // expects the chunks) to the ack task (which asks for them).
        let (refetch_tx, refetch_rx) = tokio::sync::oneshot::channel();
        let (ask_tx, ask_rx) = tokio::sync::oneshot::channel();
        let mut disk = disk;
        disk.refetch_tx = Some(refetch_tx);
        let acks = tokio::spawn(send_acks(
            writer,
            counters.clone(),
            outcome_rx,
            ask_rx,
            *deadlines,
        ));

        let (work_tx, work_rx) = mpsc::channel::<Work>(SEND_QUEUE_FRAMES);
        let (pool_tx, pool_rx) = std_mpsc::channel::<Vec<u8>>();
        let manifest = disk.manifest.clone();
        let mut writer_thread = tokio::task::spawn_blocking(move || disk.run(work_rx, &pool_tx));
        let to_disk = ToDisk {
            work: work_tx,
            pool: pool_rx,
            counters: counters.clone(),
        };
        let mut streaming = tokio::spawn(stream(
            manifest.clone(),
            point,
            skip,
            reader,
            to_disk,
            (refetch_rx, ask_tx),
            *deadlines,
        ));

        // Whichever side fails first decides; the disk's error explains a
        // closed queue better than the queue does.
        let total = manifest.total_size();
        let mut reported = Reported {
            files: 0,
            resumed_file: point.files_done as usize,
            refetch: false,
        };
        let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
        let mut streamed = None;
        let mut written_result = None;
        let mut finished_log = None;
        let mut failed = Vec::new();
        let result = loop {
            tokio::select! {
                joined = &mut writer_thread, if written_result.is_none() => {
                    let r = joined.unwrap_or_else(|e| Err(TransferError::WriteOutput {
                        path: options.out_dir.clone(),
                        source: std::io::Error::other(format!("the file writer stopped ({e})")),
                    }));
                    match r {
                        Err(e) => {
                            streaming.abort();
                            break Err(e);
                        }
                        Ok((log, gone)) => {
                            finished_log = log;
                            failed = gone;
                            written_result = Some(());
                        }
                    }
                }
                joined = &mut streaming, if streamed.is_none() => {
                    let r = joined.unwrap_or_else(|e| Err(TransferError::Internal { what: "the stream reader", detail: e.to_string() }));
                    streamed = Some(r);
                }
                _ = tick.tick() => {}
                _ = options.cancel.cancelled() => {
                    // Like an interruption: what is durable stays.
                    streaming.abort();
                    break Err(TransferError::Cancelled);
                }
            }
            report(&counters, &mut reported, total, progress);
            match (&streamed, &written_result) {
                (Some(Err(_)), None) => {
                    // The writer drains what it has and stops; let it finish.
                }
                (Some(_), Some(_)) => {
                    break streamed.take().unwrap_or(Ok(()));
                }
                _ => {}
            }
        };
        let result = result.map_err(|e| match e {
            TransferError::WriteOutput { path, source }
                if source.kind() == std::io::ErrorKind::StorageFull =>
            {
                TransferError::DiskFull { path }
            }
            other => other,
        });
        let _ = outcome_tx.send(result.as_ref().map(|_| ()).map_err(|e| e.abort_notice()));
        let told = acks.await.unwrap_or(Ok(()));
        result?;
        told.map_err(TransferError::from)?;
        // The sender knows: nothing is left to resume, unless files failed
        // (the checkpoint then says which arrived, so a rerun sends only
        // the failed ones, although they changed).
        if let Some(log) = finished_log.filter(|_| failed.is_empty()) {
            let _ = log.remove();
        }
        Ok(failed)
    }
}

/// Create the output folder and every folder of the offer (through
/// handles), checking the destination first, and start the checkpoint from
/// what is already here. Returns the open output folder, the checkpoint and
/// which of the offer's folders this transfer made (now or earlier), and
/// the files to skip.
fn prepare(
    manifest: &Manifest,
    options: &ReceiveOptions,
    plan: &mut ResumePlan,
) -> Result<(OutputDir, CheckpointLog, HashSet<u32>, FileRuns), TransferError> {
    let out =
        OutputDir::open(&options.out_dir, true).map_err(|source| TransferError::WriteOutput {
            path: options.out_dir.clone(),
            source,
        })?;
    let skip = check_destination(manifest, options, plan)?;
    // The file at the resume point is kept as the user has it: its partial
    // is not continued.
    if skip.contains(plan.point.files_done) {
        plan.forget_partial(manifest);
        let entry = &manifest.files.at(plan.point.files_done as usize);
        let (dir, name) = split_parent(entry.path);
        if let Ok(Some(folder)) = out.folder(dir, false, &mut |_| {}) {
            let _ = folder.remove(&format!("{name}{PARTIAL_SUFFIX}"));
        }
    }
    // Folders this transfer makes are recorded as its own *before* they are
    // made: killed in between, the next run still knows them as its own
    // instead of asking to merge into "a folder you already have". A record
    // for a folder never made is harmless (it is made next time).
    let mut made: HashSet<u32> = HashSet::new();
    for (i, dir) in manifest.dirs.iter().enumerate() {
        if plan.made_folder(&dir.path)
            || matches!(out.folder(&dir.path, false, &mut |_| {}), Ok(None))
        {
            made.insert(i as u32);
        }
    }
    // The transfer's own checkpoint is gone on with (a million files'
    // records are not written again); else a new one starts.
    let mut records = plan.log_records();
    records.extend(
        manifest
            .dirs
            .iter()
            .enumerate()
            .filter(|(i, dir)| {
                (made.contains(&(*i as u32)) || plan.made_folder(&dir.path))
                    && !plan.logged_folder(*i)
            })
            .map(|(i, _)| Record::FolderMade { dir: i as u32 }),
    );
    let identity = plan.identity;
    let log = match &plan.own_log {
        Some(own) => {
            records.extend(plan.carried_records(manifest, &out));
            CheckpointLog::reopen(&out, &identity, own.len, &options.local_key)
                .and_then(|mut log| log.append(&records).map(|()| log))
        }
        // What an earlier version's checkpoint says of the files carried
        // over goes into the new one before that is deleted.
        None => CheckpointLog::create(
            &out,
            manifest,
            &identity,
            records
                .into_iter()
                .chain(plan.carried_records(manifest, &out)),
            &options.local_key,
        ),
    }
    .map_err(|source| TransferError::WriteOutput {
        path: checkpoint::checkpoint_path(&options.out_dir, &identity),
        source,
    })?;
    let own_name = checkpoint::checkpoint_name(&identity);
    for obsolete in plan.obsolete.iter().filter(|n| **n != own_name) {
        let _ = out.root().remove(obsolete);
    }
    for dir in &manifest.dirs {
        out.folder(&dir.path, true, &mut |_| {})?;
    }
    Ok((out, log, made, skip))
}

/// Refuse if a file would replace an existing one (without `overwrite` or
/// `skip_existing`), or anything would be written through a symlink or over
/// a non-folder; and if what is still to come does not fit. Returns the
/// files to skip.
fn check_destination(
    manifest: &Manifest,
    options: &ReceiveOptions,
    plan: &ResumePlan,
) -> Result<FileRuns, TransferError> {
    // Nothing there yet: nothing to replace, and the free space is that of
    // the folder it will be made in.
    let out = match OutputDir::open(&options.out_dir, false) {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(TransferError::WriteOutput {
                path: options.out_dir.clone(),
                source,
            })
        }
    };
    let skip = match &out {
        Some(out) => existing_files(manifest, options, plan, out)?,
        None => FileRuns::default(),
    };
    // Bytes still to come must fit (an offer of 2^63 bytes is refused here,
    // before anything is written).
    let needed = manifest
        .total_size()
        .saturating_sub(plan.bytes)
        .saturating_sub(skip.bytes(manifest));
    let available = match &out {
        Some(out) => rustix::fs::fstatvfs(out.root().fd()).ok(),
        None => options
            .out_dir
            .ancestors()
            .find_map(|a| rustix::fs::statvfs(a).ok()),
    }
    .map(|stat| stat.f_bavail.saturating_mul(stat.f_frsize));
    if let Some(available) = available {
        if needed > available {
            return Err(TransferError::NoSpace {
                needed,
                available,
                dir: options.out_dir.clone(),
            });
        }
    }
    Ok(skip)
}

/// Walk the offer's names in `out`: anything unsafe in the way is refused,
/// and a file that exists (not our own earlier output) is replaced with
/// `overwrite`, kept and skipped with `skip_existing`, else refused. Returns
/// the files to skip.
fn existing_files(
    manifest: &Manifest,
    options: &ReceiveOptions,
    plan: &ResumePlan,
    out: &OutputDir,
) -> Result<FileRuns, TransferError> {
    let mut last: Option<(String, Option<Folder>)> = None;
    let mut at = |rel: &str| -> Result<Existing, TransferError> {
        let (dir, name) = split_parent(rel);
        let folder = match &last {
            Some((d, f)) if d == dir => f.clone(),
            _ => {
                let f = out.folder(dir, false, &mut |_| {})?;
                last = Some((dir.to_owned(), f.clone()));
                f
            }
        };
        let Some(folder) = folder else {
            return Ok(Existing::Nothing);
        };
        folder
            .existing(name)
            .map_err(|source| TransferError::WriteOutput {
                path: folder.path().join(name),
                source,
            })
    };
    for dir in &manifest.dirs {
        if !matches!(at(&dir.path)?, Existing::Nothing | Existing::Folder) {
            return Err(TransferError::UnsafeDestination {
                path: options.out_dir.join(&dir.path),
            });
        }
    }
    let mut skipped = Vec::new();
    for (index, entry) in manifest.files.iter().enumerate() {
        // Verified by an earlier run and unchanged since: not sent again.
        if plan.is_already_here(index) {
            skipped.push(index as u32);
            continue;
        }
        let target = || options.out_dir.join(entry.path);
        match at(entry.path)? {
            Existing::Nothing => {}
            Existing::Folder | Existing::Other => {
                return Err(TransferError::UnsafeDestination { path: target() })
            }
            // Our own unchanged output from an interrupted run is not the
            // user's file.
            Existing::File(_) if options.overwrite || plan.is_ours(index) => {}
            Existing::File(_) if options.skip_existing => skipped.push(index as u32),
            Existing::File(_) => return Err(TransferError::DestinationExists { path: target() }),
        }
    }
    Ok(FileRuns::from_sorted(skipped))
}

/// See [`IncomingOffer::placement`].
fn placement(manifest: &Manifest, options: &ReceiveOptions, plan: &ResumePlan) -> Placement {
    let mut placement = Placement::default();
    let top = manifest.top_level_names();
    placement.hidden = top
        .iter()
        .filter(|n| n.starts_with('.'))
        .map(|n| n.to_string())
        .collect();
    let Ok(out) = OutputDir::open(&options.out_dir, false) else {
        return placement;
    };
    let root = out.root();
    for name in top {
        let prefix = format!("{name}/");
        let inside = manifest
            .dirs
            .iter()
            .map(|d| d.path.as_str())
            .chain(manifest.files.iter().map(|f| f.path))
            .filter(|p| p.starts_with(&prefix));
        // A top-level file that exists is refused by check_destination.
        let is_folder =
            manifest.dirs.iter().any(|d| d.path == name) || inside.clone().next().is_some();
        if !is_folder || plan.made_folder(name) {
            continue;
        }
        if root.existing(name).ok() == Some(Existing::Folder) {
            placement.existing_folders.push(ExistingFolder {
                name: name.to_owned(),
                entries: inside.clone().count(),
                examples: inside
                    .take(PLACEMENT_EXAMPLES)
                    .map(|p| p[prefix.len()..].to_owned())
                    .collect(),
            });
        }
    }
    placement
}

/// The ack task: owns the channel's writing half. Sends the bytes written
/// when [`AckSchedule`] says so, then `Done` (the outcome is `Ok`), or the
/// `Abort` the outcome carries, or nothing (the sender is gone, or stopped).
async fn send_acks<W: FrameSink>(
    mut writer: W,
    counters: Arc<Counters>,
    mut outcome: tokio::sync::oneshot::Receiver<Result<(), Option<(AbortKind, String)>>>,
    ask: tokio::sync::oneshot::Receiver<RefetchRange>,
    deadlines: Deadlines,
) -> Result<(), tallow_protocol::transport::TransportError> {
    let mut ask = Some(ask);
    let idle = deadlines.idle;
    let mut frame = Vec::new();
    let mut schedule = AckSchedule::new(Instant::now(), KEEPALIVE_INTERVAL, deadlines.disk_stall());
    let mut tick = tokio::time::interval(ACK_INTERVAL);
    loop {
        tokio::select! {
            result = &mut outcome => {
                match result {
                    Ok(Ok(())) => {
                        // A last ack first, so the sender's count ends at 100 %.
                        Message::Ack { bytes: counters.bytes.load(Ordering::Relaxed) }.encode_frame(&mut frame);
                        writer.send_frame(&mut frame, idle).await?;
                        Message::Done.encode_frame(&mut frame);
                        return writer.send_frame(&mut frame, idle).await;
                    }
                    Ok(Err(Some((kind, detail)))) => {
                        tell_peer(&mut writer, kind, &detail).await;
                        return Ok(());
                    }
                    _ => return Ok(()),
                }
            }
            // Asked once, after the stream is complete.
            range = async {
                match ask.as_mut() {
                    Some(rx) => rx.await,
                    None => std::future::pending().await,
                }
            }, if ask.is_some() => {
                ask = None;
                if let Ok((file, first, count)) = range {
                    Message::Refetch { file, first, count }.encode_frame(&mut frame);
                    if writer.send_frame(&mut frame, idle).await.is_err() {
                        let _ = outcome.await;
                        return Ok(());
                    }
                }
            }
            _ = tick.tick() => {
                let written = counters.bytes.load(Ordering::Relaxed);
                if let Some(ack) = schedule.on_tick(Instant::now(), written, counters.activity()) {
                    ack.encode_frame(&mut frame);
                    // A failed ack means the sender is gone; the stream
                    // reader will say so.
                    if writer.send_frame(&mut frame, idle).await.is_err() {
                        let _ = outcome.await;
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The stream task's way to the writer thread: work in, spent buffers
/// back, and what the disk has done (to tell a busy disk from a hung one).
struct ToDisk {
    work: mpsc::Sender<Work>,
    pool: std_mpsc::Receiver<Vec<u8>>,
    counters: Arc<Counters>,
}

/// Chunks of a file to fetch again: (file, first, count).
type RefetchRange = (u32, u64, u64);

/// Read frames, check them against the rules ([`ReceiveMachine`]), hand
/// them to the writer. Once the stream is complete, the writer may want
/// chunks again (`refetch`): they are expected, then asked for (`ask`, by
/// the ack task), and read as well.
async fn stream<R: FrameSource>(
    manifest: Arc<Manifest>,
    start: ResumePoint,
    skip: FileRuns,
    mut reader: R,
    disk: ToDisk,
    refetch: (
        tokio::sync::oneshot::Receiver<RefetchRange>,
        tokio::sync::oneshot::Sender<RefetchRange>,
    ),
    deadlines: Deadlines,
) -> Result<(), TransferError> {
    let ToDisk {
        work,
        pool,
        counters,
    } = disk;
    let mut rules = ReceiveMachine::new(&manifest, start, skip);
    let mut refetch = Some(refetch);
    // Small work gathered while more frames are already here: the writer
    // thread is woken once for many small files, not twice for each.
    let mut batch = Batch::default();
    loop {
        let mut buf = pool.try_recv().unwrap_or_default();
        reader.recv_frame(&mut buf, Some(deadlines.idle)).await?;
        // The last chunk asked for again ends the stream.
        let mut ends = false;
        let item = match rules.on_message(decode(&buf)?).map_err(broke)? {
            Incoming::Chunk { header, data, len } => Work::Chunk {
                header,
                start: buf.len() - data.len(),
                len,
                buf,
            },
            Incoming::Zeros { header, len } => Work::Zeros { header, len },
            Incoming::FileEnd { file, hash } => Work::FileEnd { file, hash },
            Incoming::FileFailed {
                file,
                reason,
                missing,
            } => Work::FileFailed {
                file,
                missing,
                reason: reason.to_owned(),
            },
            Incoming::Complete { merkle_root } => {
                let complete = batch.with(Work::Complete { merkle_root });
                if work.send(complete).await.is_err() {
                    return Ok(());
                }
                // The writer says whether it needs chunks again (or stops).
                let Some((wanted, ask)) = refetch.take() else {
                    return Ok(());
                };
                let Ok(range @ (file, first, count)) = wanted.await else {
                    return Ok(());
                };
                rules.expect_refetch(file, first, count);
                let _ = ask.send(range);
                continue;
            }
            Incoming::Refetched {
                header,
                data,
                len,
                last,
            } => {
                ends = last;
                Work::Refetched {
                    header,
                    start: buf.len() - data.len(),
                    len,
                    buf,
                }
            }
            // Gathered work must not wait behind a frame that carries
            // none (only the next frame being here already lets it wait).
            Incoming::Nothing => match batch.due(reader.frame_ready()) {
                Some(gathered) => gathered,
                None => continue,
            },
            Incoming::Aborted { kind, detail } => {
                return Err(TransferError::PeerAborted {
                    peer: Role::Sender,
                    kind,
                    detail: detail.to_owned(),
                })
            }
        };
        if batch.takes(&item) && reader.frame_ready() {
            batch.push(item);
            continue;
        }
        let item = batch.with(item);
        let limit = deadlines.disk_stall();
        let mut seen = counters.activity();
        let permit = loop {
            match tokio::time::timeout(limit, work.reserve()).await {
                Ok(Ok(permit)) => break permit,
                // The writer failed; its error is reported by the caller.
                Ok(Err(_)) => return Ok(()),
                // The disk took nothing for that long: hung, unless it was
                // busy (checking a resumed partial before placing it).
                Err(_) => {
                    let now = counters.activity();
                    if now == seen {
                        return Err(TransferError::DiskStalled { waited: limit });
                    }
                    seen = now;
                }
            }
        };
        permit.send(item);
        if ends {
            return Ok(());
        }
    }
}

fn broke(rule: PeerMisbehaved) -> TransferError {
    TransferError::broke(Role::Sender, rule)
}

/// At most this many work items go to the writer in one batch…
const WORK_BATCH_ITEMS: usize = 64;
/// …holding at most this many bytes of buffers between them.
const WORK_BATCH_BYTES: usize = 1 << 20;

/// Small work items on their way to the writer together.
#[derive(Default)]
struct Batch {
    items: Vec<Work>,
    bytes: usize,
}

impl Batch {
    /// Whether `item` may wait in the batch: a small chunk, a hole or a
    /// file's end, while there is room.
    fn takes(&self, item: &Work) -> bool {
        let held = match item {
            Work::Chunk { buf, .. } => buf.capacity(),
            Work::Zeros { .. } | Work::FileEnd { .. } => 0,
            _ => return false,
        };
        held < WORK_BATCH_BYTES / 4
            && self.items.len() < WORK_BATCH_ITEMS
            && self.bytes + held <= WORK_BATCH_BYTES
    }

    fn push(&mut self, item: Work) {
        if let Work::Chunk { buf, .. } = &item {
            self.bytes += buf.capacity();
        }
        self.items.push(item);
    }

    /// What waits, as one piece of work, unless the next frame is
    /// `ready` (or nothing waits).
    fn due(&mut self, ready: bool) -> Option<Work> {
        (!ready && !self.items.is_empty()).then(|| Work::Batch(self.take()))
    }

    /// `item` after what waits, as one piece of work.
    fn with(&mut self, item: Work) -> Work {
        if self.items.is_empty() {
            return item;
        }
        let mut items = self.take();
        items.push(item);
        Work::Batch(items)
    }

    fn take(&mut self) -> Vec<Work> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }
}

/// An offer whose pages, together, are not a valid manifest.
fn bad_offer(e: ManifestError) -> TransferError {
    TransferError::BadMessage {
        peer: Role::Sender,
        source: e.into(),
    }
}

fn decode(buf: &[u8]) -> Result<Message<'_>, TransferError> {
    Message::decode_all(buf).map_err(|source| TransferError::BadMessage {
        peer: Role::Sender,
        source,
    })
}

/// Work for the writer thread, in stream order.
enum Work {
    /// Chunk data is `buf[start..]`, `len` plaintext bytes once decoded; the
    /// buffer goes back to the pool.
    Chunk {
        header: ChunkHeader,
        buf: Vec<u8>,
        start: usize,
        len: usize,
    },
    /// A chunk of `len` zeros: a hole to leave.
    Zeros { header: ChunkHeader, len: usize },
    /// File `file`, the current one, is complete; verify it against `hash`.
    FileEnd { file: u32, hash: [u8; 32] },
    /// The sender gave up on file `file`, the current one: `missing`
    /// bytes of it will not come.
    FileFailed {
        file: u32,
        missing: u64,
        reason: String,
    },
    /// Every file is complete; check the root and finish the folders.
    Complete { merkle_root: [u8; 32] },
    /// A chunk of the held-back file asked for again, as for `Chunk`.
    Refetched {
        header: ChunkHeader,
        buf: Vec<u8>,
        start: usize,
        len: usize,
    },
    /// Several of the above, in order (small files, gathered by `stream`).
    Batch(Vec<Work>),
}

struct OpenPartial {
    /// Shared with the workers writing its chunks.
    file: Arc<File>,
    /// The folder it is in, and its name there.
    folder: Folder,
    name: String,
    /// Its path, for messages.
    partial: PathBuf,
    hasher: FileHasher,
}

/// A verified file waiting for its batch to become durable.
struct Verified {
    index: u32,
    folder: Folder,
    /// Partial and final names in `folder`.
    partial: String,
    name: String,
}

/// Data written since the last checkpoint is synced and recorded once it
/// reaches this much (so an interruption costs at most this plus what was in
/// flight).
const CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;

/// Owns the files on disk; runs on a blocking thread.
struct FileWriter {
    manifest: Arc<Manifest>,
    options: ReceiveOptions,
    out: OutputDir,
    /// The folder of the file being written, kept open for the next file.
    folder: Option<(String, Folder)>,
    /// Folders of the manifest this transfer made: only these get the
    /// sender's mode and time.
    made: HashSet<u32>,
    counters: Arc<Counters>,
    /// Where this run starts.
    point: ResumePoint,
    /// The durable prefix of file `point.files_done`: its length and hash state.
    resumed: Option<(u64, FileHasher)>,
    /// The check of that prefix against the disk, when it was not read
    /// before accepting.
    check: Option<PrefixCheck>,
    current: Option<OpenPartial>,
    index: usize,
    merkle: MerkleBuilder,
    /// Checks and writes small chunks (and holes, and chunks asked for
    /// again) here.
    checker: ChunkChecker,
    /// Check and write big chunks on the other cores (started by `run`).
    workers: Option<ChunkWorkers>,
    batch: Vec<Verified>,
    batch_bytes: u64,
    batch_folders: usize,
    log: Option<CheckpointLog>,
    /// Facts not yet in the checkpoint, in stream order.
    records: Vec<Record>,
    unsynced: u64,
    ours: OurFiles,
    /// Files the sender gave up on.
    failed: Vec<FailedFile>,
    /// The resumed file, held back for chunks to fetch again.
    refetch: Option<Refetch>,
    /// Where to say which (to the stream reader), once.
    refetch_tx: Option<tokio::sync::oneshot::Sender<RefetchRange>>,
}

impl FileWriter {
    fn new(
        manifest: Arc<Manifest>,
        options: ReceiveOptions,
        out: OutputDir,
        plan: ResumePlan,
        log: CheckpointLog,
        made: HashSet<u32>,
        skipped_bytes: u64,
    ) -> Self {
        let mut merkle = MerkleBuilder::new();
        plan.leaves(&manifest)
            .into_iter()
            .for_each(|l| merkle.push(l));
        let point = plan.point;
        let check = (plan.verify_later && point.chunks_done > 0).then(|| PrefixCheck {
            file: point.files_done as usize,
            digests: Arc::new(
                plan.digests[plan
                    .digests
                    .len()
                    .saturating_sub(point.chunks_done as usize)..]
                    .to_vec(),
            ),
            running: None,
            stop: Arc::default(),
        });
        let resumed = plan.hasher.filter(|_| point.chunks_done > 0).map(|h| {
            let size = manifest
                .files
                .get(point.files_done as usize)
                .map_or(0, |f| f.size);
            let len = point
                .chunks_done
                .saturating_mul(u64::from(manifest.chunk_size))
                .min(size);
            (len, h)
        });
        let counters = Arc::new(Counters::default());
        // Skipped files count as here from the start, as on the sender.
        counters
            .bytes
            .store(plan.bytes + skipped_bytes, Ordering::Relaxed);
        counters
            .files
            .store(point.files_done as usize, Ordering::Relaxed);
        FileWriter {
            manifest,
            options,
            out,
            folder: None,
            made,
            counters,
            point,
            resumed,
            check,
            current: None,
            index: point.files_done as usize,
            merkle,
            checker: ChunkChecker::default(),
            workers: None,
            batch: Vec::new(),
            batch_bytes: 0,
            batch_folders: 0,
            log: Some(log),
            records: Vec::new(),
            unsynced: 0,
            ours: plan.ours,
            failed: Vec::new(),
            refetch: None,
            refetch_tx: None,
        }
    }

    /// Write everything; on success the checkpoint (for the caller to
    /// remove once the sender knows) and the files the sender gave up on.
    fn run(
        mut self,
        mut work: mpsc::Receiver<Work>,
        pool: &std_mpsc::Sender<Vec<u8>>,
    ) -> Result<(Option<CheckpointLog>, Vec<FailedFile>), TransferError> {
        self.workers = ChunkWorkers::start(pool);
        let result = self.write_all(&mut work, pool);
        // Anything but a completed transfer (an error here, or the stream
        // ending early because the network or the sender failed):
        // Files that verified are kept and put in place; the one in
        // progress stays as a partial file (deleted if it failed to
        // verify), and what is durable is recorded for the next run.
        if !matches!(result, Ok(true)) {
            // Chunks the workers finished before one that failed count.
            let _ = self.settle();
            let _ = self.checkpoint();
        }
        // Nothing is written once the writer has returned.
        self.workers = None;
        // Completed: the checkpoint, for the caller to remove once the
        // sender knows.
        let failed = std::mem::take(&mut self.failed);
        result.map(|completed| (if completed { self.log.take() } else { None }, failed))
    }

    /// `Ok(true)` once the transfer completed, `Ok(false)` if the stream
    /// ended before that (the caller has the reason).
    fn write_all(
        &mut self,
        work: &mut mpsc::Receiver<Work>,
        pool: &std_mpsc::Sender<Vec<u8>>,
    ) -> Result<bool, TransferError> {
        loop {
            let item = match work.try_recv() {
                Ok(item) => item,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Nothing more to do for now: count what the workers
                    // hold before waiting (the sender may be waiting for
                    // those bytes to be acknowledged).
                    self.settle()?;
                    match work.blocking_recv() {
                        Some(item) => item,
                        None => return Ok(false),
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(false),
            };
            if let Some(done) = self.handle(item, pool)? {
                return Ok(done);
            }
        }
    }

    /// One piece of work; `Some(done)` ends the writer (with whether all
    /// went through), `None` goes on.
    fn handle(
        &mut self,
        item: Work,
        pool: &std_mpsc::Sender<Vec<u8>>,
    ) -> Result<Option<bool>, TransferError> {
        match item {
            Work::Batch(items) => {
                for item in items {
                    if let Some(done) = self.handle(item, pool)? {
                        return Ok(Some(done));
                    }
                }
            }
            Work::Chunk {
                header,
                buf,
                start,
                len,
            } => {
                self.reach(header.file as usize);
                self.take_chunk(header, buf, start, len, pool)?;
            }
            Work::Zeros { header, len } => {
                self.reach(header.file as usize);
                self.take_hole(header, len)?;
            }
            Work::FileEnd { file, hash } => {
                self.settle()?;
                self.reach(file as usize);
                self.open()?;
                self.finish_file(&hash)?;
            }
            Work::FileFailed {
                file,
                missing,
                reason,
            } => {
                self.settle()?;
                self.reach(file as usize);
                self.drop_failed(missing, reason);
            }
            Work::Complete { merkle_root } => {
                self.settle()?;
                self.reach(self.manifest.files.len());
                self.check_root(&merkle_root)?;
                if self.refetch.is_none() {
                    self.finish_folders()?;
                    return Ok(Some(true));
                }
                if !self.ask_refetch() {
                    return Ok(Some(false));
                }
            }
            Work::Refetched {
                header,
                buf,
                start,
                len,
            } => {
                self.write_refetched(&header, &buf[start..], len)?;
                let _ = pool.send(buf);
                if self.refetch.is_none() {
                    return Ok(Some(true));
                }
            }
        }
        Ok(None)
    }

    /// Chunk `header` of the current file (its data `buf[start..]` as
    /// sent, `len` bytes once decoded): a big one goes to a worker, a small
    /// one is checked and written here once those before it are done.
    fn take_chunk(
        &mut self,
        header: ChunkHeader,
        buf: Vec<u8>,
        start: usize,
        len: usize,
        pool: &std_mpsc::Sender<Vec<u8>>,
    ) -> Result<(), TransferError> {
        let chunks = self.chunk_count();
        let chunk_size = self.manifest.chunk_size;
        let file = self.open()?.file.clone();
        if let Some(workers) = self.workers.as_mut().filter(|_| len >= PARALLEL_MIN_BYTES) {
            // One out comes back before another goes.
            let freed = if workers.full() {
                workers.next_done()
            } else {
                None
            };
            workers.submit(ChunkJob {
                header,
                buf,
                start,
                len,
                chunks,
                chunk_size,
                file,
            });
            if let Some(done) = freed {
                self.apply(done)?;
            }
            // Whatever is done already counts at once.
            while let Some(done) = self.workers.as_mut().and_then(|w| w.try_next_done()) {
                self.apply(done)?;
            }
            return Ok(());
        }
        self.settle()?;
        let outcome = self.checker.check_and_write(
            &header,
            &buf[start..],
            len,
            (chunks, chunk_size),
            &file,
            false,
        );
        let _ = pool.send(buf);
        self.apply(ChunkDone {
            header,
            len,
            outcome,
        })
    }

    /// A hole of `len` bytes (all zeros on the sender's disk) in the
    /// current file: checked, and the file extended over it (it stays
    /// sparse, and says how far it got so a resume keeps it).
    fn take_hole(&mut self, header: ChunkHeader, len: usize) -> Result<(), TransferError> {
        // Nothing past the hole may be written before the file grows.
        self.settle()?;
        let chunks = self.chunk_count();
        let chunk_size = self.manifest.chunk_size;
        let file = self.open()?.file.clone();
        let outcome = self.checker.check_and_write(
            &header,
            crate::zeros(len),
            len,
            (chunks, chunk_size),
            &file,
            true,
        );
        self.apply(ChunkDone {
            header,
            len,
            outcome,
        })
    }

    /// How many chunks the current file has.
    fn chunk_count(&self) -> u64 {
        self.manifest
            .chunk_count(self.manifest.files.at(self.index).size)
    }

    /// Take back every chunk the workers hold, in order.
    fn settle(&mut self) -> Result<(), TransferError> {
        while let Some(done) = self.workers.as_mut().and_then(|w| w.next_done()) {
            self.apply(done)?;
        }
        Ok(())
    }

    /// Count a chunk of the current file as done, in stream order: into
    /// its file's hash, the Merkle tree, the records and the progress; or
    /// fail with what went wrong with it.
    fn apply(&mut self, done: ChunkDone) -> Result<(), TransferError> {
        let ChunkDone {
            header,
            len,
            outcome,
        } = done;
        let path = || self.manifest.files.at(header.file as usize).path.to_owned();
        let digest = match outcome {
            ChunkOutcome::Written(digest) => digest,
            ChunkOutcome::Undecompressable => return Err(self.undecompressable(&header, len)),
            ChunkOutcome::LeafMismatch => {
                return Err(TransferError::ChunkIntegrity {
                    path: path(),
                    chunk: header.index,
                })
            }
            ChunkOutcome::Failed(source) => {
                return Err(TransferError::WriteOutput {
                    path: self.open()?.partial.clone(),
                    source,
                })
            }
        };
        self.merkle.push(header.leaf);
        self.open()?.hasher.push(digest);
        self.records.push(Record::Chunk {
            file: header.file,
            chunk: header.index,
            digest,
        });
        self.unsynced += len as u64;
        self.counters.bytes.fetch_add(len as u64, Ordering::Relaxed);
        if self.unsynced >= CHECKPOINT_BYTES {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// The sender gave up on the current file: what arrived of it goes
    /// (nothing of it is placed), its missing bytes count as done.
    fn drop_failed(&mut self, missing: u64, reason: String) {
        // A resumed partial goes too, even if nothing new of it came.
        if self.index == self.point.files_done as usize {
            self.check = None;
            if self.resumed.is_some() {
                let _ = self.open();
            }
        }
        if let Some(open) = self.current.take() {
            drop(open.file);
            let _ = open.folder.remove(&open.name);
        }
        self.counters.bytes.fetch_add(missing, Ordering::Relaxed);
        let entry = &self.manifest.files.at(self.index);
        self.failed.push(FailedFile {
            path: entry.path.to_owned(),
            size: entry.size,
            reason: format!("the sender could not send it: {reason}"),
        });
        self.index += 1;
    }

    /// Move on to file `file`, the one the stream (checked by
    /// [`ReceiveMachine`]) is at: any files between were skipped, and count
    /// as done (the user's own copy stays).
    fn reach(&mut self, file: usize) {
        while self.current.is_none() && self.index < file {
            self.index += 1;
            self.counters.files.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The partial of the file in progress, opened (and its check started)
    /// if it is not yet.
    fn open(&mut self) -> Result<&mut OpenPartial, TransferError> {
        let open = open_partial(
            &mut self.current,
            &mut self.resumed,
            &mut self.folder,
            &self.out,
            self.manifest.files.at(self.index).path,
        )?;
        start_check(
            &mut self.check,
            self.index,
            open,
            &self.manifest,
            &self.counters,
        )?;
        Ok(open)
    }

    /// Make everything written so far durable, record it, then rename the
    /// batched files into place and record that. Records only ever describe
    /// data already durable, and a file is renamed only after its chunks
    /// are recorded, so an interruption at any point leaves a state the next
    /// run can trust.
    fn checkpoint(&mut self) -> Result<(), TransferError> {
        if !self.batch.is_empty() {
            sync_filesystem(&self.out, &self.batch)?;
        }
        if let Some(open) = &self.current {
            open.file
                .sync_data()
                .map_err(|source| TransferError::WriteOutput {
                    path: open.partial.clone(),
                    source,
                })?;
        }
        self.append_records()?;
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.batch_folders = 0;
        self.place(&batch)?;
        self.append_records()?;
        self.unsynced = 0;
        Ok(())
    }

    fn append_records(&mut self) -> Result<(), TransferError> {
        if let Some(log) = &mut self.log {
            log.append(&self.records)
                .map_err(|source| TransferError::WriteOutput {
                    path: self.options.out_dir.clone(),
                    source,
                })?;
        }
        self.records.clear();
        Ok(())
    }

    /// The sender's compressed chunk does not inflate to its length.
    fn undecompressable(&self, header: &ChunkHeader, expected: usize) -> TransferError {
        broke(PeerMisbehaved::Decompression {
            path: self.manifest.files.at(header.file as usize).path.to_owned(),
            index: header.index,
            expected,
        })
    }

    fn write_error(&self, e: std::io::Error) -> TransferError {
        TransferError::WriteOutput {
            path: self.options.out_dir.clone(),
            source: e,
        }
    }

    /// Verify the current file, set its metadata, and queue it for renaming
    /// (or hold it back, if chunks of its earlier part are to be fetched
    /// again).
    fn finish_file(&mut self, expected: &[u8; 32]) -> Result<(), TransferError> {
        let Some(open) = self.current.take() else {
            return Ok(());
        };
        let file = self.index;
        // A resumed partial taken from the records must still hold them.
        let damaged = self
            .check
            .take_if(|c| c.file == file)
            .and_then(|mut check| Some((check.first_damaged()?, check.digests.clone())));
        self.index += 1;
        let actual = open.hasher.finalize();
        if !bool::from(actual.ct_eq(expected)) {
            drop(open.file);
            let _ = open.folder.remove(&open.name);
            return Err(TransferError::Integrity {
                path: self.manifest.files.at(file).path.to_owned(),
            });
        }
        // Its hash, composed from the records, is right: the disk is not.
        if let Some((first, digests)) = damaged {
            self.refetch = Some(Refetch {
                open,
                file,
                digests,
                first,
            });
            return Ok(());
        }
        self.land(open, file)
    }

    /// Give verified file `file` its length, mode and time, and place it
    /// (a big one now, small ones in batches).
    fn land(&mut self, open: OpenPartial, file: usize) -> Result<(), TransferError> {
        let entry = self.manifest.files.at(file).to_entry();
        let write_err = |source| TransferError::WriteOutput {
            path: open.partial.clone(),
            source,
        };
        // The file has its length already: every chunk was written in
        // order or, for a hole, skipped with `set_len` to its end (a
        // resumed partial is cut to its durable prefix first).
        open.file
            .set_permissions(fs::Permissions::from_mode(
                self.options.mode_for(entry.mode),
            ))
            .map_err(write_err)?;
        if let Some(t) = entry.mtime.to_system_time() {
            open.file.set_modified(t).map_err(write_err)?;
        }
        let (_, final_name) = split_parent(&entry.path);
        let verified = Verified {
            index: file as u32,
            folder: open.folder.clone(),
            partial: open.name.clone(),
            name: final_name.to_owned(),
        };
        if entry.size >= BATCH_FILE_LIMIT {
            open.file.sync_all().map_err(write_err)?;
            drop(open.file);
            self.checkpoint()?;
            self.place(&[verified])?;
            self.append_records()?;
        } else {
            // Small files are made durable together, by the next checkpoint.
            drop(open.file);
            let new_folder = self
                .batch
                .last()
                .is_none_or(|v| !v.folder.same_handle(&verified.folder));
            self.batch.push(verified);
            self.batch_bytes += entry.size;
            if new_folder {
                self.batch_folders += 1;
            }
            if self.batch.len() >= BATCH_FILES
                || self.batch_bytes >= BATCH_BYTES
                || self.batch_folders >= BATCH_FOLDERS
            {
                self.checkpoint()?;
            }
        }
        Ok(())
    }

    /// The stream is complete but the held-back file has damaged chunks:
    /// ask for them again. `false` if the stream reader has gone.
    fn ask_refetch(&mut self) -> bool {
        let Some(refetch) = &self.refetch else {
            return true;
        };
        let count = refetch.digests.len() as u64 - refetch.first;
        let size = self.manifest.files.at(refetch.file).size;
        let bytes = self
            .manifest
            .chunks_len(size, refetch.first..refetch.first + count);
        self.counters.refetching.store(bytes, Ordering::Relaxed);
        let range = (refetch.file as u32, refetch.first, count);
        self.refetch_tx
            .take()
            .is_some_and(|tx| tx.send(range).is_ok())
    }

    /// A chunk asked for again: it must be what the checkpoint recorded
    /// (what the sender sent in the earlier run); written in its place.
    /// The last one places the file.
    fn write_refetched(
        &mut self,
        header: &ChunkHeader,
        data: &[u8],
        len: usize,
    ) -> Result<(), TransferError> {
        let Some(refetch) = self.refetch.take() else {
            return Ok(());
        };
        let plain = if header.compressed {
            match self.checker.inflate(data, len) {
                Ok(plain) => plain,
                Err(InflateError::Size) => return Err(self.undecompressable(header, len)),
                Err(InflateError::Start(e)) => return Err(self.write_error(e)),
            }
        } else {
            data
        };
        let size = self.manifest.files.at(refetch.file).size;
        let digest = chunk_digest(
            self.manifest.chunk_count(size),
            self.manifest.chunk_size,
            header.index,
            plain,
        );
        let recorded = refetch.digests.get(header.index as usize);
        if !recorded.is_some_and(|r| bool::from(r.ct_eq(&digest))) {
            // What the sender has now is not what it sent then: from here
            // on, the next run fetches it as new.
            self.records.push(Record::Rewind {
                file: refetch.file as u32,
                chunk: header.index,
            });
            return Err(TransferError::PartialAltered {
                path: self.manifest.files.at(refetch.file).path.to_owned(),
                chunk: header.index,
            });
        }
        let offset = header.index * u64::from(self.manifest.chunk_size);
        refetch
            .open
            .file
            .write_all_at(plain, offset)
            .map_err(|source| TransferError::WriteOutput {
                path: refetch.open.partial.clone(),
                source,
            })?;
        self.counters
            .checked
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        if header.index + 1 < refetch.digests.len() as u64 {
            self.refetch = Some(refetch);
            return Ok(());
        }
        self.land(refetch.open, refetch.file)?;
        self.checkpoint()?;
        self.finish_folders()
    }

    /// Rename durable, verified partials into place and sync their folders.
    fn place(&mut self, files: &[Verified]) -> Result<(), TransferError> {
        let mut folders: Vec<&Folder> = Vec::new();
        for v in files {
            let replace = self.options.overwrite || self.ours.contains(v.index as usize);
            let failed = |source| TransferError::WriteOutput {
                path: v.folder.path().join(&v.name),
                source,
            };
            match v.folder.rename(&v.partial, &v.name, replace) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(TransferError::DestinationExists {
                        path: v.folder.path().join(&v.name),
                    })
                }
                Err(e) => return Err(failed(e)),
            }
            // What identifies the file now that it has its name: if it
            // changes, it is no longer ours to replace.
            let stamp = match v.folder.existing(&v.name).map_err(failed)? {
                Existing::File(stamp) => stamp,
                _ => {
                    return Err(TransferError::UnsafeDestination {
                        path: v.folder.path().join(&v.name),
                    })
                }
            };
            self.records.push(Record::FileDone {
                file: v.index,
                stamp,
            });
            if !folders.iter().any(|f| f.same_handle(&v.folder)) {
                folders.push(&v.folder);
            }
            self.counters.files.fetch_add(1, Ordering::Relaxed);
        }
        for folder in folders {
            folder.sync().map_err(|source| TransferError::WriteOutput {
                path: folder.path().to_path_buf(),
                source,
            })?;
        }
        Ok(())
    }

    /// All files verified: put the last batch in place and check the root.
    fn check_root(&mut self, merkle_root: &[u8; 32]) -> Result<(), TransferError> {
        self.checkpoint()?;
        if !bool::from(self.merkle.root().ct_eq(merkle_root)) {
            return Err(TransferError::MerkleRoot);
        }
        Ok(())
    }

    /// Every file in place: give the folders this transfer made their
    /// modes and times (deepest first, after their contents, so writing
    /// into them does not change the times again). Folders that existed
    /// before are left as they are.
    fn finish_folders(&mut self) -> Result<(), TransferError> {
        self.folder = None;
        let mut dirs: Vec<_> = self
            .manifest
            .dirs
            .iter()
            .enumerate()
            .filter(|(i, _)| self.made.contains(&(*i as u32)))
            .map(|(_, d)| d)
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.path.matches('/').count()));
        for dir in dirs {
            let Some(folder) = self.out.folder(&dir.path, false, &mut |_| {})? else {
                continue;
            };
            folder
                .set_mode_and_time(
                    self.options.mode_for(dir.mode),
                    Timestamp::to_system_time(dir.mtime),
                )
                .map_err(|source| TransferError::WriteOutput {
                    path: folder.path().to_path_buf(),
                    source,
                })?;
        }
        // Everything is in place. The checkpoint goes once the sender has
        // been told (`accept`): killed before that, the next run finds
        // every file recorded as done and finishes at once, instead of
        // finding files it cannot tell from the user's.
        Ok(())
    }
}

/// The partial file for `rel`, created (0600) on first use, or reopened at
/// the end of its durable prefix when this run resumes it. Its folder is
/// reached through handles, and kept open for the next file in it.
fn open_partial<'a>(
    current: &'a mut Option<OpenPartial>,
    resumed: &mut Option<(u64, FileHasher)>,
    folder_cache: &mut Option<(String, Folder)>,
    out: &OutputDir,
    rel: &str,
) -> Result<&'a mut OpenPartial, TransferError> {
    if let Some(open) = current {
        return Ok(open);
    }
    let (dir, name) = split_parent(rel);
    let folder = match folder_cache {
        Some((d, f)) if d == dir => f.clone(),
        _ => {
            let f = out.folder(dir, true, &mut |_| {})?.ok_or_else(|| {
                TransferError::UnsafeDestination {
                    path: out.path().join(dir),
                }
            })?;
            *folder_cache = Some((dir.to_owned(), f.clone()));
            f
        }
    };
    let name = format!("{name}{PARTIAL_SUFFIX}");
    let partial = folder.path().join(&name);
    let failed = |source| TransferError::WriteOutput {
        path: partial.clone(),
        source,
    };
    let (file, hasher) = match resumed.take() {
        Some((len, hasher)) => {
            let file = folder.open_regular(&name, true).map_err(failed)?;
            // Anything past the durable prefix was never recorded.
            file.set_len(len).map_err(failed)?;
            (file, hasher)
        }
        // A stale partial (or a symlink planted under its name) is removed;
        // the new one is made exclusively, never through a link.
        None => (
            folder.create_private(&name).map_err(failed)?,
            FileHasher::new(),
        ),
    };
    Ok(current.insert(OpenPartial {
        file: Arc::new(file),
        folder,
        name,
        partial,
        hasher,
    }))
}

/// Start checking the resumed partial against its records once it is
/// open (file `index` is the one in progress), if that is still to do.
fn start_check(
    check: &mut Option<PrefixCheck>,
    index: usize,
    open: &OpenPartial,
    manifest: &Arc<Manifest>,
    counters: &Arc<Counters>,
) -> Result<(), TransferError> {
    let Some(check) = check
        .as_mut()
        .filter(|c| c.file == index && c.running.is_none())
    else {
        return Ok(());
    };
    let partial = open
        .folder
        .open_regular(&open.name, false)
        .map_err(|source| TransferError::WriteOutput {
            path: open.partial.clone(),
            source,
        })?;
    check.start(partial, manifest.clone(), counters.clone());
    Ok(())
}

/// Flush everything written to the filesystem holding the output folder
/// with one `syncfs`; elsewhere than Linux, fsync each file.
fn sync_filesystem(out: &OutputDir, files: &[Verified]) -> Result<(), TransferError> {
    let failed = |path: PathBuf, source| TransferError::WriteOutput { path, source };
    #[cfg(target_os = "linux")]
    {
        let _ = files;
        rustix::fs::syncfs(out.root().fd()).map_err(|e| failed(out.path().to_path_buf(), e.into()))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = out;
        for v in files {
            v.folder
                .open_regular(&v.partial, false)
                .and_then(|f| f.sync_all())
                .map_err(|e| failed(v.folder.path().join(&v.partial), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_chunk() -> Work {
        Work::Chunk {
            header: ChunkHeader {
                file: 0,
                index: 0,
                compressed: false,
                leaf: [0; 32],
            },
            buf: Vec::with_capacity(8 * 1024),
            start: 0,
            len: 0,
        }
    }

    #[test]
    fn a_batch_gathers_small_work_within_its_bounds_and_lets_nothing_wait_idle() {
        let mut batch = Batch::default();
        // Nothing gathered: nothing due.
        assert!(batch.due(false).is_none());
        for _ in 0..WORK_BATCH_ITEMS {
            assert!(batch.takes(&small_chunk()));
            batch.push(small_chunk());
        }
        // Full: the next goes with it.
        assert!(!batch.takes(&small_chunk()));
        // The end of the stream and large chunks never wait.
        let mut fresh = Batch::default();
        assert!(!fresh.takes(&Work::Complete {
            merkle_root: [0; 32]
        }));
        let large = Work::Chunk {
            header: ChunkHeader {
                file: 0,
                index: 0,
                compressed: false,
                leaf: [0; 32],
            },
            buf: Vec::with_capacity(1 << 20),
            start: 0,
            len: 0,
        };
        assert!(!fresh.takes(&large));
        fresh.push(small_chunk());
        // With the next frame here it may wait; without, it is due.
        assert!(fresh.due(true).is_none());
        assert!(matches!(fresh.due(false), Some(Work::Batch(items)) if items.len() == 1));
        // `with` puts what waits first.
        batch.push(small_chunk());
        match batch.with(Work::FileEnd {
            file: 0,
            hash: [0; 32],
        }) {
            Work::Batch(items) => {
                assert_eq!(items.len(), WORK_BATCH_ITEMS + 2);
                assert!(matches!(items.last(), Some(Work::FileEnd { .. })));
            }
            _ => panic!("not a batch"),
        }
        assert!(matches!(
            batch.with(Work::FileEnd {
                file: 0,
                hash: [0; 32]
            }),
            Work::FileEnd { .. }
        ));
    }
}
