//! Tallow's transfers on disk: the send and receive pipelines that stream
//! files through any [`FrameSink`](tallow_protocol::transport::FrameSink) /
//! [`FrameSource`](tallow_protocol::transport::FrameSource) pair, driving the
//! protocol's machines ([`tallow_protocol::machine`]) with the file system.
//! It knows nothing of sockets or terminals.
//!
//! * [`source`]: turning the sender's paths into a manifest, and opening
//!   exactly the files that were listed.
//! * [`send`]: reader thread, compression workers, sealing in order, the
//!   window; `compression` chooses which chunks to compress and the zstd
//!   level, following the link.
//! * [`receive`]: checking the stream, the writer thread, verifying and
//!   placing files; `chunk_writer` checks and writes big chunks on the
//!   other cores, results taken back in order.
//! * [`placement`]: reaching the output folder's contents through handles.
//! * [`checkpoint`] and [`resume`]: the receiver's record of durable chunks,
//!   and how much of an offer is already here.
//! * [`cancel`]: a person stopping a transfer.
//! * [`notice`]: telling the other side why we stop.

pub mod cancel;
pub mod checkpoint;
mod chunk_writer;
mod compression;
pub mod notice;
pub mod placement;
pub mod receive;
pub mod resume;
pub mod send;
pub mod source;

mod transfer_error;

pub use transfer_error::TransferError;

/// A file that could not be sent after all (it changed while it was read,
/// or could not be read), while the others went: the transfer succeeded
/// in part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedFile {
    /// The file, as named in the offer.
    pub path: String,
    /// Its size in the offer.
    pub size: u64,
    /// Why, for this side's user.
    pub reason: String,
}

/// `len` zero bytes (at most the largest chunk): the plaintext of a hole,
/// for its digest. Made on first use only.
pub(crate) fn zeros(len: usize) -> &'static [u8] {
    static ZEROS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let zeros = ZEROS.get_or_init(|| vec![0; tallow_protocol::limits::MAX_CHUNK_SIZE as usize]);
    &zeros[..len.min(zeros.len())]
}

/// Progress reported by the pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The receiver accepted the offer: the transfer's clock starts here,
    /// not while the receiver was reading the offer.
    Accepted,
    /// `done` of `total` plaintext bytes have been sent / written.
    Bytes {
        /// Bytes so far.
        done: u64,
        /// Bytes in the whole transfer.
        total: u64,
    },
    /// File `index` of the manifest is complete (verified, on the receiver).
    FileComplete {
        /// Index into the manifest.
        index: usize,
    },
    /// The receiver keeps `files` it already has (`bytes` in all) and does
    /// not want them sent.
    Skipped {
        /// How many files.
        files: u64,
        /// Their bytes.
        bytes: u64,
    },
    /// `bytes` of file `index`, received by an earlier run, were found
    /// changed on the receiver's disk: they are sent again at the end.
    Refetching {
        /// Index into the manifest.
        index: usize,
        /// How much is sent again.
        bytes: u64,
    },
    /// `bytes` of `total` were already at the receiver from an interrupted
    /// earlier transfer and will not be sent again.
    Resumed {
        /// Bytes already there.
        bytes: u64,
        /// Bytes in the whole transfer.
        total: u64,
    },
}

/// `1536` → `1.5 KiB`: sizes for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(10 * 1024 * 1024), "10.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }
}
