//! Putting files into the output folder through handles, never by path.
//!
//! The output folder may be shared with other local users or programs, and
//! names inside it come from a peer. Checking a path and then using the same
//! path lets anyone who swaps a checked folder for a symlink in between
//! redirect the write (check by path, use by path). So the output folder is
//! opened once, and everything below it is reached from that handle one
//! component at a time: `openat(O_DIRECTORY | O_NOFOLLOW)` for each folder,
//! `mkdirat` for a missing one, `openat(O_CREAT | O_EXCL | O_NOFOLLOW)` for
//! new files (mode 0600: private until verified), `renameat2(RENAME_NOREPLACE)`
//! into place, and modes and times set on open handles. A symlink anywhere
//! below the output folder is refused, not followed; a folder swapped after
//! it was opened no longer matters, since the handle keeps pointing at the
//! folder that was checked.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::TransferError;

/// Folders this transfer creates start private to the user; they get the
/// sender's mode (masked by the receiver's umask) once everything is in place.
const NEW_FOLDER_MODE: u32 = 0o700;
/// Partial files and checkpoints: readable by the user only.
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;

/// The output folder, opened once.
#[derive(Clone)]
pub struct OutputDir {
    path: PathBuf,
    fd: Arc<OwnedFd>,
}

impl OutputDir {
    /// Open the output folder the user named (creating it and its parents
    /// with `create`). The user's own path may go through symlinks; only
    /// what is below it is held to the no-symlink rule.
    pub fn open(path: &Path, create: bool) -> io::Result<OutputDir> {
        if create {
            std::fs::create_dir_all(path)?;
        }
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(OutputDir {
            path: path.to_path_buf(),
            fd: Arc::new(fd),
        })
    }

    /// The path the user gave (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The output folder itself as a [`Folder`].
    pub fn root(&self) -> Folder {
        Folder {
            fd: self.fd.clone(),
            path: self.path.clone(),
        }
    }

    /// The folder `rel_dir` (`/`-separated, relative; `""` is the output
    /// folder), reached one component at a time without following links.
    /// A missing folder is made (mode 0700) when `create` is set, and its
    /// relative path passed to `created`; otherwise `Ok(None)`. A symlink or
    /// a non-folder on the way is [`TransferError::UnsafeDestination`].
    pub fn folder(
        &self,
        rel_dir: &str,
        create: bool,
        created: &mut dyn FnMut(&str),
    ) -> Result<Option<Folder>, TransferError> {
        let mut current = self.root();
        if rel_dir.is_empty() {
            return Ok(Some(current));
        }
        let mut end = 0;
        for component in rel_dir.split('/') {
            end += component.len();
            let path = current.path.join(component);
            let mut made = false;
            let fd = loop {
                match open_subfolder(current.fd(), component) {
                    Ok(fd) => break fd,
                    Err(rustix::io::Errno::NOENT) if create && !made => {
                        match rustix::fs::mkdirat(
                            current.fd(),
                            component,
                            Mode::from_raw_mode(NEW_FOLDER_MODE),
                        ) {
                            Ok(()) => {
                                made = true;
                                created(&rel_dir[..end]);
                            }
                            // Made by someone else in between: open it (and
                            // check it) like any existing folder.
                            Err(rustix::io::Errno::EXIST) => made = true,
                            Err(e) => return Err(write_error(path, e)),
                        }
                    }
                    Err(rustix::io::Errno::NOENT) => return Ok(None),
                    // O_NOFOLLOW on a symlink, O_DIRECTORY on anything else.
                    Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                        return Err(TransferError::UnsafeDestination { path })
                    }
                    Err(e) => return Err(write_error(path, e)),
                }
            };
            current = Folder {
                fd: Arc::new(fd),
                path,
            };
            end += 1; // the '/'
        }
        Ok(Some(current))
    }
}

fn open_subfolder(dir: BorrowedFd<'_>, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn write_error(path: PathBuf, e: rustix::io::Errno) -> TransferError {
    TransferError::WriteOutput {
        path,
        source: e.into(),
    }
}

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`).
pub fn split_parent(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

/// An open folder inside (or equal to) the output folder.
#[derive(Clone)]
pub struct Folder {
    fd: Arc<OwnedFd>,
    path: PathBuf,
}

/// What identifies a file we put in place: if any of it differs later, the
/// file was replaced or changed by someone else and is no longer ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileStamp {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Status-change time: any write, chmod or rename moves it.
    pub ctime_secs: i64,
    /// Its nanoseconds.
    pub ctime_nanos: u32,
}

impl FileStamp {
    // `st_ctime` is 32 bits on some 32-bit targets; the cast is for them.
    #[allow(clippy::unnecessary_cast)]
    fn of(stat: &rustix::fs::Stat) -> FileStamp {
        FileStamp {
            ino: stat.st_ino,
            size: stat.st_size as u64,
            ctime_secs: stat.st_ctime as i64,
            ctime_nanos: stat.st_ctime_nsec as u32,
        }
    }
}

/// What is at a name in a folder (symlinks are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Nothing.
    Nothing,
    /// A folder.
    Folder,
    /// A regular file.
    File(FileStamp),
    /// A symlink, device, FIFO or socket.
    Other,
}

impl Folder {
    /// The handle.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The folder's path (for messages only; never used to reach it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether two handles are the same open folder.
    pub fn same_handle(&self, other: &Folder) -> bool {
        Arc::ptr_eq(&self.fd, &other.fd)
    }

    /// What is at `name`, without following a symlink.
    pub fn existing(&self, name: &str) -> io::Result<Existing> {
        match rustix::fs::statat(self.fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => {
                let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
                Ok(match kind {
                    rustix::fs::FileType::Directory => Existing::Folder,
                    rustix::fs::FileType::RegularFile => Existing::File(FileStamp::of(&stat)),
                    _ => Existing::Other,
                })
            }
            Err(rustix::io::Errno::NOENT) => Ok(Existing::Nothing),
            Err(e) => Err(e.into()),
        }
    }

    /// Create `name` as a new private (0600) file, removing a stale file or
    /// a symlink planted under that name first; never follows a link.
    pub fn create_private(&self, name: &str) -> io::Result<File> {
        let create = || {
            rustix::fs::openat(
                self.fd(),
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(PRIVATE_FILE_MODE),
            )
        };
        // Most names are free: one call. Something there (a stale partial,
        // a planted link: O_EXCL fails on a link without following it) is
        // removed first.
        let fd = match create() {
            Err(rustix::io::Errno::EXIST) => {
                match rustix::fs::unlinkat(self.fd(), name, AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
                create()?
            }
            other => other?,
        };
        Ok(File::from(fd))
    }

    /// Open an existing regular file without following a symlink. A FIFO
    /// planted under the name would block the open (`O_NONBLOCK` keeps it
    /// from doing so) or the reads, so only a regular file is accepted.
    pub fn open_regular(&self, name: &str, write: bool) -> io::Result<File> {
        let access = if write {
            OFlags::WRONLY
        } else {
            OFlags::RDONLY
        };
        let fd = rustix::fs::openat(
            self.fd(),
            name,
            access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(file)
    }

    /// Remove `name` (a file, or a symlink itself).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        rustix::fs::unlinkat(self.fd(), name, AtFlags::empty()).map_err(Into::into)
    }

    /// Rename `from` to `to` within this folder. Without `replace` the
    /// rename itself refuses an existing target (`RENAME_NOREPLACE`), so a
    /// file that appears in the meantime is never replaced: that is
    /// `ErrorKind::AlreadyExists`.
    pub fn rename(&self, from: &str, to: &str, replace: bool) -> io::Result<()> {
        if replace {
            return rustix::fs::renameat(self.fd(), from, self.fd(), to).map_err(Into::into);
        }
        #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
        {
            use rustix::fs::{renameat_with, RenameFlags};
            match renameat_with(self.fd(), from, self.fd(), to, RenameFlags::NOREPLACE) {
                Ok(()) => return Ok(()),
                Err(rustix::io::Errno::EXIST) => {
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists))
                }
                // File systems without renameat2 flags fall through to
                // check-then-rename.
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.existing(to)? != Existing::Nothing {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        rustix::fs::renameat(self.fd(), from, self.fd(), to).map_err(Into::into)
    }

    /// Make the folder's entries durable.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(self.fd()).map_err(Into::into)
    }

    /// Give the folder itself a mode and a modification time.
    pub fn set_mode_and_time(
        &self,
        mode: u32,
        mtime: Option<std::time::SystemTime>,
    ) -> io::Result<()> {
        if let Some(t) = mtime {
            let dup = File::from(self.fd.try_clone()?);
            dup.set_modified(t)?;
        }
        rustix::fs::fchmod(self.fd(), Mode::from_raw_mode(mode)).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_walked_and_made_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let out = OutputDir::open(dir.path(), false).unwrap();
        let mut made = Vec::new();
        let f = out
            .folder("a/b", true, &mut |p| made.push(p.to_owned()))
            .unwrap()
            .unwrap();
        assert_eq!(made, ["a", "a/b"]);
        assert_eq!(f.path(), dir.path().join("a/b"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("a/b"))
            .unwrap()
            .permissions();
        assert_eq!(mode.mode() & 0o777, NEW_FOLDER_MODE);
        // Existing: nothing made.
        made.clear();
        assert!(out
            .folder("a", true, &mut |p| made.push(p.to_owned()))
            .unwrap()
            .is_some());
        assert!(made.is_empty());
        // Missing without create.
        assert!(out.folder("x/y", false, &mut |_| {}).unwrap().is_none());
        // A symlink on the way is refused, with or without create.
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        for create in [false, true] {
            assert!(matches!(
                out.folder("link/c", create, &mut |_| {}),
                Err(TransferError::UnsafeDestination { .. })
            ));
        }
        // So is a file.
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        assert!(matches!(
            out.folder("file/c", true, &mut |_| {}),
            Err(TransferError::UnsafeDestination { .. })
        ));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_folder_swapped_for_a_link_after_opening_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let out = OutputDir::open(dir.path(), false).unwrap();
        let f = out.folder("a", true, &mut |_| {}).unwrap().unwrap();
        std::fs::rename(dir.path().join("a"), dir.path().join("a-moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("a")).unwrap();
        f.create_private("x").unwrap();
        assert!(dir.path().join("a-moved/x").exists());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn new_files_are_private_and_renames_never_replace_unless_asked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = OutputDir::open(dir.path(), false).unwrap();
        let root = out.root();
        // A symlink planted under the partial's name is removed, not followed.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("p")).unwrap();
        let file = root.create_private("p").unwrap();
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        std::fs::write(dir.path().join("taken"), b"mine").unwrap();
        let err = root.rename("p", "taken", false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(dir.path().join("taken")).unwrap(), b"mine");
        root.rename("p", "taken", true).unwrap();
        assert!(matches!(root.existing("taken").unwrap(), Existing::File(_)));
        assert_eq!(root.existing("p").unwrap(), Existing::Nothing);
        // open_regular refuses links and non-files.
        std::os::unix::fs::symlink(&victim, dir.path().join("l")).unwrap();
        assert!(root.open_regular("l", false).is_err());
        assert_eq!(root.existing("l").unwrap(), Existing::Other);
    }
}
