//! The offer: which folders and files, their sizes, permissions and
//! modification times, and the chunk size.
//!
//! The manifest is the first message after key confirmation, so names only
//! ever travel encrypted. Its [`Decode`] impl bounds every count and length
//! before allocating and validates every path and field.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::file_list::{FileList, FileRef};
use crate::limits::{
    MAX_CHUNK_SIZE, MAX_LEFT_OUT_NAMES, MAX_MANIFEST_ENTRIES, MAX_OFFER_BYTES, MAX_PATH_LEN,
    MIN_CHUNK_SIZE,
};
use crate::path::{comparison_key, validate_relative_path, PathError};
use crate::wire::{Decode, DecodeError, Encode, WireReader, WireWrite};

/// Permission bits a manifest may carry (rwx for user, group, other, plus
/// setuid, setgid and sticky, which the receiver drops).
pub const MODE_MASK: u32 = 0o7777;

/// A modification time: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    /// Whole seconds (negative before 1970).
    pub secs: i64,
    /// Nanoseconds, below 10^9.
    pub nanos: u32,
}

impl Timestamp {
    /// From a filesystem time.
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
            },
            Err(before) => {
                let d = before.duration();
                let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                if d.subsec_nanos() == 0 {
                    Timestamp {
                        secs: -secs,
                        nanos: 0,
                    }
                } else {
                    Timestamp {
                        secs: -secs - 1,
                        nanos: 1_000_000_000 - d.subsec_nanos(),
                    }
                }
            }
        }
    }

    /// As a filesystem time (`None` if it does not fit).
    pub fn to_system_time(self) -> Option<SystemTime> {
        let whole = Duration::from_secs(self.secs.unsigned_abs());
        let t = if self.secs >= 0 {
            UNIX_EPOCH.checked_add(whole)?
        } else {
            UNIX_EPOCH.checked_sub(whole)?
        };
        t.checked_add(Duration::from_nanos(u64::from(self.nanos)))
    }
}

/// A folder in the offer (empty ones included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Relative `/`-separated path, checked by [`validate_relative_path`].
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: Timestamp,
}

/// A regular file in the offer, owned (a [`FileList`] holds them packed;
/// [`FileRef`] is one of them borrowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative `/`-separated path, checked by [`validate_relative_path`].
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: Timestamp,
}

/// What the sender offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Plaintext bytes per chunk (the last chunk of a file may be shorter).
    pub chunk_size: u32,
    /// Folders, parents before children.
    pub dirs: Vec<DirEntry>,
    /// Files, in the order they are sent; chunk messages index this list.
    pub files: FileList,
    /// What the sender found in its folders and left out (symbolic links,
    /// sockets, pipes, devices), so the receiver is told.
    pub left_out: LeftOut,
}

/// Entries the sender skipped: how many, and the first
/// [`MAX_LEFT_OUT_NAMES`] of their names (for the receiver's user only;
/// nothing is written for them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeftOut {
    /// How many were left out.
    pub count: u64,
    /// Relative paths of the first few, each a valid relative path.
    pub names: Vec<String>,
}

impl LeftOut {
    /// Count one more; its name is kept while fewer than the limit are.
    pub fn push(&mut self, name: Option<String>) {
        self.count += 1;
        if let Some(name) = name {
            if self.names.len() < MAX_LEFT_OUT_NAMES {
                self.names.push(name);
            }
        }
    }
}

/// Why a manifest was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Bytes did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A path is unsafe.
    #[error("unsafe name {path:?} in the offer: {reason}")]
    UnsafePath {
        /// The path, as sent (shown with escapes by `{:?}`).
        path: String,
        /// What is wrong with it.
        reason: PathError,
    },
    /// Two entries with one path (compared without case and after Unicode
    /// normalisation), or a file where another entry needs a folder.
    #[error("the offer names {0:?} twice (or as both a file and a folder; names that differ only in case or Unicode form count as one, as on macOS and Windows)")]
    Duplicate(String),
    /// Chunk size outside the allowed range, or not a power of two.
    #[error(
        "the offer's chunk size {0} is not a power of two in {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
    )]
    ChunkSize(u32),
    /// The pages of the offer do not add up to its header.
    #[error("{0}")]
    Pages(#[from] crate::offer::PageMismatch),
    /// The sizes add up to more than 2^64 - 1 bytes.
    #[error("the offer's total size overflows")]
    TotalOverflow,
    /// A mode or timestamp field is out of range.
    #[error("the offer has an invalid {0} for {1:?}")]
    Metadata(&'static str, String),
}

/// Smallest encoded folder: 1-byte path with its u16 length, mode, time.
const MIN_DIR_LEN: usize = 2 + 1 + 4 + 8 + 4;
/// Smallest encoded file: a folder's fields plus a u64 size.
const MIN_FILE_LEN: usize = MIN_DIR_LEN + 8;

impl Manifest {
    /// Total bytes offered.
    pub fn total_size(&self) -> u64 {
        self.files.sizes().iter().sum()
    }

    /// Number of chunks a file of `size` bytes is sent in (0 for an empty file).
    pub fn chunk_count(&self, size: u64) -> u64 {
        size.div_ceil(u64::from(self.chunk_size))
    }

    /// Plaintext length of chunk `index` of a file of `size` bytes.
    pub fn chunk_len(&self, size: u64, index: u64) -> u64 {
        let offset = index.saturating_mul(u64::from(self.chunk_size));
        size.saturating_sub(offset).min(u64::from(self.chunk_size))
    }

    /// Plaintext bytes of chunks `chunks` of a file of `size` bytes (the
    /// chunks past its end count nothing).
    pub fn chunks_len(&self, size: u64, chunks: std::ops::Range<u64>) -> u64 {
        let at = |index: u64| index.saturating_mul(u64::from(self.chunk_size)).min(size);
        at(chunks.end).saturating_sub(at(chunks.start))
    }

    /// The transfer's identity: a hash of the canonical encoding (paths,
    /// sizes, modes, mtimes, chunk size; no random ids, no code). The same
    /// unchanged files give the same identity, so a new `tallow send` with a
    /// new code resumes; a changed size or mtime gives another.
    /// What was left out is not part of it: a link added to or removed
    /// from the folder changes nothing that is sent.
    pub fn identity(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key("tallow 2026-11 manifest identity v1");
        let mut part = Vec::new();
        self.encode_entries_in_parts(&mut part, &mut |bytes| {
            hasher.update(bytes);
        });
        hasher.update(&part);
        *hasher.finalize().as_bytes()
    }

    /// The encoding [`Encode`] writes, handed to `sink` in pieces of about
    /// 64 KiB: hashing or storing a manifest of millions of entries needs
    /// no buffer of its size.
    pub fn encode_in_parts(&self, sink: &mut dyn FnMut(&[u8])) {
        let mut part = Vec::new();
        self.encode_entries_in_parts(&mut part, sink);
        self.left_out.encode(&mut part);
        sink(&part);
    }

    /// Bytes the entries take encoded: what [`MAX_OFFER_BYTES`] bounds.
    pub fn entries_len(&self) -> u64 {
        entries_len(&self.dirs, self.files.len(), self.files.path_bytes())
    }

    /// Top-level names (the first component of every entry), in order.
    pub fn top_level_names(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.dirs
            .iter()
            .map(|d| d.path.as_str())
            .chain(self.files.iter().map(|f| f.path))
            .map(|p| p.split('/').next().unwrap_or(p))
            .filter(|name| seen.insert(*name))
            .collect()
    }

    /// Check everything a receiver relies on.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size)
            || !tallow_crypto::file_hash::valid_chunk_size(self.chunk_size)
        {
            return Err(ManifestError::ChunkSize(self.chunk_size));
        }
        let count = self.dirs.len() + self.files.len();
        if count > MAX_MANIFEST_ENTRIES {
            return Err(DecodeError::TooLarge {
                what: "entry count",
                got: count as u64,
                max: MAX_MANIFEST_ENTRIES as u64,
            }
            .into());
        }
        let encoded = self.entries_len();
        if encoded > MAX_OFFER_BYTES {
            return Err(DecodeError::TooLarge {
                what: "offer (bytes of names and fields)",
                got: encoded,
                max: MAX_OFFER_BYTES,
            }
            .into());
        }
        let mut total: u64 = 0;
        let entries = self
            .dirs
            .iter()
            .map(|d| (d.path.as_str(), d.mode, d.mtime, None))
            .chain(
                self.files
                    .iter()
                    .map(|f| (f.path, f.mode, f.mtime, Some(f.size))),
            );
        for (path, mode, mtime, size) in entries {
            check_entry(path, mode, mtime)?;
            if let Some(size) = size {
                total = total
                    .checked_add(size)
                    .ok_or(ManifestError::TotalOverflow)?;
            }
        }
        // Names are compared as a case-insensitive, normalising file system
        // would store them, so an offer means the same everywhere. Two equal
        // keys are one name twice; and no file may be a folder of another
        // entry: sorted with '/' as the lowest byte, everything under `a/`
        // directly follows `a`, so one look at each successor finds any
        // clash in O(n log n).
        let dirs = self.dirs.len();
        let path = |i: u32| -> &str {
            let i = i as usize;
            match i.checked_sub(dirs) {
                None => &self.dirs[i].path,
                Some(file) => self.files.at(file).path,
            }
        };
        // Sorting indices, not copies of millions of names: an ASCII name's
        // key is itself lower-cased, made on the fly; only other names have
        // theirs computed and kept.
        let count = (dirs + self.files.len()) as u32;
        let unicode: HashMap<u32, Vec<u8>> = (0..count)
            .filter(|&i| !path(i).is_ascii())
            .map(|i| (i, sort_key(&comparison_key(path(i)))))
            .collect();
        let key = |i: u32| -> SortKey<'_> {
            match unicode.get(&i) {
                Some(key) => SortKey::Kept(key.iter()),
                None => SortKey::Ascii(path(i).bytes()),
            }
        };
        let mut order: Vec<u32> = (0..count).collect();
        order.sort_unstable_by(|&a, &b| key(a).cmp(key(b)));
        for pair in order.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let (a_len, b_len) = (key(a).count(), key(b).count());
            if key(a).eq(key(b)) {
                return Err(ManifestError::Duplicate(path(b).to_owned()));
            }
            let a_is_file = a as usize >= dirs;
            if a_is_file
                && b_len > a_len
                && key(b).take(a_len).eq(key(a))
                && key(b).nth(a_len) == Some(0)
            {
                return Err(ManifestError::Duplicate(path(a).to_owned()));
            }
        }
        Ok(())
    }

    /// The chunk size, folders and files: everything that decides what is
    /// sent. What `part` holds at the end is still to be passed on.
    fn encode_entries_in_parts(&self, part: &mut Vec<u8>, sink: &mut dyn FnMut(&[u8])) {
        const PART: usize = 64 * 1024;
        let mut flush = |part: &mut Vec<u8>| {
            if part.len() >= PART {
                sink(part);
                part.clear();
            }
        };
        part.put_u32(self.chunk_size);
        part.put_u32(self.dirs.len() as u32);
        for d in &self.dirs {
            put_dir(part, d);
            flush(part);
        }
        part.put_u32(self.files.len() as u32);
        for f in self.files.iter() {
            put_file(part, f);
            flush(part);
        }
    }
}

impl Encode for Manifest {
    fn encode(&self, out: &mut Vec<u8>) {
        self.encode_in_parts(&mut |bytes| out.extend_from_slice(bytes));
    }
}

impl Decode<'_> for Manifest {
    type Error = ManifestError;

    /// Decode and [`validate`](Manifest::validate).
    fn decode(r: &mut WireReader<'_>) -> Result<Self, ManifestError> {
        let chunk_size = r.u32("chunk size")?;
        let (dirs, files) = decode_entries(r, MAX_MANIFEST_ENTRIES)?;
        let left_out = LeftOut::decode(r)?;
        let m = Manifest {
            chunk_size,
            dirs,
            files,
            left_out,
        };
        m.validate()?;
        Ok(m)
    }
}

impl Encode for LeftOut {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.count);
        out.put_u32(self.names.len() as u32);
        for name in &self.names {
            out.put_string(name, MAX_PATH_LEN);
        }
    }
}

impl Decode<'_> for LeftOut {
    type Error = ManifestError;

    /// At most [`MAX_LEFT_OUT_NAMES`] names, no more than the count, each
    /// a valid relative path.
    fn decode(r: &mut WireReader<'_>) -> Result<Self, ManifestError> {
        let mut left_out = LeftOut {
            count: r.u64("left-out count")?,
            names: Vec::new(),
        };
        let named = r.u32("left-out names")? as usize;
        if named > MAX_LEFT_OUT_NAMES || named as u64 > left_out.count {
            return Err(DecodeError::TooLarge {
                what: "left-out names",
                got: named as u64,
                max: MAX_LEFT_OUT_NAMES.min(left_out.count as usize) as u64,
            }
            .into());
        }
        for _ in 0..named {
            let name = r.string(MAX_PATH_LEN, "left-out name")?.to_owned();
            validate_relative_path(&name).map_err(|reason| ManifestError::UnsafePath {
                path: name.clone(),
                reason,
            })?;
            left_out.names.push(name);
        }
        Ok(left_out)
    }
}

/// Check one entry's own fields: a safe relative path, permission bits
/// within [`MODE_MASK`], nanoseconds below 10^9.
pub(crate) fn check_entry(path: &str, mode: u32, mtime: Timestamp) -> Result<(), ManifestError> {
    validate_relative_path(path).map_err(|reason| ManifestError::UnsafePath {
        path: path.to_owned(),
        reason,
    })?;
    if mode & !MODE_MASK != 0 {
        return Err(ManifestError::Metadata("mode", path.to_owned()));
    }
    if mtime.nanos >= 1_000_000_000 {
        return Err(ManifestError::Metadata(
            "modification time",
            path.to_owned(),
        ));
    }
    Ok(())
}

/// Folders and then files, each list after its count.
pub(crate) fn encode_entries<'a>(
    dirs: &[DirEntry],
    files: impl ExactSizeIterator<Item = FileRef<'a>>,
    out: &mut Vec<u8>,
) {
    out.put_u32(dirs.len() as u32);
    for d in dirs {
        put_dir(out, d);
    }
    out.put_u32(files.len() as u32);
    for f in files {
        put_file(out, f);
    }
}

/// Bytes `dirs` and `files` take encoded, counts aside.
pub(crate) fn entries_len(dirs: &[DirEntry], files: usize, file_path_bytes: usize) -> u64 {
    let paths: usize = dirs.iter().map(|d| d.path.len()).sum::<usize>() + file_path_bytes;
    // The minimum lengths count a one-byte path.
    (paths + dirs.len() * (MIN_DIR_LEN - 1) + files * (MIN_FILE_LEN - 1)) as u64
}

fn put_dir(out: &mut Vec<u8>, d: &DirEntry) {
    out.put_string(&d.path, MAX_PATH_LEN);
    put_metadata(out, d.mode, d.mtime);
}

fn put_file(out: &mut Vec<u8>, f: FileRef<'_>) {
    out.put_string(f.path, MAX_PATH_LEN);
    out.put_u64(f.size);
    put_metadata(out, f.mode, f.mtime);
}

/// What [`encode_entries`] wrote: at most `max` entries of each kind (and
/// no more than the bytes present could hold), fields decoded but not yet
/// checked.
pub(crate) fn decode_entries(
    r: &mut WireReader<'_>,
    max: usize,
) -> Result<(Vec<DirEntry>, FileList), ManifestError> {
    let dir_count = bounded_count(r, "folder count", MIN_DIR_LEN, max)?;
    let mut dirs = Vec::with_capacity(dir_count);
    for _ in 0..dir_count {
        let path = r.string(MAX_PATH_LEN, "folder path")?.to_owned();
        let (mode, mtime) = read_metadata(r)?;
        dirs.push(DirEntry { path, mode, mtime });
    }
    let file_count = bounded_count(r, "file count", MIN_FILE_LEN, max)?;
    let mut files = FileList::new();
    for _ in 0..file_count {
        let path = r.string(MAX_PATH_LEN, "file path")?;
        let size = r.u64("file size")?;
        let (mode, mtime) = read_metadata(r)?;
        files.push(path, size, mode, mtime)?;
    }
    Ok((dirs, files))
}

/// A path with '/' replaced by NUL (which no valid path contains), so that
/// sorting puts a folder's contents right after the folder.
fn sort_key(path: &str) -> Vec<u8> {
    path.bytes().map(sort_byte).collect()
}

fn sort_byte(b: u8) -> u8 {
    if b == b'/' {
        0
    } else {
        b
    }
}

/// The bytes of a name's [`sort_key`] of its [`comparison_key`], without
/// allocating for an ASCII name.
#[derive(Clone)]
enum SortKey<'a> {
    /// An ASCII name: its key is the name lower-cased.
    Ascii(std::str::Bytes<'a>),
    /// Any other name: its key, computed once.
    Kept(std::slice::Iter<'a, u8>),
}

impl Iterator for SortKey<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        match self {
            SortKey::Ascii(bytes) => bytes.next().map(|b| sort_byte(b.to_ascii_lowercase())),
            SortKey::Kept(bytes) => bytes.next().copied(),
        }
    }
}

/// A count, checked against `max` and against the bytes present
/// (each entry takes at least `min_len`) before anything is allocated.
fn bounded_count(
    r: &mut WireReader<'_>,
    what: &'static str,
    min_len: usize,
    max: usize,
) -> Result<usize, ManifestError> {
    let count = r.u32(what)? as usize;
    if count > max {
        return Err(DecodeError::TooLarge {
            what,
            got: count as u64,
            max: max as u64,
        }
        .into());
    }
    if count > r.remaining() / min_len {
        return Err(DecodeError::Truncated(what).into());
    }
    Ok(count)
}

fn put_metadata(out: &mut Vec<u8>, mode: u32, mtime: Timestamp) {
    out.put_u32(mode);
    out.put_u64(mtime.secs as u64);
    out.put_u32(mtime.nanos);
}

fn read_metadata(r: &mut WireReader<'_>) -> Result<(u32, Timestamp), DecodeError> {
    let mode = r.u32("mode")?;
    let secs = r.u64("modification time")? as i64;
    let nanos = r.u32("modification time")?;
    Ok((mode, Timestamp { secs, nanos }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_of_chunks_is_as_long_as_its_chunks() {
        let m = manifest(&[]);
        let c = u64::from(m.chunk_size);
        for size in [0, 1, c - 1, c, c + 1, 3 * c, 3 * c + 7] {
            for start in 0..6 {
                for end in start..6 {
                    let summed: u64 = (start..end).map(|i| m.chunk_len(size, i)).sum();
                    assert_eq!(
                        m.chunks_len(size, start..end),
                        summed,
                        "{size} {start}..{end}"
                    );
                }
            }
        }
        assert_eq!(m.chunks_len(u64::MAX, 0..u64::MAX), u64::MAX);
    }

    fn manifest(paths: &[&str]) -> Manifest {
        Manifest {
            chunk_size: MIN_CHUNK_SIZE,
            dirs: vec![],
            files: FileList::from_entries(paths.iter().map(|p| FileEntry {
                path: p.to_string(),
                size: 10,
                mode: 0o644,
                mtime: Timestamp {
                    secs: 1_700_000_000,
                    nanos: 5,
                },
            }))
            .unwrap(),
            left_out: LeftOut::default(),
        }
    }

    #[test]
    fn round_trip() {
        let mut m = manifest(&["a.txt", "dir/b c.bin", "ünï"]);
        m.dirs = vec![
            DirEntry {
                path: "dir".into(),
                mode: 0o755,
                mtime: Timestamp { secs: -5, nanos: 7 },
            },
            DirEntry {
                path: "empty".into(),
                mode: 0o700,
                mtime: Timestamp::default(),
            },
        ];
        m.left_out.push(Some("dir/link".into()));
        m.left_out.push(None);
        let mut buf = Vec::new();
        m.encode(&mut buf);
        let mut r = WireReader::new(&buf);
        assert_eq!(Manifest::decode(&mut r).unwrap(), m);
        r.finish().unwrap();
        assert_eq!(m.left_out.count, 2);
        assert_eq!(m.total_size(), 30);
        assert_eq!(m.chunk_count(0), 0);
        assert_eq!(m.chunk_count(4096), 1);
        assert_eq!(m.chunk_count(4097), 2);
    }

    #[test]
    fn left_out_names_are_bounded_and_checked_but_not_the_identity() {
        let plain = manifest(&["a"]);
        let mut m = plain.clone();
        for i in 0..MAX_LEFT_OUT_NAMES + 10 {
            m.left_out.push(Some(format!("a/link{i}")));
        }
        assert_eq!(m.left_out.names.len(), MAX_LEFT_OUT_NAMES);
        assert_eq!(m.left_out.count, MAX_LEFT_OUT_NAMES as u64 + 10);
        assert_eq!(m.identity(), plain.identity());
        let decode = |m: &Manifest| {
            let mut buf = Vec::new();
            m.encode(&mut buf);
            Manifest::decode_all(&buf)
        };
        assert_eq!(decode(&m).unwrap(), m);
        // More names than the limit, or than the count, or an unsafe one.
        let mut over = m.clone();
        over.left_out.names.push("a/one-more".into());
        assert!(matches!(
            decode(&over),
            Err(ManifestError::Decode(DecodeError::TooLarge { .. }))
        ));
        let mut more_than_counted = plain.clone();
        more_than_counted.left_out.names.push("a/x".into());
        assert!(decode(&more_than_counted).is_err());
        let mut unsafe_name = plain.clone();
        unsafe_name.left_out.push(Some("../../etc/x\x1b[2J".into()));
        assert!(matches!(
            decode(&unsafe_name),
            Err(ManifestError::UnsafePath { .. })
        ));
    }

    #[test]
    fn duplicates_and_file_folder_clashes_are_rejected() {
        assert_eq!(
            manifest(&["a", "a"]).validate(),
            Err(ManifestError::Duplicate("a".into()))
        );
        assert_eq!(
            manifest(&["a", "a/b"]).validate(),
            Err(ManifestError::Duplicate("a".into()))
        );
        assert!(manifest(&["a/b", "a/c"]).validate().is_ok());
        let mut m = manifest(&["a/b"]);
        m.dirs.push(DirEntry {
            path: "a/b".into(),
            mode: 0o755,
            mtime: Timestamp::default(),
        });
        assert_eq!(m.validate(), Err(ManifestError::Duplicate("a/b".into())));
    }

    #[test]
    fn names_one_disk_would_merge_are_rejected_on_every_disk() {
        // Case: one file on APFS, exFAT or casefold ext4.
        assert!(matches!(
            manifest(&["README.md", "readme.md"]).validate(),
            Err(ManifestError::Duplicate(_))
        ));
        // A file and a folder that differ in case.
        assert!(matches!(
            manifest(&["Docs", "docs/a"]).validate(),
            Err(ManifestError::Duplicate(_))
        ));
        // Unicode forms: precomposed and decomposed "é" (macOS stores NFD).
        assert!(matches!(
            manifest(&["caf\u{e9}.txt", "cafe\u{301}.txt"]).validate(),
            Err(ManifestError::Duplicate(_))
        ));
        // A name whose key is ASCII though it is not (KELVIN SIGN is "k").
        assert!(matches!(
            manifest(&["\u{212A}.txt", "k.txt"]).validate(),
            Err(ManifestError::Duplicate(_))
        ));
        assert!(matches!(
            manifest(&["\u{212A}", "k/x"]).validate(),
            Err(ManifestError::Duplicate(_))
        ));
        // Tallow's own names in another case.
        assert!(matches!(
            manifest(&[".TALLOW-00.checkpoint"]).validate(),
            Err(ManifestError::UnsafePath { .. })
        ));
        assert!(manifest(&["a", "b", "A b"]).validate().is_ok());
    }

    #[test]
    fn identity_is_deterministic_and_changes_with_size_or_mtime() {
        let m = manifest(&["a", "b/c"]);
        assert_eq!(m.identity(), m.clone().identity());
        let mut sized = m.clone();
        sized.files.set_size(0, sized.files.at(0).size + 1);
        assert_ne!(sized.identity(), m.identity());
        let mut touched = m.clone();
        let mut t = touched.files.at(1).mtime;
        t.nanos += 1;
        touched.files.set_mtime(1, t);
        assert_ne!(touched.identity(), m.identity());
    }

    #[test]
    fn out_of_range_metadata_is_rejected() {
        let mut m = manifest(&["a"]);
        m.files.set_mode(0, 0o10000);
        assert!(matches!(
            m.validate(),
            Err(ManifestError::Metadata("mode", _))
        ));
        let mut m = manifest(&["a"]);
        m.files.set_mtime(
            0,
            Timestamp {
                secs: 0,
                nanos: 1_000_000_000,
            },
        );
        assert!(matches!(m.validate(), Err(ManifestError::Metadata(..))));
    }

    #[test]
    fn timestamps_survive_the_round_trip_through_system_time() {
        for t in [
            Timestamp { secs: 0, nanos: 0 },
            Timestamp {
                secs: 1_700_000_000,
                nanos: 123_456_789,
            },
            Timestamp {
                secs: -1,
                nanos: 500,
            },
            Timestamp {
                secs: -86_400,
                nanos: 0,
            },
        ] {
            let st = t.to_system_time().unwrap();
            assert_eq!(Timestamp::from_system_time(st), t);
        }
    }

    #[test]
    fn absurd_counts_sizes_and_chunk_sizes_are_rejected_before_allocating() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&MIN_CHUNK_SIZE.to_be_bytes());
        buf.extend_from_slice(&0u32.to_be_bytes());
        buf.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Manifest::decode_all(&buf),
            Err(ManifestError::Decode(DecodeError::TooLarge { .. }))
        ));
        let mut buf = Vec::new();
        buf.extend_from_slice(&MIN_CHUNK_SIZE.to_be_bytes());
        buf.extend_from_slice(&1000u32.to_be_bytes());
        buf.extend_from_slice(&[0u8; 100]);
        assert!(matches!(
            Manifest::decode_all(&buf),
            Err(ManifestError::Decode(DecodeError::Truncated(_)))
        ));
        let mut m = manifest(&["a", "b"]);
        m.files.set_size(0, u64::MAX);
        assert_eq!(m.validate(), Err(ManifestError::TotalOverflow));
        let mut m = manifest(&["a"]);
        m.chunk_size = 0;
        assert_eq!(m.validate(), Err(ManifestError::ChunkSize(0)));
        m.chunk_size = 3 * MIN_CHUNK_SIZE;
        assert_eq!(
            m.validate(),
            Err(ManifestError::ChunkSize(3 * MIN_CHUNK_SIZE)),
            "chunks are whole BLAKE3 subtrees"
        );
    }

    #[test]
    fn unsafe_paths_are_rejected() {
        assert!(matches!(
            manifest(&["../etc/passwd"]).validate(),
            Err(ManifestError::UnsafePath { .. })
        ));
    }

    #[test]
    fn entry_count_and_path_length_limits_hold_at_the_boundary() {
        use crate::limits::{MAX_OFFER_PAGE_ENTRIES, MAX_PATH_LEN};
        use crate::offer::{OfferHeader, OfferPage};
        // The offer's header: at most MAX_MANIFEST_ENTRIES folders and files
        // (a manifest that many would take a gigabyte here; the header is
        // where the count arrives).
        let mut header = manifest(&["a"]).offer_header();
        (header.dirs, header.files) = (1, MAX_MANIFEST_ENTRIES as u64 - 1);
        assert!(OfferHeader::decode_all(&header.to_bytes()).is_ok());
        header.dirs = 2;
        assert!(matches!(
            OfferHeader::decode_all(&header.to_bytes()),
            Err(ManifestError::Decode(DecodeError::TooLarge { .. }))
        ));
        // A page: at most MAX_OFFER_PAGE_ENTRIES of each kind.
        let page = |n: usize| {
            let names: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
            let m = manifest(&names.iter().map(String::as_str).collect::<Vec<_>>());
            let mut bytes = Vec::new();
            encode_entries(&[], m.files.iter(), &mut bytes);
            OfferPage::decode_all(&bytes).map(|p| p.files.len())
        };
        assert_eq!(page(MAX_OFFER_PAGE_ENTRIES), Ok(MAX_OFFER_PAGE_ENTRIES));
        assert!(matches!(
            page(MAX_OFFER_PAGE_ENTRIES + 1),
            Err(ManifestError::Decode(DecodeError::TooLarge { .. }))
        ));

        let long = |len: usize| {
            let mut p = "a/".repeat(len / 2);
            p.truncate(len - 1);
            p.push('z');
            p
        };
        assert_eq!(long(MAX_PATH_LEN).len(), MAX_PATH_LEN);
        assert!(manifest(&[&long(MAX_PATH_LEN)]).validate().is_ok());
        assert!(matches!(
            manifest(&[&long(MAX_PATH_LEN + 1)]).validate(),
            Err(ManifestError::UnsafePath { .. })
        ));
    }

    proptest::proptest! {
        /// The sorted check finds exactly the clashes that comparing every
        /// pair of names finds.
        #[test]
        fn clashes_are_found_as_a_pairwise_comparison_finds_them(
            names in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::sample::select(vec!["a", "A", "b", "\u{e9}", "e\u{301}", "k", "\u{212A}", "a b"]),
                    1..4,
                ),
                1..8,
            ),
            dirs in 0usize..3,
        ) {
            let paths: Vec<String> = names.iter().map(|parts| parts.join("/")).collect();
            let dirs = dirs.min(paths.len());
            let m = Manifest {
                dirs: paths[..dirs]
                    .iter()
                    .map(|p| DirEntry { path: p.clone(), mode: 0o755, mtime: Timestamp::default() })
                    .collect(),
                ..manifest(&paths[dirs..].iter().map(String::as_str).collect::<Vec<_>>())
            };
            let keys: Vec<String> = paths.iter().map(|p| comparison_key(p)).collect();
            let clash = (0..keys.len()).any(|i| {
                (0..keys.len()).any(|j| {
                    i != j
                        && (keys[i] == keys[j]
                            || (i >= dirs && keys[j].starts_with(&format!("{}/", keys[i]))))
                })
            });
            proptest::prop_assert_eq!(
                matches!(m.validate(), Err(ManifestError::Duplicate(_))),
                clash,
                "{:?}",
                paths
            );
        }
    }
}
