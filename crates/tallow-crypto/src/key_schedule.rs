//! Transcript hash, key derivation, key confirmation and the short
//! authentication string.
//!
//! ```text
//! TH  = SHA-256 over "tallow handshake v1", the room id and every handshake
//!       message field, each length-prefixed
//! PRK = HKDF-Extract(salt = TH, IKM = pake_key || x25519_ss || mlkem_ss)
//! k   = HKDF-Expand(PRK, label) for each of the labels below
//! ```
//!
//! Every output depends on all three secrets and on the whole transcript, so
//! an attacker must break the PAKE (know the code) *and* both X25519 and
//! ML-KEM-1024 to learn a key.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::code::RoomId;
use crate::hybrid_kem::HybridSecrets;

/// Length of a key-confirmation tag.
pub const CONFIRM_TAG_LEN: usize = 32;

/// Running hash of everything both sides said in the handshake.
#[derive(Clone)]
pub struct Transcript(Sha256);

impl Transcript {
    /// Start a transcript bound to the protocol, its version and the room.
    pub fn new(version: u8, room: &RoomId) -> Self {
        let mut t = Transcript(Sha256::new());
        t.absorb(b"protocol", b"tallow handshake v1");
        t.absorb(b"version", &[version]);
        t.absorb(b"room", &room.0);
        t
    }

    /// Add a labelled field; labels and data are length-prefixed so no two
    /// sequences of fields hash alike.
    pub fn absorb(&mut self, label: &[u8], data: &[u8]) {
        self.0.update((label.len() as u64).to_be_bytes());
        self.0.update(label);
        self.0.update((data.len() as u64).to_be_bytes());
        self.0.update(data);
    }

    /// The hash so far.
    pub fn hash(&self) -> [u8; 32] {
        self.0.clone().finalize().into()
    }
}

/// Keys for one session, derived once both sides know every secret.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SessionSecrets {
    /// AES-256-GCM key for frames from sender to receiver.
    pub sender_to_receiver: [u8; 32],
    /// AES-256-GCM key for frames from receiver to sender.
    pub receiver_to_sender: [u8; 32],
    confirm_sender: [u8; 32],
    confirm_receiver: [u8; 32],
    sas: [u8; 8],
    direct_path: [u8; 32],
    transcript: [u8; 32],
}

/// Which side produced a confirmation tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmSide {
    /// The sender's tag (third handshake message).
    Sender,
    /// The receiver's tag (second handshake message).
    Receiver,
}

impl SessionSecrets {
    /// Derive every session key from the transcript hash and the three secrets.
    pub fn derive(transcript: [u8; 32], pake: &[u8; 32], hybrid: &HybridSecrets) -> Self {
        let mut ikm = Zeroizing::new([0u8; 96]);
        ikm[..32].copy_from_slice(pake);
        ikm[32..64].copy_from_slice(&*hybrid.x25519);
        ikm[64..].copy_from_slice(&*hybrid.mlkem);
        let hk = Hkdf::<Sha256>::new(Some(&transcript), &*ikm);
        let mut s = SessionSecrets {
            sender_to_receiver: [0; 32],
            receiver_to_sender: [0; 32],
            confirm_sender: [0; 32],
            confirm_receiver: [0; 32],
            sas: [0; 8],
            direct_path: [0; 32],
            transcript,
        };
        // Output lengths are far below HKDF's 255*32 limit, so expand cannot fail.
        let parts: [(&[u8], &mut [u8]); 6] = [
            (b"tallow v1 key sender->receiver", &mut s.sender_to_receiver),
            (b"tallow v1 key receiver->sender", &mut s.receiver_to_sender),
            (b"tallow v1 confirm sender", &mut s.confirm_sender),
            (b"tallow v1 confirm receiver", &mut s.confirm_receiver),
            (b"tallow v1 short authentication string", &mut s.sas),
            (b"tallow v1 direct path", &mut s.direct_path),
        ];
        for (label, out) in parts {
            hk.expand(label, out)
                .unwrap_or_else(|_| unreachable!("HKDF output of at most 32 bytes"));
        }
        s
    }

    /// The tag a side sends to prove it derived the same keys.
    pub fn confirmation_tag(&self, side: ConfirmSide) -> [u8; CONFIRM_TAG_LEN] {
        let (key, label): (&[u8; 32], &[u8]) = match side {
            ConfirmSide::Sender => (&self.confirm_sender, b"sender confirms"),
            ConfirmSide::Receiver => (&self.confirm_receiver, b"receiver confirms"),
        };
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(label);
        mac.update(&self.transcript);
        mac.finalize().into_bytes().into()
    }

    /// Check a peer's tag in constant time.
    pub fn verify_confirmation(&self, side: ConfirmSide, tag: &[u8]) -> bool {
        let expected = self.confirmation_tag(side);
        tag.len() == CONFIRM_TAG_LEN && bool::from(expected.ct_eq(tag))
    }

    /// The key that proves, on a direct connection, that the other end is
    /// the peer of this session ([`DirectPathKey`]).
    pub fn direct_path_key(&self) -> DirectPathKey {
        DirectPathKey {
            key: self.direct_path,
        }
    }

    /// The short authentication string: nine digits, shown as `123 456 789`.
    /// Equal on both sides exactly when both hold the same session keys.
    pub fn short_authentication_string(&self) -> String {
        let n = u64::from_be_bytes(self.sas) % 1_000_000_000;
        let d = format!("{n:09}");
        format!("{} {} {}", &d[..3], &d[3..6], &d[6..])
    }
}

/// Length of a direct-path proof.
pub const DIRECT_PROOF_LEN: usize = 32;

/// Proves, on a TCP connection opened straight to the peer (no relay), that
/// the other end holds this session's keys, without a new guess at the
/// code: each end sends a fresh nonce, then
/// `HMAC-SHA256(key, "tallow direct proof" | its role | its nonce | the
/// other's nonce)`. The nonces make every proof good for one connection
/// only; the role keeps an end from passing the other's proof (or its own,
/// reflected) off as its peer's.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DirectPathKey {
    key: [u8; 32],
}

impl DirectPathKey {
    /// The proof an end with role label `role` sends, having sent `ours`
    /// and read `theirs`.
    pub fn proof(&self, role: u8, ours: &[u8; 32], theirs: &[u8; 32]) -> [u8; DIRECT_PROOF_LEN] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"tallow direct proof");
        mac.update(&[role]);
        mac.update(ours);
        mac.update(theirs);
        mac.finalize().into_bytes().into()
    }

    /// Check, in constant time, the proof of the end with role label
    /// `role` that sent `theirs` and read `ours`.
    pub fn verify(&self, role: u8, theirs: &[u8; 32], ours: &[u8; 32], proof: &[u8]) -> bool {
        let expected = self.proof(role, theirs, ours);
        proof.len() == DIRECT_PROOF_LEN && bool::from(expected.ct_eq(proof))
    }
}

impl std::fmt::Debug for DirectPathKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectPathKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(p: u8, x: u8, m: u8, t: u8) -> SessionSecrets {
        let hybrid = HybridSecrets {
            x25519: Zeroizing::new([x; 32]),
            mlkem: Zeroizing::new([m; 32]),
        };
        SessionSecrets::derive([t; 32], &[p; 32], &hybrid)
    }

    #[test]
    fn every_input_changes_every_key() {
        let base = secrets(1, 2, 3, 4);
        for other in [
            secrets(9, 2, 3, 4),
            secrets(1, 9, 3, 4),
            secrets(1, 2, 9, 4),
            secrets(1, 2, 3, 9),
        ] {
            assert_ne!(base.sender_to_receiver, other.sender_to_receiver);
            assert_ne!(base.receiver_to_sender, other.receiver_to_sender);
            assert_ne!(
                base.confirmation_tag(ConfirmSide::Sender),
                other.confirmation_tag(ConfirmSide::Sender)
            );
            assert_ne!(
                base.short_authentication_string(),
                other.short_authentication_string()
            );
        }
    }

    #[test]
    fn directions_and_confirmations_use_distinct_keys() {
        let s = secrets(1, 2, 3, 4);
        assert_ne!(s.sender_to_receiver, s.receiver_to_sender);
        let ts = s.confirmation_tag(ConfirmSide::Sender);
        let tr = s.confirmation_tag(ConfirmSide::Receiver);
        assert_ne!(ts, tr);
        assert!(s.verify_confirmation(ConfirmSide::Sender, &ts));
        assert!(!s.verify_confirmation(ConfirmSide::Sender, &tr));
        assert!(!s.verify_confirmation(ConfirmSide::Sender, &ts[..31]));
    }

    #[test]
    fn direct_proofs_bind_key_role_and_both_nonces() {
        let s = secrets(1, 2, 3, 4);
        let key = s.direct_path_key();
        assert_ne!(key.key, s.sender_to_receiver);
        assert_ne!(key.key, s.receiver_to_sender);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let p = key.proof(1, &a, &b);
        assert!(key.verify(1, &a, &b, &p));
        // Another role, swapped or other nonces, another session: refused.
        assert!(!key.verify(2, &a, &b, &p));
        assert!(!key.verify(1, &b, &a, &p));
        assert!(!key.verify(1, &a, &[3; 32], &p));
        assert!(!secrets(9, 2, 3, 4).direct_path_key().verify(1, &a, &b, &p));
        assert!(!key.verify(1, &a, &b, &p[..31]));
        assert_eq!(format!("{key:?}"), "DirectPathKey(..)");
    }

    #[test]
    fn transcript_is_injective_over_field_boundaries() {
        let room = RoomId([7; 32]);
        let mut a = Transcript::new(1, &room);
        a.absorb(b"x", b"ab");
        a.absorb(b"y", b"c");
        let mut b = Transcript::new(1, &room);
        b.absorb(b"x", b"a");
        b.absorb(b"y", b"bc");
        assert_ne!(a.hash(), b.hash());
        assert_ne!(
            Transcript::new(1, &room).hash(),
            Transcript::new(2, &room).hash()
        );
    }

    #[test]
    fn session_secrets_are_zeroized_on_drop() {
        fn assert_zeroize_on_drop<T: ZeroizeOnDrop>() {}
        assert_zeroize_on_drop::<SessionSecrets>();
        let mut s = secrets(1, 2, 3, 4);
        s.zeroize();
        assert_eq!(s.sender_to_receiver, [0; 32]);
        assert_eq!(s.receiver_to_sender, [0; 32]);
    }
}
