//! Choosing a relay, joining a room on it, and waiting for the other side.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use tallow_crypto::RoomId;
use tallow_protocol::limits::Deadlines;
use tallow_protocol::rendezvous::{rank_relays, RelayHello, RelayStatus, STATUS_HEADER_LEN};
use tallow_protocol::wire::{Decode, DecodeError};
use tallow_protocol::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::proxy::Proxy;
use crate::NetError;

/// Pick one relay from a comma-separated list by rendezvous hashing of the
/// room: every client with the same list (in any order) and the same code
/// picks the same relay, and rooms spread evenly over the list, so a fleet
/// of relays serves one population without coordination. A list of one is
/// that relay.
pub fn pick_relay(list: &str, room: &RoomId) -> String {
    let relays = list.split(',').map(str::trim).filter(|r| !r.is_empty());
    rank_relays(relays, room)
        .first()
        .map_or_else(|| list.to_owned(), |r| (*r).to_owned())
}

/// Connect to the relay at `addr`, join `room` as `role`, and return the
/// stream once the other side has joined. `on_waiting` runs when the relay
/// confirms we are registered and waiting.
pub async fn connect_to_relay(
    addr: &str,
    role: Role,
    room: RoomId,
    deadlines: &Deadlines,
    on_waiting: impl FnOnce(),
) -> Result<TcpStream, NetError> {
    // The local network's relay is the sender's own process: nothing to
    // enter again if it goes.
    enter_room(
        addr,
        RelayHello::Room { role, room },
        RelayAccess::default(),
        deadlines,
    )
    .await?
    .paired(deadlines, on_waiting)
    .await
    .map(|paired| paired.stream)
}

/// [`connect_to_relay`] for a relay that may require a password, be
/// reached through a proxy, or drop us while we wait (then the room is
/// entered again: [`paired_or_reenter`]).
pub async fn join_room(
    addr: &str,
    role: Role,
    room: RoomId,
    access: RelayAccess<'_>,
    deadlines: &Deadlines,
    on_waiting: impl FnOnce(),
) -> Result<Paired, NetError> {
    let entry = enter_room(addr, RelayHello::Room { role, room }, access, deadlines).await?;
    paired_or_reenter(entry, (role, room), access, deadlines, on_waiting).await
}

/// How to get into a relay: its password (empty if it needs none), and
/// the proxy to reach it through, if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayAccess<'a> {
    pub password: &'a [u8],
    pub proxy: Option<&'a Proxy>,
}

/// A connection to a relay that has a place in a room: waiting for the
/// other side, or paired with it already (then with the address the relay
/// saw us come from).
pub struct RoomEntry {
    stream: TcpStream,
    addr: String,
    peer: Role,
    paired: Option<Option<SocketAddr>>,
    nameplate: Option<String>,
}

/// A relay connection paired with the other side: bytes now flow to it.
pub struct Paired {
    /// The connection, through the relay, to the other side.
    pub stream: TcpStream,
    /// The address the relay saw this connection come from (a NAT's public
    /// side, say), if it said.
    pub seen_as: Option<SocketAddr>,
}

/// Connect to `addr` from a port that later connections may share
/// (`SO_REUSEADDR` and `SO_REUSEPORT`): a direct connection to the peer is
/// opened from the same port, so that a NAT which kept the port for the
/// relay keeps it for the peer too ([`crate::direct`]).
pub(crate) async fn connect_shareable(addr: &str) -> std::io::Result<TcpStream> {
    let mut last = None;
    for target in tokio::net::lookup_host(addr).await? {
        let socket = match target {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        match socket.connect(target).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address")
    }))
}

/// Connect to the relay at `addr` (through `access.proxy`, if any) and
/// say `hello` (with `access.password`); returns once the relay has given
/// us a place (and, if we asked, a nameplate), within the connect deadline.
pub async fn enter_room(
    addr: &str,
    hello: RelayHello,
    access: RelayAccess<'_>,
    deadlines: &Deadlines,
) -> Result<RoomEntry, NetError> {
    let mut stream = match access.proxy {
        Some(proxy) => proxy.connect(addr, deadlines.connect).await?,
        None => tokio::time::timeout(deadlines.connect, connect_shareable(addr))
            .await
            .map_err(|_| NetError::ConnectTimeout {
                addr: addr.to_owned(),
                waited: deadlines.connect,
            })?
            .map_err(|source| NetError::Connect {
                addr: addr.to_owned(),
                source,
            })?,
    };
    // Handshake messages are small and latency-bound.
    let _ = stream.set_nodelay(true);
    let bytes = hello
        .encode_with_password(access.password)
        .map_err(|e| NetError::Refused(format!("not sent: {e}")))?;
    let peer = hello.role().peer();
    stream
        .write_all(&bytes)
        .await
        .map_err(|_| NetError::RelayClosed { peer })?;
    // The first statuses come at once.
    let deadline = Instant::now()
        .checked_add(deadlines.connect)
        .unwrap_or_else(far_future);
    let mut nameplate = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let status = read_status(&mut stream, addr, peer, left, deadlines.pairing).await?;
        let paired = match status {
            // Only before waiting, and only if we asked.
            RelayStatus::Allocated(n) if nameplate.is_none() && hello.room().is_none() => {
                nameplate = Some(n);
                continue;
            }
            RelayStatus::Allocated(_) => {
                return Err(NetError::NotARelay {
                    addr: addr.to_owned(),
                    source: DecodeError::Invalid("a nameplate nobody asked for"),
                })
            }
            RelayStatus::Waiting => None,
            RelayStatus::Paired(seen_as) => Some(seen_as),
            refusal => return Err(refused(refusal)),
        };
        if hello.room().is_none() && nameplate.is_none() {
            return Err(NetError::NotARelay {
                addr: addr.to_owned(),
                source: DecodeError::Invalid("no nameplate for a sender that asked for one"),
            });
        }
        return Ok(RoomEntry {
            stream,
            addr: addr.to_owned(),
            peer,
            paired,
            nameplate,
        });
    }
}

impl RoomEntry {
    /// The nameplate the relay chose, if we asked for one.
    pub fn nameplate(&self) -> Option<&str> {
        self.nameplate.as_deref()
    }

    /// Wait for the other side (`on_waiting` runs first, unless it is
    /// here already), for at most the pairing deadline; the stream is then
    /// theirs.
    pub async fn paired(
        mut self,
        deadlines: &Deadlines,
        on_waiting: impl FnOnce(),
    ) -> Result<Paired, NetError> {
        if let Some(seen_as) = self.paired {
            return Ok(Paired {
                stream: self.stream,
                seen_as,
            });
        }
        on_waiting();
        // "Paired" may take as long as the other person takes to start,
        // but no longer than `pairing` in all (a relay repeating "waiting"
        // cannot hold us forever).
        let deadline = Instant::now()
            .checked_add(deadlines.pairing)
            .unwrap_or_else(far_future);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (addr, peer) = (&self.addr, self.peer);
            match read_status(&mut self.stream, addr, peer, left, deadlines.pairing).await? {
                RelayStatus::Waiting => {}
                RelayStatus::Paired(seen_as) => {
                    return Ok(Paired {
                        stream: self.stream,
                        seen_as,
                    })
                }
                RelayStatus::Allocated(_) => {
                    return Err(NetError::NotARelay {
                        addr: self.addr,
                        source: DecodeError::Invalid("a nameplate while waiting"),
                    })
                }
                refusal => return Err(refused(refusal)),
            }
        }
    }
}

/// How many times a client enters its room again when the relay's
/// connection drops while it waits.
const REENTRIES: u32 = 2;

/// Wait in `entry` (on the relay at `addr`) for the other side, as
/// [`RoomEntry::paired`]; if the connection drops while waiting (the relay
/// restarted, or the fleet member holding the room left, so the room moved
/// to another), enter `room` again as `role`, up to [`REENTRIES`] times.
pub async fn paired_or_reenter(
    entry: RoomEntry,
    (role, room): (Role, RoomId),
    access: RelayAccess<'_>,
    deadlines: &Deadlines,
    on_waiting: impl FnOnce(),
) -> Result<Paired, NetError> {
    let addr = entry.addr.clone();
    let mut result = entry.paired(deadlines, on_waiting).await;
    for attempt in 1..=REENTRIES {
        if !matches!(result, Err(NetError::RelayClosed { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500) * attempt).await;
        result = match enter_room(&addr, RelayHello::Room { role, room }, access, deadlines).await {
            Ok(entry) => entry.paired(deadlines, || {}).await,
            Err(e) => Err(e),
        };
    }
    result
}

/// The error for a relay's refusal.
fn refused(status: RelayStatus) -> NetError {
    match status {
        RelayStatus::NoSuchRoom(why) => NetError::NoSuchRoom(why),
        RelayStatus::RoomTaken(why) => NetError::RoomTaken(why),
        RelayStatus::Refused(why) => NetError::Refused(why),
        // Not a refusal; callers handle these first.
        other => NetError::Refused(format!("unexpected status {other:?}")),
    }
}

/// A deadline that never comes in practice (a year away).
pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 86_400)
}

async fn read_status(
    stream: &mut TcpStream,
    addr: &str,
    peer: Role,
    deadline: Duration,
    pairing: Duration,
) -> Result<RelayStatus, NetError> {
    let read = async {
        let mut header = [0u8; STATUS_HEADER_LEN];
        stream
            .read_exact(&mut header)
            .await
            .map_err(|_| NetError::RelayClosed { peer })?;
        let not_a_relay = |source| NetError::NotARelay {
            addr: addr.to_owned(),
            source,
        };
        let len = RelayStatus::declared_len(header).map_err(not_a_relay)?;
        let mut status = header.to_vec();
        status.resize(STATUS_HEADER_LEN + len, 0);
        stream
            .read_exact(&mut status[STATUS_HEADER_LEN..])
            .await
            .map_err(|_| NetError::RelayClosed { peer })?;
        RelayStatus::decode_all(&status).map_err(not_a_relay)
    };
    tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| NetError::PairingTimeout {
            peer,
            waited: pairing,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_ignores_list_order_and_spreads_rooms() {
        let list = "a.example:9009, b.example:9009,c.example:9009";
        let reordered = "c.example:9009,a.example:9009,b.example:9009";
        let mut counts = std::collections::HashMap::new();
        for n in 0..300 {
            let room = RoomId::for_nameplate(&n.to_string());
            let pick = pick_relay(list, &room);
            assert_eq!(pick, pick_relay(reordered, &room));
            *counts.entry(pick).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(counts.values().all(|&c| c > 50), "{counts:?}");
        assert_eq!(pick_relay("solo:1", &RoomId([0; 32])), "solo:1");
    }
}
