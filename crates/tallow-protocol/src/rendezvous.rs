//! The only bytes the relay ever parses: a fixed-size hello naming a role and
//! a room, and the relay's short status replies.
//!
//! ```text
//! client -> relay   "TLWR" | version u8 | role u8 | room id [32]     (38 bytes)
//!                   | password length u8 | password                  (0-128 bytes)
//! relay  -> client  status u8 ('W' waiting, 'P' paired, 'E' refused) | u16 len | text
//! ```
//!
//! The password (empty unless the relay requires one) is an access token
//! for the relay, sent in the clear like the hello: it keeps strangers from
//! using a private relay, it protects nothing of the transfer.
//!
//! After `P` the relay copies bytes both ways and parses nothing more.

use tallow_crypto::RoomId;

use crate::wire::{DecodeError, WireReader, WireWrite};
use crate::Role;

/// First four bytes of a hello.
pub const RELAY_MAGIC: [u8; 4] = *b"TLWR";
/// Version of the hello format.
pub const RELAY_PROTOCOL_VERSION: u8 = 1;
/// Exact length of a hello.
pub const RELAY_HELLO_LEN: usize = 4 + 1 + 1 + 32;
/// Longest relay password.
pub const MAX_PASSWORD_LEN: usize = 128;
/// Longest status text.
pub const MAX_STATUS_TEXT: usize = 512;
/// Bytes before a status text.
pub const STATUS_HEADER_LEN: usize = 3;

/// A client's request to join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayHello {
    /// Which side the client is.
    pub role: Role,
    /// The room (a hash of the nameplate).
    pub room: RoomId,
}

impl RelayHello {
    /// The wire form.
    pub fn encode(&self) -> [u8; RELAY_HELLO_LEN] {
        let mut out = [0u8; RELAY_HELLO_LEN];
        out[..4].copy_from_slice(&RELAY_MAGIC);
        out[4] = RELAY_PROTOCOL_VERSION;
        out[5] = match self.role {
            Role::Sender => 1,
            Role::Receiver => 2,
        };
        out[6..].copy_from_slice(&self.room.0);
        out
    }

    /// The wire form followed by the password block; a password longer
    /// than [`MAX_PASSWORD_LEN`] is refused, as the relay would refuse it.
    pub fn encode_with_password(&self, password: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let len = u8::try_from(password.len())
            .ok()
            .filter(|&n| usize::from(n) <= MAX_PASSWORD_LEN)
            .ok_or(DecodeError::TooLarge {
                what: "relay password",
                got: password.len() as u64,
                max: MAX_PASSWORD_LEN as u64,
            })?;
        let mut out = self.encode().to_vec();
        out.push(len);
        out.extend_from_slice(password);
        Ok(out)
    }

    /// The length of the password block from its first byte; over
    /// [`MAX_PASSWORD_LEN`] is refused (never cut: the rest would be read
    /// as data).
    pub fn password_len(first: u8) -> Result<usize, DecodeError> {
        let len = usize::from(first);
        if len > MAX_PASSWORD_LEN {
            return Err(DecodeError::TooLarge {
                what: "relay password",
                got: len as u64,
                max: MAX_PASSWORD_LEN as u64,
            });
        }
        Ok(len)
    }

    /// Parse a hello; any deviation is an error.
    pub fn decode(buf: &[u8; RELAY_HELLO_LEN]) -> Result<Self, DecodeError> {
        let mut r = WireReader::new(buf);
        if r.array::<4>("magic")? != RELAY_MAGIC {
            return Err(DecodeError::Invalid("magic (not a tallow client)"));
        }
        if r.u8("version")? != RELAY_PROTOCOL_VERSION {
            return Err(DecodeError::Invalid("relay protocol version"));
        }
        let role = match r.u8("role")? {
            1 => Role::Sender,
            2 => Role::Receiver,
            _ => return Err(DecodeError::Invalid("role")),
        };
        let room = RoomId(r.array("room id")?);
        Ok(RelayHello { role, room })
    }
}

/// What the relay tells a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayStatus {
    /// Registered; waiting for the other side.
    Waiting,
    /// The other side is here; bytes now flow to it.
    Paired,
    /// Refused, with a sentence for the user.
    Refused(String),
}

impl RelayStatus {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let (code, text) = match self {
            RelayStatus::Waiting => (b'W', ""),
            RelayStatus::Paired => (b'P', ""),
            RelayStatus::Refused(t) => (b'E', t.as_str()),
        };
        let mut out = vec![code];
        out.put_string(text, MAX_STATUS_TEXT);
        out
    }

    /// Parse the 3-byte header: the status code and the text length to read.
    pub fn decode_header(header: [u8; STATUS_HEADER_LEN]) -> Result<(u8, usize), DecodeError> {
        let len = u16::from_be_bytes([header[1], header[2]]) as usize;
        if len > MAX_STATUS_TEXT {
            return Err(DecodeError::TooLarge {
                what: "relay status text",
                got: len as u64,
                max: MAX_STATUS_TEXT as u64,
            });
        }
        if !matches!(header[0], b'W' | b'P' | b'E') {
            return Err(DecodeError::Invalid("relay status"));
        }
        Ok((header[0], len))
    }

    /// Build the status from a decoded header and its text.
    pub fn from_parts(code: u8, text: &[u8]) -> Self {
        match code {
            b'W' => RelayStatus::Waiting,
            b'P' => RelayStatus::Paired,
            _ => RelayStatus::Refused(String::from_utf8_lossy(text).into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_rejects_garbage() {
        let h = RelayHello {
            role: Role::Receiver,
            room: RoomId([3; 32]),
        };
        assert_eq!(RelayHello::decode(&h.encode()).unwrap(), h);
        let mut http = [b' '; RELAY_HELLO_LEN];
        http[..4].copy_from_slice(b"GET ");
        assert!(RelayHello::decode(&http).is_err());
        let mut bad_role = h.encode();
        bad_role[5] = 7;
        assert!(RelayHello::decode(&bad_role).is_err());
    }

    #[test]
    fn status_round_trips_and_bounds_text() {
        for s in [
            RelayStatus::Waiting,
            RelayStatus::Paired,
            RelayStatus::Refused("room full".into()),
        ] {
            let b = s.encode();
            let (code, len) = RelayStatus::decode_header([b[0], b[1], b[2]]).unwrap();
            assert_eq!(RelayStatus::from_parts(code, &b[3..3 + len]), s);
        }
        assert!(RelayStatus::decode_header([b'E', 0xff, 0xff]).is_err());
        let long = RelayStatus::Refused("x".repeat(10_000)).encode();
        assert_eq!(long.len(), 3 + MAX_STATUS_TEXT);
    }

    #[test]
    fn the_password_block_is_symmetric_and_an_over_long_one_refused_both_ways() {
        let hello = RelayHello {
            role: Role::Sender,
            room: RoomId([3; 32]),
        };
        let block = hello
            .encode_with_password(&[b'p'; MAX_PASSWORD_LEN])
            .unwrap();
        assert_eq!(block[RELAY_HELLO_LEN] as usize, MAX_PASSWORD_LEN);
        assert_eq!(
            RelayHello::password_len(block[RELAY_HELLO_LEN]),
            Ok(MAX_PASSWORD_LEN)
        );
        assert!(hello
            .encode_with_password(&[b'p'; MAX_PASSWORD_LEN + 1])
            .is_err());
        assert!(RelayHello::password_len(MAX_PASSWORD_LEN as u8 + 1).is_err());
        assert_eq!(
            hello.encode_with_password(b"").unwrap().len(),
            RELAY_HELLO_LEN + 1
        );
    }
}
