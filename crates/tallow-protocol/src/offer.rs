//! The offer on the wire: a header, then the entries in pages.
//!
//! A whole manifest in one frame would cap the number of entries by the
//! frame size (16 MiB held about 200,000 files). Instead the sender sends an
//! [`OfferHeader`] (counts, total size, identity, what was left out) and then
//! [`OfferPage`]s of at most [`MAX_OFFER_PAGE_ENTRIES`] entries, folders
//! first. Each page is checked as it is decoded (paths, modes, times); an
//! [`OfferAssembly`] checks that the pages add up to the header (no more
//! entries than announced, folders before files, the same total and
//! identity) and, once complete, the manifest as a whole (names that clash).

use std::borrow::Cow;
use std::ops::Range;

use crate::file_list::{grow, FileList, FileRef};
use crate::limits::{
    MAX_CHUNK_SIZE, MAX_MANIFEST_ENTRIES, MAX_OFFER_BYTES, MAX_OFFER_PAGE_ENTRIES, MIN_CHUNK_SIZE,
    OFFER_PAGE_BYTES,
};
use crate::manifest::{
    check_entry, decode_entries, encode_entries, entries_len, DirEntry, LeftOut, Manifest,
    ManifestError,
};
use crate::wire::{Decode, DecodeError, Encode, WireReader, WireWrite};

/// What the sender announces before the entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferHeader {
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Folders that follow.
    pub dirs: u64,
    /// Files that follow (after the folders).
    pub files: u64,
    /// Sum of the files' sizes.
    pub total_size: u64,
    /// [`Manifest::identity`] of the whole offer, to find an interrupted
    /// transfer's checkpoint.
    pub identity: [u8; 32],
    /// What the sender left out of its folders.
    pub left_out: LeftOut,
}

/// Some of the offer's entries, in order: folders, then files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferPage<'a> {
    /// Folders, parents before children.
    pub dirs: Cow<'a, [DirEntry]>,
    /// Files, in the order they are sent.
    pub files: PageFiles<'a>,
}

/// The files of one page: a run of the sender's list, or a list decoded.
#[derive(Debug, Clone)]
pub enum PageFiles<'a> {
    /// Files `range` of a list.
    Borrowed(&'a FileList, Range<usize>),
    /// A list of their own.
    Owned(FileList),
}

impl PageFiles<'_> {
    /// No files.
    pub fn none() -> Self {
        PageFiles::Owned(FileList::new())
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        match self {
            PageFiles::Borrowed(_, range) => range.len(),
            PageFiles::Owned(list) => list.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The files, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = FileRef<'_>> + '_ {
        let (list, range) = match self {
            PageFiles::Borrowed(list, range) => (*list, range.clone()),
            PageFiles::Owned(list) => (list, 0..list.len()),
        };
        range.map(move |i| list.at(i))
    }

    /// Bytes of their paths together.
    fn path_bytes(&self) -> usize {
        self.iter().map(|f| f.path.len()).sum()
    }
}

impl PartialEq for PageFiles<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for PageFiles<'_> {}

/// Bytes of a file entry besides its path: path length, size, mode, time.
const ENTRY_FIXED_LEN: usize = 2 + 8 + 4 + 8 + 4;

impl Manifest {
    /// The header announcing this manifest.
    pub fn offer_header(&self) -> OfferHeader {
        OfferHeader {
            chunk_size: self.chunk_size,
            dirs: self.dirs.len() as u64,
            files: self.files.len() as u64,
            total_size: self.total_size(),
            identity: self.identity(),
            left_out: self.left_out.clone(),
        }
    }

    /// The entries as pages: each of at most [`MAX_OFFER_PAGE_ENTRIES`]
    /// entries and, beyond its first entry, about [`OFFER_PAGE_BYTES`].
    /// Folders and files never share a page. None for an empty offer.
    pub fn offer_pages(&self) -> impl Iterator<Item = OfferPage<'_>> {
        let dir_pages = pages(self.dirs.len(), |i| self.dirs[i].path.len()).map(|r| OfferPage {
            dirs: Cow::Borrowed(&self.dirs[r]),
            files: PageFiles::none(),
        });
        let files = &self.files;
        let file_pages = pages(files.len(), |i| files.at(i).path.len()).map(|r| OfferPage {
            dirs: Cow::Borrowed(&[]),
            files: PageFiles::Borrowed(files, r),
        });
        dir_pages.chain(file_pages)
    }
}

/// `count` entries cut into pages (ranges of their indices) by count and
/// by encoded size.
fn pages(count: usize, path_len: impl Fn(usize) -> usize) -> impl Iterator<Item = Range<usize>> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start == count {
            return None;
        }
        let mut bytes = 0;
        let mut end = start;
        while end < count.min(start + MAX_OFFER_PAGE_ENTRIES) {
            bytes += path_len(end) + ENTRY_FIXED_LEN;
            if end > start && bytes > OFFER_PAGE_BYTES {
                break;
            }
            end += 1;
        }
        let page = start..end;
        start = end;
        Some(page)
    })
}

impl Encode for OfferHeader {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(self.chunk_size);
        out.put_u64(self.dirs);
        out.put_u64(self.files);
        out.put_u64(self.total_size);
        out.put_bytes(&self.identity);
        self.left_out.encode(out);
    }
}

impl Decode<'_> for OfferHeader {
    type Error = ManifestError;

    /// Refuses a chunk size out of range and more entries than
    /// [`MAX_MANIFEST_ENTRIES`].
    fn decode(r: &mut WireReader<'_>) -> Result<Self, ManifestError> {
        let chunk_size = r.u32("chunk size")?;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size)
            || !tallow_crypto::file_hash::valid_chunk_size(chunk_size)
        {
            return Err(ManifestError::ChunkSize(chunk_size));
        }
        let dirs = r.u64("folder count")?;
        let files = r.u64("file count")?;
        let entries = dirs.saturating_add(files);
        if entries > MAX_MANIFEST_ENTRIES as u64 {
            return Err(DecodeError::TooLarge {
                what: "entry count",
                got: entries,
                max: MAX_MANIFEST_ENTRIES as u64,
            }
            .into());
        }
        Ok(OfferHeader {
            chunk_size,
            dirs,
            files,
            total_size: r.u64("total size")?,
            identity: r.array("identity")?,
            left_out: LeftOut::decode(r)?,
        })
    }
}

impl Encode for OfferPage<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_entries(&self.dirs, self.files.iter(), out);
    }
}

impl Decode<'_> for OfferPage<'static> {
    type Error = ManifestError;

    /// At most [`MAX_OFFER_PAGE_ENTRIES`] entries of each kind, each one
    /// checked on its own (path, mode, time).
    fn decode(r: &mut WireReader<'_>) -> Result<Self, ManifestError> {
        let (dirs, files) = decode_entries(r, MAX_OFFER_PAGE_ENTRIES)?;
        for d in &dirs {
            check_entry(&d.path, d.mode, d.mtime)?;
        }
        for f in files.iter() {
            check_entry(f.path, f.mode, f.mtime)?;
        }
        Ok(OfferPage {
            dirs: Cow::Owned(dirs),
            files: PageFiles::Owned(files),
        })
    }
}

/// How the pages fail to match the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageMismatch {
    /// A page with no entries.
    #[error("a page of the offer is empty")]
    Empty,
    /// More folders or files than the header announced.
    #[error("the offer's pages hold more entries than its header announced")]
    TooMany,
    /// Files arrived while folders were still due.
    #[error("files came before all the folders of the offer")]
    FilesBeforeFolders,
    /// The sizes do not add up to the header's total.
    #[error("the offer's files do not add up to the size it announced")]
    Total,
    /// The entries are not the ones the header's identity stands for.
    #[error("the offer's entries do not match the identity it announced")]
    Identity,
}

/// Builds the manifest from a header and its pages, checking each step.
#[derive(Debug)]
pub struct OfferAssembly {
    header: OfferHeader,
    manifest: Manifest,
    total: u64,
    /// Bytes of entries so far, against `limit` ([`MAX_OFFER_BYTES`]).
    bytes: u64,
    limit: u64,
}

impl OfferAssembly {
    /// Start from the header (already bounded by its decoder).
    pub fn new(header: OfferHeader) -> Self {
        let manifest = Manifest {
            chunk_size: header.chunk_size,
            dirs: Vec::new(),
            files: FileList::new(),
            left_out: header.left_out.clone(),
        };
        OfferAssembly {
            header,
            manifest,
            total: 0,
            bytes: 0,
            limit: MAX_OFFER_BYTES,
        }
    }

    /// The identity the header announced: the manifest's, once
    /// [`finish`](Self::finish) has checked it (so the receiver need not
    /// hash a million entries again).
    pub fn identity(&self) -> [u8; 32] {
        self.header.identity
    }

    /// Whether every announced entry has arrived.
    pub fn is_complete(&self) -> bool {
        self.manifest.dirs.len() as u64 == self.header.dirs
            && self.manifest.files.len() as u64 == self.header.files
    }

    /// Take one page.
    pub fn add(&mut self, page: OfferPage<'_>) -> Result<(), ManifestError> {
        let mismatch = |m| Err(ManifestError::Pages(m));
        if page.dirs.is_empty() && page.files.is_empty() {
            return mismatch(PageMismatch::Empty);
        }
        let dirs = self.manifest.dirs.len() as u64 + page.dirs.len() as u64;
        let files = self.manifest.files.len() as u64 + page.files.len() as u64;
        if dirs > self.header.dirs || files > self.header.files {
            return mismatch(PageMismatch::TooMany);
        }
        if !page.files.is_empty() && dirs < self.header.dirs {
            return mismatch(PageMismatch::FilesBeforeFolders);
        }
        self.bytes += entries_len(&page.dirs, page.files.len(), page.files.path_bytes());
        if self.bytes > self.limit {
            return Err(DecodeError::TooLarge {
                what: "offer (bytes of names and fields)",
                got: self.bytes,
                max: self.limit,
            }
            .into());
        }
        for f in page.files.iter() {
            self.total = self
                .total
                .checked_add(f.size)
                .ok_or(ManifestError::TotalOverflow)?;
        }
        // Growing by an eighth, not by doubling (which could hold twice the
        // offer); trimmed in `finish`.
        grow(&mut self.manifest.dirs, page.dirs.len());
        self.manifest.dirs.extend(page.dirs.into_owned());
        self.manifest
            .files
            .reserve(page.files.len(), page.files.path_bytes());
        for f in page.files.iter() {
            self.manifest.files.push(f.path, f.size, f.mode, f.mtime)?;
        }
        Ok(())
    }

    /// The manifest, once complete: the total and identity as announced,
    /// and [`Manifest::validate`] passed.
    pub fn finish(self) -> Result<Manifest, ManifestError> {
        if !self.is_complete() {
            return Err(DecodeError::Truncated("offer pages").into());
        }
        if self.total != self.header.total_size {
            return Err(ManifestError::Pages(PageMismatch::Total));
        }
        let mut manifest = self.manifest;
        manifest.dirs.shrink_to_fit();
        manifest.files.shrink_to_fit();
        if manifest.identity() != self.header.identity {
            return Err(ManifestError::Pages(PageMismatch::Identity));
        }
        manifest.validate()?;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{FileEntry, Timestamp};
    use crate::wire::Decode;

    fn file(path: String, size: u64) -> FileEntry {
        FileEntry {
            path,
            size,
            mode: 0o644,
            mtime: Timestamp::default(),
        }
    }

    fn big(files: usize) -> Manifest {
        Manifest {
            chunk_size: MIN_CHUNK_SIZE,
            dirs: (0..10)
                .map(|i| DirEntry {
                    path: format!("d{i}"),
                    mode: 0o755,
                    mtime: Timestamp::default(),
                })
                .collect(),
            files: FileList::from_entries(
                (0..files).map(|i| file(format!("d{}/f{i}", i % 10), i as u64)),
            )
            .unwrap(),
            left_out: LeftOut::default(),
        }
    }

    /// Header and pages through the codec, into an assembly.
    fn assemble<'a>(
        header: &OfferHeader,
        pages: impl IntoIterator<Item = OfferPage<'a>>,
    ) -> Result<Manifest, ManifestError> {
        let header = OfferHeader::decode_all(&header.to_bytes())?;
        let mut offer = OfferAssembly::new(header);
        for page in pages {
            offer.add(OfferPage::decode_all(&page.to_bytes())?)?;
        }
        offer.finish()
    }

    #[test]
    fn an_offer_of_any_size_arrives_in_bounded_pages_and_adds_up() {
        let m = big(50_000);
        let pages: Vec<_> = m.offer_pages().collect();
        assert!(pages.len() > 6, "{} pages", pages.len());
        for page in &pages {
            assert!(page.dirs.len() + page.files.len() <= MAX_OFFER_PAGE_ENTRIES);
            assert!(page.to_bytes().len() <= OFFER_PAGE_BYTES + 8);
        }
        assert_eq!(assemble(&m.offer_header(), pages).unwrap(), m);
        // Long names: pages are cut by size too.
        let long = Manifest {
            files: FileList::from_entries(
                (0..2000).map(|i| file(format!("{i:04}{}", "x".repeat(230)), 1)),
            )
            .unwrap(),
            ..big(0)
        };
        assert!(long
            .offer_pages()
            .all(|p| p.to_bytes().len() <= OFFER_PAGE_BYTES + 8));
        assert_eq!(
            assemble(&long.offer_header(), long.offer_pages()).unwrap(),
            long
        );
    }

    #[test]
    fn pages_that_do_not_match_the_header_are_refused() {
        let m = big(20_000);
        let header = m.offer_header();
        let pages: Vec<_> = m.offer_pages().collect();
        let refused =
            |pages: Vec<OfferPage<'_>>, header: &OfferHeader| assemble(header, pages).unwrap_err();
        let mut twice = pages.clone();
        twice.push(pages[1].clone());
        assert_eq!(
            refused(twice, &header),
            ManifestError::Pages(PageMismatch::TooMany)
        );
        let mut files_first = pages.clone();
        files_first.swap(0, 1);
        assert_eq!(
            refused(files_first, &header),
            ManifestError::Pages(PageMismatch::FilesBeforeFolders)
        );
        let mut empty = pages.clone();
        empty.insert(
            1,
            OfferPage {
                dirs: Cow::Borrowed(&[]),
                files: PageFiles::none(),
            },
        );
        assert_eq!(
            refused(empty, &header),
            ManifestError::Pages(PageMismatch::Empty)
        );
        assert_eq!(
            refused(pages[..pages.len() - 1].to_vec(), &header),
            ManifestError::Decode(DecodeError::Truncated("offer pages"))
        );
        let more = OfferHeader {
            total_size: header.total_size + 1,
            ..header.clone()
        };
        assert_eq!(
            refused(pages.clone(), &more),
            ManifestError::Pages(PageMismatch::Total)
        );
        let other = OfferHeader {
            identity: [0; 32],
            ..header.clone()
        };
        assert_eq!(
            refused(pages.clone(), &other),
            ManifestError::Pages(PageMismatch::Identity)
        );
    }

    #[test]
    fn each_page_is_checked_as_it_arrives_and_the_whole_at_the_end() {
        // An unsafe name is refused by the page that carries it.
        let bad = OfferPage {
            dirs: Cow::Borrowed(&[]),
            files: PageFiles::Owned(FileList::from_entries([file("../up".into(), 1)]).unwrap()),
        };
        assert!(matches!(
            OfferPage::decode_all(&bad.to_bytes()),
            Err(ManifestError::UnsafePath { .. })
        ));
        // Names that clash across pages are found once all are in.
        let mut m = big(10_000);
        m.files
            .push("D7/F7", 0, 0o644, Timestamp::default())
            .unwrap();
        assert!(matches!(
            assemble(&m.offer_header(), m.offer_pages()),
            Err(ManifestError::Duplicate(_))
        ));
    }

    #[test]
    fn the_bytes_an_offer_may_take_are_bounded_as_pages_arrive() {
        let m = big(20_000);
        let exact = m.entries_len();
        for (limit, fits) in [(exact, true), (exact - 1, false)] {
            let mut offer = OfferAssembly::new(m.offer_header());
            offer.limit = limit;
            let added: Result<Vec<()>, _> = m.offer_pages().map(|page| offer.add(page)).collect();
            assert_eq!(added.is_ok(), fits, "limit {limit}");
            if let Err(e) = added {
                assert!(matches!(
                    e,
                    ManifestError::Decode(DecodeError::TooLarge { .. })
                ));
            }
        }
        // The encoded pages are what is counted.
        let pages: usize = m.offer_pages().map(|p| p.to_bytes().len() - 8).sum();
        assert_eq!(pages as u64, exact);
    }

    #[test]
    fn a_header_announcing_too_much_is_refused_before_any_page() {
        let mut header = big(1).offer_header();
        header.files = MAX_MANIFEST_ENTRIES as u64;
        assert!(matches!(
            OfferHeader::decode_all(&header.to_bytes()),
            Err(ManifestError::Decode(DecodeError::TooLarge { .. }))
        ));
        header.files = 1;
        header.chunk_size = 3000;
        assert_eq!(
            OfferHeader::decode_all(&header.to_bytes()),
            Err(ManifestError::ChunkSize(3000))
        );
    }
}
