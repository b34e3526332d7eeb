//! Finding the sender on the local network, without a relay.
//!
//! A sender without a relay hosts one in-process on an ephemeral port and
//! announces, once a second, a UDP broadcast of `"TLWA" | version | room id
//! [32] | port u16` on the discovery port (9010). The room id is the hash of
//! the code's nameplate, the same one a relay sees (for a number a relay
//! handed out, a hash of the number and that relay's address,
//! [`RoomId::for_nameplate_on`]): never the words. A
//! receiver listens for an announcement of its own room and connects to the
//! announcing address; anything else (other rooms, other traffic, garbage)
//! is ignored. An announcement is not trusted for anything: a forged one can
//! only lead the receiver to a peer that then fails the PAKE handshake.
//!
//! Announcements go to 255.255.255.255, to each interface's broadcast
//! address and to 127.255.255.255, so they reach the machine itself (two
//! terminals), the local network, and hosts without a default route.
//! Several receivers on one machine can listen at once (`SO_REUSEPORT`;
//! broadcasts reach every socket).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tallow_crypto::RoomId;
use tallow_protocol::wire::{Decode, DecodeError, Encode, WireReader, WireWrite};
use tokio::net::UdpSocket;

use crate::NetError;

/// UDP port announcements are sent to, unless configured otherwise.
pub const DEFAULT_DISCOVERY_PORT: u16 = 9010;
/// How often a sender announces itself.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
const MAGIC: [u8; 4] = *b"TLWA";
const VERSION: u8 = 1;
/// Exact length of an announcement.
pub const ANNOUNCEMENT_LEN: usize = 4 + 1 + 32 + 2;

/// "The sender of room `room` waits on TCP port `port` of this address."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    /// The room (a hash of the nameplate).
    pub room: RoomId,
    /// TCP port of the sender's relay.
    pub port: u16,
}

impl Encode for Announcement {
    /// The fixed [`ANNOUNCEMENT_LEN`] bytes.
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_bytes(&MAGIC);
        out.put_u8(VERSION);
        out.put_bytes(&self.room.0);
        out.put_u16(self.port);
    }
}

impl Decode<'_> for Announcement {
    type Error = DecodeError;

    /// Anything that is not an announcement of this version is an error
    /// (a datagram must hold exactly one: see [`Decode::decode_all`]).
    fn decode(r: &mut WireReader<'_>) -> Result<Self, DecodeError> {
        if r.array::<4>("announcement magic")? != MAGIC {
            return Err(DecodeError::Invalid("announcement magic"));
        }
        if r.u8("announcement version")? != VERSION {
            return Err(DecodeError::Invalid("announcement version"));
        }
        let room = RoomId(r.array("room id")?);
        let port = r.u16("port")?;
        if port == 0 {
            return Err(DecodeError::Invalid("port"));
        }
        Ok(Announcement { room, port })
    }
}

/// Where announcements are sent.
fn broadcast_targets(port: u16) -> Vec<SocketAddr> {
    let mut targets = vec![
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, port)),
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 255, 255, 255), port)),
    ];
    if let Ok(interfaces) = if_addrs::get_if_addrs() {
        for iface in interfaces {
            if let if_addrs::IfAddr::V4(v4) = iface.addr {
                if v4.is_loopback() {
                    continue;
                }
                // The subnet's broadcast address, from the netmask: what the
                // system lists is wrong for addresses set without `brd`
                // (it repeats the address itself).
                let subnet = Ipv4Addr::from(u32::from(v4.ip) | !u32::from(v4.netmask));
                for b in [Some(subnet), v4.broadcast].into_iter().flatten() {
                    let t = SocketAddr::V4(SocketAddrV4::new(b, port));
                    if b != v4.ip && !targets.contains(&t) {
                        targets.push(t);
                    }
                }
            }
        }
    }
    targets
}

/// Announce `room` on TCP `tcp_port` every second, until dropped.
pub async fn announce(room: RoomId, tcp_port: u16, discovery_port: u16) -> std::io::Result<()> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    socket.set_broadcast(true)?;
    let packet = Announcement {
        room,
        port: tcp_port,
    }
    .to_bytes();
    let mut tick = tokio::time::interval(ANNOUNCE_INTERVAL);
    loop {
        tick.tick().await;
        // Interfaces come and go (Wi-Fi); look again each time. A target
        // that cannot be reached (no route) is skipped.
        for target in broadcast_targets(discovery_port) {
            let _ = socket.send_to(&packet, target).await;
        }
    }
}

fn listener(port: u16) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_broadcast(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())?;
    UdpSocket::from_std(socket.into())
}

/// Wait up to `timeout` for an announcement of one of `rooms`; returns the
/// address of the sender's relay and the room announced.
pub async fn discover(
    rooms: &[RoomId],
    discovery_port: u16,
    timeout: Duration,
) -> Result<(SocketAddr, RoomId), NetError> {
    let socket = listener(discovery_port).map_err(|source| NetError::Discovery {
        port: discovery_port,
        source,
    })?;
    let search = async {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            if let Ok(a) = Announcement::decode_all(&buf[..n]) {
                if rooms.contains(&a.room) {
                    return (SocketAddr::new(from.ip(), a.port), a.room);
                }
            }
        }
    };
    tokio::time::timeout(timeout, search)
        .await
        .map_err(|_| NetError::NotOnLan { waited: timeout })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip_and_garbage_is_ignored() {
        let a = Announcement {
            room: RoomId([7; 32]),
            port: 4242,
        };
        assert_eq!(a.to_bytes().len(), ANNOUNCEMENT_LEN);
        assert_eq!(Announcement::decode_all(&a.to_bytes()), Ok(a));
        let refused = |bytes: &[u8]| Announcement::decode_all(bytes).is_err();
        let mut wrong_magic = a.to_bytes();
        wrong_magic[0] = b'X';
        assert!(refused(&wrong_magic));
        let mut wrong_version = a.to_bytes();
        wrong_version[4] = 9;
        assert!(refused(&wrong_version));
        assert!(refused(&a.to_bytes()[..20]));
        assert!(refused(b""));
        let mut longer = a.to_bytes();
        longer.push(0);
        assert!(refused(&longer));
        let mut port_zero = a.to_bytes();
        port_zero[37..].copy_from_slice(&[0, 0]);
        assert!(refused(&port_zero));
    }

    #[tokio::test]
    async fn discovery_skips_other_rooms_and_malformed_packets() {
        let port = 47_000 + (std::process::id() % 1000) as u16;
        let ours = RoomId([1; 32]);
        let finder =
            tokio::spawn(async move { discover(&[ours], port, Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let to = (Ipv4Addr::LOCALHOST, port);
        s.send_to(b"GET / HTTP/1.1", to).await.unwrap();
        let other = Announcement {
            room: RoomId([2; 32]),
            port: 1111,
        };
        s.send_to(&other.to_bytes(), to).await.unwrap();
        let mine = Announcement {
            room: ours,
            port: 2222,
        };
        s.send_to(&mine.to_bytes(), to).await.unwrap();
        let found = finder.await.unwrap().unwrap();
        assert_eq!(found, ("127.0.0.1:2222".parse().unwrap(), ours));
    }

    #[tokio::test]
    async fn an_announcer_is_found_through_broadcast() {
        let port = 48_000 + (std::process::id() % 1000) as u16;
        let room = RoomId([3; 32]);
        let announcer = tokio::spawn(announce(room, 3333, port));
        let (found, _) = discover(&[room], port, Duration::from_secs(10))
            .await
            .unwrap();
        announcer.abort();
        assert_eq!(found.port(), 3333);
    }

    #[tokio::test]
    async fn nobody_announcing_is_a_clear_timeout() {
        let port = 49_000 + (std::process::id() % 1000) as u16;
        let err = discover(&[RoomId([4; 32])], port, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("local network"), "{err}");
    }
}
