//! Exit statuses, so scripts can tell failures apart. `docs/exit-codes.md`
//! is the table users read; keep them in step.

use tallow_net::NetError;
use tallow_protocol::handshake::HandshakeError;
use tallow_protocol::message::AbortKind;
use tallow_protocol::transport::TransportError;
use tallow_transfer::TransferError;

// 0: everything arrived and verified.
/// Anything not listed below.
pub const OTHER: u8 = 1;
/// Bad arguments (clap exits with this too).
pub const USAGE: u8 = 2;
/// Wrong code, failed key confirmation, or an invalid key: nothing was sent.
pub const AUTH: u8 = 3;
/// Data did not verify (hash, Merkle root, or an altered frame).
pub const INTEGRITY: u8 = 4;
/// The other side (or its user) declined or cancelled.
pub const REFUSED: u8 = 5;
/// A local file could not be read or written (disk full, exists, no space).
pub const IO: u8 = 6;
/// The relay, the network, or the other side could not be reached or went away.
pub const NETWORK: u8 = 7;
/// The transfer finished, but some files could not be sent (they changed
/// while they were read, or could not be read); every other file arrived
/// and verified.
pub const PARTIAL: u8 = 8;
/// This side's user pressed Ctrl-C (128 + SIGINT, as shells report it).
pub const CANCELLED: u8 = 130;

/// A mistake in how tallow was called, with what to do instead.
#[derive(Debug)]
pub struct UsageError(pub std::borrow::Cow<'static, str>);

impl UsageError {
    /// The mistake, said with what to do instead.
    pub fn new(message: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        UsageError(message.into())
    }
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The stable name of a status, for `--json`.
pub fn kind_name(code: u8) -> &'static str {
    match code {
        USAGE => "usage",
        AUTH => "auth",
        INTEGRITY => "integrity",
        REFUSED => "refused",
        IO => "io",
        NETWORK => "network",
        PARTIAL => "partial",
        CANCELLED => "cancelled",
        _ => "other",
    }
}

/// This side's user said no.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Some files could not be sent; the rest arrived and verified.
#[derive(Debug)]
pub struct Partial(pub Vec<tallow_transfer::FailedFile>);

impl std::fmt::Display for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 5;
        let n = self.0.len();
        write!(
            f,
            "{} could not be sent: ",
            if n == 1 {
                "1 file".to_owned()
            } else {
                format!("{n} files")
            }
        )?;
        for (i, failed) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{} ({})",
                crate::progress::display_name(&failed.path),
                failed.reason
            )?;
        }
        if n > SHOWN {
            write!(f, "; and {} more", n - SHOWN)?;
        }
        f.write_str(". Every other file arrived and was verified; run the same transfer again once nothing is writing to those: only they are sent")
    }
}

impl std::error::Error for Partial {}

/// Ctrl-C before any transfer began.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cancelled (Ctrl-C) before the transfer began; nothing was transferred")
    }
}

impl std::error::Error for Interrupted {}

/// The status for an error.
pub fn code_for(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<Interrupted>().is_some() {
        return CANCELLED;
    }
    if e.downcast_ref::<UsageError>().is_some() {
        return USAGE;
    }
    if e.downcast_ref::<Refused>().is_some() {
        return REFUSED;
    }
    if e.downcast_ref::<Partial>().is_some() {
        return PARTIAL;
    }
    if let Some(e) = e.downcast_ref::<NetError>() {
        return match e {
            NetError::Handshake(h) => handshake(h),
            NetError::Transport(t) => transport(t),
            NetError::NoRoute => USAGE,
            // The peer (key-confirmed) broke the protocol.
            NetError::RouteMessage { .. } => OTHER,
            _ => NETWORK,
        };
    }
    if let Some(e) = e.downcast_ref::<TransferError>() {
        return match e {
            TransferError::Transport(t) => transport(t),
            TransferError::Integrity { .. }
            | TransferError::ChunkIntegrity { .. }
            | TransferError::MerkleRoot => INTEGRITY,
            TransferError::Declined(_) => REFUSED,
            TransferError::PeerAborted { kind, .. } => match kind {
                AbortKind::Integrity => INTEGRITY,
                AbortKind::Cancelled => REFUSED,
                AbortKind::Io => IO,
                AbortKind::Protocol => OTHER,
            },
            TransferError::BadMessage { .. }
            | TransferError::Protocol { .. }
            | TransferError::Internal { .. } => OTHER,
            TransferError::ReadSource { .. }
            | TransferError::Unreadable { .. }
            | TransferError::Unsendable { .. }
            | TransferError::SourceChanged { .. }
            | TransferError::SourceReplaced { .. }
            | TransferError::WriteOutput { .. }
            | TransferError::DiskFull { .. }
            | TransferError::DiskStalled { .. }
            | TransferError::NoSpace { .. }
            | TransferError::DestinationExists { .. }
            | TransferError::UnsafeDestination { .. }
            | TransferError::PartialAltered { .. } => IO,
            TransferError::Cancelled => CANCELLED,
        };
    }
    if e.downcast_ref::<tallow_crypto::CodeError>().is_some() {
        return USAGE;
    }
    OTHER
}

fn handshake(e: &HandshakeError) -> u8 {
    match e {
        HandshakeError::UnsupportedVersion { .. } | HandshakeError::PeerRefusedVersion { .. } => {
            OTHER
        }
        _ => AUTH,
    }
}

fn transport(e: &TransportError) -> u8 {
    match e {
        TransportError::Crypto { .. } => INTEGRITY,
        _ => NETWORK,
    }
}
