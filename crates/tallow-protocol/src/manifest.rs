//! The offer: which files, how big, and the chunk size.
//!
//! The manifest is the first message after key confirmation, so file names
//! only ever travel encrypted. [`Manifest::decode`] bounds every count and
//! length before allocating and validates every path.

use std::collections::HashSet;

use crate::limits::{MAX_CHUNK_SIZE, MAX_MANIFEST_ENTRIES, MAX_PATH_LEN, MIN_CHUNK_SIZE};
use crate::path::{validate_relative_path, PathError};
use crate::wire::{DecodeError, WireReader, WireWrite};

/// One regular file in the offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative `/`-separated path, checked by [`validate_relative_path`].
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// What the sender offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Plaintext bytes per chunk (the last chunk of a file may be shorter).
    pub chunk_size: u32,
    /// The files, in the order they are sent.
    pub files: Vec<FileEntry>,
}

/// Why a manifest was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Bytes did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A path is unsafe.
    #[error("unsafe file name {path:?} in the offer: {reason}")]
    UnsafePath {
        /// The path, as sent (shown with escapes by `{:?}`).
        path: String,
        /// What is wrong with it.
        reason: PathError,
    },
    /// Two entries with one path, or a file where another entry needs a folder.
    #[error("the offer names {0:?} twice")]
    Duplicate(String),
    /// Chunk size outside the allowed range.
    #[error("the offer's chunk size {0} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}")]
    ChunkSize(u32),
    /// The sizes add up to more than 2^64 - 1 bytes.
    #[error("the offer's total size overflows")]
    TotalOverflow,
}

/// Smallest encoded entry: a 1-byte path with its u16 length and a u64 size.
const MIN_ENTRY_LEN: usize = 2 + 1 + 8;

impl Manifest {
    /// Total bytes offered.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Number of chunks a file of `size` bytes is sent in (0 for an empty file).
    pub fn chunk_count(&self, size: u64) -> u64 {
        size.div_ceil(u64::from(self.chunk_size))
    }

    /// Check everything a receiver relies on.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(ManifestError::ChunkSize(self.chunk_size));
        }
        if self.files.len() > MAX_MANIFEST_ENTRIES {
            return Err(DecodeError::TooLarge {
                what: "file count",
                got: self.files.len() as u64,
                max: MAX_MANIFEST_ENTRIES as u64,
            }
            .into());
        }
        let mut total: u64 = 0;
        let mut paths = HashSet::with_capacity(self.files.len());
        let mut parents = HashSet::new();
        for f in &self.files {
            validate_relative_path(&f.path).map_err(|reason| ManifestError::UnsafePath {
                path: f.path.clone(),
                reason,
            })?;
            total = total
                .checked_add(f.size)
                .ok_or(ManifestError::TotalOverflow)?;
            if !paths.insert(f.path.as_str()) {
                return Err(ManifestError::Duplicate(f.path.clone()));
            }
            let mut end = 0;
            while let Some(i) = f.path[end..].find('/') {
                end += i;
                parents.insert(&f.path[..end]);
                end += 1;
            }
        }
        if let Some(clash) = parents.iter().find(|p| paths.contains(*p)) {
            return Err(ManifestError::Duplicate((*clash).to_string()));
        }
        Ok(())
    }

    /// Append the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        for f in &self.files {
            out.put_string(&f.path, MAX_PATH_LEN);
            out.extend_from_slice(&f.size.to_be_bytes());
        }
    }

    /// Decode and [`validate`](Self::validate).
    pub fn decode(r: &mut WireReader<'_>) -> Result<Self, ManifestError> {
        let chunk_size = r.u32("chunk size")?;
        let count = r.u32("file count")? as usize;
        if count > MAX_MANIFEST_ENTRIES {
            return Err(DecodeError::TooLarge {
                what: "file count",
                got: count as u64,
                max: MAX_MANIFEST_ENTRIES as u64,
            }
            .into());
        }
        if count > r.remaining() / MIN_ENTRY_LEN {
            return Err(DecodeError::Truncated("file list").into());
        }
        let mut files = Vec::with_capacity(count);
        for _ in 0..count {
            let path = r.string(MAX_PATH_LEN, "file path")?.to_owned();
            let size = r.u64("file size")?;
            files.push(FileEntry { path, size });
        }
        let m = Manifest { chunk_size, files };
        m.validate()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(paths: &[&str]) -> Manifest {
        Manifest {
            chunk_size: MIN_CHUNK_SIZE,
            files: paths
                .iter()
                .map(|p| FileEntry {
                    path: p.to_string(),
                    size: 10,
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip() {
        let m = manifest(&["a.txt", "dir/b c.bin", "ünï"]);
        let mut buf = Vec::new();
        m.encode(&mut buf);
        let mut r = WireReader::new(&buf);
        assert_eq!(Manifest::decode(&mut r).unwrap(), m);
        r.finish().unwrap();
        assert_eq!(m.total_size(), 30);
        assert_eq!(m.chunk_count(0), 0);
        assert_eq!(m.chunk_count(4096), 1);
        assert_eq!(m.chunk_count(4097), 2);
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
    }

    #[test]
    fn absurd_counts_sizes_and_chunk_sizes_are_rejected_before_allocating() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&MIN_CHUNK_SIZE.to_be_bytes());
        buf.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Manifest::decode(&mut WireReader::new(&buf)),
            Err(ManifestError::Decode(DecodeError::TooLarge { .. }))
        ));
        let mut buf = Vec::new();
        buf.extend_from_slice(&MIN_CHUNK_SIZE.to_be_bytes());
        buf.extend_from_slice(&1000u32.to_be_bytes());
        assert!(matches!(
            Manifest::decode(&mut WireReader::new(&buf)),
            Err(ManifestError::Decode(DecodeError::Truncated(_)))
        ));
        let mut m = manifest(&["a", "b"]);
        m.files[0].size = u64::MAX;
        assert_eq!(m.validate(), Err(ManifestError::TotalOverflow));
        let mut m = manifest(&["a"]);
        m.chunk_size = 0;
        assert_eq!(m.validate(), Err(ManifestError::ChunkSize(0)));
    }

    #[test]
    fn unsafe_paths_are_rejected() {
        assert!(matches!(
            manifest(&["../etc/passwd"]).validate(),
            Err(ManifestError::UnsafePath { .. })
        ));
    }
}
