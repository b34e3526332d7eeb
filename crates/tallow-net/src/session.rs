//! Reaching the other side by every route allowed, and keeping the first
//! that works.
//!
//! * Sender: with LAN discovery on (the default), it hosts a relay
//!   in-process on an ephemeral port of every interface and announces it on
//!   the local network; with a relay configured, it also joins that relay.
//!   The first route on which a receiver shows up is used; the other is
//!   dropped. With no relay configured this is the whole story: `tallow
//!   send` works on a fresh machine with nothing set up.
//! * Receiver: listens for the sender's announcement and, with a relay
//!   configured, joins the relay at the same time; the first route on which
//!   the sender's hello arrives is used, and the other is closed before the
//!   receiver answers it (one guess at the code per run, however many
//!   routes).
//!
//! Either way exactly one handshake runs, on one stream: the sender sends
//! its hello only after `first_ok` has picked a paired route and dropped
//! the other, and the receiver answers only on the route it kept.
//!
//! After a handshake through a relay, [`settle_route`] looks for a direct
//! connection and moves the channel onto it (unless `--relay-only` or a
//! proxy): the relay then carried only the handshake.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use tallow_crypto::{CodePhrase, RoomId};
use tallow_protocol::limits::Deadlines;
use tallow_protocol::Role;
use tallow_relay::{RelayConfig, RelayServer};
use tokio::task::JoinHandle;

use crate::channel::{PeerChannel, Via};
use crate::direct::{settle_route, DirectSetup};
use crate::handshake_io::{handshake_as_sender, read_sender_hello};
use crate::lan::{announce, discover};
use crate::proxy::Proxy;
use crate::relay_client::{
    connect_to_relay, enter_room, join_room, paired_or_reenter, pick_relay, RelayAccess,
};
use crate::NetError;
use tallow_protocol::rendezvous::RelayHello;

/// Longest we wait for a last message to drain out to the peer: out of our
/// socket ([`crate::OrderlyClose`]), or through the in-process relay.
pub const ABORT_DRAIN: Duration = Duration::from_secs(2);

/// Longest a receiver listens for a sender on the local network.
pub const LAN_WAIT: Duration = Duration::from_secs(30);

/// Which ways to reach the other side.
#[derive(Debug, Clone)]
pub struct Route {
    /// A relay to join, `HOST:PORT`, or a comma-separated list of relays
    /// of which [`pick_relay`] chooses one per room.
    pub relay: Option<String>,
    /// The relay's password, if it requires one.
    pub relay_password: Option<String>,
    /// Reach the relay through this proxy (never the local network).
    pub proxy: Option<Proxy>,
    /// Announce (sender) or discover (receiver) on the local network.
    pub lan: bool,
    /// UDP port for announcements.
    pub discovery_port: u16,
    /// After a handshake through a relay, offer our addresses and move to
    /// a direct connection if one works (never through a proxy).
    pub direct: bool,
}

impl Route {
    /// What a side paired on a relay needs to look for a direct path.
    fn direct_setup(&self, seen_as: Option<std::net::SocketAddr>) -> DirectSetup {
        DirectSetup {
            // A proxy hides our address from the relay; a direct path
            // would show it to the peer.
            allowed: self.direct && self.proxy.is_none(),
            seen_as,
        }
    }

    fn access(&self) -> RelayAccess<'_> {
        RelayAccess {
            password: self
                .relay_password
                .as_deref()
                .unwrap_or_default()
                .as_bytes(),
            proxy: self.proxy.as_ref(),
        }
    }
}

/// Tasks that must live as long as the transfer: the in-process relay the
/// bytes flow through. Dropping it stops them.
#[derive(Default)]
pub struct SessionGuard {
    tasks: Vec<JoinHandle<()>>,
    relay: Option<std::sync::Arc<tallow_relay::Metrics>>,
}

impl SessionGuard {
    /// Let the in-process relay forward what is still in flight (a last
    /// `Abort`, say) before the process exits, for at most `max`.
    pub async fn drain(&self, max: Duration) {
        let Some(metrics) = &self.relay else { return };
        let deadline = tokio::time::Instant::now() + max;
        while metrics
            .pairs_active
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The sender's side: returns the authenticated channel once a receiver
/// has joined on some route and the handshake succeeded, and the code it
/// used. With `allocate`, the relay (if there is one, and only one) chooses
/// the code's number and `code`'s own digits are replaced; without a relay,
/// or if it fails while the local network is on, `code` stays as it is.
/// `on_waiting` runs once, with the code, when the first route is ready
/// and waiting for the receiver.
pub async fn open_as_sender(
    route: &Route,
    code: CodePhrase,
    allocate: bool,
    deadlines: &Deadlines,
    on_waiting: impl FnOnce(&CodePhrase) + Send,
    on_route_failed: &(dyn Fn(&NetError) + Sync),
) -> Result<(PeerChannel, SessionGuard, CodePhrase), NetError> {
    let access = route.access();
    // The relay first: it may choose the code's number. A list of relays
    // is picked from by the number, so there the number is our own.
    let mut code = code;
    let mut entered = None;
    // The local network's room: for a number the relay handed out (short,
    // so another sender nearby may have the same one from another relay),
    // one of that relay's own.
    let mut lan_room = None;
    if let Some(list) = &route.relay {
        let one_relay = list.split(',').filter(|r| !r.trim().is_empty()).count() == 1;
        let hello = if allocate && one_relay {
            RelayHello::Allocate
        } else {
            RelayHello::Room {
                role: Role::Sender,
                room: code.room_id(),
            }
        };
        let addr = pick_relay(list, &code.room_id());
        match enter_room(&addr, hello, access, deadlines).await {
            Ok(entry) => {
                if let Some(nameplate) = entry.nameplate() {
                    code = code
                        .with_nameplate(nameplate)
                        .map_err(|_| NetError::NotARelay {
                            addr: addr.clone(),
                            source: tallow_protocol::wire::DecodeError::Invalid(
                                "allocated nameplate",
                            ),
                        })?;
                    lan_room = Some(RoomId::for_nameplate_on(nameplate, list.trim()));
                }
                entered = Some((entry, addr));
            }
            // The local network carries on with the code's own number.
            Err(e) if route.lan => on_route_failed(&e),
            Err(e) => return Err(e),
        }
    }
    let room = code.room_id();
    let lan_room = lan_room.unwrap_or(room);
    let mut guard = SessionGuard::default();
    let waiting = Mutex::new(Some(on_waiting));
    let notify = || {
        if let Some(f) = waiting.lock().ok().and_then(|mut w| w.take()) {
            f(&code);
        }
    };
    let mut announcer = None;
    // With the relay waiting, the code is shown at once; else once our own
    // relay (the local network's route) waits.
    let relay_too = entered.is_some();
    let local = if route.lan {
        let config = RelayConfig {
            // Our own wait decides (and says so in local-network words);
            // the relay's own limit only backs it up.
            pair_timeout: deadlines.pairing.saturating_add(Duration::from_secs(5)),
            // Only this transfer's room: the sender's machine is not a
            // relay for anyone else on the network.
            only_room: Some(lan_room),
            ..RelayConfig::default()
        };
        let server = RelayServer::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), config)
            .await
            .map_err(|source| NetError::HostRelay { source })?;
        let port = server
            .local_addr()
            .map_err(|source| NetError::HostRelay { source })?
            .port();
        guard.relay = Some(server.metrics());
        let receiver_at = server.first_receiver();
        guard.tasks.push(tokio::spawn(async move {
            let _ = server.run().await;
        }));
        // Announced only once we wait in our own room: a receiver that
        // found us sooner would be there first, and we would pair without
        // ever having said that we wait.
        let discovery_port = route.discovery_port;
        let (in_room, waiting_in_room) = tokio::sync::oneshot::channel::<()>();
        announcer = Some(tokio::spawn(async move {
            if waiting_in_room.await.is_ok() {
                let _ = announce(lan_room, port, discovery_port).await;
            }
        }));
        let addr = format!("127.0.0.1:{port}");
        let notify = &notify;
        let on_waiting = move || {
            if !relay_too {
                notify();
            }
            let _ = in_room.send(());
        };
        Some(async move {
            let stream = connect_to_relay(&addr, Role::Sender, lan_room, deadlines, on_waiting)
                .await
                .map_err(|e| e.on_lan(Role::Receiver))?;
            let receiver = receiver_at.get().map(|addr| (Role::Receiver, *addr));
            Ok((stream, Via::LocalNetwork(receiver), None))
        })
    } else {
        None
    };
    let remote = entered.map(|(entry, addr)| {
        let notify = &notify;
        async move {
            let paired =
                paired_or_reenter(entry, (Role::Sender, room), access, deadlines, notify).await?;
            Ok((paired.stream, Via::Relay(addr), paired.seen_as))
        }
    });
    // Pair first: the route not kept is closed inside `first_ok`, so the
    // one hello below is the only one this run sends.
    let lan_too = local.is_some();
    let on_failed = |e: &NetError| {
        on_route_failed(e);
        // The relay failed while the local network's route waits: that
        // one is ready, and now it is said.
        if lan_too && !e.on_local_network() {
            notify();
        }
    };
    let stream = first_ok(local, remote, &on_failed).await;
    // Paired (or failed): stop announcing either way.
    if let Some(a) = announcer {
        a.abort();
    }
    let (stream, via, seen_as) = stream?;
    match handshake_as_sender(stream, &code, deadlines).await {
        Ok(mut channel) => {
            channel.via = via;
            let setup = route.direct_setup(seen_as);
            let channel = settle_route(channel, Role::Sender, setup, deadlines).await?;
            Ok((channel, guard, code))
        }
        Err(e) => {
            // Our Abort (wrong code, bad version) may still be on its way
            // through the in-process relay.
            guard.drain(ABORT_DRAIN).await;
            Err(e)
        }
    }
}

/// The receiver's side: returns the authenticated channel of the first
/// route on which a sender's hello arrives.
///
/// One guess per run: each route pairs and reads the sender's hello, and
/// sends nothing that depends on the code. The first route to get a hello
/// is kept; the other is closed (dropped inside `first_ok`) before the
/// receiver's PAKE message goes out on the one kept. So someone on both
/// routes (a forged LAN announcement and the relay room) gets one reply, one
/// guess at the code, not two.
pub async fn open_as_receiver(
    route: &Route,
    code: &CodePhrase,
    deadlines: &Deadlines,
    on_waiting: impl FnOnce() + Send,
    on_route_failed: &(dyn Fn(&NetError) + Sync),
) -> Result<PeerChannel, NetError> {
    let room = code.room_id();
    let waiting = Mutex::new(Some(on_waiting));
    let notify = || {
        if let Some(f) = waiting.lock().ok().and_then(|mut w| w.take()) {
            f();
        }
    };
    let lan = route.lan.then_some(async {
        let wait = LAN_WAIT.min(deadlines.pairing);
        // The code's own number, or one the relay we would use handed out.
        let mut rooms = vec![room];
        if let Some(list) = &route.relay {
            rooms.push(RoomId::for_nameplate_on(code.nameplate(), list.trim()));
        }
        let (addr, lan_room) = discover(&rooms, route.discovery_port, wait).await?;
        let stream = connect_to_relay(
            &addr.to_string(),
            Role::Receiver,
            lan_room,
            deadlines,
            || {},
        )
        .await
        .map_err(|e| e.on_lan(Role::Sender))?;
        Ok((
            read_sender_hello(stream, deadlines).await?,
            Via::LocalNetwork(Some((Role::Sender, addr))),
            None,
        ))
    });
    let access = route.access();
    let relay = route.relay.as_ref().map(|list| async move {
        let addr = pick_relay(list, &room);
        let paired = join_room(&addr, Role::Receiver, room, access, deadlines, notify).await?;
        Ok((
            read_sender_hello(paired.stream, deadlines).await?,
            Via::Relay(addr),
            paired.seen_as,
        ))
    });
    // The losing route is closed when `first_ok` returns, before `respond`.
    let (hello, via, seen_as) = first_ok(lan, relay, on_route_failed).await?;
    let mut channel = hello.respond(code, deadlines).await?;
    channel.via = via;
    settle_route(
        channel,
        Role::Receiver,
        route.direct_setup(seen_as),
        deadlines,
    )
    .await
}

/// The first of up to two attempts to succeed; if both fail, the error that
/// tells the user most. `on_failed` hears of a failure while the other
/// attempt goes on. The attempt still running when one succeeds is dropped
/// (its connection closed) before this returns.
async fn first_ok<T>(
    a: Option<impl Future<Output = Result<T, NetError>>>,
    b: Option<impl Future<Output = Result<T, NetError>>>,
    on_failed: &(dyn Fn(&NetError) + Sync),
) -> Result<T, NetError> {
    match (a, b) {
        (Some(a), None) => a.await,
        (None, Some(b)) => b.await,
        (None, None) => Err(NetError::NoRoute),
        (Some(a), Some(b)) => {
            tokio::pin!(a, b);
            let (mut a_err, mut b_err) = (None, None);
            loop {
                tokio::select! {
                    r = &mut a, if a_err.is_none() => match r {
                        Ok(v) => return Ok(v),
                        Err(e) => a_err = Some(e),
                    },
                    r = &mut b, if b_err.is_none() => match r {
                        Ok(v) => return Ok(v),
                        Err(e) => b_err = Some(e),
                    },
                }
                // A handshake verdict (a malformed hello) is final, as it
                // is once a route has been kept: one attempt per run.
                for e in [&mut a_err, &mut b_err] {
                    if matches!(e, Some(NetError::Handshake(_))) {
                        return Err(e.take().unwrap_or(NetError::NoRoute));
                    }
                }
                match (&a_err, &b_err) {
                    (Some(x), Some(y)) => {
                        // On a tie, the second route's (the relay the user
                        // named) says more than the local network's.
                        let pick_a = x.rank() > y.rank();
                        return Err(if pick_a { a_err } else { b_err }.unwrap_or(NetError::NoRoute));
                    }
                    // Both routes wait for the other side equally long: a
                    // pairing timeout on one is the other's in a moment.
                    (Some(e), None) | (None, Some(e)) if !e.is_pairing_timeout() => on_failed(e),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tallow_protocol::rendezvous::{RelayStatus, RELAY_HELLO_LEN};
    use tallow_protocol::wire::Encode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// The first handshake message on `stream`, or `None` if it ends first.
    async fn first_message(stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await.ok()?;
        let mut msg = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut msg).await.ok()?;
        Some(msg)
    }

    #[tokio::test]
    async fn a_sender_paired_on_both_routes_sends_one_hello() {
        let code = CodePhrase::parse("4242-abacus-zoom-yodel").unwrap();
        let room = code.room_id();
        let port = 46_000 + (std::process::id() % 1000) as u16;
        // A remote relay that says "paired" only once the LAN route has
        // paired too, so both routes are paired.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_addr = listener.local_addr().unwrap().to_string();
        let (lan_paired, pair_now) = tokio::sync::oneshot::channel::<()>();
        let remote = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut hello = [0u8; RELAY_HELLO_LEN + 1];
            s.read_exact(&mut hello).await.unwrap();
            s.write_all(&RelayStatus::Waiting.to_bytes()).await.unwrap();
            let _ = pair_now.await;
            // The sender may have dropped this route already.
            s.write_all(&RelayStatus::Paired(None).to_bytes())
                .await
                .ok()?;
            first_message(&mut s).await
        });
        // A receiver that finds the sender on the LAN.
        let lan = tokio::spawn(async move {
            let d = Deadlines::default();
            let (addr, _) = discover(&[room], port, Duration::from_secs(60))
                .await
                .unwrap();
            let mut s = connect_to_relay(&addr.to_string(), Role::Receiver, room, &d, || {})
                .await
                .unwrap();
            let _ = lan_paired.send(());
            first_message(&mut s).await
        });
        let route = Route {
            relay: Some(relay_addr),
            relay_password: None,
            proxy: None,
            lan: true,
            discovery_port: port,
            direct: true,
        };
        let deadlines = Deadlines::default();
        let sender = open_as_sender(&route, code, false, &deadlines, |_| {}, &|_| {});
        let (sent, remote, lan) = tokio::join!(sender, remote, lan);
        // Each fake receiver leaves after the hello, so the sender fails.
        assert!(sent.is_err());
        let hellos: Vec<Vec<u8>> = [remote.unwrap(), lan.unwrap()]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(hellos.len(), 1, "one hello in all, on one route");
        // This version, SenderHello.
        assert_eq!(
            hellos[0][..2],
            [tallow_protocol::limits::PROTOCOL_VERSION, 1]
        );
    }
}
