//! The authenticated hybrid handshake as two sans-IO state machines.
//!
//! ```text
//! sender                                             receiver
//!   SenderHello   v | 1 | pake_A | x25519_S | mlkem_ek  ->
//!              <-  ReceiverHello v | 2 | pake_B | x25519_R | mlkem_ct | confirm_R
//!   SenderConfirm v | 3 | confirm_S                     ->
//! ```
//!
//! Both sides hash every field into the transcript, derive the session keys
//! from the PAKE key and both KEM secrets ([`tallow_crypto::key_schedule`]),
//! and prove possession with a confirmation tag before anything else moves.
//! The sender checks the receiver's tag first; on a mismatch it sends an
//! `Abort` and ends the session, so each session allows one online guess.
//! Either side answers an unknown version byte with an `Abort` naming its own.
//!
//! The machines only turn bytes into bytes; `tallow-net` moves them.

use rand_core::{CryptoRng, RngCore};
use tallow_crypto::code::CodePhrase;
use tallow_crypto::hybrid_kem::{self, KemInitiator, MLKEM_CT_LEN, MLKEM_EK_LEN, X25519_LEN};
use tallow_crypto::key_schedule::{ConfirmSide, SessionSecrets, Transcript, CONFIRM_TAG_LEN};
use tallow_crypto::pake::{self, PakeRole, PakeState, PAKE_MESSAGE_LEN};
use tallow_crypto::{CryptoError, FrameOpener, FrameSealer};

use crate::limits::PROTOCOL_VERSION;
use crate::wire::{DecodeError, WireReader};

const SENDER_HELLO: u8 = 1;
const RECEIVER_HELLO: u8 = 2;
const SENDER_CONFIRM: u8 = 3;
const ABORT: u8 = 0x7f;

/// Why a side gave up on the handshake; sent in an `Abort` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// The first byte named a protocol version we do not speak.
    UnsupportedVersion,
    /// The other side's confirmation tag did not match: different codes.
    KeyConfirmationFailed,
    /// A message did not parse or carried an invalid key.
    Malformed,
}

impl AbortReason {
    fn to_byte(self) -> u8 {
        match self {
            AbortReason::UnsupportedVersion => 1,
            AbortReason::KeyConfirmationFailed => 2,
            AbortReason::Malformed => 3,
        }
    }
}

/// How a handshake failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// The peer's first byte is a version we do not speak.
    #[error("the other side speaks tallow protocol version {peer}, this tallow speaks version {PROTOCOL_VERSION}; install the same tallow release on both sides")]
    UnsupportedVersion {
        /// The peer's version byte.
        peer: u8,
    },
    /// The peer said it does not speak our version.
    #[error("the other side does not speak tallow protocol version {PROTOCOL_VERSION} (it speaks version {peer}); install the same tallow release on both sides")]
    PeerRefusedVersion {
        /// The version the peer speaks.
        peer: u8,
    },
    /// Our check of the peer's confirmation tag failed.
    #[error("key confirmation failed: the other side used a different code (or someone tried to guess it); nothing was sent, check the code and start a new transfer")]
    WrongCode,
    /// The peer's check of our confirmation tag failed.
    #[error("the other side rejected our key confirmation: the code does not match theirs; nothing was sent, check the code and start a new transfer")]
    PeerRejectedCode,
    /// The peer aborted for a reason it reported.
    #[error("the other side aborted the handshake (our message looked malformed to it)")]
    PeerReportedMalformed,
    /// A message did not parse.
    #[error("malformed handshake message: {0}")]
    Malformed(#[from] DecodeError),
    /// A key in the peer's message is invalid (possible attack).
    #[error("the other side sent an invalid key ({0}); the handshake was aborted")]
    Crypto(#[from] CryptoError),
}

impl HandshakeError {
    /// What to tell the peer before closing, if anything.
    pub fn abort_reason(&self) -> Option<AbortReason> {
        match self {
            HandshakeError::UnsupportedVersion { .. } => Some(AbortReason::UnsupportedVersion),
            HandshakeError::WrongCode => Some(AbortReason::KeyConfirmationFailed),
            HandshakeError::Malformed(_) | HandshakeError::Crypto(_) => {
                Some(AbortReason::Malformed)
            }
            _ => None,
        }
    }
}

/// An `Abort` message: version, type, reason.
pub fn abort_message(reason: AbortReason) -> Vec<u8> {
    vec![PROTOCOL_VERSION, ABORT, reason.to_byte()]
}

/// Read the version and type; map an `Abort` to the error it reports.
fn open_message(bytes: &[u8], expected: u8) -> Result<WireReader<'_>, HandshakeError> {
    let mut r = WireReader::new(bytes);
    let version = r.u8("version")?;
    let kind = r.u8("message type")?;
    if kind == ABORT {
        return Err(match r.u8("abort reason")? {
            1 => HandshakeError::PeerRefusedVersion { peer: version },
            2 => HandshakeError::PeerRejectedCode,
            _ => HandshakeError::PeerReportedMalformed,
        });
    }
    if version != PROTOCOL_VERSION {
        return Err(HandshakeError::UnsupportedVersion { peer: version });
    }
    if kind != expected {
        return Err(DecodeError::UnknownType(kind).into());
    }
    Ok(r)
}

/// Keys for the encrypted channel after a successful handshake.
pub struct SessionKeys {
    /// Seals frames we send.
    pub sealer: FrameSealer,
    /// Opens frames we receive.
    pub opener: FrameOpener,
    /// Short authentication string, equal on both sides (`--verify`).
    pub short_authentication_string: String,
    /// Proves a direct connection's other end is this session's peer.
    pub direct_path: tallow_crypto::DirectPathKey,
}

impl SessionKeys {
    fn new(secrets: &SessionSecrets, role: PakeRole) -> Self {
        let (send, recv) = match role {
            PakeRole::Sender => (&secrets.sender_to_receiver, &secrets.receiver_to_sender),
            PakeRole::Receiver => (&secrets.receiver_to_sender, &secrets.sender_to_receiver),
        };
        SessionKeys {
            sealer: FrameSealer::new(send),
            opener: FrameOpener::new(recv),
            short_authentication_string: secrets.short_authentication_string(),
            direct_path: secrets.direct_path_key(),
        }
    }
}

/// The sender's side, waiting for `ReceiverHello`.
pub struct SenderHandshake {
    pake: PakeState,
    kem: KemInitiator,
    transcript: Transcript,
}

impl SenderHandshake {
    /// Start: returns the state and `SenderHello` to send.
    pub fn start(code: &CodePhrase, rng: &mut (impl RngCore + CryptoRng)) -> (Self, Vec<u8>) {
        let (pake, pake_msg) = pake::start(PakeRole::Sender, code.password(), rng);
        let (kem, offer) = hybrid_kem::initiate(rng);
        let mut transcript = Transcript::new(PROTOCOL_VERSION, &code.room_id());
        absorb_sender_hello(&mut transcript, &pake_msg, &offer.x25519, &offer.mlkem_ek);
        let mut msg = Vec::with_capacity(2 + PAKE_MESSAGE_LEN + X25519_LEN + MLKEM_EK_LEN);
        msg.extend_from_slice(&[PROTOCOL_VERSION, SENDER_HELLO]);
        msg.extend_from_slice(&pake_msg);
        msg.extend_from_slice(&offer.x25519);
        msg.extend_from_slice(&offer.mlkem_ek);
        (
            SenderHandshake {
                pake,
                kem,
                transcript,
            },
            msg,
        )
    }

    /// Process `ReceiverHello`. On success returns the keys and
    /// `SenderConfirm` to send; on failure the caller sends
    /// [`abort_message`] for [`HandshakeError::abort_reason`] and stops.
    pub fn finish(mut self, msg: &[u8]) -> Result<(SessionKeys, Vec<u8>), HandshakeError> {
        let mut r = open_message(msg, RECEIVER_HELLO)?;
        let pake_msg = r.bytes(PAKE_MESSAGE_LEN, "PAKE message")?;
        let x25519 = r.array::<X25519_LEN>("X25519 key")?;
        let ct = r.bytes(MLKEM_CT_LEN, "ML-KEM ciphertext")?;
        let confirm = r.bytes(CONFIRM_TAG_LEN, "confirmation")?;
        r.finish()?;
        absorb_receiver_hello(&mut self.transcript, pake_msg, &x25519, ct);
        let pake_key = self.pake.finish(pake_msg)?;
        let hybrid = self.kem.finish(&x25519, ct)?;
        let secrets = SessionSecrets::derive(self.transcript.hash(), &pake_key, &hybrid);
        if !secrets.verify_confirmation(ConfirmSide::Receiver, confirm) {
            return Err(HandshakeError::WrongCode);
        }
        let mut reply = vec![PROTOCOL_VERSION, SENDER_CONFIRM];
        reply.extend_from_slice(&secrets.confirmation_tag(ConfirmSide::Sender));
        Ok((SessionKeys::new(&secrets, PakeRole::Sender), reply))
    }
}

/// The receiver's side, waiting for `SenderConfirm`.
pub struct ReceiverHandshake {
    secrets: SessionSecrets,
}

impl ReceiverHandshake {
    /// Answer `SenderHello`: returns the state and `ReceiverHello` to send.
    pub fn respond(
        code: &CodePhrase,
        msg: &[u8],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let mut r = open_message(msg, SENDER_HELLO)?;
        let peer_pake = r.bytes(PAKE_MESSAGE_LEN, "PAKE message")?;
        let peer_x25519 = r.array::<X25519_LEN>("X25519 key")?;
        let ek = r.bytes(MLKEM_EK_LEN, "ML-KEM key")?;
        r.finish()?;
        // Check the peer's point before doing any work with it.
        pake::validate_peer_message(PakeRole::Receiver, peer_pake)?;
        let (pake, pake_msg) = pake::start(PakeRole::Receiver, code.password(), rng);
        let (response, hybrid) = hybrid_kem::respond(&peer_x25519, ek, rng)?;
        let mut transcript = Transcript::new(PROTOCOL_VERSION, &code.room_id());
        absorb_sender_hello(&mut transcript, peer_pake, &peer_x25519, ek);
        absorb_receiver_hello(
            &mut transcript,
            &pake_msg,
            &response.x25519,
            &response.mlkem_ct,
        );
        let pake_key = pake.finish(peer_pake)?;
        let secrets = SessionSecrets::derive(transcript.hash(), &pake_key, &hybrid);
        let mut reply =
            Vec::with_capacity(2 + PAKE_MESSAGE_LEN + X25519_LEN + MLKEM_CT_LEN + CONFIRM_TAG_LEN);
        reply.extend_from_slice(&[PROTOCOL_VERSION, RECEIVER_HELLO]);
        reply.extend_from_slice(&pake_msg);
        reply.extend_from_slice(&response.x25519);
        reply.extend_from_slice(&response.mlkem_ct);
        reply.extend_from_slice(&secrets.confirmation_tag(ConfirmSide::Receiver));
        Ok((ReceiverHandshake { secrets }, reply))
    }

    /// Check `SenderConfirm`; only then are the keys released.
    pub fn finish(self, msg: &[u8]) -> Result<SessionKeys, HandshakeError> {
        let mut r = open_message(msg, SENDER_CONFIRM)?;
        let confirm = r.bytes(CONFIRM_TAG_LEN, "confirmation")?;
        r.finish()?;
        if !self
            .secrets
            .verify_confirmation(ConfirmSide::Sender, confirm)
        {
            return Err(HandshakeError::WrongCode);
        }
        Ok(SessionKeys::new(&self.secrets, PakeRole::Receiver))
    }
}

fn absorb_sender_hello(t: &mut Transcript, pake: &[u8], x25519: &[u8], ek: &[u8]) {
    t.absorb(b"sender pake", pake);
    t.absorb(b"sender x25519", x25519);
    t.absorb(b"sender mlkem ek", ek);
}

fn absorb_receiver_hello(t: &mut Transcript, pake: &[u8], x25519: &[u8], ct: &[u8]) {
    t.absorb(b"receiver pake", pake);
    t.absorb(b"receiver x25519", x25519);
    t.absorb(b"receiver mlkem ct", ct);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn code(s: &str) -> CodePhrase {
        CodePhrase::parse(s).unwrap()
    }

    fn roundtrip(sealer: &mut FrameSealer, opener: &mut FrameOpener, msg: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 4];
        f.extend_from_slice(msg);
        sealer.seal(&mut f).unwrap();
        let mut body = f[4..].to_vec();
        opener.open(f[..4].try_into().unwrap(), &mut body).unwrap();
        body
    }

    /// Runs a full handshake, returning both sides' keys.
    fn run(
        sender_code: &str,
        receiver_code: &str,
    ) -> Result<(SessionKeys, SessionKeys), HandshakeError> {
        let (s, m1) = SenderHandshake::start(&code(sender_code), &mut OsRng);
        let (r, m2) = ReceiverHandshake::respond(&code(receiver_code), &m1, &mut OsRng)?;
        let (sk, m3) = s.finish(&m2)?;
        let rk = r.finish(&m3)?;
        Ok((sk, rk))
    }

    #[test]
    fn same_code_gives_working_keys_both_ways_and_equal_sas() {
        let (mut s, mut r) = run("12-alpha-bravo-charlie", "12-alpha-bravo-charlie").unwrap();
        assert_eq!(
            roundtrip(&mut s.sealer, &mut r.opener, b"to receiver"),
            b"to receiver"
        );
        assert_eq!(
            roundtrip(&mut r.sealer, &mut s.opener, b"to sender"),
            b"to sender"
        );
        assert_eq!(s.short_authentication_string, r.short_authentication_string);
        assert_eq!(s.short_authentication_string.len(), 11);
    }

    #[test]
    fn every_session_has_fresh_keys() {
        let (mut s1, _) = run("12-a-b-c", "12-a-b-c").unwrap();
        let (_, mut r2) = run("12-a-b-c", "12-a-b-c").unwrap();
        let mut f = vec![0u8; 4];
        f.extend_from_slice(b"hello");
        s1.sealer.seal(&mut f).unwrap();
        let mut body = f[4..].to_vec();
        assert!(r2
            .opener
            .open(f[..4].try_into().unwrap(), &mut body)
            .is_err());
        assert_ne!(
            run("12-a-b-c", "12-a-b-c")
                .unwrap()
                .0
                .short_authentication_string,
            s1.short_authentication_string
        );
    }

    #[test]
    fn wrong_code_fails_confirmation_and_the_receiver_is_told() {
        let (s, m1) = SenderHandshake::start(&code("12-alpha-bravo-charlie"), &mut OsRng);
        let (r, m2) =
            ReceiverHandshake::respond(&code("12-alpha-bravo-delta"), &m1, &mut OsRng).unwrap();
        let err = s.finish(&m2).err().unwrap();
        assert_eq!(err, HandshakeError::WrongCode);
        let abort = abort_message(err.abort_reason().unwrap());
        assert_eq!(
            r.finish(&abort).err(),
            Some(HandshakeError::PeerRejectedCode)
        );
    }

    #[test]
    fn receiver_rejects_a_forged_sender_confirmation() {
        let (_, m1) = SenderHandshake::start(&code("12-a-b-c"), &mut OsRng);
        let (r, _) = ReceiverHandshake::respond(&code("12-a-b-c"), &m1, &mut OsRng).unwrap();
        let mut forged = vec![PROTOCOL_VERSION, SENDER_CONFIRM];
        forged.extend_from_slice(&[0u8; 32]);
        assert_eq!(r.finish(&forged).err(), Some(HandshakeError::WrongCode));
    }

    #[test]
    fn any_tampered_byte_in_either_hello_fails_the_handshake() {
        // Flip one byte at a spread of offsets in each message.
        for offset in (2..2 + PAKE_MESSAGE_LEN + X25519_LEN + MLKEM_EK_LEN).step_by(97) {
            let (s, mut m1) = SenderHandshake::start(&code("12-a-b-c"), &mut OsRng);
            m1[offset] ^= 0x40;
            match ReceiverHandshake::respond(&code("12-a-b-c"), &m1, &mut OsRng) {
                Err(_) => {}
                Ok((_, m2)) => assert!(s.finish(&m2).is_err(), "m1 offset {offset}"),
            }
        }
        for offset in (2..2 + PAKE_MESSAGE_LEN + X25519_LEN + MLKEM_CT_LEN + 32).step_by(97) {
            let (s, m1) = SenderHandshake::start(&code("12-a-b-c"), &mut OsRng);
            let (_, mut m2) =
                ReceiverHandshake::respond(&code("12-a-b-c"), &m1, &mut OsRng).unwrap();
            m2[offset] ^= 0x40;
            assert!(s.finish(&m2).is_err(), "m2 offset {offset}");
        }
    }

    #[test]
    fn unknown_version_is_refused_with_a_clear_error_and_reported_back() {
        let (s, mut m1) = SenderHandshake::start(&code("12-a-b-c"), &mut OsRng);
        m1[0] = 9;
        let err = ReceiverHandshake::respond(&code("12-a-b-c"), &m1, &mut OsRng)
            .err()
            .unwrap();
        assert_eq!(err, HandshakeError::UnsupportedVersion { peer: 9 });
        assert!(err.to_string().contains("version 9"));
        let reply = abort_message(err.abort_reason().unwrap());
        assert_eq!(
            s.finish(&reply).err(),
            Some(HandshakeError::PeerRefusedVersion {
                peer: PROTOCOL_VERSION
            })
        );
    }

    #[test]
    fn identity_pake_point_from_a_relay_is_rejected_before_any_key_exists() {
        let (_, mut m1) = SenderHandshake::start(&code("12-a-b-c"), &mut OsRng);
        // Replace the sender's PAKE point with the identity (0x01, 0...).
        m1[3..3 + 32].fill(0);
        m1[3] = 1;
        assert_eq!(
            ReceiverHandshake::respond(&code("12-a-b-c"), &m1, &mut OsRng).err(),
            Some(HandshakeError::Crypto(CryptoError::SmallOrderPakePoint))
        );
        // And an all-zero X25519 key.
        let (_, mut m1) = SenderHandshake::start(&code("12-a-b-c"), &mut OsRng);
        let x = 2 + PAKE_MESSAGE_LEN;
        m1[x..x + 32].fill(0);
        assert_eq!(
            ReceiverHandshake::respond(&code("12-a-b-c"), &m1, &mut OsRng).err(),
            Some(HandshakeError::Crypto(CryptoError::NonContributoryX25519))
        );
    }

    #[test]
    fn truncated_and_garbage_messages_are_malformed() {
        let (_, m1) = SenderHandshake::start(&code("12-a-b-c"), &mut OsRng);
        for len in [0, 1, 2, 40, m1.len() - 1] {
            assert!(matches!(
                ReceiverHandshake::respond(&code("12-a-b-c"), &m1[..len], &mut OsRng),
                Err(HandshakeError::Malformed(_))
            ));
        }
        let mut long = m1.clone();
        long.push(0);
        assert!(matches!(
            ReceiverHandshake::respond(&code("12-a-b-c"), &long, &mut OsRng),
            Err(HandshakeError::Malformed(DecodeError::TrailingBytes(1)))
        ));
    }
}
