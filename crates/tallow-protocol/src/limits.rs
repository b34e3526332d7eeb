//! Every bound and deadline of the protocol, in one place.
//!
//! `docs/protocol.md` lists them with the reasons for their values.

use std::time::Duration;

/// Version byte at the start of every handshake message. Version 2: the
/// offer lists what the sender left out. Version 3: chunk hashes are
/// BLAKE3 chaining values (each byte hashed once; chunk sizes are powers
/// of two). Version 4: the offer is a header and then pages of entries.
/// Version 5: the receiver may ask for damaged resumed chunks again
/// (`Refetch`). Version 6: on a relay, the two sides offer each other
/// addresses for a direct connection before anything else.
pub const PROTOCOL_VERSION: u8 = 6;

/// Largest handshake message (the biggest is ~3.3 KB).
pub const MAX_HANDSHAKE_MESSAGE: usize = 8 * 1024;

/// Default plaintext bytes per chunk.
pub const DEFAULT_CHUNK_SIZE: u32 = 1024 * 1024;
/// Smallest chunk size a manifest may declare (every chunk size is a power
/// of two, so a chunk is a whole subtree of the file's BLAKE3 tree).
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// Largest chunk size a manifest may declare.
pub const MAX_CHUNK_SIZE: u32 = 4 * 1024 * 1024;

/// Most entries (folders and files) in one offer: room for ten million
/// files and their folders.
pub const MAX_MANIFEST_ENTRIES: usize = 12_000_000;
/// Most bytes an offer's entries may take, encoded (their paths and fields;
/// about 10 million entries with 80-byte paths). The receiver holds the
/// entries in memory before its user is asked, so this bounds what a sender
/// can make it hold: a file takes 22 bytes plus its name there (packed,
/// [`crate::file_list::FileList`]) against 26 plus its name on the wire,
/// and the duplicate check 4 more; a folder about 80 with a short name,
/// which [`MAX_MANIFEST_ENTRIES`] caps at about 1 GiB.
pub const MAX_OFFER_BYTES: u64 = 1 << 30;
/// Most entries of each kind in one page of an offer.
pub const MAX_OFFER_PAGE_ENTRIES: usize = 8192;
/// About how many bytes of entries a sender puts in one page (a page is
/// one frame; the largest entry, a 4096-byte path, always fits).
pub const OFFER_PAGE_BYTES: usize = 1024 * 1024;
/// Most names of left-out entries (links, special files) an offer lists.
pub const MAX_LEFT_OUT_NAMES: usize = 64;
/// Longest relative path in a manifest, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest free-text reason in a message (decline, abort).
pub const MAX_REASON_LEN: usize = 1024;

/// Bytes a chunk message adds before its data (type, file, index, flags, leaf).
pub const CHUNK_HEADER_LEN: usize = 1 + 4 + 8 + 1 + 32;

/// Largest encrypted frame body (plaintext + tag) a reader will accept.
/// Checked against the length prefix before anything is allocated. The
/// largest frames are chunks (chunk + header + tag) and manifests.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Frames the sender may queue ahead of the socket (and the receiver ahead
/// of the disk).
pub const SEND_QUEUE_FRAMES: usize = 8;

/// Plaintext bytes the sender may have sent beyond the receiver's last ack.
/// Must cover bandwidth × round trip (32 MiB: 2.7 Gbit/s at 100 ms); it costs
/// no sender memory, since sent frames are not kept.
pub const DEFAULT_WINDOW: u64 = 32 * 1024 * 1024;

/// How long a side that stops may spend telling the other why (its last
/// `Abort`), so a peer that stopped reading cannot hold it.
pub const ABORT_NOTICE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long each side waits for each step.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// To open the TCP connection to the relay.
    pub connect: Duration,
    /// For the relay to pair us with the other side.
    pub pairing: Duration,
    /// For the whole handshake once paired.
    pub handshake: Duration,
    /// For any single read or write while data should be flowing.
    pub idle: Duration,
    /// For a human to accept or decline the offer.
    pub decision: Duration,
}

impl Deadlines {
    /// How long the receiver's disk may take nothing before the transfer
    /// gives up on it: ten idle periods, so a long sync of a large file is
    /// not mistaken for a hung disk (a hard-mounted network share that went
    /// away).
    pub fn disk_stall(&self) -> Duration {
        self.idle.saturating_mul(10)
    }
}

/// How often the receiver looks at the bytes written, to acknowledge them
/// if they changed.
pub const ACK_INTERVAL: Duration = Duration::from_millis(50);

/// The receiver acknowledges at least this often even when nothing changed
/// (while a large file is synced, say), so the sender knows it is alive.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            connect: Duration::from_secs(15),
            pairing: Duration::from_secs(15 * 60),
            handshake: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            decision: Duration::from_secs(10 * 60),
        }
    }
}
