//! The receiver's resume checkpoint: which chunks are durable on disk, with
//! their Merkle leaves, and which files are finished.
//!
//! One file per transfer, `.tallow-<identity>.checkpoint` in the output
//! folder, named by the manifest's identity, so a new `tallow send` of the
//! same unchanged files (with a new code) finds it. Layout:
//!
//! ```text
//! header  "TALLOWCK" | version 1 | identity [32] | manifest length u32 | manifest | check [8]
//! record  kind u8 (1 chunk, 2 file done) | file u32 | chunk u64 | hash [32] | check [8]
//! ```
//!
//! `check` is the first 8 bytes of BLAKE3 keyed by the identity over the
//! bytes before it, so a torn or corrupt record (or header) is detected;
//! reading stops there and what follows is fetched again. The header is
//! written to a temporary file and renamed into place; records are appended
//! only after the data they describe has been made durable, and the log is
//! synced after each batch of records. A chunk record's hash is the chunk's
//! Merkle leaf (as the sender computed it and the receiver checked it); a
//! file-done record is written once the file is verified and renamed.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::manifest::Manifest;
use crate::wire::WireReader;

const MAGIC: &[u8; 8] = b"TALLOWCK";
const VERSION: u8 = 1;
const CHECK_LEN: usize = 8;
/// Bytes of one record.
pub const RECORD_LEN: usize = 1 + 4 + 8 + 32 + CHECK_LEN;
const KIND_CHUNK: u8 = 1;
const KIND_FILE_DONE: u8 = 2;
/// File-name prefix and suffix of checkpoints.
const PREFIX: &str = ".tallow-";
const SUFFIX: &str = ".checkpoint";

/// One fact the log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Chunk `chunk` of file `file` is durable; `leaf` is its Merkle leaf.
    Chunk {
        /// Index into the manifest's files.
        file: u32,
        /// Chunk index.
        chunk: u64,
        /// Merkle leaf of the chunk's plaintext.
        leaf: [u8; 32],
    },
    /// File `file` is verified and in place under its final name.
    FileDone {
        /// Index into the manifest's files.
        file: u32,
    },
}

impl Record {
    fn encode(&self, key: &[u8; 32]) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        let (kind, file, chunk, hash) = match *self {
            Record::Chunk { file, chunk, leaf } => (KIND_CHUNK, file, chunk, leaf),
            Record::FileDone { file } => (KIND_FILE_DONE, file, 0, [0; 32]),
        };
        out[0] = kind;
        out[1..5].copy_from_slice(&file.to_be_bytes());
        out[5..13].copy_from_slice(&chunk.to_be_bytes());
        out[13..45].copy_from_slice(&hash);
        let check = check(key, &out[..45]);
        out[45..].copy_from_slice(&check);
        out
    }

    fn decode(bytes: &[u8; RECORD_LEN], key: &[u8; 32]) -> Option<Record> {
        if check(key, &bytes[..45]) != bytes[45..] {
            return None;
        }
        let file = u32::from_be_bytes(bytes[1..5].try_into().ok()?);
        let chunk = u64::from_be_bytes(bytes[5..13].try_into().ok()?);
        match bytes[0] {
            KIND_CHUNK => Some(Record::Chunk {
                file,
                chunk,
                leaf: bytes[13..45].try_into().ok()?,
            }),
            KIND_FILE_DONE => Some(Record::FileDone { file }),
            _ => None,
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

/// Where the checkpoint of a transfer with this identity lives.
pub fn checkpoint_path(out_dir: &Path, identity: &[u8; 32]) -> PathBuf {
    out_dir.join(format!("{PREFIX}{}{SUFFIX}", hex(&identity[..16])))
}

/// An open checkpoint, appended to as the transfer goes.
pub struct CheckpointLog {
    path: PathBuf,
    file: File,
    key: [u8; 32],
}

impl CheckpointLog {
    /// Write a new checkpoint for `manifest` holding `records` (atomically:
    /// temporary file, sync, rename, sync the folder) and open it for
    /// appending.
    pub fn create(
        out_dir: &Path,
        manifest: &Manifest,
        records: &[Record],
    ) -> std::io::Result<Self> {
        let key = manifest.identity();
        let path = checkpoint_path(out_dir, &key);
        let tmp = path.with_extension("checkpoint-new");
        let mut header = Vec::new();
        header.extend_from_slice(MAGIC);
        header.push(VERSION);
        header.extend_from_slice(&key);
        let mut encoded = Vec::new();
        manifest.encode(&mut encoded);
        let len = u32::try_from(encoded.len()).map_err(std::io::Error::other)?;
        header.extend_from_slice(&len.to_be_bytes());
        header.extend_from_slice(&encoded);
        let c = check(&key, &header);
        header.extend_from_slice(&c);
        for r in records {
            header.extend_from_slice(&r.encode(&key));
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&header)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(out_dir)?.sync_all()?;
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(CheckpointLog { path, file, key })
    }

    /// Append records and make them durable. Call only once the data they
    /// describe is durable.
    pub fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(records.len() * RECORD_LEN);
        for r in records {
            bytes.extend_from_slice(&r.encode(&self.key));
        }
        self.file.write_all(&bytes)?;
        self.file.sync_data()
    }

    /// The transfer is complete: the checkpoint has no more use.
    pub fn remove(self) -> std::io::Result<()> {
        drop(self.file);
        fs::remove_file(&self.path)
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
    /// The file.
    pub path: PathBuf,
}

/// Read a checkpoint. `None` if it is missing, or its header is torn,
/// corrupt or of another version: the transfer then starts over.
pub fn load(path: &Path) -> Option<Loaded> {
    let mut file = File::open(path).ok()?;
    let modified = file.metadata().and_then(|m| m.modified()).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let (manifest, records) = parse(&bytes)?;
    Some(Loaded {
        manifest,
        records,
        modified,
        path: path.to_path_buf(),
    })
}

/// Parse checkpoint bytes: the manifest and every intact record before the
/// first torn or corrupt one. `None` if the header does not check out.
pub fn parse(bytes: &[u8]) -> Option<(Manifest, Vec<Record>)> {
    let mut r = WireReader::new(bytes);
    if r.bytes(8, "magic").ok()? != MAGIC || r.u8("version").ok()? != VERSION {
        return None;
    }
    let key: [u8; 32] = r.array("identity").ok()?;
    let len = r.u32("manifest length").ok()? as usize;
    if len > crate::limits::MAX_FRAME_LEN {
        return None;
    }
    let encoded = r.bytes(len, "manifest").ok()?;
    let header_len = bytes.len() - r.remaining();
    let stored_check = r.bytes(CHECK_LEN, "header check").ok()?;
    if check(&key, &bytes[..header_len]) != stored_check {
        return None;
    }
    let manifest = Manifest::decode(&mut WireReader::new(encoded)).ok()?;
    if manifest.identity() != key {
        return None;
    }
    let records = r
        .rest()
        .chunks_exact(RECORD_LEN)
        .map_while(|chunk| {
            let chunk: &[u8; RECORD_LEN] = chunk.try_into().ok()?;
            Record::decode(chunk, &key)
        })
        .collect();
    Some((manifest, records))
}

/// Every readable checkpoint in `out_dir`.
pub fn list(out_dir: &Path) -> Vec<Loaded> {
    let Ok(entries) = fs::read_dir(out_dir) else {
        return Vec::new();
    };
    let mut found: Vec<Loaded> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(PREFIX) && name.ends_with(SUFFIX)
        })
        .filter_map(|e| load(&e.path()))
        .collect();
    found.sort_by_key(|l| l.modified);
    found
}

/// Progress a checkpoint's records describe, after checking their order:
/// for each file, the leaves of its chunks recorded in sequence from 0, and
/// whether it was finished.
#[derive(Debug, Default)]
pub struct RecordedProgress {
    /// Per file of the manifest: leaves of chunks 0, 1, … recorded.
    pub leaves: Vec<Vec<[u8; 32]>>,
    /// Per file: verified and renamed.
    pub done: Vec<bool>,
}

impl RecordedProgress {
    /// Fold records into per-file progress. Records out of sequence (a gap,
    /// an index past the file) are ignored; a repeat keeps the first leaf.
    pub fn from_records(manifest: &Manifest, records: &[Record]) -> Self {
        let n = manifest.files.len();
        let mut p = RecordedProgress {
            leaves: vec![Vec::new(); n],
            done: vec![false; n],
        };
        for r in records {
            match *r {
                Record::Chunk { file, chunk, leaf } => {
                    let f = file as usize;
                    let Some(entry) = manifest.files.get(f) else {
                        continue;
                    };
                    let have = p.leaves[f].len() as u64;
                    if chunk == have && chunk < manifest.chunk_count(entry.size) {
                        p.leaves[f].push(leaf);
                    }
                }
                Record::FileDone { file } => {
                    let f = file as usize;
                    if let Some(entry) = manifest.files.get(f) {
                        if p.leaves[f].len() as u64 == manifest.chunk_count(entry.size) {
                            p.done[f] = true;
                        }
                    }
                }
            }
        }
        p
    }

    /// Plaintext bytes the records cover.
    pub fn bytes(&self, manifest: &Manifest) -> u64 {
        manifest
            .files
            .iter()
            .zip(&self.leaves)
            .map(|(f, l)| {
                (0..l.len() as u64)
                    .map(|i| manifest.chunk_len(f.size, i))
                    .sum::<u64>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{FileEntry, Timestamp};

    fn manifest() -> Manifest {
        Manifest {
            chunk_size: 4096,
            dirs: vec![],
            files: vec![
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
            ],
        }
    }

    fn chunk(file: u32, chunk: u64) -> Record {
        Record::Chunk {
            file,
            chunk,
            leaf: [chunk as u8 + 1; 32],
        }
    }

    #[test]
    fn records_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest();
        let mut log = CheckpointLog::create(dir.path(), &m, &[chunk(0, 0)]).unwrap();
        log.append(&[
            chunk(0, 1),
            Record::FileDone { file: 0 },
            Record::FileDone { file: 1 },
        ])
        .unwrap();
        let loaded = load(&checkpoint_path(dir.path(), &m.identity())).unwrap();
        assert_eq!(loaded.manifest, m);
        assert_eq!(
            loaded.records,
            [
                chunk(0, 0),
                chunk(0, 1),
                Record::FileDone { file: 0 },
                Record::FileDone { file: 1 }
            ]
        );
        let p = RecordedProgress::from_records(&m, &loaded.records);
        assert_eq!(p.done, [true, true]);
        assert_eq!(p.bytes(&m), 5000);
        assert_eq!(list(dir.path()).len(), 1);
        log.remove().unwrap();
        assert!(list(dir.path()).is_empty());
    }

    #[test]
    fn a_torn_or_flipped_record_ends_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let m = manifest();
        let mut log = CheckpointLog::create(dir.path(), &m, &[]).unwrap();
        log.append(&[chunk(0, 0), chunk(0, 1)]).unwrap();
        let path = checkpoint_path(dir.path(), &m.identity());
        let mut bytes = fs::read(&path).unwrap();
        // Torn: half a record at the end.
        let torn = bytes.len() - RECORD_LEN / 2;
        fs::write(&path, &bytes[..torn]).unwrap();
        assert_eq!(load(&path).unwrap().records, [chunk(0, 0)]);
        // Flipped: a bit inside the first record.
        let first = bytes.len() - 2 * RECORD_LEN;
        bytes[first + 20] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(load(&path).unwrap().records.is_empty());
        // A corrupt header: no checkpoint at all.
        bytes[12] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(load(&path).is_none());
    }

    #[test]
    fn records_out_of_sequence_are_ignored() {
        let m = manifest();
        let p = RecordedProgress::from_records(
            &m,
            &[
                chunk(0, 1),
                chunk(0, 0),
                chunk(0, 0),
                chunk(0, 7),
                Record::FileDone { file: 0 },
            ],
        );
        // Chunk 1 before 0 is a gap; the repeat of 0 is ignored; 7 is past
        // the file; the file is not done with only one of two chunks.
        assert_eq!(p.leaves[0].len(), 1);
        assert_eq!(p.done, [false, false]);
    }
}
