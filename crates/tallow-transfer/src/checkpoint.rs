//! The receiver's resume checkpoint: which chunks are durable on disk, with
//! their digests, and which files are finished.
//!
//! One file per transfer, `.tallow-<identity>.checkpoint` in the output
//! folder, named by the manifest's identity, so a new `tallow send` of the
//! same unchanged files (with a new code) finds it. Layout:
//!
//! ```text
//! header  "TALLOWCK" | version 3 | identity [32] | manifest length u32 | manifest | check [8]
//! record  kind u8 | file u32 | chunk u64 | hash [32] | check [8]
//!   kind 1 chunk:       file, chunk index, the chunk's digest (its BLAKE3
//!                       chaining value: its Merkle leaf and the file's hash
//!                       follow from the digests without reading the data)
//!   kind 2 file done:   file, inode, then size u64 | ctime s i64 | ctime ns u32 | 0 [12]
//!   kind 3 folder made: folder index (in `file`), zeros
//!   kind 4 rewind:      file, first chunk no longer there (its partial was
//!                       changed on disk), zeros
//! ```
//!
//! `check` is the first 8 bytes of BLAKE3 keyed with a key derived from the
//! user's own [`LocalKey`] (a secret kept 0600 in the user's data folder)
//! and the identity, over the bytes before it. A torn or corrupt record (or
//! header) is detected; reading stops there and what follows is fetched
//! again. And a sender cannot forge a checkpoint: the identity is public
//! (it is a hash of the offer), the local key is not, so a file a peer
//! managed to place under a checkpoint's name (on a case-insensitive disk,
//! say) is just ignored. The header is written to a new private (0600) file
//! created with `O_EXCL | O_NOFOLLOW` and renamed into place; records are
//! appended only after the data they describe has been made durable, and the
//! log is synced after each batch of records. A resume goes on with the same
//! file ([`CheckpointLog::reopen`]: a torn record at its end is cut off
//! first), so a million files' records are never written twice. A
//! file-done record holds what identifies the file we put in place, so a
//! file the user changed or replaced afterwards is theirs again (and needs
//! `--overwrite`).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::placement::{FileStamp, OutputDir};
use tallow_protocol::manifest::Manifest;
use tallow_protocol::wire::{Decode, DecodeError, Encode, WireReader, WireWrite};

/// Bytes of a record before its check: kind, file, chunk, 32 bytes.
const BODY_LEN: usize = 1 + 4 + 8 + 32;
const MAGIC: &[u8; 8] = b"TALLOWCK";
/// Version 3: chunk records hold digests (version 2 held leaves; its
/// checkpoints are not read, and those transfers start over).
const VERSION: u8 = 3;
/// Longest manifest a checkpoint may hold: the largest offer's entries,
/// its counts and chunk size, and what was left out (64 names at most).
const MAX_STORED_MANIFEST_LEN: usize = tallow_protocol::limits::MAX_OFFER_BYTES as usize
    + 12
    + 12
    + tallow_protocol::limits::MAX_LEFT_OUT_NAMES * (2 + tallow_protocol::limits::MAX_PATH_LEN);
const CHECK_LEN: usize = 8;
/// Bytes of one record.
pub const RECORD_LEN: usize = BODY_LEN + CHECK_LEN;
const KIND_CHUNK: u8 = 1;
const KIND_FILE_DONE: u8 = 2;
const KIND_FOLDER_MADE: u8 = 3;
const KIND_REWIND: u8 = 4;
/// Bytes of the fixed header before the manifest.
const HEADER_LEN: usize = 8 + 1 + 32 + 4;
/// File-name prefix and suffix of checkpoints.
const PREFIX: &str = ".tallow-";
const SUFFIX: &str = ".checkpoint";

/// One fact the log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Chunk `chunk` of file `file` is durable; `digest` is its
    /// [`chunk_digest`](tallow_crypto::file_hash::chunk_digest).
    Chunk {
        /// Index into the manifest's files.
        file: u32,
        /// Chunk index.
        chunk: u64,
        /// Digest of the chunk's plaintext.
        digest: [u8; 32],
    },
    /// File `file` is verified and in place under its final name, as `stamp`.
    FileDone {
        /// Index into the manifest's files.
        file: u32,
        /// What identified the file right after it took its name.
        stamp: FileStamp,
    },
    /// This transfer made folder `dir` (it did not exist before).
    FolderMade {
        /// Index into the manifest's folders.
        dir: u32,
    },
    /// The partial of file `file` no longer holds what was recorded from
    /// chunk `chunk` on (it was changed on disk): those chunks are not
    /// there.
    Rewind {
        /// Index into the manifest's files.
        file: u32,
        /// The first chunk that is not there.
        chunk: u64,
    },
}

impl Record {
    /// The record with its check under `key`.
    fn seal(&self, key: &[u8; 32]) -> [u8; RECORD_LEN] {
        let body = self.to_bytes();
        let mut out = [0u8; RECORD_LEN];
        out[..BODY_LEN].copy_from_slice(&body);
        out[BODY_LEN..].copy_from_slice(&check(key, &body));
        out
    }

    /// The record, if its check under `key` holds and it is one.
    fn open(bytes: &[u8; RECORD_LEN], key: &[u8; 32]) -> Option<Record> {
        let (body, stored) = bytes.split_at(BODY_LEN);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&check(key, body)[..], stored)) {
            return None;
        }
        Record::decode_all(body).ok()
    }
}

/// Every record has the same shape: kind, a u32, a u64 and 32 bytes.
impl Encode for Record {
    fn encode(&self, out: &mut Vec<u8>) {
        let (kind, file, chunk, hash) = match *self {
            Record::Chunk {
                file,
                chunk,
                digest,
            } => (KIND_CHUNK, file, chunk, digest),
            Record::FileDone { file, stamp } => {
                let mut hash = [0u8; 32];
                hash[..8].copy_from_slice(&stamp.size.to_be_bytes());
                hash[8..16].copy_from_slice(&stamp.ctime_secs.to_be_bytes());
                hash[16..20].copy_from_slice(&stamp.ctime_nanos.to_be_bytes());
                (KIND_FILE_DONE, file, stamp.ino, hash)
            }
            Record::FolderMade { dir } => (KIND_FOLDER_MADE, dir, 0, [0; 32]),
            Record::Rewind { file, chunk } => (KIND_REWIND, file, chunk, [0; 32]),
        };
        out.put_u8(kind);
        out.put_u32(file);
        out.put_u64(chunk);
        out.put_bytes(&hash);
    }
}

impl Decode<'_> for Record {
    type Error = DecodeError;

    fn decode(r: &mut WireReader<'_>) -> Result<Self, DecodeError> {
        let kind = r.u8("record kind")?;
        let file = r.u32("record file")?;
        let chunk = r.u64("record chunk")?;
        let mut hash = WireReader::new(r.bytes(32, "record hash")?);
        match kind {
            KIND_CHUNK => Ok(Record::Chunk {
                file,
                chunk,
                digest: hash.array("chunk digest")?,
            }),
            KIND_FILE_DONE => Ok(Record::FileDone {
                file,
                stamp: FileStamp {
                    ino: chunk,
                    size: hash.u64("file size")?,
                    ctime_secs: hash.u64("change time")? as i64,
                    ctime_nanos: hash.u32("change time")?,
                },
            }),
            KIND_FOLDER_MADE => Ok(Record::FolderMade { dir: file }),
            KIND_REWIND => Ok(Record::Rewind { file, chunk }),
            _ => Err(DecodeError::Invalid("record kind")),
        }
    }
}

fn check(key: &[u8; 32], bytes: &[u8]) -> [u8; CHECK_LEN] {
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(&blake3::keyed_hash(key, bytes).as_bytes()[..CHECK_LEN]);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A secret of the local user's that authenticates checkpoints, so that no
/// peer can forge one. Kept in a 0600 file in the user's data folder.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct LocalKey([u8; 32]);

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalKey(..)")
    }
}

impl LocalKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> LocalKey {
        LocalKey(bytes)
    }

    /// Read the key at `path`, or make a new one there (folder 0700, file
    /// 0600, created exclusively, never through a symlink).
    pub fn load_or_create(path: &Path) -> std::io::Result<LocalKey> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let nofollow = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
        let read = || -> std::io::Result<LocalKey> {
            let mut file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(nofollow | rustix::fs::OFlags::NONBLOCK.bits() as i32)
                .open(path)?;
            let mut key = [0u8; 32];
            let mut extra = [0u8; 1];
            if !file.metadata()?.is_file()
                || file.read_exact(&mut key).is_err()
                || file.read(&mut extra)? != 0
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a 32-byte key file", path.display()),
                ));
            }
            Ok(LocalKey(key))
        };
        match read() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        let mut key = LocalKey([0u8; 32]);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key.0);
        // Written whole under a private name, then linked into place: a
        // link fails if the name exists, so a reader never sees a key file
        // half written (several receivers started at once on a new account
        // would otherwise read it empty and lose their resume state).
        let mut tag = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut tag);
        let tmp = path.with_extension(format!("new-{}", u64::from_le_bytes(tag)));
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(crate::placement::PRIVATE_FILE_MODE)
                .custom_flags(nofollow)
                .open(&tmp)?;
            file.write_all(&key.0)?;
            file.sync_all()?;
            fs::hard_link(&tmp, path)
        })();
        let _ = fs::remove_file(&tmp);
        match written {
            Ok(()) => {
                if let Some(parent) = path.parent() {
                    let _ = fs::File::open(parent).and_then(|d| d.sync_all());
                }
                Ok(key)
            }
            // Another tallow made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(),
            Err(e) => Err(e),
        }
    }

    /// The key that checks one checkpoint's bytes.
    fn for_identity(&self, identity: &[u8; 32]) -> [u8; 32] {
        let mut material = [0u8; 64];
        material[..32].copy_from_slice(&self.0);
        material[32..].copy_from_slice(identity);
        let key = blake3::derive_key("tallow 2026-12 checkpoint record key v2", &material);
        material.zeroize();
        key
    }
}

/// The file name of the checkpoint of a transfer with this identity.
pub fn checkpoint_name(identity: &[u8; 32]) -> String {
    format!("{PREFIX}{}{SUFFIX}", hex(&identity[..16]))
}

/// Where the checkpoint of a transfer with this identity lives.
pub fn checkpoint_path(out_dir: &Path, identity: &[u8; 32]) -> PathBuf {
    out_dir.join(checkpoint_name(identity))
}

/// An open checkpoint, appended to as the transfer goes.
pub struct CheckpointLog {
    out: OutputDir,
    name: String,
    file: File,
    key: [u8; 32],
}

impl Drop for CheckpointLog {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl CheckpointLog {
    /// Write a new checkpoint for `manifest`, whose identity is `identity`
    /// (the caller has it: hashing a million entries again is not free),
    /// holding `records` (atomically: new private file, sync, rename, sync
    /// the folder) and open it for appending.
    pub fn create(
        out: &OutputDir,
        manifest: &Manifest,
        identity: &[u8; 32],
        records: impl IntoIterator<Item = Record>,
        local: &LocalKey,
    ) -> std::io::Result<Self> {
        let identity = *identity;
        let key = local.for_identity(&identity);
        let name = checkpoint_name(&identity);
        let tmp = format!("{name}-new");
        // Written in pieces (a manifest of a million files takes tens of
        // MiB), its length counted first, the check hashed as it goes.
        let mut len = 0usize;
        manifest.encode_in_parts(&mut |part| len += part.len());
        let len = u32::try_from(len).map_err(std::io::Error::other)?;
        let mut header = Vec::new();
        header.put_bytes(MAGIC);
        header.put_u8(VERSION);
        header.put_bytes(&identity);
        header.put_u32(len);
        let mut checked = blake3::Hasher::new_keyed(&key);
        checked.update(&header);
        let root = out.root();
        {
            let mut f = std::io::BufWriter::new(root.create_private(&tmp)?);
            f.write_all(&header)?;
            let mut written = Ok(());
            manifest.encode_in_parts(&mut |part| {
                checked.update(part);
                if written.is_ok() {
                    written = f.write_all(part);
                }
            });
            written?;
            f.write_all(&checked.finalize().as_bytes()[..CHECK_LEN])?;
            for r in records {
                f.write_all(&r.seal(&key))?;
            }
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        root.rename(&tmp, &name, true)?;
        root.sync()?;
        let file = root.open_regular(&name, true)?;
        use std::io::{Seek, SeekFrom};
        let mut file = file;
        file.seek(SeekFrom::End(0))?;
        Ok(CheckpointLog {
            out: out.clone(),
            name,
            file,
            key,
        })
    }

    /// Go on with the checkpoint of the transfer `identity` names, whose
    /// first `len` bytes were read back intact ([`load_progress`]): what
    /// follows (a torn record) is cut off, and records are appended after.
    pub fn reopen(
        out: &OutputDir,
        identity: &[u8; 32],
        len: u64,
        local: &LocalKey,
    ) -> std::io::Result<Self> {
        use std::io::{Seek, SeekFrom};
        let name = checkpoint_name(identity);
        let mut file = out.root().open_regular(&name, true)?;
        file.set_len(len)?;
        file.seek(SeekFrom::End(0))?;
        file.sync_data()?;
        Ok(CheckpointLog {
            out: out.clone(),
            name,
            file,
            key: local.for_identity(identity),
        })
    }

    /// Append records and make them durable. Call only once the data they
    /// describe is durable.
    pub fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(records.len() * RECORD_LEN);
        for r in records {
            bytes.extend_from_slice(&r.seal(&self.key));
        }
        self.file.write_all(&bytes)?;
        self.file.sync_data()
    }

    /// The transfer is complete: the checkpoint has no more use.
    pub fn remove(self) -> std::io::Result<()> {
        self.out.root().remove(&self.name)
    }
}

/// A checkpoint read back from disk.
#[derive(Debug)]
pub struct Loaded {
    /// The manifest it was written for.
    pub manifest: Manifest,
    /// Every intact record, in order (reading stopped at the first torn or
    /// corrupt one).
    pub records: Vec<Record>,
    /// When it was last written.
    pub modified: SystemTime,
    /// The file (for messages and removal; removing a path never follows a
    /// link).
    pub path: PathBuf,
}

/// Read the checkpoint called `name` in the output folder. `None` if it is
/// missing, not a regular file, not made with this user's key, or its header
/// is torn, corrupt or of another version: the transfer then starts over.
/// Reads at most what the manifest's chunks and files can need, whatever
/// the file's size.
pub fn load(out: &OutputDir, name: &str, local: &LocalKey) -> Option<Loaded> {
    let mut file = out.root().open_regular(name, false).ok()?;
    let modified = file.metadata().and_then(|m| m.modified()).ok()?;
    let head = read_head(&mut file, local, None)?;
    let manifest = head.manifest?;
    let mut records = Vec::new();
    read_records(file, &head.key, record_bound(&manifest), &mut |r| {
        records.push(r)
    });
    Some(Loaded {
        manifest,
        records,
        modified,
        path: out.path().join(name),
    })
}

/// The progress the checkpoint called `name` records for `manifest`, whose
/// identity it must have (`None` as for [`load`]), and how many of its
/// bytes are intact (what follows is a torn or corrupt tail). For the
/// transfer's own checkpoint: the stored manifest is only checked, not
/// decoded (the caller holds it), and the records are folded as they are
/// read, so a resume of a million files holds no second copy of either.
pub fn load_progress(
    out: &OutputDir,
    name: &str,
    local: &LocalKey,
    manifest: &Manifest,
    identity: &[u8; 32],
) -> Option<(RecordedProgress, u64)> {
    let mut file = out.root().open_regular(name, false).ok()?;
    let head = read_head(&mut file, local, Some(identity))?;
    let mut progress = RecordedProgress::new(manifest);
    let records = read_records(file, &head.key, record_bound(manifest), &mut |r| {
        progress.add(manifest, &r)
    });
    Some((progress, head.len + records * RECORD_LEN as u64))
}

/// Parse checkpoint bytes: the manifest and every intact record before the
/// first torn or corrupt one. `None` if the header does not check out
/// under `local`.
pub fn parse(mut bytes: &[u8], local: &LocalKey) -> Option<(Manifest, Vec<Record>)> {
    let head = read_head(&mut bytes, local, None)?;
    let mut records = Vec::new();
    read_records(bytes, &head.key, u64::MAX, &mut |r| records.push(r));
    Some((head.manifest?, records))
}

/// A checkpoint's header, checked.
struct Head {
    /// The key its records are checked with.
    key: [u8; 32],
    /// Its bytes (the records follow).
    len: u64,
    /// The manifest, when it was decoded.
    manifest: Option<Manifest>,
}

/// Read and check the header and manifest under `local`. With `expect`,
/// the identity must be that one and the manifest is only checked, read
/// in pieces and not kept; without, it is decoded and must have the
/// identity.
fn read_head(r: &mut impl Read, local: &LocalKey, expect: Option<&[u8; 32]>) -> Option<Head> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header).ok()?;
    let mut h = WireReader::new(&header);
    if h.bytes(8, "magic").ok()? != MAGIC || h.u8("version").ok()? != VERSION {
        return None;
    }
    let identity: [u8; 32] = h.array("identity").ok()?;
    if expect.is_some_and(|e| *e != identity) {
        return None;
    }
    let len = h.u32("manifest length").ok()? as usize;
    if len > MAX_STORED_MANIFEST_LEN {
        return None;
    }
    let key = local.for_identity(&identity);
    let mut checked = blake3::Hasher::new_keyed(&key);
    checked.update(&header);
    let mut kept = Vec::new();
    let mut piece = vec![0u8; len.min(64 * 1024)];
    let mut left = len;
    while left > 0 {
        let n = left.min(piece.len());
        r.read_exact(&mut piece[..n]).ok()?;
        checked.update(&piece[..n]);
        if expect.is_none() {
            kept.extend_from_slice(&piece[..n]);
        }
        left -= n;
    }
    let mut stored = [0u8; CHECK_LEN];
    r.read_exact(&mut stored).ok()?;
    let ok: bool =
        subtle::ConstantTimeEq::ct_eq(&checked.finalize().as_bytes()[..CHECK_LEN], &stored[..])
            .into();
    if !ok {
        return None;
    }
    let manifest = match expect {
        Some(_) => None,
        None => {
            let m = Manifest::decode_all(&kept).ok()?;
            drop(kept);
            (m.identity() == identity).then_some(m)
        }
    };
    if expect.is_none() && manifest.is_none() {
        return None;
    }
    Some(Head {
        key,
        len: (HEADER_LEN + len + CHECK_LEN) as u64,
        manifest,
    })
}

/// Most records a checkpoint for `manifest` can need: each chunk and file
/// recorded about twice at most (a resumed run re-records what it
/// re-fetches), plus one per folder.
fn record_bound(manifest: &Manifest) -> u64 {
    let chunks: u64 = manifest
        .files
        .sizes()
        .iter()
        .map(|&size| manifest.chunk_count(size) + 1)
        .sum();
    chunks
        .saturating_add(manifest.dirs.len() as u64)
        .saturating_add(16)
        .saturating_mul(2)
}

/// Hand `each` the records read from `r`, up to `most` and up to the first
/// torn or corrupt one; returns how many.
fn read_records(r: impl Read, key: &[u8; 32], most: u64, each: &mut dyn FnMut(Record)) -> u64 {
    let mut r = std::io::BufReader::with_capacity(
        64 * 1024,
        r.take(most.saturating_mul(RECORD_LEN as u64)),
    );
    let mut bytes = [0u8; RECORD_LEN];
    let mut count = 0;
    while r.read_exact(&mut bytes).is_ok() {
        match Record::open(&bytes, key) {
            Some(record) => each(record),
            None => break,
        }
        count += 1;
    }
    count
}

/// The names of the checkpoints (anyone's) in the output folder.
pub fn names(out: &OutputDir) -> Vec<String> {
    let Ok(entries) = fs::read_dir(out.path()) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            (name.starts_with(PREFIX) && name.ends_with(SUFFIX)).then_some(name)
        })
        .collect()
}

/// Every checkpoint of this user's in the output folder.
pub fn list(out: &OutputDir, local: &LocalKey) -> Vec<Loaded> {
    let mut found: Vec<Loaded> = names(out)
        .into_iter()
        .filter_map(|name| load(out, &name, local))
        .collect();
    found.sort_by_key(|l| l.modified);
    found
}

/// Progress a checkpoint's records describe, after checking their order:
/// for each file, the digests of its chunks recorded in sequence from 0, and
/// whether it was finished.
///
/// Sized for millions of files: the digests of all files share one vector
/// (a file's are a run in it; a writer records file after file, so a run
/// only moves if records for two files interleave), and a finished file is
/// kept as a keyed 64-bit hash of what identified it, 8 bytes instead of
/// the 40 of the stamp.
#[derive(Debug)]
pub struct RecordedProgress {
    /// Where each file with recorded chunks has them in `digests`, by file.
    runs: Vec<DigestRun>,
    digests: Vec<[u8; 32]>,
    /// Digests in `digests` no run points at any more.
    unused: usize,
    /// Per file: the hash of its stamp when finished, or 0.
    done: Vec<u64>,
    /// Keys the stamp hashes (for this process only).
    stamp_key: [u8; 32],
    /// Per folder of the manifest: this transfer made it.
    pub folders_made: Vec<bool>,
}

#[derive(Debug, Clone, Copy)]
struct DigestRun {
    file: u32,
    start: usize,
    len: usize,
}

impl RecordedProgress {
    /// Nothing recorded yet, for `manifest`.
    pub fn new(manifest: &Manifest) -> Self {
        let mut stamp_key = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut stamp_key);
        RecordedProgress {
            runs: Vec::new(),
            digests: Vec::new(),
            unused: 0,
            done: vec![0; manifest.files.len()],
            stamp_key,
            folders_made: vec![false; manifest.dirs.len()],
        }
    }

    /// Fold records into per-file progress. Records out of sequence (a gap,
    /// an index past the file) are ignored; a repeat keeps the first digest.
    pub fn from_records(manifest: &Manifest, records: &[Record]) -> Self {
        let mut p = RecordedProgress::new(manifest);
        for r in records {
            p.add(manifest, r);
        }
        p
    }

    /// Fold one more record.
    pub fn add(&mut self, manifest: &Manifest, record: &Record) {
        match *record {
            Record::Chunk {
                file,
                chunk,
                digest,
            } => {
                let Some(entry) = manifest.files.get(file as usize) else {
                    return;
                };
                if chunk == self.digests(file as usize).len() as u64
                    && chunk < manifest.chunk_count(entry.size)
                {
                    self.push_digest(file, digest);
                }
            }
            Record::FileDone { file, stamp } => {
                let f = file as usize;
                if let Some(entry) = manifest.files.get(f) {
                    if self.digests(f).len() as u64 == manifest.chunk_count(entry.size) {
                        self.done[f] = self.stamp_hash(&stamp);
                    }
                }
            }
            Record::Rewind { file, chunk } => {
                let f = file as usize;
                if f < self.done.len() {
                    self.truncate(file, usize::try_from(chunk).unwrap_or(usize::MAX));
                    self.done[f] = 0;
                }
            }
            Record::FolderMade { dir } => {
                if let Some(made) = self.folders_made.get_mut(dir as usize) {
                    *made = true;
                }
            }
        }
    }

    /// The digests of file `index`'s chunks 0, 1, … recorded.
    pub fn digests(&self, index: usize) -> &[[u8; 32]] {
        match self.run(index as u32) {
            Ok(at) if self.runs[at].len > 0 => {
                let run = self.runs[at];
                &self.digests[run.start..run.start + run.len]
            }
            _ => &[],
        }
    }

    /// Whether file `index` was recorded as verified and in place.
    pub fn is_done(&self, index: usize) -> bool {
        self.done.get(index).is_some_and(|&h| h != 0)
    }

    /// Whether file `index` was recorded as verified and in place as
    /// `stamp` (what identifies it now).
    pub fn done_as(&self, index: usize, stamp: &FileStamp) -> bool {
        self.is_done(index) && self.done[index] == self.stamp_hash(stamp)
    }

    /// Plaintext bytes the records cover.
    pub fn bytes(&self, manifest: &Manifest) -> u64 {
        self.runs
            .iter()
            .filter_map(|run| {
                let size = *manifest.files.sizes().get(run.file as usize)?;
                Some(manifest.chunks_len(size, 0..run.len as u64))
            })
            .sum()
    }

    fn stamp_hash(&self, stamp: &FileStamp) -> u64 {
        let mut bytes = [0u8; 28];
        bytes[..8].copy_from_slice(&stamp.ino.to_le_bytes());
        bytes[8..16].copy_from_slice(&stamp.size.to_le_bytes());
        bytes[16..24].copy_from_slice(&stamp.ctime_secs.to_le_bytes());
        bytes[24..].copy_from_slice(&stamp.ctime_nanos.to_le_bytes());
        let hash = blake3::keyed_hash(&self.stamp_key, &bytes);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        // 0 means "not done".
        u64::from_le_bytes(first).max(1)
    }

    /// Where file `file`'s run is in `runs` (or where it would go).
    fn run(&self, file: u32) -> Result<usize, usize> {
        // Files come in order: the last run is the likely one.
        match self.runs.last() {
            Some(last) if last.file == file => Ok(self.runs.len() - 1),
            Some(last) if last.file < file => Err(self.runs.len()),
            _ => self.runs.binary_search_by_key(&file, |r| r.file),
        }
    }

    fn push_digest(&mut self, file: u32, digest: [u8; 32]) {
        let at = match self.run(file) {
            Ok(at) => at,
            Err(at) => {
                self.runs.insert(
                    at,
                    DigestRun {
                        file,
                        start: self.digests.len(),
                        len: 0,
                    },
                );
                at
            }
        };
        let run = self.runs[at];
        if run.len == 0 {
            // Empty (its old place may be past the end by now): start anew.
            self.runs[at].start = self.digests.len();
        } else if run.start + run.len != self.digests.len() {
            // Its run does not end the vector: move it there.
            self.digests
                .extend_from_within(run.start..run.start + run.len);
            self.unused += run.len;
            self.runs[at].start = self.digests.len() - run.len;
        }
        self.digests.push(digest);
        self.runs[at].len += 1;
        if self.unused > 1024 && self.unused > self.digests.len() / 2 {
            self.compact();
        }
    }

    fn truncate(&mut self, file: u32, len: usize) {
        if let Ok(at) = self.run(file) {
            let run = &mut self.runs[at];
            if len < run.len {
                if run.start + run.len == self.digests.len() {
                    self.digests.truncate(run.start + len);
                } else {
                    self.unused += run.len - len;
                }
                run.len = len;
            }
        }
    }

    /// Drop the digests no run uses.
    fn compact(&mut self) {
        let mut digests = Vec::with_capacity(self.digests.len() - self.unused);
        for run in &mut self.runs {
            let start = digests.len();
            digests.extend_from_slice(&self.digests[run.start..run.start + run.len]);
            run.start = start;
        }
        self.digests = digests;
        self.unused = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tallow_protocol::file_list::FileList;
    use tallow_protocol::manifest::{FileEntry, Timestamp};

    fn key() -> LocalKey {
        LocalKey::from_bytes([7; 32])
    }

    /// Receivers started together on a new account (a test suite, a
    /// script) all end up with the one key, none with an error.
    #[test]
    fn receivers_started_at_once_share_one_local_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("data/checkpoint.key");
            let start = std::sync::Barrier::new(8);
            let keys: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            LocalKey::load_or_create(&path)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let first = keys[0].as_ref().unwrap().0;
            for k in &keys {
                assert_eq!(k.as_ref().unwrap().0, first);
            }
            assert_eq!(fs::read(&path).unwrap(), first);
            let left: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
            assert_eq!(left.len(), 1, "no temporary files left behind");
        }
    }

    fn done(file: u32) -> Record {
        Record::FileDone {
            file,
            stamp: FileStamp {
                ino: 99,
                size: 5000,
                ctime_secs: -3,
                ctime_nanos: 12,
            },
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            chunk_size: 4096,
            dirs: vec![],
            files: FileList::from_entries([
                FileEntry {
                    path: "a".into(),
                    size: 5000,
                    mode: 0o644,
                    mtime: Timestamp::default(),
                },
                FileEntry {
                    path: "b".into(),
                    size: 0,
                    mode: 0o644,
                    mtime: Timestamp::default(),
                },
            ])
            .unwrap(),
            left_out: Default::default(),
        }
    }

    fn chunk(file: u32, chunk: u64) -> Record {
        Record::Chunk {
            file,
            chunk,
            digest: chunk_digest(chunk),
        }
    }

    fn chunk_digest(chunk: u64) -> [u8; 32] {
        [chunk as u8 + 1; 32]
    }

    #[test]
    fn records_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::open(dir.path(), false).unwrap();
        let m = manifest();
        let mut log =
            CheckpointLog::create(&out, &m, &m.identity(), [chunk(0, 0)], &key()).unwrap();
        log.append(&[chunk(0, 1), done(0), done(1), Record::FolderMade { dir: 0 }])
            .unwrap();
        let name = checkpoint_name(&m.identity());
        let loaded = load(&out, &name, &key()).unwrap();
        assert_eq!(loaded.manifest, m);
        assert_eq!(
            loaded.records,
            [
                chunk(0, 0),
                chunk(0, 1),
                done(0),
                done(1),
                Record::FolderMade { dir: 0 }
            ]
        );
        let p = RecordedProgress::from_records(&m, &loaded.records);
        let stamp = done_stamp().unwrap();
        assert!(p.done_as(0, &stamp) && p.done_as(1, &stamp));
        let other = FileStamp { ino: 98, ..stamp };
        assert!(p.is_done(0) && !p.done_as(0, &other));
        // The same, folded as read, for the transfer's own manifest.
        let (streamed, len) = load_progress(&out, &name, &key(), &m, &m.identity()).unwrap();
        assert_eq!(len, fs::metadata(dir.path().join(&name)).unwrap().len());
        assert!(streamed.done_as(0, &stamp) && streamed.done_as(1, &stamp));
        assert_eq!(streamed.digests(0), p.digests(0));
        assert_eq!(streamed.folders_made, p.folders_made);
        assert!(load_progress(&out, &name, &key(), &m, &[9; 32]).is_none());
        assert_eq!(p.bytes(&m), 5000);
        assert_eq!(list(&out, &key()).len(), 1);
        // A rewind takes back what it names, and round-trips too.
        log.append(&[Record::Rewind { file: 0, chunk: 1 }]).unwrap();
        let loaded = load(&out, &name, &key()).unwrap();
        assert_eq!(
            loaded.records.last(),
            Some(&Record::Rewind { file: 0, chunk: 1 })
        );
        let p = RecordedProgress::from_records(&m, &loaded.records);
        assert_eq!(p.digests(0), [chunk_digest(0)]);
        assert!(!p.is_done(0) && p.done_as(1, &done_stamp().unwrap()));
        assert_eq!(p.bytes(&m), 4096);
        // Private to the user.
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(&name)).unwrap().permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
        // Another user's key (or a forger without one) gets nothing.
        let other = LocalKey::from_bytes([8; 32]);
        assert!(load(&out, &name, &other).is_none());
        assert!(list(&out, &other).is_empty());
        log.remove().unwrap();
        assert!(list(&out, &key()).is_empty());
    }

    fn done_stamp() -> Option<FileStamp> {
        match done(0) {
            Record::FileDone { stamp, .. } => Some(stamp),
            _ => None,
        }
    }

    #[test]
    fn a_checkpoint_is_never_read_through_a_link_or_past_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::open(dir.path(), false).unwrap();
        let m = manifest();
        CheckpointLog::create(&out, &m, &m.identity(), [chunk(0, 0)], &key()).unwrap();
        let name = checkpoint_name(&m.identity());
        let path = dir.path().join(&name);
        // Gigabytes of trailing garbage: read up to the bound, not all.
        let f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.set_len(1 << 40).unwrap();
        let loaded = load(&out, &name, &key()).unwrap();
        assert_eq!(loaded.records, [chunk(0, 0)]);
        // A symlink under the name is not followed.
        fs::rename(&path, dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), &path).unwrap();
        assert!(load(&out, &name, &key()).is_none());
    }

    #[test]
    fn a_torn_or_flipped_record_ends_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::open(dir.path(), false).unwrap();
        let m = manifest();
        let mut log = CheckpointLog::create(&out, &m, &m.identity(), [], &key()).unwrap();
        log.append(&[chunk(0, 0), chunk(0, 1)]).unwrap();
        let name = checkpoint_name(&m.identity());
        let path = dir.path().join(&name);
        let mut bytes = fs::read(&path).unwrap();
        // Torn: half a record at the end.
        let torn = bytes.len() - RECORD_LEN / 2;
        fs::write(&path, &bytes[..torn]).unwrap();
        assert_eq!(load(&out, &name, &key()).unwrap().records, [chunk(0, 0)]);
        // Flipped: a bit inside the first record.
        let first = bytes.len() - 2 * RECORD_LEN;
        bytes[first + 20] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(load(&out, &name, &key()).unwrap().records.is_empty());
        // A corrupt header: no checkpoint at all.
        bytes[12] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(load(&out, &name, &key()).is_none());
    }

    /// What the records mean, kept the plain way: a vector of digests and
    /// a stamp per file.
    fn plain_fold(
        m: &Manifest,
        records: &[Record],
    ) -> (Vec<Vec<[u8; 32]>>, Vec<Option<FileStamp>>) {
        let n = m.files.len();
        let (mut digests, mut done) = (vec![Vec::new(); n], vec![None; n]);
        for r in records {
            match *r {
                Record::Chunk {
                    file,
                    chunk,
                    digest,
                } => {
                    let f = file as usize;
                    if f < n
                        && chunk == digests[f].len() as u64
                        && chunk < m.chunk_count(m.files.at(f).size)
                    {
                        digests[f].push(digest);
                    }
                }
                Record::FileDone { file, stamp } => {
                    let f = file as usize;
                    if f < n && digests[f].len() as u64 == m.chunk_count(m.files.at(f).size) {
                        done[f] = Some(stamp);
                    }
                }
                Record::Rewind { file, chunk } => {
                    let f = file as usize;
                    if f < n {
                        digests[f].truncate(chunk as usize);
                        done[f] = None;
                    }
                }
                Record::FolderMade { .. } => {}
            }
        }
        (digests, done)
    }

    proptest::proptest! {
        /// Interleaved files, rewinds and repeats: the packed progress says
        /// what the plain fold says (runs moved and compacted on the way).
        #[test]
        fn packed_progress_matches_the_plain_fold(
            ops in proptest::collection::vec((0u8..4, 0u32..5, 0u64..40, 0u8..3), 0..3000)
        ) {
            let m = Manifest {
                chunk_size: 4096,
                dirs: vec![],
                files: FileList::from_entries((0..4).map(|i| FileEntry {
                    path: format!("f{i}"),
                    size: 4096 * [30, 1, 0, 40][i],
                    mode: 0o644,
                    mtime: Timestamp::default(),
                }))
                .unwrap(),
                left_out: Default::default(),
            };
            let stamp = |v: u8| FileStamp { ino: u64::from(v), size: 1, ctime_secs: 2, ctime_nanos: 3 };
            let records: Vec<Record> = ops
                .iter()
                .map(|&(kind, file, chunk, v)| match kind {
                    0 | 1 => Record::Chunk { file, chunk, digest: [v + chunk as u8; 32] },
                    2 => Record::FileDone { file, stamp: stamp(v) },
                    _ => Record::Rewind { file, chunk: chunk / 4 },
                })
                .collect();
            let p = RecordedProgress::from_records(&m, &records);
            let (digests, done) = plain_fold(&m, &records);
            for f in 0..m.files.len() {
                proptest::prop_assert_eq!(p.digests(f), &digests[f][..]);
                proptest::prop_assert_eq!(p.is_done(f), done[f].is_some());
                for v in 0..3 {
                    proptest::prop_assert_eq!(p.done_as(f, &stamp(v)), done[f] == Some(stamp(v)));
                }
            }
            proptest::prop_assert!(p.digests.len() <= 2 * (p.digests.len() - p.unused) + 1100);
        }
    }

    #[test]
    fn records_out_of_sequence_are_ignored() {
        let m = manifest();
        let p = RecordedProgress::from_records(
            &m,
            &[chunk(0, 1), chunk(0, 0), chunk(0, 0), chunk(0, 7), done(0)],
        );
        // Chunk 1 before 0 is a gap; the repeat of 0 is ignored; 7 is past
        // the file; the file is not done with only one of two chunks.
        assert_eq!(p.digests(0).len(), 1);
        assert!(!p.is_done(0) && !p.is_done(1));
    }
}
