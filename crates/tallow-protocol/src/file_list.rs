//! The offer's files, packed: what both sides hold for every file of a
//! transfer, for as long as it lasts.
//!
//! A million files as `Vec<FileEntry>` take about 90 bytes each (the entry,
//! a heap block for its name, the allocator's overhead). Here every field
//! is a column and all names share one string, so a file costs its name's
//! bytes plus 22: a 4-byte end offset, the size, the permission bits in two
//! bytes and the modification time in eight. A time or mode that does not
//! fit (before 1970, after 2514, or not a valid field at all, which
//! [`Manifest::validate`](crate::manifest::Manifest::validate) then
//! refuses) is kept beside the columns, so any entry round-trips unchanged.

use crate::limits::MAX_OFFER_BYTES;
use crate::manifest::{FileEntry, ManifestError, Timestamp};
use crate::wire::DecodeError;

/// Seconds that pack: below 2^34 - 1 (the year 2514), not negative.
const PACKED_SECS: i64 = (1 << 34) - 1;
/// A packed time that is not one: look in [`FileList::odd_times`].
const ODD_TIME: u64 = u64::MAX;
/// A packed mode that is not one: look in [`FileList::odd_modes`].
const ODD_MODE: u16 = u16::MAX;

/// The files of an offer, in order (chunk messages index this list).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FileList {
    /// Every path, one after the other.
    paths: String,
    /// Where each path ends in `paths` (never more than
    /// [`MAX_OFFER_BYTES`], so it fits).
    ends: Vec<u32>,
    sizes: Vec<u64>,
    modes: Vec<u16>,
    /// Seconds << 30 | nanoseconds, or [`ODD_TIME`].
    times: Vec<u64>,
    /// By file index, ascending: the times that do not pack.
    odd_times: Vec<(u32, Timestamp)>,
    /// By file index, ascending: the modes that do not fit 16 bits.
    odd_modes: Vec<(u32, u32)>,
}

/// One file of a [`FileList`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRef<'a> {
    /// Relative `/`-separated path.
    pub path: &'a str,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time.
    pub mtime: Timestamp,
}

impl FileRef<'_> {
    /// An owned copy.
    pub fn to_entry(&self) -> FileEntry {
        FileEntry {
            path: self.path.to_owned(),
            size: self.size,
            mode: self.mode,
            mtime: self.mtime,
        }
    }
}

impl FileList {
    /// An empty list.
    pub fn new() -> Self {
        FileList::default()
    }

    /// The list of `entries`, in order (refused only past what an offer
    /// may hold; see [`FileList::push`]).
    pub fn from_entries(
        entries: impl IntoIterator<Item = FileEntry>,
    ) -> Result<Self, ManifestError> {
        let mut list = FileList::new();
        for e in entries {
            list.push(&e.path, e.size, e.mode, e.mtime)?;
        }
        Ok(list)
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of all paths together.
    pub fn path_bytes(&self) -> usize {
        self.paths.len()
    }

    /// Every file's size, in order.
    pub fn sizes(&self) -> &[u64] {
        &self.sizes
    }

    /// File `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<FileRef<'_>> {
        let end = *self.ends.get(index)? as usize;
        let start = match index.checked_sub(1) {
            Some(before) => self.ends[before] as usize,
            None => 0,
        };
        let mode = match self.modes[index] {
            ODD_MODE => odd(&self.odd_modes, index).unwrap_or(u32::from(ODD_MODE)),
            mode => u32::from(mode),
        };
        let mtime = match self.times[index] {
            ODD_TIME => odd(&self.odd_times, index).unwrap_or_default(),
            packed => Timestamp {
                secs: (packed >> 30) as i64,
                nanos: (packed & ((1 << 30) - 1)) as u32,
            },
        };
        Some(FileRef {
            path: &self.paths[start..end],
            size: self.sizes[index],
            mode,
            mtime,
        })
    }

    /// File `index`, which the caller knows is there (an index already
    /// checked against [`len`](Self::len)).
    ///
    /// # Panics
    /// If `index` is out of range, as indexing a slice does.
    pub fn at(&self, index: usize) -> FileRef<'_> {
        match self.get(index) {
            Some(file) => file,
            None => panic!("file {index} of {}", self.len()),
        }
    }

    /// The first file.
    pub fn first(&self) -> Option<FileRef<'_>> {
        self.get(0)
    }

    /// Every file, in order.
    pub fn iter(
        &self,
    ) -> impl ExactSizeIterator<Item = FileRef<'_>> + DoubleEndedIterator + Clone + '_ {
        (0..self.len()).map(|i| self.at(i))
    }

    /// Add a file at the end. Refused (nothing added) once the paths
    /// would take more than [`MAX_OFFER_BYTES`], more than any offer may
    /// carry.
    pub fn push(
        &mut self,
        path: &str,
        size: u64,
        mode: u32,
        mtime: Timestamp,
    ) -> Result<(), ManifestError> {
        self.push_within(MAX_OFFER_BYTES, path, size, mode, mtime)
    }

    fn push_within(
        &mut self,
        max: u64,
        path: &str,
        size: u64,
        mode: u32,
        mtime: Timestamp,
    ) -> Result<(), ManifestError> {
        let end = self.paths.len() as u64 + path.len() as u64;
        if end > max {
            return Err(DecodeError::TooLarge {
                what: "offer (bytes of names and fields)",
                got: end,
                max,
            }
            .into());
        }
        let index = self.len() as u32;
        self.paths.push_str(path);
        self.ends.push(end as u32);
        self.sizes.push(size);
        self.modes.push(pack_mode(mode));
        if pack_mode(mode) == ODD_MODE {
            self.odd_modes.push((index, mode));
        }
        self.times.push(pack_time(mtime));
        if pack_time(mtime) == ODD_TIME {
            self.odd_times.push((index, mtime));
        }
        Ok(())
    }

    /// Room for `files` more files with `path_bytes` of paths, growing
    /// each column by at least an eighth (not doubling, which could hold
    /// twice what is needed).
    pub fn reserve(&mut self, files: usize, path_bytes: usize) {
        if self.paths.capacity() - self.paths.len() < path_bytes {
            self.paths
                .reserve_exact(path_bytes.max(self.paths.len() / 8));
        }
        grow(&mut self.ends, files);
        grow(&mut self.sizes, files);
        grow(&mut self.modes, files);
        grow(&mut self.times, files);
    }

    /// Give back room left over from growing (the list is then held for
    /// the whole transfer).
    pub fn shrink_to_fit(&mut self) {
        self.paths.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.sizes.shrink_to_fit();
        self.modes.shrink_to_fit();
        self.times.shrink_to_fit();
        self.odd_times.shrink_to_fit();
        self.odd_modes.shrink_to_fit();
    }

    /// Change file `index`'s size (nothing if there is no such file).
    pub fn set_size(&mut self, index: usize, size: u64) {
        if let Some(s) = self.sizes.get_mut(index) {
            *s = size;
        }
    }

    /// Change file `index`'s permission bits.
    pub fn set_mode(&mut self, index: usize, mode: u32) {
        if index < self.len() {
            self.modes[index] = pack_mode(mode);
            set_odd(
                &mut self.odd_modes,
                index,
                (pack_mode(mode) == ODD_MODE).then_some(mode),
            );
        }
    }

    /// Change file `index`'s modification time.
    pub fn set_mtime(&mut self, index: usize, mtime: Timestamp) {
        if index < self.len() {
            self.times[index] = pack_time(mtime);
            set_odd(
                &mut self.odd_times,
                index,
                (pack_time(mtime) == ODD_TIME).then_some(mtime),
            );
        }
    }
}

impl std::fmt::Debug for FileList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Room in `column` for `more`, growing by at least an eighth.
pub(crate) fn grow<T>(column: &mut Vec<T>, more: usize) {
    if column.capacity() - column.len() < more {
        column.reserve_exact(more.max(column.len() / 8));
    }
}

fn pack_mode(mode: u32) -> u16 {
    match u16::try_from(mode) {
        Ok(m) if m != ODD_MODE => m,
        _ => ODD_MODE,
    }
}

fn pack_time(t: Timestamp) -> u64 {
    if (0..PACKED_SECS).contains(&t.secs) && t.nanos < 1 << 30 {
        (t.secs as u64) << 30 | u64::from(t.nanos)
    } else {
        ODD_TIME
    }
}

fn odd<T: Copy>(list: &[(u32, T)], index: usize) -> Option<T> {
    let at = list
        .binary_search_by_key(&index, |(i, _)| *i as usize)
        .ok()?;
    Some(list[at].1)
}

fn set_odd<T>(list: &mut Vec<(u32, T)>, index: usize, value: Option<T>) {
    let found = list.binary_search_by_key(&index, |(i, _)| *i as usize);
    match (found, value) {
        (Ok(at), Some(v)) => list[at].1 = v,
        (Ok(at), None) => {
            list.remove(at);
        }
        (Err(at), Some(v)) => list.insert(at, (index as u32, v)),
        (Err(_), None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(path: &str, size: u64, mode: u32, secs: i64, nanos: u32) -> FileEntry {
        FileEntry {
            path: path.to_owned(),
            size,
            mode,
            mtime: Timestamp { secs, nanos },
        }
    }

    #[test]
    fn odd_times_and_modes_come_back_as_they_went_in() {
        let entries = vec![
            entry("a", 1, 0o644, 1_700_000_000, 999_999_999),
            entry("b/é", 0, 0o10000, -1, 5),
            entry("c", u64::MAX, u32::MAX, i64::MAX, 1_000_000_000),
            entry("", 3, 0xFFFF, PACKED_SECS, 0),
            entry("e", 4, 0o7777, 0, 0),
        ];
        let list = FileList::from_entries(entries.clone()).unwrap();
        let back: Vec<FileEntry> = list.iter().map(|f| f.to_entry()).collect();
        assert_eq!(back, entries);
        assert_eq!(list.get(5), None);
        assert_eq!(list.sizes(), &[1, 0, u64::MAX, 3, 4]);
        assert_eq!(list.path_bytes(), 1 + 4 + 1 + 1);
    }

    #[test]
    fn edits_move_values_in_and_out_of_the_odd_lists() {
        let mut list = FileList::from_entries(vec![
            entry("a", 1, 0o644, 10, 0),
            entry("b", 2, 0o600, 20, 0),
        ])
        .unwrap();
        let odd = Timestamp { secs: -5, nanos: 1 };
        list.set_mtime(1, odd);
        list.set_mode(0, 0o10000);
        assert_eq!(list.at(1).mtime, odd);
        assert_eq!(list.at(0).mode, 0o10000);
        list.set_mtime(1, Timestamp { secs: 7, nanos: 2 });
        list.set_mode(0, 0o640);
        list.set_size(1, 99);
        assert_eq!(list.at(1).mtime, Timestamp { secs: 7, nanos: 2 });
        assert_eq!(list.at(0).mode, 0o640);
        assert_eq!(list.at(1).size, 99);
        assert!(list.odd_times.is_empty() && list.odd_modes.is_empty());
        assert_eq!(
            list,
            FileList::from_entries(vec![
                entry("a", 1, 0o640, 10, 0),
                entry("b", 99, 0o600, 7, 2),
            ])
            .unwrap()
        );
    }

    #[test]
    fn paths_past_what_an_offer_may_hold_are_refused() {
        // MAX_OFFER_BYTES is far below u32::MAX, so the ends always fit.
        const _: () = assert!(MAX_OFFER_BYTES < u32::MAX as u64);
        let mut list = FileList::new();
        let t = Timestamp::default();
        list.push_within(10, "abcdefgh", 0, 0o644, t).unwrap();
        list.push_within(10, "ij", 0, 0o644, t).unwrap();
        assert!(list.push_within(10, "k", 0, 0o644, t).is_err());
        assert_eq!(list.len(), 2);
        assert_eq!(list.at(1).path, "ij");
    }

    proptest! {
        #[test]
        fn any_entries_round_trip(entries in proptest::collection::vec(
            ("[a-z/é]{0,12}", any::<u64>(), any::<u32>(), any::<i64>(), any::<u32>()),
            0..40,
        )) {
            let entries: Vec<FileEntry> = entries
                .into_iter()
                .map(|(p, size, mode, secs, nanos)| entry(&p, size, mode, secs, nanos))
                .collect();
            let list = FileList::from_entries(entries.clone()).unwrap();
            let back: Vec<FileEntry> = list.iter().map(|f| f.to_entry()).collect();
            prop_assert_eq!(back, entries);
        }
    }
}
