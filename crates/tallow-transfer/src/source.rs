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
//!
//! The scan remembers which file each entry was (device, inode, size,
//! modification time), and [`SourceTree::open`] sends only that file: it
//! opens without following a link and compares the open file with the scan,
//! so a file swapped between listing and sending (for a link to a secret, or
//! by renaming another file over it) stops the transfer instead of being
//! sent under the listed name.

use std::fs::{self, File, Metadata, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use walkdir::WalkDir;

use crate::TransferError;
use tallow_protocol::file_list::{FileList, FileRef};
use tallow_protocol::manifest::{DirEntry, Manifest, Timestamp, MODE_MASK};
use tallow_protocol::path::validate_relative_path;

/// What will be offered, and where each file is on disk.
#[derive(Debug)]
pub struct SourceTree {
    /// Shared with the progress display, never copied (it can be large).
    manifest: Arc<Manifest>,
    /// The paths named on the command line.
    roots: Vec<PathBuf>,
    /// Which file each manifest file was when listed; never sent.
    sources: SourceFiles,
    /// For links named on the command line (by file index, ascending): the
    /// file each led to when listed, which is what is opened (opening never
    /// follows a link).
    link_targets: Vec<(u32, PathBuf)>,
    skipped: Vec<PathBuf>,
}

/// Where each manifest file is and which file it was when listed: with
/// its entry's size and time, what must still hold when it is opened.
/// Small on purpose (millions of files): a path is not stored but made from
/// its root and the entry's name below the root's top-level name, and the
/// root and device are kept once per run of files that share them, so a
/// file costs its inode number.
#[derive(Debug, Default)]
struct SourceFiles {
    inos: Vec<u64>,
    /// (first file, index into [`SourceTree::roots`]), by first file.
    roots: Vec<(u32, u32)>,
    /// (first file, device), by first file.
    devs: Vec<(u32, u64)>,
}

/// The value of the run (first index, value) that `index` falls in.
fn run_value<T: Copy>(runs: &[(u32, T)], index: usize) -> Option<T> {
    let after = runs.partition_point(|&(first, _)| first as usize <= index);
    runs.get(after.checked_sub(1)?).map(|&(_, v)| v)
}

/// One file of [`SourceFiles`].
#[derive(Debug, Clone, Copy)]
struct SourceFile {
    root: u32,
    dev: u64,
    ino: u64,
}

impl SourceFiles {
    fn len(&self) -> usize {
        self.inos.len()
    }

    fn push(&mut self, root: u32, dev: u64, ino: u64) {
        let index = self.inos.len() as u32;
        if self.roots.last().is_none_or(|&(_, r)| r != root) {
            self.roots.push((index, root));
        }
        if self.devs.last().is_none_or(|&(_, d)| d != dev) {
            self.devs.push((index, dev));
        }
        self.inos.push(ino);
    }

    fn get(&self, index: usize) -> Option<SourceFile> {
        Some(SourceFile {
            root: run_value(&self.roots, index)?,
            dev: run_value(&self.devs, index)?,
            ino: *self.inos.get(index)?,
        })
    }

    fn shrink_to_fit(&mut self) {
        self.inos.shrink_to_fit();
        self.roots.shrink_to_fit();
        self.devs.shrink_to_fit();
    }
}

impl SourceTree {
    /// Walk `paths` and build the manifest.
    pub fn scan(paths: &[PathBuf], chunk_size: u32) -> Result<Self, TransferError> {
        let mut tree = SourceTree {
            manifest: Arc::new(Manifest {
                chunk_size,
                dirs: Vec::new(),
                files: FileList::new(),
                left_out: Default::default(),
            }),
            roots: paths.to_vec(),
            sources: SourceFiles::default(),
            link_targets: Vec::new(),
            skipped: Vec::new(),
        };
        let mut unreadable = Vec::new();
        for (root, path) in paths.iter().enumerate() {
            let root = root as u32;
            let meta = fs::metadata(path).map_err(|source| TransferError::ReadSource {
                path: path.clone(),
                source,
            })?;
            let name = top_level_name(path)?;
            if meta.is_dir() {
                tree.add_dir(name.clone(), &meta);
                tree.walk(root, &name, &mut unreadable)?;
            } else if meta.is_file() {
                // A link named on the command line is followed once, here;
                // its target is what will be opened and checked.
                if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                    let target =
                        fs::canonicalize(path).map_err(|source| TransferError::ReadSource {
                            path: path.clone(),
                            source,
                        })?;
                    let index = tree.sources.len() as u32;
                    tree.link_targets.push((index, target));
                }
                tree.add_file(&name, root, &meta)?;
            } else {
                return Err(unsendable(path, "it is not a regular file or a folder"));
            }
        }
        // Held for the whole transfer: no room left over from growing.
        tree.listing().dirs.shrink_to_fit();
        tree.listing().files.shrink_to_fit();
        tree.sources.shrink_to_fit();
        tree.manifest.validate().map_err(|e| {
            unsendable(
                paths.first().map(PathBuf::as_path).unwrap_or(Path::new("")),
                &e.to_string(),
            )
        })?;
        // One locked file would end the transfer after the receiver said
        // yes: find them now, before a code is shown.
        unreadable.extend((0..tree.sources.len()).filter_map(|index| tree.unreadable(index)));
        if !unreadable.is_empty() {
            return Err(TransferError::Unreadable { files: unreadable });
        }
        Ok(tree)
    }

    /// What will be offered.
    pub fn manifest(&self) -> &Arc<Manifest> {
        &self.manifest
    }

    /// The manifest while the scan fills it (not shared yet: nothing is
    /// copied).
    fn listing(&mut self) -> &mut Manifest {
        Arc::make_mut(&mut self.manifest)
    }

    /// Where file `index` of the manifest is on disk, as named by the user
    /// or found in a folder.
    pub fn source(&self, index: usize) -> PathBuf {
        let (Some(file), Some(entry)) = (self.sources.get(index), self.manifest.files.get(index))
        else {
            return PathBuf::new();
        };
        let root = &self.roots[file.root as usize];
        // A folder's files: the root, then the name below its top level.
        match entry.path.split_once('/') {
            Some((_, below)) => root.join(below),
            None => root.clone(),
        }
    }

    /// Open file `index` of the manifest for reading, if it is still the
    /// file that was listed.
    ///
    /// The last component is opened with `O_NOFOLLOW` (a link put in its
    /// place is refused, not followed) and `O_NONBLOCK` (a FIFO put in its
    /// place returns at once instead of waiting for a writer); then the open
    /// file must be a regular file with the device, inode, size and
    /// modification time the scan saw. Whatever else is at the path now,
    /// even reached through a swapped parent folder, fails with
    /// [`TransferError::SourceReplaced`] naming the file.
    pub fn open(&self, index: usize) -> Result<File, TransferError> {
        let source = self
            .sources
            .get(index)
            .ok_or_else(|| TransferError::Unsendable {
                path: PathBuf::new(),
                reason: format!("file {index} is not in the list"),
            })?;
        let entry = &self.manifest.files.at(index);
        let path = self.source(index);
        open_listed(&source, entry, &path, self.link_target(index))
    }

    /// What file `index` is opened as when it was named on the command
    /// line as a link: the link's target.
    fn link_target(&self, index: usize) -> Option<&Path> {
        self.link_targets
            .binary_search_by_key(&(index as u32), |(i, _)| *i)
            .ok()
            .map(|at| self.link_targets[at].1.as_path())
    }

    /// Why file `index` cannot be read by us, if it cannot: asked of the
    /// kernel with our effective identity (`faccessat`), which costs one
    /// call where opening costs three, for each of a million small files.
    fn unreadable(&self, index: usize) -> Option<(PathBuf, std::io::Error)> {
        let path = self.source(index);
        rustix::fs::accessat(
            rustix::fs::CWD,
            self.link_target(index).unwrap_or(&path),
            rustix::fs::Access::READ_OK,
            rustix::fs::AtFlags::EACCESS,
        )
        .err()
        .map(|e| (path, e.into()))
    }

    /// Links and special files that were left out.
    pub fn skipped(&self) -> &[PathBuf] {
        &self.skipped
    }

    fn add_dir(&mut self, path: String, meta: &Metadata) {
        self.listing().dirs.push(DirEntry {
            path,
            mode: meta.permissions().mode() & MODE_MASK,
            mtime: mtime(meta),
        });
    }

    fn add_file(&mut self, path: &str, root: u32, meta: &Metadata) -> Result<(), TransferError> {
        let mode = meta.permissions().mode() & MODE_MASK;
        self.listing()
            .files
            .push(path, meta.len(), mode, mtime(meta))
            .map_err(|e| unsendable(&self.roots[root as usize], &e.to_string()))?;
        self.sources.push(root, meta.dev(), meta.ino());
        Ok(())
    }

    /// Lists a folder given on the command line; what cannot be listed
    /// below it goes to `unreadable`.
    fn walk(
        &mut self,
        root_index: u32,
        root_name: &str,
        unreadable: &mut Vec<(PathBuf, std::io::Error)>,
    ) -> Result<(), TransferError> {
        let root = self.roots[root_index as usize].clone();
        let root = root.as_path();
        let walker = WalkDir::new(root)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name();
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    let path = e.path().unwrap_or(root).to_path_buf();
                    match e.into_io_error() {
                        // A folder that cannot be listed is named with the
                        // files that cannot be read, all of them at once.
                        Some(source) => {
                            unreadable.push((path, source));
                            continue;
                        }
                        None => {
                            return Err(TransferError::ReadSource {
                                path,
                                source: std::io::Error::other("folder loop"),
                            })
                        }
                    }
                }
            };
            let file_type = entry.file_type();
            if !file_type.is_dir() && !file_type.is_file() {
                self.skipped.push(entry.path().to_path_buf());
                // Named for the receiver if its name would pass there.
                let name = relative_name(root_name, root, entry.path()).ok();
                self.listing().left_out.push(name);
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
                self.add_file(&rel, root_index, &meta)?;
            }
        }
        Ok(())
    }
}

/// Open `source` (listed as `entry`), found at `path` or, for a link named
/// on the command line, at its `link_target`.
fn open_listed(
    source: &SourceFile,
    entry: &FileRef<'_>,
    path: &Path,
    link_target: Option<&Path>,
) -> Result<File, TransferError> {
    let replaced = |detail: String| TransferError::SourceReplaced {
        path: path.to_owned(),
        detail,
    };
    let open_path = link_target.unwrap_or(path);
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(open_path)
    {
        Ok(file) => file,
        Err(e) => {
            // ELOOP: the last component is a link now. ENXIO: a socket.
            let errno = rustix::io::Errno::from_io_error(&e);
            if matches!(
                errno,
                Some(rustix::io::Errno::LOOP | rustix::io::Errno::NXIO)
            ) {
                let now = fs::symlink_metadata(open_path)
                    .map(|m| kind(&m))
                    .unwrap_or("something else");
                return Err(replaced(format!("it is now {now}")));
            }
            return Err(TransferError::ReadSource {
                path: path.to_owned(),
                source: e,
            });
        }
    };
    let meta = file.metadata().map_err(|e| TransferError::ReadSource {
        path: path.to_owned(),
        source: e,
    })?;
    if !meta.is_file() {
        return Err(replaced(format!("it is now {}", kind(&meta))));
    }
    if (meta.dev(), meta.ino()) != (source.dev, source.ino) {
        return Err(replaced(
            "another file is in its place now (a different inode)".to_owned(),
        ));
    }
    if meta.size() != entry.size {
        return Err(replaced(format!(
            "its size went from {} to {} bytes",
            entry.size,
            meta.size()
        )));
    }
    if mtime(&meta) != entry.mtime {
        return Err(replaced("it was modified".to_owned()));
    }
    Ok(file)
}

/// What a non-regular file is, for a message.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "a symbolic link, which is never followed"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "something else"
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
        let files: Vec<_> = m.files.iter().map(|f| (f.path, f.size)).collect();
        assert_eq!(files, [("photos/2026/a.jpg", 4), ("photos/b.txt", 0)]);
        assert_eq!(m.files.at(1).mode, 0o640);
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

    /// A folder `share` with `a.txt` and `b.txt` (same size, different
    /// bytes), and `secret` of the same size outside it.
    fn share() -> (tempfile::TempDir, PathBuf, SourceTree) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("a.txt"), b"aaaaaaaa").unwrap();
        fs::write(root.join("b.txt"), b"bbbbbbbb").unwrap();
        fs::write(dir.path().join("secret"), b"SECRET!!").unwrap();
        let tree = SourceTree::scan(std::slice::from_ref(&root), 4096).unwrap();
        assert_eq!(tree.source(1), root.join("b.txt"));
        (dir, root, tree)
    }

    fn read_all(mut file: File) -> Vec<u8> {
        use std::io::Read;
        let mut v = Vec::new();
        file.read_to_end(&mut v).unwrap();
        v
    }

    /// The error for `tree.open(1)`: it must name `b.txt`; returns the detail.
    fn refused(tree: &SourceTree, root: &Path) -> String {
        match tree.open(1) {
            Err(TransferError::SourceReplaced { path, detail }) => {
                assert_eq!(path, root.join("b.txt"));
                let shown = TransferError::SourceReplaced {
                    path,
                    detail: detail.clone(),
                }
                .to_string();
                assert!(
                    shown.contains("b.txt was replaced or changed after it was listed")
                        && shown.contains("send again"),
                    "{shown}"
                );
                detail
            }
            other => panic!("expected SourceReplaced for b.txt, got {other:?}"),
        }
    }

    #[test]
    fn a_listed_file_opens_while_unchanged_and_a_link_named_by_the_user_is_followed_once() {
        let (dir, root, tree) = share();
        assert_eq!(read_all(tree.open(0).unwrap()), b"aaaaaaaa");
        assert_eq!(read_all(tree.open(1).unwrap()), b"bbbbbbbb");
        assert!(tree.open(2).is_err(), "no such entry");

        let link = dir.path().join("named-link");
        std::os::unix::fs::symlink(root.join("a.txt"), &link).unwrap();
        let tree = SourceTree::scan(std::slice::from_ref(&link), 4096).unwrap();
        assert_eq!(tree.manifest().files.at(0).path, "named-link");
        assert_eq!(tree.source(0), link);
        assert_eq!(read_all(tree.open(0).unwrap()), b"aaaaaaaa");
        // Pointed elsewhere after the scan: what was listed is still sent.
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(root.join("b.txt"), &link).unwrap();
        assert_eq!(read_all(tree.open(0).unwrap()), b"aaaaaaaa");
        // The file it led to, swapped for a link: refused like any swap.
        fs::remove_file(root.join("a.txt")).unwrap();
        std::os::unix::fs::symlink(root.join("b.txt"), root.join("a.txt")).unwrap();
        assert!(
            matches!(tree.open(0), Err(TransferError::SourceReplaced { ref path, .. }) if *path == link)
        );
    }

    #[test]
    fn a_link_swapped_in_after_the_scan_is_refused_not_followed() {
        let (dir, root, tree) = share();
        let b = root.join("b.txt");
        fs::remove_file(&b).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), &b).unwrap();
        let detail = refused(&tree, &root);
        assert!(detail.contains("symbolic link"), "{detail}");
        // The file before it is still fine.
        assert_eq!(read_all(tree.open(0).unwrap()), b"aaaaaaaa");
    }

    #[test]
    fn another_file_renamed_over_a_listed_one_is_refused() {
        let (dir, root, tree) = share();
        let b = root.join("b.txt");
        let secret = dir.path().join("secret");
        // Same size and the same modification time: only the inode differs.
        let mtime = fs::metadata(&b).unwrap().modified().unwrap();
        File::options()
            .write(true)
            .open(&secret)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        fs::rename(&secret, &b).unwrap();
        let detail = refused(&tree, &root);
        assert!(detail.contains("different inode"), "{detail}");
    }

    #[test]
    fn a_parent_folder_swapped_for_a_link_is_refused() {
        // O_NOFOLLOW guards only the last component; the inode check
        // catches a file reached through a swapped folder.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        fs::create_dir_all(root.join("keys")).unwrap();
        fs::write(root.join("keys/id"), b"public").unwrap();
        fs::create_dir(dir.path().join("private")).unwrap();
        fs::write(dir.path().join("private/id"), b"SECRET").unwrap();
        let tree = SourceTree::scan(std::slice::from_ref(&root), 4096).unwrap();
        fs::rename(root.join("keys"), dir.path().join("old-keys")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("private"), root.join("keys")).unwrap();
        match tree.open(0) {
            Err(TransferError::SourceReplaced { path, detail }) => {
                assert_eq!(path, root.join("keys/id"));
                assert!(detail.contains("different inode"), "{detail}");
            }
            other => panic!("expected SourceReplaced, got {other:?}"),
        }
    }

    #[test]
    fn a_fifo_swapped_in_is_refused_without_waiting_for_a_writer() {
        let (_dir, root, tree) = share();
        let b = root.join("b.txt");
        fs::remove_file(&b).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &b,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let detail = refused(&tree, &root);
            let _ = tx.send(detail);
        });
        let detail = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("open returned instead of waiting for a writer");
        assert!(detail.contains("named pipe"), "{detail}");
    }

    #[test]
    fn a_file_modified_or_resized_after_the_scan_is_refused() {
        let (_dir, root, tree) = share();
        let b = root.join("b.txt");
        // Same size, same inode, new bytes and a new modification time.
        fs::write(&b, b"BBBBBBBB").unwrap();
        File::options()
            .write(true)
            .open(&b)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            .unwrap();
        let detail = refused(&tree, &root);
        assert!(detail.contains("modified"), "{detail}");

        fs::write(&b, b"longer than before").unwrap();
        let detail = refused(&tree, &root);
        assert!(detail.contains("size went from 8 to 18 bytes"), "{detail}");

        fs::remove_file(&b).unwrap();
        assert!(
            matches!(tree.open(1), Err(TransferError::ReadSource { ref path, .. }) if *path == b),
            "a removed file cannot be read"
        );
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
