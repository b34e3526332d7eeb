//! Checking and writing the receiver's chunks, on every core.
//!
//! Each chunk the receiver takes costs an inflate (zstd), a BLAKE3 digest
//! and a copy into the page cache, and none of that depends on the chunks
//! before it once the chunk's place in its file is known. So the writer
//! thread hands big chunks to [`ChunkWorkers`] (one per core, up to four),
//! which inflate, digest, compare the leaf the sender committed to, and
//! write at the chunk's offset. What depends on order (the file's hash, the
//! Merkle tree, the checkpoint's records, the progress) stays with the
//! writer, which takes the results back in stream order
//! ([`ChunkWorkers::next_done`]). A chunk that fails its check is never
//! written. Small chunks are checked on the writer itself
//! ([`ChunkChecker`]): handing them over would cost more than the work.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use subtle::ConstantTimeEq;
use tallow_crypto::file_hash::{chunk_digest, ChunkDigest};
use tallow_crypto::merkle::leaf_hash;
use tallow_protocol::message::ChunkHeader;

/// Chunks of at least this many plaintext bytes go to the workers.
pub(crate) const PARALLEL_MIN_BYTES: usize = 64 * 1024;

/// A chunk to check and write: where it goes, and what came.
pub(crate) struct ChunkJob {
    pub header: ChunkHeader,
    /// The frame buffer; the chunk's data is `buf[start..]`.
    pub buf: Vec<u8>,
    pub start: usize,
    /// Plaintext length once inflated.
    pub len: usize,
    /// How many chunks its file has, and their size (for the digest).
    pub chunks: u64,
    pub chunk_size: u32,
    /// The partial file it is written to, at `index * chunk_size`.
    pub file: Arc<File>,
}

/// What became of a chunk.
#[derive(Debug)]
pub(crate) enum ChunkOutcome {
    /// Checked and written (or, for a hole, the file extended over it).
    Written(ChunkDigest),
    /// Its data does not inflate to its declared length.
    Undecompressable,
    /// Its plaintext is not what the sender's leaf commits to.
    LeafMismatch,
    /// The disk (or the decompressor's start) failed.
    Failed(std::io::Error),
}

/// A chunk's result, in stream order.
#[derive(Debug)]
pub(crate) struct ChunkDone {
    pub header: ChunkHeader,
    pub len: usize,
    pub outcome: ChunkOutcome,
}

/// Inflates, digests, checks and writes chunks one at a time, reusing its
/// decompressor and buffer.
#[derive(Default)]
pub(crate) struct ChunkChecker {
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    plain: Vec<u8>,
}

/// Why a chunk did not inflate.
pub(crate) enum InflateError {
    /// Not to `len` bytes: the sender's fault.
    Size,
    /// The decompressor could not start (memory).
    Start(std::io::Error),
}

impl ChunkChecker {
    /// Decompress `data` into the reused buffer. The buffer's capacity is
    /// the cap: a frame that would inflate past the declared `len` fails
    /// instead of allocating.
    pub fn inflate(&mut self, data: &[u8], len: usize) -> Result<&[u8], InflateError> {
        let decompressor = match &mut self.decompressor {
            Some(d) => d,
            None => self
                .decompressor
                .insert(zstd::bulk::Decompressor::new().map_err(InflateError::Start)?),
        };
        self.plain.clear();
        self.plain.reserve_exact(len);
        let out = decompressor
            .decompress_to_buffer(data, &mut self.plain)
            .map_err(|_| InflateError::Size)?;
        if out != len {
            return Err(InflateError::Size);
        }
        Ok(&self.plain)
    }

    /// Check chunk `header` (its `data` as sent, `len` bytes once decoded)
    /// against its leaf and write it into `file` at its offset; a `hole`
    /// (all zeros on the sender's disk) is not written but the file is
    /// extended over it, so it stays sparse. For a hole the caller makes
    /// sure nothing past it is written yet.
    pub fn check_and_write(
        &mut self,
        header: &ChunkHeader,
        data: &[u8],
        len: usize,
        (chunks, chunk_size): (u64, u32),
        file: &File,
        hole: bool,
    ) -> ChunkOutcome {
        let plain = if header.compressed {
            match self.inflate(data, len) {
                Ok(plain) => plain,
                Err(InflateError::Size) => return ChunkOutcome::Undecompressable,
                Err(InflateError::Start(e)) => return ChunkOutcome::Failed(e),
            }
        } else {
            data
        };
        if plain.len() != len {
            return ChunkOutcome::Undecompressable;
        }
        let digest = chunk_digest(chunks, chunk_size, header.index, plain);
        let leaf = leaf_hash(header.file, header.index, &digest);
        if !bool::from(leaf.ct_eq(&header.leaf)) {
            return ChunkOutcome::LeafMismatch;
        }
        let offset = header.index.saturating_mul(u64::from(chunk_size));
        let written = if hole {
            file.set_len(offset.saturating_add(len as u64))
        } else {
            file.write_all_at(plain, offset)
        };
        match written {
            Ok(()) => ChunkOutcome::Written(digest),
            Err(e) => ChunkOutcome::Failed(e),
        }
    }

    fn run(&mut self, job: &ChunkJob) -> ChunkOutcome {
        self.check_and_write(
            &job.header,
            &job.buf[job.start..],
            job.len,
            (job.chunks, job.chunk_size),
            &job.file,
            false,
        )
    }
}

/// Worker threads checking and writing chunks in parallel; results come
/// back in the order the chunks were handed out.
pub(crate) struct ChunkWorkers {
    jobs: Option<std_mpsc::SyncSender<(u64, ChunkJob)>>,
    done: std_mpsc::Receiver<(u64, ChunkOutcome)>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Chunks handed out and not yet given back, oldest first, with the
    /// sequence number of the oldest.
    pending: VecDeque<(ChunkHeader, usize)>,
    oldest: u64,
    /// Results that came back before an older one.
    early: BTreeMap<u64, ChunkOutcome>,
}

impl ChunkWorkers {
    /// One worker per core (up to four); `None` on a single core, where the
    /// writer does better alone. Spent frame buffers go back to `pool`.
    pub fn start(pool: &std_mpsc::Sender<Vec<u8>>) -> Option<Self> {
        let count = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4);
        Self::with_threads(count, pool)
    }

    fn with_threads(count: usize, pool: &std_mpsc::Sender<Vec<u8>>) -> Option<Self> {
        if count < 2 {
            return None;
        }
        let (jobs, receiver) = std_mpsc::sync_channel::<(u64, ChunkJob)>(count);
        let receiver = Arc::new(Mutex::new(receiver));
        let (done_tx, done) = std_mpsc::channel();
        let mut threads = Vec::with_capacity(count);
        for _ in 0..count {
            let (receiver, done_tx, pool) = (receiver.clone(), done_tx.clone(), pool.clone());
            let spawned = std::thread::Builder::new()
                .name("tallow-chunk".into())
                .spawn(move || {
                    let mut checker = ChunkChecker::default();
                    loop {
                        // The lock is held only to take the next job.
                        let job = match receiver.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok((seq, job)) = job else { return };
                        let outcome = checker.run(&job);
                        // The file is let go before the writer hears of it.
                        let ChunkJob { buf, .. } = job;
                        let _ = pool.send(buf);
                        if done_tx.send((seq, outcome)).is_err() {
                            return;
                        }
                    }
                });
            // Fewer threads than cores still work; none means no workers.
            if let Ok(t) = spawned {
                threads.push(t);
            }
        }
        if threads.is_empty() {
            return None;
        }
        Some(ChunkWorkers {
            jobs: Some(jobs),
            done,
            threads,
            pending: VecDeque::new(),
            oldest: 0,
            early: BTreeMap::new(),
        })
    }

    /// Whether enough chunks are out to keep every worker busy: give one
    /// back before handing out another.
    pub fn full(&self) -> bool {
        self.pending.len() >= 2 * self.threads.len()
    }

    /// Hand `job` to a worker.
    pub fn submit(&mut self, job: ChunkJob) {
        let seq = self.oldest + self.pending.len() as u64;
        self.pending.push_back((job.header, job.len));
        let sent = self.jobs.as_ref().map(|jobs| jobs.send((seq, job)));
        if !matches!(sent, Some(Ok(()))) {
            // No worker left to take it: it fails when its turn comes.
            self.early.insert(seq, stopped());
        }
    }

    /// The oldest chunk handed out, once it is done (waiting for it);
    /// `None` if none is out.
    pub fn next_done(&mut self) -> Option<ChunkDone> {
        self.take_oldest(true)
    }

    /// The oldest chunk handed out, if it is done already.
    pub fn try_next_done(&mut self) -> Option<ChunkDone> {
        self.take_oldest(false)
    }

    fn take_oldest(&mut self, wait: bool) -> Option<ChunkDone> {
        let (header, len) = *self.pending.front()?;
        let outcome = loop {
            if let Some(outcome) = self.early.remove(&self.oldest) {
                break outcome;
            }
            let heard = if wait {
                self.done.recv().map_err(|_| true)
            } else {
                self.done.try_recv().map_err(|e| match e {
                    std_mpsc::TryRecvError::Empty => false,
                    std_mpsc::TryRecvError::Disconnected => true,
                })
            };
            match heard {
                Ok((seq, outcome)) => {
                    self.early.insert(seq, outcome);
                }
                // Every worker is gone (none holds the channel).
                Err(true) => break stopped(),
                Err(false) => return None,
            }
        };
        self.pending.pop_front();
        self.oldest += 1;
        Some(ChunkDone {
            header,
            len,
            outcome,
        })
    }
}

fn stopped() -> ChunkOutcome {
    ChunkOutcome::Failed(std::io::Error::other("a chunk writer thread stopped"))
}

impl Drop for ChunkWorkers {
    /// The workers finish the chunks they hold and stop: nothing is written
    /// after the writer is gone.
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u32 = 128 * 1024;

    /// A chunk of file 0 (of `chunks`) at `index`, its frame holding
    /// `data` (compressed if `zstd`), committed to `plain`.
    fn job(file: &Arc<File>, index: u64, plain: &[u8], zstd: bool, chunks: u64) -> ChunkJob {
        let digest = chunk_digest(chunks, CHUNK, index, plain);
        let data = if zstd {
            zstd::bulk::compress(plain, 1).unwrap()
        } else {
            plain.to_vec()
        };
        let mut buf = vec![0xee; 7];
        buf.extend_from_slice(&data);
        ChunkJob {
            header: ChunkHeader {
                file: 0,
                index,
                compressed: zstd,
                leaf: leaf_hash(0, index, &digest),
            },
            buf,
            start: 7,
            len: plain.len(),
            chunks,
            chunk_size: CHUNK,
            file: file.clone(),
        }
    }

    fn chunk_data(index: u64) -> Vec<u8> {
        (0..CHUNK as usize)
            .map(|i| (i as u64 * 31 + index * 7) as u8)
            .collect()
    }

    #[test]
    fn workers_write_every_chunk_at_its_offset_and_report_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create_new(dir.path().join("f")).unwrap());
        let (pool_tx, pool_rx) = std_mpsc::channel();
        let mut workers = ChunkWorkers::with_threads(3, &pool_tx).unwrap();
        let count = 40u64;
        let mut order = Vec::new();
        for index in 0..count {
            let data = chunk_data(index);
            while workers.full() {
                order.push(workers.next_done().unwrap());
            }
            workers.submit(job(&file, index, &data, index % 3 == 0, count));
            order.extend(workers.try_next_done());
        }
        while let Some(done) = workers.next_done() {
            order.push(done);
        }
        assert!(workers.try_next_done().is_none(), "nothing is left out");
        let indexes: Vec<u64> = order.iter().map(|d| d.header.index).collect();
        assert_eq!(indexes, (0..count).collect::<Vec<_>>());
        for done in &order {
            let expected = chunk_digest(
                count,
                CHUNK,
                done.header.index,
                &chunk_data(done.header.index),
            );
            assert!(matches!(done.outcome, ChunkOutcome::Written(d) if d == expected));
        }
        drop(workers);
        let written = std::fs::read(dir.path().join("f")).unwrap();
        let expected: Vec<u8> = (0..count).flat_map(chunk_data).collect();
        assert!(
            written == expected,
            "the file holds every chunk in its place"
        );
        assert_eq!(
            pool_rx.try_iter().count(),
            count as usize,
            "every buffer came back"
        );
    }

    #[test]
    fn a_chunk_that_fails_its_check_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create_new(dir.path().join("f")).unwrap());
        let (pool_tx, _pool_rx) = std_mpsc::channel();
        let mut workers = ChunkWorkers::with_threads(2, &pool_tx).unwrap();
        // Altered after the leaf was made.
        let mut altered = job(&file, 0, &chunk_data(0), false, 3);
        altered.buf[100] ^= 1;
        workers.submit(altered);
        // Declares more bytes than it inflates to.
        let mut short = job(&file, 1, &chunk_data(1), true, 3);
        short.len += 1;
        workers.submit(short);
        // Not zstd at all.
        let mut garbage = job(&file, 2, &chunk_data(2), true, 3);
        garbage.buf.truncate(garbage.start + 20);
        workers.submit(garbage);
        let outcomes: Vec<ChunkOutcome> =
            std::iter::from_fn(|| workers.next_done().map(|d| d.outcome)).collect();
        assert!(
            matches!(
                outcomes[..],
                [
                    ChunkOutcome::LeafMismatch,
                    ChunkOutcome::Undecompressable,
                    ChunkOutcome::Undecompressable
                ]
            ),
            "{outcomes:?}"
        );
        drop(workers);
        assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().len(), 0);
    }

    #[test]
    fn a_hole_extends_the_file_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create_new(dir.path().join("f")).unwrap();
        let zeros = vec![0u8; 1000];
        let digest = chunk_digest(2, CHUNK, 1, &zeros);
        let header = ChunkHeader {
            file: 0,
            index: 1,
            compressed: false,
            leaf: leaf_hash(0, 1, &digest),
        };
        let outcome =
            ChunkChecker::default().check_and_write(&header, &zeros, 1000, (2, CHUNK), &file, true);
        assert!(matches!(outcome, ChunkOutcome::Written(d) if d == digest));
        assert_eq!(file.metadata().unwrap().len(), u64::from(CHUNK) + 1000);
    }
}
