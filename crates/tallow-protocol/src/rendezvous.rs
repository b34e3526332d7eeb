//! The only bytes the relay ever parses: a fixed-size hello naming a role and
//! a room (or asking the relay for one), and the relay's short status
//! replies.
//!
//! ```text
//! client -> relay   "TLWR" | version u8 | kind u8 | room id [32]        (38 bytes)
//!                   | password length u8 | password                  (0-128 bytes)
//!   kind: 1 sender, room given (a `--code` of its own)
//!         2 receiver, room given
//!         3 sender asking for a free nameplate (room id all zeros)
//! relay  -> client  status u8 | u16 len | text
//!   'A' allocated: text is the nameplate (digits) chosen for the sender
//!   'W' waiting
//!   'P' paired: text is the address the relay saw this client connect
//!       from, `IP:PORT` (empty from relays before it), for direct paths
//!   'N' no such room   'T' room taken   'E' refused (text says why)
//! ```
//!
//! The password (empty unless the relay requires one) is an access token
//! for the relay, sent in the clear like the hello: it keeps strangers from
//! using a private relay, it protects nothing of the transfer.
//!
//! After `P` the relay copies bytes both ways and parses nothing more.

use tallow_crypto::code::MAX_NAMEPLATE_DIGITS;
use tallow_crypto::RoomId;

use crate::wire::{Decode, DecodeError, Encode, WireReader, WireWrite};
use crate::Role;

/// First four bytes of a hello.
pub const RELAY_MAGIC: [u8; 4] = *b"TLWR";
/// Version of the hello format (2: the relay allocates nameplates).
pub const RELAY_PROTOCOL_VERSION: u8 = 2;
/// Exact length of a hello.
pub const RELAY_HELLO_LEN: usize = 4 + 1 + 1 + 32;
/// Longest relay password.
pub const MAX_PASSWORD_LEN: usize = 128;
/// Longest status text.
pub const MAX_STATUS_TEXT: usize = 512;
/// Bytes before a status text.
pub const STATUS_HEADER_LEN: usize = 3;

/// A client's request to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayHello {
    /// Wait in, or join, the room of a nameplate the client has: a sender
    /// with a code of its own, or a receiver.
    Room {
        /// Which side the client is.
        role: Role,
        /// The room (a hash of the nameplate).
        room: RoomId,
    },
    /// A sender asks the relay for a free nameplate (the relay answers
    /// [`RelayStatus::Allocated`]) and waits in its room.
    Allocate,
}

impl RelayHello {
    /// Which side the client is.
    pub fn role(&self) -> Role {
        match self {
            RelayHello::Room { role, .. } => *role,
            RelayHello::Allocate => Role::Sender,
        }
    }

    /// The room named, if any.
    pub fn room(&self) -> Option<RoomId> {
        match self {
            RelayHello::Room { room, .. } => Some(*room),
            RelayHello::Allocate => None,
        }
    }
}

impl Encode for RelayHello {
    /// The fixed [`RELAY_HELLO_LEN`] bytes.
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_bytes(&RELAY_MAGIC);
        out.put_u8(RELAY_PROTOCOL_VERSION);
        let (kind, room) = match self {
            RelayHello::Room {
                role: Role::Sender,
                room,
            } => (1, room.0),
            RelayHello::Room {
                role: Role::Receiver,
                room,
            } => (2, room.0),
            RelayHello::Allocate => (3, [0; 32]),
        };
        out.put_u8(kind);
        out.put_bytes(&room);
    }
}

impl Decode<'_> for RelayHello {
    type Error = DecodeError;

    /// Any deviation is an error.
    fn decode(r: &mut WireReader<'_>) -> Result<Self, DecodeError> {
        if r.array::<4>("magic")? != RELAY_MAGIC {
            return Err(DecodeError::Invalid("magic (not a tallow client)"));
        }
        match r.u8("version")? {
            RELAY_PROTOCOL_VERSION => {}
            v if v < RELAY_PROTOCOL_VERSION => {
                return Err(DecodeError::Invalid(
                    "relay protocol version: this tallow is older than the relay, update it",
                ))
            }
            _ => return Err(DecodeError::Invalid(
                "relay protocol version: this tallow is newer than the relay, which needs updating",
            )),
        }
        let kind = r.u8("kind")?;
        let room = r.array::<32>("room id")?;
        match kind {
            1 | 2 => Ok(RelayHello::Room {
                role: if kind == 1 {
                    Role::Sender
                } else {
                    Role::Receiver
                },
                room: RoomId(room),
            }),
            3 if room == [0; 32] => Ok(RelayHello::Allocate),
            _ => Err(DecodeError::Invalid("kind")),
        }
    }
}

impl RelayHello {
    /// The hello followed by the password block; a password longer than
    /// [`MAX_PASSWORD_LEN`] is refused, as the relay would refuse it.
    pub fn encode_with_password(&self, password: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let block = RelayPassword::new(password)?;
        let mut out = self.to_bytes();
        block.encode(&mut out);
        Ok(out)
    }
}

/// Relays in the order they should hold `room`: rendezvous (highest
/// random weight) hashing, so everyone with the same list, in any order,
/// ranks alike, and removing a relay moves only the rooms it held. Used by
/// clients with a list of relays (the first) and by a fleet's members (the
/// first alive).
pub fn rank_relays<'a>(relays: impl IntoIterator<Item = &'a str>, room: &RoomId) -> Vec<&'a str> {
    let mut ranked: Vec<(&str, [u8; 32])> = relays
        .into_iter()
        .map(|relay| {
            let mut h = blake3::Hasher::new_derive_key("tallow 2026-11 relay choice v1");
            h.update(&room.0);
            h.update(relay.as_bytes());
            (relay, *h.finalize().as_bytes())
        })
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.dedup_by(|a, b| a.0 == b.0);
    ranked.into_iter().map(|(relay, _)| relay).collect()
}

/// The password block after the hello: a length byte, then at most
/// [`MAX_PASSWORD_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayPassword<'a>(&'a [u8]);

impl<'a> RelayPassword<'a> {
    /// A block for `password`, refused if it is over-long (never cut).
    pub fn new(password: &'a [u8]) -> Result<Self, DecodeError> {
        if password.len() > MAX_PASSWORD_LEN {
            return Err(DecodeError::TooLarge {
                what: "relay password",
                got: password.len() as u64,
                max: MAX_PASSWORD_LEN as u64,
            });
        }
        Ok(RelayPassword(password))
    }

    /// The password.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// How many password bytes follow a block's first byte, for a reader
    /// taking the block off a socket; over [`MAX_PASSWORD_LEN`] is refused
    /// (never cut: the rest would be read as data).
    pub fn declared_len(first: u8) -> Result<usize, DecodeError> {
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
}

impl Encode for RelayPassword<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(self.0.len() as u8);
        out.put_bytes(self.0);
    }
}

impl<'a> Decode<'a> for RelayPassword<'a> {
    type Error = DecodeError;

    fn decode(r: &mut WireReader<'a>) -> Result<Self, DecodeError> {
        let len = Self::declared_len(r.u8("relay password")?)?;
        Ok(RelayPassword(r.bytes(len, "relay password")?))
    }
}

/// What the relay tells a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayStatus {
    /// The nameplate the relay chose for a sender that asked for one
    /// (ASCII digits, at most [`MAX_NAMEPLATE_DIGITS`]).
    Allocated(String),
    /// Registered; waiting for the other side.
    Waiting,
    /// The other side is here; bytes now flow to it. With the address
    /// (as the relay saw it) this client connected from: behind a NAT,
    /// the NAT's public side, where a direct connection may reach it.
    Paired(Option<std::net::SocketAddr>),
    /// Nobody is sending with this nameplate (a receiver waited for a
    /// room no sender has), with a sentence for the user.
    NoSuchRoom(String),
    /// Someone else already holds this side of the room, with a sentence
    /// for the user.
    RoomTaken(String),
    /// Refused for another reason, with a sentence for the user.
    Refused(String),
}

impl Encode for RelayStatus {
    fn encode(&self, out: &mut Vec<u8>) {
        let seen;
        let (code, text) = match self {
            RelayStatus::Allocated(t) => (b'A', t.as_str()),
            RelayStatus::Waiting => (b'W', ""),
            RelayStatus::Paired(addr) => {
                seen = addr.map(|a| a.to_string()).unwrap_or_default();
                (b'P', seen.as_str())
            }
            RelayStatus::NoSuchRoom(t) => (b'N', t.as_str()),
            RelayStatus::RoomTaken(t) => (b'T', t.as_str()),
            RelayStatus::Refused(t) => (b'E', t.as_str()),
        };
        out.put_u8(code);
        out.put_string(text, MAX_STATUS_TEXT);
    }
}

impl Decode<'_> for RelayStatus {
    type Error = DecodeError;

    fn decode(r: &mut WireReader<'_>) -> Result<Self, DecodeError> {
        let code = r.u8("relay status")?;
        let text = r.string(MAX_STATUS_TEXT, "relay status text")?;
        match code {
            b'A' => {
                let digits = text.bytes().all(|b| b.is_ascii_digit());
                if text.is_empty() || text.len() > MAX_NAMEPLATE_DIGITS || !digits {
                    return Err(DecodeError::Invalid("allocated nameplate"));
                }
                Ok(RelayStatus::Allocated(text.to_owned()))
            }
            b'W' => Ok(RelayStatus::Waiting),
            b'P' if text.is_empty() => Ok(RelayStatus::Paired(None)),
            b'P' => text
                .parse()
                .map(|addr| RelayStatus::Paired(Some(addr)))
                .map_err(|_| DecodeError::Invalid("paired: the address seen")),
            b'N' => Ok(RelayStatus::NoSuchRoom(text.to_owned())),
            b'T' => Ok(RelayStatus::RoomTaken(text.to_owned())),
            b'E' => Ok(RelayStatus::Refused(text.to_owned())),
            _ => Err(DecodeError::Invalid("relay status")),
        }
    }
}

impl RelayStatus {
    /// How many text bytes follow a status's [`STATUS_HEADER_LEN`] header,
    /// for a reader taking it off a socket (then [`Decode::decode_all`] on
    /// header and text); an unknown code or an over-long text is refused
    /// before anything more is read.
    pub fn declared_len(header: [u8; STATUS_HEADER_LEN]) -> Result<usize, DecodeError> {
        let len = u16::from_be_bytes([header[1], header[2]]) as usize;
        if len > MAX_STATUS_TEXT {
            return Err(DecodeError::TooLarge {
                what: "relay status text",
                got: len as u64,
                max: MAX_STATUS_TEXT as u64,
            });
        }
        if !matches!(header[0], b'A' | b'W' | b'P' | b'N' | b'T' | b'E') {
            return Err(DecodeError::Invalid("relay status"));
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_rejects_garbage() {
        let h = RelayHello::Room {
            role: Role::Receiver,
            room: RoomId([3; 32]),
        };
        for hello in [
            h,
            RelayHello::Room {
                role: Role::Sender,
                room: RoomId([4; 32]),
            },
            RelayHello::Allocate,
        ] {
            assert_eq!(hello.to_bytes().len(), RELAY_HELLO_LEN);
            assert_eq!(RelayHello::decode_all(&hello.to_bytes()).unwrap(), hello);
        }
        // Asking for a nameplate names no room.
        let mut allocate_with_room = RelayHello::Allocate.to_bytes();
        allocate_with_room[10] = 1;
        assert!(RelayHello::decode_all(&allocate_with_room).is_err());
        // An older client is told so.
        let mut old = h.to_bytes();
        old[4] = 1;
        let e = RelayHello::decode_all(&old).unwrap_err().to_string();
        assert!(e.contains("older than the relay"), "{e}");
        let mut http = [b' '; RELAY_HELLO_LEN];
        http[..4].copy_from_slice(b"GET ");
        assert!(RelayHello::decode_all(&http).is_err());
        let mut bad_role = h.to_bytes();
        bad_role[5] = 7;
        assert!(RelayHello::decode_all(&bad_role).is_err());
        assert!(RelayHello::decode_all(&h.to_bytes()[..RELAY_HELLO_LEN - 1]).is_err());
    }

    #[test]
    fn status_round_trips_and_bounds_text() {
        for s in [
            RelayStatus::Allocated("7".into()),
            RelayStatus::Waiting,
            RelayStatus::Paired(None),
            RelayStatus::Paired(Some("198.51.100.7:40000".parse().unwrap())),
            RelayStatus::Paired(Some("[2001:db8::5]:9".parse().unwrap())),
            RelayStatus::NoSuchRoom("no sender".into()),
            RelayStatus::RoomTaken("taken".into()),
            RelayStatus::Refused("room full".into()),
        ] {
            let b = s.to_bytes();
            let len = RelayStatus::declared_len([b[0], b[1], b[2]]).unwrap();
            assert_eq!(b.len(), STATUS_HEADER_LEN + len);
            assert_eq!(RelayStatus::decode_all(&b).unwrap(), s);
        }
        assert!(RelayStatus::declared_len([b'E', 0xff, 0xff]).is_err());
        assert!(RelayStatus::declared_len([b'X', 0, 0]).is_err());
        let long = RelayStatus::Refused("x".repeat(10_000)).to_bytes();
        assert_eq!(long.len(), STATUS_HEADER_LEN + MAX_STATUS_TEXT);
        let mut over = vec![b'E'];
        over.put_string(&"x".repeat(MAX_STATUS_TEXT + 1), usize::MAX);
        assert!(RelayStatus::decode_all(&over).is_err());
        // A nameplate is digits, never anything a terminal would act on.
        for bad in ["", "12a", "\u{1b}[2J", "12345678901"] {
            let bytes = RelayStatus::Allocated(bad.into()).to_bytes();
            assert!(RelayStatus::decode_all(&bytes).is_err(), "{bad:?}");
        }
        // The address a client is told it came from is an address.
        let mut junk = vec![b'P'];
        junk.put_string("not an address", MAX_STATUS_TEXT);
        assert!(RelayStatus::decode_all(&junk).is_err());
    }

    #[test]
    fn the_password_block_is_symmetric_and_an_over_long_one_refused_both_ways() {
        let hello = RelayHello::Room {
            role: Role::Sender,
            room: RoomId([3; 32]),
        };
        let full = [b'p'; MAX_PASSWORD_LEN];
        let bytes = hello.encode_with_password(&full).unwrap();
        assert_eq!(bytes[RELAY_HELLO_LEN] as usize, MAX_PASSWORD_LEN);
        assert_eq!(
            RelayPassword::decode_all(&bytes[RELAY_HELLO_LEN..]).map(|p| p.as_bytes()),
            Ok(&full[..])
        );
        assert!(hello
            .encode_with_password(&[b'p'; MAX_PASSWORD_LEN + 1])
            .is_err());
        assert!(hello.encode_with_password(&[b'p'; 300]).is_err());
        assert!(RelayPassword::declared_len(MAX_PASSWORD_LEN as u8 + 1).is_err());
        let mut over = vec![MAX_PASSWORD_LEN as u8 + 1];
        over.extend_from_slice(&[b'p'; MAX_PASSWORD_LEN + 1]);
        assert!(RelayPassword::decode_all(&over).is_err());
        assert_eq!(
            hello.encode_with_password(b"").unwrap().len(),
            RELAY_HELLO_LEN + 1
        );
    }
}
