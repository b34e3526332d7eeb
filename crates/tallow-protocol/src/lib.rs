//! Tallow's protocol: everything between the cryptography and the sockets.
//!
//! * [`handshake`]: the authenticated hybrid handshake as sans-IO state machines.
//! * [`rendezvous`]: the relay hello and status, the only bytes a relay reads.
//! * [`message`] and [`manifest`]: what travels inside the encrypted channel.
//! * [`path`]: rejecting unsafe names from a peer.
//! * [`placement`]: reaching the output folder's contents through handles.
//! * [`source`]: turning the sender's paths into a manifest.
//! * [`machine`]: the rules of the stream as sans-IO state machines (what
//!   each side may send when), fed by the pipelines.
//! * [`send`] and [`receive`]: the pipelines that stream files through any
//!   [`transport::FrameSink`] / [`transport::FrameSource`] pair.
//! * [`checkpoint`] and [`resume`]: the receiver's record of durable chunks,
//!   and how much of an offer is already here.
//! * [`limits`]: every bound and deadline.

pub mod cancel;
pub mod checkpoint;
pub mod handshake;
pub mod limits;
pub mod machine;
pub mod manifest;
pub mod message;
pub mod path;
pub mod placement;
pub mod receive;
pub mod rendezvous;
pub mod resume;
pub mod send;
pub mod source;
pub mod transport;
pub mod wire;

mod transfer_error;

pub use transfer_error::TransferError;

/// Which side of a transfer a party is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Offers and sends files.
    Sender,
    /// Accepts and writes files.
    Receiver,
}

impl Role {
    /// The other side.
    pub fn peer(self) -> Role {
        match self {
            Role::Sender => Role::Receiver,
            Role::Receiver => Role::Sender,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        })
    }
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
