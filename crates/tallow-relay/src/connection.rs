//! One client: read and check its hello (fixed part, password, room), join
//! its room, then either hand its stream to the waiting side or wait for
//! the other side and forward the pair's bytes.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tallow_crypto::RoomId;
use tallow_protocol::rendezvous::{
    RelayHello, RelayPassword, RelayStatus, MAX_PASSWORD_LEN, RELAY_HELLO_LEN,
};
use tallow_protocol::wire::{Decode, Encode};
use tallow_protocol::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::config::RelayConfig;
use crate::fleet::{
    forward_header, parse_forward_header, Fleet, FORWARD_HEADER_LEN, FORWARD_HEADER_MAGIC,
    MEMBER_CONNECT_TIMEOUT,
};
use crate::forward::forward;
use crate::metrics::{Metrics, Refusal};
use crate::per_address::{AddressBlock, IpSlot, PerIp};
use crate::rooms::{lock, Join, Rooms};

/// Deadline for writing a status reply to a client.
const STATUS_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The rooms of a relay: a joining client reaches the waiting one through
/// a oneshot channel.
pub(crate) type RelayRooms = Rooms<oneshot::Sender<Joiner>>;

/// The second client of a room, handed to the first one's task.
pub(crate) struct Joiner {
    stream: TcpStream,
    peer: SocketAddr,
    _slot: Option<IpSlot>,
}

/// One client's connection, from its hello to the end of its pair.
pub(crate) struct Connection {
    pub(crate) config: RelayConfig,
    pub(crate) rooms: RelayRooms,
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) ip_slot: Option<IpSlot>,
    /// Set at the relay's first pair: the receiver's address.
    pub(crate) first_receiver: Arc<OnceLock<SocketAddr>>,
    /// The fleet this relay is a member of.
    pub(crate) fleet: Option<Arc<Fleet>>,
    /// Connections per address (for clients a member forwards).
    pub(crate) per_ip: PerIp,
}

enum Joined {
    Wait {
        room: RoomId,
        nameplate: Option<String>,
        allocated: bool,
        partner: oneshot::Receiver<Joiner>,
    },
    /// Joined the room (named in the hello) where the other side waits.
    Pair(Option<RoomId>, oneshot::Sender<Joiner>),
    Refuse(Refusal, RelayStatus),
}

/// A client waiting in its room.
struct Waiting {
    room: RoomId,
    role: Role,
    /// A sender holds the room (else a receiver came first, and waits
    /// briefly).
    allocated: bool,
    /// Resolves if the room moves to another fleet member.
    moved: Option<Moved>,
}

/// The end of a room's stay on this fleet member.
type Moved = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl Connection {
    pub(crate) async fn serve(mut self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        // The fixed part is checked before the password is read, so a
        // stranger (a browser, a port scan) is told at once what this is.
        let deadline = tokio::time::Instant::now() + self.config.hello_timeout;
        let mut fixed = [0u8; RELAY_HELLO_LEN];
        let mut magic = [0u8; 4];
        if let Err(late) = read_before(&mut stream, &mut magic, deadline).await {
            return self.late(&mut stream, late).await;
        }
        // A fleet member forwarding a client: the client's address first.
        let forwarded = magic == FORWARD_HEADER_MAGIC;
        if forwarded {
            let mut header = [0u8; FORWARD_HEADER_LEN];
            header[..4].copy_from_slice(&magic);
            if let Err(late) = read_before(&mut stream, &mut header[4..], deadline).await {
                return self.late(&mut stream, late).await;
            }
            let from_member = self
                .fleet
                .as_ref()
                .is_some_and(|f| f.is_member(self.peer.ip()));
            let parsed = parse_forward_header(&header);
            let Some(client) = parsed.filter(|_| from_member) else {
                let reason = if from_member {
                    "malformed forwarded hello (unknown version or address family)"
                } else {
                    "malformed hello (a forwarded one, from outside this relay's fleet)"
                };
                self.refuse(&mut stream, Refusal::Malformed, reason).await;
                return;
            };
            if let Err(late) = read_before(&mut stream, &mut magic, deadline).await {
                return self.late(&mut stream, late).await;
            }
            self.peer = client;
            // A member that vanishes without closing (a lost node) must not
            // hold this client's room until the pairing timeout.
            keep_alive(&stream);
            match IpSlot::take(&self.per_ip, client.ip(), self.config.max_conns_per_ip) {
                Some(slot) => self.ip_slot = Some(slot),
                None => {
                    let reason = "too many connections from your address; try again later";
                    self.refuse(&mut stream, Refusal::PerIp, reason).await;
                    return;
                }
            }
        }
        fixed[..4].copy_from_slice(&magic);
        if let Err(late) = read_before(&mut stream, &mut fixed[4..], deadline).await {
            return self.late(&mut stream, late).await;
        }
        let hello = match RelayHello::decode_all(&fixed) {
            Ok(h) => h,
            Err(e) => {
                let reason = format!(
                    "malformed hello ({e}); this port is a tallow relay, use `tallow send` or `tallow receive`"
                );
                self.refuse(&mut stream, Refusal::Malformed, &reason).await;
                return;
            }
        };
        let mut len = [0u8; 1];
        if let Err(late) = read_before(&mut stream, &mut len, deadline).await {
            return self.late(&mut stream, late).await;
        }
        let Ok(len) = RelayPassword::declared_len(len[0]) else {
            let reason =
                format!("malformed hello (a password block over {MAX_PASSWORD_LEN} bytes)");
            self.refuse(&mut stream, Refusal::Malformed, &reason).await;
            return;
        };
        let mut password = vec![0u8; len];
        if let Err(late) = read_before(&mut stream, &mut password, deadline).await {
            return self.late(&mut stream, late).await;
        }
        if let Some(expected) = &self.config.password {
            if !bool::from(expected.as_slice().ct_eq(password.as_slice())) {
                self.refuse(
                    &mut stream,
                    Refusal::Password,
                    "this relay needs a password: pass --relay-password or set TALLOW_RELAY_PASSWORD",
                )
                .await;
                return;
            }
        }
        // The sender's in-process relay serves its own room only.
        if let Some(only) = self.config.only_room {
            if hello.room() != Some(only) {
                self.refuse(
                    &mut stream,
                    Refusal::RoomLimit,
                    "this relay serves one transfer only",
                )
                .await;
                return;
            }
        }
        // In a fleet, the room's owner serves it (forwarded hellos are
        // served where they land: the member that sent them chose).
        if let (Some(fleet), false, Some(room)) = (&self.fleet, forwarded, hello.room()) {
            for member in fleet.ranked(&room) {
                if member == fleet.me() {
                    break;
                }
                let connect = TcpStream::connect(member.as_str());
                match tokio::time::timeout(MEMBER_CONNECT_TIMEOUT, connect).await {
                    Ok(Ok(owner)) => {
                        let password = RelayPassword::new(&password).map(|p| p.to_bytes());
                        let hello = [&fixed[..], &password.unwrap_or_default()].concat();
                        return self.forward_to_owner(stream, owner, &member, &hello).await;
                    }
                    // Down: every member skips it alike, so its rooms move
                    // to the next in their ranking.
                    _ => tracing::warn!(member, "fleet member unreachable; trying the next"),
                }
            }
        }
        match self.join(hello) {
            Joined::Refuse(why, status) => {
                tracing::info!(room = ?hello.room().map(|r| r.short()), role = %hello.role(), reason = why.label(), "refused");
                self.metrics.refused(why);
                write_status(&mut stream, &status).await;
                let _ = stream.shutdown().await;
            }
            Joined::Pair(room, partner) => {
                // The joiner's connection (and its place in the per-address
                // count) now belongs to the waiting side's task.
                let joiner = Joiner {
                    stream,
                    peer: self.peer,
                    _slot: self.ip_slot.take(),
                };
                if let Err(Joiner { mut stream, .. }) = partner.send(joiner) {
                    if let Some(room) = room {
                        self.release(room);
                    }
                    refuse(
                        &mut stream,
                        "the other side left just as you joined; start again",
                    )
                    .await;
                }
            }
            Joined::Wait {
                room,
                nameplate,
                allocated,
                partner,
            } => {
                // Watched from now: a change of the fleet while the status
                // goes out still counts.
                let moved = self
                    .fleet
                    .as_ref()
                    .map(|fleet| Box::pin(fleet.until_not_owner(room)) as Moved);
                if let Some(nameplate) = nameplate {
                    if !write_status(&mut stream, &RelayStatus::Allocated(nameplate)).await {
                        self.release(room);
                        return;
                    }
                }
                let waiting = Waiting {
                    room,
                    role: hello.role(),
                    allocated,
                    moved,
                };
                self.wait_and_forward(stream, waiting, partner).await
            }
        }
    }

    /// Hand this client to the fleet member that owns its room: its
    /// address and `hello` (password block included) first, then bytes
    /// both ways, as the owner decides.
    async fn forward_to_owner(
        self,
        mut client: TcpStream,
        mut owner: TcpStream,
        member: &str,
        hello: &[u8],
    ) {
        let _ = owner.set_nodelay(true);
        keep_alive(&owner);
        let mut bytes = forward_header(self.peer).to_vec();
        bytes.extend_from_slice(hello);
        if owner.write_all(&bytes).await.is_err() {
            refuse(
                &mut client,
                "the relay that holds this room left just now; try again",
            )
            .await;
            return;
        }
        tracing::info!(member, "forwarded to the room's owner");
        self.metrics
            .fleet_forwards_total
            .fetch_add(1, Ordering::Relaxed);
        self.metrics.forwards_active.fetch_add(1, Ordering::Relaxed);
        // The owner applies the pairing and idle deadlines; this copy only
        // outlasts the longest of them (a sender may wait the whole pairing
        // timeout without a byte moving).
        let quiet =
            self.config.pair_timeout.max(self.config.idle_timeout) + Duration::from_secs(60);
        let (_, _, outcome) = forward(client, owner, quiet, None).await;
        self.metrics.forwards_active.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(member, outcome, "forwarding ended");
    }

    /// The hello did not all come: too slowly (told so), or the client
    /// left.
    async fn late(&self, stream: &mut TcpStream, late: Late) {
        if late == Late::Slow {
            self.refuse_slow(stream).await;
        }
    }

    async fn refuse_slow(&self, stream: &mut TcpStream) {
        let secs = self.config.hello_timeout.as_secs();
        self.refuse(
            stream,
            Refusal::HelloTimeout,
            &format!("no hello within {secs} s"),
        )
        .await;
    }

    async fn refuse(&self, stream: &mut TcpStream, why: Refusal, reason: &str) {
        self.metrics.refused(why);
        tracing::info!(peer = %self.peer.ip(), reason = why.label(), "refused");
        refuse(stream, reason).await;
    }

    fn join(&self, hello: RelayHello) -> Joined {
        let (partner, waiting) = oneshot::channel();
        let block = AddressBlock::of(self.peer.ip());
        let now = std::time::Instant::now();
        match lock(&self.rooms).join(hello, self.id, block, partner, now) {
            Join::Wait {
                room,
                nameplate,
                allocated,
            } => Joined::Wait {
                room,
                nameplate,
                allocated,
                partner: waiting,
            },
            Join::Pair(partner) => Joined::Pair(hello.room(), partner),
            Join::Refuse(why, status) => Joined::Refuse(why, status),
        }
    }

    /// Remove the room if it is still ours.
    fn release(&self, room: RoomId) {
        lock(&self.rooms).release(room, self.id, std::time::Instant::now());
    }

    async fn wait_and_forward(
        self,
        mut stream: TcpStream,
        waiting: Waiting,
        mut partner: oneshot::Receiver<Joiner>,
    ) {
        let Waiting {
            room,
            role,
            allocated,
            moved,
        } = waiting;
        if !write_status(&mut stream, &RelayStatus::Waiting).await {
            self.release(room);
            return;
        }
        tracing::info!(room = %room.short(), role = %role, allocated, "waiting for peer");
        // Only a sender holds a room for long: a receiver that came first
        // waits briefly, so nobody can park in rooms senders will be given.
        let wait = if allocated {
            self.config.pair_timeout
        } else {
            self.config
                .receiver_first_wait
                .min(self.config.pair_timeout)
        };
        let waited = Instant::now();
        let mut probe = [0u8; 1];
        // In a fleet whose members change so that this room belongs to
        // another, the wait ends: the client enters its room again and is
        // sent to the new owner, where its peer will look for it.
        let moved = async {
            match moved {
                Some(moved) => moved.await,
                None => std::future::pending().await,
            }
        };
        let other = tokio::select! {
            biased;
            other = &mut partner => other.ok().map(|j| (j.stream, j.peer, j._slot)),
            // Nothing may arrive before pairing: data or EOF both end the wait.
            _ = stream.read(&mut probe) => None,
            _ = moved => {
                tracing::info!(room = %room.short(), "room moved to another fleet member");
                None
            }
            _ = tokio::time::sleep(wait) => {
                let secs = wait.as_secs();
                self.release(room);
                // A partner may have arrived in the same instant.
                if let Ok(Joiner { stream: mut other, .. }) = partner.try_recv() {
                    refuse(&mut other, "the other side timed out just as you joined; start again").await;
                }
                tracing::info!(room = %room.short(), "pairing timed out");
                let (why, status) = if allocated {
                    (Refusal::PairTimeout, RelayStatus::Refused(format!("no {} joined within {secs} s", role.peer())))
                } else {
                    (Refusal::NoSuchRoom, RelayStatus::NoSuchRoom(format!(
                        "no sender is waiting with this code's number on this relay (waited {secs} s): check the number, that the sender still waits, and that both sides use the same relay"
                    )))
                };
                self.metrics.refused(why);
                write_status(&mut stream, &status).await;
                let _ = stream.shutdown().await;
                return;
            }
        };
        let Some((mut other, other_peer, _other_slot)) = other else {
            self.release(room);
            tracing::info!(room = %room.short(), "waiting client left");
            return;
        };
        // Before either side hears it is paired (the sender's in-process
        // relay is read as soon as it is).
        let _ = self.first_receiver.set(match role {
            Role::Receiver => self.peer,
            Role::Sender => other_peer,
        });
        // Our own id marks the Paired slot; released when forwarding ends.
        let _guard = ReleaseOnDrop {
            rooms: self.rooms.clone(),
            room,
            id: self.id,
        };
        // Each is told the address it came from (a direct path may reach
        // it there), an IPv4 client as IPv4 (a dual-stack socket sees it
        // as `::ffff:a.b.c.d`, which nobody can dial from an IPv4 socket).
        let seen = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        if !write_status(&mut stream, &RelayStatus::Paired(Some(seen(self.peer)))).await
            || !write_status(&mut other, &RelayStatus::Paired(Some(seen(other_peer)))).await
        {
            return;
        }
        tracing::info!(room = %room.short(), waited_ms = waited.elapsed().as_millis() as u64, "paired");
        let started = Instant::now();
        self.metrics.pairs_total.fetch_add(1, Ordering::Relaxed);
        self.metrics.pairs_active.fetch_add(1, Ordering::Relaxed);
        let (a_to_b, b_to_a, outcome) = forward(
            stream,
            other,
            self.config.idle_timeout,
            self.config.max_rate,
        )
        .await;
        self.metrics.pairs_active.fetch_sub(1, Ordering::Relaxed);
        self.metrics
            .bytes_forwarded_total
            .fetch_add(a_to_b + b_to_a, Ordering::Relaxed);
        tracing::info!(
            room = %room.short(),
            bytes_from_waiting_side = a_to_b,
            bytes_from_joining_side = b_to_a,
            duration_ms = started.elapsed().as_millis() as u64,
            outcome,
            "pair finished"
        );
    }
}

/// Frees a paired room when its forwarding task ends, however it ends.
struct ReleaseOnDrop {
    rooms: RelayRooms,
    room: RoomId,
    id: u64,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        lock(&self.rooms).release(self.room, self.id, std::time::Instant::now());
    }
}

/// Why part of a hello is missing.
#[derive(PartialEq, Eq)]
enum Late {
    /// The hello deadline passed.
    Slow,
    /// The client closed the connection (or it failed).
    Closed,
}

/// Fill `buf` from `stream` before `deadline`.
async fn read_before(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: tokio::time::Instant,
) -> Result<(), Late> {
    match tokio::time::timeout_at(deadline, stream.read_exact(buf)).await {
        Err(_) => Err(Late::Slow),
        Ok(Err(_)) => Err(Late::Closed),
        Ok(Ok(_)) => Ok(()),
    }
}

/// Probe a connection between fleet members when it is quiet, so one end
/// learns within about half a minute that the other is gone.
fn keep_alive(stream: &TcpStream) {
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(15))
        .with_interval(Duration::from_secs(5));
    #[cfg(target_os = "linux")]
    let probes = probes.with_retries(3);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&probes);
}

async fn write_status(stream: &mut TcpStream, status: &RelayStatus) -> bool {
    matches!(
        tokio::time::timeout(STATUS_WRITE_TIMEOUT, stream.write_all(&status.to_bytes())).await,
        Ok(Ok(()))
    )
}

pub(crate) async fn refuse(stream: &mut TcpStream, reason: &str) {
    write_status(stream, &RelayStatus::Refused(reason.to_owned())).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_between_members_are_probed_when_quiet() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let socket = socket2::SockRef::from(&stream);
        assert!(!socket.keepalive().unwrap());
        keep_alive(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(15)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
    }
}
