//! Moving the data off the relay: what the two sides say to find and agree
//! on a direct connection. Sans-IO: `tallow-net::direct` drives it.
//!
//! Right after a handshake through a relay, each side sends [`Candidates`]
//! inside the encrypted channel (so the relay never sees them): addresses
//! at which it accepts a direct connection. Both race connections to the
//! other's addresses (and accept theirs); each connection opens with a
//! [`DirectHello`] from both ends, then a proof from both ends
//! ([`tallow_crypto::DirectPathKey`]). The sender chooses ([`RouteChoice`])
//! and the receiver confirms ([`RouteReply`]), both on the relay's channel,
//! before either moves: so both switch at the same frame, or neither does.
//!
//! ```text
//! in the channel (first frames after the handshake, relay route only):
//!   Candidates   64 | count u8 (<= 16) | count x (family u8 4|6 | ip [4|16] | port u16)
//!   RouteChoice  65 | 0 (stay on the relay) | 1 nonce[32] (the sender's, of the connection)
//!   RouteReply   66 | 0 (cannot use it: stay) | 1 (ready: move)
//! on a direct TCP connection, from both ends at once:
//!   DirectHello  "TLWD" | version u8 | role u8 (1 sender, 2 receiver) | nonce [32]
//!   proof        [32]  HMAC(direct key, label | own role | own nonce | other's nonce)
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::limits::PROTOCOL_VERSION;
use crate::wire::{Decode, DecodeError, Encode, WireReader, WireWrite};
use crate::Role;

/// Most addresses one side offers (interfaces, the relay's view of it).
pub const MAX_CANDIDATES: usize = 16;
/// Exact length of a [`DirectHello`].
pub const DIRECT_HELLO_LEN: usize = 4 + 1 + 1 + 32;
/// First bytes on a direct connection.
pub const DIRECT_MAGIC: [u8; 4] = *b"TLWD";

const CANDIDATES: u8 = 64;
const ROUTE_CHOICE: u8 = 65;
const ROUTE_REPLY: u8 = 66;

/// The addresses at which one side accepts a direct connection; none means
/// it keeps to the relay (`--relay-only`, or it has none to offer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates(pub Vec<SocketAddr>);

impl Encode for Candidates {
    /// At most [`MAX_CANDIDATES`] addresses are written; the rest are left
    /// out (callers offer no more).
    fn encode(&self, out: &mut Vec<u8>) {
        let addrs = &self.0[..self.0.len().min(MAX_CANDIDATES)];
        out.put_u8(CANDIDATES);
        out.put_u8(addrs.len() as u8);
        for addr in addrs {
            match addr.ip() {
                IpAddr::V4(ip) => {
                    out.put_u8(4);
                    out.put_bytes(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    out.put_u8(6);
                    out.put_bytes(&ip.octets());
                }
            }
            out.put_u16(addr.port());
        }
    }
}

impl Decode<'_> for Candidates {
    type Error = DecodeError;

    /// A count over [`MAX_CANDIDATES`], an unknown family, port 0 or an
    /// address nobody can connect to (unspecified, multicast, broadcast)
    /// is an error.
    fn decode(r: &mut WireReader<'_>) -> Result<Self, DecodeError> {
        expect_type(r, CANDIDATES)?;
        let count = usize::from(r.u8("candidate count")?);
        if count > MAX_CANDIDATES {
            return Err(DecodeError::TooLarge {
                what: "candidate count",
                got: count as u64,
                max: MAX_CANDIDATES as u64,
            });
        }
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            let ip = match r.u8("address family")? {
                4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("IPv4 address")?)),
                6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("IPv6 address")?)),
                _ => return Err(DecodeError::Invalid("address family")),
            };
            let port = r.u16("port")?;
            let unusable = match ip {
                IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
                IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
            };
            if port == 0 || unusable {
                return Err(DecodeError::Invalid("candidate address"));
            }
            addrs.push(SocketAddr::new(ip, port));
        }
        Ok(Candidates(addrs))
    }
}

/// The sender's choice of route, once it has a proven direct connection or
/// has waited long enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteChoice {
    /// No direct connection: the relay carries the transfer.
    Relay,
    /// Move to the direct connection on which the sender's nonce was this.
    Direct([u8; 32]),
}

impl Encode for RouteChoice {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(ROUTE_CHOICE);
        match self {
            RouteChoice::Relay => out.put_u8(0),
            RouteChoice::Direct(nonce) => {
                out.put_u8(1);
                out.put_bytes(nonce);
            }
        }
    }
}

impl Decode<'_> for RouteChoice {
    type Error = DecodeError;

    fn decode(r: &mut WireReader<'_>) -> Result<Self, DecodeError> {
        expect_type(r, ROUTE_CHOICE)?;
        match r.u8("route")? {
            0 => Ok(RouteChoice::Relay),
            1 => Ok(RouteChoice::Direct(r.array::<32>("connection nonce")?)),
            _ => Err(DecodeError::Invalid("route")),
        }
    }
}

/// The receiver's answer to [`RouteChoice::Direct`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteReply {
    /// It holds that connection, proven: both move to it now.
    Ready,
    /// It does not (the connection failed at its end): both stay.
    Stay,
}

impl Encode for RouteReply {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(ROUTE_REPLY);
        out.put_u8(match self {
            RouteReply::Stay => 0,
            RouteReply::Ready => 1,
        });
    }
}

impl Decode<'_> for RouteReply {
    type Error = DecodeError;

    fn decode(r: &mut WireReader<'_>) -> Result<Self, DecodeError> {
        expect_type(r, ROUTE_REPLY)?;
        match r.u8("reply")? {
            0 => Ok(RouteReply::Stay),
            1 => Ok(RouteReply::Ready),
            _ => Err(DecodeError::Invalid("route reply")),
        }
    }
}

fn expect_type(r: &mut WireReader<'_>, want: u8) -> Result<(), DecodeError> {
    match r.u8("message type")? {
        t if t == want => Ok(()),
        t => Err(DecodeError::UnknownType(t)),
    }
}

/// The first bytes from each end of a direct connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectHello {
    /// Which side sent it.
    pub role: Role,
    /// Fresh per connection and end.
    pub nonce: [u8; 32],
}

impl Encode for DirectHello {
    /// The fixed [`DIRECT_HELLO_LEN`] bytes.
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_bytes(&DIRECT_MAGIC);
        out.put_u8(PROTOCOL_VERSION);
        out.put_u8(role_label(self.role));
        out.put_bytes(&self.nonce);
    }
}

impl Decode<'_> for DirectHello {
    type Error = DecodeError;

    fn decode(r: &mut WireReader<'_>) -> Result<Self, DecodeError> {
        if r.array::<4>("magic")? != DIRECT_MAGIC {
            return Err(DecodeError::Invalid("magic (not a tallow peer)"));
        }
        if r.u8("version")? != PROTOCOL_VERSION {
            return Err(DecodeError::Invalid("version"));
        }
        let role = match r.u8("role")? {
            1 => Role::Sender,
            2 => Role::Receiver,
            _ => return Err(DecodeError::Invalid("role")),
        };
        Ok(DirectHello {
            role,
            nonce: r.array::<32>("nonce")?,
        })
    }
}

/// The byte naming a role in a hello and in a proof.
pub fn role_label(role: Role) -> u8 {
    match role {
        Role::Sender => 1,
        Role::Receiver => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_round_trip_both_families_and_none() {
        for addrs in [
            vec![],
            vec![
                "192.0.2.7:4242".parse().unwrap(),
                "[2001:db8::1]:9".parse().unwrap(),
            ],
        ] {
            let c = Candidates(addrs);
            assert_eq!(Candidates::decode_all(&c.to_bytes()).unwrap(), c);
        }
    }

    #[test]
    fn candidates_are_bounded_and_checked() {
        let many = Candidates(vec!["192.0.2.1:1".parse().unwrap(); MAX_CANDIDATES + 5]);
        let bytes = many.to_bytes();
        assert_eq!(
            Candidates::decode_all(&bytes).unwrap().0.len(),
            MAX_CANDIDATES
        );
        // A count over the limit is refused before reading entries.
        assert!(matches!(
            Candidates::decode_all(&[CANDIDATES, 17]),
            Err(DecodeError::TooLarge { .. })
        ));
        for bad in [
            "0.0.0.0:80",
            "192.0.2.1:0",
            "224.0.0.1:80",
            "255.255.255.255:80",
            "[::]:80",
            "[ff02::1]:80",
        ] {
            let bytes = Candidates(vec![bad.parse().unwrap()]).to_bytes();
            assert!(Candidates::decode_all(&bytes).is_err(), "{bad}");
        }
        assert!(Candidates::decode_all(&[CANDIDATES, 1, 5, 1, 2, 3, 4, 0, 80]).is_err());
        assert!(Candidates::decode_all(&[CANDIDATES, 1, 4, 1, 2]).is_err());
        assert!(matches!(
            Candidates::decode_all(&[ROUTE_CHOICE, 0]),
            Err(DecodeError::UnknownType(ROUTE_CHOICE))
        ));
    }

    #[test]
    fn choices_replies_and_hellos_round_trip_and_refuse_junk() {
        for c in [RouteChoice::Relay, RouteChoice::Direct([7; 32])] {
            assert_eq!(RouteChoice::decode_all(&c.to_bytes()).unwrap(), c);
        }
        for r in [RouteReply::Ready, RouteReply::Stay] {
            assert_eq!(RouteReply::decode_all(&r.to_bytes()).unwrap(), r);
        }
        assert!(RouteChoice::decode_all(&[ROUTE_CHOICE, 2]).is_err());
        assert!(RouteChoice::decode_all(&[ROUTE_CHOICE, 1, 0]).is_err());
        assert!(RouteReply::decode_all(&[ROUTE_REPLY, 1, 0]).is_err());
        let hello = DirectHello {
            role: Role::Receiver,
            nonce: [9; 32],
        };
        let bytes = hello.to_bytes();
        assert_eq!(bytes.len(), DIRECT_HELLO_LEN);
        assert_eq!(DirectHello::decode_all(&bytes).unwrap(), hello);
        for (at, value) in [(0, b'X'), (4, PROTOCOL_VERSION - 1), (5, 3)] {
            let mut bad = bytes.clone();
            bad[at] = value;
            assert!(DirectHello::decode_all(&bad).is_err(), "byte {at}");
        }
    }
}
