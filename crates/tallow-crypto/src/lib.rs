//! Cryptography for Tallow, with no I/O.
//!
//! * [`code`]: the code phrase (`NNNN-word-word-word`), its wordlist and the
//!   room id derived from the nameplate alone.
//! * [`pake`]: SPAKE2 over the code phrase, with the peer's message checked for
//!   small-order points before anything is derived from it.
//! * [`hybrid_kem`]: ephemeral ML-KEM-1024 and X25519, rejecting an all-zero
//!   X25519 secret.
//! * [`key_schedule`]: the transcript hash, HKDF over all three secrets,
//!   key-confirmation tags and the short authentication string.
//! * [`frame_cipher`]: AES-256-GCM frames with per-direction counter nonces.
//! * [`file_hash`]: chunk digests (BLAKE3 chaining values) and a file's
//!   BLAKE3 composed from them, so each byte is hashed once.
//! * [`merkle`]: the Merkle tree over chunk hashes that closes a transfer.
//!
//! The handshake that strings these together is a state machine in
//! `tallow-protocol`; `docs/protocol.md` describes the construction.

pub mod code;
pub mod file_hash;
pub mod frame_cipher;
pub mod hybrid_kem;
pub mod key_schedule;
pub mod merkle;
pub mod pake;
pub mod wordlist;

pub use code::{CodeError, CodePhrase, RoomId};
pub use frame_cipher::{FrameOpener, FrameSealer, FRAME_HEADER_LEN, TAG_LEN};
pub use key_schedule::{DirectPathKey, DIRECT_PROOF_LEN};
pub use wordlist::{wordlist, WORDLIST_LEN};

/// Errors from the cryptographic layer. None of them carries secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The peer's PAKE message is not 33 bytes of role tag and point.
    #[error("the peer's PAKE message is malformed")]
    MalformedPakeMessage,
    /// The peer's PAKE message is the identity or another small-order point,
    /// which would let a party without the code complete the exchange.
    #[error("the peer's PAKE message is a small-order point (an attack, or a broken peer)")]
    SmallOrderPakePoint,
    /// The peer's X25519 public key yields an all-zero shared secret.
    #[error("the peer's X25519 key is a low-order point (an attack, or a broken peer)")]
    NonContributoryX25519,
    /// The peer's ML-KEM-1024 key or ciphertext has the wrong length.
    #[error("the peer's ML-KEM message is malformed")]
    MalformedKemMessage,
    /// A frame failed authentication: it was altered, replayed, reordered or
    /// encrypted under another key.
    #[error(
        "a frame failed authentication (altered, replayed, reordered or truncated in transit)"
    )]
    FrameAuthentication,
    /// A frame is shorter than the authentication tag or longer than a frame may be.
    #[error("a frame has an impossible length ({0} bytes)")]
    FrameLength(usize),
    /// 2^64 frames were sent under one key; the session must end.
    #[error("frame counter exhausted; start a new session")]
    CounterExhausted,
}
