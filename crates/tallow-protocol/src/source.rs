//! The sender's side of the disk: turning the paths a user named into a
//! manifest.
//!
//! A file is sent under its own name; a folder as a tree under its name,
//! with empty folders, permission bits and modification times. Symbolic
//! links inside a folder are never followed (one could point anywhere on the
//! sender's disk); they are skipped and listed, as are sockets, pipes and
//! devices. A path named on the command line is followed if it is a link,
//! because the user asked for it by name. Every name must be UTF-8 and pass
//! the same checks the receiver applies, so a bad name is reported before
//! anything is sent.

use std::fs::{self, Metadata};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use crate::limits::MAX_FRAME_LEN;
use crate::manifest::{DirEntry, FileEntry, Manifest, Timestamp, MODE_MASK};
use crate::path::validate_relative_path;
use crate::TransferError;

/// What will be offered, and where each file is on disk.
#[derive(Debug)]
pub struct SourceTree {
    manifest: Manifest,
    sources: Vec<PathBuf>,
    skipped: Vec<PathBuf>,
}

impl SourceTree {
    /// Walk `paths` and build the manifest.
    pub fn scan(paths: &[PathBuf], chunk_size: u32) -> Result<Self, TransferError> {
        let mut tree = SourceTree {
            manifest: Manifest {
                chunk_size,
                dirs: Vec::new(),
                files: Vec::new(),
            },
            sources: Vec::new(),
            skipped: Vec::new(),
        };
        for path in paths {
            let meta = fs::metadata(path).map_err(|source| TransferError::ReadSource {
                path: path.clone(),
                source,
            })?;
            let name = top_level_name(path)?;
            if meta.is_dir() {
                tree.add_dir(name.clone(), &meta);
                tree.walk(path, &name)?;
            } else if meta.is_file() {
                tree.add_file(name, path.clone(), &meta);
            } else {
                return Err(unsendable(path, "it is not a regular file or a folder"));
            }
        }
        let mut encoded = Vec::new();
        tree.manifest.encode(&mut encoded);
        // The offer travels as one frame: message type, manifest, tag.
        if encoded.len() + 1 + tallow_crypto::TAG_LEN > MAX_FRAME_LEN {
            return Err(unsendable(
                paths.first().map(PathBuf::as_path).unwrap_or(Path::new("")),
                &format!(
                    "the list of {} files and folders takes {} MiB, more than one offer may hold ({} MiB); send fewer at once, or archive them first",
                    tree.manifest.files.len() + tree.manifest.dirs.len(),
                    encoded.len() >> 20,
                    MAX_FRAME_LEN >> 20
                ),
            ));
        }
        tree.manifest.validate().map_err(|e| {
            unsendable(
                paths.first().map(PathBuf::as_path).unwrap_or(Path::new("")),
                &e.to_string(),
            )
        })?;
        Ok(tree)
    }

    /// What will be offered.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where file `index` of the manifest is on disk.
    pub fn source(&self, index: usize) -> &Path {
        &self.sources[index]
    }

    /// Links and special files that were left out.
    pub fn skipped(&self) -> &[PathBuf] {
        &self.skipped
    }

    fn add_dir(&mut self, path: String, meta: &Metadata) {
        self.manifest.dirs.push(DirEntry {
            path,
            mode: meta.permissions().mode() & MODE_MASK,
            mtime: mtime(meta),
        });
    }

    fn add_file(&mut self, path: String, source: PathBuf, meta: &Metadata) {
        self.manifest.files.push(FileEntry {
            path,
            size: meta.len(),
            mode: meta.permissions().mode() & MODE_MASK,
            mtime: mtime(meta),
        });
        self.sources.push(source);
    }

    fn walk(&mut self, root: &Path, root_name: &str) -> Result<(), TransferError> {
        let walker = WalkDir::new(root)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name();
        for entry in walker {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(root).to_path_buf();
                TransferError::ReadSource {
                    path,
                    source: e
                        .into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("folder loop")),
                }
            })?;
            let file_type = entry.file_type();
            if !file_type.is_dir() && !file_type.is_file() {
                self.skipped.push(entry.path().to_path_buf());
                continue;
            }
            let rel = relative_name(root_name, root, entry.path())?;
            let meta = entry.metadata().map_err(|e| TransferError::ReadSource {
                path: entry.path().to_path_buf(),
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("metadata unavailable")),
            })?;
            if file_type.is_dir() {
                self.add_dir(rel, &meta);
            } else {
                self.add_file(rel, entry.path().to_path_buf(), &meta);
            }
        }
        Ok(())
    }
}

fn mtime(meta: &Metadata) -> Timestamp {
    meta.modified()
        .map(Timestamp::from_system_time)
        .unwrap_or_default()
}

fn unsendable(path: &Path, reason: &str) -> TransferError {
    TransferError::Unsendable {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    }
}

/// The name a command-line path is sent under: its last component (of the
/// absolute path, so `.` sends the current folder under its own name).
fn top_level_name(path: &Path) -> Result<String, TransferError> {
    let absolute = if path.file_name().is_some() {
        path.to_path_buf()
    } else {
        fs::canonicalize(path).map_err(|source| TransferError::ReadSource {
            path: path.to_path_buf(),
            source,
        })?
    };
    let name = absolute
        .file_name()
        .ok_or_else(|| unsendable(path, "it has no name; name a folder inside it instead"))?
        .to_str()
        .ok_or_else(|| unsendable(path, "its name is not valid UTF-8; rename it"))?;
    checked(path, name.to_owned())
}

fn relative_name(root_name: &str, root: &Path, path: &Path) -> Result<String, TransferError> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| unsendable(path, "it is outside the folder being sent"))?;
    let mut name = root_name.to_owned();
    for component in rel.components() {
        let part = component
            .as_os_str()
            .to_str()
            .ok_or_else(|| unsendable(path, "its name is not valid UTF-8; rename it"))?;
        name.push('/');
        name.push_str(part);
    }
    checked(path, name)
}

fn checked(path: &Path, name: String) -> Result<String, TransferError> {
    validate_relative_path(&name).map_err(|e| {
        unsendable(
            path,
            &format!("the receiver would refuse its name ({e}); rename it"),
        )
    })?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_become_trees_with_empty_folders_and_skipped_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("photos");
        fs::create_dir_all(root.join("2026/empty")).unwrap();
        fs::write(root.join("2026/a.jpg"), b"aaaa").unwrap();
        fs::write(root.join("b.txt"), b"").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        fs::set_permissions(root.join("b.txt"), fs::Permissions::from_mode(0o640)).unwrap();

        let tree = SourceTree::scan(std::slice::from_ref(&root), 4096).unwrap();
        let m = tree.manifest();
        let dirs: Vec<_> = m.dirs.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(dirs, ["photos", "photos/2026", "photos/2026/empty"]);
        let files: Vec<_> = m.files.iter().map(|f| (f.path.as_str(), f.size)).collect();
        assert_eq!(files, [("photos/2026/a.jpg", 4), ("photos/b.txt", 0)]);
        assert_eq!(m.files[1].mode, 0o640);
        assert_eq!(tree.skipped(), [root.join("link")]);
        assert_eq!(tree.source(0), root.join("2026/a.jpg"));
        assert_eq!(m.top_level_names(), ["photos"]);
    }

    #[test]
    fn names_the_receiver_would_refuse_are_reported_before_sending() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("line\nbreak.txt");
        fs::write(&bad, b"x").unwrap();
        let err = SourceTree::scan(&[bad], 4096).unwrap_err();
        assert!(err.to_string().contains("control character"), "{err}");

        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::create_dir_all(a.join("same")).unwrap();
        fs::create_dir_all(b.join("same")).unwrap();
        let err = SourceTree::scan(&[a.join("same"), b.join("same")], 4096).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn non_utf8_names_get_a_clear_error() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("d");
        fs::create_dir(&root).unwrap();
        let bad = root.join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
        fs::write(&bad, b"x").unwrap();
        let err = SourceTree::scan(&[root], 4096).unwrap_err();
        assert!(err.to_string().contains("not valid UTF-8"), "{err}");
    }
}
