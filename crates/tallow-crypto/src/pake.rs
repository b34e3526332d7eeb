//! SPAKE2 over the code phrase (the `spake2` crate, Ed25519 group).
//!
//! A PAKE whose implementation accepts the identity or another small-order
//! point as the peer's message lets a relay finish the exchange without the
//! code (DESIGN.md §8). `spake2` 0.4 only decompresses the peer's point, so
//! [`PakeState::finish`] checks the point itself before handing it over.
//! Everything else (the group maths) is the crate's.

use curve25519_dalek::edwards::CompressedEdwardsY;
use rand_core::{CryptoRng, RngCore};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use zeroize::Zeroizing;

use crate::CryptoError;

/// Length of a PAKE message on the wire: a side tag and a compressed point.
pub const PAKE_MESSAGE_LEN: usize = 33;

const SENDER_IDENTITY: &[u8] = b"tallow sender";
const RECEIVER_IDENTITY: &[u8] = b"tallow receiver";

/// Which side of the exchange this is. The sender is SPAKE2's side A.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PakeRole {
    /// The side that offers files (SPAKE2 side A).
    Sender,
    /// The side that receives files (SPAKE2 side B).
    Receiver,
}

impl PakeRole {
    fn peer_tag(self) -> u8 {
        match self {
            PakeRole::Sender => b'B',
            PakeRole::Receiver => b'A',
        }
    }
}

/// The shared secret the PAKE produces (zeroized on drop).
pub type PakeKey = Zeroizing<[u8; 32]>;

/// A SPAKE2 exchange in progress.
pub struct PakeState {
    inner: Spake2<Ed25519Group>,
    role: PakeRole,
}

/// Start the exchange: returns the state and the message to send.
pub fn start(
    role: PakeRole,
    password: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> (PakeState, [u8; PAKE_MESSAGE_LEN]) {
    let password = Password::new(password);
    let (id_a, id_b) = (
        Identity::new(SENDER_IDENTITY),
        Identity::new(RECEIVER_IDENTITY),
    );
    let (inner, msg) = match role {
        PakeRole::Sender => Spake2::<Ed25519Group>::start_a_with_rng(&password, &id_a, &id_b, rng),
        PakeRole::Receiver => {
            Spake2::<Ed25519Group>::start_b_with_rng(&password, &id_a, &id_b, rng)
        }
    };
    let mut out = [0u8; PAKE_MESSAGE_LEN];
    out.copy_from_slice(&msg);
    (PakeState { inner, role }, out)
}

/// Reject a peer message that is malformed or carries a small-order point
/// (the identity among them).
pub fn validate_peer_message(role: PakeRole, msg: &[u8]) -> Result<(), CryptoError> {
    if msg.len() != PAKE_MESSAGE_LEN || msg[0] != role.peer_tag() {
        return Err(CryptoError::MalformedPakeMessage);
    }
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&msg[1..]);
    let point = CompressedEdwardsY(bytes)
        .decompress()
        .ok_or(CryptoError::MalformedPakeMessage)?;
    if point.is_small_order() {
        return Err(CryptoError::SmallOrderPakePoint);
    }
    Ok(())
}

impl PakeState {
    /// Finish with the peer's message. The result is only a shared secret if
    /// both sides used the same code; key confirmation tells.
    pub fn finish(self, peer_msg: &[u8]) -> Result<PakeKey, CryptoError> {
        validate_peer_message(self.role, peer_msg)?;
        let key = self
            .inner
            .finish(peer_msg)
            .map_err(|_| CryptoError::MalformedPakeMessage)?;
        let key = Zeroizing::new(key);
        let mut out = Zeroizing::new([0u8; 32]);
        if key.len() != out.len() {
            return Err(CryptoError::MalformedPakeMessage);
        }
        out.copy_from_slice(&key);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use rand_core::OsRng;

    #[test]
    fn same_password_gives_same_key_and_different_passwords_do_not() {
        let (a, ma) = start(PakeRole::Sender, b"1-x-y-z", &mut OsRng);
        let (b, mb) = start(PakeRole::Receiver, b"1-x-y-z", &mut OsRng);
        assert_eq!(*a.finish(&mb).unwrap(), *b.finish(&ma).unwrap());

        let (a, ma) = start(PakeRole::Sender, b"1-x-y-z", &mut OsRng);
        let (b, mb) = start(PakeRole::Receiver, b"1-x-y-q", &mut OsRng);
        assert_ne!(*a.finish(&mb).unwrap(), *b.finish(&ma).unwrap());
    }

    #[test]
    fn identity_and_every_small_order_point_are_rejected() {
        for point in EIGHT_TORSION.iter() {
            let mut msg = [0u8; PAKE_MESSAGE_LEN];
            msg[0] = b'B';
            msg[1..].copy_from_slice(point.compress().as_bytes());
            let (a, _) = start(PakeRole::Sender, b"1-x-y-z", &mut OsRng);
            assert_eq!(
                a.finish(&msg).unwrap_err(),
                CryptoError::SmallOrderPakePoint,
                "{point:?}"
            );
        }
    }

    #[test]
    fn wrong_side_tag_or_length_or_non_point_is_rejected() {
        let (_, ma) = start(PakeRole::Sender, b"1-x", &mut OsRng);
        // A sender's own message reflected back has the wrong side tag.
        let (a, _) = start(PakeRole::Sender, b"1-x", &mut OsRng);
        assert_eq!(
            a.finish(&ma).unwrap_err(),
            CryptoError::MalformedPakeMessage
        );
        let (b, _) = start(PakeRole::Receiver, b"1-x", &mut OsRng);
        assert_eq!(
            b.finish(&ma[..32]).unwrap_err(),
            CryptoError::MalformedPakeMessage
        );
        // y = 2 is not on the curve.
        let mut bad = [0u8; PAKE_MESSAGE_LEN];
        bad[0] = b'A';
        bad[1] = 2;
        let (b, _) = start(PakeRole::Receiver, b"1-x", &mut OsRng);
        assert_eq!(
            b.finish(&bad).unwrap_err(),
            CryptoError::MalformedPakeMessage
        );
    }
}
