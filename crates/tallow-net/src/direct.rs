//! Moving a channel off the relay onto a connection straight to the peer.
//!
//! The relay introduces; the bytes go peer to peer when they can. Right
//! after a handshake through a relay (never on the local network's route,
//! which is direct already), [`settle_route`]:
//!
//! 1. Offers the peer, inside the encrypted channel, the addresses at
//!    which it accepts a connection: each interface address with a port it
//!    listens on, and first the address the relay saw it come from (behind
//!    a NAT, the NAT's public side). The listening port is the relay
//!    connection's own local port, shared (`SO_REUSEPORT`), and every
//!    connection to the peer is opened *from* that port: a NAT that kept
//!    the port for the relay keeps it for these, and when both sides dial
//!    each other's public address at once, each NAT sees its own side's
//!    packet go out before the other's comes in (TCP simultaneous open),
//!    so both let the connection through.
//! 2. Races connections to every address the peer offered and accepts the
//!    peer's, for at most [`DIRECT_WAIT`]. Each connection must prove,
//!    both ways, that its other end holds this session's keys
//!    ([`tallow_crypto::DirectPathKey`]): nothing from an unproven
//!    connection is ever used, and no new guess at the code is possible.
//! 3. The sender chooses (the first proven connection, or the relay when
//!    the time is up) and the receiver confirms, both on the relay's
//!    channel; then both move the channel (same keys, same counters) to
//!    the chosen connection and close the relay's. Before the transfer
//!    starts, so resume, integrity and what a hostile relay can do are
//!    unchanged: it can only refuse to introduce (then the relay carries
//!    the data, as before) or stop the session.
//!
//! `--relay-only` (and reaching the relay through a proxy) offers no
//! address: the peer never learns ours, and nothing direct is tried.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand_core::{OsRng, RngCore};
use tallow_crypto::{DirectPathKey, DIRECT_PROOF_LEN, FRAME_HEADER_LEN};
use tallow_protocol::direct::{
    role_label, Candidates, DirectHello, RouteChoice, RouteReply, DIRECT_HELLO_LEN, MAX_CANDIDATES,
};
use tallow_protocol::limits::Deadlines;
use tallow_protocol::transport::{FrameSink, FrameSource};
use tallow_protocol::wire::{Decode, DecodeError, Encode};
use tallow_protocol::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::channel::{OrderlyClose, PeerChannel, Via};
use crate::NetError;

/// Longest the sender looks for a direct connection before the relay
/// carries the data.
pub const DIRECT_WAIT: Duration = Duration::from_secs(3);
/// Longest one connection's hellos and proofs may take.
const PROOF_WAIT: Duration = Duration::from_secs(2);
/// One connection attempt's limit; then it starts again (a NAT may have
/// dropped the first packet, before the other side's opened the way).
const DIAL_WAIT: Duration = Duration::from_millis(1500);
/// Pause after a refused attempt.
const DIAL_AGAIN_AFTER: Duration = Duration::from_millis(200);
/// Most connections accepted from the network on each listener while
/// looking.
const MAX_INCOMING: usize = 32;

/// Why the relay still carries the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoDirectPath {
    /// This side offered no address (`--relay-only`, a proxy).
    Off,
    /// This side had no address to offer (no port to listen on, and the
    /// relay did not say where it saw us).
    NothingToOffer,
    /// The other side offered none.
    OffAtPeer(Role),
    /// No connection was proven within [`DIRECT_WAIT`].
    NotFound,
}

impl NoDirectPath {
    /// `off`, `off-at-peer` or `not-found`, for scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            NoDirectPath::Off => "off",
            NoDirectPath::NothingToOffer => "nothing-to-offer",
            NoDirectPath::OffAtPeer(_) => "off-at-peer",
            NoDirectPath::NotFound => "not-found",
        }
    }
}

impl std::fmt::Display for NoDirectPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoDirectPath::Off => write!(f, "direct connections are off here"),
            NoDirectPath::NothingToOffer => write!(f, "no address here to offer the other side"),
            NoDirectPath::OffAtPeer(peer) => write!(f, "the {peer} keeps to the relay"),
            NoDirectPath::NotFound => {
                write!(f, "no direct connection within {} s", DIRECT_WAIT.as_secs())
            }
        }
    }
}

/// What a side knows, after pairing on a relay, for finding a direct path.
#[derive(Debug, Clone, Copy)]
pub struct DirectSetup {
    /// Offer addresses and try connections (not with `--relay-only` or a
    /// proxy).
    pub allowed: bool,
    /// The address the relay saw us come from.
    pub seen_as: Option<SocketAddr>,
}

/// On a channel through a relay, look for a direct connection and move
/// the channel onto it if one is proven and both sides agree; otherwise
/// return it as it is, with the reason in `no_direct`. Other routes are
/// returned untouched.
pub async fn settle_route(
    mut channel: PeerChannel,
    us: Role,
    setup: DirectSetup,
    deadlines: &Deadlines,
) -> Result<PeerChannel, NetError> {
    // Whatever the route, the key is not kept past this.
    let key = channel.direct_key.take();
    let Via::Relay(relay) = channel.via.clone() else {
        return Ok(channel);
    };
    let Some(key) = key else {
        return Ok(channel);
    };
    let local = if setup.allowed {
        let port = channel.reader.io().local_addr().map(|a| a.port()).ok();
        port.map(|port| Local::open(port, setup.seen_as.map(canonical)))
    } else {
        None
    };
    let offered = local
        .as_ref()
        .map_or_else(Vec::new, |l| l.candidates.clone());
    let timeout = deadlines.handshake;
    send(&mut channel, &Candidates(offered), timeout).await?;
    let theirs: Candidates = recv(&mut channel, us, timeout).await?;
    let local = match local {
        Some(local) if !local.candidates.is_empty() => local,
        Some(_) => return Ok(stay(channel, NoDirectPath::NothingToOffer)),
        None => return Ok(stay(channel, NoDirectPath::Off)),
    };
    if theirs.0.is_empty() {
        return Ok(stay(channel, NoDirectPath::OffAtPeer(us.peer())));
    }
    // Never this machine's own services, unless the relay is on this
    // machine too (then so, most likely, is the peer): a relay that lies
    // about where it saw the peer must not point us at them.
    let relay_here = channel
        .reader
        .io()
        .peer_addr()
        .is_ok_and(|a| a.ip().to_canonical().is_loopback());
    let targets = dialable(theirs.0, relay_here);
    let started = Instant::now();
    let mut race = Race::start(local, targets, us, Arc::new(key), started + DIRECT_WAIT);
    match us {
        Role::Sender => {
            let first = tokio::time::timeout_at(started + DIRECT_WAIT, race.proven.recv()).await;
            let Ok(Some(proven)) = first else {
                send(&mut channel, &RouteChoice::Relay, timeout).await?;
                return Ok(stay(channel, NoDirectPath::NotFound));
            };
            send(&mut channel, &RouteChoice::Direct(proven.ours), timeout).await?;
            match recv(&mut channel, us, timeout).await? {
                RouteReply::Ready => move_to(channel, proven, us, relay),
                RouteReply::Stay => Ok(stay(channel, NoDirectPath::NotFound)),
            }
        }
        Role::Receiver => {
            // Everything proven until the sender has chosen, by the
            // sender's nonce.
            let mut proven = HashMap::new();
            let choice: RouteChoice = {
                let choice = recv(&mut channel, us, DIRECT_WAIT + timeout);
                tokio::pin!(choice);
                loop {
                    tokio::select! {
                        choice = &mut choice => break choice?,
                        Some(p) = race.proven.recv() => { proven.insert(p.theirs, p); }
                    }
                }
            };
            let RouteChoice::Direct(chosen) = choice else {
                return Ok(stay(channel, NoDirectPath::NotFound));
            };
            // The sender has checked our proof; ours of its proof may be a
            // moment behind.
            let until = Instant::now() + PROOF_WAIT;
            while !proven.contains_key(&chosen) {
                match tokio::time::timeout_at(until, race.proven.recv()).await {
                    Ok(Some(p)) => {
                        proven.insert(p.theirs, p);
                    }
                    _ => break,
                }
            }
            match proven.remove(&chosen) {
                // Nothing may follow the choice on the relay: checked
                // before "ready", after which the sender moves.
                Some(_) if channel.reader.has_read_ahead() => Err(left_on_the_relay(us)),
                Some(p) => {
                    send(&mut channel, &RouteReply::Ready, timeout).await?;
                    move_to(channel, p, us, relay)
                }
                None => {
                    send(&mut channel, &RouteReply::Stay, timeout).await?;
                    Ok(stay(channel, NoDirectPath::NotFound))
                }
            }
        }
    }
}

fn stay(mut channel: PeerChannel, why: NoDirectPath) -> PeerChannel {
    channel.no_direct = Some(why);
    channel
}

/// The channel, same keys and counters, on `proven`'s connection; the
/// relay's connection is closed.
fn move_to(
    channel: PeerChannel,
    proven: Proven,
    us: Role,
    relay: String,
) -> Result<PeerChannel, NetError> {
    let _ = proven.stream.set_nodelay(true);
    let closing = OrderlyClose::new(&proven.stream);
    let (read, write) = proven.stream.into_split();
    let reader = channel
        .reader
        .moved_to(read)
        .ok_or_else(|| left_on_the_relay(us))?;
    Ok(PeerChannel {
        reader,
        writer: channel.writer.moved_to(write),
        short_authentication_string: channel.short_authentication_string,
        via: Via::Direct(us.peer(), proven.addr, relay),
        closing,
        direct_key: None,
        no_direct: None,
    })
}

/// The peer sent more on the relay after its last route message.
fn left_on_the_relay(us: Role) -> NetError {
    NetError::RouteMessage {
        peer: us.peer(),
        source: DecodeError::Invalid("bytes after the last message on the relay"),
    }
}

/// The peer's candidates worth dialling: as IPv4 where they are IPv4,
/// and only those another machine might reach, or loopback too when the
/// relay is on this machine (`relay_here`).
fn dialable(candidates: Vec<SocketAddr>, relay_here: bool) -> Vec<SocketAddr> {
    candidates
        .into_iter()
        .map(canonical)
        .filter(|t| reachable_from_elsewhere(t.ip()) || (relay_here && t.ip().is_loopback()))
        .collect()
}

/// An IPv4 address as IPv4 (not `::ffff:a.b.c.d`, which an IPv4 socket
/// cannot dial).
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

async fn send(
    channel: &mut PeerChannel,
    message: &impl Encode,
    timeout: Duration,
) -> Result<(), NetError> {
    let mut frame = vec![0u8; FRAME_HEADER_LEN];
    message.encode(&mut frame);
    Ok(channel.writer.send_frame(&mut frame, timeout).await?)
}

async fn recv<T: for<'a> Decode<'a, Error = DecodeError>>(
    channel: &mut PeerChannel,
    us: Role,
    timeout: Duration,
) -> Result<T, NetError> {
    let mut buf = Vec::new();
    channel.reader.recv_frame(&mut buf, Some(timeout)).await?;
    T::decode_all(&buf).map_err(|source| NetError::RouteMessage {
        peer: us.peer(),
        source,
    })
}

/// Our side of the search: listeners and the addresses offered.
struct Local {
    /// The relay connection's local port, which outgoing attempts share.
    port: u16,
    listeners: Vec<TcpListener>,
    candidates: Vec<SocketAddr>,
}

impl Local {
    /// Listen on `port` (else on any port) for each address family, and
    /// list the addresses to offer: `seen_as` first, then each interface's
    /// (not loopback or link-local: the peer cannot reach those).
    fn open(port: u16, seen_as: Option<SocketAddr>) -> Local {
        let mut candidates: Vec<SocketAddr> = seen_as.into_iter().collect();
        let mut listeners = Vec::new();
        let interfaces = if_addrs::get_if_addrs().unwrap_or_default();
        for any in [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ] {
            let Ok(listener) = listen_shared(SocketAddr::new(any, port))
                .or_else(|_| listen_shared(SocketAddr::new(any, 0)))
            else {
                continue;
            };
            let Ok(at) = listener.local_addr() else {
                continue;
            };
            listeners.push(listener);
            for iface in &interfaces {
                let ip = iface.ip();
                if ip.is_ipv4() == any.is_ipv4() && reachable_from_elsewhere(ip) {
                    candidates.push(SocketAddr::new(ip, at.port()));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        candidates.retain(|c| seen.insert(*c));
        candidates.truncate(MAX_CANDIDATES);
        Local {
            port,
            listeners,
            candidates,
        }
    }
}

/// Whether another machine might reach us at `ip`.
fn reachable_from_elsewhere(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_unspecified() || v6.is_unicast_link_local()),
    }
}

/// A socket for `addr` whose port other sockets of ours may share.
fn shared_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let s = TcpSocket::new_v6()?;
            // The IPv4 listener has IPv4.
            socket2::SockRef::from(&s).set_only_v6(true)?;
            s
        }
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    Ok(socket)
}

fn listen_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = shared_socket(addr)?;
    socket.bind(addr)?;
    socket.listen(64)
}

/// A connection to `target` from our shared `port` (from any port if that
/// cannot be had).
async fn dial(target: SocketAddr, port: u16) -> std::io::Result<TcpStream> {
    let any = match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = shared_socket(target)?;
    // Taken, say by another program: from any port then (the connection
    // may still work where no NAT is in the way).
    let _ = socket.bind(SocketAddr::new(any, port));
    socket.connect(target).await
}

/// A connection whose other end proved it holds this session's keys.
struct Proven {
    stream: TcpStream,
    /// The address it reached (ours to tell the user).
    addr: SocketAddr,
    /// Our nonce on it, and the peer's: together they name it.
    ours: [u8; 32],
    theirs: [u8; 32],
}

/// Connections being opened, accepted and proven; dropping it stops them
/// all and closes every connection not taken.
struct Race {
    proven: mpsc::Receiver<Proven>,
    _tasks: JoinSet<()>,
}

impl Race {
    fn start(
        local: Local,
        targets: Vec<SocketAddr>,
        us: Role,
        key: Arc<DirectPathKey>,
        dial_until: Instant,
    ) -> Race {
        let (tx, proven) = mpsc::channel(MAX_CANDIDATES);
        let mut tasks = JoinSet::new();
        for target in targets {
            let (tx, key, port) = (tx.clone(), key.clone(), local.port);
            tasks.spawn(async move {
                while Instant::now() < dial_until {
                    let left = dial_until.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(DIAL_WAIT.min(left), dial(target, port)).await {
                        Ok(Ok(stream)) => {
                            if let Some(p) = prove(stream, target, us, &key).await {
                                let _ = tx.send(p).await;
                                return;
                            }
                            // Not the peer, or not yet (its listener busy
                            // with strangers): again while there is time.
                            tokio::time::sleep(DIAL_AGAIN_AFTER).await;
                        }
                        Ok(Err(_)) => tokio::time::sleep(DIAL_AGAIN_AFTER).await,
                        Err(_) => {}
                    }
                }
            });
        }
        for listener in local.listeners {
            let (tx, key) = (tx.clone(), key.clone());
            tasks.spawn(async move {
                let mut provers = JoinSet::new();
                let mut accepted = 0;
                while accepted < MAX_INCOMING {
                    let (stream, from) = match listener.accept().await {
                        Ok(accepted) => accepted,
                        // One connection's trouble (reset before accept,
                        // out of descriptors): not the listener's end.
                        Err(_) => {
                            tokio::time::sleep(DIAL_AGAIN_AFTER).await;
                            continue;
                        }
                    };
                    accepted += 1;
                    let (tx, key) = (tx.clone(), key.clone());
                    provers.spawn(async move {
                        if let Some(p) = prove(stream, from, us, &key).await {
                            let _ = tx.send(p).await;
                        }
                    });
                }
                // Enough: take no more (closing the listener refuses them),
                // and finish proving those we have.
                drop(listener);
                while provers.join_next().await.is_some() {}
            });
        }
        Race {
            proven,
            _tasks: tasks,
        }
    }
}

/// Both ends send a hello with a fresh nonce, then their proof over both
/// nonces; each checks the other's. `None` if anything is off (or slow).
async fn prove(
    mut stream: TcpStream,
    addr: SocketAddr,
    us: Role,
    key: &DirectPathKey,
) -> Option<Proven> {
    let mut ours = [0u8; 32];
    OsRng.fill_bytes(&mut ours);
    let exchange = async {
        let hello = DirectHello {
            role: us,
            nonce: ours,
        };
        stream.write_all(&hello.to_bytes()).await.ok()?;
        let mut buf = [0u8; DIRECT_HELLO_LEN];
        stream.read_exact(&mut buf).await.ok()?;
        let theirs = DirectHello::decode_all(&buf).ok()?;
        // Our own hello back (a connection to ourselves) is not the peer.
        if theirs.role != us.peer() {
            return None;
        }
        let proof = key.proof(role_label(us), &ours, &theirs.nonce);
        stream.write_all(&proof).await.ok()?;
        let mut proof = [0u8; DIRECT_PROOF_LEN];
        stream.read_exact(&mut proof).await.ok()?;
        key.verify(role_label(us.peer()), &theirs.nonce, &ours, &proof)
            .then_some(theirs.nonce)
    };
    let theirs = tokio::time::timeout(PROOF_WAIT, exchange).await.ok()??;
    Some(Proven {
        stream,
        addr,
        ours,
        theirs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake_io::{handshake_as_sender, read_sender_hello};
    use crate::relay_client::connect_shareable;
    use tallow_crypto::CodePhrase;

    fn key(seed: u8) -> DirectPathKey {
        // Two sessions' keys, from the key schedule itself.
        let hybrid = tallow_crypto::hybrid_kem::HybridSecrets {
            x25519: zeroize::Zeroizing::new([seed; 32]),
            mlkem: zeroize::Zeroizing::new([2; 32]),
        };
        tallow_crypto::key_schedule::SessionSecrets::derive([3; 32], &[4; 32], &hybrid)
            .direct_path_key()
    }

    /// The two ends of one TCP connection on 127.0.0.1.
    async fn connection() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialled = TcpStream::connect(listener.local_addr().unwrap());
        let (dialled, accepted) = tokio::join!(dialled, listener.accept());
        (dialled.unwrap(), accepted.unwrap().0)
    }

    async fn prove_both(
        (a_role, a_key): (Role, &DirectPathKey),
        (b_role, b_key): (Role, &DirectPathKey),
    ) -> (Option<Proven>, Option<Proven>) {
        let (a, b) = connection().await;
        let at = a.peer_addr().unwrap();
        tokio::join!(prove(a, at, a_role, a_key), prove(b, at, b_role, b_key))
    }

    #[tokio::test]
    async fn proofs_pass_only_between_the_two_sides_of_one_session() {
        let (k, other) = (key(1), key(9));
        let (s, r) = prove_both((Role::Sender, &k), (Role::Receiver, &k)).await;
        let (s, r) = (s.unwrap(), r.unwrap());
        // Both name the connection by the same two nonces.
        assert_eq!((s.ours, s.theirs), (r.theirs, r.ours));
        let (s, r) = prove_both((Role::Sender, &k), (Role::Receiver, &other)).await;
        assert!(s.is_none() && r.is_none());
    }

    #[tokio::test]
    async fn a_connection_to_ourselves_is_not_the_peer() {
        // What a side reaches when the peer's private address is its own.
        let k = key(1);
        for role in [Role::Sender, Role::Receiver] {
            let (a, b) = prove_both((role, &k), (role, &k)).await;
            assert!(a.is_none() && b.is_none(), "{role}");
        }
    }

    #[tokio::test]
    async fn only_addresses_another_machine_might_reach_are_offered() {
        for ip in [
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::",
        ] {
            assert!(!reachable_from_elsewhere(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["192.168.1.2", "198.51.100.7", "2001:db8::1", "fd00::2"] {
            assert!(reachable_from_elsewhere(ip.parse().unwrap()), "{ip}");
        }
        // A lying relay's "the peer is at 127.0.0.1:6379" is not dialled;
        // a dual-stack relay's `::ffff:` form is dialled as IPv4.
        let offered: Vec<SocketAddr> = ["127.0.0.1:6379", "[::ffff:198.51.100.7]:5", "[::1]:7"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let v4: SocketAddr = "198.51.100.7:5".parse().unwrap();
        assert_eq!(dialable(offered.clone(), false), [v4]);
        assert_eq!(dialable(offered, true).len(), 3);
        let seen: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        let local = Local::open(0, Some(seen));
        assert_eq!(local.candidates.first(), Some(&seen));
        assert!(local.candidates.len() <= MAX_CANDIDATES);
        assert!(local.candidates[1..]
            .iter()
            .all(|c| reachable_from_elsewhere(c.ip())));
    }

    /// A sender's and a receiver's channel after a handshake through a
    /// relay on 127.0.0.1 (a task copying bytes between two connections),
    /// with what the relay saw of each.
    async fn through_a_relay() -> ((PeerChannel, SocketAddr), (PeerChannel, SocketAddr)) {
        let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = relay.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut a, _) = relay.accept().await.unwrap();
            let (mut b, _) = relay.accept().await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
        });
        let s = connect_shareable(&at).await.unwrap();
        let r = connect_shareable(&at).await.unwrap();
        let (s_seen, r_seen) = (s.local_addr().unwrap(), r.local_addr().unwrap());
        let code = CodePhrase::parse("7-abacus-zoom-yodel").unwrap();
        let d = Deadlines::default();
        let receiver = async {
            read_sender_hello(r, &d)
                .await
                .unwrap()
                .respond(&code, &d)
                .await
        };
        let (s, r) = tokio::join!(handshake_as_sender(s, &code, &d), receiver);
        let (mut s, mut r) = (s.unwrap(), r.unwrap());
        s.via = Via::Relay(at.clone());
        r.via = Via::Relay(at);
        ((s, s_seen), (r, r_seen))
    }

    /// A frame each way over the settled channels.
    async fn talk(s: &mut PeerChannel, r: &mut PeerChannel) {
        one_way(s, r).await;
        one_way(r, s).await;
    }

    async fn one_way(from: &mut PeerChannel, to: &mut PeerChannel) {
        let t = Duration::from_secs(5);
        let mut frame = vec![0u8; FRAME_HEADER_LEN];
        frame.extend_from_slice(b"after the move");
        from.writer.send_frame(&mut frame, t).await.unwrap();
        let mut got = Vec::new();
        to.reader.recv_frame(&mut got, Some(t)).await.unwrap();
        assert_eq!(got, b"after the move");
    }

    #[tokio::test]
    async fn a_channel_moves_to_a_proven_connection_and_keeps_its_keys() {
        let ((s, s_seen), (r, r_seen)) = through_a_relay().await;
        let d = Deadlines::default();
        let setup = |seen| DirectSetup {
            allowed: true,
            seen_as: Some(seen),
        };
        let (s, r) = tokio::join!(
            settle_route(s, Role::Sender, setup(s_seen), &d),
            settle_route(r, Role::Receiver, setup(r_seen), &d)
        );
        let (mut s, mut r) = (s.unwrap(), r.unwrap());
        assert!(
            matches!(s.via, Via::Direct(Role::Receiver, ..)),
            "{}",
            s.via
        );
        assert!(matches!(r.via, Via::Direct(Role::Sender, ..)), "{}", r.via);
        assert_eq!((s.no_direct, r.no_direct), (None, None));
        talk(&mut s, &mut r).await;
    }

    #[tokio::test]
    async fn relay_only_on_one_side_keeps_both_on_the_relay() {
        let ((s, s_seen), (r, r_seen)) = through_a_relay().await;
        let d = Deadlines::default();
        let s_setup = DirectSetup {
            allowed: false,
            seen_as: Some(s_seen),
        };
        let r_setup = DirectSetup {
            allowed: true,
            seen_as: Some(r_seen),
        };
        let (s, r) = tokio::join!(
            settle_route(s, Role::Sender, s_setup, &d),
            settle_route(r, Role::Receiver, r_setup, &d)
        );
        let (mut s, mut r) = (s.unwrap(), r.unwrap());
        assert!(matches!(s.via, Via::Relay(_)) && matches!(r.via, Via::Relay(_)));
        assert_eq!(s.no_direct, Some(NoDirectPath::Off));
        assert_eq!(r.no_direct, Some(NoDirectPath::OffAtPeer(Role::Sender)));
        talk(&mut s, &mut r).await;
    }

    #[tokio::test]
    async fn a_malformed_route_message_ends_the_session_with_its_cause() {
        let ((mut s, _), (r, r_seen)) = through_a_relay().await;
        let d = Deadlines::default();
        // Count 17: over the limit.
        let mut frame = vec![0u8; FRAME_HEADER_LEN];
        frame.extend_from_slice(&[64, 17]);
        s.writer
            .send_frame(&mut frame, Duration::from_secs(5))
            .await
            .unwrap();
        let setup = DirectSetup {
            allowed: true,
            seen_as: Some(r_seen),
        };
        let err = settle_route(r, Role::Receiver, setup, &d)
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("the sender sent a malformed message about the route"),
            "{err}"
        );
    }
}
