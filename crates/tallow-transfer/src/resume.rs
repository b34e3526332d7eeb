//! Deciding, on the receiver, how much of an offer is already here.
//!
//! The offer's identity names its checkpoint. Files the checkpoint records
//! as finished count if they are still in place with their size; of the next
//! file, the chunks recorded as durable are read back from its partial file
//! and count up to the first whose Merkle leaf no longer matches (a partial
//! altered on disk is re-fetched from there, not trusted). The result is one
//! [`ResumePoint`] for the sender, plus the leaves and the hash state the
//! receiver needs to verify the whole transfer at the end.
//!
//! A checkpoint for another version of the same top-level names (some
//! files changed size or time, or failed while they were sent) does not
//! give a resume point: the files it finished that are the same in this
//! offer and unchanged on disk are skipped (here already) and carried into
//! the new checkpoint; the rest is sent, and the user is told. Files this
//! transfer's own checkpoint records as written may be replaced without
//! `--overwrite` (they are its own earlier output); other files an older
//! version finished still need `--overwrite`.
//!
//! The transfer's own checkpoint is read without decoding its copy of the
//! manifest and gone on with, not rewritten (`ResumePlan::log_records`).

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use tallow_crypto::file_hash::{chunk_digest, FileHasher};
use tallow_crypto::merkle::leaf_hash;

use crate::checkpoint::{self, checkpoint_name, LocalKey, Record, RecordedProgress};
use crate::placement::{split_parent, Existing, Folder, OutputDir};
use tallow_protocol::manifest::Manifest;
use tallow_protocol::message::ResumePoint;
use tallow_protocol::path::PARTIAL_SUFFIX;

/// How much of an offer is already here, and what that allows.
#[derive(Debug, Default)]
pub struct ResumePlan {
    /// The offer's identity (names its checkpoint).
    pub(crate) identity: [u8; 32],
    /// Where the sender should start.
    pub point: ResumePoint,
    /// Plaintext bytes before the point.
    pub bytes: u64,
    /// A checkpoint for a different version of these files was found: they
    /// changed since the interrupted transfer, which starts over.
    pub source_changed: bool,
    /// Leaves of every chunk before the point, in stream order.
    pub(crate) digests: Vec<[u8; 32]>,
    /// BLAKE3 state over the durable prefix of file `point.files_done`.
    pub(crate) hasher: Option<FileHasher>,
    /// The partial's kept chunks were taken from the records without
    /// reading them: the writer checks them against the disk.
    pub(crate) verify_later: bool,
    /// Files an earlier run of ours finished and nobody changed since:
    /// replacing them is not overwriting the user's files.
    pub(crate) ours: OurFiles,
    /// Folders an earlier run of a transfer of these names made: they are
    /// its own, not the user's.
    pub(crate) folders_made: HashSet<String>,
    /// The transfer's own checkpoint, if it has one: gone on with.
    pub(crate) own_log: Option<OwnLog>,
    /// Files after the point that are here already, verified by an earlier
    /// run and unchanged since (by index, ascending): not sent again.
    pub(crate) already_here: Vec<u32>,
    /// Of those, the ones an earlier version's checkpoint records: their
    /// records go into this transfer's new checkpoint.
    pub(crate) carried: Option<Carried>,
    /// Checkpoints (names in the output folder) to delete when the
    /// transfer starts.
    pub(crate) obsolete: Vec<String>,
}

impl ResumePlan {
    /// Whether the earlier run of ours wrote file `index` (and it is
    /// unchanged).
    pub(crate) fn is_ours(&self, index: usize) -> bool {
        self.ours.contains(index)
    }

    /// Do not continue the partial file at the point (the user keeps the
    /// file of that name that is there): its chunks come off the point.
    pub(crate) fn forget_partial(&mut self, manifest: &Manifest) {
        let kept =
            self.digests.len() as u64 - self.point.chunks_done.min(self.digests.len() as u64);
        self.digests.truncate(kept as usize);
        self.point.chunks_done = 0;
        self.hasher = None;
        self.bytes = self.point.bytes(manifest);
    }

    /// Whether file `index` is here already from an earlier run (and is not
    /// sent again).
    pub(crate) fn is_already_here(&self, index: usize) -> bool {
        self.already_here.binary_search(&(index as u32)).is_ok()
    }

    /// How many files are here already from an earlier run.
    pub fn kept_from_earlier(&self) -> usize {
        self.already_here.len()
    }

    /// The records a new checkpoint takes over from an earlier version's:
    /// the digests and "done" of each carried file still as it was.
    pub(crate) fn carried_records<'a>(
        &'a self,
        manifest: &'a Manifest,
        out: &'a OutputDir,
    ) -> impl Iterator<Item = Record> + 'a {
        let mut lookup = Lookup::new(out);
        self.carried
            .iter()
            .flat_map(|c| c.pairs.iter().map(move |&(new, old)| (c, new, old)))
            .filter(|&(_, new, _)| self.is_already_here(new as usize))
            .filter_map(move |(c, new, old)| {
                let path = manifest.files.get(new as usize)?.path;
                match lookup.existing(path) {
                    Existing::File(now) if c.progress.done_as(old as usize, &now) => {
                        Some((c, new, old, now))
                    }
                    _ => None,
                }
            })
            .flat_map(|(c, new, old, stamp)| {
                let digests = c.progress.digests(old as usize);
                (0..digests.len() as u64)
                    .map(move |chunk| Record::Chunk {
                        file: new,
                        chunk,
                        digest: digests[chunk as usize],
                    })
                    .chain(std::iter::once(Record::FileDone { file: new, stamp }))
            })
    }

    /// Whether an earlier run of this transfer made the folder `path`.
    pub fn made_folder(&self, path: &str) -> bool {
        self.folders_made.contains(path)
    }

    /// Every chunk before the point, in stream order: file, chunk, digest.
    fn chunks_before_point<'a>(
        &'a self,
        manifest: &'a Manifest,
    ) -> impl Iterator<Item = (u32, u64, &'a [u8; 32])> + 'a {
        let point = self.point;
        manifest
            .files
            .iter()
            .enumerate()
            .map_while(move |(index, entry)| {
                let file = index as u32;
                let chunks = match file.cmp(&point.files_done) {
                    std::cmp::Ordering::Less => manifest.chunk_count(entry.size),
                    std::cmp::Ordering::Equal => point.chunks_done,
                    std::cmp::Ordering::Greater => return None,
                };
                Some((0..chunks).map(move |chunk| (file, chunk)))
            })
            .flatten()
            .zip(&self.digests)
            .map(|((file, chunk), digest)| (file, chunk, digest))
    }

    /// The Merkle leaves of every chunk before the point, in stream order.
    pub(crate) fn leaves(&self, manifest: &Manifest) -> Vec<[u8; 32]> {
        self.chunks_before_point(manifest)
            .map(|(file, chunk, digest)| leaf_hash(file, chunk, digest))
            .collect()
    }

    /// The records that make the transfer's checkpoint say what this plan
    /// says before the transfer starts: files found renamed into place with
    /// no record of it (the run was killed in between) are done, and what is
    /// recorded from the point on is taken back (a partial not continued,
    /// damage, files past the point). Nothing without a checkpoint of its
    /// own (a new one starts from the folders).
    pub(crate) fn log_records(&self) -> Vec<Record> {
        let Some(own) = &self.own_log else {
            return Vec::new();
        };
        let mut records = own.found_done.clone();
        let point = self.point;
        if own.at_point.0 > point.chunks_done || own.at_point.1 {
            records.push(Record::Rewind {
                file: point.files_done,
                chunk: point.chunks_done,
            });
        }
        records.extend(
            own.later
                .iter()
                .filter(|&&file| !self.is_already_here(file as usize))
                .map(|&file| Record::Rewind { file, chunk: 0 }),
        );
        records
    }

    /// Whether the transfer's own checkpoint records folder `dir` as made.
    pub(crate) fn logged_folder(&self, dir: usize) -> bool {
        self.own_log
            .as_ref()
            .is_some_and(|own| own.folders_made.get(dir).copied().unwrap_or(false))
    }
}

/// Files of this offer that an earlier version's checkpoint records as
/// verified and in place, unchanged since in the offer (path, size, mode,
/// time) and on disk (inode, size, ctime).
#[derive(Debug)]
pub(crate) struct Carried {
    /// That checkpoint's progress (digests and finished files).
    progress: RecordedProgress,
    /// (file of this offer, the same file in the earlier one), ascending.
    pairs: Vec<(u32, u32)>,
}

/// The transfer's own checkpoint, as the plan found it.
#[derive(Debug)]
pub(crate) struct OwnLog {
    /// Its intact bytes (a torn tail is cut off when it is reopened).
    pub(crate) len: u64,
    /// Files before the point found in place that it does not record done.
    found_done: Vec<Record>,
    /// What it records for the file at the point: chunks, and "done".
    at_point: (u64, bool),
    /// Files after the point it records anything for.
    later: Vec<u32>,
    /// Per folder: it records the folder as made.
    folders_made: Vec<bool>,
}

/// Files of the offer, by index, that an earlier run of this transfer put
/// in place and nobody changed since (a flag a file, not its name: a
/// million files take a megabyte).
#[derive(Debug, Default, Clone)]
pub(crate) struct OurFiles(Vec<bool>);

impl OurFiles {
    fn insert(&mut self, index: usize) {
        if self.0.len() <= index {
            self.0.resize(index + 1, false);
        }
        self.0[index] = true;
    }

    pub(crate) fn contains(&self, index: usize) -> bool {
        self.0.get(index).copied().unwrap_or(false)
    }
}

/// Kept chunks of a partial up to this size are read and checked before
/// the receiver answers (a second or so); beyond, they are checked while
/// the rest arrives, so a resume of a huge file starts at once.
pub const VERIFY_BEFORE_ACCEPT: u64 = 64 * 1024 * 1024;

/// Looks up names below the output folder through handles, keeping the
/// last folder open (entries come folder by folder).
pub(crate) struct Lookup<'a> {
    out: &'a OutputDir,
    last: Option<(String, Option<Folder>)>,
}

impl<'a> Lookup<'a> {
    pub(crate) fn new(out: &'a OutputDir) -> Self {
        Lookup { out, last: None }
    }

    /// The folder holding `rel` and the name in it; `None` if a folder on
    /// the way is missing or unsafe.
    pub(crate) fn parent<'p>(&mut self, rel: &'p str) -> Option<(Folder, &'p str)> {
        let (dir, name) = split_parent(rel);
        if self.last.as_ref().is_none_or(|(d, _)| d != dir) {
            let folder = self.out.folder(dir, false, &mut |_| {}).ok().flatten();
            self.last = Some((dir.to_owned(), folder));
        }
        let folder = self.last.as_ref()?.1.clone()?;
        Some((folder, name))
    }

    /// What is at `rel` now.
    pub(crate) fn existing(&mut self, rel: &str) -> Existing {
        match self.parent(rel) {
            Some((folder, name)) => folder.existing(name).unwrap_or(Existing::Other),
            None => Existing::Nothing,
        }
    }

    /// Open the regular file at `rel` for reading, never through a link.
    pub(crate) fn open(&mut self, rel: &str) -> Option<File> {
        let (folder, name) = self.parent(rel)?;
        folder.open_regular(name, false).ok()
    }
}

/// Work out what is already in `out_dir` for `manifest`. With `resume`
/// false, nothing counts (but our earlier, unchanged output may still be
/// replaced). `identity` is `manifest.identity()`, as the offer was checked
/// to have (hashing a million entries again is not free). Only checkpoints made with `local` are believed. A partial
/// with more than `read_up_to` bytes kept is not read here (see
/// [`VERIFY_BEFORE_ACCEPT`]).
pub fn plan(
    manifest: &Manifest,
    identity: &[u8; 32],
    out_dir: &Path,
    resume: bool,
    local: &LocalKey,
    read_up_to: u64,
) -> ResumePlan {
    let mut plan = ResumePlan {
        identity: *identity,
        ..ResumePlan::default()
    };
    let Ok(out) = OutputDir::open(out_dir, false) else {
        return plan;
    };
    let identity = *identity;
    let top = manifest.top_level_names();
    let mut lookup = Lookup::new(&out);
    let name = checkpoint_name(&identity);
    // Our own checkpoint is read below, without decoding its manifest (it
    // is this one): only the others are loaded whole.
    let others = checkpoint::names(&out)
        .into_iter()
        .filter(|n| *n != name)
        .filter_map(|n| checkpoint::load(&out, &n, local));
    for other in others {
        if other.manifest.top_level_names() != top {
            continue;
        }
        // Files it finished are not replaced without --overwrite: they may
        // be someone else's transfer under the same names (those still the
        // same are skipped below). Folders it made are still ours.
        plan.source_changed = true;
        let progress = RecordedProgress::from_records(&other.manifest, &other.records);
        plan.folders_made.extend(
            other
                .manifest
                .dirs
                .iter()
                .zip(&progress.folders_made)
                .filter(|(_, made)| **made)
                .map(|(d, _)| d.path.clone()),
        );
        // What it finished that is still as it was, in the offer and on
        // disk, is not sent again.
        if resume && other.manifest.chunk_size == manifest.chunk_size {
            let pairs = unchanged_pairs(manifest, &top, &other.manifest, &progress, &mut lookup);
            if pairs.len() > plan.carried.as_ref().map_or(0, |c| c.pairs.len()) {
                plan.carried = Some(Carried { progress, pairs });
            }
        }
        if let Some(name) = other.path.file_name().and_then(|n| n.to_str()) {
            plan.obsolete.push(name.to_owned());
        }
    }
    if let Some(c) = &plan.carried {
        plan.already_here = c.pairs.iter().map(|&(new, _)| new).collect();
    }
    let Some((progress, log_len)) =
        checkpoint::load_progress(&out, &name, local, manifest, &identity)
    else {
        return plan;
    };
    plan.folders_made.extend(
        manifest
            .dirs
            .iter()
            .zip(&progress.folders_made)
            .filter(|(_, made)| **made)
            .map(|(d, _)| d.path.clone()),
    );
    // Ours only while unchanged since we put it there: same inode, size
    // and status-change time (any write, chmod or replacement moves it).
    let unchanged: Vec<bool> = manifest
        .files
        .iter()
        .enumerate()
        .map(|(k, f)| {
            progress.is_done(k)
                && matches!(lookup.existing(f.path), Existing::File(now) if progress.done_as(k, &now))
        })
        .collect();
    for (index, _) in unchanged.iter().enumerate().filter(|(_, yes)| **yes) {
        plan.ours.insert(index);
    }
    if !resume {
        plan.obsolete.push(name);
        return plan;
    }
    let mut k = 0;
    let mut found_done = Vec::new();
    while k < manifest.files.len() {
        let entry = &manifest.files.at(k);
        // Done, or renamed into place just before an interruption kept the
        // "done" record from being written: every chunk durable, no partial
        // left, and the file under its final name holds exactly those chunks.
        let recorded = progress.digests(k);
        let done = unchanged[k]
            || match lookup.existing(entry.path) {
                Existing::File(now)
                    if !progress.is_done(k)
                        && now.size == entry.size
                        && recorded.len() as u64 == manifest.chunk_count(entry.size)
                        && lookup.existing(&format!("{}{PARTIAL_SUFFIX}", entry.path))
                            == Existing::Nothing
                        && lookup.open(entry.path).is_some_and(|f| {
                            intact_prefix(f, manifest, k, recorded, &mut |_| true) == recorded.len()
                        }) =>
                {
                    found_done.push(Record::FileDone {
                        file: k as u32,
                        stamp: now,
                    });
                    true
                }
                _ => false,
            };
        if !done {
            break;
        }
        plan.ours.insert(k);
        plan.digests.extend_from_slice(recorded);
        k += 1;
    }
    plan.already_here.extend(
        (k + 1..manifest.files.len())
            .filter(|&f| unchanged[f])
            .map(|f| f as u32),
    );
    plan.own_log = Some(OwnLog {
        len: log_len,
        found_done,
        at_point: (progress.digests(k).len() as u64, progress.is_done(k)),
        later: (k + 1..manifest.files.len())
            .filter(|&f| progress.is_done(f) || !progress.digests(f).is_empty())
            .map(|f| f as u32)
            .collect(),
        folders_made: progress.folders_made.clone(),
    });
    plan.point.files_done = k as u32;
    if let Some(entry) = manifest.files.get(k) {
        let partial = format!("{}{PARTIAL_SUFFIX}", entry.path);
        let recorded = progress.digests(k);
        let recorded_bytes: u64 = (0..recorded.len() as u64)
            .map(|c| manifest.chunk_len(entry.size, c))
            .sum();
        let kept = if recorded_bytes > read_up_to {
            // Too much to read before answering: the records are taken
            // as they are, as far as the partial is long enough, and the
            // writer checks them against the disk beside the new data.
            match lookup.existing(&partial) {
                Existing::File(now) => {
                    let within = (1..=recorded.len() as u64)
                        .take_while(|&n| {
                            n.saturating_mul(u64::from(manifest.chunk_size))
                                .min(entry.size)
                                <= now.size
                        })
                        .count();
                    plan.verify_later = within > 0;
                    Some(&recorded[..within])
                }
                _ => None,
            }
        } else {
            lookup
                .open(&partial)
                .map(|file| &recorded[..intact_prefix(file, manifest, k, recorded, &mut |_| true)])
        };
        if let Some(kept) = kept {
            let mut hasher = FileHasher::new();
            kept.iter().for_each(|d| hasher.push(*d));
            plan.digests.extend_from_slice(kept);
            plan.point.chunks_done = kept.len() as u64;
            plan.hasher = Some(hasher);
        }
    }
    plan.bytes = plan.point.bytes(manifest);
    // Only files not started may be skipped (an earlier version's files
    // before the point are in the point already).
    plan.already_here.sort_unstable();
    plan.already_here.dedup();
    let first_unstarted = plan.point.first_unstarted();
    plan.already_here.retain(|&f| f >= first_unstarted);
    plan
}

/// Files of `manifest` that are the same (path, size, mode, time) as a file
/// of `old` that `progress` records as finished and that is still on disk
/// as it was then: (index in `manifest`, index in `old`), ascending.
///
/// Both lists are in the sender's order (its command-line names in order,
/// then each folder depth-first by name), which comparing the top-level
/// name's place and then the rest of the path name by name reproduces, so
/// one pass over both finds every pair.
fn unchanged_pairs(
    manifest: &Manifest,
    top: &[&str],
    old: &Manifest,
    progress: &RecordedProgress,
    lookup: &mut Lookup<'_>,
) -> Vec<(u32, u32)> {
    fn order<'p>(top: &[&str], path: &'p str) -> (Option<usize>, std::str::Split<'p, char>) {
        let mut parts = path.split('/');
        let first = parts.next().unwrap_or_default();
        (top.iter().position(|t| *t == first), parts)
    }
    let mut pairs = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < manifest.files.len() && j < old.files.len() {
        let (new, was) = (manifest.files.at(i), old.files.at(j));
        let ((new_top, new_rest), (was_top, was_rest)) =
            (order(top, new.path), order(top, was.path));
        match new_top.cmp(&was_top).then_with(|| new_rest.cmp(was_rest)) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                let same = (new.size, new.mode, new.mtime) == (was.size, was.mode, was.mtime);
                if same
                    && progress.is_done(j)
                    && matches!(lookup.existing(new.path), Existing::File(now) if progress.done_as(j, &now))
                {
                    pairs.push((i as u32, j as u32));
                }
                i += 1;
                j += 1;
            }
        }
    }
    pairs
}

/// How many of the chunks at the start of `file` (holding file `index`'s
/// first chunks) still have these digests: read up to the first that does
/// not. `on_chunk` hears each chunk's length as it checks out, and stops
/// the reading by returning `false`.
pub(crate) fn intact_prefix(
    mut file: File,
    manifest: &Manifest,
    index: usize,
    digests: &[[u8; 32]],
    on_chunk: &mut dyn FnMut(u64) -> bool,
) -> usize {
    let size = manifest.files.at(index).size;
    let chunks = manifest.chunk_count(size);
    let mut buf = Vec::new();
    digests
        .iter()
        .enumerate()
        .take_while(|(chunk, digest)| {
            let chunk = *chunk as u64;
            buf.resize(manifest.chunk_len(size, chunk) as usize, 0);
            file.read_exact(&mut buf).is_ok()
                && chunk_digest(chunks, manifest.chunk_size, chunk, &buf) == **digest
                && on_chunk(buf.len() as u64)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{CheckpointLog, RECORD_LEN};
    use crate::placement::FileStamp;
    use std::fs;
    use std::io::Write;
    use tallow_protocol::file_list::FileList;
    use tallow_protocol::manifest::{FileEntry, Timestamp};

    fn key() -> LocalKey {
        LocalKey::from_bytes([7; 32])
    }

    /// [`super::plan`] with the manifest's own identity.
    fn plan(
        m: &Manifest,
        out_dir: &Path,
        resume: bool,
        local: &LocalKey,
        read_up_to: u64,
    ) -> ResumePlan {
        super::plan(m, &m.identity(), out_dir, resume, local, read_up_to)
    }

    fn out(dir: &tempfile::TempDir) -> OutputDir {
        OutputDir::open(dir.path(), false).unwrap()
    }

    fn stamp(dir: &tempfile::TempDir, name: &str) -> FileStamp {
        match out(dir).root().existing(name).unwrap() {
            Existing::File(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn entry(path: &str, size: u64) -> FileEntry {
        FileEntry {
            path: path.into(),
            size,
            mode: 0o644,
            mtime: Timestamp::default(),
        }
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Give a file the manifest's mtime, as the receiver does.
    fn set_epoch(path: &Path) {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH)
            .unwrap();
    }

    #[test]
    fn a_finished_file_touched_since_is_fetched_again() {
        let (dir, m, _) = setup();
        fs::File::options()
            .write(true)
            .open(dir.path().join("a"))
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        assert_eq!(
            plan(&m, dir.path(), true, &key(), VERIFY_BEFORE_ACCEPT).point,
            ResumePoint::default()
        );
    }

    /// A checkpoint where file `a` is done and 3 of 4 chunks of `b` are durable.
    fn setup() -> (tempfile::TempDir, Manifest, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest {
            chunk_size: 4096,
            dirs: vec![],
            files: FileList::from_entries([entry("a", 5000), entry("b", 4 * 4096)]).unwrap(),
            left_out: Default::default(),
        };
        let a = data(5000, 1);
        let b = data(4 * 4096, 2);
        fs::write(dir.path().join("a"), &a).unwrap();
        set_epoch(&dir.path().join("a"));
        fs::write(dir.path().join("b.tallow-partial"), &b[..3 * 4096]).unwrap();
        let mut records = vec![
            Record::Chunk {
                file: 0,
                chunk: 0,
                digest: chunk_digest(2, 4096, 0, &a[..4096]),
            },
            Record::Chunk {
                file: 0,
                chunk: 1,
                digest: chunk_digest(2, 4096, 1, &a[4096..]),
            },
            Record::FileDone {
                file: 0,
                stamp: stamp(&dir, "a"),
            },
        ];
        for c in 0..3u64 {
            let s = c as usize * 4096;
            records.push(Record::Chunk {
                file: 1,
                chunk: c,
                digest: chunk_digest(4, 4096, c, &b[s..s + 4096]),
            });
        }
        CheckpointLog::create(
            &out(&dir),
            &m,
            &m.identity(),
            records.iter().copied(),
            &key(),
        )
        .unwrap();
        (dir, m, b)
    }

    #[test]
    fn resumes_after_the_last_durable_chunk() {
        let (dir, m, b) = setup();
        let p = plan(&m, dir.path(), true, &key(), VERIFY_BEFORE_ACCEPT);
        assert_eq!(
            p.point,
            ResumePoint {
                files_done: 1,
                chunks_done: 3
            }
        );
        assert_eq!(p.bytes, 5000 + 3 * 4096);
        assert_eq!(p.digests.len(), 5);
        assert!(p.is_ours(0) && !p.source_changed);
        // The hash state is rebuilt from the recorded digests.
        assert_eq!(
            p.hasher.unwrap().finalize(),
            *blake3::hash(&b[..3 * 4096]).as_bytes()
        );
    }

    #[test]
    fn an_altered_partial_is_fetched_again_from_the_damage() {
        let (dir, m, _) = setup();
        let partial = dir.path().join("b.tallow-partial");
        let mut bytes = fs::read(&partial).unwrap();
        bytes[4096 + 10] ^= 1; // inside chunk 1
        fs::write(&partial, bytes).unwrap();
        let p = plan(&m, dir.path(), true, &key(), VERIFY_BEFORE_ACCEPT);
        assert_eq!(p.point.files_done, 1);
        assert_eq!(p.point.chunks_done, 1);
        assert!(!p.verify_later);
    }

    #[test]
    fn a_large_partial_is_taken_from_the_records_unread_as_far_as_it_is_long() {
        let (dir, m, b) = setup();
        // Past the limit the partial is not read: the damage is not seen
        // here (the writer checks it while the rest arrives), and the hash
        // state comes from the recorded digests alone.
        let partial = dir.path().join("b.tallow-partial");
        let mut bytes = fs::read(&partial).unwrap();
        bytes[4096 + 10] ^= 1;
        fs::write(&partial, &bytes).unwrap();
        let p = plan(&m, dir.path(), true, &key(), 4096);
        assert_eq!(p.point.chunks_done, 3);
        assert!(p.verify_later);
        assert_eq!(
            p.hasher.unwrap().finalize(),
            *blake3::hash(&b[..3 * 4096]).as_bytes()
        );
        // A partial shorter than its records holds only what it holds.
        fs::write(&partial, &bytes[..2 * 4096 + 5]).unwrap();
        let p = plan(&m, dir.path(), true, &key(), 4096);
        assert_eq!(p.point.chunks_done, 2);
        // A recorded rewind (damage found by an earlier run) is believed.
        let mut log = go_on(&dir, &m, &p);
        log.append(&[Record::Rewind { file: 1, chunk: 1 }]).unwrap();
        let p = plan(&m, dir.path(), true, &key(), 4096);
        assert_eq!(p.point.chunks_done, 1);
    }

    #[test]
    fn a_missing_finished_file_is_sent_again_and_no_resume_means_from_zero() {
        let (dir, m, _) = setup();
        let p = plan(&m, dir.path(), false, &key(), VERIFY_BEFORE_ACCEPT);
        assert_eq!(p.point, ResumePoint::default());
        assert!(p.is_ours(0), "our own output may be replaced");
        fs::remove_file(dir.path().join("a")).unwrap();
        let p = plan(&m, dir.path(), true, &key(), VERIFY_BEFORE_ACCEPT);
        assert_eq!(p.point, ResumePoint::default());
    }

    #[test]
    fn a_file_renamed_just_before_the_crash_counts_as_done() {
        let (dir, m, b) = setup();
        // All four chunks of b durable and b renamed, but no "done" record.
        fs::write(dir.path().join("b"), &b).unwrap();
        set_epoch(&dir.path().join("b"));
        fs::remove_file(dir.path().join("b.tallow-partial")).unwrap();
        let name = checkpoint_name(&m.identity());
        let mut log = checkpoint::load(&out(&dir), &name, &key()).unwrap().records;
        log.push(Record::Chunk {
            file: 1,
            chunk: 3,
            digest: chunk_digest(4, 4096, 3, &b[3 * 4096..]),
        });
        CheckpointLog::create(&out(&dir), &m, &m.identity(), log, &key()).unwrap();
        let p = plan(&m, dir.path(), true, &key(), VERIFY_BEFORE_ACCEPT);
        assert_eq!(p.point.files_done, 2);
        assert!(p.is_ours(1));
        // Not if the file there is something else.
        fs::write(dir.path().join("b"), vec![0u8; b.len()]).unwrap();
        set_epoch(&dir.path().join("b"));
        let p = plan(&m, dir.path(), true, &key(), VERIFY_BEFORE_ACCEPT);
        assert_eq!(p.point.files_done, 1);
        assert!(!p.is_ours(1));
    }

    #[test]
    fn a_fifo_planted_as_the_partial_is_not_waited_on() {
        let (dir, m, _) = setup();
        let partial = dir.path().join("b.tallow-partial");
        fs::remove_file(&partial).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &partial,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Returns (instead of blocking in open) and trusts nothing of b.
        let p = plan(&m, dir.path(), true, &key(), VERIFY_BEFORE_ACCEPT);
        assert_eq!(p.point.files_done, 1);
        assert_eq!(p.point.chunks_done, 0);
    }

    #[test]
    fn changed_sources_start_over_and_say_so() {
        let (dir, mut m, _) = setup();
        let mut t = m.files.at(1).mtime;
        t.secs += 1;
        m.files.set_mtime(1, t);
        let p = plan(&m, dir.path(), true, &key(), VERIFY_BEFORE_ACCEPT);
        assert_eq!(p.point, ResumePoint::default());
        assert!(p.source_changed);
        assert!(!p.is_ours(0), "another version's output stays protected");
        assert_eq!(p.obsolete.len(), 1);
    }

    #[test]
    fn a_finished_file_edited_since_is_the_users() {
        // Same size, and the modification time put back: still not ours.
        let (dir, m, _) = setup();
        let path = dir.path().join("a");
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 1;
        fs::write(&path, &bytes).unwrap();
        set_epoch(&path);
        let p = plan(&m, dir.path(), true, &key(), VERIFY_BEFORE_ACCEPT);
        assert!(!p.is_ours(0));
        assert_eq!(p.point, ResumePoint::default());
        let p = plan(&m, dir.path(), false, &key(), VERIFY_BEFORE_ACCEPT);
        assert!(!p.is_ours(0));
    }

    #[test]
    fn a_checkpoint_made_with_another_key_is_not_believed() {
        let (dir, m, _) = setup();
        let p = plan(
            &m,
            dir.path(),
            true,
            &LocalKey::from_bytes([8; 32]),
            VERIFY_BEFORE_ACCEPT,
        );
        assert_eq!(p.point, ResumePoint::default());
        assert!(!p.is_ours(0));
    }

    /// Two names on the command line, "z" before "a": the earlier
    /// version's files that did not change are found in one pass, across
    /// both, and the changed one is not.
    #[test]
    fn an_earlier_versions_unchanged_files_are_found_in_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("z")).unwrap();
        for name in ["z/1", "z/2", "z/3", "a"] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let listed =
            |paths: &[&str]| FileList::from_entries(paths.iter().map(|p| entry(p, 0))).unwrap();
        let old = Manifest {
            chunk_size: 4096,
            dirs: vec![],
            files: listed(&["z/1", "z/2", "z/3", "a"]),
            left_out: Default::default(),
        };
        let mut new = Manifest {
            files: listed(&["z/1", "z/2", "z/2b", "z/3", "a"]),
            ..old.clone()
        };
        new.files.set_mtime(1, Timestamp { secs: 5, nanos: 0 });
        let records: Vec<Record> = ["z/1", "z/2", "z/3", "a"]
            .iter()
            .enumerate()
            .map(|(i, name)| Record::FileDone {
                file: i as u32,
                stamp: stamp(&dir, name),
            })
            .collect();
        let progress = RecordedProgress::from_records(&old, &records);
        let out = out(&dir);
        let pairs = unchanged_pairs(
            &new,
            &new.top_level_names(),
            &old,
            &progress,
            &mut Lookup::new(&out),
        );
        assert_eq!(pairs, [(0, 0), (3, 2), (4, 3)]);
    }

    /// An earlier version's checkpoint beside this transfer's own: what it
    /// carries before the resume point is in the point already, not
    /// skipped (a skip there is a protocol error at the sender).
    #[test]
    fn nothing_before_the_point_is_skipped() {
        let (dir, m, _) = setup();
        let mut old = m.clone();
        old.files.set_size(1, 7);
        let a = Record::FileDone {
            file: 0,
            stamp: stamp(&dir, "a"),
        };
        let digests: Vec<Record> = (0..2)
            .map(|chunk| Record::Chunk {
                file: 0,
                chunk,
                digest: [0; 32],
            })
            .collect();
        CheckpointLog::create(
            &out(&dir),
            &old,
            &old.identity(),
            digests.into_iter().chain([a]),
            &key(),
        )
        .unwrap();
        let p = plan(&m, dir.path(), true, &key(), VERIFY_BEFORE_ACCEPT);
        assert!(p.source_changed && p.carried.is_some());
        assert_eq!(p.point.files_done, 1);
        assert!(p.already_here.is_empty(), "{:?}", p.already_here);
    }

    /// What `prepare` does with the plan's checkpoint.
    fn go_on(dir: &tempfile::TempDir, m: &Manifest, p: &ResumePlan) -> CheckpointLog {
        let own = p.own_log.as_ref().expect("the transfer's own checkpoint");
        let mut log = CheckpointLog::reopen(&out(dir), &m.identity(), own.len, &key()).unwrap();
        log.append(&p.log_records()).unwrap();
        log
    }

    #[test]
    fn the_checkpoint_is_gone_on_with_and_says_what_the_plan_says() {
        let (dir, m, b) = setup();
        let name = checkpoint_name(&m.identity());
        let path = dir.path().join(&name);
        // A torn record at the end: cut off when the log is reopened.
        let intact = fs::metadata(&path).unwrap().len();
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[1; RECORD_LEN / 2])
            .unwrap();
        let mut p = plan(&m, dir.path(), true, &key(), VERIFY_BEFORE_ACCEPT);
        assert_eq!(p.own_log.as_ref().unwrap().len, intact);
        assert!(p.log_records().is_empty(), "nothing to take back");
        // The user keeps their own `b`: its partial is not continued, so
        // its recorded chunks are taken back.
        p.forget_partial(&m);
        assert_eq!(p.log_records(), [Record::Rewind { file: 1, chunk: 0 }]);
        let mut log = go_on(&dir, &m, &p);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            intact + RECORD_LEN as u64
        );
        let again = plan(&m, dir.path(), true, &key(), VERIFY_BEFORE_ACCEPT);
        assert_eq!((again.point.files_done, again.point.chunks_done), (1, 0));
        assert!(again.is_ours(0));
        // All of b arrives and is renamed, and the run is killed before its
        // "done" record: the next plan finds it and records it.
        log.append(&[Record::Chunk {
            file: 1,
            chunk: 0,
            digest: chunk_digest(4, 4096, 0, &b[..4096]),
        }])
        .unwrap();
        for c in 1..4u64 {
            let at = c as usize * 4096;
            log.append(&[Record::Chunk {
                file: 1,
                chunk: c,
                digest: chunk_digest(4, 4096, c, &b[at..at + 4096]),
            }])
            .unwrap();
        }
        fs::write(dir.path().join("b"), &b).unwrap();
        set_epoch(&dir.path().join("b"));
        fs::remove_file(dir.path().join("b.tallow-partial")).unwrap();
        let p = plan(&m, dir.path(), true, &key(), VERIFY_BEFORE_ACCEPT);
        assert_eq!(p.point.files_done, 2);
        assert!(matches!(
            p.log_records()[..],
            [Record::FileDone { file: 1, .. }]
        ));
        go_on(&dir, &m, &p);
        let (progress, _) =
            checkpoint::load_progress(&out(&dir), &name, &key(), &m, &m.identity()).unwrap();
        assert!(progress.is_done(0) && progress.done_as(1, &stamp(&dir, "b")));
    }
}
