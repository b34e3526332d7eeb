//! AES-256-GCM frames with counter nonces.
//!
//! A frame on the wire is `u32 length (big-endian) | ciphertext | tag`, where
//! `length` counts ciphertext and tag. The nonce is `0u32 || counter u64`,
//! one counter per direction starting at zero; each direction has its own key
//! and keys are fresh every session, so a nonce never repeats under a key.
//! The length prefix is the associated data, so a relay that cuts, splices,
//! reorders or replays frames makes authentication fail.
//!
//! Both halves work in place on caller-owned buffers so a chunk is never
//! copied to be encrypted.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};

use crate::CryptoError;

/// Bytes of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;
/// Bytes of the AES-GCM tag.
pub const TAG_LEN: usize = 16;

fn nonce(counter: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n.into()
}

/// Encrypts outgoing frames. The AES key schedule is zeroized on drop.
pub struct FrameSealer {
    cipher: Aes256Gcm,
    counter: u64,
}

impl FrameSealer {
    /// A sealer for one direction of one session.
    pub fn new(key: &[u8; 32]) -> Self {
        FrameSealer {
            cipher: Aes256Gcm::new(key.into()),
            counter: 0,
        }
    }

    /// `frame` holds `FRAME_HEADER_LEN` bytes of room, then the plaintext.
    /// Afterwards it holds the complete wire frame.
    pub fn seal(&mut self, frame: &mut Vec<u8>) -> Result<(), CryptoError> {
        if frame.len() < FRAME_HEADER_LEN {
            return Err(CryptoError::FrameLength(frame.len()));
        }
        let body_len = frame.len() - FRAME_HEADER_LEN + TAG_LEN;
        let header = u32::try_from(body_len)
            .map_err(|_| CryptoError::FrameLength(body_len))?
            .to_be_bytes();
        let counter = self.counter;
        self.counter = counter
            .checked_add(1)
            .ok_or(CryptoError::CounterExhausted)?;
        frame[..FRAME_HEADER_LEN].copy_from_slice(&header);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce(counter), &header, &mut frame[FRAME_HEADER_LEN..])
            .map_err(|_| CryptoError::FrameLength(body_len))?;
        frame.extend_from_slice(&tag);
        Ok(())
    }
}

/// Decrypts incoming frames, in order.
pub struct FrameOpener {
    cipher: Aes256Gcm,
    counter: u64,
}

impl FrameOpener {
    /// An opener for one direction of one session.
    pub fn new(key: &[u8; 32]) -> Self {
        FrameOpener {
            cipher: Aes256Gcm::new(key.into()),
            counter: 0,
        }
    }

    /// `header` is the length prefix as read; `body` the `length` bytes that
    /// followed. On success `body` holds the plaintext.
    pub fn open(
        &mut self,
        header: [u8; FRAME_HEADER_LEN],
        body: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let len = body.len();
        if len < TAG_LEN || u32::from_be_bytes(header) as usize != len {
            return Err(CryptoError::FrameLength(len));
        }
        let split = len - TAG_LEN;
        let tag = Tag::clone_from_slice(&body[split..]);
        self.cipher
            .decrypt_in_place_detached(&nonce(self.counter), &header, &mut body[..split], &tag)
            .map_err(|_| CryptoError::FrameAuthentication)?;
        body.truncate(split);
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or(CryptoError::CounterExhausted)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(sealer: &mut FrameSealer, plaintext: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; FRAME_HEADER_LEN];
        f.extend_from_slice(plaintext);
        sealer.seal(&mut f).unwrap();
        f
    }

    fn open(opener: &mut FrameOpener, frame: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let header: [u8; 4] = frame[..4].try_into().unwrap();
        let mut body = frame[4..].to_vec();
        opener.open(header, &mut body).map(|_| body)
    }

    #[test]
    fn round_trip_in_order_including_empty() {
        let key = [5u8; 32];
        let (mut s, mut o) = (FrameSealer::new(&key), FrameOpener::new(&key));
        for msg in [&b""[..], b"a", &[9u8; 70_000]] {
            let f = seal(&mut s, msg);
            assert_eq!(f.len(), 4 + msg.len() + TAG_LEN);
            assert_eq!(open(&mut o, &f).unwrap(), msg);
        }
    }

    #[test]
    fn bit_flip_replay_reorder_and_wrong_key_fail() {
        let key = [5u8; 32];
        let mut s = FrameSealer::new(&key);
        let f0 = seal(&mut s, b"first frame");
        let f1 = seal(&mut s, b"second frame");

        for i in 0..f0.len() {
            let mut bad = f0.clone();
            bad[i] ^= 0x01;
            let mut o = FrameOpener::new(&key);
            assert!(open(&mut o, &bad).is_err(), "flip at byte {i} undetected");
        }
        // Reordered: frame 1 first.
        assert_eq!(
            open(&mut FrameOpener::new(&key), &f1).unwrap_err(),
            CryptoError::FrameAuthentication
        );
        // Replayed: frame 0 twice.
        let mut o = FrameOpener::new(&key);
        open(&mut o, &f0).unwrap();
        assert_eq!(
            open(&mut o, &f0).unwrap_err(),
            CryptoError::FrameAuthentication
        );
        // Another key (the other direction, or another session).
        assert_eq!(
            open(&mut FrameOpener::new(&[6u8; 32]), &f0).unwrap_err(),
            CryptoError::FrameAuthentication
        );
        // Truncated body.
        let mut o = FrameOpener::new(&key);
        let header: [u8; 4] = f0[..4].try_into().unwrap();
        let mut short = f0[4..f0.len() - 1].to_vec();
        assert!(o.open(header, &mut short).is_err());
    }
}
