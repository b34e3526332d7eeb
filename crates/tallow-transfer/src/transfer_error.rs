//! Errors of the send and receive pipelines.

use std::path::PathBuf;

use tallow_protocol::machine::PeerMisbehaved;
use tallow_protocol::message::{AbortKind, MessageError};
use tallow_protocol::transport::TransportError;
use tallow_protocol::wire::Decode;
use tallow_protocol::Role;

/// How a transfer failed, with what the user needs to act.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The connection failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The receiver said no.
    #[error("the receiver declined the transfer: {0}")]
    Declined(String),
    /// The other side reported a failure and stopped.
    #[error("the {peer} stopped the transfer: {detail}")]
    PeerAborted {
        /// Who stopped.
        peer: Role,
        /// Their class of failure.
        kind: AbortKind,
        /// Their sentence.
        detail: String,
    },
    /// The other side sent something that does not decode.
    #[error("the {peer} sent an invalid message ({source}); the transfer was stopped")]
    BadMessage {
        /// Who sent it.
        peer: Role,
        /// What was wrong.
        source: MessageError,
    },
    /// The other side broke a rule of the protocol.
    #[error("the {peer} broke the protocol: {rule}; the transfer was stopped")]
    Protocol {
        /// Who broke it.
        peer: Role,
        /// Which rule, and what arrived.
        rule: PeerMisbehaved,
    },
    /// A task of this pipeline stopped unexpectedly (a bug, not the peer).
    #[error("{what} stopped unexpectedly ({detail}); please report this")]
    Internal {
        /// Which task.
        what: &'static str,
        /// How it ended.
        detail: String,
    },
    /// A file to send could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    ReadSource {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Files to send that cannot be read, found when listing them, before
    /// anything is offered.
    #[error(
        "cannot read {} of the files to send: {}; fix their permissions or leave them out (nothing was offered)",
        .files.len(),
        list_unreadable(.files)
    )]
    Unreadable {
        /// Each file and why.
        files: Vec<(PathBuf, std::io::Error)>,
    },
    /// The user stopped the transfer (Ctrl-C); the peer was told.
    #[error("cancelled (Ctrl-C); what arrived so far is kept: to resume, run the same `tallow send` again and receive with the new code it shows")]
    Cancelled,
    /// A file to send is not a regular file or has no usable name.
    #[error("cannot send {}: {reason}", .path.display())]
    Unsendable {
        /// The path given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file changed size while it was being sent.
    #[error("{} changed while it was being sent; send it again once nothing is writing to it", .path.display())]
    SourceChanged {
        /// The file.
        path: PathBuf,
    },
    /// A listed file is not the same file when opened to be sent: a link,
    /// another file or something else was put in its place, or it was
    /// modified, after the scan.
    #[error("{} was replaced or changed after it was listed for sending ({detail}); it was not sent: check the file and send again", .path.display())]
    SourceReplaced {
        /// The file, as named or found when listed.
        path: PathBuf,
        /// What is different.
        detail: String,
    },
    /// The output could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    WriteOutput {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The disk filled up while writing.
    #[error("the disk is full (writing {}): free some space and run the transfer again; what is already here is kept and will not be sent again", .path.display())]
    DiskFull {
        /// What was being written.
        path: PathBuf,
    },
    /// The output disk took nothing for a long time.
    #[error("the output disk accepted nothing for {} s: it may be hung (a network share that went away?); what was written is kept for resume", .waited.as_secs())]
    DiskStalled {
        /// How long it took nothing.
        waited: std::time::Duration,
    },
    /// The offer does not fit in the free space of the output folder.
    #[error("the offer needs {} but only {} is free in {}", crate::human_bytes(*.needed), crate::human_bytes(*.available), .dir.display())]
    NoSpace {
        /// Bytes still to write.
        needed: u64,
        /// Bytes free for us.
        available: u64,
        /// The output folder.
        dir: PathBuf,
    },
    /// A file with the same name is already in the output folder.
    #[error("{} already exists", .path.display())]
    DestinationExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A folder in the way is not a real folder inside the output folder.
    #[error("{} is a symbolic link or not a folder; refusing to write through it", .path.display())]
    UnsafeDestination {
        /// The offending path.
        path: PathBuf,
    },
    /// A chunk's plaintext did not match the hash the sender sent with it.
    #[error("chunk {chunk} of {path} did not verify (its BLAKE3 leaf hash differs from the sender's): the data was corrupted; it was not saved, send it again")]
    ChunkIntegrity {
        /// The file, as named in the manifest.
        path: String,
        /// The chunk index within the file.
        chunk: u64,
    },
    /// The Merkle root over all chunks differs from the sender's.
    #[error("the transfer's Merkle root differs from the sender's: the chunks received are not the ones the sender hashed; send again")]
    MerkleRoot,
    /// A received file did not match the sender's hash.
    #[error("{path} did not verify (its BLAKE3 hash differs from the sender's): the data was corrupted; it was not saved, send it again")]
    Integrity {
        /// The file, as named in the manifest.
        path: String,
    },
    /// What an earlier run received of a file was changed on disk since,
    /// and what the sender sent again for it (`Refetch`) is not what it
    /// sent then: the chunks from `chunk` on are fetched as new next time.
    #[error("the part of {path} received earlier was changed on disk since, and the sender's copy of chunk {chunk} is no longer what it sent then; nothing of it was placed: run the same transfer again to fetch it from there")]
    PartialAltered {
        /// The file, as named in the manifest.
        path: String,
        /// The first chunk that no longer matches.
        chunk: u64,
    },
}

impl TransferError {
    /// The class to report to the peer in an `Abort`.
    pub fn abort_kind(&self) -> AbortKind {
        match self {
            TransferError::Integrity { .. }
            | TransferError::ChunkIntegrity { .. }
            | TransferError::MerkleRoot => AbortKind::Integrity,
            TransferError::BadMessage { .. } | TransferError::Protocol { .. } => {
                AbortKind::Protocol
            }
            TransferError::Cancelled => AbortKind::Cancelled,
            _ => AbortKind::Io,
        }
    }

    /// `peer` broke `rule`.
    pub fn broke(peer: Role, rule: PeerMisbehaved) -> Self {
        TransferError::Protocol { peer, rule }
    }

    /// The peer's `Abort`, if `frame` (a decrypted frame from `peer`) is
    /// one.
    pub fn from_abort_frame(frame: &[u8], peer: Role) -> Option<Self> {
        match <tallow_protocol::message::Message as Decode>::decode_all(frame) {
            Ok(tallow_protocol::message::Message::Abort { kind, detail }) => {
                Some(TransferError::PeerAborted {
                    peer,
                    kind,
                    detail: detail.to_owned(),
                })
            }
            _ => None,
        }
    }

    /// Whether the peer should be told (not when it told us, or is gone).
    pub fn should_notify_peer(&self) -> bool {
        !matches!(
            self,
            TransferError::Transport(_)
                | TransferError::PeerAborted { .. }
                | TransferError::Declined(_)
        )
    }

    /// What the other side is told of this error: enough to act on, never
    /// our paths, folder layout or what exists here. Problems with the
    /// other side's data or messages are told as they are (they are its
    /// own); anything about our disk is one generic sentence.
    pub fn peer_detail(&self) -> String {
        match self {
            TransferError::NoSpace { .. } => "it has no space for this transfer".to_owned(),
            TransferError::DiskFull { .. } => "its disk is full".to_owned(),
            TransferError::Cancelled => CANCELLED_DETAIL.to_owned(),
            TransferError::PartialAltered { .. } => {
                "part of what it had received earlier was changed on its disk, and the file sent again for it no longer matches what was sent then; run the transfer again to send that part again".to_owned()
            }
            TransferError::WriteOutput { .. }
            | TransferError::DestinationExists { .. }
            | TransferError::UnsafeDestination { .. }
            | TransferError::DiskStalled { .. } => {
                "it could not write the files where it was asked to".to_owned()
            }
            // Our side's files by their name alone: the other side knows
            // the names from the offer, not where they are here.
            TransferError::ReadSource { path, .. } => {
                format!("it could not read {}", file_name(path))
            }
            TransferError::SourceChanged { path } | TransferError::SourceReplaced { path, .. } => {
                format!(
                    "{} changed while it was being sent; it can send again once nothing writes to it",
                    file_name(path)
                )
            }
            TransferError::Unreadable { .. } | TransferError::Unsendable { .. } => {
                "it could not read the files it offered".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// Whether this ends only the file it is about (the sender skips it
    /// and goes on), not the transfer: a file that changed while it was
    /// read, was replaced after it was listed, or could not be read.
    pub fn fails_one_file(&self) -> bool {
        matches!(
            self,
            TransferError::ReadSource { .. }
                | TransferError::SourceChanged { .. }
                | TransferError::SourceReplaced { .. }
        )
    }

    /// The `Abort` the other side should get for this error, if any.
    pub fn abort_notice(&self) -> Option<(AbortKind, String)> {
        self.should_notify_peer()
            .then(|| (self.abort_kind(), self.peer_detail()))
    }
}

/// What the other side's user reads when ours pressed Ctrl-C.
pub const CANCELLED_DETAIL: &str = "it was cancelled (Ctrl-C)";

/// The last component of `path`, for telling the other side which file.
fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map_or_else(|| "a file".to_owned(), |n| n.to_string_lossy().into_owned())
}

/// The first few unreadable files, with their reasons.
fn list_unreadable(files: &[(PathBuf, std::io::Error)]) -> String {
    const SHOWN: usize = 5;
    let mut out: Vec<String> = files
        .iter()
        .take(SHOWN)
        .map(|(path, e)| format!("{} ({})", path.display(), plain_io_error(e)))
        .collect();
    if files.len() > SHOWN {
        out.push(format!("and {} more", files.len() - SHOWN));
    }
    out.join(", ")
}

/// "Permission denied", without the " (os error 13)" tail.
fn plain_io_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_side_is_told_what_happened_but_never_our_paths() {
        let here = PathBuf::from("/home/alice/private/share/b.bin");
        let io = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let errors = [
            TransferError::ReadSource {
                path: here.clone(),
                source: io(),
            },
            TransferError::SourceChanged { path: here.clone() },
            TransferError::SourceReplaced {
                path: here.clone(),
                detail: "now a link".into(),
            },
            TransferError::Unreadable {
                files: vec![(here.clone(), io())],
            },
            TransferError::WriteOutput {
                path: here.clone(),
                source: io(),
            },
            TransferError::DestinationExists { path: here.clone() },
            TransferError::NoSpace {
                needed: 10,
                available: 1,
                dir: here.clone(),
            },
        ];
        for e in &errors {
            let told = e.peer_detail();
            assert!(!told.contains("/home/alice"), "{e:?} tells {told}");
            assert!(e.abort_notice().is_some(), "{e:?}");
        }
        // The sender's files by name, which the receiver has from the offer.
        assert!(errors[1].peer_detail().starts_with("b.bin changed"));
        assert_eq!(
            TransferError::Cancelled.abort_notice(),
            Some((AbortKind::Cancelled, CANCELLED_DETAIL.to_owned()))
        );
        assert_eq!(
            TransferError::Declined("no".into()).abort_notice(),
            None,
            "a refusal is not answered with an abort"
        );
    }
}
