//! Tallow's protocol: everything between the cryptography and the sockets.
//!
//! * [`handshake`]: the authenticated hybrid handshake as sans-IO state machines.
//! * [`rendezvous`]: the relay hello and status, the only bytes a relay reads.
//! * [`message`] and [`manifest`]: what travels inside the encrypted channel.
//! * [`path`]: rejecting unsafe names from a peer.
//! * [`source`]: turning the sender's paths into a manifest.
//! * [`send`] and [`receive`]: the pipelines that stream files through any
//!   [`transport::FrameSink`] / [`transport::FrameSource`] pair.
//! * [`checkpoint`] and [`resume`]: the receiver's record of durable chunks,
//!   and how much of an offer is already here.
//! * [`limits`]: every bound and deadline.

pub mod checkpoint;
pub mod handshake;
pub mod limits;
pub mod manifest;
pub mod message;
pub mod path;
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
    /// `bytes` of `total` were already at the receiver from an interrupted
    /// earlier transfer and will not be sent again.
    Resumed {
        /// Bytes already there.
        bytes: u64,
        /// Bytes in the whole transfer.
        total: u64,
    },
}
